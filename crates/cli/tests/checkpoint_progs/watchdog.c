/* A computation with a known answer that sends the notify protocol's
 * WATCHDOG=1 about every 20 ms of work, the way sd_notify(3) does (a fresh
 * datagram socket per message, closed at once: no socket stays open for a
 * checkpoint to hold). SIGUSR1 makes it hang: it spins without heartbeats.
 * Rolled back to before the signal, it finishes. It prints only its final
 * answer. Usage: watchdog ROUNDS */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t hang_now;
static void on_usr1(int sig) { (void)sig; hang_now = 1; }

static void notify(const char *msg) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path) return;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') sa.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 500;
    signal(SIGUSR1, on_usr1);
    volatile uint64_t state = 7, sum = 0;
    double last = now_ms();
    for (long r = 0; r < rounds; r++) {
        for (int k = 0; k < 200000; k++) {
            uint64_t s = state; s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            state = s; sum += s >> 60;
        }
        while (hang_now) { /* stuck: no more heartbeats */ }
        if (now_ms() - last >= 20) {
            notify("WATCHDOG=1");
            last = now_ms();
        }
    }
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
