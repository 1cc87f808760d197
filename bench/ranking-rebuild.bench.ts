/**
 * Table rebuild cost (off the hot path, but it bounds how fast membership and health changes
 * reach new flows): full (cold) backend table builds for 3 / 100 / 1,000 backends, the
 * incremental rebuild after one change (add, remove, reweight, mark down) from the previous
 * table, and the balancer ranking build for 3 and 32 balancers. Median of several runs,
 * after one warm-up build.
 *
 *   npx tsx bench/ranking-rebuild.bench.ts
 */
import type { BenchRow } from './run-micro';
import { BackendSpec, buildBackendTable } from '../src/decision/backend-table';
import { buildBalancerRanking } from '../src/decision/balancer-ranking';
import { deriveHashKey } from '../src/decision/hash-key';

function msMedian(f: () => unknown, runs: number): number {
  f(); // warm-up
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    f();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1]!;
}

const pool = (n: number, weighted: boolean): BackendSpec[] =>
  Array.from({ length: n }, (_, i) => ({ id: `10.99.${3 + (i >> 8)}.${(i & 255) + 1}:80`, weight: weighted ? 1 + (i % 4) : 1, eligible: true }));

export async function run(): Promise<BenchRow[]> {
  const hk = deriveHashKey('bench cluster key');
  const rows: BenchRow[] = [];
  for (const n of [3, 100, 1000]) {
    const runs = n === 1000 ? 5 : 9;
    for (const weighted of [false, true]) {
      const specs = pool(n, weighted);
      rows.push({
        name: `backend table full build, ${n} backends${weighted ? ' (weights 1..4)' : ' (equal weights)'}`,
        value: msMedian(() => buildBackendTable(specs, hk, 1, undefined, { mode: 'full' }), runs),
        unit: 'ms',
        target: n === 1000 ? 'report' : undefined,
      });
    }
    const specs = pool(n, true);
    const base = buildBackendTable(specs, hk, 1);
    const mid = n >> 1;
    const changes: Array<[string, BackendSpec[]]> = [
      ['add 1', [...specs, { id: '10.99.250.1:80', weight: 2, eligible: true }]],
      ['remove 1', specs.filter((_, i) => i !== mid)],
      ['reweight 1 up', specs.map((b, i) => (i === mid ? { ...b, weight: 10 } : b))],
      ['reweight 1 down', specs.map((b, i) => (i === mid ? { ...b, weight: 0.5 } : b))],
      ['mark 1 down', specs.map((b, i) => (i === mid ? { ...b, eligible: false } : b))],
    ];
    for (const [what, next] of changes) {
      let mode = '';
      const ms = msMedian(() => {
        mode = buildBackendTable(next, hk, 2, base).buildInfo.mode;
      }, runs);
      rows.push({ name: `backend table rebuild, ${n} backends, ${what} [${mode}]`, value: ms, unit: 'ms', target: n === 1000 ? '< 50' : undefined });
    }
  }
  for (const b of [3, 32]) {
    const ids = Array.from({ length: b }, (_, i) => `lb${i + 1}`);
    rows.push({ name: `balancer ranking build, ${b} balancers`, value: msMedian(() => buildBalancerRanking(ids, hk, 1), 7), unit: 'ms' });
  }
  return rows;
}

if (require.main === module) {
  run()
    .then((rows) => {
      const w = Math.max(...rows.map((r) => r.name.length));
      console.log(`node ${process.version}`);
      for (const r of rows) console.log(`${r.name.padEnd(w)}  ${r.value.toFixed(2).padStart(9)} ${r.unit.padEnd(3)} ${r.target ?? ''}`);
    })
    .catch((e: unknown) => {
      console.error(e);
      process.exit(1);
    });
}
