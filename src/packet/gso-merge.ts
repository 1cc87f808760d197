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
import { read16 } from './checksum';
import { setTcpLengths, tcpGsoHeaders } from './tcp-gso';
import { VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_SIZE, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_TYPE, VNET_HDR_LEN_FIELD } from './vnet';
import { TCP_CWR, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG } from './tcp-flags';

function seqOf(buf: Uint8Array, tcp: number): number {
  return ((read16(buf, tcp + 4) << 16) | read16(buf, tcp + 6)) >>> 0;
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
  const h = tcpGsoHeaders(buf, aOff, aLen, vnet, va);
  if (h === 0 || tcpGsoHeaders(buf, bOff, bLen, vnet, vb) !== h) return 0;
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
  const typeA = vnet[va + VNET_GSO_TYPE]! & ~VNET_GSO_ECN;
  const typeB = vnet[vb + VNET_GSO_TYPE]! & ~VNET_GSO_ECN;
  const mss = typeA !== VNET_GSO_NONE ? vnet[va + VNET_GSO_SIZE]! | (vnet[va + VNET_GSO_SIZE + 1]! << 8) : payA;
  if (mss === 0 || payA % mss !== 0) return 0;
  const mssB = typeB !== VNET_GSO_NONE ? vnet[vb + VNET_GSO_SIZE]! | (vnet[vb + VNET_GSO_SIZE + 1]! << 8) : payB;
  if (mssB > mss || (typeB !== VNET_GSO_NONE && mssB !== mss)) return 0;
  const len = aLen + payB;
  if (len > 65535 || len > aCap) return 0;

  buf.copyWithin(aOff + aLen, bOff + h, bOff + bLen);
  buf[ta + 13] = fa | (fb & (TCP_FIN | TCP_PSH));
  setTcpLengths(buf, aOff, ipHl, len);
  const ecn = (vnet[va + VNET_GSO_TYPE]! | vnet[vb + VNET_GSO_TYPE]!) & VNET_GSO_ECN;
  vnet[va + VNET_GSO_TYPE] = (v4 ? VNET_GSO_TCPV4 : VNET_GSO_TCPV6) | ecn;
  vnet[va + VNET_HDR_LEN_FIELD] = h & 0xff;
  vnet[va + VNET_HDR_LEN_FIELD + 1] = h >>> 8;
  vnet[va + VNET_GSO_SIZE] = mss & 0xff;
  vnet[va + VNET_GSO_SIZE + 1] = mss >>> 8;
  return len;
}
