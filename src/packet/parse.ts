/**
 * parsePacket: validates one IP packet and fills a reusable PacketInfo, including its flow key.
 *
 * Contract:
 * - Input: `len` bytes at `off` in `buf`, starting with the IPv4 or IPv6 header (as read from
 *   a TUN device without packet information, or the inner packet of an encapsulation).
 * - Output: a PacketResult code. OK: every field of `info` describes this packet (offsets are
 *   absolute in `buf`). Any other code is a drop reason and `info` is unspecified.
 * - Hot path: no allocation, no closures, never throws (malformed input is a result code).
 *   Checksums are NOT verified here (the receiving host does that; a balancer forwards and
 *   keeps any error detectable by updating checksums incrementally, RFC 1624).
 *
 * Keys (docs/contracts.md):
 * - TCP/UDP: the 5-tuple. ICMP/ICMPv6 echo (RFC 792 types 8/0, RFC 4443 types 128/129): the
 *   identifier as both ports, so a request and its reply are one flow in both directions.
 * - ICMP errors (v4 types 3 incl. code 4 "fragmentation needed", 11, 12 — RFC 792/1191; v6
 *   types 1, 2 "packet too big", 3, 4 — RFC 4443): keyed by the embedded packet's key REVERSED.
 *   The embedded packet was sent by the other side of the flow (e.g. a reply from the VIP that a
 *   client-side router could not forward), so swapping its src/dst and ports gives the key of
 *   the packets flowing in this error's direction, and the error reaches the same backend
 *   (path-MTU discovery). The embedded copy may be truncated: RFC 792 guarantees the IP header
 *   plus 8 bytes, which holds the ports; nothing more is required here.
 * - Fragments (IPv4 MF or offset > 0; IPv6 fragment header other than an atomic fragment,
 *   RFC 6946): the 3-tuple (src, dst, protocol) with both ports 0, for every fragment including
 *   the first, so all fragments of one datagram take the same backend (Maglev's rule).
 *   Non-first fragments have no L4 parsing. The first fragment's L4 header is parsed (ports,
 *   flags, checksum offset for NAT) and must be complete (RFC 1858 tiny fragments are dropped).
 *   For IPv6 the key's protocol is the fragment header's Next Header, the only value every
 *   fragment carries. A fragmented ICMP message is keyed as a fragment, never as an error.
 */
import * as flowKey from './flow-key';
import type { PacketInfo } from './packet-info';
import { PacketResult } from './result';

// Imports are snapshotted into module-level consts: under tsx/esbuild (tests, benches, dev runs)
// every use of an imported binding is a getter call on the module object, which V8 does not
// inline and which cost several times the hot path itself (measured, bench/packet-hot-path).
const { writeKey4, writeKey6 } = flowKey;
const R = PacketResult;

/** At most this many IPv6 extension headers are walked (outer and embedded chains). */
export const MAX_IPV6_EXT_HEADERS = 8;

export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_AH = 51;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_DSTOPTS = 60;

// Scratch results of walkIpv6 (module state instead of an allocated result; single-threaded).
let wProto = 0;
let wOff = 0;
let wIsFrag = 0;
let wFragOff = 0;
let wMf = 0;
let wFragId = 0;
let wFragNh = 0;

/**
 * Walks the IPv6 extension header chain (RFC 8200 §4) starting at `off` with Next Header `nh`,
 * never reading at or past `end`. On OK: wProto/wOff are the upper-layer protocol and its
 * offset (for non-first fragments: the fragment header's Next Header and the fragment payload).
 * Walked: hop-by-hop (0, only first, §4.3), routing (43), destination options (60), fragment
 * (44, §4.5, fixed 8 bytes, at most one), AH (51, RFC 4302: length in 4-byte units minus 2).
 * Anything else ends the chain (upper layer, ESP 50, No Next Header 59).
 */
function walkIpv6(buf: Uint8Array, off: number, end: number, nh: number): number {
  wIsFrag = 0;
  wFragOff = 0;
  wMf = 0;
  wFragId = 0;
  wFragNh = 0;
  let count = 0;
  let sawFrag = 0;
  for (;;) {
    if (nh === IPPROTO_HOPOPTS || nh === IPPROTO_ROUTING || nh === IPPROTO_DSTOPTS || nh === IPPROTO_AH) {
      if (nh === IPPROTO_HOPOPTS && count !== 0) return R.IPV6_BAD_EXT;
      if (count >= MAX_IPV6_EXT_HEADERS) return R.IPV6_EXT_CHAIN_TOO_LONG;
      if (off + 2 > end) return R.TRUNCATED;
      const hlen = nh === IPPROTO_AH ? ((buf[off + 1] as number) + 2) << 2 : ((buf[off + 1] as number) + 1) << 3;
      if (off + hlen > end) return R.TRUNCATED;
      nh = buf[off] as number;
      off += hlen;
      count++;
      continue;
    }
    if (nh === IPPROTO_FRAGMENT) {
      if (sawFrag !== 0) return R.IPV6_BAD_EXT;
      if (count >= MAX_IPV6_EXT_HEADERS) return R.IPV6_EXT_CHAIN_TOO_LONG;
      if (off + 8 > end) return R.TRUNCATED;
      sawFrag = 1;
      const fo = ((buf[off + 2] as number) << 8) | (buf[off + 3] as number);
      const fragOff = fo & 0xfff8; // 13-bit offset in 8-byte units, already * 8
      const mf = fo & 1;
      nh = buf[off] as number;
      const id =
        (((buf[off + 4] as number) << 24) |
          ((buf[off + 5] as number) << 16) |
          ((buf[off + 6] as number) << 8) |
          (buf[off + 7] as number)) >>>
        0;
      off += 8;
      count++;
      // RFC 6946: an atomic fragment (offset 0, M 0) is processed as a non-fragmented packet.
      if (fragOff === 0 && mf === 0) continue;
      wIsFrag = 1;
      wFragOff = fragOff;
      wMf = mf;
      wFragId = id;
      wFragNh = nh;
      if (fragOff !== 0) {
        wProto = nh;
        wOff = off;
        return R.OK;
      }
      continue;
    }
    wProto = nh;
    wOff = off;
    return R.OK;
  }
}

function resetInner(info: PacketInfo): void {
  info.innerL3Off = -1;
  info.innerL4Off = -1;
  info.innerProto = 0;
  info.innerSrcOff = -1;
  info.innerDstOff = -1;
  info.innerSport = 0;
  info.innerDport = 0;
  info.innerHasPorts = 0;
  info.innerIsFragment = 0;
  info.innerL4Avail = 0;
  info.innerCsumOff = -1;
}

/** Parses the IP packet of `len` bytes at `off` into `info`. See the file header. */
export function parsePacket(buf: Uint8Array, off: number, len: number, info: PacketInfo): number {
  if (off < 0 || len < 1 || off + len > buf.length) return R.TRUNCATED;
  if (info.innerL3Off !== -1) resetInner(info);
  info.sport = 0;
  info.dport = 0;
  info.tcpFlags = 0;
  info.tcpSegLen = -1;
  info.isFragment = 0;
  info.isFirstFragment = 0;
  info.fragOffset = 0;
  info.moreFragments = 0;
  info.fragId = 0;
  info.icmpType = 0;
  info.icmpCode = 0;
  info.isIcmpError = 0;
  info.csumOff = -1;
  info.l3Off = off;
  const v = (buf[off] as number) >>> 4;
  info.version = v;
  if (v === 4) return parse4(buf, off, len, info);
  if (v === 6) return parse6(buf, off, len, info);
  return R.BAD_VERSION;
}

/** IPv4 (RFC 791 §3.1). Options are skipped, not interpreted. */
function parse4(buf: Uint8Array, off: number, len: number, info: PacketInfo): number {
  if (len < 20) return R.TRUNCATED;
  const ihl = (buf[off] as number) & 0x0f;
  if (ihl < 5) return R.BAD_IHL;
  const hl = ihl << 2;
  if (hl > len) return R.TRUNCATED;
  const tot = ((buf[off + 2] as number) << 8) | (buf[off + 3] as number);
  // Bytes past the total length (link padding) are ignored; fewer bytes than it is an error.
  if (tot < hl || tot > len) return R.BAD_TOTAL_LENGTH;
  const fo = ((buf[off + 6] as number) << 8) | (buf[off + 7] as number);
  const proto = buf[off + 9] as number;
  info.l3Len = tot;
  info.l4Off = off + hl;
  info.l4Len = tot - hl;
  info.proto = proto;
  info.srcOff = off + 12;
  info.dstOff = off + 16;
  info.addrLen = 4;
  const fragOff = (fo & 0x1fff) << 3;
  const mf = (fo >>> 13) & 1;
  if (fragOff === 0 && mf === 0) return parseL4(buf, info, 4, 0);
  if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP && proto !== IPPROTO_ICMP) return R.UNSUPPORTED_PROTOCOL;
  info.isFragment = 1;
  info.fragOffset = fragOff;
  info.moreFragments = mf;
  info.fragId = ((buf[off + 4] as number) << 8) | (buf[off + 5] as number);
  writeKey4(info.key, buf, off + 12, off + 16, 0, 0, proto);
  if (fragOff !== 0) return R.OK;
  info.isFirstFragment = 1;
  return parseL4(buf, info, 4, 1);
}

/** IPv6 (RFC 8200 §3) and its extension header chain. */
function parse6(buf: Uint8Array, off: number, len: number, info: PacketInfo): number {
  if (len < 40) return R.TRUNCATED;
  const plen = ((buf[off + 4] as number) << 8) | (buf[off + 5] as number);
  // Payload length 0 with a hop-by-hop jumbo option (RFC 2675) is not supported: the chain
  // walk then fails as truncated.
  if (40 + plen > len) return R.BAD_TOTAL_LENGTH;
  const end = off + 40 + plen;
  info.l3Len = 40 + plen;
  info.srcOff = off + 8;
  info.dstOff = off + 24;
  info.addrLen = 16;
  const r = walkIpv6(buf, off + 40, end, buf[off + 6] as number);
  if (r !== R.OK) return r;
  const proto = wProto;
  info.proto = proto;
  info.l4Off = wOff;
  info.l4Len = end - wOff;
  if (wIsFrag === 0) return parseL4(buf, info, 6, 0);
  const keyProto = wFragNh;
  // Non-first fragments: proto is the fragment header's Next Header. First fragments: the
  // chain was walked to the upper layer. Both must be a protocol we balance, so that every
  // fragment of a datagram gets the same verdict (a header after the fragment header, which
  // only the first fragment shows, makes the whole datagram unsupported).
  if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP && proto !== IPPROTO_ICMPV6) return R.UNSUPPORTED_PROTOCOL;
  if (keyProto !== proto) return R.UNSUPPORTED_PROTOCOL;
  info.isFragment = 1;
  info.fragOffset = wFragOff;
  info.moreFragments = wMf;
  info.fragId = wFragId;
  writeKey6(info.key, buf, off + 8, off + 24, 0, 0, keyProto);
  if (wFragOff !== 0) return R.OK;
  info.isFirstFragment = 1;
  return parseL4(buf, info, 6, 1);
}

/**
 * Parses the upper-layer header at info.l4Off (info.l4Len bytes) and, unless `frag` (the key
 * was already written with ports 0), writes the key.
 */
function parseL4(buf: Uint8Array, info: PacketInfo, v: number, frag: number): number {
  const l4 = info.l4Off;
  const l4len = info.l4Len;
  const p = info.proto;
  if (p === IPPROTO_TCP) {
    // RFC 9293 §3.1: data offset in 32-bit words, at least 5.
    if (l4len < 20) return R.L4_TRUNCATED;
    const doff = (buf[l4 + 12] as number) >>> 4;
    if (doff < 5 || doff << 2 > l4len) return R.BAD_TCP_OFFSET;
    info.sport = ((buf[l4] as number) << 8) | (buf[l4 + 1] as number);
    info.dport = ((buf[l4 + 2] as number) << 8) | (buf[l4 + 3] as number);
    const fl = buf[l4 + 13] as number;
    info.tcpFlags = fl;
    info.tcpSeq = (((buf[l4 + 4] as number) << 24) | ((buf[l4 + 5] as number) << 16) | ((buf[l4 + 6] as number) << 8) | (buf[l4 + 7] as number)) >>> 0;
    info.tcpAck = (((buf[l4 + 8] as number) << 24) | ((buf[l4 + 9] as number) << 16) | ((buf[l4 + 10] as number) << 8) | (buf[l4 + 11] as number)) >>> 0;
    // Sequence space of the segment (RFC 9293 §3.4): its data, plus one each for SYN and FIN.
    // A first fragment holds only part of the segment: no length (-1).
    info.tcpSegLen = frag === 0 ? l4len - (doff << 2) + (fl & 1) + ((fl >>> 1) & 1) : -1;
    info.csumOff = l4 + 16;
  } else if (p === IPPROTO_UDP) {
    // RFC 768: length covers header + data, at least 8. A first fragment's length field is
    // the whole datagram's, so it is not checked against this fragment.
    if (l4len < 8) return R.L4_TRUNCATED;
    if (frag === 0) {
      const ulen = ((buf[l4 + 4] as number) << 8) | (buf[l4 + 5] as number);
      if (ulen < 8 || ulen > l4len) return R.BAD_UDP_LENGTH;
    }
    info.sport = ((buf[l4] as number) << 8) | (buf[l4 + 1] as number);
    info.dport = ((buf[l4 + 2] as number) << 8) | (buf[l4 + 3] as number);
    info.csumOff = l4 + 6;
  } else if ((p === IPPROTO_ICMP && v === 4) || (p === IPPROTO_ICMPV6 && v === 6)) {
    return parseIcmp(buf, info, v, frag);
  } else {
    return R.UNSUPPORTED_PROTOCOL;
  }
  if (frag === 0) {
    if (v === 4) writeKey4(info.key, buf, info.srcOff, info.dstOff, info.sport, info.dport, p);
    else writeKey6(info.key, buf, info.srcOff, info.dstOff, info.sport, info.dport, p);
  }
  return R.OK;
}

/** 1 for the ICMP error types handled (RFC 792 / RFC 4443), else 0. */
function isErrorType(v: number, type: number): number {
  if (v === 4) return type === 3 || type === 11 || type === 12 ? 1 : 0;
  return type >= 1 && type <= 4 ? 1 : 0;
}

/** ICMP (RFC 792) / ICMPv6 (RFC 4443 §2.1): 8-byte header: type, code, checksum, 4 bytes. */
function parseIcmp(buf: Uint8Array, info: PacketInfo, v: number, frag: number): number {
  const l4 = info.l4Off;
  if (info.l4Len < 8) return R.L4_TRUNCATED;
  const type = buf[l4] as number;
  info.icmpType = type;
  info.icmpCode = buf[l4 + 1] as number;
  info.csumOff = l4 + 2;
  const echo = v === 4 ? type === 8 || type === 0 : type === 128 || type === 129;
  if (echo) {
    // Echo: identifier at 4..5, sequence at 6..7; the identifier is both "ports".
    const id = ((buf[l4 + 4] as number) << 8) | (buf[l4 + 5] as number);
    info.sport = id;
    info.dport = id;
    if (frag === 0) {
      if (v === 4) writeKey4(info.key, buf, info.srcOff, info.dstOff, id, id, info.proto);
      else writeKey6(info.key, buf, info.srcOff, info.dstOff, id, id, info.proto);
    }
    return R.OK;
  }
  if (isErrorType(v, type) === 0) return R.ICMP_UNSUPPORTED_TYPE;
  if (frag !== 0) return R.OK; // fragmented error: keyed as a fragment, not translated
  return parseIcmpInner(buf, info, v);
}

/**
 * The packet embedded in an ICMP error, from l4Off + 8 to the end of the ICMP message. It may
 * be truncated anywhere after its L4 ports; its IP header (and IPv6 extension chain) must be
 * complete and of the same IP version as the outer packet.
 */
function parseIcmpInner(buf: Uint8Array, info: PacketInfo, v: number): number {
  const ioff = info.l4Off + 8;
  const end = info.l3Off + info.l3Len;
  info.innerL3Off = ioff; // also marks the inner fields dirty for the next parse's reset
  let innerEnd = end;
  let l4 = 0;
  let proto = 0;
  let keyProto = 0;
  let fragOff = 0;
  let isFrag = 0;
  if (v === 4) {
    if (end - ioff < 20) return R.ICMP_INNER_MALFORMED;
    const b0 = buf[ioff] as number;
    if (b0 >>> 4 !== 4 || (b0 & 0x0f) < 5) return R.ICMP_INNER_MALFORMED;
    const hl = (b0 & 0x0f) << 2;
    if (ioff + hl > end) return R.ICMP_INNER_MALFORMED;
    const tot = ((buf[ioff + 2] as number) << 8) | (buf[ioff + 3] as number);
    if (tot < hl) return R.ICMP_INNER_MALFORMED;
    if (ioff + tot < innerEnd) innerEnd = ioff + tot;
    const fo = ((buf[ioff + 6] as number) << 8) | (buf[ioff + 7] as number);
    fragOff = (fo & 0x1fff) << 3;
    isFrag = fragOff !== 0 || (fo & 0x2000) !== 0 ? 1 : 0;
    proto = buf[ioff + 9] as number;
    keyProto = proto;
    l4 = ioff + hl;
    info.innerSrcOff = ioff + 12;
    info.innerDstOff = ioff + 16;
  } else {
    if (end - ioff < 40) return R.ICMP_INNER_MALFORMED;
    if ((buf[ioff] as number) >>> 4 !== 6) return R.ICMP_INNER_MALFORMED;
    const plen = ((buf[ioff + 4] as number) << 8) | (buf[ioff + 5] as number);
    if (ioff + 40 + plen < innerEnd) innerEnd = ioff + 40 + plen;
    if (walkIpv6(buf, ioff + 40, innerEnd, buf[ioff + 6] as number) !== R.OK) return R.ICMP_INNER_MALFORMED;
    proto = wProto;
    l4 = wOff;
    isFrag = wIsFrag;
    fragOff = wFragOff;
    keyProto = isFrag !== 0 ? wFragNh : proto;
    info.innerSrcOff = ioff + 8;
    info.innerDstOff = ioff + 24;
  }
  const icmpP = v === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
  if (keyProto !== IPPROTO_TCP && keyProto !== IPPROTO_UDP && keyProto !== icmpP) return R.UNSUPPORTED_PROTOCOL;
  const avail = innerEnd - l4;
  info.innerL4Off = l4;
  info.innerProto = proto;
  info.innerIsFragment = isFrag;
  info.innerL4Avail = avail;
  let sp = 0;
  let dp = 0;
  if (fragOff === 0) {
    if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
      if (avail < 4) return R.ICMP_INNER_MALFORMED;
      sp = ((buf[l4] as number) << 8) | (buf[l4 + 1] as number);
      dp = ((buf[l4 + 2] as number) << 8) | (buf[l4 + 3] as number);
      const co = proto === IPPROTO_TCP ? 16 : 6;
      info.innerCsumOff = avail >= co + 2 ? l4 + co : -1;
    } else if (proto === icmpP) {
      // Only echo can be embedded: no ICMP error is sent about an ICMP error (RFC 1122
      // §3.2.2, RFC 4443 §2.4 (e)).
      if (avail < 6) return R.ICMP_INNER_MALFORMED;
      const t = buf[l4] as number;
      const echo = v === 4 ? t === 8 || t === 0 : t === 128 || t === 129;
      if (!echo) return R.ICMP_INNER_MALFORMED;
      sp = ((buf[l4 + 4] as number) << 8) | (buf[l4 + 5] as number);
      dp = sp;
      info.innerCsumOff = l4 + 2;
    } else {
      return R.UNSUPPORTED_PROTOCOL;
    }
    info.innerHasPorts = 1;
    info.innerSport = sp;
    info.innerDport = dp;
  }
  info.isIcmpError = 1;
  // Reversed: the error travels opposite to the embedded packet.
  const kp = isFrag !== 0 ? 0 : 1;
  if (v === 4) writeKey4(info.key, buf, info.innerDstOff, info.innerSrcOff, dp * kp, sp * kp, keyProto);
  else writeKey6(info.key, buf, info.innerDstOff, info.innerSrcOff, dp * kp, sp * kp, keyProto);
  return R.OK;
}
