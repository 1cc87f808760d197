/**
 * Resumable table builds (src/decision/build-steps.ts): the builders yield about every
 * STEP_EVALS score evaluations, so the control plane can run them in time slices; resumed step
 * by step, they build exactly what the one-call builders build (full and incremental).
 */
import test from 'ava';
import { STEP_EVALS, finish } from '../../src/decision/build-steps';
import { backendTableSteps, buildBackendTable, type BackendSpec } from '../../src/decision/backend-table';
import { balancerRankingSteps, buildBalancerRanking } from '../../src/decision/balancer-ranking';
import { ROWS } from '../../src/decision/rendezvous';

const KEY = new Uint32Array([0x01234567, 0x89abcdef]);

function steps<T>(g: Generator<void, T, void>): { value: T; yields: number } {
  let yields = 0;
  for (;;) {
    const r = g.next();
    if (r.done === true) return { value: r.value, yields };
    yields++;
  }
}

const pool = (n: number, drop = -1): BackendSpec[] => Array.from({ length: n }, (_, i) => ({ id: `10.0.${i >> 8}.${i & 0xff}`, weight: 1 + (i % 3), eligible: i !== drop }));

test('backend table: a full build of 100 backends yields about every STEP_EVALS evaluations and equals the one-call build', (t) => {
  const { value, yields } = steps(backendTableSteps(pool(100), KEY, 1));
  const one = buildBackendTable(pool(100), KEY, 1);
  t.deepEqual(value.snapshotRows(), one.snapshotRows());
  const evals = value.buildInfo.scoreEvaluations;
  t.is(evals, ROWS * 100);
  // At most STEP_EVALS + one row's evaluations between two yields.
  t.true(yields >= Math.floor(evals / (STEP_EVALS + 100)), `${yields} yields for ${evals} evaluations`);
});

test('backend table: an incremental build (one backend drained) resumed step by step equals a full build', (t) => {
  const prev = buildBackendTable(pool(50), KEY, 1);
  const { value, yields } = steps(backendTableSteps(pool(50, 7), KEY, 2, prev));
  t.is(value.buildInfo.mode, 'incremental');
  t.deepEqual(value.snapshotRows(), buildBackendTable(pool(50, 7), KEY, 2, undefined, { mode: 'full' }).snapshotRows());
  t.true(yields >= 1);
});

test('balancer ranking: resumed step by step equals the one-call build', (t) => {
  const ids = Array.from({ length: 32 }, (_, i) => `lb${i}`);
  const { value, yields } = steps(balancerRankingSteps(ids, KEY, 3));
  const one = finish(balancerRankingSteps(ids, KEY, 3));
  t.true(yields >= Math.floor((ROWS * 32) / STEP_EVALS) - 1);
  for (let r = 0; r < ROWS; r += 997) t.deepEqual(value.rankingIds(r), one.rankingIds(r));
  t.deepEqual(value.rankingIds(12345), buildBalancerRanking(ids, KEY, 3).rankingIds(12345));
});
