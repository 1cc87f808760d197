/**
 * A/B of the forwarder's hot path between two builds, in one process:
 *
 *   npx tsx bench/forwarder-ab.ts <repo-a> <repo-b> [rounds]
 *
 * Each repository's compiled dist/ (built by `npm run build` there; e.g. an older commit in a
 * `git worktree`) is loaded on its own, and the two are measured in alternation, round by
 * round (order swapped every round), on the process's CPU time (process.cpuUsage), so that a
 * shared machine's load slows both alike and time spent descheduled does not count. Read the
 * ratios b/a, not the absolute figures. Not part of `npm run bench:micro` (it needs two builds).
 *
 * Rows (the cases of bench/forwarder-hot-path.bench.ts, plus the batch loop the data plane runs):
 *   established, 256 flows        processPacket over 256 established flows (cache-hot)
 *   established, 256 flows, batch processBatch over the same 256 packets (no virtio header)
 *   established, random among 1M  processPacket, packets of random flows among 1,048,576
 *   new flow, filling to 1M       processPacket of SYNs of new flows, both tables filled in
 *                                 alternating chunks of 4096 flows
 * Per row: the median ns/packet of each build over the rounds (the batch restore copy, timed
 * alone, subtracted), and the median and interquartile range of the per-round ratios b/a.
 *
 * Loads the pre-issue-10 layout too (decision/ modules then lived in cluster/ and dataplane/),
 * so a build from before that refactor can be one side.
 */
import { join, resolve } from 'node:path';
import { tcp4, TCP_ACK, TCP_SYN } from '../test/helpers/packets';

const BATCH = 256;
const SLOT = 256;
const CHUNK = 4096;
const N = 1 << 20;
const CONFIG = `
cluster: { id: bench, key_env: BENCH_KEY }
balancers: [{ id: lb1, address: 10.99.2.11 }]
vips:
  - name: web4
    address: 10.99.0.10
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }, { address: 10.99.3.23 }]
flow_table: { capacity: 1048576 }
`;

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-require-imports */
/** A Forwarder and a PacketBatch of one build (their types differ between builds). */
type Fwd = any;
type Pb = any;
interface Build {
  name: string;
  newForwarder: () => Fwd;
  newBatch: () => Pb;
}

function load(root: string): Build {
  const dist = join(resolve(root), 'dist', 'src');
  const req = (...rels: string[]): any => {
    for (const rel of rels) {
      try {
        return require(join(dist, rel));
      } catch (e) {
        if ((e as { code?: string }).code !== 'MODULE_NOT_FOUND') throw e;
      }
    }
    throw new Error(`forwarder-ab: none of ${rels.join(', ')} in ${dist} (run npm run build there)`);
  };
  const { parseConfig } = req('config');
  const { deriveHashKey } = req('decision/hash-key', 'cluster/hash-key');
  const { FlowTable } = req('flow');
  const { buildForwardingTable } = req('decision/forwarding-table', 'dataplane/forwarding-table');
  const { Forwarder } = req('dataplane/forwarder');
  const { PacketBatch } = req('dataplane/packet-batch');
  return {
    name: root,
    newForwarder: () => {
      const config = parseConfig(CONFIG, 'bench.yaml', { env: { BENCH_KEY: 'ab'.repeat(32) } });
      const hashKey = deriveHashKey(config.cluster.key.reveal());
      const table = new FlowTable({ capacity: config.flowTable.capacity });
      const live = new Uint8Array(1).fill(1);
      return new Forwarder({ table, forwarding: buildForwardingTable(config, hashKey, 1), hashKey, selfIndex: 0, live });
    },
    newBatch: () => new PacketBatch({ count: BATCH, maxPacket: SLOT, headroom: 128 }),
  };
}
/* eslint-enable @typescript-eslint/no-require-imports */

function clientAddr(i: number): string {
  return `10.${100 + ((i >>> 16) & 0x3f)}.${(i >>> 8) & 0xff}.${i & 0xff}`;
}

interface Batch {
  tpl: Uint8Array;
  offs: Int32Array;
  lens: Int32Array;
}

/** BATCH packets of flows ids[k] (client address from the id, port 40000 → VIP:80). */
function batchOf(ids: ArrayLike<number>, flags: number): Batch {
  const tpl = new Uint8Array(BATCH * SLOT);
  const offs = new Int32Array(BATCH);
  const lens = new Int32Array(BATCH);
  const payload = new Uint8Array(32).fill(0x61);
  for (let k = 0; k < BATCH; k++) {
    const p = tcp4(clientAddr(ids[k]!), '10.99.0.10', 40000, 80, flags, payload);
    offs[k] = k * SLOT + 64;
    lens[k] = p.length;
    tpl.set(p, offs[k]!);
  }
  return { tpl, offs, lens };
}

/** CPU time (user + system) in ns since `from`. */
function cpuNs(from: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(from);
  return (u.user + u.system) * 1000;
}

const work = new Uint8Array(BATCH * SLOT);

/** ns of CPU for `reps` passes of processPacket over the batches (restoring each first). */
function packets(fwd: Fwd, batches: Batch[], reps: number): number {
  const c0 = process.cpuUsage();
  let emitted = 0;
  for (let i = 0; i < reps; i++) {
    const b = batches[i % batches.length]!;
    work.set(b.tpl);
    for (let k = 0; k < BATCH; k++) if (fwd.processPacket(work, b.offs[k]!, b.lens[k]!, 0, 1) === 1) emitted++;
  }
  const ns = cpuNs(c0);
  if (emitted !== reps * BATCH) throw new Error(`forwarder-ab: ${reps * BATCH - emitted} packets not forwarded`);
  return ns;
}

function copies(batches: Batch[], reps: number): number {
  const c0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) work.set(batches[i % batches.length]!.tpl);
  return cpuNs(c0);
}

interface BatchTpl {
  buf: Uint8Array;
  offs: Uint32Array;
  sizes: Uint32Array;
}

/** The batch `b`'s packets laid out in a PacketBatch's slots. */
function batchTemplate(pb: Pb, b: Batch): BatchTpl {
  const buf = new Uint8Array(pb.buf.length);
  const offs = new Uint32Array(BATCH);
  const sizes = new Uint32Array(BATCH);
  for (let k = 0; k < BATCH; k++) {
    const o = k * pb.slotSize + pb.headroom;
    buf.set(b.tpl.subarray(b.offs[k]!, b.offs[k]! + b.lens[k]!), o);
    offs[k] = o;
    sizes[k] = b.lens[k]!;
  }
  return { buf, offs, sizes };
}

function batches(fwd: Fwd, pb: Pb, t: BatchTpl, reps: number): number {
  const c0 = process.cpuUsage();
  let emitted = 0;
  for (let i = 0; i < reps; i++) {
    pb.buf.set(t.buf);
    pb.offsets.set(t.offs);
    pb.sizes.set(t.sizes);
    emitted += fwd.processBatch(pb, BATCH, false, 1);
  }
  const ns = cpuNs(c0);
  if (emitted !== reps * BATCH) throw new Error(`forwarder-ab: ${reps * BATCH - emitted} packets not forwarded (batch)`);
  return ns;
}

function batchCopies(pb: Pb, t: BatchTpl, reps: number): number {
  const c0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) {
    pb.buf.set(t.buf);
    pb.offsets.set(t.offs);
    pb.sizes.set(t.sizes);
  }
  return cpuNs(c0);
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const quantile = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * q)]!;

interface Row {
  name: string;
  a: number[];
  b: number[];
}

function repeat(n: number, f: () => number): number[] {
  return Array.from({ length: n }, f);
}

/** Runs `measure(side)` for both sides, `rounds` times, order swapped every round. */
function alternate(rounds: number, measure: (side: 0 | 1) => number): { a: number[]; b: number[] } {
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const first = (r & 1) as 0 | 1;
    const x = measure(first);
    const y = measure((1 - first) as 0 | 1);
    (first === 0 ? a : b).push(x);
    (first === 0 ? b : a).push(y);
  }
  return { a, b };
}

function main(): void {
  const [ra, rb, roundsArg] = process.argv.slice(2);
  if (ra === undefined || rb === undefined) {
    console.error('usage: npx tsx bench/forwarder-ab.ts <repo-a> <repo-b> [rounds]');
    process.exit(2);
  }
  const rounds = Number(roundsArg ?? 41);
  const builds = [load(ra), load(rb)];
  const rows: Row[] = [];
  const ids256 = Array.from({ length: BATCH }, (_, i) => i);
  const syn256 = batchOf(ids256, TCP_SYN);
  const est256 = batchOf(ids256, TCP_ACK);

  // Established, 256 flows: processPacket and processBatch.
  {
    const fwd = builds.map((b) => b.newForwarder());
    for (const f of fwd) packets(f, [syn256], 1);
    for (const f of fwd) packets(f, [est256], 200); // warm-up
    const REPS = 100;
    const copy = median(repeat(rounds, () => copies([est256], REPS))) / (REPS * BATCH);
    const m = alternate(rounds, (s) => packets(fwd[s], [est256], REPS) / (REPS * BATCH) - copy);
    rows.push({ name: 'established, 256 flows', ...m });
    const pb = builds.map((b) => b.newBatch());
    const tpl = pb.map((p) => batchTemplate(p, est256));
    for (let s = 0; s < 2; s++) batches(fwd[s], pb[s], tpl[s]!, 200);
    const bcopy = median(repeat(rounds, () => batchCopies(pb[0], tpl[0]!, REPS))) / (REPS * BATCH);
    const mb = alternate(rounds, (s) => batches(fwd[s], pb[s], tpl[s]!, REPS) / (REPS * BATCH) - bcopy);
    rows.push({ name: 'established, 256 flows, batch', ...mb });
  }

  // New flows filling to 1M (chunk by chunk, alternating), then random established among them.
  {
    const fwd = builds.map((b) => b.newForwarder());
    const newA: number[] = [];
    const newB: number[] = [];
    const ids = new Int32Array(BATCH);
    for (let c = 0; c < N / CHUNK; c++) {
      const chunk: Batch[] = [];
      for (let i = 0; i < CHUNK; i += BATCH) {
        for (let k = 0; k < BATCH; k++) ids[k] = c * CHUNK + i + k;
        chunk.push(batchOf(ids, TCP_SYN));
      }
      const first = (c & 1) as 0 | 1;
      for (const s of [first, 1 - first]) {
        const ns = packets(fwd[s], chunk, chunk.length) / CHUNK;
        (s === 0 ? newA : newB).push(ns);
      }
    }
    rows.push({ name: 'new flow, filling to 1M', a: newA, b: newB });
    let seed = 12345;
    const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % N;
    const random: Batch[] = [];
    for (let b = 0; b < 64; b++) random.push(batchOf(Array.from({ length: BATCH }, rnd), TCP_ACK));
    for (const f of fwd) packets(f, random, 64);
    const REPS = 32;
    const copy = median(repeat(rounds, () => copies(random, REPS))) / (REPS * BATCH);
    const m = alternate(rounds, (s) => packets(fwd[s], random, REPS) / (REPS * BATCH) - copy);
    rows.push({ name: 'established, random among 1M flows', ...m });
  }

  const w = Math.max(...rows.map((r) => r.name.length));
  console.log(`node ${process.version}, ${new Date().toISOString()}, ${rounds} rounds, CPU time`);
  console.log(`a = ${builds[0]!.name}\nb = ${builds[1]!.name}`);
  console.log(`| ${'ns/packet'.padEnd(w)} | ${'a'.padStart(6)} | ${'b'.padStart(6)} | b/a (median, IQR)    |`);
  console.log(`| ${'-'.repeat(w)} | -----: | -----: | -------------------- |`);
  for (const r of rows) {
    const ratios = r.a.map((x, i) => r.b[i]! / x);
    console.log(
      `| ${r.name.padEnd(w)} | ${median(r.a).toFixed(1).padStart(6)} | ${median(r.b).toFixed(1).padStart(6)} | ` +
        `${median(ratios).toFixed(3)} (${quantile(ratios, 0.25).toFixed(3)}-${quantile(ratios, 0.75).toFixed(3)}) |`,
    );
  }
}

main();
