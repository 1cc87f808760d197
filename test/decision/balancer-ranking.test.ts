import test from 'ava';
import fc from 'fast-check';
import { BalancerRanking, buildBalancerRanking, MAX_BALANCERS } from '../../src/decision/balancer-ranking';
import { deriveHashKey } from '../../src/decision/hash-key';
import { ROWS } from '../../src/decision/rendezvous';
import { isTunlbError } from '../../src/errors';
import { prng, randomFlowHashes, shuffled } from '../cluster/cluster-fixtures';

const KEY = deriveHashKey('test cluster key');
const ids = (n: number, prefix = 'lb'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`);

/** Row r's ranking as ids, flattened: rows*n strings compared through one joined string. */
function idRankingOf(t: BalancerRanking, row: number): string {
  let s = '';
  for (let i = 0; i < t.width; i++) s += t.ids[t.rankAt(row, i)] + ',';
  return s;
}

function sameIdRanking(a: BalancerRanking, b: BalancerRanking): boolean {
  if (a.width !== b.width) return false;
  for (let r = 0; r < ROWS; r++) {
    for (let i = 0; i < a.width; i++) if (a.ids[a.rankAt(r, i)] !== b.ids[b.rankAt(r, i)]) return false;
  }
  return true;
}

test('table shape, version and ids', (t) => {
  const list = ids(3);
  const tb = buildBalancerRanking(list, KEY, 7);
  t.is(tb.version, 7);
  t.deepEqual([...tb.ids], list);
  t.is(tb.width, 3);
  t.true(Object.isFrozen(tb.ids));
  // every row is a permutation of 0..n-1
  for (let r = 0; r < ROWS; r++) {
    const seen = new Set<number>();
    for (let i = 0; i < 3; i++) seen.add(tb.rankAt(r, i));
    if (seen.size !== 3) return t.fail(`row ${r}`);
  }
  t.is(tb.rankingIds(0).length, 3);
  t.is(tb.rankOf(0, tb.rankAt(0, 2)), 2);
  t.is(tb.rankOf(0, 9), -1);
});

test('deterministic: same ids and key give the same table; another key a different one', (t) => {
  const a = buildBalancerRanking(ids(5), KEY, 1);
  const b = buildBalancerRanking(ids(5), Uint32Array.from(KEY), 2);
  t.true(sameIdRanking(a, b));
  const c = buildBalancerRanking(ids(5), deriveHashKey('another key'), 1);
  t.false(sameIdRanking(a, c));
});

test('ranking of ids is independent of list order (shuffled lists, all rows)', (t) => {
  const list = ids(8);
  const base = buildBalancerRanking(list, KEY, 1);
  for (let s = 1; s <= 4; s++) {
    const sh = shuffled(list, s);
    const other = buildBalancerRanking(sh, KEY, 1);
    t.true(sameIdRanking(base, other), `shuffle seed ${s}: ${sh.join(',')}`);
  }
});

test('property: any id set, any order -> same id ranking (sampled rows)', (t) => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: MAX_BALANCERS }),
      fc.integer({ min: 1, max: 1000 }),
      (list, seed) => {
        const a = buildBalancerRanking(list, KEY, 1);
        const b = buildBalancerRanking(shuffled(list, seed), KEY, 1);
        for (let r = 0; r < ROWS; r += 97) if (idRankingOf(a, r) !== idRankingOf(b, r)) return false;
        return true;
      },
    ),
    { numRuns: 12 },
  );
  t.pass();
});

test('removing one of n balancers: others keep their relative order; only its rows change primary', (t) => {
  for (const n of [3, 5, 10]) {
    const list = ids(n);
    const full = buildBalancerRanking(list, KEY, 1);
    const gone = list[1]!;
    const less = buildBalancerRanking(list.filter((x) => x !== gone), KEY, 2);
    let moved = 0;
    let hadIt = 0;
    for (let r = 0; r < ROWS; r++) {
      const before = full.rankingIds(r);
      const after = less.rankingIds(r);
      // exact: the new ranking is the old one with the removed id deleted
      if (after.join() !== before.filter((x) => x !== gone).join()) return t.fail(`row ${r}`);
      if (before[0] === gone) hadIt++;
      if (before[0] !== after[0]) moved++;
    }
    t.is(moved, hadIt);
    const frac = moved / ROWS;
    t.log(`remove 1 of ${n} balancers: ${moved} rows moved primary (${(frac * 100).toFixed(2)}%, 1/n = ${(100 / n).toFixed(2)}%)`);
    t.true(Math.abs(frac - 1 / n) < 0.1 / n);
  }
});

test('adding a balancer: rows that change primary all go to the new one', (t) => {
  for (const n of [3, 9]) {
    const list = ids(n);
    const before = buildBalancerRanking(list, KEY, 1);
    const after = buildBalancerRanking([...list, 'lb-new'], KEY, 2);
    let moved = 0;
    for (let r = 0; r < ROWS; r++) {
      const p0 = before.ids[before.rankAt(r, 0)];
      const p1 = after.ids[after.rankAt(r, 0)];
      if (p0 !== p1) {
        moved++;
        if (p1 !== 'lb-new') return t.fail(`row ${r} moved from ${p0} to ${p1}`);
      }
      if (after.rankingIds(r).filter((x) => x !== 'lb-new').join() !== before.rankingIds(r).join()) return t.fail(`row ${r} order`);
    }
    const frac = moved / ROWS;
    t.log(`add 1 to ${n} balancers: ${moved} rows moved (${(frac * 100).toFixed(2)}%, 1/(n+1) = ${(100 / (n + 1)).toFixed(2)}%)`);
    t.true(Math.abs(frac - 1 / (n + 1)) < 0.1 / (n + 1));
  }
});

test('uniformity: 100k flows over 3..10 balancers, primary and backup shares within ±5% of fair', (t) => {
  const hashes = randomFlowHashes(KEY, 100_000, 42);
  const live = new Uint8Array(32).fill(1);
  const out = new Int32Array(2);
  for (let n = 3; n <= 10; n++) {
    const tb = buildBalancerRanking(ids(n), KEY, 1);
    const prim = new Uint32Array(n);
    const back = new Uint32Array(n);
    for (const h of hashes) {
      t.is(tb.pickLive(h & 0xffff, live, out), 2);
      prim[out[0]!]!++;
      back[out[1]!]!++;
    }
    const fair = hashes.length / n;
    const worst = Math.max(...[...prim, ...back].map((c) => Math.abs(c / fair - 1)));
    t.log(`${n} balancers: worst deviation from fair share ${(worst * 100).toFixed(2)}%`);
    t.true(worst < 0.05, `n=${n} prim=${[...prim]} back=${[...back]}`);
  }
});

test('primary != backup in every row, with everyone alive and with random liveness', (t) => {
  const n = 7;
  const tb = buildBalancerRanking(ids(n), KEY, 1);
  const out = new Int32Array(2);
  const rnd = prng(7);
  const live = new Uint8Array(n);
  for (let r = 0; r < ROWS; r++) {
    if ((r & 1023) === 0) for (let i = 0; i < n; i++) live[i] = r === 0 ? 1 : rnd() & 1;
    const c = tb.pickLive(r, live, out);
    if (c === 2 && out[0] === out[1]) return t.fail(`row ${r}`);
    if (r < 1024 && c !== 2) return t.fail(`row ${r} all alive: ${c}`);
  }
  t.pass();
});

test('pickLive = first two live members in rank order; skips dead ones', (t) => {
  const n = 6;
  const tb = buildBalancerRanking(ids(n), KEY, 1);
  const out = new Int32Array(2);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: ROWS - 1 }), fc.uint8Array({ minLength: n, maxLength: n, max: 1 }), (row, live) => {
      const expected: number[] = [];
      for (let i = 0; i < n; i++) if (live[tb.rankAt(row, i)] === 1) expected.push(tb.rankAt(row, i));
      const c = tb.pickLive(row, live, out);
      const want = expected.slice(0, 2);
      if (c !== want.length) return false;
      if (out[0] !== (want[0] ?? -1) || out[1] !== (want[1] ?? -1)) return false;
      // dead members are never picked
      for (let k = 0; k < c; k++) if (live[out[k]!] !== 1) return false;
      // nextLiveHolder: the third live member in rank, skipping primary and backup
      return tb.nextLiveHolder(row, live, out[0]!, out[1]!) === (expected[2] ?? -1);
    }),
    { numRuns: 3000 },
  );
  // none alive / one alive
  const none = new Uint8Array(n);
  t.is(tb.pickLive(5, none, out), 0);
  t.deepEqual([...out], [-1, -1]);
  const one = new Uint8Array(n);
  one[3] = 1;
  t.is(tb.pickLive(5, one, out), 1);
  t.deepEqual([...out], [3, -1]);
  t.is(tb.nextLiveHolder(5, one, 3, -1), -1);
  t.is(tb.nextLiveHolder(5, one, -1, -1), 3);
});

test('failover: with primary and backup dead, pickLive over the full table = table built without them', (t) => {
  const list = ids(6);
  const tb = buildBalancerRanking(list, KEY, 1);
  const live = new Uint8Array(6).fill(1);
  live[0] = 0;
  live[4] = 0;
  const less = buildBalancerRanking(list.filter((_, i) => live[i] === 1), KEY, 2);
  const out = new Int32Array(2);
  const out2 = new Int32Array(2);
  const all = new Uint8Array(4).fill(1);
  for (let r = 0; r < ROWS; r++) {
    tb.pickLive(r, live, out);
    less.pickLive(r, all, out2);
    if (list[out[0]!] !== less.ids[out2[0]!] || list[out[1]!] !== less.ids[out2[1]!]) return t.fail(`row ${r}`);
  }
  t.pass();
});

test('builder validates its input', (t) => {
  const bad = (f: () => unknown) => t.true(isTunlbError(t.throws(f), 'TUNLB_TABLE_BUILD'));
  bad(() => buildBalancerRanking([], KEY, 1));
  bad(() => buildBalancerRanking(ids(33), KEY, 1));
  bad(() => buildBalancerRanking(['a', 'b', 'a'], KEY, 1));
  bad(() => buildBalancerRanking(['a', ''], KEY, 1));
  bad(() => buildBalancerRanking(['a'], new Uint32Array(3), 1));
  bad(() => buildBalancerRanking(['a'], KEY, -1));
  t.is(buildBalancerRanking(ids(32), KEY, 1).width, 32);
});
