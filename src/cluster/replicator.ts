/**
 * Flow-record replication (claim 3: the primary and backup of every flow, with its VIP and
 * backend, stored in EVERY balancer) and bulk sync, as pure logic with the I/O injected: the
 * owner wires the sockets (`broadcast`, `sendTo`, an EnvelopeReceiver in front of `onRecords`
 * / `onSyncRequest` / `onSyncChunk`), the timers (`flush` every flushMs, `refreshTick` every
 * ~100 ms) and the data plane (`flowReady` from the forwarder, `flowExpired` from the flow
 * table's onExpire). Wire format: protocol/tunlb.proto (FlowRecordBatch, SyncRequest/SyncChunk).
 *
 * The sections of the work, a file each (their headers state the rules):
 * - Sending this balancer's flows (flood policy, ready and DELETE rings, flush) and Refresh
 *   (the bounded table scan that re-sends records so a lost datagram heals and peers' idle
 *   timers stay fresh): src/cluster/replication-sender.ts.
 * - Applying records from peers (outcomes, decision and state adoption, DELETE grace,
 *   generations): src/cluster/replication-applier.ts.
 * - Their shared per-entry side state: src/cluster/replication-side-state.ts; the counters:
 *   src/cluster/replication-stats.ts.
 * This class wires them together and is the one entry point the owner uses.
 *
 * ## Bulk sync: `syncHost` lends record selection and the apply rules to the sync stream
 * (src/cluster/sync-stream.ts, what balancers of this release use) and to the first release's
 * datagram sync (src/cluster/bulk-sync.ts: server: paced chunks per request; client: requestSync).
 * Sync answers contain every live, non-expired entry that is REPLICATED, FROM_PEER, or past the
 * threshold (the same set peers would have learnt), as CREATE records.
 *
 * ## Contract with the owner
 * - The table's onExpire MUST call flowExpired (it also resets the replicator's per-entry side
 *   state for the id being freed); only the replicator may call table.remove().
 * - Single-threaded: every method is called from the one event loop that owns the table.
 */
import type { FlowTable } from '../flow';
import type { ReceivedEnvelope, ReceivedRecordBatch, ReceivedSyncChunk, tunlb } from '../protocol';
import { DEFAULT_DATAGRAM_BUDGET } from '../protocol';
import { BulkSyncClient, BulkSyncServer, type SyncHost, type SyncResult } from './bulk-sync';
import { GenerationHistory } from './generation-history';
import { ReplicationApplier, type ReplicationApplierOptions, type ReplicatorLogger } from './replication-applier';
import { ReplicationSender, type ReplicationSenderOptions } from './replication-sender';
import { ReplicationSideState } from './replication-side-state';
import { ReplicatorStats } from './replication-stats';

export type { SyncResult } from './bulk-sync';
export type { ReplicatorLogger } from './replication-applier';
export { REJECT_REASONS, ReplicatorStats, type RejectReason } from './replication-stats';

export interface ReplicatorOptions extends ReplicationSenderOptions, ReplicationApplierOptions {
  /** Balancer ids by index, for log lines (default "balancer N"). */
  balancerIds?: readonly string[];
  /** Unicast (bulk sync). */
  sendTo: (peer: number, dgram: Uint8Array) => void;
  /** Bulk sync server: concurrent answers (default 4) and work per loop turn (ms, default 0.5). */
  syncMaxJobs?: number;
  syncStepMs?: number;
  /** Scheduler between bulk-sync steps (default setImmediate). */
  defer?: (fn: () => void) => void;
}

export class Replicator {
  readonly stats = new ReplicatorStats();
  readonly table: FlowTable;
  readonly selfIndex: number;
  readonly balancerCount: number;
  /** Entry ids the refresh pass examines per tick. */
  readonly refreshChunk: number;
  /** Ticks per full walk of the table (at most; sooner when the table is sparse). */
  readonly refreshCycleTicks: number;

  readonly #sender: ReplicationSender;
  readonly #applier: ReplicationApplier;
  readonly #log: ReplicatorLogger | undefined;

  // bulk sync
  /** What bulk sync needs of this replicator (record selection and apply rules): the datagram sync below and the sync stream (src/cluster/sync-stream.ts). */
  readonly syncHost: SyncHost;
  readonly #syncServer: BulkSyncServer;
  readonly #syncClient: BulkSyncClient;

  constructor(opts: ReplicatorOptions) {
    // generations (src/cluster/generation-history.ts) and the per-entry side state: both halves'
    const gens = new GenerationHistory(this.stats);
    this.table = opts.table;
    this.selfIndex = opts.selfIndex;
    this.balancerCount = opts.balancerCount;
    this.#log = opts.log;
    const side = new ReplicationSideState(this.table);
    this.#sender = new ReplicationSender(opts, this.stats, side, gens);
    this.#applier = new ReplicationApplier(opts, this.stats, side, gens);
    this.refreshChunk = this.#sender.refreshChunk;
    this.refreshCycleTicks = this.#sender.refreshCycleTicks;

    const host: SyncHost = (this.syncHost = {
      table: this.table,
      signer: opts.signer,
      sendTo: opts.sendTo,
      budget: opts.datagramBudget ?? DEFAULT_DATAGRAM_BUDGET,
      fillSyncRecord: (id, f, key) => this.#sender.fillSyncRecord(id, f, key),
      applyRecord: (sender, rec) => this.#applier.applySafe(sender, rec),
      defer: opts.defer ?? ((fn) => setImmediate(fn)),
      log: opts.log,
      peerName: (i) => opts.balancerIds?.[i],
    });
    this.#syncServer = new BulkSyncServer(host, this.stats, {
      ...(opts.syncMaxJobs !== undefined ? { maxJobs: opts.syncMaxJobs } : {}),
      ...(opts.syncStepMs !== undefined ? { stepMs: opts.syncStepMs } : {}),
    });
    this.#syncClient = new BulkSyncClient(host, this.stats);
  }

  // =========================================================================== sending (replication-sender.ts)

  /**
   * HOT PATH: the forwarder reports that flow `entryId` reached its replication threshold.
   * O(1), no allocation; on a full ring the event is counted and dropped (refresh heals it).
   */
  flowReady(entryId: number): void {
    this.#sender.flowReady(entryId);
  }

  /** See ReplicationSender.flowCreated (flows whose threshold is 1 are queued at once). */
  flowCreated(entryId: number): void {
    this.#sender.flowCreated(entryId);
  }

  /**
   * From the flow table's onExpire, BEFORE the entry is unlinked: queues a DELETE (copying the
   * key) if we replicated the flow, and resets our side state of the id. Never mutates the table.
   */
  flowExpired(entryId: number): void {
    this.#sender.flowExpired(entryId);
  }

  /** Ready events and DELETEs waiting for flush(). */
  get pending(): number {
    return this.#sender.pending;
  }

  /**
   * Encodes queued CREATEs and DELETEs (at most flushBudget records) into datagrams and
   * broadcasts them, including a final partial datagram. Returns the datagrams sent.
   */
  flush(): number {
    return this.#sender.flush();
  }

  /** Advances the refresh scan by `refreshChunk` entry ids, then flushes what it queued. */
  refreshTick(): void {
    this.#sender.refreshTick();
  }

  // =========================================================================== receiving (replication-applier.ts)

  /**
   * Dispatches an authenticated envelope (EnvelopeReceiver result OK) to onRecords /
   * onSyncRequest / onSyncChunk. Returns false for bodies that are not replication's.
   */
  onEnvelope(env: ReceivedEnvelope): boolean {
    switch (env.body) {
      case 'records':
        this.onRecords(env.sender, env.records!);
        return true;
      case 'syncRequest':
        this.onSyncRequest(env.sender, env.syncRequest!);
        return true;
      case 'syncChunk':
        this.onSyncChunk(env.sender, env.syncChunk!);
        return true;
      default:
        return false;
    }
  }

  /** Applies a verified batch from peer `sender` (see the header). Never throws. */
  onRecords(sender: number, batch: ReceivedRecordBatch): void {
    const recs = batch?.records;
    if (!Array.isArray(recs)) return;
    for (let i = 0; i < recs.length; i++) this.#applier.applySafe(sender, recs[i]!);
  }

  /** Bulk sync server: answers with paced SyncChunks to `sender`. Never throws. */
  onSyncRequest(sender: number, req: tunlb.v1.ISyncRequest): void {
    if (!this.#applier.validSender(sender)) {
      this.#applier.reject('bad_sender');
      return;
    }
    this.#syncServer.onRequest(sender, Number(req?.requestId ?? 0), Number(req?.fromCursor ?? 0));
  }

  /** Bulk sync client: one chunk of an answer. Never throws. */
  onSyncChunk(sender: number, chunk: ReceivedSyncChunk): void {
    try {
      this.#syncClient.onChunk(sender, chunk);
    } catch (e) {
      this.#applier.reject('internal_error');
      this.#log?.warn({ event: 'replication_internal_error', err: String(e) }, 'sync chunk could not be applied');
    }
  }

  /**
   * Bulk sync client: asks `peer` for its table; resolves { records, chunks } once every chunk
   * arrived and the count matches, rejects TunlbError SYNC_FAILED on timeout or mismatch.
   */
  requestSync(peer: number, timeoutMs: number): Promise<SyncResult> {
    return this.#syncClient.request(peer, timeoutMs);
  }

  /** Bulk-sync answers in progress. */
  get syncJobs(): number {
    return this.#syncServer.active;
  }

  /** Cancels bulk-sync work (answers and pending requests). */
  stop(): void {
    this.#syncServer.stop();
    this.#syncClient.stop();
  }
}
