/* Two threads that change their per-thread kernel state every round and
 * check, each time, that the kernel still holds what they set the round
 * before: the alternate signal stack, the robust-futex list, the clear-tid
 * address and (when glibc registered one) the rseq registration. A rollback
 * that restores memory and registers but not this state makes a check fail:
 * the program then prints MISMATCH and exits 3.
 * Usage: tstate ROUNDS */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#define HAVE_RSEQ 1
#endif

#define ALT (64 * 1024)
/* The state cycles through P values (P prime): a rollback over any number
 * of rounds but a multiple of P finds it changed. */
#define P 397
static long rounds;
static uint64_t result[2];

static void fail(int id, long r, const char *what) {
    printf("MISMATCH thread %d round %ld: %s\n", id, r, what);
    fflush(stdout);
    _exit(3);
}

static uint64_t work(uint64_t x) {
    static volatile uint64_t sink[4096];
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        sink[x & 4095] += x;
    }
    return x;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    char *alt = malloc(ALT + P * 64);
    static __thread struct robust_list_head heads[P];
    static __thread int tidword[P];
    int *orig_tid = 0;
    struct robust_list_head *orig_head = 0;
    size_t len;
    prctl(PR_GET_TID_ADDRESS, &orig_tid);
    syscall(SYS_get_robust_list, 0, &orig_head, &len);
    int rseq_on = 0;
#ifdef HAVE_RSEQ
    void *area = (char *)__builtin_thread_pointer() + __rseq_offset;
    unsigned rsize = 32;
    /* glibc registered it at thread start (unless disabled): learn the size
     * it used by unregistering, then register again. */
    if (__rseq_size > 0) {
        if (syscall(SYS_rseq, area, rsize, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) == 0 ||
            syscall(SYS_rseq, area, rsize = __rseq_size, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) == 0)
            rseq_on = syscall(SYS_rseq, area, rsize, 0, RSEQ_SIG) == 0;
    }
#endif
    uint64_t x = 0x9e3779b97f4a7c15ull * (id + 1);
    for (long r = 0; r < rounds; r++) {
        int a = r % P, b = (r + P - 1) % P;
        stack_t ss = {.ss_sp = alt + a * 64, .ss_size = ALT, .ss_flags = 0}, old;
        if (sigaltstack(&ss, &old)) fail(id, r, "sigaltstack failed");
        if (r > 0 && old.ss_sp != alt + b * 64) fail(id, r, "alternate signal stack");
        struct robust_list_head *h = 0;
        syscall(SYS_get_robust_list, 0, &h, &len);
        if (r > 0 && h != &heads[b]) fail(id, r, "robust futex list");
        heads[a].list.next = &heads[a].list;
        if (syscall(SYS_set_robust_list, &heads[a], sizeof heads[a])) fail(id, r, "set_robust_list failed");
        int *tp = 0;
        prctl(PR_GET_TID_ADDRESS, &tp);
        if (r > 0 && tp != &tidword[b]) fail(id, r, "clear-tid address");
        syscall(SYS_set_tid_address, &tidword[a]);
#ifdef HAVE_RSEQ
        if (rseq_on) {
            /* Registered on odd rounds, not on even ones. */
            long rc = syscall(SYS_rseq, area, rsize, (r & 1) ? 0 : RSEQ_FLAG_UNREGISTER, RSEQ_SIG);
            if (r > 0 && rc != 0) fail(id, r, "rseq registration");
        }
#endif
        x = work(x);
    }
#ifdef HAVE_RSEQ
    if (rseq_on && (rounds & 1)) syscall(SYS_rseq, area, rsize, 0, RSEQ_SIG);
#endif
    /* Put back what pthread_join and glibc rely on. */
    syscall(SYS_set_tid_address, orig_tid);
    syscall(SYS_set_robust_list, orig_head, sizeof *orig_head);
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, 0);
    result[id] = x;
    return 0;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atol(argv[1]) : 100;
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], 0, worker, (void *)(intptr_t)i);
    for (int i = 0; i < 2; i++) pthread_join(th[i], 0);
    printf("answer %016llx %016llx\n", (unsigned long long)result[0], (unsigned long long)result[1]);
    return 0;
}
