/**
 * The receive path of a control datagram (src/protocol/receiver.ts, docs/protocol.md "Receive
 * path"): each rejection before any decoding, in its order; recipients, ports; and the replay
 * and restart rules (incarnations confirmed by a fresh answer; a replayed sync request starts
 * nothing). Table-driven: each row names the datagram, where it came from, and the outcome.
 */
import test from 'ava';
import {
  computeMac,
  DecodeResult,
  encodeSigned,
  EnvelopeReceiver,
  EnvelopeSigner,
  MAX_CONTROL_DATAGRAM,
  Op,
  parseOuter,
  ProtocolResult,
  protocolResultName,
  SOURCE_NOT_A_PEER,
  SOURCE_UNCHECKED,
  tunlb,
  Via,
  type EnvelopeFields,
} from '../../src/protocol';

const KEY = Buffer.alloc(32, 7);
const OTHER_KEY = Buffer.alloc(32, 8);
const CLUSTER = 0x1234_5678_9abc; // a safe integer with bits in both 32-bit halves
const INC = 4_000_000;

const v4Key = (): Uint8Array => {
  const k = new Uint8Array(40);
  k[10] = k[11] = k[26] = k[27] = 0xff;
  k.set([10, 99, 1, 2], 12);
  k.set([10, 99, 0, 10], 28);
  k[33] = 80;
  k[35] = 80;
  k[36] = 6;
  k[37] = 4;
  return k;
};
const record = { op: Op.CREATE, key: v4Key(), primary: 1, backup: 2, vip: 0, backend: 1, state: 1, ageS: 1, idleS: 0, tableGeneration: 1 };

/** Envelope fields from sender 1 to balancer 0 (the receiver), seq 10, a records body. */
function env(over: Partial<EnvelopeFields> = {}): EnvelopeFields {
  return { clusterId: CLUSTER, sender: 1, incarnation: INC, seq: 10, sentAtMs: 1, records: { records: [record] }, ...over } as EnvelopeFields;
}
const signed = (over: Partial<EnvelopeFields> = {}, key: Buffer = KEY): Uint8Array => encodeSigned(env(over), key);
const probeBody = { probe: { nonce: 5, sentAtMs: 1, target: 0, status: 2 }, records: null } as Partial<EnvelopeFields>;

/** Balancer 0 of 3 that has confirmed incarnation INC of sender 1 (a fresh ack with seq 1). */
function rx(): EnvelopeReceiver {
  const r = new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self: 0, balancerCount: 3 });
  r.confirm(1, INC, 1);
  return r;
}

/** The canonical frame of an envelope and MAC, built by hand (as the generated encoder writes it). */
function frame(envBytes: Uint8Array, mac: Uint8Array): Uint8Array {
  return tunlb.v1.SignedEnvelope.encode({ envelope: envBytes, mac }).finish();
}
const envOf = (d: Uint8Array): Uint8Array => {
  const f = { envOff: 0, envLen: 0, macOff: 0 };
  if (!parseOuter(d, 0, d.length, f)) throw new Error('not canonical');
  return d.subarray(f.envOff, f.envOff + f.envLen);
};

interface Row {
  what: string;
  dgram: () => Uint8Array;
  source?: number;
  via?: Via;
  want: number;
  /** The envelope must come out with confirmed = false. */
  unconfirmed?: boolean;
}

const good = signed();
const pad = (d: Uint8Array, n: number): Uint8Array => Buffer.concat([d, Buffer.alloc(n)]);

const ROWS: Row[] = [
  { what: 'baseline: a genuine datagram', dgram: () => good, source: 1, want: ProtocolResult.OK },
  // ---- size, before anything (even a wrong key or a bad frame)
  { what: `longer than ${MAX_CONTROL_DATAGRAM} bytes`, dgram: () => Buffer.alloc(MAX_CONTROL_DATAGRAM + 1, 0x0a), source: 1, want: ProtocolResult.OVERSIZE },
  { what: 'a genuine signature over an oversize envelope (a sender with a bigger budget)', dgram: () => signed({ records: { records: Array.from({ length: 40 }, () => record) } }), source: 1, want: ProtocolResult.OVERSIZE },
  // ---- source, before decoding
  { what: 'from an address that is no balancer', dgram: () => good, source: SOURCE_NOT_A_PEER, want: ProtocolResult.NOT_A_PEER },
  { what: 'from a non-peer address, wrong key too', dgram: () => signed({}, OTHER_KEY), source: SOURCE_NOT_A_PEER, want: ProtocolResult.NOT_A_PEER },
  { what: 'from our own address (spoofed)', dgram: () => good, source: 0, want: ProtocolResult.FROM_SELF },
  // ---- strict outer frame
  { what: 'one byte appended after the MAC', dgram: () => pad(good, 1), source: 1, want: ProtocolResult.MALFORMED_OUTER },
  { what: 'an unknown outer field appended', dgram: () => Buffer.concat([good, Buffer.from([0x18, 0x01])]), source: 1, want: ProtocolResult.MALFORMED_OUTER },
  { what: 'MAC first, envelope second', dgram: () => { const e = envOf(good); return Buffer.concat([Buffer.from([0x12, 0x20]), computeMac(KEY, e), Buffer.from([0x0a, e.length]), e]); }, source: 1, want: ProtocolResult.MALFORMED_OUTER },
  { what: 'a non-minimal length varint', dgram: () => { const e = envOf(good); return Buffer.concat([Buffer.from([0x0a, 0x80 | e.length, 0x00]), e, Buffer.from([0x12, 0x20]), computeMac(KEY, e)]); }, source: 1, want: ProtocolResult.MALFORMED_OUTER },
  { what: 'a 3-byte length varint', dgram: () => { const e = envOf(good); return Buffer.concat([Buffer.from([0x0a, 0x80 | e.length, 0x80, 0x00]), e, Buffer.from([0x12, 0x20]), computeMac(KEY, e)]); }, source: 1, want: ProtocolResult.MALFORMED_OUTER },
  { what: 'a 31-byte MAC', dgram: () => { const e = envOf(good); return frame(e, computeMac(KEY, e).subarray(0, 31)); }, source: 1, want: ProtocolResult.MALFORMED_OUTER },
  { what: 'the envelope field twice (protobuf would take the last)', dgram: () => { const e = envOf(good); return Buffer.concat([Buffer.from([0x0a, 1, 0x08]), frame(e, computeMac(KEY, e))]); }, source: 1, want: ProtocolResult.MALFORMED_OUTER },
  { what: 'random bytes', dgram: () => Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), source: 1, want: ProtocolResult.MALFORMED_OUTER },
  // ---- the envelope's first bytes, before the MAC (wrong key: never hashed)
  { what: 'version 2 (wrong key too)', dgram: () => signed({ version: 2 }, OTHER_KEY), source: 1, want: ProtocolResult.BAD_VERSION },
  { what: 'version field not first', dgram: () => { const e = Buffer.from(envOf(good)); const body = tunlb.v1.Envelope.encode({ clusterId: CLUSTER, sender: 1, incarnation: INC, seq: 10, version: 1, health: {} }).finish(); const w = Buffer.concat([body.subarray(2), body.subarray(0, 2)]); void e; return frame(w, computeMac(KEY, w)); }, source: 1, want: ProtocolResult.BAD_VERSION },
  { what: 'another cluster (wrong key too)', dgram: () => signed({ clusterId: CLUSTER + 1 }, OTHER_KEY), source: 1, want: ProtocolResult.WRONG_CLUSTER },
  // ---- the MAC
  { what: 'right prefix, wrong key', dgram: () => signed({}, OTHER_KEY), source: 1, want: ProtocolResult.BAD_MAC },
  // ---- authenticated checks
  { what: 'sender 5 of 3', dgram: () => signed({ sender: 5 }), source: SOURCE_UNCHECKED, want: ProtocolResult.UNKNOWN_SENDER },
  { what: 'meant for balancer 2', dgram: () => signed({ ...probeBody, recipients: 1 << 2 }), source: 1, want: ProtocolResult.WRONG_RECIPIENT },
  { what: 'meant for balancer 0 (us)', dgram: () => signed({ ...probeBody, recipients: 1 << 0 }), source: 1, want: ProtocolResult.OK },
  { what: 'meant for balancers 0 and 2', dgram: () => signed({ recipients: 0b101 }), source: 1, want: ProtocolResult.OK },
  { what: 'no recipients (every balancer)', dgram: () => signed({ recipients: 0 }), source: 1, want: ProtocolResult.OK },
  { what: "sender 1 from balancer 2's address", dgram: () => good, source: 2, want: ProtocolResult.SOURCE_MISMATCH },
  { what: 'records on the probe port', dgram: () => good, source: 1, via: Via.PROBE, want: ProtocolResult.WRONG_PORT },
  { what: 'a probe on the probe port', dgram: () => signed(probeBody), source: 1, via: Via.PROBE, want: ProtocolResult.OK },
  { what: 'a probe on the control port (a first-release peer)', dgram: () => signed(probeBody), source: 1, via: Via.CONTROL, want: ProtocolResult.OK },
  // ---- incarnations and the window
  { what: 'records of an unconfirmed (newer) incarnation', dgram: () => signed({ incarnation: INC + 1 }), source: 1, want: ProtocolResult.UNCONFIRMED },
  { what: 'records of an older incarnation', dgram: () => signed({ incarnation: INC - 1 }), source: 1, want: ProtocolResult.STALE_INCARNATION },
  { what: 'a probe of an unconfirmed incarnation passes, marked unconfirmed', dgram: () => signed({ ...probeBody, incarnation: INC + 1 }), source: 1, want: ProtocolResult.OK, unconfirmed: true },
  { what: 'a probe of an older incarnation passes, marked unconfirmed (membership decides)', dgram: () => signed({ ...probeBody, incarnation: INC - 1 }), source: 1, want: ProtocolResult.OK, unconfirmed: true },
  { what: 'signed before the confirming ack (seq 1)', dgram: () => signed({ seq: 1 }), source: 1, want: ProtocolResult.REPLAYED },
];

for (const row of ROWS) {
  test(`receive path: ${row.what} -> ${protocolResultName(row.want)}`, (t) => {
    const r = rx();
    const d = row.dgram();
    const out = r.receive(d, 0, d.length, new DecodeResult(), row.source ?? SOURCE_UNCHECKED, row.via ?? Via.CONTROL);
    t.is(protocolResultName(out.result), protocolResultName(row.want));
    t.is(r.counts[row.want], 1, 'counted under its reason');
    if (row.want === ProtocolResult.OK) {
      t.truthy(out.envelope);
      t.is(out.confirmed, row.unconfirmed !== true);
    } else {
      t.is(out.envelope, null);
    }
  });
}

test('receive path: nothing rejected before the replay window moves it (a rejected seq stays fresh)', (t) => {
  const r = rx();
  const d = signed({ seq: 500 });
  for (const [source, via] of [[2, Via.CONTROL], [SOURCE_NOT_A_PEER, Via.CONTROL], [1, Via.PROBE]] as const) {
    t.not(r.receive(d, 0, d.length, new DecodeResult(), source, via).result, ProtocolResult.OK);
  }
  const wrongTo = signed({ seq: 500, recipients: 1 << 2 });
  t.is(r.receive(wrongTo, 0, wrongTo.length, new DecodeResult(), 1).result, ProtocolResult.WRONG_RECIPIENT);
  t.is(r.replay.topOf(1), 1);
  t.is(r.receive(d, 0, d.length, new DecodeResult(), 1).result, ProtocolResult.OK);
});

// ---------------------------------------------------------------------------------------
// A replayed sync request starts nothing; a restarted receiver takes no replay.

test('replays and restarts: each replay of a unicast SyncRequest is dropped, by the rule that catches it', (t) => {
  // lb1 (index 1) asks lb2 (index 2) for its table; an attacker captures the datagram.
  const lb1 = new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender: 1, incarnation: INC });
  const ackToLb2 = lb1.seal('probeAck', { nonce: 1 }, 2); // seq 1: lb2 confirms lb1 with it
  const ackToLb0 = lb1.seal('probeAck', { nonce: 1 }, 0); // seq 2: lb0 confirms lb1 with it
  const request = lb1.seal('syncRequest', { requestId: 77, fromCursor: 0 }, 2); // seq 3
  const at = (self: number, confirmedSeq: number | null): EnvelopeReceiver => {
    const r = new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self, balancerCount: 3 });
    if (confirmedSeq !== null) r.confirm(1, INC, confirmedSeq);
    return r;
  };
  const lb2 = at(2, 1);
  const lb0 = at(0, 2);
  const get = (r: EnvelopeReceiver, d: Uint8Array): string => protocolResultName(r.receive(d, 0, d.length, new DecodeResult(), 1).result);
  void ackToLb2;
  void ackToLb0;
  const rows: Array<[string, () => string, string]> = [
    ['the genuine request at lb2', () => get(lb2, request), 'ok'],
    ['replayed to lb2', () => get(lb2, request), 'replayed'],
    ['replayed to lb0 (another balancer: its window never saw seq 3)', () => get(lb0, request), 'wrong_recipient'],
    ['replayed to lb2 restarted, before it confirmed lb1', () => get(at(2, null), request), 'unconfirmed'],
    ['replayed to lb2 restarted, after a fresh ack of lb1 (seq 9)', () => get(at(2, 9), request), 'replayed'],
  ];
  for (const [what, f, want] of rows) t.is(f(), want, what);
  // From lb1's previous life, to lb2 restarted that has confirmed lb1's current incarnation.
  const old = new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender: 1, incarnation: INC - 5 }).seal('syncRequest', { requestId: 1, fromCursor: 0 }, 2);
  t.is(get(at(2, 9), old), 'stale_incarnation', "lb1's previous incarnation");
  t.is(get(at(2, null), old), 'unconfirmed', "lb1's previous incarnation, before lb2 confirmed any");
});

test('replays and restarts: a restarted receiver accepts none of a sender\'s earlier datagrams, only what it signs after its fresh answer', (t) => {
  const lb1 = new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender: 1, incarnation: INC });
  const captured = Array.from({ length: 20 }, (_, i) => lb1.seal('records', { records: [{ ...record, ageS: i }] }));
  const ack = lb1.seal('probeAck', { nonce: 42 }, 0);
  const after = lb1.seal('records', { records: [record] });
  const r = new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self: 0, balancerCount: 3 }); // just restarted
  const results = (ds: Uint8Array[]) => ds.map((d) => protocolResultName(r.receive(d, 0, d.length, new DecodeResult(), 1).result));
  t.deepEqual(new Set(results(captured)), new Set(['unconfirmed']), 'replays before the confirmation');
  const a = r.receive(ack, 0, ack.length, new DecodeResult(), 1);
  t.is(a.result, ProtocolResult.OK);
  t.false(a.confirmed, 'the ack itself arrives unconfirmed (membership matches its nonce)');
  t.true(r.confirm(1, INC, a.envelope!.seq));
  t.deepEqual(new Set(results(captured)), new Set(['replayed']), 'replays after the confirmation');
  t.deepEqual(results([after]), ['ok'], 'what the sender signs after its answer');
});
