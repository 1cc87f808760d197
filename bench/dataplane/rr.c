// Request/response latency probe for bench/dataplane/run.sh (compiled to a temp dir at run time,
// never installed). Two roles:
//
//   rr serve PORT
//       UDP and TCP echo on PORT (IPv4, any address), one thread, poll(2). Every datagram is sent
//       back as is, from the address it was sent to (IP_PKTINFO: the VIP under DSR); every TCP
//       byte read is written back at once (TCP_NODELAY). Runs until killed.
//
//   rr udp|tcp HOST PORT COUNT [WARMUP=100] [SIZE=64] [TIMEOUT_MS=500]
//       COUNT sequential request/responses of SIZE bytes over one UDP "connection" (one source port,
//       so one flow through a balancer) or one TCP connection (TCP_NODELAY), after WARMUP
//       unmeasured ones (ARP, flow creation, slow start). Each round trip is timed with
//       CLOCK_MONOTONIC from just before send() to the return of the recv() that completes the
//       response. A UDP request unanswered within TIMEOUT_MS counts as lost (not in the
//       percentiles); TCP gives up on the first timeout.
//       Prints one line: `n N lost L min_us A p50_us B p90_us C p99_us D max_us E mean_us F`.
//
// Bounded: a client never runs longer than (WARMUP + COUNT) * TIMEOUT_MS; run.sh also wraps it
// in timeout(1).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void serve(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  int one = 1;
  int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (u < 0 || l < 0) die("socket");
  setsockopt(u, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(u, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
  if (bind(u, (void *)&a, sizeof a) < 0 || bind(l, (void *)&a, sizeof a) < 0) die("bind");
  if (listen(l, 16) < 0) die("listen");
  struct pollfd p[2 + MAX_CONNS];
  int n = 2;
  p[0] = (struct pollfd){.fd = u, .events = POLLIN};
  p[1] = (struct pollfd){.fd = l, .events = POLLIN};
  static char buf[65536];
  for (;;) {  // until killed
    if (poll(p, n, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (p[0].revents & POLLIN) {
      // The reply leaves from the address the request was sent to (IP_PKTINFO): with direct
      // server return the request's destination is the VIP (held on lo), and a reply from the
      // interface's own address would not match the client's connected socket.
      struct sockaddr_storage from;
      char cbuf[CMSG_SPACE(sizeof(struct in_pktinfo))];
      struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
      struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = cbuf, .msg_controllen = sizeof cbuf};
      ssize_t r = recvmsg(u, &m, MSG_DONTWAIT);
      if (r >= 0) {
        struct in_pktinfo *pi = NULL;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c))
          if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) pi = (struct in_pktinfo *)CMSG_DATA(c);
        iov.iov_len = (size_t)r;
        m.msg_flags = 0;
        if (pi != NULL) {
          struct in_pktinfo out = {.ipi_spec_dst = pi->ipi_addr};
          memset(cbuf, 0, sizeof cbuf);
          m.msg_controllen = sizeof cbuf;
          struct cmsghdr *c = CMSG_FIRSTHDR(&m);
          c->cmsg_level = IPPROTO_IP;
          c->cmsg_type = IP_PKTINFO;
          c->cmsg_len = CMSG_LEN(sizeof out);
          memcpy(CMSG_DATA(c), &out, sizeof out);
        } else {
          m.msg_control = NULL;
          m.msg_controllen = 0;
        }
        sendmsg(u, &m, MSG_DONTWAIT);
      }
    }
    if ((p[1].revents & POLLIN) && n < 2 + MAX_CONNS) {
      int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) {
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        p[n++] = (struct pollfd){.fd = c, .events = POLLIN};
      }
    }
    for (int i = 2; i < n; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(p[i].fd, buf, sizeof buf);
      if (r > 0 && write(p[i].fd, buf, r) == r) continue;
      close(p[i].fd);
      p[i--] = p[--n];
    }
  }
}

static int client(int tcp, const char *host, int port, int count, int warmup, int size, int timeout_ms) {
  struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, host, &d.sin_addr) != 1) {
    fprintf(stderr, "rr: bad IPv4 address %s\n", host);
    return 2;
  }
  int s = socket(AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  if (tcp) setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(s, (void *)&d, sizeof d) < 0) die("connect");
  char *req = malloc(size), *rsp = malloc(size + 1);
  double *rtt = calloc(count, sizeof *rtt);
  if (!req || !rsp || !rtt) die("malloc");
  int n = 0, lost = 0;
  for (int i = 0; i < warmup + count; i++) {
    memset(req, 'a' + i % 26, size);
    double t0 = now_us();
    if (send(s, req, size, 0) != size) {
      if (tcp) die("send");
      lost += i >= warmup;
      continue;
    }
    int got = 0, ok = 1;
    while (got < size) {
      ssize_t r = recv(s, rsp + got, size + 1 - got, 0);
      if (r <= 0) { ok = 0; break; }
      got += r;
      if (!tcp) break;
    }
    double t1 = now_us();
    if (!ok || got != size || rsp[0] != req[0]) {
      if (tcp) {
        fprintf(stderr, "rr: tcp response %d failed (%s)\n", i, ok ? "short" : strerror(errno));
        return 1;
      }
      lost += i >= warmup;
      continue;
    }
    if (i >= warmup) rtt[n++] = t1 - t0;
  }
  if (n == 0) {
    printf("n 0 lost %d\n", lost);
    return 1;
  }
  qsort(rtt, n, sizeof *rtt, cmp_double);
  double sum = 0;
  for (int i = 0; i < n; i++) sum += rtt[i];
#define PCT(p) rtt[(int)((double)(p) / 100.0 * (n - 1) + 0.5)]
  printf("n %d lost %d min_us %.1f p50_us %.1f p90_us %.1f p99_us %.1f max_us %.1f mean_us %.1f\n", n, lost, rtt[0],
         PCT(50), PCT(90), PCT(99), rtt[n - 1], sum / n);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "serve") == 0) serve(atoi(argv[2]));
  if (argc >= 5 && (strcmp(argv[1], "udp") == 0 || strcmp(argv[1], "tcp") == 0)) {
    int count = atoi(argv[4]);
    int warmup = argc > 5 ? atoi(argv[5]) : 100;
    int size = argc > 6 ? atoi(argv[6]) : 64;
    int timeout_ms = argc > 7 ? atoi(argv[7]) : 500;
    if (count < 1 || warmup < 0 || size < 1 || size > 65000 || timeout_ms < 1) {
      fprintf(stderr, "rr: bad arguments\n");
      return 2;
    }
    return client(argv[1][0] == 't', argv[2], atoi(argv[3]), count, warmup, size, timeout_ms);
  }
  fprintf(stderr, "usage: rr serve PORT | rr udp|tcp HOST PORT COUNT [WARMUP] [SIZE] [TIMEOUT_MS]\n");
  return 2;
}
