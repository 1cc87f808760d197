#!/usr/bin/env bash
# Data-plane benchmark (`npm run bench:dataplane`, root; not part of the tests): tunlb with one
# balancer side by side with its peers, in one run, in the namespace lab (scripts/lab.sh).
#
# Middleboxes, each in tunlb-lb1 (the entry balancer), in this order:
#   kernel   nftables DNAT (`lab.sh up --lb kernel`, table narrowed to srv1, see below)
#   haproxy  HAProxy (Debian's, 2.6) TCP mode, nbthread 1, bound to VIP:5201 and VIP:9100 (TCP only)
#   cplain   the C reference TUN forwarder tunfwd.c (one read + one write per packet)   } from
#   cgso     the C reference with virtio-net header + TSO offload, tunfwd_gso.c          } BENCH_REF_DIR
#   tunlb    tunlb itself (`lab.sh up --lb tunlb --balancers 1`), HEAD built apart (BENCH_BUILD)
# then direct server return (DSR: `lab.sh up --method dsr`, the servers hold the VIP on lo and
# answer the client via the router, bypassing the balancer), on that topology:
#   tunlb-dsr   tunlb, one balancer, config/lab-dsr.yaml (frames to srv1's MAC, AF_PACKET)
#   kernel-dsr  the kernel's own DSR forwarding: tunlb stopped, `ip route VIP via srv1 dev back0`
#               in tunlb-lb1 (the packet goes unchanged to srv1's MAC, as with an IPVS director
#               in DR mode; IPVS itself is not in this kernel, CONFIG_IP_VS is not set)
#   tunlb-dsr3  three balancers: one stream whose data flow lb1 serves itself, and one a peer
#               (lb3) serves (lb1 encapsulates each packet to lb3 on lbnet), both directions for
#               the peer (iperf3 --cport with a port chosen by the hash, bench/dataplane/dsr-ports.ts)
# The NAT peers of the DSR rows are the tunlb and kernel columns above, in the same run.
# Rows, for each (where it applies):
#   UDP      64-byte datagrams from 256 source ports to VIP:9000 for BENCH_SECS s (blast.c from
#            BENCH_REF_DIR), counted at the servers' eth0 rx_packets (nothing listens on 9000);
#   TCP      iperf3 -c VIP -t BENCH_SECS with 1 and with 4 streams (receiver's figure), client→
#            server; for kernel, tunlb, tunlb-dsr and kernel-dsr also server→client (-R: under
#            DSR the data bypasses the balancer and only the client's ACKs cross it);
#   latency  BENCH_RR sequential 64-byte UDP and TCP request/responses to VIP:9100 (rr.c, one
#            flow each, after 100 warm-up ones), p50/p99 in µs; echo by rr.c on the servers;
#   CPU      the middlebox process's CPU (utime+stime from /proc/PID/stat, % of one core), the
#            busy time (incl. softirq) of the middlebox's and the generators' cores (pinned, see
#            BENCH_PIN), the host's busy and softirq time (% of one core, summed over cores), and
#            the background: CPU of processes outside the lab (others' builds and tests).
# Each middlebox first gets the same unmeasured warm-up (1 s of UDP, 500 UDP and TCP round
# trips). The machine is shared: before each middlebox the script waits for the background to
# fall under BENCH_QUIET=20 % of a core, repeats a test once when the background exceeded it
# during the test (both budgeted, so that waiting and repeats add 1-2 minutes at most: BENCH_QUIET_BUDGET
# =40 s of waiting, BENCH_RETRIES=3 repeats), and the report flags what stayed noisy.
# Every middlebox sends the VIP to srv1: iperf3's control and data connections must reach the
# same server, and tunlb and nftables choose a backend per connection (details:
# bench/dataplane/lab-config.ts). srv2 and srv3 stay configured (tunlb: weight 0; HAProxy:
# `balance first`).
#
# Then bench/dataplane/report.ts prints the markdown tables (a column per middlebox, ratios and
# targets; then the DSR table and the 3-balancer DSR one). Raw results stay in $BENCH_OUT
# (default /tmp/tunlb-bench-dataplane).
#
# The lab is shared: everything from `lab.sh down` (a clean start) to the final `lab.sh down`
# runs under `flock /tmp/tunlb-lab-session.lock` (one hold, about 5 minutes with every section);
# building and compiling happen before it. When an ancestor process already holds that lock
# (`flock /tmp/tunlb-lab-session.lock npm run bench:dataplane`), the script does not take it again
# (that would deadlock: flock locks belong to open files, not to process trees). All traffic stays between lab namespaces; every generator is bounded by
# timeout(1); the processes this script starts are stopped by PID; the lab is removed on exit.
#
# Environment:
#   BENCH_ONLY="kernel haproxy cplain cgso tunlb tunlb-dsr kernel-dsr tunlb-dsr3"
#                          middleboxes to run (any subset, that order; e.g. the DSR section and
#                          its NAT peers only: BENCH_ONLY="kernel tunlb tunlb-dsr kernel-dsr tunlb-dsr3")
#   BENCH_SECS=5 BENCH_FLOWS=256 BENCH_RR=2000       test length, UDP flows, RR count
#   BENCH_BUILD=head       what "tunlb" is: head = the last commit that builds (of HEAD and the
#                          BENCH_BUILD_BACK=8 before it that touched src/), built once into
#                          BENCH_BUILDS=/tmp/tunlb-bench-builds/<sha> (the work tree may hold
#                          others' unfinished edits);
#                          tree = a copy of the work tree, built there; none = dist/ as it is,
#                          of this checkout or of TUNLB_ROOT=<another checkout> (e.g. an older
#                          commit in a `git worktree`, built there: back-to-back comparisons)
#   BENCH_PROFILE=1        run tunlb under `node --cpu-prof` and print its hottest functions
#                          (the profiler costs throughput: use it for a separate run)
#   BENCH_PIN=1            generators on the first core, the middlebox process on the last (0: off)
#   BENCH_PERF=1           perf record (cpu-clock, call graphs) the middlebox process during the
#                          UDP test; summary (kernel / node / JIT split, top symbols) printed
#   BENCH_REF_DIR=<repo>/../shared/bench   blast.c, tunfwd.c, tunfwd_gso.c (measuring tools,
#                          compiled into $BENCH_OUT/bin, never copied into the repo)
#   BENCH_OUT=/tmp/tunlb-bench-dataplane   raw results, binaries, profile (replaced each run)
#   BENCH_LOCK=/tmp/tunlb-lab-session.lock BENCH_LOCK_WAIT=900 (s)
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
NODE_BIN=$(command -v node || true)
# System tools first: under npm, node_modules/.bin is on PATH and has an unrelated `nft`.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
NODE_BIN=${NODE_BIN:-$(command -v node || true)}
# shellcheck source=scripts/lab-topology.sh
source "$REPO/scripts/lab-topology.sh"
# shellcheck source=scripts/lab-lib.sh
source "$REPO/scripts/lab-lib.sh"

ONLY=${BENCH_ONLY:-kernel haproxy cplain cgso tunlb tunlb-dsr kernel-dsr tunlb-dsr3}
SECS=${BENCH_SECS:-5}
FLOWS=${BENCH_FLOWS:-256}
RR_N=${BENCH_RR:-2000}
REF=${BENCH_REF_DIR:-$REPO/../shared/bench}
BUILD=${BENCH_BUILD:-head}
TUNLB_ROOT=${TUNLB_ROOT:-$REPO}   # where bin/tunlb and dist/ are (set by the build step)
OUT=${BENCH_OUT:-/tmp/tunlb-bench-dataplane}
LOCK=${BENCH_LOCK:-/tmp/tunlb-lab-session.lock}
BIN=$OUT/bin
UDP_PORT=9000       # blast target: nothing listens there
RR_PORT=9100        # rr serve on every server (UDP and TCP echo)
LB=$LAB_NS_PREFIX$LAB_ENTRY_BALANCER
CL=$LAB_NS_PREFIX$LAB_CLIENT
VIP=$LAB_VIP4
SRV1=${LAB_BACK4[srv1]}
LAB="$REPO/scripts/lab.sh"
# Placement (BENCH_PIN=1, with 2+ cores): the traffic generators (blast, iperf3 -c, rr) and the
# servers (iperf3 -s, rr serve) on the first core, the middlebox process (all its threads) on the
# last, so that they never share a core by chance (which halves either) and "the middlebox's
# core" can be read in /proc/stat. Softirq work goes where the kernel puts it (for nftables:
# mostly the generator's core); other processes on the machine are not pinned.
NCPU=$(nproc)
PIN=0; GEN_CPU=0; MB_CPU=0; PIN_GEN=()
if [[ ${BENCH_PIN:-1} == 1 ]] && ((NCPU >= 2)); then PIN=1; MB_CPU=$((NCPU - 1)); PIN_GEN=(taskset -c "$GEN_CPU"); fi

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
want() { [[ " $ONLY " == *" $1 "* ]]; }

# ============================ session: under the lab lock =====================================
# Everything that touches the lab. Invoked as `run.sh __session` by flock (below).
PIDS=()          # processes this script started (rr servers, haproxy, C forwarders)
# shellcheck disable=SC2317  # invoked by the EXIT trap
session_cleanup() {
  local rc=$? p
  trap - EXIT INT TERM HUP
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  bash "$LAB" down >/dev/null 2>&1 || log "lab.sh down failed (run: bash scripts/lab.sh down)"
  exit "$rc"
}

# start_bg NAME NS cmd... : start a process in a lab namespace, record its PID (ip netns exec
# exec()s the command, so $! is the command itself).
start_bg() {
  local name=$1 ns=$2; shift 2
  ip netns exec "$ns" "$@" </dev/null >"$OUT/$name.log" 2>&1 &
  PIDS+=("$!")
  LAST_PID=$!
}
stop_pid() { # stop_pid PID: TERM, wait up to 3 s, KILL
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || return 0
  for ((i = 0; i < 30; i++)); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}

kv() { echo "$2 $3" >>"$OUT/$1.kv"; }    # kv MB KEY VALUE

# CPU accounting over a test: process ticks of PID (if any) and the host's /proc/stat.
proc_ticks() { # proc_ticks "PID..." : utime+stime summed over the processes (a gone one counts 0)
  local p t=0 x
  for p in ${1:-}; do
    x=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) && t=$((t + ${x:-0}))
  done
  echo "$t"
}
# host_ticks: busy and softirq ticks of all cores, then busy ticks of GEN_CPU and of MB_CPU.
host_ticks() {
  awk -v g="cpu$GEN_CPU" -v m="cpu$MB_CPU" '$1 ~ /^cpu/ { b[$1] = $2 + $3 + $4 + $7 + $8 + $9; if ($1 == "cpu") s = $8 }
    END { print b["cpu"], s, b[g] + 0, b[m] + 0 }' /proc/stat
}
# The machine is shared (others build and test on it): "background" is the CPU of every
# user-space process that is not in a lab namespace (not a kernel thread), per PID between two
# snapshots (a process that exits in between is not counted).
bg_snap() { # bg_snap FILE: "pid ticks" of the background processes
  local f args=() first=1
  for f in /run/netns/"$LAB_NS_PREFIX"*; do
    [[ -e $f ]] || continue
    ((first)) || args+=(-o); first=0
    args+=(-lname "net:\\[$(stat -L -c %i "$f")\\]")
  done
  ((${#args[@]})) || args=(-lname none)
  find /proc/[0-9]*/ns/net -maxdepth 0 ! \( "${args[@]}" \) 2>/dev/null | sed 's|/ns/net$|/stat|' | xargs cat 2>/dev/null \
    | awk '{ pid = $1; sub(/^.*\) /, ""); if ($2 != 2 && pid != 2) print pid, $12 + $13 }' >"$1" || true
}
bg_ticks() { awk 'NR == FNR { a[$1] = $2; next } { t += $2 - ($1 in a ? a[$1] : 0) } END { print t + 0 }' "$1" "$2"; }
# wait_quiet: until the background uses < BENCH_QUIET % of a core over 1 s. The lab is shared,
# so waiting is budgeted: BENCH_QUIET_BUDGET=40 s in all for one session, then it measures anyway.
QUIET_LEFT=${BENCH_QUIET_BUDGET:-40}
RETRIES_LEFT=${BENCH_RETRIES:-3}
wait_quiet() {
  local i lim=${BENCH_QUIET:-20} hz b; hz=$(getconf CLK_TCK)
  for ((i = 0; i < QUIET_LEFT; i++)); do
    bg_snap "$OUT/.bg0"; sleep 1; bg_snap "$OUT/.bg1"; b=$(bg_ticks "$OUT/.bg0" "$OUT/.bg1")
    if ((100 * b / hz < lim)); then
      ((i == 0)) || log "quiet after $i s"
      QUIET_LEFT=$((QUIET_LEFT - i)); return 0
    fi
    ((i > 0)) || log "background processes use $((100 * b / hz))% of a core; waiting (budget left ${QUIET_LEFT} s) for < $lim%"
  done
  QUIET_LEFT=$((QUIET_LEFT - i))
  log "still busy (wait budget used up); measuring anyway (see the background rows)"
}
# With several middlebox processes (MB_PID "p1 p2 ..."; MB_NAMES "lb1 lb2 ..."), each one's CPU too.
declare -A CPU_EACH0=()
cpu_begin() {
  local p
  CPU_T0=$EPOCHREALTIME; CPU_P0=$(proc_ticks "${MB_PID:-}"); read -r CPU_B0 CPU_S0 CPU_G0 CPU_M0 < <(host_ticks); bg_snap "$OUT/.cpu0"
  CPU_EACH0=(); for p in ${MB_NAMES:+$MB_PID}; do CPU_EACH0[$p]=$(proc_ticks "$p"); done
}
cpu_end() { # cpu_end MB PREFIX
  local t1 p1 b1 s1 g1 m1 g hz; t1=$EPOCHREALTIME; p1=$(proc_ticks "${MB_PID:-}"); read -r b1 s1 g1 m1 < <(host_ticks); hz=$(getconf CLK_TCK)
  bg_snap "$OUT/.cpu1"; g=$(bg_ticks "$OUT/.cpu0" "$OUT/.cpu1")
  awk -v t0="$CPU_T0" -v t1="$t1" -v p="$((p1 - CPU_P0))" -v b="$((b1 - CPU_B0))" -v s="$((s1 - CPU_S0))" -v g="$g" -v hz="$hz" \
    -v gc="$((g1 - CPU_G0))" -v mc="$((m1 - CPU_M0))" -v pin="$PIN" \
    -v havep="${MB_PID:+1}" -v f="$OUT/$1.kv" -v k="$2" 'BEGIN {
      d = (t1 - t0) * hz
      if (havep) printf "%s_cpu_mb %.1f\n", k, 100 * p / d >> f
      if (pin) printf "%s_cpu_gencore %.1f\n%s_cpu_mbcore %.1f\n", k, 100 * gc / d, k, 100 * mc / d >> f
      printf "%s_cpu_host %.1f\n%s_cpu_softirq %.1f\n%s_cpu_bg %.1f\n", k, 100 * b / d, k, 100 * s / d, k, 100 * g / d >> f }'
  LAST_BG=$(awk -v t0="$CPU_T0" -v t1="$t1" -v g="$g" -v hz="$hz" 'BEGIN { printf "%.0f", 100 * g / ((t1 - t0) * hz) }')
  if [[ -n ${MB_NAMES:-} ]]; then
    local i=0 p names; read -r -a names <<<"$MB_NAMES"
    for p in $MB_PID; do
      awk -v t0="$CPU_T0" -v t1="$t1" -v d="$(($(proc_ticks "$p") - ${CPU_EACH0[$p]:-0}))" -v hz="$hz" -v k="$2" -v n="${names[$i]}" \
        'BEGIN { printf "%s_cpu_mb_%s %.1f\n", k, n, 100 * d / ((t1 - t0) * hz) }' >>"$OUT/$1.kv"
      i=$((i + 1))
    done
  fi
}

srv_rx() { local s=0 n; for n in "${LAB_SERVERS[@]}"; do s=$((s + $(ip netns exec "$LAB_NS_PREFIX$n" cat "/sys/class/net/$LAB_IF_SRV_BACK/statistics/rx_packets"))); done; echo "$s"; }
tun_drops() { ip netns exec "$LB" cat "/sys/class/net/$LAB_TUN_DEV/statistics/tx_dropped" 2>/dev/null || echo 0; }

# The tests, for middlebox MB. Each test is run again once (after wait_quiet) when background
# processes took more than BENCH_QUIET % of a core during it; the report flags what stays noisy.
noisy() { # noisy TRY: true when the last test should be repeated (at most BENCH_RETRIES=3 per session)
  local bg=${LAST_BG%.*}
  ((bg > ${BENCH_QUIET:-20} && $1 < 2 && RETRIES_LEFT > 0)) || return 1
  RETRIES_LEFT=$((RETRIES_LEFT - 1))
  log "background processes took $LAST_BG% of a core during that test; repeating it"
  wait_quiet
}
rr_once() { # rr_once MB udp|tcp
  cpu_begin
  ip netns exec "$CL" "${PIN_GEN[@]}" timeout 30 "$BIN/rr" "$2" "$VIP" "$RR_PORT" "$RR_N" >"$OUT/$1-rr-$2.txt" 2>&1 \
    || log "$1: rr $2 failed: $(tail -1 "$OUT/$1-rr-$2.txt")"
  cpu_end "$1" "rr_$2"
}
udp_once() { # udp_once MB
  local mb=$1 a b d0 out
  local perf_pid=""
  a=$(srv_rx); d0=$(tun_drops); cpu_begin
  if [[ ${BENCH_PERF:-0} == 1 && -n ${MB_PID:-} ]]; then
    timeout $((SECS + 10)) perf record -q -e cpu-clock -F 999 -g -p "$MB_PID" -o "$OUT/$mb-udp.perf" -- sleep $((SECS - 1)) \
      >/dev/null 2>&1 &
    perf_pid=$!
  fi
  out=$(ip netns exec "$CL" "${PIN_GEN[@]}" timeout $((SECS + 10)) "$BIN/blast" "$VIP" "$UDP_PORT" "$SECS" "$FLOWS") || log "$mb: blast failed"
  cpu_end "$mb" udp
  if [[ -n $perf_pid ]]; then
    wait "$perf_pid" || true
    { perf report -i "$OUT/$mb-udp.perf" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -8
      perf report -i "$OUT/$mb-udp.perf" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep '%' | head -25
    } >"$OUT/$mb-udp.perf.txt" || true
  fi
  sleep 0.3; b=$(srv_rx)
  kv "$mb" udp_offered_pps "$(awk '{ print $4 }' <<<"$out")"
  kv "$mb" udp_delivered_pps $(((b - a) / SECS))
  kv "$mb" udp_tun_dropped $(($(tun_drops) - d0))
}
tcp_once() { # tcp_once MB TEST STREAMS [iperf3 args...]   (TEST: tcp1, tcp4r, ...; see TCP_ARGS)
  local mb=$1 t=$2 p=$3 d0; shift 3
  snmp_snap "$OUT/.snmp0"; d0=$(tun_drops)
  cpu_begin
  ip netns exec "$CL" "${PIN_GEN[@]}" timeout $((SECS + 15)) iperf3 -c "$VIP" -p "$LAB_IPERF_PORT" -t "$SECS" -P "$p" -J "$@" \
    >"$OUT/$mb-$t.json" 2>"$OUT/$mb-$t.err" || log "$mb: iperf3 -P $p $* failed (see $OUT/$mb-$t.json)"
  cpu_end "$mb" "$t"
  snmp_snap "$OUT/.snmp1"; snmp_delta "$mb" "$t"
  kv "$mb" "${t}_tun_dropped" $(($(tun_drops) - d0))   # packets the kernel dropped at lb1's TUN queue
  # The balancers' flow table right after the test (3-balancer DSR: who served the data flow).
  if [[ $mb == tunlb-dsr3 ]]; then
    ip netns exec "$LB" curl -s -m 2 "http://127.0.0.1:9180/api/v1/flows?limit=100000" >"$OUT/$mb-$t.flows.json" 2>/dev/null || true
  fi
  sleep 0.5
}
# The iperf3 tests: name -> "STREAMS [iperf3 args]". r = reversed (-R: the server sends, the
# client receives; under DSR the data then bypasses the balancer and only ACKs cross it).
declare -A TCP_ARGS=([tcp1]="1" [tcp4]="4" [tcp1r]="1 -R" [tcp4r]="4 -R")
# Kernel counters around each TCP test (/proc/net/snmp and netstat are per namespace): in the
# balancer namespaces (SNMP_NS), IP fragmentation and UDP receive-buffer drops (the encapsulated
# hop to a peer); in the client and srv1 (the TCP ends), why segments were retransmitted (loss
# detection, timeouts, spurious retransmits reported by D-SACK, reordering, receive-side drops).
SNMP_NS=()
SNMP_TCP_NS=("$LAB_CLIENT" srv1)
snmp_snap() { # snmp_snap FILE: "ns counter value" for SNMP_NS and SNMP_TCP_NS
  local n
  : >"$1"
  for n in "${SNMP_TCP_NS[@]}"; do
    ip netns exec "$LAB_NS_PREFIX$n" cat /proc/net/netstat 2>/dev/null | awk -v ns="$n" '
      $1 == "TcpExt:" && !h { for (i = 2; i <= NF; i++) k[i] = $i; h = 1; next }
      $1 == "TcpExt:" { for (i = 2; i <= NF; i++) if (k[i] ~ /^(TCPLostRetransmit|TCPTimeouts|TCPSpuriousRTOs|TCPDSACKRecv|TCPDSACKOfoRecv|TCPSACKReorder|TCPTSReorder|TCPRcvQDrop|TCPOFODrop|TCPBacklogDrop|TCPZeroWindowDrop|PruneCalled|TCPFastRetrans|TCPSlowStartRetrans|TCPLossProbes|TCPLossProbeRecovery|TCPDSACKUndo|TCPSpuriousRtxHostQueues)$/) print ns, k[i], $i }' >>"$1" || true
  done
  for n in "${SNMP_NS[@]}"; do
    ip netns exec "$LAB_NS_PREFIX$n" cat /proc/net/snmp 2>/dev/null | awk -v ns="$n" '
      $1 == "Ip:" && !ih { for (i = 2; i <= NF; i++) h[i] = $i; ih = 1; next }
      $1 == "Ip:" { for (i = 2; i <= NF; i++) if (h[i] ~ /^(FragCreates|FragFails|ReasmReqds|ReasmOKs|ReasmFails)$/) print ns, h[i], $i; next }
      $1 == "Udp:" && !uh { for (i = 2; i <= NF; i++) u[i] = $i; uh = 1; next }
      $1 == "Udp:" { for (i = 2; i <= NF; i++) if (u[i] ~ /^(InErrors|RcvbufErrors|SndbufErrors)$/) print ns, "Udp" u[i], $i }' >>"$1" || true
  done
}
snmp_delta() { # snmp_delta MB TEST: non-zero deltas as kv "TEST_snmp_NS_COUNTER N"
  awk -v t="$2" 'NR == FNR { a[$1 " " $2] = $3; next } { d = $3 - a[$1 " " $2]; if (d != 0) printf "%s_snmp_%s_%s %d\n", t, $1, $2, d }' \
    "$OUT/.snmp0" "$OUT/.snmp1" >>"$OUT/$1.kv" 2>/dev/null || true
}
# Tests, in the order they run: rr_udp rr_tcp (latency), udp (64-byte flood), then the TCP tests
# of TCP_ARGS (tcp1 tcp4 tcp1r tcp4r, ...).
TESTS_ALL="rr_udp rr_tcp udp tcp1 tcp4 tcp1r tcp4r"
measure() { # measure MB "TESTS" ["PIDs of the middlebox processes"]
  local mb=$1 tests=$2 t0=$SECONDS try p t a
  MB_PID=${3:-}
  : >"$OUT/$mb.kv"
  if [[ -n $MB_PID ]]; then
    kv "$mb" pid "${MB_PID// /,}"
    if ((PIN)); then for p in $MB_PID; do taskset -a -p -c "$MB_CPU" "$p" >/dev/null || log "$mb: taskset $p failed"; done; fi
  fi
  # Warm-up, not measured (the same for all): JIT, ARP, caches.
  if [[ $mb != haproxy ]]; then
    ip netns exec "$CL" "${PIN_GEN[@]}" timeout 10 "$BIN/blast" "$VIP" "$UDP_PORT" 1 "$FLOWS" >/dev/null 2>&1 || true
    ip netns exec "$CL" "${PIN_GEN[@]}" timeout 10 "$BIN/rr" udp "$VIP" "$RR_PORT" 500 0 >/dev/null 2>&1 || true
  fi
  ip netns exec "$CL" "${PIN_GEN[@]}" timeout 10 "$BIN/rr" tcp "$VIP" "$RR_PORT" 500 0 >/dev/null 2>&1 || true
  wait_quiet
  for t in $tests; do
    for try in 1 2; do
      case $t in
        rr_udp | rr_tcp) rr_once "$mb" "${t#rr_}" ;;
        udp) udp_once "$mb" ;;
        *) [[ -n ${TCP_ARGS[$t]:-} ]] || die "unknown test $t"
           read -r -a a <<<"${TCP_ARGS[$t]}"; tcp_once "$mb" "$t" "${a[@]}" ;;
      esac
      noisy $try || break
    done
    [[ $t != udp ]] || sleep 0.5
  done
  log "$mb: done in $((SECONDS - t0)) s"
}
vip_check() { # vip_check MB: one TCP round trip through the VIP, or give up on this middlebox
  local i
  for ((i = 0; i < 30; i++)); do
    ip netns exec "$CL" timeout 3 "$BIN/rr" tcp "$VIP" "$RR_PORT" 1 0 64 1000 >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "$1: VIP $VIP:$RR_PORT does not answer; skipping"; return 1
}

# The C reference forwarders: run in tunlb-lb1 as tunlb would (device tunlb0, the lab's routes).
run_cref() { # run_cref MB BINARY
  local mb=$1 exe=$2 pid rc=0
  lab_kernel_nat_remove "$LB"
  start_bg "$mb" "$LB" "$BIN/$exe" "$LAB_TUN_DEV" "$VIP" "$SRV1"; pid=$LAST_PID
  lab_wait_tun "$LB" "$pid" 10 || rc=$?
  if ((rc)); then log "$mb: $exe did not create $LAB_TUN_DEV (log $OUT/$mb.log)"; stop_pid "$pid"; return 0; fi
  lab_tun_routes "$LB" "$LAB_IF_LB_BACK"
  if vip_check "$mb"; then measure "$mb" "rr_udp rr_tcp udp tcp1 tcp4" "$pid"; fi
  stop_pid "$pid"
  for ((rc = 0; rc < 30; rc++)); do ip -n "$LB" link show dev "$LAB_TUN_DEV" >/dev/null 2>&1 || break; sleep 0.1; done
}

session() {
  trap session_cleanup EXIT
  trap 'exit 130' INT TERM HUP
  local t0=$SECONDS n s pid
  log "lab lock held; clean start (lab.sh down)"
  SNMP_NS=("$LAB_ENTRY_BALANCER")
  bash "$LAB" down >/dev/null 2>&1 || true

  # --- kernel nftables DNAT (also brings the topology and the servers up) ---
  bash "$LAB" up --lb kernel >"$OUT/lab-up-kernel.log" 2>&1 || { cat "$OUT/lab-up-kernel.log" >&2; die "lab.sh up --lb kernel failed"; }
  for n in "${LAB_SERVERS[@]}"; do
    start_bg "rr-$n" "$LAB_NS_PREFIX$n" "${PIN_GEN[@]}" "$BIN/rr" serve "$RR_PORT"
    # the lab's iperf3 servers join the generators' core (the middlebox keeps its core to itself)
    if ((PIN)) && [[ -s $LAB_DIR/pids/iperf3-$n.pid ]]; then taskset -a -p -c "$GEN_CPU" "$(<"$LAB_DIR/pids/iperf3-$n.pid")" >/dev/null || true; fi
  done
  if want kernel; then
    # The lab's table, narrowed to srv1 (same hook, priority and rule shapes as lab_kernel_nat).
    ip netns exec "$LB" nft -f - <<NFT
table inet tunlb_lab
delete table inet tunlb_lab
table inet tunlb_lab {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $VIP meta l4proto { tcp, udp } dnat ip to $SRV1
    ip daddr $VIP icmp type echo-request dnat ip to $SRV1
  }
}
NFT
    if vip_check kernel; then measure kernel "$TESTS_ALL"; fi
  fi

  # --- HAProxy, TCP mode, one thread, on the VIP address itself ---
  lab_kernel_nat_remove "$LB"
  if want haproxy; then
    ip -n "$LB" addr add "$VIP/32" dev lo
    start_bg haproxy "$LB" haproxy -db -f "$OUT/haproxy.cfg"; pid=$LAST_PID
    if vip_check haproxy; then measure haproxy "rr_tcp tcp1 tcp4" "$pid"; fi
    stop_pid "$pid"
    ip -n "$LB" addr del "$VIP/32" dev lo
  fi

  # --- the C reference forwarders ---
  local c
  for c in cplain:tunfwd cgso:tunfwd_gso; do
    want "${c%%:*}" || continue
    if [[ -x $BIN/${c#*:} ]]; then run_cref "${c%%:*}" "${c#*:}"; else log "${c%%:*}: no $REF/${c#*:}.c; skipped"; fi
  done

  # --- tunlb, one balancer ---
  if want tunlb; then
    local cmd="$NODE_BIN $TUNLB_ROOT/bin/tunlb run --config $LAB_DIR/lab.yaml --id {id}"
    if [[ ${BENCH_PROFILE:-0} == 1 ]]; then cmd="$NODE_BIN --cpu-prof --cpu-prof-dir=$OUT/prof $TUNLB_ROOT/bin/tunlb run --config $LAB_DIR/lab.yaml --id {id}"; fi
    if TUNLB_CMD=$cmd TUNLB_LAB_CONFIG=$OUT/lab.yaml bash "$LAB" up --lb tunlb --balancers 1 >"$OUT/lab-up-tunlb.log" 2>&1; then
      pid=$(<"$LAB_DIR/pids/$LAB_ENTRY_BALANCER.pid")
      if vip_check tunlb; then measure tunlb "$TESTS_ALL" "$pid"; fi
      ip netns exec "$LB" curl -s -m 2 "http://127.0.0.1:9180/api/v1/stats" >"$OUT/tunlb-stats.json" 2>/dev/null || true
      # SIGTERM, so that --cpu-prof writes its profile as the process exits (lab.sh down would too).
      if [[ ${BENCH_PROFILE:-0} == 1 ]]; then stop_pid "$pid"; fi
    else
      cat "$OUT/lab-up-tunlb.log" >&2; log "tunlb: lab.sh up --lb tunlb failed; skipped"
    fi
  fi

  # --- direct server return: the servers hold the VIP on lo and answer via the router ---
  if want tunlb-dsr || want kernel-dsr; then dsr_single; fi
  if want tunlb-dsr3; then dsr_three; fi
  log "lab session: $((SECONDS - t0)) s"
}

# DSR, one balancer (`lab.sh up --lb tunlb --balancers 1 --method dsr`): tunlb DSR, then the
# kernel's own forwarding on the same topology (kernel-dsr: tunlb stopped, a plain route of the
# VIP to srv1 on the back network, so lb1's kernel forwards each packet unchanged to srv1's MAC,
# as an IPVS director in DR mode would; this kernel has no IPVS, CONFIG_IP_VS is not set).
dsr_single() {
  local pid cmd="$NODE_BIN $TUNLB_ROOT/bin/tunlb run --config $LAB_DIR/lab.yaml --id {id}"
  if ! TUNLB_CMD=$cmd TUNLB_LAB_CONFIG=$OUT/lab-dsr.yaml bash "$LAB" up --lb tunlb --balancers 1 --method dsr >"$OUT/lab-up-dsr.log" 2>&1; then
    cat "$OUT/lab-up-dsr.log" >&2; log "tunlb-dsr: lab.sh up --method dsr failed; DSR skipped"; return 0
  fi
  pid=$(<"$LAB_DIR/pids/$LAB_ENTRY_BALANCER.pid")
  if want tunlb-dsr && vip_check tunlb-dsr; then
    measure tunlb-dsr "rr_udp rr_tcp tcp1 tcp4 tcp1r tcp4r" "$pid"
    ip netns exec "$LB" curl -s -m 2 "http://127.0.0.1:9180/api/v1/stats" >"$OUT/tunlb-dsr-stats.json" 2>/dev/null || true
  fi
  if want kernel-dsr; then
    stop_pid "$pid"     # the lab's lb1 (started by this session's lab.sh up); its tunlb0 goes with it
    rm -f "$LAB_DIR/pids/$LAB_ENTRY_BALANCER.pid"
    lab_tun_unroute "$LB"
    ip -n "$LB" route replace "$VIP/32" via "$SRV1" dev "$LAB_IF_LB_BACK"
    if vip_check kernel-dsr; then measure kernel-dsr "rr_udp rr_tcp tcp1 tcp4 tcp1r tcp4r"; fi
    ip -n "$LB" route del "$VIP/32" via "$SRV1" dev "$LAB_IF_LB_BACK" 2>/dev/null || true
  fi
}

# DSR, three balancers: one TCP stream whose data flow is served by the entry (lb1) and one
# served by a peer (lb3: lb1 encapsulates every packet to lb3 on lbnet, lb3 sends it to srv1),
# both directions for the peer. iperf3 --cport pins the data connection's source port to one
# whose primary is the wanted balancer (bench/dataplane/dsr-ports.ts, the documented hash). The
# three balancer processes are all pinned to the middlebox core (the middlebox is one core).
dsr_port() { # dsr_port PRIMARY FROM: a client port whose flow to VIP:5201 has that primary balancer
  (cd "$REPO" && "$NODE_BIN" --import tsx "$HERE/dsr-ports.ts" "$TUNLB_ROOT" "$LAB_DIR/lab.yaml" "$LAB_CLIENT_FRONT4" "$VIP" "$LAB_IPERF_PORT" "$1" "$2")
}
dsr_three() {
  local cmd="$NODE_BIN $TUNLB_ROOT/bin/tunlb run --config $LAB_DIR/lab.yaml --id {id}" b pids="" qe qp qr i
  # BENCH_PROFILE=1: a profile per balancer (the file name holds its pid: lb1 serves tcp1e and
  # encapsulates tcp1p, the peer serves tcp1p and tcp1pr; see tunlb-dsr3-lbN.pid).
  if [[ ${BENCH_PROFILE:-0} == 1 ]]; then cmd="$NODE_BIN --cpu-prof --cpu-prof-dir=$OUT/prof $TUNLB_ROOT/bin/tunlb run --config $LAB_DIR/lab.yaml --id {id}"; fi
  if ! TUNLB_CMD=$cmd TUNLB_LAB_CONFIG=$OUT/lab-dsr.yaml bash "$LAB" up --lb tunlb --balancers 3 --method dsr >"$OUT/lab-up-dsr3.log" 2>&1; then
    cat "$OUT/lab-up-dsr3.log" >&2; log "tunlb-dsr3: lab.sh up --balancers 3 --method dsr failed; skipped"; return 0
  fi
  for b in "${LAB_BALANCERS[@]}"; do
    pids+="${pids:+ }$(<"$LAB_DIR/pids/$b.pid")"
    cp "$LAB_DIR/pids/$b.pid" "$OUT/tunlb-dsr3-$b.pid"
  done
  # Every balancer must see the others up before the hash's ranking (all live) applies.
  for ((i = 0; i < 50; i++)); do
    [[ $(ip netns exec "$LB" curl -s -m 1 "http://127.0.0.1:9180/api/v1/status" 2>/dev/null | grep -o '"serving"' | wc -l) -ge 3 ]] && break
    sleep 0.2
  done
  if ! { qe=$(dsr_port 0 47001) && qp=$(dsr_port 2 48001) && qr=$(dsr_port 2 49001); }; then
    log "tunlb-dsr3: dsr-ports.ts failed; skipped"; return 0
  fi
  TCP_ARGS[tcp1e]="1 --cport $qe"; TCP_ARGS[tcp1p]="1 --cport $qp"; TCP_ARGS[tcp1pr]="1 -R --cport $qr"
  echo "tcp1e $qe"$'\n'"tcp1p $qp"$'\n'"tcp1pr $qr" >"$OUT/tunlb-dsr3.ports"
  SNMP_NS=("${LAB_BALANCERS[@]}")
  MB_NAMES="${LAB_BALANCERS[*]}"
  if vip_check tunlb-dsr3; then measure tunlb-dsr3 "tcp1e tcp1p tcp1pr" "$pids"; fi
  MB_NAMES=""
  SNMP_NS=("$LAB_ENTRY_BALANCER")
  for b in "${LAB_BALANCERS[@]}"; do
    ip netns exec "$LAB_NS_PREFIX$b" curl -s -m 2 "http://127.0.0.1:9180/api/v1/stats" >"$OUT/tunlb-dsr3-stats-$b.json" 2>/dev/null || true
  done
  # SIGTERM, so that --cpu-prof writes the profiles as the balancers exit.
  if [[ ${BENCH_PROFILE:-0} == 1 ]]; then for b in $pids; do stop_pid "$b"; done; fi
}

# ============================ preparation (no lock), then the session, then the report ========
main() {
[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"
[[ -n $NODE_BIN ]] || die "node is required"
lab_ensure_tools gcc:gcc iperf3:iperf3 nft:nftables flock:util-linux ip:iproute2 curl:curl
want haproxy && lab_ensure_tools haproxy:haproxy
rm -rf "$OUT"; mkdir -p "$BIN" "$OUT/prof"
T0=$SECONDS

# What "tunlb" is: by default the last commit, built apart from the work tree (others may be
# editing it), reusing the work tree's node_modules and native addon (build/Release). If that
# commit does not build (a commit can need a file another engineer has not committed yet), the
# newest of the previous BENCH_BUILD_BACK commits that touched src/ and builds.
BUILDS=${BENCH_BUILDS:-/tmp/tunlb-bench-builds}   # commit snapshots, built once: <sha>/ (+ <sha>.failed)
build_snapshot() { # build_snapshot REV|tree DIR LOG
  local rev=$1 dir=$2 log=$3
  rm -rf "$dir"; mkdir -p "$dir"
  if [[ $rev == tree ]]; then
    (cd "$REPO" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -x -C "$dir"
  else
    git -C "$REPO" archive --format=tar "$rev" | tar -x -C "$dir"
  fi
  rm -rf "$dir/node_modules" "$dir/build" "$dir/dist"
  ln -s "$REPO/node_modules" "$dir/node_modules"
  ln -s "$REPO/build" "$dir/build"
  (cd "$dir" && bash scripts/build-proto.sh && node_modules/.bin/tsc -p tsconfig.build.json) >"$log" 2>&1
}
case $BUILD in
  head)
    mkdir -p "$BUILDS"
    head_rev=$(git -C "$REPO" rev-parse HEAD)
    TUNLB_ROOT=""
    for rev in $( (echo "$head_rev"; git -C "$REPO" log --format=%H -n "${BENCH_BUILD_BACK:-8}" HEAD -- src) | awk '!seen[$0]++'); do
      short=$(git -C "$REPO" rev-parse --short "$rev")
      if [[ -f $BUILDS/$rev/dist/src/cli/main.js ]]; then TUNLB_ROOT=$BUILDS/$rev; log "using the build of $short"; break; fi
      if [[ -f $BUILDS/$rev.failed ]]; then log "$short does not build (known)"; continue; fi
      log "building $short in $BUILDS/$rev"
      if build_snapshot "$rev" "$BUILDS/$rev.tmp" "$OUT/build.log"; then
        mv "$BUILDS/$rev.tmp" "$BUILDS/$rev"; TUNLB_ROOT=$BUILDS/$rev; break
      fi
      rm -rf "$BUILDS/$rev.tmp"; cp "$OUT/build.log" "$BUILDS/$rev.failed"
      log "$short does not build: $(grep -m1 'error' "$OUT/build.log" | cut -c1-150)"
    done
    [[ -n $TUNLB_ROOT ]] || die "none of the last commits builds (log $OUT/build.log)"
    # keep the 4 newest builds
    find "$BUILDS" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +5 | cut -d' ' -f2- | xargs -r rm -rf
    echo "commit $(git -C "$REPO" log -1 --format='%h %s' "$rev" | cut -c1-100)$([[ $rev == "$head_rev" ]] || echo " (HEAD $(git -C "$REPO" rev-parse --short HEAD) does not build)")" >"$OUT/measured"
    ;;
  tree)
    log "building the work tree (tracked and untracked files) in $OUT/tree"
    build_snapshot tree "$OUT/tree" "$OUT/build.log" || { tail -20 "$OUT/build.log" >&2; die "the work tree does not build (log $OUT/build.log)"; }
    TUNLB_ROOT=$OUT/tree
    echo "work tree on $(git -C "$REPO" rev-parse --short HEAD) ($(git -C "$REPO" status --short -- src | wc -l) changed files under src/)" >"$OUT/measured"
    ;;
  none) echo "dist/ of $TUNLB_ROOT as it was (commit $(git -C "$TUNLB_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), built $(date -r "$TUNLB_ROOT/dist/src/cli/main.js" -Is 2>/dev/null || echo never))" >"$OUT/measured" ;;
  *) die "BENCH_BUILD must be head, tree or none" ;;
esac
[[ -f $TUNLB_ROOT/dist/src/cli/main.js ]] || die "$TUNLB_ROOT/dist missing: build first"
[[ -f $REPO/build/Release/tunlb_native.node ]] || die "native addon missing: npm ci (or npx node-gyp rebuild)"

gcc -O2 -Wall -o "$BIN/rr" "$HERE/rr.c"
[[ -f $REF/blast.c ]] || die "$REF/blast.c missing (the UDP generator; set BENCH_REF_DIR)"
gcc -O2 -o "$BIN/blast" "$REF/blast.c"
for c in tunfwd tunfwd_gso; do [[ -f $REF/$c.c ]] && gcc -O2 -o "$BIN/$c" "$REF/$c.c"; done

(cd "$REPO" && "$NODE_BIN" --import tsx "$HERE/lab-config.ts" "$TUNLB_ROOT/config/lab.yaml" "$OUT/lab.yaml")
if want tunlb-dsr || want kernel-dsr || want tunlb-dsr3; then
  [[ -f $TUNLB_ROOT/config/lab-dsr.yaml ]] || die "$TUNLB_ROOT/config/lab-dsr.yaml missing (the measured build has no DSR)"
  (cd "$REPO" && "$NODE_BIN" --import tsx "$HERE/lab-config.ts" "$TUNLB_ROOT/config/lab-dsr.yaml" "$OUT/lab-dsr.yaml")
fi
servers=""
for n in "${LAB_SERVERS[@]}"; do servers+="  server $n ${LAB_BACK4[$n]}"$'\n'; done
cat >"$OUT/haproxy.cfg" <<EOF
# bench/dataplane/run.sh: HAProxy as an L4 proxy on the VIP, one thread. No port on the servers:
# each connection goes to the port the client asked for. balance first: srv1 takes every
# connection (no maxconn), like the other middleboxes here.
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend vip
  bind $VIP:$LAB_IPERF_PORT
  bind $VIP:$RR_PORT
  default_backend servers
backend servers
  balance first
$servers
EOF
# Checked only when measured: a run without the haproxy column needs no HAProxy installed.
if want haproxy; then haproxy -c -q -f "$OUT/haproxy.cfg" || die "haproxy rejects $OUT/haproxy.cfg"; fi
log "prepared in $((SECONDS - T0)) s; waiting for the lab lock $LOCK"

if lab_lock_held_by_ancestor "$LOCK"; then
  # `flock /tmp/tunlb-lab-session.lock npm run bench:dataplane`: taking it again would deadlock
  # (flock locks belong to open files, not to process trees).
  log "the lab lock $LOCK is held by a caller (an ancestor process); not taking it again"
  TUNLB_ROOT=$TUNLB_ROOT bash "$0" __session || die "lab session failed (raw results in $OUT)"
else
  TUNLB_ROOT=$TUNLB_ROOT flock -w "${BENCH_LOCK_WAIT:-900}" "$LOCK" bash "$0" __session || die "lab session failed (raw results in $OUT)"
fi

(cd "$REPO" && "$NODE_BIN" --import tsx "$HERE/report.ts" "$OUT")
log "total $((SECONDS - T0)) s; raw results in $OUT"
}

# Whole file parsed before anything runs (safe against edits while a run is going on).
if [[ ${1:-} == __session ]]; then session; exit 0; fi
main "$@"
exit 0
