import test from 'ava';
import fc from 'fast-check';
import {
  COMPACT_V4_KEY_LEN,
  compactV4Key,
  DEFAULT_DATAGRAM_BUDGET,
  EnvelopeReceiver,
  EnvelopeSigner,
  expandWireKey,
  FLOW_KEY_LEN,
  flowRecordSize,
  delimitedSize,
  isCompactV4,
  newIncarnation,
  Op,
  ProtocolResult,
  RecordBatcher,
  varintSize,
  tunlb,
  type FlowRecordFields,
} from '../../src/protocol';

const KEY = Buffer.alloc(32, 1);
const CLUSTER = 0x00ab_cdef_0123; // a realistic non-zero 48-bit id
const SENDER = 3;

function v4Key(i: number): Uint8Array {
  const k = new Uint8Array(40);
  k[10] = k[11] = k[26] = k[27] = 0xff;
  k.set([10, 99, 1, 2 + (i % 200)], 12);
  k.set([10, 99, 0, 10], 28);
  const sport = 32768 + (i % 28000);
  k[32] = sport >> 8; k[33] = sport & 0xff; k[34] = 0x01; k[35] = 0xbb; // :443
  k[36] = 6; k[37] = 4;
  return k;
}
function v6Key(i: number): Uint8Array {
  const k = new Uint8Array(40);
  k.set([0xfd, 0x99, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (i >> 8) & 0xff, i & 0xff], 0); // fd99:1::/64 client
  k.set([0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10], 16); // fd99::10 VIP
  const sport = 32768 + (i % 28000);
  k[32] = sport >> 8; k[33] = sport & 0xff; k[34] = 0x01; k[35] = 0xbb;
  k[36] = 6; k[37] = 6;
  return k;
}
/** Typical values: a refresh of an established TCP flow, 5 minutes old, idle 4 s. */
const typical = (i: number): FlowRecordFields => ({
  op: Op.REFRESH, primary: 1, backup: 2, vip: 1, backend: 7 + (i % 5), state: 3, ageS: 300, idleS: 4, tableGeneration: 12,
});

function setup(budget?: number) {
  const signer = new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender: SENDER, incarnation: newIncarnation() });
  const out: Array<{ d: Uint8Array; n: number }> = [];
  const b = new RecordBatcher(signer, (d, n) => out.push({ d, n }), budget === undefined ? {} : { budget });
  return { signer, b, out };
}

function fillOne(keyOf: (i: number) => Uint8Array) {
  const { b, out } = setup();
  let i = 0;
  while (out.length === 0) b.append(typical(i), keyOf(i), 0), i++;
  return { first: out[0]!, nextRecordSize: delimitedSize(flowRecordSize(typical(i - 1), keyOf(0)[37] === 4 ? 13 : 40)) };
}

for (const [family, keyOf] of [['IPv4', v4Key], ['IPv6', v6Key]] as const) {
  test(`size: ${family} flow records per ${DEFAULT_DATAGRAM_BUDGET}-byte signed datagram`, (t) => {
    const { first, nextRecordSize } = fillOne(keyOf);
    t.log(`${family}: ${first.n} records in ${first.d.length} bytes (record ${nextRecordSize} bytes on the wire, budget ${DEFAULT_DATAGRAM_BUDGET})`);
    t.true(first.d.length <= DEFAULT_DATAGRAM_BUDGET);
    // Tight: one more record would not have fitted.
    t.true(first.d.length + nextRecordSize > DEFAULT_DATAGRAM_BUDGET);
    // The figures documented in protocol/tunlb.proto (FlowRecord): update both together.
    t.is(first.n, family === 'IPv4' ? 36 : 21);
    // And they decode back to the same records.
    const r = new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self: 0, balancerCount: 4, confirmBy: 'first-envelope' });
    const res = r.receive(first.d, 0, first.d.length);
    t.is(res.result, ProtocolResult.OK);
    const recs = res.envelope!.records!.records;
    t.is(recs.length, first.n);
    const key = new Uint8Array(40);
    recs.forEach((rec, i) => {
      t.true(expandWireKey(rec.key, key, 0));
      t.deepEqual(key, keyOf(i));
      t.is(rec.key.length, family === 'IPv4' ? COMPACT_V4_KEY_LEN : FLOW_KEY_LEN);
      const f = typical(i);
      t.deepEqual(
        [rec.op, rec.primary, rec.backup, rec.vip, rec.backend, rec.state, rec.ageS, rec.idleS, rec.tableGeneration],
        [f.op, f.primary, f.backup, f.vip, f.backend, f.state, f.ageS, f.idleS, f.tableGeneration],
      );
    });
  });
}

test('size: worst case (every field at its maximum) still packs', (t) => {
  const { b, out } = setup();
  const max: FlowRecordFields = { op: Op.DELETE, primary: 31, backup: 31, vip: 0xffff, backend: 0xffff, state: 0xffffffff, ageS: 0xffffffff, idleS: 0xffffffff, tableGeneration: 0xffffffff };
  for (let i = 0; out.length === 0; i++) b.append(max, v6Key(i), 0);
  t.log(`worst case IPv6: ${out[0]!.n} records in ${out[0]!.d.length} bytes`);
  t.true(out[0]!.d.length <= DEFAULT_DATAGRAM_BUDGET);
});

test('batcher: pending/flush for the caller timer; mixed families; stream decodes in order', (t) => {
  const { b, out } = setup();
  t.is(b.pending(), 0);
  t.is(b.flush(), 0);
  t.is(out.length, 0);
  b.append(typical(0), v4Key(0), 0);
  b.append(typical(1), v6Key(1), 0);
  t.is(b.pending(), 2);
  const bound = b.pendingBytes();
  t.is(b.flush(), 2);
  t.is(b.pending(), 0);
  t.is(out.length, 1);
  t.is(out[0]!.d.length, bound);

  // A long stream: every datagram within budget, all records arrive in order, seqs consecutive.
  const total = 5000;
  const keyBuf = new Uint8Array(4096); // keys at non-zero offsets inside a shared buffer
  for (let i = 0; i < total; i++) {
    const off = (i * 40) % 4000;
    keyBuf.set(i % 3 === 0 ? v6Key(i) : v4Key(i), off);
    b.append(typical(i), keyBuf, off);
  }
  b.flush();
  const r = new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self: 0, balancerCount: 4, confirmBy: 'first-envelope' });
  let seen = 0;
  const key = new Uint8Array(40);
  for (const { d, n } of out.slice(1)) {
    t.true(d.length <= DEFAULT_DATAGRAM_BUDGET);
    const res = r.receive(d, 0, d.length);
    t.is(res.result, ProtocolResult.OK);
    const recs = res.envelope!.records!.records;
    t.is(recs.length, n);
    for (const rec of recs) {
      expandWireKey(rec.key, key, 0);
      if (!Buffer.from(key).equals(Buffer.from(seen % 3 === 0 ? v6Key(seen) : v4Key(seen)))) t.fail(`record ${seen}`);
      seen++;
    }
  }
  t.is(seen, total);
  t.is(b.records, total + 2);
  t.is(b.datagrams, out.length);
  t.is(r.counts[ProtocolResult.OK], out.length - 1);
});

test('batcher: a seq varint growing between append and flush splits instead of overflowing', (t) => {
  const signer = new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender: SENDER, incarnation: 5 });
  for (let i = 1; i < 127; i++) signer.seal('probe', { nonce: i });
  t.is(signer.nextSeq, 127); // 1-byte varint; 128 needs 2
  const probe = new RecordBatcher(signer, () => {});
  for (let i = 0; i < 20; i++) probe.append(typical(i), v6Key(i), 0);
  const exact = probe.pendingBytes(); // a budget the 20 records fill to the byte
  const out: Array<{ d: Uint8Array; n: number }> = [];
  const b = new RecordBatcher(signer, (d, n) => out.push({ d, n }), { budget: exact });
  for (let i = 0; i < 20; i++) b.append(typical(i), v6Key(i), 0);
  t.is(out.length, 0);
  signer.seal('probe', { nonce: 0 }); // takes seq 127: the batch will carry 128
  t.is(b.flush(), 20);
  t.deepEqual(out.map((o) => o.n), [19, 1]);
  for (const { d } of out) t.true(d.length <= exact, `${d.length} > ${exact}`);
  // One byte more of header, one record less.
  t.is(out[0]!.d.length, exact + 1 - delimitedSize(flowRecordSize(typical(19), FLOW_KEY_LEN)));
});

test('batcher: small budgets are respected; silly budgets rejected', (t) => {
  for (const budget of [256, 512, 576, 9000]) {
    const { b, out } = setup(budget);
    for (let i = 0; i < 2000; i++) b.append(typical(i), i % 2 ? v6Key(i) : v4Key(i), 0);
    b.flush();
    for (const { d } of out) t.true(d.length <= budget, `${d.length} > ${budget}`);
    t.log(`budget ${budget}: ${Math.round(2000 / out.length)} records/datagram on average (mixed families)`);
  }
  const signer = new EnvelopeSigner({ key: KEY, clusterId: 1, sender: 0, incarnation: 1 });
  t.throws(() => new RecordBatcher(signer, () => {}, { budget: 100 }));
  t.throws(() => new RecordBatcher(signer, () => {}, { budget: 70000 }));
});

test('batcher: records are copied at append (caller may reuse its key buffer and fields object)', (t) => {
  const { b, out } = setup();
  const key = v4Key(1);
  const f = typical(0);
  b.append(f, key, 0);
  key.fill(0x55);
  f.backend = 999;
  b.flush();
  const r = new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self: 0, balancerCount: 4, confirmBy: 'first-envelope' });
  const rec = r.receive(out[0]!.d, 0, out[0]!.d.length).envelope!.records!.records[0]!;
  const k = new Uint8Array(40);
  expandWireKey(rec.key, k, 0);
  t.deepEqual(k, v4Key(1));
  t.is(rec.backend, typical(0).backend);
});

test('flowRecordSize matches the generated encoder exactly', (t) => {
  fc.assert(
    fc.property(
      fc.record({
        op: fc.integer({ min: 0, max: 3 }),
        primary: fc.integer({ min: 0, max: 31 }),
        backup: fc.integer({ min: 0, max: 31 }),
        vip: fc.nat(0xffff),
        backend: fc.nat(0xffff),
        state: fc.nat(0xffffffff),
        ageS: fc.nat(0xffffffff),
        idleS: fc.nat(0xffffffff),
        tableGeneration: fc.nat(0xffffffff),
      }),
      fc.constantFrom(0, 13, 40),
      (f, keyLen) => {
        const enc = tunlb.v1.FlowRecord.encode({ ...f, key: new Uint8Array(keyLen) }).finish();
        return enc.length === flowRecordSize(f, keyLen);
      },
    ),
    { numRuns: 2000 },
  );
  for (const v of [0, 1, 127, 128, 16383, 16384, 2 ** 28 - 1, 2 ** 28, 2 ** 35 - 1, 2 ** 35, 2 ** 53 - 1]) {
    t.is(varintSize(v), tunlb.v1.Probe.encode({ nonce: v || 1 }).finish().length - 1, `varint ${v}`);
  }
});

test('compact IPv4 key: lossless; only canonical IPv4 keys compact', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 13, maxLength: 13 }), (c) => {
      const k = new Uint8Array(40);
      t.true(expandWireKey(c, k, 0));
      if (!isCompactV4(k, 0)) return false;
      const back = new Uint8Array(13);
      compactV4Key(k, 0, back, 0);
      return Buffer.from(back).equals(Buffer.from(c));
    }),
    { numRuns: 1000 },
  );
  t.false(isCompactV4(v6Key(1), 0));
  const odd = v4Key(1);
  odd[0] = 1; // not ::ffff:
  t.false(isCompactV4(odd, 0));
  const odd2 = v4Key(1);
  odd2[37] = 6; // mapped address but version 6
  t.false(isCompactV4(odd2, 0));
  t.false(expandWireKey(new Uint8Array(12), new Uint8Array(40), 0));
});
