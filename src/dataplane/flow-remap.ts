/**
 * Flow-table remap for a config reload (src/control/reload.ts): a record holds its VIP and
 * backend as INDEXES into the forwarding table it was decided on; a reload may reorder, add
 * and remove VIPs and backends, so every record's indexes are translated to the new table by
 * identity: VIP name, and backend id (backendId(): address, or address#port).
 *
 *   VIP and backend kept      vip/backend indexes rewritten in place (setVip/setDecision); the
 *                             reply key does not change (same backend address and port), so
 *                             established flows are untouched.
 *   backend removed           UDP/ICMP/other: moved now, as the forwarder's "Backend down" rule
 *                             does (src/dataplane/forwarder.ts): the new table's pick for the
 *                             flow hash, re-inserted with its new reply key. TCP: the record's
 *                             backend becomes NO_BACKEND ("removed"), which the forwarder treats
 *                             as down: the client's next segment is answered with an RST from
 *                             VIP:port and the record removed (the client sees a reset at once,
 *                             not a hang; counted in `cut`).
 *   VIP removed               the record is removed (packets to that address are no longer
 *                             the balancer's).
 *
 * The walk is a chunked scan (FlowTable.scan, `chunk` entries per call), but all chunks run in
 * ONE synchronous call, between two batches, together with the forwarding-table swap: no packet
 * ever sees a record with indexes of the other table. Cost: about 10-20 ns per live flow plus
 * ~1.5 us per moved/removed one (measured order of magnitude: ~20 ms for 1M flows). Structural
 * changes (remove/insert) are applied after the whole scan, so no re-inserted record is visited
 * twice. Off the hot path: allocates freely.
 */
import type { FlowTable } from '../flow';
import { hashFlowKey } from '../decision/halfsiphash';
import { NO_BACKEND } from '../decision/backend-table';
import { backendId, METHOD_DSR, type ForwardingTable } from '../decision/forwarding-table';
import { writeReplyKey } from '../decision/reply-key';
import { IPPROTO_TCP } from '../packet/parse';
import { KEY_PROTO } from '../packet/flow-key';

/** Old index → new index (-1: removed), for VIPs and, per old VIP, its backends. */
export interface RemapPlan {
  readonly vipMap: Int32Array;
  readonly backendMap: readonly Int32Array[];
}

export interface RemapStats {
  /** Live records visited. */
  scanned: number;
  /** Records whose VIP or backend index changed (rewritten in place). */
  remapped: number;
  /** Records of a removed backend moved to another backend (non-TCP). */
  moved: number;
  /** Records removed (removed VIP, or no backend to move to). */
  removed: number;
  /** TCP records of a removed backend, marked to be reset at their next client packet. */
  cut: number;
}

/** The index translation from `prev` to `next` (by VIP name and backend id). */
export function planRemap(prev: ForwardingTable, next: ForwardingTable): RemapPlan {
  const nv = new Map(next.config.vips.map((v) => [v.name, v]));
  const vipMap = new Int32Array(prev.vipCount).fill(-1);
  const backendMap: Int32Array[] = [];
  for (const v of prev.config.vips) {
    const m = new Int32Array(v.backends.length).fill(-1);
    const w = nv.get(v.name);
    if (w !== undefined) {
      vipMap[v.index] = w.index;
      const ids = new Map(w.backends.map((_, i) => [backendId(w, i), i]));
      for (let i = 0; i < m.length; i++) m[i] = ids.get(backendId(v, i)) ?? -1;
    }
    backendMap.push(m);
  }
  return { vipMap, backendMap };
}

/** Translates every record of `table` from the table `plan` was made for to `next` (see header). */
export function remapFlows(table: FlowTable, plan: RemapPlan, next: ForwardingTable, hashKey: Uint32Array, nowSec: number, chunk = 65536): RemapStats {
  const st: RemapStats = { scanned: 0, remapped: 0, moved: 0, removed: 0, cut: 0 };
  const later: number[] = [];
  const visit = (id: number): void => {
    st.scanned++;
    const v = table.vip(id);
    const b = table.backend(id);
    const nvip = v < plan.vipMap.length ? plan.vipMap[v]! : -1;
    const bm = plan.backendMap[v];
    const nb = nvip >= 0 && bm !== undefined && b < bm.length ? bm[b]! : -1;
    if (nvip < 0 || nb < 0) {
      later.push(id, nvip);
      return;
    }
    if (nvip !== v || nb !== b) {
      table.setVip(id, nvip);
      table.setDecision(id, table.primary(id), table.backup(id), nb);
      st.remapped++;
    }
  };
  let cursor = 0;
  do cursor = table.scan(cursor, chunk, visit);
  while (cursor !== 0);

  const kb = new ArrayBuffer(40);
  const keyWords = new Uint32Array(kb);
  const keyBytes = new Uint8Array(kb);
  const rb = new ArrayBuffer(40);
  const replyWords = new Uint32Array(rb);
  const replyBytes = new Uint8Array(rb);
  for (let k = 0; k < later.length; k += 2) {
    const id = later[k]!;
    const nvip = later[k + 1]!;
    table.copyKey(id, 0, keyWords);
    if (nvip < 0) {
      table.remove(id);
      st.removed++;
      continue;
    }
    if (keyBytes[KEY_PROTO] === IPPROTO_TCP) {
      // Marked removed (backend NO_BACKEND, which no table has): the forwarder treats it as a
      // down backend at the flow's next client packet, i.e. answers with an RST from VIP:port
      // at once (rather than letting a live backend reset a connection it never had).
      table.setVip(id, nvip);
      table.setDecision(id, table.primary(id), table.backup(id), NO_BACKEND);
      st.cut++;
      continue;
    }
    const nb = next.backendTables[nvip]!.lookup(hashFlowKey(hashKey, keyBytes));
    const primary = table.primary(id);
    const backup = table.backup(id);
    const flags = table.flags(id);
    const dsr = next.vipMethod[nvip] === METHOD_DSR;
    table.remove(id);
    if (nb === NO_BACKEND || (!dsr && !writeReplyKey(next, nvip, nb, keyBytes, 0, replyBytes))) {
      st.removed++;
      continue;
    }
    const nid = table.insert(keyWords, dsr ? null : replyWords, primary, backup, nvip, nb, nowSec);
    if (nid < 0) {
      st.removed++;
      continue;
    }
    table.updateFlags(nid, flags, 0);
    st.moved++;
  }
  return st;
}
