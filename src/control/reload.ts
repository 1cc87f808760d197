/**
 * Config reload without a restart (SIGHUP, `tunlb reload` → POST /api/v1/reload).
 *
 *   1. loadConfig of the same file. Invalid → TunlbError(CONFIG_INVALID, errors in details):
 *      refused, nothing changes (the running config, tables and flows stay).
 *   2. Refused (TunlbError USAGE, nothing changes) when what needs a restart changed: the
 *      balancer list (ids and order: rankings, health ownership, the wire) or the cluster key
 *      (every flow hash).
 *   3. A forwarding table of the new config, generation + 1; eligibility and up-ness of kept
 *      backends from the health monitor's current view (new backends start eligible, as at
 *      start-up, until their first check).
 *   4. Flow records switched to its numbering (src/dataplane/flow-remap.ts: by VIP name and
 *      backend id; removed backends' flows marked removed → at their next packet TCP gets an
 *      RST from the VIP, others move, as for a down backend; removed VIPs' flows removed) and
 *      the table swapped in, in the same synchronous call (between batches): O(1), every
 *      record is read in the new numbering from then on.
 *   5. health.updateConfig(newConfig) (kept backends keep health and drain marks; its
 *      transitions schedule the usual incremental rebuild), then health.clearOverrides(): every
 *      runtime override (`tunlb weight`, `tunlb maintenance`) returns to the file's values,
 *      cluster-wide (a new mark per overridden backend, which wins on every balancer: a reload
 *      of ONE balancer clears them everywhere). The table of step 3 is built from the file's
 *      weights and without maintenance already, so it is the table the cleared marks describe.
 *   6. The rest of the remap walks the table in time slices (src/control/time-slice.ts), the
 *      event loop free in between; the returned promise resolves when it is over.
 *   7. One log event `config_reloaded` with the counts.
 *
 * Steps 1-5 run synchronously (parse, build: milliseconds); reloads must not overlap (the
 * Balancer serialises them): a remap must end before the next starts.
 *
 * Settings outside VIPs (tun, flow_table, admin, log, cluster timers) are read at start only:
 * a reload logs them as `restart_needed` in the result and keeps the running values.
 */
import { loadConfig, type Config } from '../config';
import { TunlbError, ErrorCodes } from '../errors';
import { deriveHashKey } from '../decision/hash-key';
import { forwardingTableSteps, backendId, type ForwardingTable } from '../decision/forwarding-table';
import { planRemap, remapStats, remapStep, startRemap, type RemapStats } from '../dataplane/flow-remap';
import { runSliced } from './time-slice';
import type { Forwarder } from '../dataplane/forwarder';
import type { FlowTable } from '../flow';
import type { HealthMonitor } from '../backends/health-monitor';
import type { Logger } from '../logger';

export interface ReloadTarget {
  configPath: string;
  hashKey: Uint32Array;
  forwarder: Forwarder;
  table: FlowTable;
  health: HealthMonitor;
  log: Logger;
  /** Called with the new table right after the forwarder got it (DSR neighbours). */
  onForwarding?: (ft: ForwardingTable) => void;
  /** Who asked (the origin of the override-clearing events), e.g. "reload on lb1". */
  origin?: string;
}

export interface ReloadResult {
  config: string;
  generation: number;
  vips: { added: string[]; removed: string[] };
  backends: { added: string[]; removed: string[]; reweighted: string[] };
  flows: RemapStats;
  /** Top-level settings that changed but apply only after a restart. */
  restartNeeded: string[];
  /** Runtime overrides this reload returned to the file's values, cluster-wide ("web4 10.99.3.21 weight"). */
  overridesCleared: string[];
}

const START_ONLY = ['tun', 'flowTable', 'admin', 'log'] as const;

/** Reloads (see header). Rejects with TunlbError (CONFIG_*, USAGE) when refused; nothing changed then. */
export async function reloadConfig(target: ReloadTarget): Promise<ReloadResult> {
  const prev = target.forwarder.forwarding;
  const old = prev.config;
  let next: Config;
  try {
    next = loadConfig(target.configPath);
  } catch (e) {
    refused(target, e);
    throw e;
  }
  const ids = (c: Config): string => c.balancers.map((b) => `${b.id}@${b.address.text}:${b.dataPort}`).join(',');
  if (ids(next) !== ids(old)) {
    const e = new TunlbError(ErrorCodes.USAGE, `reload refused: the balancer list changed (${old.balancers.map((b) => b.id).join(', ')} → ${next.balancers.map((b) => b.id).join(', ')}); restart the balancers to change it`);
    refused(target, e);
    throw e;
  }
  const key = deriveHashKey(next.cluster.key.reveal());
  if (key.length !== target.hashKey.length || key.some((w, i) => w !== target.hashKey[i])) {
    const e = new TunlbError(ErrorCodes.USAGE, 'reload refused: the cluster key changed (every flow hash would move); restart the cluster to change it');
    refused(target, e);
    throw e;
  }

  // Eligibility / up-ness of kept backends from the monitor's current view, by identity.
  const view = new Map<string, { eligible: boolean; up: boolean }>();
  for (const s of target.health.states()) {
    const v = old.vips[s.vipIndex];
    // Health and drain only: maintenance ends with this reload (step 5).
    if (v) view.set(`${v.name}\0${backendId(v, s.backendIndex)}`, { eligible: s.state === 'healthy', up: !s.down });
  }
  const look = (v: Config['vips'][number], i: number) => view.get(`${v.name}\0${backendId(v, i)}`);
  // Built in time slices while the running table serves (incremental from it where VIPs kept
  // their names); reloads do not overlap, so `prev` is still the running numbering at the swap.
  const steps = forwardingTableSteps(next, target.hashKey, prev.generation + 1, (v, i) => look(v, i)?.eligible ?? true, prev, (v, i) => look(v, i)?.up ?? true);
  let ft: ForwardingTable | undefined;
  await runSliced(() => {
    const r = steps.next();
    if (r.done === true) ft = r.value;
    return r.done === true;
  });
  if (ft === undefined) throw new TunlbError(ErrorCodes.TABLE_BUILD, 'reload: the forwarding table build did not finish');

  // Health rebuilds may have swapped tables meanwhile, all of the running config (same numbering).
  if (target.forwarder.forwarding.config !== old) throw new TunlbError(ErrorCodes.USAGE, 'reload refused: the running configuration changed during the reload');
  // One synchronous step: the records' numbering and the forwarding table change together.
  const started = startRemap(target.table, planRemap(prev, ft));
  target.forwarder.setForwarding(ft);
  target.onForwarding?.(ft);
  target.health.updateConfig(next);
  const cleared = target.health.clearOverrides(target.origin ?? 'reload');
  if (started) await runSliced(() => remapStep(target.table));
  const flows = remapStats(target.table, started);

  const result = summarize(old, next, ft.generation, flows);
  result.overridesCleared = cleared.map((e) => `${e.vip} ${e.backend} ${e.type === 'backend_weight' ? 'weight' : 'maintenance'}`);
  target.log.info(
    {
      event: 'config_reloaded',
      config: next.source,
      generation: ft.generation,
      vipsAdded: result.vips.added.length,
      vipsRemoved: result.vips.removed.length,
      backendsAdded: result.backends.added.length,
      backendsRemoved: result.backends.removed.length,
      backendsReweighted: result.backends.reweighted.length,
      flowsScanned: flows.scanned,
      flowsRemapped: flows.remapped,
      flowsRemoved: flows.removed,
      flowsCut: flows.cut,
      restartNeeded: result.restartNeeded,
      overridesCleared: result.overridesCleared.length,
    },
    `config reloaded (generation ${ft.generation}): VIPs +${result.vips.added.length}/-${result.vips.removed.length}, backends +${result.backends.added.length}/-${result.backends.removed.length}/~${result.backends.reweighted.length}, flows remapped ${flows.remapped}, removed ${flows.removed}, on removed backends ${flows.cut} (TCP reset, others moved at their next packet)`,
  );
  for (const w of next.warnings) target.log.warn({ event: 'config_warning' }, w);
  return result;
}

function refused(target: ReloadTarget, e: unknown): void {
  const err = e as TunlbError;
  target.log.error({ event: 'config_reload_refused', code: err.code, err: err.message, errors: err.details?.['errors'] }, `config reload refused, the running config stays: ${err.message}`);
}

function summarize(old: Config, next: Config, generation: number, flows: RemapStats): ReloadResult {
  const names = (c: Config): Set<string> => new Set(c.vips.map((v) => v.name));
  const on = names(old);
  const nn = names(next);
  const backends = (c: Config): Map<string, number> => {
    const m = new Map<string, number>();
    for (const v of c.vips) v.backends.forEach((b, i) => m.set(`${v.name} ${backendId(v, i)}`, b.weight));
    return m;
  };
  const ob = backends(old);
  const nb = backends(next);
  const restartNeeded = START_ONLY.filter((k) => JSON.stringify(old[k]) !== JSON.stringify(next[k]));
  return {
    config: next.source,
    generation,
    vips: { added: [...nn].filter((n) => !on.has(n)), removed: [...on].filter((n) => !nn.has(n)) },
    backends: {
      added: [...nb.keys()].filter((k) => !ob.has(k)),
      removed: [...ob.keys()].filter((k) => !nb.has(k)),
      reweighted: [...nb].filter(([k, w]) => ob.has(k) && ob.get(k) !== w).map(([k]) => k),
    },
    flows,
    restartNeeded: [...restartNeeded],
    overridesCleared: [],
  };
}

/**
 * What a reload changed, in one line (operator events, ReloadAnswer.detail, `tunlb reload
 * --cluster`), e.g. "generation 4: VIPs +1/-0, backends +0/-0/~1, flows remapped 12, removed 0,
 * cut 0; restart needed for log".
 */
export function reloadLine(r: ReloadResult): string {
  const list = (xs: readonly string[]): string => (xs.length === 0 ? '' : ` (${xs.slice(0, 3).join(', ')}${xs.length > 3 ? ', …' : ''})`);
  const changed =
    `VIPs +${r.vips.added.length}/-${r.vips.removed.length}${list([...r.vips.added, ...r.vips.removed])}, ` +
    `backends +${r.backends.added.length}/-${r.backends.removed.length}/~${r.backends.reweighted.length}${list([...r.backends.added, ...r.backends.removed, ...r.backends.reweighted])}`;
  return `generation ${r.generation}: ${changed}, flows remapped ${r.flows.remapped}, removed ${r.flows.removed}, cut ${r.flows.cut}${r.restartNeeded.length > 0 ? `; restart needed for ${r.restartNeeded.join(', ')}` : ''}`;
}
