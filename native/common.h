// tunlb native addon: shared helpers. The addon is deliberately small: it opens devices and
// sockets, moves batches of packets between the kernel and caller-owned typed arrays, and
// tells JS (through libuv's uv_poll) when an fd is readable. Every decision lives in
// TypeScript (src/dataplane/*.ts); this code never allocates per packet and never blocks:
// every fd it returns is O_NONBLOCK and every syscall it makes on one returns EAGAIN at once.
#pragma once
#include <napi.h>

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tunlb {

// Throws a JS Error whose `errno` (number), `code` ("EPERM", ...) and `syscall` properties
// let the TS wrapper map it to a TunlbError code. Returns nothing: callers `return` after it.
void ThrowErrno(Napi::Env env, int err, const std::string& syscall, const std::string& what);

// Typed-array views of JS arguments (no copies). `data` already includes the byteOffset.
// Returns false (and throws a TypeError) when the argument is not that kind of typed array.
bool GetU8(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* len);
bool GetU16(const Napi::CallbackInfo& info, size_t i, uint16_t** data, size_t* len);
bool GetU32(const Napi::CallbackInfo& info, size_t i, uint32_t** data, size_t* len);
bool GetI32(const Napi::CallbackInfo& info, size_t i, int32_t** data, size_t* len);
// Like GetU8 but null/undefined give data=nullptr, len=0.
bool GetOptU8(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* len);

// Switches the calling thread into the network namespace at `path` (e.g. /run/netns/NAME) for
// the guard's lifetime, then back. Empty path: does nothing. Only the main thread switches,
// synchronously, so no JS runs inside the other namespace. If switching back ever failed the
// process would silently keep working in the wrong namespace, so the destructor aborts then.
class NetnsGuard {
 public:
  NetnsGuard() = default;
  ~NetnsGuard();
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;
  // 0 on success, else errno; `syscall` names the step that failed.
  int Enter(const std::string& path);
  const char* syscall = "";

 private:
  int orig_ = -1;
  bool entered_ = false;
};

// Per-call status array shared with JS (Int32Array(4), see src/dataplane/native.ts);
// kInfoTruncated counts packets/datagrams longer than their slot (reported with size 0):
enum InfoSlot { kInfoErrors = 0, kInfoLastErrno = 1, kInfoStoppedAgain = 2, kInfoTruncated = 3, kInfoLen = 4 };

// sendmmsg(2) of msgs[0..m), non-blocking, until all are handled or the socket is full.
// Returns how many the kernel accepted. A message that fails (EMSGSIZE, ENETDOWN, EINVAL ...)
// is counted in st[kInfoErrors] / st[kInfoLastErrno] and skipped; EINTR retries. EAGAIN (and
// ENOBUFS when `enobufsIsFull`: packet sockets report a full queue so) stops early and sets
// *full. Shared by the UDP and AF_PACKET batch senders.
unsigned SendMmsgAll(int fd, struct mmsghdr* msgs, unsigned m, int32_t* st, bool enobufsIsFull, bool* full);

// Size of the virtio_net_hdr (linux/virtio_net.h, no num_buffers) the addon asks for with
// TUNSETVNETHDRSZ; JS keeps one per slot in PacketBatch.vnet at this stride.
constexpr size_t kVnetHdrLen = 10;

void InitTun(Napi::Env env, Napi::Object exports);
void InitUdp(Napi::Env env, Napi::Object exports);
void InitPoller(Napi::Env env, Napi::Object exports);
void InitPacket(Napi::Env env, Napi::Object exports);
void InitNeighbours(Napi::Env env, Napi::Object exports);

}  // namespace tunlb
