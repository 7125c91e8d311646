/* Computes; SIGUSR1 (sent once) makes it spin forever, a simulated hang.
 * A rollback requested by the supervisor to before the signal lets it
 * finish. Usage: spin ROUNDS */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static volatile sig_atomic_t hang_now;
static void on_usr1(int sig) { (void)sig; hang_now = 1; }

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 60;
    signal(SIGUSR1, on_usr1);
    volatile uint64_t state = 7, sum = 0;
    for (long r = 0; r < rounds; r++) {
        for (int k = 0; k < 1000000; k++) { uint64_t s = state; s ^= s << 13; s ^= s >> 7; s ^= s << 17; state = s; sum += s >> 60; }
        while (hang_now) { /* stuck */ }
    }
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
