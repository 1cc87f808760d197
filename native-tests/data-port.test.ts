/**
 * Forged packets on the data port, in the namespace lab (issue 12, item 3): an attacker on the
 * balancer network (the router's namespace, which sits on lbnet) sends encapsulated datagrams to
 * lb2:7947 with lb1's address as their source (a raw socket: IP_HDRINCL), crafted as the issue's
 * attacker did: a SYN with a chosen backend, SECOND_CHANCE and UDP packets, crafted virtio
 * headers; and as a balancer with a bug would: tagged with the real key, decisions out of policy.
 * Then a bounded flood of forged SYNs and UDP datagrams. Asserted, while 30 long-lived client
 * connections run through the cluster (single entry: lb1 receives and hands flows whose primary
 * is lb2 or lb3 to them on the data port):
 *   - nothing reaches a server: tcpdump in srv1..srv3 sees no packet of the forged client;
 *   - no record of a forged flow on any balancer (waited on: a genuine UDP flow sent after the
 *     attack is on all three first, so anything replicated before it would be there too);
 *   - lb2's drop counters moved by exactly what was sent, per reason (the flood: every datagram);
 *   - the genuine connections all survive, with no reset.
 * Root only; holds the lab session lock from `up` to `down`; every generator is bounded in time
 * and every process started here is killed by its PID.
 * Run alone: flock /tmp/tunlb-lab-session.lock npx ava --config ava.native.config.cjs native-tests/data-port.test.ts
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { loadConfig, type Config } from '../src/config';
import { deriveDataTagKey } from '../src/decision/hash-key';
import { writeDataTag } from '../src/decision/data-tag';
import {
  ENCAP_F_FAILOVER, ENCAP_F_NEW_FLOW, ENCAP_F_SECOND_CHANCE, ENCAP_F_VNET, ENCAP_HEADER_LEN, ENCAP_NONE_U16, ENCAP_NONE_U8, ENCAP_TAG_OFF, writeEncapHeader,
} from '../src/packet/encap';
import { PacketInfo } from '../src/packet/packet-info';
import { parsePacket } from '../src/packet/parse';
import { hasRoot, rootTest } from './helpers/root';
import * as P from '../test/helpers/packets';
import {
  allServing,
  BALANCERS,
  LAB_CONFIG,
  flows,
  holdLabSession,
  lab,
  labLogTail,
  longlivedSummary,
  poll,
  run,
  sendUdpFrom,
  staleBuild,
  startTraffic,
  stats,
  statsOrUndefined,
  type ClusterStats,
  type LabSession,
} from './helpers/traffic';

const VIP4 = '10.99.0.10';
const CLIENT4 = '10.99.1.2';
/** The forged flows' client: on the front network, used by nothing else in the lab. */
const FORGED = '10.99.1.77';
const LB1 = '10.99.2.11';
const LB2 = '10.99.2.12';
const DATA_PORT = 7947;
const ROUTER_NS = 'tunlb-router';
const SERVERS = ['srv1', 'srv2', 'srv3'];
const FLOOD = 2000;

let session: LabSession | undefined;
let upError: string | undefined;
let config: Config | undefined;

test.before(async () => {
  if (!hasRoot()) return;
  const stale = staleBuild(['src/dataplane/forwarder.ts', 'src/dataplane/peer-output.ts', 'src/packet/encap.ts', 'src/decision/data-tag.ts', 'src/packet/vnet-check.ts']);
  if (stale !== undefined) console.log(`data-port.test.ts: WARNING: ${stale}`);
  session = await holdLabSession();
  await lab(['down']);
  const r = await lab(['up', '--entry', 'single'], 180_000);
  if (r.code !== 0) {
    upError = `lab.sh up failed (exit ${r.code}):\n${r.stderr.slice(-3000)}\n${BALANCERS.map((b) => `--- ${b}\n${labLogTail(b, 15)}`).join('\n')}`;
    return;
  }
  config = loadConfig(LAB_CONFIG);
  await poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((s) => allServing(s)), 15_000, 200);
});

test.after.always('lab down', async () => {
  if (!hasRoot()) return;
  try {
    const r = await lab(['down']);
    if (r.code !== 0) console.log(`data-port.test.ts: lab.sh down exit ${r.code}: ${r.stderr}`);
  } finally {
    session?.release();
  }
});

// ---- crafting ----

const info = new PacketInfo();

interface Encap {
  flags: number;
  primary: number;
  backup: number;
  backend: number;
  vip?: number;
  vnet?: number[];
}

/**
 * The UDP payload: version-2 header, optional virtio header, inner packet; tag: none (zeros),
 * 'random', or [key, from, to] as a balancer holding `key` computes it.
 */
function encap(e: Encap, inner: Uint8Array, tag: 'none' | 'random' | [Uint32Array, number, number]): Uint8Array {
  const v = e.vnet?.length ?? 0;
  const dg = new Uint8Array(ENCAP_HEADER_LEN + v + inner.length);
  writeEncapHeader(dg, 0, e.flags | (v > 0 ? ENCAP_F_VNET : 0), e.primary, e.backup, e.backend, e.vip ?? 0, 1);
  if (e.vnet) dg.set(e.vnet, ENCAP_HEADER_LEN);
  dg.set(inner, ENCAP_HEADER_LEN + v);
  if (tag === 'random') for (let i = ENCAP_TAG_OFF; i < ENCAP_HEADER_LEN; i++) dg[i] = (Math.random() * 256) | 0;
  else if (tag !== 'none') {
    if (parsePacket(inner, 0, inner.length, info) !== 0) throw new Error('inner packet does not parse');
    writeDataTag(dg, 0, tag[0], info.key, tag[1], tag[2]);
  }
  return dg;
}

/** The whole IPv4 packet the attacker puts on lbnet: src (spoofed) → lb2:7947. */
function outer(payload: Uint8Array, src = LB1, dst = LB2): Uint8Array {
  return P.udp4(src, dst, DATA_PORT, DATA_PORT, payload);
}

/** Version 1 of the header (the issue's attack, before the tag): 12 bytes, then the packet. */
function encapV1(e: Encap, inner: Uint8Array): Uint8Array {
  const dg = new Uint8Array(12 + inner.length);
  dg.set([0x10, e.flags, e.primary, e.backup, e.backend >> 8, e.backend & 0xff, 0, 0, 0, 0, 0, 1]);
  dg.set(inner, 12);
  return dg;
}

// Sends raw IPv4 packets (hex, one per stdin line) with IP_HDRINCL from the namespace it runs
// in; `gapUs` between packets. Bounded: a fixed list, and the caller's timeout.
const RAW_SEND_PY = `
import socket, sys, time
gap = float(sys.argv[1]) / 1e6
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
n = 0
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    b = bytes.fromhex(line)
    s.sendto(b, (socket.inet_ntoa(b[16:20]), 0))
    n += 1
    if gap > 0:
        time.sleep(gap)
print('sent', n)
`;

async function rawSend(packets: Uint8Array[], gapUs: number): Promise<void> {
  const r = await run('ip', ['netns', 'exec', ROUTER_NS, 'python3', '-c', RAW_SEND_PY, String(gapUs)], {
    input: packets.map((p) => Buffer.from(p).toString('hex')).join('\n') + '\n',
    timeoutMs: 60_000,
  });
  if (r.code !== 0 || !r.stdout.includes(`sent ${packets.length}`)) throw new Error(`raw send from ${ROUTER_NS} failed (${r.code}): ${r.stdout} ${r.stderr}`);
}

// ---- watching the servers ----

interface Capture {
  child: ChildProcess;
  ns: string;
  stderr: string;
}

/** tcpdump in a server's namespace for packets of the forged client; bounded by `timeout`. */
async function captureForged(ns: string): Promise<Capture> {
  const child = spawn('ip', ['netns', 'exec', `tunlb-${ns}`, 'timeout', '120', 'tcpdump', '-ni', 'any', '-l', `host ${FORGED}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  const c: Capture = { child, ns, stderr: '' };
  child.stdout!.resume();
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (c.stderr += d));
  const ready = await poll(() => c.stderr.includes('listening on') || child.exitCode !== null, 10_000, 50);
  if (!ready || child.exitCode !== null) throw new Error(`tcpdump in ${ns} did not start: ${c.stderr}`);
  return c;
}

/** Stops a capture (SIGINT to timeout, which passes it on: tcpdump prints its counts) → packets captured. */
async function stopCapture(c: Capture): Promise<number> {
  const exited = new Promise<void>((r) => (c.child.exitCode !== null ? r() : c.child.once('close', () => r())));
  c.child.kill('SIGINT');
  let bound: NodeJS.Timeout | undefined;
  const done = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => (bound = setTimeout(() => r(false), 5000)))]);
  clearTimeout(bound); // a pending timer would keep the test file's process alive after its last test
  if (!done) c.child.kill('SIGKILL');
  const m = /(\d+) packets? captured/.exec(c.stderr);
  if (m === null) throw new Error(`tcpdump in ${c.ns}: no count in its output: ${c.stderr}`);
  return Number(m[1]);
}

// ---- counters ----

const REASONS = ['peer_bad_tag', 'not_a_peer', 'encap_old_version', 'peer_decision_refused', 'peer_vnet_invalid', 'peer_vnet_unsupported'];

function dropDelta(before: ClusterStats, after: ClusterStats): Record<string, number> {
  const d: Record<string, number> = {};
  for (const r of REASONS) {
    const v = (after.counters.drops[r] ?? 0) - (before.counters.drops[r] ?? 0);
    if (v !== 0) d[r] = v;
  }
  return d;
}

function requireUp(t: ExecutionContext): Config {
  if (upError !== undefined || config === undefined) {
    t.fail(upError ?? 'lab not up');
    throw new Error('lab not up');
  }
  return config;
}

rootTest('data port: forged encapsulated packets spoofing lb1 reach no server and create no record; counted by reason; genuine connections survive', async (t) => {
  const c = requireUp(t);
  const key = deriveDataTagKey(c.cluster.key.reveal());
  const otherKey = deriveDataTagKey(Buffer.alloc(32, 0x77));
  const lb2Before = await stats('lb2');
  const vnet = (lb2Before as ClusterStats & { device?: { features?: { vnetHdr?: boolean } } }).device?.features?.vnetHdr === true;
  const vnetReason = vnet ? 'peer_vnet_invalid' : 'peer_vnet_unsupported';
  t.log(`lb2 device offloads (virtio headers): ${vnet}`);

  // The crafted datagrams, each with the drop reason lb2 must count. Decisions name lb2
  // (index 1) as primary and srv1 (backend 0) as the backend "chosen" by the attacker.
  const syn = (sport: number): Uint8Array => P.tcp4(FORGED, VIP4, sport, 80, P.TCP_SYN);
  const ackp = (sport: number): Uint8Array => P.tcp4(FORGED, VIP4, sport, 80, P.TCP_ACK, new Uint8Array(10));
  const udp = (sport: number): Uint8Array => P.udp4(FORGED, VIP4, sport, 5353, new Uint8Array(8));
  const gso = P.toPartial(P.tcp4(FORGED, VIP4, 30100, 80, P.TCP_ACK, new Uint8Array(4000).fill(0x41)));
  const NEW: Encap = { flags: ENCAP_F_NEW_FLOW, primary: 1, backup: 2, backend: 0 };
  const vh = (flags: number, type: number, hdrLen: number, gsoSize: number, start: number, off: number): number[] =>
    [flags, type, hdrLen & 0xff, hdrLen >> 8, gsoSize & 0xff, gsoSize >> 8, start & 0xff, start >> 8, off & 0xff, off >> 8];
  const crafted: Array<{ what: string; pkt: Uint8Array; reason: string }> = [
    { what: 'SYN with a chosen backend, no tag (the issue\'s attack)', pkt: outer(encap(NEW, syn(30001), 'none')), reason: 'peer_bad_tag' },
    { what: 'SYN with a chosen backend, random tag', pkt: outer(encap(NEW, syn(30002), 'random')), reason: 'peer_bad_tag' },
    { what: 'SYN tagged with another cluster key', pkt: outer(encap(NEW, syn(30003), [otherKey, 0, 1])), reason: 'peer_bad_tag' },
    { what: 'SECOND_CHANCE ACK, no tag', pkt: outer(encap({ flags: ENCAP_F_SECOND_CHANCE, primary: ENCAP_NONE_U8, backup: ENCAP_NONE_U8, backend: ENCAP_NONE_U16 }, ackp(30004), 'none')), reason: 'peer_bad_tag' },
    { what: 'UDP to VIP:5353, no tag', pkt: outer(encap(NEW, udp(30005), 'none')), reason: 'peer_bad_tag' },
    {
      what: 'replay with another 5-tuple (tagged for sport 30006, sent with 30007)',
      pkt: (() => {
        const dg = encap(NEW, syn(30006), [key, 0, 1]);
        dg.set(syn(30007), ENCAP_HEADER_LEN);
        return outer(dg);
      })(),
      reason: 'peer_bad_tag',
    },
    { what: 'replay of a datagram tagged for lb3', pkt: outer(encap(NEW, syn(30008), [key, 0, 2])), reason: 'peer_bad_tag' },
    { what: 'old format: the issue\'s version-1 header, no tag', pkt: outer(encapV1(NEW, syn(30009))), reason: 'encap_old_version' },
    { what: 'from the router\'s own address (not a balancer)', pkt: outer(encap(NEW, syn(30010), [key, 0, 1]), '10.99.2.1'), reason: 'not_a_peer' },
    // A key holder with a bug: the tag is right, the decision is not one any balancer makes.
    { what: 'real key, no FAILOVER, lb2 not the primary', pkt: outer(encap({ flags: ENCAP_F_NEW_FLOW, primary: 2, backup: 1, backend: 0 }, syn(30011), [key, 0, 1])), reason: 'peer_decision_refused' },
    { what: 'real key, FAILOVER to lb2 named primary', pkt: outer(encap({ flags: ENCAP_F_FAILOVER, primary: 1, backup: 2, backend: 0 }, ackp(30012), [key, 0, 1])), reason: 'peer_decision_refused' },
    { what: 'real key, primary out of range', pkt: outer(encap({ flags: ENCAP_F_NEW_FLOW, primary: 9, backup: 2, backend: 0 }, syn(30013), [key, 0, 1])), reason: 'peer_decision_refused' },
    // Crafted virtio headers, each on a tagged datagram (so only the virtio check stands between it and the kernel).
    ...[
      { what: 'gso_size 1 (4,000 one-byte segments)', v: vh(1, 1, 40, 1, 20, 16) },
      { what: 'gso_type UDP (UFO) on TCP', v: vh(1, 3, 40, 1448, 20, 16) },
      { what: 'gso_type UDP_L4 on TCP', v: vh(1, 5, 40, 1448, 20, 16) },
      { what: 'gso_type TCPv6 on IPv4', v: vh(1, 4, 40, 1448, 20, 16) },
      { what: 'csum_start in the payload', v: vh(1, 0, 0, 0, 200, 16) },
      { what: 'csum_offset over the ports', v: vh(1, 0, 0, 0, 20, 0) },
      { what: 'hdr_len 65535', v: vh(1, 1, 0xffff, 1448, 20, 16) },
      { what: 'unknown flag (RSC_INFO)', v: vh(5, 1, 40, 1448, 20, 16) },
    ].map((x, i) => ({ what: `real key, virtio header: ${x.what}`, pkt: outer(encap({ ...NEW, vnet: x.v }, i === 0 ? gso : P.toPartial(P.tcp4(FORGED, VIP4, 30200 + i, 80, P.TCP_ACK, new Uint8Array(4000).fill(0x41))), [key, 0, 1])), reason: vnetReason })),
  ];
  // The flood: forged SYNs and UDP datagrams of distinct flows, no tag.
  const flood: Uint8Array[] = [];
  for (let i = 0; i < FLOOD; i++) flood.push(outer(encap(NEW, i % 2 === 0 ? syn(31000 + i) : udp(31000 + i), 'none')));

  const caps = await Promise.all(SERVERS.map(captureForged));
  const gen = startTraffic(['longlived', '--conns', '30', '--interval-ms', '20', '--duration-s', '10', '--json'], 40_000);
  try {
    t.truthy(await gen.waitLine(/connected/, 10_000), 'the genuine long-lived connections did not connect');
    const before = await Promise.all(BALANCERS.map(stats));
    // The crafted datagrams, 20 ms apart, then the flood (about 2 s).
    await rawSend(crafted.map((x) => x.pkt), 20_000);
    const mid = await stats('lb2');
    await rawSend(flood, 1000);
    const want: Record<string, number> = {};
    for (const x of crafted) want[x.reason] = (want[x.reason] ?? 0) + 1;
    const wantAll: Record<string, number> = { ...want, peer_bad_tag: (want['peer_bad_tag'] ?? 0) + FLOOD };
    let after = await stats('lb2');
    const counted = await poll(async () => {
      after = await stats('lb2');
      return JSON.stringify(dropDelta(before[1]!, after)) === JSON.stringify(Object.fromEntries(REASONS.filter((r) => wantAll[r] !== undefined).map((r) => [r, wantAll[r]])));
    }, 10_000, 200);
    t.deepEqual(dropDelta(before[1]!, mid), Object.fromEntries(REASONS.filter((r) => want[r] !== undefined).map((r) => [r, want[r]])), 'the crafted datagrams, each counted once by its reason');
    t.true(counted, `lb2 never counted every datagram: ${JSON.stringify(dropDelta(before[1]!, after))}, want ${JSON.stringify(wantAll)}`);
    for (const [i, b] of BALANCERS.entries()) {
      if (b === 'lb2') continue;
      const after2 = await stats(b);
      t.deepEqual(dropDelta(before[i]!, after2), {}, `${b} was not attacked and dropped nothing of it`);
    }
    const vr = (after as ClusterStats & { counters: Record<string, number> }).counters;
    t.log(`lb2 drops moved: ${JSON.stringify(dropDelta(before[1]!, after))}; virtio refusals ${JSON.stringify(Object.fromEntries(Object.entries(vr).filter(([k, v]) => k.startsWith('peerVnetRefused') && v)))}; decision refusals ${JSON.stringify(Object.fromEntries(Object.entries(vr).filter(([k, v]) => k.startsWith('peerDecisionRefused') && v)))}`);
  } finally {
    const sum = await longlivedSummary(t, gen);
    if (sum !== undefined) {
      t.log(`genuine long-lived connections: ${sum.res.survived}/${sum.res.connected} survived, ${sum.res.resets} resets, longest stall ${sum.res.maxStallMs} ms, ${sum.res.echoes} echoes`);
      t.is(sum.res.connected, 30);
      t.is(sum.res.survived, 30, 'a genuine connection ended during the attack');
      t.is(sum.res.resets, 0);
    }
    // No record of a forged flow anywhere. Waited on: a genuine UDP flow sent now reaches every
    // balancer's table first (replication is in order), so a forged record would be there too.
    // Only confirmed flows are replicated (UDP: a client datagram after the server's answer,
    // docs/flow-records.md), so the marker flow sends again once it exists, three times in all.
    const marker = 39999;
    const markerKey = `udp ${CLIENT4}:${marker} -> ${VIP4}:5353`;
    for (let k = 0; k < 3; k++) {
      await sendUdpFrom('client', CLIENT4, VIP4, 5353, [new TextEncoder().encode(`marker ${k}`)], marker);
      await poll(async () => (await Promise.all(BALANCERS.map((b) => flows(b)))).some((x) => x.flows.some((f) => f.key === markerKey)), 5000, 50);
    }
    let tables: Array<{ flows: Array<{ key: string }> }> = [];
    const replicated = await poll(async () => {
      tables = await Promise.all(BALANCERS.map((b) => flows(b)));
      return tables.every((x) => x.flows.some((f) => f.key === markerKey));
    }, 10_000, 200);
    t.true(replicated, `the marker flow ${markerKey} did not reach every balancer`);
    for (const [i, b] of BALANCERS.entries()) {
      const forged = tables[i]!.flows.filter((f) => f.key.includes(`${FORGED}:`));
      t.deepEqual(forged.map((f) => f.key), [], `${b} holds records of forged flows`);
    }
    const seen = await Promise.all(caps.map(stopCapture));
    t.log(`packets of the forged client captured at srv1..srv3: ${seen.join(', ')}`);
    t.deepEqual(seen, [0, 0, 0], 'a forged packet reached a server');
  }
  const lb1 = await stats('lb1');
  t.true(lb1.counters.peerTxPackets > 0, 'lb1 sent nothing to its peers: the genuine data-port path was not exercised');
});
