/* Multi-threaded programs that end in awkward ways, for the tracer's
 * waits. Usage: exits MODE
 *   group  three threads start; one calls exit_group at once while the
 *          others are busy or being created (exit status 5)
 *   exec   a second thread execs /bin/echo (the kernel ends every other
 *          thread, the leader included, and the exec'ing thread takes the
 *          process id)
 *   leader the main thread ends with pthread_exit; the worker prints and
 *          exits the process later (the leader is a zombie meanwhile) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void *spin(void *a) { for (volatile unsigned long i = 0;; i++) ; return a; }

static void *quit(void *a) { syscall(SYS_exit_group, 5); return a; }

static void *execer(void *a) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, 0);
    execl("/bin/echo", "echo", "exec'd", (char *)0);
    return a;
}

static void *late(void *a) {
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, 0);
    printf("worker outlived main\n");
    fflush(stdout);
    exit(0);
    return a;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "group";
    pthread_t t;
    if (!strcmp(mode, "group")) {
        pthread_create(&t, 0, spin, 0);
        pthread_create(&t, 0, spin, 0);
        pthread_create(&t, 0, quit, 0);
        spin(0);
    } else if (!strcmp(mode, "exec")) {
        pthread_create(&t, 0, spin, 0);
        pthread_create(&t, 0, execer, 0);
        spin(0);
    } else if (!strcmp(mode, "leader")) {
        pthread_create(&t, 0, late, 0);
        pthread_exit(0);
    }
    return 2;
}
