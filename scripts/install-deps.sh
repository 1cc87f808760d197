#!/usr/bin/env bash
# Installs what tunlb needs on a fresh Debian machine (root), then the npm packages and the
# native addon (`npm ci` runs node-gyp for binding.gyp and `npm run build` via `prepare`).
# Idempotent: packages already present are not reinstalled.
#   usage: scripts/install-deps.sh   (chromium: the status-page test; vagrant + vagrant-libvirt: `vagrant validate` of the VM lab;
#   hping3: the bulk-sync lab test's flow generator; bird2 and keepalived: the lab's ECMP entry, BGP + BFD and the servers' VRRP gateway;
#   tshark: the Wireshark dissector's tests, test/capture/wireshark-dissector.test.ts and native-tests/wireshark.test.ts)
set -euo pipefail
cd "$(dirname "$0")/.."

# vagrant-libvirt: the Vagrantfile's default provider (libvirt). Without it `vagrant validate`
# finds no usable provider; it is a plugin only (no libvirtd, no VM is started here).
# prometheus: only for its `promtool` (the tests check the /metrics scrape, the alert rules and
# the Grafana dashboard's queries with it); its server is never started (masked below).
pkgs=(iproute2 nftables tcpdump iperf3 hping3 libpcap-dev curl procps python3 make g++ chromium vagrant vagrant-libvirt bird2 keepalived prometheus tshark)

missing=()
for p in "${pkgs[@]}"; do
  # a string match, not `| grep -q` (its early exit can SIGPIPE the writer under pipefail)
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"install ok installed"* ]] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # wireshark-common asks whether non-root users may capture (a setuid dumpcap); answer no, so
  # the install never stops at a prompt (tunlb's tests read files as root).
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
  # The prometheus package would start a Prometheus server under systemd: mask its unit first
  # (a masked unit is neither enabled nor started by the package's scripts).
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl mask prometheus.service >/dev/null 2>&1 || true
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The lab runs its own BIRD and keepalived inside its namespaces (scripts/lab-lib.sh); the
  # instances the packages just enabled on this host (systemd) are not ours to keep running.
  if [[ -d /run/systemd/system ]]; then
    for p in "${missing[@]}"; do
      case $p in
        bird2) systemctl disable --now bird.service >/dev/null 2>&1 || true ;;
        keepalived) systemctl disable --now keepalived.service >/dev/null 2>&1 || true ;;
      esac
    done
  fi
fi

# npm ci: exact lockfile versions, runs the native build (binding.gyp) and `prepare` (tsc build).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ ! -f build/Release/tunlb_native.node ]; then
  npm ci --no-audit --no-fund
else
  npm run build --silent
fi
