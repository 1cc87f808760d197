/**
 * Issue 12 "Event loop budget": with 1M flows, no request holds the event loop long enough for
 * the peers to notice. One balancer (a cluster of one over a FakeTunDevice) with 1,000,000
 * synthetic flows (test/helpers/flow-fill.ts); during each request the loop's longest delay is
 * measured in the same process (test/helpers/loop-delay.ts):
 *   - GET /api/v1/flows?limit=100000, GET /api/v1/status (flow counts), and a POST
 *     /api/v1/reload that renumbers every record (backends reordered, one removed, a VIP added
 *     in front).
 * The bound is a fraction of the lab's probe budget (config/lab.yaml: interval_ms × misses =
 * 150 ms; a third of it, 50 ms, is the probe interval itself) and applies to the part of the
 * longest delay this process spent on the CPU (`busyMs`): on a loaded machine (a CPU hog, other
 * test files) the scheduler stretches wall-clock delays whatever the code does, so the
 * wall-clock figure is logged, not asserted. Before the work was cut into time slices the same
 * requests held the loop (all of it on the CPU) 285 ms, 62 ms and 107-793 ms
 * (bench/admin-loop-delay.bench.ts). This is a behaviour test, not a benchmark: the figures
 * are in the bench.
 */
import test from 'ava';
import { request } from 'node:http';
import { writeFileSync } from 'node:fs';
import { loadConfig } from '../../src/config';
import { startBalancer } from '../helpers/balancer-harness';
import { fillFlows } from '../helpers/flow-fill';
import { startLoopDelay, type LoopDelay } from '../helpers/loop-delay';

const FLOWS = 1_000_000;
const lab = loadConfig('config/lab.yaml', { readKeyFile: () => Buffer.alloc(32, 1) }).cluster.probe;
/** A third of the lab's probe budget (intervalMs × misses): the probe interval. */
const BOUND_MS = (lab.intervalMs * lab.misses) / 3;

const BACKENDS = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];

function yaml(backends: string[], extraVip: boolean): string {
  const extra = extraVip ? '\n  - { name: web9, address: 10.99.0.19, protocols: [tcp], ports: [80], backends: [{ address: 10.99.3.29 }] }' : '';
  return `
cluster: { id: budget-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-btest0 }
flow_table: { capacity: 1048576 }
vips:${extra}
  - name: web4
    address: 10.99.0.10
    protocols: [tcp, udp]
    ports: [80]
    backends:
${backends.map((b) => `      - { address: ${b} }`).join('\n')}
admin: { listen: "127.0.0.1:9180" }
log: { level: info }
`;
}

/** One request; the body is kept as bytes and parsed only after the window (parsing 18 MB would stall the loop itself). */
function call(admin: string, method: string, path: string): Promise<{ status: number; body: Buffer }> {
  const i = admin.lastIndexOf(':');
  const body = method === 'POST' ? '{}' : undefined;
  return new Promise((resolve, reject) => {
    const req = request(
      { host: admin.slice(0, i), port: Number(admin.slice(i + 1)), method, path, headers: body !== undefined ? { 'content-type': 'application/json' } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function measured(admin: string, method: string, path: string): Promise<{ status: number; body: Buffer; delay: LoopDelay }> {
  await new Promise((r) => setTimeout(r, 50)); // let the previous answer's sockets close
  const probe = startLoopDelay();
  const r = await call(admin, method, path);
  return { ...r, delay: probe.stop() };
}

test(`1M flows: a 100,000-flow listing, the flow counts and a renumbering reload hold the loop < ${BOUND_MS} ms of CPU (a third of the lab's probe budget)`, async (t) => {
  t.timeout(120_000);
  const s = await startBalancer(t, { config: yaml(BACKENDS, false), tunName: 'tunlb-btest0', key: Buffer.alloc(32, 0x5a), logLevel: 'info' });
  t.is(fillFlows(s.b, FLOWS), FLOWS);
  const report = (name: string, d: LoopDelay): void => {
    t.log(`${name}: longest loop delay ${d.maxMs.toFixed(1)} ms wall-clock, ${d.busyMs.toFixed(1)} ms of it on the CPU (bound ${BOUND_MS} ms)`);
    t.true(d.ticks > 0, `${name}: the probe timer ran`);
    t.true(d.busyMs < BOUND_MS, `${name}: the loop was held ${d.busyMs.toFixed(1)} ms on the CPU (bound ${BOUND_MS} ms)`);
  };

  const list = await measured(s.admin, 'GET', '/api/v1/flows?limit=100000');
  report('GET /api/v1/flows?limit=100000', list.delay);
  t.is(list.status, 200);
  const listing = JSON.parse(list.body.toString('utf8')) as { total: number; flows: { vip: string; backend: string }[]; truncated: boolean; limit: number };
  t.is(listing.flows.length, 100_000);
  t.true(listing.truncated);
  t.is(listing.total, FLOWS);
  t.true(listing.flows.every((f) => f.vip === 'web4' && BACKENDS.includes(f.backend)));

  const status = await measured(s.admin, 'GET', '/api/v1/status');
  report('GET /api/v1/status', status.delay);
  const st = JSON.parse(status.body.toString('utf8')) as { flows: { total: number; byBackend: Record<string, number> } };
  t.is(st.flows.total, FLOWS);
  t.is(st.flows.byBackend['web4 10.99.3.22'], Math.floor(FLOWS / 3));

  // Reload: web9 added in front (every VIP index moves), 10.99.3.23 removed, the others swapped.
  writeFileSync(s.path, yaml(['10.99.3.22', '10.99.3.21'], true));
  const reload = await measured(s.admin, 'POST', '/api/v1/reload');
  report('POST /api/v1/reload (1M records renumbered)', reload.delay);
  t.is(reload.status, 200, reload.body.toString('utf8'));
  const r = JSON.parse(reload.body.toString('utf8')) as { flows: { scanned: number; remapped: number; cut: number; removed: number } };
  t.deepEqual(r.flows, { scanned: FLOWS, remapped: FLOWS, cut: Math.floor(FLOWS / 3), removed: 0 });
  // The records kept their backends, by address, in the new numbering.
  const counts = (JSON.parse((await call(s.admin, 'GET', '/api/v1/status')).body.toString('utf8')) as typeof st).flows.byBackend;
  t.is(counts['web4 10.99.3.21'], Math.ceil(FLOWS / 3));
  t.is(counts['web4 10.99.3.22'], Math.floor(FLOWS / 3));
  t.is(s.b.table.remapping, false, 'the remap is over when the reload answers');
});
