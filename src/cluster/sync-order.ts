/**
 * The cluster-wide sync order (docs/contracts.md "Sync order") and a responder's snapshot of
 * its flow table in that order, for the bulk sync stream (src/cluster/sync-stream.ts).
 *
 * ## Sync order
 * A flow's sync row is a 16-bit function of its 40-byte key alone, the same on every balancer
 * and every version: `syncRow(key) = MurmurHash3_x86_32(key, seed SYNC_ROW_SEED) >>> 16`, the key
 * read as ten little-endian u32 words (byte order defined, so big-endian hosts agree). A sync
 * answer sends flows by increasing row; position p of the order (0..65536) means "every flow
 * whose row is below p". Because the order does not depend on the responder's table layout, a
 * requester that applied everything below p resumes at p on ANY peer (SyncRequest.from_cursor).
 * The row is unkeyed: a client that picks keys to crowd one row only makes that row's resume
 * step longer (its flows are re-sent on a resume), nothing else.
 *
 * ## Snapshot (responder)
 * A SyncSnapshot is the list of the table's live entry ids when it was built, sorted by row (a
 * counting sort: 65,536 buckets), with `rowStart[r]` = index of the first id of row r
 * (rowStart[65536] = count). Built incrementally by SyncSnapshotBuilder.step(budgetMs) so no
 * event-loop turn does more than about budgetMs of work; the build reads only the keys (a
 * sequential walk: ~0.1 µs per flow), and whether an entry belongs in a sync
 * (confirmed, not expired) is decided when its record is sent, when it may also
 * have ended or its id been reused by a newer flow (replication covers flows created after the
 * snapshot). Entries live for the whole sync are in it exactly once (FlowTable.scan).
 * Memory: 4 bytes per flow kept (ids) + 256 KiB (rowStart); during the build 6 more bytes per
 * flow (ids and rows as collected). 1M flows: about 4 MB kept, 10 MB at the peak.
 */
import type { FlowTable } from '../flow';
import { FLOW_KEY_LEN } from '../protocol';

/** Number of sync rows; also the cursor meaning "done" (nothing left). */
export const SYNC_ROWS = 65536;
/** Seed of the sync-row hash (fixed forever: changing it breaks resume between versions). */
export const SYNC_ROW_SEED = 0x73796e63; // "sync"

/** The sync row (0..65535) of the 40-byte flow key at key[off..off+40). */
export function syncRow(key: Uint8Array, off = 0): number {
  let h = SYNC_ROW_SEED;
  for (let i = 0; i < FLOW_KEY_LEN; i += 4) {
    let k = key[off + i]! | (key[off + i + 1]! << 8) | (key[off + i + 2]! << 16) | (key[off + i + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= FLOW_KEY_LEN;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 16;
}

/** A responder's flow table in sync order (see the module header). Immutable once built. */
export class SyncSnapshot {
  constructor(
    /** Entry ids by increasing sync row. */
    readonly ids: Int32Array,
    /** rowStart[r]: index in `ids` of the first id of row r; rowStart[SYNC_ROWS] = count. */
    readonly rowStart: Int32Array,
    /** ms (performance.now) when the build finished. */
    readonly builtAtMs: number,
    /** ms the build took (wall clock, all steps). */
    readonly buildMs: number,
  ) {}

  get count(): number {
    return this.ids.length;
  }

  /** Index in `ids` where an answer from cursor `from` (0..SYNC_ROWS) starts. */
  start(from: number): number {
    return this.rowStart[Math.min(SYNC_ROWS, Math.max(0, from))]!;
  }
}

const SCAN_BATCH = 256;
const PLACE_BATCH = 16384;

/** Builds a SyncSnapshot of `table` in steps (see the module header). */
export class SyncSnapshotBuilder {
  #ids: Int32Array;
  #rows: Uint16Array;
  #n = 0;
  readonly #counts = new Int32Array(SYNC_ROWS + 1);
  #cursor = 0;
  #phase: 'scan' | 'place' | 'done' = 'scan';
  #placed = 0;
  #out: Int32Array | null = null;
  #next: Int32Array | null = null;
  #result: SyncSnapshot | null = null;
  readonly #t0 = performance.now();
  readonly #keyWords = new Uint32Array(FLOW_KEY_LEN / 4);
  readonly #key = new Uint8Array(this.#keyWords.buffer);
  readonly #visit = (id: number): void => {
    // host-order words, read back as bytes: the key's own byte order (docs/contracts.md)
    if (!this.table.copyKey(id, 0, this.#keyWords, 0)) return;
    if (this.#n === this.#ids.length) this.#grow();
    const r = syncRow(this.#key, 0);
    this.#ids[this.#n] = id;
    this.#rows[this.#n++] = r;
    this.#counts[r]!++;
  };

  constructor(private readonly table: FlowTable) {
    const cap = Math.max(1024, Math.ceil(table.size * 1.1));
    this.#ids = new Int32Array(cap);
    this.#rows = new Uint16Array(cap);
  }

  /** The snapshot once step() returned true, else null. */
  get result(): SyncSnapshot | null {
    return this.#result;
  }

  /** Flows collected so far (the snapshot's count once done). */
  get collected(): number {
    return this.#n;
  }

  /** Works for about `budgetMs` (at least one batch); true when the snapshot is complete. */
  step(budgetMs: number): boolean {
    const t0 = performance.now();
    do {
      if (this.#phase === 'scan') {
        this.#cursor = this.table.scan(this.#cursor, SCAN_BATCH, this.#visit);
        if (this.#cursor === 0) this.#startPlace();
      } else if (this.#phase === 'place') {
        this.#placeBatch();
      } else {
        return true;
      }
    } while (performance.now() - t0 < budgetMs);
    return this.#result !== null;
  }

  #grow(): void {
    const ids = new Int32Array(this.#ids.length * 2);
    ids.set(this.#ids);
    const rows = new Uint16Array(this.#rows.length * 2);
    rows.set(this.#rows);
    this.#ids = ids;
    this.#rows = rows;
  }

  #startPlace(): void {
    // counts -> rowStart (exclusive prefix sums), in place; #next = the fill position per row.
    const c = this.#counts;
    let sum = 0;
    for (let r = 0; r <= SYNC_ROWS; r++) {
      const k = c[r]!;
      c[r] = sum;
      sum += k;
    }
    this.#next = c.slice(0, SYNC_ROWS);
    this.#out = new Int32Array(this.#n);
    this.#phase = 'place';
  }

  #placeBatch(): void {
    const out = this.#out!;
    const next = this.#next!;
    const ids = this.#ids;
    const rows = this.#rows;
    const end = Math.min(this.#n, this.#placed + PLACE_BATCH);
    for (let i = this.#placed; i < end; i++) out[next[rows[i]!]!++] = ids[i]!;
    this.#placed = end;
    if (end === this.#n) {
      const now = performance.now();
      this.#result = new SyncSnapshot(out, this.#counts, now, now - this.#t0);
      this.#phase = 'done';
      this.#ids = new Int32Array(0);
      this.#rows = new Uint16Array(0);
      this.#next = null;
    }
  }
}
