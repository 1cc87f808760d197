/**
 * The event loop's longest delay while the admin endpoint serves whole-table requests with a
 * large flow table (issue 12 "Event loop budget"): one balancer (a cluster of one over an
 * in-memory TUN device), its table filled with N synthetic flows (test/helpers/flow-fill.ts),
 * then, one at a time, with the loop's longest delay measured around each
 * (test/helpers/loop-delay.ts: the wall-clock delay, and the part of it this process spent
 * on the CPU, which a loaded machine's scheduler does not inflate):
 *   - GET /api/v1/flows?limit=100000              the largest listing
 *   - GET /api/v1/status                           flows per primary/backup/backend (a scan)
 *   - POST /api/v1/reload, VIPs and backends reordered and a VIP added (every record remapped)
 *   - POST /api/v1/reload, one backend removed (its UDP flows moved, its TCP flows cut)
 * The HTTP client runs in this process but only counts the answer's bytes (no parse).
 *
 *   npx tsx bench/admin-loop-delay.bench.ts [FLOWS]     (default 1,000,000)
 *   npm run bench:micro -- admin-loop                   via the runner (exports run())
 *
 * Compare the figures with the cluster's probe budget: a peer is suspect after
 * interval_ms + interval_ms/4 of silence and dead after interval_ms × misses (lab: 62.5 ms and
 * 150 ms; defaults 125 ms and 300 ms). A stall of the loop is silence to the peers.
 */
import { request } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Balancer } from '../src/control/balancer';
import { createLogger } from '../src/logger';
import { FakeTunDevice } from '../test/helpers/fake-tun';
import { logSink } from '../test/helpers/balancer-harness';
import { fillFlows } from '../test/helpers/flow-fill';
import { startLoopDelay } from '../test/helpers/loop-delay';

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  target?: string;
}

const BACKENDS = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];

function yaml(backends: string[], extraVipFirst: boolean): string {
  const web4 = `
  - name: web4
    address: 10.99.0.10
    protocols: [tcp, udp]
    ports: [80, 53]
    backends:
${backends.map((b) => `      - { address: ${b} }`).join('\n')}`;
  const extra = `
  - name: web9
    address: 10.99.0.19
    protocols: [tcp]
    ports: [80]
    backends:
      - { address: 10.99.3.29 }`;
  return `
cluster: { id: bench, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-bench0 }
flow_table: { capacity: 1048576 }
vips:${extraVipFirst ? extra + web4 : web4}
admin: { listen: "127.0.0.1:9180" }
log: { level: info }
`;
}

/** One request; resolves with the status and the body's size once the answer is complete. */
function call(admin: string, method: string, path: string): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const [host, port] = [admin.slice(0, admin.lastIndexOf(':')), Number(admin.slice(admin.lastIndexOf(':') + 1))];
    const body = method === 'POST' ? '{}' : undefined;
    const req = request({ host, port, method, path, headers: body !== undefined ? { 'content-type': 'application/json', 'content-length': String(body.length) } : {} }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export async function run(flows = 1_000_000): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-bench-'));
  writeFileSync(join(dir, 'cluster.key'), Buffer.alloc(32, 0x5a), { mode: 0o600 });
  const path = join(dir, 'tunlb.yaml');
  writeFileSync(path, yaml(BACKENDS, false));
  const { logs, stream } = logSink();
  const b = await Balancer.start({
    configPath: path,
    id: 'lb1',
    device: new FakeTunDevice({ name: 'tunlb-bench0' }),
    adminListen: '127.0.0.1:0',
    logger: createLogger({ level: 'info', name: 'lb1', destination: stream }),
  });
  const admin = logs.map((l) => JSON.parse(l) as { event?: string; admin?: string }).find((e) => e.event === 'balancer_started')?.admin ?? '';
  const rows: BenchRow[] = [];
  try {
    const t0 = performance.now();
    const n = fillFlows(b, flows);
    process.stderr.write(`filled ${n} flows in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    const measure = async (name: string, method: string, p: string, before?: () => void): Promise<void> => {
      before?.();
      // Let the loop settle (the previous answer's sockets, GC) before the window opens.
      await new Promise((r) => setTimeout(r, 200));
      const probe = startLoopDelay();
      const s = performance.now();
      const r = await call(admin, method, p);
      const ms = performance.now() - s;
      const d = probe.stop();
      process.stderr.write(
        `${name}: HTTP ${r.status}, ${r.bytes} bytes in ${ms.toFixed(0)} ms; longest loop delay ${d.maxMs.toFixed(1)} ms (timer ${d.timerMs.toFixed(1)}, histogram ${d.histogramMs.toFixed(1)}), of it busy ${d.busyMs.toFixed(1)} ms\n`,
      );
      if (r.status !== 200) throw new Error(`${name}: HTTP ${r.status}`);
      rows.push({ name: `${name}: longest loop delay`, value: d.maxMs, unit: 'ms', target: '< 12.5 (lab slack)' });
      rows.push({ name: `${name}: longest busy stretch`, value: d.busyMs, unit: 'ms', target: '< 12.5 (lab slack)' });
      rows.push({ name: `${name}: request time`, value: ms, unit: 'ms' });
    };
    await measure(`GET flows?limit=100000 (${n} flows)`, 'GET', '/api/v1/flows?limit=100000');
    await measure(`GET status (${n} flows)`, 'GET', '/api/v1/status');
    await measure(`reload, all remapped (${n} flows)`, 'POST', '/api/v1/reload', () => writeFileSync(path, yaml([...BACKENDS].reverse(), true)));
    await measure(`reload, a backend removed (${b.table.size} flows)`, 'POST', '/api/v1/reload', () => writeFileSync(path, yaml(BACKENDS.slice(0, 2), true)));
  } finally {
    await b.stop('bench');
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

if (require.main === module) {
  const n = Number(process.argv[2] ?? 1_000_000);
  run(n)
    .then((rows) => {
      for (const r of rows) console.log(`${r.name.padEnd(60)} ${r.value.toFixed(1).padStart(9)} ${r.unit}`);
    })
    .catch((e: unknown) => {
      console.error(e);
      process.exit(1);
    });
}
