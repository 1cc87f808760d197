// TUN device: open/configure (once, off the hot path) and batched non-blocking read/write.
// Kernel interface: linux/if_tun.h (TUNSETIFF, TUNGETFEATURES, TUNSETVNETHDRSZ, TUNSETVNETLE,
// TUNSETOFFLOAD) and netdevice(7) (SIOCSIFMTU, SIOCGIFFLAGS/SIOCSIFFLAGS).
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common.h"

namespace tunlb {

// Requested options (tunOpen's 3rd argument) and reported features (result.features).
enum : uint32_t {
  kWantMultiQueue = 1,
  kWantVnetHdr = 2,
  kWantOffload = 4,
};
enum : uint32_t {
  kFeatMultiQueue = 1,
  kFeatVnetHdr = 2,
  kFeatCsum = 4,
  kFeatTso4 = 8,
  kFeatTso6 = 16,
};

// tunOpen(name: string, mtu: number, want: number, netnsPath: string)
//   -> { fd, name, features }   (throws an Error with errno/code/syscall on failure)
static Napi::Value TunOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  int mtu = info[1].As<Napi::Number>().Int32Value();
  uint32_t want = info[2].As<Napi::Number>().Uint32Value();
  std::string netns = info[3].As<Napi::String>().Utf8Value();
  if (env.IsExceptionPending()) return env.Undefined();
  if (name.size() >= IFNAMSIZ) {
    Napi::RangeError::New(env, "device name longer than 15 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  NetnsGuard ns;  // back in the original namespace when this function returns
  if (int e = ns.Enter(netns)) {
    ThrowErrno(env, e, ns.syscall, "entering network namespace " + netns);
    return env.Undefined();
  }

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, errno, "open /dev/net/tun", "opening TUN device " + name);
    return env.Undefined();
  }
  auto fail = [&](const char* syscall) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, syscall, "configuring TUN device " + name);
    return env.Undefined();
  };

  // Probe once what this kernel supports and ask only for that.
  unsigned int kfeat = 0;
  if (ioctl(fd, TUNGETFEATURES, &kfeat) < 0) kfeat = IFF_TUN | IFF_NO_PI;
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  bool vnet = (want & (kWantVnetHdr | kWantOffload)) != 0 && (kfeat & IFF_VNET_HDR) != 0;
  bool mq = (want & kWantMultiQueue) != 0 && (kfeat & IFF_MULTI_QUEUE) != 0;
  if (vnet) ifr.ifr_flags |= IFF_VNET_HDR;
  if (mq) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) return fail("TUNSETIFF");

  uint32_t feat = 0;
  if (mq) feat |= kFeatMultiQueue;
  if (vnet) {
    int hl = static_cast<int>(kVnetHdrLen);
    if (ioctl(fd, TUNSETVNETHDRSZ, &hl) < 0) return fail("TUNSETVNETHDRSZ");
    // Fields of the header little-endian whatever the host (virtio 1.0); may fail on kernels
    // without cross-endian support, where legacy little-endian hosts are LE anyway.
    int le = 1;
    (void)ioctl(fd, TUNSETVNETLE, &le);
    feat |= kFeatVnetHdr;
    if (want & kWantOffload) {
      // Most capable first; the first set the kernel accepts wins.
      static const unsigned int kTry[] = {TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM | TUN_F_TSO4, TUN_F_CSUM};
      for (unsigned int off : kTry) {
        if (ioctl(fd, TUNSETOFFLOAD, off) == 0) {
          if (off & TUN_F_CSUM) feat |= kFeatCsum;
          if (off & TUN_F_TSO4) feat |= kFeatTso4;
          if (off & TUN_F_TSO6) feat |= kFeatTso6;
          break;
        }
      }
    }
  }

  // MTU and IFF_UP through an AF_INET control socket created in the same namespace.
  std::string real(ifr.ifr_name);
  int ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (ctl < 0) return fail("socket(AF_INET)");
  struct ifreq r;
  std::memset(&r, 0, sizeof r);
  std::strncpy(r.ifr_name, real.c_str(), IFNAMSIZ - 1);
  const char* failed = nullptr;
  if (mtu > 0) {
    r.ifr_mtu = mtu;
    if (ioctl(ctl, SIOCSIFMTU, &r) < 0) failed = "SIOCSIFMTU";
  }
  if (failed == nullptr && ioctl(ctl, SIOCGIFFLAGS, &r) < 0) failed = "SIOCGIFFLAGS";
  if (failed == nullptr) {
    r.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(ctl, SIOCSIFFLAGS, &r) < 0) failed = "SIOCSIFFLAGS";
  }
  int e = errno;
  close(ctl);
  if (failed != nullptr) {
    errno = e;
    return fail(failed);
  }

  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, real));
  out.Set("features", Napi::Number::New(env, feat));
  return out;
}

// Where a TUN read puts the first byte past the slot (never looked at: see tunRead).
static uint8_t g_readTail[1];

// tunRead(fd, buf: Uint8Array, offsets: Uint32Array, sizes: Uint32Array, slotSize, headroom,
//         max, vnet: Uint8Array | null, info: Int32Array) -> number of packets, or -errno
// Slot i receives its packet at i*slotSize+headroom (at most slotSize-headroom bytes); with
// vnet, its virtio_net_hdr goes to vnet[i*10..] (readv, no copy). Stops at EAGAIN or after
// `max` packets. A hard error after some packets returns the count; the next call reports it.
// sizes[i] never exceeds slotSize-headroom: a packet longer than the slot is reported with
// size 0 and counted in info[3] (as udpRecv does for a truncated datagram): e.g. after the MTU
// was raised under a running reader, or a GSO super-packet larger than the slots. A TUN read
// has no MSG_TRUNC: the kernel copies what fits, drops the rest and returns what it copied
// (drivers/net/tun.c tun_chr_read_iter: min(tun_put_user's whole length, the buffer)), so a
// cut packet looks exactly like one that fills the slot. Hence every read ends with one
// scratch byte after the slot (g_readTail): a packet longer than the slot then makes the read
// return more than the slot holds (and so would a kernel returning the whole length).
static Napi::Value TunRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* buf; uint32_t* offsets; uint32_t* sizes; uint8_t* vnet; int32_t* st;
  size_t blen, olen, slen, vlen, stlen;
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (!GetU8(info, 1, &buf, &blen) || !GetU32(info, 2, &offsets, &olen) || !GetU32(info, 3, &sizes, &slen))
    return env.Undefined();
  uint32_t slot = info[4].As<Napi::Number>().Uint32Value();
  uint32_t head = info[5].As<Napi::Number>().Uint32Value();
  uint32_t max = info[6].As<Napi::Number>().Uint32Value();
  if (!GetOptU8(info, 7, &vnet, &vlen) || !GetI32(info, 8, &st, &stlen)) return env.Undefined();
  if (head >= slot || stlen < kInfoLen || max > olen || max > slen ||
      static_cast<uint64_t>(max) * slot > blen || (vnet != nullptr && vlen < max * kVnetHdrLen)) {
    Napi::RangeError::New(env, "tunRead: batch arrays too small").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t n = 0;
  int err = 0;
  while (n < max) {
    uint32_t off = n * slot + head;
    ssize_t r;
    if (vnet != nullptr) {
      struct iovec iov[3] = {{vnet + n * kVnetHdrLen, kVnetHdrLen}, {buf + off, slot - head}, {g_readTail, sizeof g_readTail}};
      r = readv(fd, iov, 3);
      if (r >= 0) r = r >= static_cast<ssize_t>(kVnetHdrLen) ? r - static_cast<ssize_t>(kVnetHdrLen) : 0;
    } else {
      struct iovec iov[2] = {{buf + off, slot - head}, {g_readTail, sizeof g_readTail}};
      r = readv(fd, iov, 2);
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) err = errno;
      break;
    }
    offsets[n] = off;
    if (static_cast<uint64_t>(r) > slot - head) {
      sizes[n] = 0;  // cut short by the slot: its tail is missing, so it is no packet
      st[kInfoTruncated]++;
    } else {
      sizes[n] = static_cast<uint32_t>(r);
    }
    n++;
  }
  if (n == 0 && err != 0) {
    st[kInfoLastErrno] = err;
    return Napi::Number::New(env, -err);
  }
  return Napi::Number::New(env, n);
}

// tunWrite(fd, buf, offsets, sizes, count, vnet: Uint8Array | null, info: Int32Array) -> written
// Writes packet i from buf[offsets[i] .. +sizes[i]] (preceded by vnet[i*10..] when vnet is
// given). EAGAIN stops the batch (info[2] = 1). Any other error, or a packet outside `buf`,
// skips that packet: info[0] += 1, info[1] = errno. The return value is a count, not an index.
static Napi::Value TunWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* buf; uint32_t* offsets; uint32_t* sizes; uint8_t* vnet; int32_t* st;
  size_t blen, olen, slen, vlen, stlen;
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (!GetU8(info, 1, &buf, &blen) || !GetU32(info, 2, &offsets, &olen) || !GetU32(info, 3, &sizes, &slen))
    return env.Undefined();
  uint32_t count = info[4].As<Napi::Number>().Uint32Value();
  if (!GetOptU8(info, 5, &vnet, &vlen) || !GetI32(info, 6, &st, &stlen)) return env.Undefined();
  if (stlen < kInfoLen || count > olen || count > slen || (vnet != nullptr && vlen < count * kVnetHdrLen)) {
    Napi::RangeError::New(env, "tunWrite: batch arrays too small").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    uint64_t off = offsets[i], len = sizes[i];
    if (len == 0 || off + len > blen) {
      st[kInfoErrors]++;
      st[kInfoLastErrno] = EINVAL;
      continue;
    }
    ssize_t r;
    do {
      if (vnet != nullptr) {
        struct iovec iov[2] = {{vnet + i * kVnetHdrLen, kVnetHdrLen}, {buf + off, len}};
        r = writev(fd, iov, 2);
      } else {
        r = write(fd, buf + off, len);
      }
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EAGAIN) {
        st[kInfoStoppedAgain] = 1;
        break;
      }
      st[kInfoErrors]++;
      st[kInfoLastErrno] = errno;
      continue;
    }
    written++;
  }
  return Napi::Number::New(env, written);
}

void InitTun(Napi::Env env, Napi::Object exports) {
  exports.Set("tunOpen", Napi::Function::New(env, TunOpen, "tunOpen"));
  exports.Set("tunRead", Napi::Function::New(env, TunRead, "tunRead"));
  exports.Set("tunWrite", Napi::Function::New(env, TunWrite, "tunWrite"));
}

}  // namespace tunlb
