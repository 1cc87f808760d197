/**
 * Flow-record replication end to end, between two Replicators on the in-memory loopback net
 * (test/helpers/replication-loopback.ts; real signing, EnvelopeReceiver verification, apply):
 *   npx tsx bench/replication-records.bench.ts    prints a table
 *   npm run bench:micro -- replication            via the runner (exports run())
 *
 * replicate: flowReady(id) for N live flows on A -> A.flush() (encode + sign) -> B receives
 *   (verify + decode) -> B applies (lookup, reply key, insert, state, lastSeen). IPv4 TCP NAT
 *   flows (13-byte compact keys). Timed from the first flowReady to the last apply.
 * apply only: the same datagrams into a fresh table (receive + apply), without the encode.
 * refresh: A.refreshTick() over N replicated flows all due (scan + REFRESH encode + sign), and
 *   B's receive + apply of the REFRESHes (known keys: verify, decode, lookup, lastSeen).
 * bulk sync: B.requestSync(A) of N flows, async delivery (setImmediate per datagram, the
 *   server's own pacing), wall clock from request to the verified done chunk.
 *
 * Targets: a forwarding core does ~185k pps (bench/dataplane/RESULTS.md); with ~10-packet flows that is ~18k
 * new flows/s per balancer, i.e. ~37k records/s out (create + delete) and N-1 times that in.
 * A balancer's replication should stay well under a tenth of a core at that rate.
 */
import type { BenchRow } from './run-micro';
import { LoopbackCluster, type LoopbackMember } from '../test/helpers/replication-loopback';
import { FlowFlags, FlowState } from '../src/flow';

const N = 100_000;
const ROUNDS = 3;

function setup(n: number): { c: LoopbackCluster; a: LoopbackMember; ids: Int32Array } {
  const c = new LoopbackCluster({ balancers: 3, capacity: 1 << 18, mode: 'manual', replicator: { flushBudget: 1 << 20, queueCapacity: 1 << 18 } });
  const a = c.join(0);
  const key = new Uint8Array(new ArrayBuffer(40));
  const ids = new Int32Array(n);
  // SYN and SYN-ACK only (no ready event), then confirmed and established by hand: the bench
  // calls flowReady itself.
  for (let i = 0; i < n; i++) {
    c.flowKey(i, 0, 6, key);
    ids[i] = c.openFlow(a, key, i % 3, (i + 1) % 3, 0, i % 3, 2);
    if (ids[i]! < 0) throw new Error(`insert ${i} failed`);
    a.table.updateFlags(ids[i]!, FlowFlags.CONFIRMED, 0);
    a.table.setState(ids[i]!, FlowState.TCP_ESTABLISHED);
  }
  return { c, a, ids };
}

function replicateOnce(n: number): { ns: number; dgrams: number; applyNs: number } {
  const { c, a, ids } = setup(n);
  const b = c.join(1);
  const captured: Uint8Array[] = [];
  c.net.tap = (d) => {
    if (d.to === 1) captured.push(d.dgram);
  };
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) a.replicator.flowReady(ids[i]!);
  a.replicator.flush();
  c.net.deliverAll();
  const ns = Number(process.hrtime.bigint() - t0);
  if (b.table.size !== n) throw new Error(`B has ${b.table.size} of ${n}`);
  // apply only: the captured datagrams into a fresh B'.
  const c2 = new LoopbackCluster({ balancers: 3, capacity: 1 << 18 });
  c2.join(0);
  c2.join(2);
  const b2 = c2.join(1);
  const t1 = process.hrtime.bigint();
  for (const d of captured) c2.net.deliver({ from: 0, to: 1, dgram: d, n: 0 });
  const applyNs = Number(process.hrtime.bigint() - t1);
  if (b2.table.size !== n) throw new Error(`B' has ${b2.table.size} of ${n}`);
  return { ns, dgrams: captured.length, applyNs };
}

function refreshOnce(n: number): { ns: number; applyNs: number; records: number } {
  const { c, a, ids } = setup(n);
  const b = c.join(1);
  for (let i = 0; i < n; i++) a.replicator.flowReady(ids[i]!);
  a.replicator.flush();
  c.net.deliverAll();
  a.now += 30;
  b.now += 30;
  const toB: Uint8Array[] = [];
  c.net.tap = (d) => {
    if (d.to === 1) toB.push(d.dgram);
  };
  const before = a.replicator.stats.refreshesSent;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < a.replicator.refreshCycleTicks && a.replicator.stats.refreshesSent - before < n; i++) a.replicator.refreshTick();
  const ns = Number(process.hrtime.bigint() - t0);
  const records = a.replicator.stats.refreshesSent - before;
  c.net.clear();
  const u0 = b.replicator.stats.updated;
  const t1 = process.hrtime.bigint();
  for (const d of toB) c.net.deliver({ from: 0, to: 1, dgram: d, n: 0 });
  const applyNs = Number(process.hrtime.bigint() - t1);
  if (b.replicator.stats.updated - u0 !== records) throw new Error('refresh apply count mismatch');
  return { ns, applyNs, records };
}

async function syncOnce(n: number): Promise<{ ms: number; chunks: number }> {
  const c = new LoopbackCluster({ balancers: 3, capacity: 1 << 18, mode: 'async' });
  const a = c.join(0);
  const key = new Uint8Array(new ArrayBuffer(40));
  for (let i = 0; i < n; i++) {
    c.flowKey(i, 0, 6, key);
    c.openFlow(a, key, i % 3, (i + 1) % 3, 0, i % 3, 3);
  }
  a.replicator.flush();
  const d = c.join(2);
  const t0 = performance.now();
  const r = await d.replicator.requestSync(0, 60_000);
  const ms = performance.now() - t0;
  if (r.records !== n || d.table.size !== n) throw new Error('sync count mismatch');
  return { ms, chunks: r.chunks };
}

export async function run(): Promise<BenchRow[]> {
  replicateOnce(20_000); // warm-up
  let best = Infinity;
  let bestApply = Infinity;
  let dgrams = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const x = replicateOnce(N);
    best = Math.min(best, x.ns);
    bestApply = Math.min(bestApply, x.applyNs);
    dgrams = x.dgrams;
  }
  let bestRefresh = Infinity;
  let bestRefreshApply = Infinity;
  let refreshed = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const x = refreshOnce(N);
    bestRefresh = Math.min(bestRefresh, x.ns);
    bestRefreshApply = Math.min(bestRefreshApply, x.applyNs);
    refreshed = x.records;
  }
  await syncOnce(20_000);
  let bestSync = Infinity;
  let chunks = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const x = await syncOnce(N);
    bestSync = Math.min(bestSync, x.ms);
    chunks = x.chunks;
  }
  return [
    { name: 'replication records per datagram (IPv4)', value: N / dgrams, unit: 'rec' },
    { name: 'replication flowReady→flush→verify→apply', value: (N / best) * 1e9, unit: 'rec/s', target: '>= 100k/s' },
    { name: 'replication receive+apply (new flows)', value: (N / bestApply) * 1e9, unit: 'rec/s', target: '>= 150k/s' },
    { name: 'replication refresh scan+encode', value: (refreshed / bestRefresh) * 1e9, unit: 'rec/s', target: '>= 200k/s' },
    { name: 'replication receive+apply (refresh, known)', value: (refreshed / bestRefreshApply) * 1e9, unit: 'rec/s', target: '>= 150k/s' },
    { name: 'bulk sync records (paced, end to end)', value: (N / bestSync) * 1e3, unit: 'rec/s', target: '>= 50k/s' },
    { name: 'bulk sync records per chunk', value: N / chunks, unit: 'rec' },
  ];
}

if (require.main === module) {
  run()
    .then((rows) => {
      const w = Math.max(...rows.map((r) => r.name.length));
      const fmt = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
      console.log(`node ${process.version}`);
      for (const r of rows) console.log(`${r.name.padEnd(w)}  ${fmt(r.value).padStart(10)} ${r.unit.padEnd(8)} ${r.target ?? ''}`);
    })
    .catch((e: unknown) => {
      console.error(e);
      process.exit(1);
    });
}
