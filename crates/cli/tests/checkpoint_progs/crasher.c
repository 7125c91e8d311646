/* A deterministic bug: computes, then writes through a null pointer at a
 * fixed point of the work. Every rollback re-runs into the same crash, so
 * progressive rollback goes further back each time until no checkpoint is
 * left. Usage: crasher ROUNDS (prints nothing; never ends normally) */
#include <stdint.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 1000;
    volatile uint64_t state = 7, sum = 0;
    for (long r = 0; r < rounds; r++) {
        for (int k = 0; k < 200000; k++) {
            uint64_t s = state; s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            state = s; sum += s >> 60;
        }
    }
    volatile int *p = (volatile int *)(uintptr_t)(sum & 0);
    *p = 42;
    return 0;
}
