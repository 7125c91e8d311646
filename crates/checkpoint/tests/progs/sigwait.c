/* Waits for a signal under a temporary signal mask, as event loops do.
 * Its normal mask blocks SIGUSR2; it waits in sigsuspend, ppoll or
 * pselect (MODE) with a temporary mask that blocks SIGUSR1 and lets
 * SIGUSR2 in. While it waits, SIGUSR1 must stay pending and SIGUSR2
 * must end the wait; once the wait has ended the normal mask is back,
 * so the pending SIGUSR1 is taken then, after SIGUSR2's handler.
 * Usage: sigwait sigsuspend|ppoll|pselect. Prints the handlers run in
 * order (A for SIGUSR1, B for SIGUSR2), the wait's result and which of
 * the two are blocked afterwards, e.g. "BA -1 EINTR blocked:B", and
 * exits 0; exits 2 on a usage or set-up error. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static char order[16];
static volatile int taken;

static void handler(int sig) {
    if (taken < (int)sizeof order - 1) order[taken++] = sig == SIGUSR1 ? 'A' : 'B';
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: sigwait sigsuspend|ppoll|pselect\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = handler};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, 0) || sigaction(SIGUSR2, &sa, 0)) return 2;
    sigset_t normal, temp, now;
    sigemptyset(&normal);
    sigaddset(&normal, SIGUSR2);
    sigemptyset(&temp);
    sigaddset(&temp, SIGUSR1);
    if (sigprocmask(SIG_SETMASK, &normal, 0)) return 2;
    int r;
    if (!strcmp(argv[1], "sigsuspend"))
        r = sigsuspend(&temp);
    else if (!strcmp(argv[1], "ppoll"))
        r = ppoll(0, 0, 0, &temp);
    else if (!strcmp(argv[1], "pselect"))
        r = pselect(0, 0, 0, 0, 0, &temp);
    else
        return 2;
    int err = errno;
    if (sigprocmask(SIG_BLOCK, 0, &now)) return 2;
    printf("%s %d %s blocked:%s%s\n", order, r, err == EINTR ? "EINTR" : strerror(err),
           sigismember(&now, SIGUSR1) ? "A" : "", sigismember(&now, SIGUSR2) ? "B" : "");
    return 0;
}
