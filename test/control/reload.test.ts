/**
 * Live changes of one balancer (issue 5 "Weights, draining, live change"), without root:
 * Balancer.start over a FakeTunDevice, driven through the admin endpoint.
 *   - drain / undrain (POST /api/v1/backends/drain|undrain, GET /api/v1/backends): a drained
 *     backend gets no new flows; its existing flows keep forwarding to it.
 *   - reload (POST /api/v1/reload, as SIGHUP): flows on backends that remain keep their
 *     backend (and their replies are un-NATed) after a reload that reorders, adds and removes
 *     backends; UDP flows of the removed one move; an invalid reload changes nothing.
 *   - drain timeout (vips[].drain_timeout_s): past it the drained backend is 'drained' and
 *     its remaining flows are cut like a down backend's (TCP reset, UDP moved).
 */
import test from 'ava';
import { writeFileSync as write } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { formatIp } from '../../src/packet/addr';
import { BACKEND_ELIGIBLE } from '../../src/decision/forwarding-table';
import * as P from '../helpers/packets';
import { CLIENT, VIP } from '../helpers/fixtures';
import { dstOf, sportOf, startBalancer, udpFlows, until as untilShared, type StartedBalancer } from '../helpers/balancer-harness';

const KEY = Buffer.alloc(32, 0x3d);

function yaml(backends: string[], vipExtra = ''): string {
  return `
cluster: { id: reload-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-rl0, batch: 64 }
flow_table: { capacity: 16384, timeouts: { udp_s: 300 } }
vips:
  - name: web4
    address: ${VIP}
    protocols: [tcp, udp]
    ports: [80, 53]${vipExtra}
    backends:
${backends.map((b) => `      - ${b}`).join('\n')}
admin: { listen: "127.0.0.1:9180" }
log: { level: info }
`;
}

type Started = StartedBalancer;

function start(t: import('ava').ExecutionContext, text: string): Promise<Started> {
  return startBalancer(t, { config: text, tunName: 'tunlb-rl0', key: KEY, queueLimit: 20000 });
}

async function call(url: string, method = 'GET', body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url, {
    method,
    headers: body !== undefined ? { 'content-type': 'application/json' } : undefined,
    body: body !== undefined ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(3000),
  });
  return { status: res.status, body: await res.json() };
}

/** Reload and health changes take a rebuild or a check interval: 5 s by default here. */
const until = (cond: () => boolean, ms = 5000): Promise<boolean> => untilShared(cond, ms);


/**
 * Sends an ACK segment (seq/ack) from CLIENT:port to VIP:80 for each port, and expects each to
 * come back as an RST from VIP:80 to the client with valid checksums (backend down).
 */
async function expectResets(t: import('ava').ExecutionContext, s: Started, ports: number[], seq: number, ack: number): Promise<void> {
  for (const p of ports) s.dev.inject(P.tcp4(CLIENT, VIP, p, 80, P.TCP_ACK, undefined, { seq, ack }));
  t.true(await until(() => s.dev.written.length >= ports.length));
  for (const w of s.dev.takeWritten()) {
    const L = P.layout(w.packet);
    t.is(formatIp(w.packet, L.srcOff, L.alen), VIP);
    t.is(dstOf(w), CLIENT);
    t.is(w.packet[L.l4Off + 13], P.TCP_RST);
    t.deepEqual(P.checksumErrors(w.packet), []);
  }
}

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

test('drain: a drained backend gets no new flows over 3000, its existing flows still forward; undrain restores it', async (t) => {
  const s = await start(t, yaml(['{ address: 10.99.3.21 }', '{ address: 10.99.3.22 }', '{ address: 10.99.3.23 }']));
  const before = await udpFlows(t, s, range(10000, 300));
  const onDrained = [...before].filter(([, be]) => be === '10.99.3.22').map(([p]) => p);
  t.true(onDrained.length > 50, `flows on 10.99.3.22 before the drain: ${onDrained.length}`);

  const bad = await call(`http://${s.admin}/api/v1/backends/drain`, 'POST', { vip: 'web4', address: '10.99.3.99' });
  t.is(bad.status, 400);
  t.regex(bad.body.error, /no backend 10\.99\.3\.99 in VIP web4/);
  const badVip = await call(`http://${s.admin}/api/v1/backends/drain`, 'POST', { vip: 'nope', address: '10.99.3.22' });
  t.is(badVip.status, 400);
  t.regex(badVip.body.error, /no VIP "nope"/);
  const noBody = await call(`http://${s.admin}/api/v1/backends/drain`, 'POST');
  t.is(noBody.status, 415, 'a POST without Content-Type: application/json');
  const emptyBody = await call(`http://${s.admin}/api/v1/backends/drain`, 'POST', {});
  t.is(emptyBody.status, 400);
  t.is((await call(`http://${s.admin}/api/v1/backends/drain`)).status, 405);

  const d = await call(`http://${s.admin}/api/v1/backends/drain`, 'POST', { vip: 'web4', address: '10.99.3.22' });
  t.is(d.status, 200);
  t.true(d.body.changed);
  const gen = s.b.forwarder.forwarding.generation;
  t.true(await until(() => !s.b.health.eligible(0, 1)));
  // The rebuild runs in the time slices: wait for the table that takes no new flows there.
  t.true(await until(() => (s.b.forwarder.forwarding.backendUp[0]![1]! & BACKEND_ELIGIBLE) === 0), 'table rebuilt without 10.99.3.22');
  t.is(s.b.forwarder.forwarding.generation, gen);
  const list = await call(`http://${s.admin}/api/v1/backends`);
  t.is(list.status, 200);
  const row = list.body.backends.find((x: { backend: string }) => x.backend === '10.99.3.22');
  t.true(row.drained);
  t.false(row.eligible);
  t.is(row.flows, onDrained.length, 'the flows still held on the drained backend');

  const fresh = await udpFlows(t, s, range(20000, 3000));
  t.is(fresh.size, 3000);
  t.is([...fresh.values()].filter((be) => be === '10.99.3.22').length, 0, 'no new flow on the drained backend');
  t.true([...fresh.values()].filter((be) => be === '10.99.3.21').length > 1000);

  const again = await udpFlows(t, s, onDrained);
  for (const p of onDrained) t.is(again.get(p), '10.99.3.22', `existing flow ${p} stays on the drained backend`);

  const u = await call(`http://${s.admin}/api/v1/backends/undrain`, 'POST', { vip: 'web4', address: '10.99.3.22' });
  t.is(u.status, 200);
  t.true(await until(() => s.b.health.eligible(0, 1)));
  t.true(await until(() => (s.b.forwarder.forwarding.backendUp[0]![1]! & BACKEND_ELIGIBLE) !== 0), 'table rebuilt with 10.99.3.22');
  const after = await udpFlows(t, s, range(40000, 300));
  t.true([...after.values()].filter((be) => be === '10.99.3.22').length > 50, 'new flows reach it again after undrain');
});

test('reload: reorder, add and remove backends; flows on kept backends stay on them; an invalid reload changes nothing', async (t) => {
  const s = await start(t, yaml(['{ address: 10.99.3.21 }', '{ address: 10.99.3.22 }', '{ address: 10.99.3.23, port: 8080 }']));
  const before = await udpFlows(t, s, range(10000, 600));
  // TCP flows too: replies must still be un-NATed after the reload.
  s.dev.takeWritten();
  for (const p of range(30000, 60)) s.dev.inject(P.tcp4(CLIENT, VIP, p, 80, P.TCP_SYN));
  t.true(await until(() => s.dev.written.length >= 60));
  const tcpBe = new Map<number, string>();
  for (const w of s.dev.takeWritten()) tcpBe.set(sportOf(w), dstOf(w));
  const gen = s.b.forwarder.forwarding.generation;

  // Invalid: refused with the errors, nothing changes.
  write(s.path, yaml(['{ address: 10.99.3.21 }', '{ address: not-an-address }']));
  const bad = await call(`http://${s.admin}/api/v1/reload`, 'POST', {});
  t.is(bad.status, 400);
  t.true(Array.isArray(bad.body.errors) && bad.body.errors.length > 0);
  t.regex(bad.body.errors.join('\n'), /not-an-address/);
  t.is(s.b.forwarder.forwarding.generation, gen);
  t.true(s.logs.some((l) => l.includes('"config_reload_refused"')));
  const still = await udpFlows(t, s, range(10000, 600));
  for (const [p, be] of before) t.is(still.get(p), be);
  // A changed balancer list is refused too.
  write(s.path, yaml(['{ address: 10.99.3.21 }']).replace('  - { id: lb1, address: 10.99.2.11 }', '  - { id: lb1, address: 10.99.2.11 }\n  - { id: lb2, address: 10.99.2.12 }'));
  const bal = await call(`http://${s.admin}/api/v1/reload`, 'POST', {});
  t.is(bal.status, 400);
  t.regex(bal.body.error, /balancer list changed/);
  t.is(s.b.forwarder.forwarding.generation, gen);

  // Reorder (23 first), add 24, remove 22, reweight 21.
  write(s.path, yaml(['{ address: 10.99.3.24 }', '{ address: 10.99.3.23, port: 8080 }', '{ address: 10.99.3.21, weight: 3 }']));
  const ok = await call(`http://${s.admin}/api/v1/reload`, 'POST', {});
  t.is(ok.status, 200, JSON.stringify(ok.body));
  t.is(ok.body.generation, gen + 1);
  t.deepEqual(ok.body.backends.added, ['web4 10.99.3.24']);
  t.deepEqual(ok.body.backends.removed, ['web4 10.99.3.22']);
  t.deepEqual(ok.body.backends.reweighted, ['web4 10.99.3.21']);
  const on22 = [...before.values()].filter((be) => be === '10.99.3.22').length;
  t.true(on22 > 50);
  const tcpOn22 = [...tcpBe].filter(([, be]) => be === '10.99.3.22').map(([p]) => p);
  t.is(ok.body.flows.cut, on22 + tcpOn22.length, 'flows of the removed backend marked removed (TCP to be reset, UDP to move)');
  t.is(ok.body.flows.removed, 0);
  t.is(ok.body.flows.scanned, 600 + 60, 'every record translated');
  t.true(ok.body.flows.remapped > 0, 'reordered backends remapped');
  const ev = s.logs.map((l) => JSON.parse(l)).find((e) => e.event === 'config_reloaded');
  t.truthy(ev);
  t.is(ev.backendsAdded, 1);
  t.is(ev.backendsRemoved, 1);
  t.is(ev.flowsCut, on22 + tcpOn22.length);

  const after = await udpFlows(t, s, range(10000, 600));
  for (const [p, be] of before) {
    if (be === '10.99.3.22') t.not(after.get(p), '10.99.3.22', `flow ${p} moved off the removed backend`);
    else t.is(after.get(p), be, `flow ${p} stays on ${be}`);
  }
  t.is(s.b.forwarder.stats.udpMovedBackendDown, on22, 'UDP flows of the removed backend moved at their next packet');
  // TCP flows on kept backends: the next segment goes to the same backend, the reply comes back from the VIP.
  const kept = [...tcpBe].filter(([, be]) => be !== '10.99.3.22');
  for (const [p] of kept) s.dev.inject(P.tcp4(CLIENT, VIP, p, 80, P.TCP_ACK, undefined, { seq: 1, ack: 1 }));
  t.true(await until(() => s.dev.written.length >= kept.length));
  for (const w of s.dev.takeWritten()) t.is(dstOf(w), tcpBe.get(sportOf(w)) ?? 'no such flow');
  for (const [p, be] of kept) s.dev.inject(P.tcp4(be, CLIENT, be === '10.99.3.23' ? 8080 : 80, p, P.TCP_ACK, undefined, { seq: 1, ack: 2 }));
  t.true(await until(() => s.dev.written.length >= kept.length));
  for (const w of s.dev.takeWritten()) {
    const L = P.layout(w.packet);
    t.is(formatIp(w.packet, L.srcOff, L.alen), VIP);
    t.is((w.packet[L.l4Off]! << 8) | w.packet[L.l4Off + 1]!, 80);
    t.deepEqual(P.checksumErrors(w.packet), []);
  }
  // TCP flows of the removed backend: the next client segment is answered at once with an RST
  // from VIP:80 (not sent to a live backend that would have to reset a connection it never had).
  await expectResets(t, s, tcpOn22, 1, 1);
  t.is(s.b.forwarder.stats.tcpResetBackendDown, tcpOn22.length);
  // New flows reach the added backend.
  const fresh = await udpFlows(t, s, range(50000, 600));
  t.true([...fresh.values()].some((be) => be === '10.99.3.24'));
  t.false([...fresh.values()].some((be) => be === '10.99.3.22'));
  const list = await call(`http://${s.admin}/api/v1/backends`);
  t.deepEqual(list.body.backends.map((x: { backend: string }) => x.backend), ['10.99.3.24', '10.99.3.23', '10.99.3.21']);
});

test('a backend that fails its health check: its TCP flows get an RST from the VIP, its UDP flows move (balancer wiring)', async (t) => {
  const srv = createServer((c) => c.destroy());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as AddressInfo).port;
  t.teardown(() => srv.close());
  const s = await start(t, yaml([`{ address: 127.0.0.1, health: { type: tcp, port: ${port}, interval_ms: 100, timeout_ms: 50, rise: 1, fall: 1 } }`, '{ address: 127.0.0.2 }']));
  t.true(await until(() => s.b.health.states()[0]!.health === 'healthy'), 'checked healthy');
  const udp = await udpFlows(t, s, range(10000, 100));
  s.dev.takeWritten();
  for (const p of range(30000, 40)) s.dev.inject(P.tcp4(CLIENT, VIP, p, 80, P.TCP_SYN));
  t.true(await until(() => s.dev.written.length >= 40));
  const tcpBe = new Map<number, string>();
  for (const w of s.dev.takeWritten()) tcpBe.set(sportOf(w), dstOf(w));
  const tcpOn1 = [...tcpBe].filter(([, be]) => be === '127.0.0.1').map(([p]) => p);
  t.true(tcpOn1.length > 5);

  srv.close();
  t.true(await until(() => s.b.health.states()[0]!.health === 'unhealthy'), 'checked unhealthy');
  t.true(await until(() => s.b.forwarder.forwarding.backendUp[0]![0] === 0), 'table rebuilt with backendUp 0');

  await expectResets(t, s, tcpOn1, 10, 99);
  const moved = await udpFlows(t, s, range(10000, 100));
  for (const [p] of udp) t.is(moved.get(p), '127.0.0.2');
  t.is(s.b.forwarder.stats.tcpResetBackendDown, tcpOn1.length);
  t.is(s.b.forwarder.stats.udpMovedBackendDown, [...udp.values()].filter((be) => be === '127.0.0.1').length);
});

test('drain timeout: flows stay while draining; past drain_timeout_s the backend is drained, its TCP flows get an RST and its UDP flows move', async (t) => {
  const s = await start(t, yaml(['{ address: 10.99.3.21 }', '{ address: 10.99.3.22 }'], '\n    drain_timeout_s: 1'));
  const udp = await udpFlows(t, s, range(10000, 100));
  const udpOn2 = [...udp].filter(([, be]) => be === '10.99.3.22').map(([p]) => p);
  s.dev.takeWritten();
  for (const p of range(30000, 40)) s.dev.inject(P.tcp4(CLIENT, VIP, p, 80, P.TCP_SYN));
  t.true(await until(() => s.dev.written.length >= 40));
  const tcpOn2 = s.dev.takeWritten().filter((w) => dstOf(w) === '10.99.3.22').map(sportOf);
  t.true(udpOn2.length > 10 && tcpOn2.length > 5, `flows on 10.99.3.22: udp ${udpOn2.length}, tcp ${tcpOn2.length}`);

  const drainedAt = Date.now();
  const d = await call(`http://${s.admin}/api/v1/backends/drain`, 'POST', { vip: 'web4', address: '10.99.3.22' });
  t.is(d.status, 200);
  const row = (await call(`http://${s.admin}/api/v1/backends`)).body.backends.find((x: { backend: string }) => x.backend === '10.99.3.22');
  t.is(row.state, 'draining');
  t.false(row.down);
  t.true(Math.abs(row.drainDeadlineMs - (drainedAt + 1000)) < 500, `deadline ${row.drainDeadlineMs - drainedAt} ms after the drain`);

  // Before the timeout: established flows still reach the draining backend.
  const still = await udpFlows(t, s, udpOn2);
  for (const p of udpOn2) t.is(still.get(p), '10.99.3.22');
  for (const p of tcpOn2) s.dev.inject(P.tcp4(CLIENT, VIP, p, 80, P.TCP_ACK, undefined, { seq: 10, ack: 99 }));
  t.true(await until(() => s.dev.written.length >= tcpOn2.length));
  t.true(s.dev.takeWritten().every((w) => dstOf(w) === '10.99.3.22'), 'TCP flows still forwarded while draining');

  t.true(await until(() => s.b.health.stateOf(0, 1) === 'drained', 4000), 'drained after drain_timeout_s');
  t.true(Date.now() - drainedAt >= 1000, 'not before the timeout');
  t.true(await until(() => s.b.forwarder.forwarding.backendUp[0]![1] === 0), 'table rebuilt with backendUp 0');
  const ev = s.logs.map((l) => JSON.parse(l) as { event?: string; to?: string; reason?: string; cause?: string }).find((e) => e.event === 'backend_state' && e.to === 'drained');
  t.like(ev, { cause: 'timeout' });
  t.regex(ev?.reason ?? '', /drain timeout 1 s passed \(drained by operator on lb1 at .*\); remaining flows are cut/);

  await expectResets(t, s, tcpOn2, 11, 99);
  const moved = await udpFlows(t, s, udpOn2);
  for (const p of udpOn2) t.is(moved.get(p), '10.99.3.21', `UDP flow ${p} moved`);
  t.is(s.b.forwarder.stats.tcpResetBackendDown, tcpOn2.length);
  const metrics = await (await fetch(`http://${s.admin}/metrics`)).text();
  t.regex(metrics, /tunlb_backend_state\{vip="web4",backend="10\.99\.3\.22",state="drained"\} 1/);
  t.regex(metrics, /tunlb_drains_expired_total 1/);
  t.regex(metrics, new RegExp(`tunlb_backend_down_flows_total\\{action="tcp_reset"\\} ${tcpOn2.length}`));

  // Undrain: back to healthy, new flows may go there again.
  t.is((await call(`http://${s.admin}/api/v1/backends/undrain`, 'POST', { vip: 'web4', address: '10.99.3.22' })).status, 200);
  t.true(await until(() => s.b.health.stateOf(0, 1) === 'healthy' && s.b.forwarder.forwarding.backendUp[0]![1] === 3), 'up (1) and eligible (2) again');
});
