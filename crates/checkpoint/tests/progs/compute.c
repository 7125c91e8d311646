/* A long computation with a known answer: mixes an 8 MiB array with integer
 * and floating-point (SSE/x87) state for ROUNDS rounds, then prints the
 * answer once at the end (output is not rolled back, so it prints nothing
 * before). Usage: compute ROUNDS */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define N (1u << 20)

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 40;
    uint64_t *a = malloc(N * sizeof *a);
    if (!a) return 1;
    for (uint32_t i = 0; i < N; i++) a[i] = i * 0x9E3779B97F4A7C15ull;
    uint64_t state = 88172645463325252ull;
    double acc = 1.0;
    long double lacc = 1.0L;
    for (long r = 0; r < rounds; r++) {
        for (uint32_t k = 0; k < N; k++) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            uint32_t i = state & (N - 1);
            a[i] = (a[i] ^ state) * 0xff51afd7ed558ccdull + k;
            if ((k & 1023) == 0) {
                acc = fmod(acc * 1.000001 + sqrt((double)(a[i] >> 12)), 1e12);
                lacc = fmodl(lacc * 1.0000001L + (long double)(a[i] & 0xffff), 1e15L);
            }
        }
    }
    uint64_t sum = 0;
    for (uint32_t i = 0; i < N; i++) sum = sum * 31 + a[i];
    printf("answer %016llx %.6f %.3Lf\n", (unsigned long long)sum, acc, lacc);
    return 0;
}
