/**
 * Runtime weight and maintenance through one balancer's admin endpoint (Balancer.start over a
 * FakeTunDevice, no root): POST /api/v1/backends/weight and /maintenance change the forwarding
 * table the new flows follow while existing flows keep their backend; GET /api/v1/backends
 * shows the difference from the file; /api/v1/events names the origin (`api ADDRESS:PORT`);
 * /metrics exports the weight in force and maintenance; bad requests get 400 with the reason;
 * a reload returns everything to the file's values.
 */
import test from 'ava';
import { BACKEND_ELIGIBLE } from '../../src/decision/forwarding-table';
import { VIP } from '../helpers/fixtures';
import { startBalancer, udpFlows, until as untilShared, type StartedBalancer } from '../helpers/balancer-harness';

const KEY = Buffer.alloc(32, 0x4e);
const CONFIG = `
cluster: { id: override-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-ov0, batch: 64 }
flow_table: { capacity: 16384, timeouts: { udp_s: 300 } }
vips:
  - name: web4
    address: ${VIP}
    protocols: [udp]
    ports: [53]
    backends:
      - { address: 10.99.3.21 }
      - { address: 10.99.3.22 }
      - { address: 10.99.3.23, port: 5353 }
admin: { listen: "127.0.0.1:9180" }
log: { level: info }
`;

async function call(url: string, method = 'GET', body?: unknown): Promise<{ status: number; body: any; text: string }> {
  const res = await fetch(url, {
    method,
    headers: body !== undefined ? { 'content-type': 'application/json' } : undefined,
    body: body !== undefined ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(3000),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* /metrics */
  }
  return { status: res.status, body: json, text };
}

const until = (cond: () => boolean, ms = 5000): Promise<boolean> => untilShared(cond, ms);
const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);


const count = (m: Map<number, string>, be: string): number => [...m.values()].filter((x) => x === be).length;

test('weight and maintenance over the admin API: new flows follow, existing flows stay, shown as a difference from the file, events with origin, metrics; reload clears', async (t) => {
  const s = await start(t);
  const api = `http://${s.admin}/api/v1`;

  // --- bad requests: 400 with the reason, nothing changes ---
  const bad: Array<[string, unknown, number, RegExp]> = [
    ['weight', { vip: 'web4', address: '10.99.3.21', weight: 65536 }, 400, /weight must be an integer 0\.\.65535/],
    ['weight', { vip: 'web4', address: '10.99.3.21', weight: -2 }, 400, /weight must be an integer 0\.\.65535/],
    ['weight', { vip: 'nope', address: '10.99.3.21', weight: 2 }, 400, /no VIP "nope" \(VIPs: web4\)/],
    ['weight', { vip: 'web4', address: '10.99.3.99', weight: 2 }, 400, /no backend 10\.99\.3\.99 in VIP web4/],
    ['weight', { vip: 'web4', address: '10.99.3.23:80', weight: 2 }, 400, /backend 10\.99\.3\.23 of VIP web4 has port 5353, not 80/],
    ['weight', { vip: 'web4', address: '10.99.3.21' }, 400, /expected a JSON body/],
    ['maintenance', { vip: 'web4', address: '10.99.3.21', maintenance: 'yes' }, 400, /maintenance must be true or false/],
  ];
  for (const [what, body, status, re] of bad) {
    const r = await call(`${api}/backends/${what}`, 'POST', body);
    t.is(r.status, status, JSON.stringify(body));
    t.regex(r.body.error, re);
  }
  t.is((await call(`${api}/backends/weight`)).status, 405, 'GET is refused');

  const before = await udpFlows(t, s, range(10000, 300));
  const on21 = [...before].filter(([, be]) => be === '10.99.3.21').map(([p]) => p);
  t.true(on21.length > 50, `flows on 10.99.3.21 before: ${on21.length}`);

  // --- weight 0 on .21: no new flows; its flows stay ---
  const w = await call(`${api}/backends/weight`, 'POST', { vip: 'web4', address: '10.99.3.21', weight: 0 });
  t.is(w.status, 200);
  t.true(w.body.changed);
  t.like(w.body.event, { type: 'backend_weight', weight: 0, fileWeight: 1, by: 'lb1' });
  t.regex(w.body.event.origin, /^api 127\.0\.0\.1$/);
  t.true(await until(() => (s.b.forwarder.forwarding.backendUp[0]![0]! & BACKEND_ELIGIBLE) === 0), 'table rebuilt with weight 0');
  const fresh = await udpFlows(t, s, range(20000, 1500));
  t.is(count(fresh, '10.99.3.21'), 0, 'no new flow on weight 0');
  const again = await udpFlows(t, s, on21);
  for (const p of on21) t.is(again.get(p), '10.99.3.21', `existing flow ${p} keeps its backend`);

  // --- weight 6 on .22: shares 6:1 over .22/.23 ---
  t.is((await call(`${api}/backends/weight`, 'POST', { vip: 'web4', address: '10.99.3.22', weight: '6' })).status, 200);
  t.true(await until(() => s.b.forwarder.forwarding.backendTables[0]!.backends[1]!.weight === 6));
  const six = await udpFlows(t, s, range(30000, 2100));
  const share = count(six, '10.99.3.22') / 2100;
  t.true(share > 0.8 && share < 0.92, `10.99.3.22 share at weight 6 against 1: ${share}`);

  // --- maintenance on .23: no new flows, health still shown ---
  const m = await call(`${api}/backends/maintenance`, 'POST', { vip: 'web4', address: '10.99.3.23:5353', maintenance: true });
  t.is(m.status, 200);
  t.like(m.body.event, { type: 'backend_maintenance', maintenance: true });
  t.true(await until(() => (s.b.forwarder.forwarding.backendUp[0]![2]! & BACKEND_ELIGIBLE) === 0));
  const maint = await udpFlows(t, s, range(40000, 600));
  t.deepEqual([count(maint, '10.99.3.21'), count(maint, '10.99.3.23')], [0, 0], 'only 10.99.3.22 takes new flows');

  const rows = (await call(`${api}/backends`)).body.backends as Array<Record<string, unknown>>;
  t.like(rows[0], { backend: '10.99.3.21', weight: 0, fileWeight: 1, weightOverride: 0, maintenance: false, overrideBy: 'lb1', state: 'healthy' });
  t.like(rows[1], { backend: '10.99.3.22', weight: 6, fileWeight: 1, weightOverride: 6 });
  t.like(rows[2], { backend: '10.99.3.23', weight: 1, weightOverride: null, maintenance: true, state: 'healthy', health: 'healthy', eligible: false, down: false });

  const metrics = (await call(`http://${s.admin}/metrics`)).text;
  t.regex(metrics, /tunlb_backend_weight\{vip="web4",backend="10\.99\.3\.22"\} 6/);
  t.regex(metrics, /tunlb_backend_file_weight\{vip="web4",backend="10\.99\.3\.22"\} 1/);
  t.regex(metrics, /tunlb_backend_maintenance\{vip="web4",backend="10\.99\.3\.23"\} 1/);
  t.regex(metrics, /tunlb_backend_maintenance\{vip="web4",backend="10\.99\.3\.21"\} 0/);

  const events = ((await call(`${api}/events`)).body.events as Array<{ type: string; origin?: string; reason: string }>).filter((e) => e.type.startsWith('backend_'));
  t.deepEqual(events.map((e) => e.type), ['backend_weight', 'backend_weight', 'backend_maintenance']);
  for (const e of events) t.regex(e.origin ?? '', /^api 127\.0\.0\.1$/);
  t.regex(events[0]!.reason, /^web4 10\.99\.3\.21: weight 0 \(file 1\), set on lb1$/);

  // --- reload (the file unchanged): every override returns to the file's values ---
  const r = await call(`${api}/reload`, 'POST', {});
  t.is(r.status, 200);
  t.deepEqual(r.body.overridesCleared, ['web4 10.99.3.21 weight', 'web4 10.99.3.22 weight', 'web4 10.99.3.23 maintenance']);
  t.true(await until(() => s.b.forwarder.forwarding.backendUp[0]!.every((u) => (u & BACKEND_ELIGIBLE) !== 0) && s.b.forwarder.forwarding.backendTables[0]!.backends.every((b) => b.weight === 1)));
  const after = (await call(`${api}/backends`)).body.backends as Array<Record<string, unknown>>;
  for (const x of after) t.like(x, { weight: 1, weightOverride: null, maintenance: false, overrideBy: null });
  const cleared = ((await call(`${api}/events`)).body.events as Array<{ type: string; origin?: string }>).filter((e) => e.type.startsWith('backend_')).slice(3);
  t.deepEqual(cleared.map((e) => `${e.type} ${e.origin}`), ['backend_weight reload on lb1 (api 127.0.0.1)', 'backend_weight reload on lb1 (api 127.0.0.1)', 'backend_maintenance reload on lb1 (api 127.0.0.1)']);
  const last = await udpFlows(t, s, range(50000, 900));
  for (const be of ['10.99.3.21', '10.99.3.22', '10.99.3.23']) t.true(count(last, be) > 200, `${be} after the reload: ${count(last, be)}`);
});

function start(t: import('ava').ExecutionContext): Promise<StartedBalancer> {
  return startBalancer(t, { config: CONFIG, tunName: 'tunlb-ov0', key: KEY, queueLimit: 20000 });
}
