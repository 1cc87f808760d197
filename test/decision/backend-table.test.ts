import test from 'ava';
import fc from 'fast-check';
import { BackendSpec, BackendTable, buildBackendTable, NO_BACKEND, weightedScore } from '../../src/decision/backend-table';
import { deriveHashKey } from '../../src/decision/hash-key';
import { ROWS } from '../../src/decision/rendezvous';
import { isTunlbError } from '../../src/errors';
import { randomFlowHashes, shuffled } from '../cluster/cluster-fixtures';

const KEY = deriveHashKey('test cluster key');
const pool = (n: number, weight = 1): BackendSpec[] =>
  Array.from({ length: n }, (_, i) => ({ id: `10.99.${3 + (i >> 8)}.${(i & 255) + 1}:80`, weight, eligible: true }));

/** Row -> backend id (null for none), the order-independent view of a table. */
function idRows(t: BackendTable): (string | null)[] {
  const out: (string | null)[] = new Array(ROWS);
  for (let r = 0; r < ROWS; r++) {
    const b = t.backendAt(r);
    out[r] = b === NO_BACKEND ? null : t.ids[b]!;
  }
  return out;
}

function sameRows(t: import('ava').ExecutionContext, a: BackendTable, b: BackendTable, msg = ''): void {
  const ra = a.snapshotRows();
  const rb = b.snapshotRows();
  for (let r = 0; r < ROWS; r++) {
    if (ra[r] !== rb[r]) {
      t.fail(`${msg} row ${r}: ${ra[r]} (${a.ids[ra[r]!]}) != ${rb[r]} (${b.ids[rb[r]!]})`);
      return;
    }
  }
  t.pass();
}

test('table shape, lookup uses the high 16 bits of the flow hash', (t) => {
  const tb = buildBackendTable(pool(3), KEY, 4);
  t.is(tb.version, 4);
  t.is(tb.eligibleCount, 3);
  t.is(tb.buildInfo.mode, 'full');
  t.is(tb.buildInfo.scoreEvaluations, ROWS * 3);
  t.is(tb.lookup(0x1234abcd), tb.backendAt(0x1234));
  t.true(Object.isFrozen(tb.backends));
  const counts = tb.rowsPerBackend();
  t.is(counts.reduce((a, b) => a + b, 0), ROWS);
});

test('empty pool, all ineligible, weight 0: every row is NO_BACKEND', (t) => {
  for (const specs of [[], pool(4).map((b) => ({ ...b, eligible: false })), pool(4, 0)]) {
    const tb = buildBackendTable(specs, KEY, 1);
    t.is(tb.eligibleCount, 0);
    t.true(tb.snapshotRows().every((x) => x === NO_BACKEND));
  }
});

test('ineligible and weight-0 backends get no rows', (t) => {
  const specs = pool(6);
  specs[1] = { ...specs[1]!, eligible: false };
  specs[4] = { ...specs[4]!, weight: 0 };
  const counts = buildBackendTable(specs, KEY, 1).rowsPerBackend();
  t.is(counts[1], 0);
  t.is(counts[4], 0);
  t.true([0, 2, 3, 5].every((i) => counts[i]! > 0));
});

test('deterministic and independent of list order (row -> id)', (t) => {
  const specs = pool(20).map((b, i) => ({ ...b, weight: 1 + (i % 3) }));
  const a = buildBackendTable(specs, KEY, 1);
  const ids = idRows(a);
  t.deepEqual(idRows(buildBackendTable(specs, Uint32Array.from(KEY), 2)), ids);
  for (const s of [1, 2, 3]) t.deepEqual(idRows(buildBackendTable(shuffled(specs, s), KEY, 1)), ids, `shuffle ${s}`);
  t.notDeepEqual(idRows(buildBackendTable(specs, deriveHashKey('other'), 1)), ids);
});

test('removing one of n backends moves exactly the rows it held (≈ 1/n)', (t) => {
  for (const n of [3, 10, 100]) {
    const specs = pool(n);
    const before = buildBackendTable(specs, KEY, 1);
    const goneId = specs[n >> 1]!.id;
    const after = buildBackendTable(specs.filter((b) => b.id !== goneId), KEY, 2, before);
    const ra = idRows(before);
    const rb = idRows(after);
    let moved = 0;
    let held = 0;
    for (let r = 0; r < ROWS; r++) {
      if (ra[r] === goneId) held++;
      else if (ra[r] !== rb[r]) return t.fail(`row ${r} moved but was not on the removed backend`);
      if (ra[r] !== rb[r]) moved++;
    }
    t.is(moved, held);
    t.is(after.buildInfo.rowsChanged, moved);
    t.log(`remove 1 of ${n} backends: ${moved} rows moved (${((moved / ROWS) * 100).toFixed(2)}%, 1/n = ${(100 / n).toFixed(2)}%) [${after.buildInfo.mode}]`);
    t.true(Math.abs(moved / ROWS - 1 / n) < 0.15 / n);
  }
});

test('marking a backend ineligible (down/draining) moves exactly its rows', (t) => {
  const specs = pool(10);
  const before = buildBackendTable(specs, KEY, 1);
  const after = buildBackendTable(specs.map((b, i) => (i === 3 ? { ...b, eligible: false } : b)), KEY, 2, before);
  const ra = before.snapshotRows();
  const rb = after.snapshotRows();
  for (let r = 0; r < ROWS; r++) if (ra[r] !== rb[r] && ra[r] !== 3) return t.fail(`row ${r}`);
  t.is(after.rowsPerBackend()[3], 0);
  t.is(after.buildInfo.rowsChanged, before.rowsPerBackend()[3]);
});

test('adding one backend: every moved row goes to the new one (≈ 1/(n+1))', (t) => {
  for (const n of [3, 10, 100]) {
    const specs = pool(n);
    const before = buildBackendTable(specs, KEY, 1);
    const after = buildBackendTable([...specs, { id: '10.99.9.9:80', weight: 1, eligible: true }], KEY, 2, before);
    const ra = idRows(before);
    const rb = idRows(after);
    let moved = 0;
    for (let r = 0; r < ROWS; r++) {
      if (ra[r] !== rb[r]) {
        moved++;
        if (rb[r] !== '10.99.9.9:80') return t.fail(`row ${r} moved to ${rb[r]}`);
      }
    }
    t.log(`add 1 to ${n} backends: ${moved} rows moved (${((moved / ROWS) * 100).toFixed(2)}%, 1/(n+1) = ${(100 / (n + 1)).toFixed(2)}%) [${after.buildInfo.mode}]`);
    t.true(Math.abs(moved / ROWS - 1 / (n + 1)) < 0.15 / (n + 1));
  }
});

test('uniformity: 100k flows over 3..10 equal-weight backends within ±5% of fair', (t) => {
  const hashes = randomFlowHashes(KEY, 100_000, 1234);
  for (let n = 3; n <= 10; n++) {
    const tb = buildBackendTable(pool(n), KEY, 1);
    const c = new Uint32Array(n);
    for (const h of hashes) c[tb.lookup(h)]!++;
    const fair = hashes.length / n;
    const worst = Math.max(...[...c].map((x) => Math.abs(x / fair - 1)));
    t.log(`${n} backends: worst deviation ${(worst * 100).toFixed(2)}%`);
    t.true(worst < 0.05, `n=${n}: ${[...c]}`);
  }
});

test('proportionality: weights 1,2,3,4 (and 1,1,5,10,0.5) -> shares within ±5% of the weight share', (t) => {
  const hashes = randomFlowHashes(KEY, 100_000, 99);
  for (const weights of [[1, 2, 3, 4], [1, 1, 5, 10, 0.5], [100, 250]]) {
    const specs = pool(weights.length).map((b, i) => ({ ...b, weight: weights[i]! }));
    const tb = buildBackendTable(specs, KEY, 1);
    const c = new Uint32Array(weights.length);
    for (const h of hashes) c[tb.lookup(h)]!++;
    const total = weights.reduce((a, b) => a + b, 0);
    const dev = weights.map((w, i) => c[i]! / hashes.length / (w / total) - 1);
    t.log(`weights ${weights.join(',')}: shares ${[...c].map((x) => ((x / hashes.length) * 100).toFixed(1) + '%').join(' ')}, worst deviation ${(Math.max(...dev.map(Math.abs)) * 100).toFixed(2)}%`);
    t.true(dev.every((d) => Math.abs(d) < 0.05), `${weights}: ${[...c]}`);
  }
});

test('weightedScore: strictly increasing in h and in weight; finite', (t) => {
  t.true(Number.isFinite(weightedScore(1, 0xffffffff)));
  t.true(weightedScore(1, 0) > 0);
  t.true(weightedScore(1, 0xffffffff) > weightedScore(1, 0xfffffffe));
  t.true(weightedScore(1, 1) > weightedScore(1, 0));
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xfffffffe }), fc.double({ min: 0.001, max: 1e6, noNaN: true }), (h, w) => weightedScore(w, h + 1) > weightedScore(w, h) && weightedScore(w * 2, h) > weightedScore(w, h)),
    { numRuns: 5000 },
  );
});

// --- incremental == full -----------------------------------------------------------------

type Change =
  | { kind: 'add'; weight: number; eligible: boolean; tag: number }
  | { kind: 'remove'; at: number }
  | { kind: 'weight'; at: number; weight: number }
  | { kind: 'toggle'; at: number };

const weightArb = fc.constantFrom(0, 0.5, 1, 1, 1, 2, 3, 7.25, 100);
const changeArb: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), weight: weightArb, eligible: fc.boolean(), tag: fc.integer({ min: 0, max: 1_000_000 }) }),
  fc.record({ kind: fc.constant('remove' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('weight' as const), at: fc.nat(), weight: weightArb }),
  fc.record({ kind: fc.constant('toggle' as const), at: fc.nat() }),
);

function apply(specs: BackendSpec[], changes: readonly Change[]): BackendSpec[] {
  const out = specs.slice();
  for (const c of changes) {
    if (c.kind === 'add') {
      const id = `add-${c.tag}`;
      if (!out.some((b) => b.id === id)) out.splice(c.tag % (out.length + 1), 0, { id, weight: c.weight, eligible: c.eligible });
    } else if (out.length > 0) {
      const i = c.at % out.length;
      if (c.kind === 'remove') out.splice(i, 1);
      else if (c.kind === 'weight') out[i] = { ...out[i]!, weight: c.weight };
      else out[i] = { ...out[i]!, eligible: !out[i]!.eligible };
    }
  }
  return out;
}

test('property: incremental build from previous == full build, over random change sequences', (t) => {
  let incremental = 0;
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 24 }),
      fc.array(weightArb, { minLength: 24, maxLength: 24 }),
      fc.array(fc.array(changeArb, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 4 }),
      fc.constantFrom<'auto' | 'incremental'>('auto', 'incremental'),
      (n, weights, steps, mode) => {
        let specs: BackendSpec[] = pool(n).map((b, i) => ({ ...b, weight: weights[i]! }));
        let prev = buildBackendTable(specs, KEY, 0);
        let v = 0;
        for (const step of steps) {
          specs = apply(specs, step);
          const inc = buildBackendTable(specs, KEY, ++v, prev, { mode });
          const full = buildBackendTable(specs, KEY, v, undefined, { mode: 'full' });
          if (inc.buildInfo.mode === 'incremental') incremental++;
          const a = inc.snapshotRows();
          const b = full.snapshotRows();
          for (let r = 0; r < ROWS; r++) if (a[r] !== b[r]) return false;
          prev = inc; // chain incremental tables: errors would accumulate
        }
        return true;
      },
    ),
    { numRuns: 60 },
  );
  t.log(`${incremental} incremental builds checked against full builds`);
  t.true(incremental > 30);
});

test('incremental on 1,000 backends: exact, and touches far fewer scores than a full build', (t) => {
  const specs = pool(1000).map((b, i) => ({ ...b, weight: 1 + (i % 4) }));
  const base = buildBackendTable(specs, KEY, 1);
  const changed = specs.slice();
  changed.splice(10, 1); // remove
  changed[500] = { ...changed[500]!, weight: 9 }; // up-weight
  changed[600] = { ...changed[600]!, weight: 0.5 }; // down-weight
  changed[700] = { ...changed[700]!, eligible: false }; // down
  changed.push({ id: '10.99.200.1:80', weight: 2, eligible: true }); // add
  let t0 = performance.now();
  const inc = buildBackendTable(changed, KEY, 2, base);
  const incMs = performance.now() - t0;
  t0 = performance.now();
  const full = buildBackendTable(changed, KEY, 2, undefined, { mode: 'full' });
  const fullMs = performance.now() - t0;
  t.is(inc.buildInfo.mode, 'incremental');
  sameRows(t, inc, full, '1000 backends');
  t.log(`1,000 backends, 5 changes: incremental ${incMs.toFixed(1)} ms (${inc.buildInfo.scoreEvaluations} scores, ${inc.buildInfo.rowsChanged} rows changed), full ${fullMs.toFixed(1)} ms (${full.buildInfo.scoreEvaluations} scores)`);
  t.true(inc.buildInfo.scoreEvaluations * 50 < full.buildInfo.scoreEvaluations);
});

test('a previous table under another hash key forces a full build', (t) => {
  const prev = buildBackendTable(pool(5), deriveHashKey('old key'), 1);
  const next = buildBackendTable(pool(5), KEY, 2, prev);
  t.is(next.buildInfo.mode, 'full');
  sameRows(t, next, buildBackendTable(pool(5), KEY, 2));
});

test('builder validates its input', (t) => {
  const bad = (f: () => unknown) => t.true(isTunlbError(t.throws(f), 'TUNLB_TABLE_BUILD'));
  const ok = pool(2);
  bad(() => buildBackendTable([ok[0]!, ok[0]!], KEY, 1));
  bad(() => buildBackendTable([{ ...ok[0]!, id: '' }], KEY, 1));
  bad(() => buildBackendTable([{ ...ok[0]!, weight: -1 }], KEY, 1));
  bad(() => buildBackendTable([{ ...ok[0]!, weight: Number.NaN }], KEY, 1));
  bad(() => buildBackendTable([{ ...ok[0]!, weight: Infinity }], KEY, 1));
  bad(() => buildBackendTable([{ ...ok[0]!, eligible: 1 as unknown as boolean }], KEY, 1));
  bad(() => buildBackendTable(ok, new Uint32Array(1), 1));
  bad(() => buildBackendTable(ok, KEY, 1.5));
  bad(() => buildBackendTable(ok, KEY, 1, undefined, { mode: 'x' as 'full' }));
});
