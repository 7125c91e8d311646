/* Spends three quarters of its time in a SIGUSR1 handler running on an
 * alternate signal stack, the rest outside, so checkpoints land in both. In mode "auto" the stack is
 * armed with SS_AUTODISARM: the kernel disarms it when the handler starts
 * and re-arms it at rt_sigreturn, with no system call of the program.
 * In mode "plain" it stays armed (reported SS_ONSTACK inside the handler).
 *
 * Each round raises SIGUSR1 once and checks, after the handler returned,
 * that it ran exactly once and that the kernel reports the alternate stack
 * armed again at its address and size; the handler checks it runs on that
 * stack and what the kernel reports inside (disarmed in "auto", on-stack
 * in "plain") at its start and end. Its work keeps a buffer on the
 * alternate stack, so the answer also depends on that memory. A failed
 * check prints "ALTSTACK ..." on stdout and exits 3.
 *
 * On stderr (write(2), never rolled back) each round writes
 * "M<round>.<stage>" after each stage of its work outside the handler;
 * then the handler writes "E<round>" when it starts, "P<round>.<stage>" after each stage of its work and
 * "X<round>" before it returns: a "P" or "X" line that does not come after
 * the line before it shows execution resumed inside that handler, past its
 * start, i.e. a rollback to a checkpoint taken while the handler ran on
 * the alternate stack.
 * Prints the answer at the end. Usage: altstack auto|plain ROUNDS */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1u << 31) /* <linux/signal.h>; not in every glibc */
#endif

#define ALT (256 * 1024)
/* Each round works MAIN_STAGES stages outside the handler, then
 * HANDLER_STAGES inside, each of STAGE_WORK steps (~0.5 ms). */
#define MAIN_STAGES 16
#define HANDLER_STAGES 48
#define STAGE_WORK 250000

static char *alt;
static int autodisarm;
static volatile long round_no, handled;
static volatile uint64_t result;

static void fail(const char *what, long r) {
    char buf[160];
    int n = snprintf(buf, sizeof buf, "ALTSTACK %s (round %ld)\n", what, r);
    if (write(1, buf, n) < 0) _exit(4);
    _exit(3);
}

static void say(const char *what, long r, int stage) {
    char buf[48];
    int n = stage < 0 ? snprintf(buf, sizeof buf, "%s%ld\n", what, r)
                      : snprintf(buf, sizeof buf, "%s%ld.%d\n", what, r, stage);
    if (write(2, buf, n) != n) {
        char m[32];
        snprintf(m, sizeof m, "log write: errno %d", errno);
        fail(m, r);
    }
}

/* What the kernel reports inside the handler. */
static void check_inside(long r) {
    stack_t cur;
    if (sigaltstack(0, &cur)) fail("sigaltstack read failed in the handler", r);
    if (autodisarm) {
        if (!(cur.ss_flags & SS_DISABLE) || cur.ss_sp != 0 || cur.ss_size != 0)
            fail("auto-disarming stack not disarmed inside the handler", r);
    } else {
        if (!(cur.ss_flags & SS_ONSTACK) || cur.ss_sp != alt || cur.ss_size != ALT)
            fail("plain stack not reported on-stack inside the handler", r);
    }
}

static uint64_t work(uint64_t x, volatile uint64_t *buf) {
    for (int i = 0; i < STAGE_WORK; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        buf[x & 1023] += x;
    }
    return x;
}

static void handler(int sig) {
    (void)sig;
    long r = round_no;
    volatile uint64_t buf[1024]; /* on the alternate stack */
    if ((char *)buf < alt || (char *)buf >= alt + ALT) fail("handler not on the alternate stack", r);
    say("E", r, -1);
    check_inside(r);
    uint64_t x = result ^ (0x9e3779b97f4a7c15ull * (uint64_t)(r + 1));
    for (int i = 0; i < 1024; i++) buf[i] = x + i;
    for (int s = 0; s < HANDLER_STAGES; s++) {
        x = work(x, buf);
        check_inside(r);
        say("P", r, s);
    }
    for (int i = 0; i < 1024; i++) x = x * 31 + buf[i];
    result = x;
    handled++;
    say("X", r, -1);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "auto") && strcmp(argv[1], "plain"))) {
        fprintf(stderr, "usage: altstack auto|plain ROUNDS\n");
        return 2;
    }
    autodisarm = !strcmp(argv[1], "auto");
    long rounds = atol(argv[2]);
    alt = malloc(ALT);
    if (!alt) return 1;
    int flags = autodisarm ? (int)SS_AUTODISARM : 0;
    stack_t ss = {.ss_sp = alt, .ss_size = ALT, .ss_flags = flags};
    if (sigaltstack(&ss, 0)) {
        perror("sigaltstack");
        return 1;
    }
    struct sigaction sa = {.sa_handler = handler, .sa_flags = SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, 0)) return 1;
    for (long r = 0; r < rounds; r++) {
        /* Work outside the handler, on the normal stack: the stack is
         * armed a quarter of the time, disarmed the rest. */
        static volatile uint64_t mainbuf[1024];
        uint64_t x = result + (uint64_t)r;
        for (int s = 0; s < MAIN_STAGES; s++) {
            x = work(x, mainbuf);
            say("M", r, s);
        }
        result = x;
        round_no = r;
        long before = handled;
        raise(SIGUSR1);
        if (handled != before + 1) fail(handled == before ? "the handler did not run (signal lost)" : "the handler ran more than once", r);
        stack_t cur;
        if (sigaltstack(0, &cur)) fail("sigaltstack read failed", r);
        if (cur.ss_sp != alt || cur.ss_size != ALT || cur.ss_flags != flags)
            fail("alternate stack not armed as set after the handler", r);
    }
    printf("rounds %ld answer %016llx\n", rounds, (unsigned long long)result);
    return 0;
}
