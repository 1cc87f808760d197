/**
 * DSR (direct server return) in the forwarder (src/dataplane/forwarder.ts #toDsr) and the
 * neighbour table (src/dataplane/neighbours.ts), without root: the kernel's neighbour table,
 * the interfaces and the probes are fakes.
 *
 * A DSR VIP packet leaves as an Ethernet frame in the DSR output: dst = the recorded backend's
 * MAC, src = our interface's MAC, ethertype by family, followed by the packet byte for byte (the
 * VIP stays the destination, checksums untouched); the flow is recorded without a reply key; a
 * backend without a MAC is a counted drop (dsr_no_neighbour) that asks for resolution; GSO /
 * partial-checksum packets carry their virtio header with csum_start/hdr_len moved by 14.
 */
import test from 'ava';
import type { NetworkInterfaceInfo } from 'node:os';
import { parseConfig, type Config } from '../../src/config';
import { deriveDataTagKey, deriveHashKey } from '../../src/decision/hash-key';
import { peerDatagram } from '../helpers/peer-datagram';
import { FlowTable } from '../../src/flow';
import { Forwarder, Action } from '../../src/dataplane/forwarder';
import { createDsrOutput, type DsrOutput } from '../../src/dataplane/dsr-output';
import type { PeerOutput } from '../../src/dataplane/peer-output';
import { buildForwardingTable, type ForwardingTable } from '../../src/decision/forwarding-table';
import { forwardDropNames } from '../../src/dataplane/forward-drop';
import { PacketBatch, VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4 } from '../../src/dataplane/packet-batch';
import { NeighbourTable, type NeighbourEntry, NEIGH_STRIDE, NEIGH_VALID, interfaceFor, nudStates, parseIpNeighJson, parseProcNetArp } from '../../src/dataplane/neighbours';
import { formatMac, mapPacketOpenError } from '../../src/dataplane/l2-socket';
import { ENCAP_HEADER_LEN, ENCAP_F_NEW_FLOW } from '../../src/packet/encap';
import { CSUM_FULL } from '../../src/packet/nat';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import { PacketResult } from '../../src/packet/result';
import { SVC_IN_BYTES, SVC_IN_PACKETS, SVC_OUT_PACKETS } from '../../src/dataplane/service-stats';
import * as P from '../helpers/packets';
import { chunkDatagram } from '../helpers/gso';
import { CLIENT, CLIENT6, VIP, VIP6 } from '../helpers/fixtures';

const KEY = Buffer.alloc(32, 0x3d);
const KEY_PATH = '/keys/dsr-test.key';
const readKeyFile = (p: string): Buffer => {
  if (p === KEY_PATH) return Buffer.from(KEY);
  throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
};

const BACKENDS4 = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];
const BACKENDS6 = ['fd99:3::21', 'fd99:3::22', 'fd99:3::23'];
const MAC = (i: number): string => `02:00:00:00:03:${(0x21 + i).toString(16)}`;
const OUR_MAC = '02:00:00:00:03:11';
const BACK_IFINDEX = 7;

function yaml(balancers: number): string {
  const lbs = ['lb1', 'lb2', 'lb3'].slice(0, balancers).map((id, i) => `  - { id: ${id}, address: 10.99.2.${11 + i} }`).join('\n');
  return `
cluster: { id: dsr-test, key_file: ${KEY_PATH} }
balancers:
${lbs}
vips:
  - name: web4
    address: ${VIP}
    protocols: [tcp, udp, icmp]
    ports: "*"
    method: dsr
    backends:
${BACKENDS4.map((b) => `      - { address: ${b} }`).join('\n')}
  - name: web6
    address: "${VIP6}"
    protocols: [tcp, udp, icmp]
    ports: "*"
    method: dsr
    backends:
${BACKENDS6.map((b) => `      - { address: "${b}" }`).join('\n')}
  - name: nat4
    address: 10.99.0.20
    backends:
      - { address: 10.99.3.21 }
`;
}

/** The lab's balancer interfaces, as os.networkInterfaces() reports them. */
const IFACES: NodeJS.Dict<NetworkInterfaceInfo[]> = {
  lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' }],
  lbnet0: [{ address: '10.99.2.11', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:02:11', internal: false, cidr: '10.99.2.11/24' }],
  back0: [
    { address: '10.99.3.11', netmask: '255.255.255.0', family: 'IPv4', mac: OUR_MAC, internal: false, cidr: '10.99.3.11/24' },
    { address: 'fd99:3::11', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: OUR_MAC, internal: false, cidr: 'fd99:3::11/64', scopeid: 0 },
  ],
};

function kernelTable(macs: Record<string, string | null>, state = 'REACHABLE'): NeighbourEntry[] {
  return Object.entries(macs).map(([dst, mac]) =>
    mac === null ? { dst, dev: 'back0', state: ['FAILED'] } : { dst, dev: 'back0', lladdr: mac, state: [state] },
  );
}

const ALL_MACS: Record<string, string> = Object.fromEntries([
  ...BACKENDS4.map((b, i) => [b, MAC(i)]),
  ...BACKENDS6.map((b, i) => [b, MAC(i)]),
]);

interface Harness {
  config: Config;
  ft: ForwardingTable;
  table: FlowTable;
  fwd: Forwarder;
  neigh: NeighbourTable;
  out: DsrOutput;
  peerOut: PeerOutput;
  batch: PacketBatch;
  probes: string[];
  kernel: { entries: NeighbourEntry[] };
  drops(): Record<string, number>;
  /** Runs packets through processBatch (optionally with virtio headers); returns the number emitted. */
  run(pkts: Uint8Array[], vnet?: Uint8Array[]): number;
  frame(k: number): Uint8Array;
}

async function setup(opts: { balancers?: number; live?: number[]; selfIndex?: number; macs?: Record<string, string | null>; vnet?: boolean; maxDatagram?: number } = {}): Promise<Harness> {
  const config = parseConfig(yaml(opts.balancers ?? 1), 'dsr-test.yaml', { readKeyFile, env: {}, baseDir: '/' });
  const hashKey = deriveHashKey(config.cluster.key.reveal());
  const ft = buildForwardingTable(config, hashKey, 1);
  const table = new FlowTable({ capacity: 4096, seed: 7, earlyDrop: false, timeouts: { tcpEstablished: 300, tcpSynSeen: 30, tcpClosing: 30, tcpClosed: 10, udp: 30, icmp: 10 } });
  const live = new Uint8Array(config.balancers.length);
  for (const i of opts.live ?? [0]) live[i] = 1;
  const kernel = { entries: kernelTable(opts.macs ?? ALL_MACS) };
  const probes: string[] = [];
  const neigh = new NeighbourTable({
    forwarding: ft,
    interfaces: () => IFACES,
    ifInfo: (name) => ({ name, ifindex: name === 'back0' ? BACK_IFINDEX : 3, mac: macBytes(IFACES[name]![0]!.mac), mtu: 1500 }),
    read: async () => kernel.entries,
    probe: (ip) => probes.push(ip),
  });
  await neigh.refresh();
  const batch = new PacketBatch({ count: 16, maxPacket: 65535 });
  const out = createDsrOutput(16, opts.vnet ?? false);
  const peerOut: PeerOutput = {
    batch: new PacketBatch({ count: 16, maxPacket: 65535, share: batch }), addrs: new Uint8Array(16 * 16), ports: new Uint16Array(16), count: 0,
    segs: { chunk: new Uint16Array(16), hdrs: new Uint8Array(16 * 8192), hdrOffs: new Uint32Array(16), hdrLens: new Uint16Array(16), used: 0, maxDatagram: opts.maxDatagram ?? 0 },
  };
  const peerAddrs = new Uint8Array(config.balancers.length * 16);
  const peerPorts = new Uint16Array(config.balancers.length);
  config.balancers.forEach((b, i) => {
    peerAddrs.set(b.address.bytes, i * 16);
    peerPorts[i] = b.dataPort;
  });
  const cluster = config.balancers.length > 1;
  const fwd = new Forwarder({
    table,
    forwarding: ft,
    hashKey,
    tagKey: deriveDataTagKey(config.cluster.key.reveal()),
    selfIndex: opts.selfIndex ?? 0,
    live,
    peers: cluster ? { addrs: peerAddrs, ports: peerPorts } : undefined,
    peerOutput: cluster ? peerOut : undefined,
    dsr: { neighbours: neigh, output: out },
  });
  return {
    config, ft, table, fwd, neigh, out, peerOut, batch, probes, kernel,
    drops() {
      const d: Record<string, number> = {};
      fwd.stats.forwardDrops.forEach((v, i) => {
        if (v > 0) d[forwardDropNames[i]!] = v;
      });
      return d;
    },
    run(pkts, vnet) {
      pkts.forEach((p, i) => {
        batch.setPacket(i, p);
        if (vnet?.[i] !== undefined) batch.vnet.set(vnet[i]!, i * VNET_HDR_LEN);
        else batch.clearVnet(i);
      });
      return fwd.processBatch(batch, pkts.length, vnet !== undefined, 0);
    },
    frame(k) {
      return out.buf.slice(out.offsets[k]!, out.offsets[k]! + out.sizes[k]!);
    },
  };
}

function macBytes(text: string): Uint8Array {
  return Uint8Array.from(text.split(':').map((x) => parseInt(x, 16)));
}

const eq = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

for (const fam of [4, 6] as const) {
  test(`IPv${fam}: a DSR VIP packet leaves as a frame to the backend's MAC, VIP destination unchanged, no reply key`, async (t) => {
    const h = await setup();
    const seen = new Set<number>();
    for (let sport = 40000; sport < 40040; sport++) {
      const pkt = fam === 4 ? P.tcp4(CLIENT, VIP, sport, 80) : P.tcp6(CLIENT6, VIP6, sport, 80);
      const n = h.run([pkt]);
      t.is(n, 0, 'nothing is written back into the TUN device');
      t.is(h.out.count, 1);
      const f = h.frame(0);
      t.is(f.length, pkt.length + 14);
      // The record names the backend; the frame goes to that backend's MAC.
      const id = entryOf(h, pkt);
      t.true(id >= 0, 'the flow is recorded');
      t.false(h.table.hasReplyKey(id), 'DSR flows have no reply key');
      const be = h.table.backend(id);
      seen.add(be);
      t.is(formatMac(f, 0), MAC(be), 'destination MAC = the backend');
      t.is(formatMac(f, 6), OUR_MAC, 'source MAC = our back interface');
      t.deepEqual([...f.subarray(12, 14)], fam === 4 ? [0x08, 0x00] : [0x86, 0xdd]);
      t.true(eq(f.subarray(14), pkt), 'the IP packet is unchanged (VIP stays the destination, checksums untouched)');
      t.is(h.out.ifindex[0], BACK_IFINDEX);
    }
    t.is(seen.size, 3, 'every backend was used');
    t.is(h.table.size, 40);
    // A packet from the VIP (a server's reply, were it to pass here) matches no flow.
    const reply = fam === 4 ? P.tcp4(VIP, CLIENT, 80, 40000, 0x12) : P.tcp6(VIP6, CLIENT6, 80, 40000, 0x12);
    t.is(h.fwd.processPacket(reply, 0, reply.length, CSUM_FULL, 0), Action.DROP);
    t.deepEqual(h.drops(), { no_flow: 1 });
    t.is(h.fwd.stats.dsrPackets, 40);
    t.is(h.fwd.stats.replyPackets, 0);
  });
}

/** The flow-table entry of `pkt`'s forward key, or -1. */
function entryOf(h: Harness, pkt: Uint8Array): number {
  const info = new PacketInfo();
  if (parsePacket(pkt, 0, pkt.length, info) !== PacketResult.OK) return -1;
  const ref = h.table.lookup(info.keyWords, 0);
  return ref < 0 || (ref & 1) !== 0 ? -1 : ref >>> 1;
}

test('a backend without a MAC: dsr_no_neighbour, resolution asked; once resolved the frames go', async (t) => {
  const macs: Record<string, string | null> = { ...ALL_MACS, [BACKENDS4[0]!]: null, [BACKENDS4[1]!]: null, [BACKENDS4[2]!]: null };
  const h = await setup({ macs });
  t.is(h.neigh.stats.unresolved, 3);
  t.deepEqual(h.probes.sort(), [...BACKENDS4].sort(), 'FAILED entries are probed');
  const pkt = P.udp4(CLIENT, VIP, 5000, 53, new Uint8Array(10));
  t.is(h.run([pkt]), 0);
  t.is(h.out.count, 0);
  t.deepEqual(h.drops(), { dsr_no_neighbour: 1 });
  t.is(h.neigh.stats.misses, 1);
  t.is(h.table.size, 1, 'the flow is recorded (its decision stands), only the packet is dropped');
  // The kernel resolves them; the next refresh makes the rows valid.
  h.kernel.entries = kernelTable(ALL_MACS);
  await h.neigh.refresh();
  t.is(h.neigh.stats.resolved, 6);
  t.is(h.run([pkt]), 0);
  t.is(h.out.count, 1);
  t.true(eq(h.frame(0).subarray(14), pkt));
  // And the kernel loses one again (FAILED): invalid at the next refresh.
  h.kernel.entries = kernelTable({ ...ALL_MACS, [BACKENDS4[0]!]: null, [BACKENDS4[1]!]: null, [BACKENDS4[2]!]: null });
  await h.neigh.refresh();
  for (let b = 0; b < 3; b++) t.is(h.neigh.rows[0]![b * NEIGH_STRIDE + NEIGH_VALID], 0);
});

test('STALE entries stay usable and are re-confirmed by a probe; NAT VIPs have no rows', async (t) => {
  const h = await setup();
  t.is(h.probes.length, 0, 'REACHABLE entries are not probed');
  h.kernel.entries = kernelTable(ALL_MACS, 'STALE');
  await h.neigh.refresh();
  t.is(h.neigh.stats.resolved, 6);
  t.is(h.probes.length, 6);
  t.is(h.neigh.rows[2]!.length, 0, 'the NAT VIP has no neighbour rows');
  t.is(h.run([P.tcp4(CLIENT, VIP, 1234, 80)]), 0);
  t.is(h.out.count, 1);
});

test('the NAT VIP of the same balancer is still rewritten and emitted', async (t) => {
  const h = await setup();
  t.is(h.run([P.tcp4(CLIENT, '10.99.0.20', 1234, 80)]), 1);
  t.is(h.out.count, 0);
});

test('several DSR packets in one batch: one frame each, in order, NAT packets compacted apart', async (t) => {
  const h = await setup();
  const pkts = [P.tcp4(CLIENT, VIP, 1000, 80), P.tcp4(CLIENT, '10.99.0.20', 1001, 80), P.tcp6(CLIENT6, VIP6, 1002, 443), P.udp4(CLIENT, VIP, 1003, 53, new Uint8Array(100))];
  t.is(h.run(pkts), 1);
  t.is(h.out.count, 3);
  t.true(eq(h.frame(0).subarray(14), pkts[0]!));
  t.true(eq(h.frame(1).subarray(14), pkts[2]!));
  t.true(eq(h.frame(2).subarray(14), pkts[3]!));
  t.is(h.out.buf, h.batch.buf, 'frames point into the read batch (no copy)');
});

test('GSO super-packet with a partial checksum: the virtio header goes along, csum_start and hdr_len moved by 14', async (t) => {
  const h = await setup({ vnet: true });
  const payload = new Uint8Array(30000).fill(7);
  const pkt = P.toPartial(P.tcp4(CLIENT, VIP, 2000, 80, 0x10, payload));
  const vh = new Uint8Array(VNET_HDR_LEN);
  vh[0] = VNET_F_NEEDS_CSUM;
  vh[1] = VNET_GSO_TCPV4;
  vh[2] = 40; // hdr_len
  vh[4] = 1448 & 0xff;
  vh[5] = 1448 >> 8; // gso_size
  vh[6] = 20; // csum_start
  vh[8] = 16; // csum_offset
  const plain = P.tcp4(CLIENT, VIP, 2001, 80);
  t.is(h.run([pkt, plain], [vh, new Uint8Array(VNET_HDR_LEN)]), 0);
  t.is(h.out.count, 2);
  const v = h.out.vnet!;
  t.deepEqual([...v.subarray(0, VNET_HDR_LEN)], [VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 54, 0, 1448 & 0xff, 1448 >> 8, 34, 0, 16, 0]);
  t.deepEqual([...v.subarray(VNET_HDR_LEN, 2 * VNET_HDR_LEN)], new Array(VNET_HDR_LEN).fill(0), 'a plain packet gets a zero header');
  t.is(h.frame(0).length, pkt.length + 14);
  t.true(eq(h.frame(0).subarray(14), pkt), 'the partial checksum is left for the kernel');
});

test('cluster: a flow whose primary is a peer is encapsulated to it (not sent by DSR); from a peer, this balancer sends the frame', async (t) => {
  // Balancer 0 of 2 receives; flows whose primary is lb2 go to lb2 encapsulated.
  const h = await setup({ balancers: 2, live: [0, 1] });
  let toPeer = 0;
  let dsr = 0;
  for (let sport = 3000; sport < 3040; sport++) {
    h.run([P.tcp4(CLIENT, VIP, sport, 80)]);
    toPeer += h.peerOut.count;
    dsr += h.out.count;
  }
  t.true(toPeer > 0 && dsr > 0, `both kinds: ${toPeer} to the peer, ${dsr} by DSR`);
  t.is(toPeer + dsr, 40);

  // lb2's view: an encapsulated packet from lb1 with lb1's decision → a DSR frame from lb2.
  const h2 = await setup({ balancers: 2, live: [0, 1], selfIndex: 1 });
  const rx = new PacketBatch({ count: 4, maxPacket: 65535 });
  const inner = P.tcp4(CLIENT, VIP, 4000, 80);
  const tagKey = deriveDataTagKey(h2.config.cluster.key.reveal());
  const dg = peerDatagram({ flags: ENCAP_F_NEW_FLOW, primary: 1, backup: 0, backend: 2, vip: 0, generation: h2.ft.generation }, inner, tagKey, 0, 1);
  rx.setPacket(0, dg);
  const addrs = new Uint8Array(16);
  addrs.set(h2.config.balancers[0]!.address.bytes, 0);
  t.is(h2.fwd.processPeerBatch(rx, 1, addrs, false, 0), 0);
  t.is(h2.out.count, 1);
  t.is(h2.out.buf, rx.buf);
  const f = h2.out.buf.slice(h2.out.offsets[0]!, h2.out.offsets[0]! + h2.out.sizes[0]!);
  t.is(formatMac(f, 0), MAC(2), 'the backend decided by the sender (index 2)');
  t.true(eq(f.subarray(14), inner));
});

test('from a peer with a carried virtio header (GSO): the header goes with the frame, moved by 14, although the Ethernet header overwrites where it was', async (t) => {
  const h2 = await setup({ balancers: 2, live: [0, 1], selfIndex: 1, vnet: true });
  const rx = new PacketBatch({ count: 4, maxPacket: 65535 });
  const inner = P.toPartial(P.tcp4(CLIENT, VIP, 4001, 80, 0x10, new Uint8Array(5000)));
  const vh = [VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 40, 0, 0xa8, 0x05, 20, 0, 16, 0];
  const tagKey = deriveDataTagKey(h2.config.cluster.key.reveal());
  const dg = peerDatagram({ flags: ENCAP_F_NEW_FLOW, primary: 1, backup: 0, backend: 1, vip: 0, generation: h2.ft.generation }, inner, tagKey, 0, 1, vh);
  rx.setPacket(0, dg);
  const addrs = new Uint8Array(16);
  addrs.set(h2.config.balancers[0]!.address.bytes, 0);
  t.is(h2.fwd.processPeerBatch(rx, 1, addrs, true, 0), 0);
  t.is(h2.out.count, 1);
  t.deepEqual([...h2.out.vnet!.subarray(0, VNET_HDR_LEN)], [VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 54, 0, 0xa8, 0x05, 34, 0, 16, 0]);
  const f = h2.out.buf.slice(h2.out.offsets[0]!, h2.out.offsets[0]! + h2.out.sizes[0]!);
  t.is(formatMac(f, 0), MAC(1));
  t.true(eq(f.subarray(14), inner));
});

test('cluster, GSO super-packet for a peer over the MTU: split into chunk datagrams (UDP GSO entry); the peer merges them back into one DSR frame, reordered ones go one by one', async (t) => {
  const h = await setup({ balancers: 2, live: [0, 1], vnet: true, maxDatagram: 9000 - 28 });
  const vh = Uint8Array.of(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 40, 0, 1448 & 0xff, 1448 >> 8, 20, 0, 16, 0);
  const payload = Uint8Array.from({ length: 30000 }, (_, i) => (i * 13) & 0xff);
  // A client port whose flow's primary is the peer (lb2): its SYN is encapsulated.
  let sport = 5000;
  for (; sport < 5100; sport++) {
    h.run([P.tcp4(CLIENT, VIP, sport, 80)]);
    if (h.peerOut.count === 1) break;
  }
  t.true(sport < 5100, 'found a flow served by the peer');
  t.is(h.peerOut.segs!.chunk[0], 0, 'the SYN is a plain entry');
  const big = P.toPartial(P.tcp4(CLIENT, VIP, sport, 80, 0x18, payload, { seq: 1 }));
  const small = P.tcp4(CLIENT, VIP, sport, 80, 0x10, new Uint8Array(0), { seq: 30001 });
  h.run([big, small], [vh, new Uint8Array(VNET_HDR_LEN)]);
  const po = h.peerOut;
  const sg = po.segs!;
  t.is(po.count, 2, 'one entry per packet, in order');
  t.is(sg.chunk[0], 6 * 1448, 'six whole segments per chunk fit 8972 bytes');
  t.is(sg.chunk[1], 0);
  t.is(po.batch.sizes[0], 30000, 'the entry is the payload, in place');
  t.is(h.fwd.stats.peerSplitPackets, 1);
  t.is(h.fwd.stats.peerSplitDatagrams, 4);
  t.is(h.fwd.stats.peerTxPackets, 3);
  // The datagrams as UDP GSO puts them on the wire, received by the peer (lb2, selfIndex 1).
  const hl = sg.hdrLens[0]!;
  const datagram = (j: number): Uint8Array =>
    chunkDatagram(sg.hdrs, sg.hdrOffs[0]!, hl, po.batch.buf, po.batch.offsets[0]!, po.batch.sizes[0]!, sg.chunk[0]!, j);
  const deliver = async (order: number[]) => {
    const h2 = await setup({ balancers: 2, live: [0, 1], selfIndex: 1, vnet: true });
    const rx = new PacketBatch({ count: 8, maxPacket: 65535 });
    order.forEach((j, k) => rx.setPacket(k, datagram(j)));
    const addrs = new Uint8Array(order.length * 16);
    for (let k = 0; k < order.length; k++) addrs.set(h2.config.balancers[0]!.address.bytes, k * 16);
    t.is(h2.fwd.processPeerBatch(rx, order.length, addrs, true, 0), 0);
    t.is(Object.keys(h2.drops()).length, 0);
    return h2;
  };
  for (let j = 0; j < 4; j++) t.true(datagram(j).length <= 9000 - 28, `datagram ${j} fits the MTU`);
  // In order: the peer appends chunks 1-3 to chunk 0 and sends the super-packet as one frame.
  const h2 = await deliver([0, 1, 2, 3]);
  t.is(h2.out.count, 1, 'one DSR frame: the chunks merged back');
  t.is(h2.fwd.stats.peerRxMerged, 3);
  t.is(h2.fwd.stats.peerRxPackets, 4);
  const f = h2.frame(0);
  t.true(eq(f.subarray(14), big), 'byte for byte the super-packet lb1 received');
  t.deepEqual([...h2.out.vnet!.subarray(0, VNET_HDR_LEN)], [VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 54, 0, 1448 & 0xff, 1448 >> 8, 34, 0, 16, 0]);
  // Out of order: nothing continues its predecessor, so four frames, each a valid GSO packet.
  const h3 = await deliver([0, 2, 1, 3]);
  t.is(h3.out.count, 4, 'reordered chunks are not merged');
  t.is(h3.fwd.stats.peerRxMerged, 0);
  const got: Buffer[] = [];
  for (let k = 0; k < 4; k++) {
    const fr = h3.frame(k);
    t.is(h3.out.vnet![k * VNET_HDR_LEN + 1], VNET_GSO_TCPV4, `frame ${k}: a GSO packet for the kernel to segment`);
    t.is(new DataView(fr.buffer).getUint32(14 + 24), (1 + [0, 2, 1, 3][k]! * 6 * 1448) >>> 0, `frame ${k} sequence number`);
    got[[0, 2, 1, 3][k]!] = Buffer.from(fr.subarray(14 + 40));
  }
  t.true(eq(Buffer.concat(got), payload), 'the payload, whole');
});

test('cluster, GSO super-packet for a peer: without UDP GSO (maxDatagram 0) it is sent whole, as before', async (t) => {
  const h = await setup({ balancers: 2, live: [0, 1], vnet: true, maxDatagram: 0 });
  const vh = Uint8Array.of(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 40, 0, 1448 & 0xff, 1448 >> 8, 20, 0, 16, 0);
  for (let sport = 5000; sport < 5100; sport++) {
    h.run([P.tcp4(CLIENT, VIP, sport, 80)]);
    if (h.peerOut.count !== 1) continue;
    const big = P.toPartial(P.tcp4(CLIENT, VIP, sport, 80, 0x18, new Uint8Array(30000), { seq: 1 }));
    h.run([big], [vh]);
    t.is(h.peerOut.count, 1);
    t.is(h.peerOut.segs!.chunk[0], 0);
    t.is(h.peerOut.batch.sizes[0], ENCAP_HEADER_LEN + VNET_HDR_LEN + big.length, 'one datagram: encap + virtio header + the super-packet');
    t.is(h.fwd.stats.peerSplitPackets, 0);
    return;
  }
  t.fail('no flow served by the peer');
});

test('without a DSR output the forwarder still drops DSR VIPs as method_unsupported', async (t) => {
  const h = await setup();
  const fwd = new Forwarder({ table: h.table, forwarding: h.ft, hashKey: deriveHashKey(KEY), selfIndex: 0, live: Uint8Array.of(1) });
  const pkt = P.tcp4(CLIENT, VIP, 5555, 80);
  t.is(fwd.processPacket(pkt, 0, pkt.length, CSUM_FULL, 0), Action.DROP);
  t.is(fwd.stats.forwardDrops[forwardDropNames.indexOf('method_unsupported')], 1);
});

test('neighbour states: NUD_* bits of the rtnetlink dump → the names ip -j neigh prints', (t) => {
  const cases: [number, string[]][] = [
    [0x00, ['NONE']],
    [0x01, ['INCOMPLETE']],
    [0x02, ['REACHABLE']],
    [0x04, ['STALE']],
    [0x08, ['DELAY']],
    [0x10, ['PROBE']],
    [0x20, ['FAILED']],
    [0x40, ['NOARP']],
    [0x80, ['PERMANENT']],
    [0x82, ['REACHABLE', 'PERMANENT']],
  ];
  for (const [bits, names] of cases) t.deepEqual(nudStates(bits), names, `0x${bits.toString(16)}`);
});

test('neighbour helpers: ip -j neigh, /proc/net/arp, interface by subnet', (t) => {
  const j = parseIpNeighJson(
    '[{"dst":"10.99.3.21","dev":"back0","lladdr":"02:aa:bb:cc:dd:ee","state":["REACHABLE"]},{"dst":"fd99:3::22","dev":"back0","state":["FAILED"]},{"dst":"fe80::1","dev":"back0","lladdr":"02:00:00:00:00:01","router":null,"state":["STALE"]}]',
  );
  t.is(j.length, 3);
  t.is(j[0]!.lladdr, '02:aa:bb:cc:dd:ee');
  t.is(j[1]!.lladdr, undefined);
  t.deepEqual(parseIpNeighJson(''), []);
  const a = parseProcNetArp(
    'IP address       HW type     Flags       HW address            Mask     Device\n10.99.3.21       0x1         0x2         02:aa:bb:cc:dd:ee     *        back0\n10.99.3.22       0x1         0x0         00:00:00:00:00:00     *        back0\n',
  );
  t.deepEqual(a.map((e) => [e.dst, e.lladdr ?? null]), [['10.99.3.21', '02:aa:bb:cc:dd:ee'], ['10.99.3.22', null]]);
  t.is(interfaceFor('10.99.3.22', IFACES), 'back0');
  t.is(interfaceFor('fd99:3::23', IFACES), 'back0');
  t.is(interfaceFor('10.99.2.40', IFACES), 'lbnet0');
  t.is(interfaceFor('10.99.9.1', IFACES), undefined);
  t.is(interfaceFor('127.0.0.5', IFACES), undefined, 'loopback is never a DSR interface');
  t.is(interfaceFor('10.99.3.22', IFACES, ['back0']), undefined);
});

test('a backend on no attached network: warned once, never valid, not probed', async (t) => {
  const warnings: string[] = [];
  const config = parseConfig(yaml(1).replace('10.99.3.23', '10.77.0.1'), 'dsr-test.yaml', { readKeyFile, env: {}, baseDir: '/' });
  const ft = buildForwardingTable(config, deriveHashKey(config.cluster.key.reveal()), 1);
  const probes: string[] = [];
  const n = new NeighbourTable({
    forwarding: ft,
    interfaces: () => IFACES,
    ifInfo: (name) => ({ name, ifindex: 7, mac: macBytes(OUR_MAC), mtu: 1500 }),
    read: async () => kernelTable({ ...ALL_MACS, '10.77.0.1': '02:00:00:00:00:99' }),
    probe: (ip) => probes.push(ip),
    warn: (m) => warnings.push(m),
  });
  await n.refresh();
  t.is(n.stats.noInterface, 1);
  t.is(n.rows[0]![2 * NEIGH_STRIDE + NEIGH_VALID], 0);
  t.false(probes.includes('10.77.0.1'));
  t.is(warnings.length, 1);
  t.regex(warnings[0]!, /10\.77\.0\.1/);
  t.deepEqual(n.interfaces, ['back0']);
});

test('packet socket open errors map to TunlbError codes', (t) => {
  const err = (code: string, syscall: string): Error => Object.assign(new Error(`x: ${syscall}: ${code}`), { code, syscall });
  t.is(mapPacketOpenError(err('EPERM', 'socket(AF_PACKET)'), 'on back0', undefined).code, 'TUNLB_NO_PERMISSION');
  t.regex(mapPacketOpenError(err('EPERM', 'socket(AF_PACKET)'), 'on back0', undefined).message, /CAP_NET_RAW/);
  t.is(mapPacketOpenError(err('ENODEV', 'SIOCGIFINDEX'), 'on back9', undefined).code, 'TUNLB_SOCKET');
  t.regex(mapPacketOpenError(err('ENOENT', 'open netns'), 'on back0', 'nope').message, /ip netns add nope/);
  t.is(mapPacketOpenError(err('EINVAL', 'bind'), 'on back0', undefined).code, 'TUNLB_SOCKET');
});

test('per-backend counters: DSR frames count as packets and bytes in (here or from a peer); nothing out (replies bypass the balancers)', async (t) => {
  const h = await setup({ balancers: 2, live: [0, 1] });
  const sv = h.fwd.services;
  const want = [0, 0, 0];
  let bytes = 0;
  let relayed = 0;
  for (let sport = 3100; sport < 3160; sport++) {
    const pkt = P.tcp4(CLIENT, VIP, sport, 80, P.TCP_SYN, new Uint8Array(sport - 3100));
    h.run([pkt]);
    if (h.out.count === 1) {
      want[h.table.backend(entryOf(h, pkt))]!++;
      bytes += pkt.length;
    } else {
      relayed++;
    }
  }
  t.true(relayed > 0, 'some flows were for the peer: counted there, not here');
  t.deepEqual([0, 1, 2].map((be) => sv.get(0, be, SVC_IN_PACKETS)), want);
  t.is(sv.vipTotal(0, SVC_IN_BYTES), bytes);
  t.is(sv.vipTotal(0, SVC_OUT_PACKETS), 0);
  t.is(sv.vipTotal(0, SVC_IN_PACKETS), h.fwd.stats.dsrPackets);
  // From a peer, with the sender's decision (backend 2): counted on backend 2 by the sender of the frame.
  const h2 = await setup({ balancers: 2, live: [0, 1], selfIndex: 1 });
  const rx = new PacketBatch({ count: 4, maxPacket: 65535 });
  const inner = P.tcp4(CLIENT, VIP, 4001, 80);
  const dg = peerDatagram({ flags: ENCAP_F_NEW_FLOW, primary: 1, backup: 0, backend: 2, vip: 0, generation: h2.ft.generation }, inner, deriveDataTagKey(h2.config.cluster.key.reveal()), 0, 1);
  rx.setPacket(0, dg);
  const addrs = new Uint8Array(16);
  addrs.set(h2.config.balancers[0]!.address.bytes, 0);
  h2.fwd.processPeerBatch(rx, 1, addrs, false, 0);
  t.is(h2.out.count, 1);
  t.is(h2.fwd.services.get(0, 2, SVC_IN_PACKETS), 1);
  t.is(h2.fwd.services.get(0, 2, SVC_IN_BYTES), inner.length);
});
