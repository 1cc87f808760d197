/**
 * Bulk sync stream, the requester's session over one connection (src/cluster/sync-stream.ts has
 * the overview; src/cluster/sync-runner.ts runs sessions until one completes).
 *
 * - Sends its hello at once (a net.Socket queues it until connected), checks the welcome (MAC
 *   with the cluster key over its own nonce, version, cluster, sender = the peer it called),
 *   derives the session key and sends the request from `fromCursor`.
 * - Applies chunks in steps of about `stepMs` (host.applyRecord, the usual rules), then yields.
 *   Received bytes wait in the frame reader; above `highWaterBytes` the connection is paused
 *   (TCP then closes the window and the responder waits), below `lowWaterBytes` resumed. So a
 *   busy receiver is never overrun, and its loop never holds more than ~stepMs of sync work.
 * - After a chunk is fully applied, `cursor` = its next_cursor: a later session that starts
 *   there, on any peer, misses nothing that this one did not already apply.
 * - Ends (the `ended` promise, never rejected) with done = true after the done chunk when the
 *   records of the session equal its total_records; otherwise with the cause: refused (and the
 *   reason), closed, idle (no byte and no progress for `idleTimeoutMs`, connecting included),
 *   peer_down (`peerAlive` false and no byte for `deadQuietMs`), a drop reason (bad_mac, ...),
 *   count_mismatch, error, aborted.
 */
import { randomBytes, randomInt } from 'node:crypto';
import {
  SYNC_NONCE_LEN,
  SYNC_STREAM_RESULT_NAMES,
  SYNC_STREAM_VERSION,
  SyncDirection,
  SyncFrameReader,
  SyncFrameResult,
  SyncFrameWriter,
  SyncStreamResult,
  syncSessionKey,
  tunlb,
} from '../protocol';
import { countBy, type SyncHost, type SyncStats, type SyncStreamDropReason } from './bulk-sync';
import { SYNC_ROWS } from './sync-order';
import { peerLabel, refusalName, type SyncConnection, type SyncStreamIdentity } from './sync-stream';

// ----------------------------------------------------------------------------- requester

export interface SyncSessionOptions extends SyncStreamIdentity {
  host: SyncHost;
  stats: SyncStats;
  /** The responder's balancer index. */
  peer: number;
  /** Sync-order position to start from (0..65536). */
  fromCursor: number;
  /** Apply work per event-loop turn, ms (default 2). */
  stepMs?: number;
  /** No byte received and no record applied for this long (connecting included) ends the session, ms (default 5000). */
  idleTimeoutMs?: number;
  /** Unapplied bytes above which the connection is paused (default 4 MiB), and resumed below (default 1 MiB). */
  highWaterBytes?: number;
  lowWaterBytes?: number;
  /**
   * Checked every watchMs (default 100): false ends the session (the peer died) once no byte
   * has come from it for deadQuietMs (default 500) either, so a probe answer that was late on a
   * busy balancer does not break a stream that is flowing.
   */
  peerAlive?: () => boolean;
  deadQuietMs?: number;
  watchMs?: number;
  /** After every applied chunk. */
  onProgress?: () => void;
}

export interface SyncSessionEnd {
  /** The done chunk arrived and the counts matched. */
  done: boolean;
  /** Records applied in this session. */
  records: number;
  /** Where the next session starts (0..65536; 65536 when done). */
  cursor: number;
  /** Short cause when not done: refused:<reason>, closed, idle, peer_down, bad_mac, ..., count_mismatch, connect_refused, error, aborted. */
  cause: string;
  /** One line for logs. */
  reason: string;
}

const enum CState {
  WELCOME,
  STREAM,
  ENDED,
}

export class SyncSession {
  /** Records applied in this session. */
  records = 0;
  chunks = 0;
  /** Resume point: next_cursor of the last chunk fully applied. */
  cursor: number;
  /** The responder's snapshot_records (-1 until the first chunk). */
  snapshotRecords = -1;
  readonly requestId = randomInt(1, 2 ** 47);
  readonly ended: Promise<SyncSessionEnd>;
  readonly #o: SyncSessionOptions;
  readonly #conn: SyncConnection;
  readonly #reader = new SyncFrameReader(SyncDirection.RESPONDER);
  readonly #writer = new SyncFrameWriter(SyncDirection.REQUESTER);
  readonly #res = new SyncFrameResult();
  readonly #nonce = randomBytes(SYNC_NONCE_LEN);
  readonly #stepMs: number;
  readonly #idleMs: number;
  readonly #high: number;
  readonly #low: number;
  #state = CState.WELCOME;
  #chunk: tunlb.v1.SyncChunk | null = null;
  #chunkPos = 0;
  #scheduled = false;
  #paused = false;
  #lastActivity = performance.now();
  /** When the last bytes arrived (the construction time before any). */
  #lastData = performance.now();
  readonly #deadQuietMs: number;
  #watch: NodeJS.Timeout;
  #error: (Error & { code?: string }) | undefined;
  /** The connection closed while received frames still waited to be applied. */
  #closedPending = false;
  #resolve!: (e: SyncSessionEnd) => void;

  constructor(conn: SyncConnection, opts: SyncSessionOptions) {
    this.#o = opts;
    this.#conn = conn;
    this.cursor = Math.min(SYNC_ROWS, Math.max(0, Math.floor(opts.fromCursor)));
    this.#stepMs = opts.stepMs ?? 2;
    this.#idleMs = opts.idleTimeoutMs ?? 5000;
    this.#deadQuietMs = opts.deadQuietMs ?? 500;
    this.#high = Math.max(opts.highWaterBytes ?? 4 << 20, 2 * this.#reader.maxFrame);
    this.#low = opts.lowWaterBytes ?? 1 << 20;
    this.ended = new Promise((r) => (this.#resolve = r));
    opts.stats.syncSessions++;
    if (this.cursor > 0) opts.stats.syncResumes++;
    this.#reader.key = opts.key;
    this.#reader.extra = this.#nonce;
    conn.on('data', (b) => {
      if (this.#state === CState.ENDED) return;
      this.#lastActivity = this.#lastData = performance.now();
      this.#reader.push(b);
      this.#schedule();
    });
    conn.on('error', (e) => {
      this.#error ??= e;
    });
    conn.on('close', () => {
      if (this.#state === CState.ENDED) return;
      // Frames that arrived before the close are still applied (a done chunk then a close).
      if (this.#reader.buffered > 0 || this.#chunk !== null) {
        this.#closedPending = true;
        this.#schedule();
        return;
      }
      this.#endClosed();
    });
    this.#watch = setInterval(() => this.#check(), opts.watchMs ?? 100);
    this.#watch.unref?.();
    conn.write(
      this.#writer.seal(
        { hello: { streamVersion: SYNC_STREAM_VERSION, clusterId: opts.clusterId, sender: opts.selfIndex, incarnation: opts.incarnation, nonce: this.#nonce } },
        opts.key,
      ),
    );
  }

  /** Ends the session now (e.g. the runner stops). */
  abort(reason = 'aborted'): void {
    this.#end(false, 'aborted', reason);
  }

  #check(): void {
    if (this.#state === CState.ENDED) return;
    const o = this.#o;
    // Probes say the peer is dead: believed only when its bytes stopped too (or never came).
    // A peer that streams is alive, whatever a late probe answer made the membership think;
    // a killed process's connection is closed by its kernel anyway ('closed').
    const quiet = performance.now() - this.#lastData;
    if (o.peerAlive !== undefined && !o.peerAlive() && !this.#paused && quiet > this.#deadQuietMs) {
      this.#end(false, 'peer_down', `${peerLabel(o.host, o.peer)} is down (probes; no data for ${Math.round(quiet)} ms)`);
      return;
    }
    const idle = performance.now() - this.#lastActivity;
    if (!this.#paused && !this.#scheduled && idle > this.#idleMs) {
      this.#end(false, 'idle', `no data from ${peerLabel(o.host, o.peer)} for ${Math.round(idle)} ms${this.#state === CState.WELCOME ? ' (no welcome: not connected?)' : ''}`);
    }
  }

  #schedule(): void {
    if (this.#scheduled || this.#state === CState.ENDED) return;
    this.#scheduled = true;
    this.#o.host.defer(() => {
      this.#scheduled = false;
      this.#step();
    });
  }

  #step(): void {
    if (this.#state === CState.ENDED) return;
    const t0 = performance.now();
    const o = this.#o;
    let yielded = false;
    try {
      for (;;) {
        if (this.#chunk !== null) {
          if (!this.#applySome(t0)) {
            yielded = true; // budget used up inside the chunk
            break;
          }
        } else {
          if (!this.#reader.next(this.#res)) break; // the next frame has not fully arrived
          const r = this.#res;
          if (r.result !== SyncStreamResult.OK) {
            const name = SYNC_STREAM_RESULT_NAMES[r.result]!;
            countBy(o.stats.syncStreamDrops, name);
            this.#end(false, name, `bad frame from ${peerLabel(o.host, o.peer)}: ${name}`);
            return;
          }
          this.#onFrame(r.frame!);
        }
        if ((this.#state as CState) === CState.ENDED) return;
        if (performance.now() - t0 >= this.#stepMs) {
          yielded = this.#chunk !== null || this.#reader.ready;
          break;
        }
      }
    } catch (e) {
      this.#end(false, 'error', `bulk sync session failed: ${String(e)}`);
      return;
    }
    this.#lastActivity = performance.now();
    // Flow control: stop reading while too much waits here (TCP then closes the window); a
    // paused reader always holds a whole frame (highWater > the largest frame), so no deadlock.
    if (!this.#paused && this.#reader.buffered > this.#high) {
      this.#paused = true;
      this.#conn.pause();
    } else if (this.#paused && this.#reader.buffered < this.#low) {
      this.#paused = false;
      this.#conn.resume();
    }
    if (yielded) this.#schedule();
    else if (this.#closedPending) this.#endClosed();
  }

  #onFrame(f: tunlb.v1.SyncFrame): void {
    const o = this.#o;
    if (this.#state === CState.WELCOME) {
      if (f.body === 'refusal') return this.#refused(f.refusal as tunlb.v1.SyncRefusal);
      const w = f.welcome as tunlb.v1.SyncHello | null | undefined;
      if (f.body !== 'welcome' || w == null) return this.#drop('unexpected_frame');
      if (w.clusterId !== o.clusterId) return this.#drop('wrong_cluster');
      if (w.sender !== o.peer) return this.#drop('wrong_sender');
      if (w.streamVersion !== SYNC_STREAM_VERSION) return this.#drop('bad_version');
      if (!(w.nonce instanceof Uint8Array) || w.nonce.length !== SYNC_NONCE_LEN) return this.#drop('malformed_body');
      const sk = syncSessionKey(o.key, this.#nonce, w.nonce);
      this.#reader.key = sk;
      this.#reader.extra = null;
      this.#conn.write(this.#writer.seal({ request: { requestId: this.requestId, fromCursor: this.cursor } }, sk));
      this.#state = CState.STREAM;
      return;
    }
    if (f.body === 'refusal') return this.#refused(f.refusal as tunlb.v1.SyncRefusal);
    const c = f.chunk as tunlb.v1.SyncChunk | null | undefined;
    if (f.body !== 'chunk' || c == null || c.requestId !== this.requestId) return this.#drop('unexpected_frame');
    this.#chunk = c;
    this.#chunkPos = 0;
  }

  /** Applies records of the current chunk until done or out of budget; false when out of budget. */
  #applySome(t0: number): boolean {
    const c = this.#chunk!;
    const recs = c.records;
    const o = this.#o;
    const host = o.host;
    const peer = o.peer;
    let i = this.#chunkPos;
    while (i < recs.length) {
      const end = Math.min(recs.length, i + 64);
      for (; i < end; i++) host.applyRecord(peer, recs[i] as tunlb.v1.FlowRecord);
      if (i < recs.length && performance.now() - t0 >= this.#stepMs) {
        this.records += i - this.#chunkPos;
        o.stats.syncRecordsReceived += i - this.#chunkPos;
        this.#chunkPos = i;
        return false;
      }
    }
    const n = i - this.#chunkPos;
    this.records += n;
    o.stats.syncRecordsReceived += n;
    this.#chunk = null;
    this.chunks++;
    o.stats.syncChunksReceived++;
    this.snapshotRecords = c.snapshotRecords;
    this.cursor = Math.min(SYNC_ROWS, Math.max(0, c.nextCursor));
    o.onProgress?.();
    if (c.done) {
      if (c.totalRecords === this.records) this.#end(true, '', '');
      else this.#end(false, 'count_mismatch', `${peerLabel(o.host, peer)} sent ${c.totalRecords} records, ${this.records} arrived`);
    }
    return true;
  }

  #refused(r: tunlb.v1.SyncRefusal): void {
    const name = refusalName(r.reason);
    this.#end(false, `refused:${name}`, `${peerLabel(this.#o.host, this.#o.peer)} refused: ${name}${r.detail ? ` (${String(r.detail).slice(0, 200)})` : ''}`);
  }

  #drop(reason: SyncStreamDropReason): void {
    countBy(this.#o.stats.syncStreamDrops, reason);
    this.#end(false, reason, `bad frame from ${peerLabel(this.#o.host, this.#o.peer)}: ${reason}`);
  }

  #endClosed(): void {
    const e = this.#error;
    const who = peerLabel(this.#o.host, this.#o.peer);
    if (e?.code === 'ECONNREFUSED') this.#end(false, 'connect_refused', `${who} refused the connection (${e.message})`);
    else if (e !== undefined) this.#end(false, 'error', `connection to ${who}: ${e.message}`);
    else this.#end(false, 'closed', `${who} closed the connection`);
  }

  #end(done: boolean, cause: string, reason: string): void {
    if (this.#state === CState.ENDED) return;
    this.#state = CState.ENDED;
    clearInterval(this.#watch);
    this.#chunk = null;
    if (done) this.#conn.end();
    else this.#conn.destroy();
    if (!done) countBy(this.#o.stats.syncSessionFailures, cause.startsWith('refused:') ? 'refused' : cause);
    this.#resolve({ done, records: this.records, cursor: done ? SYNC_ROWS : this.cursor, cause, reason });
  }
}
