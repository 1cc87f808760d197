// Poller: a uv_poll_t on one fd of the main event loop. JS is called back when the fd is
// readable (and/or writable) and then does the I/O itself with the batch calls; nothing runs on
// the thread pool and nothing blocks. Lifetime: the JS object is kept alive (strong reference)
// from construction until close(); close() stops polling and frees the handle once libuv is
// done with it. Close the Poller before closing its fd (libuv's rule for uv_poll).
#include <uv.h>

#include "common.h"

namespace tunlb {

class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = DefineClass(env, "Poller",
                                     {InstanceMethod<&Poller::Start>("start"), InstanceMethod<&Poller::Stop>("stop"),
                                      InstanceMethod<&Poller::Close>("close"), InstanceMethod<&Poller::Ref>("ref"),
                                      InstanceMethod<&Poller::Unref>("unref")});
    exports.Set("Poller", cls);
  }

  // new Poller(fd: number, callback: (status: number, events: number) => void)
  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    int fd = info[0].As<Napi::Number>().Int32Value();
    if (env.IsExceptionPending()) return;
    if (!info[1].IsFunction()) {
      Napi::TypeError::New(env, "Poller: callback must be a function").ThrowAsJavaScriptException();
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "Poller: no libuv loop").ThrowAsJavaScriptException();
      return;
    }
    handle_ = new uv_poll_t;
    int r = uv_poll_init(loop, handle_, fd);
    if (r != 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(env, -r, "uv_poll_init", "polling fd " + std::to_string(fd));
      return;
    }
    handle_->data = this;
    cb_ = Napi::Persistent(info[1].As<Napi::Function>());
    ctx_ = new Napi::AsyncContext(env, "tunlb:poll", info.This().As<Napi::Object>());
    Napi::ObjectWrap<Poller>::Ref();  // alive until Close()
  }

  ~Poller() override { Release(); }

 private:
  static void OnPoll(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<Poller*>(h->data);
    if (self == nullptr) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    self->cb_.MakeCallback(self->Value(), {Napi::Number::New(env, status), Napi::Number::New(env, events)},
                           *self->ctx_);
    if (env.IsExceptionPending()) {
      // Same as an exception thrown by a socket's callback: 'uncaughtException'.
      Napi::Error e = env.GetAndClearPendingException();
      napi_fatal_exception(env, e.Value());
    }
  }

  // start(events: number /* 1 readable, 2 writable (UV_READABLE, UV_WRITABLE) */)
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int events = info[0].As<Napi::Number>().Int32Value();
    if (handle_ == nullptr) {
      Napi::Error::New(env, "Poller is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int r = uv_poll_start(handle_, events & (UV_READABLE | UV_WRITABLE), OnPoll);
    if (r != 0) ThrowErrno(env, -r, "uv_poll_start", "polling");
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    return info.Env().Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) {
      Release();
      Napi::ObjectWrap<Poller>::Unref();
    }
    return info.Env().Undefined();
  }

  void Release() {
    if (handle_ == nullptr) return;
    handle_->data = nullptr;
    // uv_close stops the watcher and removes the fd from epoll now; memory goes in the callback.
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
    cb_.Reset();
    delete ctx_;
    ctx_ = nullptr;
  }

  uv_poll_t* handle_ = nullptr;
  Napi::FunctionReference cb_;
  Napi::AsyncContext* ctx_ = nullptr;
};

void InitPoller(Napi::Env env, Napi::Object exports) { Poller::Init(env, exports); }

}  // namespace tunlb
