/**
 * Seeded mutation fuzzing of the forwarder (issue 12 "Tests"): over a million mutated packets
 * through Forwarder.processBatch (virtio headers off and on) and Forwarder.processPeerBatch
 * (encapsulated packets from peers, split super-packets among them), with every check below
 * after every batch. Reproducible: one u32 seed drives everything (test/helpers/packet-mutator.ts
 * Rng); a failure names it and the batch, and TUNLB_FUZZ_SEED=<seed> replays the same run
 * (TUNLB_FUZZ_SCALE=<factor> runs longer or shorter).
 *
 * Inputs, realistic before they are mutated:
 *   - a corpus: IPv4/IPv6 TCP (SYN, data, FIN, RST, options), UDP (zero checksum too), ICMP echo,
 *     ICMP errors quoting TCP/UDP/echo in both directions, fragments (first and later, IPv4 and
 *     IPv6), IPv6 extension headers (hop-by-hop, routing, destination options, AH), IPv4
 *     options, replies from backends, packets to DSR VIPs, to ports and protocols a VIP does not
 *     serve, to no VIP; GSO super-packets and partial-checksum packets with their virtio headers;
 *   - packets of flows the table holds, built from its keys (forward and reply direction, ICMP
 *     errors about them, their fragments), so established-flow, reply, backend-down, connection
 *     reuse, failover, second-chance and reply-steering paths run, not just parse errors;
 *   - from peers: those packets encapsulated with a decision (new flow, failover, second chance,
 *     steered reply, the record's or a made-up one), with carried virtio headers, runs of chunk
 *     datagrams of a split super-packet (merged on receipt), from peers, from a non-peer and from
 *     ourselves.
 * Mutations (1-4 per mutated packet): bit flips, byte sets, truncation, length-field lies, splices
 * with another packet, appended garbage, inserted and deleted ranges, virtio header lies; for
 * peers also the encapsulation header's fields. Datagrams from peers carry the data-port tag a
 * peer computes (before mutation; a few none), so the checks behind the tag run too.
 * Meanwhile the cluster changes under the forwarder: peers die and return, backends go down or
 * stop taking new flows (forwarding table swaps), time jumps past every timeout, the table fills.
 *
 * Checked after every batch:
 *   - no exception (a failure reports the seed, the batch and its packets);
 *   - no write outside a packet's slot: packets sit in every other slot of the batch, the slots
 *     between them (and at both ends) are guard bytes that must come out unchanged;
 *   - every packet is accounted for exactly once (the forwarder's contract "every drop
 *     increments exactly one counter"): outcomes (written back, queued for a peer, queued as a
 *     DSR frame) plus the increase of the drop counters (plus, from peers, the datagrams merged
 *     into the one before them) equals the packets in; each outcome lies within one packet's
 *     slot and no slot has two; `peer_decision_invalid` is a note, not a drop (the balancer then
 *     decides itself), and never happens on the TUN path;
 *   - what is written back parses, and is never addressed to a VIP (it would loop into the TUN
 *     device); what goes to a peer has a valid encapsulation header, a peer's address and a
 *     data-port tag that peer accepts;
 *   - the replication sink is only told about live flows decided here.
 * Checked every INVARIANT_EVERY batches and at the end: the flow table's invariants (its size is
 * its live entries, every live entry is found by its forward key and, for NAT, by its reply key,
 * which is the one its decision gives; decisions in range; DSR flows have no reply key).
 */
import test, { type ExecutionContext } from 'ava';
import { parseConfig, type Config } from '../../src/config';
import { deriveDataTagKey, deriveHashKey } from '../../src/decision/hash-key';
import { tagDatagram } from '../helpers/peer-datagram';
import { dataTagMatches } from '../../src/decision/data-tag';
import { buildForwardingTable, findVip, METHOD_DSR, type ForwardingTable } from '../../src/decision/forwarding-table';
import { writeReplyKey } from '../../src/decision/reply-key';
import { FlowTable, FlowFlags } from '../../src/flow';
import { Forwarder } from '../../src/dataplane/forwarder';
import { ForwardDrop, forwardDropNames } from '../../src/dataplane/forward-drop';
import { createDsrOutput, type DsrOutput } from '../../src/dataplane/dsr-output';
import type { PeerOutput } from '../../src/dataplane/peer-output';
import { NEIGH_STRIDE, type DsrNeighbours } from '../../src/dataplane/neighbours';
import { PacketBatch } from '../../src/dataplane/packet-batch';
import { parsePacket } from '../../src/packet/parse';
import { PacketInfo } from '../../src/packet/packet-info';
import { packetResultNames, PacketResult } from '../../src/packet/result';
import {
  ENCAP_F_FAILOVER, ENCAP_F_NEW_FLOW, ENCAP_F_REPLY, ENCAP_F_SECOND_CHANCE, ENCAP_F_VNET, ENCAP_HEADER_LEN, ENCAP_NONE_U16, ENCAP_NONE_U8,
  ENCAP_VNET_LEN, EncapInfo, parseEncap, writeEncapHeader,
} from '../../src/packet/encap';
import { gsoSplitHeaders, GsoSplit, newGsoSplitResult } from '../../src/packet/gso-split';
import { VNET_HDR_LEN } from '../../src/packet/vnet';
import * as P from '../helpers/packets';
import { chunkDatagram } from '../helpers/gso';
import { CLIENT, CLIENT6, ROUTER, ROUTER6, VIP, VIP6, BACK_ROUTER, BACK_ROUTER6 } from '../helpers/fixtures';
import { MUTATIONS, PacketMutator, Rng, structureFields, type Field } from '../helpers/packet-mutator';

// ---------------------------------------------------------------------------------------------
// Run parameters

const SEED = process.env.TUNLB_FUZZ_SEED !== undefined ? Number(process.env.TUNLB_FUZZ_SEED) >>> 0 : 0x7e57f022;
const SCALE = Number(process.env.TUNLB_FUZZ_SCALE ?? 1);
/** Largest batch (packets); batch sizes vary from 1 to this. */
const MAX_BATCH = 48;
const INVARIANT_EVERY = 200;
/** TUNLB_FUZZ_TRACE=<batch>: a failure in that batch reports every packet's input bytes. */
const TRACE = Number(process.env.TUNLB_FUZZ_TRACE ?? -1);

// ---------------------------------------------------------------------------------------------
// The cluster: three balancers; NAT VIPs (IPv4 and IPv6, a port-rewriting backend, a backend
// shared by two VIPs), DSR VIPs, one backend per DSR VIP without a MAC.

const KEY_PATH = '/keys/fuzz.key';
const readKeyFile = (p: string): Buffer => {
  if (p === KEY_PATH) return Buffer.alloc(32, 0x5c);
  throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
};
const BALANCERS = ['10.99.2.11', '10.99.2.12', '10.99.2.13'];
const NOT_A_PEER = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, 2, 99);
const TCP_ONLY = '10.99.0.20';
const DNS4 = '10.99.0.40';
const DSR4 = '10.99.0.30';
const DSR6 = 'fd99::30';
const OTHER = '10.99.1.77';
const B4 = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];
const B6 = ['fd99:3::21', 'fd99:3::22', 'fd99:3::23'];

const YAML = `
cluster: { id: fuzz, key_file: ${KEY_PATH} }
balancers:
${BALANCERS.map((a, i) => `  - { id: lb${i + 1}, address: ${a} }`).join('\n')}
vips:
  - name: web4
    address: ${VIP}
    protocols: [tcp, udp, icmp]
    ports: [80, 443, 53, "5000-5999"]
    backends:
      - { address: ${B4[0]} }
      - { address: ${B4[1]} }
      - { address: ${B4[2]}, port: 8080 }
  - name: web6
    address: "${VIP6}"
    protocols: [tcp, udp, icmp]
    ports: "*"
    backends:
      - { address: "${B6[0]}" }
      - { address: "${B6[1]}" }
      - { address: "${B6[2]}", port: 8080 }
  - name: tcp-only
    address: ${TCP_ONLY}
    protocols: [tcp]
    ports: [80]
    backends:
      - { address: ${B4[0]} }
  - name: dns4
    address: ${DNS4}
    protocols: [udp]
    ports: [53]
    backends:
      - { address: ${B4[2]}, port: 5353 }
  - name: dsr4
    address: ${DSR4}
    method: dsr
    backends:
      - { address: ${B4[0]} }
      - { address: ${B4[1]} }
  - name: dsr6
    address: "${DSR6}"
    method: dsr
    backends:
      - { address: "${B6[0]}" }
      - { address: "${B6[1]}" }
`;

/** A DSR neighbour table: every backend has a MAC but the last of each DSR VIP. */
function fakeNeighbours(config: Config): DsrNeighbours & { misses: number } {
  const rows: Uint8Array[] = [];
  const ifindex: Int32Array[] = [];
  for (const v of config.vips) {
    const n = v.method === 'dsr' ? v.backends.length : 0;
    const r = new Uint8Array(n * NEIGH_STRIDE);
    for (let b = 0; b < n - 1; b++) {
      r.set([2, 0, 0, 0, 3, 0x21 + b, 2, 0, 0, 0, 3, 0x11, 1, v.address.family], b * NEIGH_STRIDE);
    }
    rows.push(r);
    ifindex.push(new Int32Array(n).fill(7));
  }
  const nb = { rows, ifindex, misses: 0, missing(): void { nb.misses++; } };
  return nb;
}

// ---------------------------------------------------------------------------------------------
// One balancer's forwarder, wired as src/dataplane/data-plane.ts wires it.

interface Harness {
  config: Config;
  hashKey: Uint32Array;
  tagKey: Uint32Array;
  ft: ForwardingTable;
  table: FlowTable;
  fwd: Forwarder;
  live: Uint8Array;
  selfIndex: number;
  vnet: boolean;
  peerOut: PeerOutput;
  dsrOut: DsrOutput;
  /** Sink calls about an entry that is not live or not decided here. */
  sinkViolations: string[];
  flowsReady: number;
}

/** slotSize of the batches: room for the corpus' super-packets and their growth by mutation. */
const MAX_PACKET = 16384;

function makeHarness(rng: Rng, selfIndex: number, vnet: boolean): Harness {
  const config = parseConfig(YAML, 'fuzz.yaml', { readKeyFile, env: {}, baseDir: '/' });
  const hashKey = deriveHashKey(config.cluster.key.reveal());
  const tagKey = deriveDataTagKey(config.cluster.key.reveal());
  const ft = buildForwardingTable(config, hashKey, 1);
  const table = new FlowTable({
    capacity: 160, seed: rng.u32(), earlyDrop: true,
    timeouts: { tcpEstablished: 120, tcpSynSeen: 10, tcpClosing: 10, tcpClosed: 5, udp: 30, icmp: 10 },
  });
  const live = new Uint8Array(config.balancers.length).fill(1);
  const n = 2 * MAX_BATCH + 1;
  const shared = new PacketBatch({ count: n, maxPacket: MAX_PACKET });
  const peerOut: PeerOutput = {
    batch: new PacketBatch({ count: n, maxPacket: MAX_PACKET, share: shared }),
    addrs: new Uint8Array(n * 16),
    ports: new Uint16Array(n),
    count: 0,
    segs: { chunk: new Uint16Array(n), hdrs: new Uint8Array(n * 8192), hdrOffs: new Uint32Array(n), hdrLens: new Uint16Array(n), used: 0, maxDatagram: 1500 - 28 },
  };
  const dsrOut = createDsrOutput(n, vnet);
  const peerAddrs = new Uint8Array(config.balancers.length * 16);
  const peerPorts = new Uint16Array(config.balancers.length);
  config.balancers.forEach((b, i) => {
    peerAddrs.set(b.address.bytes, i * 16);
    peerPorts[i] = b.dataPort;
  });
  const h: Harness = {
    config, hashKey, tagKey, ft, table, live, selfIndex, vnet, peerOut, dsrOut,
    fwd: undefined as unknown as Forwarder,
    sinkViolations: [],
    flowsReady: 0,
  };
  const sink = {
    flowReady(id: number): void {
      h.flowsReady++;
      if (!table.isLive(id)) h.sinkViolations.push(`flowReady(${id}): not live`);
      else if ((table.flags(id) & FlowFlags.FROM_PEER) !== 0) h.sinkViolations.push(`flowReady(${id}): learnt from a peer`);
    },
  };
  // The forwarder's fragment cache seeds itself from Math.random: seed it from the run's seed.
  const random = Math.random;
  Math.random = () => rng.u32() / 0x100000000;
  try {
    h.fwd = new Forwarder({
      table, forwarding: ft, hashKey, tagKey, selfIndex, live, sink,
      peers: { addrs: peerAddrs, ports: peerPorts }, peerOutput: peerOut,
      dsr: { neighbours: fakeNeighbours(config), output: dsrOut },
    });
  } finally {
    Math.random = random;
  }
  return h;
}

/** The cluster changes between batches: peers die and return, backends go down or drain. */
function churn(h: Harness, rng: Rng, batch: number): void {
  if (batch % 300 === 299) {
    for (let i = 0; i < h.live.length; i++) if (i !== h.selfIndex) h.live[i] = rng.chance(0.75) ? 1 : 0;
  }
  if (batch % 500 === 499) {
    const downs = new Set<string>();
    const drained = new Set<string>();
    for (const v of h.config.vips) {
      v.backends.forEach((_, i) => {
        if (rng.chance(0.15)) downs.add(`${v.name}/${i}`);
        else if (rng.chance(0.15)) drained.add(`${v.name}/${i}`);
      });
    }
    h.ft = buildForwardingTable(h.config, h.hashKey, h.ft.generation + 1, (v, i) => !drained.has(`${v.name}/${i}`), h.ft, (v, i) => !downs.has(`${v.name}/${i}`));
    h.fwd.setForwarding(h.ft);
  }
}

// ---------------------------------------------------------------------------------------------
// The corpus

interface Seed {
  name: string;
  pkt: Uint8Array;
  /** Its virtio header (vnet runs), or null: zeros. */
  vnet: Uint8Array | null;
  fields: Field[];
}

const VNET_NONE = new Uint8Array(VNET_HDR_LEN);
const gsoVnet = (v6: boolean, mss = 1448): Uint8Array =>
  Uint8Array.of(1, v6 ? 4 : 1, v6 ? 60 : 40, 0, mss & 0xff, mss >>> 8, v6 ? 40 : 20, 0, 16, 0);
const csumVnet = (l4: number, csumOff: number): Uint8Array => Uint8Array.of(1, 0, 0, 0, 0, 0, l4, 0, csumOff, 0);
const bytes = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
const MSS = Uint8Array.of(2, 4, 0x05, 0xb4);

function corpus(): Seed[] {
  const { TCP_SYN: SYN, TCP_ACK: ACK, TCP_FIN: FIN, TCP_RST: RST, TCP_PSH: PSH } = P;
  const s: Array<[string, Uint8Array, Uint8Array | null]> = [];
  const add = (name: string, pkt: Uint8Array, vnet: Uint8Array | null = null): void => {
    s.push([name, pkt, vnet]);
  };
  // Client → VIP, IPv4 and IPv6.
  add('tcp4 syn', P.tcp4(CLIENT, VIP, 40000, 80, SYN, new Uint8Array(0), { tcpOptions: MSS }));
  add('tcp4 data', P.tcp4(CLIENT, VIP, 40000, 80, PSH | ACK, bytes(300), { seq: 1, ack: 1 }));
  add('tcp4 fin', P.tcp4(CLIENT, VIP, 40001, 443, FIN | ACK));
  add('tcp4 rst', P.tcp4(CLIENT, VIP, 40002, 80, RST));
  add('tcp4 ipopts', P.tcp4(CLIENT, VIP, 40003, 80, ACK, bytes(20), { options: Uint8Array.of(1, 1, 1, 0) }));
  add('tcp4 tcp-only', P.tcp4(CLIENT, TCP_ONLY, 40004, 80, SYN));
  add('tcp4 port not served', P.tcp4(CLIENT, VIP, 40005, 22, SYN));
  add('tcp4 dsr', P.tcp4(CLIENT, DSR4, 40006, 80, SYN));
  add('tcp4 no vip', P.tcp4(CLIENT, OTHER, 40007, 80, SYN));
  add('tcp6 syn', P.tcp6(CLIENT6, VIP6, 40000, 80, SYN, new Uint8Array(0), { tcpOptions: MSS }));
  add('tcp6 data ext', P.tcp6(CLIENT6, VIP6, 40001, 80, ACK, bytes(200), { ext: [{ type: 0 }, { type: 60, len: 16 }] }));
  add('tcp6 routing+ah', P.tcp6(CLIENT6, VIP6, 40002, 443, ACK, bytes(40), { ext: [{ type: 43, len: 24 }, { type: 51, len: 16 }] }));
  add('tcp6 dsr', P.tcp6(CLIENT6, DSR6, 40003, 80, SYN));
  add('udp4', P.udp4(CLIENT, VIP, 41000, 53, bytes(40)));
  add('udp4 zero csum', P.udp4(CLIENT, VIP, 41001, 5353, bytes(12), { zeroChecksum: true }));
  add('udp4 dns4', P.udp4(CLIENT, DNS4, 41002, 53, bytes(30)));
  add('udp4 dns4 tcp', P.tcp4(CLIENT, DNS4, 41003, 53, SYN));
  add('udp6', P.udp6(CLIENT6, VIP6, 41000, 53, bytes(40)));
  add('udp6 dstopts', P.udp6(CLIENT6, VIP6, 41001, 5000, bytes(10), { ext: [{ type: 60 }] }));
  add('echo4', P.icmp4Echo(CLIENT, VIP, P.ICMP4_ECHO_REQUEST, 0x1234, 1, bytes(56)));
  add('echo4 dsr', P.icmp4Echo(CLIENT, DSR4, P.ICMP4_ECHO_REQUEST, 0x1235, 1, bytes(16)));
  add('echo6', P.icmp6Echo(CLIENT6, VIP6, P.ICMP6_ECHO_REQUEST, 0x1234, 1, bytes(56)));
  // ICMP errors toward the VIP about its replies, and from the backend side about forwarded packets.
  add('icmp4 frag-needed', P.icmp4Error(P.ICMP4_DEST_UNREACH, P.ICMP4_CODE_FRAG_NEEDED, ROUTER, VIP, P.tcp4(VIP, CLIENT, 80, 40000, ACK, bytes(100)), { mtu: 1400 }));
  add('icmp4 unreach udp', P.icmp4Error(P.ICMP4_DEST_UNREACH, 3, ROUTER, VIP, P.udp4(VIP, CLIENT, 53, 41000, bytes(20)), { embedLen: 48 }));
  add('icmp4 time-exceeded echo', P.icmp4Error(P.ICMP4_TIME_EXCEEDED, 0, ROUTER, VIP, P.icmp4Echo(VIP, CLIENT, P.ICMP4_ECHO_REPLY, 0x1234, 1, bytes(8))));
  add('icmp6 too-big', P.icmp6Error(P.ICMP6_PACKET_TOO_BIG, 0, ROUTER6, VIP6, P.tcp6(VIP6, CLIENT6, 80, 40000, ACK, bytes(100)), { mtu: 1280 }));
  add('icmp6 unreach ext', P.icmp6Error(P.ICMP6_DEST_UNREACH, 4, ROUTER6, VIP6, P.udp6(VIP6, CLIENT6, 53, 41000, bytes(8), { ext: [{ type: 60 }] })));
  add('icmp4 from backend side', P.icmp4Error(P.ICMP4_DEST_UNREACH, P.ICMP4_CODE_FRAG_NEEDED, BACK_ROUTER, CLIENT, P.tcp4(CLIENT, B4[0]!, 40000, 80, ACK, bytes(40)), { mtu: 1300 }));
  add('icmp6 from backend side', P.icmp6Error(P.ICMP6_PACKET_TOO_BIG, 0, BACK_ROUTER6, CLIENT6, P.tcp6(CLIENT6, B6[0]!, 40000, 80, ACK, bytes(40)), { mtu: 1280 }));
  // Replies from backends.
  add('reply4 syn-ack', P.tcp4(B4[0]!, CLIENT, 80, 40000, SYN | ACK));
  add('reply4 8080', P.tcp4(B4[2]!, CLIENT, 8080, 40000, ACK, bytes(100)));
  add('reply4 udp', P.udp4(B4[2]!, CLIENT, 5353, 41002, bytes(20)));
  add('reply4 echo', P.icmp4Echo(B4[1]!, CLIENT, P.ICMP4_ECHO_REPLY, 0x1234, 1, bytes(56)));
  add('reply6 tcp', P.tcp6(B6[1]!, CLIENT6, 80, 40000, ACK, bytes(100)));
  add('reply6 udp', P.udp6(B6[0]!, CLIENT6, 53, 41000, bytes(40)));
  // Fragments: IPv4 and IPv6, both directions.
  for (const f of P.fragmentPacket(P.udp4(CLIENT, VIP, 41010, 53, bytes(300)), 128, 0x4242)) add('udp4 fragment', f);
  for (const f of P.fragmentPacket(P.tcp4(CLIENT, VIP, 40010, 80, ACK, bytes(200)), 64, 0x4343)) add('tcp4 fragment', f);
  for (const f of P.fragmentPacket(P.udp6(CLIENT6, VIP6, 41010, 53, bytes(300), { ext: [{ type: 0 }] }), 128, 0x4444)) add('udp6 fragment', f);
  for (const f of P.fragmentPacket(P.udp4(B4[2]!, CLIENT, 5353, 41010, bytes(300)), 128, 0x4545)) add('reply4 fragment', f);
  for (const f of P.fragmentPacket(P.udp6(B6[0]!, CLIENT6, 53, 41010, bytes(200)), 96, 0x4646)) add('reply6 fragment', f);
  add('icmp4 fragment', P.fragmentPacket(P.icmp4Echo(CLIENT, VIP, 8, 7, 1, bytes(300)), 128)[1]!);
  // Offloads: GSO super-packets and partial checksums with their virtio headers.
  add('gso4', P.toPartial(P.tcp4(CLIENT, VIP, 40020, 80, ACK, bytes(4344), { seq: 1000 })), gsoVnet(false));
  add('gso6', P.toPartial(P.tcp6(CLIENT6, VIP6, 40020, 80, ACK, bytes(5792), { seq: 1000 })), gsoVnet(true));
  add('gso4 reply', P.toPartial(P.tcp4(B4[0]!, CLIENT, 80, 40000, ACK, bytes(2896))), gsoVnet(false));
  add('gso4 dsr', P.toPartial(P.tcp4(CLIENT, DSR4, 40021, 80, ACK, bytes(2896))), gsoVnet(false));
  add('partial tcp4', P.toPartial(P.tcp4(CLIENT, VIP, 40022, 80, ACK, bytes(500))), csumVnet(20, 16));
  add('partial udp6', P.toPartial(P.udp6(CLIENT6, VIP6, 41020, 53, bytes(300))), csumVnet(40, 6));
  // Not packets we balance.
  add('version 5', Uint8Array.of(0x55, ...bytes(40)));
  add('ipv4 proto 47', P.ipv4(CLIENT, VIP, 47, bytes(24)));
  add('ipv6 esp', P.ipv6(CLIENT6, VIP6, 50, bytes(24)));
  return s.map(([name, pkt, vnet]) => ({ name, pkt, vnet, fields: structureFields(pkt) }));
}

/** Templates for packets of the flows the table holds (rewritten with a flow's key). */
interface Template {
  pkt: Uint8Array;
  fields: Field[];
  version: number;
  proto: number;
  kind: 'plain' | 'error' | 'fragment';
  srcOff: number;
  dstOff: number;
  l4Off: number;
  /** ICMP errors: the quoted packet's addresses and L4 header. */
  innerSrcOff: number;
  innerDstOff: number;
  innerL4Off: number;
  innerProto: number;
  /** A GSO super-packet (vnet runs): its virtio header. */
  vnet: Uint8Array | null;
  /** A virtio header asking for its L4 checksum (NEEDS_CSUM, csum_start at its L4 header). */
  partial: Uint8Array;
}

function templates(): Template[] {
  const { TCP_ACK: ACK } = P;
  const out: Template[] = [];
  const info = new PacketInfo();
  const add = (pkt: Uint8Array, kind: Template['kind'], vnet: Uint8Array | null = null): void => {
    const r = parsePacket(pkt, 0, pkt.length, info);
    if (r !== PacketResult.OK) throw new Error(`template does not parse: ${packetResultNames[r]}`);
    out.push({
      pkt, fields: structureFields(pkt), version: info.version, proto: info.key[36]!, kind,
      srcOff: info.srcOff, dstOff: info.dstOff, l4Off: info.l4Off,
      innerSrcOff: info.innerSrcOff, innerDstOff: info.innerDstOff, innerL4Off: info.innerL4Off, innerProto: info.innerProto,
      vnet, partial: csumVnet(info.l4Off, info.proto === 6 ? 16 : info.proto === 17 ? 6 : 2),
    });
  };
  const A4 = '1.2.3.4';
  const A6 = 'fd00::4';
  add(P.tcp4(A4, A4, 1, 2, ACK, bytes(64), { seq: 5, ack: 7 }), 'plain');
  add(P.tcp6(A6, A6, 1, 2, ACK, bytes(64), { seq: 5, ack: 7 }), 'plain');
  add(P.udp4(A4, A4, 1, 2, bytes(64)), 'plain');
  add(P.udp6(A6, A6, 1, 2, bytes(64)), 'plain');
  add(P.icmp4Echo(A4, A4, 8, 1, 1, bytes(32)), 'plain');
  add(P.icmp6Echo(A6, A6, 128, 1, 1, bytes(32)), 'plain');
  add(P.icmp4Error(3, 4, ROUTER, A4, P.tcp4(A4, A4, 2, 1, ACK, bytes(40)), { mtu: 1400 }), 'error');
  add(P.icmp4Error(3, 3, ROUTER, A4, P.udp4(A4, A4, 2, 1, bytes(20))), 'error');
  add(P.icmp4Error(11, 0, ROUTER, A4, P.icmp4Echo(A4, A4, 0, 1, 1, bytes(8))), 'error');
  add(P.icmp6Error(2, 0, ROUTER6, A6, P.tcp6(A6, A6, 2, 1, ACK, bytes(40)), { mtu: 1280 }), 'error');
  add(P.icmp6Error(1, 4, ROUTER6, A6, P.udp6(A6, A6, 2, 1, bytes(20))), 'error');
  add(P.icmp6Error(3, 0, ROUTER6, A6, P.icmp6Echo(A6, A6, 129, 1, 1, bytes(8))), 'error');
  for (const f of P.fragmentPacket(P.udp4(A4, A4, 1, 2, bytes(200)), 96)) add(f, 'fragment');
  for (const f of P.fragmentPacket(P.tcp4(A4, A4, 1, 2, ACK, bytes(200)), 96)) add(f, 'fragment');
  for (const f of P.fragmentPacket(P.udp6(A6, A6, 1, 2, bytes(200)), 96)) add(f, 'fragment');
  for (const f of P.fragmentPacket(P.tcp6(A6, A6, 1, 2, ACK, bytes(200)), 96)) add(f, 'fragment');
  add(P.toPartial(P.tcp4(A4, A4, 1, 2, ACK, bytes(2896), { seq: 5 })), 'plain', gsoVnet(false));
  add(P.toPartial(P.tcp6(A6, A6, 1, 2, ACK, bytes(4344), { seq: 5 })), 'plain', gsoVnet(true));
  return out;
}

const TCP_FLAG_CHOICES = [P.TCP_SYN, P.TCP_ACK, P.TCP_ACK, P.TCP_ACK | P.TCP_PSH, P.TCP_FIN | P.TCP_ACK, P.TCP_RST, P.TCP_RST | P.TCP_ACK, P.TCP_SYN | P.TCP_ACK, 0];

// ---------------------------------------------------------------------------------------------
// The fuzzer

interface Totals {
  packets: number;
  mutated: number;
  batches: number;
  emitted: number;
  toPeer: number;
  toDsr: number;
  merged: number;
  drops: number;
  fromFlows: number;
  /** Packets with valid checksums going in, and those of them written back (checked valid). */
  validIn: number;
  validOut: number;
  /** Largest packet written back from a batch with merged datagrams. */
  largestMerged: number;
}

class Fuzzer {
  readonly rng: Rng;
  readonly seeds: Seed[];
  readonly tmpl: Template[];
  readonly mut: PacketMutator;
  readonly batch: PacketBatch;
  /** Pristine guard bytes (the pattern every guard slot holds). */
  readonly guard: Buffer;
  readonly totals: Totals = { packets: 0, mutated: 0, batches: 0, emitted: 0, toPeer: 0, toDsr: 0, merged: 0, drops: 0, fromFlows: 0, validIn: 0, validOut: 0, largestMerged: 0 };
  readonly addrs = new Uint8Array((2 * MAX_BATCH + 1) * 16);
  /** What each packet of the current batch was, for a failure report. */
  readonly names: string[] = [];
  readonly info = new PacketInfo();
  readonly encap = new EncapInfo();
  readonly keyWords = new Uint32Array(10);
  readonly keyBytes = new Uint8Array(this.keyWords.buffer);
  readonly slotUsed: Uint8Array;
  /** Packet k of the batch had valid checksums going in (see #heal). */
  readonly validIn = new Uint8Array(MAX_BATCH);
  readonly chunkRuns: Uint8Array[][];
  nowSec = 1000;
  /** The current batch's inputs as text, when it is the traced one. */
  trace: string[] = [];
  /** The flow the last packet of a held flow came from. */
  lastFlow = -1;

  constructor(readonly h: Harness, readonly seed: number) {
    this.rng = new Rng(seed);
    this.seeds = corpus();
    this.tmpl = templates();
    this.mut = new PacketMutator(this.rng, this.seeds.map((s) => s.pkt));
    this.batch = new PacketBatch({ count: 2 * MAX_BATCH + 1, maxPacket: MAX_PACKET });
    const b = this.batch;
    for (let i = 0; i < b.buf.length; i++) b.buf[i] = (i * 167 + 13) & 0xff;
    this.guard = Buffer.from(b.buf.subarray(0, b.slotSize));
    for (let s = 0; s < b.count; s += 2) b.buf.set(this.guard, s * b.slotSize);
    this.slotUsed = new Uint8Array(b.count);
    this.chunkRuns = this.splitRuns();
  }

  /** Slot of packet k of a batch: the odd ones; the even ones (and both ends) are guards. */
  slotOf(k: number): number {
    return 2 * k + 1;
  }

  fail(msg: string, count: number): never {
    const pk: string[] = [];
    for (let k = 0; k < (this.trace.length > 0 ? count : Math.min(count, 6)); k++) pk.push(`  ${k} ${this.names[k]}${this.trace[k] ?? ''}`);
    if (this.trace.length === 0) pk.push(`  (TUNLB_FUZZ_TRACE=${this.totals.batches} adds every packet's input bytes)`);
    throw new Error(
      `${msg}\nfuzz seed 0x${this.seed.toString(16)}, batch ${this.totals.batches} (${count} packets, vnet ${this.h.vnet}); ` +
        `replay: TUNLB_FUZZ_SEED=0x${SEED.toString(16)} npx ava test/dataplane/forwarder-fuzz.test.ts\n${pk.join('\n')}`,
    );
  }

  // ---- packet sources

  /** Writes a packet into slot k; returns its length. Sets the virtio header of index k. */
  #fill(k: number, mutateP: number): number {
    const b = this.batch;
    const r = this.rng;
    const off = b.packetStart(this.slotOf(k));
    const cap = b.capacity;
    let len: number;
    let fields: readonly Field[];
    let vnet: Uint8Array | null;
    if (this.h.table.size > 0 && r.chance(0.5)) {
      const t = this.#fromFlow(off);
      if (t === null) return this.#fill(k, mutateP);
      len = t.pkt.length;
      fields = t.fields;
      vnet = t.vnet ?? (r.chance(0.2) ? t.partial : null);
      this.totals.fromFlows++;
      this.names[k] = `${t.kind} packet of flow ${this.lastFlow}`;
    } else {
      const s = r.pick(this.seeds);
      b.buf.set(s.pkt, off);
      len = s.pkt.length;
      fields = s.fields;
      vnet = s.vnet;
      this.names[k] = s.name;
    }
    if (this.h.vnet) {
      const vo = k * VNET_HDR_LEN;
      b.vnet.set(vnet ?? VNET_NONE, vo);
      if (r.chance(0.05)) this.mut.mutateVnet(b.vnet, vo);
    }
    if (r.chance(mutateP)) {
      len = this.mut.mutate(b.buf, off, len, cap, fields, r.chance(0.5) ? 1 : r.range(2, 4));
      this.names[k] += ' (mutated)';
      this.totals.mutated++;
    }
    this.#heal(k, off, len, this.h.vnet && (b.vnet[k * VNET_HDR_LEN]! & 1) !== 0);
    return len;
  }

  /**
   * Half the time makes packet k's checksums valid again (after it was rewritten from a flow's
   * key or mutated), and notes whether they are (validIn[k]), so that "valid checksums in,
   * valid checksums out" can be checked on what the forwarder writes back. Not for partial
   * checksums (NEEDS_CSUM: the kernel completes them).
   */
  #heal(k: number, off: number, len: number, partial: boolean): void {
    this.validIn[k] = 0;
    if (partial || len < 20 || !this.rng.chance(0.5)) return;
    const p = this.batch.buf.subarray(off, off + len);
    P.fillChecksums(p);
    this.validIn[k] = P.checksumErrors(p).length === 0 ? 1 : 0;
    if (this.validIn[k] !== 0) this.totals.validIn++;
  }

  /** A packet of a flow the table holds, written at `off`; null when no live flow was found. */
  #fromFlow(off: number): Template | null {
    const r = this.rng;
    const table = this.h.table;
    let id = -1;
    for (let i = 0; i < 8 && id < 0; i++) {
      const c = r.int(table.capacity);
      if (table.isLive(c)) id = c;
    }
    if (id < 0) return null;
    this.lastFlow = id;
    const reply = table.hasReplyKey(id) && r.chance(0.4);
    table.copyKey(id, reply ? 1 : 0, this.keyWords);
    const kb = this.keyBytes;
    const version = kb[37]!;
    const proto = kb[36]!;
    const portless = kb[32] === 0 && kb[33] === 0 && kb[34] === 0 && kb[35] === 0;
    let kind: Template['kind'] = portless && r.chance(0.7) ? 'fragment' : r.chance(0.15) ? 'error' : 'plain';
    const icmp = proto === 1 || proto === 58;
    let cands = this.tmpl.filter((t) => t.version === version && t.kind === kind && (kind === 'error' ? t.innerProto === proto : t.proto === proto));
    if (cands.length === 0) {
      kind = 'plain';
      cands = this.tmpl.filter((t) => t.version === version && t.kind === 'plain' && t.proto === proto);
    }
    if (cands.length === 0) return null;
    const t = r.pick(cands);
    const buf = this.batch.buf;
    buf.set(t.pkt, off);
    const alen = version === 4 ? 4 : 16;
    const ao = version === 4 ? 12 : 0;
    if (kind === 'error') {
      // Keyed by the quoted packet reversed: it quotes key.dst → key.src; sent to key.dst.
      buf.set(kb.subarray(16 + ao, 16 + ao + alen), off + t.dstOff);
      buf.set(kb.subarray(16 + ao, 16 + ao + alen), off + t.innerSrcOff);
      buf.set(kb.subarray(ao, ao + alen), off + t.innerDstOff);
      const l4 = off + t.innerL4Off;
      if (icmp) {
        buf[l4 + 4] = kb[32]!;
        buf[l4 + 5] = kb[33]!;
      } else {
        buf[l4] = kb[34]!;
        buf[l4 + 1] = kb[35]!;
        buf[l4 + 2] = kb[32]!;
        buf[l4 + 3] = kb[33]!;
      }
    } else {
      buf.set(kb.subarray(ao, ao + alen), off + t.srcOff);
      buf.set(kb.subarray(16 + ao, 16 + ao + alen), off + t.dstOff);
      if (kind === 'plain') {
        const l4 = off + t.l4Off;
        if (icmp) {
          buf[l4 + 4] = kb[32]!;
          buf[l4 + 5] = kb[33]!;
        } else {
          buf[l4] = kb[32]!;
          buf[l4 + 1] = kb[33]!;
          buf[l4 + 2] = kb[34]!;
          buf[l4 + 3] = kb[35]!;
          if (proto === 6 && t.vnet === null) buf[l4 + 13] = r.pick(TCP_FLAG_CHOICES);
        }
      }
    }
    return t;
  }

  /**
   * Chunk datagrams of split super-packets (as a peer sends them), one run per super-packet:
   * the corpus' and two larger than a batch slot, so merging on receipt meets the slot's end.
   */
  splitRuns(): Uint8Array[][] {
    const runs: Uint8Array[][] = [];
    const res = newGsoSplitResult();
    const big = [
      { pkt: P.toPartial(P.tcp4(CLIENT, VIP, 40030, 80, P.TCP_ACK, bytes(1448 * 16), { seq: 7 })), vnet: gsoVnet(false) },
      { pkt: P.toPartial(P.tcp6(CLIENT6, VIP6, 40030, 443, P.TCP_ACK, bytes(1428 * 14), { seq: 7 })), vnet: gsoVnet(true, 1428) },
    ];
    for (const s of [...this.seeds, ...big]) {
      if (s.vnet === null || s.vnet[1] === 0) continue;
      const hdrs = new Uint8Array(8192);
      writeEncapHeader(hdrs, 0, ENCAP_F_NEW_FLOW | ENCAP_F_VNET, 0, 2, 1, 0, 1);
      const r = gsoSplitHeaders(s.pkt, 0, s.pkt.length, s.vnet, 0, hdrs, 0, hdrs.length, 1500 - 28, res);
      if (r !== GsoSplit.OK) continue;
      const run: Uint8Array[] = [];
      for (let j = 0; j < res.count; j++) run.push(chunkDatagram(hdrs, 0, res.hdrLen, s.pkt, res.payloadOff, res.payloadLen, res.chunk, j));
      runs.push(run);
    }
    if (runs.length === 0) throw new Error('no split runs');
    return runs;
  }

  /** An encapsulated packet from a peer into slot k (and its sender into addrs); its length. */
  #fillPeer(k: number, mutateP: number): number {
    const b = this.batch;
    const r = this.rng;
    const h = this.h;
    const off = b.packetStart(this.slotOf(k));
    // The sender: another balancer mostly; sometimes a stranger or ourselves.
    const from = r.chance(0.95) ? (h.selfIndex + 1 + r.int(h.live.length - 1)) % h.live.length : -1;
    const a = this.addrs;
    if (from >= 0) a.set(h.config.balancers[from]!.address.bytes, k * 16);
    else a.set(r.chance(0.5) ? h.config.balancers[h.selfIndex]!.address.bytes : NOT_A_PEER, k * 16);
    // The inner packet, written after room for the headers.
    const hdrRoom = ENCAP_HEADER_LEN + ENCAP_VNET_LEN;
    const inner = off + hdrRoom;
    let len: number;
    let fields: readonly Field[];
    let vnet: Uint8Array | null;
    let fromFlow = -1;
    if (h.table.size > 0 && r.chance(0.5)) {
      const t = this.#fromFlow(inner);
      if (t === null) return this.#fillPeer(k, mutateP);
      len = t.pkt.length;
      fields = t.fields;
      vnet = t.vnet;
      fromFlow = this.lastFlow;
      this.totals.fromFlows++;
      this.names[k] = `encap ${t.kind} packet of flow ${fromFlow}`;
    } else {
      const s = r.pick(this.seeds);
      b.buf.set(s.pkt, inner);
      len = s.pkt.length;
      fields = s.fields;
      vnet = s.vnet;
      this.names[k] = `encap ${s.name}`;
    }
    // The decision: the flow's record, a fresh one, or nonsense.
    const ft = h.ft;
    let flags = r.pick([ENCAP_F_NEW_FLOW, ENCAP_F_NEW_FLOW, ENCAP_F_FAILOVER, ENCAP_F_NEW_FLOW | ENCAP_F_FAILOVER, ENCAP_F_SECOND_CHANCE, ENCAP_F_REPLY, 0]);
    const info = this.info;
    let vip = r.int(8);
    if (parsePacket(b.buf, inner, len, info) === PacketResult.OK) {
      const v = findVip(ft, b.buf, info.dstOff, info.addrLen);
      if (v >= 0 && r.chance(0.9)) vip = v;
    }
    let primary = r.chance(0.8) ? r.int(3) : r.pick([3, 7, ENCAP_NONE_U8]);
    let backup = r.chance(0.8) ? r.int(3) : r.pick([3, ENCAP_NONE_U8]);
    let backend = r.chance(0.85) ? r.int(3) : r.pick([3, 0x100, ENCAP_NONE_U16]);
    if (fromFlow >= 0 && r.chance(0.6)) {
      // The record's own decision, as its primary or backup would send it.
      primary = h.table.primary(fromFlow);
      backup = h.table.backup(fromFlow);
      backend = h.table.backend(fromFlow);
      vip = h.table.vip(fromFlow);
    }
    if (flags === ENCAP_F_SECOND_CHANCE) {
      primary = ENCAP_NONE_U8;
      backup = ENCAP_NONE_U8;
    }
    if (flags === ENCAP_F_REPLY && r.chance(0.8)) backend = ENCAP_NONE_U16; // a steered reply (src/decision/reply-steering.ts)
    const carry = vnet !== null && r.chance(0.9) ? vnet : r.chance(0.03) ? VNET_NONE : null;
    if (carry !== null) flags |= ENCAP_F_VNET;
    const hdr = carry !== null ? hdrRoom : ENCAP_HEADER_LEN;
    const start = inner - hdr;
    writeEncapHeader(b.buf, start, flags, primary, backup, backend, vip, ft.generation);
    if (carry !== null) b.buf.set(carry, start + ENCAP_HEADER_LEN);
    // The datagram starts at the slot's packet start (where recvmmsg puts it).
    if (start !== off) b.buf.copyWithin(off, start, inner + len);
    len += hdr;
    // Tagged as the sender would (a stranger or ourselves: as if from lb1), before any
    // mutation; a few are sent untagged (forged).
    if (r.chance(0.97)) tagDatagram(b.buf, h.tagKey, from >= 0 ? from : 0, h.selfIndex, off, len);
    if (r.chance(mutateP)) {
      const f = r.int(3);
      if (f === 0) {
        // Lies in the encapsulation (and carried virtio) header.
        if (carry !== null && r.chance(0.5)) this.mut.mutateVnet(b.buf, off + ENCAP_HEADER_LEN);
        else len = this.mut.mutate(b.buf, off, len, b.capacity, ENCAP_FIELDS, r.range(1, 2));
      } else {
        len = hdr + this.mut.mutate(b.buf, off + hdr, len - hdr, b.capacity - hdr, fields, r.chance(0.5) ? 1 : r.range(2, 4));
      }
      this.names[k] += ' (mutated)';
      this.totals.mutated++;
    }
    this.#healPeer(k, off, len);
    return len;
  }

  /** #heal for the inner packet of datagram k as the forwarder will see it (the header may have been mutated too). */
  #healPeer(k: number, off: number, len: number): void {
    const e = this.encap;
    const buf = this.batch.buf;
    this.validIn[k] = 0;
    if (parseEncap(buf, off, len, e) === PacketResult.OK) this.#heal(k, e.innerOff, e.innerLen, e.vnetOff >= 0 && (buf[e.vnetOff]! & 1) !== 0);
  }

  // ---- batches

  /** One TUN batch through processBatch, then every per-batch check. */
  tunBatch(mutateP: number): void {
    const h = this.h;
    const b = this.batch;
    const r = this.rng;
    const count = r.chance(0.1) ? 1 : r.range(1, MAX_BATCH);
    for (let k = 0; k < count; k++) {
      const len = this.#fill(k, mutateP);
      b.offsets[k] = b.packetStart(this.slotOf(k));
      b.sizes[k] = len;
    }
    this.#snapshot(count, false);
    const st = h.fwd.stats;
    const before = dropSum(h);
    const pdi = st.forwardDrops[ForwardDrop.PEER_DECISION_INVALID]!;
    const rx = st.rxPackets;
    let out: number;
    try {
      out = h.fwd.processBatch(b, count, h.vnet, this.nowSec);
    } catch (e) {
      this.fail(`processBatch threw: ${(e as Error).stack}`, count);
    }
    if (st.rxPackets - rx !== count) this.fail(`rxPackets moved by ${st.rxPackets - rx}, not ${count}`, count);
    if (st.forwardDrops[ForwardDrop.PEER_DECISION_INVALID] !== pdi) this.fail('peer_decision_invalid on the TUN path', count);
    this.slotUsed.fill(0);
    this.#checkEmitted(out, count);
    const po = h.peerOut;
    for (let k = 0; k < po.count; k++) {
      const o = po.batch.offsets[k]!;
      this.#claim(o, po.batch.sizes[k]!, count, 'peer entry');
      const peer = this.#peerIndex(po.addrs, k * 16);
      if (peer < 0 || peer === h.selfIndex) this.fail(`peer entry ${k} addressed to ${peer < 0 ? 'no balancer' : 'ourselves'}`, count);
      if (po.segs!.chunk[k] !== 0) continue;
      // The header: well formed, with a decision in range unless it is a second chance (none)
      // or a steered reply (balancers, no backend).
      const e = this.encap;
      if (parseEncap(b.buf, o, po.batch.sizes[k]!, e) !== PacketResult.OK) this.fail(`peer entry ${k}: bad encapsulation header`, count);
      const nb = h.config.balancers.length;
      if (e.vip >= h.ft.vipCount) this.fail(`peer entry ${k}: VIP ${e.vip} out of range`, count);
      const reply = (e.flags & ENCAP_F_REPLY) !== 0;
      const backendOk = reply ? e.backend === ENCAP_NONE_U16 : e.backend < h.ft.backendPort[e.vip]!.length;
      if ((e.flags & ENCAP_F_SECOND_CHANCE) === 0 && (e.primary >= nb || e.backup >= nb || !backendOk)) {
        this.fail(`peer entry ${k}: decision out of range (flags ${e.flags}, primary ${e.primary}, backup ${e.backup}, backend ${e.backend})`, count);
      }
      if (reply && e.primary !== peer) this.fail(`peer entry ${k}: a steered reply not sent to the primary it names`, count);
      // The tag: the receiver's check passes (header, the packet's flow key, us → that peer).
      if (parsePacket(b.buf, e.innerOff, e.innerLen, this.info) !== PacketResult.OK || !dataTagMatches(b.buf, o, h.tagKey, this.info.key, h.selfIndex, peer)) {
        this.fail(`peer entry ${k}: its data-port tag does not verify`, count);
      }
    }
    this.#checkDsr(count);
    const drops = dropSum(h) - before;
    if (out + po.count + h.dsrOut.count + drops !== count) {
      this.fail(`accounting: ${count} in, ${out} written + ${po.count} to peers + ${h.dsrOut.count} DSR + ${drops} drops counted`, count);
    }
    this.#checkGuards(count);
    this.#after(count, out, po.count, h.dsrOut.count, 0, drops);
  }

  /** One batch of encapsulated datagrams through processPeerBatch, then every per-batch check. */
  peerBatch(mutateP: number): void {
    const h = this.h;
    const b = this.batch;
    const r = this.rng;
    const count = r.chance(0.1) ? 1 : r.range(1, MAX_BATCH);
    let k = 0;
    while (k < count) {
      if (r.chance(0.08)) {
        // A split super-packet's chunks in a row from one peer: in order, sometimes reordered or cut.
        const run = r.pick(this.chunkRuns);
        const order = run.map((_, j) => j);
        if (r.chance(0.2)) order.reverse();
        const from = (h.selfIndex + 1 + r.int(h.live.length - 1)) % h.live.length;
        for (const j of order) {
          if (k >= count) break;
          const dg = run[j]!;
          const off = b.packetStart(this.slotOf(k));
          b.buf.set(dg, off);
          let len = dg.length;
          tagDatagram(b.buf, h.tagKey, from, h.selfIndex, off, len);
          this.names[k] = `chunk ${j} of ${run.length}`;
          if (r.chance(mutateP * 0.3)) {
            len = this.mut.mutate(b.buf, off, len, b.capacity, ENCAP_FIELDS, 1);
            this.names[k] += ' (mutated)';
            this.totals.mutated++;
          }
          b.offsets[k] = off;
          b.sizes[k] = len;
          this.addrs.set(h.config.balancers[from]!.address.bytes, k * 16);
          this.#healPeer(k, off, len);
          k++;
        }
        continue;
      }
      const len = this.#fillPeer(k, mutateP);
      b.offsets[k] = b.packetStart(this.slotOf(k));
      b.sizes[k] = len;
      k++;
    }
    this.#snapshot(count, true);
    const peerOut = h.peerOut.count;
    const st = h.fwd.stats;
    const before = dropSum(h);
    const pdi0 = st.forwardDrops[ForwardDrop.PEER_DECISION_INVALID]!;
    const merged0 = st.peerRxMerged;
    const rx = st.peerRxPackets;
    let out: number;
    try {
      out = h.fwd.processPeerBatch(b, count, this.addrs, h.vnet, this.nowSec);
    } catch (e) {
      this.fail(`processPeerBatch threw: ${(e as Error).stack}`, count);
    }
    if (st.peerRxPackets - rx !== count) this.fail(`peerRxPackets moved by ${st.peerRxPackets - rx}, not ${count}`, count);
    const merged = st.peerRxMerged - merged0;
    for (let k = 0; k < out; k++) if (b.sizes[k]! > this.totals.largestMerged && merged > 0) this.totals.largestMerged = b.sizes[k]!;
    if (h.peerOut.count !== peerOut) this.fail('a packet from a peer was forwarded again', count);
    this.slotUsed.fill(0);
    this.#checkEmitted(out, count);
    this.#checkDsr(count);
    // peer_decision_invalid is counted for a packet the balancer then decides itself: a note.
    const drops = dropSum(h) - before - (st.forwardDrops[ForwardDrop.PEER_DECISION_INVALID]! - pdi0);
    if (out + h.dsrOut.count + drops + merged !== count) {
      this.fail(`accounting: ${count} datagrams in, ${out} written + ${h.dsrOut.count} DSR + ${drops} drops counted + ${merged} merged`, count);
    }
    this.#checkGuards(count);
    this.#after(count, out, 0, h.dsrOut.count, merged, drops);
  }

  #snapshot(count: number, peer: boolean): void {
    this.trace = [];
    if (this.totals.batches !== TRACE) return;
    const b = this.batch;
    for (let k = 0; k < count; k++) {
      const v = this.h.vnet && !peer ? ` vnet ${P.hex(b.vnet.subarray(k * VNET_HDR_LEN, (k + 1) * VNET_HDR_LEN))}` : '';
      const from = peer ? ` from ${P.hex(this.addrs.subarray(k * 16, k * 16 + 16))}` : '';
      this.trace.push(`${from}${v} valid-in ${this.validIn[k]}\n    ${P.hex(b.buf.subarray(b.offsets[k]!, b.offsets[k]! + b.sizes[k]!))}`);
    }
  }

  #after(count: number, out: number, peer: number, dsr: number, merged: number, drops: number): void {
    const h = this.h;
    const T = this.totals;
    T.packets += count;
    T.batches++;
    T.emitted += out;
    T.toPeer += peer;
    T.toDsr += dsr;
    T.merged += merged;
    T.drops += drops;
    if (h.sinkViolations.length > 0) this.fail(`replication sink: ${h.sinkViolations.slice(0, 3).join('; ')}`, count);
    // Time: mostly creeping, sometimes past every timeout; the balancer's expiry sweep.
    const r = this.rng;
    if (r.chance(0.3)) this.nowSec++;
    if (r.chance(0.0005)) this.nowSec += 200;
    h.table.expire(this.nowSec, 64);
    churn(h, r, T.batches);
    if (T.batches % INVARIANT_EVERY === 0) this.checkTable();
  }

  /** Marks the packet slot holding [o, o+len) as having an outcome; fails on overlap or overrun. */
  #claim(o: number, len: number, count: number, what: string): void {
    const b = this.batch;
    const slot = Math.floor(o / b.slotSize);
    const k = (slot - 1) / 2;
    if (slot % 2 !== 1 || k >= count) this.fail(`${what} at ${o} is in no packet's slot (slot ${slot})`, count);
    if (len < 1 || o + len > (slot + 1) * b.slotSize) this.fail(`${what} of packet ${k} (${len} bytes at ${o}) runs past its slot`, count);
    if (this.slotUsed[slot] !== 0) this.fail(`packet ${k} has two outcomes (${what})`, count);
    this.slotUsed[slot] = 1;
  }

  #checkEmitted(out: number, count: number): void {
    const b = this.batch;
    const info = this.info;
    for (let k = 0; k < out; k++) {
      const o = b.offsets[k]!;
      const len = b.sizes[k]!;
      this.#claim(o, len, count, 'written packet');
      const r = parsePacket(b.buf, o, len, info);
      if (r !== PacketResult.OK) this.fail(`written packet ${k} does not parse (${packetResultNames[r]})`, count);
      if (findVip(this.h.ft, b.buf, info.dstOff, info.addrLen) >= 0) this.fail(`written packet ${k} is addressed to a VIP: it would loop into the TUN device`, count);
      if (!this.#isTranslated(info)) this.fail(`written packet ${k} is neither to a backend nor from a VIP`, count);
      const j = (Math.floor(o / b.slotSize) - 1) / 2;
      if (this.validIn[j] !== 0 && !(this.h.vnet && (b.vnet[k * VNET_HDR_LEN]! & 1) !== 0)) {
        const errs = P.checksumErrors(b.buf.subarray(o, o + len));
        if (errs.length > 0) this.fail(`packet ${j} went in with valid checksums and was written back with bad ones: ${errs.join(', ')}\n  out ${P.hex(b.buf.subarray(o, o + len))}`, count);
        this.totals.validOut++;
      }
    }
  }

  #checkDsr(count: number): void {
    const d = this.h.dsrOut;
    const buf = this.batch.buf;
    for (let k = 0; k < d.count; k++) {
      if (d.buf !== buf) this.fail('DSR frames point into another buffer', count);
      const o = d.offsets[k]!;
      this.#claim(o, d.sizes[k]!, count, 'DSR frame');
      const type = (buf[o + 12]! << 8) | buf[o + 13]!;
      if (type !== (buf[o + 14]! >>> 4 === 4 ? 0x0800 : 0x86dd)) this.fail(`DSR frame ${k}: ethertype ${type.toString(16)} for an IPv${buf[o + 14]! >>> 4} packet`, count);
    }
  }

  /** A written packet is NAT'd: to a backend (client → VIP), or from a VIP (replies, resets). */
  #isTranslated(info: PacketInfo): boolean {
    const ft = this.h.ft;
    const buf = this.batch.buf;
    if (findVip(ft, buf, info.srcOff, info.addrLen) >= 0) return true;
    const ao = info.addrLen === 4 ? 12 : 0;
    for (const a of ft.backendAddr) {
      for (let o = 0; o < a.length; o += 16) {
        let i = 0;
        while (i < info.addrLen && a[o + ao + i] === buf[info.dstOff + i]) i++;
        if (i === info.addrLen && (info.addrLen === 16 || (a[o + 10] === 0xff && a[o + 11] === 0xff))) return true;
      }
    }
    return false;
  }

  #checkGuards(count: number): void {
    const b = this.batch;
    const buf = Buffer.from(b.buf.buffer, b.buf.byteOffset, b.buf.length);
    for (let s = 0; s < b.count; s += 2) {
      if (buf.compare(this.guard, 0, b.slotSize, s * b.slotSize, (s + 1) * b.slotSize) !== 0) {
        let i = 0;
        while (buf[s * b.slotSize + i] === this.guard[i]) i++;
        this.fail(`guard slot ${s} changed at byte ${i}: a write outside a packet's slot`, count);
      }
    }
  }

  #peerIndex(a: Uint8Array, o: number): number {
    const bs = this.h.config.balancers;
    for (let i = 0; i < bs.length; i++) {
      const x = bs[i]!.address.bytes;
      let j = 0;
      while (j < 16 && x[j] === a[o + j]) j++;
      if (j === 16) return i;
    }
    return -1;
  }

  /** The flow table's invariants (see the file header). */
  checkTable(): void {
    const h = this.h;
    const table = h.table;
    const ft = h.ft;
    const nb = h.config.balancers.length;
    const fwd = new Uint32Array(10);
    const fwdB = new Uint8Array(fwd.buffer);
    const rep = new Uint32Array(10);
    const want = new Uint8Array(40);
    let live = 0;
    const bad = (id: number, msg: string): never => this.fail(`flow table entry ${id}: ${msg}`, 0);
    for (let id = 0; id < table.capacity; id++) {
      if (!table.isLive(id)) continue;
      live++;
      const seen = table.lastSeen(id);
      const vip = table.vip(id);
      if (vip >= ft.vipCount) bad(id, `VIP ${vip} out of range`);
      if (table.backend(id) >= ft.backendPort[vip]!.length) bad(id, `backend ${table.backend(id)} out of range`);
      if (table.primary(id) >= nb || table.backup(id) >= nb) bad(id, `primary ${table.primary(id)} / backup ${table.backup(id)} out of range`);
      table.copyKey(id, 0, fwd);
      const ao = ft.vipFamily[vip] === 4 ? 12 : 0;
      for (let i = ao; i < 16; i++) if (fwdB[16 + i] !== ft.vipAddr[vip * 16 + i]) bad(id, 'its key is not to its VIP');
      if (table.lookup(fwd, seen) !== id << 1) bad(id, 'not found by its forward key');
      const dsr = ft.vipMethod[vip] === METHOD_DSR;
      if (table.hasReplyKey(id) === dsr) bad(id, dsr ? 'a DSR flow with a reply key' : 'a NAT flow without a reply key');
      if (!dsr) {
        table.copyKey(id, 1, rep);
        if (table.lookup(rep, seen) !== ((id << 1) | 1)) bad(id, 'not found by its reply key');
        writeReplyKey(ft, vip, table.backend(id), fwdB, 0, want);
        const rb = new Uint8Array(rep.buffer);
        for (let i = 0; i < 40; i++) if (rb[i] !== want[i]) bad(id, 'its reply key is not the one its decision gives');
      }
    }
    if (live !== table.size) this.fail(`flow table: size ${table.size} but ${live} live entries`, 0);
    if (live > table.capacity) this.fail('flow table over capacity', 0);
  }
}

/** Encapsulation header fields (src/packet/encap.ts) for lies. */
const ENCAP_FIELDS: Field[] = [
  { off: 0, width: 1 }, { off: 1, width: 1 }, { off: 2, width: 1 }, { off: 3, width: 1 }, { off: 4, width: 2 }, { off: 6, width: 2 },
];

/** Drop counters (packet results and forwarding reasons), summed. */
function dropSum(h: Harness): number {
  const st = h.fwd.stats;
  let s = 0;
  for (let i = 1; i < st.packetDrops.length; i++) s += st.packetDrops[i]!;
  for (let i = 0; i < st.forwardDrops.length; i++) s += st.forwardDrops[i]!;
  return s;
}

function dropsByName(h: Harness): Record<string, number> {
  const st = h.fwd.stats;
  const d: Record<string, number> = {};
  st.packetDrops.forEach((v, i) => {
    if (i > 0 && v > 0) d[packetResultNames[i]!] = v;
  });
  st.forwardDrops.forEach((v, i) => {
    if (v > 0) d[forwardDropNames[i]!] = v;
  });
  return d;
}

/**
 * Runs batches until `target` mutated packets went through (peerShare: the fraction of batches
 * that are peer batches). Returns the fuzzer for the test's own assertions.
 */
function run(t: ExecutionContext, opts: { selfIndex: number; vnet: boolean; target: number; peerShare: number; seedSalt: number }): Fuzzer {
  const seed = (SEED ^ opts.seedSalt) >>> 0;
  const rng = new Rng(seed ^ 0xa5a5a5a5);
  const h = makeHarness(rng, opts.selfIndex, opts.vnet);
  const f = new Fuzzer(h, seed);
  const t0 = performance.now();
  const target = Math.max(1000, Math.round(opts.target * SCALE));
  while (f.totals.mutated < target) {
    if (f.rng.chance(opts.peerShare)) f.peerBatch(0.85);
    else f.tunBatch(0.85);
  }
  f.checkTable();
  const ms = performance.now() - t0;
  const T = f.totals;
  t.log(`seed 0x${seed.toString(16)}: ${T.packets} packets (${T.mutated} mutated, ${T.fromFlows} of held flows) in ${T.batches} batches, ${(ms / 1000).toFixed(1)} s`);
  t.log(`outcomes: ${T.emitted} written, ${T.toPeer} to peers, ${T.toDsr} DSR, ${T.merged} merged (largest ${T.largestMerged} bytes), ${T.drops} dropped; flows created ${h.fwd.stats.flowsCreated}, table ${h.table.size}/${h.table.capacity} (refused full ${h.table.refusedFull}, early drops ${h.table.earlyDrops}, takeovers ${h.table.takeovers}), sink told ${h.flowsReady}`);
  const st = h.fwd.stats;
  t.log(`checksums: ${T.validIn} packets went in valid, ${T.validOut} of them were written back and checked valid`);
  t.log(`paths: second chance ${st.secondChancePackets}, reply steered ${st.replySteeredPackets}, failover ${st.failoverPackets}, TCP reset (backend down) ${st.tcpResetBackendDown}, UDP moved ${st.udpMovedBackendDown}, SYN reuse ${st.synReuseRebound}, reply fallbacks ${st.replyFirstFragments}/${st.replyLaterFragments}/${st.replyThreeTuple}, split ${st.peerSplitPackets}`);
  t.log(`mutations: ${MUTATIONS.map((m, i) => `${m} ${f.mut.counts[i]}`).join(', ')}`);
  t.log('drops', dropsByName(h));
  return f;
}

/** What every run must have reached, so a run that only exercised the parser cannot pass. */
function assertCoverage(t: ExecutionContext, f: Fuzzer, want: { emitted: boolean; toPeer: boolean; toDsr: boolean; merged: boolean; reasons: string[] }): void {
  const T = f.totals;
  t.true(f.mut.counts.every((c) => c > 0), 'every kind of mutation ran');
  if (want.emitted) t.true(T.emitted > T.packets * 0.05, `packets written back: ${T.emitted} of ${T.packets}`);
  if (want.toPeer) t.true(T.toPeer > 0, 'packets went to peers');
  if (want.toDsr) t.true(T.toDsr > 0, 'DSR frames were sent');
  if (want.merged) t.true(T.merged > 0, 'split chunks were merged');
  const d = dropsByName(f.h);
  for (const r of want.reasons) t.true((d[r] ?? 0) > 0, `drop reason ${r} was reached`);
  const st = f.h.fwd.stats;
  t.true(st.replyPackets > 0 && st.forwardPackets > 0, 'both directions were served');
}

test('fuzz: mutated packets through processBatch (no virtio headers): no exception, no write outside a slot, every packet accounted once, table invariants hold', (t) => {
  const f = run(t, { selfIndex: 0, vnet: false, target: 400_000, peerShare: 0, seedSalt: 1 });
  assertCoverage(t, f, {
    emitted: true, toPeer: true, toDsr: true, merged: false,
    reasons: ['truncated', 'bad_total_length', 'no_flow', 'port_not_served', 'protocol_not_served', 'icmp_error_no_flow', 'dsr_no_neighbour'],
  });
  const st = f.h.fwd.stats;
  t.true(st.secondChancePackets > 0 && st.failoverPackets > 0 && st.tcpResetBackendDown > 0 && st.udpMovedBackendDown > 0, 'second chance, failover and backend-down paths ran');
});

test('fuzz: mutated packets with virtio headers (GSO, partial checksums) through processBatch', (t) => {
  const f = run(t, { selfIndex: 0, vnet: true, target: 350_000, peerShare: 0, seedSalt: 2 });
  assertCoverage(t, f, { emitted: true, toPeer: true, toDsr: true, merged: false, reasons: ['truncated', 'no_flow', 'dsr_no_neighbour'] });
  t.true(f.h.fwd.stats.peerSplitPackets > 0, 'super-packets to peers were split');
});

test('fuzz: mutated encapsulated packets from peers through processPeerBatch (between TUN batches)', (t) => {
  const f = run(t, { selfIndex: 1, vnet: true, target: 250_000, peerShare: 0.75, seedSalt: 3 });
  assertCoverage(t, f, {
    emitted: true, toPeer: true, toDsr: true, merged: true,
    reasons: ['encap_truncated', 'encap_bad_version', 'encap_bad_flags', 'not_a_peer', 'peer_decision_invalid', 'peer_bad_tag', 'peer_decision_refused', 'peer_vnet_invalid'],
  });
});

test('fuzz: encapsulated packets from peers to a balancer without virtio headers', (t) => {
  const f = run(t, { selfIndex: 2, vnet: false, target: 50_000, peerShare: 0.75, seedSalt: 4 });
  assertCoverage(t, f, { emitted: true, toPeer: true, toDsr: true, merged: false, reasons: ['peer_vnet_unsupported', 'not_a_peer'] });
});
