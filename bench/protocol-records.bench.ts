/**
 * Balancer-to-balancer flow records: throughput of the two ends of replication.
 *   npx tsx bench/protocol-records.bench.ts    prints a table
 *   npm run bench:micro -- protocol            via the runner (exports run())
 *
 * encode+sign: RecordBatcher.append() of typical records (copy, size accounting) and the
 *   flushes it triggers (protobufjs encode + HMAC-SHA256 + outer frame), full 1400-byte datagrams.
 * verify+decode: EnvelopeReceiver.receive() of those datagrams (outer parse, HMAC verify,
 *   protobufjs decode, record validation, cluster/sender/replay checks) plus expanding every
 *   record key to 40 bytes (what a consumer does first).
 *
 * Targets: a rough budget, not a measurement. A forwarding core does ~185k pps
 * (bench/dataplane/RESULTS.md); with short flows (~10 packets) that is ~18k new flows/s, i.e. ~37k records/s
 * (create + delete) to send per balancer, and N-1 times that to receive. The targets keep
 * replication well under a tenth of a core at that rate.
 */
import type { BenchRow } from './run-micro';
import {
  EnvelopeReceiver,
  EnvelopeSigner,
  expandWireKey,
  macKey,
  newIncarnation,
  Op,
  ProtocolResult,
  RecordBatcher,
  type FlowRecordFields,
} from '../src/protocol';

const KEY = macKey(Buffer.alloc(32, 0x5a));
const CLUSTER = 0x00ab_cdef_0123;
const RECORDS = 200_000;
const ROUNDS = 5;

function keys(family: 4 | 6, n: number): Uint8Array {
  const buf = new Uint8Array(n * 40);
  for (let i = 0; i < n; i++) {
    const o = i * 40;
    if (family === 4) {
      buf[o + 10] = buf[o + 11] = buf[o + 26] = buf[o + 27] = 0xff;
      buf.set([10, 99, 1 + ((i >> 8) & 0xff), i & 0xff], o + 12);
      buf.set([10, 99, 0, 10], o + 28);
    } else {
      buf.set([0xfd, 0x99, 0, 1], o);
      buf[o + 14] = (i >> 8) & 0xff;
      buf[o + 15] = i & 0xff;
      buf.set([0xfd, 0x99], o + 16);
      buf[o + 31] = 0x10;
    }
    const sport = 32768 + (i % 28000);
    buf[o + 32] = sport >> 8;
    buf[o + 33] = sport & 0xff;
    buf[o + 35] = 80;
    buf[o + 36] = 6;
    buf[o + 37] = family;
  }
  return buf;
}

function encode(keyBuf: Uint8Array, n: number, sender: number): { dgrams: Uint8Array[]; ns: number } {
  const signer = new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender, incarnation: newIncarnation() });
  const dgrams: Uint8Array[] = [];
  const b = new RecordBatcher(signer, (d) => dgrams.push(d));
  const f: FlowRecordFields = { op: Op.CREATE, primary: 1, backup: 2, vip: 1, backend: 7, state: 3, ageS: 0, idleS: 0, tableGeneration: 12 };
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    f.op = (i & 3) === 0 ? Op.CREATE : Op.REFRESH;
    f.backend = i & 15;
    f.ageS = i & 1023;
    b.append(f, keyBuf, i * 40);
  }
  b.flush();
  return { dgrams, ns: Number(process.hrtime.bigint() - t0) };
}

function decode(dgrams: Uint8Array[]): { ns: number; records: number } {
  const r = new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self: 0, balancerCount: 4, confirmBy: 'first-envelope' });
  const key40 = new Uint8Array(40);
  let records = 0;
  const t0 = process.hrtime.bigint();
  for (const d of dgrams) {
    const res = r.receive(d, 0, d.length);
    if (res.result !== ProtocolResult.OK) throw new Error(`bench datagram rejected: ${res.result}`);
    const recs = res.envelope!.records!.records;
    for (let i = 0; i < recs.length; i++) expandWireKey(recs[i]!.key, key40, 0);
    records += recs.length;
  }
  return { ns: Number(process.hrtime.bigint() - t0), records };
}

export async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const family of [4, 6] as const) {
    const keyBuf = keys(family, RECORDS);
    encode(keyBuf, 20_000, 1); // warm-up
    decode(encode(keyBuf, 20_000, 2).dgrams);
    let bestEnc = Infinity;
    let bestDec = Infinity;
    let dgrams: Uint8Array[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const e = encode(keyBuf, RECORDS, 1 + (round % 3));
      bestEnc = Math.min(bestEnc, e.ns);
      dgrams = e.dgrams;
      const d = decode(dgrams);
      if (d.records !== RECORDS) throw new Error('record count mismatch');
      bestDec = Math.min(bestDec, d.ns);
    }
    const perDgram = RECORDS / dgrams.length;
    const bytes = dgrams.reduce((s, d) => s + d.length, 0) / dgrams.length;
    rows.push(
      { name: `protocol IPv${family} records per datagram`, value: perDgram, unit: 'rec', target: `${bytes.toFixed(0)} B avg` },
      { name: `protocol IPv${family} encode+sign`, value: (RECORDS / bestEnc) * 1e9, unit: 'rec/s', target: '>= 300k/s' },
      { name: `protocol IPv${family} verify+decode`, value: (RECORDS / bestDec) * 1e9, unit: 'rec/s', target: '>= 300k/s' },
      { name: `protocol IPv${family} encode+sign datagrams`, value: (dgrams.length / bestEnc) * 1e9, unit: 'dgram/s' },
      { name: `protocol IPv${family} verify+decode datagrams`, value: (dgrams.length / bestDec) * 1e9, unit: 'dgram/s' },
    );
  }
  return rows;
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
