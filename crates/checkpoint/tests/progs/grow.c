/* Maps a fresh 8 MiB region every 20 ms or so, fills it and keeps
 * the last four (older ones are unmapped): new large mappings appear
 * between any two checkpoints. Prints a checksum of what it wrote.
 * Usage: grow ROUNDS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define LEN (8u << 20)
#define KEEP 4

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 100;
    uint64_t *ring[KEEP] = {0};
    uint64_t x = 0x2545F4914F6CDD1Dull, sum = 0;
    for (long r = 0; r < rounds; r++) {
        int s = r % KEEP;
        if (ring[s]) {
            for (size_t i = 0; i < LEN / 8; i += 512) sum = sum * 31 + ring[s][i];
            munmap(ring[s], LEN);
        }
        ring[s] = mmap(0, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ring[s] == MAP_FAILED) return 2;
        for (size_t i = 0; i < LEN / 8; i += 8) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            ring[s][i] = x;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, 0);
    }
    printf("sum %016llx\n", (unsigned long long)sum);
    return 0;
}
