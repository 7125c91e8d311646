// SPDX-License-Identifier: Apache-2.0
/*
 * labtool: the selfheal hang lab's guest-side helper (built static, runs only
 * inside the throw-away QEMU guest).
 *
 *   labtool mark TAG [k=v ...]      marker line with both clocks, to stdout
 *                                   and /dev/kmsg (maps printk time to unix)
 *   labtool hb CPU                  heartbeat pinned to CPU, every 100 ms
 *   labtool status                  one line: procs, D-state tasks, memory
 *   labtool proccpu PID             CPU time a process used so far
 *   labtool mix SECS WORKERS        CPU+I/O+memory workload, prints ops
 *   labtool build SECS JOBS         build-like workload (many short
 *                                   processes), prints ops
 *   labtool fifo_hog CPU            SCHED_FIFO busy loop pinned to CPU
 *   labtool fork_bomb               processes that fork forever
 *   labtool mem_hog MB_PER_S        touches memory it never frees
 *   labtool dblock N                N readers of /proc/lab_fault_block: the
 *                                   first waits forever holding a mutex, the
 *                                   others queue behind it (all in D state)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_comm(const char *name)
{
	prctl(PR_SET_NAME, name, 0, 0, 0);
}

/*
 * The lab's plumbing runs at -1000 so the OOM killer never takes the
 * scenario down; everything a run measures (faults, workloads, selfheal)
 * goes back to the default 0 so the lab gives it no protection it lacks.
 */
static void set_oom_score_adj(int adj)
{
	char buf[16];
	int fd = open("/proc/self/oom_score_adj", O_WRONLY);

	if (fd < 0)
		return;
	snprintf(buf, sizeof(buf), "%d", adj);
	if (write(fd, buf, strlen(buf)) < 0)
		perror("labtool: oom_score_adj");
	close(fd);
}

static void pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		perror("labtool: sched_setaffinity");
}

/* One write() per line so lines from several writers never interleave. */
static void emit(const char *line)
{
	size_t len = strlen(line);

	if (write(STDOUT_FILENO, line, len) < 0)
		_exit(1);
}

static int cmd_mark(int argc, char **argv)
{
	char line[1024];
	int n, i;
	/* Opened before the clocks are read: the kmsg stamp must follow them closely. */
	int fd = open("/dev/kmsg", O_WRONLY);

	n = snprintf(line, sizeof(line), "LAB %s real_ms=%lld mono_ms=%lld",
		     argv[0], (long long)clock_ms(CLOCK_REALTIME),
		     (long long)clock_ms(CLOCK_MONOTONIC));
	for (i = 1; i < argc && n < (int)sizeof(line) - 2; i++)
		n += snprintf(line + n, sizeof(line) - n, " %s", argv[i]);
	snprintf(line + n, sizeof(line) - n, "\n");
	/* kmsg first: it is stamped at once, the serial write can take ms. */
	if (fd >= 0) {
		if (write(fd, line, strlen(line)) < 0)
			perror("labtool: /dev/kmsg");
		close(fd);
	}
	emit(line);
	return 0;
}

static int cmd_hb(int cpu)
{
	char line[128];
	long long seq = 0;
	struct timespec next;

	set_comm("lab_heartbeat");
	pin_to(cpu);
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		snprintf(line, sizeof(line), "HB cpu=%d seq=%lld real_ms=%lld mono_ms=%lld\n",
			 cpu, seq++, (long long)clock_ms(CLOCK_REALTIME),
			 (long long)clock_ms(CLOCK_MONOTONIC));
		emit(line);
		next.tv_nsec += 100 * 1000000;
		if (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		/* Absolute deadlines: a stall shows as a gap, not as drift. */
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	return 0;
}

static long meminfo_kb(const char *key)
{
	char buf[256];
	long val = -1;
	size_t klen = strlen(key);
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f)) {
		if (!strncmp(buf, key, klen) && buf[klen] == ':') {
			val = strtol(buf + klen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return val;
}

static int cmd_status(void)
{
	char path[300], buf[512], line[256];
	int procs = 0, dstate = 0, running = 0, faulty = 0;
	struct dirent *de;
	DIR *d = opendir("/proc");

	if (!d)
		return 1;
	while ((de = readdir(d))) {
		char *p;
		int fd;
		ssize_t n;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue; /* exited meanwhile */
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = 0;
		p = strrchr(buf, ')'); /* comm may hold spaces and parens */
		if (!p || p[1] == 0)
			continue;
		procs++;
		/* Fault tasks (user and kernel) are named lab_*; lab plumbing is not counted. */
		{
			char *name = strchr(buf, '(');

			if (name && !strncmp(name + 1, "lab_", 4) &&
			    strncmp(name + 1, "lab_heartbeat", 13) &&
			    strncmp(name + 1, "lab_mix", 7) && strncmp(name + 1, "lab_build", 9))
				faulty++;
		}
		if (p[2] == 'D')
			dstate++;
		else if (p[2] == 'R')
			running++;
	}
	closedir(d);
	snprintf(line, sizeof(line),
		 "LAB STATUS real_ms=%lld mono_ms=%lld procs=%d dstate=%d running=%d faulty=%d memavail_kb=%ld\n",
		 (long long)clock_ms(CLOCK_REALTIME), (long long)clock_ms(CLOCK_MONOTONIC),
		 procs, dstate, running, faulty, meminfo_kb("MemAvailable"));
	emit(line);
	return 0;
}

static int cmd_proccpu(const char *pid)
{
	char path[64], buf[1024], line[192];
	unsigned long long utime = 0, stime = 0;
	char *p;
	int fd, i;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		snprintf(line, sizeof(line), "LAB PROCCPU real_ms=%lld mono_ms=%lld pid=%s gone=1\n",
			 (long long)clock_ms(CLOCK_REALTIME), (long long)clock_ms(CLOCK_MONOTONIC), pid);
		emit(line);
		return 0;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	p = strrchr(buf, ')');
	/* Fields after ")": state(3) ... utime(14) stime(15). */
	for (i = 3; p && i <= 15; i++) {
		p = strchr(p + 1, ' ');
		if (p && i == 14)
			utime = strtoull(p + 1, NULL, 10);
		if (p && i == 15)
			stime = strtoull(p + 1, NULL, 10);
	}
	snprintf(line, sizeof(line),
		 "LAB PROCCPU real_ms=%lld mono_ms=%lld pid=%s utime_ticks=%llu stime_ticks=%llu hz=%ld\n",
		 (long long)clock_ms(CLOCK_REALTIME), (long long)clock_ms(CLOCK_MONOTONIC), pid, utime,
		 stime, sysconf(_SC_CLK_TCK));
	emit(line);
	return 0;
}

/* One unit of mixed work: hash a buffer, write+fsync+read a file, touch memory. */
static void mix_unit(int id, unsigned char *mem, size_t memlen, unsigned long iter)
{
	char path[64], io[16384];
	volatile uint64_t h = 1469598103934665603ULL;
	size_t i;
	int fd;

	for (i = 0; i < 200000; i++)
		h = (h ^ (i + iter)) * 1099511628211ULL;
	for (i = (iter * 4096) % memlen; i < memlen; i += 4096 * 16)
		mem[i] = (unsigned char)h;
	memset(io, (int)h, sizeof(io));
	snprintf(path, sizeof(path), "/tmp/mix.%d", id);
	fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
	if (fd >= 0) {
		for (i = 0; i < 16; i++)
			if (write(fd, io, sizeof(io)) < 0)
				break;
		fsync(fd);
		lseek(fd, 0, SEEK_SET);
		while (read(fd, io, sizeof(io)) > 0)
			;
		close(fd);
	}
}

static int run_workers(int secs, int workers, void (*body)(int id, int fd, int secs))
{
	int pipes[2], i;
	unsigned long total = 0, part;
	char line[160];
	int64_t t0 = clock_ms(CLOCK_MONOTONIC);

	if (pipe(pipes))
		return 1;
	for (i = 0; i < workers; i++) {
		if (fork() == 0) {
			close(pipes[0]);
			body(i, pipes[1], secs);
			_exit(0);
		}
	}
	close(pipes[1]);
	while (read(pipes[0], &part, sizeof(part)) == sizeof(part))
		total += part;
	while (wait(NULL) > 0)
		;
	snprintf(line, sizeof(line), "LAB WORKLOAD_DONE real_ms=%lld mono_ms=%lld ops=%lu elapsed_ms=%lld\n",
		 (long long)clock_ms(CLOCK_REALTIME), (long long)clock_ms(CLOCK_MONOTONIC), total,
		 (long long)(clock_ms(CLOCK_MONOTONIC) - t0));
	emit(line);
	return 0;
}

static void mix_body(int id, int fd, int secs)
{
	size_t memlen = 32u << 20;
	unsigned char *mem = malloc(memlen);
	int64_t end = clock_ms(CLOCK_MONOTONIC) + (int64_t)secs * 1000;
	unsigned long ops = 0;

	set_comm("lab_mix");
	if (!mem)
		_exit(1);
	memset(mem, 1, memlen);
	while (clock_ms(CLOCK_MONOTONIC) < end) {
		mix_unit(id, mem, memlen, ops);
		ops++;
	}
	if (write(fd, &ops, sizeof(ops)) < 0)
		_exit(1);
}

static void build_body(int id, int fd, int secs)
{
	int64_t end = clock_ms(CLOCK_MONOTONIC) + (int64_t)secs * 1000;
	unsigned long ops = 0;
	char cmd[256];

	set_comm("lab_build");
	/* A "compile": a short-lived shell pipeline reading, compressing, hashing. */
	snprintf(cmd, sizeof(cmd),
		 "head -c 262144 /bin/busybox > /tmp/src.%d && gzip -c /tmp/src.%d | sha256sum > /tmp/obj.%d",
		 id, id, id);
	while (clock_ms(CLOCK_MONOTONIC) < end) {
		pid_t pid = fork();
		int st;

		if (pid == 0) {
			execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &st, 0) < 0)
			break;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			ops++;
	}
	if (write(fd, &ops, sizeof(ops)) < 0)
		_exit(1);
}

static int cmd_fifo_hog(int cpu)
{
	struct sched_param sp = { .sched_priority = 50 };
	volatile unsigned long spin = 0;

	set_comm("lab_fifo_hog");
	pin_to(cpu);
	if (sched_setscheduler(0, SCHED_FIFO, &sp)) {
		perror("labtool: SCHED_FIFO");
		return 1;
	}
	for (;;)
		spin++;
}

static int cmd_fork_bomb(void)
{
	set_comm("lab_forkbomb");
	for (;;)
		fork(); /* failures ignored on purpose: a bomb keeps trying */
	return 0;
}

static int cmd_mem_hog(long mb_per_s)
{
	size_t chunk = 16u << 20;
	long sleep_us = mb_per_s > 0 ? 16 * 1000000L / mb_per_s : 0;

	set_comm("lab_memhog");
	for (;;) {
		char *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p != MAP_FAILED)
			memset(p, 0x5a, chunk);
		if (sleep_us)
			usleep(sleep_us);
	}
	return 0;
}

static int cmd_dblock(int n)
{
	int i;

	for (i = 0; i < n; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			char c;
			int fd;

			set_comm(i == 0 ? "lab_dholder" : "lab_dwaiter");
			fd = open("/proc/lab_fault_block", O_RDONLY);
			if (fd < 0) {
				perror("labtool: /proc/lab_fault_block");
				_exit(1);
			}
			if (read(fd, &c, 1) < 0)
				perror("labtool: read");
			_exit(0);
		}
		/* Give the holder time to take the mutex before the queue forms. */
		usleep(i == 0 ? 300000 : 50000);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: labtool COMMAND [ARGS] (see source)\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* Plumbing (marks, heartbeats, status) stays protected; the rest does not. */
	if (strcmp(argv[1], "mark") && strcmp(argv[1], "hb") && strcmp(argv[1], "status") &&
	    strcmp(argv[1], "proccpu"))
		set_oom_score_adj(0);
	if (!strcmp(argv[1], "mark") && argc >= 3)
		return cmd_mark(argc - 2, argv + 2);
	if (!strcmp(argv[1], "hb") && argc == 3)
		return cmd_hb(atoi(argv[2]));
	if (!strcmp(argv[1], "status"))
		return cmd_status();
	if (!strcmp(argv[1], "proccpu") && argc == 3)
		return cmd_proccpu(argv[2]);
	if (!strcmp(argv[1], "mix") && argc == 4)
		return run_workers(atoi(argv[2]), atoi(argv[3]), mix_body);
	if (!strcmp(argv[1], "build") && argc == 4)
		return run_workers(atoi(argv[2]), atoi(argv[3]), build_body);
	if (!strcmp(argv[1], "fifo_hog") && argc == 3)
		return cmd_fifo_hog(atoi(argv[2]));
	if (!strcmp(argv[1], "fork_bomb"))
		return cmd_fork_bomb();
	if (!strcmp(argv[1], "mem_hog") && argc == 3)
		return cmd_mem_hog(atol(argv[2]));
	if (!strcmp(argv[1], "dblock") && argc == 3)
		return cmd_dblock(atoi(argv[2]));
	fprintf(stderr, "labtool: unknown command or wrong arguments: %s\n", argv[1]);
	return 2;
}
