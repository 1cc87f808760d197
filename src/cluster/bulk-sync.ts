/**
 * Bulk sync (docs/failure-model.md "Bulk sync"): a balancer that starts or restarts asks a live peer for
 * its whole flow table before it serves as primary. This file holds what both transports share
 * (SyncHost: what the Replicator lends them, record selection and apply rules; SyncStats) and
 * the first release's DATAGRAM transport below. Balancers of this release sync over the TCP
 * stream (src/cluster/sync-stream.ts, sync-runner.ts); the datagram path stays to answer
 * requesters of the first release, and to sync from a peer of that release (one that refuses
 * the stream's connection). It has no acknowledgement: a lost chunk costs the whole timeout.
 *
 * Datagram transport, pure logic: datagrams go out through the injected `sendTo`, come in
 * through the owner's EnvelopeReceiver and then Replicator.onSyncRequest / onSyncChunk.
 *
 * ## Server (answers a SyncRequest)
 * - One job per (requester, request_id), with its own table cursor, so two peers syncing at
 *   the same time each get a complete answer. A new request from the same requester cancels
 *   its older jobs (a requester runs one sync at a time; a retry must not double the load).
 *   At most `maxJobs` (default 4) jobs run at once; further requests are dropped and counted
 *   (`syncBusy`): the requester times out and tries another peer.
 * - The table is walked with FlowTable.scan (an entry live for the whole sync is sent exactly
 *   once; entries created or removed meanwhile may or may not be: replication covers them).
 *   Ids are collected 64 at a time and packed into SyncChunks under the datagram budget (the
 *   same exact size accounting as RecordBatcher; the chunk header fields are reserved at their
 *   maximum size), so every chunk is one datagram <= budget. Ids that did not fit carry over
 *   to the next chunk; `next_cursor` is the first id not yet sent, so a resumed request
 *   (from_cursor = next_cursor) loses nothing.
 * - Pacing: each step builds and sends chunks for at most `stepMs` (default 0.5 ms) and then
 *   yields with `defer` (setImmediate), so the event loop (probes, the data plane) is never
 *   held for more than about a millisecond.
 * - Every chunk carries the running `total_records` (records sent in this answer so far); the
 *   last one has done = true and the total (an empty table answers with one empty done chunk).
 *
 * ## Client (requestSync)
 * - Sends SyncRequest{request_id random, from_cursor 0} to one peer and applies every chunk's
 *   records (as records from that peer, the usual rules) as they arrive, in any order.
 * - Resolves when the done chunk and every chunk before it (by chunk_index) arrived and the
 *   records received equal done.total_records; rejects with TunlbError SYNC_FAILED on a count
 *   mismatch or when `timeoutMs` passes first (a lost chunk). Records applied before a failure
 *   stay (they are true records); the owner retries with another peer (no resume here).
 */
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { ErrorCodes, TunlbError } from '../errors';
import type { FlowTable } from '../flow';
import {
  COMPACT_V4_KEY_LEN,
  delimitedSize,
  envelopeHeaderSize,
  FLOW_KEY_LEN,
  flowRecordSize,
  isCompactV4,
  signedDatagramSize,
  tunlb,
  varintSize,
  type EnvelopeSigner,
  fillRecordSlot,
  type FlowRecordFields,
  type RecordSlot,
  type ReceivedSyncChunk,
} from '../protocol';

/** What the bulk-sync logic needs from its owner (the Replicator). */
export interface SyncHost {
  readonly table: FlowTable;
  readonly signer: EnvelopeSigner;
  readonly sendTo: (peer: number, dgram: Uint8Array) => void;
  /** UDP payload budget per datagram. */
  readonly budget: number;
  /**
   * Fills `f` (op CREATE) and `key` (40 bytes) for entry `id` when it belongs in a bulk sync;
   * false to skip it (not live, expired, not confirmed).
   */
  fillSyncRecord(id: number, f: FlowRecordFields, key: Uint8Array): boolean;
  /** Applies one record received from `sender`; never throws. */
  applyRecord(sender: number, rec: tunlb.v1.FlowRecord): void;
  /** Schedules the next step (default setImmediate). */
  readonly defer: (fn: () => void) => void;
  readonly log?: SyncLogger | undefined;
  /** A balancer's name for log lines (undefined: "balancer N"). */
  readonly peerName?: ((index: number) => string | undefined) | undefined;
}

export interface SyncLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface SyncResult {
  /** Records received (= total_records of the done chunk). */
  records: number;
  chunks: number;
  /** ms from request to the last chunk. */
  elapsedMs: number;
}

/** Upper bounds of the syncStepHistogram buckets (the last bucket is everything longer). */
export const SYNC_STEP_BUCKETS_MS: readonly number[] = [0.5, 1, 2, 5, 10];

/** "lb2" (the host's peerName) or "balancer 1", for log lines. */
function peerLabel(host: SyncHost, index: number): string {
  return host.peerName?.(index) ?? `balancer ${index}`;
}

export class SyncStats {
  syncRequestsReceived = 0;
  /** Requests dropped because maxJobs jobs were running. */
  syncBusy = 0;
  syncJobsCompleted = 0;
  syncJobsCancelled = 0;
  syncChunksSent = 0;
  syncRecordsSent = 0;
  syncChunksReceived = 0;
  syncRecordsReceived = 0;
  /** Chunks for no pending request (late, after a timeout, or from the wrong peer) or duplicates. */
  syncChunksIgnored = 0;
  syncsCompleted = 0;
  syncsFailed = 0;
  /** Server steps run, and those longer than 2 ms (wall clock: preemption on a busy host counts). */
  syncSteps = 0;
  syncStepsOver2ms = 0;
  /** Longest single server step, ms (pacing check). */
  syncMaxStepMs = 0;
  /** Server steps by wall-clock duration: <= 0.5, 1, 2, 5, 10 ms, longer (SYNC_STEP_BUCKETS_MS). */
  readonly syncStepHistogram = [0, 0, 0, 0, 0, 0];

  // ---- the sync stream (src/cluster/sync-stream.ts); chunks and records are counted above too
  /** Responder: stream connections accepted from peers (authenticated or not yet). */
  syncStreamsAccepted = 0;
  /** Responder: answers sent to the end (done chunk written). */
  syncStreamsServed = 0;
  /** Responder: requests refused, by SyncRefusal reason (busy, not_serving, ...). */
  readonly syncStreamsRefused: Record<string, number> = {};
  /** Responder: snapshots built / reused for a resume; the last build's duration, ms. */
  syncSnapshotsBuilt = 0;
  syncSnapshotsReused = 0;
  syncSnapshotLastMs = 0;
  /** Requester: stream sessions started (one per connection), and those that resumed (from_cursor > 0). */
  syncSessions = 0;
  syncResumes = 0;
  /** Requester: sessions that ended before their done chunk, by cause (closed, idle, peer_down, refused, ...). */
  readonly syncSessionFailures: Record<string, number> = {};
  /** Both ends: stream connections dropped for a bad frame or handshake, by reason (SYNC_STREAM_DROP_REASONS). */
  readonly syncStreamDrops: Record<string, number> = {};
  /** Requester: the last completed sync (all sessions): records, ms from the first request. */
  syncLastRecords = 0;
  syncLastMs = 0;
}

/** Why a sync stream connection was dropped (keys of SyncStats.syncStreamDrops; stable names). */
export const SYNC_STREAM_DROP_REASONS = [
  'malformed_frame',
  'bad_mac',
  'malformed_body',
  'bad_record',
  'bad_version',
  'wrong_cluster',
  'wrong_sender',
  'unexpected_frame',
  'not_a_peer',
  'handshake_timeout',
] as const;
export type SyncStreamDropReason = (typeof SYNC_STREAM_DROP_REASONS)[number];

/** Adds one to `rec[key]` (the Record-typed counters above). */
export function countBy(rec: Record<string, number>, key: string): void {
  rec[key] = (rec[key] ?? 0) + 1;
}

// ----------------------------------------------------------------------------- packing

type Slot = RecordSlot;

/** Packs FlowRecords into one SyncChunk datagram under the budget (exact sizes, no trial encode). */
export class SyncChunkPacker {
  private readonly slots: Slot[] = [];
  private count = 0;
  private recsLen = 0;
  private reserve = 0;

  constructor(
    private readonly signer: EnvelopeSigner,
    private readonly budget: number,
  ) {}

  /** Starts a chunk for `requestId`: reserves the chunk header fields at their maximum size. */
  reset(requestId: number): void {
    this.count = 0;
    this.recsLen = 0;
    // request_id, chunk_index (<= 5-byte varint), next_cursor (5), done (2), total_records (5).
    this.reserve = (requestId === 0 ? 0 : 1 + varintSize(requestId)) + 6 + 6 + 2 + 6;
  }

  get records(): number {
    return this.count;
  }

  /** Adds one record if it fits the datagram; false (nothing added) when the chunk is full. */
  tryAdd(f: FlowRecordFields, key: Uint8Array): boolean {
    const compact = isCompactV4(key, 0);
    const keyLen = compact ? COMPACT_V4_KEY_LEN : FLOW_KEY_LEN;
    const recLen = delimitedSize(flowRecordSize(f, keyLen));
    // A chunk is unicast: its envelope names its recipient (5 bytes of header).
    const header = envelopeHeaderSize(this.signer, this.signer.nextSeq, true);
    // The SyncChunk body sits in Envelope field 14 (one-byte tag): same framing as records.
    if (signedDatagramSize(header, this.reserve + this.recsLen + recLen) > this.budget) return false;
    fillRecordSlot(this.slot(this.count++), f, key, 0, compact);
    this.recsLen += recLen;
    return true;
  }

  /** Seals the chunk for balancer `recipient` (the signer numbers it) and returns the datagram. */
  seal(requestId: number, chunkIndex: number, nextCursor: number, done: boolean, totalRecords: number, recipient = -1): Uint8Array {
    const recs = new Array<tunlb.v1.FlowRecord>(this.count);
    for (let i = 0; i < this.count; i++) recs[i] = this.slots[i]!.rec;
    return this.signer.seal('syncChunk', { requestId, chunkIndex, nextCursor, done, totalRecords, records: recs }, recipient);
  }

  private slot(i: number): Slot {
    let s = this.slots[i];
    if (s === undefined) {
      const rec = new tunlb.v1.FlowRecord();
      s = { rec, key40: new Uint8Array(FLOW_KEY_LEN), key13: new Uint8Array(COMPACT_V4_KEY_LEN) };
      this.slots.push(s);
    }
    return s;
  }
}

// ----------------------------------------------------------------------------- server

const COLLECT = 64;

interface Job {
  readonly peer: number;
  readonly requestId: number;
  /** Table cursor of the next scan call. */
  cursor: number;
  /** The last scan returned 0: no more ids to collect. */
  scanned: boolean;
  readonly carry: Int32Array;
  carryLen: number;
  carryPos: number;
  chunkIndex: number;
  total: number;
  cancelled: boolean;
  readonly startedMs: number;
}

export interface BulkSyncServerOptions {
  /** Concurrent answers (default 4). */
  maxJobs?: number;
  /** Work per event-loop turn, ms (default 0.5). */
  stepMs?: number;
}

export class BulkSyncServer {
  private readonly jobs = new Map<string, Job>();
  private readonly packer: SyncChunkPacker;
  private readonly fields: FlowRecordFields = { op: 1, primary: 0, backup: 0, vip: 0, backend: 0, state: 0, ageS: 0, idleS: 0, tableGeneration: 0 };
  private readonly keyBytes = new Uint8Array(FLOW_KEY_LEN);
  private readonly maxJobs: number;
  private readonly stepMs: number;

  constructor(
    private readonly host: SyncHost,
    private readonly stats: SyncStats,
    opts: BulkSyncServerOptions = {},
  ) {
    this.packer = new SyncChunkPacker(host.signer, host.budget);
    this.maxJobs = opts.maxJobs ?? 4;
    this.stepMs = opts.stepMs ?? 0.5;
  }

  /** Jobs running. */
  get active(): number {
    return this.jobs.size;
  }

  /** Starts answering a request (see the module header). Never throws. */
  onRequest(peer: number, requestId: number, fromCursor: number): void {
    this.stats.syncRequestsReceived++;
    const jobKey = `${peer}:${requestId}`;
    if (this.jobs.has(jobKey)) return; // duplicate of a running request
    for (const [k, j] of this.jobs) {
      if (j.peer === peer) {
        j.cancelled = true;
        this.jobs.delete(k);
        this.stats.syncJobsCancelled++;
      }
    }
    if (this.jobs.size >= this.maxJobs) {
      this.stats.syncBusy++;
      this.host.log?.warn({ event: 'sync_busy', peer, requestId }, `bulk sync request from ${peerLabel(this.host, peer)} dropped: ${this.jobs.size} syncs running`);
      return;
    }
    const cursor = Number.isInteger(fromCursor) && fromCursor > 0 && fromCursor < this.host.table.capacity ? fromCursor : 0;
    const job: Job = {
      peer,
      requestId,
      cursor,
      scanned: false,
      carry: new Int32Array(COLLECT),
      carryLen: 0,
      carryPos: 0,
      chunkIndex: 0,
      total: 0,
      cancelled: false,
      startedMs: performance.now(),
    };
    this.jobs.set(jobKey, job);
    this.host.log?.info({ event: 'sync_serve_start', peer, requestId, fromCursor: cursor }, `bulk sync to ${peerLabel(this.host, peer)} started`);
    this.host.defer(() => this.step(jobKey, job));
  }

  /** Cancels every job (shutdown). */
  stop(): void {
    for (const j of this.jobs.values()) j.cancelled = true;
    this.jobs.clear();
  }

  private step(jobKey: string, job: Job): void {
    if (job.cancelled) return;
    const t0 = performance.now();
    let finished = false;
    try {
      do finished = this.chunk(job);
      while (!finished && performance.now() - t0 < this.stepMs);
    } catch (e) {
      // Defensive: a send that throws ends this answer; the requester times out and retries.
      this.jobs.delete(jobKey);
      this.host.log?.warn({ event: 'sync_serve_failed', peer: job.peer, err: String(e) }, 'bulk sync answer failed');
      return;
    }
    const dt = performance.now() - t0;
    this.stats.syncSteps++;
    if (dt > 2) this.stats.syncStepsOver2ms++;
    let b = 0;
    while (b < SYNC_STEP_BUCKETS_MS.length && dt > SYNC_STEP_BUCKETS_MS[b]!) b++;
    this.stats.syncStepHistogram[b]!++;
    if (dt > this.stats.syncMaxStepMs) this.stats.syncMaxStepMs = dt;
    if (finished) {
      this.jobs.delete(jobKey);
      this.stats.syncJobsCompleted++;
      this.host.log?.info(
        { event: 'sync_serve_done', peer: job.peer, requestId: job.requestId, records: job.total, chunks: job.chunkIndex, ms: Math.round(performance.now() - job.startedMs) },
        `bulk sync to ${peerLabel(this.host, job.peer)}: ${job.total} records in ${job.chunkIndex} chunks`,
      );
      return;
    }
    this.host.defer(() => this.step(jobKey, job));
  }

  /** Builds and sends one chunk; true when it was the done chunk. */
  private chunk(job: Job): boolean {
    const host = this.host;
    const table = host.table;
    const p = this.packer;
    const f = this.fields;
    const key = this.keyBytes;
    p.reset(job.requestId);
    for (;;) {
      if (job.carryPos === job.carryLen) {
        if (job.scanned) break;
        job.carryLen = 0;
        job.carryPos = 0;
        const carry = job.carry;
        job.cursor = table.scan(job.cursor, COLLECT, (id) => {
          carry[job.carryLen++] = id;
        });
        if (job.cursor === 0) job.scanned = true;
        continue;
      }
      const id = job.carry[job.carryPos]!;
      if (!host.fillSyncRecord(id, f, key)) {
        job.carryPos++;
        continue;
      }
      if (!p.tryAdd(f, key)) {
        if (p.records > 0) break; // chunk full: this id carries over
        job.carryPos++; // cannot fit even alone (unreachable with budget >= 256): skip it
        continue;
      }
      job.carryPos++;
    }
    const done = job.scanned && job.carryPos === job.carryLen;
    const nextCursor = done ? 0 : job.carryPos < job.carryLen ? job.carry[job.carryPos]! : job.cursor;
    job.total += p.records;
    const dgram = p.seal(job.requestId, job.chunkIndex++, nextCursor, done, job.total, job.peer);
    this.stats.syncChunksSent++;
    this.stats.syncRecordsSent += p.records;
    host.sendTo(job.peer, dgram);
    return done;
  }
}

// ----------------------------------------------------------------------------- client

interface Pending {
  readonly peer: number;
  readonly requestId: number;
  readonly startedMs: number;
  records: number;
  chunks: number;
  readonly seen: Set<number>;
  /** chunk_index of the done chunk, -1 until it arrived. */
  doneIndex: number;
  total: number;
  timer: NodeJS.Timeout | undefined;
  resolve(r: SyncResult): void;
  reject(e: Error): void;
}

export class BulkSyncClient {
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly host: SyncHost,
    private readonly stats: SyncStats,
  ) {}

  /** Asks `peer` for its table; see the module header. */
  request(peer: number, timeoutMs: number): Promise<SyncResult> {
    return new Promise<SyncResult>((resolve, reject) => {
      let requestId = randomInt(1, 2 ** 47);
      while (this.pending.has(requestId)) requestId = randomInt(1, 2 ** 47);
      const p: Pending = {
        peer,
        requestId,
        startedMs: performance.now(),
        records: 0,
        chunks: 0,
        seen: new Set(),
        doneIndex: -1,
        total: 0,
        timer: undefined,
        resolve,
        reject,
      };
      this.pending.set(requestId, p);
      p.timer = setTimeout(() => {
        const got = p.doneIndex < 0 ? 'no done chunk' : `${p.chunks}/${p.doneIndex + 1} chunks`;
        this.fail(p, `bulk sync from ${peerLabel(this.host, peer)} timed out after ${timeoutMs} ms (${got}, ${p.records} records): retry with another peer`);
      }, timeoutMs);
      try {
        this.host.sendTo(peer, this.host.signer.seal('syncRequest', { requestId, fromCursor: 0 }, peer));
      } catch (e) {
        this.fail(p, `bulk sync request to ${peerLabel(this.host, peer)} could not be sent: ${String(e)}`);
      }
    });
  }

  /** One chunk from `sender` (already authenticated). Never throws. */
  onChunk(sender: number, chunk: ReceivedSyncChunk): void {
    const p = this.pending.get(chunk.requestId);
    if (p === undefined || p.peer !== sender || p.seen.has(chunk.chunkIndex)) {
      this.stats.syncChunksIgnored++;
      return;
    }
    p.seen.add(chunk.chunkIndex);
    p.chunks++;
    this.stats.syncChunksReceived++;
    const recs = chunk.records;
    for (let i = 0; i < recs.length; i++) this.host.applyRecord(sender, recs[i]!);
    p.records += recs.length;
    this.stats.syncRecordsReceived += recs.length;
    if (chunk.done) {
      p.doneIndex = chunk.chunkIndex;
      p.total = chunk.totalRecords;
    }
    if (p.doneIndex >= 0 && p.chunks === p.doneIndex + 1) {
      if (p.records === p.total) {
        this.finish(p);
      } else {
        this.fail(p, `bulk sync from ${peerLabel(this.host, sender)}: received ${p.records} records, the peer sent ${p.total}`);
      }
    }
  }

  /** Rejects every pending request (shutdown). */
  stop(): void {
    for (const p of [...this.pending.values()]) this.fail(p, 'bulk sync cancelled: replicator stopped');
  }

  private finish(p: Pending): void {
    this.pending.delete(p.requestId);
    if (p.timer !== undefined) clearTimeout(p.timer);
    this.stats.syncsCompleted++;
    const r: SyncResult = { records: p.records, chunks: p.chunks, elapsedMs: performance.now() - p.startedMs };
    this.host.log?.info({ event: 'sync_done', peer: p.peer, ...r }, `bulk sync from ${peerLabel(this.host, p.peer)}: ${r.records} records in ${r.chunks} chunks`);
    p.resolve(r);
  }

  private fail(p: Pending, message: string): void {
    if (!this.pending.delete(p.requestId)) return;
    if (p.timer !== undefined) clearTimeout(p.timer);
    this.stats.syncsFailed++;
    this.host.log?.warn({ event: 'sync_failed', peer: p.peer, records: p.records, chunks: p.chunks }, message);
    p.reject(new TunlbError(ErrorCodes.SYNC_FAILED, message, { peer: p.peer, records: p.records, chunks: p.chunks, total: p.total }));
  }
}
