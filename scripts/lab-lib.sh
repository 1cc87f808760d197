# shellcheck shell=bash
# tunlb lab: per-node configuration steps, shared by scripts/lab.sh (every node is a network
# namespace) and the Vagrant provisioning (every node is a VM). Every function takes the node's
# namespace as its first argument; pass "" to act on the local machine (a VM). Functions only,
# no side effects when sourced. Needs scripts/lab-topology.sh sourced first.
# All steps are idempotent (replace, or delete-then-add).

lab_log() { printf '[lab] %s\n' "$*" >&2; }
lab_die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

# lab_run NS cmd... : run a command in the node (namespace NS, or locally when NS is empty).
lab_run() { local ns=$1; shift; if [[ -n $ns ]]; then ip netns exec "$ns" "$@"; else "$@"; fi; }
# lab_ip NS args... : iproute2 in the node.
lab_ip() { local ns=$1; shift; if [[ -n $ns ]]; then ip -n "$ns" "$@"; else ip "$@"; fi; }

# lab_close_inherited_fds: closes every descriptor above 2 this shell inherited (bash's own
# script descriptor, 255, stays). `flock FILE bash -c '…'` (util-linux, without -o) leaves the
# lock's descriptor open in its command; the daemons a lab script starts would inherit it and
# hold the lock after the wrapper died, and everyone else would wait. The lock itself stays
# held by the flock process until the wrapper ends: closing our copy does not release it.
lab_close_inherited_fds() {
  local fd
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [[ $fd =~ ^[0-9]+$ ]] || continue
    ((fd > 2 && fd != 255)) || continue
    eval "exec ${fd}>&-" 2>/dev/null || true
  done
}

# lab_lock_held_by_ancestor FILE: this shell or one of its ancestors holds a flock on FILE (e.g.
# `flock /tmp/tunlb-lab-session.lock npm run bench:...`): taking it again on a new open file
# would wait for ourselves (flock locks belong to open files, not to process trees).
# /proc/locks: "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF"; waiters' lines ("->") are skipped.
lab_lock_held_by_ancestor() {
  local ino pid=$$ anc=" " st
  ino=$(stat -c %i "$1" 2>/dev/null) || return 1
  while [[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)); do
    anc+="$pid "
    st=$(<"/proc/$pid/stat") 2>/dev/null || break
    st=${st##*) }; read -r _ pid _ <<<"$st"
  done
  awk -v ino="$ino" -v anc="$anc" '$2 == "FLOCK" { split($6, d, ":"); if (d[3] == ino && index(anc, " " $5 " ")) f = 1 } END { exit !f }' /proc/locks
}

# lab_ensure_tools CMD:PACKAGE... : install (apt) the packages of the commands that are missing.
lab_ensure_tools() {
  local want missing=()
  for want in "$@"; do
    command -v "${want%%:*}" >/dev/null 2>&1 || missing+=("${want#*:}")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || lab_die "missing tools (${missing[*]}) and no apt-get to install them"
  lab_log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
    || lab_die "apt-get install ${missing[*]} failed"
}

# Hosts (client, servers): IPv6 addresses usable at once (no duplicate address detection).
lab_sysctl_host() {
  lab_run "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
    net.ipv6.conf.all.dad_transmits=0 net.ipv6.conf.default.dad_transmits=0
}

# Forwarders (router, balancers): forwarding on (both families), reverse-path filter off (the
# balancer writes packets into tunlb0 whose source is the client, reachable via another
# interface; NAT-mode return traffic is policy-routed), no ICMP redirects (the lab's paths are
# deliberately asymmetric).
lab_sysctl_forwarder() {
  lab_sysctl_host "$1"
  lab_run "$1" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 \
    net.ipv4.conf.all.accept_redirects=0 net.ipv4.conf.default.accept_redirects=0 \
    net.ipv6.conf.all.accept_redirects=0 net.ipv6.conf.default.accept_redirects=0
}

# lab_sysctl_switch NS : the namespace's bridges act as plain switches. When the host has
# br_netfilter loaded (Docker loads it), bridged IPv4/IPv6/ARP frames otherwise go through the
# namespace's netfilter hooks and a route lookup each (br_nf_pre_routing: ~6% of all CPU samples
# in a peer-served DSR upload), which no real switch does. Nothing in the lab filters bridged
# traffic. The knobs are per namespace (and absent without br_netfilter).
lab_sysctl_switch() {
  local k
  for k in iptables ip6tables arptables; do
    lab_run "$1" test -e "/proc/sys/net/bridge/bridge-nf-call-$k" || continue
    lab_run "$1" sysctl -qw "net.bridge.bridge-nf-call-$k=0"
  done
}

# lab_addr NS DEV ADDR4 ADDR6 : give DEV its lab addresses (no DAD) and bring it up.
lab_addr() {
  lab_ip "$1" link set "$2" up
  lab_ip "$1" addr replace "$3/$LAB_PLEN4" dev "$2"
  lab_ip "$1" -6 addr replace "$4/$LAB_PLEN6" dev "$2" nodad
}

# ---- balancer: the TUN data path (--lb tunlb) ----

# lab_wait_tun NS PID TIMEOUT_S : wait until the balancer (PID) has created tunlb0 in NS.
# Returns 1 on timeout, 2 if the process died first.
lab_wait_tun() {
  local ns=$1 pid=$2 deadline=$((SECONDS + $3))
  while ! lab_ip "$ns" link show dev "$LAB_TUN_DEV" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || return 2
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# lab_tun_routes NS BACK_IF : route the VIP into tunlb0, and (NAT mode) everything the servers
# send in on BACK_IF too, so the balancer can rewrite the source back to the VIP. What the
# balancer writes into tunlb0 is then routed by the main table (to a server via back, to the
# client via lbnet). Fallbacks (metric 4000, kept when tunlb0 vanishes with a dead balancer):
# the VIP is unreachable (no loop router <-> balancer), and servers' replies are dropped
# rather than forwarded un-NATed.
lab_tun_routes() {
  local ns=$1 back=$2 t=$LAB_RETURN_TABLE
  lab_ip "$ns" link set "$LAB_TUN_DEV" up
  lab_run "$ns" sysctl -qw "net.ipv4.conf.$LAB_TUN_DEV.rp_filter=0" "net.ipv6.conf.$LAB_TUN_DEV.accept_dad=0" 2>/dev/null || true
  # The whole VIP pool into tunlb0 (a VIP a reload adds is served at once; tunlb drops and
  # counts what is not a VIP): the router sends only announced VIPs here.
  lab_ip "$ns" route replace "$LAB_VIP_POOL4" dev "$LAB_TUN_DEV"
  lab_ip "$ns" -6 route replace "$LAB_VIP_POOL6" dev "$LAB_TUN_DEV"
  lab_ip "$ns" route replace default dev "$LAB_TUN_DEV" table "$t"
  lab_ip "$ns" -6 route replace default dev "$LAB_TUN_DEV" table "$t"
  lab_tun_fallbacks "$ns" "$back"
}

# The parts that do not depend on tunlb0 existing (rules, fallback routes).
lab_tun_fallbacks() {
  local ns=$1 back=$2 t=$LAB_RETURN_TABLE
  lab_ip "$ns" route replace unreachable "$LAB_VIP_POOL4" metric 4000
  lab_ip "$ns" -6 route replace unreachable "$LAB_VIP_POOL6" metric 4000
  lab_ip "$ns" route replace unreachable default metric 4000 table "$t"
  lab_ip "$ns" -6 route replace unreachable default metric 4000 table "$t"
  while lab_ip "$ns" rule del pref 100 2>/dev/null; do :; done
  while lab_ip "$ns" -6 rule del pref 100 2>/dev/null; do :; done
  lab_ip "$ns" rule add pref 100 iif "$back" from "$LAB_BACK_NET4" lookup "$t"
  lab_ip "$ns" -6 rule add pref 100 iif "$back" from "$LAB_BACK_NET6" lookup "$t"
}

# Undo lab_tun_routes (switching the node to --lb kernel).
lab_tun_unroute() {
  local ns=$1
  while lab_ip "$ns" rule del pref 100 2>/dev/null; do :; done
  while lab_ip "$ns" -6 rule del pref 100 2>/dev/null; do :; done
  lab_ip "$ns" route flush table "$LAB_RETURN_TABLE" 2>/dev/null || true
  lab_ip "$ns" -6 route flush table "$LAB_RETURN_TABLE" 2>/dev/null || true
  lab_ip "$ns" route del "$LAB_VIP_POOL4" 2>/dev/null || true
  lab_ip "$ns" route del "$LAB_VIP_POOL4" 2>/dev/null || true
  lab_ip "$ns" -6 route del "$LAB_VIP_POOL6" 2>/dev/null || true
  lab_ip "$ns" -6 route del "$LAB_VIP_POOL6" 2>/dev/null || true
}

# ---- balancer: the in-kernel peer (--lb kernel) ----

# lab_kernel_nat NS : nftables DNAT of the VIP (tcp, udp, icmp/icmpv6 echo) to the servers,
# chosen by numgen random per new connection; conntrack un-NATs the servers' replies (which
# come back through this node: it is the servers' default route). Replaces the table atomically.
lab_kernel_nat() {
  local ns=$1 s m4="" m6="" i=0
  for s in "${LAB_SERVERS[@]}"; do
    m4+="${m4:+, }$i : ${LAB_BACK4[$s]}"; m6+="${m6:+, }$i : ${LAB_BACK6[$s]}"; i=$((i + 1))
  done
  lab_run "$ns" nft -f - <<NFT
table inet tunlb_lab
delete table inet tunlb_lab
table inet tunlb_lab {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $LAB_VIP4 meta l4proto { tcp, udp } dnat ip to numgen random mod $i map { $m4 }
    ip daddr $LAB_VIP4 icmp type echo-request dnat ip to numgen random mod $i map { $m4 }
    ip6 daddr $LAB_VIP6 meta l4proto { tcp, udp } dnat ip6 to numgen random mod $i map { $m6 }
    ip6 daddr $LAB_VIP6 icmpv6 type echo-request dnat ip6 to numgen random mod $i map { $m6 }
  }
}
NFT
  # Anything else addressed to the VIP is unreachable here (instead of looping to the router).
  lab_ip "$ns" route replace unreachable "$LAB_VIP4/32" metric 4000
  lab_ip "$ns" -6 route replace unreachable "$LAB_VIP6/128" metric 4000
}

lab_kernel_nat_remove() {
  lab_run "$1" nft delete table inet tunlb_lab 2>/dev/null || true
  # lab_kernel_nat's host routes: more specific than the VIP pool's route into tunlb0
  # (lab_tun_routes), they would make the VIP unreachable for tunlb (or a C forwarder) started
  # in the same lab session after the kernel's NAT.
  lab_ip "$1" route del unreachable "$LAB_VIP4/32" metric 4000 2>/dev/null || true
  lab_ip "$1" -6 route del unreachable "$LAB_VIP6/128" metric 4000 2>/dev/null || true
}

# ---- servers: the return path (NAT: through the entry balancer; DSR: straight to the router) ----

# lab_server_dsr NS DEV GW4 GW6 : DSR backend. The VIPs on lo (packets to them arrive unchanged at
# this node's MAC), not announced on DEV: arp_ignore=1 (answer ARP only for addresses of the
# receiving interface) and arp_announce=2 (ARP with the best local address of DEV, never the
# VIP). IPv6 needs nothing: Linux answers neighbour solicitations only for addresses of the
# receiving interface (ndisc_recv_ns, ipv6_get_ifaddr strict), so fd99::10 on lo stays silent on
# DEV. Replies leave from the VIP via GW (the router), bypassing the balancers.
lab_server_dsr() {
  local ns=$1 dev=$2
  lab_run "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
    "net.ipv4.conf.$dev.arp_ignore=1" "net.ipv4.conf.$dev.arp_announce=2"
  lab_ip "$ns" addr replace "$LAB_VIP4/32" dev lo
  lab_ip "$ns" -6 addr replace "$LAB_VIP6/128" dev lo nodad
  lab_ip "$ns" route replace default via "$3"
  lab_ip "$ns" -6 route replace default via "$4"
}

# lab_server_undo_dsr NS DEV : back from DSR (a NAT `up` over a DSR lab): VIPs off lo, ARP
# defaults. Does nothing on a node that never was a DSR backend.
lab_server_undo_dsr() {
  local ns=$1 dev=$2
  local lo
  lo=$(lab_ip "$ns" addr show dev lo)   # not `| grep -q`: under pipefail its early exit is a SIGPIPE
  [[ $lo == *" $LAB_VIP4/32 "* ]] || return 0
  lab_ip "$ns" addr del "$LAB_VIP4/32" dev lo 2>/dev/null || true
  lab_ip "$ns" -6 addr del "$LAB_VIP6/128" dev lo 2>/dev/null || true
  lab_run "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.all.arp_announce=0 \
    "net.ipv4.conf.$dev.arp_ignore=0" "net.ipv4.conf.$dev.arp_announce=0"
}

# ---- the ECMP entry: BIRD 2 (BGP, BFD, multipath) and keepalived (VRRP gateway) ----
# The daemons run inside the node (namespace, or the VM) with their own config, control socket
# and pid file under DIR (LAB_DAEMON_DIR in the namespace lab, /run/tunlb-lab/daemons on a VM).

# lab_sysctl_ecmp_router NS : the router's kernel hashes a multipath route on the 5-tuple
# (policy 3 = custom fields; 0x0037 = src/dst IP, IP proto, src/dst port), deterministically
# per flow: policy 1 over veth would follow the socket's random hash (one connection's packets
# on several balancers). Both families (IPv6 also hashes the flow label by default: not here).
lab_sysctl_ecmp_router() {
  lab_run "$1" sysctl -qw net.ipv4.fib_multipath_hash_policy=3 net.ipv4.fib_multipath_hash_fields=0x0037 \
    net.ipv6.fib_multipath_hash_policy=3 net.ipv6.fib_multipath_hash_fields=0x0037
}

# lab_bird_router_conf ROUTER_ID IFACE NODE... : BIRD 2 config of the router: two eBGP sessions
# per balancer NODE (one per family, to its lbnet addresses), BFD on IFACE, routes from the
# balancers accepted only for host routes inside the VIP pools (LAB_VIP_POOL4/6), and ECMP: `merge paths` installs one kernel route per
# VIP with one nexthop per announcing balancer. Printed on stdout.
# Both sides' BGP sessions: connect delay 1 s (BIRD's default, 5 s between protocol start and
# the first connection attempt, is most of an ECMP `lab.sh up`), retry 1 s, error wait 1-3 s.
lab_bird_router_conf() {
  local rid=$1 ifc=$2 n; shift 2
  cat <<CONF
# BIRD 2 on the lab router (written by scripts/lab-lib.sh lab_bird_router_conf)
router id $rid;
protocol device { scan time 10; }
protocol bfd {
  interface "$ifc" { min rx interval ${LAB_BFD_INTERVAL_MS} ms; min tx interval ${LAB_BFD_INTERVAL_MS} ms; multiplier ${LAB_BFD_MULTIPLIER}; };
}
protocol kernel kernel4 { ipv4 { import none; export all; }; merge paths on; }
protocol kernel kernel6 { ipv6 { import none; export all; }; merge paths on; }
filter vips4 { if net ~ [ ${LAB_VIP_POOL4}{32,32} ] then accept; reject; }
filter vips6 { if net ~ [ ${LAB_VIP_POOL6}{128,128} ] then accept; reject; }
template bgp balancer {
  local as ${LAB_ROUTER_AS};
  hold time ${LAB_BGP_HOLD_S}; keepalive time 1; connect delay time 1; connect retry time 1; error wait time 1, 3;
  bfd on;
}
CONF
  for n in "$@"; do
    printf 'protocol bgp %s_v4 from balancer { neighbor %s as %s; ipv4 { import filter vips4; export none; }; }\n' "$n" "${LAB_LBNET4[$n]}" "$LAB_LB_AS"
    printf 'protocol bgp %s_v6 from balancer { neighbor %s as %s; ipv6 { import filter vips6; export none; }; }\n' "$n" "${LAB_LBNET6[$n]}" "$LAB_LB_AS"
  done
}

# lab_bird_balancer_conf ROUTER_ID IFACE LOCAL4 LOCAL6 ROUTER4 ROUTER6 : BIRD 2 config of a
# balancer: it learns the routes tunlb writes into kernel table LAB_ANNOUNCE_TABLE (`learn`:
# routes BIRD did not make; the kernel removes them with tunlb0 when the process dies) and
# exports them to the router over eBGP with BFD. Nothing is installed into this node's kernel.
lab_bird_balancer_conf() {
  local rid=$1 ifc=$2 l4=$3 l6=$4 r4=$5 r6=$6 t=$LAB_ANNOUNCE_TABLE
  cat <<CONF
# BIRD 2 on a lab balancer (written by scripts/lab-lib.sh lab_bird_balancer_conf)
router id $rid;
protocol device { scan time 10; }
protocol bfd {
  interface "$ifc" { min rx interval ${LAB_BFD_INTERVAL_MS} ms; min tx interval ${LAB_BFD_INTERVAL_MS} ms; multiplier ${LAB_BFD_MULTIPLIER}; };
}
ipv4 table announce4;
ipv6 table announce6;
protocol kernel announce_in4 { kernel table $t; learn; scan time 10; ipv4 { table announce4; import all; export none; }; }
protocol kernel announce_in6 { kernel table $t; learn; scan time 10; ipv6 { table announce6; import all; export none; }; }
template bgp upstream {
  local as ${LAB_LB_AS};
  hold time ${LAB_BGP_HOLD_S}; keepalive time 1; connect delay time 1; connect retry time 1; error wait time 1, 3;
  bfd on;
}
protocol bgp router_v4 from upstream {
  local $l4 as ${LAB_LB_AS}; neighbor $r4 as ${LAB_ROUTER_AS};
  ipv4 { table announce4; import none; export all; next hop self; };
}
protocol bgp router_v6 from upstream {
  local $l6 as ${LAB_LB_AS}; neighbor $r6 as ${LAB_ROUTER_AS};
  ipv6 { table announce6; import none; export all; next hop self; };
}
CONF
}

# lab_bird_start NS NAME CONF_TEXT DIR [LOGDIR] : (re)start BIRD in the node with
# DIR/bird-NAME.conf, control socket DIR/bird-NAME.ctl, pid file DIR/bird-NAME.pid (stopped by
# that PID), log LOGDIR/bird-NAME.log (LOGDIR defaults to DIR).
lab_bird_start() {
  local ns=$1 name=$2 dir=$4 logdir=${5:-$4}
  mkdir -p "$dir" "$logdir"
  { printf 'log "%s" { info, remote, warning, error, auth, fatal, bug };\n' "$logdir/bird-$name.log"; printf '%s\n' "$3"; } >"$dir/bird-$name.conf"
  lab_bird_stop "$name" "$dir"
  lab_run "$ns" bird -p -c "$dir/bird-$name.conf" || lab_die "bird: bad config $dir/bird-$name.conf"
  # nice -10: BFD (3 x 100 ms) and BGP keepalives must not starve when the lab's own traffic
  # saturates the shared cores (a routing daemon on a real host has its core; see lab.sh's nice
  # for the balancers).
  lab_run "$ns" nice -n -10 bird -c "$dir/bird-$name.conf" -s "$dir/bird-$name.ctl" -P "$dir/bird-$name.pid" 9>&- \
    || lab_die "bird failed to start in ${ns:-this host} (config $dir/bird-$name.conf)"
}

# lab_daemon_running PID : the process exists and is not a zombie. The lab's daemons outlive the
# script that started them and are reaped by init, not at once: `kill -0` succeeds on a zombie.
lab_daemon_running() {
  local st
  st=$(<"/proc/$1/stat") 2>/dev/null || return 1
  st=${st##*) }
  [[ -n $st && ${st:0:1} != Z && ${st:0:1} != X ]]
}

# lab_daemon_stop PIDFILE : stop the daemon recorded in PIDFILE (TERM, then KILL after 3 s), by
# its PID; returns once it has exited (a zombie counts as exited).
lab_daemon_stop() {
  local f=$1 pid i
  [[ -s $f ]] || { rm -f "$f"; return 0; }
  pid=$(<"$f")
  if [[ $pid =~ ^[0-9]+$ ]] && lab_daemon_running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do lab_daemon_running "$pid" || break; sleep 0.05; done
    if lab_daemon_running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}
lab_bird_stop() { lab_daemon_stop "$2/bird-$1.pid"; rm -f "$2/bird-$1.ctl"; }

# lab_keepalived_conf NODE BACK_IF READY_FILE : keepalived config of a balancer: two VRRPv3
# instances (IPv4, IPv6) holding the servers' gateway addresses LAB_GW4 / LAB_GW6 on BACK_IF.
# The instance faults (and a master hands over at once with a priority-0 advert) when tunlb0
# is gone (the balancer process died) or READY_FILE holds a non-zero value (the balancer is not
# ready: starting, leaving, drained, or its event loop stalled).
lab_keepalived_conf() {
  local node=$1 ifc=$2 ready=$3 prio=${LAB_VRRP_PRIO[$1]}
  cat <<CONF
# keepalived on lab balancer $node (written by scripts/lab-lib.sh lab_keepalived_conf)
global_defs {
  router_id $node
  dynamic_interfaces
  vrrp_garp_master_delay 0
  vrrp_garp_master_repeat 2
  vrrp_garp_lower_prio_repeat 0
}
vrrp_track_file tunlb_ready { file "$ready" }
vrrp_instance gw4 {
  version 3
  state BACKUP
  interface $ifc
  virtual_router_id ${LAB_VRRP_ID4}
  priority $prio
  nopreempt
  advert_int ${LAB_VRRP_ADVERT_S}
  virtual_ipaddress { ${LAB_GW4}/${LAB_PLEN4} dev $ifc }
  track_interface { ${LAB_TUN_DEV} }
  track_file { tunlb_ready weight 0 }
}
vrrp_instance gw6 {
  version 3
  state BACKUP
  interface $ifc
  virtual_router_id ${LAB_VRRP_ID6}
  priority $prio
  nopreempt
  advert_int ${LAB_VRRP_ADVERT_S}
  virtual_ipaddress { ${LAB_GW6}/${LAB_PLEN6} dev $ifc }
  track_interface { ${LAB_TUN_DEV} }
  track_file { tunlb_ready weight 0 }
}
CONF
}

# lab_keepalived_start NS NAME CONF_TEXT DIR [LOGDIR] : (re)start keepalived (VRRP only) in the
# node with DIR/keepalived-NAME.conf, in the foreground of a background job (its PID in
# DIR/keepalived-NAME.pid, its log in LOGDIR/keepalived-NAME.log; it forks one VRRP child,
# which exits with it).
lab_keepalived_start() {
  local ns=$1 name=$2 dir=$4 logdir=${5:-$4} pid
  mkdir -p "$dir" "$logdir"
  printf '%s\n' "$3" >"$dir/keepalived-$name.conf"
  lab_keepalived_stop "$name" "$dir"
  lab_run "$ns" keepalived -t -f "$dir/keepalived-$name.conf" >>"$logdir/keepalived-$name.log" 2>&1 \
    || lab_die "keepalived: bad config $dir/keepalived-$name.conf (see $logdir/keepalived-$name.log)"
  if [[ -n $ns ]]; then
    ip netns exec "$ns" nohup nice -n -10 keepalived -n -l -G -D --vrrp -f "$dir/keepalived-$name.conf" \
      -p "$dir/keepalived-$name.run.pid" -r "$dir/keepalived-$name-vrrp.pid" </dev/null >>"$logdir/keepalived-$name.log" 2>&1 9>&- &
  else
    nohup nice -n -10 keepalived -n -l -G -D --vrrp -f "$dir/keepalived-$name.conf" \
      -p "$dir/keepalived-$name.run.pid" -r "$dir/keepalived-$name-vrrp.pid" </dev/null >>"$logdir/keepalived-$name.log" 2>&1 9>&- &
  fi
  pid=$!
  echo "$pid" >"$dir/keepalived-$name.pid"
}
lab_keepalived_stop() { lab_daemon_stop "$2/keepalived-$1.pid"; lab_daemon_stop "$2/keepalived-$1-vrrp.pid"; rm -f "$2/keepalived-$1.run.pid"; }
