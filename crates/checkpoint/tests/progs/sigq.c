/* Records the siginfo of every signal its handlers get, for tests of the
 * signals a rollback puts back. Usage: sigq MODE DIR, MODE one of:
 *
 *   after   blocks SIGUSR1, SIGUSR2 and SIGRTMIN+2; queues SIGUSR1 to
 *           itself (kill: SI_USER, the process's queue), SIGRTMIN+2 with
 *           values 100..104 (sigqueue: SI_QUEUE, the process's queue) and
 *           with value 200 to its thread (pthread_sigqueue: its own
 *           queue); says "Q" and waits for SIGUSR2 from outside (the test,
 *           SI_USER); says "R" and waits for DIR/go (the test takes a
 *           checkpoint, then makes it); unblocks the three; says "H" and
 *           its record, and waits for DIR/crashed (the test crashes it,
 *           the engine rolls back to before the unblock, the test makes
 *           DIR/crashed).
 *   inside  the same, but the crash comes inside the handler of value 102
 *           (it says "M" and waits there for DIR/crashed): 100 and 101
 *           were taken, 103 and 104 still queued.
 *   none    nothing queued, nothing blocked (the bystander).
 *   twice   only SIGRTMIN+2 blocked; waits for it from outside ("Q"),
 *           then "R" and DIR/go; unblocks and blocks it again, says "B"
 *           and waits for a second, identical one from outside; then "H"
 *           and DIR/crashed.
 *
 * Then prints the record on stdout, one line per signal taken:
 * "signo code pid uid value". Lines on stderr go by write(2), never
 * rolled back. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX 64
static struct {
    int signo, code, pid;
    unsigned uid;
    long value;
} rec[MAX];
static volatile int nrec;
static const char *dir;
static int inside;

static void say(const char *s) {
    if (write(2, s, strlen(s)) < 0) _exit(4);
}

static int exists(const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void wait_for(const char *name) {
    while (!exists(name)) usleep(1000);
}

static void handler(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    if (nrec < MAX) {
        rec[nrec].signo = sig;
        rec[nrec].code = si->si_code;
        rec[nrec].pid = si->si_pid;
        rec[nrec].uid = si->si_uid;
        rec[nrec].value = (long)si->si_value.sival_ptr;
        nrec++;
    }
    if (inside && sig == SIGRTMIN + 2 && (long)si->si_value.sival_ptr == 102) {
        say("M\n");
        wait_for("crashed");
    }
}

static void print_record(int fd) {
    char buf[128];
    for (int i = 0; i < nrec; i++) {
        int n = snprintf(buf, sizeof buf, "%d %d %d %u %ld\n", rec[i].signo, rec[i].code,
                         rec[i].pid, rec[i].uid, rec[i].value);
        if (write(fd, buf, n) != n) _exit(4);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: sigq after|inside|none|twice DIR\n");
        return 2;
    }
    const char *mode = argv[1];
    dir = argv[2];
    inside = !strcmp(mode, "inside");
    int rt = SIGRTMIN + 2;
    struct sigaction sa = {.sa_sigaction = handler, .sa_flags = SA_SIGINFO};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, 0) || sigaction(SIGUSR2, &sa, 0) || sigaction(rt, &sa, 0))
        return 1;
    sigset_t set;
    sigemptyset(&set);
    if (!strcmp(mode, "twice")) {
        sigaddset(&set, rt);
    } else if (strcmp(mode, "none")) {
        sigaddset(&set, SIGUSR1);
        sigaddset(&set, SIGUSR2);
        sigaddset(&set, rt);
    }
    sigprocmask(SIG_BLOCK, &set, 0);
    if (!strcmp(mode, "after") || inside) {
        kill(getpid(), SIGUSR1);
        for (long v = 100; v < 105; v++) sigqueue(getpid(), rt, (union sigval){.sival_ptr = (void *)v});
        pthread_sigqueue(pthread_self(), rt, (union sigval){.sival_ptr = (void *)200});
    }
    int waited = !strcmp(mode, "twice") ? rt : !strcmp(mode, "none") ? 0 : SIGUSR2;
    say("Q\n");
    if (waited) {
        sigset_t p;
        do {
            usleep(1000);
            sigpending(&p);
        } while (!sigismember(&p, waited));
    }
    say("R\n");
    wait_for("go");
    sigprocmask(SIG_UNBLOCK, &set, 0);
    if (!strcmp(mode, "twice")) {
        sigprocmask(SIG_BLOCK, &set, 0);
        say("B\n");
        sigset_t p;
        do {
            usleep(1000);
            sigpending(&p);
        } while (!sigismember(&p, rt));
    }
    say("H\n");
    print_record(2);
    say("E\n");
    wait_for("crashed");
    print_record(1);
    return 0;
}
