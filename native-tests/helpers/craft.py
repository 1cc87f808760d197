#!/usr/bin/python3
"""Hand-made packets for the hostile-input lab tests (native-tests/floods.test.ts), with scapy
(Debian python3-scapy, installed by scripts/install-deps.sh). Run inside the client namespace:

    ip netns exec tunlb-client /usr/bin/python3 native-tests/helpers/craft.py MODE [options]

Modes (every one ends by itself within a few seconds and prints ONE JSON line, except
rst-session, which prints one per command):
  fragsyn  --src A --dst VIP --dport P [--frag 24]
      A TCP SYN (MSS option and 8 bytes of data, from a random source port) split into IPv4
      fragments of --frag bytes of IP payload: is it answered (SYN-ACK, or a RST) from VIP:P?
      {"mode":"fragsyn","sport":S,"fragments":N,"answered":bool,"flags":"SA"|...|null}
  fragudp  --src A --dst VIP --dport P [--size 3000] [--frag 1200]
      A UDP datagram of --size bytes split into fragments: does anything come back (the echo,
      or an ICMP error about it)? {"mode":"fragudp","sport":S,"fragments":N,"answered":bool,"kind":...}
  rst-session --src A --dst VIP --dport P
      Opens a real TCP connection (the kernel's) to VIP:P (an echo service), echoes "hello"
      through it, and learns the client's next sequence number from its own packets (sniffed).
      Prints {"port":..,"next":..}, then reads commands on stdin, one a line:
        rst SEQ     sends a RST from the connection's 5-tuple with sequence number SEQ
                    (crafted: the socket knows nothing of it) -> {"rst":SEQ}
        echo        echoes 4 bytes through the connection -> {"echo":bool,"next":..}
        quit        closes the connection and exits
Nothing here leaves the lab: every address is given by the caller (lab addresses).
"""
import argparse
import json
import random
import select
import socket
import sys
import time

from scapy.all import IP, TCP, UDP, Raw, AsyncSniffer, conf, fragment, send  # noqa: E402

conf.verb = 0
IFACE = "eth0"  # scripts/lab-topology.sh LAB_IF_CLIENT_FRONT


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def sniffer(flt):
    s = AsyncSniffer(iface=IFACE, filter=flt, store=True)
    s.start()
    time.sleep(0.3)  # the capture is armed before anything is sent
    return s


def wait_for(s, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if s.results:
            break
        time.sleep(0.05)
    return s.stop() or []


def fragsyn(a):
    sport = random.randint(20000, 60000)
    syn = IP(src=a.src, dst=a.dst, id=random.randint(1, 65535)) / TCP(
        sport=sport, dport=a.dport, flags="S", seq=random.randint(0, 2**32 - 1), options=[("MSS", 1400)]
    ) / Raw(b"x" * 8)
    frags = fragment(syn, fragsize=a.frag)
    s = sniffer(f"tcp and src host {a.dst} and src port {a.dport} and dst port {sport}")
    send(frags, iface=IFACE)
    got = wait_for(s, a.timeout)
    out({"mode": "fragsyn", "sport": sport, "fragments": len(frags), "answered": bool(got), "flags": str(got[0][TCP].flags) if got else None})


def fragudp(a):
    sport = random.randint(20000, 60000)
    dgram = IP(src=a.src, dst=a.dst, id=random.randint(1, 65535)) / UDP(sport=sport, dport=a.dport) / Raw(b"q" * a.size)
    frags = fragment(dgram, fragsize=a.frag)
    # The echo (possibly fragmented: its first fragment carries the ports), or an ICMP error.
    s = sniffer(f"src host {a.dst} and (udp or icmp)")
    send(frags, iface=IFACE)
    got = wait_for(s, a.timeout)
    kind = None
    if got:
        p = got[0]
        kind = "icmp" if p.haslayer("ICMP") else "udp"
    out({"mode": "fragudp", "sport": sport, "fragments": len(frags), "answered": bool(got), "kind": kind})


def rst_session(a):
    sock = socket.create_connection((a.dst, a.dport), timeout=5)
    port = sock.getsockname()[1]
    seen = sniffer(f"tcp and src port {port} and dst port {a.dport}")
    state = {"next": None}

    def echo(data):
        sock.sendall(data)
        got = b""
        end = time.time() + 5
        while len(got) < len(data) and time.time() < end:
            r, _, _ = select.select([sock], [], [], 0.2)
            if r:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        return got == data

    ok = echo(b"hello")
    time.sleep(0.3)
    pkts = seen.stop() or []
    ends = [(p[TCP].seq + len(bytes(p[TCP].payload))) % 2**32 for p in pkts if len(bytes(p[TCP].payload)) > 0]
    state["next"] = ends[-1] if ends else None
    out({"port": port, "next": state["next"], "echo": ok})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "rst":
            seq = int(cmd[1]) % 2**32
            send(IP(src=a.src, dst=a.dst) / TCP(sport=port, dport=a.dport, flags="R", seq=seq), iface=IFACE)
            out({"rst": seq})
        elif cmd[0] == "echo":
            try:
                good = echo(b"ping")
            except OSError as e:
                good = False
                out({"echo": False, "error": str(e)})
                continue
            if state["next"] is not None:
                state["next"] = (state["next"] + 4) % 2**32
            out({"echo": good, "next": state["next"]})
        elif cmd[0] == "quit":
            break
    sock.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fragsyn", "fragudp", "rst-session"])
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--dport", type=int, required=True)
    p.add_argument("--frag", type=int, default=0)
    p.add_argument("--size", type=int, default=3000)
    p.add_argument("--timeout", type=float, default=2.0)
    a = p.parse_args()
    if a.mode == "fragsyn":
        a.frag = a.frag or 24
        fragsyn(a)
    elif a.mode == "fragudp":
        a.frag = a.frag or 1200
        fragudp(a)
    else:
        rst_session(a)


if __name__ == "__main__":
    main()
