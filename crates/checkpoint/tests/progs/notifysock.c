/* Computes, then opens a datagram socket (as sd_notify(3) does for each
 * message), keeps it open while it computes for HOLD_MS, closes it and
 * crashes (SIGSEGV). The newest checkpoints then hold a socket that is
 * gone: a rollback must go to one taken before it opened. Rolled back, it
 * runs into the same crash again. Usage: notifysock HOLD_MS */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static volatile uint64_t state = 42, sum;

static void compute_for(double ms) {
    double end = now_ms() + ms;
    while (now_ms() < end)
        for (int k = 0; k < 10000; k++) {
            uint64_t s = state; s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            state = s; sum += s >> 60;
        }
}

int main(int argc, char **argv) {
    double hold = argc > 1 ? atof(argv[1]) : 300;
    compute_for(400);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 2;
    compute_for(hold);
    close(fd);
    raise(SIGSEGV);
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
