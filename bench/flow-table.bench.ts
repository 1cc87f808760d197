/**
 * Flow table benchmarks at 1M flows (capacity 2^20, NAT: forward + reply key per flow).
 *   npx tsx bench/flow-table.bench.ts      prints a table
 *   npm run bench:micro -- flow            via the runner (exports run())
 *
 * Keys are written into one caller-owned scratch key per direction (two words change per flow:
 * the client address and the ports), so key building costs ~1 ns and no key array distorts RSS.
 * Lookups walk the flows in a multiplicative permutation order (random slots, cache-cold).
 * RSS per flow: process RSS after a forced GC, before constructing the table and after filling
 * it, divided by the flow count (includes both indexes, both keys and every field).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FlowTable } from '../src/flow';

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  target?: string;
}

const N = 1 << 20;
const PERM = 0x9e3779b1 >>> 0; // odd: i -> (i * PERM) mod 2^20 is a permutation

function forceGc(): void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (() => void) | undefined;
  if (typeof gc === 'function') {
    gc();
    gc();
  }
}

function makeKeys(): { fwd: Uint32Array; rep: Uint32Array } {
  const f = new Uint8Array(40);
  const r = new Uint8Array(40);
  // fwd: ::ffff:10.99.x.y:port -> ::ffff:10.99.0.10:80, TCP, v4
  f[10] = 0xff; f[11] = 0xff; f[26] = 0xff; f[27] = 0xff; f[28] = 10; f[29] = 99; f[31] = 10; f[35] = 80; f[36] = 6; f[37] = 4;
  // reply: ::ffff:10.99.3.21:80 -> client
  r[10] = 0xff; r[11] = 0xff; r[12] = 10; r[13] = 99; r[14] = 3; r[15] = 21; r[26] = 0xff; r[27] = 0xff; r[33] = 80; r[36] = 6; r[37] = 4;
  return { fwd: new Uint32Array(f.buffer, 0, 10), rep: new Uint32Array(r.buffer, 0, 10) };
}

/** Flow i: client address word and port word (host order; the table only hashes words). */
function setFlow(fwd: Uint32Array, rep: Uint32Array, i: number): void {
  const addr = (0x0a630000 + (i >>> 4)) >>> 0;
  const port = 1024 + (i & 15) * 4000;
  fwd[3] = addr;
  fwd[8] = port | (80 << 16);
  rep[7] = addr;
  rep[8] = 80 | (port << 16);
}

function nsPerOp(t0: bigint, ops: number): number {
  return Number(process.hrtime.bigint() - t0) / ops;
}

export async function run(): Promise<BenchRow[]> {
  const { fwd, rep } = makeKeys();
  // Warm up the JIT on a small table, then drop it.
  {
    const w = new FlowTable({ capacity: 1 << 16, seed: 1 });
    for (let r = 0; r < 3; r++) {
      for (let i = 0; i < 1 << 16; i++) { setFlow(fwd, rep, i); w.insert(fwd, rep, 0, 1, 0, 2, 1); }
      for (let i = 0; i < 1 << 16; i++) { setFlow(fwd, rep, i); w.lookup(fwd, 1); w.lookup(rep, 1); }
      for (let i = 0; i < 1 << 16; i++) w.remove(i);
    }
  }
  forceGc();
  const rss0 = process.memoryUsage().rss;

  const ft = new FlowTable({ capacity: N });
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    setFlow(fwd, rep, i);
    if (ft.insert(fwd, rep, i & 31, (i + 1) & 31, 0, i & 0xffff, 1) < 0) throw new Error(`insert ${i} failed`);
  }
  const insertNs = nsPerOp(t0, N);
  forceGc();
  const rss1 = process.memoryUsage().rss;

  const PASSES = 3;
  let sink = 0;
  t0 = process.hrtime.bigint();
  for (let p = 0; p < PASSES; p++) {
    for (let k = 0; k < N; k++) {
      setFlow(fwd, rep, Math.imul(k, PERM) & (N - 1));
      sink += ft.lookup(fwd, 2);
    }
  }
  const hitNs = nsPerOp(t0, PASSES * N);

  t0 = process.hrtime.bigint();
  for (let k = 0; k < N; k++) {
    setFlow(fwd, rep, Math.imul(k, PERM) & (N - 1));
    sink += ft.lookup(rep, 2);
  }
  const replyNs = nsPerOp(t0, N);

  // Sequential order (neighbouring flows back to back, as in a batch of one flow's packets).
  t0 = process.hrtime.bigint();
  for (let k = 0; k < N; k++) {
    setFlow(fwd, rep, 12345);
    sink += ft.lookup(fwd, 2);
  }
  const hotNs = nsPerOp(t0, N);

  fwd[0] = 0x1234; // different prefix: every lookup misses
  t0 = process.hrtime.bigint();
  for (let k = 0; k < N; k++) {
    setFlow(fwd, rep, k);
    sink += ft.lookup(fwd, 2);
  }
  const missNs = nsPerOp(t0, N);
  fwd[0] = 0;

  const touchT0 = process.hrtime.bigint();
  for (let k = 0; k < N; k++) ft.touch(Math.imul(k, PERM) & (N - 1), 3, 0x10, k & 1);
  const touchNs = nsPerOp(touchT0, N);

  // Remove half, re-insert them: delete with backward shift, then inserts into a churned table.
  t0 = process.hrtime.bigint();
  for (let id = 0; id < N; id += 2) ft.remove(id);
  const removeNs = nsPerOp(t0, N / 2);
  t0 = process.hrtime.bigint();
  for (let id = 0; id < N; id += 2) {
    setFlow(fwd, rep, id);
    ft.insert(fwd, rep, 0, 1, 0, 2, 4);
  }
  const reinsertNs = nsPerOp(t0, N / 2);

  // Idle sweep: everything expired (SYN_SEEN 30 s); cost per examined+removed entry.
  t0 = process.hrtime.bigint();
  let expired = 0;
  while (ft.size > 0) expired += ft.expire(100_000, 4096);
  const expireNs = nsPerOp(t0, expired);

  if (sink === 0.5) console.log(sink); // keep the lookups alive
  const bytesPerFlow = (rss1 - rss0) / N;
  return [
    { name: 'flow insert (fwd+reply), 1M flows', value: insertNs, unit: 'ns/op' },
    { name: 'flow lookup hit fwd, 1M flows, random', value: hitNs, unit: 'ns/op', target: '<< 100' },
    { name: 'flow lookup hit reply, 1M flows, random', value: replyNs, unit: 'ns/op', target: '<< 100' },
    { name: 'flow lookup hit, same flow (cache-hot)', value: hotNs, unit: 'ns/op' },
    { name: 'flow lookup miss, 1M flows', value: missNs, unit: 'ns/op' },
    { name: 'flow touch, random', value: touchNs, unit: 'ns/op' },
    { name: 'flow remove (backward shift), 1M flows', value: removeNs, unit: 'ns/op' },
    { name: 'flow re-insert after churn', value: reinsertNs, unit: 'ns/op' },
    { name: 'flow expire sweep, per expired flow', value: expireNs, unit: 'ns/op' },
    { name: 'flow table RSS per flow at 1M', value: bytesPerFlow, unit: 'B/flow', target: '<= 128' },
    { name: 'flow table typed arrays per flow', value: ft.byteLength / N, unit: 'B/flow', target: '<= 128' },
  ];
}

if (require.main === module) {
  run()
    .then((rows) => {
      const w = Math.max(...rows.map((r) => r.name.length));
      console.log(`node ${process.version}`);
      for (const r of rows) console.log(`${r.name.padEnd(w)}  ${r.value.toFixed(1).padStart(9)} ${r.unit.padEnd(7)} ${r.target ?? ''}`);
    })
    .catch((e: unknown) => {
      console.error(e);
      process.exit(1);
    });
}
