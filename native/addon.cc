// tunlb native addon: module init and shared helpers (see common.h).
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace tunlb {

void ThrowErrno(Napi::Env env, int err, const std::string& syscall, const std::string& what) {
  const char* name = strerrorname_np(err);
  std::string msg = what + ": " + syscall + ": " + std::strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, name != nullptr ? name : "EUNKNOWN"));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
}

static bool GetTyped(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type want, void** data,
                     size_t* len) {
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      napi_get_typedarray_info(info.Env(), info[i], &type, len, data, &ab, &off) != napi_ok || type != want) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " has the wrong typed array type")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

unsigned SendMmsgAll(int fd, struct mmsghdr* msgs, unsigned m, int32_t* st, bool enobufsIsFull, bool* full) {
  unsigned done = 0, sent = 0;
  *full = false;
  while (done < m) {
    int r = sendmmsg(fd, msgs + done, m - done, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || (enobufsIsFull && errno == ENOBUFS)) {
        *full = true;
        break;
      }
      st[kInfoErrors]++;  // this message failed; go on with the next
      st[kInfoLastErrno] = errno;
      done++;
      continue;
    }
    done += r;
    sent += r;
  }
  return sent;
}

bool GetU8(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* len) {
  return GetTyped(info, i, napi_uint8_array, reinterpret_cast<void**>(data), len);
}
bool GetU16(const Napi::CallbackInfo& info, size_t i, uint16_t** data, size_t* len) {
  return GetTyped(info, i, napi_uint16_array, reinterpret_cast<void**>(data), len);
}
bool GetU32(const Napi::CallbackInfo& info, size_t i, uint32_t** data, size_t* len) {
  return GetTyped(info, i, napi_uint32_array, reinterpret_cast<void**>(data), len);
}
bool GetI32(const Napi::CallbackInfo& info, size_t i, int32_t** data, size_t* len) {
  return GetTyped(info, i, napi_int32_array, reinterpret_cast<void**>(data), len);
}
bool GetOptU8(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* len) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) {
    *data = nullptr;
    *len = 0;
    return true;
  }
  return GetU8(info, i, data, len);
}

int NetnsGuard::Enter(const std::string& path) {
  if (path.empty()) return 0;
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    syscall = "open netns";
    return errno;
  }
  // setns() is per thread: remember this thread's namespace, not the process leader's.
  orig_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig_ < 0) {
    int e = errno;
    close(target);
    syscall = "open /proc/thread-self/ns/net";
    return e;
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int e = errno;
    close(target);
    syscall = "setns";
    return e;
  }
  close(target);
  entered_ = true;
  return 0;
}

NetnsGuard::~NetnsGuard() {
  if (entered_ && setns(orig_, CLONE_NEWNET) < 0) {
    std::fprintf(stderr, "tunlb: cannot return to the original network namespace: %s\n", std::strerror(errno));
    std::abort();
  }
  if (orig_ >= 0) close(orig_);
}

static Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd >= 0 && close(fd) < 0 && errno != EINTR) {
    ThrowErrno(info.Env(), errno, "close", "closing fd " + std::to_string(fd));
  }
  return info.Env().Undefined();
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("vnetHdrLen", Napi::Number::New(env, static_cast<double>(kVnetHdrLen)));
  InitTun(env, exports);
  InitUdp(env, exports);
  InitPoller(env, exports);
  InitPacket(env, exports);
  InitNeighbours(env, exports);
  return exports;
}

}  // namespace tunlb

static Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return tunlb::Init(env, exports); }

NODE_API_MODULE(tunlb_native, InitAll)
