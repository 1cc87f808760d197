/**
 * The state of one backend (one entry of one VIP's `backends`) as the control plane sees it,
 * and the rules that move it. Pure: no timers, no I/O; time comes in as arguments. One
 * `BackendState` per (VIP, backend); src/backends/health-monitor.ts owns them.
 *
 * The state is the product of three facts:
 *   health   unknown | healthy | unhealthy   (checks against rise/fall, or a peer's report)
 *   drained  boolean                         (operator: drain / undrain, cluster-wide)
 *   expired  boolean                         (the VIP's drain_timeout_s passed while drained)
 *   removed  boolean                         (the backend left the config on reload; final)
 * and is shown as ONE name:
 *   removed ? 'removed' : drained ? (expired ? 'drained' : 'draining') : health.
 *
 *   'draining'  no new flows; established flows stay on the backend until they end.
 *   'drained'   no new flows, and the backend counts as DOWN for established flows (like
 *               unhealthy: the forwarder resets their TCP flows and moves UDP/ICMP ones).
 *
 *   eligible for new flows  <=>  state === 'healthy'  (healthy, not draining, not removed;
 *                                                      weight > 0 is checked by the table)
 *
 * A backend without a health check is healthy from the start and never changes health.
 * A backend with one starts `unknown` (not eligible) and the FIRST result decides at once;
 * after that rise/fall apply. Consecutive counters: a success clears the failure count and
 * vice versa.
 *
 * | from            | event                                         | to          | reason (example)                                  |
 * |-----------------|-----------------------------------------------|-------------|---------------------------------------------------|
 * | unknown         | check ok (first result)                       | healthy     | "first check passed: tcp connect in 0.3 ms"       |
 * | unknown         | check failed (first result)                   | unhealthy   | "first check failed: connect ECONNREFUSED"        |
 * | healthy         | `fall`-th consecutive failure                 | unhealthy   | "3 consecutive failures: connect ECONNREFUSED"    |
 * | unhealthy       | `rise`-th consecutive success                 | healthy     | "2 consecutive successes: http 200 in 1.1 ms"     |
 * | healthy/unhealthy/unknown | peer report (the backend's health owner) with another health | that health | "lb2: 3 consecutive failures: …" |
 * | unknown/healthy/unhealthy | drain (operator, any balancer)       | draining    | "drained by operator on lb1"                      |
 * | draining        | undrain                                       | its health  | "undrained by operator on lb1"                    |
 * | draining/drained| health changes (checks or report)             | (the same)  | event with fromHealth/toHealth (still no new flows) |
 * | draining        | drain timeout passes (monitor's clock)        | drained     | "drain timeout 300 s passed (drained by operator on lb1)" |
 * | drained         | undrain                                       | its health  | "undrained by operator on lb1"                    |
 * | any but removed | health check removed from the config (reload) | healthy*    | "no health check configured"                      |
 * | any but removed | backend removed from the config (reload)      | removed     | "removed from the configuration"                  |
 * | removed         | anything                                      | (no change) | removed is final: a re-added backend is a new one |
 *   (* draining stays draining; only its health becomes healthy)
 *
 * Every call that changes the state name OR the health returns a `BackendTransition`
 * (from, to, fromHealth, toHealth, reason, eligibility before/after) for the owner to log;
 * calls that change nothing return null.
 */

/** Health as checks (or the health owner's reports) see it. */
export type HealthName = 'unknown' | 'healthy' | 'unhealthy';
/** The one state name shown to operators and used in events. */
export type BackendStateName = 'unknown' | 'healthy' | 'unhealthy' | 'draining' | 'drained' | 'removed';

/** What caused a transition. */
export type TransitionCause = 'check' | 'peer' | 'operator' | 'config' | 'timeout';

/** One state change, to be logged by the owner (`reason` is one human-readable line). */
export interface BackendTransition {
  readonly from: BackendStateName;
  readonly to: BackendStateName;
  readonly fromHealth: HealthName;
  readonly toHealth: HealthName;
  readonly reason: string;
  readonly cause: TransitionCause;
  /** Eligibility for new flows before and after (rebuild the backend table when they differ). */
  readonly wasEligible: boolean;
  readonly eligible: boolean;
}

export interface BackendStateOptions {
  /** True when the backend has a health check; false = always healthy. */
  readonly checked: boolean;
  /** Consecutive successes before an unhealthy backend is healthy (1..100). */
  readonly rise: number;
  /** Consecutive failures before a healthy backend is unhealthy (1..100). */
  readonly fall: number;
}

function plural(n: number, one: string, many: string): string {
  return `${n} consecutive ${n === 1 ? one : many}`;
}

export class BackendState {
  #health: HealthName;
  #drained = false;
  #expired = false;
  #removed = false;
  #checked: boolean;
  #rise: number;
  #fall: number;
  #successes = 0;
  #failures = 0;

  constructor(opts: BackendStateOptions) {
    this.#checked = opts.checked;
    this.#rise = Math.max(1, opts.rise | 0);
    this.#fall = Math.max(1, opts.fall | 0);
    this.#health = opts.checked ? 'unknown' : 'healthy';
  }

  get health(): HealthName {
    return this.#health;
  }
  get drained(): boolean {
    return this.#drained;
  }
  /** The drain timeout passed while drained (state 'drained'); cleared by undrain. */
  get drainExpired(): boolean {
    return this.#expired;
  }
  get removed(): boolean {
    return this.#removed;
  }
  get checked(): boolean {
    return this.#checked;
  }
  get rise(): number {
    return this.#rise;
  }
  get fall(): number {
    return this.#fall;
  }
  /** Consecutive successes / failures so far (the one not counting is 0). */
  get successes(): number {
    return this.#successes;
  }
  get failures(): number {
    return this.#failures;
  }

  /** removed ? 'removed' : drained ? (expired ? 'drained' : 'draining') : health. */
  get state(): BackendStateName {
    return this.#removed ? 'removed' : this.#drained ? (this.#expired ? 'drained' : 'draining') : this.#health;
  }

  /**
   * Established flows must leave this backend (the forwarder treats it as down): unhealthy,
   * drained past its timeout, or removed. A 'draining' backend keeps them.
   */
  get down(): boolean {
    return this.#removed || this.#expired || this.#health === 'unhealthy';
  }

  /** New flows may go here: healthy, not draining, not removed. */
  get eligible(): boolean {
    return !this.#removed && !this.#drained && this.#health === 'healthy';
  }

  /**
   * One check result. `detail` says what the check saw ("connect ECONNREFUSED", "http 200 in
   * 1.1 ms"). Ignored (null) for a removed or unchecked backend.
   */
  checkResult(ok: boolean, detail: string): BackendTransition | null {
    if (this.#removed || !this.#checked) return null;
    if (ok) {
      this.#failures = 0;
      this.#successes = Math.min(this.#successes + 1, 1 << 30);
      if (this.#health === 'unknown') return this.#setHealth('healthy', `first check passed: ${detail}`, 'check');
      if (this.#health === 'unhealthy' && this.#successes >= this.#rise) {
        return this.#setHealth('healthy', `${plural(this.#successes, 'success', 'successes')}: ${detail}`, 'check');
      }
      return null;
    }
    this.#successes = 0;
    this.#failures = Math.min(this.#failures + 1, 1 << 30);
    if (this.#health === 'unknown') return this.#setHealth('unhealthy', `first check failed: ${detail}`, 'check');
    if (this.#health === 'healthy' && this.#failures >= this.#fall) {
      return this.#setHealth('unhealthy', `${plural(this.#failures, 'failure', 'failures')}: ${detail}`, 'check');
    }
    return null;
  }

  /**
   * Health decided elsewhere: the backend's health owner reported it (cause 'peer'). Counters
   * restart (a later local check counts rise/fall from here). Null when nothing changes.
   */
  setHealth(health: 'healthy' | 'unhealthy', reason: string, cause: TransitionCause = 'peer'): BackendTransition | null {
    if (this.#removed || !this.#checked) return null;
    if (health === this.#health) return null;
    this.#successes = 0;
    this.#failures = 0;
    return this.#setHealth(health, reason, cause);
  }

  /** Forget the consecutive counts (e.g. when this balancer takes over checking the backend). */
  resetCounters(): void {
    this.#successes = 0;
    this.#failures = 0;
  }

  /** Drain (true) or undrain (false). Null when already so, or removed. */
  setDrained(drained: boolean, reason: string, cause: TransitionCause = 'operator'): BackendTransition | null {
    if (this.#removed || drained === this.#drained) return null;
    const before = this.#snapshot();
    this.#drained = drained;
    this.#expired = false;
    return this.#transition(before, reason, cause);
  }

  /**
   * The drain timeout passed: 'draining' → 'drained'. Null unless draining (not drained, already
   * expired, or removed: nothing to do). The caller (the health monitor) owns the clock.
   */
  expireDrain(reason: string): BackendTransition | null {
    if (this.#removed || !this.#drained || this.#expired) return null;
    const before = this.#snapshot();
    this.#expired = true;
    return this.#transition(before, reason, 'timeout');
  }

  /**
   * New thresholds / check presence after a reload. Removing the check makes the backend
   * healthy ("no health check configured"); adding one keeps the current health (so a reload
   * does not take a serving backend out) and counts from zero.
   */
  reconfigure(opts: BackendStateOptions): BackendTransition | null {
    if (this.#removed) return null;
    this.#rise = Math.max(1, opts.rise | 0);
    this.#fall = Math.max(1, opts.fall | 0);
    const wasChecked = this.#checked;
    this.#checked = opts.checked;
    if (wasChecked !== opts.checked) this.resetCounters();
    if (!opts.checked && this.#health !== 'healthy') return this.#setHealth('healthy', 'no health check configured', 'config');
    return null;
  }

  /** The backend left the configuration (reload). Final. */
  remove(reason = 'removed from the configuration'): BackendTransition | null {
    if (this.#removed) return null;
    const before = this.#snapshot();
    this.#removed = true;
    return this.#transition(before, reason, 'config');
  }

  #setHealth(health: HealthName, reason: string, cause: TransitionCause): BackendTransition | null {
    const before = this.#snapshot();
    this.#health = health;
    return this.#transition(before, reason, cause);
  }

  #snapshot(): { state: BackendStateName; health: HealthName; eligible: boolean } {
    return { state: this.state, health: this.#health, eligible: this.eligible };
  }

  #transition(before: { state: BackendStateName; health: HealthName; eligible: boolean }, reason: string, cause: TransitionCause): BackendTransition | null {
    const to = this.state;
    if (to === before.state && this.#health === before.health) return null;
    return {
      from: before.state,
      to,
      fromHealth: before.health,
      toHealth: this.#health,
      reason,
      cause,
      wasEligible: before.eligible,
      eligible: this.eligible,
    };
  }
}
