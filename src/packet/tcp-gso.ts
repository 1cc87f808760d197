/**
 * What splitting (gso-split.ts) and merging (gso-merge.ts) TCP GSO packets share: which packets
 * qualify, and setting a packet's lengths and checksums after its payload length changed.
 * Pure functions over (buffer, offset); no allocation.
 */
import { ipv4HeaderChecksum, pseudoSum4, pseudoSum6, write16 } from './checksum';
import { VNET_F_NEEDS_CSUM, VNET_FLAGS, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_TYPE } from './vnet';

/**
 * IP + TCP header length of the packet buf[off .. off+len) with virtio header vnet[vo], or 0
 * when it is not one to split or merge: it must carry a partial checksum (NEEDS_CSUM), be TCP
 * over IPv4 (not a fragment) or over IPv6 without extension headers, and have a gso_type of
 * NONE (one segment) or the TCP type of its IP version.
 */
export function tcpGsoHeaders(buf: Uint8Array, off: number, len: number, vnet: Uint8Array, vo: number): number {
  if ((vnet[vo + VNET_FLAGS]! & VNET_F_NEEDS_CSUM) === 0 || len < 40) return 0;
  const type = vnet[vo + VNET_GSO_TYPE]! & ~VNET_GSO_ECN;
  const version = buf[off]! >>> 4;
  let ipHl: number;
  if (version === 4) {
    if (type !== VNET_GSO_NONE && type !== VNET_GSO_TCPV4) return 0;
    ipHl = (buf[off]! & 0x0f) * 4;
    if (ipHl < 20 || buf[off + 9] !== 6) return 0;
    if ((((buf[off + 6]! << 8) | buf[off + 7]!) & 0x3fff) !== 0) return 0; // a fragment
  } else if (version === 6) {
    if (type !== VNET_GSO_NONE && type !== VNET_GSO_TCPV6) return 0;
    ipHl = 40;
    if (buf[off + 6] !== 6) return 0; // extension headers
  } else {
    return 0;
  }
  if (ipHl + 20 > len) return 0;
  const thl = (buf[off + ipHl + 12]! >>> 4) * 4;
  if (thl < 20 || ipHl + thl > len) return 0;
  return ipHl + thl;
}

/**
 * Sets the lengths of the TCP packet at buf[ip] (IP header `ipHl` bytes) to `total` bytes:
 * IPv4 total length and header checksum (write any other IPv4 header change first), or IPv6
 * payload length; and its TCP checksum field to the partial form NEEDS_CSUM wants: the folded
 * pseudo-header sum of the TCP length, not complemented (RFC 9293 3.1).
 */
export function setTcpLengths(buf: Uint8Array, ip: number, ipHl: number, total: number): void {
  const tcpLen = total - ipHl;
  let pseudo: number;
  if (buf[ip]! >>> 4 === 4) {
    write16(buf, ip + 2, total);
    write16(buf, ip + 10, ipv4HeaderChecksum(buf, ip, ipHl));
    pseudo = pseudoSum4(buf, ip + 12, ip + 16, 6, tcpLen);
  } else {
    write16(buf, ip + 4, tcpLen);
    pseudo = pseudoSum6(buf, ip + 8, ip + 24, 6, tcpLen);
  }
  write16(buf, ip + ipHl + 16, pseudo);
}
