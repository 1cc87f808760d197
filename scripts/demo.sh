#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted JavaScript (template literals) for node -e
# The tunlb demo (README's first command; root, fresh Debian with Node.js 20):
#
#   bash scripts/demo.sh
#
# 1. installs what tunlb needs (scripts/install-deps.sh: Debian packages, npm ci, build);
# 2. builds the namespace lab with three balancers (scripts/lab.sh up): client, router,
#    lb1..lb3, srv1..srv3, each a network namespace; nothing touches this machine's own network;
#    the ECMP entry: every balancer announces the VIP (BIRD, BGP + BFD), the router spreads flows;
# 3. opens 30 long-lived TCP connections from the client through the VIP to the servers' echo
#    service, each exchanging a message every 20 ms (scripts/traffic.ts longlived);
# 4. kills balancer lb1 (the balancer that used to be the only entry) with SIGKILL a few seconds
#    in, then stops lb3 the planned way (SIGTERM: withdraw, hand over, exit), while the
#    connections keep talking;
# 5. shows the per-second timeline and the verdict (connections survived, resets, longest stall
#    after each loss), what each balancer saw, then brings lb1 back (it bulk-syncs first);
# 6. tears the lab down (always, also on Ctrl-C or an error).
#
# The namespace lab is one per machine: steps 2-6 run under the lab session lock
# (/tmp/tunlb-lab-session.lock, the one the lab tests and benchmarks take), so the demo waits
# while someone else uses the lab. Running it under `flock /tmp/tunlb-lab-session.lock ...`
# works too (the demo sees that its caller holds the lock and does not take it again).
#
# Options: --no-install skips step 1 (already installed and built).
# Environment: DEMO_CONNS (30), DEMO_INTERVAL_MS (20), DEMO_DURATION_S (14), DEMO_KILL_AFTER_S (4),
#   DEMO_STOP_AFTER_S (9),
#   TUNLB_LAB_SESSION_LOCK (/tmp/tunlb-lab-session.lock), DEMO_LOCK_WAIT_S (900).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lab-lib.sh
source "$HERE/lab-lib.sh"   # lab_lock_held_by_ancestor
cd "$REPO"
# fd 7 holds the lab session lock (below); the lab's daemons must not inherit it.
lab() { bash "$REPO/scripts/lab.sh" "$@" 7>&-; }
LOCK=${TUNLB_LAB_SESSION_LOCK:-/tmp/tunlb-lab-session.lock}
LOCK_WAIT_S=${DEMO_LOCK_WAIT_S:-900}
CONNS=${DEMO_CONNS:-30}
INTERVAL_MS=${DEMO_INTERVAL_MS:-20}
DURATION_S=${DEMO_DURATION_S:-14}
KILL_AFTER_S=${DEMO_KILL_AFTER_S:-4}
STOP_AFTER_S=${DEMO_STOP_AFTER_S:-9}
VICTIM=lb1
STOPPED=lb3
INSTALL=1
for a in "$@"; do
  case $a in
    --no-install) INSTALL=0 ;;
    -h | --help) sed -n '3,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown option $a (try --help)" >&2; exit 2 ;;
  esac
done

die() { echo "demo: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root: the lab uses network namespaces (bash scripts/demo.sh)"

WORK=$(mktemp -d /tmp/tunlb-demo.XXXXXX)
TRAFFIC_PID=""
LAB_STARTED=0
DONE=0
T0=$EPOCHREALTIME

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # TRAFFIC_PID is timeout(1)'s: TERM is forwarded to the generator (KILL would not be).
  if [[ -n $TRAFFIC_PID ]] && kill -0 "$TRAFFIC_PID" 2>/dev/null; then kill -TERM "$TRAFFIC_PID" 2>/dev/null || true; fi
  if ((LAB_STARTED)); then
    echo
    echo "== tearing the lab down (scripts/lab.sh down)"
    lab down >"$WORK/down.log" 2>&1 || cat "$WORK/down.log"
    local left="" n
    for n in client router lb1 lb2 lb3 srv1 srv2 srv3; do [[ -e /run/netns/tunlb-$n ]] && left+=" tunlb-$n"; done
    if [[ -z $left ]]; then
      echo "   every lab namespace removed (ip netns list shows no tunlb-*); balancer logs kept in"
      echo "   /run/tunlb-lab/logs/ until the next lab.sh up"
    else
      echo "   namespaces still there:$left (bash scripts/lab.sh down removes them)"
    fi
  fi
  rm -rf "$WORK"
  if ((rc == 0 && DONE)); then
    echo
    echo "demo done in $(since "$T0") s (after install)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# Seconds since the demo started (after install), one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
clock() { date +%H:%M:%S.%3N; }
epoch_ms() { local t=${EPOCHREALTIME/./}; echo "${t:0:13}"; }

# json FILE EXPR: evaluates a JavaScript expression over the parsed JSON in FILE (as `j`).
json() { node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); const r = eval(process.argv[2]); console.log(typeof r === "string" ? r : JSON.stringify(r));' "$1" "$2"; }
# stats lbN FILE: the balancer's admin stats (JSON) into FILE; false if it does not answer.
stats() { ip netns exec "tunlb-$1" curl -s -m 2 http://127.0.0.1:9180/api/v1/stats >"$2" 2>/dev/null && [[ -s $2 ]]; }
flows() { ip netns exec "tunlb-$1" curl -s -m 3 "http://127.0.0.1:9180/api/v1/flows?limit=100000" >"$2" 2>/dev/null && [[ -s $2 ]]; }

cat <<EOF
tunlb demo: three userspace L4 load balancers (TUN, TypeScript on Node.js) share every
flow's record and all receive traffic (ECMP); kill -9 any of them, or stop one for
maintenance, and its connections continue through the others.

EOF

# ---- 1. install ----
if ((INSTALL)); then
  echo "== [1/5] installing dependencies (scripts/install-deps.sh: Debian packages, npm ci, build;"
  echo "   a minute or more on a fresh machine, quicker once installed)"
  t=$EPOCHREALTIME
  if ! bash "$REPO/scripts/install-deps.sh" >"$WORK/install.log" 2>&1; then
    tail -n 40 "$WORK/install.log"
    die "install failed (output above)"
  fi
  echo "   done in $(since "$t") s"
else
  echo "== [1/5] install skipped (--no-install)"
fi

# ---- the lab session lock (held until this script exits) ----
if lab_lock_held_by_ancestor "$LOCK"; then
  echo "== lab session lock $LOCK: held by the caller"
else
  exec 7>>"$LOCK"
  if ! flock -n 7; then
    echo "== waiting for the lab session lock $LOCK: someone else is using the namespace lab (at most ${LOCK_WAIT_S} s)"
    flock -w "$LOCK_WAIT_S" 7 || die "the lab session lock $LOCK is still held after ${LOCK_WAIT_S} s (fuser -v $LOCK shows by whom)"
  fi
fi
T0=$EPOCHREALTIME

# ---- 2. the lab ----
echo "== [2/5] building the lab (scripts/lab.sh up): 8 network namespaces, 3 balancers"
LAB_STARTED=1
if ! lab up >"$WORK/up.log" 2>&1; then
  tail -n 30 "$WORK/up.log"
  die "lab.sh up failed (output above; balancer logs in /run/tunlb-lab/logs/)"
fi
# up returns when the VIP answers; wait (briefly) until the three see each other serving.
for _ in $(seq 1 50); do
  ok=0
  for b in lb1 lb2 lb3; do
    stats "$b" "$WORK/s.json" || continue
    [[ $(json "$WORK/s.json" 'j.membership && j.membership.status === "serving" && j.membership.peers.every(p => p.state === "self" || (p.state === "up" && p.status === "serving"))') == true ]] && ok=$((ok + 1))
  done
  ((ok == 3)) && break
  sleep 0.2
done
echo "   up in $(since "$T0") s"
cat <<'EOF'

   tunlb-client 10.99.1.2
        |
   tunlb-router 10.99.1.1 --- the VIP 10.99.0.10 via lb1, lb2, lb3 (ECMP: each balancer's BIRD
        |                      announces it by BGP while the balancer is ready; BFD 100 ms x 3)
        |  lbnet 10.99.2.0/24: probes every 50 ms, flow records (multicast 239.99.0.1:7946),
        |                      packets forwarded between balancers (UDP 7947)
   +----+--------------+--------------+
   lb1 .11            lb2 .12        lb3 .13       each: tunlb reading tunlb0 (TUN)
   +----+--------------+--------------+
        |  back 10.99.3.0/24
   srv1 .21           srv2 .22       srv3 .23      echo tcp/7, http tcp/80, udp echo 5353
                                                   (their gateway: 10.99.3.10, VRRP among the balancers)

   Every new flow is ranked over the live balancers (rendezvous hashing): the highest score is
   its primary (it NATs the flow to a backend), the second its backup. Any balancer may
   receive a flow's packets (the router's 5-tuple hash); it sends them to the flow's primary,
   encapsulated in UDP, unless it is the primary itself.
EOF
printf '\n   %-4s %-7s %-9s %s\n' id pid status "peers (state/status, probe RTT)"
for b in lb1 lb2 lb3; do
  pid=$(cat "/run/tunlb-lab/pids/$b.pid" 2>/dev/null || echo '?')
  if stats "$b" "$WORK/s.json"; then
    line=$(json "$WORK/s.json" '[j.membership.status, j.membership.peers.filter(p => p.state !== "self").map(p => `${p.id} ${p.state}/${p.status} ${p.rttMs === null ? "-" : p.rttMs.toFixed(1) + " ms"}`).join(", ")].join("|")')
    printf '   %-4s %-7s %-9s %s\n' "$b" "$pid" "${line%%|*}" "${line#*|}"
  else
    printf '   %-4s %-7s %s\n' "$b" "$pid" "admin endpoint not answering"
  fi
done

# ---- 3. traffic, 4. the kill ----
echo
echo "== [3/5] traffic: $CONNS TCP connections client -> 10.99.0.10:7 (echo), one message every ${INTERVAL_MS} ms each, ${DURATION_S} s"
echo "   (scripts/traffic.ts longlived; a stall is the gap between two echoes on one connection)"
timeout -k 2 $((DURATION_S + 20)) ip netns exec tunlb-client node --import tsx "$REPO/scripts/traffic.ts" longlived \
  --conns "$CONNS" --interval-ms "$INTERVAL_MS" --duration-s "$DURATION_S" --json >"$WORK/traffic.out" 2>"$WORK/traffic.err" 7>&- &
TRAFFIC_PID=$!
T_TRAFFIC=$EPOCHREALTIME
for _ in $(seq 1 200); do grep -q ' connected' "$WORK/traffic.out" 2>/dev/null && break; sleep 0.05; done
# The generator's own clock: "  0.04 s  30/30 connected" was printed 0.04 s after its start.
if line=$(grep ' connected' "$WORK/traffic.out"); then
  T_TRAFFIC=$(awk -v now="$EPOCHREALTIME" -v off="${line%% s *}" 'BEGIN { printf "%.6f", now - off }')
  echo "   ${line#*s  }"
fi

# Who owns the demo's flows (from lb1's table; every balancer holds the same records).
sleep 1
if flows lb1 "$WORK/flows.json"; then
  json "$WORK/flows.json" '(() => {
    const mine = j.flows.filter(f => f.key.startsWith("tcp 10.99.1.2:") && f.key.endsWith("-> 10.99.0.10:7"));
    const by = (k) => { const c = {}; for (const f of mine) c[f[k]] = (c[f[k]] || 0) + 1; return Object.keys(c).sort().map(x => `${x} ${c[x]}`).join(", "); };
    return `   the ${mine.length} flows: primary ${by("primary")}; backup ${by("backup")}; backend ${by("backend")}`;
  })()'
fi

while awk -v a="$(since "$T_TRAFFIC")" -v b="$KILL_AFTER_S" 'BEGIN { exit !(a < b) }'; do sleep 0.05; done
echo
echo "== [4/5] t=$(since "$T_TRAFFIC") s ($(clock)): kill -9 $VICTIM (scripts/lab.sh kill $VICTIM)"
KILL_MS=$(epoch_ms)
lab kill "$VICTIM" 2>&1 | sed 's/^/   /'
# The operator's view during the failover, from a surviving balancer: every balancer at once
# (the victim down, as its peers judge it), then per-VIP and per-backend statistics.
OBSERVER=lb2
for _ in $(seq 1 60); do
  stats "$OBSERVER" "$WORK/o.json" && [[ $(json "$WORK/o.json" "j.membership.peers.some(p => p.id === '$VICTIM' && p.state === 'dead')") == true ]] && break
  sleep 0.05
done
echo "   $OBSERVER\$ tunlb status --cluster   (t=$(since "$T_TRAFFIC") s)"
timeout -k 1 5 ip netns exec "tunlb-$OBSERVER" node "$REPO/bin/tunlb" status --cluster 2>&1 7>&- | sed 's/^/     /' || true
echo "   $OBSERVER\$ tunlb vips --stats   (t=$(since "$T_TRAFFIC") s)"
timeout -k 1 5 ip netns exec "tunlb-$OBSERVER" node "$REPO/bin/tunlb" vips --stats 2>&1 7>&- | sed 's/^/     /' || true
while awk -v a="$(since "$T_TRAFFIC")" -v b="$STOP_AFTER_S" 'BEGIN { exit !(a < b) }'; do sleep 0.05; done
echo
echo "== t=$(since "$T_TRAFFIC") s ($(clock)): planned stop of $STOPPED (scripts/lab.sh stop $STOPPED: SIGTERM)"
STOP_MS=$(epoch_ms)
lab stop "$STOPPED" 2>&1 | sed 's/^/   /'
grep -h '"event":"self_left"' /run/tunlb-lab/logs/$STOPPED.log 2>/dev/null | tail -n 1 | node -e '
  let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => { try { const j = JSON.parse(s); console.log(`   ${j.msg}`); } catch {} });' || true
echo "   waiting for the traffic to finish ..."
wait "$TRAFFIC_PID" || true
TRAFFIC_PID=""

# ---- results ----
SUMMARY=$WORK/summary.json
grep '^{' "$WORK/traffic.out" | tail -n 1 >"$SUMMARY" || true
if [[ ! -s $SUMMARY ]]; then
  cat "$WORK/traffic.out" "$WORK/traffic.err"
  die "the traffic generator printed no summary"
fi
KILL_REL_MS=$(json "$SUMMARY" "$KILL_MS - j.startedAtEpochMs")
STOP_REL_MS=$(json "$SUMMARY" "$STOP_MS - j.startedAtEpochMs")
echo
echo "   timeline (from the client; $VICTIM killed at t=$(awk -v m="$KILL_REL_MS" 'BEGIN { printf "%.2f", m / 1000 }') s). One row per second of traffic"
echo "   (t = the second's end): connections still open, echoes received, and the longest gap"
echo "   between two echoes on any one connection (20 ms = no stall)"
# The per-second table and the events, with the second of the kill marked.
awk -v k="$KILL_REL_MS" -v s="$STOP_REL_MS" '
  /^\{/ { next }
  /^ +t +alive/ { print "   " $0; intable = 1; next }
  intable && /^ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+$/ {
    mark = ($1 * 1000 > k && ($1 - 1) * 1000 <= k) ? "   <- '"$VICTIM"' killed" : ""
    if ($1 * 1000 > s && ($1 - 1) * 1000 <= s) mark = mark "   <- '"$STOPPED"' stopped (SIGTERM)"
    print "   " $0 mark; next
  }
  / conn .*ended/ { print "   " $0 }
' "$WORK/traffic.out"
echo
json "$SUMMARY" '`   ${j.survived}/${j.conns} connections survived, ${j.resets} resets, longest stall ${j.maxStallMs} ms` +
  ` (per-connection longest stall: p50 ${j.p50StallMs} ms, p99 ${j.p99StallMs} ms; ${j.echoes} echoes)`'
# The longest stall of any connection in the seconds after each loss (timeline: per second, the
# longest gap that ended in it).
json "$SUMMARY" '(() => {
  const k = '"$KILL_REL_MS"', s = '"$STOP_REL_MS"';
  const worst = (from, to) => Math.max(0, ...j.timeline.filter((r) => r.t * 1000 > from && (r.t - 1) * 1000 < to).map((r) => r.worstStallMs));
  return `   after the kill -9 of '"$VICTIM"': longest stall ${worst(k, s)} ms; after the planned stop of '"$STOPPED"': longest stall ${worst(s, 1e9)} ms`;
})()'
# The stalls of the victim's connections and of the others (ownership from lb1's records).
if [[ -s $WORK/flows.json ]]; then
  VICTIM=$VICTIM node -e '
    const fs = require("fs");
    const j = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const f = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
    const v = process.env.VICTIM;
    const owner = new Map(f.flows.map((r) => [r.key, r]));
    const groups = { primary: [], backup: [], other: [] };
    for (const c of j.perConn) {
      const r = owner.get(`tcp 10.99.1.2:${c.localPort} -> 10.99.0.10:7`);
      groups[!r ? "other" : r.primary === v ? "primary" : r.backup === v ? "backup" : "other"].push(c.maxStallMs);
    }
    const say = (g, what) => {
      const x = groups[g];
      if (x.length) console.log(`   ${String(x.length).padStart(2)} connections ${what}: longest stall of the run ${Math.max(...x)} ms`);
    };
    say("primary", `owned by ${v} (${v} was their primary; their backup took over)`);
    say("backup", `with ${v} as backup (their primary lives)`);
    say("other", `not involving ${v}`);
  ' "$SUMMARY" "$WORK/flows.json"
fi

echo
echo "== [5/5] the balancers after the kill and the stop"
printf '   %-4s %-9s %6s %10s %9s %10s %9s  %s\n' id status flows "tun rx" "to peers" "from peers" "failover" "what it saw"
for b in lb1 lb2 lb3; do
  if stats "$b" "$WORK/s.json"; then
    json "$WORK/s.json" '(() => {
      const m = j.membership, c = j.counters;
      const ev = m.events.filter(e => e.id === "'"$VICTIM"'" && (e.type === "peer_down" || e.type === "peer_suspect")).slice(-1)[0];
      const saw = ev ? `'"$VICTIM"' ${ev.type.replace("peer_", "")} at ${ev.at.slice(11, 23)}: ${ev.reason}` : "";
      const pad = (s, n) => String(s).padStart(n);
      return `   ${j.id.padEnd(4)} ${m.status.padEnd(9)} ${pad(j.flows.active, 6)} ${pad(c.rxPackets, 10)} ${pad(c.peerTxPackets, 9)} ${pad(c.peerRxPackets, 10)} ${pad(c.failoverPackets, 9)}  ${saw}`;
    })()'
  else
    printf '   %-4s %-9s\n' "$b" "down (killed or stopped)"
  fi
done
echo "   (tun rx: packets read from the balancer's TUN device: every balancer receives its share;"
echo "    to/from peers: packets encapsulated between balancers (a receiver hands each flow to its"
echo "    primary); failover: packets sent to a flow's backup because its primary was dead)"

echo
echo "   bringing $VICTIM back (scripts/lab.sh start $VICTIM): it pulls the flow table from a live peer"
echo "   before it serves"
t=$EPOCHREALTIME
if lab start "$VICTIM" >"$WORK/start.log" 2>&1; then
  for _ in $(seq 1 100); do
    stats "$VICTIM" "$WORK/s.json" && [[ $(json "$WORK/s.json" 'j.membership.status') == serving ]] && break
    sleep 0.1
  done
  json "$WORK/s.json" '`   ${j.id} serving again after '"$(since "$t")"' s: synced from ${j.membership.syncedFrom ?? "nobody"}, holds ${j.flows.active} flow records`'
  if flows "$VICTIM" "$WORK/flows2.json"; then
    json "$WORK/flows2.json" '(() => {
      const mine = j.flows.filter(f => f.key.startsWith("tcp 10.99.1.2:") && f.key.endsWith("-> 10.99.0.10:7"));
      const back = mine.filter(f => f.primary === "'"$VICTIM"'").length;
      return `   (the demo'"'"'s ${mine.length} among them; ${back} of those name '"$VICTIM"' as primary: records are not re-decided, so '"$VICTIM"' serves them again)`;
    })()'
  fi
else
  tail -n 5 "$WORK/start.log" | sed 's/^/   /'
fi
DONE=1
