/**
 * The operator's per-VIP and per-backend view (issue 13; `ipvsadm -Ln --stats --rate`,
 * HAProxy `show stat`): GET /api/v1/vips, `tunlb vips --stats`, `tunlb backends --stats`,
 * the status page's service table and the per-VIP/per-backend Prometheus families are all
 * rendered from the rows built here, whose figures are declared once in src/control/counters.ts
 * (SERVICE_COUNTERS, BACKEND_CHECKS). Control plane only: built at request or scrape time.
 *
 * Sources:
 *   counters       the forwarder's ServiceStats (src/dataplane/service-stats.ts): what this
 *                  balancer served; the cluster's figure is the sum over the balancers.
 *   active         "connections active" = flow records on the VIP / backend in this
 *                  balancer's flow table (decided here or learnt from peers: every balancer
 *                  holds every replicated record, so this is the cluster's count; a TCP flow
 *                  below the replication threshold is counted only where it was decided), all
 *                  states (SYN, established, closing) until they expire. From the admin
 *                  endpoint's sliced scan of the table (src/control/time-slice.ts), at most
 *                  FLOW_COUNT_TTL_MS (2 s) old. Records of removed backends count for their
 *                  VIP only.
 *   rates          per second, from the counters sampled once a second by the admin endpoint
 *                  (ServiceRates): the difference between the newest sample and the oldest of
 *                  the last RATE_WINDOW_S seconds, divided by their distance. Null until two
 *                  samples exist, and again for a second after a reload that renumbered VIPs
 *                  or backends (ServiceStats.layout moved: the samples restart).
 *   health         HealthMonitor.states(): state, the last check (run here, or by the
 *                  backend's health owner and reported), last change, time down.
 */
import type { Config } from '../config';
import { SVC_FIELDS, type ServiceStats } from '../dataplane/service-stats';
import type { BackendStatus } from '../backends/health-monitor';
import type { BalancerView } from './balancer-view';
import { BACKEND_CHECKS, SERVICE_COUNTERS, type ServiceCounterDescriptor } from './counters';

/** Seconds of counter samples a rate spans (at most). */
export const RATE_WINDOW_S = 5;

/** Flows held per VIP and backend (the admin endpoint's scan), by heldKey() and VIP name. */
export interface HeldFlows {
  readonly byVip: Readonly<Record<string, number>>;
  readonly byBackend: Readonly<Record<string, number>>;
}

/** Key of HeldFlows.byBackend: "<vip name> <address>[:<port>]" (the status page shows it). */
export function heldKey(vip: string, address: string, port: number | null): string {
  return `${vip} ${address}${port ? `:${port}` : ''}`;
}

export type ServiceCounts = Record<ServiceCounterDescriptor['key'], number>;
export type ServiceRateValues = Record<string, number>;

export interface BackendServiceRow extends ServiceCounts {
  address: string;
  port: number | null;
  /** Weight in force: the runtime override (`tunlb weight`) or the file's. */
  weight: number;
  /** The file's weight (differs from `weight` while a runtime override is in force). */
  fileWeight: number;
  /** In maintenance (`tunlb maintenance`: no new flows, flows continue, checks go on); null before the monitor starts. */
  maintenance: boolean | null;
  /** HealthMonitor state (healthy, unhealthy, draining, drained, unknown, removed); null before the monitor starts. */
  state: string | null;
  eligible: boolean | null;
  /** Balancer that checks it (null: no health check). */
  owner: string | null;
  /** Per second over `rateWindowS` (SERVICE_COUNTERS rate keys); null while unknown. */
  rates: ServiceRateValues | null;
  /** BACKEND_CHECKS: the last check (by `checkedBy`), when it completed (epoch ms), last change (epoch ms), time down. */
  checkOk: number | null;
  checkLatencyMs: number | null;
  checkFailures: number | null;
  checkedBy: string | null;
  lastCheckAt: number | null;
  changedAt: number | null;
  downForS: number | null;
  downTotalS: number | null;
  reason: string | null;
}

export interface VipServiceRow extends ServiceCounts {
  name: string;
  address: string;
  method: string;
  /** "none", "source" (the whole address) or "source/<prefix>". */
  affinity: string;
  rates: ServiceRateValues | null;
  backends: BackendServiceRow[];
  /** What backends a reload removed had counted (and their flows since), when not all zero. */
  removed: ServiceCounts | null;
}

export interface ServicesBody {
  /** Epoch ms of this answer. */
  at: number;
  /** Seconds the rates span (null: no rates yet). */
  rateWindowS: number | null;
  /** Epoch ms of the flow-table scan behind activeConnections (null: not scanned). */
  activeAt: number | null;
  vips: VipServiceRow[];
}

/**
 * Per-second samples of ServiceStats.counts for rates (header). `sample()` once a second
 * (the admin endpoint's timer); allocates one copy of the counters per sample.
 */
export class ServiceRates {
  readonly #ring: Array<{ at: number; layout: number; counts: Float64Array }> = [];

  sample(sv: Readonly<ServiceStats>, at: number): void {
    const last = this.#ring[this.#ring.length - 1];
    if (last !== undefined && last.layout !== sv.layout) this.#ring.length = 0;
    this.#ring.push({ at, layout: sv.layout, counts: sv.counts.slice() });
    while (this.#ring.length > 1 && at - this.#ring[0]!.at > RATE_WINDOW_S * 1000 + 500) this.#ring.shift();
  }

  /** Rates per slot and field (same layout as ServiceStats.counts) and the seconds they span, or null. */
  rates(sv: Readonly<ServiceStats>): { windowS: number; perS: Float64Array } | null {
    const n = this.#ring.length;
    if (n < 2) return null;
    const a = this.#ring[0]!;
    const b = this.#ring[n - 1]!;
    if (b.layout !== sv.layout || a.layout !== b.layout) return null;
    const dt = (b.at - a.at) / 1000;
    if (!(dt > 0)) return null;
    const perS = new Float64Array(b.counts.length);
    for (let i = 0; i < perS.length; i++) perS[i] = Math.max(0, (b.counts[i]! - a.counts[i]!) / dt);
    return { windowS: dt, perS };
  }
}

/** "none", "source", "source/24" of a VIP's config. */
export function affinityText(v: Config['vips'][number]): string {
  if (v.affinity === null) return 'none';
  const whole = v.address.family === 4 ? 32 : 128;
  return v.affinity.prefixLen === whole ? 'source' : `source/${v.affinity.prefixLen}`;
}

/**
 * The rows of every VIP of the running config and its backends (header). `held`: the latest
 * flow counts (undefined: activeConnections 0); `rates`: ServiceRates (undefined: no rates).
 */
export function servicesBody(b: BalancerView, held: HeldFlows | undefined, rates: ServiceRates | undefined, heldAt: number | null = null): ServicesBody {
  const at = Date.now();
  const sv = b.forwarder.services;
  const config = sv.config;
  const r = rates?.rates(sv) ?? null;
  const health = new Map<string, BackendStatus>();
  for (const s of b.health?.states() ?? []) health.set(`${s.vip}\0${s.backendIndex}`, s);
  const counts = (slot: number): ServiceCounts => {
    const o = {} as ServiceCounts;
    for (const d of SERVICE_COUNTERS) if (d.field !== undefined) o[d.key] = sv.counts[slot * SVC_FIELDS + d.field]!;
    return o;
  };
  const rateOf = (slots: number[]): ServiceRateValues | null => {
    if (r === null) return null;
    const o: ServiceRateValues = {};
    for (const d of SERVICE_COUNTERS) {
      if (d.rate === undefined || d.field === undefined) continue;
      let s = 0;
      for (const k of slots) s += r.perS[k * SVC_FIELDS + d.field]!;
      o[d.rate.key] = s;
    }
    return o;
  };
  const vips = config.vips.map((v): VipServiceRow => {
    const first = sv.base[v.index]!;
    const n = v.backends.length;
    const backends = v.backends.map((x, i): BackendServiceRow => {
      const h = health.get(`${v.name}\0${i}`);
      const st = h !== undefined && h.backend === x.address.text ? h : undefined;
      const lc = st?.lastCheck ?? null;
      const row: BackendServiceRow = {
        address: x.address.text,
        port: x.port,
        weight: st?.weight ?? x.weight,
        fileWeight: x.weight,
        maintenance: st?.maintenance ?? null,
        state: st?.state ?? null,
        eligible: st?.eligible ?? null,
        owner: st?.owner ?? null,
        ...counts(first + i),
        activeConnections: held?.byBackend[heldKey(v.name, x.address.text, x.port)] ?? 0,
        rates: rateOf([first + i]),
        checkOk: lc === null ? null : lc.ok ? 1 : 0,
        checkLatencyMs: lc === null ? null : lc.rttMs,
        checkFailures: lc === null ? null : lc.failures,
        checkedBy: lc?.by ?? null,
        lastCheckAt: st?.lastCheckAgoMs == null ? null : at - st.lastCheckAgoMs,
        changedAt: st?.changedAgoMs == null ? null : at - st.changedAgoMs,
        downForS: st === undefined ? null : st.downForMs / 1000,
        downTotalS: st === undefined ? null : st.downTotalMs / 1000,
        reason: st?.reason ?? null,
      };
      return row;
    });
    const slots = Array.from({ length: n + 1 }, (_, k) => first + k);
    const total = {} as ServiceCounts;
    for (const d of SERVICE_COUNTERS) if (d.field !== undefined) total[d.key] = sv.vipTotal(v.index, d.field);
    const removed = counts(first + n);
    const anyRemoved = SERVICE_COUNTERS.some((d) => d.field !== undefined && removed[d.key] !== 0);
    return {
      name: v.name,
      address: v.address.text,
      method: v.method,
      affinity: affinityText(v),
      ...total,
      activeConnections: held?.byVip[v.name] ?? 0,
      rates: rateOf(slots),
      backends,
      removed: anyRemoved ? { ...removed, activeConnections: 0 } : null,
    };
  });
  return { at, rateWindowS: r?.windowS ?? null, activeAt: heldAt, vips };
}

/** BACKEND_CHECKS' value of a backend row (null: none), scaled for Prometheus. */
export function backendCheckValue(row: BackendServiceRow, key: (typeof BACKEND_CHECKS)[number]['key'], scale: number): number | null {
  const v = row[key];
  return v === null ? null : v * scale;
}
