import test from 'ava';
import { Writable } from 'node:stream';
import pino from 'pino';
import { isTunlbError } from '../../src/errors';
import { tunlb } from '../../src/protocol';
import {
  logMembershipEvent,
  Membership,
  PeerState,
  PeerStatusValue,
  type MembershipEvent,
  type MembershipOptions,
  type PeerStateValue,
  type ProbeAckBody,
  type ProbeBody,
} from '../../src/cluster/membership';
import { prng } from './cluster-fixtures';

const SERVING = PeerStatusValue.SERVING;
const SYNCING = PeerStatusValue.SYNCING;
const DRAINING = PeerStatusValue.DRAINING;

// ---------------------------------------------------------------------------------------
// One balancer under test (index 0 unless told), its peers played by hand.

interface Sent<B> {
  peer: number;
  body: B;
}

function harness(over: Partial<MembershipOptions> = {}, n = 3) {
  const clock = { now: 0 };
  const probes: Sent<ProbeBody>[] = [];
  const acks: Sent<ProbeAckBody>[] = [];
  const events: MembershipEvent[] = [];
  let nonce = 1000;
  const m = new Membership({
    selfIndex: 0,
    ids: Array.from({ length: n }, (_, i) => `lb${i + 1}`),
    intervalMs: 100,
    misses: 3,
    nowMs: () => clock.now,
    sendProbe: (peer, body) => probes.push({ peer, body }),
    sendAck: (peer, body) => acks.push({ peer, body }),
    onEvent: (e) => events.push(e),
    nonce: () => ++nonce,
    ...over,
  });
  /** The last probe sent to `peer`. */
  const lastProbe = (peer: number): ProbeBody => {
    for (let i = probes.length - 1; i >= 0; i--) if (probes[i]!.peer === peer) return probes[i]!.body;
    throw new Error(`no probe to ${peer}`);
  };
  /** Peer answers `probe` (default: the last one sent to it). */
  const ack = (peer: number, opts: { inc?: number; status?: number; probe?: ProbeBody; proberInc?: number } = {}) => {
    const p = opts.probe ?? lastProbe(peer);
    return m.onProbeAck(peer, opts.inc ?? 7, {
      nonce: p.nonce,
      probeSentAtMs: p.sentAtMs,
      proberIncarnation: opts.proberInc ?? 0,
      status: (opts.status ?? SERVING) as tunlb.v1.PeerStatus,
    });
  };
  const at = (ms: number) => {
    clock.now = ms;
  };
  const tickAt = (ms: number) => {
    clock.now = ms;
    m.tick();
  };
  const types = () => events.map((e) => `${e.type}:${e.peer}`);
  return { m, clock, probes, acks, events, lastProbe, ack, at, tickAt, types };
}

test('PeerStatusValue matches the generated tunlb.v1.PeerStatus enum', (t) => {
  const g = tunlb.v1.PeerStatus;
  t.is(PeerStatusValue.UNSPECIFIED, g.PEER_STATUS_UNSPECIFIED);
  t.is(PeerStatusValue.SYNCING, g.PEER_STATUS_SYNCING);
  t.is(PeerStatusValue.SERVING, g.PEER_STATUS_SERVING);
  t.is(PeerStatusValue.DRAINING, g.PEER_STATUS_DRAINING);
});

test('probe and ack bodies encode with the generated codec (field names match tunlb.proto)', (t) => {
  const h = harness({ selfIncarnation: 5, initialStatus: 'serving' });
  h.tickAt(12.7);
  const probe = h.lastProbe(1);
  const bytes = tunlb.v1.Probe.encode(probe).finish();
  const back = tunlb.v1.Probe.decode(bytes);
  t.is(back.nonce, probe.nonce!);
  t.is(back.sentAtMs, 12);
  t.is(back.target, 1);
  t.is(back.status, tunlb.v1.PeerStatus.PEER_STATUS_SERVING);
  // The answer to a peer's decoded probe round-trips too.
  h.m.onProbe(2, 9, tunlb.v1.Probe.decode(tunlb.v1.Probe.encode({ nonce: 77, sentAtMs: 123, target: 0, status: 1 }).finish()));
  const ack = tunlb.v1.ProbeAck.decode(tunlb.v1.ProbeAck.encode(h.acks[0]!.body).finish());
  t.deepEqual(
    { nonce: ack.nonce, probeSentAtMs: ack.probeSentAtMs, proberIncarnation: ack.proberIncarnation, status: ack.status },
    { nonce: 77, probeSentAtMs: 123, proberIncarnation: 9, status: SERVING },
  );
});

test('constructor validates its options', (t) => {
  const base: MembershipOptions = {
    selfIndex: 0,
    ids: ['a', 'b'],
    intervalMs: 100,
    misses: 3,
    nowMs: () => 0,
    sendProbe: () => {},
    sendAck: () => {},
  };
  for (const bad of [
    { ids: [] },
    { ids: Array.from({ length: 33 }, (_, i) => `x${i}`) },
    { selfIndex: 2 },
    { selfIndex: -1 },
    { intervalMs: 0 },
    { misses: 0 },
    { misses: 1.5 },
    { slackMs: -1 },
  ]) {
    const e = t.throws(() => new Membership({ ...base, ...bad }));
    t.true(isTunlbError(e, 'TUNLB_CONFIG_INVALID'), JSON.stringify(bad));
  }
  t.notThrows(() => new Membership({ ...base, ids: ['solo'] }));
});

test('self is always live; peers start UNKNOWN and not live; peers() has a self row', (t) => {
  const h = harness({ selfIndex: 1, selfIncarnation: 42 });
  t.deepEqual([...h.m.live], [0, 1, 0]);
  t.is(h.m.stateOf(1), PeerState.UP);
  t.is(h.m.stateOf(0), PeerState.UNKNOWN);
  for (let ms = 0; ms <= 2000; ms += 100) h.tickAt(ms);
  t.deepEqual([...h.m.live], [0, 1, 0], 'silence never makes self unlive, nor UNKNOWN peers DEAD');
  t.deepEqual(h.events, [], 'no events for peers never heard from');
  const rows = h.m.peers();
  t.is(rows.length, 3);
  t.like(rows[1], { index: 1, id: 'lb2', state: 'self', status: 'syncing', incarnation: 42, live: true });
  t.like(rows[0], { state: 'unknown', status: 'unknown', incarnation: 0, live: false, rttMs: null, lastAckAgoMs: null });
  t.is(h.m.stats.probesSent, 21 * 2);
  t.is(h.m.liveMask(), 0b010);
});

test('tick probes every peer (not self) with a fresh nonce, own clock and status', (t) => {
  const h = harness();
  h.tickAt(50.9);
  t.deepEqual(
    h.probes.map((p) => p.peer),
    [1, 2],
  );
  t.like(h.probes[0]!.body, { nonce: 1001, sentAtMs: 50, target: 1, status: SYNCING });
  t.like(h.probes[1]!.body, { nonce: 1002, target: 2 });
  h.m.setSelfStatus('serving');
  t.is(h.m.selfStatus, 'serving');
  h.tickAt(150);
  t.is(h.lastProbe(1).status, SERVING);
  h.m.setSelfStatus('draining');
  h.tickAt(250);
  t.is(h.lastProbe(2).status, DRAINING);
});

test('first ack: UP and live (SERVING), peer_up then peer_serving', (t) => {
  const h = harness();
  const live = h.m.live;
  h.tickAt(0);
  h.at(3);
  h.ack(1);
  t.is(h.m.stateOf(1), PeerState.UP);
  t.deepEqual([...h.m.live], [1, 1, 0]);
  t.is(h.m.live, live, 'live is updated in place');
  t.deepEqual(h.types(), ['peer_up:1', 'peer_serving:1']);
  t.like(h.events[0], { id: 'lb2', reason: 'first ack', rttMs: 3, incarnation: 7 });
  t.is(h.m.stats.acksReceived, 1);
  t.like(h.m.peers()[1], { state: 'up', status: 'serving', incarnation: 7, live: true, rttMs: 3, lastAckAgoMs: 0, misses: 0 });
});

test('an UP peer that is SYNCING or DRAINING is not live', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1, { status: SYNCING });
  t.is(h.m.stateOf(1), PeerState.UP);
  t.is(h.m.live[1], 0);
  h.tickAt(100);
  h.ack(1, { status: 0 /* UNSPECIFIED = syncing */ });
  t.is(h.m.live[1], 0);
  h.tickAt(200);
  h.ack(1, { status: SERVING });
  t.is(h.m.live[1], 1);
  h.tickAt(300);
  h.ack(1, { status: DRAINING });
  t.is(h.m.live[1], 0);
  t.deepEqual(h.types(), ['peer_up:1', 'peer_syncing:1', 'peer_serving:1', 'peer_draining:1']);
});

test('silence: SUSPECT after one interval (still live), DEAD after misses × interval, exactly one peer_down', (t) => {
  const h = harness();
  h.tickAt(0);
  h.at(1);
  h.ack(1); // last ack at t = 1
  const gen = h.m.liveGeneration;
  h.tickAt(100); // 99 ms silent
  t.is(h.m.stateOf(1), PeerState.UP);
  h.tickAt(200); // 199 > 100 + slack
  t.is(h.m.stateOf(1), PeerState.SUSPECT);
  t.is(h.m.live[1], 1, 'one missed probe is not a failure');
  t.is(h.m.liveGeneration, gen);
  h.tickAt(300); // 299 <= 3 × 100
  t.is(h.m.stateOf(1), PeerState.SUSPECT);
  t.like(h.m.peers()[1], { state: 'suspect', misses: 2, lastAckAgoMs: 299 });
  h.tickAt(400); // 399 > 300
  t.is(h.m.stateOf(1), PeerState.DEAD);
  t.is(h.m.live[1], 0);
  t.is(h.m.liveGeneration, gen + 1);
  for (let ms = 500; ms <= 3000; ms += 100) h.tickAt(ms);
  t.deepEqual(h.types(), ['peer_up:1', 'peer_serving:1', 'peer_suspect:1', 'peer_down:1']);
  t.like(h.events[3], { type: 'peer_down', id: 'lb2', silentMs: 399 });
  t.is(h.m.stats.failovers, 1);
  t.like(h.m.peers()[1], { state: 'dead', live: false, misses: 29 });
  t.is(h.probes.filter((p) => p.peer === 1).length, 31, 'dead peers are still probed');
});

test('DEAD exactly when silence exceeds misses × interval (deadline table)', (t) => {
  // [interval, misses, last ack at, tick at, expected state]
  const rows: Array<[number, number, number, number, PeerStateValue]> = [
    [100, 3, 0, 300, PeerState.SUSPECT],
    [100, 3, 0, 300.5, PeerState.DEAD],
    [100, 3, 0, 125, PeerState.UP], // slack = 25
    [100, 3, 0, 125.5, PeerState.SUSPECT],
    [100, 1, 0, 100, PeerState.UP],
    [100, 1, 0, 101, PeerState.DEAD], // misses = 1: straight to DEAD
    [10, 5, 3, 53, PeerState.SUSPECT],
    [10, 5, 3, 53.1, PeerState.DEAD],
  ];
  for (const [intervalMs, misses, ackAt, tickAt, want] of rows) {
    const h = harness({ intervalMs, misses });
    h.tickAt(ackAt);
    h.ack(1);
    // Intermediate on-time ticks, so no stall is credited.
    for (let ms = ackAt + intervalMs; ms < tickAt; ms += intervalMs) h.tickAt(ms);
    h.tickAt(tickAt);
    t.is(h.m.stateOf(1), want, `interval ${intervalMs}, misses ${misses}, ack ${ackAt}, tick ${tickAt}`);
  }
});

test('recovery: an ack to a DEAD peer brings it back UP and live with peer_up', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1);
  for (let ms = 100; ms <= 400; ms += 100) h.tickAt(ms);
  t.is(h.m.stateOf(1), PeerState.DEAD);
  h.at(405);
  h.ack(1);
  t.is(h.m.stateOf(1), PeerState.UP);
  t.is(h.m.live[1], 1);
  const up = h.events.filter((e) => e.type === 'peer_up');
  t.is(up.length, 2);
  t.like(up[1], { reason: 'ack after dead', rttMs: 5 });
  t.is(h.m.stats.failovers, 1);
  // SUSPECT -> UP too.
  h.tickAt(500);
  h.tickAt(610);
  t.is(h.m.stateOf(1), PeerState.SUSPECT);
  h.ack(1);
  t.is(h.m.stateOf(1), PeerState.UP);
  t.like(h.events.at(-1), { type: 'peer_up', reason: 'ack after suspect' });
});

test('restart: higher incarnation -> peer_restarted, not live while SYNCING, live once SERVING', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1, { inc: 100 });
  t.is(h.m.live[1], 1);
  h.tickAt(100);
  h.ack(1, { inc: 200, status: SYNCING });
  t.is(h.m.stateOf(1), PeerState.UP);
  t.is(h.m.live[1], 0, 'restarted peer is syncing: not live');
  t.deepEqual(h.types().slice(2), ['peer_restarted:1', 'peer_syncing:1']);
  t.like(h.events[2], { incarnation: 200, reason: 'incarnation 100 -> 200' });
  t.is(h.m.stats.restarts, 1);
  h.tickAt(200);
  h.ack(1, { inc: 200, status: SYNCING });
  t.is(h.m.live[1], 0);
  h.tickAt(300);
  h.ack(1, { inc: 200, status: SERVING });
  t.is(h.m.live[1], 1);
  t.is(h.types().at(-1), 'peer_serving:1');
  t.is(h.m.peers()[1]!.incarnation, 200);
  // A message from the old process (lower incarnation) is stale: ignored.
  h.tickAt(400);
  h.ack(1, { inc: 100, status: DRAINING });
  t.is(h.m.stats.staleIncarnation, 1);
  t.is(h.m.live[1], 1);
  h.m.onProbe(1, 100, { nonce: 5, sentAtMs: 1, target: 0, status: DRAINING });
  t.is(h.m.stats.staleIncarnation, 2);
  t.is(h.acks.length, 0, 'stale probe not answered');
  // Restarted peer announcing itself by probe first: restart known before any ack.
  h.m.onProbe(1, 300, { nonce: 6, sentAtMs: 1, target: 0, status: SYNCING });
  t.is(h.m.live[1], 0);
  t.is(h.m.stats.restarts, 2);
});

test('restart after DEAD: peer_restarted and peer_up, live only when SERVING', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1, { inc: 100 });
  for (let ms = 100; ms <= 1000; ms += 100) h.tickAt(ms);
  t.is(h.m.stateOf(1), PeerState.DEAD);
  h.ack(1, { inc: 300, status: SYNCING });
  t.deepEqual(h.types().slice(-4), ['peer_down:1', 'peer_restarted:1', 'peer_up:1', 'peer_syncing:1']);
  t.is(h.m.live[1], 0);
  h.tickAt(1100);
  h.ack(1, { inc: 300, status: SERVING });
  t.is(h.m.live[1], 1);
});

test('acks must match an outstanding nonce: stale, duplicate, forged and misdirected acks are ignored and counted', (t) => {
  const h = harness({ selfIncarnation: 11 });
  h.tickAt(0);
  const first = h.lastProbe(1);
  // unknown nonce
  h.m.onProbeAck(1, 7, { nonce: 999999, probeSentAtMs: 0, proberIncarnation: 11, status: SERVING });
  // nonce 0 / absent
  h.m.onProbeAck(1, 7, { proberIncarnation: 11, status: SERVING });
  // right nonce, wrong echoed send time
  h.m.onProbeAck(1, 7, { nonce: first.nonce, probeSentAtMs: 5, proberIncarnation: 11, status: SERVING });
  // nonce sent to another peer
  h.m.onProbeAck(1, 7, { nonce: h.lastProbe(2).nonce, probeSentAtMs: 0, proberIncarnation: 11, status: SERVING });
  // from self / out of range
  h.m.onProbeAck(0, 7, { nonce: first.nonce, probeSentAtMs: 0, proberIncarnation: 11 });
  h.m.onProbeAck(9, 7, { nonce: first.nonce, probeSentAtMs: 0, proberIncarnation: 11 });
  t.is(h.m.stats.acksStale, 6);
  // answer to a previous incarnation of ours
  h.ack(1, { proberInc: 10 });
  t.is(h.m.stats.acksWrongIncarnation, 1);
  t.is(h.m.stateOf(1), PeerState.UNKNOWN);
  t.is(h.m.stats.acksReceived, 0);
  // the real one
  h.ack(1, { proberInc: 11 });
  t.is(h.m.stateOf(1), PeerState.UP);
  // its duplicate is stale
  h.ack(1, { proberInc: 11 });
  t.is(h.m.stats.acksStale, 7);
  t.is(h.m.stats.acksReceived, 1);
  // an ack to a probe older than the ring (misses + 2 = 5 probes) is stale
  for (let ms = 100; ms <= 600; ms += 100) h.tickAt(ms); // ring now holds the probes of 200..600
  h.ack(1, { proberInc: 11, probe: h.probes.filter((p) => p.peer === 1)[1]!.body }); // probe of t = 100
  t.is(h.m.stats.acksStale, 8);
  // ... but one within the ring still counts (a late answer is still an answer)
  h.ack(1, { proberInc: 11, probe: h.probes.filter((p) => p.peer === 1)[2]!.body }); // probe of t = 200
  t.is(h.m.stats.acksReceived, 2);
});

test('RTT: last sample and EWMA with alpha 1/8 (RFC 6298 SRTT)', (t) => {
  const h = harness();
  h.tickAt(1000.25);
  h.at(1007.25);
  h.ack(1);
  t.like(h.m.peers()[1], { rttMs: 7, rttAvgMs: 7 });
  h.tickAt(1100);
  h.at(1115);
  h.ack(1);
  t.like(h.m.peers()[1], { rttMs: 15, rttAvgMs: 8 });
  h.tickAt(1200);
  h.at(1200);
  h.ack(1);
  t.is(h.m.peers()[1]!.rttMs, 0);
  t.is(h.m.peers()[1]!.rttAvgMs, 7);
  t.is(h.m.peers()[1]!.lastAckAgoMs, 0);
  h.at(1234);
  t.is(h.m.peers()[1]!.lastAckAgoMs, 34);
});

test('a tick stall (clock jumps 250 ms, misses=3, interval=100) followed by a prompt ack declares nothing', (t) => {
  const h = harness();
  h.tickAt(0);
  h.at(1);
  h.ack(1);
  h.tickAt(100); // its ack is still queued in the socket when the loop stalls
  const queued = h.lastProbe(1);
  h.tickAt(350); // the stalled tick runs first (libuv: timers before poll)
  t.is(h.m.stateOf(1), PeerState.UP, 'the stall is not the peer’s silence');
  h.at(350.5);
  h.ack(1, { probe: queued }); // the queued ack
  h.at(351);
  h.ack(1); // and the answer to the probe sent after the stall
  t.is(h.m.stateOf(1), PeerState.UP);
  t.is(h.m.live[1], 1);
  t.deepEqual(h.types(), ['peer_up:1', 'peer_serving:1']);
  t.is(h.m.stats.stalls, 1);
  t.is(h.m.stats.stallMs, 150);
  t.is(h.m.stats.failovers, 0);
});

test('even a stall far longer than misses × interval cannot fail a peer over', (t) => {
  for (const stall of [301, 1000, 60_000]) {
    const h = harness();
    h.tickAt(0);
    h.at(1);
    h.ack(1);
    h.ack(2);
    h.tickAt(100);
    h.tickAt(100 + stall);
    t.is(h.m.stateOf(1), PeerState.UP, `stall ${stall}`);
    t.deepEqual([...h.m.live], [1, 1, 1]);
    h.at(100 + stall + 2);
    h.ack(1);
    h.ack(2);
    h.tickAt(200 + stall);
    t.is(h.m.stats.failovers, 0);
    t.deepEqual(h.types(), ['peer_up:1', 'peer_serving:1', 'peer_up:2', 'peer_serving:2']);
  }
});

test('after a stall, real silence is still detected after misses intervals of probing', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1); // last ack at 0; the peer then dies
  h.tickAt(100);
  h.tickAt(1100); // stall of 900 ms: credited
  t.is(h.m.stateOf(1), PeerState.UP);
  h.tickAt(1200); // counted silence 300: probes of 100 and 1100 missed
  t.is(h.m.stateOf(1), PeerState.SUSPECT);
  h.tickAt(1300); // 400 > 300: probes of 100, 1100, 1200 missed
  t.is(h.m.stateOf(1), PeerState.DEAD);
  t.like(h.events.at(-1), { type: 'peer_down', silentMs: 400 });
  t.is(h.m.stats.failovers, 1);
});

test('steady late ticks (overloaded loop) count about one interval per tick', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1);
  // every tick 150 ms apart (50 ms late > slack 25): each counts as one interval
  let ms = 0;
  let ticks = 0;
  while (h.m.stateOf(1) !== PeerState.DEAD) {
    ms += 150;
    h.tickAt(ms);
    ticks++;
  }
  t.is(ticks, 4, 'same number of ticks as on time: DEAD on the 4th tick (misses = 3)');
  // small lateness (below slack) is not credited
  const g = harness();
  g.tickAt(0);
  g.ack(1);
  for (ms = 110; g.m.stateOf(1) !== PeerState.DEAD; ms += 110) g.tickAt(ms);
  t.is(ms - 110, 330);
  t.is(g.m.stats.stalls, 0);
});

test('probes are answered at once; misdirected probes are dropped', (t) => {
  const h = harness({ selfIncarnation: 3, initialStatus: 'serving' });
  h.at(10);
  h.m.onProbe(2, 55, { nonce: 123, sentAtMs: 9999, target: 0, status: SYNCING });
  t.deepEqual(h.acks, [{ peer: 2, body: { nonce: 123, probeSentAtMs: 9999, proberIncarnation: 55, status: SERVING, configHash: 0 } }]);
  t.is(h.m.stats.probesReceived, 1);
  t.is(h.m.stats.acksSent, 1);
  t.is(h.m.stateOf(2), PeerState.UNKNOWN, 'a probe alone does not make a peer UP');
  t.is(h.m.peers()[2]!.incarnation, 55);
  t.is(h.m.peers()[2]!.status, 'syncing');
  h.m.onProbe(2, 55, { nonce: 124, sentAtMs: 1, target: 1 }); // meant for lb2
  h.m.onProbe(0, 55, { nonce: 125, sentAtMs: 1, target: 0 }); // from "self"
  h.m.onProbe(7, 55, { nonce: 126, sentAtMs: 1, target: 0 }); // no such balancer
  t.is(h.m.stats.probesDropped, 3);
  t.is(h.acks.length, 1);
});

test('a probe defers DEAD (not SUSPECT) for an UP peer; probeIsEvidence=false counts only acks', (t) => {
  for (const evidence of [true, false]) {
    const h = harness({ probeIsEvidence: evidence });
    h.tickAt(0);
    h.ack(1);
    for (let ms = 100; ms <= 1000; ms += 100) {
      h.at(ms - 50);
      h.m.onProbe(1, 7, { nonce: ms, sentAtMs: ms, target: 0, status: SERVING }); // its probes arrive, acks do not
      h.tickAt(ms);
    }
    if (evidence) {
      t.is(h.m.stateOf(1), PeerState.SUSPECT);
      t.is(h.m.live[1], 1);
      t.is(h.m.stats.failovers, 0);
    } else {
      t.is(h.m.stateOf(1), PeerState.DEAD);
      t.is(h.m.live[1], 0);
    }
    t.is(h.acks.length, 10, 'every probe answered either way');
  }
  // a probe never brings a DEAD peer back: that needs an ack (round trip)
  const h = harness();
  h.tickAt(0);
  h.ack(1);
  for (let ms = 100; ms <= 400; ms += 100) h.tickAt(ms);
  h.m.onProbe(1, 7, { nonce: 1, sentAtMs: 1, target: 0, status: SERVING });
  t.is(h.m.stateOf(1), PeerState.DEAD);
  t.is(h.m.live[1], 0);
});

test('a probe carries the peer status: draining makes it not live at once', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1);
  t.is(h.m.live[1], 1);
  h.m.onProbe(1, 7, { nonce: 1, sentAtMs: 1, target: 0, status: DRAINING });
  t.is(h.m.live[1], 0);
  t.is(h.m.stateOf(1), PeerState.UP);
  t.is(h.types().at(-1), 'peer_draining:1');
});

test('logMembershipEvent writes one structured line; suspect/down at warn', (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  const log = pino({ formatters: { level: (label) => ({ level: label }) } }, sink);
  logMembershipEvent(log, { type: 'peer_down', peer: 2, id: 'lb3', reason: 'no answer', silentMs: 301.4 });
  logMembershipEvent(log, { type: 'peer_up', peer: 2, id: 'lb3', reason: 'first ack', rttMs: 0.12345, incarnation: 9 });
  t.like(lines[0], { level: 'warn', event: 'peer_down', peer: 'lb3', peerIndex: 2, reason: 'no answer', silentMs: 301 });
  t.like(lines[1], { level: 'info', event: 'peer_up', rttMs: 0.123, incarnation: 9 });
});

// ---------------------------------------------------------------------------------------
// Three balancers wired through a simulated network (1 ms steps, 1 ms latency).

interface Msg {
  at: number;
  from: number;
  to: number;
  inc: number;
  probe?: ProbeBody;
  ack?: ProbeAckBody;
}

class Sim {
  now = 0;
  readonly n = 3;
  readonly ids = ['lb1', 'lb2', 'lb3'];
  readonly nodes: Membership[] = [];
  readonly incs = [1000, 2000, 3000];
  readonly events: MembershipEvent[][] = [[], [], []];
  readonly crashed = new Set<number>();
  /** Directed links "a>b" that drop everything. */
  readonly cut = new Set<string>();
  /** Node -> time until which its event loop is stalled. */
  readonly stalledUntil = [0, 0, 0];
  readonly nextTick: number[];
  loss = 0;
  readonly rnd = prng(12345);
  readonly queue: Msg[] = [];

  constructor(readonly opts: Partial<MembershipOptions> = {}) {
    for (let i = 0; i < this.n; i++) this.nodes.push(this.make(i));
    this.nextTick = [0, 7, 13]; // out of phase
  }

  make(i: number): Membership {
    return new Membership({
      selfIndex: i,
      ids: this.ids,
      intervalMs: 100,
      misses: 3,
      nowMs: () => this.now,
      sendProbe: (peer, body) => this.send(i, peer, { probe: body }),
      sendAck: (peer, body) => this.send(i, peer, { ack: body }),
      onEvent: (e) => this.events[i]!.push(e),
      selfIncarnation: this.incs[i],
      initialStatus: 'serving',
      ...this.opts,
    });
  }

  send(from: number, to: number, m: { probe?: ProbeBody; ack?: ProbeAckBody }): void {
    if (this.cut.has(`${from}>${to}`)) return;
    if (this.loss > 0 && this.rnd() / 2 ** 32 < this.loss) return;
    this.queue.push({ at: this.now + 1, from, to, inc: this.incs[from]!, ...m });
  }

  /** Crash node i (it stops sending, receiving and ticking). */
  crash(i: number): void {
    this.crashed.add(i);
  }

  /** Start node i again as a new process: higher incarnation, syncing. */
  restart(i: number): void {
    this.crashed.delete(i);
    this.incs[i] = this.incs[i]! + 1;
    this.nodes[i] = this.make(i);
    this.nodes[i]!.setSelfStatus('syncing');
    this.nextTick[i] = this.now;
  }

  run(untilMs: number): void {
    for (; this.now <= untilMs; this.now++) {
      for (let i = 0; i < this.n; i++) {
        if (this.crashed.has(i) || this.now < this.stalledUntil[i]!) continue;
        // libuv order: timers first, then I/O
        if (this.now >= this.nextTick[i]!) {
          // setInterval does not catch up: one late tick, then the period resumes from it
          this.nodes[i]!.tick();
          this.nextTick[i] = Math.max(this.nextTick[i]! + 100, this.now + 1);
          if (this.nextTick[i]! <= this.now) this.nextTick[i] = this.now + 100;
        }
        for (let k = 0; k < this.queue.length; ) {
          const m = this.queue[k]!;
          if (m.to !== i || m.at > this.now) {
            k++;
            continue;
          }
          this.queue.splice(k, 1);
          if (m.probe) this.nodes[i]!.onProbe(m.from, m.inc, m.probe);
          else if (m.ack) this.nodes[i]!.onProbeAck(m.from, m.inc, m.ack);
        }
      }
      // crashed nodes lose what is sent to them
      for (let k = 0; k < this.queue.length; ) {
        if (this.crashed.has(this.queue[k]!.to)) this.queue.splice(k, 1);
        else k++;
      }
    }
  }

  liveMatrix(): Array<number[] | null> {
    return this.nodes.map((m, i) => (this.crashed.has(i) ? null : [...m.live]));
  }

  count(i: number, type: MembershipEvent['type'], peer?: number): number {
    return this.events[i]!.filter((e) => e.type === type && (peer === undefined || e.peer === peer)).length;
  }
}

interface Scenario {
  name: string;
  opts?: Partial<MembershipOptions>;
  script: (s: Sim) => void;
  /** Live arrays per node at the end (null: crashed node, not checked). */
  live: Array<number[] | null>;
  /** [node, event type, about peer, expected count] */
  events?: Array<[number, MembershipEvent['type'], number, number]>;
  check?: (t: import('ava').ExecutionContext, s: Sim) => void;
}

const scenarios: Scenario[] = [
  {
    name: 'healthy cluster: everyone live everywhere, no failover',
    script: (s) => s.run(3000),
    live: [
      [1, 1, 1],
      [1, 1, 1],
      [1, 1, 1],
    ],
    events: [
      [0, 'peer_up', 1, 1],
      [0, 'peer_up', 2, 1],
      [1, 'peer_down', 0, 0],
      [2, 'peer_suspect', 0, 0],
    ],
    check: (t, s) => {
      for (const m of s.nodes) {
        t.is(m.stats.failovers, 0);
        for (const r of m.peers()) if (r.state !== 'self') t.is(r.rttMs, 2); // 1 ms each way
      }
    },
  },
  {
    name: 'lb3 crashes: lb1 and lb2 each fail it over exactly once, within (misses + 1) intervals',
    script: (s) => {
      s.run(1000);
      s.crash(2); // last answers read at ~1002 (lb1) / ~1009 (lb2)
      s.run(1150);
      for (let i = 0; i < 2; i++) t0(s, i, 2, PeerState.SUSPECT, 1);
      s.run(1420);
      for (let i = 0; i < 2; i++) t0(s, i, 2, PeerState.DEAD, 0);
      s.run(5000);
    },
    live: [[1, 1, 0], [1, 1, 0], null],
    events: [
      [0, 'peer_down', 2, 1],
      [1, 'peer_down', 2, 1],
      [0, 'peer_down', 1, 0],
      [1, 'peer_down', 0, 0],
    ],
  },
  {
    name: 'lb3 restarts fast (before DEAD): peer_restarted, not live while syncing, live once serving',
    script: (s) => {
      s.run(1000);
      s.crash(2);
      s.run(1150);
      s.restart(2);
      s.run(1400);
      for (let i = 0; i < 2; i++) t0(s, i, 2, PeerState.UP, 0);
      s.nodes[2]!.setSelfStatus('serving'); // bulk sync done
      s.run(1600);
    },
    live: [
      [1, 1, 1],
      [1, 1, 1],
      [1, 1, 1],
    ],
    events: [
      [0, 'peer_restarted', 2, 1],
      [1, 'peer_restarted', 2, 1],
      [0, 'peer_down', 2, 0],
      [0, 'peer_syncing', 2, 1],
      [0, 'peer_serving', 2, 2],
    ],
  },
  {
    name: 'lb3 down for long, then restarts: peer_down, then restarted + up, live when serving',
    script: (s) => {
      s.run(1000);
      s.crash(2);
      s.run(3000);
      s.restart(2);
      s.run(3500);
      t0(s, 0, 2, PeerState.UP, 0);
      s.nodes[2]!.setSelfStatus('serving');
      s.run(3700);
    },
    live: [
      [1, 1, 1],
      [1, 1, 1],
      [1, 1, 1],
    ],
    events: [
      [0, 'peer_down', 2, 1],
      [0, 'peer_restarted', 2, 1],
      [0, 'peer_up', 2, 2],
      [2, 'peer_down', 0, 0],
    ],
  },
  {
    name: 'partition lb1 <-> lb3 (both ways): they see each other dead, lb2 sees everyone',
    script: (s) => {
      s.run(1000);
      s.cut.add('0>2');
      s.cut.add('2>0');
      s.run(3000);
    },
    live: [
      [1, 1, 0],
      [1, 1, 1],
      [0, 1, 1],
    ],
    events: [
      [0, 'peer_down', 2, 1],
      [2, 'peer_down', 0, 1],
      [1, 'peer_down', 0, 0],
      [1, 'peer_down', 2, 0],
    ],
  },
  {
    name: 'partition heals: peer_up on both sides',
    script: (s) => {
      s.run(1000);
      s.cut.add('0>2');
      s.cut.add('2>0');
      s.run(2000);
      s.cut.clear();
      s.run(2300);
    },
    live: [
      [1, 1, 1],
      [1, 1, 1],
      [1, 1, 1],
    ],
    events: [
      [0, 'peer_down', 2, 1],
      [0, 'peer_up', 2, 2],
      [2, 'peer_up', 0, 2],
    ],
  },
  {
    name: 'one-way loss lb1 -> lb3: lb3 fails lb1 over; lb1 keeps lb3 SUSPECT (its probes arrive)',
    script: (s) => {
      s.run(1000);
      s.cut.add('0>2');
      s.run(3000);
    },
    live: [
      [1, 1, 1],
      [1, 1, 1],
      [0, 1, 1],
    ],
    check: (t, s) => t.is(s.nodes[0]!.stateOf(2), PeerState.SUSPECT),
  },
  {
    name: 'one-way loss lb1 -> lb3 with probeIsEvidence=false: both fail each other over',
    opts: { probeIsEvidence: false },
    script: (s) => {
      s.run(1000);
      s.cut.add('0>2');
      s.run(3000);
    },
    live: [
      [1, 1, 0],
      [1, 1, 1],
      [0, 1, 1],
    ],
  },
  {
    name: 'lb2 event loop stalls 2 s: it fails nobody over; the others fail it over once and take it back',
    script: (s) => {
      s.run(1000);
      s.stalledUntil[1] = 3000;
      s.run(2000);
      t0(s, 0, 1, PeerState.DEAD);
      s.run(3500);
    },
    live: [
      [1, 1, 1],
      [1, 1, 1],
      [1, 1, 1],
    ],
    events: [
      [1, 'peer_down', 0, 0],
      [1, 'peer_down', 2, 0],
      [1, 'peer_suspect', 0, 0],
      [0, 'peer_down', 1, 1],
      [2, 'peer_down', 1, 1],
      [0, 'peer_up', 1, 2],
    ],
    check: (t, s) => t.is(s.nodes[1]!.stats.stalls, 1),
  },
  {
    name: '10% random loss on every link for 20 s: no failover',
    script: (s) => {
      s.run(500);
      s.loss = 0.1;
      s.run(20_500);
      s.loss = 0;
      s.run(21_000);
    },
    live: [
      [1, 1, 1],
      [1, 1, 1],
      [1, 1, 1],
    ],
    check: (t, s) => {
      for (const m of s.nodes) t.is(m.stats.failovers, 0);
      t.true(s.nodes.some((m) => m.stats.acksReceived < 2 * 205), 'loss happened');
    },
  },
  {
    name: 'lb1 drains: peers stop counting it live at once, it stays UP',
    script: (s) => {
      s.run(1000);
      s.nodes[0]!.setSelfStatus('draining');
      s.run(1150);
    },
    live: [
      [1, 1, 1],
      [0, 1, 1],
      [0, 1, 1],
    ],
    events: [
      [1, 'peer_draining', 0, 1],
      [2, 'peer_draining', 0, 1],
    ],
    check: (t, s) => t.is(s.nodes[1]!.stateOf(0), PeerState.UP),
  },
];

/** Assertion helper usable inside scripts: throws so the scenario fails with a message. */
function t0(s: Sim, node: number, peer: number, state: number, live?: number): void {
  const got = s.nodes[node]!.stateOf(peer);
  if (got !== state) throw new Error(`t=${s.now}: lb${node + 1} sees lb${peer + 1} in state ${got}, want ${state}`);
  if (live !== undefined && s.nodes[node]!.live[peer] !== live) {
    throw new Error(`t=${s.now}: lb${node + 1} live[${peer}] = ${s.nodes[node]!.live[peer]}, want ${live}`);
  }
}

for (const sc of scenarios) {
  test(`3 balancers: ${sc.name}`, (t) => {
    const s = new Sim(sc.opts);
    sc.script(s);
    t.deepEqual(s.liveMatrix(), sc.live);
    for (const [node, type, peer, want] of sc.events ?? []) {
      t.is(s.count(node, type, peer), want, `lb${node + 1}: ${type} about lb${peer + 1}`);
    }
    sc.check?.(t, s);
  });
}

// ---------------------------------------------------------------------------------------
// Incarnations learnt from fresh answers only (membership.ts "Incarnations")

test('onProbeAck says whether the ack was fresh (the owner confirms that incarnation to its receiver)', (t) => {
  const h = harness();
  h.tickAt(0);
  const p = h.lastProbe(1);
  t.true(h.ack(1, { inc: 7 }), 'matches an outstanding nonce: fresh');
  t.false(h.ack(1, { inc: 7, probe: p }), 'the same nonce again: stale');
  t.false(h.ack(1, { inc: 7, probe: { nonce: 999_999, sentAtMs: 0, target: 1, status: SERVING } }), 'a nonce we never sent');
  t.false(h.m.onProbeAck(1, 7, { nonce: 0, probeSentAtMs: 0, proberIncarnation: 0, status: SERVING }), 'no nonce');
});

test('a probe of an unconfirmed incarnation is answered (at most UNCONFIRMED_ANSWERS a tick), challenged once a tick, and changes nothing else', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1, { inc: 100 });
  t.is(h.m.live[1], 1);
  const probesBefore = h.probes.filter((p) => p.peer === 1).length;
  const eventsBefore = h.events.length;
  // Replayed (or a restarted peer's first) probes: unconfirmed, DRAINING status claimed.
  for (let i = 0; i < 5; i++) h.m.onProbe(1, 200, { nonce: 10 + i, sentAtMs: 1, target: 0, status: DRAINING }, false);
  t.is(h.acks.length, 2, 'two answered this tick, the rest not');
  t.deepEqual(h.acks.map((a) => a.body.proberIncarnation), [200, 200], 'answered to the incarnation that asked');
  t.is(h.m.stats.probesUnconfirmed, 5);
  t.is(h.m.stats.probesUnconfirmedUnanswered, 3);
  t.is(h.probes.filter((p) => p.peer === 1).length, probesBefore + 1, 'one challenge probe, at once');
  t.is(h.m.stats.challenges, 1);
  t.is(h.m.live[1], 1, 'status DRAINING from an unconfirmed probe is not taken');
  t.is(h.m.peers()[1]!.incarnation, 100, 'nor its incarnation');
  t.is(h.events.length, eventsBefore, 'no event');
  // Next tick: the budget and the challenge renew.
  h.tickAt(100);
  h.m.onProbe(1, 200, { nonce: 20, sentAtMs: 1, target: 0, status: SYNCING }, false);
  t.is(h.acks.length, 3);
  t.is(h.m.stats.challenges, 2);
  // The challenge is answered by incarnation 200: fresh, so it is taken (a restart).
  t.true(h.ack(1, { inc: 200, status: SYNCING }));
  t.is(h.types().at(-2), 'peer_restarted:1');
  t.is(h.m.live[1], 0, 'restarted peer syncing: not live');
});

test('a fresh ack from a LOWER incarnation: stale while the known one answers, a restart once it is silent (clock back, state lost)', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1, { inc: 500 });
  h.tickAt(100);
  t.false(h.ack(1, { inc: 400 }), 'peer UP with 500: 400 is an old process');
  t.is(h.m.stats.staleIncarnation, 1);
  // 500 goes silent: DEAD after misses x interval.
  for (let ms = 200; ms <= 600; ms += 100) h.tickAt(ms);
  t.is(h.m.stateOf(1), PeerState.DEAD);
  t.true(h.ack(1, { inc: 400, status: SYNCING }), 'a fresh answer from 400 while 500 is silent');
  t.is(h.m.stats.incarnationsBack, 1);
  t.is(h.m.stateOf(1), PeerState.UP);
  t.is(h.m.peers()[1]!.incarnation, 400);
  const restarted = h.events.find((e) => e.type === 'peer_restarted');
  t.regex(restarted?.reason ?? '', /500 -> 400 \(went back/);
});

test('peer_suspect events are counted (stats.suspects)', (t) => {
  const h = harness();
  h.tickAt(0);
  h.ack(1);
  h.ack(2);
  h.tickAt(100);
  h.ack(2);
  h.tickAt(200);
  t.is(h.m.stateOf(1), PeerState.SUSPECT);
  t.is(h.m.stats.suspects, 1);
});

// ---------------------------------------------------------------------------------------
// Planned stop / drain-self (leave): DRAINING at once, and acknowledged by every live peer.

test('leave: a probe with status DRAINING goes to every peer at once; a peer that reads it stops counting us live', (t) => {
  const h = harness({ initialStatus: 'serving' });
  h.tickAt(0);
  h.ack(1);
  h.ack(2);
  const before = h.probes.length;
  h.at(30);
  h.m.leave();
  t.is(h.m.selfStatus, 'draining');
  const sent = h.probes.slice(before);
  t.deepEqual(sent.map((p) => [p.peer, p.body.status]), [[1, DRAINING], [2, DRAINING]]);
  t.true(sent.every((p) => p.body.sentAtMs === 30));
  // The other side: a peer's Membership that receives such a probe marks us not live at once.
  const peer = harness({ selfIndex: 1, initialStatus: 'serving' });
  peer.tickAt(0);
  peer.ack(0);
  t.is(peer.m.live[0], 1);
  peer.m.onProbe(0, 7, { nonce: 5, sentAtMs: 30, target: 1, status: DRAINING as tunlb.v1.PeerStatus });
  t.is(peer.m.live[0], 0);
  t.true(peer.types().includes('peer_draining:0'));
});

// Table: which peers must have acked a probe sent since leave() for leaveAcked to hold.
const leaveCases: Array<{ name: string; setup: (h: ReturnType<typeof harness>) => void; acked: boolean }> = [
  { name: 'nobody answered yet', setup: () => {}, acked: false },
  { name: 'one of two live peers answered', setup: (h) => h.ack(1), acked: false },
  { name: 'both live peers answered', setup: (h) => { h.ack(1); h.ack(2); }, acked: true },
  {
    name: 'an ack to a probe sent BEFORE leave() does not count',
    setup: (h) => { h.ack(1, { probe: h.probes[0]!.body }); h.ack(2, { probe: h.probes[1]!.body }); },
    acked: false,
  },
  {
    name: 'a dead peer has nothing to hand over',
    setup: (h) => { for (let ms = 200; ms <= 600; ms += 100) { h.tickAt(ms); h.ack(1); } t2dead(h); },
    acked: true,
  },
];
/** Peer 2 (never answering since leave) is DEAD by now. */
function t2dead(h: ReturnType<typeof harness>): void {
  if (h.m.stateOf(2) !== PeerState.DEAD) throw new Error(`peer 2 should be dead, is ${h.m.stateOf(2)}`);
}
for (const c of leaveCases) {
  test(`leaveAcked: ${c.name}`, (t) => {
    const h = harness({ initialStatus: 'serving' });
    h.tickAt(0);
    h.ack(1);
    h.ack(2);
    h.tickAt(100);
    // Probes of this tick stay unanswered (the "before leave" case answers them late).
    h.at(110);
    t.false(h.m.leaveAcked(), 'not leaving yet');
    h.probes.splice(0, h.probes.length - 2);
    h.m.leave();
    c.setup(h);
    t.is(h.m.leaveAcked(), c.acked);
  });
}

test('unleave: SERVING again, announced to every peer at once', (t) => {
  const h = harness({ initialStatus: 'serving' });
  h.tickAt(0);
  h.m.leave();
  const before = h.probes.length;
  h.m.unleave();
  t.is(h.m.selfStatus, 'serving');
  t.false(h.m.leaveAcked());
  t.deepEqual(h.probes.slice(before).map((p) => p.body.status), [SERVING, SERVING]);
});
