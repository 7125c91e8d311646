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
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

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
    if (!strcmp(mode, "append")) fd = open(argv[2], O_CREAT | O_WRONLY | O_APPEND, 0644);
    if (!strcmp(mode, "mmap")) {
        fd = open(argv[2], O_CREAT | O_RDWR, 0644);
        if (fd < 0 || ftruncate(fd, 4096) != 0) return 3;
        map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) return 3;
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
    }
    printf("answer %016llx\n", (unsigned long long)s);
    return 0;
}
