// AF_PACKET socket for DSR (direct server return): whole Ethernet frames, built by the
// forwarder in each packet's headroom, sent in batches with sendmmsg(2). Kernel interface:
// packet(7), linux/if_packet.h (PACKET_VNET_HDR), netdevice(7) (SIOCGIFHWADDR, SIOCGIFMTU),
// linux/virtio_net.h (the header in front of each frame when PACKET_VNET_HDR is on).
//
// The socket is SOCK_RAW with protocol 0: it is bound to an interface but registers no
// receive hook, so it never queues incoming traffic (send only). Every frame carries its own
// destination (sockaddr_ll: ifindex from `ifindex[i]`, or the bound interface when that array
// is null; protocol = the frame's ethertype), so one socket can send on several interfaces.
// With PACKET_VNET_HDR each frame is preceded by a 10-byte virtio_net_hdr (no num_buffers):
// csum_start counts from the Ethernet header, so a GSO super-packet or a packet with a
// partial checksum (NEEDS_CSUM) leaves as one frame and the kernel segments / completes it.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common.h"

namespace tunlb {

constexpr unsigned kPktChunk = 256;  // frames per sendmmsg call
constexpr size_t kEthHdrLen = 14;
static struct mmsghdr g_pmsgs[kPktChunk];
static struct iovec g_piovs[kPktChunk * 2];
static struct sockaddr_ll g_pnames[kPktChunk];

// Interface index, MAC address and MTU of `name` in the current namespace. 0 or errno; `syscall`
// names the failing step.
static int IfInfo(int ctl, const std::string& name, int* ifindex, uint8_t mac[6], int* mtu, const char** syscall) {
  struct ifreq r;
  std::memset(&r, 0, sizeof r);
  std::strncpy(r.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(ctl, SIOCGIFINDEX, &r) < 0) {
    *syscall = "SIOCGIFINDEX";
    return errno;
  }
  *ifindex = r.ifr_ifindex;
  if (ioctl(ctl, SIOCGIFHWADDR, &r) < 0) {
    *syscall = "SIOCGIFHWADDR";
    return errno;
  }
  if (r.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
    *syscall = "SIOCGIFHWADDR (not an Ethernet interface)";
    return EAFNOSUPPORT;
  }
  std::memcpy(mac, r.ifr_hwaddr.sa_data, 6);
  if (ioctl(ctl, SIOCGIFMTU, &r) < 0) {
    *syscall = "SIOCGIFMTU";
    return errno;
  }
  *mtu = r.ifr_mtu;
  return 0;
}

static Napi::Object IfInfoObject(Napi::Env env, int fd, const std::string& name, int ifindex, const uint8_t mac[6],
                                 int mtu) {
  Napi::Object out = Napi::Object::New(env);
  if (fd >= 0) out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, name));
  out.Set("ifindex", Napi::Number::New(env, ifindex));
  Napi::Uint8Array m = Napi::Uint8Array::New(env, 6);
  std::memcpy(m.Data(), mac, 6);
  out.Set("mac", m);
  out.Set("mtu", Napi::Number::New(env, mtu));
  return out;
}

// ifInfo(name: string, netnsPath: string) -> { name, ifindex, mac: Uint8Array(6), mtu }
static Napi::Value IfInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string netns = info[1].As<Napi::String>().Utf8Value();
  if (env.IsExceptionPending()) return env.Undefined();
  if (name.empty() || name.size() >= IFNAMSIZ) {
    Napi::RangeError::New(env, "interface name must be 1..15 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  NetnsGuard ns;
  if (int e = ns.Enter(netns)) {
    ThrowErrno(env, e, ns.syscall, "entering network namespace " + netns);
    return env.Undefined();
  }
  int ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (ctl < 0) {
    ThrowErrno(env, errno, "socket(AF_INET)", "reading interface " + name);
    return env.Undefined();
  }
  int ifindex = 0, mtu = 0;
  uint8_t mac[6];
  const char* sc = "";
  int e = IfInfo(ctl, name, &ifindex, mac, &mtu, &sc);
  close(ctl);
  if (e != 0) {
    ThrowErrno(env, e, sc, "reading interface " + name);
    return env.Undefined();
  }
  return IfInfoObject(env, -1, name, ifindex, mac, mtu);
}

// packetOpen(ifname: string, netnsPath: string, opts: number[] [vnetHdr, sndBuf])
//   -> { fd, name, ifindex, mac: Uint8Array(6), mtu }   (throws an Error with errno/code/syscall)
static Napi::Value PacketOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string netns = info[1].As<Napi::String>().Utf8Value();
  Napi::Array opts = info[2].As<Napi::Array>();
  if (env.IsExceptionPending()) return env.Undefined();
  int vnet = opts.Get(0u).As<Napi::Number>().Int32Value();
  int sndbuf = opts.Get(1u).As<Napi::Number>().Int32Value();
  if (env.IsExceptionPending()) return env.Undefined();
  if (name.empty() || name.size() >= IFNAMSIZ) {
    Napi::RangeError::New(env, "interface name must be 1..15 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  NetnsGuard ns;  // the socket stays in that namespace after we switch back
  if (int e = ns.Enter(netns)) {
    ThrowErrno(env, e, ns.syscall, "entering network namespace " + netns);
    return env.Undefined();
  }
  // Protocol 0: bound, but no receive hook (this socket only sends).
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket(AF_PACKET)", "opening packet socket on " + name);
    return env.Undefined();
  }
  auto fail = [&](int e, const char* syscall) {
    close(fd);
    ThrowErrno(env, e, syscall, "configuring packet socket on " + name);
    return env.Undefined();
  };
  int ifindex = 0, mtu = 0;
  uint8_t mac[6];
  const char* sc = "";
  if (int e = IfInfo(fd, name, &ifindex, mac, &mtu, &sc)) return fail(e, sc);
  int one = 1;
  if (vnet && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) return fail(errno, "PACKET_VNET_HDR");
  if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) < 0) return fail(errno, "SO_SNDBUF");
  struct sockaddr_ll ll;
  std::memset(&ll, 0, sizeof ll);
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = 0;
  ll.sll_ifindex = ifindex;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&ll), sizeof ll) < 0) return fail(errno, "bind");
  return IfInfoObject(env, fd, name, ifindex, mac, mtu);
}

// packetSend(fd, ifindex: number, buf: Uint8Array, offsets: Uint32Array, sizes: Uint32Array,
//            count, vnet: Uint8Array | null, ifindexes: Int32Array | null, info: Int32Array)
//   -> frames sent
// Frame i is buf[offsets[i] .. +sizes[i]] (Ethernet header first), preceded by vnet[i*10 ..]
// when vnet is given (the socket must have PACKET_VNET_HDR on then, and only then). Its
// interface is ifindexes[i] when given and > 0, else `ifindex`. EAGAIN stops (info[2] = 1).
// Any other error, or a frame outside `buf` or shorter than an Ethernet header, skips that
// frame: info[0] += 1, info[1] = errno.
static Napi::Value PacketSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t *buf, *vnet; uint32_t *offsets, *sizes; int32_t *ifx, *st;
  size_t blen, olen, slen, vlen, xlen, stlen;
  int fd = info[0].As<Napi::Number>().Int32Value();
  int bound = info[1].As<Napi::Number>().Int32Value();
  if (!GetU8(info, 2, &buf, &blen) || !GetU32(info, 3, &offsets, &olen) || !GetU32(info, 4, &sizes, &slen))
    return env.Undefined();
  uint32_t count = info[5].As<Napi::Number>().Uint32Value();
  if (!GetOptU8(info, 6, &vnet, &vlen)) return env.Undefined();
  if (info[7].IsNull() || info[7].IsUndefined()) {
    ifx = nullptr;
    xlen = 0;
  } else if (!GetI32(info, 7, &ifx, &xlen)) {
    return env.Undefined();
  }
  if (!GetI32(info, 8, &st, &stlen)) return env.Undefined();
  if (stlen < kInfoLen || count > olen || count > slen || (vnet != nullptr && vlen < count * kVnetHdrLen) ||
      (ifx != nullptr && xlen < count)) {
    Napi::RangeError::New(env, "packetSend: batch arrays too small").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t sent = 0, i = 0;
  while (i < count) {
    unsigned m = 0;
    uint32_t next = i;
    while (next < count && m < kPktChunk) {
      uint64_t off = offsets[next], len = sizes[next];
      if (len < kEthHdrLen || off + len > blen) {
        st[kInfoErrors]++;
        st[kInfoLastErrno] = EINVAL;
        next++;
        continue;
      }
      const uint8_t* f = buf + off;
      struct sockaddr_ll* ll = &g_pnames[m];
      std::memset(ll, 0, sizeof *ll);
      ll->sll_family = AF_PACKET;
      std::memcpy(&ll->sll_protocol, f + 12, 2);  // the frame's ethertype, already big-endian
      ll->sll_ifindex = ifx != nullptr && ifx[next] > 0 ? ifx[next] : bound;
      ll->sll_halen = ETH_ALEN;
      std::memcpy(ll->sll_addr, f, ETH_ALEN);
      struct iovec* iov = &g_piovs[2 * m];
      int niov = 0;
      if (vnet != nullptr) {
        iov[niov].iov_base = vnet + next * kVnetHdrLen;
        iov[niov].iov_len = kVnetHdrLen;
        niov++;
      }
      iov[niov].iov_base = buf + off;
      iov[niov].iov_len = len;
      niov++;
      std::memset(&g_pmsgs[m].msg_hdr, 0, sizeof g_pmsgs[m].msg_hdr);
      g_pmsgs[m].msg_hdr.msg_name = ll;
      g_pmsgs[m].msg_hdr.msg_namelen = sizeof *ll;
      g_pmsgs[m].msg_hdr.msg_iov = iov;
      g_pmsgs[m].msg_hdr.msg_iovlen = niov;
      m++;
      next++;
    }
    bool again = false;
    sent += SendMmsgAll(fd, g_pmsgs, m, st, true, &again);
    if (again) {
      st[kInfoStoppedAgain] = 1;
      break;
    }
    i = next;
  }
  return Napi::Number::New(env, sent);
}

void InitPacket(Napi::Env env, Napi::Object exports) {
  exports.Set("ifInfo", Napi::Function::New(env, IfInfoJs, "ifInfo"));
  exports.Set("packetOpen", Napi::Function::New(env, PacketOpen, "packetOpen"));
  exports.Set("packetSend", Napi::Function::New(env, PacketSend, "packetSend"));
}

}  // namespace tunlb
