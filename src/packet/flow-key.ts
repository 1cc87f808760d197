/**
 * The flow key: 40 bytes, layout fixed by docs/contracts.md ("Flow key"):
 *
 *   0..15  source address: IPv6, or IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d, RFC 4291 §2.5.5.2)
 *   16..31 destination address, same form
 *   32..33 source port, big-endian (ICMP/ICMPv6 echo: the identifier; fragments: 0)
 *   34..35 destination port, big-endian (same rules)
 *   36     IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6)
 *   37     IP version (4 or 6)
 *   38..39 zero
 *
 * Keys live in caller-owned Uint8Arrays whose buffer is 4-byte aligned (newKey()), so the flow
 * table may view them as Uint32Array(10) (host byte order: table-local hashing only; the
 * cluster-wide hash is defined over the bytes).
 *
 * writeKey4/writeKey6/reverseKey are hot-path (no allocation); keyToString, keyFromParts and
 * newKey allocate and are for logs, tests and the control plane.
 */
import { formatIp, parseIpInto } from './addr';

export const KEY_LEN = 40;
export const KEY_WORDS = 10;
export const KEY_SRC = 0;
export const KEY_DST = 16;
export const KEY_SPORT = 32;
export const KEY_DPORT = 34;
export const KEY_PROTO = 36;
export const KEY_VERSION = 37;

/** A new zeroed key over its own (aligned) ArrayBuffer. Allocates: not for the hot path. */
export function newKey(): Uint8Array {
  return new Uint8Array(new ArrayBuffer(KEY_LEN));
}

/**
 * Writes an IPv4 key: addresses as ::ffff:a.b.c.d from `buf` at srcOff/dstOff (4 bytes each),
 * ports (host numbers, written big-endian), protocol, version 4, zero tail.
 */
export function writeKey4(
  key: Uint8Array,
  buf: Uint8Array,
  srcOff: number,
  dstOff: number,
  sport: number,
  dport: number,
  proto: number,
): void {
  key[0] = 0; key[1] = 0; key[2] = 0; key[3] = 0; key[4] = 0; key[5] = 0; key[6] = 0; key[7] = 0;
  key[8] = 0; key[9] = 0; key[10] = 0xff; key[11] = 0xff;
  key[12] = buf[srcOff] as number;
  key[13] = buf[srcOff + 1] as number;
  key[14] = buf[srcOff + 2] as number;
  key[15] = buf[srcOff + 3] as number;
  key[16] = 0; key[17] = 0; key[18] = 0; key[19] = 0; key[20] = 0; key[21] = 0; key[22] = 0; key[23] = 0;
  key[24] = 0; key[25] = 0; key[26] = 0xff; key[27] = 0xff;
  key[28] = buf[dstOff] as number;
  key[29] = buf[dstOff + 1] as number;
  key[30] = buf[dstOff + 2] as number;
  key[31] = buf[dstOff + 3] as number;
  key[32] = sport >>> 8;
  key[33] = sport;
  key[34] = dport >>> 8;
  key[35] = dport;
  key[36] = proto;
  key[37] = 4;
  key[38] = 0;
  key[39] = 0;
}

/** Writes an IPv6 key: 16-byte addresses from `buf` at srcOff/dstOff, ports, protocol, version 6. */
export function writeKey6(
  key: Uint8Array,
  buf: Uint8Array,
  srcOff: number,
  dstOff: number,
  sport: number,
  dport: number,
  proto: number,
): void {
  for (let i = 0; i < 16; i++) {
    key[i] = buf[srcOff + i] as number;
    key[16 + i] = buf[dstOff + i] as number;
  }
  key[32] = sport >>> 8;
  key[33] = sport;
  key[34] = dport >>> 8;
  key[35] = dport;
  key[36] = proto;
  key[37] = 6;
  key[38] = 0;
  key[39] = 0;
}

/**
 * Writes into `dst` the key of the opposite direction of `src`: addresses swapped, ports
 * swapped, protocol and version kept. `dst` may be `src` (swaps in place).
 */
export function reverseKey(src: Uint8Array, dst: Uint8Array): void {
  for (let i = 0; i < 16; i++) {
    const a = src[i] as number;
    const b = src[16 + i] as number;
    dst[i] = b;
    dst[16 + i] = a;
  }
  const s0 = src[32] as number;
  const s1 = src[33] as number;
  dst[32] = src[34] as number;
  dst[33] = src[35] as number;
  dst[34] = s0;
  dst[35] = s1;
  dst[36] = src[36] as number;
  dst[37] = src[37] as number;
  dst[38] = 0;
  dst[39] = 0;
}

/** Byte equality of two keys. */
export function keyEquals(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < KEY_LEN; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Copies a key. */
export function copyKey(src: Uint8Array, dst: Uint8Array): void {
  for (let i = 0; i < KEY_LEN; i++) dst[i] = src[i] as number;
}

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };

/**
 * Debug text of a key, e.g. 'tcp 10.0.0.1:1234 -> 10.99.0.10:80' or
 * 'udp [fd00::1]:53 -> [fd99::10]:53'. Allocates: logs and tests only.
 */
export function keyToString(key: Uint8Array): string {
  const v4 = key[KEY_VERSION] === 4;
  const alen = v4 ? 4 : 16;
  const aoff = v4 ? 12 : 0;
  const src = formatIp(key, KEY_SRC + aoff, alen);
  const dst = formatIp(key, KEY_DST + aoff, alen);
  const sport = ((key[32] as number) << 8) | (key[33] as number);
  const dport = ((key[34] as number) << 8) | (key[35] as number);
  const p = key[KEY_PROTO] as number;
  const pname = PROTO_NAMES[p] ?? `proto${p}`;
  const ep = (a: string, port: number): string => (v4 ? `${a}:${port}` : `[${a}]:${port}`);
  return `${pname} ${ep(src, sport)} -> ${ep(dst, dport)}`;
}

/**
 * Builds a key from text addresses (both IPv4 or both IPv6), ports and protocol, into `out`
 * (a new aligned key when omitted). Throws a TypeError on bad addresses: control plane/tests only.
 */
export function keyFromParts(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  proto: number,
  out: Uint8Array = newKey(),
): Uint8Array {
  const a = new Uint8Array(32);
  const ls = parseIpInto(src, a, 0);
  const ld = parseIpInto(dst, a, 16);
  if (ls === 0 || ld === 0 || ls !== ld) {
    throw new TypeError(`keyFromParts: addresses must be two IPv4 or two IPv6 addresses: ${src}, ${dst}`);
  }
  if (ls === 4) writeKey4(out, a, 0, 16, sport, dport, proto);
  else writeKey6(out, a, 0, 16, sport, dport, proto);
  return out;
}
