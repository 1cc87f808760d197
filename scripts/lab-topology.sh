# shellcheck shell=bash disable=SC2034
# tunlb lab topology: THE one source of truth for node names, interface names and addresses
# (docs/contracts.md, "Lab addressing"). Sourced by scripts/lab.sh (namespaces on one machine)
# and by the Vagrant provisioning (one VM per node). Defines variables only: no commands, no
# side effects, safe to source from inside a function (arrays are declared global).
#
#   network  IPv4          IPv6          members
#   VIP      10.99.0.10    fd99::10      routed by the router to the entry balancer (lb1)
#   front    10.99.1.0/24  fd99:1::/64   client .2, router .1
#   lbnet    10.99.2.0/24  fd99:2::/64   router .1, lb1 .11, lb2 .12, lb3 .13 (+ peer traffic)
#   back     10.99.3.0/24  fd99:3::/64   router .1, lb1..3 .11-.13, srv1..3 .21-.23

# ---- nodes (namespace = "tunlb-" + node; in the VMs the node name is the host name) ----
LAB_NS_PREFIX=tunlb-
LAB_CLIENT=client
LAB_ROUTER=router
declare -ga LAB_BALANCERS=(lb1 lb2 lb3)
declare -ga LAB_SERVERS=(srv1 srv2 srv3)
LAB_ENTRY_BALANCER=lb1            # the router sends the VIP here; servers' default route (NAT mode)

# ---- virtual service ----
LAB_VIP4=10.99.0.10
LAB_VIP6=fd99::10
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
