/**
 * NAT rewrites with incremental checksum updates (RFC 1624), IPv4 and IPv6, in place.
 *
 *   rewriteDst: client -> balancer -> backend. VIP:port becomes backend:port.
 *   rewriteSrc: backend -> balancer -> client. backend:port becomes VIP:port.
 *
 * Contract:
 * - `info` is the result of parsePacket(buf, off, len, info) === OK for these very bytes, and
 *   `off === info.l3Off`; the packet is modified in place, its length never changes.
 * - `addr` holds the new address at `addrOff`: info.addrLen (4 or 16) bytes of the SAME family
 *   as the packet (no v4<->v6 translation). `port` is the new port (0..65535), or KEEP_PORT.
 *   For ICMP/ICMPv6 echo the "port" is the identifier: when `port` equals the current
 *   identifier (the usual case: the key used the identifier as both ports) nothing changes.
 * - Checksums: the IPv4 header checksum is always complete and updated. The L4 checksum
 *   (info.csumOff) is updated per `csumMode`:
 *     CSUM_FULL: a complete checksum; every covered change is applied (RFC 1624 eqn. 3).
 *       IPv4 UDP with checksum 0 ("no checksum", RFC 768) stays 0; so does an IPv6 UDP zero
 *       checksum (only legal for tunnels, RFC 6935; left as the sender made it). A UDP
 *       checksum that computes to 0 is sent as 0xffff (RFC 768).
 *     CSUM_PARTIAL: virtio-net NEEDS_CSUM / Linux CHECKSUM_PARTIAL: the field holds the folded,
 *       NON-complemented pseudo-header sum. Address changes are added to it as a plain
 *       one's-complement sum; port/identifier changes do not touch it (those bytes are summed
 *       when the checksum is completed). ICMPv4 has no pseudo-header, so nothing changes it.
 *   Checksums are never verified here: a wrong checksum stays exactly as wrong, so the end
 *   host still detects the corruption (the point of incremental update).
 * - Non-first fragments: addresses (and the IPv4 header checksum) only; no L4 header there.
 *   First fragments: L4 as usual (the checksum covers the whole datagram, but an incremental
 *   update only needs the changed words).
 * - Returns a PacketResult code; never throws, never allocates.
 *
 * ICMP errors (info.isIcmpError === 1, keyed by the embedded packet reversed):
 *   This mirrors Linux nf_nat_icmp_reply_translation() (net/netfilter/nf_nat_proto.c), which
 *   first rewrites the EMBEDDED packet with the inverse manipulation (`!manip`, against the
 *   other direction's tuple), then fixes the ICMP checksum, then rewrites the outer header
 *   (`nf_ct_invert_tuple` of that tuple, i.e. as a reply of the embedded packet):
 *   - rewriteDst (error from the client side about a reply VIP:vport -> client):
 *       outer dst := addr (the error was sent to the VIP); embedded SRC := addr:port.
 *   - rewriteSrc (error from the server side about a forwarded packet client -> backend):
 *       outer src := addr (like Linux, whoever sent it: a router behind the balancer shows up
 *       as the VIP, keeping backend-side addresses private); embedded DST := addr:port.
 *   Checksums: the embedded IPv4 header checksum, the embedded L4 checksum when it lies inside
 *   the quoted bytes (UDP/ICMP always within RFC 792's 8 bytes, TCP only with >= 18 bytes;
 *   Linux's tcp_manip_pkt skips it when truncated, we update it when present), and the ICMP
 *   checksum, which covers the embedded bytes (and for ICMPv6 the outer pseudo-header,
 *   RFC 4443 §2.3). Linux recomputes the ICMP checksum over the whole message; here it is
 *   updated incrementally from the same changed words, which gives the same result for a
 *   valid packet and keeps an invalid one invalid. In CSUM_PARTIAL mode only the ICMPv6
 *   pseudo-header change is applied to the ICMP field (the body is summed on completion).
 */
import * as checksum from './checksum';
import type { PacketInfo } from './packet-info';
import { PacketResult } from './result';
import * as ipProto from './parse';

// Imports are snapshotted into module-level consts: under tsx/esbuild (tests, benches, dev runs)
// every use of an imported binding is a getter call on the module object, which V8 does not
// inline and which cost several times the hot path itself (measured, bench/packet-hot-path).
const { csumAdd, csumAddrDelta, csumApplyDelta, csumFold, csumUpdate16 } = checksum;
const R = PacketResult;
const IPPROTO_ICMP = ipProto.IPPROTO_ICMP;
const IPPROTO_ICMPV6 = ipProto.IPPROTO_ICMPV6;

/** Checksum modes (see src/packet/checksum.ts); re-exported for callers of the rewrites. */
export const CSUM_FULL = checksum.CSUM_FULL;
export const CSUM_PARTIAL = checksum.CSUM_PARTIAL;

/** Pass as `port` to leave the port (echo identifier) unchanged. */
export const KEEP_PORT = -1;

/** Client -> backend: destination becomes addr:port. See the file header. */
export function rewriteDst(
  buf: Uint8Array,
  off: number,
  info: PacketInfo,
  addr: Uint8Array,
  addrOff: number,
  port: number,
  csumMode: number,
): number {
  const r = checkArgs(off, info, addr, addrOff, port, csumMode);
  if (r !== R.OK) return r;
  if (info.isIcmpError !== 0) return rewriteIcmpError(buf, info, addr, addrOff, port, csumMode, 1);
  return rewriteOne(buf, info, info.dstOff, 2, addr, addrOff, port, csumMode);
}

/** Backend -> client: source becomes addr:port. See the file header. */
export function rewriteSrc(
  buf: Uint8Array,
  off: number,
  info: PacketInfo,
  addr: Uint8Array,
  addrOff: number,
  port: number,
  csumMode: number,
): number {
  const r = checkArgs(off, info, addr, addrOff, port, csumMode);
  if (r !== R.OK) return r;
  if (info.isIcmpError !== 0) return rewriteIcmpError(buf, info, addr, addrOff, port, csumMode, 0);
  return rewriteOne(buf, info, info.srcOff, 0, addr, addrOff, port, csumMode);
}

function checkArgs(off: number, info: PacketInfo, addr: Uint8Array, addrOff: number, port: number, mode: number): number {
  if (off !== info.l3Off || addrOff < 0 || addrOff + info.addrLen > addr.length || port > 0xffff) {
    return R.NAT_BAD_ARGUMENT;
  }
  if (mode !== CSUM_FULL && mode !== CSUM_PARTIAL) return R.NAT_UNSUPPORTED;
  return R.OK;
}

function copyAddr(buf: Uint8Array, dstOff: number, addr: Uint8Array, addrOff: number, len: number): void {
  buf[dstOff] = addr[addrOff] as number;
  buf[dstOff + 1] = addr[addrOff + 1] as number;
  buf[dstOff + 2] = addr[addrOff + 2] as number;
  buf[dstOff + 3] = addr[addrOff + 3] as number;
  for (let i = 4; i < len; i++) buf[dstOff + i] = addr[addrOff + i] as number;
}

function isEchoType(version: number, type: number): boolean {
  return version === 4 ? type === 8 || type === 0 : type === 128 || type === 129;
}

/**
 * Rewrites one address (at `fieldOff`) and the port at l4Off + `portRel` (0 source, 2
 * destination; echo: the identifier at l4Off + 4), updating checksums.
 */
function rewriteOne(
  buf: Uint8Array,
  info: PacketInfo,
  fieldOff: number,
  portRel: number,
  addr: Uint8Array,
  addrOff: number,
  port: number,
  mode: number,
): number {
  const alen = info.addrLen;
  const delta = csumAddrDelta(buf, fieldOff, addr, addrOff, alen);
  if (info.version === 4) {
    // RFC 791 header checksum: covers the addresses; never offloaded.
    const h = info.l3Off + 10;
    const v = csumApplyDelta(((buf[h] as number) << 8) | (buf[h + 1] as number), delta);
    buf[h] = v >>> 8;
    buf[h + 1] = v;
  }
  const co = info.csumOff;
  if (co >= 0) {
    const p = info.proto;
    const partial = mode === CSUM_PARTIAL;
    let c = ((buf[co] as number) << 8) | (buf[co + 1] as number);
    let portOff = -1;
    if (p === 6 || p === 17) portOff = info.l4Off + portRel;
    else if (isEchoType(info.version, info.icmpType)) portOff = info.l4Off + 4;
    const noCsum = p === 17 && c === 0 && !partial;
    if (!noCsum && p !== 1) {
      // Pseudo-header (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1 for ICMPv6) holds the addresses.
      c = partial ? csumAdd(c, delta) : csumApplyDelta(c, delta);
    }
    if (portOff >= 0 && port >= 0) {
      const old = ((buf[portOff] as number) << 8) | (buf[portOff + 1] as number);
      if (old !== port) {
        if (!noCsum && !partial) c = csumUpdate16(c, old, port);
        buf[portOff] = port >>> 8;
        buf[portOff + 1] = port;
      }
    }
    if (!noCsum) {
      if (p === 17 && c === 0 && !partial) c = 0xffff; // RFC 768: computed 0 is sent as all ones
      buf[co] = c >>> 8;
      buf[co + 1] = c;
    }
  }
  copyAddr(buf, fieldOff, addr, addrOff, alen);
  return R.OK;
}

/**
 * ICMP error translation (see the file header). `toBackend` 1: rewriteDst (outer dst, embedded
 * src and source port); 0: rewriteSrc (outer src, embedded dst and destination port).
 */
function rewriteIcmpError(
  buf: Uint8Array,
  info: PacketInfo,
  addr: Uint8Array,
  addrOff: number,
  port: number,
  mode: number,
  toBackend: number,
): number {
  const alen = info.addrLen;
  const v4 = info.version === 4;
  // `body`: sum of (~old + new) over every 16-bit word changed inside the ICMP message. All
  // embedded fields sit at even distances from the ICMP header (8 + IHL*4, 40 + 8k), so they
  // are words of the ICMP checksum too.
  let body = 0;
  const innerAddr = toBackend !== 0 ? info.innerSrcOff : info.innerDstOff;
  const dIn = csumAddrDelta(buf, innerAddr, addr, addrOff, alen);
  body += dIn;
  if (v4) {
    const ih = info.innerL3Off + 10;
    const o = ((buf[ih] as number) << 8) | (buf[ih + 1] as number);
    const n = csumApplyDelta(o, dIn);
    buf[ih] = n >>> 8;
    buf[ih + 1] = n;
    body += (~o & 0xffff) + n;
  }
  if (info.innerHasPorts !== 0) {
    const ip = info.innerProto;
    const echo = ip === IPPROTO_ICMP || ip === IPPROTO_ICMPV6;
    const portOff = echo ? info.innerL4Off + 4 : info.innerL4Off + (toBackend !== 0 ? 0 : 2);
    const oldPort = ((buf[portOff] as number) << 8) | (buf[portOff + 1] as number);
    const newPort = port < 0 ? oldPort : port;
    const ico = info.innerCsumOff;
    if (ico >= 0) {
      // The embedded packet was a complete packet on the wire: its checksum is always FULL.
      const o = ((buf[ico] as number) << 8) | (buf[ico + 1] as number);
      if (!(ip === 17 && o === 0)) {
        let n = o;
        if (ip !== 1) n = csumApplyDelta(n, dIn);
        if (oldPort !== newPort) n = csumUpdate16(n, oldPort, newPort);
        if (ip === 17 && n === 0) n = 0xffff;
        buf[ico] = n >>> 8;
        buf[ico + 1] = n;
        body += (~o & 0xffff) + n;
      }
    }
    if (oldPort !== newPort) {
      buf[portOff] = newPort >>> 8;
      buf[portOff + 1] = newPort;
      body += (~oldPort & 0xffff) + newPort;
    }
  }
  copyAddr(buf, innerAddr, addr, addrOff, alen);

  const outerAddr = toBackend !== 0 ? info.dstOff : info.srcOff;
  const dOut = csumAddrDelta(buf, outerAddr, addr, addrOff, alen);
  if (v4) {
    const h = info.l3Off + 10;
    const v = csumApplyDelta(((buf[h] as number) << 8) | (buf[h + 1] as number), dOut);
    buf[h] = v >>> 8;
    buf[h + 1] = v;
  }
  const co = info.csumOff;
  let c = ((buf[co] as number) << 8) | (buf[co + 1] as number);
  if (mode === CSUM_PARTIAL) {
    if (!v4) c = csumAdd(c, dOut);
  } else {
    c = csumApplyDelta(c, csumFold(v4 ? body : body + dOut));
  }
  buf[co] = c >>> 8;
  buf[co + 1] = c;
  copyAddr(buf, outerAddr, addr, addrOff, alen);
  return R.OK;
}
