/** The control channel's pure parts: which configured endpoint a UDP source is (src/cluster/control-channel.ts). */
import test from 'ava';
import { peerEndpointIndex } from '../../src/cluster/control-channel';
import { ipToBytes16 } from '../../src/dataplane/udp-batch-socket';
import { SOURCE_NOT_A_PEER } from '../../src/protocol';

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
