/**
 * The cluster view's rows (src/control/cluster-status.ts clusterBody, summaryFields) and their
 * text (src/cli/cluster-text.ts), over a real Membership and ClusterView on a fake clock: a
 * peer's figures are its own last summary with their age, its state and RTT are ours; a dead
 * peer is `down`; a peer that never sent a summary shows `none yet`; a config mismatch is marked.
 */
import test from 'ava';
import { Membership, type ProbeBody } from '../../src/cluster/membership';
import { ClusterView } from '../../src/cluster/cluster-view';
import { clusterBody, summaryFields } from '../../src/control/cluster-status';
import { formatCluster } from '../../src/cli/cluster-text';
import type { BalancerView } from '../../src/control/balancer-view';

const OURS = 0x0123456789ab;
const OTHER = 0x0000feedbeef;

function stub() {
  const clock = { now: 1000 };
  const probes: Array<{ peer: number; body: ProbeBody }> = [];
  const m = new Membership({
    selfIndex: 0,
    ids: ['lb1', 'lb2', 'lb3'],
    intervalMs: 100,
    misses: 3,
    nowMs: () => clock.now,
    sendProbe: (peer, body) => probes.push({ peer, body }),
    sendAck: () => undefined,
    selfIncarnation: 1,
    initialStatus: 'serving',
  });
  m.setConfigHash(OURS);
  const view = new ClusterView({ balancerCount: 3, selfIndex: 0, nowMs: () => clock.now });
  const ack = (peer: number, rttMs: number, configHash: number): void => {
    const p = [...probes].reverse().find((x) => x.peer === peer)!.body;
    clock.now += rttMs;
    m.onProbeAck(peer, 10 + peer, { nonce: p.nonce, probeSentAtMs: p.sentAtMs, proberIncarnation: 1, status: 2, configHash });
    clock.now -= rttMs;
  };
  const stats = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, peerTxPackets: 0, peerRxPackets: 0 };
  const b = {
    selfId: 'lb1',
    selfIndex: 0,
    config: { cluster: { id: 'lab' }, balancers: [{ id: 'lb1' }, { id: 'lb2' }, { id: 'lb3' }] },
    configHash: () => ({ value: OURS, hex: '0123456789ab' }),
    table: { size: 120 },
    nowSec: () => 60,
    forwarder: { stats, forwarding: { generation: 5 } },
    cluster: { membership: m, view },
  } as unknown as BalancerView;
  return { b, m, view, clock, ack, stats };
}

test('summaryFields: rates over the last second, flows by role from the last scan, our RTTs by index', (t) => {
  const { b, m, ack } = stub();
  m.tick();
  ack(1, 0.4, OURS);
  const prev = { at: 0, rxPackets: 1000, rxBytes: 100_000, txPackets: 900, txBytes: 90_000, peerTxPackets: 50, peerRxPackets: 10 };
  const cur = { at: 2000, rxPackets: 3000, rxBytes: 300_000, txPackets: 2900, txBytes: 290_000, peerTxPackets: 250, peerRxPackets: 110 };
  const s = summaryFields(b, prev, cur, { byPrimary: { lb1: 40 }, byBackup: { lb1: 38 } });
  t.like(s, { status: 2, configHash: OURS, flowsHeld: 120, flowsPrimary: 40, flowsBackup: 38, packetsInPerS: 1050, packetsOutPerS: 1100, bytesInPerS: 100_000, bytesOutPerS: 100_000, uptimeS: 60, generation: 5, liveMask: 0b011 });
  t.deepEqual(s.peerRttUs, [0, 400, 0], 'self 0, lb2 0.4 ms, lb3 no answer yet');
  t.like(summaryFields(b, undefined, cur, undefined), { packetsInPerS: 0, flowsPrimary: 0 }, 'no previous sample: no rate yet');
});

test('clusterBody: peers as they reported, with age; mismatch marked; dead is down; no summary is none yet', (t) => {
  const { b, m, view, clock, ack } = stub();
  m.tick();
  ack(1, 0.5, OURS);
  ack(2, 0.8, OTHER);
  view.onSummary(1, { status: 2, configHash: OURS, flowsHeld: 118, flowsPrimary: 41, packetsInPerS: 30, packetsOutPerS: 29, uptimeS: 59, generation: 5 });
  clock.now += 400;
  const own = { status: 2, configHash: OURS, flowsHeld: 120, flowsPrimary: 40, packetsInPerS: 100, packetsOutPerS: 99, uptimeS: 60, generation: 5 };
  let c = clusterBody(b, own);
  t.deepEqual(c.mismatches, ['lb3']);
  t.like(c.balancers[0], { id: 'lb1', self: true, state: 'self', status: 'serving', configHash: '0123456789ab', flowsHeld: 120, reportAgeMs: 0, rttMs: null, lastHeardMs: null });
  t.like(c.balancers[1], { id: 'lb2', state: 'up', status: 'serving', configHash: '0123456789ab', configMismatch: false, flowsHeld: 118, flowsPrimary: 41, packetsInPerS: 30, reportAgeMs: 400, rttMs: 0.5, lastHeardMs: 400 });
  t.like(c.balancers[2], { id: 'lb3', state: 'up', status: 'serving', configHash: '0000feedbeef', configMismatch: true, flowsHeld: null, reportAgeMs: null });
  const text = formatCluster(c);
  t.log(text);
  t.regex(text, /^ {2}lb2 +serving +0123456789ab +118 +41 +30 +29 +0\.50 +400 ms +400 ms old$/m);
  t.regex(text, /^ {2}lb3 +serving +0000feedbeef ! +- +- +- +- +0\.80 +\d+ ms +none yet$/m);
  t.regex(text, /^ {2}config mismatch: lb3 runs 0000feedbeef, lb1 runs 0123456789ab$/m);
  // lb2 goes silent: dead after 3 intervals; its last figures stay, getting older.
  for (let i = 0; i < 5; i++) {
    clock.now += 100;
    m.tick();
    ack(2, 0.8, OTHER);
  }
  c = clusterBody(b, own);
  t.like(c.balancers[1], { state: 'dead', status: 'down', flowsHeld: 118, reportAgeMs: 900 });
  t.regex(formatCluster(c), /^ {2}lb2 +down +0123456789ab +118 /m);
});
