/**
 * Per-VIP and per-backend counters (issue 13: `ipvsadm -Ln --stats`, HAProxy `show stat`):
 * packets and bytes in (client → backend) and out (backend → client), and connections,
 * bumped by the forwarder on the hot path in one typed array indexed by the forwarding
 * table's VIP and backend numbers; read by the control plane at request or scrape time
 * (src/control/counters.ts SERVICE_COUNTERS declares how each is exported).
 *
 * What a count means (this balancer; the cluster's figure is the sum over the balancers):
 *   in packets, bytes    packets this balancer transmitted to the backend: NAT'd (step 7) or
 *                        framed for DSR, whichever balancer received them (a packet relayed
 *                        to a peer is counted by the peer that serves it, once). Bytes = IP
 *                        bytes (a GSO super-packet counts once, with all its bytes).
 *   out packets, bytes   replies from the backend this balancer un-NAT'd to the client (NAT
 *                        only: DSR replies go from the backend straight to the client).
 *   connections          flows given to the backend here: new-flow decisions (as
 *                        tunlb_flows_created_total, per VIP and backend), new connections on a
 *                        reused port moved to it ("Connection reuse", counted by the receiving
 *                        balancer), UDP/ICMP flows moved to it off a down backend (by the
 *                        serving balancer).
 * A VIP's figures are the sums of its backends' slots (read time, nothing per packet).
 *
 * Layout: `counts` holds FIELDS numbers per slot; VIP v owns slots base[v] .. base[v+1]-1:
 * one per configured backend (its index in the VIP's list), then one "removed" slot holding
 * what backends a reload removed counted before (and replies of their flows after it), so a
 * VIP's sums never go back.
 *
 * Reloads (src/control/reload.ts): a reload may renumber VIPs and backends. `follow(ft)` is
 * called by Forwarder.setForwarding in the same synchronous step that swaps the forwarding
 * table (between batches), so no packet is counted in one numbering and read in the other: a
 * new layout is made and the counts move by identity (VIP name, backendId()): kept VIPs and
 * backends keep their counts; a removed backend's counts go to its VIP's removed slot; a
 * removed VIP's counts are dropped (its series end); new ones start at 0 (a VIP or backend
 * removed and added back starts again at 0: Prometheus' rate() reads that as a reset).
 * `layout` goes up by one, so readers that keep deltas (rates) restart. A forwarding table of
 * the same config (health rebuilds) changes nothing.
 *
 * Hot path: the forwarder keeps `counts` and `base` in its own fields (refreshed at each swap)
 * and adds one typed-array increment per counter per packet; nothing else.
 */
import { backendId, type ForwardingTable } from '../decision/forwarding-table';
import type { Config } from '../config';

/** Field offsets within a slot. */
export const SVC_IN_PACKETS = 0;
export const SVC_IN_BYTES = 1;
export const SVC_OUT_PACKETS = 2;
export const SVC_OUT_BYTES = 3;
export const SVC_CONNECTIONS = 4;
/** Numbers per slot. */
export const SVC_FIELDS = 5;

export class ServiceStats {
  /** Per VIP (vipCount + 1 entries): its first slot; base[vipCount] = the slot count. */
  base: Int32Array;
  /** base[vipCount] × SVC_FIELDS counters (Float64: exact to 2^53). */
  counts: Float64Array;
  /** +1 at every new layout (a reload that changed the config). */
  layout = 0;
  /** The config the layout follows. */
  #config: Config;

  constructor(ft: ForwardingTable) {
    this.#config = ft.config;
    this.base = layoutOf(ft.config);
    this.counts = new Float64Array(this.base[ft.config.vips.length]! * SVC_FIELDS);
  }

  /** The config the layout follows (VIP and backend numbering). */
  get config(): Config {
    return this.#config;
  }

  /**
   * Follows a newly swapped-in forwarding table (see header). Same config: nothing. Off the hot
   * path (allocates), but called between batches: keep it to the swap.
   */
  follow(ft: ForwardingTable): void {
    const next = ft.config;
    const prev = this.#config;
    if (next === prev) return;
    const base = layoutOf(next);
    const counts = new Float64Array(base[next.vips.length]! * SVC_FIELDS);
    const byName = new Map(next.vips.map((v) => [v.name, v]));
    const old = this.counts;
    const oldBase = this.base;
    const add = (to: number, from: number): void => {
      for (let f = 0; f < SVC_FIELDS; f++) counts[to * SVC_FIELDS + f]! += old[from * SVC_FIELDS + f]!;
    };
    for (const v of prev.vips) {
      const w = byName.get(v.name);
      if (w === undefined) continue;
      const ids = new Map(w.backends.map((_, i) => [backendId(w, i), i]));
      const removedSlot = base[w.index]! + w.backends.length;
      for (let i = 0; i < v.backends.length; i++) {
        const j = ids.get(backendId(v, i));
        add(j === undefined ? removedSlot : base[w.index]! + j, oldBase[v.index]! + i);
      }
      add(removedSlot, oldBase[v.index]! + v.backends.length);
    }
    this.base = base;
    this.counts = counts;
    this.#config = next;
    this.layout++;
  }

  /** Slot of backend `be` of VIP `vip`; an index the VIP does not have (a removed backend) → its removed slot. */
  slot(vip: number, be: number): number {
    const first = this.base[vip]!;
    const n = this.base[vip + 1]! - first - 1;
    return first + (be >= 0 && be < n ? be : n);
  }

  /** Counter `field` of backend `be` of VIP `vip` (be = the backend count: the removed slot). */
  get(vip: number, be: number, field: number): number {
    return this.counts[this.slot(vip, be) * SVC_FIELDS + field]!;
  }

  /** Counter `field` of VIP `vip`: the sum of its slots. */
  vipTotal(vip: number, field: number): number {
    let s = 0;
    for (let k = this.base[vip]!, e = this.base[vip + 1]!; k < e; k++) s += this.counts[k * SVC_FIELDS + field]!;
    return s;
  }
}

/** base[] of a config: each VIP's backends plus its removed slot. */
function layoutOf(config: Config): Int32Array {
  const n = config.vips.length;
  const base = new Int32Array(n + 1);
  let s = 0;
  for (let v = 0; v < n; v++) {
    base[v] = s;
    s += config.vips[v]!.backends.length + 1;
  }
  base[n] = s;
  return base;
}
