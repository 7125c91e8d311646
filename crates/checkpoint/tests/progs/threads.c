/* Four worker threads mix their own slices of a shared array and meet at
 * a barrier every round; the main thread combines the results at the end.
 * Usage: threads ROUNDS */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define T 4
#define N (1u << 18)
static uint64_t data[T][N];
static uint64_t part[T];
static long rounds;
static pthread_barrier_t bar;

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t state = 0x1234567ull * (id + 1);
    for (long r = 0; r < rounds; r++) {
        for (uint32_t k = 0; k < N; k++) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            data[id][state & (N - 1)] += state;
        }
        pthread_barrier_wait(&bar);
        /* Read a neighbour's slice: cross-thread state must stay consistent. */
        part[id] += data[(id + 1) % T][r % N];
        pthread_barrier_wait(&bar);
    }
    return 0;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atol(argv[1]) : 100;
    pthread_barrier_init(&bar, 0, T);
    pthread_t th[T];
    for (int i = 0; i < T; i++) pthread_create(&th[i], 0, worker, (void *)(intptr_t)i);
    for (int i = 0; i < T; i++) pthread_join(th[i], 0);
    uint64_t sum = 0;
    for (int i = 0; i < T; i++) { sum = sum * 31 + part[i]; for (uint32_t k = 0; k < N; k += 97) sum += data[i][k]; }
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
