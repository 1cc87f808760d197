/**
 * Flow-record replication, applying half (src/cluster/replicator.ts owns it): records received
 * from peers, by broadcast or in a bulk sync, go into the flow table here.
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
 *   recorded; flag FROM_PEER; lastSeen = now - idle_s (clamped at 0). created = now (the table
 *   has no setter; it only affects age_s we might send later).
 * - CREATE/REFRESH of a known key: lastSeen = max(lastSeen, now - idle_s) (never moved back).
 *   The recorded decision is the truth and is kept, UNLESS the sender is the record's primary
 *   (the primary is authoritative for its flows, GLB's idea): then its decision is adopted
 *   (setDecision; when vip/backend change, the entry is re-inserted with the new reply key).
 *   A differing decision from a non-primary sender is kept out and counted (`decisionKept`).
 *   The recorded state is adopted from the primary, or when we forwarded no packet of the flow.
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
 */
import type { ForwardingTable } from '../decision/forwarding-table';
import { METHOD_DSR } from '../decision/forwarding-table';
import { writeReplyKey } from '../decision/reply-key';
import { FlowFlags, InsertResult, type FlowTable } from '../flow';
import { expandWireKey, FLOW_KEY_LEN, Op, type tunlb } from '../protocol';
import type { GenerationHistory } from './generation-history';
import type { ReplicationSideState } from './replication-side-state';
import type { RejectReason, ReplicatorStats } from './replication-stats';

/** pino-compatible subset. */
export interface ReplicatorLogger {
  debug?(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface ReplicationApplierOptions {
  table: FlowTable;
  /** This balancer's index (0..balancerCount-1). */
  selfIndex: number;
  balancerCount: number;
  /** The current forwarding table (reply keys for learnt records, generation). */
  forwarding: () => ForwardingTable;
  /** The flow table's clock (s since process start). */
  nowSec: () => number;
  /** A DELETE does not remove a flow this balancer forwarded within this many s (default 5). */
  deleteGraceS?: number;
  log?: ReplicatorLogger;
}

const F_REPLICATED = FlowFlags.REPLICATED;
const F_FROM_PEER = FlowFlags.FROM_PEER;
const OP_CREATE = Op.CREATE;
const OP_REFRESH = Op.REFRESH;
const OP_DELETE = Op.DELETE;
const KEY_WORDS = 10;

export class ReplicationApplier {
  readonly table: FlowTable;
  readonly selfIndex: number;
  readonly balancerCount: number;

  readonly #stats: ReplicatorStats;
  readonly #side: ReplicationSideState;
  readonly #gens: GenerationHistory;
  readonly #forwarding: () => ForwardingTable;
  readonly #nowSec: () => number;
  readonly #deleteGraceS: number;
  readonly #log: ReplicatorLogger | undefined;

  // scratch
  readonly #keyWords: Uint32Array;
  readonly #keyBytes: Uint8Array;
  readonly #replyWords: Uint32Array;
  readonly #replyBytes: Uint8Array;
  readonly #oldReplyWords: Uint32Array;

  /** `stats`, `side` and `gens` are the Replicator's, shared with its sender. */
  constructor(opts: ReplicationApplierOptions, stats: ReplicatorStats, side: ReplicationSideState, gens: GenerationHistory) {
    this.#stats = stats;
    this.#side = side;
    this.#gens = gens;
    this.table = opts.table;
    this.selfIndex = opts.selfIndex;
    this.balancerCount = opts.balancerCount;
    this.#forwarding = opts.forwarding;
    this.#nowSec = opts.nowSec;
    this.#deleteGraceS = opts.deleteGraceS ?? 5;
    this.#log = opts.log;
    const kb = new ArrayBuffer(FLOW_KEY_LEN);
    this.#keyWords = new Uint32Array(kb);
    this.#keyBytes = new Uint8Array(kb);
    const rb = new ArrayBuffer(FLOW_KEY_LEN);
    this.#replyWords = new Uint32Array(rb);
    this.#replyBytes = new Uint8Array(rb);
    this.#oldReplyWords = new Uint32Array(KEY_WORDS);
  }

  /** A peer's index: in range and not this balancer. */
  validSender(sender: number): boolean {
    return Number.isInteger(sender) && sender >= 0 && sender < this.balancerCount && sender !== this.selfIndex;
  }

  /** Counts a record (or request) ignored for `reason`. */
  reject(reason: RejectReason): void {
    this.#stats.ignored++;
    this.#stats.rejectedByReason[reason]++;
  }

  /** Applies one record from peer `sender` (see the header). Never throws. */
  applySafe(sender: number, rec: tunlb.v1.FlowRecord): void {
    this.#stats.recordsReceived++;
    try {
      this.#apply(sender, rec);
    } catch (e) {
      this.reject('internal_error');
      this.#log?.warn({ event: 'replication_internal_error', err: String(e) }, 'flow record could not be applied');
    }
  }

  #apply(sender: number, rec: tunlb.v1.FlowRecord): void {
    if (!this.validSender(sender)) return this.reject('bad_sender');
    if (rec === null || typeof rec !== 'object' || !(rec.key instanceof Uint8Array) || !expandWireKey(rec.key, this.#keyBytes, 0)) {
      return this.reject('bad_key');
    }
    const op = rec.op as number;
    if (op !== OP_CREATE && op !== OP_REFRESH && op !== OP_DELETE) return this.reject('bad_op');
    const t = this.table;
    const now = this.#nowSec();
    const ref = t.lookup(this.#keyWords, now);
    if (ref >= 0 && (ref & 1) !== 0) return this.reject('key_conflict'); // it is a flow's reply key
    const known = ref >= 0 ? ref >>> 1 : -1;

    if (op === OP_DELETE) {
      if (known < 0) return this.reject('delete_unknown');
      this.#side.syncLocal(known);
      const la = this.#side.localAt[known]!;
      if (la !== 0 && now - (la - 1) <= this.#deleteGraceS) return this.reject('delete_locally_active');
      t.remove(known);
      this.#side.reset(known);
      this.#stats.deleted++;
      return;
    }

    const primary = rec.primary >>> 0;
    const backup = rec.backup >>> 0;
    if (primary >= this.balancerCount || backup >= this.balancerCount) return this.reject('balancer_out_of_range');
    const ft = this.#forwarding();
    this.#gens.observe(ft);
    const gens = this.#gens;
    const reason = gens.resolve(ft, rec.vip >>> 0, rec.backend >>> 0, rec.tableGeneration >>> 0);
    if (reason !== null) return this.reject(reason);
    const vip = gens.vip;
    const backend = gens.backend;
    const lastSeen = Math.max(0, now - (rec.idleS >>> 0));
    const state = rec.state >>> 0;

    if (known < 0) {
      const reply = this.#replyFor(ft, vip, backend);
      if (reply === undefined) return this.reject('backend_out_of_range');
      const id = t.insert(this.#keyWords, reply, primary, backup, vip, backend, now);
      if (id < 0) return this.reject(id === InsertResult.FULL ? 'table_full' : 'key_conflict');
      this.#installLearnt(id, state, lastSeen);
      if (t.isExpired(id, now)) {
        t.remove(id);
        this.#side.reset(id);
        return this.reject('expired');
      }
      this.#stats.applied++;
      return;
    }

    // Known flow.
    this.#side.syncLocal(known);
    const authoritative = sender === primary;
    let id = known;
    const same =
      t.primary(id) === primary && t.backup(id) === backup && t.vip(id) === vip && t.backend(id) === backend;
    if (!same) {
      if (!authoritative) {
        this.#stats.decisionKept++;
      } else if (t.vip(id) === vip && t.backend(id) === backend) {
        t.setDecision(id, primary, backup, backend);
        this.#stats.adopted++;
      } else {
        const moved = this.#reinsert(id, ft, primary, backup, vip, backend, now);
        if (moved < 0) return; // counted inside
        id = moved;
        this.#stats.adopted++;
      }
    }
    if (authoritative || this.#side.localAt[id] === 0) t.setState(id, state);
    if (lastSeen > t.lastSeen(id)) t.setLastSeen(id, lastSeen);
    this.#side.mark[id] = t.packets(id);
    this.#stats.updated++;
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
    t.updateFlags(id, F_FROM_PEER, 0);
    this.#side.reset(id);
    this.#side.mark[id] = t.packets(id);
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
      this.reject('backend_out_of_range');
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
      localAt: this.#side.localAt[id]!,
    };
    t.remove(id);
    this.#side.reset(id);
    let nid = t.insert(this.#keyWords, reply, primary, backup, vip, backend, now);
    if (nid < 0) {
      const why: RejectReason = nid === InsertResult.FULL ? 'table_full' : 'key_conflict';
      nid = t.insert(this.#keyWords, old.hasReply ? this.#oldReplyWords : null, old.primary, old.backup, old.vip, old.backend, now);
      if (nid >= 0) {
        t.setState(nid, old.state);
        t.setLastSeen(nid, old.lastSeen);
        t.updateFlags(nid, old.flags, 0);
        this.#side.mark[nid] = t.packets(nid);
        this.#side.localAt[nid] = old.localAt;
      }
      this.reject(why);
      return -1;
    }
    t.setState(nid, old.state);
    t.setLastSeen(nid, old.lastSeen);
    t.updateFlags(nid, F_FROM_PEER | (old.flags & F_REPLICATED), 0);
    this.#side.mark[nid] = t.packets(nid);
    this.#side.localAt[nid] = old.localAt;
    return nid;
  }
}
