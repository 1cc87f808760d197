/**
 * Splitting a TCP GSO super-packet into chunks that fit the balancer network's MTU, for the
 * encapsulated hop to a peer (src/packet/encap.ts). Without it a 64 KiB super-packet leaves as
 * one UDP datagram that the kernel IP-fragments (45 fragments at MTU 1500, 8 at 9000) and the
 * peer's kernel reassembles: measured at 0.12x (MTU 1500) and 0.33x (MTU 9000) of the
 * entry-served throughput (bench/dataplane/RESULTS.md).
 *
 * Each chunk is itself a valid, smaller TCP GSO packet (or a single segment) with its own
 * virtio_net_hdr, as Linux's tcp_gso_segment (net/ipv4/tcp_offload.c) would make its
 * segments: sequence number advanced by the payload before it; FIN and PSH only on the last
 * chunk, CWR only on the first; IPv4 ID advanced by the segments before it (the peer's kernel
 * increments it per segment when it segments the chunk, so the IDs stay those of a single
 * segmentation); IPv4 total length / IPv6 payload length and the IPv4 header checksum set per
 * chunk; the TCP checksum left partial (NEEDS_CSUM: the folded pseudo-header sum of the
 * chunk's TCP length, RFC 9293 3.1) for the peer's kernel to complete.
 *
 * Layout (caller-owned memory, no allocation): the headers go to `out` back to back, one per
 * chunk, each `hdrLen` = ENCAP_HEADER_LEN + ENCAP_VNET_LEN + IP + TCP header bytes long:
 *
 *   out[hdrOff + j*hdrLen]:  [encap header (copied from out[hdrOff])][virtio hdr][IP][TCP]
 *
 * and chunk j's payload stays in place: buf[payloadOff + j*chunk .. + min(chunk, rest)]. The
 * datagram of chunk j is its header followed by its payload: the sender gathers the two
 * (sendmsg iovecs; with UDP GSO, UDP_SEGMENT = hdrLen + chunk, all chunks but the last full).
 *
 * The caller writes the encapsulation header (flag VNET set) at out[hdrOff] first; it is
 * copied to every chunk.
 */
import { read16, write16 } from './checksum';
import { ENCAP_HEADER_LEN, ENCAP_VNET_LEN } from './encap';
import { setTcpLengths, tcpGsoHeaders } from './tcp-gso';
import {
  VNET_CSUM_OFFSET, VNET_CSUM_START, VNET_F_NEEDS_CSUM, VNET_FLAGS, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_SIZE, VNET_GSO_TYPE,
  VNET_HDR_LEN_FIELD,
} from './vnet';

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/** Smallest chunk payload worth splitting for (a path MTU this low gains nothing). */
export const GSO_SPLIT_MIN_CHUNK = 256;

/** Why a packet was not split (0 = split). The caller sends such a packet whole. */
export const GsoSplit = {
  OK: 0,
  /** Not TCP with a partial checksum (NEEDS_CSUM; GSO TCP or a single segment) over IPv4, or IPv6 without extension headers. */
  NOT_TCP_GSO: 1,
  /** It fits in one datagram already. */
  FITS: 2,
  /** The MTU leaves less than GSO_SPLIT_MIN_CHUNK payload bytes per chunk. */
  MTU_TOO_SMALL: 3,
  /** Not enough room in `out` for every chunk's header. */
  NO_ROOM: 4,
} as const;

/** The split, filled by gsoSplitHeaders when it returns GsoSplit.OK. */
export interface GsoSplitResult {
  /** Payload bytes per chunk (the last one may be shorter). */
  chunk: number;
  /** Number of chunks. */
  count: number;
  /** Bytes of each chunk's header in `out`. */
  hdrLen: number;
  /** Where the payload starts in `buf` and its length. */
  payloadOff: number;
  payloadLen: number;
}

export function newGsoSplitResult(): GsoSplitResult {
  return { chunk: 0, count: 0, hdrLen: 0, payloadOff: 0, payloadLen: 0 };
}

/**
 * Writes the chunk headers of the super-packet buf[off .. off+len) (virtio header at
 * vnet[vnetOff]) to out[hdrOff ..] (room: outEnd), each chunk's datagram at most `maxDatagram`
 * bytes (the UDP payload that leaves unfragmented). Returns a GsoSplit code; on OK, `res`
 * describes the chunks. Reads `buf`, writes only `out`. Never throws.
 */
export function gsoSplitHeaders(
  buf: Uint8Array, off: number, len: number,
  vnet: Uint8Array, vnetOff: number,
  out: Uint8Array, hdrOff: number, outEnd: number,
  maxDatagram: number, res: GsoSplitResult,
): number {
  // A single segment (gso_type NONE) with a partial checksum is split too: a full-size
  // segment is over a 1500-byte balancer network's datagram once encapsulated. Its "MSS" is
  // its payload.
  const h = tcpGsoHeaders(buf, off, len, vnet, vnetOff);
  if (h === 0) return GsoSplit.NOT_TCP_GSO;
  const single = (vnet[vnetOff + VNET_GSO_TYPE]! & ~VNET_GSO_ECN) === VNET_GSO_NONE;
  let mss = vnet[vnetOff + VNET_GSO_SIZE]! | (vnet[vnetOff + VNET_GSO_SIZE + 1]! << 8);
  if (!single && mss === 0) return GsoSplit.NOT_TCP_GSO;
  const version = buf[off]! >>> 4;
  const ipHl = version === 4 ? (buf[off]! & 0x0f) * 4 : 40;
  const tcp = off + ipHl;
  const payload = len - h;
  if (single) mss = payload;
  if (mss === 0) return GsoSplit.NOT_TCP_GSO;
  const hdrLen = ENCAP_HEADER_LEN + ENCAP_VNET_LEN + h;
  if (hdrLen + payload <= maxDatagram) return GsoSplit.FITS;
  const budget = maxDatagram - hdrLen;
  if (budget < GSO_SPLIT_MIN_CHUNK) return GsoSplit.MTU_TOO_SMALL;
  // Whole MSS-sized segments per chunk when one fits, else one shorter segment per chunk.
  const segs = Math.floor(budget / mss);
  const chunk = segs >= 1 ? segs * mss : budget;
  const count = Math.ceil(payload / chunk);
  if (hdrOff + count * hdrLen > outEnd) return GsoSplit.NO_ROOM;

  const seq0 = ((read16(buf, tcp + 4) << 16) | read16(buf, tcp + 6)) >>> 0;
  const id0 = version === 4 ? read16(buf, off + 4) : 0;
  const flags0 = buf[tcp + 13]!;
  const idStep = segs >= 1 ? segs : 1;
  const vType = vnet[vnetOff + VNET_GSO_TYPE]!;
  for (let j = 0; j < count; j++) {
    const o = hdrOff + j * hdrLen;
    const clen = j === count - 1 ? payload - j * chunk : chunk;
    if (j > 0) for (let k = 0; k < ENCAP_HEADER_LEN; k++) out[o + k] = out[hdrOff + k]!;
    // virtio header: still GSO when the chunk holds more than one segment.
    const v = o + ENCAP_HEADER_LEN;
    const multi = segs >= 1 && clen > mss;
    out[v + VNET_FLAGS] = VNET_F_NEEDS_CSUM;
    out[v + VNET_GSO_TYPE] = multi ? vType : VNET_GSO_NONE;
    writeLe16(out, v + VNET_HDR_LEN_FIELD, h);
    writeLe16(out, v + VNET_GSO_SIZE, multi ? mss : 0);
    writeLe16(out, v + VNET_CSUM_START, ipHl);
    writeLe16(out, v + VNET_CSUM_OFFSET, 16);
    // IP + TCP headers: IPv4 ID first (setTcpLengths checksums the header), lengths, seq, flags.
    const ip = v + ENCAP_VNET_LEN;
    for (let k = 0; k < h; k++) out[ip + k] = buf[off + k]!;
    if (version === 4) write16(out, ip + 4, (id0 + j * idStep) & 0xffff);
    setTcpLengths(out, ip, ipHl, h + clen);
    const t = ip + ipHl;
    const seq = (seq0 + j * chunk) >>> 0;
    write16(out, t + 4, seq >>> 16);
    write16(out, t + 6, seq & 0xffff);
    let fl = flags0;
    if (j !== count - 1) fl &= ~(TCP_FIN | TCP_PSH);
    if (j !== 0) fl &= ~TCP_CWR;
    out[t + 13] = fl;
  }
  res.chunk = chunk;
  res.count = count;
  res.hdrLen = hdrLen;
  res.payloadOff = off + h;
  res.payloadLen = payload;
  return GsoSplit.OK;
}

/** Little-endian u16 (virtio_net_hdr fields). */
function writeLe16(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = v >>> 8;
}
