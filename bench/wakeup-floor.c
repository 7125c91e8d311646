/* The cost floor of a periodic detector on this machine: a thread that
 * wakes every 100 ms and does nothing (mode 0), reads /proc/stat (mode 1),
 * or also /proc/meminfo and /proc/diskstats (mode 2). Mode 3 makes the
 * light detector's reads on an idle machine: /proc/stat every wake-up and,
 * every 5th (`sampler.slow_every`), /proc/meminfo, /proc/vmstat (two reads:
 * it is longer than the kernel's one-page seq_file buffer),
 * /proc/pressure/{cpu,memory,io} and /sys/block/DISK/stat when a DISK is
 * given as the third argument: what the light thread's reads cost in the
 * kernel, so the rest of its time is its own. Mode 4 is mode 3 with a
 * cheap gate: /proc/uptime (idle time summed over CPUs, a few bytes)
 * instead of /proc/stat on the 4 wake-ups of 5 without slow reads, what a
 * reader taking /proc/stat only when the machine is not idle would cost at
 * idle (issue #13 item 6). Mode 5 reads /proc/uptime alone every wake-up:
 * the least any 10 Hz detector that asks the kernel whether every CPU was
 * idle pays. Mode 6 is mode 4 with /proc/stat and the slow reads every 10th
 * wake-up instead of every 5th (slow reads deferred at idle). Prints its
 * run time per wake-up from /proc/thread-self/schedstat (kernel time
 * included).
 * Built and run by bench/wakeup-floor.sh and bench/daemon/idle-cost.sh.
 *
 *   floor MODE [WAKEUPS [DISK]] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int mode = argc > 1 ? atoi(argv[1]) : 0;
	int n = argc > 2 ? atoi(argv[2]) : 300;
	char buf[16384];
	int fs = open("/proc/stat", O_RDONLY);
	int fu = open("/proc/uptime", O_RDONLY);
	int fm = open("/proc/meminfo", O_RDONLY);
	int fd = open("/proc/diskstats", O_RDONLY);
	int fv = open("/proc/vmstat", O_RDONLY);
	int fp[3] = { open("/proc/pressure/cpu", O_RDONLY),
		      open("/proc/pressure/memory", O_RDONLY),
		      open("/proc/pressure/io", O_RDONLY) };
	int fb = -1;
	ssize_t got;
	struct timespec t;
	unsigned long long run_ns, wait_ns, slices;
	FILE *f;

	if (fs < 0 || fu < 0 || fm < 0 || fd < 0 || fv < 0 || n <= 0) {
		fprintf(stderr, "wakeup-floor: cannot open /proc files\n");
		return 1;
	}
	if (mode >= 3 && argc > 3) {
		snprintf(buf, sizeof buf, "/sys/block/%s/stat", argv[3]);
		fb = open(buf, O_RDONLY);
	}
	clock_gettime(CLOCK_MONOTONIC, &t);
	for (int i = 0; i < n; i++) {
		t.tv_nsec += 100000000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_nsec -= 1000000000;
			t.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
		int every = mode == 6 ? 10 : 5;
		if (mode == 5 || (mode >= 4 && i % every != 0)) {
			if (pread(fu, buf, sizeof buf, 0) < 0)
				return 1;
		} else if (mode >= 1 && pread(fs, buf, sizeof buf, 0) < 0) {
			return 1;
		}
		if (mode == 2 && (pread(fm, buf, sizeof buf, 0) < 0 ||
				  pread(fd, buf, sizeof buf, 0) < 0))
			return 1;
		if (mode >= 3 && mode != 5 && i % every == 0) {
			if (pread(fm, buf, sizeof buf, 0) < 0)
				return 1;
			if (fb >= 0 && pread(fb, buf, sizeof buf, 0) < 0)
				return 1;
			got = pread(fv, buf, 8190, 0);
			if (got < 0 || pread(fv, buf + got, 8190 - got, got) < 0)
				return 1;
			for (int k = 0; k < 3; k++)
				if (fp[k] >= 0 && pread(fp[k], buf, sizeof buf, 0) < 0)
					return 1;
		}
	}
	f = fopen("/proc/thread-self/schedstat", "r");
	if (!f || fscanf(f, "%llu %llu %llu", &run_ns, &wait_ns, &slices) != 3) {
		fprintf(stderr, "wakeup-floor: no /proc/thread-self/schedstat\n");
		return 1;
	}
	printf("%-34s %7.1f us/wake-up  %.4f %% of one core at 100 ms\n",
	       mode == 0 ? "wake up, nothing else" :
	       mode == 1 ? "wake up + read /proc/stat" :
	       mode == 2 ? "wake up + /proc/stat, meminfo, diskstats" :
	       mode == 3 ? "wake up + the light detector's reads" :
	       mode == 4 ? "the same, /proc/uptime gating /proc/stat" :
	       mode == 5 ? "wake up + /proc/uptime, nothing else" :
			   "uptime gating, stat and slow reads every 10th",
	       run_ns / 1000.0 / n, run_ns / 1e6 / n);
	return 0;
}
