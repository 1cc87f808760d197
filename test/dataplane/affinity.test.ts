/**
 * Source affinity (`vips[].affinity: source[/prefix]`, src/decision/affinity.ts): every flow of
 * one client address (or prefix) gets the same backend, whatever its ports and protocol and
 * whichever balancer receives it; the balancer ranking stays per flow; weights hold over many
 * clients; the moves of "Backend down" and "Connection reuse" follow the same rule.
 */
import test from 'ava';
import { affinityHash, affinityMask } from '../../src/decision/affinity';
import { buildForwardingTable, pickBackend } from '../../src/decision/forwarding-table';
import { deriveHashKey } from '../../src/decision/hash-key';
import { hashFlowKey } from '../../src/decision/halfsiphash';
import { NO_BACKEND } from '../../src/decision/backend-table';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import { remapFlows, planRemap } from '../../src/dataplane/flow-remap';
import * as P from '../helpers/packets';
import { endpoints, forwarderCluster, KEY_FILE, testConfig } from '../helpers/forwarder-cluster';

const B4 = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];
const B6 = ['fd99:3::21', 'fd99:3::22', 'fd99:3::23'];
const VIP4 = '10.99.0.10';
const VIP6 = 'fd99::10';
const SYN = P.TCP_SYN;
const ACK = P.TCP_ACK;

function yaml(aff4: string, aff6: string, weights: number[] = [1, 1, 1], lbs = 3): string {
  return `
cluster: { id: affinity, key_file: ${KEY_FILE} }
balancers:
${['lb1', 'lb2', 'lb3'].slice(0, lbs).map((id, i) => `  - { id: ${id}, address: 10.99.2.${11 + i} }`).join('\n')}
vips:
  - name: web4
    address: ${VIP4}
    affinity: ${aff4}
    backends:
${B4.map((b, i) => `      - { address: ${b}, weight: ${weights[i]} }`).join('\n')}
  - name: web6
    address: "${VIP6}"
    affinity: ${aff6}
    backends:
${B6.map((b, i) => `      - { address: "${b}", weight: ${weights[i]} }`).join('\n')}
`;
}

const info = new PacketInfo();
function keyOf(pkt: Uint8Array): Uint8Array {
  parsePacket(pkt, 0, pkt.length, info);
  return info.key.slice();
}

test('affinityMask: IPv4 prefixes keep the 12 mapping bytes; IPv6 prefixes cut mid-byte', (t) => {
  const hex = (m: Uint8Array): string => Buffer.from(m).toString('hex');
  t.is(hex(affinityMask(4, 32)), 'ff'.repeat(16));
  t.is(hex(affinityMask(4, 24)), 'ff'.repeat(15) + '00');
  t.is(hex(affinityMask(4, 20)), 'ff'.repeat(14) + 'f000');
  t.is(hex(affinityMask(4, 1)), 'ff'.repeat(12) + '80' + '000000');
  t.is(hex(affinityMask(6, 128)), 'ff'.repeat(16));
  t.is(hex(affinityMask(6, 64)), 'ff'.repeat(8) + '00'.repeat(8));
  t.is(hex(affinityMask(6, 60)), 'ff'.repeat(7) + 'f0' + '00'.repeat(8));
  t.is(hex(affinityMask(6, 1)), '80' + '00'.repeat(15));
});

test('affinityHash: the client address under the mask only, never equal to the flow hash of the key', (t) => {
  const hk = deriveHashKey(Buffer.alloc(32, 0x11));
  const scratch = new Uint8Array(40);
  const m24 = affinityMask(4, 24);
  const a = keyOf(P.tcp4('10.1.2.3', VIP4, 40000, 80, SYN));
  const b = keyOf(P.udp4('10.1.2.200', VIP4, 5353, 53, new Uint8Array(8)));
  const c = keyOf(P.tcp4('10.1.3.3', VIP4, 40000, 80, SYN));
  t.is(affinityHash(hk, a, m24, 0, scratch), affinityHash(hk, b, m24, 0, scratch), 'same /24, other ports and protocol');
  t.not(affinityHash(hk, a, m24, 0, scratch), affinityHash(hk, c, m24, 0, scratch), 'another /24');
  t.not(affinityHash(hk, a, m24, 0, scratch), hashFlowKey(hk, a));
  // The mask is read at maskOff.
  const masks = new Uint8Array(32);
  masks.set(affinityMask(4, 32), 0);
  masks.set(m24, 16);
  t.is(affinityHash(hk, a, masks, 16, scratch), affinityHash(hk, a, m24, 0, scratch));
  t.not(affinityHash(hk, a, masks, 0, scratch), affinityHash(hk, b, masks, 0, scratch), '/32: another address');
  // Another cluster key: another hash.
  t.not(affinityHash(deriveHashKey(Buffer.alloc(32, 0x12)), a, m24, 0, scratch), affinityHash(hk, a, m24, 0, scratch));
});

for (const fam of [4, 6] as const) {
  const client = fam === 4 ? '10.99.1.2' : 'fd99:1::2';
  const vip = fam === 4 ? VIP4 : VIP6;
  const backends = fam === 4 ? B4 : B6;
  const tcp = fam === 4 ? P.tcp4 : P.tcp6;
  const udp = fam === 4 ? P.udp4 : P.udp6;
  const echo = (id: number): Uint8Array => (fam === 4 ? P.icmp4Echo(client, vip, P.ICMP4_ECHO_REQUEST, id, 1) : P.icmp6Echo(client, vip, P.ICMP6_ECHO_REQUEST, id, 1));

  test(`IPv${fam} affinity source: one client's TCP, UDP and ICMP flows, any ports, received by any balancer, all reach one backend; primaries still spread`, (t) => {
    const c = forwarderCluster(yaml('source', 'source'));
    const seen = new Set<string>();
    const primaries = new Set<number>();
    for (let k = 0; k < 60; k++) {
      const at = k % 3;
      const pkts = [tcp(client, vip, 30000 + k * 7, 5201 + (k % 5), SYN), udp(client, vip, 31000 + k, 53 + k, new Uint8Array(10)), echo(100 + k)];
      for (const pkt of pkts) {
        const d = c.deliver(at, pkt);
        t.is(d.tun.length, 1, 'delivered to a backend');
        seen.add(endpoints(d.tun[0]!.pkt).dst);
        const id = c.nodes[at]!.table.lookup(new Uint32Array(keyOf(pkt).buffer), 1) >>> 1;
        primaries.add(c.nodes[at]!.table.primary(id));
      }
    }
    t.is(seen.size, 1, `one backend for the client: ${[...seen].join(', ')}`);
    t.true(backends.includes([...seen][0]!));
    t.is(primaries.size, 3, 'the balancer ranking stays per flow: every balancer is primary of some of them');
    for (let i = 0; i < 3; i++) t.deepEqual(c.drops(i), {});
  });

  test(`IPv${fam} affinity none (default): one client's flows spread over the backends`, (t) => {
    const c = forwarderCluster(yaml('none', 'none'));
    const seen = new Set<string>();
    for (let k = 0; k < 60; k++) seen.add(endpoints(c.deliver(k % 3, tcp(client, vip, 30000 + k, 5201, SYN)).tun[0]!.pkt).dst);
    t.is(seen.size, 3);
  });
}

test('the same choice on every balancer: independently loaded configs and built tables agree for 5,000 clients', (t) => {
  const ya = yaml('source/24', 'source/64');
  const c1 = testConfig(ya, 'a.yaml');
  const c2 = testConfig(ya, 'b.yaml');
  const hk1 = deriveHashKey(c1.cluster.key.reveal());
  const hk2 = deriveHashKey(c2.cluster.key.reveal());
  const ft1 = buildForwardingTable(c1, hk1, 1);
  const ft2 = buildForwardingTable(c2, hk2, 7);
  const s1 = new Uint8Array(40);
  const s2 = new Uint8Array(40);
  for (let i = 0; i < 5000; i++) {
    const k4 = keyOf(P.tcp4(`10.${(i >>> 8) & 0xff}.${i & 0xff}.${(i * 7) & 0xff}`, VIP4, 1024 + i, 80, SYN));
    const k6 = keyOf(P.udp6(`fd00:${i.toString(16)}::${(i * 13).toString(16)}`, VIP6, 1024 + i, 53, new Uint8Array(4)));
    t.is(pickBackend(ft1, 0, hk1, k4, hashFlowKey(hk1, k4), s1), pickBackend(ft2, 0, hk2, k4, hashFlowKey(hk2, k4), s2));
    t.is(pickBackend(ft1, 1, hk1, k6, hashFlowKey(hk1, k6), s1), pickBackend(ft2, 1, hk2, k6, hashFlowKey(hk2, k6), s2));
  }
});

test('prefix masking: IPv4 /24 and IPv6 /64 put a client network on one backend; /32 and /128 tell its hosts apart', (t) => {
  const c = forwarderCluster(yaml('source/24', 'source/64'));
  const whole = forwarderCluster(yaml('source', 'source'));
  const be = (cl: typeof c, pkt: Uint8Array): string => endpoints(cl.deliver(0, pkt).tun[0]!.pkt).dst;
  for (let net = 0; net < 12; net++) {
    const v4 = new Set<string>();
    const v6 = new Set<string>();
    for (let h = 1; h < 40; h++) {
      v4.add(be(c, P.tcp4(`10.50.${net}.${h * 6}`, VIP4, 40000 + h, 80, SYN)));
      v6.add(be(c, P.tcp6(`fd00:50:0:${net.toString(16)}:${h.toString(16)}::${(h * 3).toString(16)}`, VIP6, 40000 + h, 80, SYN)));
    }
    t.is(v4.size, 1, `10.50.${net}.0/24 on one backend`);
    t.is(v6.size, 1, `fd00:50:0:${net}::/64 on one backend`);
  }
  // Over the networks, the backends are all used.
  const nets4 = new Set<string>();
  const hosts4 = new Set<string>();
  const hosts6 = new Set<string>();
  for (let net = 0; net < 40; net++) nets4.add(be(c, P.tcp4(`10.60.${net}.1`, VIP4, 41000, 80, SYN)));
  for (let h = 1; h < 40; h++) {
    hosts4.add(be(whole, P.tcp4(`10.70.0.${h}`, VIP4, 41000, 80, SYN)));
    hosts6.add(be(whole, P.tcp6(`fd00:70::${h.toString(16)}`, VIP6, 41000, 80, SYN)));
  }
  t.is(nets4.size, 3, '/24 networks spread over the backends');
  t.is(hosts4.size, 3, 'with /32 the hosts of one network spread');
  t.is(hosts6.size, 3, 'with /128 the hosts of one network spread');
});

test('weights hold over many clients (each client address one draw from the weighted table)', (t) => {
  const config = testConfig(yaml('source', 'source/48', [1, 2, 5]));
  const hk = deriveHashKey(config.cluster.key.reveal());
  const ft = buildForwardingTable(config, hk, 1);
  const s = new Uint8Array(40);
  const N = 40000;
  for (const [vip, make] of [
    [0, (i: number) => P.udp4(`10.${(i >>> 16) & 0xff}.${(i >>> 8) & 0xff}.${i & 0xff}`, VIP4, 5000, 53, new Uint8Array(2))],
    [1, (i: number) => P.udp6(`fd00:${(i >>> 12).toString(16)}:${(i & 0xfff).toString(16)}::1`, VIP6, 5000, 53, new Uint8Array(2))],
  ] as const) {
    const n = [0, 0, 0];
    for (let i = 0; i < N; i++) {
      const k = keyOf(make(i));
      n[pickBackend(ft, vip, hk, k, hashFlowKey(hk, k), s)]!++;
    }
    const shares = n.map((x) => x / N);
    [1 / 8, 2 / 8, 5 / 8].forEach((want, i) => t.true(Math.abs(shares[i]! - want) < 0.015, `VIP ${vip} backend ${i}: share ${shares[i]!.toFixed(3)}, want ${want.toFixed(3)}`));
  }
});

test("backend down: a client's UDP flows move together to the client's new backend; TCP gets a reset; new connections follow", (t) => {
  const c = forwarderCluster(yaml('source', 'source'));
  const client = '10.99.1.77';
  const first = endpoints(c.deliver(0, P.udp4(client, VIP4, 20000, 53, new Uint8Array(8))).tun[0]!.pkt).dst;
  for (let k = 1; k < 8; k++) t.is(endpoints(c.deliver(k % 3, P.udp4(client, VIP4, 20000 + k, 53, new Uint8Array(8))).tun[0]!.pkt).dst, first);
  const tcpD = c.deliver(1, P.tcp4(client, VIP4, 21000, 80, SYN));
  t.is(endpoints(tcpD.tun[0]!.pkt).dst, first);
  const down = B4.indexOf(first);
  // The backend goes down (unhealthy): not eligible, not up; a health rebuild swaps the table in.
  c.swap(c.config, (v, i) => !(v === 0 && i === down), (v, i) => !(v === 0 && i === down));
  const moved = new Set<string>();
  for (let k = 0; k < 8; k++) {
    const d = c.deliver(k % 3, P.udp4(client, VIP4, 20000 + k, 53, new Uint8Array(8)));
    t.is(d.tun.length, 1);
    moved.add(endpoints(d.tun[0]!.pkt).dst);
  }
  t.is(moved.size, 1, 'every UDP flow of the client moved to one backend');
  const now = [...moved][0]!;
  t.not(now, first);
  const hk = c.hashKey;
  const k0 = keyOf(P.udp4(client, VIP4, 1, 1, new Uint8Array(1)));
  t.is(now, B4[pickBackend(c.ft, 0, hk, k0, 0, new Uint8Array(40))], "the new backend is the client's affinity pick on the new table");
  const moves = c.nodes.reduce((s, n) => s + n.fwd.stats.udpMovedBackendDown, 0);
  t.is(moves, 8);
  // The TCP flow: its next packet is answered with a reset from the VIP (to the client).
  const r = c.deliver(1, P.tcp4(client, VIP4, 21000, 80, ACK));
  t.is(r.tun.length, 1);
  t.deepEqual(endpoints(r.tun[0]!.pkt), { src: VIP4, dst: client, sport: 80, dport: 21000 });
  // A new connection goes where the client's flows went.
  t.is(endpoints(c.deliver(2, P.tcp4(client, VIP4, 21001, 80, SYN)).tun[0]!.pkt).dst, now);
});

test("connection reuse: a SYN on a lingering record whose backend is drained moves to the client's affinity pick", (t) => {
  const c = forwarderCluster(yaml('source', 'source'));
  const client = '10.99.1.88';
  const first = endpoints(c.deliver(0, P.tcp4(client, VIP4, 22000, 80, SYN)).tun[0]!.pkt).dst;
  const drained = B4.indexOf(first);
  // Drained: up (keeps its flows) but not eligible.
  c.swap(c.config, (v, i) => !(v === 0 && i === drained));
  const other = endpoints(c.deliver(0, P.tcp4(client, VIP4, 22001, 80, SYN)).tun[0]!.pkt).dst;
  t.not(other, first, "a new connection avoids the drained backend");
  t.is(endpoints(c.deliver(0, P.tcp4(client, VIP4, 22000, 80, ACK)).tun[0]!.pkt).dst, first, 'the established flow keeps its backend');
  const reused = c.deliver(0, P.tcp4(client, VIP4, 22000, 80, SYN));
  t.is(endpoints(reused.tun[0]!.pkt).dst, other, "the reused port's new connection joins the client's other flows");
  t.is(c.nodes[0]!.fwd.stats.synReuseRebound, 1);
});

test('reload: switching a VIP to affinity source applies to new flows; established flows keep their backend', (t) => {
  const c = forwarderCluster(yaml('none', 'none'));
  const client = '10.99.1.99';
  const before: string[] = [];
  for (let k = 0; k < 30; k++) before.push(endpoints(c.deliver(k % 3, P.udp4(client, VIP4, 23000 + k, 53, new Uint8Array(4))).tun[0]!.pkt).dst);
  t.is(new Set(before).size, 3);
  const next = testConfig(yaml('source', 'none'));
  const prev = c.nodes[0]!.fwd.forwarding;
  const ft = c.swap(next);
  for (const n of c.nodes) remapFlows(n.table, planRemap(prev, ft));
  for (let k = 0; k < 30; k++) t.is(endpoints(c.deliver(k % 3, P.udp4(client, VIP4, 23000 + k, 53, new Uint8Array(4))).tun[0]!.pkt).dst, before[k], `flow ${k} keeps its backend`);
  const fresh = new Set<string>();
  for (let k = 0; k < 30; k++) fresh.add(endpoints(c.deliver(k % 3, P.udp4(client, VIP4, 24000 + k, 53, new Uint8Array(4))).tun[0]!.pkt).dst);
  t.is(fresh.size, 1, 'new flows of the client all reach one backend');
});

test('no eligible backend: NO_BACKEND with affinity too', (t) => {
  const config = testConfig(yaml('source', 'source'));
  const hk = deriveHashKey(config.cluster.key.reveal());
  const ft = buildForwardingTable(config, hk, 1, () => false);
  const k = keyOf(P.tcp4('10.1.1.1', VIP4, 1, 80, SYN));
  t.is(pickBackend(ft, 0, hk, k, hashFlowKey(hk, k), new Uint8Array(40)), NO_BACKEND);
});

test('two VIPs on one address (disjoint ports, as in the iperf3 case of issue 13): each port reaches its own VIP and backends, any receiver; a port neither serves is dropped', (t) => {
  const c = forwarderCluster(`
cluster: { id: affinity, key_file: ${KEY_FILE} }
balancers:
  - { id: lb1, address: 10.99.2.11 }
  - { id: lb2, address: 10.99.2.12 }
  - { id: lb3, address: 10.99.2.13 }
vips:
  - name: web4
    address: ${VIP4}
    protocols: [tcp]
    ports: [80]
    backends:
      - { address: ${B4[0]} }
      - { address: ${B4[1]} }
  - name: iperf4
    address: ${VIP4}
    protocols: [tcp]
    ports: [5301]
    affinity: source
    backends:
      - { address: ${B4[2]} }
`);
  const client = '10.99.1.2';
  for (let k = 0; k < 30; k++) {
    const web = c.deliver(k % 3, P.tcp4(client, VIP4, 32000 + k, 80, SYN));
    t.is(web.tun.length, 1);
    t.not(endpoints(web.tun[0]!.pkt).dst, B4[2], 'port 80: a web4 backend');
    const ip = c.deliver((k + 1) % 3, P.tcp4(client, VIP4, 33000 + k, 5301, SYN));
    t.is(ip.tun.length, 1, 'port 5301 is served (by iperf4)');
    t.is(endpoints(ip.tun[0]!.pkt).dst, B4[2], 'port 5301: the iperf4 backend');
  }
  t.is(c.deliver(0, P.tcp4(client, VIP4, 34000, 22, SYN)).tun.length, 0, 'port 22: neither VIP');
  t.is(c.drops(0)['port_not_served'], 1);
});
