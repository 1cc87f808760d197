/**
 * The forwarding pipeline of one balancer in NAT mode (src/dataplane/forwarder.ts), driven with
 * packets from test/helpers/packets.ts: parse → VIP / reply → flow → NAT → emit.
 *
 * Setup: a Config from inline YAML (parseConfig), its forwarding table (buildForwardingTable),
 * a FlowTable and a Forwarder, exactly as src/control/balancer.ts wires them. The backend of a
 * new flow is chosen by hash, so the flow fixtures (description, input, expected) are written
 * as functions of the chosen backend `be`; every fixture is run with client ports picked so
 * that EVERY backend of the VIP is exercised, including the one with a port rewrite (8080).
 * Outputs are compared byte for byte with packets built from scratch, which also checks every
 * checksum (validChecksums is asserted on top, as an independent message).
 */
import test from 'ava';
import { parseConfig, type Config } from '../../src/config';
import { deriveHashKey } from '../../src/decision/hash-key';
import { FlowTable } from '../../src/flow';
import { Forwarder, Action } from '../../src/dataplane/forwarder';
import { buildForwardingTable, type ForwardingTable } from '../../src/decision/forwarding-table';
import { forwardDropNames, ForwardDrop } from '../../src/dataplane/forward-drop';
import { PacketBatch, VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID } from '../../src/dataplane/packet-batch';
import { FakeTunDevice, type FakeWritten } from '../helpers/fake-tun';
import { packetResultNames } from '../../src/packet/result';
import { CSUM_FULL } from '../../src/packet/nat';
import { formatIp } from '../../src/packet/addr';
import * as P from '../helpers/packets';
import { CLIENT, CLIENT6, ROUTER, ROUTER6, VIP, VIP6, BACK_ROUTER, mut, cut } from '../helpers/fixtures';

// ---------------------------------------------------------------------------------------------
// Setup

const KEY = Buffer.alloc(32, 0x5c);
const KEY_PATH = '/keys/fwd-test.key';
const readKeyFile = (p: string): Buffer => {
  if (p === KEY_PATH) return Buffer.from(KEY);
  throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
};

/** 3 backends per VIP, v4 and v6; the third backend of each rewrites every port to 8080. */
const YAML = `
cluster: { id: fwd-test, key_file: ${KEY_PATH} }
balancers:
  - { id: lb1, address: 10.99.2.11 }
flow_table:
  capacity: 16384
  timeouts: { udp_s: 30, icmp_s: 10 }
vips:
  - name: web4
    address: ${VIP}
    protocols: [tcp, udp, icmp]
    ports: [80, 443, 53, "5000-5999"]
    backends:
      - { address: 10.99.3.21 }
      - { address: 10.99.3.22 }
      - { address: 10.99.3.23, port: 8080 }
  - name: web6
    address: "${VIP6}"
    protocols: [tcp, udp, icmp]
    ports: "*"
    backends:
      - { address: "fd99:3::21" }
      - { address: "fd99:3::22" }
      - { address: "fd99:3::23", port: 8080 }
  - name: tcp-only
    address: 10.99.0.20
    protocols: [tcp]
    ports: [80]
    backends:
      - { address: 10.99.3.21 }
  - name: tcp-only6
    address: "fd99::20"
    protocols: [tcp]
    ports: [80]
    backends:
      - { address: "fd99:3::21" }
  - name: dsr4
    address: 10.99.0.30
    method: dsr
    backends:
      - { address: 10.99.3.21 }
  - name: dns4
    address: 10.99.0.40
    protocols: [udp]
    ports: [53]
    backends:
      - { address: 10.99.3.23, port: 5353 }
  - name: dns6
    address: "fd99::40"
    protocols: [udp]
    ports: [53]
    backends:
      - { address: "fd99:3::23", port: 5353 }
`;

const TCP_ONLY = '10.99.0.20';
const TCP_ONLY6 = 'fd99::20';
const DSR_VIP = '10.99.0.30';
const OTHER = '10.99.1.77';
const OTHER6 = 'fd99:1::77';

interface Harness {
  config: Config;
  ft: ForwardingTable;
  hashKey: Uint32Array;
  table: FlowTable;
  fwd: Forwarder;
  /** Runs one packet through processPacket at a non-zero offset; returns the bytes after it. */
  send(pkt: Uint8Array, opts?: { mode?: number; now?: number }): { emitted: boolean; out: Uint8Array };
  /** Non-zero drop counters by name (parse/rewrite reasons and forwarding reasons). */
  drops(): Record<string, number>;
}

function setup(opts: { capacity?: number; eligible?: (vip: string, i: number) => boolean } = {}): Harness {
  let yaml = YAML;
  if (opts.capacity !== undefined) yaml = yaml.replace('capacity: 16384', `capacity: ${opts.capacity}`);
  const config = parseConfig(yaml, 'forwarder-test.yaml', { readKeyFile, env: {}, baseDir: '/' });
  const hashKey = deriveHashKey(config.cluster.key.reveal());
  const elig = opts.eligible;
  const ft = buildForwardingTable(config, hashKey, 1, elig ? (v, i) => elig(v.name, i) : undefined);
  const t = config.flowTable.timeouts;
  const table = new FlowTable({
    capacity: config.flowTable.capacity,
    seed: 12345,
    earlyDrop: false,
    timeouts: { tcpEstablished: t.tcpEstablishedS, tcpSynSeen: t.tcpSynS, tcpClosing: t.tcpClosingS, tcpClosed: t.tcpResetS, udp: t.udpS, icmp: t.icmpS },
  });
  const live = new Uint8Array(config.balancers.length);
  live[0] = 1;
  const fwd = new Forwarder({ table, forwarding: ft, hashKey, selfIndex: 0, live });
  const buf = new Uint8Array(70000);
  const OFF = 13; // odd offset: nothing may assume packets start at 0 or are aligned
  return {
    config,
    ft,
    hashKey,
    table,
    fwd,
    send(pkt, o = {}) {
      buf.fill(0xee);
      buf.set(pkt, OFF);
      const a = fwd.processPacket(buf, OFF, pkt.length, o.mode ?? CSUM_FULL, o.now ?? 0);
      t0(buf[OFF - 1] === 0xee && buf[OFF + pkt.length] === 0xee, 'processPacket wrote outside the packet');
      return { emitted: a === Action.EMIT, out: buf.slice(OFF, OFF + pkt.length) };
    },
    drops: () => dropsOf(fwd),
  };
}

function t0(cond: boolean, msg: string): void {
  if (!cond) throw new Error(msg);
}

function dropsOf(fwd: Forwarder): Record<string, number> {
  const d: Record<string, number> = {};
  fwd.stats.packetDrops.forEach((v, i) => {
    if (v > 0) d[packetResultNames[i]!] = v;
  });
  fwd.stats.forwardDrops.forEach((v, i) => {
    if (v > 0) d[forwardDropNames[i]!] = v;
  });
  return d;
}

function diff(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const x = (after[k] ?? 0) - (before[k] ?? 0);
    if (x !== 0) d[k] = x;
  }
  return d;
}

/** A backend as the fixtures see it. */
interface Be {
  index: number;
  addr: string;
  /** The configured port rewrite, or null (keep the VIP port). */
  port: number | null;
}
const bport = (be: Be, vport: number): number => be.port ?? vport;

/** The backend of VIP `vipAddr` a rewritten client→VIP packet was sent to (by its destination). */
function backendOf(h: Harness, vipAddr: string, out: Uint8Array): Be {
  const L = P.layout(out);
  const dst = formatIp(out, L.dstOff, L.alen);
  const vip = h.config.vips.find((v) => v.address.text === vipAddr)!;
  const b = vip.backends.find((x) => formatIp(x.address.bytes, x.address.family === 4 ? 12 : 0, L.alen) === dst);
  if (!b) throw new Error(`packet went to ${dst}, not a backend of ${vipAddr}`);
  return { index: b.index, addr: dst, port: b.port };
}

const data = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
const mss = new Uint8Array([2, 4, 0x05, 0xb4]);

// ---------------------------------------------------------------------------------------------
// Flow fixtures: one opening packet client → VIP, then packets in both directions.

interface FlowFixture {
  desc: string;
  vip: string;
  /** Opening packet for client port (or echo identifier) `cp`. */
  open: (cp: number) => Uint8Array;
  /** What the backend must receive. */
  opened: (be: Be, cp: number) => Uint8Array;
  /** Later packets (either direction) and what must come out, for that backend. */
  then?: (be: Be, cp: number) => Array<[desc: string, input: Uint8Array, expected: Uint8Array]>;
}

const S = P.TCP_SYN;
const A = P.TCP_ACK;
const F = P.TCP_FIN;
const R = P.TCP_RST;
const PA = P.TCP_PSH | P.TCP_ACK;

function tcpLife(c: string, v: string, vport: number): FlowFixture['then'] {
  const tcp = c.includes(':') ? P.tcp6 : P.tcp4;
  return (be, cp) => {
    const b = be.addr;
    const p = bport(be, vport);
    return [
      ['SYN+ACK from the backend → from the VIP', tcp(b, c, p, cp, S | A, new Uint8Array(0), { seq: 9000, ack: 1001, tcpOptions: mss }), tcp(v, c, vport, cp, S | A, new Uint8Array(0), { seq: 9000, ack: 1001, tcpOptions: mss })],
      ['ACK + data from the client', tcp(c, v, cp, vport, PA, data(300), { seq: 1001, ack: 9001 }), tcp(c, b, cp, p, PA, data(300), { seq: 1001, ack: 9001 })],
      ['data from the backend (odd length)', tcp(b, c, p, cp, PA, data(1001, 7), { seq: 9001, ack: 1301 }), tcp(v, c, vport, cp, PA, data(1001, 7), { seq: 9001, ack: 1301 })],
      ['FIN from the client', tcp(c, v, cp, vport, F | A, new Uint8Array(0), { seq: 1301, ack: 10002 }), tcp(c, b, cp, p, F | A, new Uint8Array(0), { seq: 1301, ack: 10002 })],
      ['FIN from the backend', tcp(b, c, p, cp, F | A, new Uint8Array(0), { seq: 10002, ack: 1302 }), tcp(v, c, vport, cp, F | A, new Uint8Array(0), { seq: 10002, ack: 1302 })],
      ['last ACK from the client', tcp(c, v, cp, vport, A, new Uint8Array(0), { seq: 1302, ack: 10003 }), tcp(c, b, cp, p, A, new Uint8Array(0), { seq: 1302, ack: 10003 })],
      ['RST from the backend', tcp(b, c, p, cp, R, new Uint8Array(0), { seq: 10003 }), tcp(v, c, vport, cp, R, new Uint8Array(0), { seq: 10003 })],
    ];
  };
}

const flowFixtures: FlowFixture[] = [
  {
    desc: 'IPv4 TCP SYN to VIP:80, reply, data, FIN, RST',
    vip: VIP,
    open: (cp) => P.tcp4(CLIENT, VIP, cp, 80, S, new Uint8Array(0), { seq: 1000, tcpOptions: mss }),
    opened: (be, cp) => P.tcp4(CLIENT, be.addr, cp, bport(be, 80), S, new Uint8Array(0), { seq: 1000, tcpOptions: mss }),
    then: tcpLife(CLIENT, VIP, 80),
  },
  {
    desc: 'IPv4 TCP to VIP:5001 (a port range) with IP options',
    vip: VIP,
    open: (cp) => P.tcp4(CLIENT, VIP, cp, 5001, S, data(5), { options: new Uint8Array([1, 1, 1, 1]) }),
    opened: (be, cp) => P.tcp4(CLIENT, be.addr, cp, bport(be, 5001), S, data(5), { options: new Uint8Array([1, 1, 1, 1]) }),
    then: tcpLife(CLIENT, VIP, 5001),
  },
  {
    desc: 'IPv6 TCP SYN to [VIP]:443, reply, data, FIN, RST',
    vip: VIP6,
    open: (cp) => P.tcp6(CLIENT6, VIP6, cp, 443, S, new Uint8Array(0), { seq: 1000, tcpOptions: mss }),
    opened: (be, cp) => P.tcp6(CLIENT6, be.addr, cp, bport(be, 443), S, new Uint8Array(0), { seq: 1000, tcpOptions: mss }),
    then: tcpLife(CLIENT6, VIP6, 443),
  },
  {
    desc: 'IPv6 TCP after extension headers (hop-by-hop, destination options)',
    vip: VIP6,
    open: (cp) => P.tcp6(CLIENT6, VIP6, cp, 80, S, data(3), { ext: [{ type: 0 }, { type: 60, len: 16 }] }),
    opened: (be, cp) => P.tcp6(CLIENT6, be.addr, cp, bport(be, 80), S, data(3), { ext: [{ type: 0 }, { type: 60, len: 16 }] }),
    then: tcpLife(CLIENT6, VIP6, 80),
  },
  {
    desc: 'IPv4 UDP to VIP:53 and the answer',
    vip: VIP,
    open: (cp) => P.udp4(CLIENT, VIP, cp, 53, data(40)),
    opened: (be, cp) => P.udp4(CLIENT, be.addr, cp, bport(be, 53), data(40)),
    then: (be, cp) => [
      ['answer from the backend', P.udp4(be.addr, CLIENT, bport(be, 53), cp, data(511, 3)), P.udp4(VIP, CLIENT, 53, cp, data(511, 3))],
      ['second query, same flow', P.udp4(CLIENT, VIP, cp, 53, data(9)), P.udp4(CLIENT, be.addr, cp, bport(be, 53), data(9))],
      ['answer with UDP checksum 0 stays 0', P.udp4(be.addr, CLIENT, bport(be, 53), cp, data(20), { zeroChecksum: true }), P.udp4(VIP, CLIENT, 53, cp, data(20), { zeroChecksum: true })],
    ],
  },
  {
    desc: 'IPv6 UDP to [VIP]:5353 and the answer',
    vip: VIP6,
    open: (cp) => P.udp6(CLIENT6, VIP6, cp, 5353, data(33)),
    opened: (be, cp) => P.udp6(CLIENT6, be.addr, cp, bport(be, 5353), data(33)),
    then: (be, cp) => [
      ['answer from the backend', P.udp6(be.addr, CLIENT6, bport(be, 5353), cp, data(100, 3)), P.udp6(VIP6, CLIENT6, 5353, cp, data(100, 3))],
    ],
  },
  {
    desc: 'ICMPv4 echo request to the VIP and the reply (identifier kept)',
    vip: VIP,
    open: (id) => P.icmp4Echo(CLIENT, VIP, P.ICMP4_ECHO_REQUEST, id, 1, data(56)),
    opened: (be, id) => P.icmp4Echo(CLIENT, be.addr, P.ICMP4_ECHO_REQUEST, id, 1, data(56)),
    then: (be, id) => [
      ['echo reply from the backend → from the VIP', P.icmp4Echo(be.addr, CLIENT, P.ICMP4_ECHO_REPLY, id, 1, data(56)), P.icmp4Echo(VIP, CLIENT, P.ICMP4_ECHO_REPLY, id, 1, data(56))],
      ['second request, same flow', P.icmp4Echo(CLIENT, VIP, P.ICMP4_ECHO_REQUEST, id, 2, data(56)), P.icmp4Echo(CLIENT, be.addr, P.ICMP4_ECHO_REQUEST, id, 2, data(56))],
    ],
  },
  {
    desc: 'ICMPv6 echo request to the VIP and the reply (identifier kept)',
    vip: VIP6,
    open: (id) => P.icmp6Echo(CLIENT6, VIP6, P.ICMP6_ECHO_REQUEST, id, 1, data(56)),
    opened: (be, id) => P.icmp6Echo(CLIENT6, be.addr, P.ICMP6_ECHO_REQUEST, id, 1, data(56)),
    then: (be, id) => [
      ['echo reply from the backend → from the VIP', P.icmp6Echo(be.addr, CLIENT6, P.ICMP6_ECHO_REPLY, id, 1, data(56)), P.icmp6Echo(VIP6, CLIENT6, P.ICMP6_ECHO_REPLY, id, 1, data(56))],
    ],
  },
  {
    desc: 'ICMPv4 frag-needed from a client-side router about a TCP reply → to the backend',
    vip: VIP,
    open: (cp) => P.tcp4(CLIENT, VIP, cp, 80, A, data(10)),
    opened: (be, cp) => P.tcp4(CLIENT, be.addr, cp, bport(be, 80), A, data(10)),
    then: (be, cp) => [
      [
        'frag-needed (3/4, mtu 1400) quoting VIP:80 → client',
        P.icmp4Error(P.ICMP4_DEST_UNREACH, P.ICMP4_CODE_FRAG_NEEDED, ROUTER, VIP, P.tcp4(VIP, CLIENT, 80, cp, A, data(1400)), { mtu: 1400 }),
        P.icmp4Error(P.ICMP4_DEST_UNREACH, P.ICMP4_CODE_FRAG_NEEDED, ROUTER, be.addr, P.tcp4(be.addr, CLIENT, bport(be, 80), cp, A, data(1400)), { mtu: 1400 }),
      ],
      [
        'frag-needed quoting the whole segment (embedded TCP checksum fixed too)',
        P.icmp4Error(P.ICMP4_DEST_UNREACH, P.ICMP4_CODE_FRAG_NEEDED, ROUTER, VIP, P.tcp4(VIP, CLIENT, 80, cp, A, data(100)), { mtu: 1400, embedLen: 1000 }),
        P.icmp4Error(P.ICMP4_DEST_UNREACH, P.ICMP4_CODE_FRAG_NEEDED, ROUTER, be.addr, P.tcp4(be.addr, CLIENT, bport(be, 80), cp, A, data(100)), { mtu: 1400, embedLen: 1000 }),
      ],
    ],
  },
  {
    desc: 'ICMPv6 packet-too-big from a client-side router about a TCP reply → to the backend',
    vip: VIP6,
    open: (cp) => P.tcp6(CLIENT6, VIP6, cp, 80, A, data(10)),
    opened: (be, cp) => P.tcp6(CLIENT6, be.addr, cp, bport(be, 80), A, data(10)),
    then: (be, cp) => [
      [
        'packet too big (mtu 1280)',
        P.icmp6Error(P.ICMP6_PACKET_TOO_BIG, 0, ROUTER6, VIP6, P.tcp6(VIP6, CLIENT6, 80, cp, A, data(1400)), { mtu: 1280 }),
        P.icmp6Error(P.ICMP6_PACKET_TOO_BIG, 0, ROUTER6, be.addr, P.tcp6(be.addr, CLIENT6, bport(be, 80), cp, A, data(1400)), { mtu: 1280 }),
      ],
    ],
  },
  {
    desc: 'ICMPv4 port unreachable from the backend about the forwarded UDP → from the VIP',
    vip: VIP,
    open: (cp) => P.udp4(CLIENT, VIP, cp, 53, data(20)),
    opened: (be, cp) => P.udp4(CLIENT, be.addr, cp, bport(be, 53), data(20)),
    then: (be, cp) => [
      [
        'port unreachable (3/3) quoting client → backend:port',
        P.icmp4Error(P.ICMP4_DEST_UNREACH, 3, be.addr, CLIENT, P.udp4(CLIENT, be.addr, cp, bport(be, 53), data(20)), { embedLen: 48 }),
        P.icmp4Error(P.ICMP4_DEST_UNREACH, 3, VIP, CLIENT, P.udp4(CLIENT, VIP, cp, 53, data(20)), { embedLen: 48 }),
      ],
      [
        'time exceeded from a backend-side router: outer source becomes the VIP',
        P.icmp4Error(P.ICMP4_TIME_EXCEEDED, 0, BACK_ROUTER, CLIENT, P.udp4(CLIENT, be.addr, cp, bport(be, 53), data(20))),
        P.icmp4Error(P.ICMP4_TIME_EXCEEDED, 0, VIP, CLIENT, P.udp4(CLIENT, VIP, cp, 53, data(20))),
      ],
    ],
  },
  {
    desc: 'ICMPv6 port unreachable from the backend about the forwarded UDP → from the VIP',
    vip: VIP6,
    open: (cp) => P.udp6(CLIENT6, VIP6, cp, 53, data(20)),
    opened: (be, cp) => P.udp6(CLIENT6, be.addr, cp, bport(be, 53), data(20)),
    then: (be, cp) => [
      [
        'destination unreachable, port (1/4)',
        P.icmp6Error(P.ICMP6_DEST_UNREACH, 4, be.addr, CLIENT6, P.udp6(CLIENT6, be.addr, cp, bport(be, 53), data(20))),
        P.icmp6Error(P.ICMP6_DEST_UNREACH, 4, VIP6, CLIENT6, P.udp6(CLIENT6, VIP6, cp, 53, data(20))),
      ],
    ],
  },
];

/**
 * Runs `f` with client ports cp0, cp0+1, ... (fresh harness, so flows are new) until every
 * backend of the VIP has been the chosen one; returns the backends seen, in order.
 */
function eachBackend(h: Harness, f: FlowFixture, cp0: number, run: (be: Be, cp: number) => void): Be[] {
  const want = h.config.vips.find((v) => v.address.text === f.vip)!.backends.length;
  const seen = new Map<number, Be>();
  for (let cp = cp0; cp < cp0 + 300 && seen.size < want; cp++) {
    const r = h.send(f.open(cp));
    if (!r.emitted) throw new Error(`${f.desc}: opening packet dropped (${JSON.stringify(h.drops())})`);
    const be = backendOf(h, f.vip, r.out);
    if (seen.has(be.index)) continue;
    seen.set(be.index, be);
    run(be, cp);
  }
  return [...seen.values()];
}

for (const f of flowFixtures) {
  test(`flow: ${f.desc} (every backend, incl. port rewrite)`, (t) => {
    const h = setup();
    const backends = eachBackend(h, f, 40000, (be, cp) => {
      // Re-open on a fresh harness to check the opening packet against the expected bytes.
      const h2 = setup();
      const first = h2.send(f.open(cp));
      t.true(first.emitted);
      t.is(P.hex(first.out), P.hex(f.opened(be, cp)), `${f.desc} [${be.addr}]: opening packet`);
      t.deepEqual(P.checksumErrors(first.out), [], `${f.desc} [${be.addr}]: opening packet checksums`);
      for (const [desc, input, expected] of f.then?.(be, cp) ?? []) {
        const r = h2.send(input);
        t.true(r.emitted, `${f.desc} [${be.addr}]: ${desc}: dropped (${JSON.stringify(h2.drops())})`);
        t.is(P.hex(r.out), P.hex(expected), `${f.desc} [${be.addr}]: ${desc}`);
        t.deepEqual(P.checksumErrors(r.out), [], `${f.desc} [${be.addr}]: ${desc}: checksums`);
      }
      t.deepEqual(h2.drops(), {}, `${f.desc} [${be.addr}]: no drops`);
      t.is(h2.fwd.stats.flowsCreated, 1, `${f.desc} [${be.addr}]: one flow`);
    });
    t.is(backends.length, 3, `${f.desc}: every backend reached`);
    t.true(backends.some((b) => b.port === 8080), 'the port-rewrite backend was exercised');
  });
}

// ---------------------------------------------------------------------------------------------
// Fragments

test('fragments: every fragment of a datagram goes to the same backend, in order or not (v4, v6)', (t) => {
  for (const v6 of [false, true]) {
    const h = setup();
    const [c, v] = v6 ? [CLIENT6, VIP6] : [CLIENT, VIP];
    const seenBackends = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const cp = 30000 + i;
      const whole = v6 ? P.udp6(CLIENT6, VIP6, cp, 53, data(3000, i)) : P.udp4(CLIENT, VIP, cp, 53, data(3000, i));
      const frags = P.fragmentPacket(whole, 1200, 0x100 + i);
      t.is(frags.length, 3);
      // Odd iterations: the last fragment arrives first.
      const order = i % 2 === 0 ? [0, 1, 2] : [2, 0, 1];
      const outs: Uint8Array[] = [];
      const dsts = new Set<string>();
      for (const k of order) {
        const r = h.send(frags[k]!);
        t.true(r.emitted, `${v6 ? 'v6' : 'v4'} fragment ${k} of datagram ${i}: ${JSON.stringify(h.drops())}`);
        const L = P.layout(r.out);
        dsts.add(formatIp(r.out, L.dstOff, L.alen));
        outs.push(r.out);
      }
      t.is(dsts.size, 1, `all fragments of datagram ${i} to one backend`);
      const be = backendOf(h, v, outs[0]!);
      seenBackends.add(be.addr);
      // Reassembled at the backend: the datagram with the backend's address (and its port on the
      // first fragment) and a valid UDP checksum.
      const re = P.reassemble(outs);
      const expected = v6 ? P.udp6(c, be.addr, cp, bport(be, 53), data(3000, i)) : P.udp4(c, be.addr, cp, bport(be, 53), data(3000, i));
      t.deepEqual(P.checksumErrors(re), [], `datagram ${i} reassembled: checksums`);
      t.is(P.hex(re.subarray(P.layout(re).l4Off)), P.hex(expected.subarray(P.layout(expected).l4Off)), `datagram ${i}: UDP header and data`);
    }
    // Fragment flows are keyed on (src, dst, proto) only (docs/contracts.md): one flow for all.
    t.is(seenBackends.size, 1, 'all fragmented datagrams of one client→VIP pair share the 3-tuple flow');
    t.is(h.fwd.stats.flowsCreated, 1);
    t.deepEqual(h.drops(), {});
  }
});

// The port filter and fragments (issue 12): a first fragment carries the L4 header and is
// checked on its port; a later fragment has none, and passes only for a flow that a first
// fragment (which passed the check) created.
const portFilterRows: Array<{ name: string; pkt: () => Uint8Array; chunk: number; pass: boolean }> = [
  { name: 'TCP SYN to :22 of a :80-only VIP, split after the TCP header', pkt: () => P.tcp4(CLIENT, TCP_ONLY, 40022, 22, P.TCP_SYN, data(40)), chunk: 24, pass: false },
  { name: 'TCP SYN to :5201 of a :80-only VIP, in three fragments', pkt: () => P.tcp4(CLIENT, TCP_ONLY, 40023, 5201, P.TCP_SYN, data(40)), chunk: 24, pass: false },
  { name: 'IPv6 TCP SYN to :22 of a :80-only VIP', pkt: () => P.tcp6(CLIENT6, TCP_ONLY6, 40024, 22, P.TCP_SYN, data(40)), chunk: 24, pass: false },
  { name: 'UDP to :5353 of a :53-only VIP', pkt: () => P.udp4(CLIENT, '10.99.0.40', 40025, 5353, data(3000)), chunk: 1200, pass: false },
  { name: 'UDP to a port outside web4\'s list (:6000)', pkt: () => P.udp4(CLIENT, VIP, 40026, 6000, data(3000)), chunk: 1200, pass: false },
  { name: 'TCP SYN to :80 of the :80-only VIP', pkt: () => P.tcp4(CLIENT, TCP_ONLY, 40027, 80, P.TCP_SYN, data(40)), chunk: 24, pass: true },
  { name: 'UDP to :53 of the :53-only VIP', pkt: () => P.udp4(CLIENT, '10.99.0.40', 40028, 53, data(3000)), chunk: 1200, pass: true },
];
for (const r of portFilterRows) {
  test(`fragments and the port filter: ${r.name}: ${r.pass ? 'every fragment passes' : 'refused, nothing created'}`, (t) => {
    const h = setup();
    const frags = P.fragmentPacket(r.pkt(), r.chunk, 0x321);
    t.true(frags.length >= 2);
    // The later fragments first (reordered), then the first fragment, then the later ones again.
    const before = h.drops();
    const laterFirst = frags.slice(1).map((f) => h.send(f).emitted);
    t.deepEqual(laterFirst, frags.slice(1).map(() => false), 'a later fragment before any first fragment creates nothing');
    const first = h.send(frags[0]!).emitted;
    const later = frags.slice(1).map((f) => h.send(f).emitted);
    const d = diff(before, h.drops());
    if (r.pass) {
      t.true(first);
      t.deepEqual(later, later.map(() => true), 'later fragments pass once their first fragment passed');
      t.deepEqual(d, { fragment_no_flow: frags.length - 1 });
      t.is(h.table.size, 1);
    } else {
      t.false(first, 'the first fragment is checked on its port');
      t.deepEqual(later, later.map(() => false));
      t.deepEqual(d, { port_not_served: 1, fragment_no_flow: 2 * (frags.length - 1) });
      t.is(h.table.size, 0, 'no flow created');
      t.is(h.fwd.stats.flowsCreated, 0);
    }
  });
}

test('fragments: a too-short first fragment (no whole L4 header) is dropped as malformed, never forwarded', (t) => {
  const h = setup();
  // An IPv4 first fragment with 8 bytes of a TCP header (ports, sequence number: no flags).
  const syn = P.tcp4(CLIENT, TCP_ONLY, 40030, 22, P.TCP_SYN);
  const L = P.layout(syn);
  const f0 = P.ipv4Fragment(CLIENT, TCP_ONLY, 6, 0x99, 0, true, syn.subarray(L.l4Off, L.l4Off + 8));
  const f1 = P.ipv4Fragment(CLIENT, TCP_ONLY, 6, 0x99, 8, false, syn.subarray(L.l4Off + 8));
  t.false(h.send(f0).emitted);
  t.false(h.send(f1).emitted);
  t.deepEqual(h.drops(), { l4_truncated: 1, fragment_no_flow: 1 });
  t.is(h.table.size, 0);
});

test('confirmation: a spoofed UDP datagram answered by the backend, then ICMP errors about the answer (the router: its destination is unreachable), is never confirmed; a real client\'s next query confirms', (t) => {
  const h = setup();
  const spoofed = '198.51.100.7';
  const q = h.send(P.udp4(spoofed, VIP, 4242, 53, data(8)));
  t.true(q.emitted);
  const be = backendOf(h, VIP, q.out);
  const ans = h.send(P.udp4(be.addr, spoofed, bport(be, 53), 4242, data(12)));
  t.true(ans.emitted, 'the answer is un-NATed (to the spoofed source)');
  // The router cannot reach 198.51.100.7: "net unreachable" to the answer's source, the VIP.
  for (let i = 0; i < 3; i++) h.send(P.icmp4Error(P.ICMP4_DEST_UNREACH, 0, ROUTER, VIP, P.udp4(VIP, spoofed, 53, 4242, data(12))));
  t.is(h.table.size, 1);
  t.is(h.table.confirmed, 0, 'ICMP errors are no evidence');
  // A real client: query, answer, the next query.
  const q2 = h.send(P.udp4(CLIENT, VIP, 4243, 53, data(8)));
  const be2 = backendOf(h, VIP, q2.out);
  h.send(P.udp4(be2.addr, CLIENT, bport(be2, 53), 4243, data(12)));
  h.send(P.udp4(CLIENT, VIP, 4243, 53, data(8)));
  t.is(h.table.confirmed, 1);
});

test('fragments: a fragmented reply of a fragment flow goes back from the VIP', (t) => {
  const h = setup();
  // Find a client for which the 3-tuple flow lands on a backend that keeps the port.
  for (let i = 2; i < 250; i++) {
    const c = `10.99.1.${i}`;
    const frags = P.fragmentPacket(P.udp4(c, VIP, 4000, 53, data(2000)), 1200, 7);
    const outs = frags.map((f) => h.send(f));
    t.true(outs.every((o) => o.emitted));
    const be = backendOf(h, VIP, outs[0]!.out);
    if (be.port !== null) continue;
    const reply = P.fragmentPacket(P.udp4(be.addr, c, 53, 4000, data(2500, 9)), 1200, 8);
    const back = reply.map((f) => h.send(f));
    t.true(back.every((o) => o.emitted), JSON.stringify(h.drops()));
    const re = P.reassemble(back.map((o) => o.out));
    t.is(P.hex(re), P.hex(P.reassemble(P.fragmentPacket(P.udp4(VIP, c, 53, 4000, data(2500, 9)), 1200, 8))));
    t.deepEqual(P.checksumErrors(re), []);
    return;
  }
  t.fail('no client landed on a port-keeping backend');
});

// Replies whose key is not the flow's reply key (src/dataplane/forwarder.ts #replyFallback).
// A small request and an answer the backend must fragment (DNS with EDNS, any UDP service
// answering > MTU): the answer's fragments are keyed (backend, client, udp, ports 0).
for (const v6 of [false, true]) {
  test(`fragments: a fragmented reply to an unfragmented flow goes back from the VIP, its port restored (${v6 ? 'v6' : 'v4'})`, (t) => {
    const h = setup();
    const [c0, v] = v6 ? [CLIENT6, VIP6] : [CLIENT, VIP];
    const udp = v6 ? P.udp6 : P.udp4;
    const ports = new Set<string>();
    for (let i = 0; i < 24; i++) {
      const cp = 4400 + i;
      const r = h.send(udp(c0, v, cp, 53, data(20)));
      t.true(r.emitted);
      const be = backendOf(h, v, r.out);
      ports.add(String(be.port));
      // In order, and with the last fragment delayed behind the first (cache hit for both later ones).
      const frags = P.fragmentPacket(udp(be.addr, c0, bport(be, 53), cp, data(3000, i)), 1200, 0x900 + i);
      t.is(frags.length, 3);
      const order = i % 2 === 0 ? [0, 1, 2] : [0, 2, 1];
      const outs = order.map((k) => h.send(frags[k]!));
      t.true(outs.every((o) => o.emitted), `datagram ${i}: ${JSON.stringify(h.drops())}`);
      const re = P.reassemble(outs.map((o) => o.out));
      const expected = udp(v, c0, 53, cp, data(3000, i));
      t.deepEqual(P.checksumErrors(re), [], `datagram ${i}: checksums`);
      t.is(P.hex(re.subarray(P.layout(re).l4Off)), P.hex(expected.subarray(P.layout(expected).l4Off)), `datagram ${i}: from VIP:53 with the data`);
      const L = P.layout(re);
      t.is(formatIp(re, L.srcOff, L.alen), v);
    }
    t.true(ports.has('null') && ports.size > 1, `both a port-keeping and a port-rewriting backend answered: ${[...ports]}`);
    t.is(h.fwd.stats.replyFirstFragments, 24);
    t.is(h.fwd.stats.replyLaterFragments, 48);
    t.deepEqual(h.drops(), {});
  });
}

test('fragments: a later reply fragment without its first fragment, or of an unknown datagram id, is dropped as no_flow', (t) => {
  const h = setup();
  const r = h.send(P.udp4(CLIENT, VIP, 4500, 53, data(20)));
  const be = backendOf(h, VIP, r.out);
  const frags = P.fragmentPacket(P.udp4(be.addr, CLIENT, bport(be, 53), 4500, data(3000)), 1200, 0x77);
  t.false(h.send(frags[1]!).emitted, 'before its first fragment: no flow known yet');
  t.true(h.send(frags[0]!).emitted);
  t.true(h.send(frags[2]!).emitted);
  const other = P.fragmentPacket(P.udp4(be.addr, CLIENT, bport(be, 53), 4500, data(3000)), 1200, 0x78);
  t.false(h.send(other[2]!).emitted, 'another datagram id');
  t.deepEqual(h.drops(), { no_flow: 2 });
});

test('fragments: an unfragmented reply to a flow the client created with fragments goes back from the VIP (3-tuple)', (t) => {
  const h = setup();
  for (let i = 2; i < 250; i++) {
    const c = `10.99.1.${i}`;
    const outs = P.fragmentPacket(P.udp4(c, VIP, 4000, 53, data(2000)), 1200, 7).map((f) => h.send(f));
    t.true(outs.every((o) => o.emitted));
    const be = backendOf(h, VIP, outs[0]!.out);
    if (be.port !== null) continue;
    const back = h.send(P.udp4(be.addr, c, 53, 4000, data(40, 3)));
    t.true(back.emitted, JSON.stringify(h.drops()));
    t.is(P.hex(back.out), P.hex(P.udp4(VIP, c, 53, 4000, data(40, 3))));
    t.is(h.fwd.stats.replyThreeTuple, 1);
    return;
  }
  t.fail('no client landed on a port-keeping backend');
});

// ---------------------------------------------------------------------------------------------
// Drops: not for us, not served, malformed. Each is counted under exactly one reason, and the
// next good packet still forwards.

interface DropFixture {
  desc: string;
  pkt: Uint8Array;
  /** Drop counter name (packetResultNames or forwardDropNames). */
  reason: string;
}

const tcpSyn = P.tcp4(CLIENT, VIP, 41000, 80, S, data(12));
const tcpSyn6 = P.tcp6(CLIENT6, VIP6, 41000, 80, S, data(12));
const ext = (n: number) => Array.from({ length: n }, () => ({ type: 60 }));

const dropFixtures: DropFixture[] = [
  // ---- not to a VIP, and not a reply of a flow ----
  { desc: 'TCP between two other hosts', pkt: P.tcp4(CLIENT, OTHER, 40000, 80), reason: 'no_flow' },
  { desc: 'IPv6 UDP between two other hosts', pkt: P.udp6(CLIENT6, OTHER6, 5000, 53, data(4)), reason: 'no_flow' },
  { desc: 'backend "reply" with no flow', pkt: P.tcp4('10.99.3.21', CLIENT, 80, 40000, S | A), reason: 'no_flow' },
  { desc: 'backend reply from the wrong port', pkt: P.udp4('10.99.3.22', CLIENT, 54, 40000, data(4)), reason: 'no_flow' },
  { desc: 'echo reply from a backend with no request', pkt: P.icmp4Echo('10.99.3.21', CLIENT, 0, 999, 1), reason: 'no_flow' },
  { desc: 'kernel housekeeping: ICMPv6 echo from the router', pkt: P.icmp6Echo(ROUTER6, OTHER6, 128, 1, 1), reason: 'no_flow' },
  // ---- to a VIP, not served ----
  { desc: 'TCP to a port the VIP does not serve (22)', pkt: P.tcp4(CLIENT, VIP, 40000, 22), reason: 'port_not_served' },
  { desc: 'UDP to a port the VIP does not serve (6000)', pkt: P.udp4(CLIENT, VIP, 40000, 6000, data(4)), reason: 'port_not_served' },
  { desc: 'UDP to a TCP-only VIP', pkt: P.udp4(CLIENT, TCP_ONLY, 40000, 80, data(4)), reason: 'protocol_not_served' },
  { desc: 'ICMP echo to a TCP-only VIP', pkt: P.icmp4Echo(CLIENT, TCP_ONLY, 8, 1, 1), reason: 'protocol_not_served' },
  { desc: 'ICMPv6 echo to a TCP-only IPv6 VIP', pkt: P.icmp6Echo(CLIENT6, TCP_ONLY6, 128, 1, 1), reason: 'protocol_not_served' },
  { desc: 'TCP to a TCP-only VIP on another port', pkt: P.tcp4(CLIENT, TCP_ONLY, 40000, 443), reason: 'port_not_served' },
  { desc: 'ICMP frag-needed to the VIP about no known flow', pkt: P.icmp4Error(3, 4, ROUTER, VIP, P.tcp4(VIP, CLIENT, 80, 1, A)), reason: 'icmp_error_no_flow' },
  { desc: 'ICMPv6 too big to the VIP about no known flow', pkt: P.icmp6Error(2, 0, ROUTER6, VIP6, P.tcp6(VIP6, CLIENT6, 80, 1, A)), reason: 'icmp_error_no_flow' },
  { desc: 'DSR VIP on the NAT data path', pkt: P.tcp4(CLIENT, DSR_VIP, 40000, 80), reason: 'method_unsupported' },
  // ---- malformed: parse drops ----
  { desc: 'garbage: zero bytes', pkt: new Uint8Array(64), reason: 'bad_version' },
  { desc: 'garbage: version 5', pkt: mut(tcpSyn, (b) => (b[0] = 0x55)), reason: 'bad_version' },
  { desc: 'truncated: 10 bytes of an IPv4 header', pkt: tcpSyn.slice(0, 10), reason: 'truncated' },
  { desc: 'truncated: 1 byte', pkt: tcpSyn.slice(0, 1), reason: 'truncated' },
  { desc: 'truncated: IPv6 header cut at 39 bytes', pkt: tcpSyn6.slice(0, 39), reason: 'truncated' },
  { desc: 'truncated: IPv6 extension header cut', pkt: cut(P.tcp6(CLIENT6, VIP6, 1, 80, S, new Uint8Array(0), { ext: [{ type: 60, len: 16 }] }), 50), reason: 'truncated' },
  { desc: 'bad IHL (4 words)', pkt: mut(tcpSyn, (b) => (b[0] = 0x44)), reason: 'bad_ihl' },
  { desc: 'bad IHL (0)', pkt: mut(tcpSyn, (b) => (b[0] = 0x40)), reason: 'bad_ihl' },
  { desc: 'lying total length: longer than the bytes read', pkt: mut(tcpSyn, (b) => { b[2] = 0x05; b[3] = 0xdc; }), reason: 'bad_total_length' },
  { desc: 'lying total length: shorter than the header', pkt: mut(tcpSyn, (b) => { b[2] = 0; b[3] = 12; }), reason: 'bad_total_length' },
  { desc: 'lying IPv6 payload length', pkt: mut(tcpSyn6, (b) => { b[4] = 0x10; b[5] = 0; }), reason: 'bad_total_length' },
  { desc: 'IPv6 extension header chain too long (9 destination options)', pkt: P.tcp6(CLIENT6, VIP6, 40000, 80, S, new Uint8Array(0), { ext: ext(9) }), reason: 'ipv6_ext_chain_too_long' },
  { desc: 'IPv6 extension header "loop": 40 destination options headers', pkt: P.udp6(CLIENT6, VIP6, 40000, 53, data(4), { ext: ext(40) }), reason: 'ipv6_ext_chain_too_long' },
  { desc: 'IPv6 hop-by-hop after another extension header', pkt: P.tcp6(CLIENT6, VIP6, 40000, 80, S, new Uint8Array(0), { ext: [{ type: 60 }, { type: 0 }] }), reason: 'ipv6_bad_ext' },
  { desc: 'IPv6 two fragment headers', pkt: P.udp6(CLIENT6, VIP6, 1, 53, data(8), { ext: [{ type: 44, mf: true }, { type: 44, mf: true }] }), reason: 'ipv6_bad_ext' },
  { desc: 'unknown protocol (GRE, 47) to the VIP', pkt: P.ipv4(CLIENT, VIP, 47, data(24)), reason: 'unsupported_protocol' },
  { desc: 'unknown protocol (253) over IPv6 to the VIP', pkt: P.ipv6(CLIENT6, VIP6, 253, data(24)), reason: 'unsupported_protocol' },
  { desc: 'IPv6 No Next Header (59)', pkt: P.ipv6(CLIENT6, VIP6, 59, new Uint8Array(0)), reason: 'unsupported_protocol' },
  { desc: 'TCP header cut (L4 truncated)', pkt: cut(tcpSyn, 30), reason: 'l4_truncated' },
  { desc: 'UDP header cut (L4 truncated)', pkt: cut(P.udp4(CLIENT, VIP, 1, 53, data(8)), 25), reason: 'l4_truncated' },
  { desc: 'TCP data offset 4 (< 5)', pkt: mut(tcpSyn, (b) => (b[32] = 0x40)), reason: 'bad_tcp_offset' },
  { desc: 'TCP data offset 15 (past the segment)', pkt: mut(tcpSyn, (b) => (b[32] = 0xf0)), reason: 'bad_tcp_offset' },
  { desc: 'UDP length field larger than the payload', pkt: mut(P.udp4(CLIENT, VIP, 1, 53, data(8)), (b) => { b[24] = 0x10; b[25] = 0; }), reason: 'bad_udp_length' },
  { desc: 'ICMP timestamp request (unsupported type) to the VIP', pkt: P.ipv4(CLIENT, VIP, 1, P.fillChecksums(P.ipv4(CLIENT, VIP, 1, mut(new Uint8Array(20), (b) => (b[0] = 13)))).subarray(20)), reason: 'icmp_unsupported_type' },
  { desc: 'ICMP error quoting garbage', pkt: P.icmp4Error(3, 4, ROUTER, VIP, mut(new Uint8Array(28), (b) => (b[0] = 0x45))), reason: 'icmp_inner_malformed' },
];

test('drops: every fixture is dropped and counted under its reason; the next good packet forwards', (t) => {
  const h = setup();
  let cp = 20000;
  for (const f of dropFixtures) {
    t.true(f.reason in Object.fromEntries([...packetResultNames, ...forwardDropNames].map((n) => [n, 1])), `${f.desc}: unknown reason ${f.reason}`);
    const before = h.drops();
    const r = h.send(f.pkt);
    t.false(r.emitted, `${f.desc}: emitted`);
    t.deepEqual(diff(before, h.drops()), { [f.reason]: 1 }, f.desc);
    const good = h.send(P.tcp4(CLIENT, VIP, cp++, 80, S));
    t.true(good.emitted, `${f.desc}: the next good packet was dropped`);
    t.deepEqual(P.checksumErrors(good.out), []);
  }
  t.is(h.fwd.stats.forwardPackets, dropFixtures.length);
  t.is(h.fwd.stats.flowsCreated, dropFixtures.length, 'a dropped packet never creates a flow');
});

test('drops: garbage of every length never emits and counts exactly one drop per packet', (t) => {
  const h = setup();
  let seed = 0x2545f491;
  const rnd = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) & 0xff;
  };
  const total = () => Object.values(h.drops()).reduce((a, b) => a + b, 0);
  for (let n = 1; n <= 600; n++) {
    const g = Uint8Array.from({ length: n }, rnd);
    if (n % 3 === 0) g[0] = 0x45; // look like IPv4 sometimes
    if (n % 3 === 1) g[0] = 0x60; // or IPv6
    const before = total();
    const r = h.send(g);
    if (r.emitted) {
      // A random buffer that parses and happens to address a VIP is a legitimate new flow.
      t.is(total(), before);
    } else {
      t.is(total(), before + 1, `garbage of ${n} bytes`);
    }
  }
  t.true(h.send(P.tcp4(CLIENT, VIP, 1234, 80, S)).emitted);
});

test('drops: ICMP error about a flow, arriving on the wrong side, is not translated', (t) => {
  const h = setup();
  const r = h.send(P.udp4(CLIENT, VIP, 33333, 53, data(10)));
  t.true(r.emitted);
  const be = backendOf(h, VIP, r.out);
  // A port unreachable "from the backend" but quoting the client's view (VIP as destination)
  // has the forward key reversed = VIP:53 → client: neither a VIP destination nor a reply key.
  const bad = h.send(P.icmp4Error(3, 3, be.addr, CLIENT, P.udp4(CLIENT, VIP, 33333, 53, data(10))));
  t.false(bad.emitted);
  t.deepEqual(h.drops(), { no_flow: 1 });
});

// ---------------------------------------------------------------------------------------------
// Flow life: the record is the truth.

test('flow life: same flow → same backend for all its packets, both directions, until RST', (t) => {
  const h = setup();
  for (const v6 of [false, true]) {
    const [c, v, tcp] = v6 ? [CLIENT6, VIP6, P.tcp6] : [CLIENT, VIP, P.tcp4];
    const r0 = h.send(tcp(c, v, 45000, 80, S));
    const be = backendOf(h, v, r0.out);
    const p = bport(be, 80);
    for (let i = 0; i < 500; i++) {
      const fromClient = h.send(tcp(c, v, 45000, 80, i % 7 === 0 ? PA : A, data(i % 50, i), { seq: i }), { now: i >> 4 });
      t.true(fromClient.emitted);
      if (P.hex(fromClient.out) !== P.hex(tcp(c, be.addr, 45000, p, i % 7 === 0 ? PA : A, data(i % 50, i), { seq: i }))) {
        t.fail(`packet ${i} went elsewhere: ${P.hex(fromClient.out)}`);
        return;
      }
      const fromBe = h.send(tcp(be.addr, c, p, 45000, A, data(i % 30, i)), { now: i >> 4 });
      t.true(fromBe.emitted);
      t.is(P.hex(fromBe.out), P.hex(tcp(v, c, 80, 45000, A, data(i % 30, i))));
    }
    for (const fl of [F | A, A, R]) {
      const r = h.send(tcp(c, v, 45000, 80, fl));
      t.is(backendOf(h, v, r.out).addr, be.addr);
    }
    // After the RST the record still holds (until its short timeout): stray packets follow it.
    t.is(backendOf(h, v, h.send(tcp(c, v, 45000, 80, A)).out).addr, be.addr);
  }
  t.is(h.fwd.stats.flowsCreated, 2);
  t.deepEqual(h.drops(), {});
});

test('flow life: an expired flow is gone (its late reply is no_flow), and a swapped table keeps live records', (t) => {
  const h = setup();
  // UDP timeout 30 s (config): a reply 31 s after the last packet has no flow any more.
  const q = h.send(P.udp4(CLIENT, VIP, 40100, 53, data(5)), { now: 10 });
  const be = backendOf(h, VIP, q.out);
  t.true(h.send(P.udp4(be.addr, CLIENT, bport(be, 53), 40100, data(5)), { now: 40 }).emitted);
  t.false(h.send(P.udp4(be.addr, CLIENT, bport(be, 53), 40100, data(5)), { now: 71 }).emitted);
  t.deepEqual(h.drops(), { no_flow: 1 });

  // Open flows, then make their backends ineligible for new flows (drain): old flows stay put.
  const flows: Array<[number, string]> = [];
  for (let cp = 50000; cp < 50060; cp++) flows.push([cp, backendOf(h, VIP, h.send(P.tcp4(CLIENT, VIP, cp, 80, S), { now: 80 }).out).addr]);
  const drained = flows[0]![1];
  const drainedIndex = h.config.vips[0]!.backends.findIndex((b) => b.address.text === drained);
  const ft2 = buildForwardingTable(h.config, h.hashKey, 2, (v, i) => !(v.name === 'web4' && i === drainedIndex), h.ft);
  h.fwd.setForwarding(ft2);
  t.is(h.fwd.forwarding.generation, 2);
  for (const [cp, addr] of flows) {
    t.is(backendOf(h, VIP, h.send(P.tcp4(CLIENT, VIP, cp, 80, A), { now: 81 }).out).addr, addr, `flow ${cp} moved`);
  }
  for (let cp = 51000; cp < 51200; cp++) {
    t.not(backendOf(h, VIP, h.send(P.tcp4(CLIENT, VIP, cp, 80, S), { now: 81 }).out).addr, drained, 'new flow to a drained backend');
  }
  // Nothing eligible: new flows are refused as no_backend, existing flows still forward.
  h.fwd.setForwarding(buildForwardingTable(h.config, h.hashKey, 3, (v) => v.name !== 'web4', ft2));
  const before = h.drops();
  t.false(h.send(P.tcp4(CLIENT, VIP, 52000, 80, S), { now: 82 }).emitted);
  t.deepEqual(diff(before, h.drops()), { no_backend: 1 });
  t.true(h.send(P.tcp4(CLIENT, VIP, flows[5]![0], 80, A), { now: 82 }).emitted);
});

test('flow life: a full table refuses new flows (table_full) and established ones keep forwarding', (t) => {
  const h = setup({ capacity: 16 });
  const opened: number[] = [];
  for (let cp = 1; cp <= 16; cp++) {
    t.true(h.send(P.udp4(CLIENT, VIP, cp, 53, data(4))).emitted);
    opened.push(cp);
  }
  t.false(h.send(P.udp4(CLIENT, VIP, 999, 53, data(4))).emitted);
  t.deepEqual(h.drops(), { table_full: 1 });
  for (const cp of opened) t.true(h.send(P.udp4(CLIENT, VIP, cp, 53, data(4))).emitted);
  // Once they expire (UDP 30 s), there is room again.
  t.true(h.send(P.udp4(CLIENT, VIP, 999, 53, data(4)), { now: 100 }).emitted);
});

test('flow life: two VIPs NAT-ing one client port to the same backend:port conflict (flow_conflict)', (t) => {
  const h = setup();
  // tcp-only (10.99.0.20:80) has the single backend 10.99.3.21 (keeps the port). Find a client
  // port whose web4 flow lands on 10.99.3.21 too: the two flows would share one reply key.
  for (let cp = 60000; cp < 60300; cp++) {
    const r = h.send(P.tcp4(CLIENT, VIP, cp, 80, S));
    if (backendOf(h, VIP, r.out).addr !== '10.99.3.21') continue;
    const before = h.drops();
    t.false(h.send(P.tcp4(CLIENT, TCP_ONLY, cp, 80, S)).emitted);
    t.deepEqual(diff(before, h.drops()), { flow_conflict: 1 });
    // The first flow is intact: its reply still goes back from web4's VIP.
    const back = h.send(P.tcp4('10.99.3.21', CLIENT, 80, cp, S | A));
    t.is(P.hex(back.out), P.hex(P.tcp4(VIP, CLIENT, 80, cp, S | A)));
    return;
  }
  t.fail('no client port landed on 10.99.3.21');
});

// ---------------------------------------------------------------------------------------------
// Spread of new flows

test('spread: 3000 new flows over 3 backends, each within ±10% of 1/3 (v4 and v6, TCP and UDP)', (t) => {
  for (const [name, mk, v] of [
    ['v4 tcp', (i: number) => P.tcp4(`10.99.${1 + (i % 7)}.${2 + (i % 200)}`, VIP, 1024 + i * 13, 80, S), VIP],
    ['v4 udp', (i: number) => P.udp4(CLIENT, VIP, 1024 + i, 53, data(4)), VIP],
    ['v6 tcp', (i: number) => P.tcp6(`fd99:1::${(2 + i).toString(16)}`, VIP6, 40000, 443, S), VIP6],
  ] as const) {
    const h = setup();
    const counts = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const r = h.send(mk(i));
      t.true(r.emitted);
      const a = backendOf(h, v, r.out).addr;
      counts.set(a, (counts.get(a) ?? 0) + 1);
    }
    t.log(name, Object.fromEntries(counts));
    t.is(counts.size, 3, name);
    for (const [a, n] of counts) t.true(n >= 900 && n <= 1100, `${name}: ${a} got ${n} of 3000`);
    t.is(h.fwd.stats.flowsCreated, 3000);
  }
});

// ---------------------------------------------------------------------------------------------
// Batches: compaction, virtio headers, CSUM_PARTIAL

function vnetHdr(flags: number, tag: number, csumStart = 0, csumOffset = 0): Uint8Array {
  return new Uint8Array([flags, 0, tag, 0, 0, 0, csumStart & 0xff, csumStart >> 8, csumOffset & 0xff, csumOffset >> 8]);
}

test('batch: kept packets are compacted to the front with their offsets, sizes and virtio headers', (t) => {
  const h = setup();
  const b = new PacketBatch({ count: 16, maxPacket: 1500 });
  const inputs: Array<{ pkt: Uint8Array; keep: boolean }> = [];
  for (let i = 0; i < 16; i++) {
    const keep = [0, 3, 4, 7, 11, 15].includes(i);
    const pkt = keep ? P.tcp4(CLIENT, VIP, 42000 + i, 80, S, data(i)) : i % 2 ? P.tcp4(CLIENT, OTHER, 1, 2) : tcpSyn.slice(0, 10 + i);
    inputs.push({ pkt, keep });
    b.setPacket(i, pkt);
    b.vnet.set(vnetHdr(0, 100 + i), i * VNET_HDR_LEN);
  }
  const sizesIn = Array.from(b.sizes);
  const offsIn = Array.from(b.offsets);
  const n = h.fwd.processBatch(b, 16, true, 0);
  const kept = inputs.map((x, i) => (x.keep ? i : -1)).filter((i) => i >= 0);
  t.is(n, kept.length);
  kept.forEach((src, out) => {
    t.is(b.offsets[out], offsIn[src], `slot ${out} offset`);
    t.is(b.sizes[out], sizesIn[src], `slot ${out} size`);
    t.is(b.vnet[out * VNET_HDR_LEN + 2], 100 + src, `slot ${out} carries the virtio header of input ${src}`);
    const be = backendOf(h, VIP, b.packet(out));
    t.is(P.hex(b.packet(out)), P.hex(P.tcp4(CLIENT, be.addr, 42000 + src, bport(be, 80), S, data(src))));
  });
  t.is(h.fwd.stats.rxPackets, 16);
  t.is(h.fwd.stats.txPackets, kept.length);
  t.is(Object.values(h.drops()).reduce((a, x) => a + x, 0), 16 - kept.length);
  // Without vnet the headers are left alone (not moved).
  const b2 = new PacketBatch({ count: 2, maxPacket: 1500 });
  b2.setPacket(0, P.tcp4(CLIENT, OTHER, 1, 2));
  b2.setPacket(1, P.tcp4(CLIENT, VIP, 42100, 80, S));
  b2.vnet.set(vnetHdr(0, 1), 0);
  b2.vnet.set(vnetHdr(0, 2), VNET_HDR_LEN);
  t.is(h.fwd.processBatch(b2, 2, false, 0), 1);
  t.is(b2.vnet[2], 1);
  t.is(b2.vnet[VNET_HDR_LEN + 2], 2);
  t.is(b2.offsets[0], b2.packetStart(1));
});

test('batch: NEEDS_CSUM packets get partial-checksum NAT; others full; vnet=false ignores the flag', (t) => {
  const h = setup();
  const b = new PacketBatch({ count: 8, maxPacket: 1500 });
  const open4 = P.tcp4(CLIENT, VIP, 43000, 80, PA, data(333));
  const open6 = P.udp6(CLIENT6, VIP6, 43001, 53, data(101));
  const full4 = P.udp4(CLIENT, VIP, 43002, 53, data(77));
  const echo6 = P.icmp6Echo(CLIENT6, VIP6, 128, 43003, 1, data(40));
  const slots: Array<[Uint8Array, number]> = [
    [P.toPartial(open4), VNET_F_NEEDS_CSUM],
    [tcpSyn.slice(0, 12), 0],
    [P.toPartial(open6), VNET_F_NEEDS_CSUM],
    [full4, VNET_F_DATA_VALID],
    [P.toPartial(echo6), VNET_F_NEEDS_CSUM],
  ];
  slots.forEach(([p, fl], i) => {
    b.setPacket(i, p);
    const L = P.layout(p);
    b.vnet.set(vnetHdr(fl, i, L.l4Off, L.proto === 6 ? 16 : L.proto === 17 ? 6 : 2), i * VNET_HDR_LEN);
  });
  const n = h.fwd.processBatch(b, slots.length, true, 0);
  t.is(n, 4);
  const outs = [0, 1, 2, 3].map((i) => b.packet(i).slice());
  const flags = [0, 1, 2, 3].map((i) => b.vnet[i * VNET_HDR_LEN]);
  t.deepEqual(flags, [VNET_F_NEEDS_CSUM, VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM]);
  const be4 = backendOf(h, VIP, outs[0]!);
  t.is(P.hex(P.completePartial(outs[0]!)), P.hex(P.tcp4(CLIENT, be4.addr, 43000, bport(be4, 80), PA, data(333))), 'v4 TCP partial');
  const be6 = backendOf(h, VIP6, outs[1]!);
  t.is(P.hex(P.completePartial(outs[1]!)), P.hex(P.udp6(CLIENT6, be6.addr, 43001, bport(be6, 53), data(101))), 'v6 UDP partial');
  const bef = backendOf(h, VIP, outs[2]!);
  t.is(P.hex(outs[2]!), P.hex(P.udp4(CLIENT, bef.addr, 43002, bport(bef, 53), data(77))), 'full checksum untouched by the partial path');
  t.deepEqual(P.checksumErrors(outs[2]!), []);
  const bee = backendOf(h, VIP6, outs[3]!);
  t.is(P.hex(P.completePartial(outs[3]!)), P.hex(P.icmp6Echo(CLIENT6, bee.addr, 128, 43003, 1, data(40))), 'v6 echo partial');
  // The IPv4 header checksum is always complete, even for partial packets.
  t.is(P.sum16(outs[0]!, 0, 20), 0xffff);

  // Reply in partial form (the server's kernel on a veth would hand it so) → from the VIP.
  const reply = P.toPartial(P.tcp4(be4.addr, CLIENT, bport(be4, 80), 43000, A, data(999)));
  const b2 = new PacketBatch({ count: 1, maxPacket: 1500 });
  b2.setPacket(0, reply);
  b2.vnet.set(vnetHdr(VNET_F_NEEDS_CSUM, 0, 20, 16), 0);
  t.is(h.fwd.processBatch(b2, 1, true, 0), 1);
  t.is(P.hex(P.completePartial(b2.packet(0))), P.hex(P.tcp4(VIP, CLIENT, 80, 43000, A, data(999))));

  // vnet = false: the header bytes mean nothing, the checksum is treated as complete.
  const b3 = new PacketBatch({ count: 1, maxPacket: 1500 });
  b3.setPacket(0, P.tcp4(CLIENT, VIP, 43010, 80, S, data(5)));
  b3.vnet[0] = VNET_F_NEEDS_CSUM;
  t.is(h.fwd.processBatch(b3, 1, false, 0), 1);
  t.deepEqual(P.checksumErrors(b3.packet(0)), []);
  t.deepEqual(h.drops(), { truncated: 1 });
});

// ---------------------------------------------------------------------------------------------
// The read → process → write loop over a FakeTunDevice, with simulated backends answering.

test('loop: FakeTunDevice read/processBatch/write, backends answer through the balancer (vnet, partial)', async (t) => {
  const h = setup();
  const dev = new FakeTunDevice({ features: { vnetHdr: true, csum: true }, queueLimit: 4096 });
  const batch = new PacketBatch({ count: 8, maxPacket: dev.maxPacketSize });
  const backNet = (a: string) => a.startsWith('10.99.3.') || a.startsWith('fd99:3:');
  const toClient: FakeWritten[] = [];
  const perBackend = new Map<string, number>();
  let wakeups = 0;
  // A backend answers every packet it gets (source/destination and ports swapped, ACK).
  dev.onWrite = (w) => {
    const p = completeIfPartial(w);
    const L = P.layout(p);
    const src = formatIp(p, L.srcOff, L.alen);
    const dst = formatIp(p, L.dstOff, L.alen);
    if (!backNet(dst)) {
      toClient.push({ packet: p, vnet: w.vnet });
      return;
    }
    t.deepEqual(P.checksumErrors(p), [], 'packet to a backend');
    perBackend.set(dst, (perBackend.get(dst) ?? 0) + 1);
    const sp = (p[L.l4Off]! << 8) | p[L.l4Off + 1]!;
    const dp = (p[L.l4Off + 2]! << 8) | p[L.l4Off + 3]!;
    const tcp = L.version === 4 ? P.tcp4 : P.tcp6;
    const ans = tcp(dst, src, dp, sp, S | A, data(20, sp));
    dev.inject(P.toPartial(ans), vnetHdr(VNET_F_NEEDS_CSUM, 0, L.l4Off, 16));
  };
  dev.onReadable(() => {
    wakeups++;
    for (let k = 0; k < 8; k++) {
      const n = dev.read(batch);
      if (n === 0) return;
      const m = h.fwd.processBatch(batch, n, dev.features.vnetHdr, 0);
      if (m > 0) t.is(dev.write(batch, m), m);
      if (n < batch.count) return;
    }
  });
  const N = 100;
  for (let i = 0; i < N; i++) {
    const syn = i % 2 ? P.tcp6(CLIENT6, VIP6, 46000 + i, 80, S) : P.tcp4(CLIENT, VIP, 46000 + i, 80, S);
    dev.inject(P.toPartial(syn), vnetHdr(VNET_F_NEEDS_CSUM, 0, i % 2 ? 40 : 20, 16));
    if (i % 10 === 3) dev.inject(tcpSyn.slice(0, 15)); // malformed, interleaved
    if (i % 10 === 5) dev.inject(P.tcp4(CLIENT, OTHER, 1, 2)); // not ours
  }
  const deadline = Date.now() + 5000;
  while (toClient.length < N && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  dev.close();
  t.is(toClient.length, N, 'every SYN answered through the balancer');
  for (const w of toClient) {
    const L = P.layout(w.packet);
    const src = formatIp(w.packet, L.srcOff, L.alen);
    t.true(src === VIP || src === VIP6, `answer from ${src}`);
    t.is((w.packet[L.l4Off]! << 8) | w.packet[L.l4Off + 1]!, 80, 'answer from the VIP port');
    t.deepEqual(P.checksumErrors(w.packet), []);
  }
  t.is(perBackend.size, 6, `every v4 and v6 backend got flows: ${JSON.stringify(Object.fromEntries(perBackend))}`);
  t.deepEqual(h.drops(), { truncated: 10, no_flow: 10 });
  t.is(h.fwd.stats.flowsCreated, N);
  t.true(wakeups > 1);
  t.is(dev.stats.writePackets, 2 * N);
});

function completeIfPartial(w: FakeWritten): Uint8Array {
  return w.vnet !== undefined && (w.vnet[0]! & VNET_F_NEEDS_CSUM) !== 0 ? P.completePartial(w.packet) : w.packet;
}

test('forward-drop names: one per reason', (t) => {
  t.is(forwardDropNames.length, Object.keys(ForwardDrop).length);
  t.is(forwardDropNames[ForwardDrop.NO_FLOW], 'no_flow');
});

// ---- Fragment flows and port rewriting (docs/fragments.md) ----
// A flow the client creates with fragments is keyed without ports, so the VIP port a
// port-rewriting backend's reply must get back is not in the record: it is the VIP's port when
// the VIP serves one, and unknown (the backend's port is kept) when it serves several.

const FRAG_REWRITE_CASES = [
  { name: 'v4, VIP with one port: the reply gets the VIP port', vip: '10.99.0.40', client: '10.99.1.9', want: 53 },
  { name: 'v6, VIP with one port: the reply gets the VIP port', vip: 'fd99::40', client: 'fd99:1::9', want: 53 },
  { name: 'v4, VIP with several ports: the backend port is kept (documented limit)', vip: VIP, client: '', want: 8080 },
  { name: 'v6, VIP with every port: the backend port is kept (documented limit)', vip: VIP6, client: '', want: 8080 },
] as const;

for (const c of FRAG_REWRITE_CASES) {
  test(`fragmented request to a port-rewriting backend, fragmented reply: ${c.name}`, (t) => {
    const h = setup();
    const v6 = c.vip.includes(':');
    const udp = v6 ? P.udp6 : P.udp4;
    // Multi-backend VIPs: find a client the table sends to the port-rewrite backend.
    for (let i = 2; i < 250; i++) {
      const cl = c.client !== '' ? c.client : v6 ? `fd99:1::${i.toString(16)}` : `10.99.1.${i}`;
      const outs = P.fragmentPacket(udp(cl, c.vip, 4000, 53, data(2000)), 1200, 7).map((f) => h.send(f));
      t.true(outs.every((o) => o.emitted), 'request fragments forwarded');
      const be = backendOf(h, c.vip, outs[0]!.out);
      if (be.port === null) continue;
      const req = P.reassemble(outs.map((o) => o.out));
      t.deepEqual(P.checksumErrors(req), [], 'request reassembled at the backend: checksums');
      t.is((req[P.layout(req).l4Off + 2]! << 8) | req[P.layout(req).l4Off + 3]!, be.port, 'request reaches the backend port');
      const back = P.fragmentPacket(udp(be.addr, cl, be.port, 4000, data(2500, 9)), 1200, 8).map((f) => h.send(f));
      t.true(back.every((b) => b.emitted), 'reply fragments un-NATed');
      const re = P.reassemble(back.map((o) => o.out));
      const L = P.layout(re);
      t.is(formatIp(re, L.srcOff, L.alen), c.vip, 'reply from the VIP');
      t.is((re[L.l4Off]! << 8) | re[L.l4Off + 1]!, c.want, 'reply source port');
      t.deepEqual(P.checksumErrors(re), [], 'reply reassembled at the client: checksums');
      // An unfragmented reply to the same fragment flow (its 3-tuple) gets the same port.
      const whole = h.send(udp(be.addr, cl, be.port, 4000, data(100, 3)));
      t.true(whole.emitted);
      const W = P.layout(whole.out);
      t.is((whole.out[W.l4Off]! << 8) | whole.out[W.l4Off + 1]!, c.want, 'unfragmented reply source port');
      t.deepEqual(P.checksumErrors(whole.out), []);
      return;
    }
    t.fail('no client landed on the port-rewrite backend');
  });
}
