// A C model of one durable 4 KiB append per operation, one thread, into a preallocated, zeroed
// 64 MiB file: how much each way of making 4 KiB durable costs on this machine, with no thread
// hand-off of AeroDB's own (docs/BENCHMARKS.md, "s22"). Not part of scripts/bench.
// Build: gcc -O2 -o wal_engine_model wal_engine_model.c -luring (Debian: liburing-dev)
// Modes: pw (pwrite+fdatasync), ur (io_uring write linked to fsync DATASYNC: UringEngine until s23,
// now wal_engine uring-buffered),
// urd (io_uring write, file O_DIRECT|O_DSYNC: UringEngine since s23), pwd (pwrite, file O_DIRECT|O_DSYNC).
// Usage: wal_engine_model MODE SECONDS FILE   (measure with perf stat -e context-switches,task-clock)
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "pw") && strcmp(argv[1], "ur") && strcmp(argv[1], "urd") && strcmp(argv[1], "pwd"))) {
    fprintf(stderr, "usage: %s pw|ur|urd|pwd SECONDS FILE\n", argv[0]); return 2;
  }
  const char *mode = argv[1]; double secs = atof(argv[2]); const char *path = argv[3];
  if (!(secs > 0 && secs <= 3600)) { fprintf(stderr, "SECONDS must be in (0, 3600]\n"); return 2; }
  int direct = !strcmp(mode, "urd") || !strcmp(mode, "pwd");
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { perror("open"); return 1; }
  char *z;
  if (posix_memalign((void **)&z, 4096, 1 << 20)) { perror("posix_memalign"); return 1; }
  memset(z, 0, 1 << 20);
  for (int i = 0; i < 64; i++) if (pwrite(fd, z, 1 << 20, (off_t)i << 20) != 1 << 20) { perror("zero-fill"); return 1; }
  if (fsync(fd)) { perror("fsync"); return 1; }
  close(fd);
  fd = open(path, O_RDWR | (direct ? O_DIRECT | O_DSYNC : 0));
  if (fd < 0) { perror("open"); return 1; }
  char *buf;
  if (posix_memalign((void **)&buf, 4096, 4096)) { perror("posix_memalign"); return 1; }
  memset(buf, 'x', 4096);
  struct io_uring ring;
  if (io_uring_queue_init(8, &ring, 0)) { fprintf(stderr, "io_uring_queue_init failed\n"); return 1; }
  long n = 0; double start = now(), end = start + secs;
  while (now() < end) {
    off_t off = (off_t)(n % 16384) * 4096;
    if (mode[0] == 'p') {
      if (pwrite(fd, buf, 4096, off) != 4096) { perror("pwrite"); return 1; }
      if (!direct && fdatasync(fd)) { perror("fdatasync"); return 1; }
    } else {
      struct io_uring_sqe *w = io_uring_get_sqe(&ring);
      io_uring_prep_write(w, fd, buf, 4096, off);
      int ops = 1;
      if (!direct) {
        w->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *f = io_uring_get_sqe(&ring);
        io_uring_prep_fsync(f, fd, IORING_FSYNC_DATASYNC); ops = 2;
      }
      io_uring_submit_and_wait(&ring, ops);
      for (int i = 0; i < ops; i++) {
        struct io_uring_cqe *c; io_uring_wait_cqe(&ring, &c);
        if (c->res < 0) { fprintf(stderr, "cqe %d\n", c->res); return 1; }
        io_uring_cqe_seen(&ring, c);
      }
    }
    n++;
  }
  double el = now() - start;
  printf("%s %ld ops %.0f/s %.1f us/op\n", mode, n, n / el, el * 1e6 / n);
  return 0;
}
