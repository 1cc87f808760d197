/**
 * Re-coalescing TCP segments into one GSO packet, in place: the receiving side of
 * src/packet/gso-split.ts. A peer receives a split super-packet as several encapsulated
 * datagrams in a row; appending each chunk's payload to the first one gives back one GSO
 * packet, so the peer rewrites, writes and sends it once instead of once per chunk.
 *
 * The rules are Linux GRO's for TCP (net/ipv4/tcp_offload.c tcp_gro_receive), so any two
 * packets that pass could have been one segment stream of one super-packet:
 *   - same IP version, addresses, and every IP header byte except lengths, IPv4 ID and header
 *     checksum; TCPv4 over IPv4 or TCPv6 over IPv6 without extension headers;
 *   - same TCP header except the sequence number, flags and checksum (ports, ack, window,
 *     options all equal);
 *   - `b` starts where `a` ends (seq(b) = seq(a) + payload(a));
 *   - `a` has no FIN, SYN, RST, URG or PSH (a pushed segment ends a train); `b` has no SYN, RST,
 *     URG or CWR and adds at most FIN and PSH;
 *   - every segment of `a` is full: its payload is a multiple of its segment size (gso_size, or
 *     its whole payload when it is a single segment), and `b`'s segments are not larger;
 *   - both carry a partial checksum (NEEDS_CSUM) and the result stays within 65535 bytes.
 * The result: `a` with `b`'s payload appended, its lengths, IPv4 header checksum and partial
 * TCP checksum (RFC 9293 3.1 pseudo-header sum, folded, not complemented) set, FIN/PSH of `b`
 * added, and its virtio header a GSO TCP one with gso_size = a's segment size.
 * No allocation; never throws.
 */
import { ipv4HeaderChecksum, pseudoSum4, pseudoSum6 } from './checksum';

const V_FLAGS = 0;
const V_GSO_TYPE = 1;
const V_HDR_LEN = 2;
const V_GSO_SIZE = 4;
const F_NEEDS_CSUM = 1;
const GSO_NONE = 0;
const GSO_TCPV4 = 1;
const GSO_TCPV6 = 4;
const GSO_ECN = 0x80;

const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_PSH = 0x08;
const TCP_URG = 0x20;
const TCP_CWR = 0x80;

/** IP + TCP header length of a TCP packet at buf[off], or 0 when it is not one we merge. */
function tcpHeaders(buf: Uint8Array, off: number, len: number, vnet: Uint8Array, vo: number): number {
  if ((vnet[vo + V_FLAGS]! & F_NEEDS_CSUM) === 0 || len < 40) return 0;
  const type = vnet[vo + V_GSO_TYPE]! & ~GSO_ECN;
  const version = buf[off]! >>> 4;
  let ipHl: number;
  if (version === 4) {
    if (type !== GSO_NONE && type !== GSO_TCPV4) return 0;
    ipHl = (buf[off]! & 0x0f) * 4;
    if (ipHl < 20 || buf[off + 9] !== 6) return 0;
    if ((((buf[off + 6]! << 8) | buf[off + 7]!) & 0x3fff) !== 0) return 0; // a fragment
  } else if (version === 6) {
    if (type !== GSO_NONE && type !== GSO_TCPV6) return 0;
    ipHl = 40;
    if (buf[off + 6] !== 6) return 0;
  } else {
    return 0;
  }
  const thl = (buf[off + ipHl + 12]! >>> 4) * 4;
  if (thl < 20 || ipHl + thl > len) return 0;
  return ipHl + thl;
}

function seqOf(buf: Uint8Array, tcp: number): number {
  return ((buf[tcp + 4]! << 24) | (buf[tcp + 5]! << 16) | (buf[tcp + 6]! << 8) | buf[tcp + 7]!) >>> 0;
}

/**
 * Appends packet b (buf[bOff .. +bLen), virtio header at vnet[vb]) to packet a (buf[aOff ..
 * +aLen), virtio header at vnet[va]) when b continues a (rules above), moving b's payload to
 * buf[aOff + aLen] (at most aCap bytes may be used from aOff). Returns a's new length, or 0
 * when b does not continue a (then nothing is written).
 */
export function gsoAppend(
  buf: Uint8Array, aOff: number, aLen: number, aCap: number, vnet: Uint8Array, va: number,
  bOff: number, bLen: number, vb: number,
): number {
  const h = tcpHeaders(buf, aOff, aLen, vnet, va);
  if (h === 0 || tcpHeaders(buf, bOff, bLen, vnet, vb) !== h) return 0;
  const v4 = buf[aOff]! >>> 4 === 4;
  if (buf[bOff]! >>> 4 !== buf[aOff]! >>> 4) return 0;
  const ipHl = v4 ? (buf[aOff]! & 0x0f) * 4 : 40;
  const ta = aOff + ipHl;
  const tb = bOff + ipHl;
  const fa = buf[ta + 13]!;
  const fb = buf[tb + 13]!;
  if ((fa & (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_PSH)) !== 0) return 0;
  if ((fb & (TCP_SYN | TCP_RST | TCP_URG | TCP_CWR)) !== 0) return 0;
  if ((fb & ~(TCP_FIN | TCP_PSH)) !== (fa & ~TCP_CWR)) return 0;
  // IP headers equal but for lengths, ID and checksum.
  for (let k = 0; k < ipHl; k++) {
    if (v4 ? k === 2 || k === 3 || k === 4 || k === 5 || k === 10 || k === 11 : k === 4 || k === 5) continue;
    if (buf[aOff + k] !== buf[bOff + k]) return 0;
  }
  // TCP headers equal but for seq, flags and checksum.
  for (let k = 0; k < h - ipHl; k++) {
    if ((k >= 4 && k <= 7) || k === 13 || k === 16 || k === 17) continue;
    if (buf[ta + k] !== buf[tb + k]) return 0;
  }
  const payA = aLen - h;
  const payB = bLen - h;
  if (payA === 0 || payB === 0) return 0;
  if (seqOf(buf, tb) !== ((seqOf(buf, ta) + payA) >>> 0)) return 0;
  const typeA = vnet[va + V_GSO_TYPE]! & ~GSO_ECN;
  const typeB = vnet[vb + V_GSO_TYPE]! & ~GSO_ECN;
  const mss = typeA !== GSO_NONE ? vnet[va + V_GSO_SIZE]! | (vnet[va + V_GSO_SIZE + 1]! << 8) : payA;
  if (mss === 0 || payA % mss !== 0) return 0;
  const mssB = typeB !== GSO_NONE ? vnet[vb + V_GSO_SIZE]! | (vnet[vb + V_GSO_SIZE + 1]! << 8) : payB;
  if (mssB > mss || (typeB !== GSO_NONE && mssB !== mss)) return 0;
  const len = aLen + payB;
  if (len > 65535 || len > aCap) return 0;

  buf.copyWithin(aOff + aLen, bOff + h, bOff + bLen);
  buf[ta + 13] = fa | (fb & (TCP_FIN | TCP_PSH));
  const tcpLen = len - ipHl;
  let pseudo: number;
  if (v4) {
    buf[aOff + 2] = len >>> 8;
    buf[aOff + 3] = len & 0xff;
    const hc = ipv4HeaderChecksum(buf, aOff, ipHl);
    buf[aOff + 10] = hc >>> 8;
    buf[aOff + 11] = hc & 0xff;
    pseudo = pseudoSum4(buf, aOff + 12, aOff + 16, 6, tcpLen);
  } else {
    buf[aOff + 4] = tcpLen >>> 8;
    buf[aOff + 5] = tcpLen & 0xff;
    pseudo = pseudoSum6(buf, aOff + 8, aOff + 24, 6, tcpLen);
  }
  buf[ta + 16] = pseudo >>> 8;
  buf[ta + 17] = pseudo & 0xff;
  const ecn = (vnet[va + V_GSO_TYPE]! | vnet[vb + V_GSO_TYPE]!) & GSO_ECN;
  vnet[va + V_GSO_TYPE] = (v4 ? GSO_TCPV4 : GSO_TCPV6) | ecn;
  vnet[va + V_HDR_LEN] = h & 0xff;
  vnet[va + V_HDR_LEN + 1] = h >>> 8;
  vnet[va + V_GSO_SIZE] = mss & 0xff;
  vnet[va + V_GSO_SIZE + 1] = mss >>> 8;
  return len;
}
