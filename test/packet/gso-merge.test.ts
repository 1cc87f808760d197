/**
 * gsoAppend (src/packet/gso-merge.ts): the peer's side of the split. Splitting a super-packet
 * (src/packet/gso-split.ts) and appending the chunks back together must give the original
 * packet byte for byte; everything GRO would not merge is refused and left untouched.
 */
import test from 'ava';
import * as P from '../helpers/packets';
import { ENCAP_F_VNET, ENCAP_VNET_LEN, writeEncapHeader } from '../../src/packet/encap';
import { GsoSplit, gsoSplitHeaders, newGsoSplitResult } from '../../src/packet/gso-split';
import { gsoAppend } from '../../src/packet/gso-merge';
import { chunkDatagram, chunkParts } from '../helpers/gso';

const MSS = 1448;
const TS_OPT = new Uint8Array([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
const SLOT = 70000;
const VN = ENCAP_VNET_LEN;

const payload = (n: number, seed = 3): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 11 + seed + (i >>> 9)) & 0xff);

function tcp(v6: boolean, n: number, flags: number, o: { seq?: number; sport?: number; ack?: number } = {}): Uint8Array {
  const opts = { seq: o.seq ?? 0xffffff00, ack: o.ack ?? 9, id: 0x1234, df: true, tcpOptions: TS_OPT };
  const p = v6
    ? P.tcp6('fd99:1::2', 'fd99::10', o.sport ?? 40000, 5201, flags, payload(n), opts)
    : P.tcp4('10.99.1.2', '10.99.0.10', o.sport ?? 40000, 5201, flags, payload(n), opts);
  return P.toPartial(p);
}

function vnetOf(v6: boolean, gso: boolean, mss = MSS): Uint8Array {
  const ipHl = v6 ? 40 : 20;
  return Uint8Array.of(1, gso ? (v6 ? 4 : 1) : 0, ipHl + 32, 0, gso ? mss & 0xff : 0, gso ? mss >> 8 : 0, ipHl, 0, 16, 0);
}

/** Packets laid out as the peer's receive slots: [virtio header][IP packet] at slot i. */
function slots(pkts: { pkt: Uint8Array; vnet: Uint8Array }[]): { buf: Uint8Array; off: (i: number) => number } {
  const buf = new Uint8Array(SLOT * pkts.length).fill(0xcc);
  pkts.forEach((p, i) => {
    buf.set(p.vnet, i * SLOT + 32);
    buf.set(p.pkt, i * SLOT + 32 + VN);
  });
  return { buf, off: (i) => i * SLOT + 32 + VN };
}

/** Appends slots 1.. to slot 0 while they merge; returns the merged packet, its virtio header and how many merged. */
function mergeAll(pkts: { pkt: Uint8Array; vnet: Uint8Array }[], cap = SLOT - 32 - VN) {
  const s = slots(pkts);
  let len = pkts[0]!.pkt.length;
  let merged = 0;
  for (let i = 1; i < pkts.length; i++) {
    const r = gsoAppend(s.buf, s.off(0), len, cap, s.buf, s.off(0) - VN, s.off(i), pkts[i]!.pkt.length, s.off(i) - VN);
    if (r === 0) break;
    len = r;
    merged++;
  }
  return { pkt: s.buf.slice(s.off(0), s.off(0) + len), vnet: s.buf.slice(s.off(0) - VN, s.off(0)), merged, buf: s.buf };
}

/** The chunks gsoSplitHeaders makes of a super-packet, as inner packets with their virtio headers. */
function splitChunks(pkt: Uint8Array, vnet: Uint8Array, maxDatagram: number) {
  const hdrs = new Uint8Array(1 << 16);
  writeEncapHeader(hdrs, 0, ENCAP_F_VNET, 0, 1, 0, 0, 1);
  const res = newGsoSplitResult();
  const buf = new Uint8Array(pkt.length + 8);
  buf.set(pkt, 4);
  if (gsoSplitHeaders(buf, 4, pkt.length, vnet, 0, hdrs, 0, hdrs.length, maxDatagram, res) !== GsoSplit.OK) throw new Error('no split');
  const out: { pkt: Uint8Array; vnet: Uint8Array }[] = [];
  for (let j = 0; j < res.count; j++) {
    const c = chunkParts(chunkDatagram(hdrs, 0, res.hdrLen, buf, res.payloadOff, res.payloadLen, res.chunk, j));
    out.push({ pkt: c.inner, vnet: c.vnet });
  }
  return out;
}

const ROUND_TRIPS = [
  { name: 'v4, 64 000 B, MTU 9000 chunks', v6: false, n: 64000, max: 8972, flags: P.TCP_ACK | P.TCP_PSH, mss: MSS },
  { name: 'v6, 64 000 B, MTU 9000 chunks', v6: true, n: 64000, max: 8952, flags: P.TCP_ACK | P.TCP_PSH, mss: MSS },
  { name: 'v4, 30 000 B with FIN and CWR, MTU 4000 chunks', v6: false, n: 30000, max: 3952, flags: P.TCP_ACK | P.TCP_FIN | P.TCP_PSH | 0x80, mss: MSS },
  { name: 'v4, 64 000 B, MTU 1500 chunks (single shorter segments)', v6: false, n: 64000, max: 1472, flags: P.TCP_ACK | P.TCP_PSH, mss: 0 },
  { name: 'v6, 20 000 B, MTU 1500 chunks', v6: true, n: 20000, max: 1452, flags: P.TCP_ACK, mss: 0 },
] as const;

for (const c of ROUND_TRIPS) {
  test(`gso merge: split then merged again gives the super-packet back: ${c.name}`, (t) => {
    const pkt = tcp(c.v6, c.n, c.flags);
    const vnet = vnetOf(c.v6, true);
    const chunks = splitChunks(pkt, vnet, c.max);
    t.true(chunks.length > 2);
    const m = mergeAll(chunks);
    t.is(m.merged, chunks.length - 1, 'every chunk appended');
    t.is(P.hex(m.pkt), P.hex(pkt), 'byte for byte the original (partial checksum included)');
    const segSize = c.mss !== 0 ? c.mss : chunks[0]!.pkt.length - (c.v6 ? 72 : 52);
    t.deepEqual([...m.vnet], [...vnetOf(c.v6, true, segSize)], 'a GSO TCP header with the chunks\' segment size');
    t.deepEqual(P.checksumErrors(P.completePartial(m.pkt)), []);
  });
}

test('gso merge: a single segment split for a 1500-byte network comes back as one packet (a GSO of two)', (t) => {
  const pkt = tcp(false, MSS, P.TCP_ACK | P.TCP_PSH);
  const chunks = splitChunks(pkt, vnetOf(false, false), 1472);
  t.is(chunks.length, 2);
  const m = mergeAll(chunks);
  t.is(m.merged, 1);
  t.is(P.hex(m.pkt), P.hex(pkt), 'byte for byte the original segment');
  const first = chunks[0]!.pkt.length - 52;
  t.deepEqual([...m.vnet], [...vnetOf(false, true, first)], 'GSO with the first chunk as segment size: the kernel cuts it the same way again');
});

test('gso merge: two plain full-size segments become one GSO packet of two', (t) => {
  const a = tcp(false, MSS, P.TCP_ACK, { seq: 1000 });
  const b = tcp(false, MSS, P.TCP_ACK | P.TCP_PSH, { seq: 1000 + MSS });
  const m = mergeAll([{ pkt: a, vnet: vnetOf(false, false) }, { pkt: b, vnet: vnetOf(false, false) }]);
  t.is(m.merged, 1);
  t.is(m.pkt.length, 52 + 2 * MSS);
  t.is(m.pkt[20 + 13], P.TCP_ACK | P.TCP_PSH, 'PSH of the last one kept');
  t.deepEqual([...m.vnet], [...vnetOf(false, true, MSS)]);
  t.deepEqual(P.checksumErrors(P.completePartial(m.pkt)), []);
});

test('gso merge: what GRO would not merge is refused and nothing is written', (t) => {
  const A = (o: { seq?: number; flags?: number; n?: number; v6?: boolean } = {}) => tcp(o.v6 ?? false, o.n ?? 2 * MSS, o.flags ?? P.TCP_ACK, { seq: o.seq ?? 5000 });
  const gso = vnetOf(false, true);
  const cases: [string, { pkt: Uint8Array; vnet: Uint8Array }, { pkt: Uint8Array; vnet: Uint8Array }, number?][] = [
    ['sequence gap', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS + 1 }), vnet: gso }],
    ['b before a', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 - 2 * MSS }), vnet: gso }],
    ['other source port', { pkt: A(), vnet: gso }, { pkt: tcp(false, MSS, P.TCP_ACK, { seq: 5000 + 2 * MSS, sport: 40001 }), vnet: vnetOf(false, false) }],
    ['other ack', { pkt: A(), vnet: gso }, { pkt: tcp(false, MSS, P.TCP_ACK, { seq: 5000 + 2 * MSS, ack: 10 }), vnet: vnetOf(false, false) }],
    ['a pushed', { pkt: A({ flags: P.TCP_ACK | P.TCP_PSH }), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS }), vnet: gso }],
    ['a with FIN', { pkt: A({ flags: P.TCP_ACK | P.TCP_FIN }), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS }), vnet: gso }],
    ['b with SYN', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS, flags: P.TCP_ACK | P.TCP_SYN }), vnet: gso }],
    ['b with RST', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS, flags: P.TCP_ACK | P.TCP_RST }), vnet: gso }],
    ['b with CWR', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS, flags: P.TCP_ACK | 0x80 }), vnet: gso }],
    ['a not full segments', { pkt: A({ n: 2 * MSS - 8 }), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS - 8 }), vnet: gso }],
    ['b larger segments', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS }), vnet: vnetOf(false, true, MSS + 8) }],
    ['b without NEEDS_CSUM', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS }), vnet: Uint8Array.of(0, 1, 52, 0, MSS & 0xff, MSS >> 8, 20, 0, 16, 0) }],
    ['v4 then v6', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS, v6: true }), vnet: vnetOf(true, true) }],
    ['over 65535 bytes', { pkt: A({ n: 44 * MSS }), vnet: gso }, { pkt: A({ seq: 5000 + 44 * MSS, n: 2 * MSS }), vnet: gso }],
    ['no room in a\'s slot', { pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS }), vnet: gso }, 52 + 3 * MSS],
  ];
  for (const [name, a, b, cap] of cases) {
    const before = slots([a, b]).buf;
    const m = mergeAll([a, b], cap);
    t.is(m.merged, 0, name);
    t.deepEqual(Buffer.compare(Buffer.from(m.buf), Buffer.from(before)), 0, `${name}: nothing written`);
  }
  // The control: the same shapes that do continue a merge.
  t.is(mergeAll([{ pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS }), vnet: gso }]).merged, 1);
  t.is(mergeAll([{ pkt: A(), vnet: gso }, { pkt: A({ seq: 5000 + 2 * MSS, flags: P.TCP_ACK | P.TCP_FIN }), vnet: gso }]).merged, 1);
});
