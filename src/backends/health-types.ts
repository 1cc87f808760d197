/**
 * The health monitor's public shapes and defaults (src/backends/health-monitor.ts): what
 * `onChange` and the admin API get, its options and counters, the injectable timers and log.
 */
import type { Config } from '../config';
import type { BodyFields } from '../protocol';
import type { BackendStateName, BackendTransition, HealthName } from './backend-state';
import type { CheckResult, CheckTarget } from './checks';

/** The HealthReport body as sent (broadcast) and as received (onReport). */
export type HealthReportBody = BodyFields['health'];

/** Default period of periodic reports. */
export const DEFAULT_REPORT_INTERVAL_MS = 1000;
/** How often the monitor looks at `live` (and peers' report silence) for ownership changes. */
export const DEFAULT_TICK_MS = 100;
/** Check intervals are shortened by up to this fraction at random (never lengthened). */
export const JITTER = 0.1;
/** A check runner that has not settled this long after its timeout counts as failed. */
export const WATCHDOG_GRACE_MS = 1000;

/** A transition with where it happened; what `onChange` gets and the owner logs. */
export interface BackendEvent extends BackendTransition {
  readonly vipIndex: number;
  readonly vip: string;
  readonly backendIndex: number;
  /** Backend address text. */
  readonly backend: string;
  /** Balancer id whose check or command decided it (this balancer's id for local checks). */
  readonly by: string;
  /** nowMs() when it happened. */
  readonly atMs: number;
}

/**
 * A runtime override changed here (src/backends/runtime-override.ts): set by a command on this
 * balancer, learnt from a peer's report, or cleared by a reload. What the event history shows.
 */
export interface OverrideEvent {
  readonly type: 'backend_weight' | 'backend_maintenance';
  readonly vipIndex: number;
  readonly vip: string;
  readonly backendIndex: number;
  readonly backend: string;
  /** Weight in force after the change (the override, or the file's) and the file's. */
  readonly weight: number;
  readonly fileWeight: number;
  readonly maintenance: boolean;
  /** Balancer id that took the command (the mark's stamp names it). */
  readonly by: string;
  /** Wall ms of the command (from its stamp). */
  readonly stampMs: number;
  /**
   * Where the change came from here: the command's caller on this balancer (e.g. "api
   * 127.0.0.1", "reload on lb1 (api 127.0.0.1)"), or "peer <id>" when learnt from a peer's report.
   */
  readonly origin: string;
  /** One line, e.g. "web4 10.99.3.21: weight 0 (file 1), set on lb1". */
  readonly reason: string;
}

/** One backend as the admin API shows it. */
export interface BackendStatus {
  readonly vipIndex: number;
  readonly vip: string;
  readonly backendIndex: number;
  readonly backend: string;
  readonly port: number | null;
  /** Weight in force: the runtime override (`tunlb weight`) when there is one, else the file's. */
  readonly weight: number;
  /** The configuration file's weight. */
  readonly fileWeight: number;
  /** The runtime weight override, null when the file's weight applies. */
  readonly weightOverride: number | null;
  /** Maintenance (`tunlb maintenance`): no new flows, flows continue, checks go on; cluster-wide. */
  readonly maintenance: boolean;
  /** Who set the override / maintenance and when (wall ms); null without one. */
  readonly overrideBy: string | null;
  readonly overrideAtMs: number | null;
  readonly state: BackendStateName;
  readonly health: HealthName;
  readonly drained: boolean;
  /** Wall ms (Date.now) of the drain command, null when not drained. */
  readonly drainedAtMs: number | null;
  /** Wall ms when the drain timeout cuts the remaining flows; null: not drained, or no timeout. */
  readonly drainDeadlineMs: number | null;
  /** Established flows leave it (the forwarder's backendUp = 0): unhealthy, drained, removed. */
  readonly down: boolean;
  /** state === 'healthy' and not in maintenance (weight > 0 is the table's business). */
  readonly eligible: boolean;
  /** Check type, or null without a health check (always healthy). */
  readonly check: 'tcp' | 'http' | 'icmp' | null;
  /** Balancer id that checks it in this balancer's view (null without a check). */
  readonly owner: string | null;
  readonly checkedHere: boolean;
  /** Who decided the current health: a balancer id, or null (no result yet / no check). */
  readonly decidedBy: string | null;
  /** Reason of the last transition. */
  readonly reason: string;
  /** nowMs() of the last transition (null: none yet). */
  readonly sinceMs: number | null;
  readonly successes: number;
  readonly failures: number;
  /**
   * The last check result known here: this balancer's own, or the one the backend's health
   * owner reported (`by`: the balancer that ran it); null before any (or without a check).
   * `failures`: consecutive failures at that balancer.
   */
  readonly lastCheck: (CheckResult & { readonly atMs: number; readonly by: string; readonly failures: number }) | null;
  /** ms since the last check completed (null: none known); nowMs() - lastCheck.atMs at the call. */
  readonly lastCheckAgoMs: number | null;
  /** ms since the last transition (null: none yet). */
  readonly changedAgoMs: number | null;
  /** ms the backend has been down (established flows leave it: unhealthy, drained, removed); 0 when up. */
  readonly downForMs: number;
  /** ms down in all, since this balancer knows it (the current outage included). */
  readonly downTotalMs: number;
}

export interface HealthMonitorStats {
  checksRun: number;
  checksFailed: number;
  reportsSent: number;
  reportsReceived: number;
  entriesApplied: number;
  /** Entries from a sender that is not the owner in our view. */
  entriesNotOwner: number;
  /** Entries older than what we applied (sequence / epoch). */
  entriesStale: number;
  /** Entries for a (vip, backend) we do not have, or whose id hash differs (another config). */
  entriesUnknown: number;
  drainsApplied: number;
  /** Runtime marks (weight, maintenance) from peers that replaced the one held here. */
  overridesApplied: number;
  /** Runtime marks dropped as malformed (stamp not a safe integer or naming no balancer, weight > 65535). */
  overridesMalformed: number;
  /** Drains whose timeout passed here ('draining' → 'drained'). */
  drainsExpired: number;
  ownershipChanges: number;
}

/** Timer functions (injectable for tests with a fake clock). */
export interface TimerFns {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Minimal logger (pino-compatible). */
export interface MonitorLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug?(obj: object, msg?: string): void;
}

export interface HealthMonitorOptions {
  config: Config;
  /** This balancer's index in config.balancers. */
  selfIndex: number;
  /** The cluster hash key (src/decision/hash-key.ts). */
  hashKey: Uint32Array;
  /** Membership.live: read, never written (live[i] !== 0 = live). */
  live: Uint8Array;
  /** Monotonic ms (performance.now in production, a fake clock in tests). */
  nowMs: () => number;
  /** Sends one HealthReport to every peer (sealed and authenticated by the caller). */
  broadcast: (body: HealthReportBody) => void;
  /** Every transition, after it is logged. */
  onChange: (vipIndex: number, backendIndex: number, event: BackendEvent) => void;
  /**
   * A drain mark from a peer's report changed a backend here (an operator's drain / undrain on
   * another balancer, propagated): `origin` is the id of the balancer that took the command,
   * `sender` the peer whose report carried it. For the operator event history
   * (src/control/operator-events.ts). Called after onChange.
   */
  onPeerDrain?: (event: BackendEvent, drained: boolean, origin: string, sender: string) => void;
  log?: MonitorLog;
  /** The check runner (default: src/backends/checks.ts runCheck with a shared IcmpPinger). */
  runCheck?: (target: CheckTarget) => Promise<CheckResult>;
  /** Default: global setTimeout/clearTimeout (timers unref'd). */
  timers?: TimerFns;
  /** [0, 1) random source for jitter (default Math.random). */
  random?: () => number;
  /** Wall clock for drain stamps (default Date.now). */
  wallClockMs?: () => number;
  /** This monitor's report epoch (default newIncarnation()). Must grow across restarts. */
  epoch?: number;
  reportIntervalMs?: number;
  reportBudget?: number;
  tickMs?: number;
}
