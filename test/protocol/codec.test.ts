import test from 'ava';
import {
  decodeSigned,
  encodeSigned,
  EnvelopeSigner,
  macKey,
  newIncarnation,
  PROTOCOL_VERSION,
  ProtocolResult,
  protocolResultName,
  PROTOCOL_RESULT_NAMES,
  PROTOCOL_RESULT_COUNT,
  Op,
  type BodyFields,
  type BodyKind,
  type EnvelopeFields,
} from '../../src/protocol';
import { isTunlbError } from '../../src/errors';

const KEY = Buffer.from('0123456789abcdef0123456789abcdef', 'utf8');
const HEADER = { clusterId: 0x1234_5678_9abc, sender: 2, incarnation: newIncarnation(1_764_000_000_000), seq: 7, sentAtMs: 1_764_000_000_123 };

function v4Key(a: number, b: number, sport: number, dport: number, proto = 6): Uint8Array {
  const k = new Uint8Array(40);
  k[10] = k[11] = k[26] = k[27] = 0xff;
  k.set([10, 99, 1, a], 12);
  k.set([10, 99, 0, b], 28);
  k[32] = sport >> 8; k[33] = sport & 0xff; k[34] = dport >> 8; k[35] = dport & 0xff;
  k[36] = proto; k[37] = 4;
  return k;
}
function v6Key(seed: number): Uint8Array {
  const k = new Uint8Array(40);
  for (let i = 0; i < 32; i++) k[i] = (seed * 31 + i * 7) & 0xff;
  k[32] = 0xc3; k[33] = 0x50; k[34] = 0x01; k[35] = 0xbb; k[36] = 6; k[37] = 6;
  return k;
}

const record = (key: Uint8Array, op: number = Op.CREATE) => ({
  op, key, primary: 1, backup: 2, vip: 3, backend: 0xffff, state: 4, ageS: 3600, idleS: 12, tableGeneration: 99,
});

const bodies: { [K in BodyKind]: BodyFields[K] } = {
  records: { records: [record(v4Key(2, 10, 40000, 80)), record(v6Key(1), Op.REFRESH), record(v4Key(3, 10, 1, 2), Op.DELETE)] },
  probe: { nonce: 2 ** 52 + 1, sentAtMs: 123456, target: 1, status: 2, configHash: 0xabcdef123456 },
  probeAck: { nonce: 99, probeSentAtMs: 123456, proberIncarnation: 2 ** 53 - 1, status: 3, configHash: 2 ** 48 - 1 },
  syncRequest: { requestId: 0xdead_beef_cafe, fromCursor: 4096 },
  syncChunk: { requestId: 42, chunkIndex: 3, nextCursor: 8192, done: true, totalRecords: 1001, records: [record(v6Key(9))] },
  health: {},
  summary: {
    status: 2, configHash: 0x0123456789ab, flowsHeld: 4_000_000, flowsPrimary: 1_300_000, flowsBackup: 1_200_000,
    packetsInPerS: 2_500_000, packetsOutPerS: 2_400_000, bytesInPerS: 2 ** 40, bytesOutPerS: 2 ** 41, uptimeS: 86400 * 400,
    generation: 77, peerRttUs: [0, 250, 4_000_000], liveMask: 0xffffffff,
  },
  reloadRequest: { requestId: 2 ** 48 - 5 },
  reloadAnswer: { requestId: 2 ** 48 - 5, ok: true, configHash: 0xfedcba987654, detail: 'generation 3: VIPs +1/-0 … ünïcode' },
};

for (const kind of Object.keys(bodies) as BodyKind[]) {
  test(`round trip: ${kind}`, (t) => {
    const fields = { ...HEADER, [kind]: bodies[kind] } as EnvelopeFields;
    const dgram = encodeSigned(fields, KEY);
    const out = decodeSigned(dgram, 0, dgram.length, KEY);
    t.is(out.result, ProtocolResult.OK, protocolResultName(out.result));
    const env = out.envelope!;
    t.is(env.version, PROTOCOL_VERSION);
    t.is(env.clusterId, HEADER.clusterId);
    t.is(env.sender, HEADER.sender);
    t.is(env.incarnation, HEADER.incarnation);
    t.is(env.seq, HEADER.seq);
    t.is(env.sentAtMs, HEADER.sentAtMs);
    t.is(env.sender, out.sender);
    t.is(env.body, kind);
    for (const other of Object.keys(bodies) as BodyKind[]) if (other !== kind) t.is(env[other], null);
    // Compare through plain objects (decoded messages are class instances with prototype defaults).
    const plain = (v: unknown): unknown => {
      if (v instanceof Uint8Array) return Array.from(v);
      if (Array.isArray(v)) return v.map(plain);
      if (v !== null && typeof v === 'object') {
        const o: Record<string, unknown> = {};
        for (const k of Object.keys(v)) o[k] = plain((v as Record<string, unknown>)[k]);
        return o;
      }
      return v;
    };
    const got = env[kind] as unknown as Record<string, unknown>;
    const want = bodies[kind] as Record<string, unknown>;
    for (const f of Object.keys(want)) t.deepEqual(plain(got[f]), plain(want[f]), `${kind}.${f}`);
  });
}

test('decodes a datagram at an offset inside a larger buffer', (t) => {
  const dgram = encodeSigned({ ...HEADER, probe: { nonce: 5 } }, KEY);
  const big = new Uint8Array(dgram.length + 100).fill(0xee);
  big.set(dgram, 37);
  const out = decodeSigned(big, 37, dgram.length, KEY);
  t.is(out.result, ProtocolResult.OK);
  t.is(out.envelope!.probe!.nonce, 5);
});

test('KeyObject and raw key give the same datagram MAC', (t) => {
  const a = encodeSigned({ ...HEADER, probe: { nonce: 5 } }, KEY);
  const b = encodeSigned({ ...HEADER, probe: { nonce: 5 } }, macKey(KEY));
  t.deepEqual(Buffer.from(a), Buffer.from(b));
  t.is(decodeSigned(a, 0, a.length, macKey(KEY)).result, ProtocolResult.OK);
});

test('out object is reused and reset', (t) => {
  const good = encodeSigned({ ...HEADER, probe: { nonce: 5 } }, KEY);
  const out = decodeSigned(good, 0, good.length, KEY);
  t.truthy(out.envelope);
  const same = decodeSigned(good, 0, 3, KEY, out);
  t.is(same, out);
  t.is(out.result, ProtocolResult.MALFORMED_OUTER);
  t.is(out.envelope, null);
  t.is(out.sender, -1);
});

test('encodeSigned rejects bad header fields and body counts (programming errors)', (t) => {
  const cases: EnvelopeFields[] = [
    { ...HEADER } as EnvelopeFields,
    { ...HEADER, probe: { nonce: 1 }, health: {} },
    { ...HEADER, sender: 32, probe: {} },
    { ...HEADER, seq: -1, probe: {} },
    { ...HEADER, seq: 2 ** 53, probe: {} },
    { ...HEADER, incarnation: 1.5, probe: {} },
  ];
  for (const c of cases) {
    const e = t.throws(() => encodeSigned(c, KEY));
    t.true(isTunlbError(e, 'TUNLB_PROTOCOL'), String(e));
  }
});

test('signer numbers envelopes 1, 2, 3... across body kinds and fills the header', (t) => {
  const signer = new EnvelopeSigner({ key: KEY, clusterId: 77, sender: 4, incarnation: 1234, wallClockMs: () => 5000.7 });
  const seqs: number[] = [];
  for (const kind of Object.keys(bodies) as BodyKind[]) {
    const d = signer.seal(kind, bodies[kind]);
    const out = decodeSigned(d, 0, d.length, KEY);
    t.is(out.result, ProtocolResult.OK);
    const env = out.envelope!;
    t.is(env.body, kind);
    t.is(env.clusterId, 77);
    t.is(env.sender, 4);
    t.is(env.incarnation, 1234);
    t.is(env.sentAtMs, 5000);
    seqs.push(env.seq);
  }
  t.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.is(signer.nextSeq, 10);
});

test('signer rejects bad identities', (t) => {
  t.throws(() => new EnvelopeSigner({ key: KEY, clusterId: 1, sender: 32, incarnation: 1 }));
  t.throws(() => new EnvelopeSigner({ key: KEY, clusterId: 1, sender: 0, incarnation: 0 }));
  t.throws(() => new EnvelopeSigner({ key: KEY, clusterId: -1, sender: 0, incarnation: 1 }));
});

test('newIncarnation grows with the wall clock and stays a safe integer', (t) => {
  const a = newIncarnation(1_764_000_000_000);
  const b = newIncarnation(1_764_000_000_001);
  t.true(b > a);
  t.true(Number.isSafeInteger(newIncarnation(Date.UTC(2100, 0, 1))));
});

test('result names are stable snake_case, one per code', (t) => {
  t.is(PROTOCOL_RESULT_NAMES.length, PROTOCOL_RESULT_COUNT);
  t.is(Object.keys(ProtocolResult).length, PROTOCOL_RESULT_COUNT);
  for (const [k, v] of Object.entries(ProtocolResult)) {
    t.is(protocolResultName(v), k.toLowerCase());
    t.regex(protocolResultName(v), /^[a-z]+(_[a-z]+)*$/);
  }
  t.is(protocolResultName(999), 'unknown');
});
