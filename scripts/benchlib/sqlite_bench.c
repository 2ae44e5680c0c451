/* SQLite side of scripts/bench, through the C API (the fair in-process peer of the AeroDB
 * kernel): WAL mode, synchronous=FULL (a commit returns after fsync), one connection per thread.
 *   sqlite_bench commit DB THREADS SECONDS   -> "rate=<commits/s> p50=<us> p99=<us>"
 *   sqlite_bench read DB DOCUMENTS SECONDS    -> "rate=<reads/s>" (random keys, 1 thread)
 *   sqlite_bench fsync FILE 1 SECONDS         -> "rate=<appends/s>": the raw floor, one 4 KiB pwrite +
 *                                                fdatasync per append into a preallocated, zeroed file
 * Documents are ~1 KiB like AeroDB's bench: (id TEXT PRIMARY KEY, n INTEGER, body TEXT). */
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static char body[981];
static double seconds;
static const char *path;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static sqlite3 *open_db(void) {
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) { fprintf(stderr, "open: %s\n", sqlite3_errmsg(db)); exit(1); }
    sqlite3_busy_timeout(db, 10000);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", 0, 0, 0);
    return db;
}

typedef struct { int id; long count; uint64_t *lat; long cap; } worker_t;

static void *commit_worker(void *arg) {
    worker_t *w = arg;
    sqlite3 *db = open_db();
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "INSERT INTO docs(id, n, body) VALUES (?, ?, ?)", -1, &st, 0);
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    char id[64];
    for (long n = 0; now_ns() < end; n++) {
        snprintf(id, sizeof id, "w%d-%ld", w->id, n);
        uint64_t t0 = now_ns();
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, n);
        sqlite3_bind_text(st, 3, body, -1, SQLITE_STATIC);
        int rc;
        /* 32 writers on one file: SQLite serializes them; a writer that times out waits again. */
        while ((rc = sqlite3_step(st)) == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_reset(st);
        if (rc != SQLITE_DONE) { fprintf(stderr, "insert: %s\n", sqlite3_errmsg(db)); exit(1); }
        sqlite3_reset(st);
        if (w->count < w->cap) w->lat[w->count] = now_ns() - t0;
        w->count++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void create(void) {
    sqlite3 *db = open_db();
    if (sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS docs(id TEXT PRIMARY KEY, n INTEGER, body TEXT)", 0, 0, 0) != SQLITE_OK) {
        fprintf(stderr, "create: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    sqlite3_close(db);
}

static int commit(int threads) {
    create();
    pthread_t t[256];
    worker_t w[256];
    uint64_t start = now_ns();
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){ .id = i, .count = 0, .cap = 2000000, .lat = malloc(2000000 * sizeof(uint64_t)) };
        pthread_create(&t[i], 0, commit_worker, &w[i]);
    }
    long total = 0, kept = 0;
    for (int i = 0; i < threads; i++) { pthread_join(t[i], 0); total += w[i].count; kept += w[i].count < w[i].cap ? w[i].count : w[i].cap; }
    double elapsed = (now_ns() - start) / 1e9;
    uint64_t *all = malloc((kept ? kept : 1) * sizeof(uint64_t));
    long k = 0;
    for (int i = 0; i < threads; i++) for (long j = 0; j < w[i].count && j < w[i].cap; j++) all[k++] = w[i].lat[j];
    qsort(all, k, sizeof(uint64_t), cmp);
    printf("rate=%.0f p50=%.0f p99=%.0f\n", total / elapsed, k ? all[k / 2] / 1e3 : 0, k ? all[k * 99 / 100] / 1e3 : 0);
    return 0;
}

static int read_bench(long documents) {
    create();
    sqlite3 *db = open_db();
    sqlite3_exec(db, "BEGIN", 0, 0, 0);
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO docs(id, n, body) VALUES (?, ?, ?)", -1, &ins, 0);
    char id[64];
    for (long i = 0; i < documents; i++) {
        snprintf(id, sizeof id, "d%ld", i);
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 2, i);
        sqlite3_bind_text(ins, 3, body, -1, SQLITE_STATIC);
        sqlite3_step(ins);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    sqlite3_exec(db, "COMMIT", 0, 0, 0);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT id, n, body FROM docs WHERE id = ?", -1, &st, 0);
    uint64_t seed = 42, start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
    long reads = 0, found = 0;
    while (now_ns() < end) {
        for (int i = 0; i < 1000; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            snprintf(id, sizeof id, "d%ld", (long)((seed >> 33) % (uint64_t)documents));
            sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(st) == SQLITE_ROW) found++;
            sqlite3_reset(st);
            reads++;
        }
    }
    double elapsed = (now_ns() - start) / 1e9;
    printf("rate=%.0f found=%ld reads=%ld\n", reads / elapsed, found, reads);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

static int fsync_bench(void) {
    const long blocks = 16384; /* 64 MiB, like a WAL segment */
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    static char block[4096];
    for (long i = 0; i < blocks; i++) if (pwrite(fd, block, sizeof block, i * 4096) != sizeof block) { perror("pwrite"); return 1; }
    fsync(fd);
    memset(block, 'x', sizeof block);
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
    long n = 0;
    while (now_ns() < end) {
        if (pwrite(fd, block, sizeof block, (n % blocks) * 4096) != sizeof block || fdatasync(fd) != 0) { perror("write"); return 1; }
        n++;
    }
    printf("rate=%.0f\n", n / ((now_ns() - start) / 1e9));
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: sqlite_bench commit|read DB N SECONDS\n"); return 2; }
    memset(body, 'x', 980);
    path = argv[2];
    seconds = atof(argv[4]);
    if (strcmp(argv[1], "commit") == 0) return commit(atoi(argv[3]) > 256 ? 256 : atoi(argv[3]));
    if (strcmp(argv[1], "read") == 0) return read_bench(atol(argv[3]));
    if (strcmp(argv[1], "fsync") == 0) return fsync_bench();
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
