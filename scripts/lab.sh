#!/usr/bin/env bash
# tunlb namespace lab: client, router, three balancers, three servers, each a network namespace.
# Every link is a veth between two lab namespaces; the two bridges live inside tunlb-router; no
# namespace has a link into the root namespace and nothing is added to the root namespace.
# Names and addresses: scripts/lab-topology.sh (the one source of truth; docs/contracts.md).
# Host part ".N" below means 10.99.<net>.N and fd99:<net>::N (e.g. lb1 lbnet = 10.99.2.11, fd99:2::11).
#
#                      +------------------------------+
#                      | tunlb-client                 |
#                      |  eth0  10.99.1.2  fd99:1::2  |
#                      +--------------+---------------+
#                                     |  front  10.99.1.0/24  fd99:1::/64
#   +---------------------------------+-------------------------------------------------+
#   | tunlb-router         front0  10.99.1.1  fd99:1::1                                  |
#   |   ecmp: BIRD (eBGP + BFD with each balancer's BIRD) installs VIP 10.99.0.10/32,    |
#   |     fd99::10/128 with one nexthop per announcing balancer (5-tuple hash)          |
#   |   single: VIP via lb1 (10.99.2.11 / fd99:2::11)                                    |
#   |   [br-lb]  10.99.2.1  fd99:2::1            [br-back]  10.99.3.1  fd99:3::1 (DSR)  |
#   +-------+--------------+--------------+----------------------+-----------------------+
#           | lb1-lb       | lb2-lb       | lb3-lb               | lb1-bk lb2-bk lb3-bk srv1-bk srv2-bk srv3-bk
#           |  lbnet  10.99.2.0/24  fd99:2::/64  (br-lb; peer multicast 239.99.0.1:7946/7947)
#   +-------+------+ +-----+--------+ +---+----------+           |  (ports of br-back)
#   | tunlb-lb1    | | tunlb-lb2    | | tunlb-lb3    |           |
#   | lbnet0 .11   | | lbnet0 .12   | | lbnet0 .13   |   each balancer: tunlb0 (TUN, made by the
#   | tunlb0       | | tunlb0       | | tunlb0       |   process); VIP -> tunlb0; NAT return:
#   | back0  .11   | | back0  .12   | | back0  .13   |   iif back0 from back net -> table 100 -> tunlb0
#   +-------+------+ +-----+--------+ +---+----------+           |
#           |  back  10.99.3.0/24  fd99:3::/64  (br-back)        |
#   +-------+------+-------+--------+-----+----------+-----------+
#   +-------+------+ +-----+--------+ +---+----------+
#   | tunlb-srv1   | | tunlb-srv2   | | tunlb-srv3   |   servers: lab-server.ts (HTTP :80, UDP echo
#   | eth0   .21   | | eth0   .22   | | eth0   .23   |   :5353, TCP echo :7), iperf3 -s (:5201);
#   +--------------+ +--------------+ +--------------+   default route (NAT): ecmp via the VRRP
#                                                          gateway .10 (keepalived in the balancers);
#                                                          single via lb1 back0 (.11)
#                                                          (--method dsr: VIPs on lo, arp_ignore=1,
#                                                          arp_announce=2, default via router .1)
#
# Usage: scripts/lab.sh up [--entry ecmp|single] [--lb tunlb|kernel] [--balancers 1|3] [--method nat|dsr]
#                                                                   build (or converge) and start;
#                                                                   ecmp (default with tunlb): every
#                                                                   balancer announces the VIPs (BIRD,
#                                                                   BGP + BFD) and receives; single:
#                                                                   the router sends the VIPs to lb1;
#                                                                   dsr: config/lab-dsr.yaml, servers
#                                                                   answer clients via the router
#        scripts/lab.sh down                                        stop everything, delete namespaces
#        scripts/lab.sh status                                      namespaces, PIDs, router nexthops, VIP
#        scripts/lab.sh kill lbN                                    kill -9 the balancer process
#        scripts/lab.sh stop lbN                                    SIGTERM: planned stop (withdraw, leave)
#        scripts/lab.sh isolate lbN                                 the host goes silent (nftables drops
#                                                                   everything in its namespace)
#        scripts/lab.sh start lbN                                   undo isolate; (re)start the balancer
#        scripts/lab.sh exec NS cmd...                              NS: client, router, lb1, srv2, ...
# State and logs: /run/tunlb-lab/ (pids/, logs/, cluster.key, lab.yaml, state). Logs survive `down`;
# a fresh `up` moves them to logs.prev/.
# Environment: TUNLB_CMD (balancer command; "{id}" is replaced by lbN), TUNLB_LAB_CONFIG (source
# of lab.yaml; one without announce.table 101 gets the single entry unless --entry ecmp is
# given), LAB_VIP_TIMEOUT (s, default 20), LAB_TUN_TIMEOUT (s, default 15), LAB_READY_TIMEOUT
# (s, default 60: up/start wait until every running balancer is ready, `tunlb ready`; LAB_READY=0
# skips that), LAB_ADMIN (the balancers' admin endpoint, default 127.0.0.1:9180).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lab-topology.sh
source "$HERE/lab-topology.sh"
# shellcheck source=scripts/lab-lib.sh
source "$HERE/lab-lib.sh"
# Inherited descriptors (a caller's flock on the session lock) must not reach the lab's daemons.
lab_close_inherited_fds

# System tools first: under `npx` node_modules/.bin is on PATH and has an unrelated `nft`.
NODE_BIN=$(command -v node || true)
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
NODE_BIN=${NODE_BIN:-$(command -v node || true)}

LABDIR=$LAB_DIR
# The balancer command, one per balancer namespace; "{id}" becomes lb1, lb2, lb3.
TUNLB_CMD_OVERRIDDEN=${TUNLB_CMD:+1}
TUNLB_CMD=${TUNLB_CMD:-"$NODE_BIN $REPO/bin/tunlb run --config $LABDIR/lab.yaml --id {id}"}
LAB_CONFIG_SRC=${TUNLB_LAB_CONFIG:-$REPO/config/lab.yaml}
LAB_CONFIG_SRC_DSR=${TUNLB_LAB_CONFIG:-$REPO/config/lab-dsr.yaml}
METHOD=nat
ENTRY=ecmp
VIP_TIMEOUT=${LAB_VIP_TIMEOUT:-20}
TUN_TIMEOUT=${LAB_TUN_TIMEOUT:-15}
READY_TIMEOUT=${LAB_READY_TIMEOUT:-60}
# The balancers' admin endpoint inside their namespaces (config/lab*.yaml admin.listen).
LAB_ADMIN=${LAB_ADMIN:-127.0.0.1:9180}
SERVER_TIMEOUT=20

ns() { printf '%s%s' "$LAB_NS_PREFIX" "$1"; }
all_nodes() { echo "$LAB_CLIENT" "$LAB_ROUTER" "${LAB_BALANCERS[@]}" "${LAB_SERVERS[@]}"; }
is_balancer() { local b; for b in "${LAB_BALANCERS[@]}"; do [[ $b == "$1" ]] && return 0; done; return 1; }
now() { printf '%s' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log_tail() { local f=$LABDIR/logs/$1.log; [[ -f $f ]] || return 0; echo "---- tail of $f ----" >&2; tail -n "${2:-25}" "$f" >&2; echo "----" >&2; }

lock() {
  mkdir -p "$LABDIR"
  exec 9>"$LABDIR/.lock"
  flock -w 120 9 || lab_die "another lab.sh holds $LABDIR/.lock"
}

# ---- processes: pid files are $LABDIR/pids/<name>.pid; <name> is lbN, srvN or iperf3-srvN ----
pidfile() { printf '%s/pids/%s.pid' "$LABDIR" "$1"; }
node_of() { local n=${1#iperf3-}; printf '%s' "$n"; }
# alive NAME: prints the PID if the recorded process is alive and inside its lab namespace.
alive() {
  local f pid; f=$(pidfile "$1")
  [[ -s $f ]] || return 1
  pid=$(<"$f"); [[ $pid =~ ^[0-9]+$ ]] || return 1
  running "$pid" || return 1
  [[ $(ip netns identify "$pid" 2>/dev/null) == "$(ns "$(node_of "$1")")" ]] || return 1
  printf '%s' "$pid"
}

# running PID: the process exists and is not a zombie (our daemons are reaped by init, later).
running() {
  local st
  st=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# stop NAME [SIGNAL]: signal the recorded process (only if it is still ours), wait for it to go.
stop() {
  local name=$1 sig=${2:-TERM} pid i
  pid=$(alive "$name") || { rm -f "$(pidfile "$name")"; return 0; }
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$(pidfile "$name")"
}

# ---- ECMP entry daemons (BIRD, keepalived): pid files in $LAB_DAEMON_DIR ----
# daemon_alive PIDFILE : prints the PID if the recorded daemon is alive.
daemon_alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1"); [[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
  printf '%s' "$pid"
}
lab_bird_pid() { daemon_alive "$LAB_DAEMON_DIR/bird-$1.pid" || true; }

# start_balancer_daemons lbN : the balancer host's BIRD (announces what tunlb writes into table
# LAB_ANNOUNCE_TABLE) and, for NAT, its keepalived (the servers' VRRP gateway). No-op if running.
start_balancer_daemons() {
  local id=$1 s; s=$(ns "$id")
  if [[ -z $(lab_bird_pid "$id") ]]; then
    lab_bird_start "$s" "$id" "$(lab_bird_balancer_conf "${LAB_LBNET4[$id]}" "$LAB_IF_LB_LBNET" \
      "${LAB_LBNET4[$id]}" "${LAB_LBNET6[$id]}" "$LAB_ROUTER_LBNET4" "$LAB_ROUTER_LBNET6")" "$LAB_DAEMON_DIR" "$LABDIR/logs"
  fi
  if [[ $METHOD == nat ]]; then
    if ! daemon_alive "$LAB_DAEMON_DIR/keepalived-$id.pid" >/dev/null; then
      lab_keepalived_start "$s" "$id" "$(lab_keepalived_conf "$id" "$LAB_IF_LB_BACK" "${LAB_READY_FILE_PATTERN//\{id\}/$id}")" "$LAB_DAEMON_DIR" "$LABDIR/logs"
    fi
  else
    lab_keepalived_stop "$id" "$LAB_DAEMON_DIR" "$LABDIR/logs"
  fi
}
stop_balancer_daemons() { lab_bird_stop "$1" "$LAB_DAEMON_DIR" "$LABDIR/logs"; lab_keepalived_stop "$1" "$LAB_DAEMON_DIR" "$LABDIR/logs"; }

# router_nexthops FAMILY(4|6) : the router's nexthops (gateway addresses) for the VIP, one a line.
router_nexthops() {
  local vip=$LAB_VIP4 fam=-4; [[ $1 == 6 ]] && { vip=$LAB_VIP6; fam=-6; }
  ip -n "$(ns "$LAB_ROUTER")" "$fam" route show "$vip" 2>/dev/null | grep -oE 'via [0-9a-f.:]+' | awk '{ print $2 }' | sort -u || true
}

# wait_nexthops N : until the router has N nexthops for both VIPs (ECMP entry).
wait_nexthops() {
  local want=$1 deadline=$((SECONDS + VIP_TIMEOUT)) n4 n6
  while :; do
    n4=$(router_nexthops 4 | wc -l); n6=$(router_nexthops 6 | wc -l)
    ((n4 == want && n6 == want)) && return 0
    if ((SECONDS >= deadline)); then
      lab_die "the router has $n4 (IPv4) / $n6 (IPv6) nexthops for the VIPs after ${VIP_TIMEOUT}s, want $want (BIRD: $LAB_DAEMON_DIR, ip netns exec $(ns "$LAB_ROUTER") birdc -s $LAB_DAEMON_DIR/bird-$LAB_ROUTER.ctl show protocols)"
    fi
    sleep 0.1
  done
}

# wait_nexthop_of lbN : until the router routes both VIPs via lbN too (it announces again).
wait_nexthop_of() {
  local id=$1 deadline=$((SECONDS + VIP_TIMEOUT))
  until [[ " $(router_nexthops 4 | tr '\n' ' ') " == *" ${LAB_LBNET4[$id]} "* && " $(router_nexthops 6 | tr '\n' ' ') " == *" ${LAB_LBNET6[$id]} "* ]]; do
    ((SECONDS < deadline)) || lab_die "the router has no nexthop via $id after ${VIP_TIMEOUT}s (does it announce? ip netns exec $(ns "$id") bin/tunlb status)"
    sleep 0.1
  done
}

# isolate rules: every frame in and out of the node's lab interfaces dropped (netdev ingress and
# egress hooks: IP, ARP, AF_PACKET frames alike); its processes keep running.
isolate_on() {
  local s; s=$(ns "$1")
  ip netns exec "$s" nft -f - <<NFT
table netdev tunlb_isolate
delete table netdev tunlb_isolate
table netdev tunlb_isolate {
  chain in_lb { type filter hook ingress device "$LAB_IF_LB_LBNET" priority -500; policy drop; }
  chain out_lb { type filter hook egress device "$LAB_IF_LB_LBNET" priority -500; policy drop; }
  chain in_bk { type filter hook ingress device "$LAB_IF_LB_BACK" priority -500; policy drop; }
  chain out_bk { type filter hook egress device "$LAB_IF_LB_BACK" priority -500; policy drop; }
}
NFT
}
isolate_off() { ip netns exec "$(ns "$1")" nft delete table netdev tunlb_isolate 2>/dev/null || true; }
isolated() { ip netns exec "$(ns "$1")" nft list table netdev tunlb_isolate >/dev/null 2>&1; }

# ---- topology ----
veth_to_router() { # veth_to_router ROUTER_PORT NODE NODE_IF
  local r; r=$(ns "$LAB_ROUTER")
  ip -n "$r" link show dev "$1" >/dev/null 2>&1 && return 0
  ip -n "$r" link add "$1" type veth peer name "$3" netns "$(ns "$2")"
}

build_topology() {
  local n s r c; r=$(ns "$LAB_ROUTER"); c=$(ns "$LAB_CLIENT")
  for n in $(all_nodes); do
    s=$(ns "$n")
    [[ -e /run/netns/$s ]] || ip netns add "$s"
    ip -n "$s" link set lo up
  done
  # sysctls first, so that interfaces made afterwards inherit "default" (no DAD, rp_filter 0)
  lab_sysctl_host "$c"
  lab_sysctl_forwarder "$r"
  for n in "${LAB_BALANCERS[@]}"; do lab_sysctl_forwarder "$(ns "$n")"; done
  for n in "${LAB_SERVERS[@]}"; do lab_sysctl_host "$(ns "$n")"; done

  # router: the two bridges (no STP delay; no multicast snooping so peer multicast is flooded)
  for n in "$LAB_BR_LBNET" "$LAB_BR_BACK"; do
    ip -n "$r" link show dev "$n" >/dev/null 2>&1 \
      || ip -n "$r" link add "$n" type bridge forward_delay 0 stp_state 0 mcast_snooping 0
  done
  lab_sysctl_switch "$r"
  veth_to_router "$LAB_IF_ROUTER_FRONT" "$LAB_CLIENT" "$LAB_IF_CLIENT_FRONT"
  for n in "${LAB_BALANCERS[@]}"; do
    veth_to_router "$n-lb" "$n" "$LAB_IF_LB_LBNET"
    veth_to_router "$n-bk" "$n" "$LAB_IF_LB_BACK"
    ip -n "$r" link set "$n-lb" mtu "$LAB_LBNET_MTU" master "$LAB_BR_LBNET" up
    ip -n "$(ns "$n")" link set "$LAB_IF_LB_LBNET" mtu "$LAB_LBNET_MTU"
    ip -n "$r" link set "$n-bk" master "$LAB_BR_BACK" up
  done
  for n in "${LAB_SERVERS[@]}"; do
    veth_to_router "$n-bk" "$n" "$LAB_IF_SRV_BACK"
    ip -n "$r" link set "$n-bk" master "$LAB_BR_BACK" up
  done

  # client
  lab_addr "$c" "$LAB_IF_CLIENT_FRONT" "$LAB_CLIENT_FRONT4" "$LAB_CLIENT_FRONT6"
  ip -n "$c" route replace default via "$LAB_ROUTER_FRONT4"
  ip -n "$c" -6 route replace default via "$LAB_ROUTER_FRONT6"
  # router
  lab_addr "$r" "$LAB_IF_ROUTER_FRONT" "$LAB_ROUTER_FRONT4" "$LAB_ROUTER_FRONT6"
  lab_addr "$r" "$LAB_BR_LBNET" "$LAB_ROUTER_LBNET4" "$LAB_ROUTER_LBNET6"
  lab_addr "$r" "$LAB_BR_BACK" "$LAB_ROUTER_BACK4" "$LAB_ROUTER_BACK6"
  if [[ $ENTRY == single ]]; then
    lab_bird_stop "$LAB_ROUTER" "$LAB_DAEMON_DIR" "$LABDIR/logs"
    ip -n "$r" route replace "$LAB_VIP4/32" via "${LAB_LBNET4[$LAB_ENTRY_BALANCER]}"
    ip -n "$r" -6 route replace "$LAB_VIP6/128" via "${LAB_LBNET6[$LAB_ENTRY_BALANCER]}"
  else
    # ECMP entry: the VIP routes are BIRD's (multipath, from the balancers' announcements).
    lab_sysctl_ecmp_router "$r"
    if [[ -z $(lab_bird_pid "$LAB_ROUTER") ]]; then
      ip -n "$r" route del "$LAB_VIP4/32" 2>/dev/null || true
      ip -n "$r" -6 route del "$LAB_VIP6/128" 2>/dev/null || true
      lab_bird_start "$r" "$LAB_ROUTER" "$(lab_bird_router_conf "$LAB_ROUTER_LBNET4" "$LAB_BR_LBNET" "${LAB_BALANCERS[@]}")" "$LAB_DAEMON_DIR" "$LABDIR/logs"
    fi
  fi
  # balancers
  for n in "${LAB_BALANCERS[@]}"; do
    s=$(ns "$n")
    lab_addr "$s" "$LAB_IF_LB_LBNET" "${LAB_LBNET4[$n]}" "${LAB_LBNET6[$n]}"
    lab_addr "$s" "$LAB_IF_LB_BACK" "${LAB_BACK4[$n]}" "${LAB_BACK6[$n]}"
    ip -n "$s" route replace default via "$LAB_ROUTER_LBNET4"
    ip -n "$s" -6 route replace default via "$LAB_ROUTER_LBNET6"
    ip -n "$s" route replace 224.0.0.0/4 dev "$LAB_IF_LB_LBNET"   # peer multicast stays on lbnet
  done
  # servers (NAT mode: replies go back through the entry balancer; DSR: straight to the router)
  for n in "${LAB_SERVERS[@]}"; do
    s=$(ns "$n")
    lab_addr "$s" "$LAB_IF_SRV_BACK" "${LAB_BACK4[$n]}" "${LAB_BACK6[$n]}"
    if [[ $METHOD == dsr ]]; then
      lab_server_dsr "$s" "$LAB_IF_SRV_BACK" "$LAB_ROUTER_BACK4" "$LAB_ROUTER_BACK6"
      continue
    fi
    lab_server_undo_dsr "$s" "$LAB_IF_SRV_BACK"
    if [[ $ENTRY == ecmp ]]; then
      # the VRRP gateway held by one ready balancer (keepalived; lab_keepalived_conf)
      ip -n "$s" route replace default via "$LAB_GW4"
      ip -n "$s" -6 route replace default via "$LAB_GW6"
    else
      ip -n "$s" route replace default via "${LAB_BACK4[$LAB_ENTRY_BALANCER]}"
      ip -n "$s" -6 route replace default via "${LAB_BACK6[$LAB_ENTRY_BALANCER]}"
    fi
  done
}

# ---- servers ----
start_servers() {
  local n s pid
  for n in "${LAB_SERVERS[@]}"; do
    s=$(ns "$n")
    if ! alive "$n" >/dev/null; then
      # ip netns exec, nohup and node each exec() the next: $! is node's PID. fd 9 (lock) closed.
      (cd "$REPO" && exec ip netns exec "$s" nohup "$NODE_BIN" --import tsx "$REPO/scripts/lab-server.ts" --name "$n" \
        </dev/null >"$LABDIR/logs/$n.log" 2>&1 9>&-) &
      pid=$!; echo "$pid" >"$(pidfile "$n")"
    fi
    if ! alive "iperf3-$n" >/dev/null; then
      rm -f "$(pidfile "iperf3-$n")"
      ip netns exec "$s" iperf3 -s -D --pidfile "$(pidfile "iperf3-$n")" \
        --logfile "$LABDIR/logs/iperf3-$n.log" </dev/null >/dev/null 2>&1 9>&- \
        || lab_die "iperf3 -s failed in $s (see $LABDIR/logs/iperf3-$n.log)"
    fi
  done
}

wait_servers() {
  local n deadline=$((SECONDS + SERVER_TIMEOUT))
  for n in "${LAB_SERVERS[@]}"; do
    until [[ $(ip netns exec "$(ns "$n")" curl -s -m 1 "http://127.0.0.1:$LAB_HTTP_PORT/" 2>/dev/null) == "$n" ]]; do
      if ! alive "$n" >/dev/null; then log_tail "$n"; lab_die "server $n died (log: $LABDIR/logs/$n.log)"; fi
      if ((SECONDS >= deadline)); then log_tail "$n"; lab_die "server $n not answering after ${SERVER_TIMEOUT}s (log: $LABDIR/logs/$n.log)"; fi
      sleep 0.1
    done
  done
}

# ---- balancers ----
# start_balancer lbN: start the balancer process, wait for tunlb0, route into it. No-op if alive.
start_balancer() {
  local id=$1 s pid cmd rc=0; s=$(ns "$id")
  if [[ $ENTRY == ecmp ]]; then start_balancer_daemons "$id"; fi
  if pid=$(alive "$id"); then
    lab_log "$id already running (pid $pid)"
  else
    cmd=${TUNLB_CMD//\{id\}/$id}
    # not ready until the balancer says so (announce.ready_file): keepalived must not hand it
    # the servers' gateway while it syncs
    echo 1 >"${LAB_READY_FILE_PATTERN//\{id\}/$id}"
    lab_log "starting $id: $cmd"
    # The log holds JSON lines only (docs/logs.md): the start marker is one too (event lab_start).
    local q=${cmd//\\/\\\\}; q=${q//\"/\\\"}
    printf '{"level":"info","time":"%s","balancer":"%s","event":"lab_start","cmd":"%s","msg":"scripts/lab.sh starts %s"}\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$id" "$q" "$id" >>"$LABDIR/logs/$id.log"
    # nice -5: the whole lab (clients, servers, three balancers, the kernel's forwarding)
    # shares this machine's cores; on real hosts a balancer has its cores to itself. Without
    # it, a flood from the lab's own client can starve a balancer of CPU long enough to miss
    # 3 probes (a false failover caused by the lab, not by the balancer's load).
    (cd "$REPO" && exec ip netns exec "$s" nohup nice -n -5 bash -c "exec $cmd" </dev/null >>"$LABDIR/logs/$id.log" 2>&1 9>&-) &
    pid=$!; echo "$pid" >"$(pidfile "$id")"
  fi
  lab_wait_tun "$s" "$pid" "$TUN_TIMEOUT" || rc=$?
  case $rc in
    0) ;;
    1) log_tail "$id"; lab_die "$id (pid $pid) did not create $LAB_TUN_DEV in $s within ${TUN_TIMEOUT}s; see its log $LABDIR/logs/$id.log" ;;
    *) log_tail "$id"; lab_die "$id (pid $pid) exited before creating $LAB_TUN_DEV; see its log $LABDIR/logs/$id.log" ;;
  esac
  lab_tun_routes "$s" "$LAB_IF_LB_BACK"
}

# ---- the VIP, seen from the client ----
# vip_probe URL: prints the answering server's name (empty if none within 2 s).
vip_probe() { ip netns exec "$(ns "$LAB_CLIENT")" curl -s -m 2 "$1" 2>/dev/null || true; }
vip_ok() {
  [[ $(vip_probe "http://$LAB_VIP4:$LAB_HTTP_PORT/") == srv* ]] \
    && [[ $(vip_probe "http://[$LAB_VIP6]:$LAB_HTTP_PORT/") == srv* ]]
}
wait_vip() {
  local deadline=$((SECONDS + VIP_TIMEOUT)) b
  until vip_ok; do
    if ((SECONDS >= deadline)); then
      if [[ $MODE == tunlb ]]; then for b in $(running_balancers); do log_tail "$b"; done; fi
      lab_die "the VIP ($LAB_VIP4, $LAB_VIP6) does not answer HTTP from $(ns "$LAB_CLIENT") after ${VIP_TIMEOUT}s (logs: $LABDIR/logs/)"
    fi
    sleep 0.2
  done
}
# wait_ready: every running balancer is serving, sees every other running balancer up and serving,
# and has every health-checked backend healthy (`tunlb ready`, src/cli/readiness.ts). A VIP that
# answers once is not enough: a balancer may still see its peers as starting (new flows then
# get a backup that is not live yet) or a backend as not yet healthy (all traffic to the others).
# Configured balancers that are not running (--balancers 1, a killed one) are allowed down.
wait_ready() {
  [[ $MODE == tunlb && ${LAB_READY:-1} == 1 ]] || return 0
  local b s pid out running=() down=()
  for b in "${LAB_BALANCERS[@]}"; do
    if alive "$b" >/dev/null; then running+=("$b"); else down+=("$b"); fi
  done
  local allow; allow=$(IFS=,; echo "${down[*]}")
  # One `tunlb ready` per balancer, all at once (each is a Node start-up), each bounded by the
  # same deadline; their output in $LABDIR/ready-<lbN>.out for the failure message.
  local -A waiter=()
  for b in "${running[@]}"; do
    s=$(ns "$b")
    ip netns exec "$s" "$NODE_BIN" "$REPO/bin/tunlb" ready --admin "$LAB_ADMIN" --allow-down "$allow" \
      --wait "$READY_TIMEOUT" >"$LABDIR/ready-$b.out" 2>&1 9>&- &
    waiter[$b]=$!
  done
  for b in "${running[@]}"; do
    if ! wait "${waiter[$b]}"; then
      out=$(<"$LABDIR/ready-$b.out")
      log_tail "$b"
      lab_die "$b is not ready after ${READY_TIMEOUT}s: ${out:-no answer} (log: $LABDIR/logs/$b.log)"
    fi
  done
  for b in "${running[@]}"; do rm -f "$LABDIR/ready-$b.out"; done
  lab_log "ready: ${running[*]} serving, each seeing its peers serving and every checked backend healthy${allow:+ ($allow down)}"
}

running_balancers() { local b; for b in "${LAB_BALANCERS[@]}"; do [[ -e $(pidfile "$b") ]] && echo "$b"; done; return 0; }

read_state() {
  MODE_NOW="" BAL_NOW="" METHOD_NOW="" ENTRY_NOW=""
  # shellcheck disable=SC1091  # written by cmd_up: MODE_NOW=..., BAL_NOW=..., METHOD_NOW=..., ENTRY_NOW=...
  if [[ -f $LABDIR/state ]]; then source "$LABDIR/state"; fi
}
# adopt_state: commands after `up` act on the lab as it was built.
adopt_state() {
  read_state
  ENTRY=${ENTRY_NOW:-single}; METHOD=${METHOD_NOW:-nat}
}

# ---- teardown: our recorded processes, then anything left inside lab namespaces, then the namespaces ----
teardown() {
  local f name n s pid
  shopt -s nullglob
  for f in "$LABDIR"/pids/*.pid; do name=$(basename "$f" .pid); stop "$name" TERM & done
  wait
  for n in "$LAB_ROUTER" "${LAB_BALANCERS[@]}"; do stop_balancer_daemons "$n" & done
  wait
  for n in $(all_nodes); do
    s=$(ns "$n"); [[ -e /run/netns/$s ]] || continue
    for pid in $(ip netns pids "$s" 2>/dev/null); do
      lab_log "killing stray process $pid in $s: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-80)"
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
  for n in $(all_nodes); do
    s=$(ns "$n"); [[ -e /run/netns/$s ]] && ip netns del "$s"
  done
  rm -rf "$LABDIR/pids" "$LABDIR/state" "$LABDIR/lab.yaml" "$LAB_CLUSTER_KEY" "$LAB_DAEMON_DIR"
  for n in "${LAB_BALANCERS[@]}"; do rm -f "${LAB_READY_FILE_PATTERN//\{id\}/$n}"; done
  shopt -u nullglob
}

# ---- commands ----
cmd_up() {
  MODE=tunlb BAL=3
  local entry_set=""
  while (($#)); do
    case $1 in
      --entry) ENTRY=${2:-}; entry_set=1; shift 2 || true ;;
      --entry=*) ENTRY=${1#--entry=}; entry_set=1; shift ;;
      --lb) MODE=${2:-}; shift 2 || true ;;
      --lb=*) MODE=${1#--lb=}; shift ;;
      --balancers) BAL=${2:-}; shift 2 || true ;;
      --balancers=*) BAL=${1#--balancers=}; shift ;;
      --method) METHOD=${2:-}; shift 2 || true ;;
      --method=*) METHOD=${1#--method=}; shift ;;
      *) usage ;;
    esac
  done
  [[ $MODE == tunlb || $MODE == kernel ]] || lab_die "--lb must be tunlb or kernel"
  [[ $METHOD == nat || $METHOD == dsr ]] || lab_die "--method must be nat or dsr"
  [[ $METHOD == nat || $MODE == tunlb ]] || lab_die "--method dsr needs --lb tunlb (the kernel peer is NAT only)"
  [[ $METHOD == nat ]] || LAB_CONFIG_SRC=$LAB_CONFIG_SRC_DSR
  [[ $BAL == 1 || $BAL == 3 ]] || lab_die "--balancers must be 1 or 3"
  [[ $ENTRY == ecmp || $ENTRY == single ]] || lab_die "--entry must be ecmp or single"
  if [[ $MODE == kernel ]]; then
    [[ -z $entry_set || $ENTRY == single ]] || lab_die "--entry ecmp needs --lb tunlb (the kernel peer runs in lb1 only)"
    ENTRY=single
  fi
  local t0; t0=$(now)
  lock
  # preflight (nothing built yet, nothing to clean up on failure)
  [[ -n $NODE_BIN ]] || lab_die "node (>= 20) is required"
  [[ -d $REPO/node_modules/tsx ]] || lab_die "$REPO/node_modules/tsx missing: run npm ci in $REPO"
  lab_ensure_tools ip:iproute2 curl:curl ping:iputils-ping iperf3:iperf3 nft:nftables flock:util-linux
  [[ $ENTRY == single ]] || lab_ensure_tools bird:bird2 birdc:bird2 keepalived:keepalived
  if [[ $MODE == tunlb ]]; then
    [[ -f $LAB_CONFIG_SRC ]] || lab_die "lab config $LAB_CONFIG_SRC missing (set TUNLB_LAB_CONFIG, or use --lb kernel)"
    # The ECMP entry needs the balancers to announce (announce.table = LAB_ANNOUNCE_TABLE). A
    # config of one's own without it (TUNLB_LAB_CONFIG) gets the single entry, as before, unless
    # --entry ecmp was asked for.
    if [[ $ENTRY == ecmp ]] && ! awk -v t="$LAB_ANNOUNCE_TABLE" '/^announce:/ { a = 1; next } /^[^ #]/ { a = 0 } a && $1 == "table:" && $2 == t { f = 1 } END { exit !f }' "$LAB_CONFIG_SRC"; then
      [[ -z $entry_set ]] || lab_die "--entry ecmp: $LAB_CONFIG_SRC has no 'announce: { table: $LAB_ANNOUNCE_TABLE }' (the balancers would announce nothing; add it as config/lab.yaml does, or use --entry single)"
      lab_log "$LAB_CONFIG_SRC announces nothing (no announce.table $LAB_ANNOUNCE_TABLE): single entry"
      ENTRY=single
    fi
    if [[ -z ${TUNLB_CMD_OVERRIDDEN:-} && ! -f $REPO/dist/src/cli/main.js ]]; then
      lab_die "$REPO/dist/src/cli/main.js missing: build first (npm run build), or set TUNLB_CMD, or use --lb kernel"
    fi
  fi
  UP_FAILING=1
  if [[ ! -e /run/netns/$(ns "$LAB_ROUTER") && -d $LABDIR/logs ]]; then   # a fresh lab: keep one old set of logs
    rm -rf "$LABDIR/logs.prev"; mv "$LABDIR/logs" "$LABDIR/logs.prev"
  fi
  mkdir -p "$LABDIR/pids" "$LABDIR/logs"
  if [[ ! -s $LAB_CLUSTER_KEY ]]; then
    (umask 077 && head -c 32 /dev/urandom >"$LAB_CLUSTER_KEY")
  fi
  chmod 0600 "$LAB_CLUSTER_KEY"

  # Switching method (nat <-> dsr) on a running lab: the balancers restart with the other config.
  read_state
  if [[ $MODE_NOW == tunlb && ${METHOD_NOW:-nat} != "$METHOD" ]]; then
    local sb; for sb in "${LAB_BALANCERS[@]}"; do stop "$sb" TERM; done
  fi
  # Switching entry (or leaving ecmp): the other entry's daemons go; isolation is undone.
  if [[ -n $MODE_NOW && ${ENTRY_NOW:-single} != "$ENTRY" ]]; then
    local sd; for sd in "$LAB_ROUTER" "${LAB_BALANCERS[@]}"; do stop_balancer_daemons "$sd"; done
  fi
  if [[ -e /run/netns/$(ns "$LAB_ROUTER") ]]; then local si; for si in "${LAB_BALANCERS[@]}"; do isolate_off "$si"; done; fi
  build_topology
  start_servers
  wait_servers
  local b
  if [[ $MODE == kernel ]]; then
    for b in "${LAB_BALANCERS[@]}"; do stop "$b" TERM; lab_tun_unroute "$(ns "$b")"; lab_kernel_nat_remove "$(ns "$b")"; done
    lab_kernel_nat "$(ns "$LAB_ENTRY_BALANCER")"
  else
    install -m 0644 "$LAB_CONFIG_SRC" "$LABDIR/lab.yaml"
    for b in "${LAB_BALANCERS[@]}"; do lab_kernel_nat_remove "$(ns "$b")"; lab_tun_fallbacks "$(ns "$b")" "$LAB_IF_LB_BACK"; done
    local want=("${LAB_BALANCERS[@]:0:$BAL}")
    for b in "${LAB_BALANCERS[@]:$BAL}"; do stop "$b" TERM; [[ $ENTRY == single ]] || stop_balancer_daemons "$b"; done
    for b in "${want[@]}"; do start_balancer "$b"; done
  fi
  printf 'MODE_NOW=%s\nBAL_NOW=%s\nMETHOD_NOW=%s\nENTRY_NOW=%s\n' "$MODE" "$BAL" "$METHOD" "$ENTRY" >"$LABDIR/state"
  [[ $ENTRY == single ]] || wait_nexthops "$BAL"
  wait_vip
  wait_ready
  UP_FAILING=0
  lab_log "up ($MODE, $BAL balancer(s), $METHOD, entry $ENTRY) in $(elapsed "$t0") s; VIP $LAB_VIP4 / $LAB_VIP6 answers; state in $LABDIR"
}

cmd_down() {
  local t0; t0=$(now)
  lock
  teardown
  lab_log "down in $(elapsed "$t0") s (logs kept in $LABDIR/logs)"
}

cmd_status() {
  local n s name pid any=0 rc=0 v4 v6
  read_state
  echo "lab dir: $LABDIR  (pids/, logs/, cluster.key, lab.yaml, state)"
  echo "mode:    ${MODE_NOW:-none} ${BAL_NOW:+($BAL_NOW balancer(s))} ${METHOD_NOW:+method $METHOD_NOW} ${ENTRY_NOW:+entry $ENTRY_NOW}"
  printf 'namespaces:'
  for n in $(all_nodes); do
    s=$(ns "$n")
    if [[ -e /run/netns/$s ]]; then printf ' %s' "$s"; any=1; else printf ' %s(missing)' "$s"; fi
  done
  echo
  if ((!any)); then echo "lab is down"; return 3; fi
  for name in "${LAB_BALANCERS[@]}" "${LAB_SERVERS[@]}" "${LAB_SERVERS[@]/#/iperf3-}"; do
    if [[ ! -e $(pidfile "$name") ]]; then
      # A balancer of the running lab without a process (`kill lbN` forgets its PID): dead.
      if [[ $MODE_NOW == tunlb ]] && is_balancer "$name" && [[ " ${LAB_BALANCERS[*]:0:${BAL_NOW:-3}} " == *" $name "* ]]; then
        echo "  $name: DEAD (no process: killed or stopped; start it with: scripts/lab.sh start $name)"; rc=3
      fi
      continue
    fi
    if pid=$(alive "$name"); then echo "  $name: pid $pid alive"; else echo "  $name: pid $(<"$(pidfile "$name")") DEAD (log $LABDIR/logs/$name.log)"; rc=3; fi
  done
  if [[ $ENTRY_NOW == ecmp ]]; then
    local b d f nh4 nh6
    for b in "$LAB_ROUTER" "${LAB_BALANCERS[@]}"; do
      d=""
      for f in bird keepalived; do
        [[ -e $LAB_DAEMON_DIR/$f-$b.pid ]] || continue
        if pid=$(daemon_alive "$LAB_DAEMON_DIR/$f-$b.pid"); then d+=" $f pid $pid"; else d+=" $f DEAD"; fi
      done
      if is_balancer "$b" && isolated "$b"; then d+=" ISOLATED"; fi
      [[ -z $d ]] || echo "  $b:$d"
    done
    nh4=$(router_nexthops 4 | tr '\n' ' '); nh6=$(router_nexthops 6 | tr '\n' ' ')
    echo "router nexthops: $LAB_VIP4 via ${nh4:-NONE}"
    echo "                 $LAB_VIP6 via ${nh6:-NONE}"
  fi
  v4=$(vip_probe "http://$LAB_VIP4:$LAB_HTTP_PORT/"); v6=$(vip_probe "http://[$LAB_VIP6]:$LAB_HTTP_PORT/")
  echo "VIP $LAB_VIP4: ${v4:-NO ANSWER}   VIP [$LAB_VIP6]: ${v6:-NO ANSWER}"
  [[ -n $v4 && -n $v6 ]] || rc=3
  return $rc
}

cmd_kill() {
  local id=${1:-} pid
  is_balancer "$id" || lab_die "usage: kill lbN (one of ${LAB_BALANCERS[*]})"
  lock
  pid=$(alive "$id") || lab_die "$id has no live balancer process recorded"
  kill -KILL "$pid"
  rm -f "$(pidfile "$id")"
  lab_log "killed $id (pid $pid) with SIGKILL"
}

# stop lbN: a planned stop (SIGTERM): the balancer withdraws its announcement, tells its peers it
# is leaving, serves until they have taken its flows over, then exits (bounded wait here).
cmd_stop() {
  local id=${1:-} pid i
  is_balancer "$id" || lab_die "usage: stop lbN (one of ${LAB_BALANCERS[*]})"
  lock
  pid=$(alive "$id") || lab_die "$id has no live balancer process recorded"
  kill -TERM "$pid"
  for ((i = 0; i < 100; i++)); do running "$pid" || break; sleep 0.05; done
  running "$pid" && lab_die "$id (pid $pid) still running 5 s after SIGTERM (log $LABDIR/logs/$id.log)"
  rm -f "$(pidfile "$id")"
  lab_log "stopped $id (pid $pid) with SIGTERM"
}

# isolate lbN: the balancer's host goes silent (every frame on its lab links dropped), its
# processes (tunlb, BIRD, keepalived) keep running: the BFD / probe-timeout case.
cmd_isolate() {
  local id=${1:-}
  is_balancer "$id" || lab_die "usage: isolate lbN (one of ${LAB_BALANCERS[*]})"
  lock
  [[ -e /run/netns/$(ns "$id") ]] || lab_die "no namespace $(ns "$id") (is the lab up?)"
  isolate_on "$id"
  lab_log "isolated $id (nftables drops every frame on $LAB_IF_LB_LBNET and $LAB_IF_LB_BACK in $(ns "$id"))"
}

cmd_start() {
  local id=${1:-}
  is_balancer "$id" || lab_die "usage: start lbN (one of ${LAB_BALANCERS[*]})"
  lock
  adopt_state
  [[ $MODE_NOW == tunlb ]] || lab_die "start needs a lab that is up with --lb tunlb (mode now: ${MODE_NOW:-down})"
  MODE=tunlb
  isolate_off "$id"
  START_ID=$id START_FAILING=1
  start_balancer "$id"
  wait_vip
  wait_ready
  [[ $ENTRY == single ]] || wait_nexthop_of "$id"
  START_FAILING=0
  lab_log "$id started (pid $(alive "$id"))"
}

cmd_exec() {
  local n=${1:-}; shift || true
  [[ -n $n && $# -gt 0 ]] || lab_die "usage: exec NS cmd..."
  n=${n#"$LAB_NS_PREFIX"}
  [[ -e /run/netns/$(ns "$n") ]] || lab_die "no namespace $(ns "$n") (is the lab up?)"
  exec ip netns exec "$(ns "$n")" "$@"
}

usage() { sed -n '/^# Usage:/,/^# Environment/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[[ $(id -u) == 0 ]] || lab_die "the lab needs root (network namespaces)"
# On any exit: a failed `up` tears the lab down; a failed `start lbN` stops that balancer.
UP_FAILING=0 START_FAILING=0 START_ID=""
on_exit() {
  local rc=$?
  if [[ $UP_FAILING == 1 ]]; then
    UP_FAILING=0
    lab_log "up failed; tearing the lab down (logs kept in $LABDIR/logs)"
    teardown || true
  elif [[ $START_FAILING == 1 ]]; then
    START_FAILING=0
    lab_log "start $START_ID failed; stopping it (log $LABDIR/logs/$START_ID.log)"
    stop "$START_ID" KILL || true
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM HUP
cmd=${1:-}; shift || true
case $cmd in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kill) cmd_kill "$@" ;;
  stop) cmd_stop "$@" ;;
  isolate) cmd_isolate "$@" ;;
  start) cmd_start "$@" ;;
  exec) cmd_exec "$@" ;;
  *) usage ;;
esac
