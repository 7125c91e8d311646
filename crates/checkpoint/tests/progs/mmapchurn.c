/* Maps, fills, remaps, protects and unmaps memory all the time, so
 * rollbacks must restore the mapping layout as well as contents.
 * Usage: mmapchurn ROUNDS */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOTS 16
#define PG 4096

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 3000;
    uint8_t *slot[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    uint64_t state = 0x9E3779B97F4A7C15ull, check = 0;
    for (long r = 0; r < rounds; r++) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        int s = state % SLOTS;
        if (slot[s]) {
            for (size_t off = 0; off < len[s]; off += 512) check = check * 131 + slot[s][off];
            switch ((state >> 8) % 3) {
            case 0: munmap(slot[s], len[s]); slot[s] = 0; break;
            case 1: { /* grow by moving */
                uint8_t *n = mremap(slot[s], len[s], len[s] + 4 * PG, MREMAP_MAYMOVE);
                if (n == MAP_FAILED) { fprintf(stderr, "mremap(%p, %zu) failed: %m\n", (void *)slot[s], len[s]); char c[64]; snprintf(c, sizeof c, "grep -A0 %lx /proc/%d/maps >&2", (unsigned long)slot[s] >> 12, getpid()); (void)c; FILE *m = fopen("/proc/self/maps", "r"); char line[256]; while (m && fgets(line, sizeof line, m)) fputs(line, stderr); return 3; }
                memset(n + len[s], (int)(r & 0xff), 4 * PG);
                slot[s] = n; len[s] += 4 * PG; break; }
            default: /* make the tail read-only, then writable again later */
                mprotect(slot[s] + len[s] - PG, PG, PROT_READ);
                check += slot[s][len[s] - 1];
                mprotect(slot[s] + len[s] - PG, PG, PROT_READ | PROT_WRITE);
                slot[s][len[s] - 1] ^= (uint8_t)r; break;
            }
        } else {
            len[s] = (1 + (state >> 16) % 64) * PG;
            slot[s] = mmap(0, len[s], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (slot[s] == MAP_FAILED) return 2;
            for (size_t off = 0; off < len[s]; off += 64) slot[s][off] = (uint8_t)(state >> (off % 56));
        }
        /* Some work between layout changes. */
        for (int k = 0; k < 20000; k++) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; check += state & 0xff; }
    }
    printf("answer %016llx\n", (unsigned long long)check);
    return 0;
}
