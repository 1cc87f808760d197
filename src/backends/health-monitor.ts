/**
 * Backend health for the whole cluster: runs the checks this balancer owns, keeps every
 * backend's state (src/backends/backend-state.ts), and shares it on the control channel so
 * every balancer holds the same view and picks the same backend for a new flow.
 *
 * ## Who checks what
 * Each backend with a health check is checked by ONE balancer, its health owner:
 *
 *   key(b)      = "<vip name>/<backend address>"            (stable across reorderings)
 *   idHash(b)   = memberSeed(hashKey, key(b))               (HalfSipHash, src/decision/rendezvous.ts)
 *   score(b, i) = mixScore(idHash(b), memberSeed(hashKey, balancer id i))
 *   owner(b)    = the candidate with the highest score (ties: the id that sorts first)
 *   candidates  = balancers with live[i] (Membership) that run a health monitor: this one,
 *                 and peers heard from (any HealthReport) within 3.5 of their report periods
 *
 * So checks spread evenly over the live balancers, and when an owner dies (its live bit
 * drops) only its backends move, each to the next balancer in its ranking, which starts from
 * the last shared state (counters from zero). A live peer that sends no reports (an older
 * version, or a monitor not started) owns nothing. At start a balancer has heard nobody and
 * checks everything; it narrows to its share as reports arrive (within one period).
 *
 * ## What is shared (HealthReport, protocol/tunlb.proto)
 * - change report: sent (coalesced per microtask) when a backend this balancer owns changes
 *   health (with the reason), or when a drain mark changes here;
 * - periodic report, every `reportIntervalMs` (1 s): the health of every backend this
 *   balancer owns (without reasons) and every drain mark it knows; empty when it has
 *   neither (then it is a heartbeat that keeps it a candidate).
 * Reports are split to fit `reportBudget` bytes each (one control datagram).
 * Every report carries (epoch, sequence): epoch fixed per monitor start (newIncarnation()),
 * sequence +1 per report. A receiver applies an entry's health only if the sender is the
 * backend's owner in its own view (or it has no health for the backend yet: a restarted
 * balancer adopts the shared state), the entry's id hash matches its own backend at that
 * (vip, backend) index (same configuration), and (epoch, sequence) is above the last one it
 * applied from that sender for that backend (reordered or late datagrams are stale).
 *
 * ## Drain
 * `drain()` / `undrain()` set a cluster-wide mark, last writer wins: stamp = max(wall ms,
 * previous stamp + 1) * 32 + balancer index, sent at once and repeated in every periodic
 * report by every balancer that knows it, so a lost datagram heals within a period.
 * The drain timeout (vips[].drain_timeout_s, 0 = none) counts from the stamp's wall time:
 * every balancer's tick (tickMs) moves a backend still drained past it to 'drained', whose
 * established flows the forwarder then cuts (backend down). The stamp is the same everywhere,
 * so balancers agree to within their wall-clock skew plus one tick; a balancer that starts
 * later learns the stamp from the periodic reports and expires it at once if it is due.
 *
 * ## Runtime overrides (src/backends/runtime-override.ts)
 * `setWeight()` (`tunlb weight`) and `setMaintenance()` (`tunlb maintenance`) set two more
 * cluster-wide marks per backend, each with its own stamp of the drain form, shared and repeated
 * the same way (BackendHealth fields 13..17), last writer wins:
 *  - weight: the weight the forwarding table gives the backend instead of the file's (0..65535;
 *    0 = no new flows, as a file weight of 0); `weightOf()` is what every table build reads;
 *  - maintenance: no new flows (not `eligible()`), established flows continue with no timeout
 *    (unlike a drain, it never makes the backend down), health checks and their reports go on.
 * Every balancer holding the same marks builds the same table (same inputs). A reload clears
 * them cluster-wide: `clearOverrides()` writes a "back to the file" mark with a new stamp for
 * each backend that has an override, and the larger stamp wins everywhere. A balancer that
 * starts holds no mark and learns every one from the next periodic reports (within a period),
 * like drain marks. Each change here (command, peer report, reload) goes to the `onOverride`
 * listeners with where it came from (OverrideEvent.origin) and is logged (event
 * "backend_override"); the table is not the monitor's: the balancer rebuilds it on the event.
 *
 * ## Wiring (the balancer)
 *   const hm = new HealthMonitor({
 *     config, selfIndex, hashKey, live: cluster.membership.live, nowMs: () => performance.now(),
 *     log,
 *     broadcast: (body) => cluster.channel.broadcast(cluster.channel.signer.seal('health', body)),
 *     onChange: (v, b, e) => { if (e.eligible !== e.wasEligible) rebuildForwardingTable(); },
 *   });
 *   hm.start();
 *   buildForwardingTable(config, hashKey, gen, (vip, i) => hm.eligible(vip.index, i), prev);
 *   ClusterNode dispatch:  case 'health': hm.onReport(env.sender, env.health!);
 *   membership onEvent:    hm.liveChanged();   (optional: a 100 ms tick notices it anyway)
 *   admin:                 hm.states(), hm.drain(vipName, address), hm.undrain(vipName, address)
 *   reload:                hm.updateConfig(newConfig)   (removed backends → 'removed' events)
 *   shutdown:              hm.stop()
 * Transitions are logged here (info/warn, event "backend_state") when `log` is given, and
 * passed to `onChange` in every case.
 *
 * Checks run in this process's network namespace (the balancer's) with its routes: the
 * source is the balancer's address towards the backend; replies are delivered locally (the
 * lab's policy rule for servers' traffic sits after the `local` table).
 */
import type { Config } from '../config';
import { ErrorCodes, TunlbError } from '../errors';
import { newIncarnation, tunlb } from '../protocol';
import { memberSeed } from '../decision/rendezvous';
import type { BackendStateName, BackendTransition } from './backend-state';
import { IcmpPinger, runCheck as defaultRunCheck, type CheckResult, type CheckTarget } from './checks';
import {
  DEFAULT_REPORT_INTERVAL_MS,
  DEFAULT_TICK_MS,
  JITTER,
  WATCHDOG_GRACE_MS,
  type BackendEvent,
  type BackendStatus,
  type HealthMonitorOptions,
  type HealthMonitorStats,
  type HealthReportBody,
  type MonitorLog,
  type TimerFns,
} from './health-types';
import { CANDIDATE_PERIODS, ownerByScores } from './health-owner';
import { DEFAULT_REPORT_BUDGET, packReports } from './health-report';
import { MAX_BALANCERS, drainOrigin, drainWallMs, nextDrainStamp } from './drain-stamp';
import { decodeMaintenanceMark, decodeWeightMark, wins } from './runtime-override';
import { buildEntries, entryItem, normalizeAddress, overrideAt, overrideBy, type Entry } from './health-entry';
import type { OverrideEvent } from './health-types';

// The monitor's public API, declared in the modules of its sections.
export * from './health-types';
export { CANDIDATE_PERIODS, healthKey, healthOwner } from './health-owner';
export { DEFAULT_REPORT_BUDGET, MAX_REASON_BYTES } from './health-report';

const HS = tunlb.v1.HealthState;

const defaultTimers: TimerFns = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export class HealthMonitor {
  readonly selfIndex: number;
  readonly epoch: number;
  readonly stats: HealthMonitorStats = {
    checksRun: 0,
    checksFailed: 0,
    reportsSent: 0,
    reportsReceived: 0,
    entriesApplied: 0,
    entriesNotOwner: 0,
    entriesStale: 0,
    entriesUnknown: 0,
    drainsApplied: 0,
    overridesApplied: 0,
    overridesMalformed: 0,
    drainsExpired: 0,
    ownershipChanges: 0,
  };

  #config: Config;
  #ids: readonly string[];
  #balancerSeeds: Uint32Array;
  readonly #hashKey: Uint32Array;
  readonly #live: Uint8Array;
  readonly #now: () => number;
  readonly #wall: () => number;
  readonly #broadcast: (body: HealthReportBody) => void;
  readonly #onChange: (vipIndex: number, backendIndex: number, event: BackendEvent) => void;
  readonly #onPeerDrain: HealthMonitorOptions['onPeerDrain'];
  readonly #log: MonitorLog | undefined;
  readonly #runCheck: (target: CheckTarget) => Promise<CheckResult>;
  /** The shared ICMP pinger of the default runner (null with an injected runCheck). */
  #pinger: IcmpPinger | null;
  readonly #timers: TimerFns;
  readonly #random: () => number;
  readonly #reportIntervalMs: number;
  readonly #budget: number;
  readonly #tickMs: number;

  /** entries[vipIndex][backendIndex] */
  #entries: Entry[][] = [];
  #all: Entry[] = [];
  #candidates: Uint8Array;
  #candidateMask = -1;
  /** Per peer: nowMs of its last report (-Infinity: never), its period, its largest epoch. */
  #heardAt: Float64Array;
  #peerPeriod: Float64Array;
  #peerEpoch: Float64Array;
  #sequence = 0;
  #running = false;
  #tickTimer: unknown = null;
  #reportTimer: unknown = null;
  #flushQueued = false;
  readonly #overrideListeners = new Set<(ev: OverrideEvent) => void>();

  constructor(opts: HealthMonitorOptions) {
    const n = opts.config.balancers.length;
    if (!(opts.selfIndex >= 0 && opts.selfIndex < n)) {
      throw new TunlbError(ErrorCodes.USAGE, `health monitor: selfIndex ${opts.selfIndex} is not a balancer index (0..${n - 1})`);
    }
    if (n > MAX_BALANCERS) throw new TunlbError(ErrorCodes.USAGE, `health monitor: at most ${MAX_BALANCERS} balancers`);
    this.selfIndex = opts.selfIndex;
    this.epoch = opts.epoch ?? newIncarnation();
    this.#config = opts.config;
    this.#hashKey = opts.hashKey;
    this.#live = opts.live;
    this.#now = opts.nowMs;
    this.#wall = opts.wallClockMs ?? Date.now;
    this.#broadcast = opts.broadcast;
    this.#onChange = opts.onChange;
    this.#onPeerDrain = opts.onPeerDrain;
    this.#log = opts.log;
    this.#timers = opts.timers ?? defaultTimers;
    this.#random = opts.random ?? Math.random;
    this.#reportIntervalMs = opts.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS;
    this.#budget = opts.reportBudget ?? DEFAULT_REPORT_BUDGET;
    this.#tickMs = opts.tickMs ?? DEFAULT_TICK_MS;
    if (opts.runCheck) {
      this.#runCheck = opts.runCheck;
      this.#pinger = null;
    } else {
      this.#pinger = new IcmpPinger();
      this.#runCheck = (t) => defaultRunCheck(t, this.#pinger ?? undefined);
    }
    this.#ids = opts.config.balancers.map((b) => b.id);
    this.#balancerSeeds = Uint32Array.from(this.#ids, (id) => memberSeed(opts.hashKey, id));
    this.#candidates = new Uint8Array(n);
    this.#heardAt = new Float64Array(n).fill(-Infinity);
    this.#peerPeriod = new Float64Array(n).fill(DEFAULT_REPORT_INTERVAL_MS);
    this.#peerEpoch = new Float64Array(n);
    this.#buildEntries(opts.config, null);
    this.#refreshOwnership(false);
  }

  // ---------------------------------------------------------------- lifecycle

  /** Starts checks (for owned backends), the ownership tick and periodic reports. Idempotent. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    if (this.#pinger?.closed) this.#pinger = new IcmpPinger();
    this.#refreshOwnership(true);
    for (const e of this.#all) if (e.owner === this.selfIndex && e.target) this.#scheduleFirst(e);
    this.#tickTimer = this.#timers.setTimeout(() => this.#tick(), this.#tickMs);
    // First periodic report soon (peers learn we are a candidate), then every period.
    this.#reportTimer = this.#timers.setTimeout(() => this.#periodic(), Math.min(this.#reportIntervalMs, 50 + this.#random() * 100));
  }

  /** Stops checks and timers; closes the ICMP pinger. States stay readable. */
  stop(): void {
    if (!this.#running) {
      this.#pinger?.close();
      return;
    }
    this.#running = false;
    for (const e of this.#all) this.#cancel(e);
    if (this.#tickTimer !== null) this.#timers.clearTimeout(this.#tickTimer);
    if (this.#reportTimer !== null) this.#timers.clearTimeout(this.#reportTimer);
    this.#tickTimer = null;
    this.#reportTimer = null;
    this.#pinger?.close();
  }

  get running(): boolean {
    return this.#running;
  }

  // ---------------------------------------------------------------- queries

  /** New flows may go to this backend: healthy, not draining, not in maintenance (weight is the table's). */
  eligible(vipIndex: number, backendIndex: number): boolean {
    const e = this.#entries[vipIndex]?.[backendIndex];
    return e !== undefined && e.sm.eligible && !e.maintMark.on;
  }

  /**
   * The weight the forwarding table gives this backend: the runtime override when there is one,
   * else the file's (what every table build reads, so every balancer with the same marks builds
   * the same table). 0 for an unknown backend.
   */
  weightOf(vipIndex: number, backendIndex: number): number {
    const e = this.#entries[vipIndex]?.[backendIndex];
    return e === undefined ? 0 : (e.weightMark.weight ?? e.backend.weight);
  }

  /** In maintenance (no new flows, flows continue, checks go on). */
  inMaintenance(vipIndex: number, backendIndex: number): boolean {
    return this.#entries[vipIndex]?.[backendIndex]?.maintMark.on === true;
  }

  /** Calls fn on every runtime override change (command, peer report, reload); returns the unsubscribe function. */
  onOverride(fn: (ev: OverrideEvent) => void): () => void {
    this.#overrideListeners.add(fn);
    return () => this.#overrideListeners.delete(fn);
  }

  /** Established flows must leave this backend: unhealthy, drained past its timeout, removed. */
  isDown(vipIndex: number, backendIndex: number): boolean {
    const e = this.#entries[vipIndex]?.[backendIndex];
    return e !== undefined && e.sm.down;
  }

  /** The state name of one backend (undefined if there is no such backend). */
  stateOf(vipIndex: number, backendIndex: number): BackendStateName | undefined {
    return this.#entries[vipIndex]?.[backendIndex]?.sm.state;
  }

  /** Balancer index that checks this backend in our view (-1: none / no health check). */
  ownerOf(vipIndex: number, backendIndex: number): number {
    return this.#entries[vipIndex]?.[backendIndex]?.owner ?? -1;
  }

  /** Every backend of every VIP, in config order (for the admin API). */
  states(): BackendStatus[] {
    const now = this.#now();
    return this.#all.map((e) => ({
      vipIndex: e.vipIndex,
      vip: e.vip.name,
      backendIndex: e.backendIndex,
      backend: e.backend.address.text,
      port: e.backend.port,
      weight: e.weightMark.weight ?? e.backend.weight,
      fileWeight: e.backend.weight,
      weightOverride: e.weightMark.weight,
      maintenance: e.maintMark.on,
      overrideBy: overrideBy(e, this.#ids),
      overrideAtMs: overrideAt(e),
      state: e.sm.state,
      health: e.sm.health,
      drained: e.sm.drained,
      drainedAtMs: e.sm.drained ? drainWallMs(e.drainStamp) : null,
      drainDeadlineMs: e.sm.drained && e.vip.drainTimeoutS > 0 ? drainWallMs(e.drainStamp) + e.vip.drainTimeoutS * 1000 : null,
      down: e.sm.down,
      eligible: e.sm.eligible && !e.maintMark.on,
      check: e.health?.type ?? null,
      owner: e.owner >= 0 ? this.#ids[e.owner]! : null,
      checkedHere: this.#running && e.owner === this.selfIndex && e.target !== null,
      decidedBy: e.decidedBy >= 0 ? this.#ids[e.decidedBy]! : null,
      reason: e.reason,
      sinceMs: e.sinceMs,
      successes: e.sm.successes,
      failures: e.sm.failures,
      lastCheck: e.lastCheck === null ? null : { ...e.lastCheck, by: this.#ids[e.lastCheck.by] ?? `balancer ${e.lastCheck.by}` },
      lastCheckAgoMs: e.lastCheck === null ? null : Math.max(0, now - e.lastCheck.atMs),
      changedAgoMs: e.sinceMs === null ? null : Math.max(0, now - e.sinceMs),
      downForMs: e.downSinceMs === null ? 0 : Math.max(0, now - e.downSinceMs),
      downTotalMs: e.downTotalMs + (e.downSinceMs === null ? 0 : Math.max(0, now - e.downSinceMs)),
    }));
  }

  // ---------------------------------------------------------------- operator

  /**
   * Drains a backend cluster-wide: no new flows (existing flows are the forwarder's
   * business). `vip` is a VIP name or index; `backendAddress` any spelling of the address.
   * Returns the transition (null if it was drained already). Throws TunlbError(ADMIN) when
   * there is no such VIP or backend.
   */
  drain(vip: string | number, backendAddress: string): BackendEvent | null {
    return this.#setDrain(this.#find(vip, backendAddress), true);
  }

  /** Ends a drain (cluster-wide). Same arguments and errors as drain(). */
  undrain(vip: string | number, backendAddress: string): BackendEvent | null {
    return this.#setDrain(this.#find(vip, backendAddress), false);
  }

  /**
   * Sets a backend's weight cluster-wide (`weight` 0..65535), or returns it to the file's
   * (null). `backendAddress` may carry the backend's port ("10.99.3.21:80", "[fd99:3::21]:80").
   * `origin` says who asked (e.g. "api 127.0.0.1:40112"). Returns the event, or null when that
   * weight is already in force by the same kind of mark (nothing sent). Throws TunlbError(ADMIN)
   * for an unknown VIP or backend, TunlbError(USAGE) for a weight out of range.
   */
  setWeight(vip: string | number, backendAddress: string, weight: number | null, origin: string): OverrideEvent | null {
    if (weight !== null && !(Number.isInteger(weight) && weight >= 0 && weight <= 65535)) {
      throw new TunlbError(ErrorCodes.USAGE, `weight must be an integer 0..65535 (or the file's), got ${weight}`);
    }
    const e = this.#findWithPort(vip, backendAddress);
    if (e.weightMark.weight === weight) return null;
    e.weightMark = { stamp: nextDrainStamp(e.weightMark.stamp, this.#wall(), this.selfIndex), weight };
    return this.#overrideChanged(e, 'backend_weight', origin);
  }

  /** Maintenance on / off cluster-wide. Same arguments and errors as setWeight(); null when already so. */
  setMaintenance(vip: string | number, backendAddress: string, on: boolean, origin: string): OverrideEvent | null {
    const e = this.#findWithPort(vip, backendAddress);
    if (e.maintMark.on === on) return null;
    e.maintMark = { stamp: nextDrainStamp(e.maintMark.stamp, this.#wall(), this.selfIndex), on };
    return this.#overrideChanged(e, 'backend_maintenance', origin);
  }

  /**
   * A reload: every runtime override returns to the file's values, cluster-wide (a new mark
   * for each backend with an override, which wins over the older ones everywhere). Returns the
   * events (one per mark written).
   */
  clearOverrides(origin: string): OverrideEvent[] {
    const out: OverrideEvent[] = [];
    for (const e of this.#all) {
      if (e.weightMark.weight !== null) {
        e.weightMark = { stamp: nextDrainStamp(e.weightMark.stamp, this.#wall(), this.selfIndex), weight: null };
        out.push(this.#overrideChanged(e, 'backend_weight', origin));
      }
      if (e.maintMark.on) {
        e.maintMark = { stamp: nextDrainStamp(e.maintMark.stamp, this.#wall(), this.selfIndex), on: false };
        out.push(this.#overrideChanged(e, 'backend_maintenance', origin));
      }
    }
    return out;
  }

  /**
   * Moves every backend drained past its VIP's drain_timeout_s to 'drained' (start() calls it
   * every tick; exposed for tests). Returns how many expired now.
   */
  expireDrains(): number {
    let n = 0;
    let wall = -1;
    for (const e of this.#all) {
      const timeoutS = e.vip.drainTimeoutS;
      if (timeoutS <= 0 || !e.sm.drained || e.sm.drainExpired || e.sm.removed) continue;
      if (wall < 0) wall = this.#wall();
      const at = drainWallMs(e.drainStamp);
      if (wall < at + timeoutS * 1000) continue;
      const origin = this.#ids[drainOrigin(e.drainStamp)] ?? `balancer ${drainOrigin(e.drainStamp)}`;
      const t = e.sm.expireDrain(`drain timeout ${timeoutS} s passed (drained by operator on ${origin} at ${new Date(at).toISOString()}); remaining flows are cut`);
      if (t) {
        n++;
        this.stats.drainsExpired++;
        this.#apply(e, t, this.#ids[this.selfIndex]!);
      }
    }
    return n;
  }

  // ---------------------------------------------------------------- cluster

  /**
   * Call when Membership's live array changed (optional: the tick notices within tickMs).
   * Moves checks of backends whose owner changed.
   */
  liveChanged(): void {
    this.#refreshOwnership(true);
  }

  /**
   * Balancer `sender` restarted (Membership's peer_restarted, after a fresh answer of its new
   * incarnation). Forgets the epoch and sequence of its reports, so that a restart whose
   * report epoch went back (its incarnation: clock behind and state lost, docs/failure-model.md
   * "Incarnations") is heard again. Reports of its previous run cannot come in after this:
   * the receiver drops them (stale_incarnation).
   */
  peerRestarted(sender: number): void {
    if (!(sender >= 0 && sender < this.#ids.length) || sender === this.selfIndex) return;
    this.#peerEpoch[sender] = 0;
    for (const e of this.#all) {
      if (e.lastFrom !== sender) continue;
      e.lastEpoch = 0;
      e.lastSeq = 0;
    }
  }

  /**
   * A verified HealthReport from balancer `sender` (after the receiver's MAC, cluster and
   * replay checks). Applies what the rules in the header allow; never throws on content.
   */
  onReport(sender: number, report: HealthReportBody): void {
    if (!(sender >= 0 && sender < this.#ids.length) || sender === this.selfIndex) return;
    const epoch = Number(report.epoch ?? 0);
    const seq = Number(report.sequence ?? 0);
    this.stats.reportsReceived++;
    if (epoch < this.#peerEpoch[sender]!) {
      // A report from a previous run of that balancer, delivered late.
      this.stats.entriesStale += report.backends?.length ?? 0;
      return;
    }
    this.#peerEpoch[sender] = epoch;
    const now = this.#now();
    this.#heardAt[sender] = now;
    const period = Number(report.periodMs ?? 0);
    this.#peerPeriod[sender] = period > 0 ? Math.min(period, 60_000) : DEFAULT_REPORT_INTERVAL_MS;
    this.#refreshOwnership(true);
    const id = this.#ids[sender]!;
    for (const b of report.backends ?? []) {
      const e = this.#entries[b.vip ?? 0]?.[b.backend ?? 0];
      if (e === undefined || e.idHash !== (b.idHash ?? 0) >>> 0) {
        this.stats.entriesUnknown++;
        continue;
      }
      this.#applyMarks(e, b, id);
      const stamp = Number(b.drainStamp ?? 0);
      if (stamp > e.drainStamp) {
        e.drainStamp = stamp;
        const origin = this.#ids[drainOrigin(stamp)] ?? `balancer ${drainOrigin(stamp)}`;
        const drained = b.drained === true;
        this.stats.drainsApplied++;
        const ev = this.#apply(e, e.sm.setDrained(drained, `${drained ? 'drained' : 'undrained'} by operator on ${origin}`, 'operator'), origin);
        if (ev !== null) this.#onPeerDrain?.(ev, drained, origin, id);
      }
      const st = b.state ?? HS.HEALTH_STATE_UNSPECIFIED;
      if (st !== HS.HEALTH_STATE_HEALTHY && st !== HS.HEALTH_STATE_UNHEALTHY) continue;
      if (e.health === null) continue;
      if (e.lastFrom === sender && (epoch < e.lastEpoch || (epoch === e.lastEpoch && seq <= e.lastSeq))) {
        this.stats.entriesStale++;
        continue;
      }
      if (e.owner !== sender && e.known) {
        this.stats.entriesNotOwner++;
        continue;
      }
      e.lastFrom = sender;
      e.lastEpoch = epoch;
      e.lastSeq = seq;
      e.known = true;
      e.decidedBy = sender;
      this.stats.entriesApplied++;
      const health = st === HS.HEALTH_STATE_HEALTHY ? 'healthy' : 'unhealthy';
      if (b.checkKnown === true && e.owner === sender) {
        e.lastCheck = {
          ok: b.checkOk === true,
          rttMs: (b.checkRttUs ?? 0) / 1000,
          reason: '',
          atMs: now - (b.checkAgeMs ?? 0),
          by: sender,
          failures: b.checkFailures ?? 0,
        };
      }
      const why = b.reason ? `${id}: ${b.reason}` : `reported by ${id}`;
      this.#apply(e, e.sm.setHealth(health, why, 'peer'), id);
    }
  }

  /**
   * The reports describing what this balancer owns and knows now (periodic form: health of
   * owned backends, every drain mark), split to the byte budget; always at least one.
   * start() sends these every period by itself; exposed for tools and tests.
   */
  report(): HealthReportBody[] {
    const items: tunlb.v1.BackendHealth.$Properties[] = [];
    for (const e of this.#all) {
      const owned = e.owner === this.selfIndex && e.health !== null && e.known && e.sm.health !== 'unknown';
      const marks = e.weightMark.stamp > 0 || e.maintMark.stamp > 0;
      if (!owned && e.drainStamp === 0 && !marks) continue;
      items.push(this.#item(e, owned, false, e.drainStamp > 0, marks));
    }
    return this.#pack(items, true);
  }

  // ---------------------------------------------------------------- reload

  /**
   * A new configuration (reload). Backends are matched by VIP name + address: kept ones keep
   * their state (and drain mark) under their new indexes, with new thresholds; removed ones
   * get a 'removed' event (with their OLD indexes) and are forgotten; new ones start as
   * unknown (checked) or healthy (unchecked). The balancer list must be the same (its
   * changes need a restart, like the rest of the cluster). Throws TunlbError(USAGE) if not.
   */
  updateConfig(config: Config): void {
    const ids = config.balancers.map((b) => b.id);
    if (ids.length !== this.#ids.length || ids.some((id, i) => id !== this.#ids[i])) {
      throw new TunlbError(ErrorCodes.USAGE, 'health monitor: the balancer list changed; restart the balancers to change it');
    }
    const old = this.#all;
    for (const e of old) this.#cancel(e);
    this.#config = config;
    const events = this.#buildEntries(config, old);
    this.#candidateMask = -1;
    this.#refreshOwnership(false);
    if (this.#running) for (const e of this.#all) if (e.owner === this.selfIndex && e.target) this.#scheduleFirst(e);
    const self = this.#ids[this.selfIndex]!;
    for (const [e, t] of events) this.#emit(e, t, self);
  }

  // ================================================================ internals

  /** Builds the entry tables (src/backends/health-entry.ts); returns the reload transitions to emit once they are in place. */
  #buildEntries(config: Config, previous: Entry[] | null): Array<[Entry, BackendTransition]> {
    const built = buildEntries(config, previous, this.#hashKey, this.#ids, this.#balancerSeeds);
    this.#entries = built.entries;
    this.#all = built.all;
    return built.events;
  }

  #item(e: Entry, health: boolean, withReason: boolean, drain: boolean, marks = false): tunlb.v1.BackendHealth.$Properties {
    return entryItem(e, this.selfIndex, this.#now(), health, withReason, drain, marks);
  }

  #find(vip: string | number, backendAddress: string): Entry {
    const v = typeof vip === 'number' ? this.#config.vips[vip] : this.#config.vips.find((x) => x.name === vip);
    if (!v) {
      throw new TunlbError(ErrorCodes.ADMIN, `no VIP ${JSON.stringify(vip)} (VIPs: ${this.#config.vips.map((x) => x.name).join(', ') || 'none'})`, { vip });
    }
    const want = normalizeAddress(backendAddress);
    const e = this.#entries[v.index]!.find((x) => x.backend.address.text === backendAddress || (want !== null && normalizeAddress(x.backend.address.text) === want));
    if (!e) {
      throw new TunlbError(ErrorCodes.ADMIN, `no backend ${backendAddress} in VIP ${v.name} (backends: ${v.backends.map((b) => b.address.text).join(', ')})`, {
        vip: v.name,
        backend: backendAddress,
      });
    }
    return e;
  }

  /** #find with an optional port: "10.99.3.21:80", "[fd99:3::21]:80" (it must be the backend's own port). */
  #findWithPort(vip: string | number, text: string): Entry {
    const m = /^\[([^\]]+)\](?::(\d+))?$|^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(text.trim());
    if (m === null) return this.#find(vip, text);
    const e = this.#find(vip, m[1] ?? m[3]!);
    const port = m[2] ?? m[4];
    if (port !== undefined && e.backend.port !== Number(port)) {
      const has = e.backend.port === null ? 'has no port of its own (it keeps the VIP port): name it without a port' : `has port ${e.backend.port}`;
      throw new TunlbError(ErrorCodes.ADMIN, `backend ${e.backend.address.text} of VIP ${e.vip.name} ${has}, not ${port}`, { vip: e.vip.name, backend: text });
    }
    return e;
  }

  #setDrain(e: Entry, drained: boolean): BackendEvent | null {
    const self = this.#ids[this.selfIndex]!;
    e.drainStamp = nextDrainStamp(e.drainStamp, this.#wall(), this.selfIndex);
    e.dirtyDrain = true;
    this.#queueFlush();
    return this.#apply(e, e.sm.setDrained(drained, `${drained ? 'drained' : 'undrained'} by operator on ${self}`, 'operator'), self);
  }

  /** A peer's runtime marks for `e` (sender id `from`): the larger stamp wins; malformed ones dropped and counted. */
  #applyMarks(e: Entry, b: tunlb.v1.IBackendHealth, from: string): void {
    const n = this.#ids.length;
    const w = decodeWeightMark(b, n);
    const m = decodeMaintenanceMark(b, n);
    for (const d of [w, m]) {
      if (d.kind === 'malformed') {
        // Peers repeat what they hold every period: log the 1st, 2nd, 4th, 8th, ... only (counted always).
        const n = ++this.stats.overridesMalformed;
        if ((n & (n - 1)) === 0) this.#log?.warn({ event: 'backend_override_malformed', vip: e.vip.name, backend: e.backend.address.text, from, why: d.why }, `runtime mark from ${from} for ${e.vip.name}/${e.backend.address.text} dropped: ${d.why} (${n} dropped so far)`);
      }
    }
    if (w.kind === 'mark' && wins(w.mark, e.weightMark)) {
      const changed = w.mark.weight !== e.weightMark.weight;
      e.weightMark = w.mark;
      this.stats.overridesApplied++;
      if (changed) this.#overrideChanged(e, 'backend_weight', `peer ${from}`, false);
    }
    if (m.kind === 'mark' && wins(m.mark, e.maintMark)) {
      const changed = m.mark.on !== e.maintMark.on;
      e.maintMark = m.mark;
      this.stats.overridesApplied++;
      if (changed) this.#overrideChanged(e, 'backend_maintenance', `peer ${from}`, false);
    }
  }

  /** After a mark of `e` changed: queue it for a change report (when written here), log, tell the listeners. */
  #overrideChanged(e: Entry, type: OverrideEvent['type'], origin: string, local = true): OverrideEvent {
    if (local) {
      e.dirtyOverride = true;
      this.#queueFlush();
    }
    const stamp = type === 'backend_weight' ? e.weightMark.stamp : e.maintMark.stamp;
    const by = this.#ids[drainOrigin(stamp)] ?? `balancer ${drainOrigin(stamp)}`;
    const weight = e.weightMark.weight ?? e.backend.weight;
    const what =
      type === 'backend_weight'
        ? e.weightMark.weight === null
          ? `weight back to the file's (${e.backend.weight})`
          : `weight ${weight} (file ${e.backend.weight})`
        : e.maintMark.on
          ? 'maintenance on: no new flows, flows continue, checks go on'
          : 'maintenance off';
    const ev: OverrideEvent = {
      type,
      vipIndex: e.vipIndex,
      vip: e.vip.name,
      backendIndex: e.backendIndex,
      backend: e.backend.address.text,
      weight,
      fileWeight: e.backend.weight,
      maintenance: e.maintMark.on,
      by,
      stampMs: drainWallMs(stamp),
      origin,
      reason: `${e.vip.name} ${e.backend.address.text}: ${what}, set on ${by}`,
    };
    this.#log?.info(
      { event: 'backend_override', type, vip: ev.vip, backend: ev.backend, weight, fileWeight: ev.fileWeight, maintenance: ev.maintenance, by, origin },
      `backend ${ev.vip}/${ev.backend}: ${what} (set on ${by}; ${origin})`,
    );
    for (const fn of [...this.#overrideListeners]) {
      try {
        fn(ev);
      } catch (err) {
        this.#log?.warn({ event: 'health_onchange_error', err: (err as Error)?.message }, 'health monitor: an override listener threw');
      }
    }
    return ev;
  }

  /** Candidate set from live + heard; on change recompute owners and move checks. */
  #refreshOwnership(act: boolean): void {
    const now = this.#now();
    let mask = 0;
    for (let i = 0; i < this.#ids.length; i++) {
      const c =
        this.#live[i] !== 0 &&
        (i === this.selfIndex || now - this.#heardAt[i]! <= CANDIDATE_PERIODS * this.#peerPeriod[i]!);
      this.#candidates[i] = c ? 1 : 0;
      if (c) mask |= 1 << i;
    }
    if (mask === this.#candidateMask) return;
    this.#candidateMask = mask;
    const cand = this.#candidates;
    const ids = this.#ids;
    let moved = 0;
    for (const e of this.#all) {
      if (e.health === null) {
        e.owner = -1;
        continue;
      }
      const best = ownerByScores(e.scores, ids, cand);
      const was = e.owner;
      if (best === was) continue;
      e.owner = best;
      moved++;
      if (!act || !this.#running) continue;
      if (was === this.selfIndex) this.#cancel(e);
      if (best === this.selfIndex) {
        // Takeover: start from the last shared state, count rise/fall afresh.
        e.sm.resetCounters();
        this.#scheduleFirst(e);
      }
    }
    if (moved > 0) {
      this.stats.ownershipChanges += moved;
      this.#log?.debug?.({ event: 'health_owners', candidates: ids.filter((_, i) => cand[i]), moved }, `health check owners: ${moved} backends moved`);
    }
  }

  #tick(): void {
    if (!this.#running) return;
    this.#refreshOwnership(true);
    this.expireDrains();
    this.#tickTimer = this.#timers.setTimeout(() => this.#tick(), this.#tickMs);
  }

  #periodic(): void {
    if (!this.#running) return;
    this.#refreshOwnership(true);
    for (const body of this.report()) this.#send(body);
    this.#reportTimer = this.#timers.setTimeout(() => this.#periodic(), this.#reportIntervalMs);
  }

  #scheduleFirst(e: Entry): void {
    if (!e.health) return;
    this.#cancel(e);
    // Spread over one interval so a takeover or a start does not check everything at once.
    this.#schedule(e, this.#random() * e.health.intervalMs);
  }

  #schedule(e: Entry, delayMs: number): void {
    const token = e.token;
    e.timer = this.#timers.setTimeout(() => {
      e.timer = null;
      if (token === e.token) this.#check(e);
    }, Math.max(0, delayMs));
  }

  #cancel(e: Entry): void {
    e.token++;
    if (e.timer !== null) this.#timers.clearTimeout(e.timer);
    if (e.watchdog !== null) this.#timers.clearTimeout(e.watchdog);
    e.timer = null;
    e.watchdog = null;
  }

  #check(e: Entry): void {
    if (!this.#running || e.owner !== this.selfIndex || !e.target || !e.health) return;
    const token = e.token;
    const target = e.target;
    const interval = e.health.intervalMs;
    const started = this.#now();
    this.stats.checksRun++;
    // Checks honour their timeout themselves; the watchdog only guards against a runner that
    // never settles (the backend would never be checked again).
    let settled = false;
    const settle = (r: CheckResult): void => {
      if (settled) return;
      settled = true;
      if (token === e.token && e.watchdog !== null) {
        this.#timers.clearTimeout(e.watchdog);
        e.watchdog = null;
      }
      this.#onResult(e, token, started, interval, r);
    };
    const watchdogMs = target.timeoutMs + WATCHDOG_GRACE_MS;
    e.watchdog = this.#timers.setTimeout(() => settle({ ok: false, rttMs: watchdogMs, reason: `check did not finish within ${watchdogMs} ms` }), watchdogMs);
    let p: Promise<CheckResult>;
    try {
      p = this.#runCheck(target);
    } catch (err) {
      p = Promise.resolve({ ok: false, rttMs: 0, reason: `check error: ${(err as Error).message}` });
    }
    p.then(settle, (err: unknown) => settle({ ok: false, rttMs: 0, reason: `check error: ${(err as Error)?.message ?? String(err)}` }));
  }

  #onResult(e: Entry, token: number, started: number, interval: number, r: CheckResult): void {
    if (!this.#running || token !== e.token || e.owner !== this.selfIndex) return;
    const now = this.#now();
    if (!r.ok) this.stats.checksFailed++;
    e.known = true;
    e.decidedBy = this.selfIndex;
    const t = e.sm.checkResult(r.ok, r.reason);
    e.lastCheck = { ok: r.ok, rttMs: r.rttMs, reason: r.reason, atMs: now, by: this.selfIndex, failures: e.sm.failures };
    if (t && (t.fromHealth !== t.toHealth)) e.dirtyHealth = true;
    this.#apply(e, t, this.#ids[this.selfIndex]!);
    if (e.dirtyHealth) this.#queueFlush();
    // Next check one (jittered, never longer) interval after this one started.
    const next = started + interval * (1 - JITTER * this.#random());
    this.#schedule(e, next - now);
  }

  #apply(e: Entry, t: BackendTransition | null, by: string): BackendEvent | null {
    if (!t) return null;
    return this.#emit(e, t, by);
  }

  #emit(e: Entry, t: BackendTransition, by: string): BackendEvent {
    const ev: BackendEvent = {
      ...t,
      vipIndex: e.vipIndex,
      vip: e.vip.name,
      backendIndex: e.backendIndex,
      backend: e.backend.address.text,
      by,
      atMs: this.#now(),
    };
    e.reason = t.reason;
    e.sinceMs = ev.atMs;
    // Time down (BackendState.down: removed, drained past its timeout, or unhealthy).
    const wasDown = t.from === 'removed' || t.from === 'drained' || t.fromHealth === 'unhealthy';
    if (!wasDown && e.sm.down) e.downSinceMs = ev.atMs;
    else if (wasDown && !e.sm.down && e.downSinceMs !== null) {
      e.downTotalMs += ev.atMs - e.downSinceMs;
      e.downSinceMs = null;
    }
    if (this.#log) {
      const bad = e.sm.down; // its established flows must leave: worth a warning
      this.#log[bad ? 'warn' : 'info'](
        {
          event: 'backend_state',
          vip: ev.vip,
          backend: ev.backend,
          from: t.from,
          to: t.to,
          fromHealth: t.fromHealth,
          toHealth: t.toHealth,
          reason: t.reason,
          cause: t.cause,
          by,
          eligible: t.eligible,
        },
        `backend ${ev.vip}/${ev.backend}: ${t.from} -> ${t.to}${t.from === t.to ? ` (health ${t.fromHealth} -> ${t.toHealth})` : ''}: ${t.reason}`,
      );
    }
    try {
      this.#onChange(e.vipIndex, e.backendIndex, ev);
    } catch (err) {
      this.#log?.warn({ event: 'health_onchange_error', err: (err as Error)?.message }, 'health monitor: onChange threw');
    }
    return ev;
  }

  // ---------------------------------------------------------------- reports

  #queueFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      this.#flushChanges();
    });
  }

  /** Change report: owned health changes (with reasons) and drain marks set here. */
  #flushChanges(): void {
    const items: tunlb.v1.BackendHealth.$Properties[] = [];
    for (const e of this.#all) {
      if (!e.dirtyHealth && !e.dirtyDrain && !e.dirtyOverride) continue;
      const health = e.dirtyHealth && e.owner === this.selfIndex && e.health !== null && e.sm.health !== 'unknown';
      const drain = e.dirtyDrain && e.drainStamp > 0;
      const marks = e.dirtyOverride;
      e.dirtyHealth = false;
      e.dirtyDrain = false;
      e.dirtyOverride = false;
      if (health || drain || marks) items.push(this.#item(e, health, health, drain, marks));
    }
    if (items.length === 0) return;
    for (const body of this.#pack(items, false)) this.#send(body);
  }

  /** Splits items into report bodies of at most the report budget (src/backends/health-report.ts). */
  #pack(items: tunlb.v1.BackendHealth.$Properties[], periodic: boolean): HealthReportBody[] {
    return packReports(items, () => ({ epoch: this.epoch, sequence: 0, periodic, periodMs: this.#reportIntervalMs, backends: [] }), this.#budget);
  }

  #send(body: HealthReportBody): void {
    body.sequence = ++this.#sequence;
    this.stats.reportsSent++;
    try {
      this.#broadcast(body);
    } catch (err) {
      this.#log?.warn({ event: 'health_report_send_failed', err: (err as Error)?.message }, 'health report not sent');
    }
  }
}

export type { CheckResult, CheckTarget } from './checks';
export type { BackendStateName, HealthName, TransitionCause, BackendTransition } from './backend-state';
