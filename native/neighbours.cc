// The kernel's neighbour table (ARP / NDP) over rtnetlink, for DSR's backend MAC resolution
// (src/dataplane/neighbours.ts). Kernel interface: rtnetlink(7), linux/neighbour.h (struct
// ndmsg, NDA_DST, NDA_LLADDR, NUD_* states), the same RTM_GETNEIGH dump `ip neigh show` makes.
//
// Control path only (about once a second, never per packet): unlike the data-path calls this
// one is synchronous. The dump is bounded: the socket has a 2 s receive timeout, so a kernel
// that never finishes the dump gives EAGAIN, not a hung balancer. The socket lives for the call.
#include <arpa/inet.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common.h"

namespace tunlb {

namespace {

struct NeighRow {
  int family;  // AF_INET / AF_INET6
  int ifindex;
  uint16_t state;  // NUD_* bits
  uint8_t dst[16];
  bool hasLl;
  uint8_t ll[6];
};

// Parses one RTM_NEWNEIGH message into `row`; false for families and link types we skip.
bool ParseNeigh(const struct nlmsghdr* nh, NeighRow* row) {
  if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct ndmsg))) return false;
  const struct ndmsg* nd = static_cast<const struct ndmsg*>(NLMSG_DATA(nh));
  if (nd->ndm_family != AF_INET && nd->ndm_family != AF_INET6) return false;
  std::memset(row, 0, sizeof *row);
  row->family = nd->ndm_family;
  row->ifindex = nd->ndm_ifindex;
  row->state = nd->ndm_state;
  const size_t alen = nd->ndm_family == AF_INET ? 4 : 16;
  bool hasDst = false;
  int len = static_cast<int>(nh->nlmsg_len - NLMSG_LENGTH(sizeof(struct ndmsg)));
  for (const struct rtattr* a = reinterpret_cast<const struct rtattr*>(reinterpret_cast<const char*>(nd) + NLMSG_ALIGN(sizeof *nd));
       RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    if (a->rta_type == NDA_DST && RTA_PAYLOAD(a) == alen) {
      std::memcpy(row->dst, RTA_DATA(a), alen);
      hasDst = true;
    } else if (a->rta_type == NDA_LLADDR && RTA_PAYLOAD(a) == 6) {  // Ethernet only
      std::memcpy(row->ll, RTA_DATA(a), 6);
      row->hasLl = true;
    }
  }
  return hasDst;
}

// The whole dump into `rows`. 0 or errno; `syscall` names the failing step.
int DumpNeighbours(std::vector<NeighRow>* rows, const char** syscall) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    *syscall = "socket(AF_NETLINK)";
    return errno;
  }
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct {
    struct nlmsghdr nh;
    struct ndmsg nd;
  } req;
  std::memset(&req, 0, sizeof req);
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ndmsg));
  req.nh.nlmsg_type = RTM_GETNEIGH;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.nd.ndm_family = AF_UNSPEC;
  struct sockaddr_nl kernel;
  std::memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, &req, req.nh.nlmsg_len, 0, reinterpret_cast<struct sockaddr*>(&kernel), sizeof kernel) < 0) {
    int e = errno;
    close(fd);
    *syscall = "sendto(RTM_GETNEIGH)";
    return e;
  }
  // 32 KiB holds many messages; a dump is split over several reads (NLM_F_MULTI) until DONE.
  alignas(struct nlmsghdr) static char buf[32768];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      *syscall = "recv(RTM_GETNEIGH)";
      return e;
    }
    if (n == 0) break;
    int len = static_cast<int>(n);
    for (const struct nlmsghdr* nh = reinterpret_cast<const struct nlmsghdr*>(buf); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_seq != 1) continue;
      if (nh->nlmsg_type == NLMSG_DONE) {
        close(fd);
        return 0;
      }
      if (nh->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr* err = static_cast<const struct nlmsgerr*>(NLMSG_DATA(nh));
        close(fd);
        *syscall = "RTM_GETNEIGH";
        return err->error < 0 ? -err->error : EPROTO;
      }
      if (nh->nlmsg_type != RTM_NEWNEIGH) continue;
      NeighRow row;
      if (ParseNeigh(nh, &row)) rows->push_back(row);
    }
  }
  close(fd);
  return 0;
}

}  // namespace

// neighDump(netnsPath: string) -> Array<{ dst: string, dev: string, ifindex: number,
//   family: 4 | 6, state: number (NUD_* bits), lladdr?: string "aa:bb:cc:dd:ee:ff" }>
// Throws an Error with errno/code/syscall (ThrowErrno) when the dump fails.
static Napi::Value NeighDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = info[0].As<Napi::String>().Utf8Value();
  if (env.IsExceptionPending()) return env.Undefined();
  std::vector<NeighRow> rows;
  {
    NetnsGuard ns;
    if (int e = ns.Enter(netns)) {
      ThrowErrno(env, e, ns.syscall, "entering network namespace " + netns);
      return env.Undefined();
    }
    const char* sc = "";
    if (int e = DumpNeighbours(&rows, &sc)) {
      ThrowErrno(env, e, sc, "reading the neighbour table");
      return env.Undefined();
    }
    // Interface names are resolved inside the namespace, below, while the guard holds.
    Napi::Array out = Napi::Array::New(env);
    uint32_t k = 0;
    for (const NeighRow& r : rows) {
      char text[INET6_ADDRSTRLEN];
      if (inet_ntop(r.family, r.dst, text, sizeof text) == nullptr) continue;
      char name[IF_NAMESIZE];
      if (if_indextoname(static_cast<unsigned>(r.ifindex), name) == nullptr) continue;  // gone meanwhile
      Napi::Object o = Napi::Object::New(env);
      o.Set("dst", Napi::String::New(env, text));
      o.Set("dev", Napi::String::New(env, name));
      o.Set("ifindex", Napi::Number::New(env, r.ifindex));
      o.Set("family", Napi::Number::New(env, r.family == AF_INET ? 4 : 6));
      o.Set("state", Napi::Number::New(env, r.state));
      if (r.hasLl) {
        char mac[18];
        std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", r.ll[0], r.ll[1], r.ll[2], r.ll[3], r.ll[4], r.ll[5]);
        o.Set("lladdr", Napi::String::New(env, mac));
      }
      out.Set(k++, o);
    }
    return out;
  }
}

void InitNeighbours(Napi::Env env, Napi::Object exports) {
  exports.Set("neighDump", Napi::Function::New(env, NeighDump, "neighDump"));
}

}  // namespace tunlb
