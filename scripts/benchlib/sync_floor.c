// A C model of `sync_commit_8w` with nothing of AeroDB's own: the floor that this machine's disk,
// loopback and scheduler put under a commit acknowledged only once it is durable on a primary AND
// on one replica (docs/BENCHMARKS.md, "s27"). scripts/benchlib/bench.py runs it beside AeroDB's
// and PostgreSQL's sync_commit_8w.
//
// Two processes on 127.0.0.1, as AeroDB's and PostgreSQL's cluster rows have:
// - the primary: W writer threads, one flusher thread, one ACK reader thread. A writer appends
//   one record (RECORD bytes, a ~1 KiB document with its header) under a mutex, wakes the
//   flusher and sleeps until its record is durable locally and acknowledged by the replica
//   (group commit: every record appended while a flush runs goes into the next one).
//   The flusher takes every record appended so far as one batch, and then:
//     serial   - writes the batch to its log (one pwrite, O_DIRECT | O_DSYNC), then sends it to
//                the replica: what AeroDB and PostgreSQL do (ship what is durable);
//     parallel - sends the batch first, then writes it locally, so both flushes overlap: the
//                shortest cycle a primary can have without shipping records it may lose.
//   It does not wait for the replica's ACK before the next batch; the ACK reader thread does.
// - the replica: reads each batch (u64 end sequence, u32 length, then the bytes), writes it to
//   its own log (one pwrite, O_DIRECT | O_DSYNC), then answers the batch's end sequence (u64).
// Logs are preallocated, zero-filled 64 MiB files written round robin in 4 KiB-aligned, padded
// writes, as AeroDB's io_uring engine writes a group commit.
//
// Build: gcc -O2 -pthread -o sync_floor sync_floor.c
// Usage: sync_floor serial|parallel WRITERS SECONDS DIR
// Prints: sync_floor: mode=serial writers=8 commits=N seconds=S rate=R batches=B
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RECORD 1100
#define LOG_BYTES (64L << 20)
#define WRITERS_MAX 256
#define BATCH_MAX (WRITERS_MAX * RECORD)
#define SECONDS_MAX 3600

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void die(const char *what) { perror(what); exit(1); }

static void full_write(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) { ssize_t w = write(fd, c, n); if (w < 0) { if (errno == EINTR) continue; die("write"); } c += w; n -= w; }
}
static int full_read(int fd, void *p, size_t n) {  // 0 at a clean end of stream before any byte
  char *c = p; size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, c + got, n - got);
    if (r < 0) { if (errno == EINTR) continue; die("read"); }
    if (r == 0) { if (got == 0) return 0; fprintf(stderr, "short frame\n"); exit(1); }
    got += r;
  }
  return 1;
}

// One preallocated, zero-filled log written with O_DIRECT | O_DSYNC in padded 4 KiB blocks.
struct log { int fd; off_t at; char *buf; };
static void log_open(struct log *l, const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("open log");
  char *z = calloc(1, 1 << 20);
  for (long i = 0; i < LOG_BYTES >> 20; i++) if (pwrite(fd, z, 1 << 20, i << 20) != 1 << 20) die("zero-fill");
  if (fsync(fd)) die("fsync");
  free(z); close(fd);
  l->fd = open(path, O_RDWR | O_DIRECT | O_DSYNC);
  if (l->fd < 0) die("open O_DIRECT|O_DSYNC");
  if (posix_memalign((void **)&l->buf, 4096, BATCH_MAX + 4096)) die("posix_memalign");
  memset(l->buf, 0, BATCH_MAX + 4096);
  l->at = 0;
}
static void log_append(struct log *l, const char *bytes, size_t n) {
  size_t padded = (n + 4095) & ~(size_t)4095;
  memcpy(l->buf, bytes, n);
  if (l->at + (off_t)padded > LOG_BYTES) l->at = 0;
  if (pwrite(l->fd, l->buf, padded, l->at) != (ssize_t)padded) die("pwrite");
  l->at += padded;
}

static void replica(int sock, const char *dir) {
  char path[4096]; snprintf(path, sizeof path, "%s/replica.log", dir);
  struct log l; log_open(&l, path);
  char *frame = malloc(BATCH_MAX);
  full_write(sock, "r", 1);  // ready: the primary starts its clock after this
  for (;;) {
    uint64_t end; uint32_t n;
    if (!full_read(sock, &end, 8)) break;
    full_read(sock, &n, 4);
    if (n > BATCH_MAX) { fprintf(stderr, "frame too long\n"); exit(1); }
    full_read(sock, frame, n);
    log_append(&l, frame, n);
    full_write(sock, &end, 8);
  }
  exit(0);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flusher_wake = PTHREAD_COND_INITIALIZER, writers_wake = PTHREAD_COND_INITIALIZER;
static uint64_t appended, taken, local_durable, acked;
static int parallel, stopping, sock;
static double deadline;
static long commits_done, batches;
static struct log primary_log;

static void *writer(void *unused) {
  (void)unused;
  long mine = 0;
  while (now() < deadline) {
    pthread_mutex_lock(&mu);
    uint64_t seq = ++appended;
    pthread_cond_signal(&flusher_wake);
    while (local_durable < seq || acked < seq) pthread_cond_wait(&writers_wake, &mu);
    pthread_mutex_unlock(&mu);
    mine++;
  }
  pthread_mutex_lock(&mu); commits_done += mine; pthread_mutex_unlock(&mu);
  return NULL;
}

static void *flusher(void *unused) {
  (void)unused;
  char *batch = malloc(BATCH_MAX);
  memset(batch, 'x', BATCH_MAX);
  for (;;) {
    pthread_mutex_lock(&mu);
    while (taken == appended && !stopping) pthread_cond_wait(&flusher_wake, &mu);
    if (taken == appended) { pthread_mutex_unlock(&mu); break; }
    uint64_t end = appended; uint32_t n = (uint32_t)((end - taken) * RECORD);
    taken = end; batches++;
    pthread_mutex_unlock(&mu);
    char head[12]; memcpy(head, &end, 8); memcpy(head + 8, &n, 4);
    if (parallel) { full_write(sock, head, 12); full_write(sock, batch, n); }
    log_append(&primary_log, batch, n);
    if (!parallel) { full_write(sock, head, 12); full_write(sock, batch, n); }
    pthread_mutex_lock(&mu);
    local_durable = end;
    pthread_cond_broadcast(&writers_wake);
    pthread_mutex_unlock(&mu);
  }
  shutdown(sock, SHUT_WR);
  return NULL;
}

static void *ack_reader(void *unused) {
  (void)unused;
  uint64_t end;
  while (full_read(sock, &end, 8)) {
    pthread_mutex_lock(&mu);
    acked = end;
    pthread_cond_broadcast(&writers_wake);
    pthread_mutex_unlock(&mu);
  }
  // The replica closes only after the flusher's shutdown; earlier, writers would wait forever.
  pthread_mutex_lock(&mu);
  int done = stopping && acked == appended;
  pthread_mutex_unlock(&mu);
  if (!done) { fprintf(stderr, "the replica ended before acknowledging every commit\n"); exit(1); }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5 || (strcmp(argv[1], "serial") && strcmp(argv[1], "parallel"))) {
    fprintf(stderr, "usage: %s serial|parallel WRITERS SECONDS DIR\n", argv[0]); return 2;
  }
  parallel = !strcmp(argv[1], "parallel");
  // Whole arguments only: "8x" or an out-of-range number is refused, not read as its prefix.
  char *rest;
  errno = 0;
  long writers = strtol(argv[2], &rest, 10);
  if (errno || rest == argv[2] || *rest || writers < 1 || writers > WRITERS_MAX) {
    fprintf(stderr, "WRITERS must be an integer in [1, %d]\n", WRITERS_MAX); return 2;
  }
  errno = 0;
  double secs = strtod(argv[3], &rest);
  if (errno || rest == argv[3] || *rest || !(secs > 0 && secs <= SECONDS_MAX)) {
    fprintf(stderr, "SECONDS must be a number in (0, %d]\n", SECONDS_MAX); return 2;
  }
  const char *dir = argv[4];
  signal(SIGPIPE, SIG_IGN);
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 1) ||
      getsockname(listener, (struct sockaddr *)&a, &len)) die("listen");
  pid_t child = fork();
  if (child < 0) die("fork");
  int one = 1;
  if (child == 0) {
    close(listener);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a)) die("connect");
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    replica(s, dir);
  }
  sock = accept(listener, NULL, NULL);
  if (sock < 0) die("accept");
  setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char path[4096]; snprintf(path, sizeof path, "%s/primary.log", dir);
  log_open(&primary_log, path);
  char ready; if (!full_read(sock, &ready, 1)) { fprintf(stderr, "replica ended\n"); return 1; }
  pthread_t f, r, w[WRITERS_MAX];
  double start = now(); deadline = start + secs;
  if (pthread_create(&f, NULL, flusher, NULL) || pthread_create(&r, NULL, ack_reader, NULL)) { fprintf(stderr, "pthread_create failed\n"); exit(1); }
  for (long i = 0; i < writers; i++) if (pthread_create(&w[i], NULL, writer, NULL)) { fprintf(stderr, "pthread_create failed\n"); exit(1); }
  for (long i = 0; i < writers; i++) pthread_join(w[i], NULL);
  double took = now() - start;
  pthread_mutex_lock(&mu); stopping = 1; pthread_cond_signal(&flusher_wake); pthread_mutex_unlock(&mu);
  pthread_join(f, NULL);
  pthread_join(r, NULL);
  int status; waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status)) { fprintf(stderr, "replica failed\n"); return 1; }
  printf("sync_floor: mode=%s writers=%ld commits=%ld seconds=%.2f rate=%.0f batches=%ld\n",
         argv[1], writers, commits_done, took, commits_done / took, batches);
  return 0;
}
