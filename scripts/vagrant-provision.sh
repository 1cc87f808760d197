#!/usr/bin/env bash
# tunlb Vagrant lab: provisions ONE VM of the lab topology (one VM per lab node: client, router,
# lb1..lb3, srv1..srv3; names and addresses from scripts/lab-topology.sh, the one source of
# truth) with the same per-node steps as the namespace lab (scripts/lab-lib.sh, called with ""
# as the namespace: act on this machine). The Vagrantfile runs it in every VM and reads the
# NIC plan from it (--plan), so the VMs' networks, MAC addresses and interface names come from
# here too.
#
# Usage: scripts/vagrant-provision.sh [--dry-run] [--netns NS] NODE      everything (packages, network, services)
#        scripts/vagrant-provision.sh [--dry-run] [--netns NS] --network NODE       network only (the boot unit)
#        scripts/vagrant-provision.sh [--dry-run] [--netns NS] --tun-routes lbN PID  routes into tunlb0 (ExecStartPost)
#        scripts/vagrant-provision.sh --plan                  NIC plan: "node net ifname addr4/plen addr6/plen mac" per line
#   --dry-run   print the commands (one "+ cmd" line each) instead of running them; needs no root
#   --netns NS  act on network namespace NS instead of this machine (testing the VM steps in
#               namespaces: native-tests/vagrant.test.ts); only with --network / --tun-routes
#   --entry E   ecmp (default: the router's BIRD spreads the VIPs over the balancers that
#               announce them; the servers' gateway is the balancers' VRRP address) or single
#               (the VIPs routed to lb1, the servers answer through lb1); also TUNLB_LAB_ENTRY
# Environment: TUNLB_CLUSTER_KEY_HEX (balancers: the cluster key, hex; the Vagrantfile passes
# one key to every VM), TUNLB_REPO (default: this script's repository, /vagrant in the VMs).
#
# What a VM gets, by role:
#   every VM   the lab NICs renamed by MAC to the lab's names (front0 / lbnet0 / back0; a .link
#              file keeps the name across reboots), addresses with lab_addr, sysctls, routes,
#              and tunlb-lab-net.service, which re-applies the network part at every boot.
#   client     curl, iperf3, node 20 + npm ci (scripts/traffic.ts).
#   router     forwarding; ecmp: bird2 and tunlb-lab-bird.service (BIRD with lab_bird_router_conf:
#              eBGP + BFD with every balancer, one multipath route per VIP), the 5-tuple
#              multipath hash; single: the VIP routed to the entry balancer's lbnet address.
#   lbN        node 20 + scripts/install-deps.sh (npm ci, the native addon, the build);
#              /etc/tunlb/cluster.key; tunlb-lab.service: `tunlb run --config config/lab.yaml
#              --id lbN` (the lab's own config), then lab_tun_routes once tunlb0 exists;
#              ecmp: tunlb-lab-bird.service (BIRD announcing table 101, lab_bird_balancer_conf)
#              and tunlb-lab-keepalived.service (the servers' VRRP gateway, lab_keepalived_conf).
#   srvN       node 20 + npm ci; tunlb-lab-server.service (scripts/lab-server.ts) and
#              tunlb-lab-iperf3.service (iperf3 -s).
# Differences from the namespace lab (on purpose): a VM keeps its management NIC (eth0, Vagrant's)
# and its default route, so instead of "default via <lab router>" the lab routes cover the lab
# prefixes (10.99.0.0/16, fd99::/16); the client's and servers' lab NICs are named after their
# network (front0 / back0: eth0 is the management NIC); the router's lbnet/back NICs are
# lbnet0/back0 (the virtual networks are the switches, there are no bridges in the router).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${TUNLB_REPO:-$(cd "$HERE/.." && pwd)}
# shellcheck source=scripts/lab-topology.sh
source "$REPO/scripts/lab-topology.sh"
# shellcheck source=scripts/lab-lib.sh
source "$REPO/scripts/lab-lib.sh"
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

DRY=0 NS="" MODE=all NODE="" TUN_PID=""
ENTRY=${TUNLB_LAB_ENTRY:-ecmp}
LAB_SUPER4=10.99.0.0/16           # every lab prefix (VIP, front, lbnet, back): routed via the lab
LAB_SUPER6=fd99::/16
NODE_MAJOR=20
UNIT_DIR=/etc/systemd/system

usage() { sed -n '/^# Usage:/,/^# Environment/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---- running commands: for real, or printed (--dry-run) ----
# host CMD...: a command that is not about the node's network (packages, files, systemd).
host() {
  if ((DRY)); then printf '+ %s\n' "$*"; return 0; fi
  "$@"
}
# write_file PATH MODE < content
write_file() {
  local path=$1 mode=$2 content; content=$(cat)
  if ((DRY)); then printf '+ write %s (mode %s):\n%s\n' "$path" "$mode" "$(sed 's/^/|  /' <<<"$content")"; return 0; fi
  mkdir -p "$(dirname "$path")"
  (umask 077 && printf '%s\n' "$content" >"$path.tmp.$$")
  chmod "$mode" "$path.tmp.$$"
  mv -f "$path.tmp.$$" "$path"
}

# In dry-run mode the lab-lib steps print instead of acting: lab_run / lab_ip are the only
# places lab-lib.sh touches the node.
# `ip rule del` answers "no such rule" (1) in a dry run, so lab-lib's delete-until-gone loops
# print one line and stop.
dry_overrides() {
  lab_run() { shift; printf '+ %s\n' "$*"; }
  lab_ip() {
    shift
    printf '+ ip %s\n' "$*"
    [[ " $* " != *" rule del "* ]]
  }
}

# ---- the plan: which NICs each node has (from lab-topology.sh) ----
is_in() { local x=$1; shift; local y; for y in "$@"; do [[ $y == "$x" ]] && return 0; done; return 1; }
role_of() {
  if [[ $1 == "$LAB_CLIENT" ]]; then echo client
  elif [[ $1 == "$LAB_ROUTER" ]]; then echo router
  elif is_in "$1" "${LAB_BALANCERS[@]}"; then echo balancer
  elif is_in "$1" "${LAB_SERVERS[@]}"; then echo server
  else return 1; fi
}
all_nodes() { echo "$LAB_CLIENT" "$LAB_ROUTER" "${LAB_BALANCERS[@]}" "${LAB_SERVERS[@]}"; }

# The NIC name a lab network gets in a VM (from the topology's interface names).
net_ifname() {
  case $1 in
    front) echo "$LAB_IF_ROUTER_FRONT" ;;
    lbnet) echo "$LAB_IF_LB_LBNET" ;;
    back) echo "$LAB_IF_LB_BACK" ;;
  esac
}

# A stable, locally administered MAC (QEMU's 52:54:00 prefix) from the IPv4 address 10.99.N.H:
# 52:54:00:63:0N:HH (the address's last three bytes in hex; 0x63 = 99). The Vagrantfile gives
# each NIC this MAC (through --plan); the VM finds its NICs by it.
mac_of() {
  local a b c d; IFS=. read -r a b c d <<<"$1"
  printf '52:54:00:%02x:%02x:%02x' "$b" "$c" "$d"
}

# nics NODE: "net addr4 addr6" per lab NIC of the node.
nics() {
  local n=$1
  case $(role_of "$n") in
    client) echo "front $LAB_CLIENT_FRONT4 $LAB_CLIENT_FRONT6" ;;
    router)
      echo "front $LAB_ROUTER_FRONT4 $LAB_ROUTER_FRONT6"
      echo "lbnet $LAB_ROUTER_LBNET4 $LAB_ROUTER_LBNET6"
      echo "back $LAB_ROUTER_BACK4 $LAB_ROUTER_BACK6" ;;
    balancer)
      echo "lbnet ${LAB_LBNET4[$n]} ${LAB_LBNET6[$n]}"
      echo "back ${LAB_BACK4[$n]} ${LAB_BACK6[$n]}" ;;
    server) echo "back ${LAB_BACK4[$n]} ${LAB_BACK6[$n]}" ;;
  esac
}

cmd_plan() {
  local n net a4 a6
  for n in $(all_nodes); do
    while read -r net a4 a6; do
      printf '%s %s %s %s/%s %s/%s %s\n' "$n" "$net" "$(net_ifname "$net")" "$a4" "$LAB_PLEN4" "$a6" "$LAB_PLEN6" "$(mac_of "$a4")"
    done < <(nics "$n")
  done
}

# ---- network (run at every boot by tunlb-lab-net.service) ----

# name_nic MAC NAME: rename the NIC with this MAC to NAME (down, rename), and keep the name
# across reboots with a systemd .link file (VMs only).
name_nic() {
  local mac=$1 want=$2 cur
  if ((DRY)); then
    printf '+ ip link set dev <nic with MAC %s> name %s\n' "$mac" "$want"
  else
    local i
    # awk reads all of ip's output (no early `exit`): under pipefail, a reader that quits first
    # makes ip die of SIGPIPE and the whole provisioning exit 141 (seen in CI).
    for ((i = 0; i < 50; i++)); do   # at boot, the NIC may still be on its way (udev)
      cur=$(lab_ip "$NS" -o link show | awk -v m="$mac" '!found && tolower($0) ~ "link/ether " m " " { sub(/:$/, "", $2); sub(/@.*/, "", $2); print $2; found = 1 }')
      [[ -n $cur ]] && break
      sleep 0.2
    done
    [[ -n $cur ]] || lab_die "no NIC with MAC $mac on ${NS:-this machine} (the Vagrantfile gives the lab NICs these MACs; see --plan)"
    if [[ $cur != "$want" ]]; then
      lab_ip "$NS" link set dev "$cur" down
      lab_ip "$NS" link set dev "$cur" name "$want"
    fi
  fi
  if [[ -z $NS ]]; then
    write_file "/etc/systemd/network/10-tunlb-$want.link" 0644 <<EOF
# tunlb lab (scripts/vagrant-provision.sh): the lab NIC with this MAC is $want
[Match]
MACAddress=$mac
[Link]
Name=$want
EOF
  fi
}

# The lab NICs of the node: named, addressed (lab_addr), reverse-path filter off on each.
net_nics() {
  local n=$1 net a4 a6 dev
  while read -r net a4 a6; do
    dev=$(net_ifname "$net")
    name_nic "$(mac_of "$a4")" "$dev"
    lab_addr "$NS" "$dev" "$a4" "$a6"
    lab_run "$NS" sysctl -qw "net.ipv4.conf.$dev.rp_filter=0"
  done < <(nics "$n")
}

net_client() {
  lab_sysctl_host "$NS"
  net_nics "$1"
  lab_ip "$NS" route replace "$LAB_SUPER4" via "$LAB_ROUTER_FRONT4"
  lab_ip "$NS" -6 route replace "$LAB_SUPER6" via "$LAB_ROUTER_FRONT6"
}

net_router() {
  lab_sysctl_forwarder "$NS"
  net_nics "$1"
  if [[ $ENTRY == ecmp ]]; then
    # The VIP routes are BIRD's (tunlb-lab-bird.service); the kernel hashes on the 5-tuple.
    lab_sysctl_ecmp_router "$NS"
  else
    lab_ip "$NS" route replace "$LAB_VIP4/32" via "${LAB_LBNET4[$LAB_ENTRY_BALANCER]}"
    lab_ip "$NS" -6 route replace "$LAB_VIP6/128" via "${LAB_LBNET6[$LAB_ENTRY_BALANCER]}"
  fi
}

net_balancer() {
  lab_sysctl_forwarder "$NS"
  net_nics "$1"
  lab_ip "$NS" route replace "$LAB_SUPER4" via "$LAB_ROUTER_LBNET4"
  lab_ip "$NS" -6 route replace "$LAB_SUPER6" via "$LAB_ROUTER_LBNET6"
  lab_ip "$NS" route replace 224.0.0.0/4 dev "$LAB_IF_LB_LBNET"      # peer multicast stays on lbnet
  lab_tun_fallbacks "$NS" "$LAB_IF_LB_BACK"
}

net_server() {
  lab_sysctl_host "$NS"
  net_nics "$1"
  # NAT mode: replies go back through the balancers' VRRP gateway (ecmp) or the entry balancer.
  if [[ $ENTRY == ecmp ]]; then
    lab_ip "$NS" route replace "$LAB_SUPER4" via "$LAB_GW4"
    lab_ip "$NS" -6 route replace "$LAB_SUPER6" via "$LAB_GW6"
  else
    lab_ip "$NS" route replace "$LAB_SUPER4" via "${LAB_BACK4[$LAB_ENTRY_BALANCER]}"
    lab_ip "$NS" -6 route replace "$LAB_SUPER6" via "${LAB_BACK6[$LAB_ENTRY_BALANCER]}"
  fi
}

cmd_network() {
  local n=$1
  case $(role_of "$n") in
    client) net_client "$n" ;;
    router) net_router "$n" ;;
    balancer) net_balancer "$n" ;;
    server) net_server "$n" ;;
  esac
  lab_log "network of $n configured${NS:+ (namespace $NS)}"
}

# ---- the balancer's TUN routes, once tunlb created tunlb0 (ExecStartPost) ----
cmd_tun_routes() {
  local n=$1 pid=$2 rc=0
  [[ $(role_of "$n") == balancer ]] || lab_die "--tun-routes is for balancers (${LAB_BALANCERS[*]}), not $n"
  if ((DRY)); then
    printf '+ lab_wait_tun %s %s 30\n' "${NS:-\"\"}" "$pid"
  else
    lab_wait_tun "$NS" "$pid" 30 || rc=$?
    case $rc in
      0) ;;
      1) lab_die "$n (pid $pid) did not create $LAB_TUN_DEV within 30 s" ;;
      *) lab_die "$n (pid $pid) exited before creating $LAB_TUN_DEV" ;;
    esac
  fi
  lab_tun_routes "$NS" "$LAB_IF_LB_BACK"
  lab_log "routes into $LAB_TUN_DEV set for $n"
}

# ---- packages ----
ensure_node() {
  if ((DRY)); then
    printf '+ install node %s (NodeSource apt repository) unless node >= %s is installed\n' "$NODE_MAJOR" "$NODE_MAJOR"
    return 0
  fi
  local have=0
  if command -v node >/dev/null 2>&1; then have=$(node -p 'process.versions.node.split(".")[0]'); fi
  ((have >= NODE_MAJOR)) && return 0
  lab_log "installing node $NODE_MAJOR (NodeSource)"
  lab_ensure_tools curl:curl gpg:gpg
  install -d -m 0755 /etc/apt/keyrings
  curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /etc/apt/keyrings/nodesource.gpg
  echo "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_$NODE_MAJOR.x nodistro main" >/etc/apt/sources.list.d/nodesource.list
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
}

packages() {
  local n=$1
  if ((DRY)); then
    printf '+ apt-get update (once)\n'
  elif [[ ! -e /var/lib/apt/periodic/tunlb-updated ]]; then
    apt-get update -qq && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/tunlb-updated
  fi
  case $(role_of "$n") in
    router)
      if ((DRY)); then printf '+ lab_ensure_tools ip:iproute2 tcpdump:tcpdump bird:bird2\n'; else lab_ensure_tools ip:iproute2 tcpdump:tcpdump bird:bird2; fi ;;
    *)
      ensure_node
      # Debian packages + npm ci (native addon, build): exactly what CI and the namespace lab use.
      host bash "$REPO/scripts/install-deps.sh" ;;
  esac
}

# ---- services ----
unit_net() {
  local n=$1
  write_file "$UNIT_DIR/tunlb-lab-net.service" 0644 <<EOF
[Unit]
Description=tunlb lab: network of node $n (scripts/vagrant-provision.sh --network)
# after udev named the NICs and ifupdown brought up the management NIC (the step waits for
# lab NICs that are still on their way)
After=systemd-udevd.service networking.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/bash $REPO/scripts/vagrant-provision.sh --network $n

[Install]
WantedBy=multi-user.target
EOF
}

unit_balancer() {
  local n=$1
  write_file "$UNIT_DIR/tunlb-lab.service" 0644 <<EOF
[Unit]
Description=tunlb balancer $n (lab configuration config/lab.yaml)
After=network-online.target tunlb-lab-net.service
Wants=network-online.target
Requires=tunlb-lab-net.service

[Service]
Type=simple
# config/lab.yaml names /run/tunlb-lab/cluster.key; the key lives in /etc/tunlb.
RuntimeDirectory=tunlb-lab
RuntimeDirectoryMode=0700
# keep the ready file (announce.ready_file, keepalived's track_file) across restarts
RuntimeDirectoryPreserve=yes
ExecStartPre=/usr/bin/install -m 0600 /etc/tunlb/cluster.key /run/tunlb-lab/cluster.key
ExecStart=/usr/bin/env node $REPO/bin/tunlb run --config $REPO/config/lab.yaml --id $n
ExecStartPost=/bin/bash $REPO/scripts/vagrant-provision.sh --tun-routes $n \$MAINPID
Restart=on-failure
RestartSec=1
KillSignal=SIGTERM
TimeoutStopSec=10

[Install]
WantedBy=multi-user.target
EOF
}

unit_server() {
  local n=$1
  write_file "$UNIT_DIR/tunlb-lab-server.service" 0644 <<EOF
[Unit]
Description=tunlb lab server $n (scripts/lab-server.ts: HTTP :$LAB_HTTP_PORT, UDP echo :$LAB_UDP_ECHO_PORT, TCP echo :$LAB_TCP_ECHO_PORT)
After=network-online.target tunlb-lab-net.service
Wants=network-online.target

[Service]
WorkingDirectory=$REPO
ExecStart=/usr/bin/env node --import tsx $REPO/scripts/lab-server.ts --name $n
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
  write_file "$UNIT_DIR/tunlb-lab-iperf3.service" 0644 <<EOF
[Unit]
Description=tunlb lab: iperf3 server on :$LAB_IPERF_PORT
After=network-online.target tunlb-lab-net.service

[Service]
ExecStart=/usr/bin/iperf3 -s -p $LAB_IPERF_PORT
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
}

# tunlb-lab-bird.service: BIRD in the foreground with the lab's config for this node (the same
# generator as the namespace lab), its control socket /run/tunlb-lab-bird/bird.ctl.
unit_bird() {
  local n=$1 conf
  if [[ $(role_of "$n") == router ]]; then
    conf=$(lab_bird_router_conf "$LAB_ROUTER_LBNET4" "$LAB_IF_LB_LBNET" "${LAB_BALANCERS[@]}")
  else
    conf=$(lab_bird_balancer_conf "${LAB_LBNET4[$n]}" "$LAB_IF_LB_LBNET" "${LAB_LBNET4[$n]}" "${LAB_LBNET6[$n]}" "$LAB_ROUTER_LBNET4" "$LAB_ROUTER_LBNET6")
  fi
  write_file /etc/tunlb/bird.conf 0644 <<<"$conf"
  write_file "$UNIT_DIR/tunlb-lab-bird.service" 0644 <<EOF
[Unit]
Description=tunlb lab: BIRD 2 on $n (BGP + BFD, scripts/lab-lib.sh)
After=network-online.target tunlb-lab-net.service
Wants=network-online.target

[Service]
RuntimeDirectory=tunlb-lab-bird
ExecStartPre=/usr/sbin/bird -p -c /etc/tunlb/bird.conf
ExecStart=/usr/sbin/bird -f -c /etc/tunlb/bird.conf -s /run/tunlb-lab-bird/bird.ctl
Restart=on-failure
Nice=-10

[Install]
WantedBy=multi-user.target
EOF
}

# tunlb-lab-keepalived.service: the servers' VRRP gateway among the balancers (NAT).
unit_keepalived() {
  local n=$1
  write_file /etc/tunlb/keepalived.conf 0644 <<<"$(lab_keepalived_conf "$n" "$LAB_IF_LB_BACK" "${LAB_READY_FILE_PATTERN//\{id\}/$n}")"
  write_file "$UNIT_DIR/tunlb-lab-keepalived.service" 0644 <<EOF
[Unit]
Description=tunlb lab: keepalived on $n (the servers' VRRP gateway, scripts/lab-lib.sh)
After=network-online.target tunlb-lab-net.service

[Service]
ExecStart=/usr/sbin/keepalived -n -l -G --vrrp -f /etc/tunlb/keepalived.conf -p /run/tunlb-lab-keepalived.pid -r /run/tunlb-lab-keepalived-vrrp.pid
Restart=on-failure
Nice=-10

[Install]
WantedBy=multi-user.target
EOF
}

cluster_key() {
  if [[ -n ${TUNLB_CLUSTER_KEY_HEX:-} ]]; then
    [[ $TUNLB_CLUSTER_KEY_HEX =~ ^([0-9a-fA-F]{2}){32,}$ ]] || lab_die "TUNLB_CLUSTER_KEY_HEX must be at least 32 bytes of hex"
    if ((DRY)); then printf '+ write /etc/tunlb/cluster.key (mode 0600): the key from TUNLB_CLUSTER_KEY_HEX\n'; return 0; fi
    write_file /etc/tunlb/cluster.key 0600 <<<"$TUNLB_CLUSTER_KEY_HEX"
  elif ((DRY)); then
    printf '+ keep /etc/tunlb/cluster.key (TUNLB_CLUSTER_KEY_HEX not set)\n'
  else
    [[ -s /etc/tunlb/cluster.key ]] || lab_die "no cluster key: set TUNLB_CLUSTER_KEY_HEX (the Vagrantfile does), same value on every balancer"
  fi
}

services() {
  local n=$1
  unit_net "$n"
  case $(role_of "$n") in
    balancer)
      cluster_key
      unit_balancer "$n"
      if [[ $ENTRY == ecmp ]]; then
        unit_bird "$n"
        unit_keepalived "$n"
        host systemctl daemon-reload
        host systemctl enable tunlb-lab-net.service tunlb-lab.service tunlb-lab-bird.service tunlb-lab-keepalived.service
        host systemctl restart tunlb-lab-bird.service tunlb-lab-keepalived.service tunlb-lab.service
      else
        host systemctl daemon-reload
        host systemctl enable tunlb-lab-net.service tunlb-lab.service
        host systemctl restart tunlb-lab.service
      fi ;;
    server)
      unit_server "$n"
      host systemctl daemon-reload
      host systemctl enable tunlb-lab-net.service tunlb-lab-server.service tunlb-lab-iperf3.service
      host systemctl restart tunlb-lab-server.service tunlb-lab-iperf3.service ;;
    router)
      if [[ $ENTRY == ecmp ]]; then
        unit_bird "$n"
        host systemctl daemon-reload
        host systemctl enable tunlb-lab-net.service tunlb-lab-bird.service
        host systemctl restart tunlb-lab-bird.service
      else
        host systemctl daemon-reload
        host systemctl enable tunlb-lab-net.service
      fi ;;
    *)
      host systemctl daemon-reload
      host systemctl enable tunlb-lab-net.service ;;
  esac
}

cmd_all() {
  local n=$1
  packages "$n"
  cmd_network "$n"
  services "$n"
  lab_log "$n provisioned"
}

# ---- arguments ----
while (($#)); do
  case $1 in
    --dry-run) DRY=1; shift ;;
    --netns) NS=${2:-}; [[ -n $NS ]] || usage; shift 2 ;;
    --entry) ENTRY=${2:-}; shift 2 || usage ;;
    --network) MODE=network; shift ;;
    --tun-routes) MODE=tun-routes; shift ;;
    --plan) MODE=plan; shift ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) if [[ -z $NODE ]]; then NODE=$1; elif [[ $MODE == tun-routes && -z $TUN_PID ]]; then TUN_PID=$1; else usage; fi; shift ;;
  esac
done

[[ $ENTRY == ecmp || $ENTRY == single ]] || lab_die "--entry must be ecmp or single"
if [[ $MODE == plan ]]; then cmd_plan; exit 0; fi
[[ -n $NODE ]] || usage
role_of "$NODE" >/dev/null || lab_die "unknown node '$NODE' (one of: $(all_nodes))"
[[ -z $NS || $MODE != all ]] || lab_die "--netns is for --network and --tun-routes (packages and services are per machine)"
if ((DRY)); then dry_overrides; else [[ $(id -u) == 0 ]] || lab_die "provisioning needs root (use --dry-run to see the steps)"; fi

case $MODE in
  all) cmd_all "$NODE" ;;
  network) cmd_network "$NODE" ;;
  tun-routes)
    [[ $TUN_PID =~ ^[0-9]+$ ]] || lab_die "usage: --tun-routes lbN PID"
    cmd_tun_routes "$NODE" "$TUN_PID" ;;
esac
