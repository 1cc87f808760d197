/**
 * gsoSplitHeaders (src/packet/gso-split.ts): a TCP GSO super-packet split into chunks for the
 * encapsulated hop to a peer. The reference is the kernel's segmentation (tcp_gso_segment),
 * written out here as `tso`: cutting the super-packet into MSS segments must give the same
 * bytes as cutting each chunk into MSS segments (when chunks hold whole segments), and every
 * chunk must be exactly the NEEDS_CSUM form of a valid packet.
 */
import test from 'ava';
import * as P from '../helpers/packets';
import { ENCAP_F_VNET, ENCAP_HEADER_LEN, ENCAP_VNET_LEN, writeEncapHeader } from '../../src/packet/encap';
import { chunkDatagram, chunkParts } from '../helpers/gso';
import { GsoSplit, GSO_SPLIT_MIN_CHUNK, gsoSplitHeaders, newGsoSplitResult } from '../../src/packet/gso-split';

const CLIENT4 = '10.99.1.2';
const VIP4 = '10.99.0.10';
const CLIENT6 = 'fd99:1::2';
const VIP6 = 'fd99::10';
const MSS = 1448;
const TS_OPT = new Uint8Array([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps: 32-byte TCP header

function payload(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + (i >>> 8)) & 0xff);
}

/** A super-packet as the TUN device hands it over: partial checksum, virtio header with GSO. */
function superPacket(v6: boolean, n: number, flags: number, mss = MSS): { pkt: Uint8Array; vnet: Uint8Array } {
  const opts = { seq: 0xfffff000, ack: 77, id: 0xfff0, df: true, tcpOptions: TS_OPT };
  const whole = v6
    ? P.tcp6(CLIENT6, VIP6, 40000, 5201, flags, payload(n), opts)
    : P.tcp4(CLIENT4, VIP4, 40000, 5201, flags, payload(n), opts);
  const pkt = P.toPartial(whole);
  const L = P.layout(pkt);
  const h = L.l4Off + 32;
  const vnet = Uint8Array.of(1, v6 ? 4 : 1, h & 0xff, h >> 8, mss & 0xff, mss >> 8, L.l4Off, 0, 16, 0);
  return { pkt, vnet };
}

/** The kernel's TSO (tcp_gso_segment + inet/ipv6_gso_segment) of a partial-checksum packet, full checksums. */
function tso(pkt: Uint8Array, mss: number): Uint8Array[] {
  const L = P.layout(pkt);
  const thl = (pkt[L.l4Off + 12]! >> 4) * 4;
  const h = L.l4Off + thl;
  const data = pkt.subarray(h);
  const n = Math.max(1, Math.ceil(data.length / mss));
  const seq0 = new DataView(pkt.buffer, pkt.byteOffset).getUint32(L.l4Off + 4);
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const part = data.subarray(i * mss, Math.min(data.length, (i + 1) * mss));
    const s = new Uint8Array(h + part.length);
    s.set(pkt.subarray(0, h));
    s.set(part, h);
    const dv = new DataView(s.buffer);
    if (L.version === 4) {
      dv.setUint16(2, s.length);
      dv.setUint16(4, (dv.getUint16(4) + i) & 0xffff);
    } else {
      dv.setUint16(4, s.length - 40);
    }
    dv.setUint32(L.l4Off + 4, (seq0 + i * mss) >>> 0);
    let f = s[L.l4Off + 13]!;
    if (i !== n - 1) f &= ~(P.TCP_FIN | P.TCP_PSH);
    if (i !== 0) f &= ~0x80;
    s[L.l4Off + 13] = f;
    out.push(P.fillChecksums(s));
  }
  return out;
}

interface Chunk {
  encap: Uint8Array;
  vnet: Uint8Array;
  /** The inner packet: header + payload slice. */
  inner: Uint8Array;
}

function split(pkt: Uint8Array, vnet: Uint8Array, maxDatagram: number, room = 1 << 16) {
  const OFF = 5;
  const buf = new Uint8Array(pkt.length + 2 * OFF).fill(0xee);
  buf.set(pkt, OFF);
  const out = new Uint8Array(room + 3).fill(0xdd);
  const HDR = 3;
  writeEncapHeader(out, HDR, ENCAP_F_VNET, 1, 2, 0, 0, 42);
  const res = newGsoSplitResult();
  const r = gsoSplitHeaders(buf, OFF, pkt.length, vnet, 0, out, HDR, HDR + room, maxDatagram, res);
  const chunks: Chunk[] = [];
  if (r === GsoSplit.OK) {
    for (let j = 0; j < res.count; j++) {
      chunks.push(chunkParts(chunkDatagram(out, HDR, res.hdrLen, buf, res.payloadOff, res.payloadLen, res.chunk, j)));
    }
  }
  return { r, res, chunks, buf, out, OFF, HDR };
}

const CASES = [
  { name: 'v4, 64 000 B, MTU 9000 (6 segments per chunk)', v6: false, n: 64000, max: 9000 - 48, flags: P.TCP_ACK | P.TCP_PSH },
  { name: 'v6, 64 000 B, MTU 9000', v6: true, n: 64000, max: 9000 - 48, flags: P.TCP_ACK | P.TCP_PSH },
  { name: 'v4, 20 000 B with FIN, MTU 9000: FIN and PSH on the last chunk only', v6: false, n: 20000, max: 9000 - 48, flags: P.TCP_ACK | P.TCP_PSH | P.TCP_FIN },
  { name: 'v4, CWR on the first chunk only, MTU 4000 (2 segments per chunk)', v6: false, n: 30000, max: 4000 - 48, flags: P.TCP_ACK | 0x80 },
  { name: 'v6, exactly 5 chunks of whole segments', v6: true, n: 5 * 2 * MSS, max: 3200, flags: P.TCP_ACK },
  { name: 'v4, 64 000 B, MTU 1500: one shorter segment per chunk', v6: false, n: 64000, max: 1500 - 48, flags: P.TCP_ACK | P.TCP_PSH },
  { name: 'v6, 10 000 B, MTU 1500: one shorter segment per chunk', v6: true, n: 10000, max: 1500 - 48, flags: P.TCP_ACK | P.TCP_PSH | P.TCP_FIN },
] as const;

for (const c of CASES) {
  test(`gso split: ${c.name}`, (t) => {
    const { pkt, vnet } = superPacket(c.v6, c.n, c.flags);
    const { r, res, chunks, buf, out, OFF, HDR } = split(pkt, vnet, c.max);
    t.is(r, GsoSplit.OK);
    t.true(res.count > 1);
    t.is(res.payloadLen, c.n);
    // Untouched: the packet itself, and memory around the headers.
    t.deepEqual(buf.subarray(OFF, OFF + pkt.length), pkt, 'the super-packet is not modified');
    t.is(out[HDR - 1], 0xdd);
    t.is(out[HDR + res.count * res.hdrLen], 0xdd, 'nothing written after the last header');
    const segsPerChunk = Math.floor(res.chunk / MSS);
    for (const [j, ch] of chunks.entries()) {
      t.true(ch.encap.length + ch.vnet.length + ch.inner.length <= c.max, `chunk ${j} fits the datagram`);
      t.deepEqual(ch.encap, chunks[0]!.encap, 'every chunk carries the same encapsulation header');
      // Exactly the NEEDS_CSUM form of a valid packet (IP header checksum, lengths, partial TCP sum).
      t.deepEqual(P.hex(ch.inner), P.hex(P.toPartial(P.fillChecksums(ch.inner.slice()))), `chunk ${j}: partial form of a valid packet`);
      const clen = ch.inner.length - (c.v6 ? 40 : 20) - 32;
      const multi = segsPerChunk >= 1 && clen > MSS;
      t.is(ch.vnet[0], 1, 'NEEDS_CSUM');
      t.is(ch.vnet[1], multi ? (c.v6 ? 4 : 1) : 0, `chunk ${j} gso type`);
      t.is(ch.vnet[4]! | (ch.vnet[5]! << 8), multi ? MSS : 0, 'gso_size');
      t.is(ch.vnet[6], c.v6 ? 40 : 20, 'csum_start');
      t.is(ch.vnet[8], 16, 'csum_offset');
    }
    // What the client's TCP peer finally sees.
    const whole = tso(pkt, MSS);
    const viaChunks = chunks.flatMap((ch) => (ch.vnet[1] !== 0 ? tso(ch.inner, MSS) : [P.completePartial(ch.inner)]));
    const bytesOf = (segs: Uint8Array[]) => Buffer.concat(segs.map((s) => Buffer.from(s.subarray(P.layout(s).l4Off + 32))));
    t.deepEqual(bytesOf(viaChunks), bytesOf(whole), 'the same payload, in order');
    for (const [i, s] of viaChunks.entries()) t.deepEqual(P.checksumErrors(s), [], `segment ${i} of ${viaChunks.length}: ${s.length} B, seq ${new DataView(s.buffer, s.byteOffset).getUint32(P.layout(s).l4Off + 4)}`);
    if (segsPerChunk >= 1) {
      t.deepEqual(viaChunks.map(P.hex), whole.map(P.hex), 'segment for segment what the kernel makes of the super-packet');
    } else {
      // Shorter segments: contiguous sequence numbers, IDs one apart, flags only where allowed.
      let seq = 0xfffff000;
      for (const [i, s] of viaChunks.entries()) {
        const L = P.layout(s);
        const dv = new DataView(s.buffer, s.byteOffset);
        t.is(dv.getUint32(L.l4Off + 4), seq >>> 0, `segment ${i} seq`);
        seq += s.length - L.l4Off - 32;
        if (!c.v6) t.is(dv.getUint16(4), (0xfff0 + i) & 0xffff, `segment ${i} IP ID`);
        const last = i === viaChunks.length - 1;
        t.is(s[L.l4Off + 13]! & (P.TCP_FIN | P.TCP_PSH), last ? c.flags & (P.TCP_FIN | P.TCP_PSH) : 0);
      }
    }
  });
}

test('gso split: what is not split, and why', (t) => {
  const v4 = superPacket(false, 30000, P.TCP_ACK);
  const noCsum = v4.vnet.slice();
  noCsum[0] = 0;
  t.is(split(v4.pkt, noCsum, 8952).r, GsoSplit.NOT_TCP_GSO, 'no NEEDS_CSUM');
  const udpGso = v4.vnet.slice();
  udpGso[1] = 3;
  t.is(split(v4.pkt, udpGso, 8952).r, GsoSplit.NOT_TCP_GSO, 'UDP GSO');
  const v6type = v4.vnet.slice();
  v6type[1] = 4;
  t.is(split(v4.pkt, v6type, 8952).r, GsoSplit.NOT_TCP_GSO, 'TCPV6 type on an IPv4 packet');
  const noMss = v4.vnet.slice();
  noMss[4] = 0;
  noMss[5] = 0;
  t.is(split(v4.pkt, noMss, 8952).r, GsoSplit.NOT_TCP_GSO, 'gso_size 0');
  t.is(split(v4.pkt, v4.vnet, 65000).r, GsoSplit.FITS, 'fits one datagram');
  t.is(split(v4.pkt, v4.vnet, ENCAP_HEADER_LEN + ENCAP_VNET_LEN + 52 + GSO_SPLIT_MIN_CHUNK - 1).r, GsoSplit.MTU_TOO_SMALL);
  t.is(split(v4.pkt, v4.vnet, ENCAP_HEADER_LEN + ENCAP_VNET_LEN + 52 + GSO_SPLIT_MIN_CHUNK).r, GsoSplit.OK, 'the smallest chunk');
  const hdrLen = ENCAP_HEADER_LEN + ENCAP_VNET_LEN + 52;
  // 30 000 B at 8952: chunks of 6 × 1448 = 8688 B, so 4 chunks and 4 headers.
  t.is(split(v4.pkt, v4.vnet, 8952, 4 * hdrLen - 1).r, GsoSplit.NO_ROOM, '4 chunks need 4 headers');
  const fit = split(v4.pkt, v4.vnet, 8952, 4 * hdrLen);
  t.is(fit.r, GsoSplit.OK);
  t.is(fit.res.count, 4);
  t.is(fit.res.hdrLen, hdrLen);
  // IPv6 with an extension header before TCP: sent whole.
  const ext = P.toPartial(P.tcp6(CLIENT6, VIP6, 1, 2, P.TCP_ACK, payload(20000), { ext: [{ type: 60, len: 8 }] }));
  t.is(ext[6], 60);
  const vn = Uint8Array.of(1, 4, 0, 0, MSS & 0xff, MSS >> 8, P.layout(ext).l4Off, 0, 16, 0);
  t.is(split(ext, vn, 8952).r, GsoSplit.NOT_TCP_GSO, 'IPv6 extension header');
});

test('gso split: a single full-size segment (GSO_NONE, partial checksum) over a 1500-byte network: two segments', (t) => {
  for (const v6 of [false, true]) {
    const { pkt, vnet } = superPacket(v6, MSS, P.TCP_ACK | P.TCP_PSH);
    vnet[1] = 0; // GSO_NONE: one segment
    vnet[4] = 0;
    vnet[5] = 0;
    const max = 1500 - (v6 ? 48 : 28);
    t.true(pkt.length + ENCAP_HEADER_LEN + ENCAP_VNET_LEN > max, 'it does not fit one datagram');
    const { r, res, chunks } = split(pkt, vnet, max);
    t.is(r, GsoSplit.OK);
    t.is(res.count, 2);
    const segs = chunks.map((c) => P.completePartial(c.inner));
    for (const [j, c] of chunks.entries()) {
      t.is(c.vnet[1], 0, 'each chunk a single segment');
      t.true(ENCAP_HEADER_LEN + ENCAP_VNET_LEN + c.inner.length <= max);
      t.deepEqual(P.checksumErrors(segs[j]!), []);
    }
    const L = P.layout(pkt);
    const data = (s: Uint8Array) => s.subarray(P.layout(s).l4Off + 32);
    t.deepEqual(Buffer.concat(segs.map((s) => Buffer.from(data(s)))), Buffer.from(pkt.subarray(L.l4Off + 32)), 'the payload, in order');
    t.is(segs[0]![P.layout(segs[0]!).l4Off + 13], P.TCP_ACK, 'PSH only on the last');
    t.is(segs[1]![P.layout(segs[1]!).l4Off + 13], P.TCP_ACK | P.TCP_PSH);
  }
});
