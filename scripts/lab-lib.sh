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
  lab_ip "$ns" route replace "$LAB_VIP4/32" dev "$LAB_TUN_DEV"
  lab_ip "$ns" -6 route replace "$LAB_VIP6/128" dev "$LAB_TUN_DEV"
  lab_ip "$ns" route replace default dev "$LAB_TUN_DEV" table "$t"
  lab_ip "$ns" -6 route replace default dev "$LAB_TUN_DEV" table "$t"
  lab_tun_fallbacks "$ns" "$back"
}

# The parts that do not depend on tunlb0 existing (rules, fallback routes).
lab_tun_fallbacks() {
  local ns=$1 back=$2 t=$LAB_RETURN_TABLE
  lab_ip "$ns" route replace unreachable "$LAB_VIP4/32" metric 4000
  lab_ip "$ns" -6 route replace unreachable "$LAB_VIP6/128" metric 4000
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
  lab_ip "$ns" route del "$LAB_VIP4/32" 2>/dev/null || true
  lab_ip "$ns" route del "$LAB_VIP4/32" 2>/dev/null || true
  lab_ip "$ns" -6 route del "$LAB_VIP6/128" 2>/dev/null || true
  lab_ip "$ns" -6 route del "$LAB_VIP6/128" 2>/dev/null || true
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
