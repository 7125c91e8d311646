/* Grows and shrinks its program break all the time (raw brk calls, no
 * malloc) and fills what it gains: the heap is split into several
 * mappings (each registered for tracking apart), and the break moves
 * between any two checkpoints. After every move it checks the kernel's
 * break against its own record: a rollback that restored memory but not
 * the break (or the reverse) shows as "brk mismatch" and exit status 3.
 * Prints a checksum of the heap at the end.
 * Usage: brkwalk ROUNDS */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PG 4096ul
#define MAXPAGES 2048ul

static uintptr_t kbrk(uintptr_t to) { return (uintptr_t)syscall(SYS_brk, to); }

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 20000;
    uintptr_t base = (kbrk(0) + PG - 1) & ~(PG - 1);
    if (kbrk(base) != base) return 2;
    uintptr_t top = base; /* our record of the break */
    uint64_t x = 0x9E3779B97F4A7C15ull, sum = 0;
    for (long r = 0; r < rounds; r++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t pages = (top - base) / PG;
        int grow = pages < 16 || (pages < MAXPAGES && x % 3 != 0);
        uintptr_t to = grow ? top + (1 + x % 8) * PG : top - (1 + x % 4) * PG;
        if (kbrk(to) != to) {
            fprintf(stderr, "brk(%#lx) failed at round %ld\n", (unsigned long)to, r);
            return 2;
        }
        for (uintptr_t p = top; p < to; p += PG)
            for (size_t w = 0; w < PG / 8; w += 64) ((uint64_t *)p)[w] = x ^ (p - base) ^ w;
        top = to;
        uintptr_t now = kbrk(0);
        if (now != top) {
            fprintf(stderr, "brk mismatch at round %ld: kernel %#lx, program %#lx\n", r,
                    (unsigned long)now, (unsigned long)top);
            return 3;
        }
        for (uintptr_t p = base; p < top; p += 16 * PG) sum = sum * 31 + *(uint64_t *)p;
    }
    for (uintptr_t p = base; p < top; p += PG) sum = sum * 131 + ((uint64_t *)p)[64];
    printf("pages %lu sum %016llx\n", (unsigned long)((top - base) / PG), (unsigned long long)sum);
    return 0;
}
