/*
 * loadgen: N WebSocket clients on one epoll loop, for `python -m bench fanout`.
 *
 * A Python or Node client saturates its core long before a good server does (Node's
 * `ws` client near 100k msgs/s), so the subscribers are this small C program pinned to
 * the other core. It connects N clients (at most 256 handshakes in flight), sends each
 * the given text messages (auth, subscribe) as masked frames, then reads frames and,
 * for every tick `{"n": K, "t": SCHEDULED_UNIX_US, ...}` with warmup <= K < ticks,
 * counts it and records latency = receive time - scheduled time. It reports its own
 * CPU use, so a result limited by the load generator can be flagged.
 *
 * usage: loadgen HOST PORT PATH N TICKS WARMUP TIMEOUT_S [MESSAGE...]
 * output: one JSON object on stdout.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 4096
#define MAX_INFLIGHT 256
#define BUCKET_US 50
#define BUCKETS (30 * 1000000 / BUCKET_US) /* 30 s of 50 us buckets */

enum { CONNECTING, HANDSHAKE, OPEN, CLOSED };

typedef struct {
    int fd, state, len;
    long skip; /* bytes of an over-long frame still to discard */
    long last_n;
    unsigned char buf[BUF];
} conn_t;

static conn_t *conns;
static int n_conns, opened, closed_early, done, inflight, next_conn;
static long ticks, warmup, received, dups, frames_other;
static uint32_t *hist;
static long long max_lat_us, first_rx_us, last_rx_us;
static double cpu_at_first = -1;
static struct sockaddr_in addr;
static char request[512];
static int request_len;
static unsigned char *init_frames;
static size_t init_len;
static int ep;

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void add_frame(unsigned char **out, size_t *len, const char *text) {
    size_t n = strlen(text);
    unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    size_t header = n < 126 ? 6 : 8;
    *out = realloc(*out, *len + header + n);
    unsigned char *p = *out + *len;
    p[0] = 0x81;
    if (n < 126) {
        p[1] = 0x80 | (unsigned char)n;
        memcpy(p + 2, mask, 4);
    } else {
        p[1] = 0x80 | 126;
        p[2] = (unsigned char)(n >> 8);
        p[3] = (unsigned char)n;
        memcpy(p + 4, mask, 4);
    }
    for (size_t i = 0; i < n; i++) p[header + i] = (unsigned char)text[i] ^ mask[i % 4];
    *len += header + n;
}

static void close_conn(conn_t *c, int early) {
    if (c->state == CLOSED) return;
    if (c->state != OPEN) inflight--;
    if (early && c->state == OPEN && c->last_n < ticks - 1) closed_early++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = CLOSED;
}

static void start_connects(void) {
    while (inflight < MAX_INFLIGHT && next_conn < n_conns) {
        conn_t *c = &conns[next_conn];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) { perror("socket"); exit(2); }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->state = CONNECTING;
        c->last_n = -1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)next_conn};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            perror("connect");
            exit(2);
        }
        inflight++;
        next_conn++;
    }
}

static void on_tick(conn_t *c, const unsigned char *p, size_t n, long long rx) {
    const unsigned char *k = memmem(p, n, "\"n\":", 4), *t = memmem(p, n, "\"t\":", 4);
    if (!k || !t) { frames_other++; return; }
    long tick = strtol((const char *)k + 4, NULL, 10);
    long long sched = strtoll((const char *)t + 4, NULL, 10);
    if (tick <= c->last_n) { dups++; return; }
    c->last_n = tick;
    if (tick == ticks - 1) done++;
    if (tick < warmup || tick >= ticks) return;
    if (cpu_at_first < 0) { cpu_at_first = cpu_s(); first_rx_us = rx; }
    last_rx_us = rx;
    received++;
    long long lat = rx - sched;
    if (lat < 0) lat = 0;
    if (lat > max_lat_us) max_lat_us = lat;
    long b = lat / BUCKET_US;
    hist[b < BUCKETS ? b : BUCKETS - 1]++;
}

/* Parse whole frames out of c->buf; keep a partial one for the next read. */
static void parse(conn_t *c, long long rx) {
    int off = 0;
    while (c->len - off >= 2) {
        unsigned char *p = c->buf + off;
        int op = p[0] & 0x0f;
        uint64_t n = p[1] & 0x7f;
        int h = 2;
        if (n == 126) { if (c->len - off < 4) break; n = (p[2] << 8) | p[3]; h = 4; }
        else if (n == 127) {
            if (c->len - off < 10) break;
            n = 0;
            for (int i = 0; i < 8; i++) n = (n << 8) | p[2 + i];
            h = 10;
        }
        if (h + n > BUF) { /* larger than our buffer (a big snapshot): discard it */
            c->skip = (long)(h + n) - (c->len - off);
            off = c->len;
            frames_other++;
            break;
        }
        if ((uint64_t)(c->len - off) < h + n) break;
        if (op == 0x1) on_tick(c, p + h, n, rx);
        else if (op == 0x8) { close_conn(c, 1); return; }
        off += h + (int)n;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->skip > 0) {
            unsigned char tmp[BUF];
            ssize_t r = recv(c->fd, tmp, c->skip < BUF ? c->skip : BUF, 0);
            if (r <= 0) { if (r < 0 && errno == EAGAIN) return; close_conn(c, 1); return; }
            c->skip -= r;
            continue;
        }
        ssize_t r = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
        if (r < 0) { if (errno == EAGAIN) return; close_conn(c, 1); return; }
        if (r == 0) { close_conn(c, 1); return; }
        c->len += (int)r;
        long long rx = now_us();
        if (c->state == HANDSHAKE) {
            unsigned char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!end) continue;
            if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0) { close_conn(c, 1); return; }
            int hl = (int)(end + 4 - c->buf);
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            c->state = OPEN;
            opened++;
            inflight--;
            if (init_len && send(c->fd, init_frames, init_len, MSG_NOSIGNAL) != (ssize_t)init_len) {
                close_conn(c, 1);
                return;
            }
        }
        parse(c, rx);
        if (c->state == CLOSED) return;
    }
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: loadgen HOST PORT PATH N TICKS WARMUP TIMEOUT_S [MESSAGE...]\n");
        return 2;
    }
    struct rlimit rl = {65536, 65536};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    request_len = snprintf(request, sizeof request,
        "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        argv[3], argv[1], argv[2]);
    n_conns = atoi(argv[4]);
    ticks = atol(argv[5]);
    warmup = atol(argv[6]);
    double timeout_s = atof(argv[7]);
    for (int i = 8; i < argc; i++) add_frame(&init_frames, &init_len, argv[i]);
    conns = calloc(n_conns, sizeof *conns);
    hist = calloc(BUCKETS, sizeof *hist);
    ep = epoll_create1(0);
    struct epoll_event events[1024];
    long long deadline = now_us() + (long long)(timeout_s * 1e6);
    start_connects();
    while (now_us() < deadline) {
        if (opened > 0 && done >= opened - closed_early && next_conn == n_conns && inflight == 0) break;
        int k = epoll_wait(ep, events, 1024, 100);
        for (int i = 0; i < k; i++) {
            conn_t *c = &conns[events[i].data.u32];
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || !(events[i].events & EPOLLOUT)) { close_conn(c, 1); continue; }
                if (send(c->fd, request, request_len, MSG_NOSIGNAL) != request_len) { close_conn(c, 1); continue; }
                c->state = HANDSHAKE;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = events[i].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            if (c->state != CLOSED) on_readable(c);
        }
        start_connects();
    }
    double cpu = cpu_at_first < 0 ? 0 : cpu_s() - cpu_at_first;
    double window = (last_rx_us - first_rx_us) / 1e6;
    long long p50 = -1, p99 = -1;
    long long cum = 0;
    for (long b = 0; b < BUCKETS && received; b++) {
        cum += hist[b];
        if (p50 < 0 && cum * 100 >= received * 50) p50 = (b + 1) * BUCKET_US;
        if (p99 < 0 && cum * 100 >= received * 99) { p99 = (b + 1) * BUCKET_US; break; }
    }
    long expected = (long)opened * (ticks - warmup);
    printf("{\"requested\":%d,\"connected\":%d,\"closed_early\":%d,\"received\":%ld,\"expected\":%ld,"
           "\"duplicates\":%ld,\"p50_us\":%lld,\"p99_us\":%lld,\"max_us\":%lld,"
           "\"client_cpu_s\":%.3f,\"window_s\":%.3f}\n",
           n_conns, opened, closed_early, received, expected, dups, p50, p99, max_lat_us, cpu, window);
    return 0;
}
