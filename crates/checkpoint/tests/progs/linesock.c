/* Listens on a UNIX socket path, accepts one peer and sends it a line per
 * round ("tick N") while computing; reads and discards whatever the peer
 * sends. The socket's replay is harmless to a line reader, so an embedder
 * may declare it tolerated. Usage: linesock PATH ROUNDS */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long rounds = atol(argv[2]);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, argv[1], sizeof(a.sun_path) - 1);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    unlink(argv[1]);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1)) return 3;
    int c = accept(l, NULL, NULL);
    if (c < 0) return 4;
    fcntl(c, F_SETFL, O_NONBLOCK);
    uint64_t state = 42, sum = 0;
    char line[64], junk[256];
    for (long r = 0; r < rounds; r++) {
        for (int k = 0; k < 1000000; k++) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; sum += state >> 60; }
        int n = snprintf(line, sizeof(line), "tick %ld\n", r);
        if (write(c, line, n) != n) return 5;
        while (read(c, junk, sizeof(junk)) > 0) { }
    }
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
