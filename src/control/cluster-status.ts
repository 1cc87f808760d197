/**
 * The whole cluster at once, as one balancer's admin endpoint shows it (GET /api/v1/cluster,
 * `tunlb status --cluster`, the status page's cluster table): one row per balancer of the
 * config, this balancer's from its own figures, each peer's from the last BalancerSummary it
 * sent (src/cluster/cluster-view.ts) with the summary's age, plus what this balancer itself
 * measures of the peer (its state, our probe RTT to it, when we last heard from it).
 *
 * Also builds this balancer's own summary (summaryFields), which the admin endpoint's
 * per-second sampler sends to every peer (ClusterNode.publishSummary): rates over the last
 * second of the history samples, flows from the table and from the last flow-count scan.
 *
 * Control plane only: read once a second or per request.
 */
import type { BalancerView } from './balancer-view';
import type { SummaryFields } from '../cluster/cluster-view';

/** Counter samples summaryFields() takes its rates from (HistorySample's fields). */
export interface RateSample {
  /** Epoch ms. */
  at: number;
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  peerTxPackets: number;
  peerRxPackets: number;
}

/** Flows by primary / backup from this balancer's last table scan, by balancer id. */
export interface HeldCounts {
  byPrimary: Record<string, number>;
  byBackup: Record<string, number>;
}

const STATUS_CODE: Record<string, number> = { syncing: 1, serving: 2, draining: 3 };

function perS(a: number, b: number, dtS: number): number {
  return dtS > 0 ? Math.max(0, Math.round((b - a) / dtS)) : 0;
}

function u32(v: number): number {
  return Math.min(0xffffffff, Math.max(0, Math.round(v)));
}

/** This balancer's summary (protocol/tunlb.proto BalancerSummary) from two samples a second apart. */
export function summaryFields(b: BalancerView, prev: RateSample | undefined, cur: RateSample, counts: HeldCounts | undefined): SummaryFields {
  const c = b.cluster;
  const dt = prev === undefined ? 0 : (cur.at - prev.at) / 1000;
  const rtts: number[] = [];
  for (const p of c?.membership.peers() ?? []) rtts.push(p.rttAvgMs === null ? 0 : u32(Math.max(1, p.rttAvgMs * 1000)));
  return {
    status: STATUS_CODE[c?.membership.selfStatus ?? 'serving'] ?? 0,
    configHash: b.configHash().value,
    flowsHeld: u32(b.table.size),
    flowsPrimary: u32(counts?.byPrimary[b.selfId] ?? 0),
    flowsBackup: u32(counts?.byBackup[b.selfId] ?? 0),
    packetsInPerS: u32(prev === undefined ? 0 : perS(prev.rxPackets + prev.peerRxPackets, cur.rxPackets + cur.peerRxPackets, dt)),
    packetsOutPerS: u32(prev === undefined ? 0 : perS(prev.txPackets + prev.peerTxPackets, cur.txPackets + cur.peerTxPackets, dt)),
    bytesInPerS: prev === undefined ? 0 : perS(prev.rxBytes, cur.rxBytes, dt),
    bytesOutPerS: prev === undefined ? 0 : perS(prev.txBytes, cur.txBytes, dt),
    uptimeS: u32(b.nowSec()),
    generation: u32(b.forwarder.forwarding.generation),
    peerRttUs: rtts,
    liveMask: (c?.membership.liveMask() ?? 1 << b.selfIndex) >>> 0,
  };
}

/** One row of the cluster view (header). */
export interface ClusterRow {
  id: string;
  index: number;
  self: boolean;
  /** What this balancer sees of it: 'self' | 'up' | 'suspect' | 'dead' | 'unknown' (membership). */
  state: string;
  /** One word for people: serving, syncing, draining (as it reports), down (dead here), unknown. */
  status: string;
  /** 12 hex digits, '' when it never reported one. */
  configHash: string;
  /** Its config hash differs from this balancer's. */
  configMismatch: boolean;
  /** Its own figures as it last reported them; null while no summary came. */
  flowsHeld: number | null;
  flowsPrimary: number | null;
  flowsBackup: number | null;
  packetsInPerS: number | null;
  packetsOutPerS: number | null;
  bytesInPerS: number | null;
  bytesOutPerS: number | null;
  uptimeS: number | null;
  generation: number | null;
  /** Age of those figures, ms (0 for this balancer's own); null while no summary came. */
  reportAgeMs: number | null;
  /** Our smoothed probe RTT to it, ms (null: self, or no answer yet). */
  rttMs: number | null;
  /** Since its last answer to our probes, ms (null: self, or never). */
  lastHeardMs: number | null;
}

export interface ClusterBody {
  at: number;
  cluster: string;
  self: string;
  configHash: string;
  /** Peers whose config hash differs from this balancer's. */
  mismatches: string[];
  balancers: ClusterRow[];
  /** Summaries received / kept / dropped by reason (src/cluster/cluster-view.ts). */
  summaries: { received: number; accepted: number; dropped: Record<string, number> };
}

/** GET /api/v1/cluster (header). `own`: this balancer's latest summary (the sampler's). */
export function clusterBody(b: BalancerView, own: SummaryFields | undefined): ClusterBody {
  const c = b.cluster;
  const peers = c?.membership.peers();
  const selfHash = b.configHash().hex;
  const rows = b.config.balancers.map((cfg, i): ClusterRow => {
    const self = i === b.selfIndex;
    const p = peers?.[i];
    const last = self ? null : (c?.view.last(i) ?? null);
    const s = self ? own : last?.summary;
    const state = self ? 'self' : (p?.state ?? 'unknown');
    const reported = self ? (c?.membership.selfStatus ?? 'serving') : (last?.summary.status ?? p?.status ?? 'unknown');
    const status = state === 'dead' ? 'down' : state === 'unknown' ? 'unknown' : self ? reported : (p?.status !== undefined && p.status !== 'unknown' ? p.status : reported);
    const hash = self ? selfHash : p?.configHash || last?.summary.configHash || '';
    const num = (v: number | null | undefined): number | null => (s === undefined ? null : Number(v ?? 0));
    return {
      id: cfg.id,
      index: i,
      self,
      state,
      status,
      configHash: hash,
      configMismatch: !self && hash !== '' && selfHash !== '' && hash !== selfHash,
      flowsHeld: num(s?.flowsHeld),
      flowsPrimary: num(s?.flowsPrimary),
      flowsBackup: num(s?.flowsBackup),
      packetsInPerS: num(s?.packetsInPerS),
      packetsOutPerS: num(s?.packetsOutPerS),
      bytesInPerS: num(s?.bytesInPerS),
      bytesOutPerS: num(s?.bytesOutPerS),
      uptimeS: num(s?.uptimeS),
      generation: num(s?.generation),
      reportAgeMs: self ? (own === undefined ? null : 0) : last === null ? null : Math.round(last.ageMs),
      rttMs: self || p?.rttAvgMs === null || p?.rttAvgMs === undefined ? null : p.rttAvgMs,
      lastHeardMs: self || p?.lastAckAgoMs === null || p?.lastAckAgoMs === undefined ? null : Math.round(p.lastAckAgoMs),
    };
  });
  const vs = c?.view.stats;
  return {
    at: Date.now(),
    cluster: b.config.cluster.id,
    self: b.selfId,
    configHash: selfHash,
    mismatches: rows.filter((r) => r.configMismatch).map((r) => r.id),
    balancers: rows,
    summaries: { received: vs?.received ?? 0, accepted: vs?.accepted ?? 0, dropped: { ...(vs?.drops ?? {}) } },
  };
}
