/**
 * New-flow decision cost: cluster flow hash (HalfSipHash-2-4 over the 40-byte key) + balancer
 * ranking pickLive (primary, backup) + backend table read, for pools of 3, 100 and 1,000
 * backends. The point of the precomputed tables is that this is flat in the pool size.
 *
 *   npx tsx bench/ranking-decision.bench.ts
 */
import type { BenchRow } from './run-micro';
import { buildBackendTable, BackendTable } from '../src/decision/backend-table';
import { buildBalancerRanking, BalancerRanking } from '../src/decision/balancer-ranking';
import { hashFlowKey as hashFlowKeyImport } from '../src/decision/halfsiphash';
import { deriveHashKey } from '../src/decision/hash-key';

const KEYS = 4096;
// Local binding: under tsx (esbuild CommonJS) an imported function is a getter call per use,
// which the production build (tsc, `exports.x = ...`) does not have.
const hashFlowKey = hashFlowKeyImport;

function flowKeys(): Uint8Array {
  const buf = new Uint8Array(KEYS * 40);
  let s = 0x12345678;
  for (let i = 0; i < KEYS; i++) {
    const o = i * 40;
    buf[o + 10] = 0xff;
    buf[o + 11] = 0xff;
    for (let b = 12; b < 16; b++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      buf[o + b] = s & 0xff;
    }
    buf[o + 26] = 0xff;
    buf[o + 27] = 0xff;
    buf.set([10, 99, 0, 10], o + 28);
    buf[o + 32] = (s >>> 8) & 0xff;
    buf[o + 33] = s & 0xff;
    buf[o + 35] = 80;
    buf[o + 36] = 6;
    buf[o + 37] = 4;
  }
  return buf;
}

function decide(hk: Uint32Array, keys: Uint8Array, ranking: BalancerRanking, table: BackendTable, live: Uint8Array, out: Int32Array, iters: number): number {
  let acc = 0;
  for (let i = 0; i < iters; i++) {
    const h = hashFlowKey(hk, keys, (i & (KEYS - 1)) * 40);
    ranking.pickLive(h & 0xffff, live, out);
    acc = (acc + out[0]! + out[1]! + table.lookup(h)) | 0;
  }
  return acc;
}

function hashOnly(hk: Uint32Array, keys: Uint8Array, iters: number): number {
  let acc = 0;
  for (let i = 0; i < iters; i++) acc ^= hashFlowKey(hk, keys, (i & (KEYS - 1)) * 40);
  return acc;
}

function nsPerOp(f: (iters: number) => number, iters: number): number {
  f(iters >> 2); // warm-up
  const samples: number[] = [];
  let sink = 0;
  for (let k = 0; k < 5; k++) {
    const t0 = process.hrtime.bigint();
    sink ^= f(iters);
    samples.push(Number(process.hrtime.bigint() - t0) / iters);
  }
  if (sink === 0x7fffffff) console.log(''); // keep the result alive
  samples.sort((a, b) => a - b);
  return samples[2]!;
}

export async function run(): Promise<BenchRow[]> {
  const hk = deriveHashKey('bench cluster key');
  const keys = flowKeys();
  const rows: BenchRow[] = [];
  const iters = 2_000_000;
  rows.push({ name: 'hashFlowKey (HalfSipHash-2-4, 40 B)', value: nsPerOp((n) => hashOnly(hk, keys, n), iters), unit: 'ns/op' });
  const out = new Int32Array(2);
  for (const balancers of [3, 32]) {
    const ranking = buildBalancerRanking(Array.from({ length: balancers }, (_, i) => `lb${i + 1}`), hk, 1);
    const live = new Uint8Array(balancers).fill(1);
    if (balancers === 32) {
      // a bad day: the 8 first-ranked-most-often members are dead, pickLive walks further
      for (let i = 0; i < 8; i++) live[i] = 0;
    }
    for (const n of [3, 100, 1000]) {
      const table = buildBackendTable(
        Array.from({ length: n }, (_, i) => ({ id: `10.99.${3 + (i >> 8)}.${(i & 255) + 1}:80`, weight: 1 + (i % 3), eligible: true })),
        hk,
        1,
      );
      rows.push({
        name: `new-flow decision, ${balancers} lbs${balancers === 32 ? ' (8 dead)' : ''}, ${n} backends`,
        value: nsPerOp((k) => decide(hk, keys, ranking, table, live, out, k), iters),
        unit: 'ns/op',
        target: '<= 1000, flat',
      });
    }
  }
  return rows;
}

if (require.main === module) {
  run()
    .then((rows) => {
      const w = Math.max(...rows.map((r) => r.name.length));
      console.log(`node ${process.version}`);
      for (const r of rows) console.log(`${r.name.padEnd(w)}  ${r.value.toFixed(1).padStart(9)} ${r.unit.padEnd(6)} ${r.target ?? ''}`);
    })
    .catch((e: unknown) => {
      console.error(e);
      process.exit(1);
    });
}
