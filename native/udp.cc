// Batched UDP socket: recvmmsg(2)/sendmmsg(2) between the kernel and caller-owned typed arrays.
// Peer addresses cross the boundary as 16 bytes (IPv6, or IPv4-mapped ::ffff:a.b.c.d, as in
// docs/contracts.md) plus a port in host order.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common.h"

namespace tunlb {

constexpr unsigned kChunk = 256;  // messages per recvmmsg/sendmmsg call
static struct mmsghdr g_msgs[kChunk];
static struct iovec g_iovs[kChunk];
static struct sockaddr_storage g_names[kChunk];
// Segmented (UDP GSO) entries: gathered iovecs (a chunk header from the scratch buffer, then
// its payload in place) and one UDP_SEGMENT control message per sendmmsg message.
constexpr unsigned kGsoIovs = 8192;
constexpr unsigned kUdpMaxSegs = 64;         // UDP_MAX_SEGMENTS of older kernels (newer: 128)
constexpr uint32_t kMaxUdpPayload = 65507;   // 65535 - IPv4 header (20) - UDP header (8)
static struct iovec g_giovs[kGsoIovs];
static union {
  char buf[CMSG_SPACE(sizeof(uint16_t))];
  struct cmsghdr align;
} g_ctrl[kChunk];
static bool g_msgLast[kChunk];        // the entry's last message

static const uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool IsMapped(const uint8_t* a) { return std::memcmp(a, kMappedPrefix, 12) == 0; }

// Fills `ss` for sending to (addr16, port) on a socket of `family`. False if impossible.
static bool ToSockaddr(int family, const uint8_t* a, uint16_t port, struct sockaddr_storage* ss, socklen_t* len) {
  std::memset(ss, 0, sizeof(struct sockaddr_in6));
  if (family == AF_INET) {
    if (!IsMapped(a)) return false;
    auto* s = reinterpret_cast<struct sockaddr_in*>(ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
    std::memcpy(&s->sin_addr, a + 12, 4);
    *len = sizeof(struct sockaddr_in);
  } else {
    auto* s = reinterpret_cast<struct sockaddr_in6*>(ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    std::memcpy(&s->sin6_addr, a, 16);
    *len = sizeof(struct sockaddr_in6);
  }
  return true;
}

static void FromSockaddr(const struct sockaddr_storage* ss, uint8_t* a, uint16_t* port) {
  if (ss->ss_family == AF_INET) {
    auto* s = reinterpret_cast<const struct sockaddr_in*>(ss);
    std::memcpy(a, kMappedPrefix, 12);
    std::memcpy(a + 12, &s->sin_addr, 4);
    *port = ntohs(s->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    auto* s = reinterpret_cast<const struct sockaddr_in6*>(ss);
    std::memcpy(a, &s->sin6_addr, 16);
    *port = ntohs(s->sin6_port);
  } else {
    std::memset(a, 0, 16);
    *port = 0;
  }
}

// Interface index owning IPv6 address `a` (for IPv6 multicast), 0 if none.
static unsigned IfIndexOf6(const uint8_t* a) {
  struct ifaddrs* list;
  if (getifaddrs(&list) < 0) return 0;
  unsigned idx = 0;
  for (struct ifaddrs* i = list; i != nullptr && idx == 0; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET6) continue;
    auto* s = reinterpret_cast<struct sockaddr_in6*>(i->ifa_addr);
    if (std::memcmp(&s->sin6_addr, a, 16) == 0) idx = if_nametoindex(i->ifa_name);
  }
  freeifaddrs(list);
  return idx;
}

// udpOpen(family: 4|6, addr: Uint8Array(16), port, netnsPath, opts: number[]
//         [reuseAddr, rcvBuf, sndBuf, mcTtl, mcLoop], mcGroup: Uint8Array(16)|null,
//         mcIface: Uint8Array(16)|null) -> { fd, port }
static Napi::Value UdpOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fam = info[0].As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
  uint8_t *addr, *group, *iface;
  size_t alen, glen, ilen;
  if (!GetU8(info, 1, &addr, &alen)) return env.Undefined();
  uint16_t port = static_cast<uint16_t>(info[2].As<Napi::Number>().Uint32Value());
  std::string netns = info[3].As<Napi::String>().Utf8Value();
  Napi::Array opts = info[4].As<Napi::Array>();
  if (!GetOptU8(info, 5, &group, &glen) || !GetOptU8(info, 6, &iface, &ilen)) return env.Undefined();
  if (env.IsExceptionPending()) return env.Undefined();
  int reuse = opts.Get(0u).As<Napi::Number>().Int32Value();
  int rcvbuf = opts.Get(1u).As<Napi::Number>().Int32Value();
  int sndbuf = opts.Get(2u).As<Napi::Number>().Int32Value();
  int ttl = opts.Get(3u).As<Napi::Number>().Int32Value();
  int loop = opts.Get(4u).As<Napi::Number>().Int32Value();
  if (alen != 16 || (group != nullptr && glen != 16) || (iface != nullptr && ilen != 16)) {
    Napi::RangeError::New(env, "udpOpen: addresses are 16 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  NetnsGuard ns;
  if (int e = ns.Enter(netns)) {
    ThrowErrno(env, e, ns.syscall, "entering network namespace " + netns);
    return env.Undefined();
  }
  int fd = socket(fam, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket", "opening UDP socket");
    return env.Undefined();
  }
  auto fail = [&](const char* syscall) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, syscall, "configuring UDP socket");
    return env.Undefined();
  };
  int one = 1, zero = 0;
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) return fail("SO_REUSEADDR");
  // *BUFFORCE (CAP_NET_ADMIN, which a balancer has) passes net.core.[rw]mem_max; without the
  // capability fall back to the plain option, which the kernel caps at that limit.
  if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0) return fail("SO_RCVBUF");
  if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0 &&
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) < 0) return fail("SO_SNDBUF");
  if (fam == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) < 0) return fail("IPV6_V6ONLY");
  struct sockaddr_storage ss;
  socklen_t sl;
  if (!ToSockaddr(fam, addr, port, &ss, &sl)) {
    close(fd);
    Napi::RangeError::New(env, "udpOpen: an IPv4 socket needs an IPv4 (mapped) address").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&ss), sl) < 0) return fail("bind");

  if (group != nullptr) {
    if (fam == AF_INET) {
      struct ip_mreq m;
      std::memcpy(&m.imr_multiaddr, group + 12, 4);
      if (iface != nullptr) std::memcpy(&m.imr_interface, iface + 12, 4);
      else m.imr_interface.s_addr = htonl(INADDR_ANY);
      if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m) < 0) return fail("IP_ADD_MEMBERSHIP");
      if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &m.imr_interface, sizeof m.imr_interface) < 0)
        return fail("IP_MULTICAST_IF");
      if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) < 0) return fail("IP_MULTICAST_TTL");
      if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop) < 0) return fail("IP_MULTICAST_LOOP");
    } else {
      struct ipv6_mreq m;
      std::memcpy(&m.ipv6mr_multiaddr, group, 16);
      m.ipv6mr_interface = iface != nullptr ? IfIndexOf6(iface) : 0;
      if (iface != nullptr && m.ipv6mr_interface == 0) {
        errno = EADDRNOTAVAIL;
        return fail("getifaddrs");
      }
      unsigned idx = m.ipv6mr_interface;
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &m, sizeof m) < 0) return fail("IPV6_JOIN_GROUP");
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof idx) < 0) return fail("IPV6_MULTICAST_IF");
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &ttl, sizeof ttl) < 0) return fail("IPV6_MULTICAST_HOPS");
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &loop, sizeof loop) < 0) return fail("IPV6_MULTICAST_LOOP");
    }
  }
  sl = sizeof ss;
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &sl) < 0) return fail("getsockname");
  uint8_t bound[16];
  uint16_t bport;
  FromSockaddr(&ss, bound, &bport);
  // UDP GSO (UDP_SEGMENT, Linux 4.18, linux/udp.h): probed once here; without it the sender
  // never passes segmented entries (udpSend's `chunk` array).
  int seg = 0;
  socklen_t segLen = sizeof seg;
  bool gso = getsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, &segLen) == 0;
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("port", Napi::Number::New(env, bport));
  out.Set("gso", Napi::Boolean::New(env, gso));
  return out;
}

// udpRecv(fd, buf, offsets, sizes, slotSize, headroom, max, addrs: Uint8Array, ports: Uint16Array,
//         info: Int32Array) -> datagrams received, or -errno
// Same slot layout as tunRead. A datagram longer than its slot is dropped by the kernel's
// truncation: its size is reported as 0 and counted in info[3]. (Without MSG_TRUNC in the
// call's flags msg_len is what was copied, at most the slot; a larger value is treated as a
// truncation too, so sizes[i] never exceeds slotSize-headroom whatever the kernel says.)
static Napi::Value UdpRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t *buf, *addrs; uint32_t *offsets, *sizes; uint16_t* ports; int32_t* st;
  size_t blen, olen, slen, alen, plen, stlen;
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (!GetU8(info, 1, &buf, &blen) || !GetU32(info, 2, &offsets, &olen) || !GetU32(info, 3, &sizes, &slen))
    return env.Undefined();
  uint32_t slot = info[4].As<Napi::Number>().Uint32Value();
  uint32_t head = info[5].As<Napi::Number>().Uint32Value();
  uint32_t max = info[6].As<Napi::Number>().Uint32Value();
  if (!GetU8(info, 7, &addrs, &alen) || !GetU16(info, 8, &ports, &plen) || !GetI32(info, 9, &st, &stlen))
    return env.Undefined();
  if (head >= slot || stlen < kInfoLen || max > olen || max > slen || max > plen || alen < max * 16ull ||
      static_cast<uint64_t>(max) * slot > blen) {
    Napi::RangeError::New(env, "udpRecv: batch arrays too small").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t n = 0;
  while (n < max) {
    unsigned want = max - n < kChunk ? max - n : kChunk;
    for (unsigned j = 0; j < want; j++) {
      uint32_t off = (n + j) * slot + head;
      g_iovs[j].iov_base = buf + off;
      g_iovs[j].iov_len = slot - head;
      std::memset(&g_msgs[j].msg_hdr, 0, sizeof g_msgs[j].msg_hdr);
      g_msgs[j].msg_hdr.msg_name = &g_names[j];
      g_msgs[j].msg_hdr.msg_namelen = sizeof g_names[j];
      g_msgs[j].msg_hdr.msg_iov = &g_iovs[j];
      g_msgs[j].msg_hdr.msg_iovlen = 1;
    }
    int r = recvmmsg(fd, g_msgs, want, MSG_DONTWAIT, nullptr);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      if (n == 0) {
        st[kInfoLastErrno] = errno;
        return Napi::Number::New(env, -errno);
      }
      break;
    }
    for (int j = 0; j < r; j++) {
      uint32_t k = n + j;
      offsets[k] = k * slot + head;
      if ((g_msgs[j].msg_hdr.msg_flags & MSG_TRUNC) || g_msgs[j].msg_len > slot - head) {
        sizes[k] = 0;
        st[kInfoTruncated]++;
      } else {
        sizes[k] = g_msgs[j].msg_len;
      }
      FromSockaddr(&g_names[j], addrs + 16 * k, &ports[k]);
    }
    n += r;
    if (static_cast<unsigned>(r) < want) break;
  }
  return Napi::Number::New(env, n);
}

// udpSend(fd, family: 4|6, buf, offsets, sizes, count, addrs, ports, info
//         [, chunk: Uint16Array, hdrs: Uint8Array, hdrOffs: Uint32Array, hdrLens: Uint16Array])
//   -> entries sent
// Entry i is one datagram buf[offsets[i] .. +sizes[i]] to addrs[16i..]:ports[i], unless
// chunk[i] > 0: then it is a segmented super-packet (src/packet/gso-split.ts), datagram j =
// hdrs[hdrOffs[i] + j*hdrLens[i] .. +hdrLens[i]] followed by buf[offsets[i] + j*chunk[i] ..
// + min(chunk[i], rest of sizes[i])], sent with UDP_SEGMENT = hdrLens[i] + chunk[i] (one
// sendmmsg message per up to 64 datagrams and 65507 bytes): the kernel passes one GSO skb down
// the stack and segments it as late as possible (or the NIC does). Only on a socket whose
// udpOpen reported gso. EAGAIN stops (info[2] = 1). Any other error, or an entry outside its
// buffers or to an address the socket's family cannot reach, skips that message / entry:
// info[0] += 1, info[1] = errno (EIO from a GSO message: the path cannot offload the UDP
// checksum; the caller then stops segmenting). Returns the entries whose messages were all
// handed over up to the first refused or unsent one.
static Napi::Value UdpSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t *buf, *addrs; uint32_t *offsets, *sizes; uint16_t* ports; int32_t* st;
  size_t blen, olen, slen, alen, plen, stlen;
  int fd = info[0].As<Napi::Number>().Int32Value();
  int fam = info[1].As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
  if (!GetU8(info, 2, &buf, &blen) || !GetU32(info, 3, &offsets, &olen) || !GetU32(info, 4, &sizes, &slen))
    return env.Undefined();
  uint32_t count = info[5].As<Napi::Number>().Uint32Value();
  if (!GetU8(info, 6, &addrs, &alen) || !GetU16(info, 7, &ports, &plen) || !GetI32(info, 8, &st, &stlen))
    return env.Undefined();
  if (stlen < kInfoLen || count > olen || count > slen || count > plen || alen < count * 16ull) {
    Napi::RangeError::New(env, "udpSend: batch arrays too small").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint16_t *chunk = nullptr, *hdrLens = nullptr;
  uint8_t* hdrs = nullptr;
  uint32_t* hdrOffs = nullptr;
  size_t clen = 0, hlen = 0, holen = 0, hllen = 0;
  if (info.Length() > 9 && !info[9].IsNull() && !info[9].IsUndefined()) {
    if (!GetU16(info, 9, &chunk, &clen) || !GetU8(info, 10, &hdrs, &hlen) || !GetU32(info, 11, &hdrOffs, &holen) ||
        !GetU16(info, 12, &hdrLens, &hllen))
      return env.Undefined();
    if (count > clen || count > holen || count > hllen) {
      Napi::RangeError::New(env, "udpSend: segment arrays too small").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  uint32_t sent = 0, i = 0;
  while (i < count) {
    // Build up to kChunk messages starting at entry i; invalid entries are skipped and counted.
    unsigned m = 0, giov = 0;
    uint32_t next = i;
    while (next < count && m < kChunk) {
      uint64_t off = offsets[next], len = sizes[next];
      socklen_t sl;
      if (off + len > blen || !ToSockaddr(fam, addrs + 16 * next, ports[next], &g_names[m], &sl)) {
        st[kInfoErrors]++;
        st[kInfoLastErrno] = EINVAL;
        next++;
        continue;
      }
      uint32_t cp = chunk != nullptr ? chunk[next] : 0;
      if (cp == 0) {
        g_iovs[m].iov_base = buf + off;
        g_iovs[m].iov_len = len;
        std::memset(&g_msgs[m].msg_hdr, 0, sizeof g_msgs[m].msg_hdr);
        g_msgs[m].msg_hdr.msg_name = &g_names[m];
        g_msgs[m].msg_hdr.msg_namelen = sl;
        g_msgs[m].msg_hdr.msg_iov = &g_iovs[m];
        g_msgs[m].msg_hdr.msg_iovlen = 1;
        g_msgLast[m] = true;
        m++;
        next++;
        continue;
      }
      // A segmented entry: n datagrams of hl + cp bytes (the last shorter).
      uint32_t hl = hdrLens[next];
      uint32_t n = static_cast<uint32_t>((len + cp - 1) / cp);
      uint32_t dg = hl + cp;
      uint32_t perMsg = dg == 0 ? 0 : kMaxUdpPayload / dg;
      if (perMsg > kUdpMaxSegs) perMsg = kUdpMaxSegs;
      uint32_t msgs = perMsg == 0 ? 0 : (n + perMsg - 1) / perMsg;
      if (len == 0 || perMsg == 0 || dg > 0xffff || static_cast<uint64_t>(hdrOffs[next]) + static_cast<uint64_t>(n) * hl > hlen ||
          msgs > kChunk || 2ull * n > kGsoIovs) {
        st[kInfoErrors]++;
        st[kInfoLastErrno] = EINVAL;
        next++;
        continue;
      }
      if (m + msgs > kChunk || giov + 2 * n > kGsoIovs) break;  // send what is built first
      struct sockaddr_storage* name = &g_names[m];  // the entry's address, shared by its messages
      for (uint32_t g = 0; g < msgs; g++) {
        uint32_t first = g * perMsg, last = first + perMsg < n ? first + perMsg : n;
        struct iovec* iov = &g_giovs[giov];
        for (uint32_t j = first; j < last; j++) {
          uint64_t po = off + static_cast<uint64_t>(j) * cp;
          uint64_t pl = len - static_cast<uint64_t>(j) * cp < cp ? len - static_cast<uint64_t>(j) * cp : cp;
          g_giovs[giov].iov_base = hdrs + hdrOffs[next] + static_cast<uint64_t>(j) * hl;
          g_giovs[giov].iov_len = hl;
          g_giovs[giov + 1].iov_base = buf + po;
          g_giovs[giov + 1].iov_len = pl;
          giov += 2;
        }
        std::memset(&g_msgs[m].msg_hdr, 0, sizeof g_msgs[m].msg_hdr);
        g_msgs[m].msg_hdr.msg_name = name;
        g_msgs[m].msg_hdr.msg_namelen = sl;
        g_msgs[m].msg_hdr.msg_iov = iov;
        g_msgs[m].msg_hdr.msg_iovlen = 2 * (last - first);
        g_msgs[m].msg_hdr.msg_control = g_ctrl[m].buf;
        g_msgs[m].msg_hdr.msg_controllen = sizeof g_ctrl[m].buf;
        struct cmsghdr* c = CMSG_FIRSTHDR(&g_msgs[m].msg_hdr);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t gs = static_cast<uint16_t>(dg);
        std::memcpy(CMSG_DATA(c), &gs, sizeof gs);
        g_msgLast[m] = g == msgs - 1;
        m++;
      }
      next++;
    }
    bool again = false;
    // Entries whose last message is among the first `acc`: exact when every message was taken;
    // after a refusal (SendMmsgAll skips it without saying which) an approximation.
    unsigned acc = SendMmsgAll(fd, g_msgs, m, st, false, &again);
    for (unsigned k = 0; k < acc; k++) sent += g_msgLast[k] ? 1 : 0;
    if (again) {
      st[kInfoStoppedAgain] = 1;
      break;
    }
    i = next;
  }
  return Napi::Number::New(env, sent);
}

void InitUdp(Napi::Env env, Napi::Object exports) {
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen, "udpOpen"));
  exports.Set("udpRecv", Napi::Function::New(env, UdpRecv, "udpRecv"));
  exports.Set("udpSend", Napi::Function::New(env, UdpSend, "udpSend"));
}

}  // namespace tunlb
