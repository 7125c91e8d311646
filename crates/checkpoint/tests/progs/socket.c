/* Holds a connected UNIX socket pair (state a rollback cannot take back)
 * while computing; a crash must lead to a restart with the reason.
 * Usage: socket ROUNDS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 60;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 2;
    uint64_t state = 42, sum = 0;
    for (long r = 0; r < rounds; r++) {
        char b = (char)r;
        if (write(sv[0], &b, 1) != 1 || read(sv[1], &b, 1) != 1) return 3;
        for (int k = 0; k < 1000000; k++) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; sum += state >> 60; }
        sum += (unsigned char)b;
    }
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
