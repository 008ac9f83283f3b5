/* What a bare fork costs on this machine, the floor under any forked
 * worker: a static C program that first touches MB megabytes of heap, then
 * 200 times forks a child that writes one stamp to a pipe and _exits.
 * Prints the medians of fork-to-child's-first-instruction and of
 * fork+exit+waitpid (docs/STARTUP.md, "What a fork costs here").
 *
 *     cc -O2 -static bench/fork_cost.c -o /tmp/fork_cost && /tmp/fork_cost 0 && /tmp/fork_cost 3
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 200

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    char *heap = malloc((mb << 20) + 1);
    if (!heap) return 1;
    memset(heap, 1, mb << 20);
    double first[ROUNDS], whole[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        int fd[2];
        if (pipe(fd) < 0) return 1;
        double start = now_us();
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) {
            double entered = now_us();
            (void)!write(fd[1], &entered, sizeof entered);
            _exit(0);
        }
        double entered;
        if (read(fd[0], &entered, sizeof entered) != sizeof entered) return 1;
        waitpid(pid, NULL, 0);
        first[i] = entered - start;
        whole[i] = now_us() - start;
        close(fd[0]);
        close(fd[1]);
    }
    qsort(first, ROUNDS, sizeof *first, by_value);
    qsort(whole, ROUNDS, sizeof *whole, by_value);
    printf("%zu MB touched: fork to the child's first instruction %.1f us, fork+exit+waitpid %.1f us (medians of %d)\n",
           mb, first[ROUNDS / 2], whole[ROUNDS / 2], ROUNDS);
    return 0;
}
