/* What a page fault costs on this machine: 64 MiB written to fresh
 * anonymous memory (4 KiB faults), to memory madvised for huge pages,
 * to memory mapped with MAP_POPULATE (the populate, then the write to
 * pages already mapped), and to a memfd's pages through a first mapping
 * and then a second mapping of the same pages (what the two sides of a
 * shared ring each pay). Three rounds.
 *
 *     cc -O2 -o /tmp/page_faults bench/page_faults.c && /tmp/page_faults
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define N (64u << 20)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Writes every byte, so that no page is left untouched. */
static double fill(char *p, int byte) {
    double t = now();
    memset(p, byte, N);
    __asm__ volatile("" ::"r"(p) : "memory");
    return (now() - t) * 1e3;
}

int main(void) {
    const int rw = PROT_READ | PROT_WRITE, anon = MAP_PRIVATE | MAP_ANONYMOUS;
    for (int round = 0; round < 3; round++) {
        char *a = mmap(0, N, rw, anon, -1, 0);
        double small = fill(a, 1);
        munmap(a, N);

        char *b = mmap(0, N + (2u << 20), rw, anon, -1, 0);
        char *aligned = (char *)(((unsigned long)b + (2ul << 20) - 1) & ~((2ul << 20) - 1));
        madvise(aligned, N, MADV_HUGEPAGE);
        double huge = fill(aligned, 1);
        munmap(b, N + (2u << 20));

        double t = now();
        char *c = mmap(0, N, rw, anon | MAP_POPULATE, -1, 0);
        double populate = (now() - t) * 1e3;
        double mapped = fill(c, 1);
        munmap(c, N);

        int fd = memfd_create("page-faults", 0);
        if (fd < 0 || ftruncate(fd, N) < 0) {
            perror("memfd");
            return 1;
        }
        char *d = mmap(0, N, rw, MAP_SHARED, fd, 0);
        double first = fill(d, 1);
        char *e = mmap(0, N, rw, MAP_SHARED, fd, 0);
        double second = fill(e, 2);
        munmap(d, N);
        munmap(e, N);
        close(fd);

        printf("64 MiB: 4 KiB faults %.1f ms; huge pages %.1f ms; populate %.1f ms, then write %.1f ms; "
               "memfd first mapping %.1f ms, second mapping %.1f ms\n",
               small, huge, populate, mapped, first, second);
    }
    return 0;
}
