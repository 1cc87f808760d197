/**
 * IP address literals as the configuration layer hands them to the rest of tunlb.
 *
 * Contract (docs/contracts.md, "Flow key"): every address is parsed once, at load time, into
 * 16 bytes: IPv6 as is, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2). The
 * hot path compares these bytes against flow-key bytes 0..31 and never parses text.
 *
 * An `IpAddress` serialises (JSON, util.inspect) as its canonical text: dotted quad for IPv4,
 * RFC 5952 compressed lower-case form for IPv6.
 */
import { inspect } from 'node:util';

export type IpFamily = 4 | 6;

export class IpAddress {
  /** Canonical text form (RFC 5952 for IPv6). */
  readonly text: string;
  readonly family: IpFamily;
  /** 16 bytes, network order; IPv4 as ::ffff:a.b.c.d. Owned by this object: do not mutate. */
  readonly bytes: Uint8Array;

  constructor(text: string, family: IpFamily, bytes: Uint8Array) {
    this.text = text;
    this.family = family;
    this.bytes = bytes;
  }

  /** True for 224.0.0.0/4 (IPv4) or ff00::/8 (IPv6). */
  get isMulticast(): boolean {
    return this.family === 4 ? (this.bytes[12]! & 0xf0) === 0xe0 : this.bytes[0] === 0xff;
  }

  /** True for 0.0.0.0 or ::. */
  get isUnspecified(): boolean {
    const start = this.family === 4 ? 12 : 0;
    for (let i = start; i < 16; i++) if (this.bytes[i] !== 0) return false;
    return true;
  }

  /** True for 127.0.0.0/8 or ::1. */
  get isLoopback(): boolean {
    if (this.family === 4) return this.bytes[12] === 127;
    for (let i = 0; i < 15; i++) if (this.bytes[i] !== 0) return false;
    return this.bytes[15] === 1;
  }

  /** Byte-wise equality (same family implied by the mapped form). */
  equals(other: IpAddress): boolean {
    for (let i = 0; i < 16; i++) if (this.bytes[i] !== other.bytes[i]) return false;
    return true;
  }

  /** The 4 IPv4 bytes (a view, not a copy); throws for IPv6. */
  v4Bytes(): Uint8Array {
    if (this.family !== 4) throw new RangeError(`${this.text} is not an IPv4 address`);
    return this.bytes.subarray(12, 16);
  }

  toString(): string {
    return this.text;
  }

  toJSON(): string {
    return this.text;
  }

  [inspect.custom](): string {
    return `IpAddress(${this.text})`;
  }
}

const V4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function parseV4Into(text: string, out: Uint8Array, off: number): string | null {
  const m = V4_RE.exec(text);
  if (!m) return 'not a dotted-quad IPv4 address';
  for (let i = 0; i < 4; i++) {
    const part = m[i + 1]!;
    if (part.length > 1 && part[0] === '0') return `octet "${part}" has a leading zero (ambiguous: octal or decimal?)`;
    const v = Number(part);
    if (v > 255) return `octet ${v} is larger than 255`;
    out[off + i] = v;
  }
  return null;
}

function parseV6Into(text: string, out: Uint8Array): string | null {
  if (text.includes('%')) return 'zone ids (%eth0) are not supported; use a global or unique-local address';
  const dbl = text.indexOf('::');
  if (dbl !== -1 && text.indexOf('::', dbl + 1) !== -1) return '"::" may appear only once';
  const head = dbl === -1 ? text : text.slice(0, dbl);
  const tail = dbl === -1 ? '' : text.slice(dbl + 2);
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === '' ? [] : tail.split(':');
  const groups: number[] = [];
  const tailGroups: number[] = [];
  const all = [...headParts.map((p) => [p, groups] as const), ...tailParts.map((p) => [p, tailGroups] as const)];
  for (let i = 0; i < all.length; i++) {
    const [p, into] = all[i]!;
    if (i === all.length - 1 && p.includes('.')) {
      const v4 = new Uint8Array(4);
      const err = parseV4Into(p, v4, 0);
      if (err) return `embedded IPv4 "${p}": ${err}`;
      into.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return `group "${p}" is not 1 to 4 hex digits`;
    into.push(parseInt(p, 16));
  }
  const total = groups.length + tailGroups.length;
  if (dbl === -1 && total !== 8) return `expected 8 groups, got ${total}`;
  if (dbl !== -1 && total > 7) return 'too many groups around "::"';
  const full = [...groups, ...new Array<number>(8 - total).fill(0), ...tailGroups];
  for (let i = 0; i < 8; i++) {
    out[2 * i] = full[i]! >>> 8;
    out[2 * i + 1] = full[i]! & 0xff;
  }
  return null;
}

/** RFC 5952 text form of 16 IPv6 bytes: lower case, no leading zeros, longest zero run (≥2) as "::". */
export function formatIpv6(b: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[2 * i]! << 8) | b[2 * i + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (bestStart === -1) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/**
 * Parse an IPv4 or IPv6 literal. Returns the address, or a one-line reason when the text is not
 * one. IPv4-mapped IPv6 text (::ffff:10.0.0.1) is refused: write the IPv4 address instead, so
 * every address has exactly one spelling and one family.
 */
export function parseIpAddress(text: string): IpAddress | string {
  const t = text.trim();
  if (t === '') return 'empty address';
  const bytes = new Uint8Array(16);
  if (!t.includes(':')) {
    const err = parseV4Into(t, bytes, 12);
    if (err) return err;
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    return new IpAddress(`${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`, 4, bytes);
  }
  const err = parseV6Into(t, bytes);
  if (err) return err;
  let mapped = bytes[10] === 0xff && bytes[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (bytes[i] !== 0) mapped = false;
  if (mapped) {
    return `IPv4-mapped IPv6 address; write the IPv4 address ${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]} instead`;
  }
  return new IpAddress(formatIpv6(bytes), 6, bytes);
}

/** Like parseIpAddress but throws a RangeError (for code and tests, not for user input). */
export function ip(text: string): IpAddress {
  const r = parseIpAddress(text);
  if (typeof r === 'string') throw new RangeError(`${text}: ${r}`);
  return r;
}
