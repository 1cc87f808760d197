/**
 * The peer path's per-packet cost: what the data-port tag (src/decision/data-tag.ts) adds.
 *   flow hash                 hashFlowKey over a 40-byte key: the reference, same run
 *   data-port tag             dataTag over header + flow key (HalfSipHash-2-4, 64-bit output)
 *   peer send                 Forwarder.processBatch on lb1 of two balancers, established flows
 *                             whose primary is lb2: parse + lookup + encapsulate (+ tag)
 *   peer receive              Forwarder.processPeerBatch on lb2, the datagrams lb1 sent:
 *                             header + parse (+ tag check) + lookup + NAT
 * Runs against dist/ when built (what the balancer runs), else src/ under tsx. Written so it
 * also runs against a build without the tag (no data-tag module: those rows are skipped), to
 * compare before and after: TUNLB_BENCH_DIST=<other build>/dist/src, alternating the two builds,
 * and read the ratios.
 *
 *   npx tsx bench/peer-path.bench.ts
 *   npm run bench:micro -- peer
 *   chrt -f 5 npx tsx bench/peer-path.bench.ts    (steadier on a loaded machine; docs/performance.md)
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tcp4, TCP_ACK, TCP_SYN } from '../test/helpers/packets';
import type { BenchRow } from './run-micro';
import type * as ConfigMod from '../src/config';
import type * as HashKeyMod from '../src/decision/hash-key';
import type * as HalfSipMod from '../src/decision/halfsiphash';
import type * as DataTagMod from '../src/decision/data-tag';
import type * as FlowMod from '../src/flow';
import type * as ForwarderMod from '../src/dataplane/forwarder';
import type * as BatchMod from '../src/dataplane/packet-batch';
import type * as FtMod from '../src/decision/forwarding-table';
import type { PacketBatch } from '../src/dataplane/packet-batch';
import type { PeerOutput } from '../src/dataplane/peer-output';

// TUNLB_BENCH_DIST=/path/to/dist/src measures another build (e.g. the commit before a change).
const DIST = process.env.TUNLB_BENCH_DIST ?? join(__dirname, '..', 'dist', 'src');
const FROM = existsSync(join(DIST, 'dataplane', 'forwarder.js')) ? DIST : join(__dirname, '..', 'src');
const BUILD = FROM === DIST ? 'dist' : 'tsx';
const load = <T>(rel: string): T => require(join(FROM, rel)) as T; // eslint-disable-line @typescript-eslint/no-require-imports
const has = (rel: string): boolean => existsSync(join(FROM, `${rel}${FROM === DIST ? '.js' : '.ts'}`));
const { parseConfig } = load<typeof ConfigMod>('config');
const hk = load<typeof HashKeyMod>('decision/hash-key');
const { hashFlowKey } = load<typeof HalfSipMod>('decision/halfsiphash');
const tagMod = has('decision/data-tag') ? load<typeof DataTagMod>('decision/data-tag') : null;
const { FlowTable } = load<typeof FlowMod>('flow');
const { Forwarder } = load<typeof ForwarderMod>('dataplane/forwarder');
const { PacketBatch: Batch } = load<typeof BatchMod>('dataplane/packet-batch');
const { buildForwardingTable } = load<typeof FtMod>('decision/forwarding-table');

const N = 256;
const RUNS = 7;

const CONFIG = `
cluster: { id: bench, key_env: BENCH_KEY }
balancers: [{ id: lb1, address: 10.99.2.11 }, { id: lb2, address: 10.99.2.12 }]
vips:
  - name: web4
    address: 10.99.0.10
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }, { address: 10.99.3.23 }]
flow_table: { capacity: 65536 }
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

function nsPerOp(f: (iters: number) => number, iters: number): number {
  f(iters >> 3); // warm-up
  const runs: number[] = [];
  let sink = 0;
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    sink ^= f(iters);
    runs.push(Number(process.hrtime.bigint() - t0) / iters);
  }
  if (sink === 0.5) console.log(sink);
  return median(runs);
}

function keys(): Uint8Array {
  const buf = new Uint8Array(4096 * 40);
  for (let i = 0; i < 4096; i++) {
    const o = i * 40;
    buf.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, (i >> 8) & 0xff, i & 0xff], o);
    buf.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, 0, 10], o + 16);
    buf.set([(40000 + i) >> 8, (40000 + i) & 0xff, 0, 80, 6, 4, 0, 0], o + 32);
  }
  return buf;
}

export async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const config = parseConfig(CONFIG, 'bench.yaml', { env: { BENCH_KEY: 'cd'.repeat(32) } });
  const hashKey = hk.deriveHashKey(config.cluster.key.reveal());
  const tagKey = 'deriveDataTagKey' in hk ? hk.deriveDataTagKey(config.cluster.key.reveal()) : new Uint32Array(2);

  // ---- the hash functions alone
  const ks = keys();
  const hdr = Uint8Array.of(0x20, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const out = new Uint32Array(2);
  const flowNs = nsPerOp((n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) acc ^= hashFlowKey(hashKey, ks, (i & 4095) * 40);
    return acc;
  }, 2_000_000);
  rows.push({ name: `peer path (${BUILD}): flow hash (HalfSipHash-2-4-32, 40 B), reference`, value: flowNs, unit: 'ns/op' });
  if (tagMod !== null) {
    const dataTag = tagMod.dataTag;
    const tagNs = nsPerOp((n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        dataTag(tagKey, hdr, 0, ks.subarray((i & 4095) * 40), 0, 1, out);
        acc ^= out[0]!;
      }
      return acc;
    }, 2_000_000);
    rows.push({ name: `peer path (${BUILD}): data-port tag (HalfSipHash-2-4-64, 52 B)`, value: tagNs, unit: 'ns/op', target: '20-40' });
    rows.push({ name: `peer path (${BUILD}): tag / flow hash`, value: tagNs / flowNs, unit: 'ratio' });
  }

  // ---- the forwarder: lb1 sends established flows to lb2, lb2 receives them
  const ft = buildForwardingTable(config, hashKey, 1);
  const live = Uint8Array.of(1, 1);
  const pa = new Uint8Array(32);
  config.balancers.forEach((b, i) => pa.set(b.address.bytes, i * 16));
  const peers = { addrs: pa, ports: Uint16Array.of(7947, 7947) };
  const table1 = new FlowTable({ capacity: 65536 });
  const b1 = new Batch({ count: N, maxPacket: 2048 });
  const out1: PeerOutput = { batch: new Batch({ count: N, maxPacket: 2048, share: b1 }), addrs: new Uint8Array(N * 16), ports: new Uint16Array(N), count: 0 };
  const opts = { forwarding: ft, hashKey, tagKey, live, peers, syncThreshold: 3 };
  const lb1 = new Forwarder({ ...opts, table: table1, selfIndex: 0, peerOutput: out1 });
  // Flows whose primary is lb2: SYNs through lb1, keep those it sent to the peer.
  const sports: number[] = [];
  for (let s = 1024; sports.length < N && s < 65535; s++) {
    b1.setPacket(0, tcp4('10.99.1.2', '10.99.0.10', s, 80, TCP_SYN));
    lb1.processBatch(b1, 1, false, 1);
    if (out1.count === 1) sports.push(s);
  }
  const payload = new Uint8Array(32).fill(0x61);
  const fill = (b: PacketBatch): void => {
    for (let k = 0; k < N; k++) b.setPacket(k, tcp4('10.99.1.2', '10.99.0.10', sports[k]!, 80, TCP_ACK, payload));
  };
  fill(b1);
  const tpl1 = b1.buf.slice();
  const offs1 = b1.offsets.slice();
  const sizes1 = b1.sizes.slice();
  // processBatch does not modify a packet it sends to a peer (the header goes into the headroom).
  const sendNs = nsPerOp((n) => {
    let sent = 0;
    for (let i = 0; i < n; i += N) {
      b1.offsets.set(offs1);
      b1.sizes.set(sizes1);
      lb1.processBatch(b1, N, false, 1);
      sent += out1.count;
    }
    if (sent === 0) throw new Error('bench: nothing sent to the peer');
    return sent;
  }, 400 * N);
  rows.push({ name: `peer path (${BUILD}): send, established flow to its primary (encapsulate${tagMod ? ' + tag' : ''})`, value: sendNs, unit: 'ns/pkt' });

  // lb2 receives what lb1 sent (one batch of N datagrams), restored before every pass.
  const table2 = new FlowTable({ capacity: 65536 });
  const lb2 = new Forwarder({ ...opts, table: table2, selfIndex: 1, peerOutput: { batch: new Batch({ count: N, maxPacket: 2048 }), addrs: new Uint8Array(N * 16), ports: new Uint16Array(N), count: 0 } });
  b1.buf.set(tpl1);
  b1.offsets.set(offs1);
  b1.sizes.set(sizes1);
  lb1.processBatch(b1, N, false, 1);
  const rx = new Batch({ count: N, maxPacket: 2048 });
  for (let k = 0; k < out1.count; k++) rx.setPacket(k, out1.batch.buf.subarray(out1.batch.offsets[k]!, out1.batch.offsets[k]! + out1.batch.sizes[k]!));
  const m = out1.count;
  const src = new Uint8Array(m * 16);
  for (let k = 0; k < m; k++) src.set(config.balancers[0]!.address.bytes, k * 16);
  const tpl2 = rx.buf.slice();
  const offs2 = rx.offsets.slice();
  const sizes2 = rx.sizes.slice();
  const restore = (): void => {
    rx.buf.set(tpl2);
    rx.offsets.set(offs2);
    rx.sizes.set(sizes2);
  };
  restore();
  if (lb2.processPeerBatch(rx, m, src, false, 1) !== m) throw new Error('bench: lb2 did not deliver every datagram (flows adopted on this pass)');
  const copyNs = nsPerOp((n) => {
    for (let i = 0; i < n; i += m) restore();
    return 1;
  }, 400 * m);
  const recvNs = nsPerOp((n) => {
    let got = 0;
    for (let i = 0; i < n; i += m) {
      restore();
      got += lb2.processPeerBatch(rx, m, src, false, 1);
    }
    if (got === 0) throw new Error('bench: nothing received');
    return got;
  }, 400 * m);
  rows.push({ name: `peer path (${BUILD}): receive, established flow (header${tagMod ? ' + tag check' : ''} + NAT)`, value: recvNs - copyNs, unit: 'ns/pkt' });
  rows.push({ name: `peer path (${BUILD}): receive batch restore copy (subtracted)`, value: copyNs, unit: 'ns/pkt' });
  return rows;
}

if (require.main === module) {
  void run().then((rows) => {
    for (const r of rows) console.log(`${r.name.padEnd(72)} ${r.value.toFixed(2).padStart(9)} ${r.unit}  ${r.target ?? ''}`);
  });
}
