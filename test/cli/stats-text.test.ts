/** `tunlb stats` human output (src/cli/stats-text.ts) from an admin snapshot. */
import test from 'ava';
import { formatStats, formatSync } from '../../src/cli/stats-text';

const snapshot = {
  id: 'lb1',
  cluster: 'lab',
  uptimeS: 3725,
  device: { name: 'tunlb0', mtu: 1500, features: { vnetHdr: true, multiQueue: true, tso: false } },
  peerSplit: 'split to 8972-byte datagrams (MTU 9000 of lbnet0), sent with UDP GSO',
  flows: { active: 1234, capacity: 1048576, created: 5000, expired: 3766, refusedFull: 0, earlyDrops: 0, conflicts: 2, takeovers: 1 },
  counters: {
    rxPackets: 1_000_000, rxBytes: 640_000_000, txPackets: 990_000, peerRxPackets: 12, peerTxPackets: 300,
    peerSplitPackets: 40, peerSplitDatagrams: 320, peerSplitSkipped: 2, peerRxMerged: 7,
    forwardPackets: 600_000, replyPackets: 389_000, failoverPackets: 7, secondChancePackets: 1, replySteeredPackets: 4, flowsNoLiveBackup: 9, backupsAssigned: 6, backupsConfirmed: 2,
    tcpResetBackendDown: 3, udpMovedBackendDown: 4, synReuseRebound: 5,
    replyFirstFragments: 6, replyLaterFragments: 12, replyThreeTuple: 1, drops: { no_flow: 10, truncated: 2, port_not_served: 0 },
  },
  membership: {
    status: 'serving', incarnation: 42, syncedFrom: 'lb2',
    peers: [
      { id: 'lb1', state: 'self', status: 'serving', rttMs: null, live: true },
      { id: 'lb2', state: 'up', status: 'serving', rttMs: 0.123, live: true },
      { id: 'lb3', state: 'dead', status: 'serving', rttMs: null, live: false },
    ],
    replication: { recordsSent: 900, datagramsSent: 20, recordsReceived: 1800, applied: 1700 },
    controlRejected: { bad_mac: 0, replay: 5 },
  },
  forwarding: { generation: 3, vips: [{ name: 'web4', address: '10.99.0.10', method: 'nat', backends: ['10.99.3.21', '10.99.3.22'] }] },
};

test('stats text: one labelled line per aspect, counters with separators, nonzero drops only, peers but not self', (t) => {
  const lines = formatStats(snapshot).split('\n');
  t.deepEqual(lines, [
    'balancer     lb1 in cluster lab, up 1h2m5s, serving (incarnation 42, synced from lb2)',
    'device       tunlb0 mtu 1500 (vnetHdr, multiQueue)',
    'packets in   1,000,000 from TUN (640,000,000 B), 12 from peers',
    'packets out  600,000 to backends, 389,000 to clients, 300 to peers',
    'peer split   40 super-packets split into 320 datagrams, 2 sent whole, 7 received datagrams merged; split to 8972-byte datagrams (MTU 9000 of lbnet0), sent with UDP GSO',
    'flows        1,234 active of 1,048,576; 5,000 created here, 3,766 expired; refused: full 0, early drop 0, conflict 2; taken over 1',
    'failover     7 packets via a backup, 1 second-chance, 4 replies steered to their primary',
    'backup       9 flows decided without a live peer; 6 given a live backup later, 2 whose backup came up',
    'backend down 3 TCP flows reset, 4 UDP/ICMP flows moved, 5 reused ports moved',
    'reply match  fragments: 6 first by 5-tuple, 12 later by id; 1 by 3-tuple',
    'drops        no_flow=10, truncated=2',
    'records      900 sent in 20 datagrams, 1,800 received, 1,700 applied',
    'rejected     replay=5',
    'peer         lb2      up       serving  rtt 0.12 ms',
    'peer         lb3      dead     -        rtt - (not live)',
    'vip          web4 10.99.0.10 nat → 10.99.3.21 10.99.3.22',
    'generation   3',
  ]);
});

test('stats text: a balancer without peers and with fields missing still prints, without throwing', (t) => {
  const out = formatStats({ id: 'solo', cluster: 'c', uptimeS: 5, membership: null });
  t.regex(out, /^balancer +solo in cluster c, up 5s, no peers$/m);
  t.regex(out, /^drops +none$/m);
  t.notThrows(() => formatStats(null));
  t.notThrows(() => formatStats({ counters: { drops: null } }));
});

// A bulk sync's progress as one line (`tunlb status`, `tunlb stats`): [progress, expected line].
const SYNC_LINES: Array<[Parameters<typeof formatSync>[0], string]> = [
  [null, 'none (no serving peer when it started, or a cluster of one)'],
  [
    { state: 'syncing', peer: 'lb3', received: 412_480, total: 1_000_112, ratePerS: 205_311, elapsedMs: 2010, sessions: 1, resumes: 0, lastError: null },
    'syncing from lb3: 412,480 of 1,000,112 records (41%), 205,311 records/s, 2.0 s, 1 session',
  ],
  [
    { state: 'syncing', peer: 'lb1', received: 0, total: null, ratePerS: 0, elapsedMs: 150, sessions: 2, resumes: 1, lastError: 'lb3: lb3 is down (probes)' },
    'syncing from lb1: 0 records, 0 records/s, 0.1 s, 2 sessions (1 resume); last error: lb3: lb3 is down (probes)',
  ],
  [
    { state: 'done', peer: 'lb3', received: 50_344, total: 50_344, ratePerS: 73_578, elapsedMs: 684, sessions: 1, resumes: 0, lastError: null },
    'done from lb3: 50,344 records, 73,578 records/s, 0.7 s, 1 session',
  ],
  [
    { state: 'failed', peer: 'lb1', received: 1200, total: 9000, ratePerS: 100, elapsedMs: 12000, sessions: 3, resumes: 2, lastError: 'lb1: closed' },
    'incomplete: 1,200 records applied, 100 records/s, 12.0 s, 3 sessions (2 resumes); last error: lb1: closed',
  ],
];
for (const [p, want] of SYNC_LINES) {
  test(`formatSync: ${want.slice(0, 40)}`, (t) => {
    t.is(formatSync(p), want);
  });
}

test('formatStats: a bulk sync row when the balancer reports one', (t) => {
  const s = { ...snapshot, membership: { ...snapshot.membership, sync: { state: 'done', peer: 'lb2', received: 10, total: 10, ratePerS: 5, elapsedMs: 2000, sessions: 1, resumes: 0, lastError: null } } };
  t.regex(formatStats(s), /^bulk sync {4}done from lb2: 10 records, 5 records\/s, 2\.0 s, 1 session$/m);
  t.notRegex(formatStats(snapshot), /bulk sync/);
});
