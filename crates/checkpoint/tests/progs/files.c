// Changes files the way real programs do, between stretches of computing:
// reads stdin, writes progress to stdout, rewrites and appends its own data
// file in place (pwrite, write after lseek, ftruncate), creates a journal
// next to it, writes and deletes it (sqlite's rollback journal), renames a
// temporary file over a result (an editor's save), makes and removes a
// directory, holds its directory open to sync it (sqlite), rewrites a
// snapshot with O_TRUNC, keeps a scratch file open
// after deleting it and reads it back later (tmpfile()). Everything it does is
// deterministic: a run that was rolled back must leave exactly the files
// of a run that never crashed.
//
// usage: files ROUNDS WORK  (in the current directory; stdin a file)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return x;
}

static void must(int ok, const char *what) {
    if (!ok) { perror(what); exit(3); }
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    long work = argc > 2 ? atol(argv[2]) : 2000000;
    static uint64_t mem[1 << 16];
    uint64_t sum = 0;
    int data = open("data.bin", O_CREAT | O_TRUNC | O_RDWR, 0644);
    must(data >= 0, "open data.bin");
    char in[4096];
    int scratch = -1;
    for (int r = 0; r < rounds; r++) {
        // Every other round, the directory held open to sync it after the
        // journal is gone (sqlite does this): open at some checkpoints,
        // closed at later ones.
        int dir = r % 2 ? -1 : open(".", O_RDONLY | O_DIRECTORY);
        must(r % 2 || dir >= 0, "open .");
        // Compute: the crashes land here most of the time.
        for (long i = 0; i < work; i++) {
            uint64_t k = mix(sum + i);
            mem[k & 0xffff] += k;
            sum += mem[(k >> 16) & 0xffff];
        }
        // Input: a line's worth of stdin per round.
        ssize_t n = read(0, in, 64 + r % 50);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++) sum = mix(sum ^ (unsigned char)in[i]);
        }
        // Progress on stdout, unbuffered.
        dprintf(1, "round %d sum %016llx read %zd\n", r, (unsigned long long)sum, n);
        // The data file: append a record, rewrite an earlier one in place.
        char rec[256];
        int len = snprintf(rec, sizeof rec, "record %d %016llx\n", r, (unsigned long long)sum);
        must(lseek(data, 0, SEEK_END) >= 0, "lseek end");
        must(write(data, rec, len) == len, "append");
        off_t size = lseek(data, 0, SEEK_END);
        if (size > 64) {
            off_t at = (off_t)(mix(sum) % (uint64_t)(size - 32));
            must(pwrite(data, "OVERWRITTEN-", 12, at) == 12, "pwrite");
            must(lseek(data, at / 2, SEEK_SET) >= 0, "lseek mid");
            must(write(data, "mid", 3) == 3, "write mid");
        }
        if (r % 17 == 16) must(ftruncate(data, size * 3 / 4) == 0, "ftruncate");
        // A journal: created, written, synced, deleted.
        int j = open("data.bin-journal", O_CREAT | O_EXCL | O_WRONLY, 0644);
        must(j >= 0, "open journal");
        must(write(j, rec, len) == len, "write journal");
        fsync(j);
        close(j);
        must(unlink("data.bin-journal") == 0, "unlink journal");
        if (dir >= 0) {
            fsync(dir);
            close(dir);
        }
        // Save a result the safe way: write a temporary, rename it over.
        int t = open("result.tmp", O_CREAT | O_TRUNC | O_WRONLY, 0644);
        must(t >= 0, "open result.tmp");
        must(dprintf(t, "result after round %d: %016llx\n", r, (unsigned long long)sum) > 0,
             "write result.tmp");
        close(t);
        must(rename("result.tmp", "result.txt") == 0, "rename result");
        // A work directory with a file, made and removed every few rounds.
        if (r % 5 == 0) {
            must(mkdir("work", 0755) == 0, "mkdir work");
            int w = open("work/part", O_CREAT | O_WRONLY, 0600);
            must(w >= 0 && write(w, rec, len) == len, "work/part");
            close(w);
        } else if (r % 5 == 3) {
            must(unlink("work/part") == 0, "unlink work/part");
            must(rmdir("work") == 0, "rmdir work");
        }
        // A snapshot rewritten from scratch (O_TRUNC of an existing file).
        if (r % 7 == 0) {
            int s = open("snap.txt", O_CREAT | O_TRUNC | O_WRONLY, 0644);
            must(s >= 0, "open snap.txt");
            for (int k = 0; k <= r; k++) must(dprintf(s, "%d %016llx\n", k, (unsigned long long)mix(sum + k)) > 0, "snap");
            close(s);
        }
        // Scratch space in a deleted file, read back every third round.
        if (scratch < 0) {
            scratch = open("scratch", O_CREAT | O_TRUNC | O_RDWR, 0600);
            must(scratch >= 0 && unlink("scratch") == 0, "scratch");
        }
        must(write(scratch, rec, len) == len, "write scratch");
        if (r % 3 == 2) {
            char back[4096];
            ssize_t got = pread(scratch, back, sizeof back, 0);
            must(got > 0, "read scratch");
            for (ssize_t i = 0; i < got; i++) sum = mix(sum ^ (unsigned char)back[i]);
            close(scratch);
            scratch = -1;
        }
        // A log kept open in append mode.
        int l = open("log.txt", O_CREAT | O_WRONLY | O_APPEND, 0644);
        must(l >= 0, "open log");
        must(dprintf(l, "%d\n", r) > 0, "log");
        close(l);
    }
    close(data);
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
