/**
 * One balancer process without root (src/control/balancer.ts, admin-server.ts, snapshot.ts,
 * flow-listing.ts): Balancer.start with a FakeTunDevice in place of the TUN device, its real
 * read loop, the admin endpoint on an ephemeral localhost port, the shutdown path, and the
 * start-up errors that do not need a kernel.
 */
import test from 'ava';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { Balancer, assertAddressPresent } from '../../src/control/balancer';
import { createLogger } from '../../src/logger';
import { FakeTunDevice, type FakeWritten } from '../helpers/fake-tun';
import { isTunlbError, ErrorCodes } from '../../src/errors';
import { formatIp } from '../../src/packet/addr';
import * as P from '../helpers/packets';
import { CLIENT, VIP, VIP6, CLIENT6 } from '../helpers/fixtures';
import { startBalancer, tempConfig, until, type StartedBalancer } from '../helpers/balancer-harness';

const KEY = Buffer.alloc(32, 0xa7);

function config(extra = ''): string {
  return `
cluster: { id: ctl-test, key_file: cluster.key }
balancers:                       # a cluster of one: no peers, no control channel
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-test0, batch: 4 }
flow_table: { capacity: 1024, timeouts: { udp_s: 1 } }
vips:
  - name: web4
    address: ${VIP}
    ports: [80, 53]
    backends:
      - { address: 10.99.3.21 }
      - { address: 10.99.3.22 }
      - { address: 10.99.3.23, port: 8080 }
  - name: web6
    address: "${VIP6}"
    backends:
      - { address: "fd99:3::21" }
      - { address: "fd99:3::22" }
admin: { listen: "127.0.0.1:9180" }
log: { level: info }
${extra}`;
}

async function start(t: import('ava').ExecutionContext, extra = ''): Promise<StartedBalancer> {
  return startBalancer(t, { config: config(extra), tunName: 'tunlb-test0', key: KEY });
}

async function getJson(url: string, init?: RequestInit): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(3000) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* plain text */
  }
  return { status: res.status, body };
}

function dstOf(w: FakeWritten): string {
  const L = P.layout(w.packet);
  return formatIp(w.packet, L.dstOff, L.alen);
}
function srcOf(w: FakeWritten): string {
  const L = P.layout(w.packet);
  return formatIp(w.packet, L.srcOff, L.alen);
}

test('balancer: serves through its read loop, answers flow both ways, admin stats and flows', async (t) => {
  const s = await start(t);
  const started = s.logs.map((l) => JSON.parse(l)).find((e) => e.event === 'balancer_started');
  t.truthy(started, 'balancer_started logged');
  t.is(started.tun, 'tunlb-test0');
  const admin = s.admin;
  t.regex(admin, /^127\.0\.0\.1:\d+$/);
  t.false(s.logs.some((l) => l.includes(KEY.toString('hex'))), 'the key never appears in logs');

  // 20 flows (batch size 4 → several batches and several wakeups).
  const backends = new Map<number, string>();
  for (let i = 0; i < 20; i++) s.dev.inject(P.tcp4(CLIENT, VIP, 30000 + i, 80, P.TCP_SYN));
  s.dev.inject(P.tcp4(CLIENT, VIP, 1, 80).slice(0, 9)); // truncated
  s.dev.inject(P.tcp4(CLIENT, VIP, 1, 22)); // port not served
  t.true(await until(() => s.dev.written.length >= 20), `forwarded ${s.dev.written.length}/20`);
  for (const w of s.dev.takeWritten()) {
    t.deepEqual(P.checksumErrors(w.packet), []);
    const L = P.layout(w.packet);
    backends.set((w.packet[L.l4Off]! << 8) | w.packet[L.l4Off + 1]!, dstOf(w));
  }
  t.is(backends.size, 20);
  // Each backend answers: the reply comes out from the VIP.
  for (const [cp, be] of backends) s.dev.inject(P.tcp4(be, CLIENT, be === '10.99.3.23' ? 8080 : 80, cp, P.TCP_SYN | P.TCP_ACK));
  t.true(await until(() => s.dev.written.length >= 20));
  for (const w of s.dev.takeWritten()) {
    t.is(srcOf(w), VIP);
    t.deepEqual(P.checksumErrors(w.packet), []);
  }

  const st = await getJson(`http://${admin}/api/v1/stats`);
  t.is(st.status, 200);
  t.is(st.body.id, 'lb1');
  t.is(st.body.index, 0);
  t.is(st.body.cluster, 'ctl-test');
  t.is(st.body.device.name, 'tunlb-test0');
  t.is(st.body.flows.active, 20);
  t.is(st.body.flows.created, 20);
  t.is(st.body.flows.capacity, 1024);
  t.is(st.body.counters.rxPackets, 42);
  t.is(st.body.counters.forwardPackets, 20);
  t.is(st.body.counters.replyPackets, 20);
  t.is(st.body.counters.txPackets, 40);
  t.deepEqual(st.body.counters.drops, { truncated: 1, port_not_served: 1 });
  t.deepEqual(st.body.forwarding.vips.map((v: { name: string }) => v.name), ['web4', 'web6']);
  t.is(st.body.device.stats.writePackets, 40);

  const fl = await getJson(`http://${admin}/api/v1/flows?limit=5`);
  t.is(fl.status, 200);
  t.is(fl.body.total, 20);
  t.is(fl.body.flows.length, 5);
  for (const row of fl.body.flows) {
    t.regex(row.key, /^tcp 10\.99\.1\.2:3\d{4} -> 10\.99\.0\.10:80$/);
    t.is(row.vip, 'web4');
    t.is(row.primary, 'lb1');
    t.is(row.backend, backends.get(Number(/:(\d+) ->/.exec(row.key)![1])));
    t.is(row.packets, 2);
  }
  const all = await getJson(`http://${admin}/api/v1/flows`);
  t.is(all.body.flows.length, 20);
  const bad = await getJson(`http://${admin}/api/v1/flows?limit=abc`);
  t.is(bad.status, 200, 'a bad limit falls back to the default');

  const hz = await getJson(`http://${admin}/healthz`);
  t.is(hz.status, 200);
  t.is(hz.body, 'ok\n');
  const nf = await getJson(`http://${admin}/api/v1/nope`);
  t.is(nf.status, 404);
  t.regex(nf.body.error, /no such endpoint/);
  const post = await getJson(`http://${admin}/api/v1/stats`, { method: 'POST' });
  t.is(post.status, 405);
});

test('balancer: a burst larger than 8 batches is served over several wakeups, nothing lost', async (t) => {
  const s = await start(t);
  const N = 500; // batch 4 → 125 batches; at most 8 per wakeup
  for (let i = 0; i < N; i++) s.dev.inject(i % 2 ? P.udp6(CLIENT6, VIP6, 20000 + i, 53, new Uint8Array(8)) : P.udp4(CLIENT, VIP, 20000 + i, 53, new Uint8Array(8)));
  t.true(await until(() => s.dev.written.length >= N), `${s.dev.written.length}/${N}`);
  t.is(s.dev.stats.readPackets, N);
  t.is(s.b.forwarder.stats.flowsCreated, N);
  t.is(s.dev.pending, 0);
});

test('balancer: a write the device refuses is counted as write_failed', async (t) => {
  const s = await start(t);
  s.dev.writeLimit = 1;
  for (let i = 0; i < 4; i++) s.dev.inject(P.udp4(CLIENT, VIP, 21000 + i, 53, new Uint8Array(8)));
  t.true(await until(() => s.dev.stats.readPackets >= 4));
  const drops = s.b.snapshot().counters.drops;
  t.true((drops['write_failed'] ?? 0) >= 1, JSON.stringify(drops));
  t.is((drops['write_failed'] ?? 0) + s.dev.stats.writePackets, 4);
});

test('balancer: the expiry timer removes idle flows (udp_s 1)', async (t) => {
  const s = await start(t);
  s.dev.inject(P.udp4(CLIENT, VIP, 22000, 53, new Uint8Array(8)));
  t.true(await until(() => s.b.table.size === 1));
  // Idle for > 1 s plus the 100 ms expiry tick and the 1 s clock granularity.
  t.true(await until(() => s.b.table.size === 0, 4000), 'flow expired');
  t.is(s.b.snapshot().flows.expired, 1);
});

test('balancer: stop() closes the device and the admin endpoint, logs final counters, is idempotent', async (t) => {
  const s = await start(t);
  const admin = s.admin;
  t.is((await getJson(`http://${admin}/healthz`)).status, 200);
  await s.b.stop('test');
  await s.b.stop('again');
  t.true(s.dev.closed);
  await t.throwsAsync(getJson(`http://${admin}/healthz`));
  const stopped = s.logs.map((l) => JSON.parse(l)).filter((e) => e.event === 'balancer_stopped');
  t.is(stopped.length, 1);
  t.is(stopped[0].reason, 'test');
  t.truthy(stopped[0].stats);
});

test('balancer: readiness (serving) is true once started and false from stop(), with a callback per change', async (t) => {
  const s = await start(t);
  t.true(s.b.serving, 'a cluster of one serves once started');
  const changes: Array<[boolean, string]> = [];
  const off = s.b.onServingChange((v, why) => changes.push([v, why]));
  await s.b.stop('test');
  t.false(s.b.serving);
  t.deepEqual(changes, [[false, 'test']]);
  off();
  t.is(s.b.cluster, undefined);
});

test('balancer: start-up errors are TunlbErrors with one clear line; the device is released', async (t) => {
  const { dir, path } = tempConfig(config(), KEY);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const quiet = createLogger({ level: 'silent' });
  const unknown = await t.throwsAsync(Balancer.start({ configPath: path, id: 'lb9', device: new FakeTunDevice(), logger: quiet }));
  t.true(isTunlbError(unknown, ErrorCodes.CONFIG_INVALID));
  t.regex(unknown!.message, /balancer id "lb9" is not in .*known: lb1\)/);

  // Admin port busy: the fake device opened for it is closed again.
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as { port: number }).port;
  const dev = new FakeTunDevice();
  const busy = await t.throwsAsync(Balancer.start({ configPath: path, id: 'lb1', device: dev, adminListen: `127.0.0.1:${port}`, logger: quiet }));
  t.true(isTunlbError(busy, ErrorCodes.ADMIN));
  t.regex(busy!.message, /admin endpoint cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
  t.true(dev.closed, 'device released after a failed start');

  const missing = await t.throwsAsync(Balancer.start({ configPath: join(dir, 'nope.yaml'), id: 'lb1', device: new FakeTunDevice(), logger: quiet }));
  t.true(isTunlbError(missing, ErrorCodes.CONFIG_NOT_FOUND));

  for (const e of [unknown!, busy!, missing!]) t.false(e.message.includes('\n'), `one line: ${e.message}`);
});

test('assertAddressPresent: passes for a local address, names the field and the fix otherwise', (t) => {
  t.notThrows(() => assertAddressPresent('127.0.0.1', 'balancers[0].address'));
  const e = t.throws(() => assertAddressPresent('192.0.2.99', 'balancers[1].address'));
  t.true(isTunlbError(e, ErrorCodes.ADDRESS_NOT_PRESENT));
  t.regex(e!.message, /^balancers\[1\]\.address 192\.0\.2\.99 is not on any interface here: .*ip netns exec/);
});
