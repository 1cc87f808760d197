/**
 * The namespace lab (scripts/lab.sh) with the in-kernel balancer (`--lb kernel`: nftables DNAT
 * in lb1, no tunlb process): the whole topology from the client to the three servers and back,
 * IPv4 and IPv6, plus idempotency of up/down. Needs root (network namespaces); skips otherwise.
 * Every probe is bounded in time; `down` always runs at the end (after.always).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '..');
const LAB = path.join(REPO, 'scripts', 'lab.sh');
const CLIENT_NS = 'tunlb-client';
const VIP4 = '10.99.0.10';
const VIP6 = 'fd99::10';
const SERVERS = ['srv1', 'srv2', 'srv3'];

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const SKIP_MSG = 'needs root (network namespaces): skipped; run as root: npx ava --config ava.native.config.cjs native-tests/lab.test.ts';
if (!isRoot) console.log(`native-tests/lab.test.ts: ${SKIP_MSG}`);
const serial = isRoot ? test.serial : test.serial.skip;
const title = (t: string): string => (isRoot ? t : `${t} [skipped: needs root]`);

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

async function sh(file: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  const t0 = process.hrtime.bigint();
  const seconds = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
  try {
    const { stdout, stderr } = await run(file, args, { timeout: timeoutMs, killSignal: 'SIGTERM', maxBuffer: 1 << 24 });
    return { code: 0, stdout, stderr, seconds: seconds() };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err), seconds: seconds() };
  }
}

const lab = (...args: string[]): Promise<RunResult> => sh('bash', [LAB, ...args]);

/** The lab's namespaces, from the one source of truth. */
async function labNamespaces(): Promise<string[]> {
  const r = await sh('bash', [
    '-c',
    `source ${JSON.stringify(path.join(REPO, 'scripts', 'lab-topology.sh'))}; ` +
      'for n in "$LAB_CLIENT" "$LAB_ROUTER" "${LAB_BALANCERS[@]}" "${LAB_SERVERS[@]}"; do echo "$LAB_NS_PREFIX$n"; done',
  ]);
  return r.stdout.split('\n').filter(Boolean);
}

async function existingNamespaces(): Promise<string[]> {
  const r = await sh('ip', ['netns', 'list']);
  return r.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter(Boolean);
}

/**
 * Runs in the client namespace (`node -e`): `count` HTTP requests, or UDP datagrams, each on a
 * new connection / new socket (so each is a new flow), each with a 2 s timeout; stops early once
 * every expected server has answered. Prints {"names": {"srv1": n, ...}, "errors": n}.
 */
const PROBE = `
const http = require('node:http'), dgram = require('node:dgram');
const [kind, host, count, ...want] = process.argv.slice(1);
const names = {}; let errors = 0;
const one = () => new Promise((resolve) => {
  const done = (name) => { if (name) names[name] = (names[name] || 0) + 1; else errors++; resolve(); };
  if (kind === 'http') {
    const req = http.get({ host, port: 80, path: '/', agent: false, timeout: 2000 }, (res) => {
      let body = ''; res.setEncoding('utf8'); res.on('data', (c) => (body += c));
      res.on('end', () => done(body.trim())); res.on('error', () => done(null));
    });
    req.on('timeout', () => req.destroy(new Error('timeout'))); req.on('error', () => done(null));
  } else {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => { s.close(); done(null); }, 2000);
    s.on('message', (m) => { clearTimeout(timer); s.close(); const t = String(m); done(t.endsWith(' hello') ? t.split(' ')[0] : 'BAD:' + t); });
    s.on('error', () => { clearTimeout(timer); s.close(); done(null); });
    s.send('hello', 5353, host);
  }
});
(async () => {
  for (let i = 0; i < Number(count); i++) {
    await one();
    if (want.every((w) => names[w])) break;
  }
  console.log(JSON.stringify({ names, errors }));
})();
`;

async function probe(kind: 'http' | 'udp', host: string, count = 60): Promise<{ names: Record<string, number>; errors: number }> {
  const r = await sh('ip', ['netns', 'exec', CLIENT_NS, 'node', '-e', PROBE, kind, host, String(count), ...SERVERS], 60_000);
  if (r.code !== 0) throw new Error(`probe ${kind} ${host} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as { names: Record<string, number>; errors: number };
}

async function serverPids(): Promise<string> {
  const r = await sh('bash', ['-c', 'cd /run/tunlb-lab/pids && for f in srv*.pid; do echo "$f $(cat "$f")"; done']);
  return r.stdout;
}

test.after.always('lab down', async (t) => {
  if (!isRoot) return;
  const r = await lab('down');
  t.log(`down (after.always): exit ${r.code} in ${r.seconds.toFixed(1)} s`);
});

serial(title('up --lb kernel builds the lab and the VIP answers'), async (t) => {
  await lab('down');
  const r = await lab('up', '--lb', 'kernel');
  t.log(`up --lb kernel: ${r.seconds.toFixed(1)} s`);
  t.is(r.code, 0, r.stderr);
  const ns = await existingNamespaces();
  for (const n of await labNamespaces()) t.true(ns.includes(n), `namespace ${n} missing`);
  const s = await lab('status');
  t.is(s.code, 0, s.stdout + s.stderr);
  t.regex(s.stdout, /VIP 10\.99\.0\.10: srv\d/);
});

serial(title('HTTP from the client to 10.99.0.10 reaches all three servers'), async (t) => {
  const { names, errors } = await probe('http', VIP4);
  t.log(names);
  t.is(errors, 0);
  t.deepEqual(Object.keys(names).sort(), SERVERS);
});

serial(title('HTTP from the client to [fd99::10] reaches all three servers'), async (t) => {
  const { names, errors } = await probe('http', VIP6);
  t.log(names);
  t.is(errors, 0);
  t.deepEqual(Object.keys(names).sort(), SERVERS);
});

serial(title('UDP echo through the VIP (IPv4 and IPv6) is answered by the servers'), async (t) => {
  for (const vip of [VIP4, VIP6]) {
    const { names, errors } = await probe('udp', vip, 30);
    t.log(vip, names);
    t.is(errors, 0);
    t.true(Object.keys(names).every((n) => SERVERS.includes(n)), JSON.stringify(names));
    t.true(Object.keys(names).length >= 2, `only ${JSON.stringify(names)} answered over ${vip}`);
  }
});

serial(title('ping to the VIP is answered (IPv4 and IPv6)'), async (t) => {
  const v4 = await sh('ip', ['netns', 'exec', CLIENT_NS, 'ping', '-n', '-c', '2', '-i', '0.2', '-W', '2', '-w', '5', VIP4], 15_000);
  t.is(v4.code, 0, v4.stdout + v4.stderr);
  t.regex(v4.stdout, / 0% packet loss/);
  const v6 = await sh('ip', ['netns', 'exec', CLIENT_NS, 'ping', '-6', '-n', '-c', '2', '-i', '0.2', '-W', '2', '-w', '5', VIP6], 15_000);
  t.is(v6.code, 0, v6.stdout + v6.stderr);
  t.regex(v6.stdout, / 0% packet loss/);
});

serial(title('up is idempotent: a second up keeps the running servers and the VIP answers'), async (t) => {
  const before = await serverPids();
  const r = await lab('up', '--lb', 'kernel');
  t.log(`second up --lb kernel: ${r.seconds.toFixed(1)} s`);
  t.is(r.code, 0, r.stderr);
  t.is(await serverPids(), before);
  const { names, errors } = await probe('http', VIP4, 30);
  t.is(errors, 0);
  t.true(Object.keys(names).length >= 1);
});

serial(title('down removes every lab namespace; down twice is fine'), async (t) => {
  const r1 = await lab('down');
  t.log(`down: ${r1.seconds.toFixed(1)} s`);
  t.is(r1.code, 0, r1.stderr);
  const left = await existingNamespaces();
  for (const n of await labNamespaces()) t.false(left.includes(n), `namespace ${n} still there`);
  const others = left.filter((n) => n.startsWith('tunlb-'));
  if (others.length) t.log(`other tunlb-* namespaces (not the lab's, left alone): ${others.join(' ')}`);
  const r2 = await lab('down');
  t.is(r2.code, 0, r2.stderr);
  const s = await lab('status');
  t.is(s.code, 3, 'status exits 3 when the lab is down');
  t.regex(s.stdout, /lab is down/);
});
