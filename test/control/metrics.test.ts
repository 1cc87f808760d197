/**
 * Metrics and the admin endpoint's JSON views and status page (src/control/metrics.ts,
 * admin-server.ts, status-page.ts), without root: a Balancer with a FakeTunDevice and its
 * real read loop, its admin endpoint on an ephemeral localhost port; counters are read from
 * GET /metrics before and after packets. Peer metrics (state, RTT histogram, failovers) run
 * over a real Membership driven by a fake clock behind a stub balancer (a cluster needs
 * peers' sockets).
 */
import { ClusterView } from '../../src/cluster/cluster-view';
import test from 'ava';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Balancer } from '../../src/control/balancer';
import { createLogger } from '../../src/logger';
import { Metrics } from '../../src/control/metrics';
import { statusPageHtml } from '../../src/control/status-page';
import { FakeTunDevice } from '../helpers/fake-tun';
import { ForwarderStats } from '../../src/dataplane/forwarder-stats';
import { ServiceStats } from '../../src/dataplane/service-stats';
import { ReplicatorStats } from '../../src/cluster/replicator';
import { Membership, type ProbeBody } from '../../src/cluster/membership';
import { isTunlbError, ErrorCodes } from '../../src/errors';
import * as P from '../helpers/packets';
import { CLIENT, VIP } from '../helpers/fixtures';
import { startBalancer, until } from '../helpers/balancer-harness';
import { promtool, promtoolTest } from '../helpers/promtool';
import { collectDefaultMetrics, Registry } from 'prom-client';

const KEY = Buffer.alloc(32, 0x5c);
const TOKEN = 'tok-3f9a1c77e2';

function config(extra = ''): string {
  return `
cluster: { id: metrics-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-mtest0, batch: 4 }
flow_table: { capacity: 1024 }
vips:
  - name: web4
    address: ${VIP}
    ports: [80, 53]
    backends:
      - { address: 10.99.3.21 }
      - { address: 10.99.3.22 }
admin: { listen: "127.0.0.1:9180"${extra} }
log: { level: info }
`;
}

interface Started {
  b: Balancer;
  dev: FakeTunDevice;
  base: string;
}

async function start(t: import('ava').ExecutionContext, opts: { token?: boolean } = {}): Promise<Started> {
  const s = await startBalancer(t, {
    config: config(opts.token ? ', token_file: admin.token' : ''),
    tunName: 'tunlb-mtest0',
    key: KEY,
    ...(opts.token ? { token: TOKEN } : {}),
    logLevel: 'info',
  });
  return { b: s.b, dev: s.dev, base: `http://${s.admin}` };
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; type: string; text: string; headers: Headers }> {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(3000) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text(), headers: res.headers };
}

/** Prometheus text → { 'name{a="x",b="y"}': value } (labels as exposed, in their order). */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** The label values of `family`'s series for `peer` whose value is 1 (one-hot families: exactly one). */
function oneHot(m: Map<string, number>, family: string, peer: string): string[] {
  const out: string[] = [];
  for (const [k, v] of m) {
    const r = new RegExp(`^${family}\\{peer="${peer}",\\w+="([^"]+)"\\}$`).exec(k);
    if (r && v === 1) out.push(r[1]!);
  }
  return out;
}

async function scrape(base: string, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const r = await get(`${base}/metrics`, headers);
  if (r.status !== 200) throw new Error(`/metrics: ${r.status}`);
  return parse(r.text);
}

test('metrics: counters move after packets (packets, bytes, drops by reason, flows, device)', async (t) => {
  const s = await start(t);
  const r0 = await get(`${s.base}/metrics`);
  t.is(r0.status, 200);
  t.regex(r0.type, /^text\/plain; version=0\.0\.4/);
  const m0 = parse(r0.text);
  t.is(m0.get('tunlb_packets_in_total{source="tun"}'), 0);
  t.is(m0.get('tunlb_flows_active'), 0);
  t.is(m0.get('tunlb_drops_total{stage="packet",reason="truncated"}'), 0, 'every drop reason has a series before its first drop');
  t.is(m0.get('tunlb_drops_total{stage="forward",reason="port_not_served"}'), 0);
  t.false(m0.has('tunlb_drops_total{stage="packet",reason="ok"}'), 'ok is not a drop');
  t.is(m0.get('tunlb_info{balancer="lb1",cluster="metrics-test",incarnation="0"}'), 1);
  t.is(m0.get('tunlb_flows_capacity'), 1024);
  t.is(m0.get('tunlb_dataplane_batch_capacity'), 4);
  t.is(m0.get('tunlb_self_status{status="serving"}'), 1, 'a cluster of one serves');
  t.is(m0.get('tunlb_self_status{status="syncing"}'), 0, 'one series per status: the others 0');
  t.is(m0.get('tunlb_vip_backends{vip="web4"}'), 2);
  t.true(m0.has('process_cpu_user_seconds_total') && m0.has('nodejs_eventloop_lag_seconds'), 'default process metrics');
  t.false([...m0.keys()].some((k) => k.startsWith('tunlb_peer_state')), 'no peers in a cluster of one');

  // 10 new UDP flows, 3 answered by their backend, 1 truncated, 2 to a port the VIP does not serve.
  const payload = new Uint8Array(20);
  for (let i = 0; i < 10; i++) s.dev.inject(P.udp4(CLIENT, VIP, 40000 + i, 53, payload));
  s.dev.inject(P.udp4(CLIENT, VIP, 1, 53, payload).slice(0, 9));
  for (let i = 0; i < 2; i++) s.dev.inject(P.udp4(CLIENT, VIP, 41000 + i, 22, payload));
  t.true(await until(() => s.dev.written.length >= 10), `${s.dev.written.length}/10 forwarded`);
  const out = s.dev.takeWritten();
  for (const w of out.slice(0, 3)) {
    const L = P.layout(w.packet);
    const be = `${w.packet[L.dstOff]}.${w.packet[L.dstOff + 1]}.${w.packet[L.dstOff + 2]}.${w.packet[L.dstOff + 3]}`;
    const cport = (w.packet[L.l4Off]! << 8) | w.packet[L.l4Off + 1]!;
    s.dev.inject(P.udp4(be, CLIENT, 53, cport, payload));
  }
  t.true(await until(() => s.dev.written.length >= 3));

  const m1 = await scrape(s.base);
  const udpLen = P.udp4(CLIENT, VIP, 1, 53, payload).length;
  t.is(m1.get('tunlb_packets_in_total{source="tun"}'), 16);
  t.is(m1.get('tunlb_packets_in_total{source="peer"}'), 0);
  t.is(m1.get('tunlb_packets_out_total{dest="backend"}'), 10);
  t.is(m1.get('tunlb_packets_out_total{dest="client"}'), 3);
  t.is(m1.get('tunlb_packets_out_total{dest="peer"}'), 0);
  t.is(m1.get('tunlb_bytes_in_total'), 15 * udpLen + 9);
  t.is(m1.get('tunlb_bytes_out_total'), 13 * udpLen);
  t.is(m1.get('tunlb_drops_total{stage="packet",reason="truncated"}'), 1);
  t.is(m1.get('tunlb_drops_total{stage="forward",reason="port_not_served"}'), 2);
  t.is(m1.get('tunlb_flows_active'), 10);
  t.is(m1.get('tunlb_flows_created_total'), 10);
  t.is(m1.get('tunlb_flows_expired_total'), 0);
  t.is(m1.get('tunlb_device_packets_total{op="read"}'), 16);
  t.is(m1.get('tunlb_device_packets_total{op="write"}'), 13);
  t.is(m1.get('tunlb_failover_packets_total'), 0);
  t.is(m1.get('tunlb_records_received_total'), 0, 'replication series exist (zero) without a cluster');

  // Counters only go up between scrapes.
  const m2 = await scrape(s.base);
  for (const [k, v] of m1) if (k.startsWith('tunlb_') && k.includes('_total')) t.true((m2.get(k) ?? -1) >= v, k);
});

test('metrics: every tunlb_* metric the endpoint exposes is documented in docs/operations.md "Metrics", and nothing documented is missing', async (t) => {
  const s = await start(t);
  const text = (await get(`${s.base}/metrics`)).text;
  const exposed = new Set([...text.matchAll(/^# HELP (tunlb_[a-z0-9_]+) /gm)].map((m) => m[1]!));
  t.true(exposed.size > 40, `${exposed.size} metrics`);
  const doc = readFileSync(join(__dirname, '..', '..', 'docs', 'operations.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Metrics'), doc.indexOf('\n## ', doc.indexOf('## Metrics') + 3));
  const documented = new Set([...section.matchAll(/`(tunlb_[a-z0-9_]+)`/g)].map((m) => m[1]!));
  t.deepEqual([...exposed].filter((n) => !documented.has(n)), [], 'exposed but not documented');
  // Peer metrics exist only with peers (tested below); everything else must be exposed here.
  t.deepEqual([...documented].filter((n) => !exposed.has(n) && !n.startsWith('tunlb_peer_')), [], 'documented but not exposed');
});

test('admin: /api/v1/status, /api/v1/events, /api/v1/history, /api/v1/stats `at`, and the status page', async (t) => {
  const s = await start(t);
  for (let i = 0; i < 4; i++) s.dev.inject(P.udp4(CLIENT, VIP, 42000 + i, 53, new Uint8Array(8)));
  t.true(await until(() => s.dev.written.length >= 4));

  const st = JSON.parse((await get(`${s.base}/api/v1/status`)).text);
  t.is(st.cluster, 'metrics-test');
  t.is(st.self.id, 'lb1');
  t.is(st.self.status, 'serving');
  t.is(st.balancers.length, 1);
  t.like(st.balancers[0], { id: 'lb1', self: true, state: 'self', status: 'serving', live: true, flowsHeld: 4, flowsAsPrimary: 4, address: '10.99.2.11' });
  t.is(st.flows.active, 4);
  t.is(st.flows.total, 4);
  t.is(st.flows.decidedHere, 4);
  t.is(st.flows.learnt, 0);
  t.is(st.flows.byBackend['web4 10.99.3.21'] + st.flows.byBackend['web4 10.99.3.22'], 4);
  t.like(st.vips[0], { name: 'web4', address: VIP, method: 'nat', backends: ['10.99.3.21', '10.99.3.22'], announced: { announced: false, reason: 'announce.table not set' } });
  t.is(st.vips.length, 1);
  t.like(st.announce, { table: null, ready: true, holds: {} });
  t.true(st.events.some((e: { type: string }) => e.type === 'self_serving'), JSON.stringify(st.events));

  // Flows held and primary-of come from one scan: they agree even while the table moves (the
  // scan is reused for 2 s; the issue was "flows held 116" beside primary-of figures summing
  // to 1,456 when a burst's flows expired within that window).
  for (let i = 0; i < 3; i++) s.dev.inject(P.udp4(CLIENT, VIP, 43000 + i, 53, new Uint8Array(8)));
  t.true(await until(() => s.dev.written.length >= 7));
  const st2 = JSON.parse((await get(`${s.base}/api/v1/status`)).text);
  const sumPrimary = st2.balancers.reduce((n: number, x: { flowsAsPrimary: number }) => n + x.flowsAsPrimary, 0);
  t.is(st2.balancers[0].flowsHeld, sumPrimary, 'flows held = the sum of primary-of');
  t.is(st2.flows.total, sumPrimary);
  t.is(st2.flows.active, 7, 'flows.active is the table now');

  const ev = JSON.parse((await get(`${s.base}/api/v1/events?limit=5`)).text);
  t.true(Array.isArray(ev.events) && ev.events.length >= 1 && ev.events.length <= 5);
  t.like(ev.events[0], { type: 'self_serving', balancer: 'lb1', source: 'admin', severity: 'info' });
  t.regex(ev.events[0].at, /^\d{4}-\d\d-\d\dT/);

  const h = JSON.parse((await get(`${s.base}/api/v1/history`)).text);
  t.is(h.intervalS, 1);
  t.true(h.samples.length >= 1);
  t.true(typeof h.samples[0].rxPackets === 'number' && typeof h.samples[0].at === 'number');

  const stats = JSON.parse((await get(`${s.base}/api/v1/stats`)).text);
  t.true(Math.abs(stats.at - Date.now()) < 5000);
  t.is(stats.counters.rxPackets, 7);

  const page = await get(`${s.base}/`);
  t.is(page.status, 200);
  t.regex(page.type, /^text\/html/);
  t.is(page.text, statusPageHtml());
  t.regex(page.text, /<script>/);
  t.notRegex(page.text, /(src|href)="(https?:)?\/\//, 'nothing from another origin');
  t.regex(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
  // The inline script parses (a syntax error would leave the page blank).
  const script = /<script>([\s\S]*)<\/script>/.exec(page.text)![1]!;
  t.notThrows(() => new Function(script));

  t.is((await get(`${s.base}/api/v1/nope`)).status, 404);
  t.is((await fetch(`${s.base}/metrics`, { method: 'POST' })).status, 405);
});

test('admin: with admin.token_file, /api/* and /metrics need the bearer token; / and /healthz do not', async (t) => {
  const s = await start(t, { token: true });
  for (const p of ['/api/v1/stats', '/api/v1/status', '/api/v1/events', '/api/v1/flows', '/api/v1/history', '/metrics']) {
    const none = await get(`${s.base}${p}`);
    t.is(none.status, 401, p);
    t.is(none.headers.get('www-authenticate'), 'Bearer realm="tunlb"');
    t.is((await get(`${s.base}${p}`, { authorization: 'Bearer wrong' })).status, 401, `${p} wrong token`);
    t.is((await get(`${s.base}${p}`, { authorization: `Basic ${TOKEN}` })).status, 401, `${p} not bearer`);
    t.is((await get(`${s.base}${p}`, { authorization: `Bearer ${TOKEN}` })).status, 200, `${p} with token`);
  }
  t.is((await get(`${s.base}/`)).status, 200);
  t.is((await get(`${s.base}/healthz`)).status, 200);
  const m = await scrape(s.base, { authorization: `Bearer ${TOKEN}` });
  t.is(m.get('tunlb_flows_active'), 0);
});

test('admin: an empty, missing or world-readable token file, or --admin beyond loopback without a token, fails the start with one line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-metrics-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'cluster.key'), KEY, { mode: 0o600 });
  writeFileSync(join(dir, 'empty.token'), '  \n', { mode: 0o600 });
  writeFileSync(join(dir, 'open.token'), `${TOKEN}\n`);
  chmodSync(join(dir, 'open.token'), 0o644);
  const quiet = createLogger({ level: 'silent' });
  for (const [file, re] of [
    ['empty.token', /admin\.token_file: token file .*empty\.token is empty/],
    ['missing.token', /admin\.token_file: token file .*missing\.token does not exist/],
    ['open.token', /admin\.token_file: token file .*open\.token has mode 0644: readable by group and others/],
  ] as const) {
    const path = join(dir, `${file}.yaml`);
    writeFileSync(path, config(`, token_file: ${file}`));
    const dev = new FakeTunDevice();
    const e = await t.throwsAsync(Balancer.start({ configPath: path, id: 'lb1', device: dev, adminListen: '127.0.0.1:0', logger: quiet }));
    t.true(isTunlbError(e, ErrorCodes.CONFIG_INVALID), String(e));
    t.regex(e!.message, re);
    t.false(e!.message.includes('\n'));
    t.false(e!.message.includes(TOKEN), 'the token is never echoed');
  }
  // The --admin override is checked too (the config's admin.listen is loopback).
  const path = join(dir, 'plain.yaml');
  writeFileSync(path, config(''));
  const dev = new FakeTunDevice();
  const e = await t.throwsAsync(Balancer.start({ configPath: path, id: 'lb1', device: dev, adminListen: '0.0.0.0:0', logger: quiet }));
  t.true(isTunlbError(e, ErrorCodes.USAGE), String(e));
  t.regex(e!.message, /0\.0\.0\.0:0 \(--admin\) is not on a loopback address and admin\.token_file is not set: .*set admin\.token_file, or listen on 127\.0\.0\.1 or \[::1\]/);
  t.true(dev.closed, 'device released');
});

/**
 * A stub balancer of a three-balancer cluster (lb1 = self) over a real Membership driven by a
 * fake clock: peer metrics without sockets. `ack(peer, rttMs)` answers the peer's last probe.
 */
function peerCluster(): { m: Membership; stub: Balancer; clock: { now: number }; ack: (peer: number, rtt: number) => void } {
  const clock = { now: 1000 };
  const probes: Array<{ peer: number; body: ProbeBody }> = [];
  const m = new Membership({
    selfIndex: 0,
    ids: ['lb1', 'lb2', 'lb3'],
    intervalMs: 50,
    misses: 3,
    nowMs: () => clock.now,
    sendProbe: (peer, body) => probes.push({ peer, body }),
    sendAck: () => undefined,
    selfIncarnation: 7,
    initialStatus: 'serving',
  });
  m.setConfigHash(0x0123456789ab);
  const ack = (peer: number, rtt: number): void => {
    const p = [...probes].reverse().find((x) => x.peer === peer)!;
    clock.now += rtt;
    m.onProbeAck(peer, 100 + peer, { nonce: p.body.nonce, probeSentAtMs: p.body.sentAtMs, proberIncarnation: 7, status: 2 });
    clock.now -= rtt;
  };
  const st = new ForwarderStats();
  st.rxPackets = 1000;
  st.failoverPackets = 17;
  // Batch-size counters as the forwarder would keep them (bucket k: 2^k .. 2^(k+1)-1 packets).
  const log2 = new Float64Array(8);
  log2[0] = 10; // 10 batches of 1
  log2[5] = 20; // 20 batches of 32..63
  Object.assign(st, { batches: 30, batchSizeLog2: log2 });
  const rs = new ReplicatorStats();
  rs.recordsReceived = 50;
  rs.createsSent = 9;
  rs.rejectedByReason.bad_sender = 4;
  const stub = {
    selfId: 'lb1',
    selfIndex: 0,
    config: { cluster: { id: 'stub' }, tun: { batch: 64 }, balancers: [] },
    configHash: () => ({ value: 0x0123456789ab, hex: '0123456789ab' }),
    operatorEvents: { events: [], record: () => undefined },
    nowSec: () => 12,
    forwarder: { stats: st, services: new ServiceStats({ config: { vips: [] } } as never), forwarding: { generation: 3, config: { vips: [] } } },
    table: { size: 5, capacity: 64, expired: 1, refusedFull: 0, earlyDrops: 0, conflicts: 0 },
    device: { stats: { readPackets: 1000, readBytes: 64000, writePackets: 900, writeBytes: 60000, writeErrors: 2, writeAgain: 0, lastErrno: 0, readTruncated: 3 } },
    cluster: {
      incarnation: 7,
      membership: m,
      replicator: { stats: rs },
      channel: { stats: { sent: 11, received: 22 }, rejectCounts: () => ({ bad_mac: 2, address_mismatch: 1 }) },
      events: [],
      view: new ClusterView({ balancerCount: 3, selfIndex: 0, nowMs: () => 0 }),
      reloads: { stats: { requestsSent: 2, requestsReceived: 1 } },
      syncProgress: () => ({ state: 'syncing', peer: 'lb3', received: 300, total: 1000, ratePerS: 150, elapsedMs: 2000, cursor: 9000, sessions: 2, resumes: 1, lastError: 'lb2: closed', startedAt: null }),
    },
  } as unknown as Balancer;
  rs.syncSessions = 2;
  rs.syncResumes = 1;
  rs.syncSessionFailures['closed'] = 1;
  rs.syncStreamDrops['bad_mac'] = 3;
  return { m, stub, clock, ack };
}

test('metrics: peer state, status, live, RTT histogram (one observation per ack), failovers, rejects, batch sizes', async (t) => {
  const { m, stub, clock, ack } = peerCluster();
  const metrics = new Metrics(stub, { rttSampleMs: 0, nowMs: () => clock.now, defaultMetrics: false });
  t.teardown(() => metrics.close());
  const read = async (): Promise<Map<string, number>> => parse(await metrics.text());

  let x = await read();
  t.is(x.get('tunlb_bulk_sync_progress_records{kind="received"}'), 300);
  t.is(x.get('tunlb_bulk_sync_progress_records{kind="total"}'), 1000);
  t.is(x.get('tunlb_bulk_sync_sessions_total{kind="resumed"}'), 1);
  t.is(x.get('tunlb_bulk_sync_session_failures_total{cause="closed"}'), 1);
  t.is(x.get('tunlb_bulk_sync_stream_drops_total{reason="bad_mac"}'), 3);
  t.is(x.get('tunlb_bulk_sync_stream_drops_total{reason="not_a_peer"}'), 0, 'zeros included');
  t.is(x.get('tunlb_peer_state{peer="lb2",state="unknown"}'), 1, 'unknown before the first ack');
  t.is(x.get('tunlb_peer_state{peer="lb2",state="up"}'), 0);
  t.is(x.get('tunlb_peer_status{peer="lb2",status="unknown"}'), 1);
  t.false([...x.keys()].some((k) => k.startsWith('tunlb_peer_state{peer="lb1"')), 'self is not a peer');

  m.tick();
  ack(1, 0.2);
  ack(2, 3);
  metrics.sampleRtt();
  metrics.sampleRtt(); // the same ack again: not a new sample
  x = await read();
  t.is(x.get('tunlb_peer_state{peer="lb2",state="up"}'), 1);
  t.is(x.get('tunlb_peer_state{peer="lb2",state="unknown"}'), 0);
  t.is(x.get('tunlb_peer_status{peer="lb2",status="serving"}'), 1);
  t.deepEqual(oneHot(x, 'tunlb_peer_state', 'lb2'), ['up'], 'exactly one state series is 1');
  t.is(x.get('tunlb_peer_live{peer="lb2"}'), 1);
  t.is(x.get('tunlb_peer_probe_rtt_seconds_count{peer="lb2"}'), 1);
  t.is(x.get('tunlb_peer_probe_rtt_seconds_bucket{le="0.00025",peer="lb2"}'), 1, '0.2 ms');
  t.is(x.get('tunlb_peer_probe_rtt_seconds_bucket{le="0.0025",peer="lb3"}'), 0, '3 ms is above 2.5 ms');
  t.is(x.get('tunlb_peer_probe_rtt_seconds_bucket{le="0.005",peer="lb3"}'), 1);
  t.is(x.get('tunlb_peer_rtt_smoothed_seconds{peer="lb3"}'), 0.003);
  // Config version: ours as an info series; a peer that reports another hash in a probe is a mismatch.
  t.is(x.get('tunlb_config_info{hash="0123456789ab"}'), 1);
  t.is(x.get('tunlb_peer_config_mismatch{peer="lb2"}'), 0, 'no hash reported yet: no mismatch');
  m.onProbe(1, 101, { nonce: 5, sentAtMs: 1, target: 0, status: 2, configHash: 0xfedcba987654 });
  m.onProbe(2, 102, { nonce: 6, sentAtMs: 1, target: 0, status: 2, configHash: 0x0123456789ab });
  x = await read();
  t.is(x.get('tunlb_peer_config_mismatch{peer="lb2"}'), 1, 'lb2 runs another config');
  t.is(x.get('tunlb_peer_config_mismatch{peer="lb3"}'), 0, 'lb3 runs ours');
  t.is(x.get('tunlb_cluster_messages_dropped_total{reason="bad_status"}'), 0, 'zeros included');
  t.is(x.get('tunlb_cluster_reload_requests_total{direction="sent"}'), 2);
  m.onProbe(1, 101, { nonce: 7, sentAtMs: 1, target: 0, status: 2, configHash: 0x0123456789ab });
  x = await read();
  t.is(x.get('tunlb_peer_config_mismatch{peer="lb2"}'), 0, 'lb2 reloaded: match again');

  // lb2 keeps answering, lb3 goes silent: suspect, then dead (a failover).
  for (let i = 0; i < 2; i++) {
    clock.now += 50;
    m.tick();
    ack(1, 0.4);
    metrics.sampleRtt();
  }
  x = await read();
  t.is(x.get('tunlb_peer_state{peer="lb3",state="suspect"}'), 1, 'suspect');
  t.is(x.get('tunlb_peer_status{peer="lb3",status="serving"}'), 1, 'a suspect peer still has its status');
  t.is(x.get('tunlb_peer_live{peer="lb3"}'), 1, 'a suspect peer is still live');
  for (let i = 0; i < 3; i++) {
    clock.now += 50;
    m.tick();
    ack(1, 0.4);
    metrics.sampleRtt();
  }
  x = await read();
  t.is(x.get('tunlb_peer_state{peer="lb3",state="dead"}'), 1, 'dead');
  t.deepEqual(oneHot(x, 'tunlb_peer_state', 'lb3'), ['dead']);
  t.is(x.get('tunlb_peer_status{peer="lb3",status="serving"}'), 0, 'a dead peer is never serving');
  t.deepEqual(oneHot(x, 'tunlb_peer_status', 'lb3'), ['unknown']);
  t.is(x.get('tunlb_peer_live{peer="lb3"}'), 0);
  t.is(x.get('tunlb_peer_state{peer="lb2",state="up"}'), 1);
  t.is(x.get('tunlb_peer_probe_rtt_seconds_count{peer="lb2"}'), 6, 'one observation per ack');
  t.is(x.get('tunlb_peer_probe_rtt_seconds_count{peer="lb3"}'), 1);
  t.is(x.get('tunlb_failovers_total'), 1);
  t.is(x.get('tunlb_failover_packets_total'), 17);
  t.is(x.get('tunlb_probes_sent_total'), 12);
  t.is(x.get('tunlb_info{balancer="lb1",cluster="stub",incarnation="7"}'), 1);

  t.is(x.get('tunlb_records_received_total'), 50);
  t.is(x.get('tunlb_records_sent_total{op="create"}'), 9);
  t.is(x.get('tunlb_records_rejected_total{reason="bad_sender"}'), 4);
  t.is(x.get('tunlb_records_rejected_total{reason="backend_gone"}'), 0);
  t.is(x.get('tunlb_control_rejected_total{reason="bad_mac"}'), 2);
  t.is(x.get('tunlb_control_rejected_total{reason="replayed"}'), 0);
  t.is(x.get('tunlb_control_rejected_total{reason="address_mismatch"}'), 1);
  t.is(x.get('tunlb_control_datagrams_total{direction="received"}'), 22);
  t.is(x.get('tunlb_device_write_errors_total'), 2);
  t.is(x.get('tunlb_device_read_truncated_total'), 3);
  t.is(x.get('tunlb_forwarding_generation'), 3);

  t.is(x.get('tunlb_dataplane_batch_size_count'), 30);
  t.is(x.get('tunlb_dataplane_batch_size_sum'), 1000);
  t.is(x.get('tunlb_dataplane_batch_size_bucket{le="1"}'), 10);
  t.is(x.get('tunlb_dataplane_batch_size_bucket{le="31"}'), 10);
  t.is(x.get('tunlb_dataplane_batch_size_bucket{le="63"}'), 30);
  t.is(x.get('tunlb_dataplane_batch_size_bucket{le="+Inf"}'), 30);
  const text = await metrics.text();
  t.regex(text, /# TYPE tunlb_dataplane_batch_size histogram/);
  t.regex(text, /# TYPE tunlb_peer_state gauge/);
  t.regex(text, /# TYPE tunlb_failovers_total counter/);
});

promtoolTest('metrics: `promtool check metrics` passes on the whole scrape (peers up and dead, histograms, process and Node.js metrics)', async (t) => {
  // A balancer's own endpoint (cluster of one), with prom-client's default metrics.
  const s = await start(t);
  const r = await get(`${s.base}/metrics`);
  t.is(r.status, 200);
  const own = promtool(['check', 'metrics'], r.text);
  t.is(own.status, 0, `promtool check metrics on GET /metrics:\n${own.output}`);
  t.is(own.output, '', 'no lint findings');
  t.regex(r.text, /^nodejs_active_handles\{/m, "prom-client's per-type handle gauge stays");

  // A cluster of three seen from lb1: lb2 up with RTT samples, lb3 dead.
  const { m, stub, clock, ack } = peerCluster();
  const metrics = new Metrics(stub, { rttSampleMs: 0, nowMs: () => clock.now, defaultMetrics: true });
  t.teardown(() => metrics.close());
  m.tick();
  ack(1, 0.2);
  ack(2, 3);
  metrics.sampleRtt();
  for (let i = 0; i < 5; i++) {
    clock.now += 50;
    m.tick();
    ack(1, 0.4);
    metrics.sampleRtt();
  }
  const text = await metrics.text();
  t.regex(text, /^tunlb_peer_state\{peer="lb3",state="dead"\} 1$/m);
  const cluster = promtool(['check', 'metrics'], text);
  t.is(cluster.status, 0, `promtool check metrics on a cluster's scrape:\n${cluster.output}`);
  t.is(cluster.output, '');

  // The check itself catches what the scrape used to have: prom-client's defaults as they are.
  const raw = new Registry();
  collectDefaultMetrics({ register: raw });
  const bad = promtool(['check', 'metrics'], await raw.metrics());
  t.not(bad.status, 0, 'promtool rejects the unfiltered default metrics');
  t.regex(bad.output, /nodejs_active_handles_total non-counter metrics should not have "_total" suffix/);
});

test('metrics and GET /api/v1/vips: per-VIP and per-backend packets, bytes, connections (total, active) follow the packets; health detail series per backend', async (t) => {
  const s = await start(t);
  const m0 = await scrape(s.base);
  for (const be of ['10.99.3.21', '10.99.3.22']) {
    t.is(m0.get(`tunlb_backend_connections_total{vip="web4",backend="${be}"}`), 0, `${be}: a series before its first flow`);
    t.is(m0.get(`tunlb_backend_packets_total{vip="web4",backend="${be}",direction="in"}`), 0);
  }
  t.is(m0.get('tunlb_vip_packets_total{vip="web4",direction="out"}'), 0);

  // 12 UDP flows of 2 packets each; the first 5 forwarded packets get a reply.
  const payload = new Uint8Array(30);
  for (let i = 0; i < 12; i++) for (let k = 0; k < 2; k++) s.dev.inject(P.udp4(CLIENT, VIP, 42000 + i, 53, payload));
  t.true(await until(() => s.dev.written.length >= 24), `${s.dev.written.length}/24 forwarded`);
  const out = s.dev.takeWritten();
  const perBackend = new Map<string, { pkts: number; flows: Set<number>; replies: number }>();
  for (const [i, w] of out.entries()) {
    const L = P.layout(w.packet);
    const be = `${w.packet[L.dstOff]}.${w.packet[L.dstOff + 1]}.${w.packet[L.dstOff + 2]}.${w.packet[L.dstOff + 3]}`;
    const cport = (w.packet[L.l4Off]! << 8) | w.packet[L.l4Off + 1]!;
    const e = perBackend.get(be) ?? { pkts: 0, flows: new Set<number>(), replies: 0 };
    e.pkts++;
    e.flows.add(cport);
    if (i < 5) {
      e.replies++;
      s.dev.inject(P.udp4(be, CLIENT, 53, cport, payload));
    }
    perBackend.set(be, e);
  }
  t.true(await until(() => s.dev.written.length >= 5));
  const len = P.udp4(CLIENT, VIP, 1, 53, payload).length;

  // connections_active comes from a table scan cached for up to 2 s (the first scrape's).
  const poll = async (cond: () => Promise<boolean>, ms: number): Promise<boolean> => {
    for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) if (await cond()) return true;
    return false;
  };
  let m1 = await scrape(s.base);
  t.true(await poll(async () => (m1 = await scrape(s.base)).get('tunlb_vip_connections_active{vip="web4"}') === 12, 5000), 'the active count catches up within the 2 s cache');
  for (const [be, e] of perBackend) {
    const l = `vip="web4",backend="${be}"`;
    t.is(m1.get(`tunlb_backend_connections_total{${l}}`), e.flows.size, `${be} connections`);
    t.is(m1.get(`tunlb_backend_connections_active{${l}}`), e.flows.size, `${be} active`);
    t.is(m1.get(`tunlb_backend_packets_total{${l},direction="in"}`), e.pkts, `${be} packets in`);
    t.is(m1.get(`tunlb_backend_bytes_total{${l},direction="in"}`), e.pkts * len, `${be} bytes in`);
    t.is(m1.get(`tunlb_backend_packets_total{${l},direction="out"}`), e.replies, `${be} packets out`);
    t.is(m1.get(`tunlb_backend_bytes_total{${l},direction="out"}`), e.replies * len, `${be} bytes out`);
    t.is(m1.get(`tunlb_backend_down_seconds{${l}}`), 0, `${be} up`);
  }
  t.is(m1.get('tunlb_vip_connections_total{vip="web4"}'), 12);
  t.is(m1.get('tunlb_vip_connections_active{vip="web4"}'), 12);
  t.is(m1.get('tunlb_vip_packets_total{vip="web4",direction="in"}'), 24);
  t.is(m1.get('tunlb_vip_packets_total{vip="web4",direction="out"}'), 5);
  t.is(m1.get('tunlb_vip_bytes_total{vip="web4",direction="in"}'), 24 * len);
  t.false([...m1.keys()].some((k) => k.startsWith('tunlb_backend_check_ok')), 'no health check configured: no check series');

  // The API's rows are the same figures, plus rates once two samples exist.
  const api = JSON.parse((await get(`${s.base}/api/v1/vips`)).text) as import('../../src/control/service-view').ServicesBody;
  const web = api.vips.find((v) => v.name === 'web4')!;
  t.is(web.connections, 12);
  t.is(web.activeConnections, 12);
  t.is(web.inPackets, 24);
  t.is(web.outPackets, 5);
  t.is(web.affinity, 'none');
  for (const x of web.backends) t.is(x.inPackets, perBackend.get(x.address)?.pkts ?? 0, `${x.address} in the API`);
  t.true(
    await poll(async () => {
      const a = JSON.parse((await get(`${s.base}/api/v1/vips`)).text) as typeof api;
      return a.rateWindowS !== null && a.vips[0]!.rates !== null;
    }, 5000),
    'rates appear after two per-second samples',
  );
});
