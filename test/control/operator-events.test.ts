/**
 * Operator actions in the event history with their origin (src/control/operator-events.ts), the
 * cluster view endpoint and the cluster reload endpoint, on one Balancer (a cluster of one, a
 * FakeTunDevice; the admin API on an ephemeral localhost port, asked over HTTP as the CLI does).
 * The peers' side of the cluster messages is test/cluster/cluster-view.test.ts.
 */
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { startBalancer } from '../helpers/balancer-harness';
import { OperatorEvents, OPERATOR_EVENTS, apiOrigin } from '../../src/control/operator-events';
import type { ClusterBody } from '../../src/control/cluster-status';
import { formatCluster, formatClusterReload, clusterReloadExit } from '../../src/cli/cluster-text';

const KEY = Buffer.alloc(32, 0x5a);
const CONFIG = `
cluster: { id: ops-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-ops0 }
flow_table: { capacity: 1024 }
vips:
  - name: web4
    address: 10.99.0.10
    ports: [80]
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }]
log: { level: info }
`;

async function call(admin: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`http://${admin}${path}`, {
    method,
    headers: method === 'POST' ? { 'content-type': 'application/json' } : {},
    body: method === 'POST' ? JSON.stringify(body ?? {}) : undefined,
  });
  return { status: res.status, json: await res.json() };
}

interface Ev {
  type: string;
  source: string;
  origin?: string;
  reason: string;
  balancer: string;
}

test('operator actions through the admin API are events with source operator and origin "api <address>"', async (t) => {
  const s = await startBalancer(t, { config: CONFIG, tunName: 'tunlb-ops0', key: KEY });
  t.is((await call(s.admin, 'POST', '/api/v1/backends/drain', { vip: 'web4', address: '10.99.3.22' })).status, 200);
  t.is((await call(s.admin, 'POST', '/api/v1/backends/undrain', { vip: 'web4', address: '10.99.3.22' })).status, 200);
  t.is((await call(s.admin, 'POST', '/api/v1/reload')).status, 200);
  // A reload of a file changed to something invalid: refused, and in the history too.
  const good = readFileSync(s.path, 'utf8');
  writeFileSync(s.path, good.replace('ports: [80]', 'ports: [80000]'));
  t.is((await call(s.admin, 'POST', '/api/v1/reload')).status, 400);
  writeFileSync(s.path, good);
  t.is((await call(s.admin, 'POST', '/api/v1/self/drain')).status, 200);
  t.is((await call(s.admin, 'POST', '/api/v1/self/undrain')).status, 200);
  await new Promise((r) => setTimeout(r, 20));
  const ev = ((await call(s.admin, 'GET', '/api/v1/events?limit=500')).json.events as Ev[]).filter((e) => e.source === 'operator');
  t.deepEqual(
    ev.map((e) => [e.type, e.origin]),
    [
      ['backend_drain', 'api 127.0.0.1'],
      ['backend_undrain', 'api 127.0.0.1'],
      ['reload', 'api 127.0.0.1'],
      ['reload_refused', 'api 127.0.0.1'],
      ['drain_self', 'api 127.0.0.1'],
      ['undrain_self', 'api 127.0.0.1'],
    ],
  );
  t.is(ev[0]!.reason, 'web4 10.99.3.22 drained');
  t.regex(ev[2]!.reason, /^config [0-9a-f]{12}, generation 2: VIPs \+0\/-0, backends \+0\/-0\/~0, flows remapped 0/);
  t.regex(ev[3]!.reason, /^the running config [0-9a-f]{12} stays: /);
  t.true(ev.every((e) => e.balancer === 'lb1'));
  // `tunlb status` shows them (the same merged list, with origin).
  const st = (await call(s.admin, 'GET', '/api/v1/status')).json;
  t.true((st.events as Ev[]).some((e) => e.type === 'backend_drain' && e.origin === 'api 127.0.0.1'));
});

test('GET /api/v1/cluster: this balancer as one row with its config hash and figures; reload --cluster alone: one row', async (t) => {
  const s = await startBalancer(t, { config: CONFIG, tunName: 'tunlb-ops1', key: KEY });
  const hash = s.b.configHash().hex;
  t.regex(hash, /^[0-9a-f]{12}$/);
  await new Promise((r) => setTimeout(r, 1100)); // one sampler second: this balancer's summary exists
  const c = (await call(s.admin, 'GET', '/api/v1/cluster')).json as ClusterBody;
  t.is(c.configHash, hash);
  t.deepEqual(c.mismatches, []);
  t.is(c.balancers.length, 1);
  t.like(c.balancers[0], { id: 'lb1', self: true, state: 'self', status: 'serving', configHash: hash, configMismatch: false, flowsHeld: 0, reportAgeMs: 0 });
  t.regex(formatCluster(c), new RegExp(`^  lb1 +serving +${hash} +0 +0 +0 +0 +- +self +now$`, 'm'));
  // The file changes (a weight): reload --cluster reloads this balancer; the hash moves.
  writeFileSync(s.path, readFileSync(s.path, 'utf8').replace('{ address: 10.99.3.22 }', '{ address: 10.99.3.22, weight: 3 }'));
  const r = await call(s.admin, 'POST', '/api/v1/reload/cluster', { timeoutMs: 500 });
  t.is(r.status, 200);
  t.is(r.json.ok, true);
  t.is(r.json.balancers.length, 1);
  t.not(r.json.balancers[0].configHash, hash);
  t.is(r.json.balancers[0].configHash, s.b.configHash().hex);
  t.regex(formatClusterReload(r.json.balancers), /^lb1 {2}ok {8}config [0-9a-f]{12} {2}generation 2: VIPs \+0\/-0, backends \+0\/-0\/~1 \(web4 10\.99\.3\.22\)/);
  t.is(clusterReloadExit(r.json.balancers), 0);
  t.is((await call(s.admin, 'POST', '/api/v1/reload/cluster', { timeoutMs: 5 })).status, 400, 'timeoutMs out of range');
  const ev = ((await call(s.admin, 'GET', '/api/v1/events?limit=500')).json.events as Ev[]).filter((e) => e.source === 'operator');
  t.deepEqual(ev.map((e) => e.type), ['reload_cluster', 'reload']);
  // Metrics: the info series carries the new hash.
  const m = await (await fetch(`http://${s.admin}/metrics`)).text();
  t.true(m.includes(`tunlb_config_info{hash="${s.b.configHash().hex}"} 1`), 'tunlb_config_info');
});

test('cluster reload exit codes and lines: refused 2, no answer 1', (t) => {
  const rows = [
    { id: 'lb1', self: true, ok: true, configHash: '0123456789ab', detail: 'generation 2: ...', ms: 0 },
    { id: 'lb2', self: false, ok: null, configHash: '', detail: 'no answer within 10 s (peer dead)', ms: 10000 },
  ];
  t.is(clusterReloadExit(rows), 1);
  t.is(formatClusterReload(rows).split('\n')[1], 'lb2  no answer  no answer within 10 s (peer dead)');
  t.is(clusterReloadExit([...rows, { id: 'lb3', self: false, ok: false, configHash: 'ffffffffffff', detail: 'bad', ms: 3 }]), 2);
});

test('OperatorEvents: bounded ring; apiOrigin shows IPv4-mapped addresses as IPv4', (t) => {
  const o = new OperatorEvents('lb1');
  for (let i = 0; i < OPERATOR_EVENTS + 5; i++) o.record('reload', `n${i}`, 'peer lb2');
  t.is(o.events.length, OPERATOR_EVENTS);
  t.is(o.events[0]!.reason, 'n5');
  t.is(apiOrigin('::ffff:127.0.0.1'), 'api 127.0.0.1');
  t.is(apiOrigin('::1'), 'api ::1');
});
