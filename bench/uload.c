/* uload: closed-loop HTTP/1.1 load over a unix socket, in C so that the load generator is not what the
 * benchmark measures (the Python one, bench/loadgen.py, spends ~30 us of CPU per request: on a 2-core
 * machine that is half the machine). N keep-alive connections each send their next GET as soon as the
 * previous response is complete. Responses must carry Content-Length (dockyard's and dockerd's
 * /_ping and /containers/json do).
 *
 * usage: uload SOCKET PATH CONNS SECONDS WARMUP_SECONDS
 * Prints "START" when measuring begins and "END" when it stops (so a caller can sample CPU counters),
 * then one JSON object: requests, errors, duration_s, rps, p50_ms, p99_ms.
 * Built by bench/loadgen.py on first use (cc -O2); no dependencies beyond libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BUF 1048576

struct conn {
    int fd;
    char *buf;
    size_t len;
    double t0;
    int measured;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Length of the complete response at the head of buf, 0 if incomplete, -1 if unusable. */
static long complete(const char *buf, size_t len, int *status) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return 0;
    long head = end - buf + 4, body = -1;
    if (len < 12) return -1;
    *status = atoi(buf + 9);
    for (const char *p = buf; p && p < end; p = memchr(p, '\n', end - p)) {
        if (*p == '\n') p++;
        if (strncasecmp(p, "Content-Length:", 15) == 0) body = atol(p + 15);
    }
    if (body < 0) return -1;
    return (long)len >= head + body ? head + body : 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: uload SOCKET PATH CONNS SECONDS WARMUP\n");
        return 2;
    }
    int nconn = atoi(argv[3]);
    double seconds = atof(argv[4]), warmup = atof(argv[5]);
    char req[4096];
    int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: docker\r\nUser-Agent: dockyard-bench\r\n\r\n",
                          argv[2]);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    int ep = epoll_create1(0);
    struct conn *cs = calloc(nconn, sizeof *cs);
    size_t cap = 1 << 22, n = 0;
    double *lat = malloc(cap * sizeof *lat);
    long errors = 0;
    int measuring = 0;
    double start = now(), t_measure = 0, t_end = 0, t_last = 0;
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(cs[i].fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        cs[i].buf = malloc(BUF);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        cs[i].t0 = now();
        if (write(cs[i].fd, req, reqlen) != reqlen) return 1;
    }
    struct epoll_event evs[64];
    for (;;) {
        double t = now();
        if (!measuring && t - start >= warmup) {
            measuring = 1;
            t_measure = t;
            printf("START\n");
            fflush(stdout);
        }
        if (measuring && t - t_measure >= seconds) {
            t_end = t;
            printf("END\n");
            fflush(stdout);
            break;
        }
        int k = epoll_wait(ep, evs, 64, 100);
        for (int e = 0; e < k; e++) {
            struct conn *c = &cs[evs[e].data.u32];
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
            if (r <= 0) {
                fprintf(stderr, "connection closed: %s\n", r < 0 ? strerror(errno) : "EOF");
                return 1;
            }
            c->len += r;
            int status = 0;
            long whole = complete(c->buf, c->len, &status);
            if (whole < 0) {
                fprintf(stderr, "response without Content-Length\n");
                return 1;
            }
            if (whole == 0) continue;
            double done = now();
            if (c->measured) {
                if (status == 200 && n < cap) lat[n++] = done - c->t0;
                else if (status != 200) errors++;
                t_last = done;
            }
            memmove(c->buf, c->buf + whole, c->len - whole);
            c->len -= whole;
            c->measured = measuring;
            c->t0 = done;
            if (write(c->fd, req, reqlen) != reqlen) return 1;
        }
    }
    double duration = (t_last > t_measure ? t_last : t_end) - t_measure;
    qsort(lat, n, sizeof *lat, cmp);
    printf("{\"requests\": %zu, \"errors\": %ld, \"duration_s\": %.6f, \"rps\": %.1f, \"p50_ms\": %.4f, "
           "\"p99_ms\": %.4f}\n",
           n, errors, duration, n / duration, n ? lat[n / 2] * 1e3 : 0.0,
           n ? lat[(size_t)(n * 0.99) < n ? (size_t)(n * 0.99) : n - 1] * 1e3 : 0.0);
    return 0;
}
