/**
 * Bulk sync stream, the responder (src/cluster/sync-stream.ts has the overview).
 *
 * - accept(conn, peer): `peer` is the configured balancer the connection comes from (the
 *   transport matched its source address; others never get here). Handshake (frames C0, S0,
 *   C1, see src/protocol/sync-frame.ts); a hello that is not from `peer`, of another cluster
 *   or with a bad MAC drops the connection, counted in stats.syncStreamDrops by reason.
 * - The request is refused (SyncRefusal, counted in syncStreamsRefused) when this balancer is
 *   not serving itself (`isServing`: its own table may be incomplete), when `maxSessions`
 *   answers run (BUSY: the requester tries another peer), or when from_cursor > 65536. A new
 *   request from a requester ends its older connections (a requester runs one session at a time).
 * - Snapshot: the table in sync order (src/cluster/sync-order.ts), built in steps. A request
 *   from the same requester incarnation as a broken session (a resume, or a restart from 0
 *   when nothing was applied yet) reuses that session's snapshot (kept `snapshotTtlMs` after
 *   its connection closed), so retrying costs no table walk: flows created since the snapshot
 *   reached the requester by replication, which it has been listening to since before its
 *   first request. Otherwise a fresh one is built. The first chunk (no records) carries
 *   snapshot_records at once, for the requester's progress report.
 * - Streaming: chunks of about `chunkBytes` of records (~900 IPv4 records at 32 KiB), each one
 *   frame; records are filled when sent (SyncHost.fillSyncRecord), so entries that ended since
 *   the snapshot are skipped and state/idle times are current. Flow control follows the
 *   receiver: while more than `writeHighWater` bytes wait in the connection (the requester
 *   reads slowly: its TCP window closed), nothing is produced until 'drain'.
 * - Pacing: every step (snapshot or chunks) works for at most about `stepMs` and then yields
 *   (host.defer, setImmediate), so probes and the data plane keep running on this balancer.
 */
import { randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  COMPACT_V4_KEY_LEN,
  delimitedSize,
  fillRecordSlot,
  FLOW_KEY_LEN,
  flowRecordSize,
  isCompactV4,
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
  type FlowRecordFields,
  type RecordSlot,
} from '../protocol';
import { countBy, type SyncHost, type SyncStats, type SyncStreamDropReason } from './bulk-sync';
import { SYNC_ROWS, SyncSnapshotBuilder, type SyncSnapshot } from './sync-order';
import { peerLabel, refusalName, type SyncConnection, type SyncStreamIdentity } from './sync-stream';

const Reason = tunlb.v1.SyncRefusal.Reason;
/** Module-local bindings of what the per-record loop calls (docs/performance.md "Module-local bindings"). */
const isCompact = isCompactV4;
const recordSize = flowRecordSize;
const delimited = delimitedSize;
const fillSlot = fillRecordSlot;

// ----------------------------------------------------------------------------- packing

/** Packs records into one chunk frame of at most ~`limit` bytes of records. */
class StreamChunkPacker {
  readonly #slots: RecordSlot[] = [];
  readonly #recs: tunlb.v1.FlowRecord[] = [];
  #count = 0;
  #bytes = 0;

  reset(): void {
    this.#count = 0;
    this.#bytes = 0;
  }

  get count(): number {
    return this.#count;
  }

  /** Adds a record unless the chunk already holds `limit` bytes of records (then false). */
  tryAdd(f: FlowRecordFields, key: Uint8Array, limit: number): boolean {
    if (this.#bytes >= limit) return false;
    const compact = isCompact(key, 0);
    this.#bytes += delimited(recordSize(f, compact ? COMPACT_V4_KEY_LEN : FLOW_KEY_LEN));
    let s = this.#slots[this.#count];
    if (s === undefined) {
      s = { rec: new tunlb.v1.FlowRecord(), key40: new Uint8Array(FLOW_KEY_LEN), key13: new Uint8Array(COMPACT_V4_KEY_LEN) };
      this.#slots.push(s);
    }
    fillSlot(s, f, key, 0, compact);
    this.#count++;
    return true;
  }

  /** The records of the chunk (an array reused by the next chunk: encode before reset). */
  records(): tunlb.v1.FlowRecord[] {
    const r = this.#recs;
    r.length = this.#count;
    for (let i = 0; i < this.#count; i++) r[i] = this.#slots[i]!.rec;
    return r;
  }
}

// ----------------------------------------------------------------------------- responder

export interface SyncStreamServerOptions extends SyncStreamIdentity {
  host: SyncHost;
  stats: SyncStats;
  /** False while this balancer is not serving (its table may be incomplete): requests are refused. */
  isServing?: () => boolean;
  /** Concurrent answers (default 4). */
  maxSessions?: number;
  /** Work per event-loop turn, ms (default 1). */
  stepMs?: number;
  /** Record bytes per chunk frame (default 32768). */
  chunkBytes?: number;
  /** Bytes queued in a connection above which production waits for 'drain' (default 1 MiB). */
  writeHighWater?: number;
  /** Deadline for the requester's hello and request, ms (default 5000). */
  handshakeTimeoutMs?: number;
  /** How long a broken session's snapshot is kept for a resume, ms (default 60000). */
  snapshotTtlMs?: number;
}

const enum SState {
  HELLO,
  REQUEST,
  SNAPSHOT,
  STREAM,
  CLOSED,
}

interface ServerConn {
  readonly conn: SyncConnection;
  readonly peer: number;
  state: SState;
  readonly reader: SyncFrameReader;
  readonly writer: SyncFrameWriter;
  sessionKey: KeyObject | null;
  requesterIncarnation: number;
  requestId: number;
  from: number;
  builder: SyncSnapshotBuilder | null;
  snapshot: SyncSnapshot | null;
  pos: number;
  snapshotRecords: number;
  chunkIndex: number;
  total: number;
  scheduled: boolean;
  blocked: boolean;
  startedMs: number;
  timer: NodeJS.Timeout | undefined;
}

interface CachedSnapshot {
  readonly incarnation: number;
  readonly snapshot: SyncSnapshot;
  timer: NodeJS.Timeout | undefined;
}

export class SyncStreamServer {
  readonly #o: SyncStreamServerOptions;
  readonly #host: SyncHost;
  readonly #stats: SyncStats;
  readonly #conns = new Set<ServerConn>();
  readonly #cache = new Map<number, CachedSnapshot>();
  readonly #packer = new StreamChunkPacker();
  readonly #fields: FlowRecordFields = { op: 1, primary: 0, backup: 0, vip: 0, backend: 0, state: 0, ageS: 0, idleS: 0, tableGeneration: 0 };
  readonly #key = new Uint8Array(FLOW_KEY_LEN);
  readonly #res = new SyncFrameResult();
  readonly #maxSessions: number;
  readonly #stepMs: number;
  readonly #chunkBytes: number;
  readonly #highWater: number;
  readonly #handshakeMs: number;
  readonly #ttlMs: number;
  #stopped = false;

  constructor(opts: SyncStreamServerOptions) {
    this.#o = opts;
    this.#host = opts.host;
    this.#stats = opts.stats;
    this.#maxSessions = opts.maxSessions ?? 4;
    this.#stepMs = opts.stepMs ?? 1;
    this.#chunkBytes = opts.chunkBytes ?? 32768;
    this.#highWater = opts.writeHighWater ?? 1 << 20;
    this.#handshakeMs = opts.handshakeTimeoutMs ?? 5000;
    this.#ttlMs = opts.snapshotTtlMs ?? 60000;
  }

  /** Answers in progress (building a snapshot or streaming). */
  get active(): number {
    let n = 0;
    for (const c of this.#conns) if (c.state === SState.SNAPSHOT || c.state === SState.STREAM) n++;
    return n;
  }

  /** Snapshots kept for resumes. */
  get cachedSnapshots(): number {
    return this.#cache.size;
  }

  /** Takes a connection from balancer `peer` (its source address matched). Never throws. */
  accept(conn: SyncConnection, peer: number): void {
    this.#stats.syncStreamsAccepted++;
    const c: ServerConn = {
      conn,
      peer,
      state: SState.HELLO,
      reader: new SyncFrameReader(SyncDirection.REQUESTER),
      writer: new SyncFrameWriter(SyncDirection.RESPONDER),
      sessionKey: null,
      requesterIncarnation: 0,
      requestId: 0,
      from: 0,
      builder: null,
      snapshot: null,
      pos: 0,
      snapshotRecords: 0,
      chunkIndex: 0,
      total: 0,
      scheduled: false,
      blocked: false,
      startedMs: performance.now(),
      timer: undefined,
    };
    c.reader.key = this.#o.key;
    this.#conns.add(c);
    conn.on('data', (b) => {
      if (c.state === SState.CLOSED) return;
      c.reader.push(b);
      this.#onFrames(c);
    });
    conn.on('drain', () => {
      if (c.blocked && c.state === SState.STREAM) {
        c.blocked = false;
        this.#schedule(c);
      }
    });
    conn.on('error', () => undefined); // 'close' follows
    conn.on('close', () => this.#closed(c));
    c.timer = setTimeout(() => {
      if (c.state === SState.HELLO || c.state === SState.REQUEST) this.#drop(c, 'handshake_timeout');
    }, this.#handshakeMs);
    c.timer.unref?.();
    if (this.#stopped) this.#close(c);
  }

  /** Ends every connection and forgets the snapshots (shutdown). */
  stop(): void {
    this.#stopped = true;
    for (const c of [...this.#conns]) this.#close(c);
    for (const e of this.#cache.values()) if (e.timer !== undefined) clearTimeout(e.timer);
    this.#cache.clear();
  }

  // ---- handshake and request

  #onFrames(c: ServerConn): void {
    const r = this.#res;
    while (c.state === SState.HELLO || c.state === SState.REQUEST) {
      if (!c.reader.next(r)) return;
      if (r.result !== SyncStreamResult.OK) {
        this.#drop(c, SYNC_STREAM_RESULT_NAMES[r.result] as SyncStreamDropReason);
        return;
      }
      const f = r.frame!;
      if (c.state === SState.HELLO) this.#onHello(c, f);
      else this.#onRequest(c, f);
    }
    // After the request the requester sends nothing: anything more is a protocol error.
    if (c.state === SState.SNAPSHOT || c.state === SState.STREAM) {
      if (c.reader.buffered > 0) this.#drop(c, 'unexpected_frame');
    }
  }

  #onHello(c: ServerConn, f: tunlb.v1.SyncFrame): void {
    const h = f.hello as tunlb.v1.SyncHello | null | undefined;
    if (f.body !== 'hello' || h == null) return this.#drop(c, 'unexpected_frame');
    if (h.clusterId !== this.#o.clusterId) return this.#drop(c, 'wrong_cluster');
    if (h.sender !== c.peer) return this.#drop(c, 'wrong_sender');
    if (!(h.nonce instanceof Uint8Array) || h.nonce.length !== SYNC_NONCE_LEN) return this.#drop(c, 'malformed_body');
    const clientNonce = Buffer.from(h.nonce);
    if (h.streamVersion !== SYNC_STREAM_VERSION) {
      // Refused in the welcome's place (same keying), so the requester can read why.
      c.conn.write(c.writer.seal({ refusal: { reason: Reason.BAD_VERSION, detail: `stream version ${SYNC_STREAM_VERSION} only` } }, this.#o.key, clientNonce));
      countBy(this.#stats.syncStreamsRefused, 'bad_version');
      this.#close(c, true);
      return;
    }
    const nonce = randomBytes(SYNC_NONCE_LEN);
    c.requesterIncarnation = h.incarnation;
    c.conn.write(
      c.writer.seal(
        { welcome: { streamVersion: SYNC_STREAM_VERSION, clusterId: this.#o.clusterId, sender: this.#o.selfIndex, incarnation: this.#o.incarnation, nonce } },
        this.#o.key,
        clientNonce,
      ),
    );
    c.sessionKey = syncSessionKey(this.#o.key, clientNonce, nonce);
    c.reader.key = c.sessionKey;
    c.state = SState.REQUEST;
  }

  #onRequest(c: ServerConn, f: tunlb.v1.SyncFrame): void {
    const q = f.request as tunlb.v1.SyncRequest | null | undefined;
    if (f.body !== 'request' || q == null) return this.#drop(c, 'unexpected_frame');
    if (c.timer !== undefined) clearTimeout(c.timer);
    c.timer = undefined;
    c.requestId = q.requestId;
    const from = q.fromCursor;
    if (this.#stopped) return this.#refuse(c, Reason.SHUTTING_DOWN, 'stopping');
    if (this.#o.isServing !== undefined && !this.#o.isServing()) return this.#refuse(c, Reason.NOT_SERVING, 'not serving (syncing or draining)');
    if (!Number.isInteger(from) || from > SYNC_ROWS) return this.#refuse(c, Reason.BAD_REQUEST, `from_cursor ${from} > ${SYNC_ROWS}`);
    // One session per requester: its older connections end (it gave up on them).
    for (const o of this.#conns) if (o !== c && o.peer === c.peer && o.state !== SState.CLOSED) this.#close(o);
    if (this.active >= this.#maxSessions) return this.#refuse(c, Reason.BUSY, `${this.active} syncs running`);
    c.from = from;
    const cached = this.#cache.get(c.peer);
    if (cached !== undefined && cached.timer !== undefined) clearTimeout(cached.timer);
    if (cached !== undefined && cached.incarnation === c.requesterIncarnation) {
      cached.timer = undefined;
      c.snapshot = cached.snapshot;
      this.#stats.syncSnapshotsReused++;
    } else {
      this.#cache.delete(c.peer);
      c.builder = new SyncSnapshotBuilder(this.#host.table);
    }
    c.state = SState.SNAPSHOT;
    this.#host.log?.info(
      { event: 'sync_serve_start', peer: c.peer, requestId: c.requestId, fromCursor: from, reused: c.snapshot !== null },
      `bulk sync to ${peerLabel(this.#host, c.peer)} started (from position ${from} of ${SYNC_ROWS}${c.snapshot !== null ? ', resumed on the same snapshot' : ''})`,
    );
    this.#schedule(c);
  }

  #refuse(c: ServerConn, reason: number, detail: string): void {
    const name = refusalName(reason);
    countBy(this.#stats.syncStreamsRefused, name);
    this.#host.log?.warn({ event: 'sync_refused', peer: c.peer, reason: name, detail }, `bulk sync request from ${peerLabel(this.#host, c.peer)} refused: ${detail}`);
    c.conn.write(c.writer.seal({ refusal: { reason, detail } }, c.sessionKey!));
    this.#close(c, true);
  }

  // ---- answer

  #schedule(c: ServerConn): void {
    if (c.scheduled || c.state === SState.CLOSED) return;
    c.scheduled = true;
    this.#host.defer(() => {
      c.scheduled = false;
      this.#step(c);
    });
  }

  #step(c: ServerConn): void {
    if (c.state === SState.CLOSED) return;
    const t0 = performance.now();
    try {
      if (c.state === SState.SNAPSHOT) {
        if (c.snapshot === null) {
          if (!c.builder!.step(this.#stepMs)) return this.#schedule(c);
          c.snapshot = c.builder!.result!;
          c.builder = null;
          this.#stats.syncSnapshotsBuilt++;
          this.#stats.syncSnapshotLastMs = c.snapshot.buildMs;
          this.#cache.set(c.peer, { incarnation: c.requesterIncarnation, snapshot: c.snapshot, timer: undefined });
        }
        c.pos = c.snapshot.start(c.from);
        c.snapshotRecords = c.snapshot.count - c.pos;
        c.state = SState.STREAM;
        this.#sendChunk(c); // chunk 0: the size, for the requester's progress
        if (performance.now() - t0 >= this.#stepMs) return this.#schedule(c);
      }
      while (c.state === SState.STREAM) {
        if (c.conn.writableLength >= this.#highWater) {
          c.blocked = true; // 'drain' reschedules
          return;
        }
        if (this.#sendChunk(c)) {
          this.#finish(c);
          return;
        }
        if (performance.now() - t0 >= this.#stepMs) return this.#schedule(c);
      }
    } catch (e) {
      // Defensive (a bug, not input): end this answer; the requester resumes elsewhere.
      this.#host.log?.warn({ event: 'sync_serve_failed', peer: c.peer, err: String(e) }, 'bulk sync answer failed');
      this.#close(c);
    }
  }

  /** Builds and writes the next chunk from c.pos; true when it was the done chunk. */
  #sendChunk(c: ServerConn): boolean {
    const snap = c.snapshot!;
    const ids = snap.ids;
    const host = this.#host;
    const p = this.#packer;
    const f = this.#fields;
    const key = this.#key;
    const first = c.chunkIndex === 0;
    p.reset();
    if (!first) {
      while (c.pos < ids.length) {
        const id = ids[c.pos]!;
        if (!host.fillSyncRecord(id, f, key)) {
          c.pos++;
          continue;
        }
        if (!p.tryAdd(f, key, this.#chunkBytes)) break;
        c.pos++;
      }
    }
    const done = !first && c.pos >= ids.length;
    // Every flow of a row below the row of the next id to send has been sent.
    const nextCursor = c.pos >= ids.length ? SYNC_ROWS : rowOfPosition(snap, c.pos);
    c.total += p.count;
    const frame = c.writer.seal(
      {
        chunk: {
          requestId: c.requestId,
          chunkIndex: c.chunkIndex++,
          nextCursor: first ? c.from : nextCursor,
          done,
          totalRecords: c.total,
          snapshotRecords: c.snapshotRecords,
          records: p.records(),
        },
      },
      c.sessionKey!,
    );
    this.#stats.syncChunksSent++;
    this.#stats.syncRecordsSent += p.count;
    c.conn.write(frame);
    return done;
  }

  #finish(c: ServerConn): void {
    this.#stats.syncStreamsServed++;
    this.#stats.syncJobsCompleted++;
    const e = this.#cache.get(c.peer);
    if (e !== undefined && e.snapshot === c.snapshot) this.#cache.delete(c.peer);
    this.#host.log?.info(
      { event: 'sync_serve_done', peer: c.peer, requestId: c.requestId, records: c.total, chunks: c.chunkIndex, ms: Math.round(performance.now() - c.startedMs) },
      `bulk sync to ${peerLabel(this.#host, c.peer)}: ${c.total} records in ${c.chunkIndex} chunks`,
    );
    this.#close(c, true);
  }

  #drop(c: ServerConn, reason: SyncStreamDropReason): void {
    countBy(this.#stats.syncStreamDrops, reason);
    this.#host.log?.warn({ event: 'sync_stream_dropped', peer: c.peer, reason }, `bulk sync connection from ${peerLabel(this.#host, c.peer)} dropped: ${reason}`);
    this.#close(c);
  }

  /** Ends the connection (gracefully after queued bytes when `flush`). */
  #close(c: ServerConn, flush = false): void {
    if (c.state === SState.CLOSED) return;
    const wasAnswering = c.state === SState.SNAPSHOT || c.state === SState.STREAM;
    c.state = SState.CLOSED;
    if (c.timer !== undefined) clearTimeout(c.timer);
    if (flush) c.conn.end();
    else c.conn.destroy();
    this.#conns.delete(c);
    if (wasAnswering) this.#keepForResume(c);
  }

  #closed(c: ServerConn): void {
    if (c.state === SState.CLOSED) return;
    if (c.state === SState.SNAPSHOT || c.state === SState.STREAM) {
      this.#stats.syncJobsCancelled++;
      this.#host.log?.info(
        { event: 'sync_serve_broken', peer: c.peer, requestId: c.requestId, records: c.total },
        `bulk sync to ${peerLabel(this.#host, c.peer)}: connection closed after ${c.total} records`,
      );
    }
    this.#close(c);
  }

  /** A broken answer's snapshot stays `snapshotTtlMs` for a resume by the same requester. */
  #keepForResume(c: ServerConn): void {
    const e = this.#cache.get(c.peer);
    if (e === undefined || e.snapshot !== c.snapshot || this.#stopped) return;
    if (e.timer !== undefined) clearTimeout(e.timer);
    e.timer = setTimeout(() => {
      if (this.#cache.get(c.peer) === e) this.#cache.delete(c.peer);
    }, this.#ttlMs);
    e.timer.unref?.();
  }
}

/** The sync row of the id at `pos` (binary search in rowStart). */
function rowOfPosition(snap: SyncSnapshot, pos: number): number {
  const rs = snap.rowStart;
  let lo = 0;
  let hi = SYNC_ROWS; // rs[lo] <= pos < rs[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (rs[mid]! <= pos) lo = mid;
    else hi = mid;
  }
  return lo;
}

