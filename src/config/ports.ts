/**
 * VIP port sets: `"*"` (every port) or a list of ports and inclusive `"a-b"` ranges.
 *
 * Parsed once into a 65536-bit bitmap (8 KiB) so the data path answers "is this destination
 * port forwarded?" with one byte load and a mask: `(bitmap[port >>> 3] >>> (port & 7)) & 1`.
 * Port 0 is never in a list (it is not a valid TCP/UDP destination); `"*"` sets every bit,
 * including 0, so ICMP echo identifiers and fragment keys (ports 0) are never filtered by it.
 */
import { inspect } from 'node:util';

export type PortRange = readonly [lo: number, hi: number];

export class PortSet {
  /** True when the spec was "*". */
  readonly all: boolean;
  /** Sorted, merged, inclusive ranges (for "*": [[0, 65535]]). */
  readonly ranges: readonly PortRange[];
  /** 8192 bytes; bit (port & 7) of byte (port >>> 3) set when the port is forwarded. Do not mutate. */
  readonly bitmap: Uint8Array;

  constructor(all: boolean, ranges: readonly PortRange[]) {
    this.all = all;
    this.bitmap = new Uint8Array(8192);
    if (all) {
      this.bitmap.fill(0xff);
      this.ranges = [[0, 65535]];
      return;
    }
    const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
    const merged: [number, number][] = [];
    for (const [lo, hi] of sorted) {
      const last = merged[merged.length - 1];
      if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
      else merged.push([lo, hi]);
    }
    this.ranges = merged;
    for (const [lo, hi] of merged) for (let p = lo; p <= hi; p++) this.bitmap[p >>> 3]! |= 1 << (p & 7);
  }

  has(port: number): boolean {
    return ((this.bitmap[port >>> 3]! >>> (port & 7)) & 1) === 1;
  }

  /** True when the two sets share at least one port. */
  intersects(other: PortSet): boolean {
    for (let i = 0; i < 8192; i++) if ((this.bitmap[i]! & other.bitmap[i]!) !== 0) return true;
    return false;
  }

  /** Number of ports in the set. */
  get size(): number {
    let n = 0;
    for (const [lo, hi] of this.ranges) n += hi - lo + 1;
    return n;
  }

  /** Lowest port in the set. */
  get first(): number {
    return this.ranges[0]![0];
  }

  /** The normalised spec: "*" or e.g. "80,443,8000-8080". */
  toString(): string {
    if (this.all) return '*';
    return this.ranges.map(([lo, hi]) => (lo === hi ? String(lo) : `${lo}-${hi}`)).join(',');
  }

  toJSON(): string | (string | number)[] {
    if (this.all) return '*';
    return this.ranges.map(([lo, hi]) => (lo === hi ? lo : `${lo}-${hi}`));
  }

  [inspect.custom](): string {
    return `PortSet(${this.toString()})`;
  }
}

export interface PortIssue {
  /** Path below the `ports` field (e.g. [2] for the third list item). */
  readonly at: (string | number)[];
  readonly message: string;
  readonly fix: string;
}

const FIX = 'use "*" or a list such as [80, 443, "8000-8080"] (ports 1..65535, ranges "low-high")';

function parseOne(item: unknown): PortRange | string {
  if (typeof item === 'number') {
    if (!Number.isInteger(item) || item < 1 || item > 65535) return `port ${item} is not an integer 1..65535`;
    return [item, item];
  }
  if (typeof item !== 'string') return `expected a port number or a "low-high" range string, got ${describe(item)}`;
  const m = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(item);
  if (!m) return `"${item}" is neither a port nor a "low-high" range`;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || lo > 65535) return `port ${lo} in "${item}" is not 1..65535`;
  if (hi < 1 || hi > 65535) return `port ${hi} in "${item}" is not 1..65535`;
  if (hi < lo) return `range "${item}" is backwards (${lo} > ${hi}); write "${hi}-${lo}"`;
  return [lo, hi];
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Validate a raw `ports` value; returns the set or every problem found. */
export function parsePortSpec(raw: unknown): PortSet | PortIssue[] {
  if (raw === '*') return new PortSet(true, []);
  if (!Array.isArray(raw)) {
    if (typeof raw === 'number' || typeof raw === 'string') {
      return [{ at: [], message: `expected "*" or a list, got ${describe(raw)}`, fix: `write it as a list: [${JSON.stringify(raw)}]` }];
    }
    return [{ at: [], message: `expected "*" or a list of ports/ranges, got ${describe(raw)}`, fix: FIX }];
  }
  if (raw.length === 0) return [{ at: [], message: 'the port list is empty', fix: FIX }];
  const issues: PortIssue[] = [];
  const ranges: PortRange[] = [];
  raw.forEach((item, i) => {
    const r = parseOne(item);
    if (typeof r === 'string') issues.push({ at: [i], message: r, fix: FIX });
    else ranges.push(r);
  });
  return issues.length > 0 ? issues : new PortSet(false, ranges);
}
