/**
 * Per-VIP and per-backend counters (src/dataplane/service-stats.ts): what moves for forwarded,
 * replied, peer-served packets (three forwarders wired together), connections (new flows,
 * connection reuse, backend-down moves, each counted once in the cluster), and how the counts
 * follow a reload that renumbers, removes and adds VIPs and backends.
 */
import test from 'ava';
import { ServiceStats, SVC_CONNECTIONS, SVC_FIELDS, SVC_IN_BYTES, SVC_IN_PACKETS, SVC_OUT_BYTES, SVC_OUT_PACKETS } from '../../src/dataplane/service-stats';
import { buildForwardingTable } from '../../src/decision/forwarding-table';
import { deriveHashKey } from '../../src/decision/hash-key';
import { planRemap, remapFlows } from '../../src/dataplane/flow-remap';
import * as P from '../helpers/packets';
import { endpoints, forwarderCluster, KEY_FILE, testConfig, type ForwarderCluster } from '../helpers/forwarder-cluster';

const VIP4 = '10.99.0.10';
const VIP6 = 'fd99::10';
const B4 = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];
const B6 = ['fd99:3::21', 'fd99:3::22', 'fd99:3::23'];
const CLIENT = '10.99.1.2';
const CLIENT6 = 'fd99:1::2';

function yaml(vips: string, lbs = 3): string {
  return `
cluster: { id: svc, key_file: ${KEY_FILE} }
balancers:
${['lb1', 'lb2', 'lb3'].slice(0, lbs).map((id, i) => `  - { id: ${id}, address: 10.99.2.${11 + i} }`).join('\n')}
vips:
${vips}`;
}
const WEB4 = `  - name: web4
    address: ${VIP4}
    backends:
${B4.map((b) => `      - { address: ${b} }`).join('\n')}
`;
const WEB6 = `  - name: web6
    address: "${VIP6}"
    backends:
${B6.map((b) => `      - { address: "${b}" }`).join('\n')}
`;

const F = { inP: SVC_IN_PACKETS, inB: SVC_IN_BYTES, outP: SVC_OUT_PACKETS, outB: SVC_OUT_BYTES, conns: SVC_CONNECTIONS } as const;
type Row = Record<keyof typeof F, number>;
/** Backend `be` of VIP `vip` on node `i` (be = the backend count: the removed slot). */
function row(c: ForwarderCluster, i: number, vip: number, be: number): Row {
  const s = c.nodes[i]!.fwd.services;
  return { inP: s.get(vip, be, F.inP), inB: s.get(vip, be, F.inB), outP: s.get(vip, be, F.outP), outB: s.get(vip, be, F.outB), conns: s.get(vip, be, F.conns) };
}
function sumRows(rows: Row[]): Row {
  const o: Row = { inP: 0, inB: 0, outP: 0, outB: 0, conns: 0 };
  for (const r of rows) for (const k of Object.keys(o) as Array<keyof Row>) o[k] += r[k];
  return o;
}
/** The cluster's figures of one backend: summed over the nodes. */
const clusterRow = (c: ForwarderCluster, vip: number, be: number): Row => sumRows(c.nodes.map((_, i) => row(c, i, vip, be)));

for (const fam of [4, 6] as const) {
  const vip = fam === 4 ? VIP4 : VIP6;
  const client = fam === 4 ? CLIENT : CLIENT6;
  const backends = fam === 4 ? B4 : B6;
  const tcp = fam === 4 ? P.tcp4 : P.tcp6;
  const vi = fam === 4 ? 0 : 1;

  test(`IPv${fam} one balancer: forwarded and replied packets, bytes and connections per backend; the VIP is their sum`, (t) => {
    const c = forwarderCluster(yaml(WEB4 + WEB6, 1));
    const want = backends.map(() => ({ inP: 0, inB: 0, outP: 0, outB: 0, conns: 0 }));
    for (let k = 0; k < 30; k++) {
      const sport = 40000 + k;
      const steps: Array<[Uint8Array, boolean]> = [];
      const syn = tcp(client, vip, sport, 80, P.TCP_SYN);
      const d = c.deliver(0, syn);
      const be = backends.indexOf(endpoints(d.tun[0]!.pkt).dst);
      t.true(be >= 0);
      want[be]!.conns++;
      want[be]!.inP++;
      want[be]!.inB += syn.length;
      const data = tcp(client, vip, sport, 80, P.TCP_ACK | P.TCP_PSH, new Uint8Array(100 + k));
      steps.push([data, true]);
      steps.push([tcp(backends[be]!, client, 80, sport, P.TCP_SYN | P.TCP_ACK), false]);
      steps.push([tcp(backends[be]!, client, 80, sport, P.TCP_ACK | P.TCP_PSH, new Uint8Array(1000 + k)), false]);
      for (const [pkt, fwd] of steps) {
        const o = c.deliver(0, pkt);
        t.is(o.tun.length, 1);
        const w = want[be]!;
        if (fwd) {
          w.inP++;
          w.inB += pkt.length;
        } else {
          w.outP++;
          w.outB += pkt.length;
        }
      }
    }
    backends.forEach((_, be) => t.deepEqual(row(c, 0, vi, be), want[be]!, `backend ${be}`));
    t.deepEqual(row(c, 0, vi, 3), { inP: 0, inB: 0, outP: 0, outB: 0, conns: 0 }, 'nothing in the removed slot');
    const s = c.nodes[0]!.fwd.services;
    t.is(s.vipTotal(vi, F.conns), 30);
    t.is(s.vipTotal(vi, F.conns), c.nodes[0]!.fwd.stats.flowsCreated, 'connections = the new-flow decisions');
    t.is(s.vipTotal(vi, F.inP), c.nodes[0]!.fwd.stats.forwardPackets);
    t.is(s.vipTotal(vi, F.outP), c.nodes[0]!.fwd.stats.replyPackets);
    t.is(s.vipTotal(vi, F.inB) + s.vipTotal(vi, F.outB), c.nodes[0]!.fwd.stats.txBytes);
    t.is(s.vipTotal(1 - vi, F.inP), 0, 'the other VIP saw nothing');
  });

  test(`IPv${fam} three balancers: each packet counted once, by the balancer that served it (peer-served included); replies steered to the primary counted there`, (t) => {
    const c = forwarderCluster(yaml(WEB4 + WEB6));
    let sent = 0;
    let sentBytes = 0;
    let replies = 0;
    for (let k = 0; k < 45; k++) {
      const sport = 41000 + k;
      const syn = tcp(client, vip, sport, 80, P.TCP_SYN);
      const d = c.deliver(k % 3, syn);
      sent++;
      sentBytes += syn.length;
      const be = endpoints(d.tun[0]!.pkt).dst;
      // The rest of the flow at another receiver (ECMP moved it).
      const data = tcp(client, vip, sport, 80, P.TCP_ACK, new Uint8Array(50));
      t.is(c.deliver((k + 1) % 3, data).tun.length, 1);
      sent++;
      sentBytes += data.length;
      // The reply reaches some balancer (the servers' gateway): un-NAT'd there or steered.
      const rep = tcp(be, client, 80, sport, P.TCP_SYN | P.TCP_ACK);
      t.is(c.deliver((k + 2) % 3, rep).tun.length, 1);
      replies++;
    }
    const total = sumRows(backends.map((_, be) => clusterRow(c, vi, be)));
    t.is(total.inP, sent, 'every client packet counted once in the cluster');
    t.is(total.inB, sentBytes);
    t.is(total.outP, replies, 'every reply counted once in the cluster');
    t.is(total.conns, 45, 'every connection counted once');
    const served = c.nodes.map((n) => n.fwd.services.vipTotal(vi, F.inP));
    t.true(served.every((x) => x > 0), `every balancer served some: ${served.join(', ')}`);
    t.true(c.nodes.some((n) => n.fwd.stats.peerRxPackets > 0), 'some packets were peer-served');
    // Per balancer, the counters agree with its own totals.
    for (const n of c.nodes) {
      t.is(n.fwd.services.vipTotal(vi, F.inP), n.fwd.stats.forwardPackets);
      t.is(n.fwd.services.vipTotal(vi, F.outP), n.fwd.stats.replyPackets);
    }
  });
}

test('connections: a reused port moved off a drained backend counts once (receiver), a UDP flow moved off a down backend once (server)', (t) => {
  const c = forwarderCluster(yaml(WEB4));
  // A TCP flow received by lb1 whose primary is another balancer.
  let sport = 42000;
  let be = -1;
  for (;; sport++) {
    const d = c.deliver(0, P.tcp4(CLIENT, VIP4, sport, 80, P.TCP_SYN));
    if (d.hops.length === 1) {
      be = B4.indexOf(endpoints(d.tun[0]!.pkt).dst);
      // The serving peer holds the record too (adopted from the header).
      break;
    }
  }
  const conns0 = sumRows(B4.map((_, i) => clusterRow(c, 0, i))).conns;
  c.swap(c.config, (v, i) => !(v === 0 && i === be)); // drained: up, not eligible
  const re = c.deliver(0, P.tcp4(CLIENT, VIP4, sport, 80, P.TCP_SYN));
  t.is(re.hops.length, 1, 'relayed to the serving peer');
  const nb = B4.indexOf(endpoints(re.tun[0]!.pkt).dst);
  t.not(nb, be);
  t.is(c.nodes.reduce((s, n) => s + n.fwd.stats.synReuseRebound, 0), 2, 'the receiver and the serving peer both re-bound their copy');
  t.is(sumRows(B4.map((_, i) => clusterRow(c, 0, i))).conns, conns0 + 1, 'one more connection in the cluster');
  t.is(clusterRow(c, 0, nb).conns, 1);

  // UDP: a flow on a backend that goes down moves at its next packet, counted by the server.
  const c2 = forwarderCluster(yaml(WEB4));
  const u = c2.deliver(1, P.udp4(CLIENT, VIP4, 43000, 53, new Uint8Array(8)));
  const ub = B4.indexOf(endpoints(u.tun[0]!.pkt).dst);
  c2.swap(c2.config, (v, i) => !(v === 0 && i === ub), (v, i) => !(v === 0 && i === ub));
  const m = c2.deliver(1, P.udp4(CLIENT, VIP4, 43000, 53, new Uint8Array(8)));
  const mb = B4.indexOf(endpoints(m.tun[0]!.pkt).dst);
  t.not(mb, ub);
  t.is(clusterRow(c2, 0, mb).conns, 1, 'the moved flow counts as a connection of its new backend');
  t.is(clusterRow(c2, 0, ub).conns, 1, 'the old backend keeps its count');
  t.is(c2.nodes.reduce((s, n) => s + n.fwd.stats.udpMovedBackendDown, 0), 1);
});

test('reload: counts follow VIPs and backends by identity; a removed backend goes to its VIP\'s removed slot; a removed VIP is dropped; new ones start at 0', (t) => {
  const c = forwarderCluster(yaml(WEB4 + WEB6, 1));
  const n = c.nodes[0]!;
  const sv = n.fwd.services;
  for (let k = 0; k < 60; k++) {
    c.deliver(0, P.udp4(CLIENT, VIP4, 44000 + k, 53, new Uint8Array(10)));
    c.deliver(0, P.udp6(CLIENT6, VIP6, 44000 + k, 53, new Uint8Array(10)));
  }
  const before4 = B4.map((_, i) => row(c, 0, 0, i));
  t.true(before4.every((r) => r.inP > 0));
  const vipIn4 = sv.vipTotal(0, F.inP);
  const layout0 = sv.layout;
  // A health rebuild (same config): nothing moves.
  c.swap(c.config, () => true);
  t.is(sv.layout, layout0);
  t.deepEqual(B4.map((_, i) => row(c, 0, 0, i)), before4);

  // Reload: web6 removed; web4 moved to index 1, its backends reordered, .22 removed, .24 added;
  // a new VIP first.
  const next = testConfig(
    yaml(`  - name: dns4
    address: 10.99.0.53
    backends: [{ address: 10.99.3.31 }]
  - name: web4
    address: ${VIP4}
    backends:
      - { address: 10.99.3.23 }
      - { address: 10.99.3.24 }
      - { address: 10.99.3.21 }
`, 1),
  );
  const prev = n.fwd.forwarding;
  const ft = c.swap(next);
  remapFlows(n.table, planRemap(prev, ft));
  t.is(sv.layout, layout0 + 1);
  t.deepEqual(row(c, 0, 1, 0), before4[2]!, '.23 kept its counts at its new index');
  t.deepEqual(row(c, 0, 1, 2), before4[0]!, '.21 kept its counts at its new index');
  t.deepEqual(row(c, 0, 1, 1), { inP: 0, inB: 0, outP: 0, outB: 0, conns: 0 }, '.24 (new) starts at 0');
  t.deepEqual(row(c, 0, 1, 3), before4[1]!, "the removed .22's counts are in web4's removed slot");
  t.is(sv.vipTotal(1, F.inP), vipIn4, "web4's totals did not go back");
  t.is(sv.vipTotal(0, F.inP), 0, 'dns4 (new) starts at 0');
  t.is(sv.counts.length, (2 + 4) * SVC_FIELDS, 'web6 is gone: dns4 (1 + removed) and web4 (3 + removed) slots');
  // Traffic after the reload counts in the new numbering (the flows of the removed backend
  // move at their next packet, to kept backends).
  const dsts = new Set<string>();
  for (let k = 0; k < 60; k++) dsts.add(endpoints(c.deliver(0, P.udp4(CLIENT, VIP4, 44000 + k, 53, new Uint8Array(10))).tun[0]!.pkt).dst);
  t.false(dsts.has('10.99.3.22'));
  t.is(sv.vipTotal(1, F.inP), vipIn4 + 60);
  t.is(row(c, 0, 1, 3).inP, before4[1]!.inP, 'nothing new in the removed slot');
});

test('a reply from a removed backend, before its flow moved, counts in the VIP\'s removed slot', (t) => {
  const c = forwarderCluster(yaml(WEB4, 1));
  let sport = 45000;
  for (; ; sport++) if (endpoints(c.deliver(0, P.udp4(CLIENT, VIP4, sport, 53, new Uint8Array(4))).tun[0]!.pkt).dst === '10.99.3.22') break;
  const next = testConfig(yaml(`  - name: web4
    address: ${VIP4}
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.23 }]
`, 1));
  const prev = c.nodes[0]!.fwd.forwarding;
  const ft = c.swap(next);
  remapFlows(c.nodes[0]!.table, planRemap(prev, ft));
  const rep = P.udp4('10.99.3.22', CLIENT, 53, sport, new Uint8Array(20));
  const o = c.deliver(0, rep);
  t.is(o.tun.length, 1, 'un-NATed by its reply key');
  t.deepEqual(endpoints(o.tun[0]!.pkt), { src: VIP4, dst: CLIENT, sport: 53, dport: sport });
  t.is(row(c, 0, 0, 2).outP, 1, 'counted in the removed slot');
  t.is(row(c, 0, 0, 2).outB, rep.length);
});

test('ServiceStats: slot() maps an index past the list to the removed slot; vipTotal sums every slot', (t) => {
  const config = testConfig(yaml(WEB4 + WEB6, 1));
  const ft = buildForwardingTable(config, deriveHashKey(config.cluster.key.reveal()), 1);
  const s = new ServiceStats(ft);
  t.deepEqual([...s.base], [0, 4, 8]);
  t.is(s.slot(0, 0), 0);
  t.is(s.slot(0, 2), 2);
  t.is(s.slot(0, 3), 3);
  t.is(s.slot(0, 0xffff), 3);
  t.is(s.slot(1, 1), 5);
  s.counts[s.slot(1, 1) * SVC_FIELDS + F.inB] = 100;
  s.counts[s.slot(1, 0xffff) * SVC_FIELDS + F.inB] = 7;
  t.is(s.vipTotal(1, F.inB), 107);
  t.is(s.vipTotal(0, F.inB), 0);
});
