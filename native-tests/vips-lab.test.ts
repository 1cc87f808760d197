/**
 * Per-VIP and per-backend statistics and source affinity in the three-balancer namespace lab
 * (issue 13 items 1 and 4), as an operator meets them: real traffic from tunlb-client, read with
 * `tunlb vips`, `tunlb backends --stats` and /metrics inside the balancers' namespaces.
 *
 * The lab (ECMP entry: the router spreads flows over the three balancers) runs config/lab.yaml
 * plus a VIP `iperf4` 10.99.0.11 (TUNLB_LAB_CONFIG, a temporary copy) forwarding TCP 5301 with
 * `affinity: source` to the lab's iperf3 servers (backend port 5201), so
 * `iperf3 -c 10.99.0.11 -p 5301` reaches them through the VIP. (A VIP of its own address: the
 * forwarder finds a VIP by address alone, so two VIPs on one address with disjoint ports, which
 * the config accepts, do not work yet: the second one's packets are dropped as port_not_served.)
 * The client gets a host route to 10.99.0.11 via the router (removed in after.always).
 *
 *   (1) 30 HTTP requests (curl, one connection each) to web4: summed over the balancers, web4's
 *       connections grow by exactly 30 and its backends' by as much together; packets in and out
 *       grow by at least 5 and 4 per connection (handshake, request, answer, close); active
 *       connections count the records (at least one per connection over the balancers); /metrics says the same and passes `promtool check metrics`.
 *   (2) iperf3 -P 4 (one control and four data connections) to 10.99.0.10:5301 completes and
 *       moves data (without affinity its connections spread over the servers and the test
 *       fails); every connection of it lands on one backend (the others count none, on every
 *       balancer); while it runs, `tunlb vips --rate` shows its bytes per second;
 *       `tunlb backends --stats` shows each backend's last check (ok, latency).
 *
 * Root only; skips with NEEDS_ROOT otherwise. Holds the lab session lock from `up` to `down`;
 * `down` always runs; every command is bounded in time; waits are bounded polls.
 * bin/tunlb runs dist/: build first (npm run build).
 * Run alone: flock /tmp/tunlb-native.lock npx ava --config ava.native.config.cjs native-tests/vips-lab.test.ts
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { hasRoot, nativeSuite } from './helpers/root';
import { REPO, execIn, holdLabSession, lab, labLogTail, poll, routerNexthops, run, staleBuild, type LabSession, type RunResult } from './helpers/lab';
import type { ServicesBody, VipServiceRow } from '../src/control/service-view';

const TUNLB = path.join(REPO, 'bin', 'tunlb');
const VIP4 = '10.99.0.10';
const IPERF_VIP = '10.99.0.11';
const ROUTER_FRONT4 = '10.99.1.1';
const IPERF_VIP_PORT = 5301;
const BALANCERS = ['lb1', 'lb2', 'lb3'] as const;
const BACKENDS4 = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];

const rootTest = nativeSuite('vips-lab');
let session: LabSession | undefined;
let upError: string | undefined;
let work: string | undefined;

type Yaml = Record<string, unknown>;

function tunlb(args: string[], lb = 'lb1', timeoutMs = 30_000): Promise<RunResult> {
  return execIn(lb, [process.execPath, TUNLB, ...args], { timeoutMs });
}

function show(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''} after ${r.seconds.toFixed(1)} s\nstdout: ${r.stdout.slice(0, 3000)}\nstderr: ${r.stderr.slice(0, 3000)}`;
}

async function vips(lb: string): Promise<ServicesBody> {
  const r = await tunlb(['vips', '--json'], lb);
  if (r.code !== 0) throw new Error(`tunlb vips --json in ${lb}: ${show(r)}`);
  return JSON.parse(r.stdout) as ServicesBody;
}

/** A VIP's row on every balancer. */
async function vipEverywhere(name: string, scans?: Record<string, number | null>): Promise<Record<string, VipServiceRow>> {
  const out: Record<string, VipServiceRow> = {};
  for (const lb of BALANCERS) {
    const body = await vips(lb);
    const v = body.vips.find((x) => x.name === name);
    if (v === undefined) throw new Error(`${lb}: no VIP ${name} in tunlb vips`);
    out[lb] = v;
    if (scans !== undefined) scans[lb] = body.activeAt;
  }
  return out;
}

const sum = (rows: Record<string, VipServiceRow>, f: (v: VipServiceRow) => number): number => BALANCERS.reduce((a, lb) => a + f(rows[lb]!), 0);

/** config/lab.yaml plus the iperf4 VIP (header). */
function labConfig(): string {
  const c = parseYaml(readFileSync(path.join(REPO, 'config', 'lab.yaml'), 'utf8')) as Yaml;
  const list = c['vips'] as Yaml[];
  list.splice(1, 0, {
    name: 'iperf4',
    address: IPERF_VIP,
    protocols: ['tcp'],
    ports: [IPERF_VIP_PORT],
    method: 'nat',
    affinity: 'source',
    backends: BACKENDS4.map((a) => ({ address: a, port: 5201, weight: 1, health: { type: 'tcp', port: 80 } })),
  });
  return stringifyYaml(c);
}

test.before(async () => {
  if (!hasRoot()) return;
  const distOld = staleBuild(['src/cli/main.ts', 'src/cli/vips-text.ts', 'src/control/admin-server.ts', 'src/control/service-view.ts', 'src/dataplane/forwarder.ts', 'src/decision/forwarding-table.ts']);
  if (distOld !== undefined) {
    upError = distOld;
    return;
  }
  work = mkdtempSync(path.join(tmpdir(), 'tunlb-vips-lab-'));
  const cfg = path.join(work, 'lab.yaml');
  writeFileSync(cfg, labConfig());
  session = await holdLabSession();
  await lab(['down'], 120_000);
  const up = await run('bash', [path.join(REPO, 'scripts', 'lab.sh'), 'up', '--entry', 'ecmp'], { timeoutMs: 240_000, env: { ...process.env, TUNLB_LAB_CONFIG: cfg } });
  if (up.code !== 0) {
    upError = `lab.sh up failed (${up.code}): ${up.stderr.slice(-3000)}\n${BALANCERS.map((b) => labLogTail(b, 15)).join('\n')}`;
    return;
  }
  const route = await execIn('client', ['ip', 'route', 'replace', `${IPERF_VIP}/32`, 'via', ROUTER_FRONT4], { timeoutMs: 5000 });
  if (route.code !== 0) {
    upError = `ip route replace ${IPERF_VIP}/32 in tunlb-client: ${route.stderr}`;
    return;
  }
  // Every balancer serving, its peers up, every backend healthy, iperf4 announced by all three.
  let last = '';
  const ready = await poll(async () => {
    const hops = await routerNexthops(IPERF_VIP);
    if (hops.length !== 3) return (last = `router nexthops of ${IPERF_VIP}: ${JSON.stringify(hops)}`), false;
    for (const lb of BALANCERS) {
      const r = await tunlb(['status', '--json'], lb, 15_000);
      if (r.code !== 0) return (last = `${lb}: status ${show(r)}`), false;
      const s = JSON.parse(r.stdout) as { self: { status: string }; balancers: Array<{ state: string; status: string }> };
      if (s.self.status !== 'serving' || s.balancers.some((b) => (b.state !== 'self' && b.state !== 'up') || b.status !== 'serving')) return (last = `${lb}: ${r.stdout.slice(0, 400)}`), false;
      const v = await vips(lb);
      const notUp = v.vips.flatMap((x) => x.backends.filter((b) => b.state !== 'healthy').map((b) => `${x.name} ${b.address} ${b.state}`));
      if (notUp.length > 0) return (last = `${lb}: not healthy: ${notUp.join(', ')}`), false;
    }
    return true;
  }, 90_000, 500);
  if (!ready) upError = `the balancers did not all serve with every backend healthy within 90 s (last: ${last})\n${BALANCERS.map((b) => labLogTail(b, 15)).join('\n')}`;
});

test.after.always(async () => {
  if (session !== undefined) {
    await execIn('client', ['ip', 'route', 'del', `${IPERF_VIP}/32`], { timeoutMs: 5000 });
    const down = await lab(['down'], 120_000);
    if (down.code !== 0) console.log(`vips-lab.test.ts: lab.sh down failed (${down.code}): ${down.stderr.slice(-2000)}`);
    session.release();
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

function labUp(t: ExecutionContext): boolean {
  if (upError !== undefined) {
    t.fail(upError);
    return false;
  }
  return true;
}

rootTest('(1) 30 HTTP connections to web4: connections, packets, bytes per VIP and per backend move by what the client did; /metrics agrees and passes promtool', async (t) => {
  if (!labUp(t)) return;
  const N = 30;
  const before = await vipEverywhere('web4');
  const r = await execIn('client', ['bash', '-c', `for i in $(seq ${N}); do curl -s -o /dev/null -w '%{http_code}\\n' -m 5 http://${VIP4}/; done`], { timeoutMs: 120_000 });
  const sentBy = Date.now();
  const codes = r.stdout.trim().split('\n');
  t.is(codes.filter((c) => c === '200').length, N, `every request answered 200: ${show(r)}`);
  t.log(`${N} requests in ${r.seconds.toFixed(2)} s`);

  // Active connections come from each balancer's flow-table scan (at most 2 s old, `activeAt`):
  // wait for scans taken after the last request (a scan from before it still shows the records
  // of earlier traffic); the closing records stay 10 s (tcp_closing_s), longer than the wait.
  let after = before;
  const scans: Record<string, number | null> = {};
  const conns = (rows: Record<string, VipServiceRow>): number => sum(rows, (v) => v.connections);
  const settled = await poll(async () => {
    after = await vipEverywhere('web4', scans);
    return conns(after) - conns(before) >= N && BALANCERS.every((lb) => (scans[lb] ?? 0) >= sentBy);
  }, 8_000, 250);
  t.true(settled, `web4's connections summed over the balancers grew by ${conns(after) - conns(before)} (want ${N}) and every balancer scanned its table after the requests (${JSON.stringify(scans)} vs ${sentBy})`);
  t.is(conns(after) - conns(before), N, 'one connection per request, counted once in the cluster');
  const beConns = (rows: Record<string, VipServiceRow>): number => sum(rows, (v) => v.backends.reduce((a, b) => a + b.connections, 0));
  t.is(beConns(after) - beConns(before), N, "the backends' connections add up to the VIP's");
  const inP = sum(after, (v) => v.inPackets) - sum(before, (v) => v.inPackets);
  const outP = sum(after, (v) => v.outPackets) - sum(before, (v) => v.outPackets);
  const inB = sum(after, (v) => v.inBytes) - sum(before, (v) => v.inBytes);
  const outB = sum(after, (v) => v.outBytes) - sum(before, (v) => v.outBytes);
  t.log(`web4 after ${N} HTTP requests (sum over lb1..lb3): connections +${conns(after) - conns(before)}, packets in +${inP} out +${outP}, bytes in +${inB} out +${outB}; active ${BALANCERS.map((lb) => `${lb} ${after[lb]!.activeConnections}`).join(', ')}`);
  t.true(inP >= 5 * N, `packets in ${inP} ≥ ${5 * N}`);
  t.true(outP >= 4 * N, `packets out ${outP} ≥ ${4 * N}`);
  t.true(inB >= inP * 40 && outB >= outP * 40, 'bytes at least the IP and TCP headers of the packets');
  // Records of short connections may stay where they were decided (below the replication
  // threshold) or be held by every balancer: over the three, at least one record per connection.
  t.true(sum(after, (v) => v.activeConnections) >= N, `the balancers hold the ${N} records while they close (${BALANCERS.map((lb) => `${lb} ${after[lb]!.activeConnections}`).join(', ')})`);

  // The same figures in /metrics (lb1), and promtool accepts the whole scrape.
  const m = await execIn('lb1', ['curl', '-sS', '-m', '10', 'http://127.0.0.1:9180/metrics'], { timeoutMs: 15_000 });
  t.is(m.code, 0, show(m));
  const now = (await vips('lb1')).vips.find((v) => v.name === 'web4')!;
  const got = Number(/^tunlb_vip_connections_total\{vip="web4"\} (\S+)$/m.exec(m.stdout)?.[1]);
  t.is(got, now.connections, 'tunlb_vip_connections_total{vip="web4"} = tunlb vips');
  for (const be of BACKENDS4) t.regex(m.stdout, new RegExp(`^tunlb_backend_packets_total\\{vip="web4",backend="${be.replace(/\./g, '\\.')}",direction="in"\\} \\d+$`, 'm'));
  t.regex(m.stdout, /^tunlb_backend_check_latency_seconds\{vip="iperf4",backend="10\.99\.3\.21"\} [0-9.e-]+$/m);
  const pt = await run('promtool', ['check', 'metrics'], { input: m.stdout, timeoutMs: 30_000 });
  t.is(pt.code, 0, `promtool check metrics: ${pt.stdout}${pt.stderr}`);
});

rootTest('(2) iperf3 -c VIP -p 5301 -P 4 (ECMP: connections reach different balancers) with affinity: source completes, all its connections on one backend; tunlb vips --rate shows its rate; backends --stats the checks', async (t) => {
  if (!labUp(t)) return;
  const before = await vipEverywhere('iperf4');
  const iperf = execIn('client', ['iperf3', '-c', IPERF_VIP, '-p', String(IPERF_VIP_PORT), '-P', '4', '-t', '4', '-J', '--connect-timeout', '3000'], { timeoutMs: 40_000 });
  let rateSeen = 0;
  let rateText = '';
  await poll(async () => {
    for (const lb of BALANCERS) {
      const v = (await vips(lb)).vips.find((x) => x.name === 'iperf4')!;
      const now = v.rates?.['inBytesPerS'] ?? 0;
      if (now > rateSeen) rateSeen = now;
      if (now > 1e6 && rateText === '') rateText = `${lb}:\n${(await tunlb(['vips', '--stats', '--rate'], lb)).stdout}`;
    }
    return rateText !== '';
  }, 15_000, 300);
  const r = await iperf;
  t.is(r.code, 0, `iperf3 through the VIP with affinity: ${show(r)}`);
  t.notRegex(r.stdout, /"error"/, `iperf3 reports no error: ${r.stdout.slice(-600)}`);
  let received = 0;
  try {
    const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bytes?: number; bits_per_second?: number } } };
    received = j.end?.sum_received?.bytes ?? 0;
    t.log(`iperf3 -P 4 via ${IPERF_VIP}:${IPERF_VIP_PORT}: ${received} bytes, ${((j.end?.sum_received?.bits_per_second ?? 0) / 1e6).toFixed(0)} Mbit/s`);
  } catch {
    t.fail(`iperf3 -J output is not JSON: ${r.stdout.slice(0, 500)}`);
  }
  t.true(received > 1e6, `data moved (${received} bytes)`);
  t.true(rateSeen > 1e6, `tunlb vips: iperf4's rate in reached ${rateSeen.toFixed(0)} B/s while iperf3 ran`);
  t.log(`tunlb vips --stats --rate (during iperf3) on ${rateText}`);

  let after = before;
  const per = (rows: Record<string, VipServiceRow>): number[] => BACKENDS4.map((_, i) => sum(rows, (v) => v.backends[i]!.connections));
  await poll(async () => {
    after = await vipEverywhere('iperf4');
    return per(after).reduce((a, n) => a + n, 0) - per(before).reduce((a, n) => a + n, 0) >= 5;
  }, 10_000, 250);
  const delta = per(after).map((n, i) => n - per(before)[i]!);
  t.log(`iperf4 connections per backend (sum over lb1..lb3): ${BACKENDS4.map((b, i) => `${b} +${delta[i]}`).join(', ')}`);
  t.is(delta.filter((n) => n > 0).length, 1, `one backend took every connection of the client: ${JSON.stringify(delta)}`);
  t.true(Math.max(...delta) >= 5, `control and 4 data connections: ${Math.max(...delta)}`);

  const bs = await tunlb(['backends', '--stats'], 'lb1');
  t.is(bs.code, 0, show(bs));
  t.log(`tunlb backends --stats (lb1):\n${bs.stdout}`);
  for (const be of BACKENDS4) t.regex(bs.stdout, new RegExp(`^iperf4\\s+${be.replace(/\./g, '\\.')}:5201\\s+healthy\\s.*\\sok\\s+[0-9.]+ms\\s+0\\s+[0-9.]+s ago\\s+lb\\d`, 'm'), `${be}: a passed check with its latency`);
});
