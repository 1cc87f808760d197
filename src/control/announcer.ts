/**
 * The VIP announcement of one balancer (ECMP entry, docs/entry.md): while the
 * balancer is ready to serve, one route `VIP dev <tun>` per VIP lives in kernel table
 * `announce.table`, which a routing daemon (BIRD 2: `protocol kernel { kernel table N; learn;
 * }`) learns and announces to the routers by BGP. tunlb speaks no BGP itself: it only decides
 * whether to announce.
 *
 * Ready = every one of these holds (each is a "hold" with a reason; see `hold` / `release`):
 *   'starting'   released once bulk sync is done and the read loops are armed (SERVING)
 *   'drained'    `tunlb drain-self` (maintenance), released by `undrain-self`
 *   'leaving'    a planned stop (SIGTERM/SIGINT): never released
 *   'watchdog'   the event loop stalled past `announce.watchdog_ms` (below); released when it
 *                runs again
 * When the process dies, the kernel removes the TUN device and every route through it: the
 * daemon withdraws by construction (no cooperation of the dead process needed).
 *
 * Route changes run off the hot path, one at a time, through `ip route` (execFile; iproute2
 * is a dependency of the lab and of every host running a routing daemon): `replace` to
 * announce, `del` to withdraw. A failed change is logged and retried by the next change of
 * readiness (and at most every RETRY_MS while it stays wrong).
 *
 * Readiness file (`announce.ready_file`): "0\n" while announced, "1\n" otherwise; written
 * before a withdrawal returns and after an announcement is in place. keepalived's track_file
 * reads it so the servers' VRRP gateway follows the same readiness (scripts/lab-lib.sh).
 *
 * Watchdog: a worker thread (its own event loop) reads a heartbeat (a timestamp) the main loop
 * writes every watchdog_ms / 8. When the loop has not run for more than watchdog_ms (no beat
 * for watchdog_ms + one beat period), the worker deletes the
 * routes and writes "1" to the ready file itself (synchronously: the main loop is the one that
 * is stuck), and flags it; the main loop, when it runs again, sees the flag, logs the event
 * (with the stall's length) and re-announces. Without this, a wedged balancer would keep
 * receiving its share of the VIP traffic (the router sees a live BGP/BFD session: the daemon
 * is fine) while its peers had already declared it dead.
 *
 * Events (`events`, oldest first, at most EVENT_RING): announce / withdraw per VIP with the
 * reason; the admin endpoint merges them into its event list.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../logger';

const EVENT_RING = 100;
const RETRY_MS = 1000;

export type AnnounceHold = 'starting' | 'drained' | 'leaving' | 'watchdog';

export interface AnnounceVip {
  readonly name: string;
  /** Address text (IPv4 or IPv6). */
  readonly address: string;
  readonly family: 4 | 6;
}

export interface AnnouncerOptions {
  /** Kernel table; null = no announcement (the holds and the ready file are still kept). */
  table: number | null;
  /** The TUN device the routes point into. */
  device: string;
  vips: readonly AnnounceVip[];
  /** Readiness file ("{id}" already replaced), or null. */
  readyFile: string | null;
  /** Watchdog budget in ms; 0 = no watchdog. */
  watchdogMs: number;
  log: Logger;
  /** Runs `ip ARGS...`; resolves with an error text, or null on success (tests inject it). */
  ip?: (args: string[]) => Promise<string | null>;
  /** Start the watchdog thread (default true when watchdogMs > 0; tests turn it off). */
  watchdog?: boolean;
}

export interface AnnounceEvent {
  at: string;
  type: 'vip_announced' | 'vip_withdrawn' | 'watchdog_withdrew' | 'announce_failed';
  vip?: string;
  reason: string;
}

export interface VipAnnounceState {
  name: string;
  address: string;
  announced: boolean;
  /** Why it is (not) announced: "ready", or the holds. */
  reason: string;
  /** ISO time of the last change. */
  since: string;
}

/** `ip` through execFile, bounded; resolves with stderr on failure. */
function runIp(args: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('ip', args, { timeout: 5000 }, (err, _out, stderr) => {
      resolve(err === null ? null : (String(stderr).trim() || err.message));
    });
  });
}

/** The route arguments (after `ip -4|-6 route replace|del`) of one VIP. */
function routeArgs(v: AnnounceVip, device: string, table: number): string[] {
  return [v.family === 4 ? '-4' : '-6', 'route', '', `${v.address}/${v.family === 4 ? 32 : 128}`, 'dev', device, 'table', String(table)];
}

/**
 * The watchdog thread's code (plain JS, run with `eval: true`). workerData: { hb, beat, budgetMs,
 * periodMs, routes: argv lists for `ip ... route del`, readyFile }. hb = Int32Array(3) on a
 * SharedArrayBuffer: [0] unused, [1] stop request, [2] set to the stall (ms, >= 1) when the
 * worker withdrew (the main loop resets it). beat = Float64Array(1) on another
 * SharedArrayBuffer: the main loop's last heartbeat, absolute ms (performance.timeOrigin +
 * performance.now(): the same clock in both threads; an aligned 8-byte store is not torn on
 * the platforms Node runs on). The loop beats every periodMs, so "no beat for budget + period"
 * means the loop has not run for more than the budget; the worker checks every period / 2.
 */
const WATCHDOG_SOURCE = `
const { workerData } = require('node:worker_threads');
const { execFileSync } = require('node:child_process');
const { writeFileSync } = require('node:fs');
const hb = new Int32Array(workerData.hb);
const beat = new Float64Array(workerData.beat);
const limit = workerData.budgetMs + workerData.periodMs;
const step = Math.max(1, Math.floor(workerData.periodMs / 2));
const clock = () => performance.timeOrigin + performance.now();
while (Atomics.load(hb, 1) === 0) {
  Atomics.wait(hb, 1, 0, step);
  const since = clock() - beat[0];
  if (since <= limit || Atomics.load(hb, 2) !== 0) continue;
  if (workerData.readyFile) { try { writeFileSync(workerData.readyFile, '1\\n'); } catch {} }
  for (const args of workerData.routes) { try { execFileSync('ip', args, { stdio: 'ignore', timeout: 2000 }); } catch {} }
  Atomics.store(hb, 2, Math.max(1, Math.round(since)));
}
`;

export class Announcer {
  readonly table: number | null;
  readonly events: AnnounceEvent[] = [];
  /** Counters: route changes made and failed, watchdog withdrawals. */
  readonly stats = { announced: 0, withdrawn: 0, failures: 0, watchdogWithdrawals: 0 };
  readonly #opts: AnnouncerOptions;
  readonly #ip: (args: string[]) => Promise<string | null>;
  readonly #holds = new Map<AnnounceHold, string>([['starting', 'bulk sync not done']]);
  /** The VIPs announced while ready (the config's; replaced by setVips on a reload). */
  #vips: readonly AnnounceVip[];
  /** Per VIP (same order as #vips): what the kernel table holds as far as we know. */
  #state: VipAnnounceState[];
  /** VIPs a reload removed whose route may still be in the table: withdrawn by the next #run. */
  #retired: Array<{ v: AnnounceVip; s: VipAnnounceState }> = [];
  #busy = false;
  #dirty = false;
  #closed = false;
  #retry: NodeJS.Timeout | undefined;
  #worker: Worker | undefined;
  #hb: Int32Array | undefined;
  #beat: NodeJS.Timeout | undefined;
  #idle: Array<() => void> = [];

  constructor(opts: AnnouncerOptions) {
    this.#opts = opts;
    this.table = opts.table;
    this.#ip = opts.ip ?? runIp;
    const now = new Date().toISOString();
    this.#vips = opts.vips;
    this.#state = opts.vips.map((v) => ({ name: v.name, address: v.address, announced: false, reason: opts.table === null ? 'announce.table not set' : this.#why(), since: now }));
    this.#writeReady(false);
    if (opts.table !== null && opts.watchdogMs > 0 && opts.watchdog !== false) this.#startWatchdog();
  }

  /** True when no hold is set. */
  get ready(): boolean {
    return this.#holds.size === 0;
  }

  /** Per VIP: announced or not, and why. */
  vips(): VipAnnounceState[] {
    return this.#state.map((s) => ({ ...s }));
  }

  /** The holds in force, e.g. { drained: 'tunlb drain-self' }. */
  holds(): Record<string, string> {
    return Object.fromEntries(this.#holds);
  }

  /** Sets a hold (withdraws if it was ready). Resolves when the kernel table reflects it. */
  hold(h: AnnounceHold, reason: string): Promise<void> {
    this.#holds.set(h, reason);
    return this.#apply();
  }

  /** Clears a hold (announces once no hold is left). Resolves when applied. */
  release(h: AnnounceHold): Promise<void> {
    if (h === 'leaving') return this.#apply();
    this.#holds.delete(h);
    return this.#apply();
  }

  /**
   * The VIP list changed (a reload): VIPs no longer listed are withdrawn at once (whatever the
   * holds), new ones are announced when ready, kept ones (same name and address) stay as they
   * are. Resolves when the kernel table reflects it.
   */
  setVips(vips: readonly AnnounceVip[]): Promise<void> {
    const key = (v: AnnounceVip): string => `${v.name} ${v.address}`;
    const old = new Map(this.#vips.map((v, i) => [key(v), { v, s: this.#state[i]! }]));
    const now = new Date().toISOString();
    const state = vips.map((v) => {
      const o = old.get(key(v));
      old.delete(key(v));
      return o?.s ?? { name: v.name, address: v.address, announced: false, reason: this.table === null ? 'announce.table not set' : 'added by reload', since: now };
    });
    for (const r of old.values()) if (r.s.announced) this.#retired.push(r);
    this.#vips = vips;
    this.#state = state;
    return this.#apply();
  }

  #why(): string {
    return this.#holds.size === 0 ? 'ready' : [...this.#holds].map(([k, v]) => `${k}: ${v}`).join('; ');
  }

  /** Brings the table in line with readiness; serialised, coalesced, never rejects. */
  #apply(): Promise<void> {
    const done = new Promise<void>((r) => this.#idle.push(r));
    this.#dirty = true;
    if (!this.#busy) void this.#run();
    return done;
  }

  async #run(): Promise<void> {
    this.#busy = true;
    while (this.#dirty) {
      this.#dirty = false;
      const want = this.ready && !this.#closed;
      const why = this.#why();
      if (!want) this.#writeReady(false);
      let failed = false;
      // VIPs a reload removed: withdrawn whatever the readiness.
      for (const r of this.#retired.splice(0)) {
        if (this.table === null) continue;
        const args = routeArgs(r.v, this.#opts.device, this.table);
        args[2] = 'del';
        const err = await this.#ip(args);
        if (err !== null && !/No such process|Cannot find device/i.test(err)) {
          failed = true;
          this.stats.failures++;
          this.#retired.push(r);
          this.#event({ type: 'announce_failed', vip: r.v.name, reason: `ip ${args.join(' ')}: ${err}` });
          this.#opts.log.error({ event: 'announce_failed', vip: r.v.name, err }, `withdrawing ${r.v.name} (removed by reload) failed: ${err}`);
          continue;
        }
        this.#changed(r.s, false, 'removed by reload');
      }
      const vips = this.#vips;
      const states = this.#state;
      for (let i = 0; i < vips.length; i++) {
        const s = states[i]!;
        const v = vips[i]!;
        if (this.table === null) {
          // No announcement configured: nothing is ever announced (the ready file still follows).
          s.reason = 'announce.table not set';
          continue;
        }
        if (s.announced === want) {
          if (!want) s.reason = why;
          continue;
        }
        const args = routeArgs(v, this.#opts.device, this.table);
        args[2] = want ? 'replace' : 'del';
        const err = await this.#ip(args);
        // "No such process" on del: the route is gone already (device removed, watchdog).
        if (err !== null && !(!want && /No such process|Cannot find device/i.test(err))) {
          failed = true;
          this.stats.failures++;
          this.#event({ type: 'announce_failed', vip: v.name, reason: `ip ${args.join(' ')}: ${err}` });
          this.#opts.log.error({ event: 'announce_failed', vip: v.name, err }, `${want ? 'announcing' : 'withdrawing'} ${v.name} failed: ${err}`);
          continue;
        }
        this.#changed(s, want, why);
      }
      if (want && !failed) this.#writeReady(true);
      if (failed && this.#retry === undefined && !this.#closed) {
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          void this.#apply();
        }, RETRY_MS);
      }
    }
    this.#busy = false;
    const idle = this.#idle;
    this.#idle = [];
    for (const r of idle) r();
  }

  #changed(s: VipAnnounceState, announced: boolean, why: string): void {
    s.announced = announced;
    s.reason = why;
    s.since = new Date().toISOString();
    if (announced) this.stats.announced++;
    else this.stats.withdrawn++;
    const type = announced ? 'vip_announced' : 'vip_withdrawn';
    this.#event({ type, vip: s.name, reason: why });
    this.#opts.log.info({ event: type, vip: s.name, address: s.address, reason: why, table: this.table }, `${s.name} ${s.address} ${announced ? 'announced' : 'withdrawn'} (table ${this.table}): ${why}`);
  }

  #event(e: Omit<AnnounceEvent, 'at'>): void {
    this.events.push({ at: new Date().toISOString(), ...e });
    if (this.events.length > EVENT_RING) this.events.shift();
  }

  #writeReady(ready: boolean): void {
    const f = this.#opts.readyFile;
    if (f === null) return;
    try {
      writeFileSync(f, ready ? '0\n' : '1\n');
    } catch (e) {
      this.#opts.log.warn({ event: 'ready_file_failed', file: f, err: (e as Error).message }, `cannot write the ready file ${f}`);
    }
  }

  #startWatchdog(): void {
    const budget = this.#opts.watchdogMs;
    const sab = new SharedArrayBuffer(12);
    const hb = new Int32Array(sab);
    this.#hb = hb;
    const beatSab = new SharedArrayBuffer(8);
    const beat = new Float64Array(beatSab);
    const clock = (): number => performance.timeOrigin + performance.now();
    beat[0] = clock();
    const period = Math.max(1, Math.floor(budget / 8));
    // Everything in the dedicated table, whatever VIPs a reload added since.
    const routes = [
      ['-4', 'route', 'flush', 'table', String(this.table!)],
      ['-6', 'route', 'flush', 'table', String(this.table!)],
    ];
    this.#worker = new Worker(WATCHDOG_SOURCE, { eval: true, workerData: { hb: sab, beat: beatSab, budgetMs: budget, periodMs: period, routes, readyFile: this.#opts.readyFile } });
    this.#worker.unref();
    this.#worker.on('error', (e) => this.#opts.log.error({ event: 'watchdog_failed', err: e.message }, `watchdog thread failed: ${e.message}`));
    let lastBeat = performance.now();
    this.#beat = setInterval(() => {
      beat[0] = clock();
      const now = performance.now();
      const gap = now - lastBeat;
      lastBeat = now;
      const stalled = Atomics.load(hb, 2);
      if (stalled !== 0 && !this.#closed) {
        // The worker withdrew while this loop was stuck: record it, then announce again.
        Atomics.store(hb, 2, 0);
        this.stats.watchdogWithdrawals++;
        const reason = `event loop stalled ${Math.round(Math.max(stalled, gap))} ms (watchdog_ms ${budget})`;
        for (const s of this.#state) {
          if (s.announced) this.#changed(s, false, `watchdog: ${reason}`);
        }
        this.#event({ type: 'watchdog_withdrew', reason });
        this.#opts.log.warn({ event: 'watchdog_withdrew', reason }, `watchdog withdrew the VIPs: ${reason}; announcing again`);
        void this.#apply();
      }
    }, period);
    this.#beat.unref();
  }

  /**
   * Withdraws everything (awaits the route changes) and stops the watchdog. Idempotent. The
   * ready file is left at "1".
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      if (this.#retry !== undefined) clearTimeout(this.#retry);
      if (this.#beat !== undefined) clearInterval(this.#beat);
      if (this.#hb !== undefined) {
        Atomics.store(this.#hb, 1, 1);
        Atomics.notify(this.#hb, 1);
      }
      await this.#worker?.terminate();
      this.#worker = undefined;
    }
    await this.#apply();
  }
}
