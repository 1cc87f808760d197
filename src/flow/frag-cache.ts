/**
 * Fragment-id cache: which flow the later fragments of one IP datagram belong to, learned from
 * its first fragment (the only one that carries the ports).
 *
 * Why: fragments are keyed on (src, dst, protocol) with ports 0 (docs/fragments.md),
 * while a flow created by an unfragmented packet is keyed on the 5-tuple. When a backend
 * answers such a flow with a datagram larger than the path MTU (a DNS answer with EDNS, any
 * UDP service), its fragments match neither key. The forwarder finds the first fragment's
 * flow by its full 5-tuple (ports from the L4 header) and records it here under
 *
 *   (source, destination, protocol, version, fragment id)   (RFC 791 §3.2 / RFC 8200 §4.5:
 *                                                            the id is unique per src, dst, proto)
 *
 * so the following fragments of the same datagram find the flow without ports.
 *
 * Contract: direct-mapped, `slots` entries (a power of two), typed arrays only: insert and
 * lookup are allocation-free and never throw. A colliding insert replaces the older entry (a
 * later fragment then misses: dropped as no_flow, as before this cache). An entry answers for
 * `ttlSec` seconds (the reassembly timeout: Linux net.ipv4.ipfrag_time is 30 s) and only while
 * the flow entry it names was created at the second recorded with it (the flow table reuses
 * entry ids; the caller passes table.created(id)). Fragments that arrive before their first
 * fragment (reordering) miss.
 */
import { KEY_WORDS } from '../packet/flow-key';
import { hashKeyWords } from './hash';

/** Words of one cache key: key words 0..7 (addresses), 8 = fragment id, 9 = proto/version word. */
const W = KEY_WORDS;
const PORT_WORD = 8;

/** What the cache asks of the flow table (src/flow/table.ts). */
export interface FragCacheTable {
  isLive(id: number): boolean;
  created(id: number): number;
  isExpired(id: number, nowSec: number): boolean;
}

export interface FragCacheOptions {
  /** Entries, rounded up to a power of two (default 4096). */
  slots?: number;
  /** Seconds an entry answers (default 30). */
  ttlSec?: number;
  /** Hash seed (default random). */
  seed?: number;
}

export class FragCache {
  readonly slots: number;
  readonly ttlSec: number;
  readonly #mask: number;
  readonly #seed: number;
  readonly #keys: Uint32Array;
  /** Flow entry id + 1 (0 = empty). */
  readonly #ids: Int32Array;
  /** table.created(id) at insert: guards against a reused entry id. */
  readonly #created: Uint32Array;
  /** Last second the entry answers. */
  readonly #until: Uint32Array;
  /** The key being looked up / inserted (the flow key with the fragment id in the port word). */
  readonly #scratch = new Uint32Array(W);
  /** Counters (read by stats). */
  inserts = 0;
  hits = 0;
  misses = 0;

  constructor(opts: FragCacheOptions = {}) {
    let n = 16;
    const want = Math.max(16, Math.min(1 << 20, opts.slots ?? 4096));
    while (n < want) n <<= 1;
    this.slots = n;
    this.#mask = n - 1;
    this.ttlSec = opts.ttlSec ?? 30;
    this.#seed = (opts.seed ?? (Math.random() * 0x100000000) >>> 0) >>> 0;
    this.#keys = new Uint32Array(n * W);
    this.#ids = new Int32Array(n);
    this.#created = new Uint32Array(n);
    this.#until = new Uint32Array(n);
  }

  #slot(keyWords: Uint32Array, fragId: number): number {
    const s = this.#scratch;
    for (let i = 0; i < W; i++) s[i] = keyWords[i]!;
    s[PORT_WORD] = fragId >>> 0;
    return hashKeyWords(s, 0, this.#seed) & this.#mask;
  }

  /**
   * Records that fragment `fragId` of the datagram keyed `keyWords` (a fragment's key: ports
   * 0; its port word is ignored) belongs to flow entry `flowId`, created at `createdSec`.
   */
  insert(keyWords: Uint32Array, fragId: number, flowId: number, createdSec: number, nowSec: number): void {
    const slot = this.#slot(keyWords, fragId);
    const base = slot * W;
    const s = this.#scratch;
    for (let i = 0; i < W; i++) this.#keys[base + i] = s[i]!;
    this.#ids[slot] = flowId + 1;
    this.#created[slot] = createdSec >>> 0;
    this.#until[slot] = (nowSec + this.ttlSec) >>> 0;
    this.inserts++;
  }

  /**
   * The flow entry id recorded for this fragment's datagram, or -1. The entry must still be
   * live, unexpired and the same flow (created at the recorded second) in `table`.
   */
  lookup(keyWords: Uint32Array, fragId: number, nowSec: number, table: FragCacheTable): number {
    const slot = this.#slot(keyWords, fragId);
    const id = this.#ids[slot]! - 1;
    if (id < 0 || nowSec > this.#until[slot]!) {
      this.misses++;
      return -1;
    }
    const base = slot * W;
    const s = this.#scratch;
    for (let i = 0; i < W; i++) {
      if (this.#keys[base + i] !== s[i]) {
        this.misses++;
        return -1;
      }
    }
    if (!table.isLive(id) || table.created(id) !== this.#created[slot] || table.isExpired(id, nowSec)) {
      this.#ids[slot] = 0;
      this.misses++;
      return -1;
    }
    this.hits++;
    return id;
  }

  /** Forgets everything (e.g. when the flow table is replaced). */
  clear(): void {
    this.#ids.fill(0);
  }
}
