/**
 * The bulk sync stream end to end in one process (src/cluster/sync-responder.ts, sync-session.ts,
 * sync-runner.ts), between two Replicators of a LoopbackCluster over the in-memory connection of
 * test/helpers/sync-pipe.ts (TCP-like buffers and flow control, no kernel):
 *   npx tsx bench/sync-stream.bench.ts         prints a table
 *   npm run bench:micro -- sync-stream         via the runner (exports run())
 *
 * Rows, for 100k and 1M IPv4/IPv6/DSR flows: records/s from the request to the applied done
 * chunk (snapshot, encode + MAC, verify + decode, apply: both ends' work on one core, so a
 * lower bound of what two balancers do), and the responder's snapshot build time. The lab
 * figures (separate processes, kill -9 and restart under traffic) are bench:cluster's sync rows.
 */
import type { BenchRow } from './run-micro';
import { LoopbackCluster, LOOPBACK_CLUSTER_ID, type LoopbackMember } from '../test/helpers/replication-loopback';
import { pipePair } from '../test/helpers/sync-pipe';
import { SyncStreamServer } from '../src/cluster/sync-responder';
import { SyncRunner } from '../src/cluster/sync-runner';

function fill(c: LoopbackCluster, m: LoopbackMember, n: number): void {
  const k = new Uint8Array(new ArrayBuffer(40));
  for (let i = 0; i < n; i++) {
    const vip = i % 5 === 4 ? 1 : i % 5 === 3 ? 2 : 0;
    c.flowKey(i, vip, i % 7 === 0 ? 17 : 6, k);
    if (c.openFlow(m, k, i % 3, (i + 1) % 3, vip, (i >>> 2) % (vip === 0 ? 3 : 2), 3) < 0) throw new Error(`insert ${i} failed`);
  }
}

async function once(n: number): Promise<{ ms: number; snapshotMs: number }> {
  let cap = 1024;
  while (cap < n * 1.05) cap *= 2;
  const c = new LoopbackCluster({ balancers: 3, capacity: cap, mode: 'async' });
  const a = c.join(0);
  fill(c, a, n);
  const d = c.join(2);
  const id = (m: LoopbackMember) => ({ key: c.key, clusterId: LOOPBACK_CLUSTER_ID, selfIndex: m.index, incarnation: m.signer.incarnation, balancerCount: 3 });
  const server = new SyncStreamServer({ ...id(a), host: a.replicator.syncHost, stats: a.replicator.stats });
  const runner = new SyncRunner({
    ...id(d),
    host: d.replicator.syncHost,
    stats: d.replicator.stats,
    connect: () => {
      const p = pipePair();
      server.accept(p.b, 2);
      return p.a;
    },
    candidates: () => [0],
  });
  const t0 = performance.now();
  const r = await runner.run();
  const ms = performance.now() - t0;
  if (!r.ok || d.table.size !== n) throw new Error(`sync of ${n}: ${r.reason}, ${d.table.size} flows`);
  return { ms, snapshotMs: a.replicator.stats.syncSnapshotLastMs };
}

export async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const n of [100_000, 1_000_000]) {
    let best = { ms: Infinity, snapshotMs: 0 };
    for (let i = 0; i < (n > 100_000 ? 2 : 3); i++) {
      const x = await once(n);
      if (x.ms < best.ms) best = x;
    }
    const label = n >= 1e6 ? `${n / 1e6}M` : `${n / 1e3}k`;
    rows.push({ name: `sync stream ${label} flows, both ends on one core`, value: (n / best.ms) * 1e3, unit: 'rec/s', target: n >= 1e6 ? '1M in < 10 s' : '' });
    rows.push({ name: `sync stream ${label} flows: time`, value: best.ms, unit: 'ms' });
    rows.push({ name: `sync stream ${label} flows: responder snapshot`, value: best.snapshotMs, unit: 'ms' });
  }
  return rows;
}

if (require.main === module) {
  run().then(
    (rows) => {
      for (const r of rows) console.log(`${r.name.padEnd(52)} ${r.value.toFixed(0).padStart(10)} ${r.unit}`);
    },
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
