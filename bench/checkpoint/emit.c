/* Output writer for the file-tracking benchmark: per round, ~1 ms of
 * integer work, then CHUNK-byte write()s to stdout until KB_PER_ROUND
 * bytes are out. Fixed work and output, so run time measures overhead.
 * At 20 KB per round it writes about 20 MB/s on this machine.
 * Usage: emit ROUNDS KB_PER_ROUND CHUNK */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 5000;
    long kb = argc > 2 ? atol(argv[2]) : 20;
    long chunk = argc > 3 ? atol(argv[3]) : 4096;
    char *buf = malloc(chunk);
    if (!buf) return 1;
    uint64_t s = 0x9E3779B97F4A7C15ull, sum = 0;
    for (long r = 0; r < rounds; r++) {
        for (int k = 0; k < 400000; k++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; sum += s >> 61; }
        for (long left = kb * 1024; left > 0; left -= chunk) {
            long n = left < chunk ? left : chunk;
            for (long i = 0; i < n; i += 8) buf[i] = (char)(s >> (i & 31));
            if (write(1, buf, n) != n) return 2;
        }
    }
    fprintf(stderr, "answer %016llx\n", (unsigned long long)sum);
    return 0;
}
