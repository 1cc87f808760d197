/**
 * What is shared (src/backends/health-monitor.ts, "What is shared"): HealthReport bodies
 * (protocol/tunlb.proto) packed to a byte budget, one control datagram each, and the
 * per-backend items they carry. Pure functions; the monitor owns sequence numbers and sending.
 */
import { tunlb } from '../protocol';
import type { HealthReportBody } from './health-types';

/** Default byte budget of one HealthReport body (a 1400-byte datagram minus envelope and MAC). */
export const DEFAULT_REPORT_BUDGET = 1200;
/** Longest reason string in a change report (bytes of UTF-8). */
export const MAX_REASON_BYTES = 96;

/** `s` cut to at most `max` bytes of UTF-8 (with "..." when cut). */
export function truncateUtf8(s: string, max: number): string {
  if (Buffer.byteLength(s, 'utf8') <= max) return s;
  let out = s.slice(0, max);
  while (Buffer.byteLength(out, 'utf8') > max - 3) out = out.slice(0, -1);
  return `${out}...`;
}

/**
 * Splits items into bodies of at most `budget` encoded bytes, each with the header
 * `header()` gives (sequence set at send).
 */
export function packReports(items: tunlb.v1.BackendHealth.$Properties[], header: () => HealthReportBody, budget: number): HealthReportBody[] {
  // Header bound: epoch 9 + sequence ≤ 10 (+tag) + periodic 2 + period 6.
  const HEADER_BOUND = 9 + 11 + 2 + 6;
  const out: HealthReportBody[] = [];
  let cur = header();
  let size = HEADER_BOUND;
  for (const it of items) {
    const len = tunlb.v1.BackendHealth.encode(it).finish().length;
    const cost = 1 + varintLen(len) + len;
    if (cur.backends!.length > 0 && size + cost > budget) {
      out.push(cur);
      cur = header();
      size = HEADER_BOUND;
    }
    cur.backends!.push(it);
    size += cost;
  }
  out.push(cur);
  return out;
}

/** Bytes of `n` as a protobuf varint. */
function varintLen(n: number): number {
  let l = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    l++;
  }
  return l;
}
