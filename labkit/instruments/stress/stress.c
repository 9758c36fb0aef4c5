/* labkit's stress workloads for notebook 07, built static so that it runs in any image (busybox, scratch).
 *
 * Every line it prints starts with a word and CLOCK_MONOTONIC in nanoseconds, the clock Python's
 * time.perf_counter_ns reads on Linux, so the host can put the program's own events on its sampler's axis.
 *
 *   stress mem STEP_MIB INTERVAL_MS MAX_MIB     allocate and touch STEP_MIB every INTERVAL_MS up to MAX_MIB
 *   stress child-mem STEP_MIB INTERVAL_MS MAX_MIB   the same in a child; PID 1 reports how the child ended
 *   stress read PATH PASSES                      read a file PASSES times in 1 MiB chunks
 *   stress cpu SECONDS THREADS REPORT_MS         THREADS busy loops for SECONDS, total work every REPORT_MS
 *   stress fork ATTEMPTS                         fork ATTEMPTS sleeping children, count failures, wait for SIGTERM
 *   stress write PATH MIB DIRECT                 write MIB MiB of zeros to PATH in 1 MiB chunks (DIRECT 1: with
 *                                                O_DIRECT, past the page cache), then fsync it
 *
 * `stress wait <mode> ...` first waits for SIGUSR1, so the host can start sampling the container's cgroup (which
 * exists only once the container runs) before the workload begins.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024L * 1024L)

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static long arg(char **argv, int i, const char *name) {
    char *end;
    long value = strtol(argv[i], &end, 10);
    if (*end || value < 0) {
        fprintf(stderr, "stress: %s must be a non-negative integer, got %s\n", name, argv[i]);
        exit(2);
    }
    return value;
}

static int mem(long step_mib, long interval_ms, long max_mib) {
    long total = 0;
    printf("start %lld 0\n", now_ns());
    while (total + step_mib <= max_mib) {
        char *block = malloc(step_mib * MIB);
        if (!block) {
            printf("enomem %lld %ld\n", now_ns(), total);
            return 3;
        }
        printf("touch %lld %ld\n", now_ns(), total + step_mib);
        memset(block, 0x5a, step_mib * MIB); /* touch every page: only touched pages are charged */
        total += step_mib;
        printf("alloc %lld %ld\n", now_ns(), total);
        sleep_ms(interval_ms);
    }
    printf("done %lld %ld\n", now_ns(), total);
    return 0;
}

static int child_mem(long step_mib, long interval_ms, long max_mib) {
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 4;
    }
    if (child == 0)
        exit(mem(step_mib, interval_ms, max_mib));
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    printf("child %lld signal=%d exit=%d\n", now_ns(), WIFSIGNALED(status) ? WTERMSIG(status) : 0,
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0; /* PID 1 itself ends normally */
}

static int read_file(const char *path, long passes) {
    static char buffer[MIB];
    for (long pass = 1; pass <= passes; pass++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            perror(path);
            return 5;
        }
        long long bytes = 0;
        ssize_t n;
        while ((n = read(fd, buffer, sizeof buffer)) > 0)
            bytes += n;
        close(fd);
        printf("read %lld %ld %lld\n", now_ns(), pass, bytes);
    }
    return 0;
}

static int write_file(const char *path, long mib, long direct) {
    void *buffer;
    if (posix_memalign(&buffer, 4096, MIB))
        return 3;
    memset(buffer, 0, MIB);
    int fd = open(path, O_WRONLY | (direct ? O_DIRECT : 0));
    if (fd < 0) {
        perror(path);
        return 5;
    }
    printf("wrote %lld 0\n", now_ns());
    for (long done = 1; done <= mib; done++) {
        if (write(fd, buffer, MIB) != MIB) {
            perror("write");
            return 6;
        }
        printf("wrote %lld %ld\n", now_ns(), done);
    }
    if (fsync(fd)) {
        perror("fsync");
        return 7;
    }
    printf("synced %lld %ld\n", now_ns(), mib);
    close(fd);
    return 0;
}

static atomic_llong work;
static atomic_int stop;

static void *spin(void *unused) {
    (void)unused;
    uint64_t x = 88172645463325252ULL;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int i = 0; i < 100000; i++) { /* xorshift: pure CPU, no memory traffic */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        atomic_fetch_add_explicit(&work, 1, memory_order_relaxed);
    }
    return (void *)(uintptr_t)x;
}

static int cpu(long seconds, long threads, long report_ms) {
    pthread_t ids[64];
    if (threads < 1 || threads > 64 || report_ms < 1) {
        fprintf(stderr, "stress: 1..64 threads and report_ms >= 1\n");
        return 2;
    }
    long long start = now_ns(), end = start + seconds * 1000000000LL;
    printf("work %lld 0\n", start);
    for (long i = 0; i < threads; i++)
        pthread_create(&ids[i], NULL, spin, NULL);
    while (now_ns() < end) {
        sleep_ms(report_ms);
        printf("work %lld %lld\n", now_ns(), atomic_load(&work));
    }
    atomic_store(&stop, 1);
    for (long i = 0; i < threads; i++)
        pthread_join(ids[i], NULL);
    return 0;
}

static volatile sig_atomic_t terminated;

static void on_term(int sig) {
    (void)sig;
    terminated = 1;
}

static int forks(long attempts) {
    long ok = 0, eagain = 0, other = 0;
    /* PID 1 ignores signals it has no handler for: without this, docker stop waits and then kills */
    signal(SIGTERM, on_term);
    for (long i = 0; i < attempts; i++) {
        pid_t child = fork();
        if (child == 0) {
            for (;;)
                pause();
        }
        if (child > 0)
            ok++;
        else if (errno == EAGAIN)
            eagain++;
        else
            other++;
    }
    printf("fork %lld ok=%ld eagain=%ld other=%ld\n", now_ns(), ok, eagain, other);
    while (!terminated)
        pause();
    kill(-1, SIGKILL); /* every other process in this pid namespace: the sleeping children */
    while (wait(NULL) > 0) {
    }
    return 0;
}

static void on_usr1(int sig) { (void)sig; }

/* Block until SIGUSR1 arrives. Blocked, the signal is not discarded even though we are PID 1 of a pid
 * namespace (which drops signals it has no handler for); the handler is there for good measure. */
static void wait_for_go(void) {
    sigset_t usr1;
    int sig;
    signal(SIGUSR1, on_usr1);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    printf("ready %lld\n", now_ns());
    sigwait(&usr1, &sig);
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && !strcmp(argv[1], "wait")) {
        wait_for_go();
        argc--;
        argv++;
    }
    if (argc == 5 && !strcmp(argv[1], "mem"))
        return mem(arg(argv, 2, "STEP_MIB"), arg(argv, 3, "INTERVAL_MS"), arg(argv, 4, "MAX_MIB"));
    if (argc == 5 && !strcmp(argv[1], "child-mem"))
        return child_mem(arg(argv, 2, "STEP_MIB"), arg(argv, 3, "INTERVAL_MS"), arg(argv, 4, "MAX_MIB"));
    if (argc == 4 && !strcmp(argv[1], "read"))
        return read_file(argv[2], arg(argv, 3, "PASSES"));
    if (argc == 5 && !strcmp(argv[1], "cpu"))
        return cpu(arg(argv, 2, "SECONDS"), arg(argv, 3, "THREADS"), arg(argv, 4, "REPORT_MS"));
    if (argc == 3 && !strcmp(argv[1], "fork"))
        return forks(arg(argv, 2, "ATTEMPTS"));
    if (argc == 5 && !strcmp(argv[1], "write"))
        return write_file(argv[2], arg(argv, 3, "MIB"), arg(argv, 4, "DIRECT"));
    fprintf(stderr, "usage: stress mem|child-mem STEP_MIB INTERVAL_MS MAX_MIB | read PATH PASSES | "
                    "cpu SECONDS THREADS REPORT_MS | fork ATTEMPTS | write PATH MIB DIRECT\n");
    return 2;
}
