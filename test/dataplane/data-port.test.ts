/**
 * Hostile input on the data port (issue 12, "Forged packets on the data port"): what a
 * balancer does with encapsulated datagrams that a peer did not send, or did not send like
 * this. Each case goes through Forwarder.processPeerBatch of balancer lb2 (index 1) of a
 * three-balancer cluster and checks what a user cares about: whether anything reaches a
 * server (written to the TUN device), whether a record appears in the flow table, and which
 * drop counter moved. Forged and altered datagrams: data-port tag (src/decision/data-tag.ts).
 * Decisions out of policy, tagged with the real key as a buggy peer would send them:
 * src/dataplane/peer-decision.ts. Virtio headers: src/packet/vnet-check.ts (per kind in
 * test/packet/vnet-check.test.ts; here through the forwarder).
 */
import test from 'ava';
import { parseConfig } from '../../src/config';
import { deriveDataTagKey, deriveHashKey } from '../../src/decision/hash-key';
import { hashFlowKey } from '../../src/decision/halfsiphash';
import { buildForwardingTable } from '../../src/decision/forwarding-table';
import { FlowTable } from '../../src/flow';
import { Forwarder } from '../../src/dataplane/forwarder';
import { forwardDropNames } from '../../src/dataplane/forward-drop';
import { peerDecisionNames } from '../../src/dataplane/peer-decision';
import { PacketBatch } from '../../src/dataplane/packet-batch';
import type { PeerOutput } from '../../src/dataplane/peer-output';
import { packetResultNames } from '../../src/packet/result';
import { vnetCheckNames } from '../../src/packet/vnet-check';
import {
  ENCAP_F_FAILOVER, ENCAP_F_NEW_FLOW, ENCAP_F_REPLY, ENCAP_F_SECOND_CHANCE, ENCAP_HEADER_LEN, ENCAP_NONE_U16, ENCAP_NONE_U8, ENCAP_TAG_OFF,
} from '../../src/packet/encap';
import { VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4 } from '../../src/packet/vnet';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import { formatIp } from '../../src/packet/addr';
import { peerDatagram, tagDatagram, type Decision } from '../helpers/peer-datagram';
import * as P from '../helpers/packets';
import { CLIENT, VIP } from '../helpers/fixtures';

const KEY = Buffer.alloc(32, 0x3d);
const KEY_PATH = '/keys/data-port.key';
const readKeyFile = (p: string): Buffer => {
  if (p === KEY_PATH) return Buffer.from(KEY);
  throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
};
const LB = ['10.99.2.11', '10.99.2.12', '10.99.2.13'];
const STRANGER = '10.99.2.66';
const DNS = '10.99.0.53';
const YAML = `
cluster: { id: data-port, key_file: ${KEY_PATH}, replication: { sync_threshold: 3 } }
balancers:
${LB.map((a, i) => `  - { id: lb${i + 1}, address: ${a} }`).join('\n')}
vips:
  - name: web4
    address: ${VIP}
    ports: [80]
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }, { address: 10.99.3.23 }]
  - name: dns4
    address: ${DNS}
    protocols: [udp]
    ports: [5353]
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }]
`;
const config = parseConfig(YAML, 'data-port.yaml', { readKeyFile, env: {}, baseDir: '/' });
const hashKey = deriveHashKey(config.cluster.key.reveal());
const tagKey = deriveDataTagKey(config.cluster.key.reveal());
const SELF = 1; // lb2 receives
const info = new PacketInfo();

interface Result {
  /** Packets written to the TUN device (toward a server). */
  written: Uint8Array[];
  drops: Record<string, number>;
  refused: Record<string, number>;
  vnetRefused: Record<string, number>;
  flows: number;
  /** The record's decision when one was created. */
  record?: { primary: number; backup: number; vip: number; backend: number };
}

/** Balancer lb2 with its own table; `ineligible`: backends of web4 that take no new flows there. */
function lb2(opts: { vnet?: boolean; ineligible?: number[] } = {}) {
  const ft = buildForwardingTable(config, hashKey, 1, (v, i) => !(v.name === 'web4' && (opts.ineligible ?? []).includes(i)));
  const table = new FlowTable({ capacity: 1024, seed: 5, earlyDrop: false, timeouts: { tcpEstablished: 300, tcpSynSeen: 30, tcpClosing: 30, tcpClosed: 10, udp: 30, icmp: 10 } });
  const live = new Uint8Array(3).fill(1);
  const peerAddrs = new Uint8Array(3 * 16);
  const peerPorts = new Uint16Array(3);
  config.balancers.forEach((b, i) => {
    peerAddrs.set(b.address.bytes, i * 16);
    peerPorts[i] = b.dataPort;
  });
  const batch = new PacketBatch({ count: 8, maxPacket: 65535 });
  const peerOut: PeerOutput = { batch: new PacketBatch({ count: 8, maxPacket: 65535, share: batch }), addrs: new Uint8Array(8 * 16), ports: new Uint16Array(8), count: 0 };
  const fwd = new Forwarder({ table, forwarding: ft, hashKey, tagKey, selfIndex: SELF, live, peers: { addrs: peerAddrs, ports: peerPorts }, peerOutput: peerOut });
  /** Datagrams received from `from` (a balancer index or an address), one batch. */
  const recv = (dgs: Uint8Array[], from: number | string = 0): Result => {
    const rx = new PacketBatch({ count: 8, maxPacket: 65535 });
    const addrs = new Uint8Array(dgs.length * 16);
    const src = P.ip(typeof from === 'number' ? LB[from]! : from);
    dgs.forEach((dg, k) => {
      rx.setPacket(k, dg);
      addrs.set(src.length === 4 ? [...new Uint8Array(10), 0xff, 0xff, ...src] : src, k * 16);
    });
    const n = fwd.processPeerBatch(rx, dgs.length, addrs, opts.vnet ?? false, 1);
    const written: Uint8Array[] = [];
    for (let i = 0; i < n; i++) written.push(rx.buf.slice(rx.offsets[i]!, rx.offsets[i]! + rx.sizes[i]!));
    const named = (arr: Float64Array, names: readonly string[]): Record<string, number> => {
      const o: Record<string, number> = {};
      arr.forEach((v, i) => {
        if (v > 0) o[names[i]!] = v;
      });
      return o;
    };
    const st = fwd.stats;
    const r: Result = {
      written,
      drops: { ...named(st.forwardDrops, forwardDropNames), ...named(st.packetDrops, packetResultNames) },
      refused: named(st.peerDecisionRefused, peerDecisionNames),
      vnetRefused: named(st.peerVnetRefused, vnetCheckNames),
      flows: table.size,
    };
    table.scan(0, table.capacity, (id) => {
      r.record = { primary: table.primary(id), backup: table.backup(id), vip: table.vip(id), backend: table.backend(id) };
    });
    return r;
  };
  return { ft, table, fwd, recv };
}

const FT = buildForwardingTable(config, hashKey, 1);

/** The flow hash's ranking row of `pkt`, best first, and its web4 backend pick. */
function rankOf(pkt: Uint8Array): { ranks: number[]; backend: number; key: Uint8Array } {
  parsePacket(pkt, 0, pkt.length, info);
  const h = hashFlowKey(hashKey, info.key);
  const row = h & 0xffff;
  return { ranks: [0, 1, 2].map((i) => FT.ranking.rankAt(row, i)), backend: FT.backendTables[info.key[37] === 4 && formatIp(info.key, 28, 4) === DNS ? 1 : 0]!.lookup(h), key: info.key.slice() };
}

/** A client packet (built by `make(sport)`) whose ranking row has lb2 at rank `at`. */
function flowWith(make: (sport: number) => Uint8Array, at: number): { pkt: Uint8Array; ranks: number[]; backend: number } {
  for (let sport = 40000; sport < 41000; sport++) {
    const pkt = make(sport);
    const r = rankOf(pkt);
    if (r.ranks[at] === SELF) return { pkt, ranks: r.ranks, backend: r.backend };
  }
  throw new Error('no such flow');
}

const syn = (sport: number): Uint8Array => P.tcp4(CLIENT, VIP, sport, 80, P.TCP_SYN);
const ack = (sport: number): Uint8Array => P.tcp4(CLIENT, VIP, sport, 80, P.TCP_ACK, new Uint8Array(20));
const dns = (sport: number): Uint8Array => P.udp4(CLIENT, DNS, sport, 5353, new Uint8Array(12));

/** lb2 is the ranked primary of this SYN; lb1 decided it (NEW_FLOW) and sends it to lb2. */
const SYN = flowWith(syn, 0);
const GENUINE: Decision = { flags: ENCAP_F_NEW_FLOW, primary: SELF, backup: SYN.ranks[1]!, backend: SYN.backend, vip: 0 };
const genuine = (): Uint8Array => peerDatagram(GENUINE, SYN.pkt, tagKey, 0, SELF);

test('a genuine encapsulated SYN (lb1 decided, lb2 primary): reaches the server, record adopted as sent', (t) => {
  const r = lb2().recv([genuine()]);
  t.is(r.written.length, 1);
  t.deepEqual(r.drops, {});
  t.is(r.flows, 1);
  t.deepEqual(r.record, { primary: SELF, backup: GENUINE.backup, vip: 0, backend: GENUINE.backend });
  parsePacket(r.written[0]!, 0, r.written[0]!.length, info);
  t.is(formatIp(r.written[0]!, info.dstOff, 4), `10.99.3.2${GENUINE.backend + 1}`, 'NAT to the backend lb1 chose');
});

test('the genuine datagram is what lb1\'s forwarder sends (round trip through PeerEmitter)', (t) => {
  // lb1 (index 0) receives the SYN from the client and encapsulates it to lb2.
  const table = new FlowTable({ capacity: 64, seed: 1, earlyDrop: false, timeouts: { tcpEstablished: 300, tcpSynSeen: 30, tcpClosing: 30, tcpClosed: 10, udp: 30, icmp: 10 } });
  const batch = new PacketBatch({ count: 4, maxPacket: 65535 });
  const peerOut: PeerOutput = { batch: new PacketBatch({ count: 4, maxPacket: 65535, share: batch }), addrs: new Uint8Array(64), ports: new Uint16Array(4), count: 0 };
  const pa = new Uint8Array(48);
  config.balancers.forEach((b, i) => pa.set(b.address.bytes, i * 16));
  const lb1 = new Forwarder({ table, forwarding: FT, hashKey, tagKey, selfIndex: 0, live: new Uint8Array(3).fill(1), peers: { addrs: pa, ports: new Uint16Array(3).fill(7947) }, peerOutput: peerOut });
  batch.setPacket(0, SYN.pkt);
  t.is(lb1.processBatch(batch, 1, false, 1), 0);
  t.is(peerOut.count, 1);
  const sent = peerOut.batch.buf.slice(peerOut.batch.offsets[0]!, peerOut.batch.offsets[0]! + peerOut.batch.sizes[0]!);
  t.deepEqual([...sent], [...genuine()], 'byte for byte');
});

/** A change to a genuine datagram, and the source it arrives from. */
interface Forgery {
  desc: string;
  dg: () => Uint8Array;
  from?: number | string;
  drop: string;
}

const retag = (d: Decision, pkt: Uint8Array, from = 0, to = SELF): Uint8Array => peerDatagram(d, pkt, tagKey, from, to);
const forgeries: Forgery[] = [
  { desc: 'forged: no tag (the issue\'s SYN with a chosen backend, source spoofed as lb1)', dg: () => { const d = genuine(); d.fill(0, ENCAP_TAG_OFF, ENCAP_HEADER_LEN); return d; }, drop: 'peer_bad_tag' },
  { desc: 'forged: a random tag', dg: () => { const d = genuine(); for (let i = ENCAP_TAG_OFF; i < ENCAP_HEADER_LEN; i++) d[i] = (i * 37) & 0xff; return d; }, drop: 'peer_bad_tag' },
  { desc: 'forged: tagged with another cluster key', dg: () => peerDatagram(GENUINE, SYN.pkt, deriveDataTagKey(Buffer.alloc(32, 0x3e)), 0, SELF), drop: 'peer_bad_tag' },
  { desc: 'forged: tagged with the hash key (not the tag key)', dg: () => peerDatagram(GENUINE, SYN.pkt, hashKey, 0, SELF), drop: 'peer_bad_tag' },
  { desc: 'forged SECOND_CHANCE (no tag)', dg: () => { const d = retag({ flags: ENCAP_F_SECOND_CHANCE, primary: ENCAP_NONE_U8, backup: ENCAP_NONE_U8, backend: ENCAP_NONE_U16, vip: 0 }, ack(40999)); d.fill(0, ENCAP_TAG_OFF, ENCAP_HEADER_LEN); return d; }, drop: 'peer_bad_tag' },
  { desc: 'forged UDP (no tag)', dg: () => { const d = retag({ flags: ENCAP_F_NEW_FLOW, primary: SELF, backup: 0, backend: 0, vip: 1 }, dns(40999)); d.fill(0, ENCAP_TAG_OFF, ENCAP_HEADER_LEN); return d; }, drop: 'peer_bad_tag' },
  { desc: 'replay with another backend in the header', dg: () => { const d = genuine(); d[5] = (GENUINE.backend + 1) % 3; return d; }, drop: 'peer_bad_tag' },
  { desc: 'replay with another primary/backup in the header', dg: () => { const d = genuine(); d[3] = 0; d[3] = GENUINE.backup === 0 ? 2 : 0; return d; }, drop: 'peer_bad_tag' },
  { desc: 'replay with other flags (NEW_FLOW → FAILOVER)', dg: () => { const d = genuine(); d[1] = ENCAP_F_FAILOVER; return d; }, drop: 'peer_bad_tag' },
  { desc: 'replay with another generation', dg: () => { const d = genuine(); d[11]! ^= 1; return d; }, drop: 'peer_bad_tag' },
  { desc: 'replay with another inner source port', dg: () => { const d = genuine(); d[ENCAP_HEADER_LEN + 21]! ^= 1; return d; }, drop: 'peer_bad_tag' },
  { desc: 'replay with another inner source address (checksum kept valid)', dg: () => { const d = genuine(); d.set(P.tcp4('10.99.1.3', VIP, 40000 + ((SYN.pkt[20]! << 8) | SYN.pkt[21]!) - 40000, 80, P.TCP_SYN), ENCAP_HEADER_LEN); return d; }, drop: 'peer_bad_tag' },
  { desc: 'replay with the inner packet of another VIP', dg: () => { const g = genuine(); const d = new Uint8Array(ENCAP_HEADER_LEN + 40); d.set(g.subarray(0, ENCAP_HEADER_LEN)); d.set(dns(40000).subarray(0, 40), ENCAP_HEADER_LEN); return d; }, drop: 'peer_bad_tag' },
  { desc: 'replay to another receiver (a datagram lb1 tagged for lb3)', dg: () => retag(GENUINE, SYN.pkt, 0, 2), drop: 'peer_bad_tag' },
  { desc: 'replay as another sender (lb1\'s datagram, source lb3)', dg: genuine, from: 2, drop: 'peer_bad_tag' },
  { desc: 'genuine datagram from an address that is no balancer', dg: genuine, from: STRANGER, drop: 'not_a_peer' },
  { desc: 'genuine datagram from our own address', dg: genuine, from: SELF, drop: 'not_a_peer' },
  {
    desc: 'old format: a version-1 header (12 bytes, no tag) from a balancer on an older release',
    dg: () => {
      const d = new Uint8Array(12 + SYN.pkt.length);
      d.set([0x10, ENCAP_F_NEW_FLOW, SELF, GENUINE.backup, 0, GENUINE.backend, 0, 0, 0, 0, 0, 1]);
      d.set(SYN.pkt, 12);
      return d;
    },
    drop: 'encap_old_version',
  },
  { desc: 'an unknown header version', dg: () => { const d = genuine(); d[0] = 0x30; return d; }, drop: 'encap_bad_version' },
];

for (const f of forgeries) {
  test(`data port: ${f.desc} → dropped (${f.drop}), nothing reaches a server, no record`, (t) => {
    const r = lb2().recv([f.dg()], f.from ?? 0);
    t.is(r.written.length, 0, 'nothing written toward a server');
    t.is(r.flows, 0, 'no record');
    t.deepEqual(r.drops, { [f.drop]: 1 });
  });
}

test('the tag does not cover the payload: a genuine datagram with other payload bytes is accepted (what the client could send to the VIP itself)', (t) => {
  const pkt = P.tcp4(CLIENT, VIP, (SYN.pkt[20]! << 8) | SYN.pkt[21]!, 80, P.TCP_SYN, new Uint8Array(4));
  const d = peerDatagram(GENUINE, pkt, tagKey, 0, SELF);
  d[d.length - 1] = 0x99; // the TCP checksum no longer matches: the server will drop it, not the balancer
  const r = lb2().recv([d]);
  t.is(r.written.length, 1);
  t.deepEqual(r.drops, {});
});

/** A decision tagged with the real key (a peer with a bug, or a key holder gone wrong). */
interface DecisionCase {
  desc: string;
  pkt: Uint8Array;
  d: Decision;
  /** 'adopted': the record is the header's; 'decided': refused, lb2 decided itself; else dropped. */
  outcome: 'adopted' | 'decided' | 'dropped';
  reason?: string;
  ineligible?: number[];
}

const R2 = flowWith(syn, 2); // lb2 ranks last in this row
const R1 = flowWith(syn, 1); // lb2 ranks second
const decisions: DecisionCase[] = [
  { desc: 'NEW_FLOW, primary lb2, backup second in rank', pkt: SYN.pkt, d: GENUINE, outcome: 'adopted' },
  { desc: 'NEW_FLOW, primary = lb2 ranked second (the first was dead for the sender), backup third', pkt: R1.pkt, d: { flags: ENCAP_F_NEW_FLOW, primary: SELF, backup: R1.ranks[2]!, backend: R1.backend, vip: 0 }, outcome: 'adopted' },
  { desc: 'NEW_FLOW, the pending rule: lb2 ranked last, backup the row\'s first', pkt: R2.pkt, d: { flags: ENCAP_F_NEW_FLOW, primary: SELF, backup: R2.ranks[0]!, backend: R2.backend, vip: 0 }, outcome: 'adopted' },
  { desc: 'NEW_FLOW, lb2 ranked last, backup the second: no ranking gives it', pkt: R2.pkt, d: { flags: ENCAP_F_NEW_FLOW, primary: SELF, backup: R2.ranks[1]!, backend: R2.backend, vip: 0 }, outcome: 'dropped', reason: 'rank' },
  { desc: 'FAILOVER to lb2 as the backup (primary dead for the sender), the record\'s backend', pkt: ack(40500), d: { flags: ENCAP_F_FAILOVER, primary: 0, backup: SELF, backend: 2, vip: 0 }, outcome: 'adopted' },
  { desc: 'FAILOVER to lb2 as the next holder (primary and backup dead)', pkt: ack(40501), d: { flags: ENCAP_F_FAILOVER, primary: 0, backup: 2, backend: 1, vip: 0 }, outcome: 'adopted' },
  { desc: 'a record\'s packet to its primary, lb2 (no flag)', pkt: ack(40502), d: { flags: 0, primary: SELF, backup: 0, backend: 1, vip: 0 }, outcome: 'adopted' },
  { desc: 'primary out of range', pkt: SYN.pkt, d: { ...GENUINE, primary: 7 }, outcome: 'dropped', reason: 'balancer' },
  { desc: 'backup "none"', pkt: SYN.pkt, d: { ...GENUINE, backup: ENCAP_NONE_U8 }, outcome: 'dropped', reason: 'balancer' },
  { desc: 'primary = backup', pkt: SYN.pkt, d: { ...GENUINE, backup: SELF }, outcome: 'dropped', reason: 'balancer' },
  { desc: 'no FAILOVER but lb2 is not the primary', pkt: SYN.pkt, d: { ...GENUINE, primary: 0, backup: SELF }, outcome: 'dropped', reason: 'role' },
  { desc: 'FAILOVER to lb2 which is the primary', pkt: ack(40503), d: { flags: ENCAP_F_FAILOVER, primary: SELF, backup: 0, backend: 1, vip: 0 }, outcome: 'dropped', reason: 'role' },
  { desc: 'NEW_FLOW with FAILOVER (a fresh decision has a live primary)', pkt: SYN.pkt, d: { ...GENUINE, flags: ENCAP_F_NEW_FLOW | ENCAP_F_FAILOVER, primary: 0, backup: SELF }, outcome: 'dropped', reason: 'role' },
  { desc: 'REPLY to a VIP (steered replies go to clients)', pkt: SYN.pkt, d: { ...GENUINE, flags: ENCAP_F_REPLY }, outcome: 'dropped', reason: 'role' },
  { desc: 'the header\'s VIP is not the destination\'s (another table): decided here', pkt: SYN.pkt, d: { ...GENUINE, vip: 1 }, outcome: 'decided', reason: 'vip' },
  { desc: 'backend index this table does not have (another table): decided here', pkt: SYN.pkt, d: { ...GENUINE, backend: 3 }, outcome: 'decided', reason: 'backend_range' },
  { desc: 'no backend at all, no SECOND_CHANCE: decided here', pkt: SYN.pkt, d: { ...GENUINE, backend: ENCAP_NONE_U16 }, outcome: 'decided', reason: 'backend_range' },
  { desc: 'NEW_FLOW on a backend that takes no new flows here (health or drain not everywhere yet): decided here, on an eligible one', pkt: SYN.pkt, d: GENUINE, ineligible: [SYN.backend], outcome: 'decided', reason: 'backend_ineligible' },
];

for (const c of decisions) {
  test(`adopted decision: ${c.desc} → ${c.outcome}${c.reason ? ` (${c.reason})` : ''}`, (t) => {
    const r = lb2({ ineligible: c.ineligible }).recv([peerDatagram(c.d, c.pkt, tagKey, 0, SELF)]);
    t.deepEqual(r.refused, c.reason === undefined ? {} : { [c.reason]: 1 });
    if (c.outcome === 'dropped') {
      t.is(r.written.length, 0, 'nothing written toward a server');
      t.is(r.flows, 0, 'no record');
      t.deepEqual(r.drops, { peer_decision_refused: 1 });
      return;
    }
    t.is(r.written.length, 1);
    t.is(r.flows, 1);
    if (c.outcome === 'adopted') {
      t.deepEqual(r.drops, {});
      t.deepEqual(r.record, { primary: c.d.primary, backup: c.d.backup, vip: c.d.vip, backend: c.d.backend });
      return;
    }
    // Decided here: lb2's own decision, as for a client's packet.
    t.deepEqual(r.drops, { peer_decision_invalid: 1 }, 'a note, not a drop');
    const own = rankOf(c.pkt);
    t.is(r.record!.vip, 0);
    t.is(r.record!.primary, own.ranks[0]);
    if (c.ineligible === undefined) t.is(r.record!.backend, own.backend);
    else t.false(c.ineligible.includes(r.record!.backend), 'an eligible backend');
  });
}

test('a record lb2 holds is the truth: a later header with another decision changes nothing', (t) => {
  const b = lb2();
  t.is(b.recv([genuine()]).written.length, 1);
  const other = peerDatagram({ flags: 0, primary: SELF, backup: GENUINE.backup, backend: (GENUINE.backend + 1) % 3, vip: 0 }, ack((SYN.pkt[20]! << 8) | SYN.pkt[21]!), tagKey, 0, SELF);
  const r = b.recv([other]);
  t.is(r.written.length, 1);
  t.deepEqual(r.record, { primary: SELF, backup: GENUINE.backup, vip: 0, backend: GENUINE.backend });
  t.deepEqual(r.refused, {});
});

const gsoPkt = P.toPartial(P.tcp4(CLIENT, VIP, (SYN.pkt[20]! << 8) | SYN.pkt[21]!, 80, P.TCP_ACK, new Uint8Array(1448 * 4).fill(7)));
const VH = [VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 40, 0, 1448 & 0xff, 1448 >> 8, 20, 0, 16, 0];
const badVnet: Array<{ desc: string; v: number[]; reason: string }> = [
  { desc: 'unknown flag', v: [VNET_F_NEEDS_CSUM | 4, ...VH.slice(1)], reason: 'flags' },
  { desc: 'gso_type UDP (UFO)', v: [VH[0]!, 3, ...VH.slice(2)], reason: 'gso_type' },
  { desc: 'gso_type UDP_L4', v: [VH[0]!, 5, ...VH.slice(2)], reason: 'gso_type' },
  { desc: 'gso_type TCPv6 on IPv4', v: [VH[0]!, 4, ...VH.slice(2)], reason: 'gso_packet' },
  { desc: 'GSO without NEEDS_CSUM', v: [0, ...VH.slice(1)], reason: 'gso_packet' },
  { desc: 'gso_size 1', v: [...VH.slice(0, 4), 1, 0, ...VH.slice(6)], reason: 'gso_size' },
  { desc: 'gso_size 0', v: [...VH.slice(0, 4), 0, 0, ...VH.slice(6)], reason: 'gso_size' },
  { desc: 'csum_start in the payload', v: [...VH.slice(0, 6), 100, 0, 16, 0], reason: 'csum' },
  { desc: 'csum_offset over the ports', v: [...VH.slice(0, 8), 0, 0], reason: 'csum' },
  { desc: 'csum_start past the packet', v: [...VH.slice(0, 6), 0xff, 0xff, 16, 0], reason: 'csum' },
  { desc: 'hdr_len past the packet', v: [VH[0]!, VH[1]!, 0xff, 0xff, ...VH.slice(4)], reason: 'hdr_len' },
];

for (const b of badVnet) {
  test(`virtio header from the network: ${b.desc} → dropped (peer_vnet_invalid: ${b.reason}), nothing reaches the kernel`, (t) => {
    const r = lb2({ vnet: true }).recv([peerDatagram(GENUINE, gsoPkt, tagKey, 0, SELF, b.v)]);
    t.is(r.written.length, 0);
    t.is(r.flows, 0, 'checked before any state');
    t.deepEqual(r.drops, { peer_vnet_invalid: 1 });
    t.deepEqual(r.vnetRefused, { [b.reason]: 1 });
  });
}

test('a genuine GSO super-packet\'s virtio header is accepted and handed on rebuilt (hdr_len = headers, DATA_VALID cleared)', (t) => {
  const b = lb2({ vnet: true });
  const v = [VNET_F_NEEDS_CSUM | 2, VNET_GSO_TCPV4, 0x00, 0x10, 1448 & 0xff, 1448 >> 8, 20, 0, 16, 0];
  const rx = new PacketBatch({ count: 2, maxPacket: 65535 });
  rx.setPacket(0, peerDatagram(GENUINE, gsoPkt, tagKey, 0, SELF, v));
  const addrs = new Uint8Array(16);
  addrs.set(config.balancers[0]!.address.bytes);
  t.is(b.fwd.processPeerBatch(rx, 1, addrs, true, 1), 1);
  t.deepEqual([...rx.vnet.subarray(0, 10)], [VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 40, 0, 1448 & 0xff, 1448 >> 8, 20, 0, 16, 0]);
});

test('a batch mixing forged and genuine datagrams: only the genuine one goes on, each forgery counted once', (t) => {
  const forged = genuine();
  forged[ENCAP_TAG_OFF] ^= 0xff;
  const r = lb2().recv([forged, genuine(), forged.slice()]);
  t.is(r.written.length, 1);
  t.is(r.flows, 1);
  t.deepEqual(r.drops, { peer_bad_tag: 2 });
});

test('a split super-packet\'s chunks share one tag; a chunk retagged for another flow is not merged into it', (t) => {
  // Chunks are GSO packets of the same flow: tag the first and copy its header (as gso-split does).
  const big = P.toPartial(P.tcp4(CLIENT, VIP, (SYN.pkt[20]! << 8) | SYN.pkt[21]!, 80, P.TCP_ACK, new Uint8Array(1448 * 2).fill(1), { seq: 1000 }));
  const part = (seq: number, payload: number): Uint8Array => P.toPartial(P.tcp4(CLIENT, VIP, (SYN.pkt[20]! << 8) | SYN.pkt[21]!, 80, P.TCP_ACK, new Uint8Array(payload).fill(1), { seq }));
  const v1 = [VNET_F_NEEDS_CSUM, 0, 40, 0, 0, 0, 20, 0, 16, 0];
  const c0 = peerDatagram(GENUINE, part(1000, 1448), tagKey, 0, SELF, v1);
  const c1 = peerDatagram(GENUINE, part(2448, 1448), tagKey, 0, SELF, v1);
  t.deepEqual([...c0.subarray(0, ENCAP_HEADER_LEN)], [...c1.subarray(0, ENCAP_HEADER_LEN)], 'same header, same tag');
  const b = lb2({ vnet: true });
  const r = b.recv([c0, c1]);
  t.is(r.written.length, 1, 'merged into one packet');
  t.is(r.written[0]!.length, big.length);
  t.is(b.fwd.stats.peerRxMerged, 1);
  // A forged chunk with the genuine header bytes but a tag recomputed for nothing: not merged, dropped.
  const b2 = lb2({ vnet: true });
  const c2 = c1.slice();
  tagDatagram(c2, deriveDataTagKey(Buffer.alloc(32, 1)), 0, SELF);
  const r2 = b2.recv([c0, c2]);
  t.is(r2.written.length, 1);
  t.deepEqual(r2.drops, { peer_bad_tag: 1 });
});
