/**
 * The admin HTTP endpoint of one balancer: JSON views of its state for the CLI, tests and
 * operators, Prometheus metrics, and a status page. Bound to localhost by default (config
 * `admin.listen`); never on the packet path (everything here reads counters the data plane
 * already keeps, at request time or once a second).
 *
 *   GET /                 the status page (self-contained HTML+JS, src/control/status-page.ts)
 *   GET /metrics          Prometheus text format (src/control/metrics.ts)
 *   GET /api/v1/stats     counters, flow-table figures, device features (BalancerSnapshot),
 *                         plus `at` (server time, epoch ms) for rate computations
 *   GET /api/v1/flows     flows held by this balancer: ?limit=N (default 1000, max 100000) and
 *                         filters vip, backend, client, proto, primary, backup, state, min-age,
 *                         max-idle (src/control/flow-listing.ts; the `tunlb flows` flags); 400
 *                         {error, code: TUNLB_USAGE} for an unusable filter or unknown parameter
 *   GET /api/v1/status    cluster membership: this balancer and its peers (state, status, RTT,
 *                         flows), flow counts from this balancer's table, recent events
 *   GET /api/v1/events    recent events, oldest first: ?limit=N (default 100, max 500)
 *   GET /api/v1/history   one sample of the main counters per second, last 5 minutes
 *   GET /healthz          200 "ok" (no token needed)
 *   GET /api/v1/backends  every backend's health, drain mark, owner (HealthMonitor.states())
 *   GET /api/v1/vips      per VIP and per backend: connections (total, active), packets and
 *                         bytes in/out, their rates, the health-check detail
 *                         (src/control/service-view.ts ServicesBody; `tunlb vips`, `tunlb
 *                         backends --stats`)
 *   POST /api/v1/backends/drain, /api/v1/backends/undrain   JSON {vip, address}: drain marks
 *                         (cluster-wide: new flows avoid the backend, existing flows stay);
 *                         400 with a message for an unknown VIP or backend
 *   POST /api/v1/backends/weight   JSON {vip, address, weight}: the backend's weight, cluster-wide,
 *                         without editing the file (0..65535, 0 = no new flows; "file" or null:
 *                         back to the file's); until the next reload (src/backends/runtime-override.ts)
 *   POST /api/v1/backends/maintenance   JSON {vip, address, maintenance: true|false}: maintenance
 *                         (cluster-wide: no new flows, flows continue, health checks go on; no
 *                         timeout, unlike a drain); until the next reload. Both: 200 {changed,
 *                         event, backend}; 400 for an unknown VIP or backend or a bad value
 *   POST /api/v1/reload   reload the config file (src/control/reload.ts): 200 with what changed;
 *                         400 {error, code, errors[]} when refused (the running config stays);
 *                         every runtime weight and maintenance returns to the file's, cluster-wide
 *   POST /api/v1/self/drain, /api/v1/self/undrain   `tunlb drain-self` / `undrain-self`: withdraw
 *                         the VIP announcement and hand this balancer's flows to their backups
 *                         (peers see status DRAINING), or undo it; 200 {status, announce}
 *   GET /api/v1/cluster   every balancer of the cluster at once (src/control/cluster-status.ts
 *                         ClusterBody; `tunlb status --cluster`): state, status, config hash
 *                         (mismatch marked), flows, packet rates, RTT, last heard; a peer's figures
 *                         are its own, from its last BalancerSummary over the control channel,
 *                         with their age
 *   POST /api/v1/reload/cluster   `tunlb reload --cluster`: reload this balancer's file and ask
 *                         every peer over the control channel to reload its own; JSON {timeoutMs?}
 *                         (100..60000, default 10000); 200 {ok, balancers: [{id, ok (null = no
 *                         answer in time), configHash, detail}]}
 *
 * Operator actions (drain, undrain, reload, reload --cluster, drain-self, undrain-self, and what
 * peers propagate: drain marks, reload requests) are events with source 'operator' and an
 * `origin` (`api <remote address>`, `peer <id>`, `signal SIGHUP`): AdminState.operatorEvent
 * (type, reason, origin) records one (src/control/operator-events.ts).
 *
 * Bearer token (config `admin.token_file`): read once at start (surrounding whitespace
 * trimmed; an empty or unreadable file, or one group or others may access, fails the start with
 * one line). When set, /api/* and /metrics need `Authorization: Bearer <token>` (401 otherwise,
 * compared in constant time); `/` and `/healthz` do not: the page takes the token from `?token=`
 * (kept in the tab's sessionStorage, removed from the address bar) or from the form it shows on
 * the first 401. Listening beyond loopback without a token is refused at start (config check, and here for
 * the `--admin` override).
 *
 * Requests from browsers (docs/operations.md "The admin API and its security rules"), checked
 * in this order before anything else runs:
 *   - Host (every path but /healthz): an IP literal, `localhost`, or a name of
 *     `admin.allowed_hosts` (port ignored); anything else is 403: a DNS-rebinding page (its
 *     name resolved to this address) reads nothing.
 *   - Origin (when present): its host[:port] must be the request's Host, or its host a name of
 *     `admin.allowed_hosts`; `null` and anything else are 403: another site's page in the
 *     operator's browser can neither drain nor reload.
 *   - the token (above), 401.
 *   - POST bodies: `Content-Type: application/json` (parameters allowed), else 415. A page can
 *     send text/plain or a form cross-site without a CORS preflight, never application/json;
 *     the preflight (OPTIONS) is answered 405.
 *
 * Whole-table work (the flows listing, flow counts, a reload) runs in time slices
 * (src/control/time-slice.ts): no request holds the event loop longer than a slice.
 *
 * Events (/api/v1/events, /api/v1/status): the cluster's membership events (peer up,
 * suspect, down, restarted, serving, syncing, draining) and bulk sync events (sync_started,
 * sync_resumed, sync_failed, sync_done, sync_gave_up; src/cluster/sync-runner.ts), the config
 * version's (config_mismatch / config_match: a peer runs another config hash), operator actions
 * (above), merged
 * with events this endpoint derives from counters once a second: `self_serving` /
 * `self_syncing` (this balancer's status), `failover_active` / `failover_ended` (packets
 * sent via a flow's backup because its primary is dead), `forwarding_changed` (the
 * forwarding table's generation moved: VIPs or backends changed), and the announcement's
 * (src/control/announcer.ts): `vip_announced` / `vip_withdrawn` with the reason,
 * `watchdog_withdrew`, `announce_failed`. The runtime overrides' events (`backend_weight`,
 * `backend_maintenance`) are operator events (source 'operator') with their `origin`:
 * `api <remote address>` for a call to this endpoint, `peer <id>` when learnt from a peer's
 * report, `reload on <id> (<who asked>)` for a reload's clearing.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import { TunlbError, ErrorCodes, isTunlbError } from '../errors';
import { formatConfigErrors } from '../config';
import { parseIpAddress } from '../config/address';
import { loadTokenFile } from '../config/secret';
import { checkBrowserRequest, isJson } from './admin-guard';
import { FlowFlags } from '../flow';
import type { BalancerControl, BalancerView } from './balancer-view';
import { snapshotStats } from './snapshot';
import { FlowScan, flowQueryFromParams, type FlowQuery } from './flow-listing';
import { runSliced } from './time-slice';
import { Metrics } from './metrics';
import { statusPageHtml } from './status-page';
import { heldKey, ServiceRates, servicesBody } from './service-view';
import { parseWeight } from '../backends/runtime-override';
import { clusterBody, summaryFields, type RateSample } from './cluster-status';
import { apiOrigin } from './operator-events';
import type { SummaryFields } from '../cluster/cluster-view';

/** Seconds of per-second samples kept for /api/v1/history. */
export const HISTORY_S = 300;
const EVENT_RING = 200;
/** A failover episode ends after this many seconds without failover packets. */
const FAILOVER_QUIET_S = 5;
/** Flows-per-balancer counts (a scan of the flow table) are reused for this long. */
const FLOW_COUNT_TTL_MS = 2000;
/** Live entries per scan step of the flow counts and of the flows listing (well under a slice). */
const COUNT_STEP = 4096;
const LIST_STEP = 512;

export interface AdminEvent {
  /** ISO time. */
  at: string;
  type: string;
  /** Balancer id the event is about. */
  balancer: string;
  reason: string;
  severity: 'info' | 'warn' | 'error';
  /**
   * 'membership' (probes, status, config version), 'admin' (derived from counters by this
   * endpoint), 'announce' (VIP routes), 'operator' (an operator's action: drain, reload, ...,
   * with `origin`; src/control/operator-events.ts).
   */
  source: 'membership' | 'admin' | 'announce' | 'operator';
  /** Operator events: where the action came from, e.g. `api 127.0.0.1`, `peer lb2`, `signal SIGHUP`. */
  origin?: string;
}

/** One second of the main counters (at, rx/tx packets and bytes, peer packets: RateSample). */
export interface HistorySample extends RateSample {
  failoverPackets: number;
  drops: number;
  flowsActive: number;
  flowsCreated: number;
  flowsExpired: number;
}

export interface FlowCounts {
  /** Epoch ms of the scan. */
  at: number;
  total: number;
  /** Records this balancer decided / learnt from peers' records. */
  decidedHere: number;
  learnt: number;
  /** By balancer id: flows whose recorded primary / backup it is (from this balancer's table). */
  byPrimary: Record<string, number>;
  byBackup: Record<string, number>;
  /** By "vip backend" address (heldKey()). */
  byBackend: Record<string, number>;
  /** By VIP name (its backends' and its removed backends' records). */
  byVip: Record<string, number>;
}

const SEVERITY: Record<string, AdminEvent['severity']> = {
  peer_down: 'error',
  peer_suspect: 'warn',
  peer_restarted: 'warn',
  peer_syncing: 'warn',
  peer_draining: 'warn',
  failover_active: 'warn',
  self_syncing: 'warn',
  sync_failed: 'warn',
  sync_gave_up: 'error',
  vip_withdrawn: 'warn',
  watchdog_withdrew: 'error',
  announce_failed: 'error',
  config_mismatch: 'warn',
};
export class AdminServer {
  readonly #server: Server;
  readonly #state: AdminState;
  private constructor(server: Server, state: AdminState) {
    this.#server = server;
    this.#state = state;
  }

  get address(): string {
    const a = this.#server.address() as AddressInfo | null;
    return a ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : 'closed';
  }

  get metrics(): Metrics {
    return this.#state.metrics;
  }

  static listen(hostPort: string, b: BalancerControl): Promise<AdminServer> {
    const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(hostPort);
    if (!m) throw new TunlbError(ErrorCodes.USAGE, `admin listen address "${hostPort}" is not host:port`);
    const token = readToken(b.config.admin.tokenFile);
    if (token === null && !isLoopbackHost(m[1]!)) {
      // Only `tunlb run --admin` can get here (the config check refuses admin.listen so): a usage error.
      throw new TunlbError(
        ErrorCodes.USAGE,
        `admin endpoint ${hostPort} (--admin) is not on a loopback address and admin.token_file is not set: refusing to open the admin API (drain, reload, flows) to the network; set admin.token_file, or listen on 127.0.0.1 or [::1]`,
      );
    }
    const state = new AdminState(b, token, b.config.admin.allowedHosts ?? []);
    const server = createServer((req, res) => {
      try {
        void handle(req, res, b, state).catch((e) => fail(res, e));
      } catch (e) {
        fail(res, e);
      }
    });
    return new Promise((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        state.close();
        reject(
          new TunlbError(
            ErrorCodes.ADMIN,
            `admin endpoint cannot listen on ${hostPort}: ${e.code ?? e.message} (is another balancer using it? set admin.listen)`,
          ),
        );
      });
      server.listen(Number(m[2]), m[1], () => resolve(new AdminServer(server, state)));
    });
  }

  close(): Promise<void> {
    this.#state.close();
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}

/** The token from `admin.token_file`, or null; throws ADMIN with one line if it is unusable. */
function readToken(file: string | null): Buffer | null {
  if (file === null) return null;
  const r = loadTokenFile(file);
  if (!r.ok) throw new TunlbError(ErrorCodes.ADMIN, `admin.token_file: ${r.message} (fix: ${r.fix})`);
  return digest(r.token);
}

/** True for a loopback listen host: 127.0.0.0/8, ::1, localhost (what admin.listen allows without a token). */
function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  const a = parseIpAddress(host);
  return typeof a !== 'string' && a.isLoopback;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Per-endpoint state: metrics, the per-second sampler (history, derived events), flow counts. */
class AdminState {
  readonly metrics: Metrics;
  readonly token: Buffer | null;
  readonly history: HistorySample[] = [];
  readonly events: AdminEvent[] = [];
  /** Per-second samples of the per-VIP/per-backend counters, for their rates. */
  readonly serviceRates = new ServiceRates();
  readonly #b: BalancerView;
  readonly #timer: NodeJS.Timeout;
  #flowCounts: FlowCounts | undefined;
  #counting: Promise<FlowCounts> | undefined;
  #lastStatus: string | undefined;
  #lastGeneration: number;
  #failoverActive = false;
  #failoverQuietS = 0;
  #failoverEpisode = 0;
  /** This balancer's latest summary (sent to the peers each second; its row of GET /api/v1/cluster). */
  summary: SummaryFields | undefined;

  /** admin.allowed_hosts (lower case). */
  readonly allowedHosts: readonly string[];

  constructor(b: BalancerView, token: Buffer | null, allowedHosts: readonly string[]) {
    this.#b = b;
    this.token = token;
    this.allowedHosts = allowedHosts;
    this.metrics = new Metrics(b, { heldFlows: () => this.flowCounts() });
    this.#lastGeneration = b.forwarder.forwarding.generation;
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), 1000);
    this.#timer.unref();
    // Runtime overrides (`tunlb weight` / `maintenance`, a peer's mark, a reload's clearing) are operator events.
    this.#unsubscribe = b.health?.onOverride?.((ev) => this.operatorEvent(ev.type, ev.reason, ev.origin));
  }

  readonly #unsubscribe: (() => unknown) | undefined;

  close(): void {
    clearInterval(this.#timer);
    this.#unsubscribe?.();
    this.metrics.close();
  }

  /**
   * Records an operator action in the event history (src/control/operator-events.ts): `type`
   * e.g. 'backend_drain', `reason` one sentence, `origin` where it came from: `api <address>`
   * (apiOrigin(req.socket.remoteAddress)) or `peer <id>`. The entry point for every operator
   * command of the admin API, present and future (runtime weights, maintenance marks).
   */
  operatorEvent(type: string, reason: string, origin: string): void {
    this.#b.operatorEvents.record(type, reason, origin);
  }

  #event(type: string, reason: string): void {
    this.events.push({ at: new Date().toISOString(), type, balancer: this.#b.selfId, reason, severity: SEVERITY[type] ?? 'info', source: 'admin' });
    if (this.events.length > EVENT_RING) this.events.shift();
  }

  /** Once a second: a history sample, and the events derived from counters. */
  #sample(): void {
    const b = this.#b;
    const st = b.forwarder.stats;
    let drops = 0;
    for (let i = 1; i < st.packetDrops.length; i++) drops += st.packetDrops[i]!;
    for (let i = 0; i < st.forwardDrops.length; i++) drops += st.forwardDrops[i]!;
    const prev = this.history[this.history.length - 1];
    const s: HistorySample = {
      at: Date.now(),
      rxPackets: st.rxPackets,
      rxBytes: st.rxBytes,
      txPackets: st.txPackets,
      txBytes: st.txBytes,
      peerTxPackets: st.peerTxPackets,
      peerRxPackets: st.peerRxPackets,
      failoverPackets: st.failoverPackets,
      drops,
      flowsActive: b.table.size,
      flowsCreated: st.flowsCreated,
      flowsExpired: b.table.expired,
    };
    this.history.push(s);
    if (this.history.length > HISTORY_S + 1) this.history.shift();

    // This balancer's summary for the cluster view, to every peer once a second
    // (src/control/cluster-status.ts); flows by role from a table scan every 2 s at most (FLOW_COUNT_TTL_MS).
    const fc = this.#flowCounts;
    // The flow counts' own cache age (one sliced scan serves this and the views; at 5 s the
    // demo's cluster view showed 0 flows as primary on lb2/lb3 4 s after 30 new connections).
    if (fc === undefined || s.at - fc.at >= FLOW_COUNT_TTL_MS) void this.flowCounts().catch(() => undefined);
    this.summary = summaryFields(b, prev, s, this.#flowCounts);
    b.cluster?.publishSummary(this.summary);
    this.serviceRates.sample(b.forwarder.services, s.at);

    const status = b.cluster?.membership.selfStatus ?? 'serving';
    if (status !== this.#lastStatus) {
      if (this.#lastStatus !== undefined || status !== 'syncing') {
        const why =
          status === 'serving'
            ? b.cluster?.syncedFrom
              ? `serving after bulk sync from ${b.cluster.syncedFrom}`
              : b.cluster
                ? 'serving (no serving peer to sync from: started with an empty flow table)'
                : 'serving (cluster of one)'
            : `status ${this.#lastStatus ?? 'start'} -> ${status}`;
        this.#event(`self_${status}`, why);
      }
      this.#lastStatus = status;
    }

    const gen = b.forwarder.forwarding.generation;
    if (gen !== this.#lastGeneration) {
      const vips = b.forwarder.forwarding.config.vips.map((v) => `${v.name}: ${v.backends.length} backends`).join(', ');
      this.#event('forwarding_changed', `forwarding table generation ${this.#lastGeneration} -> ${gen} (${vips})`);
      this.#lastGeneration = gen;
    }

    if (prev !== undefined) {
      const fo = s.failoverPackets - prev.failoverPackets;
      if (fo > 0) {
        this.#failoverQuietS = 0;
        if (!this.#failoverActive) {
          this.#failoverActive = true;
          this.#failoverEpisode = 0;
          const dead = (b.cluster?.membership.peers() ?? []).filter((p) => p.state === 'dead' || (p.state !== 'self' && !p.live)).map((p) => p.id);
          this.#event(
            'failover_active',
            `${fo} packets in the last second went to a flow's backup: primary not live${dead.length ? ` (${dead.join(', ')})` : ''}`,
          );
        }
        this.#failoverEpisode += fo;
      } else if (this.#failoverActive && ++this.#failoverQuietS >= FAILOVER_QUIET_S) {
        this.#failoverActive = false;
        this.#event('failover_ended', `no failover packets for ${FAILOVER_QUIET_S} s (${this.#failoverEpisode} packets via backups in this episode)`);
      }
    }
  }

  /** Membership events and derived events, merged by time, oldest first, at most `limit`. */
  mergedEvents(limit: number): AdminEvent[] {
    const c = this.#b.cluster;
    const fromMembership: AdminEvent[] = (c?.events ?? []).map((e) => ({
      at: e.at,
      type: e.type,
      balancer: e.id,
      reason: e.reason,
      severity: SEVERITY[e.type] ?? 'info',
      source: 'membership' as const,
    }));
    const fromAnnouncer: AdminEvent[] = (this.#b.announcer?.events ?? []).map((e) => ({
      at: e.at,
      type: e.type,
      balancer: this.#b.selfId,
      reason: e.vip !== undefined ? `${e.vip}: ${e.reason}` : e.reason,
      severity: SEVERITY[e.type] ?? 'info',
      source: 'announce' as const,
    }));
    const fromOperator: AdminEvent[] = this.#b.operatorEvents.events.map((e) => ({ ...e, source: 'operator' as const }));
    const all = fromMembership.concat(fromAnnouncer, fromOperator, this.events);
    all.sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : 0));
    return all.slice(-limit);
  }

  /**
   * Flows by primary, backup and backend from this balancer's table: one scan in time slices
   * (src/control/time-slice.ts), shared by concurrent requests, reused for FLOW_COUNT_TTL_MS. A
   * reload during the scan restarts it (the counts are by the live table's VIPs and backends).
   */
  flowCounts(): Promise<FlowCounts> {
    const c = this.#flowCounts;
    if (c !== undefined && Date.now() - c.at < FLOW_COUNT_TTL_MS) return Promise.resolve(c);
    if (this.#counting === undefined) {
      this.#counting = this.#countFlows().finally(() => {
        this.#counting = undefined;
      });
    }
    return this.#counting;
  }

  async #countFlows(): Promise<FlowCounts> {
    for (;;) {
      const counts = await this.#countOnce();
      if (counts !== null) {
        this.#flowCounts = counts;
        return counts;
      }
    }
  }

  /** One sliced scan; null when a reload replaced the forwarding table meanwhile. */
  async #countOnce(): Promise<FlowCounts | null> {
    const b = this.#b;
    const t = b.table;
    const n = b.config.balancers.length;
    const prim = new Float64Array(n + 1);
    const back = new Float64Array(n + 1);
    const ft = b.forwarder.forwarding;
    const vips = ft.config.vips;
    const be = vips.map((v) => new Float64Array(v.backends.length + 1));
    let learnt = 0;
    let total = 0;
    let cursor = 0;
    let reloaded = false;
    const visit = (id: number): void => {
      total++;
      const p = t.primary(id);
      const k = t.backup(id);
      prim[p < n ? p : n]!++;
      back[k < n ? k : n]!++;
      const arr = be[t.vip(id)];
      if (arr !== undefined) {
        const j = t.backend(id);
        arr[j < arr.length - 1 ? j : arr.length - 1]!++;
      }
      if ((t.flags(id) & FlowFlags.FROM_PEER) !== 0) learnt++;
    };
    await runSliced(() => {
      if (b.forwarder.forwarding.config !== ft.config) {
        reloaded = true;
        return true;
      }
      cursor = t.scan(cursor, COUNT_STEP, visit);
      return cursor === 0;
    });
    if (reloaded) return null;
    const byPrimary: Record<string, number> = {};
    const byBackup: Record<string, number> = {};
    b.config.balancers.forEach((x, i) => {
      byPrimary[x.id] = prim[i]!;
      byBackup[x.id] = back[i]!;
    });
    const byBackend: Record<string, number> = {};
    const byVip: Record<string, number> = {};
    vips.forEach((v, vi) => {
      v.backends.forEach((x, j) => {
        byBackend[heldKey(v.name, x.address.text, x.port)] = be[vi]![j]!;
      });
      byVip[v.name] = be[vi]!.reduce((a, n) => a + n, 0);
    });
    return { at: Date.now(), total, decidedHere: total - learnt, learnt, byPrimary, byBackup, byBackend, byVip };
  }

  async status(): Promise<unknown> {
    const b = this.#b;
    const c = b.cluster;
    const counts = await this.flowCounts();
    const peers = c?.membership.peers();
    const balancers = b.config.balancers.map((cfg, i) => {
      const p = peers?.[i];
      const self = i === b.selfIndex;
      return {
        id: cfg.id,
        index: i,
        address: cfg.address.text,
        self,
        state: self ? 'self' : (p?.state ?? 'unknown'),
        /** 'unknown' for a dead peer (its status is not known; never shown as serving). */
        status: self ? (c?.membership.selfStatus ?? 'serving') : (p?.status ?? 'unknown'),
        /** What the peer reported last (kept while it is dead). */
        lastStatus: self ? (c?.membership.selfStatus ?? 'serving') : (p?.lastStatus ?? 'unknown'),
        live: self ? true : (p?.live ?? false),
        incarnation: self ? (c?.incarnation ?? 0) : (p?.incarnation ?? 0),
        rttMs: p?.rttMs ?? null,
        rttAvgMs: p?.rttAvgMs ?? null,
        lastAckAgoMs: p?.lastAckAgoMs ?? null,
        misses: p?.misses ?? 0,
        /**
         * Flows in this balancer's table: only known for this balancer itself. The total of the
         * same scan as flowsAsPrimary / flowsAsBackup (cached up to FLOW_COUNT_TTL_MS), so the
         * balancers' primary-of figures add up to it; `flows.active` is the table's size now.
         */
        flowsHeld: self ? counts.total : null,
        /** From this balancer's copy of the records (every balancer holds every record). */
        flowsAsPrimary: counts.byPrimary[cfg.id] ?? 0,
        flowsAsBackup: counts.byBackup[cfg.id] ?? 0,
        /** Config version (12 hex) it reported last ('' never), and whether it differs from ours. */
        configHash: self ? b.configHash().hex : (p?.configHash ?? ''),
        configMismatch: self ? false : (p?.configMismatch ?? false),
      };
    });
    const st = b.forwarder.stats;
    return {
      at: Date.now(),
      cluster: b.config.cluster.id,
      self: {
        id: b.selfId,
        index: b.selfIndex,
        status: c?.membership.selfStatus ?? 'serving',
        incarnation: c?.incarnation ?? 0,
        syncedFrom: c?.syncedFrom ?? null,
        /** This balancer's bulk sync (src/cluster/sync-runner.ts SyncProgress), null when none ran. */
        sync: c?.syncProgress() ?? null,
        startedAt: b.startedAt.toISOString(),
        uptimeS: b.nowSec(),
        probe: c ? { intervalMs: c.membership.intervalMs, misses: c.membership.misses } : null,
        /** The running config's version (src/config/config-hash.ts) and the peers that run another. */
        configHash: b.configHash().hex,
        configMismatches: balancers.filter((x) => x.configMismatch).map((x) => x.id),
      },
      balancers,
      flows: { active: b.table.size, capacity: b.table.capacity, ...counts },
      failover: { peerDownEvents: c?.membership.stats.failovers ?? 0, failoverPackets: st.failoverPackets, active: this.#failoverActive },
      /** The ECMP entry: does this balancer announce each VIP (announce.table), and why (not). */
      announce: b.announcer === undefined ? null : { table: b.announcer.table, ready: b.announcer.ready, holds: b.announcer.holds() },
      vips: b.forwarder.forwarding.config.vips.map((v) => ({
        name: v.name,
        address: v.address.text,
        method: v.method,
        announced: announcedOf(b, v.name),
        backends: v.backends.map((x) => `${x.address.text}${x.port ? `:${x.port}` : ''}`),
      })),
      events: this.mergedEvents(50),
    };
  }

  authorized(req: IncomingMessage): boolean {
    if (this.token === null) return true;
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    if (!m) return false;
    return timingSafeEqual(digest(m[1]!), this.token);
  }
}

function fail(res: ServerResponse, e: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(500, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: `internal error: ${(e as Error)?.message ?? String(e)}` }) + '\n');
}

/** Endpoints that change state: POST only (everything else is GET/HEAD). */
const POST_PATHS = new Set(['/api/v1/backends/drain', '/api/v1/backends/undrain', '/api/v1/backends/weight', '/api/v1/backends/maintenance', '/api/v1/reload', '/api/v1/reload/cluster', '/api/v1/self/drain', '/api/v1/self/undrain']);
/** POST /api/v1/reload/cluster: how long peers get to answer, ms (default; `timeoutMs` in the body, bounded). */
const CLUSTER_RELOAD_MS = 10_000;
const CLUSTER_RELOAD_MAX_MS = 60_000;
const MAX_BODY = 65536;

/** A small JSON request body (at most MAX_BODY bytes); null when empty or not a JSON object. */
async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | null> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_BODY) return null;
    chunks.push(c as Buffer);
  }
  try {
    const v: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * GET /api/v1/flows: the listing walked in time slices (FlowScan, src/control/time-slice.ts),
 * each slice's rows written as they are found, so neither the scan nor the JSON of up to
 * 100,000 rows holds the event loop longer than a slice, and the answer is never built whole.
 * The body is the FlowListing object with `flows` first (its figures are known at the end).
 * When the socket's buffer is full, the scan waits for it to drain; when the client goes away,
 * the scan stops.
 */
async function streamFlows(res: ServerResponse, b: BalancerView, query: FlowQuery): Promise<void> {
  const scan = new FlowScan(b, query);
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.write('{"flows":[');
  let first = true;
  let drained: Promise<void> | null = null;
  // One step: up to LIST_STEP live entries, their rows written at once; a full socket buffer
  // ends the job until 'drain' (then a new job: the next step is again on a slice's turn). The
  // 'drain' listener goes on at once: the socket may drain before the job's promise settles.
  const step = (): boolean => {
    const done = scan.step(LIST_STEP);
    let chunk = '';
    for (const row of scan.takeRows()) {
      chunk += first ? JSON.stringify(row) : `,${JSON.stringify(row)}`;
      first = false;
    }
    if (chunk !== '' && !res.write(chunk)) drained = drainedOrClosed(res);
    return done || drained !== null;
  };
  while (!scan.done) {
    drained = null;
    await runSliced(step, { stop: () => res.destroyed });
    if (res.destroyed) return;
    if (drained !== null && !scan.done) await drained;
  }
  res.end(`],${JSON.stringify(scan.summary()).slice(1)}\n`);
}

/** Resolves when `res` can take more data, or is closed. */
function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** The announcement state of VIP `name` ({announced, reason, since}), or null when unknown (added by a reload). */
function announcedOf(b: BalancerView, name: string): { announced: boolean; reason: string; since: string } | null {
  const s = b.announcer?.vips().find((x) => x.name === name);
  return s === undefined ? null : { announced: s.announced, reason: s.reason, since: s.since };
}

/**
 * POST /api/v1/backends/weight {vip, address, weight} and /maintenance {vip, address,
 * maintenance}: a runtime override, cluster-wide (src/backends/health-monitor.ts "Runtime
 * overrides"); the origin of its event is the caller's address.
 */
async function runtimeOverride(req: IncomingMessage, what: 'weight' | 'maintenance', b: BalancerControl, send: (code: number, body: unknown) => void): Promise<void> {
  const body = await readJson(req);
  const vip = body?.['vip'];
  const address = body?.['address'];
  const value = body?.[what];
  const shape = what === 'weight' ? '"weight": 0..65535 or "file"' : '"maintenance": true|false';
  if ((typeof vip !== 'string' && typeof vip !== 'number') || typeof address !== 'string' || value === undefined) {
    return send(400, { error: `expected a JSON body {"vip": NAME, "address": BACKEND_ADDRESS, ${shape}}`, code: ErrorCodes.USAGE });
  }
  let weight: number | null = null;
  if (what === 'weight') {
    const w = parseWeight(value);
    if (!w.ok) return send(400, { error: w.error, code: ErrorCodes.USAGE });
    weight = w.weight;
  } else if (typeof value !== 'boolean') {
    return send(400, { error: `maintenance must be true or false, got ${JSON.stringify(value)}`, code: ErrorCodes.USAGE });
  }
  const origin = apiOrigin(req.socket.remoteAddress);
  try {
    const ev = what === 'weight' ? b.health.setWeight(vip, address, weight, origin) : b.health.setMaintenance(vip, address, value === true, origin);
    // The backend as it is now (null when nothing changed: the command named it in any spelling).
    const row = ev === null ? undefined : b.health.states().find((x) => x.vipIndex === ev.vipIndex && x.backendIndex === ev.backendIndex);
    return send(200, { changed: ev !== null, event: ev, backend: row ?? null });
  } catch (e) {
    if (isTunlbError(e, ErrorCodes.ADMIN) || isTunlbError(e, ErrorCodes.USAGE)) return send(400, { error: e.message });
    throw e;
  }
}

function intParam(url: URL, name: string, dflt: number, max: number): number {
  return Math.min(max, Math.max(1, Number(url.searchParams.get(name) ?? dflt) || dflt));
}

async function handle(req: IncomingMessage, res: ServerResponse, b: BalancerControl, state: AdminState): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const send = (code: number, body: unknown, headers: Record<string, string> = {}): void => {
    res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
    res.end(JSON.stringify(body) + '\n');
  };
  const path = url.pathname;
  const post = POST_PATHS.has(path);
  if (post ? req.method !== 'POST' : req.method !== 'GET' && req.method !== 'HEAD') {
    return send(405, { error: 'method not allowed' }, { allow: post ? 'POST' : 'GET, HEAD' });
  }
  const refusal = checkBrowserRequest(req.headers, path, state.allowedHosts);
  if (refusal !== null) return send(refusal.status, { error: refusal.error });
  if ((path.startsWith('/api/') || path === '/metrics') && !state.authorized(req)) {
    return send(401, { error: 'bearer token required: Authorization: Bearer <token> (admin.token_file)' }, { 'www-authenticate': 'Bearer realm="tunlb"' });
  }
  if (post && !isJson(req.headers['content-type'])) {
    return send(415, { error: 'POST needs Content-Type: application/json (with a JSON body, {} when there are no arguments)' }, { 'accept-post': 'application/json' });
  }
  switch (path) {
    case '/':
    case '/index.html':
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'no-store',
        // Everything is inline; the page talks only to this endpoint.
        'content-security-policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        'x-content-type-options': 'nosniff',
      });
      res.end(statusPageHtml());
      return;
    case '/healthz':
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    case '/metrics': {
      const text = await state.metrics.text();
      res.writeHead(200, { 'content-type': state.metrics.contentType, 'cache-control': 'no-store' });
      res.end(text);
      return;
    }
    case '/api/v1/stats':
      return send(200, { ...snapshotStats(b), at: Date.now() });
    case '/api/v1/flows': {
      let query;
      try {
        query = flowQueryFromParams(b, url.searchParams);
      } catch (e) {
        if (isTunlbError(e, ErrorCodes.USAGE)) return send(400, { error: e.message, code: e.code });
        throw e;
      }
      return streamFlows(res, b, query);
    }
    case '/api/v1/status':
      return send(200, await state.status());
    case '/api/v1/events':
      return send(200, { events: state.mergedEvents(intParam(url, 'limit', 100, 500)) });
    case '/api/v1/history':
      return send(200, { intervalS: 1, samples: state.history });
    case '/api/v1/backends': {
      // Each backend with the flows this balancer's table holds on it (every balancer holds
      // every record, so this is the cluster's count; cached like the status page's counts).
      const by = (await state.flowCounts()).byBackend;
      return send(200, { backends: b.health.states().map((x) => ({ ...x, flows: by[heldKey(x.vip, x.backend, x.port)] ?? 0 })) });
    }
    case '/api/v1/vips': {
      const held = await state.flowCounts();
      return send(200, servicesBody(b, held, state.serviceRates, held.at));
    }
    case '/api/v1/backends/drain':
    case '/api/v1/backends/undrain': {
      const body = await readJson(req);
      const vip = body?.['vip'];
      const address = body?.['address'];
      if ((typeof vip !== 'string' && typeof vip !== 'number') || typeof address !== 'string') {
        return send(400, { error: 'expected a JSON body {"vip": NAME, "address": BACKEND_ADDRESS}' });
      }
      const drain = path.endsWith('/drain');
      try {
        const ev = drain ? b.health.drain(vip, address) : b.health.undrain(vip, address);
        state.operatorEvent(
          drain ? 'backend_drain' : 'backend_undrain',
          `${vip} ${address} ${drain ? 'drained' : 'undrained'}${ev === null ? ` (was ${drain ? 'drained' : 'not drained'} already)` : ''}`,
          apiOrigin(req.socket.remoteAddress),
        );
        return send(200, { changed: ev !== null, event: ev });
      } catch (e) {
        if (isTunlbError(e, ErrorCodes.ADMIN)) return send(400, { error: e.message });
        throw e;
      }
    }
    case '/api/v1/backends/weight':
    case '/api/v1/backends/maintenance':
      return runtimeOverride(req, path.endsWith('/weight') ? 'weight' : 'maintenance', b, send);
    case '/api/v1/self/drain':
    case '/api/v1/self/undrain': {
      try {
        const origin = apiOrigin(req.socket.remoteAddress);
        if (path.endsWith('/drain')) await b.drainSelf(origin);
        else await b.undrainSelf(origin);
      } catch (e) {
        if (isTunlbError(e, ErrorCodes.USAGE)) return send(400, { error: e.message, code: e.code });
        throw e;
      }
      return send(200, { status: b.cluster?.membership.selfStatus ?? 'serving', announce: b.announcer?.vips() ?? [] });
    }
    case '/api/v1/reload': {
      try {
        return send(200, await b.reload(apiOrigin(req.socket.remoteAddress)));
      } catch (e) {
        if (isTunlbError(e, ErrorCodes.CONFIG_INVALID) || isTunlbError(e, ErrorCodes.CONFIG_NOT_FOUND) || isTunlbError(e, ErrorCodes.CONFIG_KEY_MISSING) || isTunlbError(e, ErrorCodes.USAGE)) {
          return send(400, { error: e.message, code: e.code, errors: formatConfigErrors(e).split('\n') });
        }
        throw e;
      }
    }
    case '/api/v1/reload/cluster': {
      const body = await readJson(req);
      const t = body?.['timeoutMs'];
      if (t !== undefined && !(typeof t === 'number' && Number.isInteger(t) && t >= 100 && t <= CLUSTER_RELOAD_MAX_MS)) {
        return send(400, { error: `timeoutMs must be an integer of 100..${CLUSTER_RELOAD_MAX_MS} ms`, code: ErrorCodes.USAGE });
      }
      const rows = await b.reloadCluster(apiOrigin(req.socket.remoteAddress), typeof t === 'number' ? t : CLUSTER_RELOAD_MS);
      return send(200, { ok: rows.every((r) => r.ok === true), balancers: rows });
    }
    case '/api/v1/cluster':
      return send(200, clusterBody(b, state.summary));
    default:
      return send(404, { error: `no such endpoint: ${path}` });
  }
}
