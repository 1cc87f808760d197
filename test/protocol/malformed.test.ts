import test from 'ava';
import fc from 'fast-check';
import {
  decodeSigned,
  encodeSigned,
  EnvelopeReceiver,
  EnvelopeSigner,
  computeMac,
  signEnvelopeBytes,
  ProtocolResult,
  protocolResultName,
  REPLAY_WINDOW,
  PROTOCOL_RESULT_COUNT,
  tunlb,
  Op,
  type EnvelopeFields,
} from '../../src/protocol';

const KEY = Buffer.alloc(32, 7);
const OTHER_KEY = Buffer.alloc(32, 8);
const CLUSTER = 4242;
const INC = 1_000_000;

const v4Key = (): Uint8Array => {
  const k = new Uint8Array(40);
  k[10] = k[11] = k[26] = k[27] = 0xff;
  k.set([10, 99, 1, 2], 12);
  k.set([10, 99, 0, 10], 28);
  k[33] = 80; k[35] = 80; k[36] = 6; k[37] = 4;
  return k;
};
const goodRecord = () => ({ op: Op.CREATE, key: v4Key(), primary: 1, backup: 2, vip: 0, backend: 1, state: 1, ageS: 1, idleS: 0, tableGeneration: 1 });

function env(over: Partial<EnvelopeFields> = {}): EnvelopeFields {
  return { clusterId: CLUSTER, sender: 1, incarnation: INC, seq: 2, sentAtMs: 1, records: { records: [goodRecord()] }, ...over } as EnvelopeFields;
}
const dgram = (over: Partial<EnvelopeFields> = {}, key: Buffer = KEY): Uint8Array => encodeSigned(env(over), key);
/**
 * A receiver (balancer 0 of 3) that has confirmed incarnation INC of senders 1 and 2 from a
 * fresh ack signed with seq 1 (src/protocol/receiver.ts): their window starts above 1.
 */
const receiver = () => {
  const r = new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self: 0, balancerCount: 3 });
  r.confirm(1, INC, 1);
  r.confirm(2, INC, 1);
  return r;
};
/** Signs arbitrary bytes as if they were an Envelope (a peer with the key but a bug). */
const signRaw = (bytes: Uint8Array): Uint8Array => signEnvelopeBytes(bytes, KEY);

function check(buf: Uint8Array, off = 0, len = buf.length): number {
  let r = -1;
  try {
    r = decodeSigned(buf, off, len, KEY).result;
  } catch (e) {
    throw new Error(`decodeSigned threw: ${String(e)}`);
  }
  return r;
}

const expectResult = (t: import('ava').ExecutionContext, got: number, want: number, what: string) =>
  t.is(protocolResultName(got), protocolResultName(want), what);

test('a valid datagram is OK (baseline)', (t) => {
  expectResult(t, receiver().receive(dgram(), 0, dgram().length).result, ProtocolResult.OK, 'baseline');
});

test('empty, out-of-range and non-buffer input: malformed_outer', (t) => {
  const d = dgram();
  expectResult(t, check(new Uint8Array(0)), ProtocolResult.MALFORMED_OUTER, 'empty');
  expectResult(t, check(d, 0, 0), ProtocolResult.MALFORMED_OUTER, 'len 0');
  expectResult(t, check(d, 1, d.length), ProtocolResult.MALFORMED_OUTER, 'past end');
  expectResult(t, check(d, -1, 4), ProtocolResult.MALFORMED_OUTER, 'negative off');
  expectResult(t, check(d, 0.5, 4), ProtocolResult.MALFORMED_OUTER, 'fractional off');
  expectResult(t, check(null as unknown as Uint8Array, 0, 4), ProtocolResult.MALFORMED_OUTER, 'null');
  expectResult(t, check('abc' as unknown as Uint8Array, 0, 3), ProtocolResult.MALFORMED_OUTER, 'string');
});

test('every truncation: malformed_outer, never a throw', (t) => {
  const d = dgram();
  for (let n = 1; n < d.length; n++) expectResult(t, check(d, 0, n), ProtocolResult.MALFORMED_OUTER, `truncated to ${n}`);
});

test('garbage: malformed_outer', (t) => {
  const cases = [
    Buffer.from('GET / HTTP/1.1\r\n\r\n'),
    Buffer.alloc(1400, 0xff),
    Buffer.alloc(64, 0),
    Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), // length prefix ~4 GiB
    Buffer.from([0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), // overlong varint
    Buffer.from([0x0b, 0x0c]), // start group / end group
    Buffer.from([0x0a, 0x02, 0x08, 0x01]), // envelope present, no mac
    Buffer.from([0x12, 0x20, ...new Uint8Array(32)]), // mac only
  ];
  for (const c of cases) expectResult(t, check(c), ProtocolResult.MALFORMED_OUTER, c.toString('hex').slice(0, 24));
});

test('mac of the wrong length: malformed_outer', (t) => {
  const envBytes = tunlb.v1.Envelope.encode({ version: 1, clusterId: CLUSTER, sender: 1, incarnation: INC, seq: 1, health: {} }).finish();
  const mac = computeMac(KEY, envBytes);
  for (const m of [mac.subarray(0, 31), Buffer.concat([mac, Buffer.from([0])]), Buffer.alloc(0)]) {
    const d = tunlb.v1.SignedEnvelope.encode({ envelope: envBytes, mac: m }).finish();
    expectResult(t, check(d), ProtocolResult.MALFORMED_OUTER, `mac ${m.length} bytes`);
  }
});

test('wrong key, flipped MAC bit, flipped envelope bit: bad_mac', (t) => {
  expectResult(t, check(dgram({}, OTHER_KEY)), ProtocolResult.BAD_MAC, 'wrong key');
  const d = dgram();
  for (const bit of [0, 3, 7]) {
    const m = Uint8Array.from(d);
    m[m.length - 1]! ^= 1 << bit;
    expectResult(t, check(m), ProtocolResult.BAD_MAC, `mac bit ${bit}`);
    const first = Uint8Array.from(d);
    first[d.length - 32]! ^= 1 << bit; // first MAC byte
    expectResult(t, check(first), ProtocolResult.BAD_MAC, `first mac byte bit ${bit}`);
  }
  // Every bit of the envelope payload (after the outer tag and 1-byte length: small datagram).
  const hdr = d[1]! < 0x80 ? 2 : 3;
  const envEnd = d.length - 34;
  for (let i = hdr; i < envEnd; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const m = Uint8Array.from(d);
      m[i]! ^= 1 << bit;
      expectResult(t, check(m), ProtocolResult.BAD_MAC, `envelope byte ${i} bit ${bit}`);
    }
  }
});

test('authentic but undecodable envelope, or incarnation/seq 0: malformed_envelope', (t) => {
  expectResult(t, check(signRaw(Buffer.from([0xff, 0xff, 0xff]))), ProtocolResult.MALFORMED_ENVELOPE, 'garbage envelope');
  expectResult(t, check(signRaw(Buffer.from([0x52, 0x05, 0x0a]))), ProtocolResult.MALFORMED_ENVELOPE, 'truncated body');
  expectResult(t, check(dgram({ seq: 0 })), ProtocolResult.MALFORMED_ENVELOPE, 'seq 0');
  expectResult(t, check(dgram({ incarnation: 0 })), ProtocolResult.MALFORMED_ENVELOPE, 'incarnation 0');
  // Records body whose record has a key field with a bad length prefix.
  expectResult(t, check(signRaw(Buffer.from([0x08, 0x01, 0x21, 1, 0, 0, 0, 0, 0, 0, 0, 0x28, 0x01, 0x52, 0x04, 0x0a, 0x02, 0x12, 0x09]))), ProtocolResult.MALFORMED_ENVELOPE, 'bad nested length');
});

test('version 99 and version 0: bad_version', (t) => {
  expectResult(t, check(dgram({ version: 99 })), ProtocolResult.BAD_VERSION, 'version 99');
  expectResult(t, check(dgram({ version: 0 })), ProtocolResult.BAD_VERSION, 'version 0 (absent)');
});

test('no body, or a body from a later version: unknown_body', (t) => {
  const base = { version: 1, clusterId: CLUSTER, sender: 1, incarnation: INC, seq: 1 };
  expectResult(t, check(signRaw(tunlb.v1.Envelope.encode(base).finish())), ProtocolResult.UNKNOWN_BODY, 'no body');
  const w = tunlb.v1.Envelope.encode(base);
  w.uint32((19 << 3) | 2).bytes(Buffer.from([0x08, 0x01])); // field 19: a future body
  expectResult(t, check(signRaw(w.finish())), ProtocolResult.UNKNOWN_BODY, 'future body');
});

test('invalid flow records: bad_record', (t) => {
  const bad: Array<[string, Record<string, unknown>]> = [
    ['op unspecified', { op: 0 }],
    ['op 7', { op: 7 }],
    ['key 0 bytes', { key: new Uint8Array(0) }],
    ['key 20 bytes', { key: new Uint8Array(20) }],
    ['key 40 bytes version 5', { key: Object.assign(new Uint8Array(40), { 37: 5 }) }],
    ['key 40 bytes padding', { key: (() => { const k = v4Key(); k[39] = 1; return k; })() }],
    ['primary 32', { primary: 32 }],
    ['backup 99', { backup: 99 }],
    ['backend 0x10000', { backend: 0x10000 }],
  ];
  for (const [what, over] of bad) {
    const rec = { ...goodRecord(), ...over };
    expectResult(t, check(dgram({ records: { records: [goodRecord(), rec] } })), ProtocolResult.BAD_RECORD, `records: ${what}`);
    expectResult(t, check(dgram({ records: null, syncChunk: { requestId: 1, records: [rec] } })), ProtocolResult.BAD_RECORD, `sync chunk: ${what}`);
  }
  expectResult(t, check(dgram({ records: { records: [] } })), ProtocolResult.OK, 'an empty batch is fine');
});

test('receiver: wrong cluster, unknown sender, from self', (t) => {
  const r = receiver();
  expectResult(t, r.receive(dgram({ clusterId: CLUSTER + 1 }), 0, dgram().length).result, ProtocolResult.WRONG_CLUSTER, 'wrong cluster');
  const d5 = dgram({ sender: 5 });
  const out = r.receive(d5, 0, d5.length);
  expectResult(t, out.result, ProtocolResult.UNKNOWN_SENDER, 'sender 5 of 3');
  t.is(out.sender, 5);
  t.is(out.envelope, null);
  const d0 = dgram({ sender: 0 });
  expectResult(t, r.receive(d0, 0, d0.length).result, ProtocolResult.FROM_SELF, 'own datagram');
  // None of these moved sender 1's window: seq 2 of sender 1 is still fresh.
  const d1 = dgram();
  expectResult(t, r.receive(d1, 0, d1.length).result, ProtocolResult.OK, 'first seq 2');
});

test('receiver: replay of the same datagram: replayed', (t) => {
  const r = receiver();
  const d = dgram({ seq: 10 });
  expectResult(t, r.receive(d, 0, d.length).result, ProtocolResult.OK, 'first');
  expectResult(t, r.receive(d, 0, d.length).result, ProtocolResult.REPLAYED, 'again');
  expectResult(t, r.receive(Uint8Array.from(d), 0, d.length).result, ProtocolResult.REPLAYED, 'copy');
  // A re-framed copy (an unknown outer field appended) is not even decoded: the outer frame
  // has one canonical form.
  const reframed = Buffer.concat([d, Buffer.from([0x18, 0x01])]);
  expectResult(t, r.receive(reframed, 0, reframed.length).result, ProtocolResult.MALFORMED_OUTER, 'reframed copy');
});

test('receiver: sequence outside the window: replayed; inside: ok once', (t) => {
  const r = receiver();
  const top = 5000;
  const send = (seq: number) => { const d = dgram({ seq }); return r.receive(d, 0, d.length).result; };
  expectResult(t, send(top), ProtocolResult.OK, 'top');
  expectResult(t, send(top - REPLAY_WINDOW), ProtocolResult.REPLAYED, 'just outside');
  expectResult(t, send(1), ProtocolResult.REPLAYED, 'far outside');
  expectResult(t, send(top - REPLAY_WINDOW + 1), ProtocolResult.OK, 'oldest inside');
  expectResult(t, send(top - REPLAY_WINDOW + 1), ProtocolResult.REPLAYED, 'oldest inside again');
});

test('receiver: stale incarnation; a newer one waits for its confirmation, which resets the window', (t) => {
  const r = receiver();
  const send = (incarnation: number, seq: number) => { const d = dgram({ incarnation, seq }); return r.receive(d, 0, d.length).result; };
  expectResult(t, send(INC, 100), ProtocolResult.OK, 'current');
  expectResult(t, send(INC - 1, 101), ProtocolResult.STALE_INCARNATION, 'older incarnation');
  expectResult(t, send(INC + 1, 1), ProtocolResult.UNCONFIRMED, 'restarted, not confirmed yet');
  expectResult(t, send(INC, 102), ProtocolResult.OK, 'the confirmed incarnation still counts until the new one is confirmed');
  t.true(r.confirm(1, INC + 1, 3), 'a fresh ack (seq 3) confirms the new incarnation');
  expectResult(t, send(INC + 1, 2), ProtocolResult.REPLAYED, 'signed before the confirming ack');
  expectResult(t, send(INC + 1, 4), ProtocolResult.OK, 'signed after it');
  expectResult(t, send(INC, 103), ProtocolResult.STALE_INCARNATION, 'pre-restart datagram');
  expectResult(t, send(INC + 1, 4), ProtocolResult.REPLAYED, 'replay after restart');
});

test('receiver: forged datagrams never move the window', (t) => {
  const r = receiver();
  const forged = dgram({ seq: 1_000_000, incarnation: INC * 2 }, OTHER_KEY);
  expectResult(t, r.receive(forged, 0, forged.length).result, ProtocolResult.BAD_MAC, 'forged');
  const d = dgram({ seq: 2 });
  expectResult(t, r.receive(d, 0, d.length).result, ProtocolResult.OK, 'genuine seq 2 still fresh');
  t.is(r.replay.topOf(1), 2);
  t.is(r.replay.incarnationOf(1), INC);
});

test('receiver counts every outcome by result code', (t) => {
  const r = receiver();
  const signer = new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender: 2, incarnation: INC });
  signer.seal('probe', { nonce: 1 }); // seq 1: the confirming ack's number (receiver())
  const a = signer.seal('probe', { nonce: 2 });
  const b = signer.seal('probe', { nonce: 3 });
  for (const d of [a, b, a, new Uint8Array([1, 2, 3])]) r.receive(d, 0, d.length);
  t.is(r.counts[ProtocolResult.OK], 2);
  t.is(r.counts[ProtocolResult.REPLAYED], 1);
  t.is(r.counts[ProtocolResult.MALFORMED_OUTER], 1);
  t.is(r.counts.reduce((x, y) => x + y, 0), 4);
});

test('fast-check: random bytes never throw and are never accepted', (t) => {
  const r = receiver();
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 1500 }), fc.nat(20), (bytes, off) => {
      const buf = new Uint8Array(off + bytes.length);
      buf.set(bytes, off);
      const res = r.receive(buf, off, bytes.length).result;
      return res !== ProtocolResult.OK && res >= 0 && res < PROTOCOL_RESULT_COUNT;
    }),
    { numRuns: 3000 },
  );
  t.is(r.counts[ProtocolResult.OK], 0);
});

test('fast-check: mutated valid datagrams never throw and are never accepted', (t) => {
  const base = dgram();
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }),
      fc.nat(base.length),
      (edits, cut) => {
        const m = Uint8Array.from(base);
        for (const [i, x] of edits) m[i]! ^= x;
        const len = cut === 0 ? m.length : cut;
        const res = check(m, 0, len);
        // Bytes differ, or it is a truncation: either way not the signed datagram.
        const same = len === base.length && Buffer.from(m).equals(Buffer.from(base));
        return same ? res === ProtocolResult.OK : res !== ProtocolResult.OK;
      },
    ),
    { numRuns: 3000 },
  );
  t.pass();
});

test('fast-check: authentic but arbitrary envelope bytes never throw', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), (bytes) => {
      const res = check(signRaw(bytes));
      return res !== ProtocolResult.MALFORMED_OUTER && res !== ProtocolResult.BAD_MAC;
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

test('a datagram whose source is not its sender is source_mismatch and does not advance the replay window', (t) => {
  const rx = receiver();
  // An impostor with the key claims sender 1 with a far-ahead sequence number from the wrong address.
  const spoofed = dgram({ seq: 1_000_000_000 });
  t.is(rx.receive(spoofed, 0, spoofed.length, undefined, 2).result, ProtocolResult.SOURCE_MISMATCH);
  t.is(protocolResultName(ProtocolResult.SOURCE_MISMATCH), 'source_mismatch');
  // The real sender's next datagram is still accepted: the window did not move.
  const real = dgram({ seq: 2 });
  t.is(rx.receive(real, 0, real.length, undefined, 1).result, ProtocolResult.OK);
});
