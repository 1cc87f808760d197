/**
 * Runtime overrides of a backend (src/backends/health-monitor.ts, "Runtime overrides"): a weight
 * other than the file's (`tunlb weight`) and maintenance (`tunlb maintenance`), each a
 * cluster-wide mark that is last writer wins by its stamp, exactly like drain marks
 * (src/backends/drain-stamp.ts: stamp = wall ms * 32 + the writer's balancer index, never going
 * back). Two marks of one backend are independent (own stamps), so a weight set on one balancer
 * and a maintenance set on another at the same moment both hold.
 *
 *   weight mark        (stamp, weight | null)   null: the file's weight (a reload writes these)
 *   maintenance mark   (stamp, on)              on: no new flows, flows stay, checks go on
 *
 * Equal stamps: a stamp names its writer and a writer's stamps strictly grow per backend, so
 * two different marks never share one; a mark whose stamp equals the one held is the same
 * mark (a repeat) and changes nothing. Pure functions: the monitor owns the marks.
 */
import { MAX_BALANCERS } from './drain-stamp';

/** Largest weight, as in the file (vips[].backends[].weight: 0..65535). */
export const MAX_WEIGHT = 65535;

/** A weight mark: weight null = the file's weight. */
export interface WeightMark {
  readonly stamp: number;
  readonly weight: number | null;
}

/** A maintenance mark. */
export interface MaintenanceMark {
  readonly stamp: number;
  readonly on: boolean;
}

/** What a received BackendHealth entry says about one mark. */
export type MarkDecode<M> = { readonly kind: 'none' } | { readonly kind: 'malformed'; readonly why: string } | { readonly kind: 'mark'; readonly mark: M };

/** The wire fields of a BackendHealth entry this module reads (protocol/tunlb.proto fields 13..17). */
export interface OverrideFields {
  weightStamp?: number | null;
  weight?: number | null;
  weightSet?: boolean | null;
  maintStamp?: number | null;
  maintenance?: boolean | null;
}

/** A stamp of the form above, written by one of `balancers` balancers; or why not. */
function stampProblem(stamp: number, balancers: number): string | null {
  if (!Number.isSafeInteger(stamp) || stamp < 0) return `stamp ${stamp} is not a safe integer`;
  if (stamp % MAX_BALANCERS >= balancers) return `stamp ${stamp} names balancer ${stamp % MAX_BALANCERS}, not one of the ${balancers}`;
  return null;
}

/** The weight mark of a received entry (weight_stamp 0: none). */
export function decodeWeightMark(b: OverrideFields, balancers: number): MarkDecode<WeightMark> {
  const stamp = Number(b.weightStamp ?? 0);
  if (stamp === 0) return { kind: 'none' };
  const bad = stampProblem(stamp, balancers);
  if (bad !== null) return { kind: 'malformed', why: `weight ${bad}` };
  if (b.weightSet !== true) return { kind: 'mark', mark: { stamp, weight: null } };
  const w = Number(b.weight ?? 0);
  if (!Number.isInteger(w) || w < 0 || w > MAX_WEIGHT) return { kind: 'malformed', why: `weight ${w} out of 0..${MAX_WEIGHT}` };
  return { kind: 'mark', mark: { stamp, weight: w } };
}

/** The maintenance mark of a received entry (maint_stamp 0: none). */
export function decodeMaintenanceMark(b: OverrideFields, balancers: number): MarkDecode<MaintenanceMark> {
  const stamp = Number(b.maintStamp ?? 0);
  if (stamp === 0) return { kind: 'none' };
  const bad = stampProblem(stamp, balancers);
  if (bad !== null) return { kind: 'malformed', why: `maintenance ${bad}` };
  return { kind: 'mark', mark: { stamp, on: b.maintenance === true } };
}

/** The wire fields of the marks held (stamp 0: not sent). */
export function encodeOverrides(weight: WeightMark, maint: MaintenanceMark, out: OverrideFields): void {
  if (weight.stamp > 0) {
    out.weightStamp = weight.stamp;
    if (weight.weight !== null) {
      out.weightSet = true;
      out.weight = weight.weight;
    }
  }
  if (maint.stamp > 0) {
    out.maintStamp = maint.stamp;
    if (maint.on) out.maintenance = true;
  }
}

/** Last writer wins: does `incoming` replace `held`? (An equal stamp is the same mark: no.) */
export function wins(incoming: { readonly stamp: number }, held: { readonly stamp: number }): boolean {
  return incoming.stamp > held.stamp;
}

/**
 * A weight as the operator typed it (CLI argument, or the API's `weight`): an integer 0..65535,
 * or "file" / null for the file's weight. Returns the weight (null = the file's) or an error
 * message naming the range.
 */
export function parseWeight(v: unknown): { ok: true; weight: number | null } | { ok: false; error: string } {
  if (v === null || v === 'file') return { ok: true, weight: null };
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_WEIGHT) {
    return { ok: false, error: `weight must be an integer 0..${MAX_WEIGHT} (0: no new flows) or "file" (back to the file's weight), got ${JSON.stringify(v)}` };
  }
  return { ok: true, weight: n };
}
