#!/usr/bin/env bash
# Cluster benchmark (`npm run bench:cluster`, root; not part of the tests): the three-balancer
# namespace lab (scripts/lab.sh up: the ECMP entry, every balancer receives; replication on),
# measured end to end. The `entry` test compares it with the single entry (lb1 only).
#
# Tests, in this order (the failover tests run first, while the flow tables are small):
#   failover  FO_CONNS long-lived TCP echo connections through the VIP, one message every
#             FO_INTERVAL ms; FO_KILL_AFTER s into the run `lab.sh kill lb2` (SIGKILL); then
#             `lab.sh start lb2` and the time until every balancer sees it up and serving (bulk
#             sync done). Done twice:
#               traffic   scripts/traffic.ts longlived (FO_SECS s): its per-connection longest
#                         stall (p50/p90/p99/max), survived, resets. Its first gap counts from
#                         each connection's set-up (waiting for all FO_CONNS to connect), so its
#                         figures are a ceiling that includes start-up;
#               stalls    bench/cluster/stalls.ts, the same traffic with stalls measured only
#                         after a STALL_WARMUP s warm-up: longest stall per connection before
#                         the kill (the load alone) and from the kill on (the failover).
#             Both split by the connection's primary (lb1's /api/v1/flows before the kill), and
#             when lb1 declared lb2 down (its membership events).
#   newflows  bench/cluster/newflows.c (compiled to $OUT/bin) in tunlb-client: one UDP datagram
#             per new 5-tuple to VIP:NF_PORT for NF_SECS s (source ports 1024..65535 from NF_NSRC
#             secondary addresses added to the client's eth0 inside its namespace), unpaced
#             (NF_RATE=0) so the entry balancer lb1 is the limit. Admin stats of lb1..lb3 before
#             and after (flows.created, rx packets, drops, replication counters), the kernel's
#             drops into lb1's TUN queue, datagrams delivered at the servers (eth0 rx) and echoes
#             back at the client (an nft counter in tunlb-client that also drops them, so the
#             client sends no port unreachables), the CPU budget (each balancer, the servers, the
#             generator, processes outside the lab, softirq, idle), lb1's main-thread run and
#             run-queue wait time (/proc/PID/schedstat) and a `top` frame taken mid-run.
#             These one-datagram flows are never confirmed (docs/flow-records.md), so not
#             replicated: the peers' replication counters stay flat (the sync group below sends
#             each of its tuples twice, which confirms them).
#   sweep     the same generator paced at each rate of NF_SWEEP for NF_SWEEP_SECS s: lb1's
#             created flows/s against the offered rate (an unpaced generator spends CPU, and the
#             kernel's softirq forwarding, on datagrams lb1's full TUN queue then drops).
#   sync      (issue #15) bulk sync at scale, in a lab of its own (flow tables of SYNC_CAPACITY,
#             udp_s SYNC_UDP_S so nothing expires meanwhile): for each N of SYNC_FLOWS, lb1 is
#             filled to N UDP flows by newflows.c paced at SYNC_RATE (more passes of new tuples
#             while lb1 holds < 99.5 % of N), each pass followed by a second one over the same
#             tuples after their echoes (confirm_pass: that confirms the flows, and only
#             confirmed flows are replicated), every balancer holds them (replication), lb2 is
#             killed (SIGKILL) and started again while newflows adds SYNC_LIVE_RATE new flows/s
#             for SYNC_LIVE_SECS s (confirmed by a second pass once lb2 serves): the time from `lab.sh start lb2` until lb1 sees it up and
#             serving, lb2's own report of its sync (records, ms, records/s, sessions, peer),
#             its flow count against lb1's after the live traffic, the responder's snapshot
#             time and event-loop stalls, and peer_down events other than lb2's (false failovers).
#             N accumulates (100000 then 1000000: 900,000 more flows for the second).
# Before the failover and the newflows tests: up to QUIET_WAIT s for processes outside the lab
# to quiet down (the machine is shared); what they used during each run is reported.
# Then bench/cluster/report.ts prints one markdown table with the command behind each row.
# Raw results stay in $BENCH_OUT (default /tmp/tunlb-bench-cluster).
#
# The lab is shared: everything from a clean `lab.sh down` to the final `lab.sh down` runs under
# `flock /tmp/tunlb-lab-session.lock` (one hold, 1.5 to 2.5 minutes). All traffic stays inside the
# lab namespaces (nothing is added to the root namespace); every generator is bounded by
# timeout(1); processes this script starts are stopped by PID; the lab is removed on exit.
# Balancers are what `npm run build` left in dist/ (the commit and build time are printed).
#
# Environment:
#   NF_SECS=5 NF_RATE=0 (datagrams/s, 0 = as fast as possible) NF_NSRC=32 NF_PORT=5353
#   NF_SWEEP="15000 20000 30000 40000" NF_SWEEP_SECS=3   paced runs after it ("" = none)
#   FO_CONNS=300 FO_INTERVAL=20 (ms) FO_SECS=14 FO_KILL_AFTER=5 (s into the run) STALL_WARMUP=2 (s)
#   QUIET_PCT=30 QUIET_WAIT=20   wait (at most QUIET_WAIT s) until processes outside the lab use
#                                less than QUIET_PCT % of a core, before each test group
#   BENCH_ONLY="failover newflows entry"   tests to run (any of failover, newflows, entry, sync;
#                                    sync is not in the default: it runs a lab of its own for minutes)
#   ENTRY_SECS=8 ENTRY_STREAMS=8     entry: the ECMP entry against the single entry (iperf3 TCP
#                                    and UDP 64 B through the VIP, per-balancer CPU; entry.md)
#   SYNC_FLOWS="100000 1000000" SYNC_RATE=12000 SYNC_LIVE_RATE=2000 SYNC_LIVE_SECS=8
#   SYNC_CAPACITY=2097152 SYNC_UDP_S=3600 SYNC_NSRC=20   the sync test (SYNC_NSRC client addresses
#                                    of 64,512 ports each: enough tuples for the largest N)
#   BENCH_PROFILE=1   balancers under `node --cpu-prof` (TUNLB_CMD of lab.sh); only the newflows
#                     test runs; prints the hottest functions of lb1 (and lb2, lb3)
#   BENCH_OUT=/tmp/tunlb-bench-cluster BENCH_LOCK=/tmp/tunlb-lab-session.lock BENCH_LOCK_WAIT=900
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

NF_SECS=${NF_SECS:-5}
NF_RATE=${NF_RATE:-0}
NF_NSRC=${NF_NSRC:-32}
NF_SWEEP=${NF_SWEEP-15000 20000 30000 40000}
NF_SWEEP_SECS=${NF_SWEEP_SECS:-3}
NF_PORT=${NF_PORT:-$LAB_UDP_ECHO_PORT}
NF_SRC_BASE=${LAB_CLIENT_FRONT4%.*}.100          # 10.99.1.100 .. +NF_NSRC-1 (front /24)
FO_CONNS=${FO_CONNS:-300}
FO_INTERVAL=${FO_INTERVAL:-20}
FO_SECS=${FO_SECS:-14}
FO_KILL_AFTER=${FO_KILL_AFTER:-5}
STALL_WARMUP=${STALL_WARMUP:-2}
QUIET_PCT=${QUIET_PCT:-30}
QUIET_WAIT=${QUIET_WAIT:-20}
ENTRY_SECS=${ENTRY_SECS:-8}
ENTRY_STREAMS=${ENTRY_STREAMS:-8}
NCPU=$(nproc)
PROFILE=${BENCH_PROFILE:-0}
ONLY=${BENCH_ONLY:-failover newflows entry}
SYNC_FLOWS=${SYNC_FLOWS:-100000 1000000}
SYNC_RATE=${SYNC_RATE:-12000}
SYNC_LIVE_RATE=${SYNC_LIVE_RATE:-2000}
SYNC_LIVE_SECS=${SYNC_LIVE_SECS:-8}
SYNC_CAPACITY=${SYNC_CAPACITY:-2097152}
SYNC_UDP_S=${SYNC_UDP_S:-3600}
SYNC_NSRC=${SYNC_NSRC:-20}
[[ $PROFILE == 1 ]] && ONLY=newflows
OUT=${BENCH_OUT:-/tmp/tunlb-bench-cluster}
LOCK=${BENCH_LOCK:-/tmp/tunlb-lab-session.lock}
BIN=$OUT/bin
LAB="$REPO/scripts/lab.sh"
CL=$LAB_NS_PREFIX$LAB_CLIENT
VIP=$LAB_VIP4
VICTIM=lb2

log() { printf '[bench:cluster] %s\n' "$*" >&2; }
die() { printf '[bench:cluster] ERROR: %s\n' "$*" >&2; exit 1; }
ms() { local t=${EPOCHREALTIME/./}; echo "${t:0:13}"; }     # epoch ms
kv() { echo "$1 $2" >>"$OUT/run.kv"; }

# ============================ session: under the lab lock =====================================
PIDS=()
session_cleanup() {
  local rc=$? p
  trap - EXIT INT TERM HUP
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  bash "$LAB" down >/dev/null 2>&1 || log "lab.sh down failed (run: bash scripts/lab.sh down)"
  exit "$rc"
}

lbns() { echo "$LAB_NS_PREFIX$1"; }
lbpid() { cat "$LAB_DIR/pids/$1.pid" 2>/dev/null || true; }
# stats LB FILE: the balancer's admin snapshot (GET /api/v1/stats, what `tunlb stats --json` prints)
stats() { ip netns exec "$(lbns "$1")" curl -s -m 3 "http://$ADMIN/api/v1/stats" >"$2" 2>/dev/null || echo '{}' >"$2"; }
proc_ticks() { [[ -n ${1:-} && -r /proc/$1/stat ]] && awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" || echo 0; }
# Processes outside the lab (root network namespace, not kernel threads): "pid ticks" lines.
ROOT_NS_PAT=$(readlink /proc/self/ns/net); ROOT_NS_PAT=${ROOT_NS_PAT//[/\\[}; ROOT_NS_PAT=${ROOT_NS_PAT//]/\\]}
bg_snap() {
  find /proc/[0-9]*/ns/net -maxdepth 0 -lname "$ROOT_NS_PAT" 2>/dev/null | sed 's|/ns/net$|/stat|' | xargs cat 2>/dev/null \
    | awk '{ pid = $1; sub(/^.*\) /, ""); if ($2 != 2 && pid != 2) print pid, $12 + $13 }' || true
}
# cpu_snap FILE: "name value" lines: ticks of lb1..3, srv1..3 (whole processes; also user and
# system ticks apart), lbN main
# thread run/wait ns (schedstat), the host's /proc/stat fields, epoch ms; FILE.bg: bg_snap.
cpu_snap() {
  local n p
  {
    for n in "${LAB_BALANCERS[@]}" "${LAB_SERVERS[@]}"; do
      p=$(lbpid "$n"); echo "$n $(proc_ticks "$p")"
      if [[ -n $p && -r /proc/$p/schedstat ]]; then awk -v n="$n" '{ print n "_run_ns", $1; print n "_wait_ns", $2 }' "/proc/$p/schedstat"; fi
      if [[ -n $p && -r /proc/$p/stat ]]; then awk -v n="$n" '{ sub(/^.*\) /, ""); print n "_utime", $12; print n "_stime", $13 }' "/proc/$p/stat"; fi
    done
    awk '/^cpu / { print "host_user", $2 + $3; print "host_sys", $4; print "host_irq", $7; print "host_softirq", $8; print "host_idle", $5 + $6; print "host_steal", $9; print "host_total", $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
    echo "t_ms $(ms)"
  } >"$1"
  bg_snap >"$1.bg"
}
# bg_pct SNAP0 SNAP1: % of one core used by processes outside the lab between two cpu_snaps
bg_pct() {
  local hz; hz=$(getconf CLK_TCK)
  awk -v hz="$hz" -v t0="$(awk '$1 == "t_ms" { print $2 }' "$1")" -v t1="$(awk '$1 == "t_ms" { print $2 }' "$2")" \
    'NR == FNR { a[$1] = $2; next } { t += $2 - ($1 in a ? a[$1] : 0) } END { printf "%.0f", 100 * t / hz / ((t1 - t0) / 1000) }' "$1.bg" "$2.bg"
}
# wait_quiet NAME: up to QUIET_WAIT s until processes outside the lab use < QUIET_PCT % of a core
# (1 s samples; the last one, the lab idle, stays in $OUT/NAME.idle0/1)
wait_quiet() {
  local i b name=$1
  for ((i = 0; i < QUIET_WAIT; i++)); do
    cpu_snap "$OUT/$name.idle0"; sleep 1; cpu_snap "$OUT/$name.idle1"; b=$(bg_pct "$OUT/$name.idle0" "$OUT/$name.idle1")
    if ((b < QUIET_PCT)); then ((i == 0)) || log "quiet after $i s (outside the lab: $b % of a core)"; kv "${name}_quiet_wait_s" "$i"; return 0; fi
    ((i == 0)) && log "processes outside the lab use $b % of a core; waiting up to $QUIET_WAIT s for < $QUIET_PCT %"
  done
  kv "${name}_quiet_wait_s" "$QUIET_WAIT"
  log "still busy outside the lab ($b % of a core); measuring anyway (see the CPU row)"
}
srv_rx() { local s=0 n; for n in "${LAB_SERVERS[@]}"; do s=$((s + $(ip netns exec "$LAB_NS_PREFIX$n" cat "/sys/class/net/$LAB_IF_SRV_BACK/statistics/rx_packets"))); done; echo "$s"; }
tun_drops() { ip netns exec "$(lbns "$1")" cat "/sys/class/net/$LAB_TUN_DEV/statistics/tx_dropped" 2>/dev/null || echo 0; }
# udp_snmp LB: the namespace's UDP InDatagrams InErrors RcvbufErrors (/proc/net/snmp)
udp_snmp() { ip netns exec "$(lbns "$1")" awk '/^Udp:/ { if (h) { print $2, $4, $6; exit } h = 1 }' /proc/net/snmp; }
client_echoes() { ip netns exec "$CL" nft -j list counter ip tunlb_bench echoes 2>/dev/null | jq -r '[.nftables[] | select(.counter) | .counter.packets][0] // 0'; }

# wait_serving TIMEOUT_S: until every balancer says it is serving and sees its peers up and serving.
wait_serving() {
  local deadline=$((SECONDS + $1)) b ok
  while ((SECONDS < deadline)); do
    ok=1
    for b in "${LAB_BALANCERS[@]}"; do
      stats "$b" "$OUT/.s.json"
      jq -e '.membership.status == "serving" and ([.membership.peers[] | select(.state != "self") | (.state == "up" and .status == "serving")] | all)' \
        "$OUT/.s.json" >/dev/null 2>&1 || { ok=0; break; }
    done
    ((ok)) && return 0
    sleep 0.2
  done
  return 1
}

# kill_victim NAME: lab.sh kill lb2, time recorded
kill_victim() {
  kv "${1}_kill_ms" "$(ms)"
  bash "$LAB" kill "$VICTIM" >>"$OUT/lab.log" 2>&1 || log "lab.sh kill $VICTIM failed"
  kv "${1}_killed_ms" "$(ms)"   # lab.sh kill returned (the SIGKILL is its last step)
  log "$1: killed $VICTIM (SIGKILL)"
}
# restart_victim NAME: lab.sh start lb2, then until every balancer sees it serving
restart_victim() {
  local t0; t0=$(ms)
  bash "$LAB" start "$VICTIM" >>"$OUT/lab.log" 2>&1 || die "lab.sh start $VICTIM failed (see $OUT/lab.log)"
  kv "${1}_restart_vip_ms" $(($(ms) - t0))
  if wait_serving 60; then kv "${1}_restart_serving_ms" $(($(ms) - t0)); log "$1: $VICTIM serving again $(($(ms) - t0)) ms after lab.sh start"
  else kv "${1}_restart_serving_ms" -1; log "$1: $VICTIM not serving 60 s after lab.sh start"; fi
}
lb1_flows() { ip netns exec "$(lbns "$LAB_ENTRY_BALANCER")" curl -s -m 3 "http://$ADMIN/api/v1/flows?limit=100000" >"$1" 2>/dev/null || true; }

# failover NAME WAIT_PATTERN cmd...: run a long-lived client in tunlb-client; once its output
# matches WAIT_PATTERN (connected / measuring), lb1's flows are saved and lb2 is killed
# FO_KILL_AFTER s after the client started; then the client ends by itself, lb2 comes back.
failover() {
  local name=$1 pat=$2 pid i t0; shift 2
  echo "ip netns exec $CL $*" >"$OUT/$name.cmd"
  cpu_snap "$OUT/$name.cpu0"
  t0=$(ms)
  (cd "$REPO" && exec ip netns exec "$CL" timeout $((FO_SECS + 20)) "$@" </dev/null >"$OUT/$name.out" 2>"$OUT/$name.err") &
  pid=$!; PIDS+=("$pid")
  for ((i = 0; i < 150; i++)); do grep -q "$pat" "$OUT/$name.out" 2>/dev/null && break; sleep 0.1; done
  log "$name: $(grep -m1 'connected' "$OUT/$name.out" 2>/dev/null | sed 's/^ *//')"
  lb1_flows "$OUT/$name-flows.json"
  while (($(ms) < t0 + FO_KILL_AFTER * 1000)); do sleep 0.05; done
  kill_victim "$name"
  wait "$pid" || true
  cpu_snap "$OUT/$name.cpu1"
  tail -n 1 "$OUT/$name.out" >"$OUT/$name.json"
  jq -e .survived "$OUT/$name.json" >/dev/null 2>&1 || log "$name: no JSON summary (see $OUT/$name.out, .err)"
  stats "$LAB_ENTRY_BALANCER" "$OUT/$name-lb1-after.json"
  restart_victim "$name"
}

failover_tests() {
  wait_quiet fo
  failover traffic ' connected' "$NODE_BIN" --import tsx scripts/traffic.ts longlived \
    --conns "$FO_CONNS" --interval-ms "$FO_INTERVAL" --duration-s "$FO_SECS" --json
  failover stalls '^measuring' "$NODE_BIN" --import tsx bench/cluster/stalls.ts \
    --conns "$FO_CONNS" --interval-ms "$FO_INTERVAL" --warmup-s "$STALL_WARMUP" --duration-s "$FO_SECS"
}

newflows_test() {
  local b i mid
  local cmd=("$BIN/newflows" "$VIP" "$NF_PORT" "$NF_SECS" "$NF_RATE" "$NF_SRC_BASE" "$NF_NSRC")
  echo "ip netns exec $CL ${cmd[*]}" >"$OUT/newflows.cmd"
  # the client's extra source addresses (the router learns them before the run), echoes dropped
  client_addrs "$NF_NSRC"
  wait_quiet nf
  for b in "${LAB_BALANCERS[@]}"; do stats "$b" "$OUT/nf-before-$b.json"; udp_snmp "$b" >"$OUT/nf-before-$b.snmp"; done
  kv nf_srv_rx0 "$(srv_rx)"; kv nf_tundrop0 "$(tun_drops "$LAB_ENTRY_BALANCER")"; kv nf_echo0 "$(client_echoes)"
  cpu_snap "$OUT/nf.cpu0"
  (exec ip netns exec "$CL" timeout $((NF_SECS + 10)) "${cmd[@]}" >"$OUT/newflows.json" 2>"$OUT/newflows.err") &
  local gpid=$!; PIDS+=("$gpid")
  kv nf_start_ms "$(ms)"
  # lb1's flows.created once a second (the sustained rate), and one `top` frame mid-run
  (
    while kill -0 "$gpid" 2>/dev/null; do
      echo "$(ms) $(ip netns exec "$(lbns "$LAB_ENTRY_BALANCER")" curl -s -m 1 "http://$ADMIN/api/v1/stats" 2>/dev/null | jq -r '.flows.created // "null"' 2>/dev/null)"
      sleep 1
    done >"$OUT/nf-samples.txt"
  ) &
  local spid=$!; PIDS+=("$spid")
  mid=$(( (NF_SECS * 1000) / 2 - 1000 )); ((mid > 0)) && sleep "$((mid / 1000)).$(printf '%03d' $((mid % 1000)))"
  for b in "${LAB_BALANCERS[@]}"; do kv "pid_$b" "$(lbpid "$b")"; done
  local plist; plist=$(for b in "${LAB_BALANCERS[@]}"; do lbpid "$b"; done | paste -sd,)
  top -b -n 2 -d 1 -p "$plist" >"$OUT/nf-top.txt" 2>&1 || true
  wait "$gpid" || true
  kv nf_end_ms "$(ms)"
  cpu_snap "$OUT/nf.cpu1"
  wait "$spid" 2>/dev/null || true
  sleep 1.5   # replication flush and peers' apply; late echoes
  for b in "${LAB_BALANCERS[@]}"; do stats "$b" "$OUT/nf-after-$b.json"; udp_snmp "$b" >"$OUT/nf-after-$b.snmp"; done
  kv nf_srv_rx1 "$(srv_rx)"; kv nf_tundrop1 "$(tun_drops "$LAB_ENTRY_BALANCER")"; kv nf_echo1 "$(client_echoes)"
  kv nf_bg_pct "$(bg_pct "$OUT/nf.cpu0" "$OUT/nf.cpu1")"
  log "newflows: $(cat "$OUT/newflows.json" 2>/dev/null)"
}

# sweep: the generator paced at each rate of NF_SWEEP for NF_SWEEP_SECS s (fresh tuples after
# the unpaced run's): flows.created of lb1, drops into its TUN queue, its CPU and run-queue wait.
sweep() {
  local first rate i=0 lb1=$LAB_ENTRY_BALANCER
  first=$(jq -r '.sent // 0' "$OUT/newflows.json" 2>/dev/null || echo 0)
  for rate in $NF_SWEEP; do
    sleep 1
    stats "$lb1" "$OUT/sw$i-before.json"; kv "sw${i}_tundrop0" "$(tun_drops "$lb1")"; cpu_snap "$OUT/sw$i.cpu0"
    ip netns exec "$CL" timeout $((NF_SWEEP_SECS + 10)) "$BIN/newflows" "$VIP" "$NF_PORT" "$NF_SWEEP_SECS" "$rate" "$NF_SRC_BASE" "$NF_NSRC" "$first" \
      >"$OUT/sw$i.json" 2>"$OUT/sw$i.err" || true
    cpu_snap "$OUT/sw$i.cpu1"; kv "sw${i}_bg_pct" "$(bg_pct "$OUT/sw$i.cpu0" "$OUT/sw$i.cpu1")"
    sleep 0.3
    stats "$lb1" "$OUT/sw$i-after.json"; kv "sw${i}_tundrop1" "$(tun_drops "$lb1")"
    first=$((first + $(jq -r '.sent // 0' "$OUT/sw$i.json" 2>/dev/null || echo 0)))
    log "sweep $rate/s: lb1 created $(($(jq -r '.flows.created // 0' "$OUT/sw$i-after.json") - $(jq -r '.flows.created // 0' "$OUT/sw$i-before.json")))"
    i=$((i + 1))
  done
  echo "ip netns exec $CL $BIN/newflows $VIP $NF_PORT $NF_SWEEP_SECS RATE $NF_SRC_BASE $NF_NSRC FIRST" >"$OUT/sweep.cmd"
}

# client_addrs N: the client's first N secondary addresses (NF_SRC_BASE..), learnt by the router,
# and an nft counter in tunlb-client that drops the echoes (so it sends no port unreachables)
client_addrs() {
  local i n=$1
  for ((i = 0; i < n; i++)); do ip -n "$CL" addr replace "${NF_SRC_BASE%.*}.$((${NF_SRC_BASE##*.} + i))/$LAB_PLEN4" dev "$LAB_IF_CLIENT_FRONT"; done
  for ((i = 0; i < n; i++)); do ip netns exec "$LAB_NS_PREFIX$LAB_ROUTER" ping -c1 -W1 -q "${NF_SRC_BASE%.*}.$((${NF_SRC_BASE##*.} + i))" >/dev/null 2>&1 || true; done
  ip netns exec "$CL" nft list table ip tunlb_bench >/dev/null 2>&1 && return 0
  ip netns exec "$CL" nft -f - <<NFT
table ip tunlb_bench {
  counter echoes { }
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr $VIP udp sport $NF_PORT counter name echoes drop
  }
}
NFT
}

active() { stats "$1" "$OUT/.a.json"; jq -r '.flows.active // 0' "$OUT/.a.json" 2>/dev/null || echo 0; }
metric() { ip netns exec "$(lbns "$1")" curl -s -m 3 "http://$ADMIN/metrics" 2>/dev/null | awk -v m="$2" '$1 == m { print $2; exit }'; }

# confirm_pass TAG SECS RATE FIRST: newflows again over the tuples a pass sent (same FIRST, rate
# and duration, so the same sequence of 5-tuples), after their echoes came back through the
# balancers: each datagram is a client packet after the server's answer, which confirms the
# flow (docs/flow-records.md "Confirmation and replication"), and only confirmed flows are
# replicated. Without it each balancer would hold only the flows it decided itself.
confirm_pass() {
  local tag=$1 secs=$2 rate=$3 first=$4
  sleep 0.5   # the last echoes of the pass
  ip netns exec "$CL" timeout $((secs + 10)) "$BIN/newflows" "$VIP" "$NF_PORT" "$secs" "$rate" "$NF_SRC_BASE" "$SYNC_NSRC" "$first" \
    >"$OUT/$tag-confirm.json" 2>"$OUT/$tag-confirm.err" || true
}

# sync_one N: fill lb1 to N flows, replicate, kill and restart lb2 under live new flows, measure
SYNC_FIRST=0
sync_one() {
  local n=$1 pass have secs rate t0 i ok b tag="sync$1" lpid sent
  have=$(active lb1)
  for ((pass = 1; pass <= 4; pass++)); do
    ((have * 1000 >= n * 995)) && break
    # about n - have new tuples: whole seconds at (at most) SYNC_RATE
    secs=$(( (n - have + SYNC_RATE - 1) / SYNC_RATE )); ((secs > 600)) && secs=600
    rate=$(( (n - have + secs - 1) / secs ))
    log "$tag: lb1 holds $have flows; pass $pass: $rate new flows/s for $secs s"
    ip netns exec "$CL" timeout $((secs + 10)) "$BIN/newflows" "$VIP" "$NF_PORT" "$secs" "$rate" "$NF_SRC_BASE" "$SYNC_NSRC" "$SYNC_FIRST" \
      >"$OUT/$tag-fill$pass.json" 2>"$OUT/$tag-fill$pass.err" || true
    sent=$(jq -r '.sent // 0' "$OUT/$tag-fill$pass.json" 2>/dev/null || echo 0)
    confirm_pass "$tag-fill$pass" "$secs" "$rate" "$SYNC_FIRST"
    SYNC_FIRST=$((SYNC_FIRST + sent))
    sleep 1
    have=$(active lb1)
  done
  kv "${tag}_lb1_flows" "$have"
  # every balancer holds them (replication, healed by refreshes)
  for ((i = 0; i < 240; i++)); do
    ok=1; for b in lb2 lb3; do (( $(active "$b") * 1000 >= have * 998 )) || ok=0; done
    ((ok)) && break; sleep 0.5
  done
  for b in "${LAB_BALANCERS[@]}"; do kv "${tag}_before_$b" "$(active "$b")"; done
  log "$tag: flows before the kill: lb1 $(active lb1), lb2 $(active lb2), lb3 $(active lb3)"
  for b in "${LAB_BALANCERS[@]}"; do kv "${tag}_stalls0_$b" "$(metric "$b" tunlb_event_loop_stalls_total)"; done
  stats lb1 "$OUT/$tag-lb1-before.json"
  wait_quiet "$tag"
  kill_victim "$tag"
  for ((i = 0; i < 100; i++)); do
    stats lb1 "$OUT/.k.json"
    jq -e '[.membership.peers[] | select(.id == "lb2" and .state == "dead")] | length == 1' "$OUT/.k.json" >/dev/null 2>&1 && break
    sleep 0.05
  done
  # live new flows while lb2 restarts and syncs
  ip netns exec "$CL" timeout $((SYNC_LIVE_SECS + 10)) "$BIN/newflows" "$VIP" "$NF_PORT" "$SYNC_LIVE_SECS" "$SYNC_LIVE_RATE" "$NF_SRC_BASE" "$SYNC_NSRC" "$SYNC_FIRST" \
    >"$OUT/$tag-live.json" 2>"$OUT/$tag-live.err" &
  lpid=$!; PIDS+=("$lpid")
  sleep 0.5
  cpu_snap "$OUT/$tag.cpu0"
  t0=$(ms)
  kv "${tag}_start_ms" "$t0"
  # lab.sh start returns once the whole lab is ready (`tunlb ready`): watch lb1's view meanwhile
  bash "$LAB" start "$VICTIM" >>"$OUT/lab.log" 2>&1 &
  local spid=$!
  for ((i = 0; i < 1200; i++)); do
    stats lb1 "$OUT/.k.json"
    if jq -e '[.membership.peers[] | select(.id == "lb2" and .state == "up" and .status == "serving")] | length == 1' "$OUT/.k.json" >/dev/null 2>&1; then
      kv "${tag}_serving_ms" $(($(ms) - t0)); break
    fi
    sleep 0.05
  done
  wait "$spid" || die "$tag: lab.sh start $VICTIM failed (see $OUT/lab.log)"
  kv "${tag}_started_ms" "$(ms)"
  cpu_snap "$OUT/$tag.cpu1"
  stats lb2 "$OUT/$tag-lb2-after.json"
  log "$tag: lb2 serving $(awk -v k="${tag}_serving_ms" '$1 == k { print $2 }' "$OUT/run.kv") ms after lab.sh start; its sync: $(jq -c '.membership.sync' "$OUT/$tag-lb2-after.json")"
  wait "$lpid" 2>/dev/null || true
  sent=$(jq -r '.sent // 0' "$OUT/$tag-live.json" 2>/dev/null || echo 0)
  # the live flows' second datagrams (after their echoes): confirmed, so replicated to every balancer
  confirm_pass "$tag-live" "$SYNC_LIVE_SECS" "$SYNC_LIVE_RATE" "$SYNC_FIRST"
  SYNC_FIRST=$((SYNC_FIRST + sent))
  sleep 3   # replication of the last live flows
  for b in "${LAB_BALANCERS[@]}"; do kv "${tag}_after_$b" "$(active "$b")"; done
  for b in "${LAB_BALANCERS[@]}"; do kv "${tag}_stalls1_$b" "$(metric "$b" tunlb_event_loop_stalls_total)"; done
  for b in "${LAB_BALANCERS[@]}"; do stats "$b" "$OUT/$tag-$b-end.json"; udp_snmp "$b" >"$OUT/$tag-$b.snmp"; done
  # Flows the responder itself lacked (records lost on the multicast before the kill) and live
  # flows whose records lb2 lost while it was busy come with replication's refresh (every
  # refresh_s): the time until lb2 holds as many flows as lb1 again (at most 90 s).
  t0=$(ms)
  for ((i = 0; i < 450; i++)); do
    (( $(active lb2) >= $(active lb1) )) && { kv "${tag}_converged_ms" $(($(ms) - t0)); break; }
    sleep 0.2
  done
  for b in "${LAB_BALANCERS[@]}"; do kv "${tag}_final_$b" "$(active "$b")"; done
  cp "$LAB_DIR/logs/lb2.log" "$OUT/$tag-lb2.log" 2>/dev/null || true
  log "$tag: flows after: lb1 $(active lb1), lb2 $(active lb2), lb3 $(active lb3)"
}

sync_tests() {
  local n
  log "sync: a lab of its own (flow_table.capacity $SYNC_CAPACITY, udp_s $SYNC_UDP_S)"
  bash "$LAB" down >/dev/null 2>&1 || true
  { cat "$REPO/config/lab.yaml"; printf '\nflow_table:\n  capacity: %s\n  timeouts: { udp_s: %s }\n' "$SYNC_CAPACITY" "$SYNC_UDP_S"; } >"$OUT/lab-sync.yaml"
  TUNLB_LAB_CONFIG="$OUT/lab-sync.yaml" bash "$LAB" up >>"$OUT/lab.log" 2>&1 || { tail -30 "$OUT/lab.log" >&2; die "lab.sh up (sync) failed"; }
  wait_serving 30 || die "the sync lab is not serving 30 s after lab.sh up"
  client_addrs "$SYNC_NSRC"
  echo "ip netns exec $CL $BIN/newflows $VIP $NF_PORT SECS RATE $NF_SRC_BASE $SYNC_NSRC FIRST; bash scripts/lab.sh kill lb2; bash scripts/lab.sh start lb2" >"$OUT/sync.cmd"
  for n in $SYNC_FLOWS; do sync_one "$n"; done
}

# ---- entry: the ECMP entry against the single entry, measured in one run ----
# For each entry (single: the router sends the VIP to lb1; ecmp: to every balancer that
# announces it): ENTRY_STREAMS parallel HTTP downloads through the VIP (curl of lab-server's
# /bytes, one TCP connection each: spread over the balancers by the router's 5-tuple hash and
# over the servers; in NAT the data comes back through the VRRP gateway) for ENTRY_SECS s, then
# scripts/traffic.ts udpflood (64-byte datagrams to the UDP echo service, ENTRY_STREAMS senders,
# unpaced; echoes counted at the client) for ENTRY_SECS s; the CPU of each balancer (% of one
# core) and of the whole machine over each run. (iperf3 does not fit: its control and data
# connections are separate flows that NAT sends to different servers.) Rows: $OUT/entry.md.
entry_run() { # entry_run ENTRY
  local e=$1 kind i
  bash "$LAB" up --entry "$e" >>"$OUT/lab.log" 2>&1 || die "lab.sh up --entry $e failed (see $OUT/lab.log)"
  wait_serving 60 || die "not serving after lab.sh up --entry $e"
  wait_quiet "entry-$e"
  for kind in tcp udp; do
    cpu_snap "$OUT/entry-$e-$kind.cpu0"
    if [[ $kind == tcp ]]; then
      : >"$OUT/entry-$e-tcp.bytes"
      for ((i = 0; i < ENTRY_STREAMS; i++)); do
        timeout $((ENTRY_SECS + 5)) ip netns exec "$CL" curl -s -o /dev/null -m "$ENTRY_SECS" -w '%{size_download}\n' \
          "http://$VIP:$LAB_HTTP_PORT/bytes?n=10000000000" >>"$OUT/entry-$e-tcp.bytes" 2>/dev/null &
      done
      wait
    else
      timeout $((ENTRY_SECS + 15)) ip netns exec "$CL" "$NODE_BIN" --import tsx "$REPO/scripts/traffic.ts" udpflood \
        --duration-s "$ENTRY_SECS" --senders "$ENTRY_STREAMS" --size 64 --json --quiet >"$OUT/entry-$e-udp.json" 2>/dev/null || true
    fi
    cpu_snap "$OUT/entry-$e-$kind.cpu1"
    sleep 1
  done
}

# cpu_pct SNAP0 SNAP1 NAME: % of one core NAME used between two cpu_snaps
cpu_pct() {
  awk -v n="$3" -v hz="$(getconf CLK_TCK)" 'NR == FNR { a[$1] = $2; next } { b[$1] = $2 }
    END { dt = (b["t_ms"] - a["t_ms"]) / 1000; if (n == "host") printf "%.0f", 100 * (b["host_total"] - a["host_total"] - (b["host_idle"] - a["host_idle"])) / hz / dt;
          else printf "%.0f", 100 * (b[n] - a[n]) / hz / dt }' "$1" "$2"
}

entry_tests() {
  local e kind
  for e in single ecmp; do entry_run "$e"; done
  {
    echo "| entry | TCP, ${ENTRY_STREAMS} HTTP downloads (Gbit/s) | UDP 64 B echoed (kpps) | CPU lb1 / lb2 / lb3 (% of a core), TCP | same, UDP | whole machine (% of ${NCPU} cores), TCP / UDP |"
    echo "|---|---:|---:|---|---|---|"
    for e in single ecmp; do
      local gbps kpps c
      gbps=$(awk -v s="$ENTRY_SECS" '{ t += $1 } END { printf "%.2f", t * 8 / s / 1e9 }' "$OUT/entry-$e-tcp.bytes")
      kpps=$(jq -r '(.received // 0) / (.durationS // 1) / 1000 | . * 10 | round / 10' "$OUT/entry-$e-udp.json" 2>/dev/null || echo '?')
      c=""
      for kind in tcp udp; do
        c+="$(cpu_pct "$OUT/entry-$e-$kind.cpu0" "$OUT/entry-$e-$kind.cpu1" lb1) / $(cpu_pct "$OUT/entry-$e-$kind.cpu0" "$OUT/entry-$e-$kind.cpu1" lb2) / $(cpu_pct "$OUT/entry-$e-$kind.cpu0" "$OUT/entry-$e-$kind.cpu1" lb3) | "
      done
      echo "| $e | $gbps | $kpps | $c$(cpu_pct "$OUT/entry-$e-tcp.cpu0" "$OUT/entry-$e-tcp.cpu1" host) / $(cpu_pct "$OUT/entry-$e-udp.cpu0" "$OUT/entry-$e-udp.cpu1" host) |"
    done
    echo
    echo "commands: \`ip netns exec $CL curl -m $ENTRY_SECS http://$VIP/bytes?n=1e10\` x $ENTRY_STREAMS in parallel, and \`scripts/traffic.ts udpflood --senders $ENTRY_STREAMS --size 64 --duration-s $ENTRY_SECS\`, after \`lab.sh up --entry single|ecmp\`; CPU from /proc/PID/stat and /proc/stat over each run"
  } >"$OUT/entry.md"
}

session() {
  trap session_cleanup EXIT
  trap 'exit 130' INT TERM HUP
  local t0=$SECONDS b cmd
  log "lab lock held; clean start (lab.sh down)"
  bash "$LAB" down >/dev/null 2>&1 || true
  kv hz "$(getconf CLK_TCK)"; kv ncpu "$(nproc)"
  cp "$REPO/config/lab.yaml" "$OUT/lab.yaml"
  ADMIN=$(awk '/^admin:/ { a = 1 } a && /listen:/ { print $2; exit }' "$OUT/lab.yaml"); ADMIN=${ADMIN:-127.0.0.1:9180}
  kv probe_interval_ms "$(awk '/^ *probe:/ { p = 1 } p && /^ *interval_ms:/ { print $2; exit }' "$OUT/lab.yaml")"
  kv probe_misses "$(awk '/^ *probe:/ { p = 1 } p && /^ *misses:/ { print $2; exit }' "$OUT/lab.yaml")"
  if [[ " $ONLY " == *" failover "* || " $ONLY " == *" newflows "* ]]; then
    if [[ $PROFILE == 1 ]]; then
      cmd="$NODE_BIN --cpu-prof --cpu-prof-dir=$OUT/prof/{id} $REPO/bin/tunlb run --config $LAB_DIR/lab.yaml --id {id}"
      TUNLB_CMD=$cmd bash "$LAB" up >"$OUT/lab.log" 2>&1 || { tail -30 "$OUT/lab.log" >&2; die "lab.sh up failed"; }
    else
      bash "$LAB" up >"$OUT/lab.log" 2>&1 || { tail -30 "$OUT/lab.log" >&2; die "lab.sh up failed"; }
    fi
    cp "$LAB_DIR/lab.yaml" "$OUT/lab.yaml"
    wait_serving 30 || die "the cluster is not serving 30 s after lab.sh up (see $OUT/lab.log, $LAB_DIR/logs/)"
    log "lab up and serving in $((SECONDS - t0)) s"
  fi
  if [[ " $ONLY " == *" failover "* ]]; then failover_tests; fi
  if [[ " $ONLY " == *" newflows "* ]]; then
    newflows_test
    [[ -z $NF_SWEEP ]] || sweep
  fi
  if [[ " $ONLY " == *" entry "* ]]; then entry_tests; fi
  if [[ " $ONLY " == *" sync "* ]]; then sync_tests; fi
  if [[ $PROFILE == 1 ]]; then
    # SIGTERM so that --cpu-prof writes the profiles as the processes exit (lab.sh down would
    # KILL after 3 s; a large profile takes longer to write)
    local p
    for b in "${LAB_BALANCERS[@]}"; do p=$(lbpid "$b"); [[ -n $p ]] && kill -TERM "$p" 2>/dev/null || true; done
    for b in "${LAB_BALANCERS[@]}"; do p=$(lbpid "$b"); for _ in $(seq 150); do [[ -n $p ]] && kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  fi
  log "lab session: $((SECONDS - t0)) s"
}

if [[ ${1:-} == __session ]]; then
  session
  exit 0
fi

# ============================ preparation (no lock) ===========================================
[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"
[[ -n $NODE_BIN ]] || die "node is required"
lab_ensure_tools gcc:gcc nft:nftables flock:util-linux ip:iproute2 curl:curl jq:jq top:procps
[[ -f $REPO/dist/src/cli/main.js ]] || die "$REPO/dist missing: npm run build first"
rm -rf "$OUT"; mkdir -p "$BIN" "$OUT/prof"
T0=$SECONDS
gcc -O2 -Wall -o "$BIN/newflows" "$HERE/newflows.c"
{
  echo "commit $(git -C "$REPO" log -1 --format='%h %s' | cut -c1-90)"
  echo "dist built $(date -r "$REPO/dist/src/cli/main.js" -Is); src changed since: $(find "$REPO/src" -newer "$REPO/dist/src/cli/main.js" -name '*.ts' | wc -l) files"
  echo "machine $(nproc) CPUs, $(uname -r), node $("$NODE_BIN" --version)"
} >"$OUT/measured"
if lab_lock_held_by_ancestor "$LOCK"; then
  log "the lab lock $LOCK is held by a caller (an ancestor process); not taking it again"
  bash "$0" __session || die "lab session failed (raw results in $OUT)"
else
  log "waiting for the lab lock $LOCK"
  flock -w "${BENCH_LOCK_WAIT:-900}" "$LOCK" bash "$0" __session || die "lab session failed (raw results in $OUT)"
fi
if [[ " $ONLY " == *" failover "* || " $ONLY " == *" newflows "* || " $ONLY " == *" sync "* ]]; then (cd "$REPO" && "$NODE_BIN" --import tsx "$HERE/report.ts" "$OUT"); fi
if [[ -s $OUT/entry.md ]]; then echo; echo "ECMP entry against the single entry (same run):"; cat "$OUT/entry.md"; fi
log "total $((SECONDS - T0)) s; raw results in $OUT"
