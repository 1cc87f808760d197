// bench/cluster/newflows.c: one UDP datagram per NEW 5-tuple, as fast as possible (or paced),
// for the cluster benchmark (bench/cluster/run.sh). A measuring tool, not part of tunlb.
//
//   newflows DST PORT SECS RATE SRC_BASE NSRC [FIRST [PAYLOAD_BYTES]]
//
// Sends IPv4/UDP datagrams to DST:PORT from SRC_BASE+0 .. SRC_BASE+NSRC-1 (consecutive IPv4
// addresses; the caller adds them to the sending interface so that replies route back), source
// ports 1024..65535: datagram n uses port 1024 + k % 64512 and address k / 64512 % NSRC with
// k = FIRST + n (FIRST default 0: consecutive runs pass the previous runs' total to stay new),
// so every datagram opens a new flow until 64512 * NSRC tuples were used (then tuples repeat;
// the summary says how many were unique). RATE = datagrams per second (0 = unpaced: as fast as
// the socket takes them). Runs SECS seconds (hard bound), then prints one JSON line:
//   {"sent":N,"unique":U,"secs":S,"pps":P,"errors":E,"rate":RATE,"nsrc":NSRC,"cpuS":C,
//    "monoStartUs":T0,"monoEndUs":T1}   (CLOCK_MONOTONIC, µs: the clock of V8 CPU profiles)
// (cpuS: its own user+system CPU seconds; the kernel's forwarding of the datagrams through the
// router into lb1's tunlb0 runs in softirq context, partly inside its send calls).
//
// A raw socket (IPPROTO_RAW: the IP header is ours) so that no socket per source port is needed;
// IPv4 header checksum and id are filled by the kernel (raw(7)); the UDP checksum is computed
// here (RFC 768; one's-complement sum over the pseudo-header, RFC 1071). Needs CAP_NET_RAW.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PORT_LO 1024
#define NPORTS (65536 - PORT_LO)
#define MAXPAY 1400

static double mono(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s) {
  for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)p[i] << 8 | p[i + 1];
  if (n & 1) s += (uint32_t)p[n - 1] << 8;
  return s;
}
static uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)s;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: newflows DST PORT SECS RATE SRC_BASE NSRC [FIRST [PAYLOAD_BYTES]]\n");
    return 2;
  }
  struct in_addr dst, base;
  if (inet_pton(AF_INET, argv[1], &dst) != 1 || inet_pton(AF_INET, argv[5], &base) != 1) {
    fprintf(stderr, "newflows: bad address\n");
    return 2;
  }
  int dport = atoi(argv[2]);
  double secs = atof(argv[3]);
  double rate = atof(argv[4]);
  int nsrc = atoi(argv[6]);
  unsigned long long first = argc > 7 ? strtoull(argv[7], NULL, 10) : 0;
  int pay = argc > 8 ? atoi(argv[8]) : 32;
  if (dport < 1 || dport > 65535 || secs <= 0 || secs > 600 || rate < 0 || nsrc < 1 || nsrc > 4096 || pay < 0 || pay > MAXPAY) {
    fprintf(stderr, "newflows: bad arguments\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    perror("newflows: socket(AF_INET, SOCK_RAW, IPPROTO_RAW)");
    return 1;
  }
  int sb = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);

  const int len = 20 + 8 + pay;
  static uint8_t pkt[BATCH][20 + 8 + MAXPAY];
  struct iovec iov[BATCH];
  struct mmsghdr msg[BATCH];
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr = dst};
  uint32_t b0 = ntohl(base.s_addr);
  // Pseudo-header + UDP header (without source address and source port) + payload: constant.
  uint8_t payload[MAXPAY];
  memset(payload, 'n', sizeof payload);
  uint32_t s0 = 0;
  s0 += (ntohl(dst.s_addr) >> 16) + (ntohl(dst.s_addr) & 0xffff);
  s0 += IPPROTO_UDP + (8 + pay);          // pseudo-header: protocol, UDP length
  s0 += dport + (8 + pay);                // UDP header: destination port, length
  s0 = sum16(payload, pay, s0);
  for (int i = 0; i < BATCH; i++) {
    uint8_t *p = pkt[i];
    memset(p, 0, 28);
    p[0] = 0x45;
    p[2] = len >> 8; p[3] = len & 0xff;
    p[6] = 0x40;                           // DF
    p[8] = 64;
    p[9] = IPPROTO_UDP;
    memcpy(p + 16, &dst.s_addr, 4);
    p[22] = dport >> 8; p[23] = dport & 0xff;
    p[24] = (8 + pay) >> 8; p[25] = (8 + pay) & 0xff;
    memcpy(p + 28, payload, pay);
    iov[i].iov_base = p;
    iov[i].iov_len = len;
    memset(&msg[i], 0, sizeof msg[i]);
    msg[i].msg_hdr.msg_iov = &iov[i];
    msg[i].msg_hdr.msg_iovlen = 1;
    msg[i].msg_hdr.msg_name = &to;
    msg[i].msg_hdr.msg_namelen = sizeof to;
  }

  unsigned long long n = 0, sent = 0, errors = 0;
  double t0 = mono(), tend = t0 + secs, t = t0;
  while (t < tend) {
    if (rate > 0) {                        // paced: batch k may start at t0 + k*BATCH/rate
      double due = t0 + (double)n / rate;
      if (due > t) {
        double d = due - t;
        struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
      }
    }
    for (int i = 0; i < BATCH; i++) {
      unsigned long long k = first + n + i;
      uint32_t src = b0 + (uint32_t)((k / NPORTS) % (unsigned)nsrc);
      uint16_t sport = PORT_LO + k % NPORTS;
      uint8_t *p = pkt[i];
      p[12] = src >> 24; p[13] = src >> 16; p[14] = src >> 8; p[15] = src;
      p[20] = sport >> 8; p[21] = sport & 0xff;
      uint16_t c = ~fold(s0 + (src >> 16) + (src & 0xffff) + sport);
      if (c == 0) c = 0xffff;              // RFC 768: a computed 0 is sent as all ones
      p[26] = c >> 8; p[27] = c & 0xff;
    }
    int r = sendmmsg(fd, msg, BATCH, 0);
    if (r > 0) {
      sent += r;
      n += r;
    } else if (r < 0 && errno != EINTR) {
      errors++;
      if (errno == ENOBUFS || errno == EAGAIN) sched_yield();
      else if (errors > 1000000) break;
    }
    t = mono();
  }
  double el = t - t0;
  unsigned long long space = (unsigned long long)NPORTS * nsrc;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  unsigned long long left = first < space ? space - first : 0;
  printf("{\"sent\":%llu,\"unique\":%llu,\"secs\":%.3f,\"pps\":%.0f,\"errors\":%llu,\"rate\":%.0f,\"nsrc\":%d,\"cpuS\":%.3f,\"monoStartUs\":%.0f,\"monoEndUs\":%.0f}\n",
         sent, sent < left ? sent : left, el, sent / el, errors, rate, nsrc, cpu, t0 * 1e6, t * 1e6);
  return 0;
}
