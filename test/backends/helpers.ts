/**
 * Shared pieces of the test/backends tests (not a test file): configs, a fake clock with
 * injectable timers, fake checks, and a simulated cluster of HealthMonitors whose reports go
 * through the real protobuf encoding (tunlb.v1.HealthReport) on a lossy in-memory "network".
 */
import { parseConfig, type Config } from '../../src/config';
import { deriveHashKey } from '../../src/decision/hash-key';
import { tunlb } from '../../src/protocol';
import { HealthMonitor, type BackendEvent, type HealthReportBody, type TimerFns } from '../../src/backends/health-monitor';
import type { CheckResult, CheckTarget } from '../../src/backends/checks';

export const KEY_HEX = 'a7'.repeat(32);
export const HASH_KEY = deriveHashKey(Buffer.from(KEY_HEX, 'hex'));

export interface HealthSpec {
  type?: 'tcp' | 'http' | 'icmp';
  interval_ms?: number;
  timeout_ms?: number;
  rise?: number;
  fall?: number;
  port?: number;
}

/**
 * A config with `balancers` balancers (lb1..lbN) and one IPv4 VIP "web4" on port 80 whose
 * backends are 10.0.<i/250>.<i%250+1> with the given health check (null: none), plus
 * optional extra VIP text.
 */
export function makeConfig(o: { balancers?: number; backends?: number; health?: HealthSpec | null; vips?: unknown[] } = {}): Config {
  const nb = o.balancers ?? 3;
  const n = o.backends ?? 3;
  const health = o.health === undefined ? { type: 'tcp', interval_ms: 1000, timeout_ms: 500, rise: 2, fall: 3 } : o.health;
  const obj = {
    cluster: { id: 'health-test', key_env: 'TUNLB_TEST_KEY' },
    balancers: Array.from({ length: nb }, (_, i) => ({ id: `lb${i + 1}`, address: `10.9.0.${i + 11}` })),
    vips: o.vips ?? [
      {
        name: 'web4',
        address: '10.8.0.10',
        ports: [80],
        backends: Array.from({ length: n }, (_, i) => ({ address: backendAddr(i), ...(health ? { health } : {}) })),
      },
    ],
  };
  return parseConfig(JSON.stringify(obj), 'health-test.json', { env: { TUNLB_TEST_KEY: KEY_HEX } });
}

export function backendAddr(i: number): string {
  return `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

/** Deterministic timers: nothing runs until advance(); microtasks are flushed after each timer. */
export class FakeClock implements TimerFns {
  now = 0;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  readonly nowMs = (): number => this.now;

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.now + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  get pending(): number {
    return this.#timers.size;
  }

  /** Runs every timer due up to now + ms in time order (ties in creation order). */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      let bestId = -1;
      let bestAt = Infinity;
      for (const [id, t] of this.#timers) {
        if (t.at <= end && (t.at < bestAt || (t.at === bestAt && id < bestId))) {
          bestId = id;
          bestAt = t.at;
        }
      }
      if (bestId < 0) break;
      const t = this.#timers.get(bestId)!;
      this.#timers.delete(bestId);
      this.now = Math.max(this.now, t.at);
      t.fn();
      await flush();
    }
    this.now = end;
    await flush();
  }
}

/** Lets every queued promise callback and microtask run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Seeded [0, 1) random. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

/**
 * Fake backends: `down` holds addresses whose checks fail ("connect ECONNREFUSED"); every
 * call is recorded (time, checker, address). Results arrive after `delayMs` of fake time.
 */
export class FakeBackends {
  readonly down = new Set<string>();
  readonly calls: Array<{ at: number; by: number; address: string }> = [];
  delayMs = 1;

  constructor(readonly clock: FakeClock) {}

  runner(by: number): (t: CheckTarget) => Promise<CheckResult> {
    return (t) => {
      this.calls.push({ at: this.clock.now, by, address: t.address });
      const ok = !this.down.has(t.address);
      return new Promise((resolve) => {
        this.clock.setTimeout(() => resolve(ok ? { ok: true, rttMs: this.delayMs, reason: `tcp connect in ${this.delayMs} ms` } : { ok: false, rttMs: this.delayMs, reason: 'connect ECONNREFUSED' }), this.delayMs);
      });
    };
  }

  callsFor(address: string, by?: number): number {
    return this.calls.filter((c) => c.address === address && (by === undefined || c.by === by)).length;
  }
}

/** Encodes and decodes a report as the control channel would (real wire format). */
export function overTheWire(body: HealthReportBody): tunlb.v1.HealthReport {
  return tunlb.v1.HealthReport.decode(tunlb.v1.HealthReport.encode(body).finish());
}

export interface SimNode {
  readonly index: number;
  monitor: HealthMonitor;
  readonly live: Uint8Array;
  readonly events: BackendEvent[];
  readonly sent: HealthReportBody[];
  /** onPeerDrain calls: "vip backend drained|undrained origin sender". */
  readonly peerDrains: string[];
  up: boolean;
}

/**
 * N balancers with one HealthMonitor each on a shared fake clock. broadcast() delivers the
 * encoded report to every other node that is up, in a microtask, unless `drop` says so.
 * kill(i) stops node i and clears live[i] everywhere else; revive(i) starts a NEW monitor
 * (new epoch) for it.
 */
export class SimCluster {
  readonly clock = new FakeClock();
  readonly backends = new FakeBackends(this.clock);
  readonly nodes: SimNode[] = [];
  /** Return true to lose a datagram from → to. */
  drop: (from: number, to: number, body: HealthReportBody) => boolean = () => false;
  #epoch = 1000;

  constructor(
    public config: Config,
    readonly opts: { reportIntervalMs?: number; seed?: number } = {},
  ) {
    const n = config.balancers.length;
    for (let i = 0; i < n; i++) {
      const live = new Uint8Array(n).fill(1);
      const node: SimNode = { index: i, monitor: null as unknown as HealthMonitor, live, events: [], sent: [], peerDrains: [], up: true };
      this.nodes.push(node);
      node.monitor = this.#makeMonitor(node);
    }
  }

  #makeMonitor(node: SimNode): HealthMonitor {
    const i = node.index;
    return new HealthMonitor({
      config: this.config,
      selfIndex: i,
      hashKey: HASH_KEY,
      live: node.live,
      nowMs: this.clock.nowMs,
      timers: this.clock,
      random: seededRandom((this.opts.seed ?? 7) * 31 + i + this.#epoch),
      wallClockMs: () => 1_700_000_000_000 + this.clock.now,
      epoch: this.#epoch++,
      reportIntervalMs: this.opts.reportIntervalMs ?? 1000,
      runCheck: this.backends.runner(i),
      broadcast: (body) => {
        node.sent.push(body);
        const wire = tunlb.v1.HealthReport.encode(body).finish();
        for (const peer of this.nodes) {
          if (peer === node || !peer.up || !node.up || this.drop(i, peer.index, body)) continue;
          queueMicrotask(() => {
            if (peer.up) peer.monitor.onReport(i, tunlb.v1.HealthReport.decode(wire));
          });
        }
      },
      onChange: (_v, _b, e) => node.events.push(e),
      onPeerDrain: (e, drained, origin, sender) => node.peerDrains.push(`${e.vip} ${e.backend} ${drained ? 'drained' : 'undrained'} ${origin} ${sender}`),
    });
  }

  start(): void {
    for (const n of this.nodes) if (n.up) n.monitor.start();
  }

  stop(): void {
    for (const n of this.nodes) n.monitor.stop();
  }

  kill(i: number): void {
    const node = this.nodes[i]!;
    node.up = false;
    node.monitor.stop();
    for (const n of this.nodes) if (n !== node) n.live[i] = 0;
  }

  revive(i: number): void {
    const node = this.nodes[i]!;
    node.up = true;
    node.events.length = 0;
    node.monitor = this.#makeMonitor(node);
    node.monitor.start();
    for (const n of this.nodes) n.live[i] = 1;
  }

  /** eligible(0, b) for every backend of VIP 0, as a string of 1/0 per node. */
  eligibility(vip = 0): string[] {
    return this.nodes
      .filter((n) => n.up)
      .map((n) => this.config.vips[vip]!.backends.map((_, b) => (n.monitor.eligible(vip, b) ? '1' : '0')).join(''));
  }
}
