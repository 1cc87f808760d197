/**
 * Any balancer receives (issue 11, ECMP entry): three forwarders (lb1..lb3, their own flow
 * tables, no replication: the window before a record reaches the others, e.g. TCP below the
 * sync threshold) wired to each other through their peer outputs. A flow whose packets arrive
 * at one receiver and then at another keeps its backend; a NAT reply that reaches a balancer
 * without the record (the servers' gateway, a new receiver) is steered to the flow's primary
 * and leaves from the VIP.
 */
import test from 'ava';
import { parseConfig } from '../../src/config';
import { deriveHashKey } from '../../src/decision/hash-key';
import { FlowTable } from '../../src/flow';
import { Forwarder } from '../../src/dataplane/forwarder';
import type { PeerOutput } from '../../src/dataplane/peer-output';
import { buildForwardingTable, type ForwardingTable } from '../../src/decision/forwarding-table';
import { forwardDropNames } from '../../src/dataplane/forward-drop';
import { PacketBatch } from '../../src/dataplane/packet-batch';
import { buildReplySteering, forwardKeyOfReply } from '../../src/decision/reply-steering';
import { parseEncap, EncapInfo, ENCAP_F_REPLY } from '../../src/packet/encap';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import { formatIp } from '../../src/packet/addr';
import * as P from '../helpers/packets';
import { CLIENT, CLIENT6, VIP, VIP6 } from '../helpers/fixtures';

const KEY = Buffer.alloc(32, 0x7e);
const KEY_PATH = '/keys/any-receiver.key';
const readKeyFile = (p: string): Buffer => {
  if (p === KEY_PATH) return Buffer.from(KEY);
  throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
};
const B4 = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];
const B6 = ['fd99:3::21', 'fd99:3::22', 'fd99:3::23'];
/** A second IPv4 VIP listing two of web4's backends (same port): a reply cannot tell which VIP its flow went to. */
const VIP4B = '10.99.0.11';
const TCP_SYN = 0x02;
const TCP_ACK = 0x10;
const TCP_PSH = 0x08;

const YAML = `
cluster: { id: any-receiver, key_file: ${KEY_PATH}, replication: { sync_threshold: 3 } }
balancers:
  - { id: lb1, address: 10.99.2.11 }
  - { id: lb2, address: 10.99.2.12 }
  - { id: lb3, address: 10.99.2.13 }
vips:
  - name: web4
    address: ${VIP}
    backends:
${B4.map((b) => `      - { address: ${b} }`).join('\n')}
  - name: web6
    address: "${VIP6}"
    backends:
${B6.map((b) => `      - { address: "${b}" }`).join('\n')}
  - name: dns4
    address: 10.99.0.53
    protocols: [udp]
    ports: [53]
    backends:
      - { address: 10.99.3.31, port: 5353 }
  - name: web4b
    address: ${VIP4B}
    backends:
      - { address: ${B4[0]} }
      - { address: ${B4[2]} }
`;

/** What left a balancer: to the kernel (TUN write), or encapsulated to a peer. */
interface Out {
  tun: Uint8Array[];
  peer: Array<{ to: number; flags: number; dg: Uint8Array }>;
}

interface Node {
  fwd: Forwarder;
  table: FlowTable;
  batch: PacketBatch;
  peerOut: PeerOutput;
  /** The peer receive batch and the relay output sharing its buffer (steered replies passed on). */
  rx: PacketBatch;
  relay: PeerOutput;
}

function cluster() {
  const config = parseConfig(YAML, 'any-receiver.yaml', { readKeyFile, env: {}, baseDir: '/' });
  const hashKey = deriveHashKey(config.cluster.key.reveal());
  const ft = buildForwardingTable(config, hashKey, 1);
  const live = new Uint8Array(3).fill(1);
  const peerAddrs = new Uint8Array(3 * 16);
  const peerPorts = new Uint16Array(3);
  config.balancers.forEach((b, i) => {
    peerAddrs.set(b.address.bytes, i * 16);
    peerPorts[i] = b.dataPort;
  });
  const nodes: Node[] = [0, 1, 2].map((self) => {
    const table = new FlowTable({ capacity: 4096, seed: 11 + self, earlyDrop: false, timeouts: { tcpEstablished: 300, tcpSynSeen: 30, tcpClosing: 30, tcpClosed: 10, udp: 30, icmp: 10 } });
    const batch = new PacketBatch({ count: 8, maxPacket: 65535 });
    const peerOut: PeerOutput = { batch: new PacketBatch({ count: 8, maxPacket: 65535, share: batch }), addrs: new Uint8Array(8 * 16), ports: new Uint16Array(8), count: 0 };
    const rx = new PacketBatch({ count: 2, maxPacket: 65535 });
    const relay: PeerOutput = { batch: new PacketBatch({ count: 2, maxPacket: 65535, share: rx }), addrs: new Uint8Array(2 * 16), ports: new Uint16Array(2), count: 0 };
    const fwd = new Forwarder({ table, forwarding: ft, hashKey, selfIndex: self, live, syncThreshold: 3, peers: { addrs: peerAddrs, ports: peerPorts }, peerOutput: peerOut, peerRelay: relay });
    return { fwd, table, batch, peerOut, rx, relay };
  });
  const e = new EncapInfo();
  /** The datagrams of a peer output, copied, with the balancer each is for. */
  const taken = (po: PeerOutput): Array<{ to: number; dg: Uint8Array }> => {
    const sent: Array<{ to: number; dg: Uint8Array }> = [];
    for (let k = 0; k < po.count; k++) {
      const dg = po.batch.buf.slice(po.batch.offsets[k]!, po.batch.offsets[k]! + po.batch.sizes[k]!);
      const to = peerAddrs.findIndex((_, i) => i % 16 === 0 && po.addrs.subarray(k * 16, k * 16 + 16).every((b, j) => b === peerAddrs[i + j])) / 16;
      sent.push({ to, dg });
    }
    return sent;
  };
  /** Hands datagrams sent by node `from` to their peers' processPeerBatch; follows what those relay on. */
  const carry = (from: number, sent: Array<{ to: number; dg: Uint8Array }>, out: Out, hops: number): void => {
    if (hops > 8) throw new Error('a packet crossed more than 8 balancers');
    for (const s of sent) {
      parseEncap(s.dg, 0, s.dg.length, e);
      out.peer.push({ to: s.to, flags: e.flags, dg: s.dg });
      const rx = nodes[s.to]!;
      rx.rx.setPacket(0, s.dg);
      const addrs = new Uint8Array(16);
      addrs.set(peerAddrs.subarray(from * 16, from * 16 + 16));
      const k = rx.fwd.processPeerBatch(rx.rx, 1, addrs, false, 1);
      for (let i = 0; i < k; i++) out.tun.push(rx.rx.buf.slice(rx.rx.offsets[i]!, rx.rx.offsets[i]! + rx.rx.sizes[i]!));
      carry(s.to, taken(rx.relay), out, hops + 1);
    }
  };
  /** Delivers `pkt` to node `at` as read from its TUN device; follows encapsulated packets to their peer. */
  const deliver = (at: number, pkt: Uint8Array, out: Out = { tun: [], peer: [] }): Out => {
    const n = nodes[at]!;
    n.batch.setPacket(0, pkt);
    const m = n.fwd.processBatch(n.batch, 1, false, 1);
    for (let i = 0; i < m; i++) out.tun.push(n.batch.buf.slice(n.batch.offsets[i]!, n.batch.offsets[i]! + n.batch.sizes[i]!));
    carry(at, taken(n.peerOut), out, 1);
    return out;
  };
  const drops = (i: number): Record<string, number> => {
    const d: Record<string, number> = {};
    nodes[i]!.fwd.stats.forwardDrops.forEach((v, k) => {
      if (v > 0) d[forwardDropNames[k]!] = v;
    });
    return d;
  };
  return { config, hashKey, ft, live, nodes, deliver, drops };
}

const info = new PacketInfo();
function addrs(pkt: Uint8Array): { src: string; dst: string; sport: number; dport: number } {
  parsePacket(pkt, 0, pkt.length, info);
  return { src: formatIp(pkt, info.srcOff, info.addrLen), dst: formatIp(pkt, info.dstOff, info.addrLen), sport: info.sport, dport: info.dport };
}

const families = [
  { name: 'IPv4', client: CLIENT, vip: VIP, tcp: P.tcp4, backends: B4 },
  { name: 'IPv6', client: CLIENT6, vip: VIP6, tcp: P.tcp6, backends: B6 },
];

for (const f of families) {
  for (let first = 0; first < 3; first++) {
    for (let then = 0; then < 3; then++) {
      if (then === first) continue;
      test(`${f.name} TCP: SYN at lb${first + 1}, the rest at lb${then + 1} (no record there): every packet reaches the same backend, through the primary`, (t) => {
        const c = cluster();
        const flows = 24;
        for (let k = 0; k < flows; k++) {
          const sport = 41000 + k;
          const syn = c.deliver(first, f.tcp(f.client, f.vip, sport, 80, TCP_SYN));
          t.is(syn.tun.length, 1, 'the SYN reaches a backend');
          const backend = addrs(syn.tun[0]!).dst;
          t.true(f.backends.includes(backend));
          for (const flags of [TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK]) {
            const o = c.deliver(then, f.tcp(f.client, f.vip, sport, 80, flags, new Uint8Array(flags & TCP_PSH ? 100 : 0)));
            t.is(o.tun.length, 1, 'delivered');
            t.is(addrs(o.tun[0]!).dst, backend, 'same backend after the receiver changed');
          }
        }
        t.deepEqual(c.drops(0), {});
        t.deepEqual(c.drops(1), {});
        t.deepEqual(c.drops(2), {});
        t.true(c.nodes[then]!.fwd.stats.secondChancePackets > 0, 'mid-stream packets without a record went to their ranked primary');
      });
    }
  }

  for (let gw = 0; gw < 3; gw++) {
    test(`${f.name} NAT reply: a SYN-ACK reaching lb${gw + 1} (the servers' gateway) without the record is steered to the primary and leaves from the VIP`, (t) => {
      const c = cluster();
      let steered = 0;
      for (let k = 0; k < 24; k++) {
        const sport = 42000 + k;
        const receiver = (gw + 1 + (k % 2)) % 3; // another balancer decided the flow
        const syn = c.deliver(receiver, f.tcp(f.client, f.vip, sport, 80, TCP_SYN));
        const be = addrs(syn.tun[0]!).dst;
        const synack = f.tcp(be, f.client, 80, sport, TCP_SYN | TCP_ACK);
        const o = c.deliver(gw, synack);
        t.is(o.tun.length, 1, 'the reply reaches the client');
        t.deepEqual(addrs(o.tun[0]!), { src: f.vip, dst: f.client, sport: 80, dport: sport });
        if (o.peer.length > 0) {
          steered++;
          t.is(o.peer[0]!.flags & ENCAP_F_REPLY, ENCAP_F_REPLY);
        }
      }
      t.true(steered > 0);
      t.is(c.nodes[gw]!.fwd.stats.replySteeredPackets, steered);
      for (let i = 0; i < 3; i++) t.deepEqual(c.drops(i), {});
    });
  }
}

for (let gw = 0; gw < 3; gw++) {
  test(`NAT reply of a VIP sharing its backends with another VIP: a SYN-ACK at lb${gw + 1} without the record is passed from candidate primary to candidate primary until the one holding it (every one answered from web4b)`, (t) => {
    const c = cluster();
    let relayed = 0;
    for (let k = 0; k < 60; k++) {
      const sport = 46000 + k;
      const receiver = (gw + 1 + (k % 2)) % 3;
      const syn = c.deliver(receiver, P.tcp4(CLIENT, VIP4B, sport, 80, TCP_SYN));
      t.is(syn.tun.length, 1, 'the SYN reaches a backend');
      const be = addrs(syn.tun[0]!).dst;
      t.true(be === B4[0] || be === B4[2], `a web4b backend: ${be}`);
      const o = c.deliver(gw, P.tcp4(be, CLIENT, 80, sport, TCP_SYN | TCP_ACK));
      t.is(o.tun.length, 1, `flow ${k}: the reply reaches the client exactly once`);
      t.deepEqual(addrs(o.tun[0]!), { src: VIP4B, dst: CLIENT, sport: 80, dport: sport });
      t.true(o.peer.length <= 3, 'bounded: at most one hop per candidate VIP');
      for (const p of o.peer) t.is(p.flags & ENCAP_F_REPLY, ENCAP_F_REPLY);
      if (o.peer.length > 1) relayed++;
    }
    t.true(relayed > 0, 'some replies needed a second candidate (web4 listed first)');
    for (let i = 0; i < 3; i++) t.deepEqual(c.drops(i), {});
  });
}

test('a steered reply no balancer holds a record of is dropped (no_flow) after the last candidate, never loops', (t) => {
  const c = cluster();
  let dropped = 0;
  for (let gw = 0; gw < 3; gw++) {
    for (let k = 0; k < 10; k++) {
      const o = c.deliver(gw, P.tcp4(B4[0]!, CLIENT, 80, 47000 + k, TCP_ACK));
      t.is(o.tun.length, 0);
      t.true(o.peer.length <= 2, 'at most one hop per candidate (web4, web4b)');
    }
  }
  for (let i = 0; i < 3; i++) dropped += c.drops(i).no_flow ?? 0;
  t.is(dropped, 30, 'each orphan reply dropped once, at the end of its chain');
});

test('UDP: a datagram at another receiver (no record there) gets the same primary and backend', (t) => {
  const c = cluster();
  for (let k = 0; k < 30; k++) {
    const a = c.deliver(0, P.udp4(CLIENT, VIP, 43000 + k, 53, new Uint8Array(4)));
    const b = c.deliver(1 + (k % 2), P.udp4(CLIENT, VIP, 43000 + k, 53, new Uint8Array(4)));
    t.is(addrs(b.tun[0]!).dst, addrs(a.tun[0]!).dst);
  }
});

test('primary dead everywhere, no record anywhere but there: the flow moves to its backup, which picks the same backend (deterministic ranking)', (t) => {
  const c = cluster();
  let checked = 0;
  for (let k = 0; k < 40; k++) {
    const sport = 44000 + k;
    const syn = c.deliver(0, P.tcp4(CLIENT, VIP, sport, 80, TCP_SYN));
    const be = addrs(syn.tun[0]!).dst;
    const id = c.nodes[0]!.table.lookup(new Uint32Array(new Uint8Array(keyOf(c, sport)).buffer), 1) >>> 1;
    const primary = c.nodes[0]!.table.primary(id);
    if (primary === 0) continue; // lb1 holds the record: not the window under test
    c.live[primary] = 0;
    const receiver = [0, 1, 2].find((i) => i !== primary && i !== 0)!;
    const o = c.deliver(receiver, P.tcp4(CLIENT, VIP, sport, 80, TCP_ACK));
    t.is(addrs(o.tun[0]!).dst, be, 'same backend from the backup');
    c.live[primary] = 1;
    checked++;
  }
  t.true(checked > 10);
});

test('reply steering index: the forward key of a reply, by backend address and port', (t) => {
  const c = cluster();
  const st = buildReplySteering(c.ft);
  const ft: ForwardingTable = c.ft;
  const out = new Uint8Array(40);
  const rows: Array<{ name: string; reply: Uint8Array; vip: number; fwd?: { src: string; dst: string; sport: number; dport: number } }> = [
    { name: 'keep-port backend (v4)', reply: P.tcp4(B4[1]!, CLIENT, 8443, 40000, TCP_ACK), vip: 0, fwd: { src: CLIENT, dst: VIP, sport: 40000, dport: 8443 } },
    { name: 'keep-port backend (v6)', reply: P.tcp6(B6[2]!, CLIENT6, 80, 40001, TCP_ACK), vip: 1, fwd: { src: CLIENT6, dst: VIP6, sport: 40001, dport: 80 } },
    { name: 'port-rewriting backend of a one-port VIP: the VIP port', reply: P.udp4('10.99.3.31', CLIENT, 5353, 40002, new Uint8Array(4)), vip: 2, fwd: { src: CLIENT, dst: '10.99.0.53', sport: 40002, dport: 53 } },
    { name: 'port-rewriting backend, another source port: no VIP', reply: P.udp4('10.99.3.31', CLIENT, 53, 40003, new Uint8Array(4)), vip: -1 },
    { name: 'protocol the VIP does not serve: no VIP', reply: P.tcp4('10.99.3.31', CLIENT, 5353, 40004, TCP_ACK), vip: -1 },
    { name: 'not a backend: no VIP', reply: P.tcp4('10.99.3.99', CLIENT, 80, 40005, TCP_ACK), vip: -1 },
  ];
  for (const r of rows) {
    parsePacket(r.reply, 0, r.reply.length, info);
    const v = forwardKeyOfReply(ft, st, info.key, out);
    t.is(v, r.vip, r.name);
    if (r.fwd === undefined) continue;
    const sport = (out[32]! << 8) | out[33]!;
    const dport = (out[34]! << 8) | out[35]!;
    const v4 = out[37] === 4;
    t.deepEqual({ src: formatIp(out, v4 ? 12 : 0, v4 ? 4 : 16), dst: formatIp(out, v4 ? 28 : 16, v4 ? 4 : 16), sport, dport }, r.fwd, r.name);
    // The rebuilt key is the key the client's packet has: same bytes as its parse.
    const fwdPkt = r.vip === 1 ? P.tcp6(r.fwd.src, r.fwd.dst, r.fwd.sport, r.fwd.dport) : r.reply[9] === 17 ? P.udp4(r.fwd.src, r.fwd.dst, r.fwd.sport, r.fwd.dport) : P.tcp4(r.fwd.src, r.fwd.dst, r.fwd.sport, r.fwd.dport);
    parsePacket(fwdPkt, 0, fwdPkt.length, info);
    t.deepEqual([...out], [...info.key], `${r.name}: the client packet's key`);
  }
});

/** The forward key bytes of CLIENT:sport → VIP:80/tcp. */
function keyOf(_c: ReturnType<typeof cluster>, sport: number): Uint8Array {
  const p = P.tcp4(CLIENT, VIP, sport, 80);
  parsePacket(p, 0, p.length, info);
  return info.key.slice();
}
