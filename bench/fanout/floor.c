/*
 * floor: the kernel's floor for `python -m bench fanout`, not a peer.
 *
 * One C process, one thread: accept N WebSocket clients, then every tick build the
 * frame once and `send()` it to each socket, non-blocking, exactly the per-subscriber
 * work crashd's fast path does, minus the interpreter. No outbox: a socket that does
 * not take the whole frame is counted in "short_sends" (the load generator then counts
 * the loss). It only talks to bench/fanout/loadgen.c, whose Sec-WebSocket-Key is the
 * RFC 6455 example, so the accept value is the RFC's too (no SHA-1 needed here).
 *
 * usage: floor PORT N RATE TICKS WARMUP PAYLOAD_BYTES
 * prints "READY <port>", then "RESULT {json}" after the last tick.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: floor PORT N RATE TICKS WARMUP PAYLOAD_BYTES\n"); return 2; }
    int n = atoi(argv[2]), ticks = atoi(argv[4]), warmup = atoi(argv[5]), size = atoi(argv[6]);
    double rate = atof(argv[3]);
    struct rlimit rl = {65536, 65536};
    setrlimit(RLIMIT_NOFILE, &rl);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) || listen(ls, 4096)) { perror("listen"); return 2; }
    socklen_t alen = sizeof addr;
    getsockname(ls, (struct sockaddr *)&addr, &alen);
    printf("READY %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    int *open_fds = calloc(n, sizeof *open_fds), n_open = 0;
    const char *reply = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n";
    struct epoll_event events[1024];
    while (n_open < n) {
        int k = epoll_wait(ep, events, 1024, 1000);
        for (int i = 0; i < k; i++) {
            int fd = events[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            /* The request fits one read on loopback; anything else is refused. */
            char buf[2048];
            ssize_t r = recv(fd, buf, sizeof buf - 1, 0);
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            if (r <= 0) { close(fd); continue; }
            buf[r] = 0;
            if (!strstr(buf, "\r\n\r\n") || !strstr(buf, RFC_KEY) || n_open >= n) { close(fd); continue; }
            send(fd, reply, strlen(reply), MSG_NOSIGNAL);
            open_fds[n_open++] = fd;
        }
    }
    struct timespec t0m, t0w;
    clock_gettime(CLOCK_MONOTONIC, &t0m);
    clock_gettime(CLOCK_REALTIME, &t0w);
    long long start_m = t0m.tv_sec * 1000000000LL + t0m.tv_nsec + 500000000LL;
    long long start_w_us = (t0w.tv_sec * 1000000000LL + t0w.tv_nsec + 500000000LL) / 1000;
    double cpu0 = 0;
    long short_sends = 0;
    char text[1024], frame[1100];
    for (int k = 0; k < ticks; k++) {
        long long due = start_m + (long long)(k * 1e9 / rate);
        struct timespec ts = {.tv_sec = due / 1000000000LL, .tv_nsec = due % 1000000000LL};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        if (k == warmup) cpu0 = cpu_s();
        int len = snprintf(text, sizeof text,
            "{\"seq\":%d,\"channel\":\"live_multiplier\",\"type\":\"tick\",\"n\":%d,\"t\":%lld,\"m\":%d,\"pad\":\"",
            k + 1, k, start_w_us + (long long)(k * 1e6 / rate), 100 + k);
        while (len < size - 2 && len < (int)sizeof text - 3) text[len++] = 'x';
        text[len++] = '"';
        text[len++] = '}';
        frame[0] = (char)0x81;
        frame[1] = (char)len; /* payloads here are < 126 bytes */
        memcpy(frame + 2, text, len);
        for (int i = 0; i < n_open; i++)
            if (send(open_fds[i], frame, len + 2, MSG_NOSIGNAL | MSG_DONTWAIT) != len + 2) short_sends++;
    }
    struct timespec pause = {1, 500000000};
    nanosleep(&pause, NULL);
    printf("RESULT {\"cpu_s\":%.4f,\"rss_kb\":%ld,\"short_sends\":%ld}\n", cpu_s() - cpu0, rss_kb(), short_sends);
    fflush(stdout);
    return 0;
}
