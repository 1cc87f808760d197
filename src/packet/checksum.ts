/**
 * Internet checksum (RFC 1071) and its incremental update (RFC 1624).
 *
 * Conventions:
 * - A "sum" is the folded 16-bit one's-complement sum of big-endian 16-bit words, NOT
 *   complemented (0..0xffff). A "checksum" (the value carried in a header field) is the
 *   one's complement of a sum: `~sum & 0xffff`.
 * - All functions are pure, allocation-free and never throw; offsets are absolute in `buf`.
 *   Callers guarantee the ranges are inside `buf` (the parser's result does).
 * - Which data each protocol covers:
 *   IPv4 header checksum: the header only (RFC 791).
 *   TCP (RFC 9293 §3.1), UDP (RFC 768): pseudo-header + L4 header + data. IPv4 pseudo-header:
 *   src, dst, zero, protocol, L4 length; IPv6 pseudo-header (RFC 8200 §8.1): src, dst, u32 upper
 *   layer length, 3 zero bytes, next header.
 *   ICMPv4 (RFC 792): ICMP message only, no pseudo-header.
 *   ICMPv6 (RFC 4443 §2.3): IPv6 pseudo-header + message.
 */

/** Folds an accumulator of 16-bit words (< 2^53) to a 16-bit one's-complement sum. */
export function csumFold(acc: number): number {
  // Reduce a large accumulator exactly, then end-around carries (RFC 1071 §4.1).
  if (acc > 0xffffffff) acc = (acc % 0x10000) + Math.floor(acc / 0x10000);
  acc = (acc & 0xffff) + (acc >>> 16);
  acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}

/** One's-complement addition of two 16-bit values. */
export function csumAdd(a: number, b: number): number {
  const s = a + b;
  return (s & 0xffff) + (s >>> 16);
}

/**
 * Sum (not complemented) of `len` bytes at `off`, added to `initial` (a previous sum). An odd
 * trailing byte is padded with a zero byte on the right (RFC 1071 §4.1).
 */
export function csumPartial(buf: Uint8Array, off: number, len: number, initial: number): number {
  let acc = initial;
  const end = off + (len & ~1);
  let i = off;
  // Accumulate without folding: at most 0x1fffe per step, so 2^36 steps stay exact.
  for (; i < end; i += 2) acc += ((buf[i] as number) << 8) | (buf[i + 1] as number);
  if (len & 1) acc += (buf[i] as number) << 8;
  return csumFold(acc);
}

/** RFC 1071 checksum of a byte range: `~sum & 0xffff`. */
export function internetChecksum(buf: Uint8Array, off: number, len: number): number {
  return ~csumPartial(buf, off, len, 0) & 0xffff;
}

/** IPv4 header checksum of the `hdrLen`-byte header at `off`, as if the field (off+10) were 0. */
export function ipv4HeaderChecksum(buf: Uint8Array, off: number, hdrLen: number): number {
  const s = csumPartial(buf, off, hdrLen, 0);
  // Remove the current field value: s - field in one's complement = s + ~field.
  const field = ((buf[off + 10] as number) << 8) | (buf[off + 11] as number);
  return ~csumAdd(s, ~field & 0xffff) & 0xffff;
}

/** Sum of the IPv4 pseudo-header (RFC 768/9293): src(4) dst(4) 0 proto l4Len(2). */
export function pseudoSum4(buf: Uint8Array, srcOff: number, dstOff: number, proto: number, l4Len: number): number {
  let acc = proto + l4Len;
  acc += ((buf[srcOff] as number) << 8) | (buf[srcOff + 1] as number);
  acc += ((buf[srcOff + 2] as number) << 8) | (buf[srcOff + 3] as number);
  acc += ((buf[dstOff] as number) << 8) | (buf[dstOff + 1] as number);
  acc += ((buf[dstOff + 2] as number) << 8) | (buf[dstOff + 3] as number);
  return csumFold(acc);
}

/** Sum of the IPv6 pseudo-header (RFC 8200 §8.1): src(16) dst(16) len(4) zero(3) nextHeader. */
export function pseudoSum6(buf: Uint8Array, srcOff: number, dstOff: number, proto: number, l4Len: number): number {
  let acc = proto + (l4Len & 0xffff) + Math.floor(l4Len / 0x10000);
  for (let i = 0; i < 16; i += 2) {
    acc += ((buf[srcOff + i] as number) << 8) | (buf[srcOff + i + 1] as number);
    acc += ((buf[dstOff + i] as number) << 8) | (buf[dstOff + i + 1] as number);
  }
  return csumFold(acc);
}

/**
 * Full L4 checksum (TCP, UDP, ICMPv6 with pseudo-header; ICMPv4 without when `pseudo` is false)
 * over `l4Len` bytes at `l4Off`, computed as if the checksum field at `csumOff` were zero.
 * `addrLen` 4 or 16 selects the pseudo-header form. Returns the checksum field value (for UDP a
 * computed 0 is returned as 0xffff, RFC 768).
 */
export function l4Checksum(
  buf: Uint8Array,
  srcOff: number,
  dstOff: number,
  addrLen: number,
  proto: number,
  l4Off: number,
  l4Len: number,
  csumOff: number,
  pseudo: boolean,
): number {
  let s = pseudo
    ? addrLen === 4
      ? pseudoSum4(buf, srcOff, dstOff, proto, l4Len)
      : pseudoSum6(buf, srcOff, dstOff, proto, l4Len)
    : 0;
  s = csumPartial(buf, l4Off, l4Len, s);
  const field = ((buf[csumOff] as number) << 8) | (buf[csumOff + 1] as number);
  const c = ~csumAdd(s, ~field & 0xffff) & 0xffff;
  return proto === 17 && c === 0 ? 0xffff : c;
}

/**
 * RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data changes from `old16`
 * to `new16`: HC' = ~(~HC + ~m + m'). Works on the complemented field value.
 */
export function csumUpdate16(csum: number, old16: number, new16: number): number {
  let s = (~csum & 0xffff) + (~old16 & 0xffff) + (new16 & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** RFC 1624 eqn. 3 for a 32-bit field (two words) changing from `old32` to `new32`. */
export function csumUpdate32(csum: number, old32: number, new32: number): number {
  let s =
    (~csum & 0xffff) +
    (~(old32 >>> 16) & 0xffff) +
    (~old32 & 0xffff) +
    ((new32 >>> 16) & 0xffff) +
    (new32 & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/**
 * The one's-complement difference (sum of ~old + new over the words, folded) between the
 * `len`-byte address at `oldOff` in `buf` and the one at `newOff` in `addr`; `len` is 4 or 16.
 * Apply it with csumApplyDelta (checksum field) or csumAdd (a non-complemented sum).
 */
export function csumAddrDelta(buf: Uint8Array, oldOff: number, addr: Uint8Array, newOff: number, len: number): number {
  let acc = 0;
  for (let i = 0; i < len; i += 2) {
    acc += (~(((buf[oldOff + i] as number) << 8) | (buf[oldOff + i + 1] as number)) & 0xffff) +
      (((addr[newOff + i] as number) << 8) | (addr[newOff + i + 1] as number));
  }
  acc = (acc & 0xffff) + (acc >>> 16);
  return (acc & 0xffff) + (acc >>> 16);
}

/** Applies a delta (csumAddrDelta, or an accumulation of ~old+new words) to a checksum field. */
export function csumApplyDelta(csum: number, delta: number): number {
  let s = (~csum & 0xffff) + delta;
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** Reads the big-endian 16-bit word at `off`. */
export function read16(buf: Uint8Array, off: number): number {
  return ((buf[off] as number) << 8) | (buf[off + 1] as number);
}

/** Writes a big-endian 16-bit word at `off`. */
export function write16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 8;
  buf[off + 1] = v;
}

/** Checksum-field mode: the field holds a complete checksum (normal packets). */
export const CSUM_FULL = 0;
/**
 * Checksum-field mode: virtio-net VIRTIO_NET_HDR_F_NEEDS_CSUM / Linux CHECKSUM_PARTIAL. The L4
 * field holds the folded, NON-complemented pseudo-header sum; whoever completes it (device,
 * kernel) sums from csum_start to the end, field included, and stores the complement there.
 * So an address change (in the pseudo-header) adds to it as a plain sum, and a change of L4
 * bytes (ports, identifiers) must not touch it: those bytes are summed later.
 */
export const CSUM_PARTIAL = 1;

/**
 * Applies the change of the `len`-byte (4 or 16) address at `oldOff` in `buf` to `addr` at
 * `newOff` to the 16-bit field at `csumOff`, in `mode` (CSUM_FULL: complemented checksum;
 * CSUM_PARTIAL: non-complemented pseudo-header sum). Does NOT write the address itself: call it
 * before overwriting the old bytes. Returns the new field value.
 */
export function csumReplaceAddr(
  buf: Uint8Array,
  csumOff: number,
  oldOff: number,
  addr: Uint8Array,
  newOff: number,
  len: number,
  mode: number,
): number {
  const delta = csumAddrDelta(buf, oldOff, addr, newOff, len);
  const field = ((buf[csumOff] as number) << 8) | (buf[csumOff + 1] as number);
  const v = mode === CSUM_PARTIAL ? csumAdd(field, delta) : csumApplyDelta(field, delta);
  buf[csumOff] = v >>> 8;
  buf[csumOff + 1] = v;
  return v;
}
