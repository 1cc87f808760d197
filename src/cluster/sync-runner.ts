/**
 * A (re)starting balancer's bulk sync, start to end (docs/failure-model.md "Bulk sync"): stream sessions
 * (src/cluster/sync-stream.ts) to serving peers, resumed from where the last one stopped, on
 * another peer when there is one, until a session reaches its done chunk. Owned by ClusterNode
 * (syncThenServe), which reports SERVING when run() resolves.
 *
 * Policy:
 * - Candidates are the peers that are up and SERVING now (`candidates()`, in preference order).
 *   The first session goes to the first; after a failure the next session goes to another
 *   candidate when there is one (the same peer otherwise), from the failed session's cursor:
 *   the sync order is the same on every balancer, so nothing applied is fetched again except
 *   the flows of one sync row (src/cluster/sync-order.ts).
 * - A failure is logged and kept as an event with the peer, the cause, the records applied so
 *   far and the cursor; the next session starts after a backoff (`backoffMs`, doubling up to
 *   `maxBackoffMs`, back to the start after a session that applied records).
 * - A peer that refuses the TCP connection (ECONNREFUSED) while it answers probes runs the
 *   first release, which only has the datagram sync: `legacy(peer)` is tried once per peer
 *   (from the start; its own timeout).
 * - There is no overall deadline while serving peers exist: a balancer with an incomplete table
 *   does not serve. When no candidate has been seen for `noPeerWaitMs` (every peer died, or
 *   none is serving), run() resolves with ok = false and the owner serves with what it has
 *   applied (it is then alone or first: the usual start of a cluster).
 *
 * Progress (`progress`, for `tunlb status` and the status page): records received of the total
 * (records before this session + the responder's snapshot_records from the cursor), the rate,
 * the peer, sessions and resumes, the last error. Events (`onEvent`): sync_started,
 * sync_resumed, sync_failed, sync_done, sync_gave_up.
 */
import { performance } from 'node:perf_hooks';
import type { SyncHost, SyncResult, SyncStats } from './bulk-sync';
import { SYNC_ROWS } from './sync-order';
import { SyncSession, type SyncSessionOptions } from './sync-session';
import type { SyncConnection, SyncStreamIdentity } from './sync-stream';

export type SyncEventType = 'sync_started' | 'sync_resumed' | 'sync_failed' | 'sync_done' | 'sync_gave_up';

export interface SyncEvent {
  type: SyncEventType;
  /** Balancer index of the peer (-1: none). */
  peer: number;
  /** Its id ('' for none). */
  id: string;
  reason: string;
  /** Records applied so far (all sessions). */
  records: number;
  /** Sync-order position reached (0..65536). */
  cursor: number;
  /** ms since the sync started. */
  ms: number;
}

export interface SyncProgress {
  state: 'idle' | 'syncing' | 'done' | 'failed';
  /** The peer of the current (or last) session. */
  peer: string | null;
  /** Records applied (all sessions). */
  received: number;
  /** Expected total: records before this session + the responder's snapshot from the cursor (null until known). */
  total: number | null;
  /** received / elapsed, records per second. */
  ratePerS: number;
  elapsedMs: number;
  /** Sync-order position reached (0..65536). */
  cursor: number;
  sessions: number;
  resumes: number;
  lastError: string | null;
  startedAt: string | null;
}

export interface SyncOutcome {
  ok: boolean;
  /** The peer whose session completed (-1 if none). */
  peer: number;
  records: number;
  ms: number;
  sessions: number;
  /** Why it did not complete (ok = false). */
  reason: string;
}

export interface SyncRunnerOptions extends SyncStreamIdentity {
  host: SyncHost;
  stats: SyncStats;
  /** Opens a connection to `peer`'s sync stream (errors arrive as the connection's events). */
  connect: (peer: number) => SyncConnection;
  /** Peers that are up and serving now, in preference order. */
  candidates: () => number[];
  /** False once `peer` is down (probes): its session ends at once. */
  peerAlive?: (peer: number) => boolean;
  /** The first release's datagram sync, for a peer that refuses the stream connection. */
  legacy?: (peer: number) => Promise<SyncResult>;
  /** Resolve with ok = false after this long without any candidate, ms (default 3000). */
  noPeerWaitMs?: number;
  /** Pause after a failed session, ms: first (default 50), doubling up to the max (default 2000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  session?: Partial<Pick<SyncSessionOptions, 'stepMs' | 'idleTimeoutMs' | 'highWaterBytes' | 'lowWaterBytes' | 'watchMs' | 'deadQuietMs'>>;
  onEvent?: (e: SyncEvent) => void;
}

export class SyncRunner {
  readonly progress: SyncProgress = {
    state: 'idle',
    peer: null,
    received: 0,
    total: null,
    ratePerS: 0,
    elapsedMs: 0,
    cursor: 0,
    sessions: 0,
    resumes: 0,
    lastError: null,
    startedAt: null,
  };
  readonly #o: SyncRunnerOptions;
  #session: SyncSession | null = null;
  #stopped = false;
  #startedMs = 0;
  #before = 0;
  #wake: (() => void) | null = null;

  constructor(opts: SyncRunnerOptions) {
    this.#o = opts;
  }

  /** Ends the current session and makes run() resolve (ok = false, 'stopped'). */
  stop(): void {
    this.#stopped = true;
    this.#session?.abort('bulk sync stopped');
    this.#wake?.();
  }

  /** Refreshes the time-dependent progress fields and returns the progress. */
  snapshot(): SyncProgress {
    const p = this.progress;
    if (p.state === 'syncing') {
      const s = this.#session;
      p.received = this.#before + (s?.records ?? 0);
      if (s !== null && s.snapshotRecords >= 0) p.total = this.#before + s.snapshotRecords;
      if (s !== null) p.cursor = s.cursor;
      p.elapsedMs = performance.now() - this.#startedMs;
    }
    p.ratePerS = p.elapsedMs > 0 ? Math.round((p.received * 1000) / p.elapsedMs) : 0;
    return p;
  }

  async run(): Promise<SyncOutcome> {
    const o = this.#o;
    const p = this.progress;
    const log = o.host.log;
    const name = (i: number): string => (i < 0 ? '' : (o.host.peerName?.(i) ?? `balancer ${i}`));
    this.#startedMs = performance.now();
    p.state = 'syncing';
    p.startedAt = new Date().toISOString();
    let cursor = 0;
    let lastFailed = -1;
    let backoff = o.backoffMs ?? 50;
    let noPeerSince = -1;
    const legacyTried = new Set<number>();
    const emit = (type: SyncEventType, peer: number, reason: string): void => {
      o.onEvent?.({ type, peer, id: name(peer), reason, records: this.#before, cursor, ms: Math.round(performance.now() - this.#startedMs) });
    };
    const finish = (ok: boolean, peer: number, reason: string): SyncOutcome => {
      const ms = performance.now() - this.#startedMs;
      this.#session = null;
      p.state = ok ? 'done' : 'failed';
      p.received = this.#before;
      p.cursor = cursor;
      p.elapsedMs = ms;
      if (ok) {
        p.total = this.#before;
        o.stats.syncsCompleted++;
        o.stats.syncLastRecords = this.#before;
        o.stats.syncLastMs = Math.round(ms);
      } else {
        o.stats.syncsFailed++;
      }
      this.snapshot();
      return { ok, peer, records: this.#before, ms, sessions: p.sessions, reason };
    };

    for (;;) {
      if (this.#stopped) return finish(false, -1, 'stopped');
      const cands = o.candidates();
      if (cands.length === 0) {
        const now = performance.now();
        if (noPeerSince < 0) noPeerSince = now;
        if (now - noPeerSince >= (o.noPeerWaitMs ?? 3000)) {
          const why = `no serving peer for ${Math.round(now - noPeerSince)} ms (${this.#before} records applied, position ${cursor} of ${SYNC_ROWS})`;
          log?.warn({ event: 'sync_gave_up', records: this.#before, cursor }, `bulk sync gave up: ${why}`);
          emit('sync_gave_up', -1, why);
          return finish(false, -1, why);
        }
        await this.#sleep(50);
        continue;
      }
      noPeerSince = -1;
      const others = cands.filter((c) => c !== lastFailed);
      const peer = others.length > 0 ? others[0]! : cands[0]!;
      p.peer = name(peer);
      p.sessions++;
      if (cursor > 0) p.resumes++;
      const s = new SyncSession(o.connect(peer), {
        key: o.key,
        clusterId: o.clusterId,
        selfIndex: o.selfIndex,
        incarnation: o.incarnation,
        balancerCount: o.balancerCount,
        host: o.host,
        stats: o.stats,
        peer,
        fromCursor: cursor,
        ...(o.peerAlive !== undefined ? { peerAlive: () => o.peerAlive!(peer) } : {}),
        ...(o.session ?? {}),
      });
      this.#session = s;
      if (cursor === 0) {
        log?.info({ event: 'sync_started', peer: name(peer) }, `bulk sync from ${name(peer)} started`);
        emit('sync_started', peer, 'from the start');
      } else {
        const why = `from position ${cursor} of ${SYNC_ROWS}, ${this.#before} records applied`;
        log?.info({ event: 'sync_resumed', peer: name(peer), cursor, records: this.#before }, `bulk sync resumed with ${name(peer)} ${why}`);
        emit('sync_resumed', peer, why);
      }
      const end = await s.ended;
      this.#before += end.records;
      cursor = end.cursor;
      this.#session = null;
      p.received = this.#before;
      p.cursor = cursor;
      if (end.done) {
        const ms = Math.round(performance.now() - this.#startedMs);
        const why = `${this.#before} records in ${ms} ms over ${p.sessions} session${p.sessions === 1 ? '' : 's'}`;
        log?.info({ event: 'sync_done', peer: name(peer), records: this.#before, ms, sessions: p.sessions, resumes: p.resumes }, `bulk sync from ${name(peer)}: ${why}`);
        emit('sync_done', peer, why);
        return finish(true, peer, '');
      }
      if (this.#stopped) return finish(false, -1, 'stopped');
      if (end.cause === 'connect_refused' && o.legacy !== undefined && !legacyTried.has(peer)) {
        legacyTried.add(peer);
        log?.warn({ event: 'sync_legacy', peer: name(peer) }, `${name(peer)} has no sync stream (an older release?): datagram bulk sync instead`);
        try {
          const r = await o.legacy(peer);
          this.#before += r.records;
          cursor = SYNC_ROWS;
          emit('sync_done', peer, `${r.records} records by datagrams`);
          return finish(true, peer, '');
        } catch (e) {
          end.reason = `datagram sync: ${(e as Error).message}`;
        }
      }
      const why = `${end.reason}; ${this.#before} records applied, position ${cursor} of ${SYNC_ROWS}: resuming${cands.length > 1 ? ' with another peer' : ''}`;
      p.lastError = `${name(peer)}: ${end.reason}`;
      log?.warn({ event: 'sync_failed', peer: name(peer), cause: end.cause, records: this.#before, cursor }, `bulk sync from ${name(peer)} failed: ${why}`);
      emit('sync_failed', peer, why);
      lastFailed = peer;
      if (end.records > 0) {
        backoff = o.backoffMs ?? 50; // it was moving: resume at once
      } else {
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, o.maxBackoffMs ?? 2000);
      }
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#wake = null;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(t);
        this.#wake = null;
        resolve();
      };
    });
  }
}
