/**
 * Flows on a backend that becomes down (src/dataplane/forwarder.ts "Backend down"): the
 * forwarding table's backendUp marks it 0; the next client packet of a TCP flow becomes an
 * RST to the client (valid checksums, RFC 9293 3.10.7.1 numbers) and the flow is removed; a
 * UDP flow moves to the backend the table now picks and its replies are un-NATed. Draining
 * (eligible false, up) keeps existing flows where they are.
 */
import test from 'ava';
import { parseConfig, type Config } from '../../src/config';
import { deriveHashKey } from '../../src/decision/hash-key';
import { FlowTable } from '../../src/flow';
import { Forwarder } from '../../src/dataplane/forwarder';
import { buildForwardingTable } from '../../src/decision/forwarding-table';
import { PacketBatch } from '../../src/dataplane/packet-batch';
import { formatIp } from '../../src/packet/addr';
import * as P from '../helpers/packets';
import { CLIENT, CLIENT6, VIP, VIP6 } from '../helpers/fixtures';

const KEY_PATH = '/keys/bf-test.key';
const readKeyFile = (p: string): Buffer => {
  if (p === KEY_PATH) return Buffer.alloc(32, 0xa7);
  throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
};

const YAML = `
cluster: { id: bf-test, key_file: ${KEY_PATH} }
balancers:
  - { id: lb1, address: 10.99.2.11 }
flow_table: { capacity: 4096 }
vips:
  - name: web4
    address: ${VIP}
    protocols: [tcp, udp]
    ports: [80, 53]
    backends:
      - { address: 10.99.3.21 }
      - { address: 10.99.3.22 }
      - { address: 10.99.3.23, port: 8080 }
  - name: web6
    address: "${VIP6}"
    protocols: [tcp, udp]
    ports: [80, 53]
    backends:
      - { address: "fd99:3::21" }
      - { address: "fd99:3::22" }
`;

function setup() {
  const config: Config = parseConfig(YAML, 'bf-test.yaml', { readKeyFile, env: {}, baseDir: '/' });
  const hashKey = deriveHashKey(config.cluster.key.reveal());
  const table = new FlowTable({ capacity: 4096, seed: 7 });
  const live = new Uint8Array([1]);
  const fwd = new Forwarder({ table, forwarding: buildForwardingTable(config, hashKey, 1), hashKey, selfIndex: 0, live });
  const batch = new PacketBatch({ count: 8, maxPacket: 2048 });
  /** Runs packets through processBatch; returns the emitted packets (copies). */
  const run = (pkts: Uint8Array[]): Uint8Array[] => {
    pkts.forEach((p, i) => {
      const o = i * batch.slotSize + batch.headroom;
      batch.buf.set(p, o);
      batch.offsets[i] = o;
      batch.sizes[i] = p.length;
    });
    const n = fwd.processBatch(batch, pkts.length, false, 1);
    const out: Uint8Array[] = [];
    for (let i = 0; i < n; i++) out.push(batch.buf.slice(batch.offsets[i]!, batch.offsets[i]! + batch.sizes[i]!));
    return out;
  };
  /** Marks backend `down` of VIP `vip` down (and ineligible), as the balancer's rebuild would. */
  const markDown = (vip: string, down: number, drainOnly = false): void => {
    const prev = fwd.forwarding;
    const off = (v: { name: string }, i: number): boolean => !(v.name === vip && i === down);
    fwd.setForwarding(buildForwardingTable(config, hashKey, prev.generation, off, prev, drainOnly ? () => true : off));
  };
  return { config, table, fwd, run, markDown };
}

const dst = (p: Uint8Array): string => {
  const L = P.layout(p);
  return formatIp(p, L.dstOff, L.alen);
};
const src = (p: Uint8Array): string => {
  const L = P.layout(p);
  return formatIp(p, L.srcOff, L.alen);
};
const u32 = (p: Uint8Array, o: number): number => ((p[o]! << 24) | (p[o + 1]! << 16) | (p[o + 2]! << 8) | p[o + 3]!) >>> 0;
const u16 = (p: Uint8Array, o: number): number => (p[o]! << 8) | p[o + 1]!;

/** Each family's VIP, client and packet builders (the tests below run once per family). */
const FAMILIES = [false, true].map((v6) => ({
  fam: v6 ? 'IPv6' : 'IPv4',
  vipName: v6 ? 'web6' : 'web4',
  vipAddr: v6 ? VIP6 : VIP,
  client: v6 ? CLIENT6 : CLIENT,
  tcp: v6 ? P.tcp6 : P.tcp4,
  udp: v6 ? P.udp6 : P.udp4,
}));

for (const { fam, vipName, vipAddr, client, tcp, udp } of FAMILIES) {

  test(`backend down, ${fam} TCP: the next client segment becomes an RST from VIP:80 to the client; the flow is removed`, (t) => {
    const h = setup();
    const [syn] = h.run([tcp(client, vipAddr, 40001, 80, P.TCP_SYN, undefined, { seq: 1000 })]);
    const be = h.config.vips.find((v) => v.name === vipName)!.backends.findIndex((b) => b.address.text === dst(syn!));
    t.true(be >= 0);
    t.is(h.table.size, 1);
    h.markDown(vipName, be);
    // ACK set: seq = SEG.ACK, flags RST only.
    const seg = tcp(client, vipAddr, 40001, 80, P.TCP_PSH | P.TCP_ACK, new Uint8Array(100), { seq: 1001, ack: 777777 });
    const out = h.run([seg]);
    t.is(out.length, 1);
    const r = out[0]!;
    t.deepEqual(P.checksumErrors(r), []);
    const L = P.layout(r);
    t.is(L.proto, P.PROTO_TCP);
    t.is(r.length, L.l4Off + 20);
    t.is(src(r), vipAddr);
    t.is(dst(r), client);
    t.is(u16(r, L.l4Off), 80);
    t.is(u16(r, L.l4Off + 2), 40001);
    t.is(u32(r, L.l4Off + 4), 777777);
    t.is(r[L.l4Off + 13], P.TCP_RST);
    t.is(h.table.size, 0, 'flow removed');
    t.is(h.fwd.stats.tcpResetBackendDown, 1);

    // No ACK (a segment without ACK, not a SYN): seq 0, RST|ACK, ack = SEG.SEQ + SEG.LEN.
    h.markDown(vipName, -1);
    const [syn2] = h.run([tcp(client, vipAddr, 40002, 80, P.TCP_SYN, undefined, { seq: 5000 })]);
    const be2 = h.config.vips.find((v) => v.name === vipName)!.backends.findIndex((b) => b.address.text === dst(syn2!));
    h.markDown(vipName, be2);
    const [r2] = h.run([tcp(client, vipAddr, 40002, 80, P.TCP_PSH, new Uint8Array(10), { seq: 5001 })]);
    t.deepEqual(P.checksumErrors(r2!), []);
    const L2 = P.layout(r2!);
    t.is(u32(r2!, L2.l4Off + 4), 0);
    t.is(u32(r2!, L2.l4Off + 8), 5011);
    t.is(r2![L2.l4Off + 13], P.TCP_RST | P.TCP_ACK);
    // A client RST is not answered.
    const [syn3] = h.run([tcp(client, vipAddr, 40003, 80, P.TCP_SYN)]);
    h.markDown(vipName, h.config.vips.find((v) => v.name === vipName)!.backends.findIndex((b) => b.address.text === dst(syn3!)));
    t.is(h.run([tcp(client, vipAddr, 40003, 80, P.TCP_RST)]).length, 0);
    t.is(h.fwd.stats.tcpResetBackendDown, 2);
  });

  test(`backend down, ${fam} UDP: the flow moves to a backend that is up, its replies are un-NATed`, (t) => {
    const h = setup();
    const vip = h.config.vips.find((v) => v.name === vipName)!;
    const [first] = h.run([udp(client, vipAddr, 41001, 53, new Uint8Array(8))]);
    const be = vip.backends.findIndex((b) => b.address.text === dst(first!));
    h.markDown(vipName, be);
    const [moved] = h.run([udp(client, vipAddr, 41001, 53, new Uint8Array(8))]);
    t.truthy(moved);
    t.deepEqual(P.checksumErrors(moved!), []);
    const nb = vip.backends.find((b) => b.address.text === dst(moved!))!;
    t.truthy(nb);
    t.not(nb.index, be);
    t.is(h.fwd.stats.udpMovedBackendDown, 1);
    t.is(h.table.size, 1);
    const bport = nb.port ?? 53;
    t.is(u16(moved!, P.layout(moved!).l4Off + 2), bport);
    // The new backend's reply comes out from VIP:53.
    const [reply] = h.run([udp(nb.address.text, client, bport, 41001, new Uint8Array(8))]);
    t.truthy(reply);
    t.deepEqual(P.checksumErrors(reply!), []);
    t.is(src(reply!), vipAddr);
    t.is(u16(reply!, P.layout(reply!).l4Off), 53);
    // Later packets stay on the new backend (no second move).
    const [again] = h.run([udp(client, vipAddr, 41001, 53, new Uint8Array(8))]);
    t.is(dst(again!), nb.address.text);
    t.is(h.fwd.stats.udpMovedBackendDown, 1);
  });

  test(`draining only (${fam}): existing TCP flows keep their backend`, (t) => {
    const h = setup();
    const vip = h.config.vips.find((v) => v.name === vipName)!;
    const [syn] = h.run([tcp(client, vipAddr, 42001, 80, P.TCP_SYN)]);
    const be = vip.backends.findIndex((b) => b.address.text === dst(syn!));
    h.markDown(vipName, be, true);
    const [seg] = h.run([tcp(client, vipAddr, 42001, 80, P.TCP_ACK, undefined, { seq: 1, ack: 2 })]);
    t.is(dst(seg!), vip.backends[be]!.address.text);
    t.is(h.fwd.stats.tcpResetBackendDown, 0);
  });
}

// Connection reuse (src/dataplane/forwarder.ts): a new connection (SYN, no ACK) on a 5-tuple whose
// record lingers goes to the backend the table picks now when the recorded one takes no new
// flows; with an eligible recorded backend it stays (same decision as before).
for (const { fam, vipName, vipAddr, client, tcp } of FAMILIES) {

  for (const [what, drainOnly] of [['draining', true], ['down', false]] as const) {
    test(`connection reuse, ${fam}: a SYN on a closed flow of a ${what} backend goes to an eligible backend, replies un-NATed`, (t) => {
      const h = setup();
      const vip = h.config.vips.find((v) => v.name === vipName)!;
      const cp = 43001;
      const [syn] = h.run([tcp(client, vipAddr, cp, 80, P.TCP_SYN, undefined, { seq: 100 })]);
      const be = vip.backends.findIndex((b) => b.address.text === dst(syn!));
      h.run([tcp(client, vipAddr, cp, 80, P.TCP_FIN | P.TCP_ACK, undefined, { seq: 101, ack: 9 })]);
      h.markDown(vipName, be, drainOnly);
      // The client reuses its port for a new connection (TIME_WAIT reuse, a NAT in front, ...).
      const [syn2] = h.run([tcp(client, vipAddr, cp, 80, P.TCP_SYN, undefined, { seq: 90000 })]);
      t.truthy(syn2, 'forwarded, not reset');
      t.is(syn2![P.layout(syn2!).l4Off + 13], P.TCP_SYN);
      const nb = vip.backends.find((b) => b.address.text === dst(syn2!))!;
      t.not(nb.index, be, 'moved off the backend that takes no new flows');
      t.deepEqual(P.checksumErrors(syn2!), []);
      t.is(h.fwd.stats.synReuseRebound, 1);
      t.is(h.fwd.stats.tcpResetBackendDown, 0);
      t.is(h.table.size, 1);
      const bport = nb.port ?? 80;
      const [synack] = h.run([tcp(nb.address.text, client, bport, cp, P.TCP_SYN | P.TCP_ACK, undefined, { seq: 5, ack: 90001 })]);
      t.truthy(synack);
      t.is(src(synack!), vipAddr);
      t.is(u16(synack!, P.layout(synack!).l4Off), 80);
      // The rest of the new connection stays there (no second move).
      const [ack] = h.run([tcp(client, vipAddr, cp, 80, P.TCP_ACK, undefined, { seq: 90001, ack: 6 })]);
      t.is(dst(ack!), nb.address.text);
      t.is(h.fwd.stats.synReuseRebound, 1);
    });
  }

  test(`connection reuse, ${fam}: an established flow of a draining backend keeps it; a SYN with an eligible backend is not moved`, (t) => {
    const h = setup();
    const vip = h.config.vips.find((v) => v.name === vipName)!;
    const [syn] = h.run([tcp(client, vipAddr, 44001, 80, P.TCP_SYN)]);
    const be = vip.backends.findIndex((b) => b.address.text === dst(syn!));
    const [again] = h.run([tcp(client, vipAddr, 44001, 80, P.TCP_SYN)]);
    t.is(dst(again!), vip.backends[be]!.address.text, 'SYN retransmission, eligible backend: same backend');
    h.markDown(vipName, be, true);
    for (const flags of [P.TCP_ACK, P.TCP_PSH | P.TCP_ACK, P.TCP_SYN | P.TCP_ACK, P.TCP_FIN | P.TCP_ACK]) {
      const [seg] = h.run([tcp(client, vipAddr, 44001, 80, flags, undefined, { seq: 1, ack: 2 })]);
      t.is(dst(seg!), vip.backends[be]!.address.text, `flags ${flags}: stays on the draining backend`);
    }
    t.is(h.fwd.stats.synReuseRebound, 0);
  });
}
