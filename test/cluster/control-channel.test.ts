/**
 * The control channel (src/cluster/control-channel.ts): which configured endpoint a UDP source is
 * (pure), and readProbes over real sockets on loopback (no root).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { ControlChannel, peerEndpointIndex } from '../../src/cluster/control-channel';
import { loadConfig } from '../../src/config';
import { createLogger } from '../../src/logger';
import { tempConfig } from '../helpers/balancer-harness';
import { ipToBytes16 } from '../../src/dataplane/udp-batch-socket';
import { SOURCE_NOT_A_PEER, Via } from '../../src/protocol';

// lb1..lb3 on their own addresses; lb4 shares lb3's address with other ports (a test rig).
const PEERS: Array<[string, number, number]> = [
  ['10.99.2.11', 7946, 7948],
  ['10.99.2.12', 7946, 7948],
  ['10.99.2.13', 7946, 7948],
  ['10.99.2.13', 8946, 8948],
];
const addr16 = new Uint8Array(PEERS.length * 16);
PEERS.forEach(([a], i) => ipToBytes16(a, addr16, i * 16));
const control = Uint16Array.from(PEERS.map((p) => p[1]));
const probe = Uint16Array.from(PEERS.map((p) => p[2]));

const ROWS: Array<[string, string, number, number]> = [
  ['lb1 control port', '10.99.2.11', 7946, 0],
  ['lb2 probe port', '10.99.2.12', 7948, 1],
  ['lb1 address, data port', '10.99.2.11', 7947, SOURCE_NOT_A_PEER],
  ['lb1 address, a random port (spoofed junk)', '10.99.2.11', 40000, SOURCE_NOT_A_PEER],
  ['the router', '10.99.2.1', 7946, SOURCE_NOT_A_PEER],
  ['an address that differs in the first byte only', '11.99.2.11', 7946, SOURCE_NOT_A_PEER],
  ['lb3 address, lb4 port: lb4', '10.99.2.13', 8948, 3],
  ['lb3 address, lb3 port: lb3', '10.99.2.13', 7946, 2],
  ['IPv6 address', 'fd99:2::11', 7946, SOURCE_NOT_A_PEER],
];

for (const [what, ip, port, want] of ROWS) {
  test(`peerEndpointIndex: ${what} -> ${want}`, (t) => {
    const buf = new Uint8Array(64);
    ipToBytes16(ip, buf, 32);
    t.is(peerEndpointIndex(addr16, control, probe, buf, 32, port), want);
  });
}

// readProbes: what waits in the probe socket is read when the owner asks, before any I/O
// callback of the loop (ClusterNode calls it right before Membership.tick(), so a tick never
// judges a peer silent while its answer sits unread in our own socket).
test('readProbes: a probe already in the socket is delivered synchronously, before the loop reads it', async (t) => {
  const base = 20000 + Math.floor(Math.random() * 20000);
  const yaml = [
    'cluster:',
    '  id: readprobes',
    '  key_file: cluster.key',
    '  replication: { mode: unicast }',
    'balancers:',
    `  - { id: lb1, address: 127.0.0.1, control_port: ${base}, data_port: ${base + 1}, probe_port: ${base + 2} }`,
    `  - { id: lb2, address: 127.0.0.2, control_port: ${base + 10}, data_port: ${base + 11}, probe_port: ${base + 12} }`,
    'tun: { name: tunlbt0 }',
    'vips: []',
  ].join('\n');
  const { dir, path } = tempConfig(`${yaml}\n`, randomBytes(32));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = loadConfig(path);
  const log = createLogger({ level: 'silent' });
  const got: Array<[number, string, Via]> = [];
  const a = await ControlChannel.open({ config, selfIndex: 0, incarnation: 1000, log, onEnvelope: (e, _c, via) => got.push([e.sender, e.body ?? '', via]) });
  t.teardown(() => a.close());
  const b = await ControlChannel.open({ config, selfIndex: 1, incarnation: 2000, log, onEnvelope: () => undefined });
  t.teardown(() => b.close());
  b.sendProbe(0, b.signer.seal('probe', { nonce: 7, sentAtMs: 1, target: 0, status: 2 }, 0));
  // Loopback delivers within the send call; no await between the send and the read.
  a.readProbes();
  t.deepEqual(got, [[1, 'probe', Via.PROBE]], 'the probe was read by readProbes, not by a later readiness callback');
  a.readProbes();
  t.is(got.length, 1, 'an empty socket delivers nothing');
  t.is(a.stats.receivedProbe, 1);
});
