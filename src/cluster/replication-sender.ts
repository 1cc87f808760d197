/**
 * Flow-record replication, sending half (src/cluster/replicator.ts owns it and gives it the
 * table, the forwarding table, the signer and the broadcast): this balancer's flows go to every
 * peer as CREATE, REFRESH and DELETE records, and bulk sync's answers are selected here
 * (`fillSyncRecord`).
 *
 * ## Sending (this balancer's flows)
 * - Flood policy (IPVS sync_threshold, src/cluster/replication-policy.ts): the forwarder calls
 *   `flowReady(id)` once per flow when it has seen `syncThreshold` packets (TCP; UDP/ICMP/other:
 *   the first packet). Recommended: 3 on NAT VIPs (SYN, SYN-ACK, client ACK: a spoofed source
 *   never completes the handshake, so a SYN flood creates no replication traffic), 2 with DSR
 *   only (the replies bypass us, so the 2nd packet is the client's ACK). 2 on NAT does not
 *   filter: the SYN-ACK is the 2nd packet and backends send it to spoofed sources too. Either
 *   way the record leaves ~flushMs after the handshake, before the connection carries data.
 *   Flows below the threshold are never sent (not by refresh, not by bulk sync, no DELETE).
 * - `flowReady` is O(1) and allocation-free: the id goes into a preallocated Int32Array ring
 *   (`queueCapacity`, default 65536). When the ring is full the event is dropped and counted
 *   (`queueDrops`); the refresh scan sends such flows later (it sends a CREATE for every live,
 *   unreplicated local flow past the threshold), so a drop delays a record, never loses it.
 * - `flowExpired(id)` (from the table's onExpire, BEFORE the unlink): if the flow was
 *   replicated by us (flag REPLICATED), its key and decision are copied into a preallocated
 *   ring (`deleteQueueCapacity`, default 16384) and a DELETE is queued; nothing else, never a
 *   table mutation. On overflow the DELETE is dropped and counted (`deleteQueueDrops`): peers'
 *   copies then end by their own idle timeout.
 * - `flush()` (every flushMs, and when `pending` is large): encodes queued CREATEs (skipping
 *   ids no longer live, already REPLICATED, learnt from a peer, or below the threshold, i.e.
 *   an id reused by a younger flow) and DELETEs, at most `flushBudget` records per call
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
 * clamp(refreshS / 4, 1 s, 10 s). Per visited, non-expired entry:
 *   - own flow, REPLICATED: REFRESH when refreshS passed since its last record, when its state
 *     changed since (e.g. SYN_SEEN -> ESTABLISHED -> CLOSING: peers' timeouts follow the
 *     state), or when flag NEED_REFRESH is set. So each flow is re-sent every refreshS to
 *     refreshS + cycle seconds, with its current idle_s.
 *   - own flow, not REPLICATED, past the threshold: CREATE (its ready event was dropped, or the
 *     forwarder only reports creation: see flowCreated).
 *   - learnt flow (FROM_PEER) that THIS balancer forwarded packets of in the last refreshS
 *     (e.g. after a failover) and whose primary is us or not live (`live[primary] === 0`; or no
 *     `live` array given): REFRESH on the same schedule, and it becomes REPLICATED (so its
 *     expiry sends a DELETE). A learnt flow whose primary lives is refreshed by the primary.
 * Cost: 13 bytes of side state per table entry (src/cluster/replication-side-state.ts).
 */
import type { ForwardingTable } from '../decision/forwarding-table';
import { FlowFlags, type FlowTable } from '../flow';
import { DEFAULT_DATAGRAM_BUDGET, FLOW_KEY_LEN, Op, RecordBatcher, type EnvelopeSigner, type FlowRecordFields } from '../protocol';
import { readyThresholdForState } from './replication-policy';
import type { GenerationHistory } from './generation-history';
import type { ReplicationSideState } from './replication-side-state';
import type { ReplicatorStats } from './replication-stats';

export interface ReplicationSenderOptions {
  table: FlowTable;
  /** This balancer's index (0..balancerCount-1). */
  selfIndex: number;
  /** The current forwarding table (reply keys for learnt records, generation). */
  forwarding: () => ForwardingTable;
  /** One per process; seals every envelope. */
  signer: EnvelopeSigner;
  /** To every peer (multicast group or unicast fan-out). The datagram is the callee's. */
  broadcast: (dgram: Uint8Array) => void;
  /** The flow table's clock (s since process start). */
  nowSec: () => number;
  /** cluster.replication.refresh_s. */
  refreshS: number;
  /** cluster.replication.sync_threshold (TCP packets before a flow is replicated). */
  syncThreshold: number;
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
}

const F_REPLICATED = FlowFlags.REPLICATED;
const F_NEED_REFRESH = FlowFlags.NEED_REFRESH;
const F_FROM_PEER = FlowFlags.FROM_PEER;
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

export class ReplicationSender {
  readonly table: FlowTable;
  readonly selfIndex: number;
  /** Entry ids the refresh pass examines per tick. */
  readonly refreshChunk: number;
  /** Ticks per full walk of the table (at most; sooner when the table is sparse). */
  readonly refreshCycleTicks: number;

  readonly #stats: ReplicatorStats;
  readonly #side: ReplicationSideState;
  readonly #gens: GenerationHistory;
  readonly #forwarding: () => ForwardingTable;
  readonly #broadcast: (dgram: Uint8Array) => void;
  readonly #nowSec: () => number;
  readonly #refreshS: number;
  readonly #syncThreshold: number;
  readonly #live: Uint8Array | undefined;
  readonly #flushBudget: number;
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

  // scratch
  readonly #keyWords: Uint32Array;
  readonly #keyBytes: Uint8Array;
  readonly #scratch = new Int32Array(SCAN_SCRATCH);
  #scratchLen = 0;
  readonly #collect = (id: number): void => {
    this.#scratch[this.#scratchLen++] = id;
  };
  #cursor = 0;

  /** `stats`, `side` and `gens` are the Replicator's, shared with its applier. */
  constructor(opts: ReplicationSenderOptions, stats: ReplicatorStats, side: ReplicationSideState, gens: GenerationHistory) {
    this.#stats = stats;
    this.#side = side;
    this.#gens = gens;
    this.table = opts.table;
    this.selfIndex = opts.selfIndex;
    this.#forwarding = opts.forwarding;
    this.#broadcast = opts.broadcast;
    this.#nowSec = opts.nowSec;
    this.#refreshS = Math.max(1, Math.floor(opts.refreshS));
    this.#syncThreshold = Math.max(1, Math.floor(opts.syncThreshold));
    this.#live = opts.live;
    this.#flushBudget = opts.flushBudget ?? 4096;
    const budget = opts.datagramBudget ?? DEFAULT_DATAGRAM_BUDGET;
    this.#batcher = new RecordBatcher(
      opts.signer,
      (dgram, n) => {
        this.#stats.datagramsSent++;
        this.#stats.recordsSent += n;
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

    const kb = new ArrayBuffer(FLOW_KEY_LEN);
    this.#keyWords = new Uint32Array(kb);
    this.#keyBytes = new Uint8Array(kb);

    const cap = this.table.capacity;
    const tickMs = Math.max(1, opts.refreshTickMs ?? 100);
    const cycleS = Math.min(10, Math.max(1, this.#refreshS / 4));
    this.refreshCycleTicks = Math.max(1, Math.round((cycleS * 1000) / tickMs));
    this.refreshChunk = Math.max(64, Math.ceil(cap / this.refreshCycleTicks));
  }

  /**
   * HOT PATH: the forwarder reports that flow `entryId` reached its replication threshold.
   * O(1), no allocation; on a full ring the event is counted and dropped (refresh heals it).
   */
  flowReady(entryId: number): void {
    if (this.#readyCount === this.#ready.length) {
      this.#stats.queueDrops++;
      return;
    }
    this.#ready[(this.#readyHead + this.#readyCount) & this.#readyMask] = entryId;
    this.#readyCount++;
  }

  /**
   * FlowSink compatibility (src/dataplane/forwarder.ts calls flowCreated at insertion, before
   * the first packet is counted): flows whose threshold is 1 (UDP/ICMP/other, or TCP with
   * syncThreshold 1) are queued at once; TCP flows with a higher threshold are left to the
   * refresh scan, which sends them once past the threshold (within one scan cycle). A forwarder
   * that calls flowReady itself (replication-policy.ts) gets them within flushMs instead.
   */
  flowCreated(entryId: number): void {
    if (readyThresholdForState(this.table.state(entryId), this.#syncThreshold) === 1) this.flowReady(entryId);
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
        this.#stats.deleteQueueDrops++;
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
    this.#side.reset(entryId);
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
    const d0 = this.#stats.datagramsSent;
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
      if (
        !t.isLive(id) ||
        (t.flags(id) & (F_REPLICATED | F_FROM_PEER)) !== 0 ||
        t.packets(id) < readyThresholdForState(t.state(id), this.#syncThreshold)
      ) {
        this.#stats.readySkipped++;
        continue;
      }
      this.#sendEntry(id, OP_CREATE, now, gen);
      this.#stats.createsSent++;
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
      this.#stats.deletesSent++;
      budget--;
    }
    if (this.#batcher.pending() > 0) this.#batcher.flush();
    return this.#stats.datagramsSent - d0;
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
        this.#stats.refreshCycles++;
        break;
      }
      budget -= Math.max(1, c1 - c0);
    }
    if (this.#batcher.pending() > 0) this.#batcher.flush();
  }

  #refreshVisit(id: number, now: number, gen: number): void {
    const t = this.table;
    if (t.isExpired(id, now)) return; // the expiry sweep will remove it (and send a DELETE)
    this.#side.syncLocal(id);
    const flags = t.flags(id);
    const state = t.state(id);
    const sentAt = this.#side.sentAt[id]!;
    const due =
      sentAt === 0 ||
      now - (sentAt - 1) >= this.#refreshS ||
      this.#side.sentState[id] !== state ||
      (flags & F_NEED_REFRESH) !== 0;
    if ((flags & F_FROM_PEER) !== 0) {
      // Learnt, and we are its primary: the peer that decided it has just announced it, so
      // start its refresh clock here instead of echoing a REFRESH of every flow forwarded to
      // us at once (that doubled the records on the wire per new flow: bench/cluster/RESULTS.md).
      const fp = t.primary(id);
      if (sentAt === 0 && fp === this.selfIndex) {
        this.#side.sentAt[id] = now + 1;
        this.#side.sentState[id] = state;
        return;
      }
      // Then only while we forward it and its primary cannot (dead) or is us.
      const localAt = this.#side.localAt[id]!;
      if (!due || localAt === 0 || now - (localAt - 1) >= this.#refreshS) return;
      const p = t.primary(id);
      const live = this.#live;
      if (p !== this.selfIndex && live !== undefined && live[p] !== 0) return;
      this.#sendEntry(id, OP_REFRESH, now, gen);
      this.#stats.refreshesSent++;
      return;
    }
    if ((flags & F_REPLICATED) !== 0) {
      if (!due) return;
      this.#sendEntry(id, OP_REFRESH, now, gen);
      this.#stats.refreshesSent++;
      return;
    }
    if (t.packets(id) >= readyThresholdForState(state, this.#syncThreshold)) {
      this.#sendEntry(id, OP_CREATE, now, gen);
      this.#stats.createsSent++;
      this.#stats.readyHealed++;
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
    this.#side.sentAt[id] = now + 1;
    this.#side.sentState[id] = this.#fields.state;
  }

  /**
   * Bulk sync's record selection: fills `f` (op CREATE) and `key` for entry `id` when it
   * belongs in a sync answer (live, not expired, REPLICATED, FROM_PEER or past the threshold).
   */
  fillSyncRecord(id: number, f: FlowRecordFields, key: Uint8Array): boolean {
    const t = this.table;
    const now = this.#nowSec();
    if (!t.isLive(id) || t.isExpired(id, now)) return false;
    const flags = t.flags(id);
    if ((flags & (F_REPLICATED | F_FROM_PEER)) === 0 && t.packets(id) < readyThresholdForState(t.state(id), this.#syncThreshold)) {
      return false;
    }
    const ft = this.#forwarding();
    this.#gens.observe(ft);
    this.#fillFields(id, OP_CREATE, now, ft.generation, f);
    t.copyKey(id, 0, this.#keyWords, 0);
    key.set(this.#keyBytes);
    return true;
  }
}
