/**
 * The sync stream's framing and MACs (src/protocol/sync-frame.ts): frames survive any split
 * of the byte stream; a frame that is lost, repeated, reordered, reflected, keyed wrongly,
 * truncated, oversized or holds a bad record is refused before anything is decoded, counted
 * by reason, and the reader stays failed.
 */
import test from 'ava';
import { createHmac, createSecretKey } from 'node:crypto';
import {
  macKey,
  SYNC_STREAM_RESULT_NAMES,
  SyncDirection,
  SyncFrameReader,
  SyncFrameResult,
  SyncFrameWriter,
  SyncStreamResult,
  syncSessionKey,
  tunlb,
} from '../../src/protocol';

const KEY = macKey(Buffer.alloc(32, 0x11));
const OTHER = macKey(Buffer.alloc(32, 0x22));
const NONCE_A = Buffer.alloc(16, 0xa1);
const NONCE_B = Buffer.alloc(16, 0xb2);

function chunk(i: number, records = 3): tunlb.v1.SyncFrame.$Properties {
  const recs = Array.from({ length: records }, (_, k) => ({ op: 1, key: Buffer.from([10, 1, 0, k, 10, 99, 0, 10, 4, 0, 0, 80, 6]), primary: 1, backup: 2, vip: 0, backend: k % 3 }));
  return { chunk: { requestId: 7, chunkIndex: i, nextCursor: i * 100, totalRecords: (i + 1) * records, snapshotRecords: 999, records: recs } };
}

/** Reads every frame from `reader` after pushing `bytes` (in pieces of `piece` bytes). */
function readAll(reader: SyncFrameReader, bytes: Buffer, piece = bytes.length): SyncFrameResult[] {
  const out: SyncFrameResult[] = [];
  for (let o = 0; o < bytes.length; o += piece) {
    reader.push(bytes.subarray(o, Math.min(bytes.length, o + piece)));
    for (;;) {
      const r = new SyncFrameResult();
      if (!reader.next(r)) break;
      out.push(r);
      if (r.result !== SyncStreamResult.OK) return out;
    }
  }
  return out;
}

test('frames round-trip whatever the stream is cut into (1 byte .. whole), MACs chained by number', (t) => {
  const w = new SyncFrameWriter(SyncDirection.RESPONDER);
  const frames = [w.seal({ welcome: { streamVersion: 1, clusterId: 5, sender: 1, incarnation: 9, nonce: NONCE_B } }, KEY, NONCE_A)];
  const sk = syncSessionKey(KEY, NONCE_A, NONCE_B);
  for (let i = 0; i < 5; i++) frames.push(w.seal(chunk(i), sk));
  const all = Buffer.concat(frames);
  for (const piece of [1, 2, 3, 5, 7, 33, 100, all.length]) {
    const r = new SyncFrameReader(SyncDirection.RESPONDER);
    r.key = KEY;
    r.extra = NONCE_A;
    const got: SyncFrameResult[] = [];
    for (let o = 0; o < all.length; o += piece) {
      r.push(all.subarray(o, Math.min(all.length, o + piece)));
      for (;;) {
        const x = new SyncFrameResult();
        if (!r.next(x)) break;
        got.push(x);
        if (got.length === 1) {
          r.key = sk; // after the welcome: the session key
          r.extra = null;
        }
      }
    }
    t.is(got.length, 6, `piece ${piece}`);
    t.true(got.every((x) => x.result === SyncStreamResult.OK), `piece ${piece}: ${got.map((x) => SYNC_STREAM_RESULT_NAMES[x.result]).join(',')}`);
    t.is(got[0]!.frame!.body, 'welcome');
    t.deepEqual(
      got.slice(1).map((x) => (x.frame!.chunk as tunlb.v1.SyncChunk).chunkIndex),
      [0, 1, 2, 3, 4],
    );
    t.is(r.buffered, 0);
    t.is(r.received, 6);
  }
});

// Each case: frames 0..3 sealed by a writer, then `mutate` builds what the reader gets.
const CASES: Array<[string, (f: Buffer[]) => Buffer[], SyncStreamResult, number]> = [
  ['a lost frame (1 missing): frame 2 arrives as number 1', (f) => [f[0]!, f[2]!, f[3]!], SyncStreamResult.BAD_MAC, 1],
  ['a repeated frame', (f) => [f[0]!, f[1]!, f[1]!, f[2]!], SyncStreamResult.BAD_MAC, 2],
  ['two frames swapped', (f) => [f[0]!, f[2]!, f[1]!, f[3]!], SyncStreamResult.BAD_MAC, 1],
  ['one bit flipped in a record', (f) => [f[0]!, flip(f[1]!, 20), f[2]!], SyncStreamResult.BAD_MAC, 1],
  ['one bit flipped in the MAC', (f) => [f[0]!, flip(f[1]!, f[1]!.length - 1)], SyncStreamResult.BAD_MAC, 1],
  ['length prefix below a MAC', (f) => [f[0]!, Buffer.from([0, 0, 0, 5, 1, 2, 3, 4, 5])], SyncStreamResult.MALFORMED_FRAME, 1],
  ['length prefix above the maximum', (f) => [f[0]!, Buffer.from([0x7f, 0, 0, 0])], SyncStreamResult.MALFORMED_FRAME, 1],
];

function flip(b: Buffer, at: number): Buffer {
  const c = Buffer.from(b);
  c[at]! ^= 0x04;
  return c;
}

for (const [what, mutate, want, okBefore] of CASES) {
  test(`refused before decoding: ${what}`, (t) => {
    const w = new SyncFrameWriter(SyncDirection.RESPONDER);
    const f = [0, 1, 2, 3].map((i) => w.seal(chunk(i), KEY));
    const r = new SyncFrameReader(SyncDirection.RESPONDER);
    r.key = KEY;
    const got = readAll(r, Buffer.concat(mutate(f)));
    t.is(got.filter((x) => x.result === SyncStreamResult.OK).length, okBefore);
    t.is(got.at(-1)!.result, want, SYNC_STREAM_RESULT_NAMES[got.at(-1)!.result]);
    // A failed reader stays failed: more (even valid) bytes change nothing.
    r.push(f[3]!);
    const again = new SyncFrameResult();
    t.true(r.next(again));
    t.is(again.result, want);
    t.is(r.buffered, 0);
  });
}

test('a frame from the other direction (reflected), or under another key, fails its MAC', (t) => {
  const req = new SyncFrameWriter(SyncDirection.REQUESTER);
  const bytes = req.seal(chunk(0), KEY);
  const asResponder = new SyncFrameReader(SyncDirection.RESPONDER);
  asResponder.key = KEY;
  t.is(readAll(asResponder, bytes)[0]!.result, SyncStreamResult.BAD_MAC);
  const otherKey = new SyncFrameReader(SyncDirection.REQUESTER);
  otherKey.key = OTHER;
  t.is(readAll(otherKey, bytes)[0]!.result, SyncStreamResult.BAD_MAC);
  const noKey = new SyncFrameReader(SyncDirection.REQUESTER);
  t.is(readAll(noKey, bytes)[0]!.result, SyncStreamResult.BAD_MAC);
  // The welcome's MAC covers the requester's nonce: replayed to another requester it fails.
  const resp = new SyncFrameWriter(SyncDirection.RESPONDER);
  const welcome = resp.seal({ welcome: { streamVersion: 1, clusterId: 5, sender: 1, incarnation: 9, nonce: NONCE_B } }, KEY, NONCE_A);
  const other = new SyncFrameReader(SyncDirection.RESPONDER);
  other.key = KEY;
  other.extra = Buffer.alloc(16, 0xee);
  t.is(readAll(other, welcome)[0]!.result, SyncStreamResult.BAD_MAC);
});

test('authentic but undecodable bytes are malformed_body; an authentic chunk with a bad record is bad_record', (t) => {
  // Hand-made frames with a valid MAC over garbage / over a chunk whose record has a 7-byte key.
  const w = new SyncFrameWriter(SyncDirection.RESPONDER);
  const good = w.seal({ chunk: { requestId: 1, records: [{ op: 1, key: Buffer.alloc(7), primary: 0, backup: 1 }] } }, KEY);
  const r = new SyncFrameReader(SyncDirection.RESPONDER);
  r.key = KEY;
  t.is(readAll(r, good)[0]!.result, SyncStreamResult.BAD_RECORD);

  const signed = (body: Buffer): Buffer => {
    const head = Buffer.from([SyncDirection.RESPONDER, 0, 0, 0, 0, 0, 0, 0, 0]);
    const mac = createHmac('sha256', KEY).update(head).update(body).digest();
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length + 32);
    return Buffer.concat([len, body, mac]);
  };
  for (const [what, body] of [
    ['a truncated varint tag', Buffer.from([0xff, 0xff, 0xff])],
    ['only an unknown field (no body)', Buffer.from([0x48, 0x01])],
  ] as const) {
    const r2 = new SyncFrameReader(SyncDirection.RESPONDER);
    r2.key = KEY;
    t.is(readAll(r2, signed(body))[0]!.result, SyncStreamResult.MALFORMED_BODY, what);
  }
  // An empty SyncFrame has no bytes before its MAC: malformed_frame.
  const r3 = new SyncFrameReader(SyncDirection.RESPONDER);
  r3.key = KEY;
  t.is(readAll(r3, new SyncFrameWriter(SyncDirection.RESPONDER).seal({}, KEY))[0]!.result, SyncStreamResult.MALFORMED_FRAME);
});

test('the session key depends on both nonces and the cluster key', (t) => {
  const raw = (k: ReturnType<typeof syncSessionKey>): string => k.export().toString('hex');
  const base = raw(syncSessionKey(KEY, NONCE_A, NONCE_B));
  t.is(raw(syncSessionKey(createSecretKey(Buffer.alloc(32, 0x11)), NONCE_A, NONCE_B)), base);
  t.not(raw(syncSessionKey(KEY, NONCE_B, NONCE_A)), base);
  t.not(raw(syncSessionKey(KEY, NONCE_A, Buffer.alloc(16, 0))), base);
  t.not(raw(syncSessionKey(OTHER, NONCE_A, NONCE_B)), base);
});

test('ready says whether next() has a whole frame (or a failure) without consuming it', (t) => {
  const w = new SyncFrameWriter(SyncDirection.RESPONDER);
  const f = w.seal(chunk(0), KEY);
  const r = new SyncFrameReader(SyncDirection.RESPONDER);
  r.key = KEY;
  t.false(r.ready);
  r.push(f.subarray(0, 10));
  t.false(r.ready);
  r.push(f.subarray(10));
  t.true(r.ready);
  t.is(r.buffered, f.length);
  const x = new SyncFrameResult();
  t.true(r.next(x));
  t.is(x.result, SyncStreamResult.OK);
  t.false(r.ready);
});
