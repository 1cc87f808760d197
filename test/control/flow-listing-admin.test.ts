/**
 * `tunlb flows` end to end without root: a Balancer with a FakeTunDevice (as in
 * test/control/balancer.test.ts) holding real flows from its read loop, its admin endpoint
 * (GET /api/v1/flows with the filter parameters; 400 {error, code} for an unusable value),
 * and the CLI (src/cli/main.ts, run as a child process with tsx) against that endpoint:
 * the table, --json, and the one-line `[TUNLB_USAGE]` error with exit code 2.
 * The filters themselves are table-driven in test/control/flow-listing.test.ts.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import type { Balancer } from '../../src/control/balancer';
import type { FakeTunDevice } from '../helpers/fake-tun';
import * as P from '../helpers/packets';
import { CLIENT, CLIENT6, VIP, VIP6 } from '../helpers/fixtures';
import { startBalancer } from '../helpers/balancer-harness';

const REPO = resolve(__dirname, '..', '..');

const CONFIG = `
cluster: { id: flows-admin-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-ftest0, batch: 8 }
flow_table: { capacity: 1024, timeouts: { tcp_syn_s: 3600, udp_s: 3600 } }   # no flow expires during a slow run
vips:
  - name: web4
    address: ${VIP}
    ports: [80, 53]
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }]
  - name: web6
    address: "${VIP6}"
    backends: [{ address: "fd99:3::21" }]
log: { level: info }
`;
const TOKEN = 'tok-flows-5e1d';

interface Lab {
  b: Balancer;
  dev: FakeTunDevice;
  admin: string;
  dir: string;
}

/** One balancer (cluster of one) on a FakeTunDevice, admin on an ephemeral port; 12 flows. */
async function start(t: import('ava').ExecutionContext, opts: { token?: boolean } = {}): Promise<Lab> {
  const { b, dev, admin, dir } = await startBalancer(t, {
    config: `${CONFIG}admin: { listen: "127.0.0.1:9180"${opts.token ? ', token_file: admin.token' : ''} }\n`,
    tunName: 'tunlb-ftest0',
    key: Buffer.alloc(32, 0x3d),
    ...(opts.token ? { token: TOKEN } : {}),
    queueLimit: 1000,
    logLevel: 'info',
  });
  // 8 TCP (SYN only: tcp_syn_seen), 3 UDP, 1 IPv6 TCP.
  for (let i = 0; i < 8; i++) dev.inject(P.tcp4(CLIENT, VIP, 41000 + i, 80, P.TCP_SYN));
  for (let i = 0; i < 3; i++) dev.inject(P.udp4('10.99.1.3', VIP, 5300 + i, 53, new Uint8Array(8)));
  dev.inject(P.tcp6(CLIENT6, VIP6, 42000, 80, P.TCP_SYN));
  const deadline = Date.now() + 5000;
  while (b.table.size < 12 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.is(b.table.size, 12, 'twelve flows in the table');
  return { b, dev, admin, dir };
}

async function get(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.json() };
}

/** `tunlb ARGS` from the sources (tsx), bounded in time. */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const code = "require('./src/cli/main').main(['node', 'tunlb', ...process.argv.slice(1)])";
  return new Promise((done) => {
    execFile(process.execPath, ['--import', 'tsx', '-e', code, ...args], { cwd: REPO, timeout: 60_000, killSignal: 'SIGKILL', env: { ...process.env, TUNLB_ADMIN_TOKEN_FILE: '', ...env } }, (err, stdout, stderr) => {
      const e = err as { code?: number } | null;
      done({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

test('flows API: query parameters filter, counts reported, 400 {error, code} for unusable values', async (t) => {
  const { admin } = await start(t);
  const base = `http://${admin}/api/v1/flows`;
  const all = await get(base);
  t.is(all.status, 200);
  t.like(all.body, { total: 12, scanned: 12, matched: 12, truncated: false, limit: 1000, filters: {} });

  const udp = await get(`${base}?proto=udp&client=10.99.1.3`);
  t.is(udp.status, 200);
  t.is(udp.body.flows.length, 3);
  t.deepEqual(udp.body.filters, { client: '10.99.1.3', proto: 'udp' });
  for (const r of udp.body.flows) t.like(r, { vip: 'web4', stateName: 'udp', primary: 'lb1' });

  const v6 = await get(`${base}?vip=web6&backend=FD99:3:0::21&state=syn_seen`);
  t.is(v6.body.flows.length, 1);
  t.is(v6.body.flows[0].key, `tcp [${CLIENT6}]:42000 -> [${VIP6}]:80`);

  const lim = await get(`${base}?proto=tcp&limit=4`);
  t.like(lim.body, { total: 12, matched: 5, truncated: true, limit: 4 });
  t.is(lim.body.flows.length, 4);

  const none = await get(`${base}?min-age=3600`);
  t.like(none.body, { matched: 0, truncated: false, flows: [] });

  for (const [q, re] of [
    ['vip=web9', /no VIP "web9"/],
    ['backend=10.99.3.23', /10\.99\.3\.23 is not a backend of any VIP/],
    ['client=10.99.1.2:99999', /port 99999/],
    ['state=listen', /"listen" is not a flow state/],
    ['primary=lb2', /no balancer "lb2"/],
    ['max-idle=-1', /max-idle: "-1"/],
    ['colour=blue', /unknown parameter "colour"/],
  ] as const) {
    const r = await get(`${base}?${q}`);
    t.is(r.status, 400, q);
    t.is(r.body.code, 'TUNLB_USAGE', q);
    t.regex(r.body.error, re, q);
  }
});

test('tunlb flows (CLI): table, --json with filters, one-line [TUNLB_USAGE] error with exit 2', async (t) => {
  const { admin } = await start(t);
  const [table, json, bad, badLimit] = await Promise.all([
    cli(['flows', '--admin', admin, '--proto', 'tcp', '--vip', 'web4', '--limit', '3']),
    cli(['flows', '--admin', admin, '--client', `[${CLIENT6}]:42000`, '--json']),
    cli(['flows', '--admin', admin, '--backend', 'srv9']),
    cli(['flows', '--admin', admin, '--limit', 'lots']),
  ]);
  t.is(table.code, 0, table.stderr);
  const lines = table.stdout.trimEnd().split('\n');
  t.is(lines[0], `12 flow(s) in the table of ${admin}; scanned 4, more than 3 match (--vip web4 --proto tcp)`);
  t.regex(lines[1]!, /^KEY\s+VIP\s+PRIMARY\s+BACKUP\s+BACKEND\s+STATE\s+PACKETS\s+AGE_S\s+IDLE_S$/);
  t.is(lines.length, 6, table.stdout);
  for (const l of lines.slice(2, 5)) t.regex(l, /^tcp 10\.99\.1\.2:410\d\d -> 10\.99\.0\.10:80\s+web4\s+lb1\s+lb1\s+10\.99\.3\.2[12]\s+tcp_syn_seen\s+1\s+\d+\s+\d+$/);
  t.regex(lines[5]!, /^truncated: listing stopped at --limit 3; more flows match/);

  t.is(json.code, 0, json.stderr);
  const body = JSON.parse(json.stdout) as { flows: Array<{ key: string; backend: string }>; filters: Record<string, string>; truncated: boolean };
  t.deepEqual(body.filters, { client: `[${CLIENT6}]:42000` });
  t.deepEqual(body.flows.map((f) => [f.key, f.backend]), [[`tcp [${CLIENT6}]:42000 -> [${VIP6}]:80`, 'fd99:3::21']]);
  t.false(body.truncated);

  t.is(bad.code, 2);
  t.is(bad.stdout, '');
  // A usage error: its line, then the hint.
  t.is(bad.stderr, 'tunlb: flows filter backend: "srv9" is not an IPv4 or IPv6 address [TUNLB_USAGE]\nrun \'tunlb flows --help\' for its usage\n');
  t.is(badLimit.code, 2);
  t.is(badLimit.stderr, 'tunlb: flows limit: "lots" is not a whole number in 1..100000 [TUNLB_USAGE]\nrun \'tunlb flows --help\' for its usage\n');
});

test('tunlb flows/status (CLI) with an admin token: --token-file or $TUNLB_ADMIN_TOKEN_FILE; without it one [TUNLB_ADMIN] line', async (t) => {
  const { admin, dir } = await start(t, { token: true });
  const file = join(dir, 'admin.token');
  const [none, flag, env, status] = await Promise.all([
    cli(['flows', '--admin', admin]),
    cli(['flows', '--admin', admin, '--token-file', file, '--json']),
    cli(['flows', '--admin', admin, '--proto', 'udp', '--json'], { TUNLB_ADMIN_TOKEN_FILE: file }),
    cli(['status', '--admin', admin, '--token-file', file]),
  ]);
  t.is(none.code, 1);
  t.regex(none.stderr, /^tunlb: 127\.0\.0\.1:\d+\/api\/v1\/flows\?limit=100: bearer token required.* \(pass --token-file FILE or set TUNLB_ADMIN_TOKEN_FILE\) \[TUNLB_ADMIN\]\n$/);
  t.is(flag.code, 0, flag.stderr);
  t.is((JSON.parse(flag.stdout) as { total: number }).total, 12);
  t.is(env.code, 0, env.stderr);
  t.is((JSON.parse(env.stdout) as { flows: unknown[] }).flows.length, 3);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /^cluster flows-admin-test: seen from lb1 \(serving/);
});
