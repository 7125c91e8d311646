/* Keeps a linked ring of nodes it walks every WALK_EVERY units of work.
 * SIGUSR1 (sent once by the test) simulates a transient fault: the handler
 * flags it and the main loop overwrites one `next` pointer with garbage.
 * The next walk, a few hundred ms later, dereferences it and gets SIGSEGV.
 * Only a rollback to a checkpoint taken before the corruption (progressive
 * rollback) lets it finish with the fault-free answer.
 * Usage: corrupt ROUNDS [WALK_EVERY] */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct node { uint64_t val; struct node *next; };
static volatile sig_atomic_t corrupt_now;
static void on_usr1(int sig) { (void)sig; corrupt_now = 1; }

#define N (1u << 18)
static long WALK_EVERY = 400;

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 6000;
    if (argc > 2) WALK_EVERY = atol(argv[2]);
    signal(SIGUSR1, on_usr1);
    struct node *ring = calloc(64, sizeof *ring);
    uint64_t *a = malloc(N * sizeof *a);
    for (int i = 0; i < 64; i++) { ring[i].val = i * 7 + 1; ring[i].next = &ring[(i + 1) % 64]; }
    for (uint32_t i = 0; i < N; i++) a[i] = i;
    uint64_t state = 0x243F6A8885A308D3ull, check = 0;
    for (long r = 0; r < rounds; r++) {
        for (uint32_t k = 0; k < N; k++) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            a[state & (N - 1)] += state >> 3;
        }
        if (corrupt_now && r % WALK_EVERY == 0) { corrupt_now = 0; ring[17].next = (struct node *)(uintptr_t)0x10; }
        if (r % WALK_EVERY == WALK_EVERY - 1) {
            struct node *p = &ring[0];
            for (int i = 0; i < 64; i++) { check += p->val * (uint64_t)(r + 1); p = p->next; }
        }
    }
    uint64_t sum = check;
    for (uint32_t i = 0; i < N; i++) sum = sum * 31 + a[i];
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
