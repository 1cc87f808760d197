/**
 * Test-only packet builders and checkers (they allocate; never use them on the hot path).
 *
 * Every builder returns a complete IP packet (no link header, as read from a TUN device) with
 * correct checksums computed from scratch (RFC 1071), unless an option says otherwise.
 * Addresses are text ('10.0.0.1', 'fd00::1'); the IP version follows from them.
 *
 *   tcp4/tcp6(src, dst, sport, dport, flags?, payload?, opts?)
 *   udp4/udp6(src, dst, sport, dport, payload?, opts?)          opts.zeroChecksum: send 0
 *   icmp4Echo/icmp6Echo(src, dst, type, id, seq, payload?, opts?)
 *   icmp4Error/icmp6Error(type, code, src, dst, embedded, opts?) quote `embedded` (truncated)
 *   ipv4(src, dst, proto, l4, opts?) / ipv6(src, dst, nextHeader, l4, opts?)  raw L4 bytes
 *   ipv4Fragment / ipv6Fragment(...)  one raw fragment; fragmentPacket(pkt, n) splits a packet
 *   reassemble(frags)                 joins fragments back (for checksum checks after NAT)
 *   validChecksums(pkt) / checksumErrors(pkt)  verify IPv4 header, L4 and, for ICMP errors,
 *                                     the embedded IPv4 header (and embedded L4 if complete)
 *   toPartial(pkt) / completePartial(pkt)  virtio-net NEEDS_CSUM (CHECKSUM_PARTIAL) form
 *
 * IPv6 options take `ext`: extension headers placed between the fixed header and the L4
 * header, in order (RFC 8200 §4.1), e.g. [{ type: 0 }, { type: 60, len: 16 }].
 * The checkers re-derive the layout themselves (they do not call src/packet/parse.ts), so they
 * are an independent oracle for the parser and the NAT code.
 */
import { parseIp } from '../../src/packet/addr';

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMPV6 = 58;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export const ICMP4_ECHO_REPLY = 0;
export const ICMP4_DEST_UNREACH = 3;
export const ICMP4_ECHO_REQUEST = 8;
export const ICMP4_TIME_EXCEEDED = 11;
export const ICMP4_PARAM_PROBLEM = 12;
export const ICMP4_CODE_FRAG_NEEDED = 4;
export const ICMP6_DEST_UNREACH = 1;
export const ICMP6_PACKET_TOO_BIG = 2;
export const ICMP6_TIME_EXCEEDED = 3;
export const ICMP6_PARAM_PROBLEM = 4;
export const ICMP6_ECHO_REQUEST = 128;
export const ICMP6_ECHO_REPLY = 129;

export interface Ip4Opts {
  ttl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** Fragment offset in bytes (multiple of 8). */
  fragOffset?: number;
  /** IPv4 options, padded here to a multiple of 4 bytes. */
  options?: Uint8Array;
  /** Extra bytes after the packet (link padding) not counted in total length. */
  trailer?: number;
}

export interface ExtHeader {
  /** 0 hop-by-hop, 43 routing, 60 destination options, 51 AH, 44 fragment. */
  type: number;
  /** Total header length in bytes (0/43/60: multiple of 8, >= 8; 51: multiple of 4, >= 12). */
  len?: number;
  /** Fragment header fields. */
  fragOffset?: number;
  mf?: boolean;
  id?: number;
}

export interface Ip6Opts {
  hopLimit?: number;
  flowLabel?: number;
  ext?: ExtHeader[];
  trailer?: number;
}

export interface TcpOpts {
  seq?: number;
  ack?: number;
  window?: number;
  /** TCP options, padded here to a multiple of 4 bytes. */
  tcpOptions?: Uint8Array;
}

export interface UdpOpts {
  /** IPv4: send checksum 0 ("no checksum", RFC 768). */
  zeroChecksum?: boolean;
}

export interface IcmpErrorOpts {
  /** Bytes of `embedded` to quote. Default: IPv4 header + 8 (RFC 792); IPv6 as much as fits in 1280 (RFC 4443). */
  embedLen?: number;
  /** Next-hop MTU (ICMPv4 3/4, RFC 1191) or ICMPv6 packet-too-big MTU. */
  mtu?: number;
  /** Parameter-problem pointer. */
  pointer?: number;
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}
function put32(b: Uint8Array, o: number, v: number): void {
  put16(b, o, (v >>> 16) & 0xffff);
  put16(b, o + 2, v & 0xffff);
}
function get16(b: Uint8Array, o: number): number {
  return ((b[o] as number) << 8) | (b[o + 1] as number);
}

/** RFC 1071 sum (folded, not complemented), independent of src/packet/checksum.ts. */
export function sum16(b: Uint8Array, off: number, len: number, init = 0): number {
  let s = init;
  for (let i = 0; i + 1 < len; i += 2) s += get16(b, off + i);
  if (len & 1) s += (b[off + len - 1] as number) << 8;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function pad4(b: Uint8Array | undefined): Uint8Array {
  if (!b || b.length === 0) return new Uint8Array(0);
  const out = new Uint8Array((b.length + 3) & ~3);
  out.set(b);
  return out;
}

/** Address text -> bytes (4 or 16). */
export function ip(text: string): Uint8Array {
  return parseIp(text);
}

/** IPv4 packet around raw L4 bytes (RFC 791). The header checksum is computed; L4 is untouched. */
export function ipv4(src: string, dst: string, proto: number, l4: Uint8Array, opts: Ip4Opts = {}): Uint8Array {
  const s = ip(src);
  const d = ip(dst);
  if (s.length !== 4 || d.length !== 4) throw new Error('ipv4: addresses must be IPv4');
  const optBytes = pad4(opts.options);
  const hl = 20 + optBytes.length;
  const tot = hl + l4.length;
  const pkt = new Uint8Array(tot + (opts.trailer ?? 0));
  pkt[0] = 0x40 | (hl >>> 2);
  pkt[1] = opts.tos ?? 0;
  put16(pkt, 2, tot);
  put16(pkt, 4, opts.id ?? 0x1234);
  const fo = ((opts.fragOffset ?? 0) >>> 3) | (opts.df ? 0x4000 : 0) | (opts.mf ? 0x2000 : 0);
  put16(pkt, 6, fo);
  pkt[8] = opts.ttl ?? 64;
  pkt[9] = proto;
  pkt.set(s, 12);
  pkt.set(d, 16);
  pkt.set(optBytes, 20);
  put16(pkt, 10, ~sum16(pkt, 0, hl) & 0xffff);
  pkt.set(l4, hl);
  return pkt;
}

function extBytes(ext: ExtHeader[], finalNh: number): Uint8Array {
  const parts: Uint8Array[] = [];
  ext.forEach((h, i) => {
    const nh = i + 1 < ext.length ? (ext[i + 1] as ExtHeader).type : finalNh;
    if (h.type === 44) {
      const b = new Uint8Array(8);
      b[0] = nh;
      put16(b, 2, ((h.fragOffset ?? 0) & 0xfff8) | (h.mf ? 1 : 0));
      put32(b, 4, h.id ?? 0xabcd);
      parts.push(b);
    } else if (h.type === 51) {
      const len = h.len ?? 12;
      const b = new Uint8Array(len);
      b[0] = nh;
      b[1] = len / 4 - 2;
      parts.push(b);
    } else {
      const len = h.len ?? 8;
      const b = new Uint8Array(len);
      b[0] = nh;
      b[1] = len / 8 - 1;
      // PadN option filling the rest (RFC 8200 §4.2) for hop-by-hop / destination options.
      if (h.type === 0 || h.type === 60) {
        b[2] = 1;
        b[3] = len - 4;
      }
      parts.push(b);
    }
  });
  return concat(...parts);
}

/** IPv6 packet (RFC 8200) around raw upper-layer bytes, with optional extension headers. */
export function ipv6(src: string, dst: string, nextHeader: number, l4: Uint8Array, opts: Ip6Opts = {}): Uint8Array {
  const s = ip(src);
  const d = ip(dst);
  if (s.length !== 16 || d.length !== 16) throw new Error('ipv6: addresses must be IPv6');
  const ext = opts.ext ?? [];
  const eb = extBytes(ext, nextHeader);
  const plen = eb.length + l4.length;
  const pkt = new Uint8Array(40 + plen + (opts.trailer ?? 0));
  put32(pkt, 0, (6 << 28) | ((opts.flowLabel ?? 0) & 0xfffff));
  put16(pkt, 4, plen);
  pkt[6] = ext.length > 0 ? (ext[0] as ExtHeader).type : nextHeader;
  pkt[7] = opts.hopLimit ?? 64;
  pkt.set(s, 8);
  pkt.set(d, 24);
  pkt.set(eb, 40);
  pkt.set(l4, 40 + eb.length);
  return pkt;
}

/** ipv4 or ipv6 by the address family of `src`. */
export function ipPacket(src: string, dst: string, proto: number, l4: Uint8Array, opts: Ip4Opts & Ip6Opts = {}): Uint8Array {
  return src.includes(':') ? ipv6(src, dst, proto, l4, opts) : ipv4(src, dst, proto, l4, opts);
}

function tcpBytes(sport: number, dport: number, flags: number, payload: Uint8Array, o: TcpOpts): Uint8Array {
  const ob = pad4(o.tcpOptions);
  const hl = 20 + ob.length;
  const b = new Uint8Array(hl + payload.length);
  put16(b, 0, sport);
  put16(b, 2, dport);
  put32(b, 4, o.seq ?? 1000);
  put32(b, 8, o.ack ?? 0);
  b[12] = (hl >>> 2) << 4;
  b[13] = flags;
  put16(b, 14, o.window ?? 65535);
  b.set(ob, 20);
  b.set(payload, hl);
  return b;
}

/** IPv4 TCP segment (RFC 9293) with valid checksums. */
export function tcp4(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  flags = TCP_SYN,
  payload: Uint8Array = new Uint8Array(0),
  opts: TcpOpts & Ip4Opts = {},
): Uint8Array {
  return fillChecksums(ipv4(src, dst, PROTO_TCP, tcpBytes(sport, dport, flags, payload, opts), opts));
}

/** IPv6 TCP segment with valid checksum. */
export function tcp6(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  flags = TCP_SYN,
  payload: Uint8Array = new Uint8Array(0),
  opts: TcpOpts & Ip6Opts = {},
): Uint8Array {
  return fillChecksums(ipv6(src, dst, PROTO_TCP, tcpBytes(sport, dport, flags, payload, opts), opts));
}

function udpBytes(sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(8 + payload.length);
  put16(b, 0, sport);
  put16(b, 2, dport);
  put16(b, 4, b.length);
  b.set(payload, 8);
  return b;
}

/** IPv4 UDP datagram (RFC 768); opts.zeroChecksum leaves the checksum 0. */
export function udp4(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  payload: Uint8Array = new Uint8Array(0),
  opts: UdpOpts & Ip4Opts = {},
): Uint8Array {
  const p = ipv4(src, dst, PROTO_UDP, udpBytes(sport, dport, payload), opts);
  return opts.zeroChecksum ? p : fillChecksums(p);
}

/** IPv6 UDP datagram (checksum mandatory, RFC 8200 §8.1). */
export function udp6(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  payload: Uint8Array = new Uint8Array(0),
  opts: UdpOpts & Ip6Opts = {},
): Uint8Array {
  const p = ipv6(src, dst, PROTO_UDP, udpBytes(sport, dport, payload), opts);
  return opts.zeroChecksum ? p : fillChecksums(p);
}

function echoBytes(type: number, id: number, seq: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(8 + payload.length);
  b[0] = type;
  put16(b, 4, id);
  put16(b, 6, seq);
  b.set(payload, 8);
  return b;
}

/** ICMPv4 echo request (8) / reply (0), RFC 792. */
export function icmp4Echo(
  src: string,
  dst: string,
  type: number,
  id: number,
  seq: number,
  payload: Uint8Array = new Uint8Array(0),
  opts: Ip4Opts = {},
): Uint8Array {
  return fillChecksums(ipv4(src, dst, PROTO_ICMP, echoBytes(type, id, seq, payload), opts));
}

/** ICMPv6 echo request (128) / reply (129), RFC 4443 §4. */
export function icmp6Echo(
  src: string,
  dst: string,
  type: number,
  id: number,
  seq: number,
  payload: Uint8Array = new Uint8Array(0),
  opts: Ip6Opts = {},
): Uint8Array {
  return fillChecksums(ipv6(src, dst, PROTO_ICMPV6, echoBytes(type, id, seq, payload), opts));
}

/** ICMPv4 error (RFC 792) from `src` to `dst` quoting `embedded` (default: header + 8 bytes). */
export function icmp4Error(
  type: number,
  code: number,
  src: string,
  dst: string,
  embedded: Uint8Array,
  opts: IcmpErrorOpts & Ip4Opts = {},
): Uint8Array {
  const ihl = ((embedded[0] as number) & 0x0f) * 4;
  const n = Math.min(embedded.length, opts.embedLen ?? ihl + 8);
  const b = new Uint8Array(8 + n);
  b[0] = type;
  b[1] = code;
  if (opts.mtu !== undefined) put16(b, 6, opts.mtu);
  if (opts.pointer !== undefined) b[4] = opts.pointer;
  b.set(embedded.subarray(0, n), 8);
  return fillChecksums(ipv4(src, dst, PROTO_ICMP, b, opts));
}

/** ICMPv6 error (RFC 4443 §3) quoting `embedded` (default: as much as fits in 1280 bytes). */
export function icmp6Error(
  type: number,
  code: number,
  src: string,
  dst: string,
  embedded: Uint8Array,
  opts: IcmpErrorOpts & Ip6Opts = {},
): Uint8Array {
  const n = Math.min(embedded.length, opts.embedLen ?? 1280 - 48);
  const b = new Uint8Array(8 + n);
  b[0] = type;
  b[1] = code;
  if (opts.mtu !== undefined) put32(b, 4, opts.mtu);
  if (opts.pointer !== undefined) put32(b, 4, opts.pointer);
  b.set(embedded.subarray(0, n), 8);
  return fillChecksums(ipv6(src, dst, PROTO_ICMPV6, b, opts));
}

/** One raw IPv4 fragment: `payload` is the fragment's data at byte offset `fragOffset`. */
export function ipv4Fragment(
  src: string,
  dst: string,
  proto: number,
  id: number,
  fragOffset: number,
  mf: boolean,
  payload: Uint8Array,
  opts: Ip4Opts = {},
): Uint8Array {
  return ipv4(src, dst, proto, payload, { ...opts, id, fragOffset, mf });
}

/** One raw IPv6 fragment (fragment header after `opts.ext`), RFC 8200 §4.5. */
export function ipv6Fragment(
  src: string,
  dst: string,
  nextHeader: number,
  id: number,
  fragOffset: number,
  mf: boolean,
  payload: Uint8Array,
  opts: Ip6Opts = {},
): Uint8Array {
  const ext = [...(opts.ext ?? []), { type: 44, fragOffset, mf, id }];
  return ipv6(src, dst, nextHeader, payload, { ...opts, ext });
}

/** Layout of a packet as the checkers see it (derived independently of src/packet). */
export interface Layout {
  version: number;
  hdrLen: number; // IPv4 IHL*4; IPv6 40 + extension headers before the upper layer
  proto: number;
  l4Off: number;
  l4Len: number;
  srcOff: number;
  dstOff: number;
  alen: number;
  fragmented: boolean;
  fragOffset: number;
  mf: boolean;
  fragHdrOff: number; // IPv6: offset of the fragment header, else -1
}

export function layout(p: Uint8Array): Layout {
  const v = (p[0] as number) >> 4;
  if (v === 4) {
    const hl = ((p[0] as number) & 15) * 4;
    const fo = get16(p, 6);
    return {
      version: 4,
      hdrLen: hl,
      proto: p[9] as number,
      l4Off: hl,
      l4Len: get16(p, 2) - hl,
      srcOff: 12,
      dstOff: 16,
      alen: 4,
      fragmented: (fo & 0x3fff) !== 0,
      fragOffset: (fo & 0x1fff) * 8,
      mf: (fo & 0x2000) !== 0,
      fragHdrOff: -1,
    };
  }
  const end = 40 + get16(p, 4);
  let nh = p[6] as number;
  let o = 40;
  let fragmented = false;
  let fragOffset = 0;
  let mf = false;
  let fragHdrOff = -1;
  for (;;) {
    if (nh === 0 || nh === 43 || nh === 60) {
      const n = p[o] as number;
      o += ((p[o + 1] as number) + 1) * 8;
      nh = n;
    } else if (nh === 51) {
      const n = p[o] as number;
      o += ((p[o + 1] as number) + 2) * 4;
      nh = n;
    } else if (nh === 44 && fragHdrOff < 0) {
      const fo = get16(p, o + 2);
      fragHdrOff = o;
      fragOffset = fo & 0xfff8;
      mf = (fo & 1) !== 0;
      fragmented = fragOffset !== 0 || mf;
      nh = p[o] as number;
      o += 8;
      if (fragOffset !== 0) break;
    } else break;
  }
  return {
    version: 6,
    hdrLen: o,
    proto: nh,
    l4Off: o,
    l4Len: end - o,
    srcOff: 8,
    dstOff: 24,
    alen: 16,
    fragmented,
    fragOffset,
    mf,
    fragHdrOff,
  };
}

function l4CsumRel(proto: number): number {
  return proto === PROTO_TCP ? 16 : proto === PROTO_UDP ? 6 : 2;
}

function pseudo(p: Uint8Array, L: Layout, l4Len: number): number {
  if (L.version === 4 && L.proto === PROTO_ICMP) return 0;
  let s = sum16(p, L.srcOff, L.alen) + sum16(p, L.dstOff, L.alen) + L.proto;
  s += L.version === 4 ? l4Len : (l4Len >>> 16) + (l4Len & 0xffff);
  return sum16(new Uint8Array(0), 0, 0, s);
}

/** Computes (in place) the IPv4 header checksum and, if unfragmented, the L4 checksum. */
export function fillChecksums(p: Uint8Array): Uint8Array {
  const L = layout(p);
  if (L.version === 4) {
    put16(p, 10, 0);
    put16(p, 10, ~sum16(p, 0, L.hdrLen) & 0xffff);
  }
  if (!L.fragmented && [PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6].includes(L.proto)) {
    const co = L.l4Off + l4CsumRel(L.proto);
    put16(p, co, 0);
    let c = ~sum16(p, L.l4Off, L.l4Len, pseudo(p, L, L.l4Len)) & 0xffff;
    if (L.proto === PROTO_UDP && c === 0) c = 0xffff;
    put16(p, co, c);
  }
  return p;
}

/**
 * Every checksum problem found, as text (empty: all valid). Checks the IPv4 header checksum,
 * the L4 checksum of unfragmented packets (IPv4 UDP 0 = none is accepted), and for ICMP
 * errors the embedded IPv4 header checksum and, when the quote is complete, its L4 checksum.
 */
export function checksumErrors(p: Uint8Array, prefix = ''): string[] {
  const errs: string[] = [];
  const L = layout(p);
  if (L.version === 4 && sum16(p, 0, L.hdrLen) !== 0xffff) errs.push(`${prefix}ipv4 header checksum`);
  if (L.fragmented) return errs;
  if (![PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6].includes(L.proto)) return errs;
  const co = L.l4Off + l4CsumRel(L.proto);
  const isV4UdpZero = L.version === 4 && L.proto === PROTO_UDP && get16(p, co) === 0;
  if (!isV4UdpZero && sum16(p, L.l4Off, L.l4Len, pseudo(p, L, L.l4Len)) !== 0xffff) {
    errs.push(`${prefix}l4 checksum (proto ${L.proto})`);
  }
  const t = p[L.l4Off] as number;
  const isErr = L.version === 4 ? [3, 11, 12].includes(t) && L.proto === PROTO_ICMP : [1, 2, 3, 4].includes(t) && L.proto === PROTO_ICMPV6;
  if (isErr) {
    const inner = p.subarray(L.l4Off + 8, L.l4Off + L.l4Len);
    const iv = (inner[0] as number) >> 4;
    if (iv === 4 && inner.length >= 20) {
      const ihl = ((inner[0] as number) & 15) * 4;
      if (sum16(inner, 0, ihl) !== 0xffff) errs.push(`${prefix}embedded ipv4 header checksum`);
      if (get16(inner, 2) <= inner.length) errs.push(...checksumErrors(inner.subarray(0, get16(inner, 2)), 'embedded '));
    } else if (iv === 6 && inner.length >= 40 && 40 + get16(inner, 4) <= inner.length) {
      errs.push(...checksumErrors(inner.subarray(0, 40 + get16(inner, 4)), 'embedded '));
    }
  }
  return errs;
}

/** True when every checksum checksumErrors looks at is valid. */
export function validChecksums(p: Uint8Array): boolean {
  return checksumErrors(p).length === 0;
}

/**
 * Converts a packet with a complete L4 checksum to the virtio-net NEEDS_CSUM form (Linux
 * CHECKSUM_PARTIAL, e.g. __tcp_v4_send_check): the field holds the folded, NON-complemented
 * pseudo-header sum. Returns a copy.
 */
export function toPartial(pkt: Uint8Array): Uint8Array {
  const p = pkt.slice();
  const L = layout(p);
  put16(p, L.l4Off + l4CsumRel(L.proto), pseudo(p, L, L.l4Len));
  return p;
}

/**
 * What the device/kernel does for NEEDS_CSUM: sum from csum_start (the L4 header) to the end,
 * the field included, and store the complement in the field. Returns a copy.
 */
export function completePartial(pkt: Uint8Array): Uint8Array {
  const p = pkt.slice();
  const L = layout(p);
  let c = ~sum16(p, L.l4Off, L.l4Len) & 0xffff;
  if (L.proto === PROTO_UDP && c === 0) c = 0xffff;
  put16(p, L.l4Off + l4CsumRel(L.proto), c);
  return p;
}

/**
 * Splits an unfragmented packet into fragments carrying at most `chunk` payload bytes each
 * (`chunk` a multiple of 8). IPv4 (RFC 791) copies the header; IPv6 (RFC 8200 §4.5) inserts a
 * fragment header after the existing extension headers (all treated as per-fragment).
 */
export function fragmentPacket(pkt: Uint8Array, chunk: number, id = 0x4242): Uint8Array[] {
  if (chunk % 8 !== 0 || chunk <= 0) throw new Error('chunk must be a positive multiple of 8');
  const L = layout(pkt);
  const unfrag = pkt.subarray(0, L.l4Off);
  const data = pkt.subarray(L.l4Off, L.l4Off + L.l4Len);
  const out: Uint8Array[] = [];
  for (let o = 0; o < data.length; o += chunk) {
    const part = data.subarray(o, Math.min(data.length, o + chunk));
    const more = o + chunk < data.length;
    if (L.version === 4) {
      const f = concat(unfrag, part);
      put16(f, 2, f.length);
      put16(f, 4, id & 0xffff);
      put16(f, 6, (get16(pkt, 6) & 0x4000) | (o >>> 3) | (more ? 0x2000 : 0));
      put16(f, 10, 0);
      put16(f, 10, ~sum16(f, 0, L.hdrLen) & 0xffff);
      out.push(f);
    } else {
      const fh = new Uint8Array(8);
      fh[0] = L.proto;
      put16(fh, 2, o | (more ? 1 : 0));
      put32(fh, 4, id);
      const f = concat(unfrag, fh, part);
      // Point the last header before the fragment header at 44.
      if (L.l4Off === 40) f[6] = 44;
      else setLastExtNext(f, 44);
      put16(f, 4, f.length - 40);
      out.push(f);
    }
  }
  return out;
}

function setLastExtNext(p: Uint8Array, val: number): void {
  let nh = p[6] as number;
  let prevNhOff = 6;
  let o = 40;
  while (nh === 0 || nh === 43 || nh === 60 || nh === 51) {
    prevNhOff = o;
    const len = nh === 51 ? ((p[o + 1] as number) + 2) * 4 : ((p[o + 1] as number) + 1) * 8;
    nh = p[o] as number;
    o += len;
  }
  p[prevNhOff] = val;
}

/** Reassembles fragments made by fragmentPacket (any order) into one unfragmented packet. */
export function reassemble(frags: Uint8Array[]): Uint8Array {
  const first = frags.find((f) => layout(f).fragOffset === 0);
  if (!first) throw new Error('no first fragment');
  const L0 = layout(first);
  const total = Math.max(...frags.map((f) => layout(f).fragOffset + layout(f).l4Len));
  const data = new Uint8Array(total);
  for (const f of frags) {
    const L = layout(f);
    data.set(f.subarray(L.l4Off, L.l4Off + L.l4Len), L.fragOffset);
  }
  if (L0.version === 4) {
    const p = concat(first.subarray(0, L0.l4Off), data);
    put16(p, 2, p.length);
    put16(p, 6, get16(p, 6) & 0x4000);
    put16(p, 10, 0);
    put16(p, 10, ~sum16(p, 0, L0.hdrLen) & 0xffff);
    return p;
  }
  const fh = L0.fragHdrOff;
  const p = concat(first.subarray(0, fh), data);
  if (fh === 40) p[6] = L0.proto;
  else setLastExtNext(p, L0.proto);
  put16(p, 4, p.length - 40);
  return p;
}

/** Hex dump for assertion messages. */
export function hex(p: Uint8Array): string {
  return Buffer.from(p).toString('hex');
}
