/**
 * Flow-table remap for a config reload (src/control/reload.ts): a record holds its VIP and
 * backend as INDEXES into the forwarding table it was decided on; a reload may reorder, add and
 * remove VIPs and backends, so every record's indexes are translated to the new table by
 * identity: VIP name, and backend id (backendId(): address, or address#port).
 *
 *   VIP and backend kept      new indexes; the reply key does not change (same backend address
 *                             and port), so established flows are untouched.
 *   backend removed           backend NO_BACKEND ("removed"), which the forwarder treats as a
 *                             down backend at the flow's next packet (src/dataplane/forwarder.ts
 *                             "Backend down"): TCP is answered with an RST from VIP:port and the
 *                             record removed (the client sees a reset at once, not a hang); UDP,
 *                             ICMP and other flows move to the new table's pick for their hash,
 *                             re-inserted with the new reply key. Counted in `cut`.
 *   VIP removed               the record is removed (packets to that address are no longer the
 *                             balancer's). Counted in `removed`.
 *
 * Atomic for the data plane, chunked for the event loop. `startRemap` costs O(1): the caller
 * calls it and swaps the forwarding table in the same synchronous call (between two batches);
 * from then on the flow table reads every older record in the new numbering, translating it at
 * its first access (FlowTable "Index remap": packets, replication, listings alike), so no
 * packet ever sees a record with indexes of the other table, and nothing waits for a walk of
 * the table. `remapStep` then translates the rest in chunks of entry ids (the caller yields to
 * the event loop between them: src/control/time-slice.ts) and removes the records of removed
 * VIPs; the remap is over when it returns true. Until then no other remap may start (reloads
 * are serialised: src/control/balancer.ts). Measured (bench/admin-loop-delay.bench.ts): about
 * 10-20 ns per record in remapStep. A plan that renumbers nothing and removes nothing (VIPs or
 * backends appended, weights changed) needs no remap at all. Off the hot path.
 */
import type { FlowTable } from '../flow';
import { backendId, type ForwardingTable } from '../decision/forwarding-table';

/** Old index → new index (-1: removed), for VIPs and, per old VIP, its backends (flattened). */
export interface RemapPlan {
  /** vipMap[old vip] = new vip, or -1. */
  readonly vipMap: Int32Array;
  /** Offsets into backendMap per old VIP (vipMap.length + 1 entries; the last = backendMap.length). */
  readonly backendBase: Int32Array;
  /** backendMap[backendBase[old vip] + old backend] = new backend, or -1. */
  readonly backendMap: Int32Array;
  /** No record changes: every kept index is unchanged and nothing is removed. */
  readonly identity: boolean;
}

export interface RemapStats {
  /** Records translated to the new numbering (at their first access, or by the walk). */
  scanned: number;
  /** Records whose VIP or backend index changed. */
  remapped: number;
  /** Records removed (their VIP was removed). */
  removed: number;
  /** Records of a removed backend, marked removed: TCP reset, others moved at their next packet. */
  cut: number;
}

/** The index translation from `prev` to `next` (by VIP name and backend id). */
export function planRemap(prev: ForwardingTable, next: ForwardingTable): RemapPlan {
  const nv = new Map(next.config.vips.map((v) => [v.name, v]));
  const vips = prev.config.vips;
  const vipMap = new Int32Array(prev.vipCount).fill(-1);
  const backendBase = new Int32Array(vipMap.length + 1);
  let total = 0;
  for (let i = 0; i < vipMap.length; i++) {
    backendBase[i] = total;
    total += vips[i]?.backends.length ?? 0;
  }
  backendBase[vipMap.length] = total;
  const backendMap = new Int32Array(total).fill(-1);
  let identity = true;
  for (const v of vips) {
    const w = nv.get(v.name);
    if (w === undefined) {
      identity = false;
      continue;
    }
    vipMap[v.index] = w.index;
    if (w.index !== v.index) identity = false;
    const ids = new Map(w.backends.map((_, i) => [backendId(w, i), i]));
    const base = backendBase[v.index]!;
    for (let i = 0; i < v.backends.length; i++) {
      const m = ids.get(backendId(v, i)) ?? -1;
      backendMap[base + i] = m;
      if (m !== i) identity = false;
    }
  }
  return { vipMap, backendBase, backendMap, identity };
}

/**
 * Starts translating `table` to the numbering of the table `plan` was made for (O(1); see
 * header). Swap that forwarding table in within the same synchronous call. Returns false (and
 * does nothing) for an identity plan. Throws TunlbError(USAGE) while another remap runs.
 */
export function startRemap(table: FlowTable, plan: RemapPlan): boolean {
  if (plan.identity) return false;
  table.beginRemap(plan.vipMap, plan.backendBase, plan.backendMap);
  return true;
}

/** Entry ids per remapStep call: well under a millisecond of work. */
export const REMAP_CHUNK = 16384;

/** Advances the remap by `chunk` entry ids; true when it is over (header). */
export function remapStep(table: FlowTable, chunk = REMAP_CHUNK): boolean {
  return table.remapStep(chunk);
}

/** The counts of the remap in progress, or of the last one (zeros when `started` is false). */
export function remapStats(table: FlowTable, started: boolean): RemapStats {
  if (!started) return { scanned: 0, remapped: 0, removed: 0, cut: 0 };
  const c = table.remapCounts;
  return { scanned: c.translated, remapped: c.remapped, removed: c.removed, cut: c.cut };
}

/** The whole remap in one call (tests, small tables): startRemap, then remapStep until done. */
export function remapFlows(table: FlowTable, plan: RemapPlan): RemapStats {
  const started = startRemap(table, plan);
  while (!remapStep(table));
  return remapStats(table, started);
}
