/**
 * One backend's health entry (src/backends/health-monitor.ts keeps them, entries[vip][backend]):
 * its state machine, the health and who decided it, the last check, the drain and runtime
 * marks, report bookkeeping. Here: the entry's shape, how the tables are built from a config
 * (carrying state over a reload), and the pure views of an entry the monitor needs (its report
 * item, the latest runtime mark in force, address comparison). No timers, no I/O.
 */
import type { BackendConfig, Config, HealthCheckConfig, VipConfig } from '../config';
import { tunlb } from '../protocol';
import { memberSeed, mixScore } from '../decision/rendezvous';
import { BackendState, type BackendTransition } from './backend-state';
import type { CheckResult, CheckTarget } from './checks';
import { healthKey } from './health-owner';
import { MAX_REASON_BYTES, truncateUtf8 } from './health-report';
import { drainOrigin, drainWallMs } from './drain-stamp';
import { encodeOverrides, type MaintenanceMark, type WeightMark } from './runtime-override';

const HS = tunlb.v1.HealthState;

export interface Entry {
  readonly vipIndex: number;
  readonly vip: VipConfig;
  readonly backendIndex: number;
  readonly backend: BackendConfig;
  readonly key: string;
  readonly idHash: number;
  /** Rendezvous score per balancer index. */
  readonly scores: Uint32Array;
  health: HealthCheckConfig | null;
  target: CheckTarget | null;
  readonly sm: BackendState;
  /** Owner in our view (-1: none / no check). */
  owner: number;
  timer: unknown;
  /** Watchdog of the check in flight (null: none). */
  watchdog: unknown;
  /** Incremented to orphan an in-flight check (ownership lost, stop, reconfigure). */
  token: number;
  /** Health info exists (own result or a peer's report). */
  known: boolean;
  /** Who decided the current health (-1: nobody yet). */
  decidedBy: number;
  reason: string;
  sinceMs: number | null;
  /** The last check known here: ours, or the owner's as reported (`by`: balancer index; `failures`: consecutive, there). */
  lastCheck: (CheckResult & { atMs: number; by: number; failures: number }) | null;
  /** nowMs() when the backend went down (null: up), and the ms of its earlier outages. */
  downSinceMs: number | null;
  downTotalMs: number;
  /** Peer report bookkeeping: (sender, epoch, sequence) of the last applied health. */
  lastFrom: number;
  lastEpoch: number;
  lastSeq: number;
  drainStamp: number;
  /** Runtime overrides (src/backends/runtime-override.ts); stamp 0 = no mark. */
  weightMark: WeightMark;
  maintMark: MaintenanceMark;
  /** Pending for the next change report: health (with reason) / drain mark / runtime marks. */
  dirtyHealth: boolean;
  dirtyDrain: boolean;
  dirtyOverride: boolean;
}

export const NO_WEIGHT_MARK: WeightMark = { stamp: 0, weight: null };
export const NO_MAINT_MARK: MaintenanceMark = { stamp: 0, on: false };

/**
 * Builds the entry tables of `config` (entries[vipIndex][backendIndex], and all of them in
 * order). `previous`: the entries of the config before a reload (null at start): a backend
 * with the same key keeps its state machine, health, marks and check history; one no longer
 * configured gets its `removed` transition. `ids` and `balancerSeeds`: the balancers' ids and
 * memberSeed(hashKey, id) (the scores of health ownership). Returns the tables and the reload
 * transitions, which the monitor emits once the tables are in place.
 */
export function buildEntries(
config: Config,
previous: Entry[] | null,
hashKey: Uint32Array,
ids: readonly string[],
balancerSeeds: Uint32Array,
): { entries: Entry[][]; all: Entry[]; events: Array<[Entry, BackendTransition]> } {
  const events: Array<[Entry, BackendTransition]> = [];
  const byKey = new Map<string, Entry>();
  if (previous) for (const e of previous) byKey.set(e.key, e);
  const entries: Entry[][] = [];
  const all: Entry[] = [];
  for (const vip of config.vips) {
    const row: Entry[] = [];
    for (const backend of vip.backends) {
      const key = healthKey(vip, backend);
      const prev = byKey.get(key);
      byKey.delete(key);
      const health = backend.health;
      const opts = { checked: health !== null, rise: health?.rise ?? 1, fall: health?.fall ?? 1 };
      const idHash = memberSeed(hashKey, key) >>> 0;
      const scores = new Uint32Array(ids.length);
      for (let i = 0; i < scores.length; i++) scores[i] = mixScore(idHash, balancerSeeds[i]!);
      let sm: BackendState;
      if (prev) {
        sm = prev.sm;
        const t = sm.reconfigure(opts);
        if (!health) prev.known = false;
        const e = newEntry(vip, backend, key, idHash, scores, health, sm, prev);
        if (t) events.push([e, t]);
        row.push(e);
      } else {
        sm = new BackendState(opts);
        row.push(newEntry(vip, backend, key, idHash, scores, health, sm, null));
      }
      all.push(row[row.length - 1]!);
    }
    entries.push(row);
  }
  // What is left was removed from the configuration.
  for (const e of byKey.values()) {
    const t = e.sm.remove();
    if (t) events.push([e, t]);
  }
  return { entries, all, events };
}

/** One backend's entry; `prev`: its entry before a reload (its state carries over), or null. */
function newEntry(vip: VipConfig, backend: BackendConfig, key: string, idHash: number, scores: Uint32Array, health: HealthCheckConfig | null, sm: BackendState, prev: Entry | null): Entry {
  const target: CheckTarget | null = health
    ? {
        type: health.type,
        address: backend.address.text,
        family: backend.address.family,
        port: health.port,
        path: health.path,
        expectStatus: health.expectStatus,
        timeoutMs: health.timeoutMs,
      }
    : null;
  return {
    vipIndex: vip.index,
    vip,
    backendIndex: backend.index,
    backend,
    key,
    idHash,
    scores,
    health,
    target,
    sm,
    owner: -1,
    timer: null,
    watchdog: null,
    token: prev ? prev.token + 1 : 0,
    known: prev ? prev.known && health !== null : false,
    decidedBy: prev && health !== null ? prev.decidedBy : -1,
    reason: prev ? prev.reason : health ? 'no check result yet' : 'no health check configured',
    sinceMs: prev ? prev.sinceMs : null,
    lastCheck: prev && health !== null ? prev.lastCheck : null,
    downSinceMs: prev ? prev.downSinceMs : null,
    downTotalMs: prev ? prev.downTotalMs : 0,
    lastFrom: prev ? prev.lastFrom : -1,
    lastEpoch: prev ? prev.lastEpoch : 0,
    lastSeq: prev ? prev.lastSeq : 0,
    drainStamp: prev ? prev.drainStamp : 0,
    weightMark: prev ? prev.weightMark : NO_WEIGHT_MARK,
    maintMark: prev ? prev.maintMark : NO_MAINT_MARK,
    dirtyHealth: false,
    dirtyDrain: false,
    dirtyOverride: false,
  };
}

/**
 * The report item of `e` (BackendHealth): its health (with the reason when `withReason`, and
 * the last check when this balancer, `selfIndex`, ran it; its age against `nowMs`), its drain
 * mark, its runtime marks, as asked.
 */
export function entryItem(e: Entry, selfIndex: number, nowMs: number, health: boolean, withReason: boolean, drain: boolean, marks = false): tunlb.v1.BackendHealth.$Properties {
  const it: tunlb.v1.BackendHealth.$Properties = { vip: e.vipIndex, backend: e.backendIndex, idHash: e.idHash };
  if (health) {
    it.state = e.sm.health === 'healthy' ? HS.HEALTH_STATE_HEALTHY : HS.HEALTH_STATE_UNHEALTHY;
    if (withReason) it.reason = truncateUtf8(e.reason, MAX_REASON_BYTES);
    const lc = e.lastCheck;
    if (lc !== null && lc.by === selfIndex) {
      it.checkKnown = true;
      it.checkOk = lc.ok;
      it.checkRttUs = Math.min(0xffffffff, Math.max(0, Math.round(lc.rttMs * 1000)));
      it.checkAgeMs = Math.min(0xffffffff, Math.max(0, Math.round(nowMs - lc.atMs)));
      it.checkFailures = lc.failures;
    }
  }
  if (drain) {
    it.drainStamp = e.drainStamp;
    it.drained = e.sm.drained;
  }
  if (marks) encodeOverrides(e.weightMark, e.maintMark, it);
  return it;
}

/** Balancer id of the latest runtime mark of `e` that is in force (null: none). */
export function overrideBy(e: Entry, ids: readonly string[]): string | null {
  const stamp = Math.max(e.weightMark.weight !== null ? e.weightMark.stamp : 0, e.maintMark.on ? e.maintMark.stamp : 0);
  return stamp === 0 ? null : (ids[drainOrigin(stamp)] ?? `balancer ${drainOrigin(stamp)}`);
}

/** Wall ms of the latest runtime mark of `e` that is in force (null: none). */
export function overrideAt(e: Entry): number | null {
  const stamp = Math.max(e.weightMark.weight !== null ? e.weightMark.stamp : 0, e.maintMark.on ? e.maintMark.stamp : 0);
  return stamp === 0 ? null : drainWallMs(stamp);
}

/** Canonical form of an address text for comparisons (IPv6 spellings), or null. */
export function normalizeAddress(text: string): string | null {
  const t = text.trim();
  if (/^\d+\.\d+\.\d+\.\d+$/.test(t)) return t;
  if (!t.includes(':')) return null;
  try {
    return new URL(`http://[${t}]/`).hostname;
  } catch {
    return null;
  }
}
