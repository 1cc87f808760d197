/**
 * The whole per-packet path of an established flow, as the data plane runs it:
 * Forwarder.processPacket = parse + key + VIP match + flow-table hit + touch + NAT rewrite.
 *
 *   established, 256 flows      the flows' records stay in cache (the common case of a busy
 *                               balancer's active set). Every flow made a real handshake first
 *                               (SYN, the backend's SYN-ACK, the client's ACK: confirmed), so
 *                               its packets take the confirmed path (sequence tracking).
 *   established, 1M flows       packets of random flows among 1,048,576: every lookup misses
 *                               the CPU caches (index slot + record), the worst case
 *   new flow (decision+insert)  a SYN of a flow not in the table: hash, rank, backend row,
 *                               reply key, two-index insert
 *
 * processPacket rewrites in place, so every pass restores the batch from a template first;
 * the copy is timed alone and subtracted (reported too).
 *
 *   npx tsx bench/forwarder-hot-path.bench.ts
 *   TUNLB_BENCH_DIST=/path/to/other/checkout/dist/src npx tsx bench/forwarder-hot-path.bench.ts
 *       the same bench against another build (A/B: alternate runs of the two builds)
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { layout, tcp4, TCP_ACK, TCP_SYN } from '../test/helpers/packets';
import type { BenchRow } from './run-micro';
import type * as ConfigMod from '../src/config';
import type * as HashKeyMod from '../src/decision/hash-key';
import type * as FlowMod from '../src/flow';
import type * as ForwarderMod from '../src/dataplane/forwarder';
import type * as FtMod from '../src/decision/forwarding-table';
import type { Forwarder } from '../src/dataplane/forwarder';

// The balancer runs the tsc build (dist/); under tsx every imported binding is a getter call
// V8 does not inline, which inflates these figures by ~1.5-2x. So measure dist/ when built.
const DIST = process.env['TUNLB_BENCH_DIST'] ?? join(__dirname, '..', 'dist', 'src');
const FROM = existsSync(join(DIST, 'dataplane', 'forwarder.js')) ? DIST : join(__dirname, '..', 'src');
const load = <T>(rel: string): T => require(join(FROM, rel)) as T; // eslint-disable-line @typescript-eslint/no-require-imports
const { parseConfig } = load<typeof ConfigMod>('config');
const { deriveHashKey } = load<typeof HashKeyMod>('decision/hash-key');
const { FlowTable } = load<typeof FlowMod>('flow');
const { Forwarder: ForwarderClass, Action } = load<typeof ForwarderMod>('dataplane/forwarder');
const { buildForwardingTable } = load<typeof FtMod>('decision/forwarding-table');
const CSUM_FULL = 0;
const BUILD = FROM === DIST ? (process.env['TUNLB_BENCH_DIST'] !== undefined ? 'other dist' : 'dist') : 'tsx';

const BATCH = 256;
const SLOT = 256;
const TARGET_NS = 150;

const CONFIG = `
cluster: { id: bench, key_env: BENCH_KEY }
balancers: [{ id: lb1, address: 10.99.2.11 }]
vips:
  - name: web4
    address: 10.99.0.10
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }, { address: 10.99.3.23 }]
flow_table: { capacity: 1048576 }
`;

function setup(): Forwarder {
  const config = parseConfig(CONFIG, 'bench.yaml', { env: { BENCH_KEY: 'ab'.repeat(32) } });
  const hashKey = deriveHashKey(config.cluster.key.reveal());
  const table = new FlowTable({ capacity: config.flowTable.capacity });
  const live = new Uint8Array(1).fill(1);
  return new ForwarderClass({ table, forwarding: buildForwardingTable(config, hashKey, 1), hashKey, selfIndex: 0, live });
}

function clientAddr(i: number): string {
  return `10.${100 + ((i >>> 16) & 0x3f)}.${(i >>> 8) & 0xff}.${i & 0xff}`;
}

const C_ISN = 1000;
const S_ISN = 7000;

/**
 * A batch of BATCH packets of flows `ids[k]` (flow i = client addr from i, port 40000): SYNs
 * (seq C_ISN), or the client's segments after the handshake (seq C_ISN + 1, ack S_ISN + 1).
 */
function batchOf(ids: ArrayLike<number>, flags: number): { tpl: Uint8Array; offs: Int32Array; lens: Int32Array } {
  const tpl = new Uint8Array(BATCH * SLOT);
  const offs = new Int32Array(BATCH);
  const lens = new Int32Array(BATCH);
  const payload = new Uint8Array(32).fill(0x61);
  for (let k = 0; k < BATCH; k++) {
    const syn = (flags & TCP_SYN) !== 0;
    const p = tcp4(clientAddr(ids[k]!), '10.99.0.10', 40000, 80, flags, syn ? new Uint8Array(0) : payload, syn ? { seq: C_ISN } : { seq: C_ISN + 1, ack: S_ISN + 1 });
    offs[k] = k * SLOT + 64;
    lens[k] = p.length;
    tpl.set(p, offs[k]!);
  }
  return { tpl, offs, lens };
}

/**
 * The handshake of flows `ids` through `fwd`: SYN (decided, NAT'd to a backend), the backend's
 * SYN-ACK (un-NAT'd), the client's ACK of the server's ISN + 1. Builds that confirm flows
 * (issue 12) confirm them here; older ones establish them on the ACK.
 */
function handshake(fwd: Forwarder, ids: ArrayLike<number>): void {
  const buf = new Uint8Array(SLOT);
  for (let k = 0; k < ids.length; k++) {
    const client = clientAddr(ids[k]!);
    const syn = tcp4(client, '10.99.0.10', 40000, 80, TCP_SYN, new Uint8Array(0), { seq: C_ISN });
    buf.set(syn);
    if (fwd.processPacket(buf, 0, syn.length, CSUM_FULL, 1) !== Action.EMIT) throw new Error('bench: SYN not forwarded');
    const L = layout(buf);
    const backend = Array.from(buf.subarray(L.dstOff, L.dstOff + 4)).join('.');
    const synack = tcp4(backend, client, 80, 40000, TCP_SYN | TCP_ACK, new Uint8Array(0), { seq: S_ISN, ack: C_ISN + 1 });
    buf.set(synack);
    if (fwd.processPacket(buf, 0, synack.length, CSUM_FULL, 1) !== Action.EMIT) throw new Error('bench: SYN-ACK not un-NATed');
    const ack = tcp4(client, '10.99.0.10', 40000, 80, TCP_ACK, new Uint8Array(0), { seq: C_ISN + 1, ack: S_ISN + 1 });
    buf.set(ack);
    if (fwd.processPacket(buf, 0, ack.length, CSUM_FULL, 1) !== Action.EMIT) throw new Error('bench: ACK not forwarded');
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/** ns per packet of processPacket over the batches (median of runs), minus the restore copy. */
function measure(fwd: Forwarder, batches: ReturnType<typeof batchOf>[], rounds: number): { ns: number; copyNs: number } {
  const work = new Uint8Array(BATCH * SLOT);
  const runs: number[] = [];
  const copies: number[] = [];
  let emitted = 0;
  for (let r = 0; r < 7; r++) {
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) work.set(batches[i % batches.length]!.tpl);
    copies.push(Number(process.hrtime.bigint() - t0) / (rounds * BATCH));
    t0 = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) {
      const b = batches[i % batches.length]!;
      work.set(b.tpl);
      for (let k = 0; k < BATCH; k++) if (fwd.processPacket(work, b.offs[k]!, b.lens[k]!, CSUM_FULL, 1) === Action.EMIT) emitted++;
    }
    runs.push(Number(process.hrtime.bigint() - t0) / (rounds * BATCH));
  }
  if (emitted === 0) throw new Error('bench: nothing was forwarded');
  const copyNs = median(copies);
  return { ns: median(runs) - copyNs, copyNs };
}

export async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  // Cache-hot: 256 established flows.
  {
    const fwd = setup();
    const ids = Array.from({ length: BATCH }, (_, i) => i);
    handshake(fwd, ids);
    const est = batchOf(ids, TCP_ACK);
    const m = measure(fwd, [est], 2000);
    rows.push({ name: `forwarder (${BUILD}): established flow, 256 flows (parse+lookup+NAT)`, value: m.ns, unit: 'ns/pkt', target: `≤ ${TARGET_NS}` });
    rows.push({ name: `forwarder (${BUILD}): batch restore copy (subtracted)`, value: m.copyNs, unit: 'ns/pkt' });
  }
  // Cache-cold: 1M established flows, random packets.
  {
    const fwd = setup();
    const N = 1 << 20;
    const all = new Int32Array(N);
    for (let i = 0; i < N; i++) all[i] = i;
    const create: ReturnType<typeof batchOf>[] = [];
    for (let i = 0; i < N; i += BATCH) create.push(batchOf(all.subarray(i, i + BATCH), TCP_SYN));
    const t0 = process.hrtime.bigint();
    measureOnce(fwd, create);
    const newNs = Number(process.hrtime.bigint() - t0) / N;
    rows.push({ name: `forwarder (${BUILD}): new flow (decision + insert), filling to 1M`, value: newNs, unit: 'ns/pkt', target: '≤ 1000' });
    handshake(fwd, all);
    let seed = 12345;
    const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % N;
    const random: ReturnType<typeof batchOf>[] = [];
    for (let b = 0; b < 64; b++) random.push(batchOf(Array.from({ length: BATCH }, rnd), TCP_ACK));
    const m = measure(fwd, random, 512);
    rows.push({ name: `forwarder (${BUILD}): established flow, random among 1M flows`, value: m.ns, unit: 'ns/pkt' });
  }
  return rows;
}

function measureOnce(fwd: Forwarder, batches: ReturnType<typeof batchOf>[]): void {
  for (const b of batches) for (let k = 0; k < BATCH; k++) fwd.processPacket(b.tpl, b.offs[k]!, b.lens[k]!, CSUM_FULL, 1);
}

if (require.main === module) {
  void run().then((rows) => {
    for (const r of rows) console.log(`${r.name.padEnd(60)} ${r.value.toFixed(1).padStart(9)} ${r.unit}  ${r.target ?? ''}`);
  });
}
