/**
 * The flow table: a fixed-capacity, open-addressing hash table over typed arrays (no object
 * per flow), indexed twice per flow like Linux conntrack's two tuplehash entries:
 * once by the FORWARD key (client -> VIP) and once by the REPLY key (backend -> client, NAT).
 *
 * ## Keys and ownership
 * - A key is the 40-byte flow key of docs/contracts.md, passed as a `Uint32Array` of (at least)
 *   10 words viewing caller-owned memory (host order; the table only hashes and compares words).
 * - The table COPIES keys in on `insert`; the caller keeps ownership of the buffers it passes and
 *   may reuse them at once. `lookup` only reads the key. `copyKey` copies a stored key out into a
 *   caller-owned array. The table never retains a reference to a caller's array.
 *
 * ## Layout (capacity C entries, S = slot count, a power of two, default nextPow2(4C))
 * - entries, indexed by entryId 0..C-1 (stable for the life of the entry; entries never move).
 *   Everything the packet path reads or writes for a flow sits in ONE 100-byte record (25 u32
 *   words) of `rec`, so a lookup costs one cache miss in the index and one in the record, and
 *   touch/accessors after a lookup hit the same lines:
 *     word  0..9   forward key
 *     word 10      deadline = lastSeen + timeout(state), u32 s (expired when nowSec > deadline)
 *     word 11..20  reply key (zero when inserted without one, DSR)
 *     word 21      packets (u32, saturating)
 *     word 22      state (bits 0-7) | flags (8-15) | primary (16-23) | backup (24-31)
 *     word 23      vip (bits 0-14) | index epoch (bit 15) | backend (16-31)
 *     word 24      TCP sequence word (flag SEQ_KNOWN): the server's next sequence number while
 *                  unconfirmed, the client's once confirmed (touch)
 *   `lastSeen(id)` is derived: deadline - timeout(state); every state change rewrites the deadline.
 *   Beside it: created Uint32Array(C) (4 B), free-id stack Int32Array(C) (4 B).
 * - index: slots Uint32Array(S), one slot per indexed key (2 per NAT flow, 1 per DSR flow);
 *   S = 4C keeps the load factor <= 0.5 with both keys present: 16 B per flow at S = 4C.
 *   Total at C = 2^20: 100 + 4 + 4 + 16 = 124 B per flow (bench/flow-table.bench.ts measures RSS).
 * - A slot holds 0 (empty) or `(tag << refBits) | (ref + 1)` where `ref = (entryId << 1) | dir`
 *   (dir 0 = forward key, 1 = reply key) and `tag` is the top (32 - refBits) bits of a second mix
 *   of the key's hash: most mismatching slots are rejected without touching the record.
 *   The stored key of a ref starts at word (ref >>> 1) * 25 + (ref & 1) * 11.
 *
 * ## Probing and deletion
 * Linear probing from `hash & (S-1)`, with backward-shift deletion (Knuth 6.4 Algorithm R):
 * after removing a slot, later slots of the same cluster whose home position allows it move back,
 * so there are no tombstones and probe lengths never degrade under churn. Deletion recomputes
 * the home of each shifted slot by rehashing its stored key (no stored hashes, to stay within
 * the memory budget); at load <= 0.5 clusters are short, so this is O(1) expected.
 *
 * ## Expiry
 * Idle timeouts per state (src/flow/timeouts.ts). `expire(nowSec, budget)` advances a cursor over
 * entry ids and examines at most `budget` ids per call (incremental, no stop-the-world).
 * `lookup` of an entry past its timeout removes it and reports a miss; `insert` does the same for
 * an expired entry holding one of its keys. Every removal except an explicit `remove()` calls the
 * expire callback (the per-call one given to `expire`, else `options.onExpire`) BEFORE the entry
 * is unlinked, so the caller can read its keys and queue a delete record. The callback must not
 * mutate the table (no insert/remove/lookup/expire from inside it).
 *
 * ## Full table (never grows)
 * When no entry id is free, `insert`:
 *   1. looks at the slots in a window of `evictWindow` slots from the new forward key's home and
 *      removes the first expired entry found there;
 *   2. otherwise runs a bounded expiry sweep (`fullSweepBudget` entry ids from the sweep cursor);
 *   3. otherwise, if `earlyDrop` (default true), removes the first entry in the window that is
 *      not CONFIRMED (any protocol and state, whatever replies it has seen: a spoofed SYN is
 *      answered by the backend too), as conntrack's early_drop removes entries not ASSURED and
 *      IPVS's drop_entry half-open ones, so a spoofed flood cannot lock legitimate new flows
 *      out and never evicts a confirmed one (counted in `earlyDrops`, reason EARLY_DROP);
 *   4. otherwise refuses: returns InsertResult.FULL and increments `refusedFull`.
 *
 * ## Index remap (config reload)
 * A record's VIP and backend are indexes into the forwarding table it was decided on; a reload
 * may renumber them (src/dataplane/flow-remap.ts). `beginRemap(maps)` switches every record to
 * the new numbering in O(1): it flips the table's index epoch, so every record written before
 * is "stale", and keeps the old → new maps. A stale record is translated the first time
 * anything reads or writes its VIP or backend (vip(), backend(), setVip(), setDecision(): the
 * forwarder, replication, listings alike), and `remapStep(budget)` translates the rest in
 * chunks, removing the records of removed VIPs; the step that reaches the end of the table
 * ends the remap. So the data plane never sees a record in the other numbering: the forwarding
 * table swap and the epoch flip happen in the same synchronous call. A translated record of a
 * removed backend has backend NO_BACKEND (0xffff), one of a removed VIP has VIP `VIP_REMOVED`
 * (the step removes it). Records inserted meanwhile carry the new epoch. Cost on the hot path:
 * one compare of a bit of the word the accessor reads anyway (measured +4-9 % on the forwarder's
 * cache-resident established path, docs/performance.md "Event loop budget"). A translation
 * rewrites only word 23: not a mutation in the sense of scan()'s and the callbacks' contracts.
 *
 * ## Scan (bulk sync)
 * `scan(cursor, maxEntries, fn)` walks entry ids in increasing order. Entries never move, so an
 * entry that is live for the whole scan (from the call with cursor 0 to the call returning 0) is
 * visited EXACTLY once, whatever is inserted or removed meanwhile; entries inserted or removed
 * during the scan may or may not be visited (an id freed and reused behind the cursor is not).
 *
 * ## Hot path
 * lookup/insert/touch/accessors allocate nothing, create no closures and never throw. Only the
 * constructor throws (TunlbError, off the hot path). Measured (bench/flow-table.bench.ts, 1M
 * flows, a shared 2-vCPU VM): lookup hit ~45-55 ns when the flow is cache-resident (hash ~20 ns);
 * ~500 ns for uniformly random flows, which is two dependent DRAM+TLB misses (slot, record) at
 * ~170 ns each on that machine. remove/expire rehash the stored keys of the shifted cluster
 * (one record miss per shifted slot): ~1-1.5 us per flow, paid once per flow end.
 * Not done yet: a batch lookup that hashes a whole TUN batch first and loads the slots and
 * records in a second pass, so the misses of independent packets overlap.
 */
import * as tcpFlags from '../packet/tcp-flags';
import { randomBytes } from 'node:crypto';
import { TunlbError, ErrorCodes } from '../errors';
import { hashKeyWords as hashKeyWordsImport } from './hash';
import { buildTimeoutTable, FlowState, initialStateForProtocol, type FlowTimeouts } from './timeouts';

/** Negative results of `insert` (entry ids are >= 0). */
export const InsertResult = {
  /** No free entry and the full-table policy could not make room. `refusedFull` counted. */
  FULL: -1,
  /** The forward key is already present (live). `lastConflictRef` holds the existing ref. */
  EXISTS: -2,
  /** The reply key is already present (as some flow's forward or reply key), or equals the
   *  forward key. `lastConflictRef` holds the existing ref (-1 when equal to the fwd key). */
  REPLY_CONFLICT: -3,
} as const;

/** Entry flags (u8). Bits the table sets itself: SEEN_REPLY (touch with dir 1), NO_REPLY_KEY. */
export const FlowFlags = {
  /** The record has been multicast to peers. */
  REPLICATED: 0x01,
  /** The record should be re-sent to peers (long-lived flow refresh). */
  NEED_REFRESH: 0x02,
  /** The record was learnt from a peer's flow record, not from a local packet. */
  FROM_PEER: 0x04,
  /** A packet was seen in the reply direction (touch(..., dir = 1)). */
  SEEN_REPLY: 0x08,
  /** Inserted without a reply key (DSR): only the forward key is indexed. */
  NO_REPLY_KEY: 0x10,
  /**
   * Decided while no other balancer was live: the backup is the next configured balancer in
   * the flow's rank, not known to be up. Cleared when that backup is live, or when the flow's
   * primary gives it a live backup (src/cluster/backup-repair.ts).
   */
  BACKUP_PENDING: 0x20,
  /**
   * The flow is confirmed (FlowTable.touch: evidence a blind spoofer cannot give, or a record
   * learnt from a peer). Only confirmed flows are replicated; unconfirmed ones are the first
   * to go when the table is full.
   */
  CONFIRMED: 0x40,
  /**
   * TCP: the record's sequence word holds a value: unconfirmed, the server's next sequence
   * number from its last reply (SYN-ACK: ISN + 1); confirmed, the client's next sequence
   * number (the reference of the RST/FIN window check).
   */
  SEQ_KNOWN: 0x80,
} as const;

/** What FlowTable.touch reports about the flow after the packet. */
export const TouchResult = {
  /** Not confirmed (yet). */
  UNCONFIRMED: 0,
  /** Confirmed before this packet; nothing new. */
  CONFIRMED: 1,
  /** This packet confirmed the flow: time to replicate it. */
  CONFIRMED_NOW: 2,
  /** Confirmed; this client RST/FIN was outside the sequence window and changed nothing. */
  OUT_OF_WINDOW: 3,
} as const;

/** TCP header flag bits (RFC 9293 section 3.1), as passed to `touch` (declared in src/packet/tcp-flags.ts). */
export const TcpFlags = tcpFlags.TcpFlags;

/** VIP index of a record whose VIP a reload removed (see "Index remap"); remapStep removes it. */
export const VIP_REMOVED = 0x7fff;
/** VIP indexes a record can hold: 0 .. MAX_VIPS - 1 (VIP_REMOVED excluded). */
export const MAX_VIPS = 0x7fff;

/** What beginRemap() .. the last remapStep() did (counted by whoever translated a record). */
export interface RemapCounts {
  /** Records translated to the new numbering (lazily on access, or by remapStep). */
  translated: number;
  /** Of those, records whose VIP or backend index changed. */
  remapped: number;
  /** Records whose backend was removed: backend NO_BACKEND (the forwarder treats it as down). */
  cut: number;
  /** Records of removed VIPs, removed by remapStep. */
  removed: number;
}

/** Why an entry is being removed, second argument of the expire callback. */
export const ExpireReason = { IDLE: 0, EARLY_DROP: 1, TAKEOVER: 2 } as const;

export type ExpireCallback = (entryId: number, reason: number) => void;

export interface FlowTableOptions {
  /** Entries preallocated (max live flows), 1 .. 2^24. */
  capacity: number;
  /** Slots in the key index, a power of two > 2 * capacity. Default nextPow2(4 * capacity)
   *  (load factor <= 0.5 with every reply key present). Smaller means longer probes. */
  slotCount?: number;
  /** Hash seed (u32). Default: random per table. Tests pass a fixed seed. */
  seed?: number;
  /** Idle timeouts; missing fields take DEFAULT_FLOW_TIMEOUTS. */
  timeouts?: Partial<FlowTimeouts>;
  /** Called before an entry is removed by expiry/eviction (not by remove()). */
  onExpire?: ExpireCallback;
  /** Slots examined from the home position when full (step 1 and 3). Default 32. */
  evictWindow?: number;
  /** Entry ids examined by the bounded sweep when full (step 2). Default 64. */
  fullSweepBudget?: number;
  /** Early-drop unanswered TCP SYN_SEEN entries when full (step 3). Default true. */
  earlyDrop?: boolean;
}

const KEY_WORDS = 10;
/** Record layout (u32 words), see header. */
const REC = 25;
const R_DEADLINE = 10;
const R_REPLY = 11;
const R_PACKETS = 21;
const R_META = 22;
const R_VB = 23;
const R_SEQ = 24;
/** Word 23: VIP index bits, the index epoch bit, the backend half (see header). */
const VB_VIP = 0x7fff;
const VB_EPOCH = 0x8000;
const VB_NO_BACKEND = 0xffff;
if (VB_VIP !== VIP_REMOVED) throw new Error('src/flow/table.ts: VIP_REMOVED must be the VIP bits of word 23');
/** Module-local bindings and primitive constants for the hot path. Under tsx/esbuild CJS output an
 *  imported name is a getter on the module object and `Obj.FIELD` is a property load; local
 *  `const` primitives compile to immediates. Values mirror FlowState and FlowFlags; the TCP bits are
 *  src/packet/tcp-flags.ts'. */
const hashKeyWords = hashKeyWordsImport;
const initialState = initialStateForProtocol;
const ST_FREE = 0;
const ST_SYN_SEEN = 1;
const ST_ESTABLISHED = 2;
const ST_CLOSING = 3;
const ST_CLOSED = 4;
const ST_OTHER = 7;
const F_REPLICATED = 0x01;
const F_FROM_PEER = 0x04;
const F_SEEN_REPLY = 0x08;
const F_NO_REPLY_KEY = 0x10;
const F_CONFIRMED = 0x40;
const F_SEQ_KNOWN = 0x80;
/** Sequence windows of touch (bytes), see FlowTable.touch and docs/flow-records.md. */
const SEQ_AHEAD = 1 << 17;
const SEQ_BEHIND = 1 << 16;
const ACK_BEHIND = 1 << 16;
const TOUCH_UNCONFIRMED = 0;
const TOUCH_CONFIRMED = 1;
const TOUCH_CONFIRMED_NOW = 2;
const TOUCH_OUT_OF_WINDOW = 3;
/** touch's `dir` for an ICMP error about the flow (from either side). */
const DIR_ICMP_ERROR = 2;
const TCP_FIN = tcpFlags.TCP_FIN;
const TCP_SYN = tcpFlags.TCP_SYN;
const TCP_RST = tcpFlags.TCP_RST;
const TCP_ACK = tcpFlags.TCP_ACK;
const REASON_IDLE = 0;
const REASON_EARLY_DROP = 1;
const REASON_TAKEOVER = 2;
// Checked once at load: the mirrors above must equal the exported enums.
if (
  ST_FREE !== FlowState.FREE || ST_SYN_SEEN !== FlowState.TCP_SYN_SEEN || ST_ESTABLISHED !== FlowState.TCP_ESTABLISHED ||
  ST_CLOSING !== FlowState.TCP_CLOSING || ST_CLOSED !== FlowState.TCP_CLOSED || ST_OTHER !== FlowState.OTHER ||
  F_REPLICATED !== FlowFlags.REPLICATED || F_FROM_PEER !== FlowFlags.FROM_PEER || F_SEEN_REPLY !== FlowFlags.SEEN_REPLY ||
  F_NO_REPLY_KEY !== FlowFlags.NO_REPLY_KEY || F_CONFIRMED !== FlowFlags.CONFIRMED || F_SEQ_KNOWN !== FlowFlags.SEQ_KNOWN ||
  TOUCH_UNCONFIRMED !== TouchResult.UNCONFIRMED || TOUCH_CONFIRMED !== TouchResult.CONFIRMED ||
  TOUCH_CONFIRMED_NOW !== TouchResult.CONFIRMED_NOW || TOUCH_OUT_OF_WINDOW !== TouchResult.OUT_OF_WINDOW ||
  REASON_IDLE !== ExpireReason.IDLE ||
  REASON_EARLY_DROP !== ExpireReason.EARLY_DROP || REASON_TAKEOVER !== ExpireReason.TAKEOVER
) {
  throw new Error('src/flow/table.ts: hot-path constants out of sync with the exported enums');
}
const MAX_CAPACITY = 1 << 24;
const TAG_MIX = 0x9e3779b1 | 0;
const PACKETS_MAX = 0xffffffff;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export class FlowTable {
  readonly capacity: number;
  readonly slotCount: number;

  // ---- counters (plain numbers; read them, reset them if you like) ----
  inserts = 0;
  refusedFull = 0;
  /** Entries removed for idleness (sweep, lookup, insert, full policy). */
  expired = 0;
  /** Entries removed by remove(). */
  deleted = 0;
  /** Entries removed by the full policy's early drop. */
  earlyDrops = 0;
  /** Closing/closed TCP entries removed because a new flow needed their reply key. */
  takeovers = 0;
  /** Flows confirmed by a packet here (touch returned CONFIRMED_NOW). */
  confirmed = 0;
  /** Client RST/FIN of confirmed TCP flows ignored: outside the sequence window (touch). */
  outOfWindow = 0;
  hits = 0;
  misses = 0;
  /** insert() results EXISTS / REPLY_CONFLICT. */
  conflicts = 0;
  /** The ref found by the last insert() that returned EXISTS or REPLY_CONFLICT. */
  lastConflictRef = -1;

  private readonly seed: number;
  private readonly slotMask: number;
  private readonly refBits: number;
  private readonly refMask: number;
  private readonly slots: Uint32Array;
  private readonly rec: Uint32Array;
  private readonly createdA: Uint32Array;
  private readonly freeIds: Int32Array;
  private freeTop: number;
  /** One past the highest entry id ever allocated (scan and expiry stop here). */
  private highWater = 0;
  private live = 0;
  private sweepCursor = 0;
  /** Incremented on every unlink; insert re-probes when it changed under it. */
  private removals = 0;
  private readonly timeoutByState: Uint32Array;
  private readonly onExpireDefault: ExpireCallback | undefined;
  private readonly evictWindow: number;
  private readonly fullSweepBudget: number;
  private readonly earlyDrop: boolean;
  /** The index epoch of records in the current numbering: 0 or VB_EPOCH (see "Index remap"). */
  private vbEpoch = 0;
  /** beginRemap's maps while a remap runs, else null. */
  private remapVip: Int32Array | null = null;
  private remapBase: Int32Array | null = null;
  private remapBackend: Int32Array | null = null;
  private remapCursor = 0;
  /** Counts of the remap in progress, or of the last one. */
  readonly remapCounts: RemapCounts = { translated: 0, remapped: 0, cut: 0, removed: 0 };

  constructor(opts: FlowTableOptions) {
    const cap = opts.capacity;
    if (!Number.isInteger(cap) || cap < 1 || cap > MAX_CAPACITY) {
      throw new TunlbError(ErrorCodes.CAPACITY, `flow table capacity must be an integer in 1..${MAX_CAPACITY}, got ${String(cap)}`);
    }
    const slotCount = opts.slotCount ?? nextPow2(4 * cap);
    // At least one slot must stay empty whatever is inserted, or a probe for a missing key would
    // never end: slotCount > 2 * capacity (2 keys per entry).
    if (!Number.isInteger(slotCount) || slotCount <= 2 * cap || (slotCount & (slotCount - 1)) !== 0 || slotCount > 2 ** 30) {
      throw new TunlbError(ErrorCodes.CAPACITY, `flow table slotCount must be a power of two > 2 * capacity (${2 * cap}), got ${String(slotCount)}`);
    }
    this.capacity = cap;
    this.slotCount = slotCount;
    this.slotMask = slotCount - 1;
    // ref + 1 ranges over 1 .. 2*cap.
    this.refBits = 32 - Math.clz32(2 * cap);
    this.refMask = (1 << this.refBits) - 1; // refBits <= 25 (capacity <= 2^24)
    this.seed = opts.seed !== undefined ? opts.seed | 0 : randomBytes(4).readInt32LE(0); // int32: stays a small integer field
    this.slots = new Uint32Array(slotCount);
    this.rec = new Uint32Array(cap * REC);
    this.createdA = new Uint32Array(cap);
    this.freeIds = new Int32Array(cap);
    // Stack top is the last element: fill so that id 0 is popped first (dense low ids).
    for (let i = 0; i < cap; i++) this.freeIds[i] = cap - 1 - i;
    this.freeTop = cap;
    this.timeoutByState = buildTimeoutTable(opts.timeouts);
    this.onExpireDefault = opts.onExpire;
    this.evictWindow = opts.evictWindow ?? 32;
    this.fullSweepBudget = opts.fullSweepBudget ?? 64;
    this.earlyDrop = opts.earlyDrop ?? true;
  }

  /** Live entries. */
  get size(): number {
    return this.live;
  }

  /** Bytes held by the table's typed arrays. */
  get byteLength(): number {
    return this.slots.byteLength + this.rec.byteLength + this.createdA.byteLength + this.freeIds.byteLength;
  }

  // ------------------------------------------------------------------ lookup

  /**
   * Finds `keyWords` (forward or reply key). Returns `(entryId << 1) | dir` (dir 0 = forward,
   * 1 = reply) or -1 on miss. An entry past its idle timeout at `nowSec` is removed (expire
   * callback, `expired` counted) and reported as a miss. Does not touch the entry.
   */
  lookup(keyWords: Uint32Array, nowSec: number): number {
    const h = hashKeyWords(keyWords, 0, this.seed);
    const refBits = this.refBits;
    const tag = Math.imul(h, TAG_MIX) >>> refBits;
    const refMask = this.refMask;
    const mask = this.slotMask;
    const slots = this.slots;
    let i = h & mask;
    for (;;) {
      const s = slots[i]!;
      if (s === 0) {
        this.misses++;
        return -1;
      }
      if (s >>> refBits === tag) {
        const ref = (s & refMask) - 1;
        const base = (ref >>> 1) * REC;
        if (this.keyEquals(base + (ref & 1) * R_REPLY, keyWords)) {
          if (nowSec > this.rec[base + R_DEADLINE]!) {
            this.expireEntry(ref >>> 1, REASON_IDLE, this.onExpireDefault);
            this.misses++;
            return -1;
          }
          this.hits++;
          return ref;
        }
      }
      i = (i + 1) & mask;
    }
  }

  // ------------------------------------------------------------------ insert

  /**
   * Inserts a new flow, copying `fwdKey` and (unless null, DSR) `replyKey` into the table and
   * indexing both. The state starts from the protocol (key byte 36): TCP -> TCP_SYN_SEEN,
   * UDP -> UDP, ICMP/ICMPv6 -> ICMP, else OTHER; created = lastSeen = nowSec, packets = 0,
   * flags = 0 (| NO_REPLY_KEY when replyKey is null). Call `touch` with the first packet.
   * primary/backup are u8, vip/backend u16 (0xffff = none).
   *
   * Returns the entryId (>= 0), or InsertResult.FULL / EXISTS / REPLY_CONFLICT (< 0).
   * An expired entry holding either key is removed first (as by lookup). A TCP entry in
   * TCP_CLOSING / TCP_CLOSED that holds the new reply key as ITS reply key is removed too
   * (expire callback with reason TAKEOVER; counted in `takeovers`): two VIPs sharing a backend
   * give a client port's connections to each the same reply key, and the backend can only
   * accept the new connection once the old one has ended there (Linux conntrack lets a new
   * SYN replace a TIME_WAIT entry the same way). A live entry in any other state conflicts.
   */
  insert(
    fwdKey: Uint32Array,
    replyKey: Uint32Array | null,
    primary: number,
    backup: number,
    vip: number,
    backend: number,
    nowSec: number,
  ): number {
    const seed = this.seed;
    const hf = hashKeyWords(fwdKey, 0, seed);
    const hr = replyKey !== null ? hashKeyWords(replyKey, 0, seed) : 0;
    if (replyKey !== null && hr === hf && keysEqual(fwdKey, replyKey)) {
      this.conflicts++;
      this.lastConflictRef = -1;
      return InsertResult.REPLY_CONFLICT;
    }
    let fi = 0;
    let ri = 0;
    for (;;) {
      const r0 = this.removals;
      fi = this.probeForInsert(fwdKey, hf, nowSec, 0);
      if (fi < 0) {
        this.conflicts++;
        return InsertResult.EXISTS;
      }
      if (replyKey !== null) {
        ri = this.probeForInsert(replyKey, hr, nowSec, 1);
        if (ri < 0) {
          this.conflicts++;
          return InsertResult.REPLY_CONFLICT;
        }
      }
      if (this.removals !== r0) continue; // slots shifted: probe again
      if (this.freeTop === 0) {
        if (!this.makeRoom(hf, nowSec)) {
          this.refusedFull++;
          return InsertResult.FULL;
        }
        continue;
      }
      break;
    }

    const id = this.freeIds[--this.freeTop]!;
    if (id >= this.highWater) this.highWater = id + 1;
    this.live++;
    this.inserts++;
    const rec = this.rec;
    const base = id * REC;
    for (let w = 0; w < KEY_WORDS; w++) rec[base + w] = fwdKey[w]!;
    const refBits = this.refBits;
    const slots = this.slots;
    slots[fi] = (((Math.imul(hf, TAG_MIX) >>> refBits) << refBits) | (id * 2 + 1)) >>> 0;
    let flags = 0;
    if (replyKey !== null) {
      for (let w = 0; w < KEY_WORDS; w++) rec[base + R_REPLY + w] = replyKey[w]!;
      if (ri === fi) {
        // Both keys probed to the same empty slot: the reply key takes the next empty one.
        const mask = this.slotMask;
        do ri = (ri + 1) & mask;
        while (slots[ri] !== 0);
      }
      slots[ri] = (((Math.imul(hr, TAG_MIX) >>> refBits) << refBits) | (id * 2 + 2)) >>> 0;
    } else {
      for (let w = 0; w < KEY_WORDS; w++) rec[base + R_REPLY + w] = 0;
      flags = F_NO_REPLY_KEY;
    }
    const w9 = fwdKey[9]!;
    const state = initialState(LITTLE_ENDIAN ? w9 & 0xff : w9 >>> 24);
    rec[base + R_DEADLINE] = nowSec + this.timeoutByState[state]!;
    rec[base + R_PACKETS] = 0;
    rec[base + R_META] = (state | (flags << 8) | ((primary & 0xff) << 16) | ((backup & 0xff) << 24)) >>> 0;
    rec[base + R_VB] = ((vip & VB_VIP) | this.vbEpoch | ((backend & 0xffff) << 16)) >>> 0;
    this.createdA[id] = nowSec;
    return id;
  }

  /**
   * Probes for `k` (hash h). Returns the first empty slot index on its probe path (>= 0) when the
   * key is absent, or -1 when a live entry holds it (lastConflictRef set). An expired holder is
   * removed and the probe restarts.
   */
  private probeForInsert(k: Uint32Array, h: number, nowSec: number, takeover: number): number {
    const refBits = this.refBits;
    const tag = Math.imul(h, TAG_MIX) >>> refBits;
    const refMask = this.refMask;
    const mask = this.slotMask;
    const slots = this.slots;
    let i = h & mask;
    for (;;) {
      const s = slots[i]!;
      if (s === 0) return i;
      if (s >>> refBits === tag) {
        const ref = (s & refMask) - 1;
        const base = (ref >>> 1) * REC;
        if (this.keyEquals(base + (ref & 1) * R_REPLY, k)) {
          if (nowSec > this.rec[base + R_DEADLINE]!) {
            this.expireEntry(ref >>> 1, REASON_IDLE, this.onExpireDefault);
            i = h & mask;
            continue;
          }
          const st = this.rec[base + R_META]! & 0xff;
          if (takeover !== 0 && (ref & 1) !== 0 && (st === ST_CLOSING || st === ST_CLOSED)) {
            // A closing/closed TCP flow's reply key yields to a new flow (see insert()).
            this.expireEntry(ref >>> 1, REASON_TAKEOVER, this.onExpireDefault);
            i = h & mask;
            continue;
          }
          this.lastConflictRef = ref;
          return -1;
        }
      }
      i = (i + 1) & mask;
    }
  }

  /** Full-table policy steps 1-3 (see header). True when an entry id was freed. */
  private makeRoom(h: number, nowSec: number): boolean {
    const mask = this.slotMask;
    const slots = this.slots;
    const refMask = this.refMask;
    const rec = this.rec;
    const start = h & mask;
    const win = Math.min(this.evictWindow, this.slotCount);
    for (let n = 0; n < win; n++) {
      const s = slots[(start + n) & mask]!;
      if (s === 0) continue;
      const id = ((s & refMask) - 1) >>> 1;
      if (nowSec > rec[id * REC + R_DEADLINE]!) {
        this.expireEntry(id, REASON_IDLE, this.onExpireDefault);
        return true;
      }
    }
    if (this.expire(nowSec, this.fullSweepBudget) > 0) return true;
    if (this.earlyDrop) {
      for (let n = 0; n < win; n++) {
        const s = slots[(start + n) & mask]!;
        if (s === 0) continue;
        const id = ((s & refMask) - 1) >>> 1;
        if ((rec[id * REC + R_META]! & (F_CONFIRMED << 8)) === 0) {
          this.expireEntry(id, REASON_EARLY_DROP, this.onExpireDefault);
          return true;
        }
      }
    }
    return false;
  }

  // ------------------------------------------------------------------ removal

  /** Removes a live entry (both keys). No callback. Returns false if `entryId` is not live. */
  remove(entryId: number): boolean {
    if (!this.isLive(entryId)) return false;
    this.unlinkEntry(entryId);
    this.deleted++;
    return true;
  }

  /** Callback, then unlink. Counts in `expired` (IDLE), `earlyDrops` (EARLY_DROP) or `takeovers`. */
  private expireEntry(id: number, reason: number, cb: ExpireCallback | undefined): void {
    if (cb !== undefined) cb(id, reason);
    this.unlinkEntry(id);
    if (reason === REASON_IDLE) this.expired++;
    else if (reason === REASON_TAKEOVER) this.takeovers++;
    else this.earlyDrops++;
  }

  private unlinkEntry(id: number): void {
    const base = id * REC;
    const meta = this.rec[base + R_META]!;
    this.unlinkRef(id * 2);
    if ((meta & (F_NO_REPLY_KEY << 8)) === 0) this.unlinkRef(id * 2 + 1);
    this.rec[base + R_META] = 0; // state FREE
    this.freeIds[this.freeTop++] = id;
    this.live--;
  }

  /** Removes the slot holding `ref` and backward-shifts the rest of its cluster. */
  private unlinkRef(ref: number): void {
    const mask = this.slotMask;
    const slots = this.slots;
    const refMask = this.refMask;
    const rec = this.rec;
    const seed = this.seed;
    const want = ref + 1;
    let i = hashKeyWords(rec, (ref >>> 1) * REC + (ref & 1) * R_REPLY, seed) & mask;
    while ((slots[i]! & refMask) !== want) i = (i + 1) & mask;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const s = slots[j]!;
      if (s === 0) break;
      const r = (s & refMask) - 1;
      const home = hashKeyWords(rec, (r >>> 1) * REC + (r & 1) * R_REPLY, seed) & mask;
      // s may move back to i iff i lies cyclically within [home, j).
      if (((j - home) & mask) >= ((j - i) & mask)) {
        slots[i] = s;
        i = j;
      }
    }
    slots[i] = 0;
    this.removals++;
  }

  // ------------------------------------------------------------------ expiry

  /**
   * Incremental idle sweep: examines at most `budget` entry ids from the sweep cursor (wrapping at
   * the highest id ever used) and removes the expired ones, calling `onExpire` (else the table's
   * options.onExpire) before each removal. Returns how many were removed.
   */
  expire(nowSec: number, budget: number, onExpire?: ExpireCallback): number {
    const cb = onExpire ?? this.onExpireDefault;
    const hw = this.highWater;
    if (hw === 0) return 0;
    const rec = this.rec;
    let c = this.sweepCursor;
    let removed = 0;
    const n = Math.min(budget, hw);
    for (let k = 0; k < n; k++) {
      if (c >= hw) c = 0;
      const base = c * REC;
      if ((rec[base + R_META]! & 0xff) !== ST_FREE && nowSec > rec[base + R_DEADLINE]!) {
        this.expireEntry(c, REASON_IDLE, cb);
        removed++;
      }
      c++;
    }
    this.sweepCursor = c >= hw ? 0 : c;
    return removed;
  }

  /** True when `entryId` is live and idle past its timeout at `nowSec` (does not remove it). */
  isExpired(entryId: number, nowSec: number): boolean {
    const base = entryId * REC;
    return (this.rec[base + R_META]! & 0xff) !== ST_FREE && nowSec > this.rec[base + R_DEADLINE]!;
  }

  /** Idle timeout (s) that applies to `entryId` in its current state. */
  timeoutOf(entryId: number): number {
    return this.timeoutByState[this.rec[entryId * REC + R_META]! & 0xff]!;
  }

  /** Second at which the entry expires if not touched (expired when nowSec > deadline). */
  deadline(entryId: number): number {
    return this.rec[entryId * REC + R_DEADLINE]!;
  }

  // ------------------------------------------------------------------ scan

  /**
   * Visits live entries in increasing id order for bulk sync. Start with cursor 0; pass the
   * returned cursor back until it returns 0. Calls `fn(entryId)` for at most `maxEntries` live
   * entries and examines at most `maxEntries * 8 + 64` ids per call (a call may visit fewer
   * entries, even none, and still return a non-zero cursor). Guarantee: an entry live from the
   * first call to the last is visited exactly once (see header). `fn` must not mutate the table.
   */
  scan(cursor: number, maxEntries: number, fn: (entryId: number) => void): number {
    const hw = this.highWater;
    const rec = this.rec;
    let c = cursor;
    let visited = 0;
    let examined = 0;
    const maxExamined = maxEntries * 8 + 64;
    while (c < hw && visited < maxEntries && examined < maxExamined) {
      if ((rec[c * REC + R_META]! & 0xff) !== ST_FREE) {
        fn(c);
        visited++;
      }
      c++;
      examined++;
    }
    return c >= hw ? 0 : c;
  }

  // ------------------------------------------------------------------ accessors

  isLive(entryId: number): boolean {
    return entryId >= 0 && entryId < this.capacity && (this.rec[entryId * REC + R_META]! & 0xff) !== ST_FREE;
  }
  primary(entryId: number): number {
    return (this.rec[entryId * REC + R_META]! >>> 16) & 0xff;
  }
  backup(entryId: number): number {
    return this.rec[entryId * REC + R_META]! >>> 24;
  }
  vip(entryId: number): number {
    const i = entryId * REC + R_VB;
    const w = this.rec[i]!;
    return ((w & VB_EPOCH) === this.vbEpoch ? w : this.translate(i, w)) & VB_VIP;
  }
  backend(entryId: number): number {
    const i = entryId * REC + R_VB;
    const w = this.rec[i]!;
    return ((w & VB_EPOCH) === this.vbEpoch ? w : this.translate(i, w)) >>> 16;
  }
  state(entryId: number): number {
    return this.rec[entryId * REC + R_META]! & 0xff;
  }
  flags(entryId: number): number {
    return (this.rec[entryId * REC + R_META]! >>> 8) & 0xff;
  }
  created(entryId: number): number {
    return this.createdA[entryId]!;
  }
  /** Last second the entry was touched (or inserted / setLastSeen). */
  lastSeen(entryId: number): number {
    const base = entryId * REC;
    return this.rec[base + R_DEADLINE]! - this.timeoutByState[this.rec[base + R_META]! & 0xff]!;
  }
  packets(entryId: number): number {
    return this.rec[entryId * REC + R_PACKETS]!;
  }
  hasReplyKey(entryId: number): boolean {
    return (this.rec[entryId * REC + R_META]! & (F_NO_REPLY_KEY << 8)) === 0;
  }

  /** Sets the balancing decision (u8, u8, u16). */
  setDecision(entryId: number, primary: number, backup: number, backend: number): void {
    const base = entryId * REC;
    const rec = this.rec;
    rec[base + R_META] = ((rec[base + R_META]! & 0xffff) | ((primary & 0xff) << 16) | ((backup & 0xff) << 24)) >>> 0;
    const w = rec[base + R_VB]!;
    const cur = (w & VB_EPOCH) === this.vbEpoch ? w : this.translate(base + R_VB, w);
    rec[base + R_VB] = ((cur & 0xffff) | ((backend & 0xffff) << 16)) >>> 0;
  }
  /** Sets the VIP index (0 .. MAX_VIPS - 1). */
  setVip(entryId: number, vip: number): void {
    const i = entryId * REC + R_VB;
    const w = this.rec[i]!;
    const cur = (w & VB_EPOCH) === this.vbEpoch ? w : this.translate(i, w);
    this.rec[i] = ((cur & 0xffff0000) | this.vbEpoch | (vip & VB_VIP)) >>> 0;
  }

  // ------------------------------------------------------------------ index remap

  /**
   * Starts a remap (header, "Index remap"): from now on every record written before is read in
   * the new numbering. `vipMap[old vip]` is the new VIP index, or -1 (removed);
   * `backendMap[backendBase[old vip] + old backend]` the new backend index, or -1 (removed);
   * `backendBase` has one more element than `vipMap` (its last is backendMap's length). The
   * arrays are kept (not copied) until the remap ends: do not change them. Throws
   * TunlbError(USAGE) while a remap runs (finish it with remapStep first). Off the hot path.
   */
  beginRemap(vipMap: Int32Array, backendBase: Int32Array, backendMap: Int32Array): void {
    if (this.remapVip !== null) throw new TunlbError(ErrorCodes.USAGE, 'flow table: a remap is already running; finish it with remapStep()');
    if (backendBase.length !== vipMap.length + 1 || backendBase[vipMap.length] !== backendMap.length) {
      throw new TunlbError(ErrorCodes.USAGE, 'flow table: beginRemap: backendBase must have vipMap.length + 1 offsets, the last = backendMap.length');
    }
    this.remapVip = vipMap;
    this.remapBase = backendBase;
    this.remapBackend = backendMap;
    this.remapCursor = 0;
    const c = this.remapCounts;
    c.translated = 0;
    c.remapped = 0;
    c.cut = 0;
    c.removed = 0;
    this.vbEpoch ^= VB_EPOCH;
  }

  /** True from beginRemap() until the remapStep() that reached the end of the table. */
  get remapping(): boolean {
    return this.remapVip !== null;
  }

  /**
   * Translates the stale records among the next `budget` entry ids and removes the records of
   * removed VIPs (remove(): no expire callback). Returns true when the remap is over (it then
   * is: `remapping` false, the maps released) — at once when no remap runs. Off the hot path;
   * must not be called from inside a scan callback (it removes entries).
   */
  remapStep(budget: number): boolean {
    if (this.remapVip === null) return true;
    const hw = this.highWater;
    const rec = this.rec;
    const epoch = this.vbEpoch;
    let c = this.remapCursor;
    const end = Math.min(hw, c + Math.max(1, budget));
    for (; c < end; c++) {
      const base = c * REC;
      if ((rec[base + R_META]! & 0xff) === ST_FREE) continue;
      let w = rec[base + R_VB]!;
      if ((w & VB_EPOCH) !== epoch) w = this.translate(base + R_VB, w);
      if ((w & VB_VIP) === VB_VIP) {
        this.unlinkEntry(c);
        this.deleted++;
        this.remapCounts.removed++;
      }
    }
    this.remapCursor = c;
    if (c < hw) return false;
    this.remapVip = null;
    this.remapBase = null;
    this.remapBackend = null;
    return true;
  }

  /** Rewrites the stale word `w` at rec[i] in the current numbering and returns it (cold path). */
  private translate(i: number, w: number): number {
    const v = w & VB_VIP;
    const b = w >>> 16;
    const vm = this.remapVip;
    let nv = v;
    let nb = b;
    if (vm !== null) {
      const base = this.remapBase!;
      nv = v < vm.length ? vm[v]! : -1;
      if (nv < 0) {
        nv = VB_VIP;
        nb = VB_NO_BACKEND;
      } else if (b !== VB_NO_BACKEND) {
        const k = base[v]! + b;
        const m = k < base[v + 1]! ? this.remapBackend![k]! : -1;
        nb = m < 0 ? VB_NO_BACKEND : m;
      }
      const c = this.remapCounts;
      c.translated++;
      if (nv !== v || nb !== b) c.remapped++;
      if (nv !== VB_VIP && nb === VB_NO_BACKEND && b !== VB_NO_BACKEND) c.cut++;
    }
    const out = (nv | this.vbEpoch | (nb << 16)) >>> 0;
    this.rec[i] = out;
    return out;
  }
  /** Sets the protocol state (e.g. TCP_ESTABLISHED for a record learnt from a peer), keeping
   *  lastSeen (the deadline moves to lastSeen + the new state's timeout). Values outside
   *  TCP_SYN_SEEN..OTHER (including FREE) are ignored. */
  setState(entryId: number, state: number): void {
    if (state < ST_SYN_SEEN || state > ST_OTHER) return;
    const base = entryId * REC;
    const rec = this.rec;
    const meta = rec[base + R_META]!;
    const to = this.timeoutByState;
    rec[base + R_DEADLINE] = rec[base + R_DEADLINE]! - to[meta & 0xff]! + to[state]!;
    rec[base + R_META] = ((meta & 0xffffff00) | state) >>> 0;
  }
  /** Sets flag bits `set`, then clears bits `clear`. NO_REPLY_KEY is preserved. */
  updateFlags(entryId: number, set: number, clear: number): void {
    const i = entryId * REC + R_META;
    const meta = this.rec[i]!;
    const keep = (meta >>> 8) & F_NO_REPLY_KEY;
    const f = ((((meta >>> 8) | set) & ~clear & ~F_NO_REPLY_KEY) | keep) & 0xff;
    this.rec[i] = ((meta & 0xffff00ff) | (f << 8)) >>> 0;
  }
  /** Sets lastSeen without counting a packet (e.g. a refresh record from a peer). */
  setLastSeen(entryId: number, nowSec: number): void {
    const base = entryId * REC;
    this.rec[base + R_DEADLINE] = nowSec + this.timeoutByState[this.rec[base + R_META]! & 0xff]!;
  }

  /**
   * Records a packet of entry `entryId` and applies the confirmation rules and the TCP state
   * machine (docs/flow-records.md "Confirmation"). Returns a TouchResult.
   *
   * `dir`: 0 a client packet (client -> VIP), 1 a reply (backend -> client), 2 an ICMP error
   * about the flow from either side: it counts and keeps the flow alive, nothing else (no
   * evidence: a router answers a spoofed flow's replies with errors to the VIP, and anyone can
   * forge one).
   * Always: lastSeen = nowSec (deadline = nowSec + timeout of the new state), packets += 1
   * (saturating at 2^32-1), SEEN_REPLY when dir = 1.
   * `seq`, `ack`, `segLen`: the packet's TCP sequence number, acknowledgment number and the
   * sequence space it occupies (PacketInfo.tcpSeq/tcpAck/tcpSegLen). segLen -1 = no whole TCP
   * segment (a fragment, an ICMP error, a rebound record): then a TCP entry changes no state.
   *
   * Confirmation (flag CONFIRMED, once; TouchResult.CONFIRMED_NOW on the packet that does it),
   * by evidence a blind spoofer cannot give:
   *   TCP, NAT      in TCP_SYN_SEEN, a client segment (dir 0) with ACK and without SYN/RST whose
   *                 ack number acknowledges the server's next sequence number as this entry
   *                 last saw it in a reply (the SYN-ACK: the server's ISN + 1), or lies at most
   *                 ACK_BEHIND bytes before it (a flow picked up mid-stream: the client acks
   *                 data it received). The reply's sequence is kept in the record's sequence
   *                 word (flag SEQ_KNOWN) until then.
   *   TCP, DSR      (no reply key: replies bypass the balancer, nothing to check) the first
   *                 client ACK without SYN/RST in TCP_SYN_SEEN.
   *   other, NAT    a client packet after a reply was seen (both directions).
   *   other, DSR    the flow's second client packet here.
   * Records learnt from peers are confirmed by their installer (src/cluster/replicator.ts).
   *
   * TCP state machine (TcpFlags bits of `tcpFlags`; only with a whole segment):
   *   unconfirmed, client   SYN without ACK: TCP_SYN_SEEN from CLOSING/CLOSED (reopen);
   *                         the confirming ACK: TCP_ESTABLISHED (TCP_CLOSING with FIN);
   *                         RST, FIN: ignored (unverifiable; the entry stays evictable and
   *                         ends by its SYN timeout)
   *   reply (server) side   RST -> TCP_CLOSED; FIN -> TCP_CLOSING (unless CLOSED); SYN without
   *                         ACK -> TCP_SYN_SEEN unless ESTABLISHED; SYN+ACK, ACK: no change.
   *                         Replies are not sequence-checked: they come from the backends'
   *                         network, which a client cannot send into as a backend.
   *   confirmed, client     the segment is checked against the client's next sequence number
   *                         (the record's sequence word: the highest seq + segLen seen, moved
   *                         only by segments starting 0..SEQ_AHEAD bytes past it). RST/FIN
   *                         starting outside [-SEQ_BEHIND, +SEQ_AHEAD] of it, or arriving
   *                         before this entry saw any client segment (a learnt record), are
   *                         ignored: TouchResult.OUT_OF_WINDOW, counted in `outOfWindow`. In
   *                         window: RST -> TCP_CLOSED, FIN -> TCP_CLOSING (unless CLOSED), ACK
   *                         -> TCP_ESTABLISHED from SYN_SEEN (a learnt record), SYN without ACK
   *                         on CLOSING/CLOSED -> TCP_SYN_SEEN and no longer CONFIRMED (a new
   *                         connection reuses the 5-tuple: it must confirm again); a SYN on
   *                         ESTABLISHED is ignored (a stray SYN must not shorten a live flow).
   * `tcpFlags`, `seq`, `ack` are ignored for non-TCP entries.
   */
  touch(entryId: number, nowSec: number, tcpFlags: number, dir: number, seq = 0, ack = 0, segLen = -1): number {
    const base = entryId * REC;
    const rec = this.rec;
    const p = rec[base + R_PACKETS]!;
    if (p !== PACKETS_MAX) rec[base + R_PACKETS] = p + 1;
    const meta = rec[base + R_META]!;
    // The common case, kept small so that V8 inlines it into the forwarder: a packet without
    // SYN/FIN/RST of a confirmed flow that stays as it is (an established TCP flow whose client
    // segments have a reference, or a datagram flow). Everything else: #touchSlow.
    if ((meta & (F_CONFIRMED << 8)) !== 0 && (tcpFlags & (TCP_SYN | TCP_FIN | TCP_RST)) === 0) {
      const st = meta & 0xff;
      if (st > ST_CLOSED) {
        if (dir === 1 && (meta & (F_SEEN_REPLY << 8)) === 0) rec[base + R_META] = (meta | (F_SEEN_REPLY << 8)) >>> 0;
        rec[base + R_DEADLINE] = nowSec + this.timeoutByState[st]!;
        return TOUCH_CONFIRMED;
      }
      if (st === ST_ESTABLISHED) {
        if (dir !== 0) {
          if (dir === 1 && (meta & (F_SEEN_REPLY << 8)) === 0) rec[base + R_META] = (meta | (F_SEEN_REPLY << 8)) >>> 0;
        } else if (segLen >= 0) {
          if ((meta & (F_SEQ_KNOWN << 8)) === 0) return this.#touchSlow(base, meta, p, nowSec, tcpFlags, dir, seq, ack, segLen);
          const cur = rec[base + R_SEQ]!;
          const d = (seq - cur) | 0;
          if (d >= 0 && d <= SEQ_AHEAD) {
            const e = (seq + segLen) >>> 0;
            if (((e - cur) | 0) > 0) rec[base + R_SEQ] = e;
          }
        }
        rec[base + R_DEADLINE] = nowSec + this.timeoutByState[ST_ESTABLISHED]!;
        return TOUCH_CONFIRMED;
      }
    }
    return this.#touchSlow(base, meta, p, nowSec, tcpFlags, dir, seq, ack, segLen);
  }

  /** touch() for every case its fast path does not take (packets already counted). */
  #touchSlow(base: number, meta: number, p: number, nowSec: number, tcpFlags: number, dir: number, seq: number, ack: number, segLen: number): number {
    const rec = this.rec;
    const st = meta & 0xff;
    if (dir === DIR_ICMP_ERROR) {
      // An ICMP error about the flow: it keeps the flow alive, and is no evidence of anything
      // (a router answers a spoofed flow's replies with errors to the VIP; anyone can forge one).
      rec[base + R_DEADLINE] = nowSec + this.timeoutByState[st]!;
      return (meta & (F_CONFIRMED << 8)) !== 0 ? TOUCH_CONFIRMED : TOUCH_UNCONFIRMED;
    }
    let f = (meta >>> 8) & 0xff;
    let ns = st;
    let res = TOUCH_UNCONFIRMED;
    if (st > ST_CLOSED) {
      // UDP, ICMP, other.
      if ((f & F_CONFIRMED) !== 0) {
        res = TOUCH_CONFIRMED;
      } else if (dir === 0 && ((f & F_SEEN_REPLY) !== 0 || ((f & F_NO_REPLY_KEY) !== 0 && p !== 0))) {
        f |= F_CONFIRMED;
        this.confirmed++;
        res = TOUCH_CONFIRMED_NOW;
      }
    } else if (st !== ST_FREE && segLen >= 0) {
      if ((f & F_CONFIRMED) !== 0) {
        res = TOUCH_CONFIRMED;
        let apply = true;
        if (dir === 0) {
          const cur = rec[base + R_SEQ]!;
          const d = (seq - cur) | 0;
          if ((f & F_SEQ_KNOWN) === 0) {
            // The first client segment this entry sees (a record learnt from a peer): the
            // reference, unless it is a RST/FIN, which has nothing to be checked against.
            if ((tcpFlags & (TCP_RST | TCP_FIN)) !== 0) apply = false;
            else {
              rec[base + R_SEQ] = (seq + segLen) >>> 0;
              f |= F_SEQ_KNOWN;
            }
          } else {
            if (d >= 0 && d <= SEQ_AHEAD) {
              const e = (seq + segLen) >>> 0;
              if (((e - cur) | 0) > 0) rec[base + R_SEQ] = e;
            }
            if ((tcpFlags & (TCP_RST | TCP_FIN)) !== 0 && (d < -SEQ_BEHIND || d > SEQ_AHEAD)) apply = false;
          }
          if (!apply) {
            this.outOfWindow++;
            res = TOUCH_OUT_OF_WINDOW;
          }
        }
        if (apply) {
          if ((tcpFlags & TCP_RST) !== 0) ns = ST_CLOSED;
          else if ((tcpFlags & TCP_FIN) !== 0) {
            if (st !== ST_CLOSED) ns = ST_CLOSING;
          } else if ((tcpFlags & TCP_SYN) !== 0) {
            if ((tcpFlags & TCP_ACK) === 0 && st !== ST_ESTABLISHED) {
              ns = ST_SYN_SEEN;
              if (dir === 0 && st !== ST_SYN_SEEN) {
                // A new connection on this 5-tuple (reopen): it confirms on its own handshake.
                f &= ~(F_CONFIRMED | F_SEQ_KNOWN);
                res = TOUCH_UNCONFIRMED;
              }
            }
          } else if ((tcpFlags & TCP_ACK) !== 0 && st === ST_SYN_SEEN) ns = ST_ESTABLISHED;
        }
      } else if (dir !== 0) {
        // Unconfirmed, a reply: remember the server's next sequence number (SYN-ACK: ISN + 1).
        rec[base + R_SEQ] = (seq + segLen) >>> 0;
        f |= F_SEQ_KNOWN;
        if ((tcpFlags & TCP_RST) !== 0) ns = ST_CLOSED;
        else if ((tcpFlags & TCP_FIN) !== 0) {
          if (st !== ST_CLOSED) ns = ST_CLOSING;
        } else if ((tcpFlags & (TCP_SYN | TCP_ACK)) === TCP_SYN && st !== ST_ESTABLISHED) ns = ST_SYN_SEEN;
      } else if ((tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_ACK) {
        // Unconfirmed, a client ACK: does it acknowledge what the server sent?
        if (
          st === ST_SYN_SEEN &&
          ((f & F_NO_REPLY_KEY) !== 0 || ((f & F_SEQ_KNOWN) !== 0 && ((rec[base + R_SEQ]! - ack) >>> 0) <= ACK_BEHIND))
        ) {
          f |= F_CONFIRMED | F_SEQ_KNOWN;
          rec[base + R_SEQ] = (seq + segLen) >>> 0;
          ns = (tcpFlags & TCP_FIN) !== 0 ? ST_CLOSING : ST_ESTABLISHED;
          this.confirmed++;
          res = TOUCH_CONFIRMED_NOW;
        }
      } else if ((tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN && st !== ST_SYN_SEEN) {
        ns = ST_SYN_SEEN; // a new connection after a server's RST/FIN
      }
    } else if ((f & F_CONFIRMED) !== 0) {
      res = TOUCH_CONFIRMED;
    }
    if (dir === 1) f |= F_SEEN_REPLY;
    rec[base + R_META] = ((meta & 0xffff0000) | (f << 8) | ns) >>> 0;
    rec[base + R_DEADLINE] = nowSec + this.timeoutByState[ns]!;
    return res;
  }

  /** True when the entry is confirmed (flag CONFIRMED; see touch). */
  isConfirmed(entryId: number): boolean {
    return ((this.rec[entryId * REC + R_META]! >>> 8) & F_CONFIRMED) !== 0;
  }

  /**
   * Copies the entry's forward (dir 0) or reply (dir 1) key into `out[outOff .. outOff+9]`
   * (caller-owned). Returns false (and copies nothing) when dir = 1 and the entry has no reply
   * key (DSR), or the entry is not live.
   */
  copyKey(entryId: number, dir: number, out: Uint32Array, outOff = 0): boolean {
    if (!this.isLive(entryId)) return false;
    if (dir !== 0 && !this.hasReplyKey(entryId)) return false;
    const o = entryId * REC + (dir !== 0 ? R_REPLY : 0);
    const rec = this.rec;
    for (let w = 0; w < KEY_WORDS; w++) out[outOff + w] = rec[o + w]!;
    return true;
  }

  private keyEquals(off: number, k: Uint32Array): boolean {
    const a = this.rec;
    return (
      a[off] === k[0] && a[off + 1] === k[1] && a[off + 2] === k[2] && a[off + 3] === k[3] &&
      a[off + 4] === k[4] && a[off + 5] === k[5] && a[off + 6] === k[6] && a[off + 7] === k[7] &&
      a[off + 8] === k[8] && a[off + 9] === k[9]
    );
  }
}

function keysEqual(a: Uint32Array, b: Uint32Array): boolean {
  for (let w = 0; w < KEY_WORDS; w++) if (a[w] !== b[w]) return false;
  return true;
}
