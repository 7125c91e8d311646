/* Works a little, then exits with the code given. Usage: exitcode CODE */
#include <stdint.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    volatile uint64_t s = 1;
    for (long i = 0; i < 200000000; i++) s = s * 6364136223846793005ull + 1;
    return argc > 1 ? atoi(argv[1]) : 0;
}
