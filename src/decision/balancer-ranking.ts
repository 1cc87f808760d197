/**
 * Balancer ranking table (docs/architecture.md "The six claims, in code", claims 1-2): for each of ROWS = 65536 rows, the full
 * rendezvous ranking of the cluster's balancers, best first. A new flow's primary is the
 * first *live* balancer of row `flowHash & 0xffff`, its backup the second (`pickLive`).
 *
 * GLB Director style: the table is built whole from the member list, validated, and then
 * swapped whole by its user; it is never edited in place. `version` identifies it (e.g. the
 * config generation) so records and logs can say which table made a decision.
 *
 * Scores (src/decision/rendezvous.ts): score32(rowSeed[r], memberSeed(id)), highest first,
 * ties to the id that sorts first. Scores depend only on the hash key and the id strings,
 * so the ranking *of ids* in a row is the same whatever order the ids are listed in, on
 * every balancer. The table stores member *indexes relative to the given list* (the
 * position numbering of docs/contracts.md), so two balancers with differently ordered
 * lists hold different bytes but the same ids.
 *
 * Rendezvous property used by failover: deleting a member from the list deletes it from
 * every row's ranking and leaves the relative order of the others unchanged. So "first live
 * in rank" over the full table equals the ranking a table built without the dead members
 * would give, and membership changes only move the rows a changed member held.
 *
 * Memory: ROWS x width bytes (width = member count <= 32): at most 2 MiB.
 */
import { ErrorCodes, TunlbError } from '../errors';
import { idOrder, memberMix, memberSeed, mixWith as mixWithImport, ROWS as ROWS_IMPORT, rowSeeds } from './rendezvous';
import { finish, STEP_EVALS, type BuildSteps } from './build-steps';

// Module-local bindings of what the build loops use: under tsx/esbuild's CommonJS output an
// imported binding is a getter call on every access, which showed up as ~30% of a rebuild.
const ROWS = ROWS_IMPORT;
const mixWith = mixWithImport;

/** Most balancers in a cluster (indexes must fit the u8 row cells and a 32-bit liveness mask). */
export const MAX_BALANCERS = 32;

export class BalancerRanking {
  /** Table version given by the builder (monotonic per cluster config, by convention). */
  readonly version: number;
  /** The member ids, in the given order; member index i = position in this list. */
  readonly ids: readonly string[];
  /** Members per row (= ids.length). */
  readonly width: number;
  readonly #rank: Uint8Array; // ROWS * width, row r at [r*width, (r+1)*width), best first

  /** @internal use `buildBalancerRanking`. */
  constructor(version: number, ids: readonly string[], rank: Uint8Array) {
    this.version = version;
    this.ids = ids;
    this.width = ids.length;
    this.#rank = rank;
  }

  /** Member index at rank `i` (0 = highest score) of `row`. Caller keeps i < width. */
  rankAt(row: number, i: number): number {
    return this.#rank[(row & 0xffff) * this.width + i]!;
  }

  /**
   * Primary and backup of a new flow in `row`: the first two members of the row's ranking
   * whose `live[index]` is nonzero. Writes `out[0]` = primary, `out[1]` = backup (-1 where
   * there is none) and returns how many were found (0, 1 or 2). O(width), no allocation.
   */
  pickLive(row: number, live: Uint8Array, out: Int32Array): number {
    const w = this.width;
    const rank = this.#rank;
    let p = (row & 0xffff) * w;
    const end = p + w;
    out[0] = -1;
    out[1] = -1;
    let found = 0;
    for (; p < end; p++) {
      const m = rank[p]!;
      if (live[m] !== 0) {
        out[found] = m;
        if (++found === 2) break;
      }
    }
    return found;
  }

  /**
   * The next live balancer in `row`'s ranking that is neither `skipA` nor `skipB` (e.g. the
   * flow's recorded primary and backup, both dead): the holder that serves a flow whose
   * primary and backup are gone (docs/failure-model.md "Next in rank"). -1 when there is none. Pass -1
   * for an unused skip. O(width), no allocation.
   */
  nextLiveHolder(row: number, live: Uint8Array, skipA: number, skipB: number): number {
    const w = this.width;
    const rank = this.#rank;
    for (let p = (row & 0xffff) * w, end = p + w; p < end; p++) {
      const m = rank[p]!;
      if (live[m] !== 0 && m !== skipA && m !== skipB) return m;
    }
    return -1;
  }

  /**
   * The first member of `row`'s ranking other than `skip`, live or not: the backup of a flow
   * decided while no other balancer was live (every balancer computes the same one). `skip`
   * itself when the cluster has one member. O(width), no allocation.
   */
  nextInRank(row: number, skip: number): number {
    const w = this.width;
    const base = (row & 0xffff) * w;
    for (let i = 0; i < w; i++) {
      const m = this.#rank[base + i]!;
      if (m !== skip) return m;
    }
    return skip;
  }

  /** Rank position (0 = best) of member `index` in `row`, -1 if not a member. O(width). */
  rankOf(row: number, index: number): number {
    const w = this.width;
    const base = (row & 0xffff) * w;
    for (let i = 0; i < w; i++) if (this.#rank[base + i] === index) return i;
    return -1;
  }

  /** The ids of `row`'s ranking, best first (off the hot path: allocates). */
  rankingIds(row: number): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.width; i++) out.push(this.ids[this.rankAt(row, i)]!);
    return out;
  }
}

function fail(message: string, details?: Record<string, unknown>): never {
  throw new TunlbError(ErrorCodes.TABLE_BUILD, message, details);
}

/**
 * Build and validate the ranking table of `ids` (1..32 distinct, non-empty strings; index i
 * = position in `ids`). Off the hot path: about ROWS x n score evaluations plus a small
 * insertion sort per row. Throws TunlbError(TUNLB_TABLE_BUILD) on invalid input.
 */
export function buildBalancerRanking(ids: readonly string[], hashKey: Uint32Array, version: number): BalancerRanking {
  return finish(balancerRankingSteps(ids, hashKey, version));
}

/**
 * buildBalancerRanking as a resumable build (src/decision/build-steps.ts): yields about every
 * STEP_EVALS score evaluations. Invalid input throws at the first step.
 */
export function* balancerRankingSteps(ids: readonly string[], hashKey: Uint32Array, version: number): BuildSteps<BalancerRanking> {
  const n = ids.length;
  if (n < 1 || n > MAX_BALANCERS) fail(`balancer ranking needs 1..${MAX_BALANCERS} balancers, got ${n}`);
  if (!(hashKey instanceof Uint32Array) || hashKey.length !== 2) fail('hash key must be a Uint32Array(2)');
  if (!Number.isSafeInteger(version) || version < 0) fail(`table version must be a non-negative integer, got ${version}`);
  const seen = new Set<string>();
  for (const id of ids) {
    if (typeof id !== 'string' || id.length === 0) fail('balancer id must be a non-empty string');
    if (seen.has(id)) fail(`duplicate balancer id ${JSON.stringify(id)}`, { id });
    seen.add(id);
  }
  const idsCopy = Object.freeze(ids.slice());
  const seeds = rowSeeds(hashKey);
  const mixed = new Int32Array(n);
  for (let j = 0; j < n; j++) mixed[j] = memberMix(memberSeed(hashKey, idsCopy[j]!));
  const order = idOrder(idsCopy);

  const rank = new Uint8Array(ROWS * n);
  const score = new Float64Array(n); // per row: score32 * 64 + (63 - idOrder) => one total order
  const tmp = new Uint8Array(n);
  // Rows between yields: about STEP_EVALS evaluations (the sort costs about as much again).
  const step = Math.max(1, Math.floor(STEP_EVALS / n));
  for (let r = 0; r < ROWS; r++) {
    if (r % step === step - 1) yield;
    const rs = seeds[r]!;
    // Composite sort key: higher score first; ties to the lower id order. Exact in a double
    // (2^32 * 64 < 2^53).
    for (let j = 0; j < n; j++) score[j] = mixWith(rs, mixed[j]!) * 64 + (63 - order[j]!);
    // insertion sort of member indexes by descending key (n <= 32)
    for (let j = 0; j < n; j++) {
      const kj = score[j]!;
      let i = j - 1;
      while (i >= 0 && score[tmp[i]!]! < kj) {
        tmp[i + 1] = tmp[i]!;
        i--;
      }
      tmp[i + 1] = j;
    }
    rank.set(tmp, r * n);
  }
  yield;
  validateRanking(rank, n);
  return new BalancerRanking(version, idsCopy, rank);
}

/** Every row must be a permutation of 0..n-1 (defends the swap against a corrupt build). */
function validateRanking(rank: Uint8Array, n: number): void {
  if (rank.length !== ROWS * n) fail('balancer ranking has the wrong size');
  const stamp = new Int32Array(n).fill(-1);
  for (let r = 0; r < ROWS; r++) {
    for (let i = 0; i < n; i++) {
      const m = rank[r * n + i]!;
      if (m >= n || stamp[m] === r) fail(`balancer ranking row ${r} is not a permutation`, { row: r });
      stamp[m] = r;
    }
  }
}
