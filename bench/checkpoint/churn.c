/* Heap churner for checkpoint benchmarks: keeps RESIDENT_MB of heap
 * resident and, per round of ~1 ms of integer work, writes to PAGES random
 * pages of it. Fixed work, so run time measures overhead.
 * Usage: churn RESIDENT_MB ROUNDS PAGES_PER_ROUND */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    size_t mb = argc > 1 ? strtoul(argv[1], 0, 10) : 100;
    long rounds = argc > 2 ? atol(argv[2]) : 3000;
    long pages = argc > 3 ? atol(argv[3]) : 12;
    size_t n = mb << 20;
    uint8_t *heap = malloc(n);
    if (!heap) return 1;
    memset(heap, 1, n);
    size_t npages = n / 4096;
    uint64_t s = 0x9E3779B97F4A7C15ull, sum = 0;
    for (long r = 0; r < rounds; r++) {
        for (int k = 0; k < 400000; k++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; sum += s >> 61; }
        for (long p = 0; p < pages; p++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            heap[(s % npages) * 4096 + (s >> 52)] += (uint8_t)s;
        }
    }
    for (size_t i = 0; i < n; i += 4096) sum = sum * 31 + heap[i];
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
