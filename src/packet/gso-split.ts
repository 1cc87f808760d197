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
import { ipv4HeaderChecksum, pseudoSum4, pseudoSum6 } from './checksum';
import { ENCAP_HEADER_LEN, ENCAP_VNET_LEN } from './encap';

// virtio_net_hdr (linux/virtio_net.h, little-endian; the TUN device's layout, 10 bytes).
const V_FLAGS = 0;
const V_GSO_TYPE = 1;
const V_HDR_LEN = 2;
const V_GSO_SIZE = 4;
const V_CSUM_START = 6;
const V_CSUM_OFFSET = 8;
const F_NEEDS_CSUM = 1;
const GSO_NONE = 0;
const GSO_TCPV4 = 1;
const GSO_TCPV6 = 4;
const GSO_ECN = 0x80;

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
  const gsoType = vnet[vnetOff + V_GSO_TYPE]! & ~GSO_ECN;
  if ((vnet[vnetOff + V_FLAGS]! & F_NEEDS_CSUM) === 0) return GsoSplit.NOT_TCP_GSO;
  // A single segment (GSO_NONE) with a partial checksum is split too: a full-size segment is
  // over a 1500-byte balancer network's datagram once encapsulated. Its "MSS" is its payload.
  let mss = vnet[vnetOff + V_GSO_SIZE]! | (vnet[vnetOff + V_GSO_SIZE + 1]! << 8);
  if ((gsoType !== GSO_NONE && mss === 0) || len < 40) return GsoSplit.NOT_TCP_GSO;
  const version = buf[off]! >>> 4;
  let ipHl: number;
  if (version === 4 && (gsoType === GSO_TCPV4 || gsoType === GSO_NONE)) {
    ipHl = (buf[off]! & 0x0f) * 4;
    if (ipHl < 20 || buf[off + 9] !== 6) return GsoSplit.NOT_TCP_GSO;
    if ((((buf[off + 6]! << 8) | buf[off + 7]!) & 0x3fff) !== 0) return GsoSplit.NOT_TCP_GSO; // a fragment
  } else if (version === 6 && (gsoType === GSO_TCPV6 || gsoType === GSO_NONE)) {
    ipHl = 40;
    if (buf[off + 6] !== 6) return GsoSplit.NOT_TCP_GSO; // extension headers: sent whole
  } else {
    return GsoSplit.NOT_TCP_GSO;
  }
  const tcp = off + ipHl;
  if (tcp + 20 > off + len) return GsoSplit.NOT_TCP_GSO;
  const thl = (buf[tcp + 12]! >>> 4) * 4;
  const h = ipHl + thl;
  if (thl < 20 || h > len) return GsoSplit.NOT_TCP_GSO;
  const payload = len - h;
  if (gsoType === GSO_NONE) mss = payload;
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

  const seq0 = ((buf[tcp + 4]! << 24) | (buf[tcp + 5]! << 16) | (buf[tcp + 6]! << 8) | buf[tcp + 7]!) >>> 0;
  const id0 = version === 4 ? (buf[off + 4]! << 8) | buf[off + 5]! : 0;
  const flags0 = buf[tcp + 13]!;
  const idStep = segs >= 1 ? segs : 1;
  const vType = vnet[vnetOff + V_GSO_TYPE]!;
  for (let j = 0; j < count; j++) {
    const o = hdrOff + j * hdrLen;
    const clen = j === count - 1 ? payload - j * chunk : chunk;
    if (j > 0) for (let k = 0; k < ENCAP_HEADER_LEN; k++) out[o + k] = out[hdrOff + k]!;
    // virtio header: still GSO when the chunk holds more than one segment.
    const v = o + ENCAP_HEADER_LEN;
    const multi = segs >= 1 && clen > mss;
    out[v + V_FLAGS] = F_NEEDS_CSUM;
    out[v + V_GSO_TYPE] = multi ? vType : GSO_NONE;
    out[v + V_HDR_LEN] = h & 0xff;
    out[v + V_HDR_LEN + 1] = h >>> 8;
    out[v + V_GSO_SIZE] = multi ? mss & 0xff : 0;
    out[v + V_GSO_SIZE + 1] = multi ? mss >>> 8 : 0;
    out[v + V_CSUM_START] = ipHl & 0xff;
    out[v + V_CSUM_START + 1] = ipHl >>> 8;
    out[v + V_CSUM_OFFSET] = 16;
    out[v + V_CSUM_OFFSET + 1] = 0;
    // IP + TCP headers.
    const ip = v + ENCAP_VNET_LEN;
    for (let k = 0; k < h; k++) out[ip + k] = buf[off + k]!;
    const t = ip + ipHl;
    const tcpLen = thl + clen;
    let pseudo: number;
    if (version === 4) {
      const total = h + clen;
      out[ip + 2] = total >>> 8;
      out[ip + 3] = total & 0xff;
      const id = (id0 + j * idStep) & 0xffff;
      out[ip + 4] = id >>> 8;
      out[ip + 5] = id & 0xff;
      const hc = ipv4HeaderChecksum(out, ip, ipHl);
      out[ip + 10] = hc >>> 8;
      out[ip + 11] = hc & 0xff;
      pseudo = pseudoSum4(out, ip + 12, ip + 16, 6, tcpLen);
    } else {
      out[ip + 4] = tcpLen >>> 8;
      out[ip + 5] = tcpLen & 0xff;
      pseudo = pseudoSum6(out, ip + 8, ip + 24, 6, tcpLen);
    }
    const seq = (seq0 + j * chunk) >>> 0;
    out[t + 4] = seq >>> 24;
    out[t + 5] = (seq >>> 16) & 0xff;
    out[t + 6] = (seq >>> 8) & 0xff;
    out[t + 7] = seq & 0xff;
    let fl = flags0;
    if (j !== count - 1) fl &= ~(TCP_FIN | TCP_PSH);
    if (j !== 0) fl &= ~TCP_CWR;
    out[t + 13] = fl;
    // Partial checksum (NEEDS_CSUM): the folded pseudo-header sum, not complemented.
    out[t + 16] = pseudo >>> 8;
    out[t + 17] = pseudo & 0xff;
  }
  res.chunk = chunk;
  res.count = count;
  res.hdrLen = hdrLen;
  res.payloadOff = off + h;
  res.payloadLen = payload;
  return GsoSplit.OK;
}
