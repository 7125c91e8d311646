/* Queues bursts of a real-time signal to itself while it is blocked,
 * unblocks it, and checks that its handler got every instance once, in
 * the order sent, with the siginfo it was sent with (SI_QUEUE, its own
 * pid, the value). For checkpoints that stop it between two deliveries.
 * Each round also sets the same alternate signal stack again: a call
 * that changes kernel state a checkpoint keeps, so the next checkpoint
 * runs system calls inside the program to read it.
 * Usage: sigburst ROUNDS. Prints "ok ROUNDS" and exits 0, or says which
 * round differed and how, and exits 1. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define BURST 8

static volatile long got[BURST];
static volatile int n, wrong_sender;

static void handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    if (n < BURST) got[n] = (long)si->si_value.sival_ptr;
    if (si->si_code != SI_QUEUE || si->si_pid != getpid()) wrong_sender = 1;
    n++;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: sigburst ROUNDS\n");
        return 2;
    }
    int rounds = atoi(argv[1]);
    int rt = SIGRTMIN + 2;
    struct sigaction sa = {.sa_sigaction = handler, .sa_flags = SA_SIGINFO};
    sigemptyset(&sa.sa_mask);
    if (sigaction(rt, &sa, 0)) return 2;
    static char alt[1 << 16];
    stack_t ss = {.ss_sp = alt, .ss_size = sizeof alt};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, rt);
    for (int r = 0; r < rounds; r++) {
        sigprocmask(SIG_BLOCK, &set, 0);
        n = 0;
        for (long i = 0; i < BURST; i++)
            sigqueue(getpid(), rt, (union sigval){.sival_ptr = (void *)(r * BURST + i)});
        if (sigaltstack(&ss, 0)) return 2;
        /* All of them are taken before the call returns, one handler at a
         * time (the signal is blocked while its handler runs). */
        sigprocmask(SIG_UNBLOCK, &set, 0);
        int ok = n == BURST && !wrong_sender;
        for (int i = 0; ok && i < BURST; i++) ok = got[i] == r * BURST + i;
        if (!ok) {
            printf("round %d: %d signals taken, wrong sender %d, values", r, n, wrong_sender);
            for (int i = 0; i < n && i < BURST; i++) printf(" %ld", got[i]);
            printf(" (sent %d..%d)\n", r * BURST, r * BURST + BURST - 1);
            return 1;
        }
    }
    printf("ok %d\n", rounds);
    return 0;
}
