/**
 * A TCP reset written in place of the segment it answers (the forwarder's "Backend down": a
 * client's packet to a flow whose backend is down becomes a reset to that client, as if from
 * VIP:port). Pure over `(buf, off)` and the segment's PacketInfo; no allocation.
 *
 * RFC 9293 3.10.7.1 (reset generation for a segment that does not belong to a connection):
 *   segment with ACK    → <SEQ=SEG.ACK><CTL=RST>
 *   segment without ACK → <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>  (SYN and FIN count in SEG.LEN)
 * The reset: a fresh IPv4 header (20 bytes, DF, TTL 64, id 0) or IPv6 header (hop limit 64,
 * flow label 0), source = the segment's destination, destination = its source, then a
 * 20-byte TCP header (no options, window 0), full checksums (RFC 1071, RFC 9293 3.1 pseudo
 * header). It is never longer than the segment it replaces (IPv4 ≥ 40 bytes, IPv6 ≥ 60).
 * The caller decides whether a reset is due (never for a reset, a fragment, an ICMP error) and
 * handles the packet's virtio header (a reset has full checksums: zero it).
 */
import type { PacketInfo } from './packet-info';
import { internetChecksum, l4Checksum } from './checksum';
import { IPPROTO_TCP } from './parse';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from './tcp-flags';

/** Bytes of scratch writeTcpRst needs (both addresses, 16 bytes each). */
export const RST_SCRATCH_LEN = 32;

/**
 * Rewrites the TCP segment at buf[off..] (parsed into `info`) into the reset that answers it.
 * `scratch`: RST_SCRATCH_LEN bytes, caller-owned. Returns the reset's length in bytes.
 */
export function writeTcpRst(buf: Uint8Array, off: number, info: PacketInfo, scratch: Uint8Array): number {
  const l4 = info.l4Off;
  const flags = info.tcpFlags;
  const seq = ((buf[l4 + 4]! << 24) | (buf[l4 + 5]! << 16) | (buf[l4 + 6]! << 8) | buf[l4 + 7]!) >>> 0;
  const ackNo = ((buf[l4 + 8]! << 24) | (buf[l4 + 9]! << 16) | (buf[l4 + 10]! << 8) | buf[l4 + 11]!) >>> 0;
  let segLen = info.l4Len - (buf[l4 + 12]! >>> 4) * 4;
  if ((flags & TCP_SYN) !== 0) segLen++;
  if ((flags & TCP_FIN) !== 0) segLen++;
  const cport = info.sport;
  const vport = info.dport;
  const alen = info.addrLen;
  const sc = scratch;
  for (let i = 0; i < alen; i++) {
    sc[i] = buf[info.srcOff + i]!;
    sc[16 + i] = buf[info.dstOff + i]!;
  }
  let t: number;
  let srcOff: number;
  if (info.version === 4) {
    t = off + 20;
    buf[off] = 0x45;
    buf[off + 1] = 0;
    buf[off + 2] = 0;
    buf[off + 3] = 40;
    buf[off + 4] = 0;
    buf[off + 5] = 0;
    buf[off + 6] = 0x40; // DF
    buf[off + 7] = 0;
    buf[off + 8] = 64;
    buf[off + 9] = IPPROTO_TCP;
    buf[off + 10] = 0;
    buf[off + 11] = 0;
    srcOff = off + 12;
  } else {
    t = off + 40;
    buf[off] = 0x60;
    buf[off + 1] = 0;
    buf[off + 2] = 0;
    buf[off + 3] = 0;
    buf[off + 4] = 0;
    buf[off + 5] = 20;
    buf[off + 6] = IPPROTO_TCP;
    buf[off + 7] = 64;
    srcOff = off + 8;
  }
  const dstOff = srcOff + alen;
  for (let i = 0; i < alen; i++) {
    buf[srcOff + i] = sc[16 + i]!; // from the VIP
    buf[dstOff + i] = sc[i]!; // to the client
  }
  if (info.version === 4) {
    const c = internetChecksum(buf, off, 20);
    buf[off + 10] = c >>> 8;
    buf[off + 11] = c & 0xff;
  }
  let rseq = 0;
  let rack = 0;
  let rflags = TCP_RST;
  if ((flags & TCP_ACK) !== 0) rseq = ackNo;
  else {
    rack = (seq + segLen) >>> 0;
    rflags = TCP_RST | TCP_ACK;
  }
  buf[t] = vport >>> 8;
  buf[t + 1] = vport & 0xff;
  buf[t + 2] = cport >>> 8;
  buf[t + 3] = cport & 0xff;
  buf[t + 4] = rseq >>> 24;
  buf[t + 5] = (rseq >>> 16) & 0xff;
  buf[t + 6] = (rseq >>> 8) & 0xff;
  buf[t + 7] = rseq & 0xff;
  buf[t + 8] = rack >>> 24;
  buf[t + 9] = (rack >>> 16) & 0xff;
  buf[t + 10] = (rack >>> 8) & 0xff;
  buf[t + 11] = rack & 0xff;
  buf[t + 12] = 5 << 4;
  buf[t + 13] = rflags;
  for (let i = 14; i < 20; i++) buf[t + i] = 0; // window 0, checksum, urgent pointer
  const c = l4Checksum(buf, srcOff, dstOff, alen, IPPROTO_TCP, t, 20, t + 16, true);
  buf[t + 16] = c >>> 8;
  buf[t + 17] = c & 0xff;
  return t + 20 - off;
}
