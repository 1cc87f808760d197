/**
 * `tunlb vips` and `tunlb backends --stats` as an operator runs them: the real CLI (from the
 * sources) against a balancer (FakeTunDevice) that served injected flows, and the formatters
 * over a body with the health-check detail (last check, latency, failures, change, time down).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { startBalancer, until } from '../helpers/balancer-harness';
import * as P from '../helpers/packets';
import { compact, duration, formatBackendStats, formatVips } from '../../src/cli/vips-text';
import type { ServicesBody } from '../../src/control/service-view';

const REPO = join(__dirname, '..', '..');
const CLI = join(REPO, 'test', 'helpers', 'tunlb-cli.ts');
const VIP = '10.99.0.10';
const CLIENT = '10.99.1.50';

function tunlb(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('cli: `tunlb vips --stats --rate` and `tunlb backends --stats` show what the balancer served, per VIP and per backend', async (t) => {
  const s = await startBalancer(t, {
    config: `
cluster: { id: vips-cli, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-vcli0, batch: 8 }
flow_table: { capacity: 1024 }
vips:
  - name: web4
    address: ${VIP}
    ports: [53]
    affinity: source/24
    backends:
      - { address: 10.99.3.21 }
      - { address: 10.99.3.22, weight: 2 }
admin: { listen: "127.0.0.1:9181" }
`,
    tunName: 'tunlb-vcli0',
    key: Buffer.alloc(32, 0x5c),
  });
  const payload = new Uint8Array(100);
  for (let i = 0; i < 7; i++) for (let k = 0; k < 3; k++) s.dev.inject(P.udp4(CLIENT, VIP, 43000 + i, 53, payload));
  t.true(await until(() => s.dev.written.length >= 21), `${s.dev.written.length}/21 forwarded`);
  const out = s.dev.takeWritten();
  const L = P.layout(out[0]!.packet);
  const be = `${out[0]!.packet[L.dstOff]}.${out[0]!.packet[L.dstOff + 1]}.${out[0]!.packet[L.dstOff + 2]}.${out[0]!.packet[L.dstOff + 3]}`;
  t.true(out.every((w) => w.packet.subarray(L.dstOff, L.dstOff + 4).join('.') === be), 'source affinity: one client, one backend');

  const vips = await tunlb(['vips', '--stats', '--rate', '--admin', s.admin]);
  t.is(vips.code, 0, vips.stderr);
  const rows = vips.stdout.split('\n');
  t.regex(rows[0]!, /^VIP \/ backend\s+address\s+method\s+weight\s+state\s+Conns\s+ActiveConn\s+InPkts\s+OutPkts\s+InBytes\s+OutBytes\s+CPS\s+InPPS/);
  const vipRow = rows.find((r) => r.startsWith('web4'))!;
  t.regex(vipRow, new RegExp(`^web4\\s+${VIP.replace(/\./g, '\\.')}\\s+nat source/24\\s+7\\s+\\d+\\s+21\\s+0\\s+${21 * P.udp4(CLIENT, VIP, 1, 53, payload).length}\\s+0`));
  const beRow = rows.find((r) => r.includes(`-> ${be}`))!;
  t.regex(beRow, /\s7\s+\d+\s+21\s+0\s/, `the backend row: ${beRow}`);
  const other = rows.find((r) => r.includes('-> 10.99.3.2') && !r.includes(be))!;
  t.regex(other, /\s0\s+0\s+0\s+0\s+0\s+0/, `the other backend served nothing: ${other}`);

  const bs = await tunlb(['backends', '--stats', '--admin', s.admin]);
  t.is(bs.code, 0, bs.stderr);
  t.regex(bs.stdout, /^VIP\s+BACKEND\s+STATE\s+Conns\s+ActiveConn\s+InPkts\s+OutPkts\s+InBytes\s+OutBytes\s+CHECK\s+LATENCY\s+FAILS\s+CHECKED\s+BY\s+CHANGED\s+DOWN\s+DOWN TOTAL$/m);
  t.regex(bs.stdout, new RegExp(`^web4\\s+${be.replace(/\./g, '\\.')}\\s+healthy\\s+7\\s`, 'm'));

  const json = JSON.parse((await tunlb(['vips', '--json', '--admin', s.admin])).stdout) as ServicesBody;
  t.is(json.vips[0]!.inPackets, 21);
  t.is(json.vips[0]!.affinity, 'source/24');
});

test('cli: the formatters: ipvsadm-style figures, rates not yet known, the health-check detail', (t) => {
  t.is(compact(99_999), '99999');
  t.is(compact(123_456), '123K');
  t.is(compact(12_345_678), '12.3M');
  t.is(compact(2.5), '2.5');
  t.is(duration(4.25), '4.3s');
  t.is(duration(185), '3m05s');
  t.is(duration(7800), '2h10m');
  const at = 1_700_000_000_000;
  const zero = { connections: 0, activeConnections: 0, inPackets: 0, outPackets: 0, inBytes: 0, outBytes: 0 };
  const body: ServicesBody = {
    at,
    rateWindowS: null,
    activeAt: at,
    vips: [{
      name: 'api', address: '10.99.0.11', method: 'dsr', affinity: 'none', ...zero, connections: 3, rates: null, removed: null,
      backends: [{
        address: '10.99.3.23', port: 8080, weight: 1, fileWeight: 1, maintenance: false, state: 'unhealthy', eligible: false, owner: 'lb2', ...zero, connections: 3, rates: null,
        checkOk: 0, checkLatencyMs: 1.234, checkFailures: 4, checkedBy: 'lb2', lastCheckAt: at - 1500, changedAt: at - 65_000, downForS: 65, downTotalS: 125, reason: 'health check failed',
      }],
    }],
  };
  const v = formatVips(body, { rate: true });
  t.regex(v, /^api\s+10\.99\.0\.11\s+dsr\s+3\s+0\s+-\s+-/m);
  t.regex(v, /^\s+-> 10\.99\.3\.23:8080\s+1\s+unhealthy\s+3\s+0/m);
  t.regex(v, /\(rates: not yet known/);
  const b = formatBackendStats(body);
  t.regex(b, /^api\s+10\.99\.3\.23:8080\s+unhealthy\s+3\s+0\s+0\s+0\s+0\s+0\s+failed\s+1\.23ms\s+4\s+1\.5s ago\s+lb2\s+1m05s ago\s+1m05s\s+2m05s$/m);
  t.is(formatVips({ ...body, vips: [] }), 'no VIPs');
  // A runtime weight shows the file's beside it; maintenance is marked apart from the state.
  const over: ServicesBody = { ...body, vips: [{ ...body.vips[0]!, backends: [{ ...body.vips[0]!.backends[0]!, weight: 4, state: 'healthy', maintenance: true }] }] };
  t.regex(formatVips(over), /^\s+-> 10\.99\.3\.23:8080\s+4 \(file 1\)\s+healthy\+maint\s+3\s+0/m);
  t.regex(formatBackendStats(over), /^api\s+10\.99\.3\.23:8080\s+healthy\+maint\s+3/m);
});
