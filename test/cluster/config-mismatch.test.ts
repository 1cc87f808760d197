/**
 * Config version in the probes (src/cluster/membership.ts "Config version"): every probe and
 * ack carries this balancer's config hash; a peer whose reported hash differs is a mismatch,
 * raised once when it starts (config_mismatch) and once when it ends (config_match), naming the
 * peer and both hashes; shown in peers(). Unconfirmed probes change nothing; a peer that
 * reports no hash (0: an earlier release) is never a mismatch.
 */
import test from 'ava';
import { Membership, type MembershipEvent, type ProbeBody } from '../../src/cluster/membership';

const A = 0x0000aaaaaaaa;
const B = 0x0000bbbbbbbb;
const hex = (v: number): string => v.toString(16).padStart(12, '0');

function harness() {
  const clock = { now: 0 };
  const probes: Array<{ peer: number; body: ProbeBody }> = [];
  const acks: Array<{ peer: number; body: { configHash?: number | null } }> = [];
  const events: MembershipEvent[] = [];
  let nonce = 1;
  const m = new Membership({
    selfIndex: 0,
    ids: ['lb1', 'lb2', 'lb3'],
    intervalMs: 100,
    misses: 3,
    nowMs: () => clock.now,
    sendProbe: (peer, body) => probes.push({ peer, body }),
    sendAck: (peer, body) => acks.push({ peer, body }),
    onEvent: (e) => events.push(e),
    nonce: () => ++nonce,
    selfIncarnation: 5,
    initialStatus: 'serving',
  });
  const ack = (peer: number, configHash: number): boolean => {
    const p = [...probes].reverse().find((x) => x.peer === peer)!.body;
    return m.onProbeAck(peer, 7 + peer, { nonce: p.nonce, probeSentAtMs: p.sentAtMs, proberIncarnation: 5, status: 2, configHash });
  };
  const probe = (peer: number, configHash: number, confirmed = true): void =>
    m.onProbe(peer, 7 + peer, { nonce: 99, sentAtMs: 1, target: 0, status: 2, configHash }, confirmed);
  const cfg = (): string[] => events.filter((e) => e.type.startsWith('config_')).map((e) => `${e.type}:${e.id}`);
  return { m, clock, probes, acks, events, ack, probe, cfg };
}

test('probes and acks carry our config hash from setConfigHash on', (t) => {
  const h = harness();
  h.m.tick();
  t.is(h.probes.at(-1)!.body.configHash, 0, 'not set yet: 0 (not reported)');
  h.m.setConfigHash(A);
  h.clock.now = 100;
  h.m.tick();
  t.true(h.probes.slice(-2).every((p) => p.body.configHash === A));
  h.probe(1, A);
  t.is(h.acks.at(-1)!.body.configHash, A, 'the ack to a probe carries it too');
});

test('mismatch: raised when a peer reports another hash, once; ended by a match; events name the peer and both hashes', (t) => {
  const h = harness();
  h.m.setConfigHash(A);
  h.m.tick();
  t.true(h.ack(1, A));
  t.true(h.ack(2, B));
  t.deepEqual(h.cfg(), ['config_mismatch:lb3']);
  const e = h.events.find((x) => x.type === 'config_mismatch')!;
  t.is(e.reason, `lb3 runs config ${hex(B)}, lb1 runs ${hex(A)}`);
  t.is(e.peerConfig, hex(B));
  t.is(e.selfConfig, hex(A));
  t.is(h.m.configMismatches(), 1);
  const v = h.m.peers();
  t.deepEqual(v.map((p) => [p.id, p.configHash, p.configMismatch]), [
    ['lb1', hex(A), false],
    ['lb2', hex(A), false],
    ['lb3', hex(B), true],
  ]);
  // The same hash again (every probe carries it): no new event.
  h.probe(2, B);
  h.clock.now = 100;
  h.m.tick();
  h.ack(2, B);
  t.deepEqual(h.cfg(), ['config_mismatch:lb3']);
  // lb3 reloads to ours: the mismatch ends.
  h.probe(2, A);
  t.deepEqual(h.cfg(), ['config_mismatch:lb3', 'config_match:lb3']);
  t.is(h.events.at(-1)!.reason, `lb3 and lb1 run the same config ${hex(A)}`);
  t.is(h.m.configMismatches(), 0);
});

test('mismatch: our own reload judges every peer again', (t) => {
  const h = harness();
  h.m.setConfigHash(A);
  h.m.tick();
  h.ack(1, A);
  h.ack(2, A);
  t.deepEqual(h.cfg(), []);
  h.m.setConfigHash(B);
  t.deepEqual(h.cfg(), ['config_mismatch:lb2', 'config_mismatch:lb3'], 'we reloaded, they did not');
  h.probe(1, B);
  h.probe(2, B);
  t.deepEqual(h.cfg(), ['config_mismatch:lb2', 'config_mismatch:lb3', 'config_match:lb2', 'config_match:lb3']);
});

test('no mismatch without both hashes; unconfirmed probes change nothing', (t) => {
  const h = harness();
  h.m.tick();
  h.ack(1, B);
  t.deepEqual(h.cfg(), [], 'our hash not set');
  h.m.setConfigHash(A);
  t.deepEqual(h.cfg(), ['config_mismatch:lb2'], 'judged once ours is set');
  h.m.tick();
  h.ack(2, 0);
  t.is(h.m.peers()[2]!.configHash, '', 'a peer of an earlier release reports none');
  t.false(h.m.peers()[2]!.configMismatch);
  h.probe(1, A, false);
  t.true(h.m.peers()[1]!.configMismatch, 'an unconfirmed probe (a replay, a restart) does not end it');
  t.deepEqual(h.cfg(), ['config_mismatch:lb2']);
  t.throws(() => h.m.setConfigHash(-1));
});
