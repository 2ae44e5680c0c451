/* The subscriber side of realtime_bench.py's realtime_fanout (issue 14): many Phoenix vsn 1.0.0
 * WebSocket subscribers in one process on one epoll loop, in C so that the bench measures the
 * node and not its client (two asyncio processes could not parse the million frames a second
 * of the full run: they fell tens of seconds behind on their own).
 *
 *   rt_subscribers HOST PORT PATH PROC PROCS TOTAL MATCHING JOINS_PER_S
 *
 * Subscribers i = PROC, PROC + PROCS, ... below TOTAL; subscriber i joins topic
 * realtime:fan-<i> with one postgres_changes binding {INSERT, public, fan, grp=eq.G}, G = 1 when
 * i < MATCHING else 2. Same stdin/stdout protocol as realtime_bench.py's Python client:
 *   stdout "JOINED" once every subscriber's join was answered ok (a refused join, e.g. the
 *   node's join rate, is retried after 1 s); stdin line 1 "go" (the parent measured idle memory),
 *   stdin line 2 the number of rows written; then it reads until every expected event arrived
 *   (rows x its matching subscribers) or DELIVERY_WAIT_SECONDS passed, and prints
 *   "RESULT {"events","expected","hist","failed"}".
 *
 * Wire (RFC 6455, client side, minimal): an HTTP/1.1 upgrade request per connection (the
 * 101 answer is not checked beyond its status line: the node is trusted); frames to the node
 * are text frames masked with the all-zero key (valid: the mask is applied, it changes
 * nothing); frames from the node are unmasked and unfragmented (the node never fragments).
 * Ping is answered with pong; close fails the run.
 *
 * Measurement: an event frame is a text frame holding "commit_timestamp":"<ISO>"; its latency is
 * the time this process took the bytes from the socket (CLOCK_REALTIME once per read() call, as
 * the Python client took it once per data_received) minus that timestamp (both this machine's
 * clock). Histogram: 0.1 ms buckets below 1 s, 1 ms buckets above (the JSON keys are in
 * 0.1 ms units: int(ms * 10) below 1 s, int(ms) * 10 above), as realtime_bench.hist_merge reads.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DELIVERY_WAIT_SECONDS 60
#define HEARTBEAT_SECONDS 20        /* the node closes a connection silent for 60 s */
#define READ_CHUNK 65536
#define HIST_FINE 10000             /* 0.1 ms buckets below 1 s */
#define HIST_COARSE_MS 600000       /* 1 ms buckets from 1 s to 600 s (clamped above) */

typedef struct {
    int fd, index, grp;
    int upgraded, joined, retry_pending;
    double retry_at;
    unsigned char *buf;
    size_t len, cap;
} conn_t;

static const char *host, *path;
static int port;
static conn_t *conns;
static int nconns, joined_count;
static long long events;
static long long hist_fine[HIST_FINE];
static long long *hist_coarse;
static char failed[512];
static char stdin_buf[256];
static size_t stdin_len;
static int stdin_lines;       /* complete lines read from the parent */
static long long written = -1;
static int epfd;

static double now_real(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void fail(const char *fmt, int a) {
    if (!failed[0]) snprintf(failed, sizeof failed, fmt, a);
}

/* Days from 1970-01-01 of a civil date (proleptic Gregorian). */
static long days_from_civil(long y, long m, long d) {
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const unsigned char *p, int n, long *out) {
    long v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

/* "YYYY-MM-DDTHH:MM:SS[.f+]+00:00" (the node's Timestamp.format, always UTC) to epoch seconds;
 * the last one parsed is cached (every subscriber of a change sees the same text). */
static double parse_stamp(const unsigned char *p, size_t n) {
    static unsigned char last[48];
    static size_t last_n;
    static double last_v;
    if (n == last_n && n <= sizeof last && memcmp(p, last, n) == 0) return last_v;
    long y, mo, d, h, mi, s;
    if (n < 19 || !digits(p, 4, &y) || !digits(p + 5, 2, &mo) || !digits(p + 8, 2, &d) || !digits(p + 11, 2, &h) ||
        !digits(p + 14, 2, &mi) || !digits(p + 17, 2, &s)) {
        fail("unparsable commit_timestamp (%d bytes)", (int)n);
        return 0;
    }
    double v = (double)(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s);
    size_t i = 19;
    if (i < n && p[i] == '.') {
        double scale = 0.1;
        for (i++; i < n && p[i] >= '0' && p[i] <= '9'; i++, scale /= 10) v += (p[i] - '0') * scale;
    }
    if (n <= sizeof last) {
        memcpy(last, p, n);
        last_n = n;
        last_v = v;
    }
    return v;
}

static void record(double ms) {
    if (ms < 0) ms = 0;
    if (ms < 1000) {
        hist_fine[(int)(ms * 10)]++;
    } else {
        long k = (long)ms;
        if (k >= HIST_COARSE_MS) k = HIST_COARSE_MS - 1;
        hist_coarse[k]++;
    }
    events++;
}

static void send_all(conn_t *c, const char *data, size_t n) {
    while (n > 0) {
        ssize_t w = write(c->fd, data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { /* tiny control frames: wait for room */
                struct timespec t = {0, 1000000};
                nanosleep(&t, NULL);
                continue;
            }
            fail("write to subscriber %d failed", c->index);
            return;
        }
        data += w;
        n -= (size_t)w;
    }
}

/* A text frame masked with the zero key (payload bytes unchanged). */
static void send_text(conn_t *c, const char *text) {
    size_t n = strlen(text);
    char frame[1024];
    size_t h;
    frame[0] = (char)0x81;
    if (n < 126) {
        frame[1] = (char)(0x80 | n);
        h = 2;
    } else {
        frame[1] = (char)(0x80 | 126);
        frame[2] = (char)(n >> 8);
        frame[3] = (char)(n & 0xff);
        h = 4;
    }
    memset(frame + h, 0, 4);
    h += 4;
    if (h + n > sizeof frame) { fail("frame too long for subscriber %d", c->index); return; }
    memcpy(frame + h, text, n);
    send_all(c, frame, h + n);
}

static void send_join(conn_t *c, const char *ref) {
    char text[512];
    snprintf(text, sizeof text,
             "{\"event\":\"phx_join\",\"topic\":\"realtime:fan-%d\",\"ref\":\"%s\",\"join_ref\":\"%s\",\"payload\":{\"config\":"
             "{\"postgres_changes\":[{\"event\":\"INSERT\",\"schema\":\"public\",\"table\":\"fan\",\"filter\":\"grp=eq.%d\"}]}}}",
             c->index, ref, ref, c->grp);
    send_text(c, text);
}

static void on_text(conn_t *c, const unsigned char *p, size_t n, double now) {
    static const char stamp_key[] = "\"commit_timestamp\":\"";
    if (c->joined) {
        const unsigned char *k = memmem(p, n, stamp_key, sizeof stamp_key - 1);
        if (!k || !memmem(p, n, "\"event\":\"postgres_changes\"", 26)) return;
        const unsigned char *v = k + sizeof stamp_key - 1;
        const unsigned char *e = memchr(v, '"', (size_t)(p + n - v));
        if (!e) { fail("event frame without a closing quote (subscriber %d)", c->index); return; }
        record((now - parse_stamp(v, (size_t)(e - v))) * 1000.0);
        return;
    }
    if (!memmem(p, n, "\"event\":\"phx_reply\"", 19)) return;
    if (!memmem(p, n, "\"ref\":\"1\"", 9) && !memmem(p, n, "\"ref\":\"2\"", 9)) return;
    if (memmem(p, n, "\"status\":\"ok\"", 13)) {
        c->joined = 1;
        joined_count++;
    } else if (!c->retry_pending) { /* e.g. the node's join rate: retry */
        c->retry_pending = 1;
        c->retry_at = now_real() + 1.0;
    }
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->cap - c->len < READ_CHUNK) {
            c->cap = c->len + READ_CHUNK * 2;
            c->buf = realloc(c->buf, c->cap);
            if (!c->buf) { fprintf(stderr, "out of memory\n"); exit(1); }
        }
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            fail("read from subscriber %d failed", c->index);
            return;
        }
        if (r == 0) {
            fail("the node closed subscriber %d", c->index);
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            return;
        }
        double now = now_real();
        c->len += (size_t)r;
        unsigned char *b = c->buf;
        size_t pos = 0, n = c->len;
        if (!c->upgraded) {
            unsigned char *end = memmem(b, n, "\r\n\r\n", 4);
            if (!end) continue;
            if (n < 12 || memcmp(b, "HTTP/1.1 101", 12) != 0) { fail("upgrade refused for subscriber %d", c->index); return; }
            pos = (size_t)(end - b) + 4;
            c->upgraded = 1;
            send_join(c, "1");
        }
        while (n - pos >= 2) {
            unsigned op = b[pos] & 0x0F;
            size_t size = b[pos + 1] & 0x7F, off = pos + 2;
            if (size == 126) {
                if (n - off < 2) break;
                size = ((size_t)b[off] << 8) | b[off + 1];
                off += 2;
            } else if (size == 127) {
                if (n - off < 8) break;
                size = 0;
                for (int i = 0; i < 8; i++) size = (size << 8) | b[off + i];
                off += 8;
            }
            if (n - off < size) break;
            if (op == 1) {
                on_text(c, b + off, size, now);
            } else if (op == 9) {
                char pong[2 + 4 + 125];
                size_t m = size > 125 ? 125 : size;
                pong[0] = (char)0x8A;
                pong[1] = (char)(0x80 | m);
                memset(pong + 2, 0, 4);
                memcpy(pong + 6, b + off, m);
                send_all(c, pong, 6 + m);
            } else if (op == 8) {
                fail("the node sent close to subscriber %d", c->index);
            }
            pos = off + size;
        }
        if (pos) {
            memmove(b, b + pos, n - pos);
            c->len = n - pos;
        }
    }
}

static void on_stdin(void) {
    ssize_t r = read(0, stdin_buf + stdin_len, sizeof stdin_buf - 1 - stdin_len);
    if (r <= 0) {
        if (r == 0) fail("the parent closed stdin (%d)", 0);
        return;
    }
    stdin_len += (size_t)r;
    char *nl;
    while ((nl = memchr(stdin_buf, '\n', stdin_len))) {
        *nl = 0;
        stdin_lines++;
        if (stdin_lines == 2) written = atoll(stdin_buf);
        size_t used = (size_t)(nl - stdin_buf) + 1;
        memmove(stdin_buf, nl + 1, stdin_len - used);
        stdin_len -= used;
    }
}

static const char heartbeat[] = "{\"event\":\"heartbeat\",\"topic\":\"phoenix\",\"payload\":{},\"ref\":\"h\",\"join_ref\":null}";
static double next_heartbeat;

/* Every HEARTBEAT_SECONDS, a heartbeat on every upgraded connection (also while others join). */
static void maybe_heartbeat(double now) {
    if (now < next_heartbeat) return;
    for (int i = 0; i < nconns; i++)
        if (conns[i].upgraded) send_text(&conns[i], heartbeat);
    next_heartbeat = now + HEARTBEAT_SECONDS;
}

/* Runs the loop for at most `seconds` (returns after one epoll_wait that was not full), then
 * sends what is due (heartbeats, join retries). */
static void loop_for(double seconds) {
    struct epoll_event ev[512];
    double until = now_real() + seconds;
    for (;;) {
        double left = until - now_real();
        if (left <= 0) break;
        int k = epoll_wait(epfd, ev, 512, (int)(left * 1000) + 1);
        for (int i = 0; i < k; i++) {
            if (ev[i].data.ptr == NULL) on_stdin();
            else on_readable(ev[i].data.ptr);
        }
        if (k < 512) break;
    }
    double now = now_real();
    maybe_heartbeat(now);
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->retry_pending && c->retry_at <= now) {
            c->retry_pending = 0;
            send_join(c, "2");
        }
    }
}

static int open_conn(conn_t *c, struct sockaddr_in *addr) {
    for (int attempt = 0; attempt < 50; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) { perror("socket"); exit(1); }
        if (connect(fd, (struct sockaddr *)addr, sizeof *addr) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            c->fd = fd;
            char req[1024];
            snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, host, port);
            send_all(c, req, strlen(req));
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
            return 1;
        }
        close(fd);
        struct timespec t = {0, (200 + attempt * 100) * 1000000L};
        nanosleep(&t, NULL);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: rt_subscribers HOST PORT PATH PROC PROCS TOTAL MATCHING JOINS_PER_S\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    path = argv[3];
    int proc = atoi(argv[4]), procs = atoi(argv[5]), total = atoi(argv[6]), matching = atoi(argv[7]);
    double joins_per_s = atof(argv[8]);
    hist_coarse = calloc(HIST_COARSE_MS, sizeof *hist_coarse);
    conns = calloc((size_t)total / (size_t)procs + 1, sizeof *conns);
    int my_matching = 0;
    for (int i = proc; i < total; i += procs) {
        conns[nconns].index = i;
        conns[nconns].grp = i < matching ? 1 : 2;
        conns[nconns].fd = -1;
        if (i < matching) my_matching++;
        nconns++;
    }
    next_heartbeat = now_real() + HEARTBEAT_SECONDS;
    epfd = epoll_create1(0);
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &sev);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &addr.sin_addr);

    for (int i = 0; i < nconns; i++) {
        if (!open_conn(&conns[i], &addr)) {
            printf("FAILED could not connect subscriber %d\n", conns[i].index);
            fflush(stdout);
            return 1;
        }
        if (i % 50 == 49) { /* pace the joins under the node's joins per second */
            double until = now_real() + 50.0 / joins_per_s, left;
            while ((left = until - now_real()) > 0) loop_for(left);
        }
        if (failed[0]) break;
    }
    double report = now_real() + 10;
    while (joined_count < nconns && !failed[0]) {
        loop_for(0.1);
        if (now_real() > report) {
            fprintf(stderr, "[realtime_bench] process %d: %d of %d subscribers joined\n", proc, joined_count, nconns);
            report = now_real() + 10;
        }
    }
    if (failed[0]) {
        printf("FAILED %s\n", failed);
        fflush(stdout);
        return 1;
    }
    printf("JOINED\n");
    fflush(stdout);

    double deadline = 0;
    long long expected = -1;
    for (;;) {
        loop_for(0.05);
        double now = now_real();
        if (failed[0]) break;
        if (written >= 0 && expected < 0) {
            expected = written * my_matching;
            deadline = now + DELIVERY_WAIT_SECONDS;
        }
        if (expected >= 0 && (events >= expected || now > deadline)) break;
    }
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    printf("RESULT {\"events\":%lld,\"expected\":%lld,\"hist\":{", events, expected < 0 ? 0 : expected);
    int first = 1;
    for (int k = 0; k < HIST_FINE; k++)
        if (hist_fine[k]) { printf("%s\"%d\":%lld", first ? "" : ",", k, hist_fine[k]); first = 0; }
    for (long k = 1000; k < HIST_COARSE_MS; k++)
        if (hist_coarse[k]) { printf("%s\"%ld\":%lld", first ? "" : ",", k * 10, hist_coarse[k]); first = 0; }
    printf("},\"failed\":");
    if (failed[0]) {
        putchar('"');
        for (char *p = failed; *p; p++) if (*p != '"' && *p != '\\') putchar(*p);
        putchar('"');
    } else {
        printf("null");
    }
    printf("}\n");
    fflush(stdout);
    return 0;
}
