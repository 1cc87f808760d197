/**
 * IP address text <-> bytes, for configuration, the control plane, logs and tests.
 * OFF the hot path: these functions allocate and build strings.
 *
 * Forms accepted: dotted-quad IPv4 ('10.0.0.1', RFC 791 addresses; no leading-zero octal, no
 * shorthand forms) and IPv6 text (RFC 4291 §2.2, including '::' compression and a trailing
 * embedded IPv4 like '::ffff:10.0.0.1'; no zone ids). Output of IPv6 follows RFC 5952.
 */

/**
 * Parses `text` into `out` at `outOff`. Returns the address length written (4 or 16), or 0 when
 * the text is not a valid address (nothing is guaranteed about `out` then). Never throws.
 */
export function parseIpInto(text: string, out: Uint8Array, outOff: number): number {
  if (text.indexOf(':') < 0) {
    return parseIpv4Into(text, out, outOff) ? 4 : 0;
  }
  return parseIpv6Into(text, out, outOff) ? 16 : 0;
}

/** Parses an address into a new 4- or 16-byte array; throws a TypeError on invalid text. */
export function parseIp(text: string): Uint8Array {
  const tmp = new Uint8Array(16);
  const n = parseIpInto(text, tmp, 0);
  if (n === 0) throw new TypeError(`invalid IP address: ${JSON.stringify(text)}`);
  return tmp.slice(0, n);
}

function parseIpv4Into(text: string, out: Uint8Array, outOff: number): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    const p = parts[i] as string;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return false;
    const v = Number(p);
    if (v > 255) return false;
    out[outOff + i] = v;
  }
  return true;
}

function parseIpv6Into(text: string, out: Uint8Array, outOff: number): boolean {
  const words: number[] = [];
  let head = text;
  let tail = '';
  const dbl = text.indexOf('::');
  if (dbl >= 0) {
    if (text.indexOf('::', dbl + 1) >= 0) return false;
    head = text.slice(0, dbl);
    tail = text.slice(dbl + 2);
  }
  const parseGroups = (s: string, dst: number[], allowV4Tail: boolean): boolean => {
    if (s === '') return true;
    const groups = s.split(':');
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i] as string;
      if (allowV4Tail && i === groups.length - 1 && g.indexOf('.') >= 0) {
        const v4 = new Uint8Array(4);
        if (!parseIpv4Into(g, v4, 0)) return false;
        dst.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number));
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return false;
      dst.push(parseInt(g, 16));
    }
    return true;
  };
  const tailWords: number[] = [];
  if (dbl >= 0) {
    if (!parseGroups(head, words, false)) return false;
    if (!parseGroups(tail, tailWords, true)) return false;
    if (words.length + tailWords.length > 7) return false;
    while (words.length + tailWords.length < 8) words.push(0);
    words.push(...tailWords);
  } else {
    if (!parseGroups(head, words, true)) return false;
    if (words.length !== 8) return false;
  }
  for (let i = 0; i < 8; i++) {
    const w = words[i] as number;
    out[outOff + 2 * i] = w >>> 8;
    out[outOff + 2 * i + 1] = w & 0xff;
  }
  return true;
}

/** Formats 4 bytes as dotted quad. */
export function formatIpv4(buf: Uint8Array, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** Formats 16 bytes as IPv6 text per RFC 5952 (lower case, longest zero run compressed). */
export function formatIpv6(buf: Uint8Array, off: number): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(((buf[off + 2 * i] as number) << 8) | (buf[off + 2 * i + 1] as number));
  // IPv4-mapped (::ffff:a.b.c.d): RFC 5952 §5 recommends the mixed notation.
  if (w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0xffff) {
    return `::ffff:${formatIpv4(buf, off + 12)}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (x: number): string => x.toString(16);
  if (bestStart < 0) return w.map(hex).join(':');
  const left = w.slice(0, bestStart).map(hex).join(':');
  const right = w.slice(bestStart + bestLen).map(hex).join(':');
  return `${left}::${right}`;
}

/** Formats a 4- or 16-byte address. */
export function formatIp(buf: Uint8Array, off: number, len: number): string {
  return len === 4 ? formatIpv4(buf, off) : formatIpv6(buf, off);
}
