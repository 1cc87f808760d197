/**
 * Flow-record replication (claim 3: the primary and backup of every flow, with its VIP and
 * backend, stored in EVERY balancer) and bulk sync, as pure logic with the I/O injected: the
 * owner wires the sockets (`broadcast`, `sendTo`, an EnvelopeReceiver in front of `onRecords`
 * / `onSyncRequest` / `onSyncChunk`), the timers (`flush` every flushMs, `refreshTick` every
 * ~100 ms) and the data plane (`flowReady` from the forwarder, `flowExpired` from the flow
 * table's onExpire). Wire format: protocol/tunlb.proto (FlowRecordBatch, SyncRequest/SyncChunk).
 *
 * ## Sending (this balancer's flows)
 * - Flood policy (src/cluster/replication-policy.ts): only CONFIRMED flows are replicated (the
 *   flow table's confirmation: for TCP through NAT, the client's ACK of the server's ISN). The
 *   forwarder calls `flowReady(id)` once, on the confirming packet, when this balancer is the
 *   flow's primary or the primary is not live; the record leaves ~flushMs later, before the
 *   connection carries data. Unconfirmed flows are never sent (not by refresh, not by bulk
 *   sync, no DELETE): a spoofed flood creates no replication traffic.
 * - `flowReady` is O(1) and allocation-free: the id goes into a preallocated Int32Array ring
 *   (`queueCapacity`, default 65536). When the ring is full the event is dropped and counted
 *   (`queueDrops`); the refresh scan sends such flows later (it sends a CREATE for every live,
 *   unreplicated, confirmed local flow it replicates), so a drop delays a record, never loses it.
 * - `flowExpired(id)` (from the table's onExpire, BEFORE the unlink): if the flow was
 *   replicated by us (flag REPLICATED), its key and decision are copied into a preallocated
 *   ring (`deleteQueueCapacity`, default 16384) and a DELETE is queued; nothing else, never a
 *   table mutation. On overflow the DELETE is dropped and counted (`deleteQueueDrops`): peers'
 *   copies then end by their own idle timeout.
 * - `flush()` (every flushMs, and when `pending` is large): encodes queued CREATEs (skipping
 *   ids no longer live, already REPLICATED, learnt from a peer, or not confirmed, i.e. an id
 *   reused by a younger flow) and DELETEs, at most `flushBudget` records per call
 *   (default 4096, a few ms), into signed datagrams under the budget (RecordBatcher: exact
 *   packing, ~36 IPv4 / ~21 IPv6 records per 1400-byte datagram) and broadcasts them. Sent
 *   entries get flag REPLICATED. Returns the datagrams sent.
 * - Records carry: decision (primary, backup, vip, backend), state, age_s (now - created),
 *   idle_s (now - lastSeen) and table_generation = the generation of OUR CURRENT forwarding
 *   table, because that is the table our own forwarder interprets the stored backend index with.
 *
 * ## Refresh (so a lost datagram heals and peers' idle timers stay fresh)
 * `refreshTick()` (every `refreshTickMs`, default 100) advances a FlowTable.scan cursor by a
 * bounded number of entry ids, sized so that the whole table is walked every
 * clamp(refreshS / 4, 1 s, 10 s). Per visited, non-expired, CONFIRMED entry (never a record of an
 * unconfirmed one):
 *   - own flow, REPLICATED: REFRESH when refreshS passed since its last record, when its state
 *     changed since (e.g. SYN_SEEN -> ESTABLISHED -> CLOSING: peers' timeouts follow the
 *     state), or when flag NEED_REFRESH is set. So each flow is re-sent every refreshS to
 *     refreshS + cycle seconds, with its current idle_s.
 *   - own flow, not REPLICATED, CONFIRMED, and ours to replicate (we are its primary or its
 *     primary is not live: replication-policy.ts): CREATE (its ready event was dropped).
 *   - learnt flow (FROM_PEER) that THIS balancer forwarded packets of in the last refreshS
 *     (e.g. after a failover) and whose primary is us or not live (`live[primary] === 0`; or no
 *     `live` array given): REFRESH on the same schedule, and it becomes REPLICATED (so its
 *     expiry sends a DELETE). A learnt flow whose primary lives is refreshed by the primary.
 * Cost: 13 bytes of side state per table entry (last record time and state, local-packet marks).
 *
 * ## Applying records from peers (`onRecords`, and bulk-sync chunks)
 * Never throws; every record ends in exactly one of: applied (new entry), updated (known entry),
 * deleted, or ignored with a reason counted in `stats.rejectedByReason`:
 *   bad_key, bad_op, bad_sender (sender out of range or self), balancer_out_of_range
 *   (primary/backup >= balancerCount), vip_out_of_range / backend_out_of_range (not in the
 *   current forwarding table), generation_ambiguous / backend_gone (see below), key_conflict
 *   (the key is another flow's reply key, or the new entry's reply key is taken), table_full,
 *   expired (idle_s already past its timeout), delete_unknown, delete_locally_active,
 *   internal_error (a bug; logged).
 * - CREATE/REFRESH of an unknown key: inserted with the recorded decision; NAT VIPs get the
 *   reply key from writeReplyKey(forwarding(), vip, backend, key), DSR VIPs none; state as
 *   recorded; flags FROM_PEER and CONFIRMED (records come only from confirmed flows); lastSeen
 *   = now - idle_s (clamped at 0). created = now (the table has no setter; it only affects
 *   age_s we might send later).
 * - CREATE/REFRESH of a known key: lastSeen = max(lastSeen, now - idle_s) (never moved back).
 *   The recorded decision is the truth and is kept, UNLESS the sender is the record's primary
 *   (the primary is authoritative for its flows, GLB's idea): then its decision is adopted
 *   (setDecision; when vip/backend change, the entry is re-inserted with the new reply key).
 *   A differing decision from a non-primary sender is kept out and counted (`decisionKept`).
 *   The recorded state is adopted from the primary, or when we forwarded no packet of the flow.
 *   The entry becomes CONFIRMED; one we decided but never sent (its primary replicated it)
 *   becomes FROM_PEER too: the primary refreshes and deletes it from now on.
 * - DELETE: the entry is removed (no onExpire, so no DELETE echo), unless THIS balancer
 *   forwarded a packet of it within `deleteGraceS` (default 5 s): then its own expiry decides.
 *   "This balancer forwarded a packet" is exact: FlowTable.packets only counts local packets
 *   (records set lastSeen without counting), and the replicator marks the count at each apply.
 * - Generations: a backend index means "position in the VIP's backend list" of some table.
 *   table_generation equal to ours: used as is. Otherwise, if we have seen that generation (the
 *   replicator keeps the VIP names and backend id lists of the last 16 forwarding tables it
 *   observed), the VIP and backend are mapped by name/id to the current indexes (backend_gone if
 *   the backend left the list). An unknown generation is accepted only if no VIP/backend list
 *   change was observed for that VIP in this process (then the index cannot mean another
 *   backend); else generation_ambiguous. NOTE: generations are per-process counters today
 *   (buildForwardingTable(..., 1) at start), so "equal generation" across balancers only means
 *   "same list" when configs are rolled out identically; a cluster-wide generation (e.g. from a
 *   config version) would make this exact.
 *
 * ## Bulk sync: `syncHost` lends record selection and the apply rules to the sync stream
 * (src/cluster/sync-stream.ts, what balancers of this release use) and to the first release's
 * datagram sync (src/cluster/bulk-sync.ts: server: paced chunks per request; client: requestSync).
 * Sync answers contain every live, non-expired CONFIRMED entry (the set peers would have
 * learnt), as CREATE records.
 *
 * ## Contract with the owner
 * - The table's onExpire MUST call flowExpired (it also resets the replicator's per-entry side
 *   state for the id being freed); only the replicator may call table.remove().
 * - Single-threaded: every method is called from the one event loop that owns the table.
 */
import type { ForwardingTable } from '../decision/forwarding-table';
import { METHOD_DSR } from '../decision/forwarding-table';
import { writeReplyKey } from '../decision/reply-key';
import { FlowFlags, InsertResult, type FlowTable } from '../flow';
import {
  DEFAULT_DATAGRAM_BUDGET,
  expandWireKey,
  FLOW_KEY_LEN,
  Op,
  RecordBatcher,
  type EnvelopeSigner,
  type FlowRecordFields,
  type ReceivedEnvelope,
  type ReceivedRecordBatch,
  type ReceivedSyncChunk,
  type tunlb,
} from '../protocol';
import { BulkSyncClient, BulkSyncServer, SyncStats, type SyncHost, type SyncResult } from './bulk-sync';
import { GenerationHistory } from './generation-history';
import { replicatesConfirmed } from './replication-policy';

export type { SyncResult } from './bulk-sync';

/** pino-compatible subset. */
export interface ReplicatorLogger {
  debug?(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface ReplicatorOptions {
  table: FlowTable;
  /** This balancer's index (0..balancerCount-1). */
  selfIndex: number;
  balancerCount: number;
  /** Balancer ids by index, for log lines (default "balancer N"). */
  balancerIds?: readonly string[];
  /** The current forwarding table (reply keys for learnt records, generation). */
  forwarding: () => ForwardingTable;
  /** One per process; seals every envelope. */
  signer: EnvelopeSigner;
  /** To every peer (multicast group or unicast fan-out). The datagram is the callee's. */
  broadcast: (dgram: Uint8Array) => void;
  /** Unicast (bulk sync). */
  sendTo: (peer: number, dgram: Uint8Array) => void;
  /** The flow table's clock (s since process start). */
  nowSec: () => number;
  /** cluster.replication.refresh_s. */
  refreshS: number;
  /** UDP payload budget per datagram (default 1400). */
  datagramBudget?: number;
  /** live[i] = 1 when balancer i is alive (the cluster layer's array); see "Refresh". */
  live?: Uint8Array;
  /** Ready-event ring size (power of two, default 65536). */
  queueCapacity?: number;
  /** DELETE ring size (power of two, default 16384). */
  deleteQueueCapacity?: number;
  /** Records encoded per flush() call at most (default 4096). */
  flushBudget?: number;
  /** Interval the owner calls refreshTick() at, ms (default 100): sizes the scan chunk. */
  refreshTickMs?: number;
  /** A DELETE does not remove a flow this balancer forwarded within this many s (default 5). */
  deleteGraceS?: number;
  /** Bulk sync server: concurrent answers (default 4) and work per loop turn (ms, default 0.5). */
  syncMaxJobs?: number;
  syncStepMs?: number;
  /** Scheduler between bulk-sync steps (default setImmediate). */
  defer?: (fn: () => void) => void;
  log?: ReplicatorLogger;
}

/** Reasons a received record is ignored (keys of stats.rejectedByReason; stable names). */
export const REJECT_REASONS = [
  'bad_key',
  'bad_op',
  'bad_sender',
  'balancer_out_of_range',
  'vip_out_of_range',
  'backend_out_of_range',
  'generation_ambiguous',
  'backend_gone',
  'key_conflict',
  'table_full',
  'expired',
  'delete_unknown',
  'delete_locally_active',
  'internal_error',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export class ReplicatorStats extends SyncStats {
  /** Records / datagrams broadcast (CREATE, REFRESH, DELETE). */
  recordsSent = 0;
  datagramsSent = 0;
  createsSent = 0;
  refreshesSent = 0;
  deletesSent = 0;
  /** flowReady events dropped on a full ring (the refresh scan heals them). */
  queueDrops = 0;
  /** DELETEs dropped on a full ring (peers' copies expire on their own). */
  deleteQueueDrops = 0;
  /** Queued ready ids skipped at flush (no longer live, already sent, learnt, not confirmed). */
  readySkipped = 0;
  /** CREATEs sent by the refresh scan for confirmed flows whose ready event was dropped. */
  readyHealed = 0;
  /** Full walks of the table by the refresh scan. */
  refreshCycles = 0;
  /** Records received from peers (broadcast and bulk sync). */
  recordsReceived = 0;
  /** New entries installed. */
  applied = 0;
  /** Known entries refreshed (and possibly re-decided). */
  updated = 0;
  /** Known entries whose decision was taken from their primary. */
  adopted = 0;
  /** Records with a differing decision from a non-primary sender (entry kept, lastSeen refreshed). */
  decisionKept = 0;
  /** Backend/VIP indexes mapped from an older generation to the current table. */
  remapped = 0;
  deleted = 0;
  /** Records ignored (sum of rejectedByReason). */
  ignored = 0;
  readonly rejectedByReason: Record<RejectReason, number> = Object.fromEntries(REJECT_REASONS.map((r) => [r, 0])) as Record<RejectReason, number>;
}


const F_REPLICATED = FlowFlags.REPLICATED;
const F_NEED_REFRESH = FlowFlags.NEED_REFRESH;
const F_FROM_PEER = FlowFlags.FROM_PEER;
const F_CONFIRMED = FlowFlags.CONFIRMED;
const OP_CREATE = Op.CREATE;
const OP_REFRESH = Op.REFRESH;
const OP_DELETE = Op.DELETE;
const KEY_WORDS = 10;
/** Ids examined per scan call of the refresh pass (scratch size). */
const SCAN_SCRATCH = 1024;

function pow2AtLeast(n: number, min: number): number {
  let p = min;
  while (p < n) p *= 2;
  return p;
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

  readonly #forwarding: () => ForwardingTable;
  readonly #broadcast: (dgram: Uint8Array) => void;
  readonly #nowSec: () => number;
  readonly #refreshS: number;
  readonly #live: Uint8Array | undefined;
  readonly #flushBudget: number;
  readonly #deleteGraceS: number;
  readonly #log: ReplicatorLogger | undefined;
  readonly #batcher: RecordBatcher;
  readonly #fields: FlowRecordFields = { op: 0, primary: 0, backup: 0, vip: 0, backend: 0, state: 0, ageS: 0, idleS: 0, tableGeneration: 0 };

  // ready ring (hot path)
  readonly #ready: Int32Array;
  readonly #readyMask: number;
  #readyHead = 0;
  #readyCount = 0;

  // delete ring: keys (10 words each) and decision (3 words: primary|backup<<8|state<<16, vip|backend<<16, created)
  readonly #delKeys: Uint32Array;
  readonly #delKeyBytes: Uint8Array;
  readonly #delMeta: Uint32Array;
  readonly #delMask: number;
  #delHead = 0;
  #delCount = 0;

  // per-entry side state (indexed by entry id)
  /** Second of the last record we sent for the entry + 1 (0 = never). */
  readonly #sentAt: Uint32Array;
  /** Flow state carried by that record. */
  readonly #sentState: Uint8Array;
  /** table.packets(id) when last examined: a difference means local packets since. */
  readonly #mark: Uint32Array;
  /** Second of the last local packet known + 1 (0 = none). */
  readonly #localAt: Uint32Array;

  // scratch
  readonly #keyWords: Uint32Array;
  readonly #keyBytes: Uint8Array;
  readonly #replyWords: Uint32Array;
  readonly #replyBytes: Uint8Array;
  readonly #oldReplyWords: Uint32Array;
  readonly #scratch = new Int32Array(SCAN_SCRATCH);
  #scratchLen = 0;
  readonly #collect = (id: number): void => {
    this.#scratch[this.#scratchLen++] = id;
  };
  #cursor = 0;

  // generations (src/cluster/generation-history.ts)
  readonly #gens: GenerationHistory;

  // bulk sync
  /** What bulk sync needs of this replicator (record selection and apply rules): the datagram sync below and the sync stream (src/cluster/sync-stream.ts). */
  readonly syncHost: SyncHost;
  readonly #syncServer: BulkSyncServer;
  readonly #syncClient: BulkSyncClient;

  constructor(opts: ReplicatorOptions) {
    this.#gens = new GenerationHistory(this.stats);
    this.table = opts.table;
    this.selfIndex = opts.selfIndex;
    this.balancerCount = opts.balancerCount;
    this.#forwarding = opts.forwarding;
    this.#broadcast = opts.broadcast;
    this.#nowSec = opts.nowSec;
    this.#refreshS = Math.max(1, Math.floor(opts.refreshS));
    this.#live = opts.live;
    this.#flushBudget = opts.flushBudget ?? 4096;
    this.#deleteGraceS = opts.deleteGraceS ?? 5;
    this.#log = opts.log;
    const budget = opts.datagramBudget ?? DEFAULT_DATAGRAM_BUDGET;
    this.#batcher = new RecordBatcher(
      opts.signer,
      (dgram, n) => {
        this.stats.datagramsSent++;
        this.stats.recordsSent += n;
        this.#broadcast(dgram);
      },
      { budget },
    );

    const rq = pow2AtLeast(opts.queueCapacity ?? 65536, 16);
    this.#ready = new Int32Array(rq);
    this.#readyMask = rq - 1;
    const dq = pow2AtLeast(opts.deleteQueueCapacity ?? 16384, 16);
    const delBuf = new ArrayBuffer(dq * FLOW_KEY_LEN);
    this.#delKeys = new Uint32Array(delBuf);
    this.#delKeyBytes = new Uint8Array(delBuf);
    this.#delMeta = new Uint32Array(dq * 3);
    this.#delMask = dq - 1;

    const cap = this.table.capacity;
    this.#sentAt = new Uint32Array(cap);
    this.#sentState = new Uint8Array(cap);
    this.#mark = new Uint32Array(cap);
    this.#localAt = new Uint32Array(cap);

    const kb = new ArrayBuffer(FLOW_KEY_LEN);
    this.#keyWords = new Uint32Array(kb);
    this.#keyBytes = new Uint8Array(kb);
    const rb = new ArrayBuffer(FLOW_KEY_LEN);
    this.#replyWords = new Uint32Array(rb);
    this.#replyBytes = new Uint8Array(rb);
    this.#oldReplyWords = new Uint32Array(KEY_WORDS);

    const tickMs = Math.max(1, opts.refreshTickMs ?? 100);
    const cycleS = Math.min(10, Math.max(1, this.#refreshS / 4));
    this.refreshCycleTicks = Math.max(1, Math.round((cycleS * 1000) / tickMs));
    this.refreshChunk = Math.max(64, Math.ceil(cap / this.refreshCycleTicks));

    const host: SyncHost = (this.syncHost = {
      table: this.table,
      signer: opts.signer,
      sendTo: opts.sendTo,
      budget,
      fillSyncRecord: (id, f, key) => this.#fillSyncRecord(id, f, key),
      applyRecord: (sender, rec) => this.#applySafe(sender, rec),
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

  // =========================================================================== sending

  /**
   * HOT PATH: the forwarder reports that flow `entryId` was confirmed and is this balancer's to
   * replicate (src/cluster/replication-policy.ts). O(1), no allocation; on a full ring the event
   * is counted and dropped (the refresh scan heals it).
   */
  flowReady(entryId: number): void {
    if (this.#readyCount === this.#ready.length) {
      this.stats.queueDrops++;
      return;
    }
    this.#ready[(this.#readyHead + this.#readyCount) & this.#readyMask] = entryId;
    this.#readyCount++;
  }

  /**
   * From the flow table's onExpire, BEFORE the entry is unlinked: queues a DELETE (copying the
   * key) if we replicated the flow, and resets our side state of the id. Never mutates the table.
   */
  flowExpired(entryId: number): void {
    const t = this.table;
    if (entryId < 0 || entryId >= t.capacity) return;
    if ((t.flags(entryId) & F_REPLICATED) !== 0) {
      if (this.#delCount === this.#delMeta.length / 3) {
        this.stats.deleteQueueDrops++;
      } else {
        const slot = (this.#delHead + this.#delCount) & this.#delMask;
        if (t.copyKey(entryId, 0, this.#delKeys, slot * KEY_WORDS)) {
          const m = this.#delMeta;
          m[slot * 3] = (t.primary(entryId) | (t.backup(entryId) << 8) | (t.state(entryId) << 16)) >>> 0;
          m[slot * 3 + 1] = (t.vip(entryId) | (t.backend(entryId) << 16)) >>> 0;
          m[slot * 3 + 2] = t.created(entryId);
          this.#delCount++;
        }
      }
    }
    this.#resetSide(entryId);
  }

  /** Ready events and DELETEs waiting for flush(). */
  get pending(): number {
    return this.#readyCount + this.#delCount;
  }

  /**
   * Encodes queued CREATEs and DELETEs (at most flushBudget records) into datagrams and
   * broadcasts them, including a final partial datagram. Returns the datagrams sent.
   */
  flush(): number {
    const d0 = this.stats.datagramsSent;
    const t = this.table;
    const now = this.#nowSec();
    const ft = this.#forwarding();
    this.#gens.observe(ft);
    const gen = ft.generation;
    let budget = this.#flushBudget;
    while (this.#readyCount > 0 && budget > 0) {
      const id = this.#ready[this.#readyHead]!;
      this.#readyHead = (this.#readyHead + 1) & this.#readyMask;
      this.#readyCount--;
      if (!t.isLive(id) || (t.flags(id) & (F_REPLICATED | F_FROM_PEER | F_CONFIRMED)) !== F_CONFIRMED) {
        this.stats.readySkipped++;
        continue;
      }
      this.#sendEntry(id, OP_CREATE, now, gen);
      this.stats.createsSent++;
      budget--;
    }
    const f = this.#fields;
    while (this.#delCount > 0 && budget > 0) {
      const slot = this.#delHead;
      this.#delHead = (this.#delHead + 1) & this.#delMask;
      this.#delCount--;
      const m = this.#delMeta;
      const a = m[slot * 3]!;
      const b = m[slot * 3 + 1]!;
      f.op = OP_DELETE;
      f.primary = a & 0xff;
      f.backup = (a >>> 8) & 0xff;
      f.state = (a >>> 16) & 0xff;
      f.vip = b & 0xffff;
      f.backend = b >>> 16;
      f.ageS = Math.max(0, now - m[slot * 3 + 2]!);
      f.idleS = 0;
      f.tableGeneration = gen;
      this.#batcher.append(f, this.#delKeyBytes, slot * FLOW_KEY_LEN);
      this.stats.deletesSent++;
      budget--;
    }
    if (this.#batcher.pending() > 0) this.#batcher.flush();
    return this.stats.datagramsSent - d0;
  }

  /**
   * Advances the refresh scan by `refreshChunk` entry ids (see "Refresh" in the header), then
   * flushes what it queued.
   */
  refreshTick(): void {
    const t = this.table;
    const now = this.#nowSec();
    const ft = this.#forwarding();
    this.#gens.observe(ft);
    const gen = ft.generation;
    let budget = this.refreshChunk;
    while (budget > 0) {
      const n = Math.min(budget, SCAN_SCRATCH);
      const c0 = this.#cursor;
      this.#scratchLen = 0;
      const c1 = t.scan(c0, n, this.#collect);
      this.#cursor = c1;
      const len = this.#scratchLen;
      for (let i = 0; i < len; i++) this.#refreshVisit(this.#scratch[i]!, now, gen);
      if (c1 === 0) {
        this.stats.refreshCycles++;
        break;
      }
      budget -= Math.max(1, c1 - c0);
    }
    if (this.#batcher.pending() > 0) this.#batcher.flush();
  }

  #refreshVisit(id: number, now: number, gen: number): void {
    const t = this.table;
    if (t.isExpired(id, now)) return; // the expiry sweep will remove it (and send a DELETE)
    this.#syncLocal(id);
    // Never a record of an unconfirmed flow: a flow adopted from a peer's header (a spoofed SYN
    // this balancer is the primary of), or a replicated one whose 5-tuple a new connection
    // reopened (refreshed again once that one confirms: its state will have changed).
    if (!t.isConfirmed(id)) return;
    const flags = t.flags(id);
    const state = t.state(id);
    const sentAt = this.#sentAt[id]!;
    const due =
      sentAt === 0 ||
      now - (sentAt - 1) >= this.#refreshS ||
      this.#sentState[id] !== state ||
      (flags & F_NEED_REFRESH) !== 0;
    if ((flags & F_FROM_PEER) !== 0) {
      // Learnt, and we are its primary: the peer that decided it has just announced it, so
      // start its refresh clock here instead of echoing a REFRESH of every flow forwarded to
      // us at once (that doubled the records on the wire per new flow: bench/cluster/RESULTS.md).
      const fp = t.primary(id);
      if (sentAt === 0 && fp === this.selfIndex) {
        this.#sentAt[id] = now + 1;
        this.#sentState[id] = state;
        return;
      }
      // Then only while we forward it and its primary cannot (dead) or is us.
      const localAt = this.#localAt[id]!;
      if (!due || localAt === 0 || now - (localAt - 1) >= this.#refreshS) return;
      const p = t.primary(id);
      const live = this.#live;
      if (p !== this.selfIndex && live !== undefined && live[p] !== 0) return;
      this.#sendEntry(id, OP_REFRESH, now, gen);
      this.stats.refreshesSent++;
      return;
    }
    if ((flags & F_REPLICATED) !== 0) {
      if (!due) return;
      this.#sendEntry(id, OP_REFRESH, now, gen);
      this.stats.refreshesSent++;
      return;
    }
    // Own, confirmed, never sent: its ready event was dropped (full ring). Ours to send when we
    // are its primary or its primary is not live (the forwarder's rule, #confirmed).
    if ((flags & F_CONFIRMED) !== 0 && replicatesConfirmed(t.primary(id), this.selfIndex, this.#live)) {
      this.#sendEntry(id, OP_CREATE, now, gen);
      this.stats.createsSent++;
      this.stats.readyHealed++;
    }
  }

  #fillFields(id: number, op: number, now: number, gen: number, f: FlowRecordFields): void {
    const t = this.table;
    f.op = op;
    f.primary = t.primary(id);
    f.backup = t.backup(id);
    f.vip = t.vip(id);
    f.backend = t.backend(id);
    f.state = t.state(id);
    f.ageS = Math.max(0, now - t.created(id));
    f.idleS = Math.max(0, now - t.lastSeen(id));
    f.tableGeneration = gen;
  }

  #sendEntry(id: number, op: number, now: number, gen: number): void {
    const t = this.table;
    this.#fillFields(id, op, now, gen, this.#fields);
    t.copyKey(id, 0, this.#keyWords, 0);
    this.#batcher.append(this.#fields, this.#keyBytes, 0);
    t.updateFlags(id, F_REPLICATED, F_NEED_REFRESH);
    this.#sentAt[id] = now + 1;
    this.#sentState[id] = this.#fields.state;
  }

  #fillSyncRecord(id: number, f: FlowRecordFields, key: Uint8Array): boolean {
    const t = this.table;
    const now = this.#nowSec();
    if (!t.isLive(id) || t.isExpired(id, now)) return false;
    if (!t.isConfirmed(id)) return false;
    const ft = this.#forwarding();
    this.#gens.observe(ft);
    this.#fillFields(id, OP_CREATE, now, ft.generation, f);
    t.copyKey(id, 0, this.#keyWords, 0);
    key.set(this.#keyBytes);
    return true;
  }

  // =========================================================================== receiving

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
    for (let i = 0; i < recs.length; i++) this.#applySafe(sender, recs[i]!);
  }

  /** Bulk sync server: answers with paced SyncChunks to `sender`. Never throws. */
  onSyncRequest(sender: number, req: tunlb.v1.ISyncRequest): void {
    if (!this.#validSender(sender)) {
      this.#reject('bad_sender');
      return;
    }
    this.#syncServer.onRequest(sender, Number(req?.requestId ?? 0), Number(req?.fromCursor ?? 0));
  }

  /** Bulk sync client: one chunk of an answer. Never throws. */
  onSyncChunk(sender: number, chunk: ReceivedSyncChunk): void {
    try {
      this.#syncClient.onChunk(sender, chunk);
    } catch (e) {
      this.#reject('internal_error');
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

  #validSender(sender: number): boolean {
    return Number.isInteger(sender) && sender >= 0 && sender < this.balancerCount && sender !== this.selfIndex;
  }

  #reject(reason: RejectReason): void {
    this.stats.ignored++;
    this.stats.rejectedByReason[reason]++;
  }

  #applySafe(sender: number, rec: tunlb.v1.FlowRecord): void {
    this.stats.recordsReceived++;
    try {
      this.#apply(sender, rec);
    } catch (e) {
      this.#reject('internal_error');
      this.#log?.warn({ event: 'replication_internal_error', err: String(e) }, 'flow record could not be applied');
    }
  }

  #apply(sender: number, rec: tunlb.v1.FlowRecord): void {
    if (!this.#validSender(sender)) return this.#reject('bad_sender');
    if (rec === null || typeof rec !== 'object' || !(rec.key instanceof Uint8Array) || !expandWireKey(rec.key, this.#keyBytes, 0)) {
      return this.#reject('bad_key');
    }
    const op = rec.op as number;
    if (op !== OP_CREATE && op !== OP_REFRESH && op !== OP_DELETE) return this.#reject('bad_op');
    const t = this.table;
    const now = this.#nowSec();
    const ref = t.lookup(this.#keyWords, now);
    if (ref >= 0 && (ref & 1) !== 0) return this.#reject('key_conflict'); // it is a flow's reply key
    const known = ref >= 0 ? ref >>> 1 : -1;

    if (op === OP_DELETE) {
      if (known < 0) return this.#reject('delete_unknown');
      this.#syncLocal(known);
      const la = this.#localAt[known]!;
      if (la !== 0 && now - (la - 1) <= this.#deleteGraceS) return this.#reject('delete_locally_active');
      t.remove(known);
      this.#resetSide(known);
      this.stats.deleted++;
      return;
    }

    const primary = rec.primary >>> 0;
    const backup = rec.backup >>> 0;
    if (primary >= this.balancerCount || backup >= this.balancerCount) return this.#reject('balancer_out_of_range');
    const ft = this.#forwarding();
    this.#gens.observe(ft);
    const gens = this.#gens;
    const reason = gens.resolve(ft, rec.vip >>> 0, rec.backend >>> 0, rec.tableGeneration >>> 0);
    if (reason !== null) return this.#reject(reason);
    const vip = gens.vip;
    const backend = gens.backend;
    const lastSeen = Math.max(0, now - (rec.idleS >>> 0));
    const state = rec.state >>> 0;

    if (known < 0) {
      const reply = this.#replyFor(ft, vip, backend);
      if (reply === undefined) return this.#reject('backend_out_of_range');
      const id = t.insert(this.#keyWords, reply, primary, backup, vip, backend, now);
      if (id < 0) return this.#reject(id === InsertResult.FULL ? 'table_full' : 'key_conflict');
      this.#installLearnt(id, state, lastSeen);
      if (t.isExpired(id, now)) {
        t.remove(id);
        this.#resetSide(id);
        return this.#reject('expired');
      }
      this.stats.applied++;
      return;
    }

    // Known flow.
    this.#syncLocal(known);
    const authoritative = sender === primary;
    let id = known;
    const same =
      t.primary(id) === primary && t.backup(id) === backup && t.vip(id) === vip && t.backend(id) === backend;
    if (!same) {
      if (!authoritative) {
        this.stats.decisionKept++;
      } else if (t.vip(id) === vip && t.backend(id) === backend) {
        t.setDecision(id, primary, backup, backend);
        this.stats.adopted++;
      } else {
        const moved = this.#reinsert(id, ft, primary, backup, vip, backend, now);
        if (moved < 0) return; // counted inside
        id = moved;
        this.stats.adopted++;
      }
    }
    if (authoritative || this.#localAt[id] === 0) t.setState(id, state);
    // A record comes only from a confirmed flow: ours is confirmed too. One we decided but
    // never sent (its primary confirmed and replicated it: src/dataplane/forwarder.ts
    // #confirmed) follows the sender's from now on, as a learnt record.
    t.updateFlags(id, (t.flags(id) & (F_REPLICATED | F_FROM_PEER)) === 0 ? F_CONFIRMED | F_FROM_PEER : F_CONFIRMED, 0);
    if (lastSeen > t.lastSeen(id)) t.setLastSeen(id, lastSeen);
    this.#mark[id] = t.packets(id);
    this.stats.updated++;
  }

  /** Reply key words for a learnt entry: null for DSR VIPs, undefined when not buildable. */
  #replyFor(ft: ForwardingTable, vip: number, backend: number): Uint32Array | null | undefined {
    if (ft.vipMethod[vip] === METHOD_DSR) return null;
    return writeReplyKey(ft, vip, backend, this.#keyBytes, 0, this.#replyBytes) ? this.#replyWords : undefined;
  }

  /** New FROM_PEER entry: state, lastSeen, flags, side state. */
  #installLearnt(id: number, state: number, lastSeen: number): void {
    const t = this.table;
    t.setState(id, state);
    t.setLastSeen(id, lastSeen);
    t.updateFlags(id, F_FROM_PEER | F_CONFIRMED, 0);
    this.#resetSide(id);
    this.#mark[id] = t.packets(id);
  }

  /**
   * Re-inserts known entry `id` (key in #keyWords) with the primary's new VIP/backend (the reply
   * key changes with them). Keeps lastSeen. On failure restores the old entry and counts the
   * reason. Returns the new id or -1.
   */
  #reinsert(id: number, ft: ForwardingTable, primary: number, backup: number, vip: number, backend: number, now: number): number {
    const t = this.table;
    const reply = this.#replyFor(ft, vip, backend);
    if (reply === undefined) {
      this.#reject('backend_out_of_range');
      return -1;
    }
    const old = {
      primary: t.primary(id),
      backup: t.backup(id),
      vip: t.vip(id),
      backend: t.backend(id),
      state: t.state(id),
      lastSeen: t.lastSeen(id),
      flags: t.flags(id),
      hasReply: t.copyKey(id, 1, this.#oldReplyWords, 0),
      localAt: this.#localAt[id]!,
    };
    t.remove(id);
    this.#resetSide(id);
    let nid = t.insert(this.#keyWords, reply, primary, backup, vip, backend, now);
    if (nid < 0) {
      const why: RejectReason = nid === InsertResult.FULL ? 'table_full' : 'key_conflict';
      nid = t.insert(this.#keyWords, old.hasReply ? this.#oldReplyWords : null, old.primary, old.backup, old.vip, old.backend, now);
      if (nid >= 0) {
        t.setState(nid, old.state);
        t.setLastSeen(nid, old.lastSeen);
        t.updateFlags(nid, old.flags, 0);
        this.#mark[nid] = t.packets(nid);
        this.#localAt[nid] = old.localAt;
      }
      this.#reject(why);
      return -1;
    }
    t.setState(nid, old.state);
    t.setLastSeen(nid, old.lastSeen);
    t.updateFlags(nid, F_FROM_PEER | F_CONFIRMED | (old.flags & F_REPLICATED), 0);
    this.#mark[nid] = t.packets(nid);
    this.#localAt[nid] = old.localAt;
    return nid;
  }

  /** Notes local packets of `id` since the last look (before we change its lastSeen). */
  #syncLocal(id: number): void {
    const p = this.table.packets(id);
    if (p !== this.#mark[id]) {
      this.#mark[id] = p;
      this.#localAt[id] = this.table.lastSeen(id) + 1;
    }
  }

  #resetSide(id: number): void {
    this.#sentAt[id] = 0;
    this.#sentState[id] = 0;
    this.#mark[id] = 0;
    this.#localAt[id] = 0;
  }
}
