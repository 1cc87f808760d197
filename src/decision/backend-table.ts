/**
 * Backend table of one VIP pool: ROWS = 65536 rows, row -> backend index (u16; 0xffff =
 * no eligible backend). A new flow's backend is `table.backendAt(flowHash >>> 16)`: one
 * array read, whatever the pool size (docs/contracts.md).
 *
 * Choice per row: weighted rendezvous hashing over the *eligible* backends (eligible, weight
 * > 0), logarithmic method (Schindelhauer & Schomaker, "Weighted distributed hash tables",
 * SPAA 2005; the same as Resch's "weighted rendezvous"):
 *
 *   h     = score32(rowSeed[row], memberSeed(id))          (src/decision/rendezvous.ts)
 *   u     = (h + 0.5) / 2^32                               in (0, 1), never 0 or 1
 *   score = weight / -ln(u)                                highest wins
 *
 * so backend j wins a row with probability weight_j / sum(weights). (The open interval for
 * u avoids -w/ln(1) = -Infinity; it changes no probability that matters.) Ties of score go
 * to the id that sorts first (JS string order). Identity for hashing is the backend's
 * stable id string (e.g. "10.99.3.21:80"), never its list position, so the row -> *id* map
 * is the same on every balancer whatever order the pool lists its backends in; the table
 * stores the index of that id in the given list (docs/contracts.md numbering).
 *
 * Within backends of one weight the score is strictly increasing in h (u has 2^-32 steps,
 * far above double rounding of ln and of the division), so the full build ranks each
 * weight class by the integer h and takes one log per class per row: equal weights cost no
 * log at all except one per row for the stored winning score.
 *
 * Immutable, versioned artefact (GLB Director style): built whole by `buildBackendTable`,
 * validated, swapped whole by its user. Rebuild cost: a full build is ROWS x eligible score
 * evaluations (65M for 1,000 backends). Given the `previous` table (same hash key), a small
 * change is incremental, using each row's stored winning score:
 *  - a backend whose effective weight went up (added, re-eligible, up-weighted) can only take
 *    rows: one score per row, compared with the stored winner;
 *  - a backend whose effective weight went down (removed, ineligible, draining, down-weighted)
 *    can only lose rows: only the rows it was winning are re-ranked over all eligible backends;
 *  - everyone else's score is unchanged.
 * The result is exactly a full build's (tested with fast-check over random change sequences);
 * when the estimated incremental work exceeds half a full build, it does a full build.
 */
import { ErrorCodes, TunlbError } from '../errors';
import { idOrder, memberMix, memberSeed, mixWith as mixWithImport, ROWS as ROWS_IMPORT, rowSeeds } from './rendezvous';
import { finish, STEP_EVALS, type BuildSteps } from './build-steps';

// Module-local bindings of what the build loops use: under tsx/esbuild's CommonJS output an
// imported binding is a getter call on every access, which showed up as ~30% of a rebuild.
const ROWS = ROWS_IMPORT;
const mixWith = mixWithImport;

/** Table cell meaning "no eligible backend" (docs/contracts.md). */
export const NO_BACKEND = 0xffff;
/** Most backends per pool: indexes 0..65534 (0xffff is "none"). */
export const MAX_BACKENDS = 0xffff;

/** One backend of a pool as the table builder sees it. */
export interface BackendSpec {
  /** Stable identity for hashing, e.g. "10.99.3.21:80". Unique within the pool. */
  readonly id: string;
  /** Relative weight, finite and >= 0; 0 takes no new flows (like draining). */
  readonly weight: number;
  /** Healthy and not draining. Ineligible backends get no rows. */
  readonly eligible: boolean;
}

/** Builder options (diagnostics and tests). */
export interface BackendTableBuildOptions {
  /**
   * 'auto' (default): incremental from `previous` when it is cheaper than a full build;
   * 'incremental': incremental whenever `previous` has the same hash key, whatever the cost;
   * 'full': always a full build (still reports rowsChanged against `previous`).
   */
  readonly mode?: 'auto' | 'incremental' | 'full';
}

/** How a table was made (for metrics, logs and tests). */
export interface BackendTableBuildInfo {
  readonly mode: 'full' | 'incremental';
  /** Score evaluations (rows x backends hashed) the build did. */
  readonly scoreEvaluations: number;
  /** Rows whose backend *id* differs from the previous table's (0 without one). */
  readonly rowsChanged: number;
}

const TWO_POW_M32 = 1 / 4294967296;

/** The weighted score of a backend of weight `w` whose row hash is `h` (u32). */
export function weightedScore(w: number, h: number): number {
  return w / -Math.log((h + 0.5) * TWO_POW_M32);
}

export class BackendTable {
  readonly version: number;
  /** Backend ids in the given order; index i = position in the pool's list. */
  readonly ids: readonly string[];
  /** Frozen copy of the specs the table was built from. */
  readonly backends: readonly BackendSpec[];
  /** Number of eligible backends (weight > 0). */
  readonly eligibleCount: number;
  readonly buildInfo: BackendTableBuildInfo;
  readonly #row: Uint16Array;
  readonly #winScore: Float64Array;
  readonly #k0: number;
  readonly #k1: number;

  /** @internal use `buildBackendTable`. */
  constructor(
    version: number,
    backends: readonly BackendSpec[],
    eligibleCount: number,
    row: Uint16Array,
    winScore: Float64Array,
    hashKey: Uint32Array,
    buildInfo: BackendTableBuildInfo,
  ) {
    this.version = version;
    this.backends = backends;
    this.ids = Object.freeze(backends.map((b) => b.id));
    this.eligibleCount = eligibleCount;
    this.#row = row;
    this.#winScore = winScore;
    this.#k0 = hashKey[0]!;
    this.#k1 = hashKey[1]!;
    this.buildInfo = buildInfo;
  }

  /** Backend index of table row `row` (0..65535), or NO_BACKEND. Hot path: one array read. */
  backendAt(row: number): number {
    return this.#row[row & 0xffff]!;
  }

  /** Backend index for a cluster flow hash (row = flowHash >>> 16), or NO_BACKEND. */
  lookup(flowHash: number): number {
    return this.#row[flowHash >>> 16]!;
  }

  /** Rows held by each backend index (off the hot path: allocates). */
  rowsPerBackend(): Uint32Array {
    const counts = new Uint32Array(this.backends.length);
    for (let r = 0; r < ROWS; r++) {
      const b = this.#row[r]!;
      if (b !== NO_BACKEND) counts[b]!++;
    }
    return counts;
  }

  /** A copy of the row map (tests, diagnostics). */
  snapshotRows(): Uint16Array {
    return this.#row.slice();
  }

  /** @internal read access for the incremental builder. */
  static internals(t: BackendTable): { row: Uint16Array; winScore: Float64Array; k0: number; k1: number } {
    return { row: t.#row, winScore: t.#winScore, k0: t.#k0, k1: t.#k1 };
  }
}

function fail(message: string, details?: Record<string, unknown>): never {
  throw new TunlbError(ErrorCodes.TABLE_BUILD, message, details);
}

/** Effective weight: the weight of an eligible backend, else 0. */
function effWeight(b: BackendSpec): number {
  return b.eligible ? b.weight : 0;
}

/**
 * Per-build ranking plan: the eligible backends grouped into weight classes, each class's
 * member data laid out contiguously (mixed member seed, id order for ties, index).
 */
interface Plan {
  classStart: Int32Array; // class c = [classStart[c], classStart[c+1])
  classWeight: Float64Array;
  mix: Int32Array; // memberMix(memberSeed(id)), class order
  ord: Int32Array; // idOrder, class order: smaller wins an h tie
  index: Int32Array; // backend index, class order
  order: Int32Array; // idOrder by backend index (all backends)
  count: number;
}

function makePlan(backends: readonly BackendSpec[], mixed: Int32Array, order: Int32Array): Plan {
  const elig: number[] = [];
  for (let j = 0; j < backends.length; j++) if (effWeight(backends[j]!) > 0) elig.push(j);
  // Group by weight; class order and in-class order do not affect the result (ties are
  // resolved by id order), but keep them deterministic anyway.
  elig.sort((a, b) => effWeight(backends[a]!) - effWeight(backends[b]!) || order[a]! - order[b]!);
  const starts: number[] = [];
  const weights: number[] = [];
  for (let i = 0; i < elig.length; i++) {
    const w = effWeight(backends[elig[i]!]!);
    if (i === 0 || w !== weights[weights.length - 1]) {
      starts.push(i);
      weights.push(w);
    }
  }
  starts.push(elig.length);
  const n = elig.length;
  const plan: Plan = {
    classStart: Int32Array.from(starts),
    classWeight: Float64Array.from(weights),
    mix: new Int32Array(n),
    ord: new Int32Array(n),
    index: new Int32Array(n),
    order,
    count: n,
  };
  for (let i = 0; i < n; i++) {
    const j = elig[i]!;
    plan.mix[i] = mixed[j]!;
    plan.ord[i] = order[j]!;
    plan.index[i] = j;
  }
  return plan;
}

// Scratch result of rankRow (no allocation per row).
let rankedScore = -Infinity;

/**
 * Winner of one row over all eligible backends of the plan: returns its index (or
 * NO_BACKEND) and leaves its score in `rankedScore`.
 */
function rankRow(rs: number, p: Plan): number {
  const cs = p.classStart;
  const nc = p.classWeight.length;
  const mix = p.mix;
  const ord = p.ord;
  let bestIdx = NO_BACKEND;
  let bestScore = -Infinity;
  let bestOrder = 0x7fffffff;
  for (let c = 0; c < nc; c++) {
    // Max h within the class, ties to the smaller id order. h is compared as the int32
    // `h ^ 0x80000000` (order-preserving u32 -> i32), so the loop stays in small integers.
    let ck = -0x80000000;
    let co = 0x7fffffff;
    let ci = -1;
    for (let i = cs[c]!, e = cs[c + 1]!; i < e; i++) {
      // mixWith(rs, mix[i]) inlined, without the final >>> 0
      let x = rs ^ mix[i]!;
      x = (x << 13) | (x >>> 19);
      x = (Math.imul(x, 5) + 0xe6546b64) | 0;
      x ^= 4;
      x ^= x >>> 16;
      x = Math.imul(x, 0x85ebca6b);
      x ^= x >>> 13;
      x = Math.imul(x, 0xc2b2ae35);
      x ^= x >>> 16;
      x ^= 0x80000000;
      if (x > ck || (x === ck && ord[i]! < co)) {
        ck = x;
        co = ord[i]!;
        ci = i;
      }
    }
    const h = (ck ^ 0x80000000) >>> 0;
    const s = weightedScore(p.classWeight[c]!, h);
    const j = p.index[ci]!;
    const o = p.order[j]!;
    if (s > bestScore || (s === bestScore && o < bestOrder)) {
      bestScore = s;
      bestIdx = j;
      bestOrder = o;
    }
  }
  rankedScore = bestScore;
  return bestIdx;
}

function validateSpecs(backends: readonly BackendSpec[], hashKey: Uint32Array, version: number): void {
  if (!(hashKey instanceof Uint32Array) || hashKey.length !== 2) fail('hash key must be a Uint32Array(2)');
  if (!Number.isSafeInteger(version) || version < 0) fail(`table version must be a non-negative integer, got ${version}`);
  if (backends.length > MAX_BACKENDS) fail(`a pool holds at most ${MAX_BACKENDS} backends, got ${backends.length}`);
  const seen = new Set<string>();
  for (const b of backends) {
    if (b === null || typeof b !== 'object') fail('backend spec must be an object');
    if (typeof b.id !== 'string' || b.id.length === 0) fail('backend id must be a non-empty string');
    if (seen.has(b.id)) fail(`duplicate backend id ${JSON.stringify(b.id)}`, { id: b.id });
    seen.add(b.id);
    if (typeof b.weight !== 'number' || !Number.isFinite(b.weight) || b.weight < 0 || b.weight > 1e9) {
      fail(`backend ${b.id} weight must be a finite number in [0, 1e9], got ${String(b.weight)}`, { id: b.id });
    }
    if (typeof b.eligible !== 'boolean') fail(`backend ${b.id} eligible must be a boolean`, { id: b.id });
  }
}

/**
 * Build the backend table of a pool. With `previous` (same hash key), only what changed is
 * recomputed; the result is identical to a full build either way. Off the hot path; throws
 * TunlbError(TUNLB_TABLE_BUILD) on invalid input or a failed validation.
 */
export function buildBackendTable(
  backends: readonly BackendSpec[],
  hashKey: Uint32Array,
  version: number,
  previous?: BackendTable,
  options?: BackendTableBuildOptions,
): BackendTable {
  return finish(backendTableSteps(backends, hashKey, version, previous, options));
}

/**
 * buildBackendTable as a resumable build (src/decision/build-steps.ts): yields about every
 * STEP_EVALS score evaluations. Invalid input throws at the first step. `backends` and
 * `previous` must not change until it returns.
 */
export function* backendTableSteps(
  backends: readonly BackendSpec[],
  hashKey: Uint32Array,
  version: number,
  previous?: BackendTable,
  options?: BackendTableBuildOptions,
): BuildSteps<BackendTable> {
  const mode = options?.mode ?? 'auto';
  if (mode !== 'auto' && mode !== 'incremental' && mode !== 'full') fail(`unknown build mode ${String(mode)}`);
  validateSpecs(backends, hashKey, version);
  const specs = Object.freeze(backends.map((b) => Object.freeze({ id: b.id, weight: b.weight, eligible: b.eligible })));
  const n = specs.length;
  const mixed = new Int32Array(n);
  for (let j = 0; j < n; j++) mixed[j] = memberMix(memberSeed(hashKey, specs[j]!.id));
  const order = idOrder(specs.map((b) => b.id));
  const plan = makePlan(specs, mixed, order);
  const seeds = rowSeeds(hashKey);

  let built: { row: Uint16Array; winScore: Float64Array; evals: number; mode: 'full' | 'incremental' } | null = null;
  if (previous !== undefined && mode !== 'full' && sameKey(previous, hashKey)) {
    built = yield* incremental(specs, mixed, order, plan, seeds, previous, mode === 'incremental');
  }
  if (built === null) built = yield* full(plan, seeds);
  yield;

  validateTable(built.row, plan, n);
  let rowsChanged = 0;
  if (previous !== undefined) {
    const prow = BackendTable.internals(previous).row;
    const pids = previous.ids;
    for (let r = 0; r < ROWS; r++) {
      const a = prow[r]!;
      const b = built.row[r]!;
      const ida = a === NO_BACKEND ? null : pids[a]!;
      const idb = b === NO_BACKEND ? null : specs[b]!.id;
      if (ida !== idb) rowsChanged++;
    }
  }
  return new BackendTable(version, specs, plan.count, built.row, built.winScore, hashKey, {
    mode: built.mode,
    scoreEvaluations: built.evals,
    rowsChanged,
  });
}

function sameKey(t: BackendTable, hashKey: Uint32Array): boolean {
  const p = BackendTable.internals(t);
  return p.k0 === hashKey[0] && p.k1 === hashKey[1];
}

function* full(plan: Plan, seeds: Uint32Array): BuildSteps<{ row: Uint16Array; winScore: Float64Array; evals: number; mode: 'full' }> {
  const row = new Uint16Array(ROWS);
  const winScore = new Float64Array(ROWS);
  if (plan.count === 0) {
    row.fill(NO_BACKEND);
    winScore.fill(-Infinity);
  } else {
    // Rows between yields: about STEP_EVALS evaluations (at least one row).
    const step = Math.max(1, Math.floor(STEP_EVALS / plan.count));
    for (let r0 = 0; r0 < ROWS; r0 += step) {
      const end = Math.min(ROWS, r0 + step);
      for (let r = r0; r < end; r++) {
        row[r] = rankRow(seeds[r]!, plan);
        winScore[r] = rankedScore;
      }
      if (end < ROWS) yield;
    }
  }
  return { row, winScore, evals: ROWS * plan.count, mode: 'full' };
}

function* incremental(
  specs: readonly BackendSpec[],
  mixed: Int32Array,
  order: Int32Array,
  plan: Plan,
  seeds: Uint32Array,
  previous: BackendTable,
  force: boolean,
): BuildSteps<{ row: Uint16Array; winScore: Float64Array; evals: number; mode: 'incremental' } | null> {
  const prev = BackendTable.internals(previous);
  const pspecs = previous.backends;
  const newIndex = new Map<string, number>();
  for (let j = 0; j < specs.length; j++) newIndex.set(specs[j]!.id, j);

  // previous index -> new index (NO_BACKEND if gone); and whether that backend lost weight.
  const remap = new Int32Array(pspecs.length);
  const lost = new Uint8Array(pspecs.length);
  for (let i = 0; i < pspecs.length; i++) {
    const p = pspecs[i]!;
    const j = newIndex.get(p.id);
    remap[i] = j === undefined ? NO_BACKEND : j;
    const wn = j === undefined ? 0 : effWeight(specs[j]!);
    if (wn < effWeight(p)) lost[i] = 1;
  }
  // Backends whose effective weight went up (new ones included), and whether the winner of a
  // row gained weight (its stored score must be recomputed).
  const gainedList: number[] = [];
  const gained = new Uint8Array(specs.length);
  const prevIndex = new Map<string, number>();
  for (let i = 0; i < pspecs.length; i++) prevIndex.set(pspecs[i]!.id, i);
  for (let j = 0; j < specs.length; j++) {
    const i = prevIndex.get(specs[j]!.id);
    const wp = i === undefined ? 0 : effWeight(pspecs[i]!);
    if (effWeight(specs[j]!) > wp) {
      gained[j] = 1;
      gainedList.push(j);
    }
  }

  // Dirty rows: the previous winner lost weight (or is gone).
  const prow = prev.row;
  let dirty = 0;
  for (let r = 0; r < ROWS; r++) {
    const w = prow[r]!;
    if (w !== NO_BACKEND && lost[w] === 1) dirty++;
  }
  const estimate = dirty * plan.count + (ROWS - dirty) * gainedList.length;
  if (!force && estimate * 2 > ROWS * plan.count) return null; // a full build is as cheap

  const row = new Uint16Array(ROWS);
  const winScore = prev.winScore.slice();
  let evals = 0;
  const g = Int32Array.from(gainedList);
  const gmix = new Int32Array(g.length);
  const gw = new Float64Array(g.length);
  const gord = new Int32Array(g.length);
  for (let k = 0; k < g.length; k++) {
    gmix[k] = mixed[g[k]!]!;
    gw[k] = effWeight(specs[g[k]!]!);
    gord[k] = order[g[k]!]!;
  }
  let sinceYield = 0;
  for (let r = 0; r < ROWS; r++) {
    // Yield about every STEP_EVALS evaluations (a row costs at least one unit of work).
    if (sinceYield >= STEP_EVALS) {
      sinceYield = 0;
      yield;
    }
    const pw = prow[r]!;
    const rs = seeds[r]!;
    if (pw !== NO_BACKEND && lost[pw] === 1) {
      row[r] = rankRow(rs, plan);
      winScore[r] = rankedScore;
      evals += plan.count;
      sinceYield += plan.count + 1;
      continue;
    }
    let best = pw === NO_BACKEND ? NO_BACKEND : remap[pw]!;
    let bestScore: number;
    let bestOrder: number;
    if (best === NO_BACKEND) {
      bestScore = -Infinity;
      bestOrder = 0x7fffffff;
    } else {
      bestOrder = order[best]!;
      if (gained[best] === 1) {
        bestScore = weightedScore(effWeight(specs[best]!), mixWith(rs, mixed[best]!));
        evals++;
      } else {
        bestScore = winScore[r]!;
      }
    }
    for (let k = 0; k < g.length; k++) {
      const j = g[k]!;
      if (j === best) continue;
      const s = weightedScore(gw[k]!, mixWith(rs, gmix[k]!));
      const o = gord[k]!;
      if (s > bestScore || (s === bestScore && o < bestOrder)) {
        bestScore = s;
        best = j;
        bestOrder = o;
      }
    }
    evals += g.length;
    sinceYield += g.length + 1;
    row[r] = best;
    winScore[r] = bestScore;
  }
  return { row, winScore, evals, mode: 'incremental' };
}

/** Every cell is NO_BACKEND iff there is no eligible backend, else an eligible index. */
function validateTable(row: Uint16Array, plan: Plan, n: number): void {
  if (row.length !== ROWS) fail('backend table has the wrong size');
  const ok = new Uint8Array(n);
  for (let i = 0; i < plan.count; i++) ok[plan.index[i]!] = 1;
  for (let r = 0; r < ROWS; r++) {
    const b = row[r]!;
    if (plan.count === 0 ? b !== NO_BACKEND : b >= n || ok[b] !== 1) {
      fail(`backend table row ${r} holds ${b}, not an eligible backend`, { row: r });
    }
  }
}
