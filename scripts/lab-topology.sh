# shellcheck shell=bash disable=SC2034
# tunlb lab topology: THE one source of truth for node names, interface names and addresses
# (docs/contracts.md, "Lab addressing"). Sourced by scripts/lab.sh (namespaces on one machine)
# and by the Vagrant provisioning (one VM per node). Defines variables only: no commands, no
# side effects, safe to source from inside a function (arrays are declared global).
#
#   network  IPv4          IPv6          members
#   VIP      10.99.0.10    fd99::10      entry ecmp (default): announced by every ready balancer
#                                        (BIRD, eBGP + BFD) and spread by the router's ECMP;
#                                        entry single: routed by the router to lb1 only
#   front    10.99.1.0/24  fd99:1::/64   client .2, router .1
#   lbnet    10.99.2.0/24  fd99:2::/64   router .1, lb1 .11, lb2 .12, lb3 .13 (+ peer traffic)
#   back     10.99.3.0/24  fd99:3::/64   router .1, lb1..3 .11-.13, srv1..3 .21-.23

# ---- nodes (namespace = "tunlb-" + node; in the VMs the node name is the host name) ----
LAB_NS_PREFIX=tunlb-
LAB_CLIENT=client
LAB_ROUTER=router
declare -ga LAB_BALANCERS=(lb1 lb2 lb3)
declare -ga LAB_SERVERS=(srv1 srv2 srv3)
LAB_ENTRY_BALANCER=lb1            # --entry single: the router sends the VIP here; servers' default route (NAT)

# ---- virtual service ----
LAB_VIP4=10.99.0.10
LAB_VIP6=fd99::10
# The VIP pools: the lab router accepts host routes (a VIP each) from the balancers only inside
# these (a VIP added by a reload is announced too).
LAB_VIP_POOL4=10.99.0.0/24
LAB_VIP_POOL6=fd99::/64
LAB_HTTP_PORT=80                  # lab-server.ts: HTTP, answers "<name>\n", /bytes?n=N
LAB_UDP_ECHO_PORT=5353            # lab-server.ts: UDP echo, reply prefixed with "<name> "
LAB_TCP_ECHO_PORT=7               # lab-server.ts: TCP echo (RFC 862)
LAB_IPERF_PORT=5201               # iperf3 -s on every server

# ---- networks ----
LAB_FRONT_NET4=10.99.1.0/24;  LAB_FRONT_NET6=fd99:1::/64
LAB_LBNET_NET4=10.99.2.0/24;  LAB_LBNET_NET6=fd99:2::/64
LAB_BACK_NET4=10.99.3.0/24;   LAB_BACK_NET6=fd99:3::/64
LAB_PLEN4=24; LAB_PLEN6=64

# ---- balancer peer traffic (on lbnet) ----
LAB_MCAST_GROUP4=239.99.0.1
LAB_MCAST_CTRL_PORT=7946          # flow records / control
LAB_MCAST_DATA_PORT=7947          # encapsulated packets
# MTU of lbnet (namespace lab): jumbo frames on the balancer network, as GLB Director advises
# for its encapsulation: a 64 KiB GSO super-packet encapsulated to a peer is split into ~8
# datagrams instead of ~45 (peer-served DSR/NAT uploads; bench/dataplane/RESULTS.md). Client
# packets crossing lbnet stay within the front network's 1500.
LAB_LBNET_MTU=${LAB_LBNET_MTU:-9000}

# ---- ECMP entry (--entry ecmp, the default): BGP + BFD (BIRD 2) and the servers' VRRP gateway ----
# Each balancer announces the VIPs it is ready to serve: tunlb writes `VIP dev tunlb0` into
# kernel table LAB_ANNOUNCE_TABLE (config: announce.table) and its BIRD learns that table and
# exports it to the router by eBGP (one session per family over lbnet, BFD on). The router's
# BIRD installs one multipath route per VIP; its kernel hashes on the 5-tuple.
LAB_ANNOUNCE_TABLE=101            # must equal announce.table in config/lab*.yaml
LAB_ROUTER_AS=65000
LAB_LB_AS=65001                   # every balancer: one AS (equal AS paths: ECMP at the router)
LAB_BFD_INTERVAL_MS=100           # BFD tx/rx interval; detection = interval x multiplier
LAB_BFD_MULTIPLIER=3
LAB_BGP_HOLD_S=3                  # BGP hold time (BFD detects first; this is the fallback)
# NAT return path: the servers' default gateway is a VRRP address (keepalived, VRRPv3) held by
# one live balancer; keepalived tracks tunlb0 (gone with the process) and the balancer's
# readiness file, so the gateway moves when the balancer dies, leaves or stalls.
LAB_GW4=10.99.3.10;  LAB_GW6=fd99:3::10
LAB_VRRP_ID4=51; LAB_VRRP_ID6=52
LAB_VRRP_ADVERT_S=0.05            # VRRPv3 advert interval (s); master down after ~3 x advert
declare -gA LAB_VRRP_PRIO=([lb1]=150 [lb2]=140 [lb3]=130)

# ---- interface names ----
LAB_TUN_DEV=tunlb0                # created by the balancer process in every balancer node
LAB_RETURN_TABLE=100              # NAT mode: packets from servers on the back interface -> tunlb0
LAB_BR_LBNET=br-lb                # bridges live in the router (namespace lab) / are the lbnet switch
LAB_BR_BACK=br-back
LAB_IF_CLIENT_FRONT=eth0          # client's front interface
LAB_IF_ROUTER_FRONT=front0        # router's front interface
LAB_IF_LB_LBNET=lbnet0            # balancer's interface on lbnet
LAB_IF_LB_BACK=back0              # balancer's interface on back
LAB_IF_SRV_BACK=eth0              # server's interface on back
# router-side bridge ports (namespace lab only): "<node>-lb" on br-lb, "<node>-bk" on br-back

# ---- addresses (per node and network) ----
LAB_CLIENT_FRONT4=10.99.1.2;  LAB_CLIENT_FRONT6=fd99:1::2
LAB_ROUTER_FRONT4=10.99.1.1;  LAB_ROUTER_FRONT6=fd99:1::1
LAB_ROUTER_LBNET4=10.99.2.1;  LAB_ROUTER_LBNET6=fd99:2::1
LAB_ROUTER_BACK4=10.99.3.1;   LAB_ROUTER_BACK6=fd99:3::1     # for DSR later
declare -gA LAB_LBNET4=([lb1]=10.99.2.11 [lb2]=10.99.2.12 [lb3]=10.99.2.13)
declare -gA LAB_LBNET6=([lb1]=fd99:2::11 [lb2]=fd99:2::12 [lb3]=fd99:2::13)
declare -gA LAB_BACK4=([lb1]=10.99.3.11 [lb2]=10.99.3.12 [lb3]=10.99.3.13
                       [srv1]=10.99.3.21 [srv2]=10.99.3.22 [srv3]=10.99.3.23)
declare -gA LAB_BACK6=([lb1]=fd99:3::11 [lb2]=fd99:3::12 [lb3]=fd99:3::13
                       [srv1]=fd99:3::21 [srv2]=fd99:3::22 [srv3]=fd99:3::23)

# ---- state (namespace lab on one machine) ----
LAB_DIR=/run/tunlb-lab      # pids/, logs/, cluster.key (32 bytes, 0600), lab.yaml; config/lab.yaml names the key
LAB_CLUSTER_KEY=$LAB_DIR/cluster.key
LAB_DAEMON_DIR=$LAB_DIR/daemons   # per node: bird-NODE.conf/.ctl/.pid, keepalived-NODE.conf/.pid
# The balancer's readiness file (announce.ready_file in config/lab*.yaml; "{id}" = lbN): 0 while
# it announces, 1 otherwise. keepalived's track_file reads it.
LAB_READY_FILE_PATTERN=$LAB_DIR/ready-{id}
