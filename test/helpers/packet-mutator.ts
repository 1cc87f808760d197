/**
 * The parts of a seeded, reproducible mutation fuzzer for packets (test-only; allocates only at
 * set-up, mutates in place):
 *
 *   Rng               sfc32 (Chris Doty-Humphrey's small fast counting generator, 128-bit
 *                     state; passes PractRand), seeded from one u32: the same seed gives the same
 *                     sequence on every machine, so a failure is replayed by its seed alone.
 *   structureFields   where a packet's length and structure fields are (IPv4 IHL, total length,
 *                     fragment field, protocol; IPv6 payload length, next headers, extension
 *                     header lengths, fragment field; TCP data offset and flags, UDP length,
 *                     ports; ICMP type/code and, for errors, the same of the quoted packet):
 *                     the targets of length-field lies.
 *   PacketMutator     1..n mutations of the bytes at buf[off .. off+len) in place: bit flips,
 *                     byte sets to boundary values, truncation, length-field lies, splices
 *                     with another packet, appended garbage, inserted and deleted ranges; and
 *                     lies in a virtio_net_hdr (flags, gso_type, hdr_len, gso_size, csum_start,
 *                     csum_offset).
 */

/** sfc32: a u32 generator, deterministic from its seed. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const a = this.#a | 0;
    const b = this.#b | 0;
    const c = this.#c | 0;
    const d = this.#d | 0;
    const t = (((a + b) | 0) + d) | 0;
    this.#d = (d + 1) | 0;
    this.#a = b ^ (b >>> 9);
    this.#b = (c + (c << 3)) | 0;
    const r = (c << 21) | (c >>> 11);
    this.#c = (r + t) | 0;
    return t >>> 0;
  }

  /** 0 .. n-1 (n ≤ 2^32). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n);
  }

  /** lo .. hi inclusive. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() < p * 0x100000000;
  }

  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
}

/** A field to lie in: offset from the packet's start and width in bytes (1 or 2, big-endian). */
export interface Field {
  off: number;
  width: 1 | 2;
}

const EXT_HEADERS = new Set([0, 43, 60, 51, 44]);

/**
 * The length and structure fields of the IP packet p[0 .. len), including the packet quoted by
 * an ICMP error. Tolerant: it stops where the packet ends or stops making sense.
 */
export function structureFields(p: Uint8Array, len = p.length): Field[] {
  const out: Field[] = [];
  ipFields(p, 0, len, out, 0);
  return out;
}

function push(out: Field[], off: number, width: 1 | 2, end: number): boolean {
  if (off + width > end) return false;
  out.push({ off, width });
  return true;
}

function ipFields(p: Uint8Array, o: number, end: number, out: Field[], depth: number): void {
  if (o >= end || depth > 1) return;
  const v = p[o]! >>> 4;
  if (v === 4) {
    push(out, o, 1, end);
    push(out, o + 2, 2, end);
    push(out, o + 6, 2, end);
    if (!push(out, o + 9, 1, end)) return;
    const fo = ((p[o + 6]! << 8) | p[o + 7]!) & 0x1fff;
    if (fo !== 0) return;
    l4Fields(p, o + (p[o]! & 0x0f) * 4, p[o + 9]!, 4, end, out, depth);
  } else if (v === 6) {
    push(out, o + 4, 2, end);
    if (!push(out, o + 6, 1, end)) return;
    let nh = p[o + 6]!;
    let x = o + 40;
    for (let n = 0; n < 8 && EXT_HEADERS.has(nh) && x + 8 <= end; n++) {
      push(out, x, 1, end);
      if (nh === 44) {
        push(out, x + 2, 2, end);
        if ((((p[x + 2]! << 8) | p[x + 3]!) & 0xfff8) !== 0) return;
        nh = p[x]!;
        x += 8;
        continue;
      }
      push(out, x + 1, 1, end);
      const hl = nh === 51 ? (p[x + 1]! + 2) * 4 : (p[x + 1]! + 1) * 8;
      nh = p[x]!;
      x += hl;
    }
    l4Fields(p, x, nh, 6, end, out, depth);
  }
}

function l4Fields(p: Uint8Array, l4: number, proto: number, v: number, end: number, out: Field[], depth: number): void {
  if (proto === 6) {
    push(out, l4, 2, end);
    push(out, l4 + 2, 2, end);
    push(out, l4 + 12, 1, end);
    push(out, l4 + 13, 1, end);
  } else if (proto === 17) {
    push(out, l4, 2, end);
    push(out, l4 + 2, 2, end);
    push(out, l4 + 4, 2, end);
  } else if ((proto === 1 && v === 4) || (proto === 58 && v === 6)) {
    push(out, l4, 1, end);
    push(out, l4 + 1, 1, end);
    push(out, l4 + 4, 2, end);
    const t = p[l4];
    const isError = v === 4 ? t === 3 || t === 11 || t === 12 : t !== undefined && t >= 1 && t <= 4;
    if (isError) ipFields(p, l4 + 8, end, out, depth + 1);
  }
}

const BYTES = [0x00, 0x01, 0x04, 0x05, 0x06, 0x0f, 0x10, 0x11, 0x2c, 0x3a, 0x40, 0x45, 0x46, 0x4f, 0x50, 0x60, 0x7f, 0x80, 0xf0, 0xff];
const WORDS = [0, 1, 7, 8, 19, 20, 28, 39, 40, 48, 0x7fff, 0x8000, 0xfffe, 0xffff];

/** Offsets of the virtio_net_hdr fields (src/packet/vnet.ts): u8 flags, u8 gso_type, then u16 LE. */
const VNET_U16 = [2, 4, 6, 8];
const VNET_FLAGS_VALUES = [0, 1, 2, 3, 0x80, 0xff];
const VNET_GSO_VALUES = [0, 1, 3, 4, 5, 0x80, 0x81, 0x84, 0xff];

export const MUTATIONS = ['bitflip', 'byte', 'truncate', 'length-lie', 'splice', 'append', 'insert', 'delete'] as const;
export type MutationName = (typeof MUTATIONS)[number];

/**
 * Mutates packets in place. `donors`: packets spliced in. Counts each kind it applied in
 * `counts` (by MUTATIONS index), so a test can show every kind ran.
 */
export class PacketMutator {
  readonly counts = new Float64Array(MUTATIONS.length);
  readonly #rng: Rng;
  readonly #donors: readonly Uint8Array[];

  constructor(rng: Rng, donors: readonly Uint8Array[]) {
    this.#rng = rng;
    this.#donors = donors;
  }

  /**
   * Applies `ops` mutations to buf[off .. off+len) (at most `cap` bytes may be used from off).
   * `fields`: the packet's structure fields (offsets from off), for length-field lies. Returns
   * the new length (0 .. cap).
   */
  mutate(buf: Uint8Array, off: number, len: number, cap: number, fields: readonly Field[], ops: number): number {
    const r = this.#rng;
    for (let k = 0; k < ops; k++) {
      const m = r.int(MUTATIONS.length);
      this.counts[m]!++;
      switch (m) {
        case 0: // bitflip
          if (len > 0) buf[off + r.int(len)]! ^= 1 << r.int(8);
          break;
        case 1: // byte
          if (len > 0) buf[off + r.int(len)] = r.chance(0.7) ? r.pick(BYTES) : r.int(256);
          break;
        case 2: // truncate: mostly near the end or at a header boundary, sometimes anywhere (even to 0)
          if (len > 0) len = r.chance(0.5) ? Math.max(0, len - r.range(1, 8)) : r.chance(0.9) ? r.range(1, len) : 0;
          break;
        case 3: { // length-field lie
          if (fields.length === 0) break;
          const f = r.pick(fields);
          if (f.off + f.width > len) break;
          const o = off + f.off;
          if (f.width === 1) {
            const cur = buf[o]!;
            buf[o] = r.chance(0.5) ? r.pick(BYTES) : r.pick([cur + 1, cur - 1, cur ^ 0x0f, cur ^ 0xf0, r.int(256)]) & 0xff;
          } else {
            const cur = (buf[o]! << 8) | buf[o + 1]!;
            const v = r.chance(0.4)
              ? r.pick(WORDS)
              : r.pick([cur + 1, cur - 1, cur + 8, cur - 8, cur + 40, len, len + 1, len - 1, len - f.off, len - f.off + 1, cur * 2, r.int(0x10000)]);
            buf[o] = (v >>> 8) & 0xff;
            buf[o + 1] = v & 0xff;
          }
          break;
        }
        case 4: { // splice: the tail from `at` replaced by a donor's bytes from `from`
          const d = r.pick(this.#donors);
          const at = r.int(len + 1);
          const from = r.int(d.length);
          const n = Math.min(d.length - from, cap - at);
          buf.set(d.subarray(from, from + n), off + at);
          len = at + n;
          break;
        }
        case 5: { // append garbage (link padding, bytes past a length field)
          const n = Math.min(cap - len, r.range(1, 64));
          for (let i = 0; i < n; i++) buf[off + len + i] = r.int(256);
          len += n;
          break;
        }
        case 6: { // insert a range (shifts what follows: every later offset lies)
          const n = Math.min(cap - len, r.range(1, 16));
          if (n <= 0) break;
          const at = r.int(len + 1);
          buf.copyWithin(off + at + n, off + at, off + len);
          for (let i = 0; i < n; i++) buf[off + at + i] = r.int(256);
          len += n;
          break;
        }
        default: { // delete a range
          if (len === 0) break;
          const at = r.int(len);
          const n = Math.min(len - at, r.range(1, 16));
          buf.copyWithin(off + at, off + at + n, off + len);
          len -= n;
          break;
        }
      }
    }
    return len;
  }

  /** One lie in the virtio_net_hdr at v[vo .. vo+10). */
  mutateVnet(v: Uint8Array, vo: number): void {
    const r = this.#rng;
    const k = r.int(4);
    if (k === 0) v[vo] = r.chance(0.7) ? r.pick(VNET_FLAGS_VALUES) : r.int(256);
    else if (k === 1) v[vo + 1] = r.chance(0.7) ? r.pick(VNET_GSO_VALUES) : r.int(256);
    else {
      const o = vo + r.pick(VNET_U16);
      const cur = v[o]! | (v[o + 1]! << 8);
      const x = r.chance(0.5) ? r.pick(WORDS) : r.pick([cur + 1, cur - 1, cur + 14, cur - 20, r.int(0x10000)]);
      v[o] = x & 0xff;
      v[o + 1] = (x >>> 8) & 0xff;
    }
  }
}
