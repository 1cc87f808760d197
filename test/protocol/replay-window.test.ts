import test from 'ava';
import fc from 'fast-check';
import { ProtocolResult, protocolResultName, REPLAY_WINDOW, ReplayWindows } from '../../src/protocol';

// Window mechanics (RFC 4303 / RFC 6479) are driven through adopt(): trust on first use, whose
// steps for the current incarnation are checkAndUpdate's. Confirmation (the daemon's rule:
// only a fresh ack starts a window) has its own tests at the end.
const OK = ProtocolResult.OK;
const REPLAYED = ProtocolResult.REPLAYED;
const STALE = ProtocolResult.STALE_INCARNATION;

function run(w: ReplayWindows, steps: Array<[number, number, number, number]>, t: import('ava').ExecutionContext): void {
  for (const [sender, inc, seq, want] of steps) {
    t.is(protocolResultName(w.adopt(sender, inc, seq)), protocolResultName(want), `sender ${sender} inc ${inc} seq ${seq}`);
  }
}

test('in order: every seq accepted once', (t) => {
  const w = new ReplayWindows(2);
  for (let s = 1; s <= 5000; s++) t.is(w.adopt(0, 7, s), OK);
  t.is(w.topOf(0), 5000);
  for (let s = 5000 - REPLAY_WINDOW + 1; s <= 5000; s++) t.is(w.adopt(0, 7, s), REPLAYED);
});

test('out of order within the window: accepted once each', (t) => {
  const w = new ReplayWindows(1);
  run(w, [
    [0, 1, 100, OK],
    [0, 1, 98, OK],
    [0, 1, 99, OK],
    [0, 1, 105, OK],
    [0, 1, 101, OK],
    [0, 1, 98, REPLAYED],
    [0, 1, 105, REPLAYED],
    [0, 1, 104, OK],
  ], t);
});

test('duplicate: replayed', (t) => {
  const w = new ReplayWindows(1);
  run(w, [[0, 1, 1, OK], [0, 1, 1, REPLAYED], [0, 1, 2, OK], [0, 1, 1, REPLAYED], [0, 1, 2, REPLAYED]], t);
});

test('too old: at or beyond the window edge', (t) => {
  const w = new ReplayWindows(1);
  const top = 10_000;
  run(w, [
    [0, 1, top, OK],
    [0, 1, top - REPLAY_WINDOW, REPLAYED],
    [0, 1, top - REPLAY_WINDOW - 1, REPLAYED],
    [0, 1, top - REPLAY_WINDOW + 1, OK],
    [0, 1, 0, REPLAYED],
    [0, 1, -5, REPLAYED],
  ], t);
});

test('a big jump clears the whole window; bits do not alias across the ring', (t) => {
  const w = new ReplayWindows(1);
  run(w, [[0, 1, 5, OK], [0, 1, 5 + 33 * 32, OK], [0, 1, 5 + 33 * 32 - 1, OK], [0, 1, 5 + 10 * REPLAY_WINDOW, OK]], t);
  // Everything just inside the new window is fresh (the ring was cleared, nothing stale left).
  const top = 5 + 10 * REPLAY_WINDOW;
  for (let s = top - REPLAY_WINDOW + 1; s < top; s++) t.is(w.adopt(0, 1, s), OK, `seq ${s}`);
});

test('new incarnation replaces the window; older incarnation is stale', (t) => {
  const w = new ReplayWindows(1);
  run(w, [
    [0, 10, 500, OK],
    [0, 10, 501, OK],
    [0, 11, 1, OK], // restart: starts again at 1
    [0, 11, 2, OK],
    [0, 10, 502, STALE], // a datagram from before the restart
    [0, 9, 1, STALE],
    [0, 11, 1, REPLAYED],
    [0, 12, 1, OK],
  ], t);
  t.is(w.incarnationOf(0), 12);
});

test('senders are independent; out-of-range sender is unknown_sender', (t) => {
  const w = new ReplayWindows(3);
  run(w, [
    [0, 1, 1, OK],
    [1, 1, 1, OK],
    [2, 5, 1, OK],
    [1, 1, 1, REPLAYED],
    [3, 1, 1, ProtocolResult.UNKNOWN_SENDER],
    [-1, 1, 1, ProtocolResult.UNKNOWN_SENDER],
    [0.5, 1, 1, ProtocolResult.UNKNOWN_SENDER],
  ], t);
});

test('reset forgets a sender', (t) => {
  const w = new ReplayWindows(2);
  run(w, [[1, 100, 50, OK]], t);
  w.reset(1);
  run(w, [[1, 50, 1, OK]], t); // a lower incarnation is accepted after an explicit reset
});

test('sequence numbers past 2^32 work (no 32-bit truncation)', (t) => {
  const w = new ReplayWindows(1);
  const base = 2 ** 32 - 3;
  for (let s = base; s < base + 100; s++) t.is(w.adopt(0, 1, s), OK, `seq ${s}`);
  t.is(w.adopt(0, 1, base + 50), REPLAYED);
  t.is(w.adopt(0, 1, 2 ** 52), OK);
  t.is(w.adopt(0, 1, 2 ** 52), REPLAYED);
  t.is(w.adopt(0, 1, 2 ** 52 - 1), OK);
});

test('fast-check: matches a model (a set of seen seqs and the window rule)', (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 6000 }), { maxLength: 400 }), (seqs) => {
      const w = new ReplayWindows(1);
      const seen = new Set<number>();
      let top = 0;
      for (const s of seqs) {
        const want = seen.has(s) || (top > 0 && s <= top - REPLAY_WINDOW) ? REPLAYED : OK;
        if (w.adopt(0, 1, s) !== want) return false;
        if (want === OK) {
          seen.add(s);
          top = Math.max(top, s);
        }
      }
      return true;
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

// ---------------------------------------------------------------------------- confirmation

const UNCONFIRMED = ProtocolResult.UNCONFIRMED;

/** [step, sender, incarnation, seq, expected]; step 'check' = checkAndUpdate, 'confirm' = confirm (expected: changed). */
type Step = ['check', number, number, number, number] | ['confirm', number, number, number, boolean];

function play(w: ReplayWindows, steps: Step[], t: import('ava').ExecutionContext): void {
  for (const [kind, sender, inc, seq, want] of steps) {
    if (kind === 'confirm') t.is(w.confirm(sender, inc, seq), want, `confirm sender ${sender} inc ${inc} seq ${seq}`);
    else t.is(protocolResultName(w.checkAndUpdate(sender, inc, seq)), protocolResultName(want), `check sender ${sender} inc ${inc} seq ${seq}`);
  }
}

const RULES: Array<[string, Step[]]> = [
  ['nothing is accepted before a confirmation', [
    ['check', 0, 10, 1, UNCONFIRMED],
    ['check', 0, 10, 2, UNCONFIRMED],
    ['check', 0, 9, 1, UNCONFIRMED], // no incarnation known: lower is not "stale" yet
  ]],
  ['confirmation starts the window at the ack: at or below is replayed, above is fresh once', [
    ['confirm', 0, 10, 50, true],
    ['check', 0, 10, 50, REPLAYED],
    ['check', 0, 10, 49, REPLAYED],
    ['check', 0, 10, 1, REPLAYED],
    ['check', 0, 10, 51, OK],
    ['check', 0, 10, 51, REPLAYED],
    ['check', 0, 10, 53, OK],
    ['check', 0, 10, 52, OK], // out of order above the floor, same block
  ]],
  ['a restarted receiver: datagrams replayed from the previous life of a sender, or old ones of its current life, are not accepted', [
    ['check', 0, 5, 900, UNCONFIRMED], // the previous incarnation, replayed before any confirmation
    ['check', 0, 10, 3, UNCONFIRMED], // current incarnation, an early datagram, replayed
    ['confirm', 0, 10, 40, true],
    ['check', 0, 10, 3, REPLAYED],
    ['check', 0, 5, 901, STALE],
    ['check', 0, 10, 41, OK],
  ]],
  ['a newer incarnation waits for its own confirmation; the confirmed one goes on meanwhile', [
    ['confirm', 0, 10, 5, true],
    ['check', 0, 11, 1, UNCONFIRMED],
    ['check', 0, 10, 6, OK],
    ['confirm', 0, 11, 2, true],
    ['check', 0, 10, 7, STALE],
    ['check', 0, 11, 1, REPLAYED],
    ['check', 0, 11, 3, OK],
  ]],
  ['confirming the confirmed incarnation again changes nothing (the window stays)', [
    ['confirm', 0, 10, 5, true],
    ['check', 0, 10, 100, OK],
    ['confirm', 0, 10, 200, false],
    ['check', 0, 10, 99, OK],
    ['check', 0, 10, 100, REPLAYED],
  ]],
  ['a LOWER incarnation can be confirmed (clock went back, state lost): the window moves to it', [
    ['confirm', 0, 10, 5, true],
    ['confirm', 0, 8, 3, true],
    ['check', 0, 8, 4, OK],
    ['check', 0, 10, 6, UNCONFIRMED],
  ]],
  ['floor at a block boundary: the top block keeps only the bits up to the floor', [
    ['confirm', 0, 10, 31, true],
    ['check', 0, 10, 31, REPLAYED],
    ['check', 0, 10, 30, REPLAYED],
    ['check', 0, 10, 33, OK],
    ['check', 0, 10, 32, OK],
    ['confirm', 1, 10, 32, true],
    ['check', 1, 10, 32, REPLAYED],
    ['check', 1, 10, 31, REPLAYED],
    ['check', 1, 10, 34, OK],
    ['check', 1, 10, 33, OK],
  ]],
  ['confirm refuses nonsense without changing anything', [
    ['confirm', 0, 0, 5, false],
    ['confirm', 0, 10, 0, false],
    ['confirm', 2, 10, 5, false],
    ['check', 0, 10, 6, UNCONFIRMED],
  ]],
];

for (const [title, steps] of RULES) {
  test(`confirmation: ${title}`, (t) => play(new ReplayWindows(2), steps, t));
}

test('fast-check: after confirm(seq c), checkAndUpdate matches the model "above c, once, within the window"', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 3000 }), fc.array(fc.integer({ min: 1, max: 6000 }), { maxLength: 300 }), (c, seqs) => {
      const w = new ReplayWindows(1);
      w.confirm(0, 7, c);
      const seen = new Set<number>();
      let top = c;
      for (const s of seqs) {
        const want = s <= c || seen.has(s) || s <= top - REPLAY_WINDOW ? REPLAYED : OK;
        if (w.checkAndUpdate(0, 7, s) !== want) return false;
        if (want === OK) {
          seen.add(s);
          top = Math.max(top, s);
        }
      }
      return true;
    }),
    { numRuns: 2000 },
  );
  t.pass();
});
