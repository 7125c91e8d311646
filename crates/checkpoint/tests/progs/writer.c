// Writes somewhere a rollback cannot undo, once per round of computing:
//   writer pipe ROUNDS        a line to stdout (a pipe in the test)
//   writer procfs ROUNDS      its own name to /proc/self/comm
//   writer append FILE ROUNDS a line appended to FILE (another process
//                             holds FILE open in the test)
//   writer mmap FILE ROUNDS   a byte through a shared writable mapping
//   writer fork FILE          a child that outlives it appends to FILE
//                             after the parent exited
//   writer child FILE ROUNDS  a child appends to FILE and exits, the
//                             parent reaps it and computes on
//   writer tty ROUNDS         a line to stdout (a terminal in the test)
//                             in the first 50 rounds: nobody reads it
//   writer uring ROUNDS       sets up an io_uring once, then computes
//   writer read ROUNDS        reads 16 bytes of stdin (a pipe in the test)
//                             per round
//   writer handler ROUNDS     installs a SIGUSR1 handler, then computes
//   writer spawn ROUNDS       starts a child that sleeps 1 s, computes
//   writer overwrite FILE ROUNDS  rewrites the first 64 KiB of FILE in
//                             place (old contents to keep each time)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_usr1(int sig) { (void)sig; }

static uint64_t spin(uint64_t s) {
    for (long i = 0; i < 20000; i++) s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return s;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1];
    uint64_t s = 1;
    if (!strcmp(mode, "fork")) {
        if (fork() == 0) {
            usleep(500000);
            int fd = open(argv[2], O_CREAT | O_WRONLY | O_APPEND, 0644);
            if (fd < 0 || write(fd, "child\n", 6) != 6) return 3;
            return 0;
        }
        return 0;
    }
    int rounds = atoi(argv[argc - 1]);
    if (!strcmp(mode, "child")) {
        pid_t c = fork();
        if (c == 0) {
            int fd = open(argv[2], O_CREAT | O_WRONLY | O_APPEND, 0644);
            return fd < 0 || write(fd, "child\n", 6) != 6 ? 3 : 0;
        }
        int st;
        if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) return 3;
    }
    int fd = -1;
    char *map = NULL;
    if (!strcmp(mode, "handler")) signal(SIGUSR1, on_usr1);
    if (!strcmp(mode, "spawn") && fork() == 0) {
        sleep(1);
        _exit(0);
    }
    if (!strcmp(mode, "overwrite")) {
        fd = open(argv[2], O_CREAT | O_RDWR, 0644);
        if (fd < 0 || ftruncate(fd, 65536) != 0) return 3;
    }
    if (!strcmp(mode, "append")) fd = open(argv[2], O_CREAT | O_WRONLY | O_APPEND, 0644);
    if (!strcmp(mode, "mmap")) {
        fd = open(argv[2], O_CREAT | O_RDWR, 0644);
        if (fd < 0 || ftruncate(fd, 4096) != 0) return 3;
        map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) return 3;
    }
    if (!strcmp(mode, "uring")) {
        // struct io_uring_params: 120 bytes, zeroed = defaults.
        char params[120] = {0};
        fd = (int)syscall(SYS_io_uring_setup, 4, params);
        if (fd < 0) return 4;  // io_uring disabled here (sysctl): the test skips
    }
    for (int r = 0; r < rounds; r++) {
        s = spin(s);
        if (!strcmp(mode, "pipe")) dprintf(1, "round %d\n", r);
        if (!strcmp(mode, "procfs")) {
            int c = open("/proc/self/comm", O_WRONLY);
            if (c < 0 || write(c, "writer", 6) != 6) return 3;
            close(c);
        }
        if (!strcmp(mode, "append") && dprintf(fd, "round %d\n", r) <= 0) return 3;
        if (map) map[r % 4096] = (char)s;
        if (!strcmp(mode, "read")) {
            char in[16];
            if (read(0, in, sizeof in) <= 0) return 3;
        }
        if (!strcmp(mode, "overwrite")) {
            static char block[65536];
            memset(block, 'a' + r % 26, sizeof block);
            if (pwrite(fd, block, sizeof block, 0) != sizeof block) return 3;
        }
        if (!strcmp(mode, "tty") && r < 50 && dprintf(1, "round %d\n", r) <= 0) return 3;
    }
    printf("answer %016llx\n", (unsigned long long)s);
    return 0;
}
