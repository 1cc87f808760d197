/**
 * Every `tunlb` subcommand against the three-balancer namespace lab (`scripts/lab.sh up`: lb1..lb3,
 * entry lb1), as an operator runs them: `bin/tunlb SUBCOMMAND` inside a balancer's namespace,
 * where its admin endpoint listens (127.0.0.1:9180, config/lab.yaml; no token in the lab).
 * Covered: --help of every subcommand, check-config, status, stats, flows (table, --json,
 * every filter, a refused filter), backends, drain/undrain (marks seen cluster-wide, new
 * connections avoid the drained backend), reload (unchanged config accepted; a broken one
 * refused and the running config kept; the file restored), status --cluster and reload --cluster
 * (one config hash everywhere; a reload on lb3 alone is a mismatch: row, event, metric; reload
 * --cluster brings every balancer to the file's hash; restored), capture (a pcap that `tcpdump -r`
 * reads, and --decode lines), and one-line `[TUNLB_...]` errors with a non-zero exit.
 * Assertions are on content, not only exit codes.
 *
 * Root only (network namespaces); every test skips with NEEDS_ROOT otherwise. The file holds the
 * lab session lock (/tmp/tunlb-lab-session.lock) from `up` to `down`; `down` always runs. Traffic
 * comes from scripts/traffic.ts and curl in tunlb-client; every command is bounded in time;
 * nothing is added to the root namespace (tcpdump -r only reads a file).
 * bin/tunlb runs dist/: build first (npm run build).
 * Run alone: flock /tmp/tunlb-lab-session.lock npx ava --config ava.native.config.cjs native-tests/cli-lab.test.ts
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { hasRoot, nativeSuite } from './helpers/root';
import { LAB_DIR, REPO, execIn, holdLabSession, lab, labLogTail, poll, run, staleBuild, type LabSession, type RunResult } from './helpers/lab';
import { startTraffic, type TrafficRun } from './helpers/traffic';
import type { FlowListing, FlowRow } from '../src/control/flow-listing';
import type { ClusterBody } from '../src/control/cluster-status';

const TUNLB = path.join(REPO, 'bin', 'tunlb');
const LAB_CONFIG = path.join(LAB_DIR, 'lab.yaml');
const VIP4 = '10.99.0.10';
const CLIENT4 = '10.99.1.2';
const BALANCERS = ['lb1', 'lb2', 'lb3'] as const;
const LBNET4: Record<string, string> = { lb1: '10.99.2.11', lb2: '10.99.2.12', lb3: '10.99.2.13' };
const BACKENDS4 = ['10.99.3.21', '10.99.3.22', '10.99.3.23'];
const BACKENDS6 = ['fd99:3::21', 'fd99:3::22', 'fd99:3::23'];
const SERVER_OF: Record<string, string> = { '10.99.3.21': 'srv1', '10.99.3.22': 'srv2', '10.99.3.23': 'srv3' };
/** The subcommands `tunlb --help` must list (a new one fails the --help test until covered here). */
const SUBCOMMANDS = ['run', 'check-config', 'stats', 'flows', 'status', 'backends', 'drain', 'undrain', 'weight', 'maintenance', 'drain-self', 'undrain-self', 'ready', 'reload', 'capture', 'logs', 'vips'];
/** One error line: `tunlb: MESSAGE [TUNLB_CODE]` (src/cli/main.ts). */
const ERROR_LINE = /^tunlb: \S.* \[TUNLB_[A-Z_]+\]$/;

const rootTest = nativeSuite('cli-lab');
let session: LabSession | undefined;
let upError: string | undefined;
let longlived: TrafficRun | undefined;
let work: string | undefined;

/** `bin/tunlb ARGS` inside balancer namespace `lb` (default lb1), bounded in time. */
function tunlb(args: string[], lb = 'lb1', timeoutMs = 30_000): Promise<RunResult> {
  return execIn(lb, [process.execPath, TUNLB, ...args], { timeoutMs });
}

function show(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''} after ${r.seconds.toFixed(1)} s\nstdout: ${r.stdout.slice(0, 3000)}\nstderr: ${r.stderr.slice(0, 3000)}`;
}

/** Runs `tunlb ARGS` and expects exit 0; returns stdout. */
async function ok(t: ExecutionContext, args: string[], lb = 'lb1', timeoutMs = 30_000): Promise<string> {
  const r = await tunlb(args, lb, timeoutMs);
  t.is(r.code, 0, `tunlb ${args.join(' ')} in ${lb}: ${show(r)}`);
  return r.stdout;
}

async function json<T>(t: ExecutionContext, args: string[], lb = 'lb1'): Promise<T> {
  const out = await ok(t, [...args, '--json'], lb);
  try {
    return JSON.parse(out) as T;
  } catch {
    t.fail(`tunlb ${args.join(' ')} --json in ${lb}: not one JSON document: ${out.slice(0, 500)}`);
    throw new Error('not JSON');
  }
}

/**
 * Expects a failure: non-zero exit, nothing on stdout, exactly one `tunlb: ... [CODE]` line (a
 * usage error, TUNLB_USAGE: that line and the hint naming the subcommand's --help).
 */
async function refused(t: ExecutionContext, args: string[], code: string, exit: number, lb = 'lb1'): Promise<string> {
  const r = await tunlb(args, lb);
  const lines = r.stderr.trimEnd().split('\n');
  t.is(r.code, exit, `tunlb ${args.join(' ')}: ${show(r)}`);
  t.is(r.stdout, '', `tunlb ${args.join(' ')}: nothing on stdout`);
  if (code === 'TUNLB_USAGE') t.is(lines.pop(), `run 'tunlb ${args[0]} --help' for its usage`, `tunlb ${args.join(' ')}: the hint`);
  t.is(lines.length, 1, `tunlb ${args.join(' ')}: one error line: ${r.stderr}`);
  t.regex(lines[0]!, ERROR_LINE);
  t.true(lines[0]!.endsWith(`[${code}]`), `${lines[0]} ends with [${code}]`);
  return lines[0]!;
}

interface BackendRow {
  vip: string;
  backend: string;
  state: string;
  health: string;
  drained: boolean;
  eligible: boolean;
}

test.before(async () => {
  if (!hasRoot()) return;
  const stale = staleBuild();
  if (stale !== undefined) console.log(`cli-lab.test.ts: WARNING: ${stale}`);
  // dist/ is what bin/tunlb and the lab run: it must hold the CLI and admin endpoint under test.
  const distOld = staleBuild(['src/cli/main.ts', 'src/control/admin-server.ts', 'src/control/flow-listing.ts']);
  if (distOld !== undefined) {
    upError = distOld;
    return;
  }
  session = await holdLabSession();
  console.log(`cli-lab.test.ts: lab session lock ${session.how}`);
  await lab(['down'], 120_000);
  const up = await lab(['up', '--entry', 'single'], 240_000);
  if (up.code !== 0) {
    upError = `lab.sh up failed (${up.code}): ${up.stderr.slice(-3000)}\n${BALANCERS.map((b) => labLogTail(b, 15)).join('\n')}`;
    return;
  }
  // Every balancer serving and seeing both peers up before any test runs.
  const ready = await poll(async () => {
    for (const lb of BALANCERS) {
      const r = await tunlb(['status', '--json'], lb, 15_000);
      if (r.code !== 0) return false;
      const s = JSON.parse(r.stdout) as { self: { status: string }; balancers: Array<{ state: string; status: string }> };
      if (s.self.status !== 'serving' || s.balancers.some((b) => (b.state !== 'self' && b.state !== 'up') || b.status !== 'serving')) return false;
    }
    return true;
  }, 60_000, 500);
  if (!ready) upError = `the three balancers did not all report the others up and serving within 60 s\n${BALANCERS.map((b) => labLogTail(b, 15)).join('\n')}`;
  work = mkdtempSync(path.join(tmpdir(), 'tunlb-cli-lab-'));
});

test.after.always(async () => {
  longlived?.kill();
  if (longlived) await longlived.done;
  if (session !== undefined) {
    const down = await lab(['down'], 120_000);
    if (down.code !== 0) console.log(`cli-lab.test.ts: lab.sh down failed (${down.code}): ${down.stderr.slice(-2000)}`);
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

rootTest('--help of tunlb and of every subcommand', async (t) => {
  const top = await run(process.execPath, [TUNLB, '--help'], { timeoutMs: 30_000 });
  t.is(top.code, 0, show(top));
  const listed = [...top.stdout.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
  t.deepEqual([...listed].sort(), [...SUBCOMMANDS].sort(), `tunlb --help lists: ${listed.join(', ')}`);
  const helps = await Promise.all(SUBCOMMANDS.map((c) => run(process.execPath, [TUNLB, c, '--help'], { timeoutMs: 30_000 })));
  SUBCOMMANDS.forEach((c, i) => {
    const r = helps[i]!;
    t.is(r.code, 0, `${c} --help: ${show(r)}`);
    t.regex(r.stdout, new RegExp(`^Usage: tunlb ${c}\\b`), `${c} --help usage line`);
    t.regex(r.stdout, /-h, --help/, `${c} --help lists --help`);
  });
  const flowsHelp = helps[SUBCOMMANDS.indexOf('flows')]!.stdout;
  for (const f of ['--vip', '--backend', '--client', '--proto', '--primary', '--backup', '--state', '--min-age', '--max-idle', '--limit', '--json']) t.true(flowsHelp.includes(f), `flows --help lists ${f}`);
  t.regex(flowsHelp, /tcp_established/, 'flows --help names the flow states');
});

rootTest('check-config: the running lab config is valid and described', async (t) => {
  if (!labUp(t)) return;
  const out = await ok(t, ['check-config', '--config', LAB_CONFIG]);
  t.regex(out, new RegExp(`^${LAB_CONFIG.replace(/[/.]/g, '\\$&')}: cluster "lab", 3 balancer\\(s\\), 2 VIP\\(s\\): valid$`, 'm'));
  t.regex(out, /^ {2}web4 10\.99\.0\.10 nat tcp\/udp\/icmp → 10\.99\.3\.21\(w1\) 10\.99\.3\.22\(w1\) 10\.99\.3\.23\(w1\)$/m);
  t.regex(out, /^ {2}web6 fd99::10 nat tcp\/udp\/icmp → fd99:3::21\(w1\) fd99:3::22\(w1\) fd99:3::23\(w1\)$/m);
  const cfg = JSON.parse(await ok(t, ['check-config', '--config', LAB_CONFIG, '--json'])) as { balancers: Array<{ id: string }> };
  t.deepEqual(cfg.balancers.map((b) => b.id), [...BALANCERS]);
  // A file that does not exist: one line, exit 2 (no admin endpoint needed).
  await refused(t, ['check-config', '--config', '/nonexistent/tunlb.yaml'], 'TUNLB_CONFIG_NOT_FOUND', 2);
});

rootTest('status: three balancers up and serving, seen from each of them', async (t) => {
  if (!labUp(t)) return;
  for (const lb of BALANCERS) {
    const out = await ok(t, ['status'], lb);
    t.regex(out, new RegExp(`^cluster lab: seen from ${lb} \\(serving, up \\d+ s`), `${lb}: ${out}`);
    for (const other of BALANCERS) {
      const state = other === lb ? 'self' : 'up';
      t.regex(out, new RegExp(`^ {2}${other} +${LBNET4[other]!.replace(/\./g, '\\.')} +${state} +serving `, 'm'), `${lb} sees ${other} ${state}: ${out}`);
    }
    t.regex(out, /^ {2}flows held here: \d+ of \d+$/m);
    // ready: serving, both peers serving, the six checked backends healthy; exit 0
    t.is(await ok(t, ['ready'], lb), `ready: ${lb} serving, 2/2 peers serving, 6/6 checked backends healthy\n`);
  }
  // An admin endpoint nobody listens on: not ready (exit 3), and why.
  const r = await tunlb(['ready', '--admin', '127.0.0.1:1'], 'lb1', 15_000);
  t.is(r.code, 3, show(r));
  t.regex(r.stdout, /^not ready: cannot reach the admin endpoint 127\.0\.0\.1:1/);
});

rootTest('stats, flows (table, --json, every filter), backends, with live connections', async (t) => {
  if (!labUp(t)) return;
  // Long-lived echo connections (TCP port 7) and a few short HTTP ones, all from tunlb-client.
  longlived = startTraffic(['longlived', '--conns', '6', '--interval-ms', '200', '--duration-s', '150', '--target', `${VIP4}:7`, '--json', '--quiet'], 200_000);
  const curls = await Promise.all([0, 1, 2, 3, 4].map(() => execIn('client', ['curl', '-sS', '-m', '5', `http://${VIP4}/`], { timeoutMs: 10_000 })));
  for (const c of curls) t.regex(c.stdout, /^srv[123]\n$/, `curl through the VIP: ${show(c)}`);
  const established = async (): Promise<FlowListing | undefined> => {
    const r = await tunlb(['flows', '--json', '--proto', 'tcp', '--state', 'established', '--limit', '1000']);
    if (r.code !== 0) return undefined;
    const l = JSON.parse(r.stdout) as FlowListing;
    return l.flows.filter((f) => f.key.endsWith(`${VIP4}:7`)).length >= 6 ? l : undefined;
  };
  t.true(await poll(async () => (await established()) !== undefined, 30_000, 500), 'six established echo connections listed on lb1');

  // stats
  const stats = await json<{ id: string; flows: { active: number; created: number }; counters: { rxPackets: number; txPackets: number }; forwarding: { generation: number; vips: Array<{ name: string }> } }>(t, ['stats']);
  t.is(stats.id, 'lb1');
  t.true(stats.flows.active >= 6, `flows.active ${stats.flows.active}`);
  t.true(stats.counters.rxPackets > 0 && stats.counters.txPackets > 0, JSON.stringify(stats.counters));
  t.deepEqual(stats.forwarding.vips.map((v) => v.name), ['web4', 'web6']);
  const statsText = await ok(t, ['stats']);
  t.regex(statsText, /^balancer +lb1 in cluster lab, up \S+, serving \(incarnation \d+/, statsText);
  t.regex(statsText, /^flows +\d+ active of [\d,]+; /m);
  for (const peer of ['lb2', 'lb3']) t.regex(statsText, new RegExp(`^peer +${peer} +up +serving +rtt \\d+\\.\\d+ ms$`, 'm'), statsText);
  t.regex(statsText, /^vip +web4 10\.99\.0\.10 nat → 10\.99\.3\.21 10\.99\.3\.22 10\.99\.3\.23$/m);

  // flows: table
  const table = await ok(t, ['flows']);
  const lines = table.trimEnd().split('\n');
  t.regex(lines[0]!, /^\d+ flow\(s\) in the table of 127\.0\.0\.1:9180; scanned \d+, (\d+|more than \d+) match$/, table);
  t.regex(lines[1]!, /^KEY +VIP +PRIMARY +BACKUP +BACKEND +STATE +PACKETS +AGE_S +IDLE_S$/);
  const echoLines = lines.filter((l) => l.includes(`-> ${VIP4}:7 `));
  t.true(echoLines.length >= 6, table);
  for (const l of echoLines) t.regex(l, /^tcp 10\.99\.1\.2:\d+ -> 10\.99\.0\.10:7 +web4 +lb[123] +lb[123] +10\.99\.3\.2[123] +tcp_established +\d+ +\d+ +\d+$/, l);

  // flows --json: every row names the lab's balancers and backends
  const all = await json<FlowListing>(t, ['flows', '--limit', '100000']);
  t.false(all.truncated);
  t.is(all.matched, all.flows.length);
  t.is(all.scanned, all.total);
  t.true(all.flows.length >= 6);
  for (const f of all.flows) {
    t.true(BALANCERS.includes(f.primary as 'lb1') && BALANCERS.includes(f.backup as 'lb1') && f.primary !== f.backup, JSON.stringify(f));
    t.true((f.vip === 'web4' ? BACKENDS4 : BACKENDS6).includes(f.backend), JSON.stringify(f));
  }
  const echo = (await established())!;
  const sample = echo.flows.find((f) => f.key.endsWith(`${VIP4}:7`))!;
  const clientPort = /:(\d+) ->/.exec(sample.key)![1]!;

  // every filter: each listed row satisfies it, and the flows it should keep are there
  const check = async (args: string[], pred: (f: FlowRow) => boolean, mustInclude: FlowRow[], lb = 'lb1'): Promise<FlowListing> => {
    const l = await json<FlowListing>(t, ['flows', ...args, '--limit', '100000'], lb);
    for (const f of l.flows) t.true(pred(f), `flows ${args.join(' ')} in ${lb} listed ${JSON.stringify(f)}`);
    for (const m of mustInclude) t.true(l.flows.some((f) => f.key === m.key), `flows ${args.join(' ')} in ${lb} lists ${m.key}`);
    t.false(l.truncated);
    return l;
  };
  const echoFlows = echo.flows.filter((f) => f.key.endsWith(`${VIP4}:7`));
  await check(['--vip', 'web4'], (f) => f.vip === 'web4', echoFlows);
  await check(['--vip', 'web6'], (f) => f.vip === 'web6' && f.key.includes('[fd99::10]'), []); // lab.sh up's own IPv6 check, if not expired yet
  await check(['--backend', sample.backend], (f) => f.backend === sample.backend, [sample]);
  await check(['--backend', `::ffff:${sample.backend}`], (f) => f.backend === sample.backend, [sample]);
  await check(['--client', CLIENT4], (f) => f.key.includes(` ${CLIENT4}:`), echoFlows);
  await check(['--client', '10.99.1.0/24'], (f) => f.key.includes(' 10.99.1.'), echoFlows);
  const one = await check(['--client', `${CLIENT4}:${clientPort}`], (f) => f.key.startsWith(`tcp ${CLIENT4}:${clientPort} `), [sample]);
  t.is(one.flows.length, 1);
  await check(['--proto', 'tcp'], (f) => f.key.startsWith('tcp '), echoFlows);
  await check(['--proto', 'udp'], (f) => f.key.startsWith('udp '), []);
  await check(['--primary', sample.primary], (f) => f.primary === sample.primary, [sample]);
  await check(['--backup', sample.backup], (f) => f.backup === sample.backup, [sample]);
  await check(['--state', 'established'], (f) => f.stateName === 'tcp_established', echoFlows);
  await check(['--max-idle', '5'], (f) => f.idleS <= 5, echoFlows);
  await check(['--min-age', '1'], (f) => f.ageS >= 1, echoFlows);
  t.is((await check(['--min-age', '86400'], () => false, [])).matched, 0);
  const combo = await check(['--vip', 'web4', '--proto', 'tcp', '--state', 'established', '--primary', sample.primary, '--backend', sample.backend], (f) => f.primary === sample.primary && f.backend === sample.backend, [sample]);
  t.deepEqual(combo.filters, { vip: 'web4', backend: sample.backend, proto: 'tcp', primary: sample.primary, state: 'tcp_established' });
  // The records are replicated: lb2 and lb3 list the same echo flows with the same decision.
  for (const lb of ['lb2', 'lb3']) await check(['--client', `${CLIENT4}:${clientPort}`], (f) => f.primary === sample.primary && f.backup === sample.backup && f.backend === sample.backend, [sample], lb);
  // The limit: matching rows count toward it.
  const lim = await json<FlowListing>(t, ['flows', '--state', 'established', '--limit', '2']);
  t.is(lim.flows.length, 2);
  t.true(lim.truncated);
  const limText = await ok(t, ['flows', '--state', 'established', '--limit', '2']);
  t.regex(limText, /^truncated: listing stopped at --limit 2; more flows match/m);
  t.log(`tunlb flows --state established --limit 2:\n${limText}`);
  // Refused filters: one line, exit 2, the stable code.
  t.regex(await refused(t, ['flows', '--vip', 'web9'], 'TUNLB_USAGE', 2), /no VIP "web9"/);
  t.regex(await refused(t, ['flows', '--backend', '10.99.3.99'], 'TUNLB_USAGE', 2), /10\.99\.3\.99 is not a backend of any VIP/);
  t.regex(await refused(t, ['flows', '--state', 'listen'], 'TUNLB_USAGE', 2), /"listen" is not a flow state/);
  t.regex(await refused(t, ['flows', '--primary', 'lb7'], 'TUNLB_USAGE', 2), /no balancer "lb7"/);
  t.regex(await refused(t, ['flows', '--limit', '0'], 'TUNLB_USAGE', 2), /flows limit/);
  // The API mirrors the flags (curl inside lb1's namespace).
  const api = await execIn('lb1', ['curl', '-sS', '-m', '5', '-w', '\\n%{http_code}', `http://127.0.0.1:9180/api/v1/flows?state=listen`], { timeoutMs: 10_000 });
  const [apiBody, apiCode] = api.stdout.split('\n').filter((l) => l !== '');
  t.is(apiCode, '400', show(api));
  t.like(JSON.parse(apiBody!), { code: 'TUNLB_USAGE' });

  // backends: the six lab backends, healthy, not drained
  const be = await json<{ backends: BackendRow[] }>(t, ['backends']);
  t.deepEqual(be.backends.map((b) => `${b.vip} ${b.backend}`).sort(), [...BACKENDS4.map((a) => `web4 ${a}`), ...BACKENDS6.map((a) => `web6 ${a}`)].sort());
  for (const b of be.backends) t.like(b, { drained: false, eligible: true }, JSON.stringify(b));
  const flowsOnBackends = be.backends.reduce((n, b) => n + ((b as { flows?: number }).flows ?? 0), 0);
  t.true(flowsOnBackends >= 6, `flows counted per backend: ${flowsOnBackends} (six echo connections at least)`);
  const beText = await ok(t, ['backends']);
  t.is(beText.trimEnd().split('\n').length, 7, `a header row and the six backends: ${beText}`);
  t.regex(beText, /^VIP +BACKEND +WEIGHT +FLOWS +STATE +HEALTH +NEW FLOWS +WHY\n/);
  for (const a of [...BACKENDS4, ...BACKENDS6]) t.regex(beText, new RegExp(`^web[46] +${a.replace(/\./g, '\\.')} `, 'm'));
});

/** How many of `count` new HTTP connections each server answered (traffic.ts newconns). */
async function newConns(t: ExecutionContext, count: number): Promise<Record<string, number>> {
  const r = await execIn('client', [process.execPath, '--import', 'tsx', path.join(REPO, 'scripts', 'traffic.ts'), 'newconns', '--count', String(count), '--concurrency', '4', '--target', `${VIP4}:80`, '--duration-s', '60', '--json', '--quiet'], { timeoutMs: 90_000 });
  t.is(r.code, 0, show(r));
  const last = r.stdout.trimEnd().split('\n').pop() ?? '{}';
  const s = JSON.parse(last) as { answered: number; errors: number; answers: Record<string, number> };
  t.is(s.answered, count, `every connection answered: ${last.slice(0, 500)}`);
  return s.answers;
}

async function drainedEverywhere(address: string, want: boolean): Promise<boolean> {
  for (const lb of BALANCERS) {
    const r = await tunlb(['backends', '--json'], lb, 15_000);
    if (r.code !== 0) return false;
    const row = (JSON.parse(r.stdout) as { backends: BackendRow[] }).backends.find((b) => b.vip === 'web4' && b.backend === address);
    if (row === undefined || row.drained !== want) return false;
  }
  return true;
}

rootTest('drain / undrain: the mark reaches every balancer, new connections avoid the drained backend', async (t) => {
  if (!labUp(t)) return;
  const target = '10.99.3.22';
  // The long-lived echo connections (previous test) that run on the backend about to be drained.
  const onTarget = async (): Promise<FlowRow[]> =>
    (await json<FlowListing>(t, ['flows', '--backend', target, '--state', 'established', '--limit', '1000'])).flows.filter((f) => f.key.endsWith(`${VIP4}:7`));
  const before = await onTarget();
  try {
    // A drain takes drain_timeout_s (lab: 300 s) to finish: the CLI says until when, never "drained".
    t.regex((await ok(t, ['drain', 'web4', target])).trim(), new RegExp(`^web4 ${target.replace(/\./g, '\\.')}: draining until \\d\\d:\\d\\d:\\d\\dZ \\(in [45]m\\d+s\\): no new flows; its \\d+ flow\\(s\\) stay until they end, and the deadline cuts the rest$`));
    t.true(await poll(() => drainedEverywhere(target, true), 20_000, 300), 'drained on lb1, lb2 and lb3');
    const text = await ok(t, ['backends'], 'lb2');
    // draining, with the drain timeout's deadline (lab: drain_timeout_s default 300).
    t.regex(text, new RegExp(`^web4 +${target.replace(/\./g, '\\.')} +1 +\\d+ +draining +healthy +no +drained by operator on lb1 until \\d\\d:\\d\\d:\\d\\dZ \\(in [45]m\\d+s\\)$`, 'm'), text);
    t.is((await ok(t, ['drain', 'web4', target, '--json'])).trim(), JSON.stringify({ changed: false, event: null }));
    t.regex((await ok(t, ['drain', 'web4', target])).trim(), new RegExp(`^web4 ${target.replace(/\./g, '\\.')}: draining \\(already drained\\) until `));
    const answers = await newConns(t, 24);
    t.is(answers[SERVER_OF[target]!] ?? 0, 0, `no new connection to the drained ${SERVER_OF[target]}: ${JSON.stringify(answers)}`);
    t.true((answers['srv1'] ?? 0) > 0 && (answers['srv3'] ?? 0) > 0, JSON.stringify(answers));
    // Existing flows stay: the echo connections on the drained backend are still there and moving.
    const during = await onTarget();
    t.log(`echo connections on ${target}: ${before.length} before the drain, ${during.length} while drained`);
    for (const f of before) {
      const now = during.find((x) => x.key === f.key);
      t.truthy(now, `${f.key} still on ${target} while drained`);
      if (now) t.true(now.packets > f.packets, `${f.key}: packets ${f.packets} -> ${now.packets}`);
    }
  } finally {
    const u = await tunlb(['undrain', 'web4', target]);
    t.is(u.code, 0, show(u));
    t.is(u.stdout.trim(), `web4 ${target}: drain ended: healthy, takes new flows again`);
  }
  t.true(await poll(() => drainedEverywhere(target, false), 20_000, 300), 'undrained on lb1, lb2 and lb3');
  const be = await json<{ backends: BackendRow[] }>(t, ['backends'], 'lb3');
  t.like(be.backends.find((b) => b.backend === target), { drained: false, eligible: true });
  // Back in rotation: with three equal weights, 30 new connections all missing srv2 has p = (2/3)^30 ≈ 5e-6.
  const answers = await newConns(t, 30);
  t.true((answers[SERVER_OF[target]!] ?? 0) > 0, `srv2 answers again: ${JSON.stringify(answers)}`);
  t.is((await ok(t, ['undrain', 'web4', target])).trim(), `web4 ${target}: was not drained: healthy, takes new flows again`);
});

rootTest('reload: an unchanged config is accepted; a broken one is refused and the running config kept', async (t) => {
  if (!labUp(t)) return;
  const gen0 = (await json<{ forwarding: { generation: number } }>(t, ['stats'])).forwarding.generation;
  const same = await ok(t, ['reload']);
  t.regex(same, /^reloaded: forwarding table generation \d+$/m, same);
  t.regex(same, /^ {2}VIPs added: -; removed: -$/m, same);
  t.regex(same, /^ {2}backends added: -; removed: -; reweighted: -$/m, same);
  t.regex(same, /^ {2}flows remapped 0, removed 0, on removed backends 0 \(TCP reset, others moved at their next packet\)$/m, same);
  const gen1 = (await json<{ forwarding: { generation: number } }>(t, ['stats'])).forwarding.generation;
  t.true(gen1 >= gen0, `generation ${gen0} -> ${gen1}`);

  const original = readFileSync(LAB_CONFIG, 'utf8');
  try {
    // A backend that is not an address.
    writeFileSync(LAB_CONFIG, original.replace('address: 10.99.3.22,', 'address: srv2.lab,'));
    const r = await tunlb(['reload']);
    t.is(r.code, 2, show(r));
    t.is(r.stdout, '');
    const err = r.stderr.trimEnd().split('\n');
    t.regex(err[0]!, /^tunlb: reload refused, the running config stays: /, r.stderr);
    t.true(err.slice(1).some((l) => l.includes('srv2.lab')), `the error names the bad value: ${r.stderr}`);
    // Still running with the old config: same generation, same backends, status serving.
    const after = await json<{ forwarding: { generation: number; vips: Array<{ name: string; backends: string[] }> } }>(t, ['stats']);
    t.is(after.forwarding.generation, gen1, 'the forwarding table did not change');
    t.deepEqual(after.forwarding.vips.find((v) => v.name === 'web4')?.backends, BACKENDS4);
    t.regex(await ok(t, ['status']), /^cluster lab: seen from lb1 \(serving/);
    const curl = await execIn('client', ['curl', '-sS', '-m', '5', `http://${VIP4}/`], { timeoutMs: 10_000 });
    t.regex(curl.stdout, /^srv[123]\n$/, `the VIP still answers: ${show(curl)}`);
    // Not YAML at all: refused too.
    writeFileSync(LAB_CONFIG, 'vips: [unclosed\n');
    const r2 = await tunlb(['reload']);
    t.is(r2.code, 2, show(r2));
    t.regex(r2.stderr, /^tunlb: reload refused, the running config stays: /);
  } finally {
    writeFileSync(LAB_CONFIG, original);
  }
  t.is(readFileSync(LAB_CONFIG, 'utf8'), original, 'lab.yaml restored');
  const again = await ok(t, ['reload']);
  t.regex(again, /^reloaded: /m, 'the restored file reloads');
});

rootTest('status --cluster, config mismatch, reload --cluster: every balancer at once over the control channel', async (t) => {
  if (!labUp(t)) return;
  const cluster = (lb = 'lb1'): Promise<ClusterBody> => json<ClusterBody>(t, ['status', '--cluster'], lb);
  // 1. Seen from lb1: the three balancers serving, one config hash, each one's own figures fresh.
  let c: ClusterBody | undefined;
  const fresh = (x: ClusterBody): boolean =>
    x.balancers.length === 3 && x.balancers.every((b) => b.status === 'serving' && b.configHash === x.configHash && b.reportAgeMs !== null && b.reportAgeMs < 3000);
  t.true(await poll(async () => fresh((c = await cluster())), 10_000, 300), `lb1..lb3 serving with one config hash and fresh figures: ${JSON.stringify(c)}`);
  const h0 = c!.configHash;
  t.regex(h0, /^[0-9a-f]{12}$/);
  t.deepEqual(c!.balancers.map((b) => b.id), [...BALANCERS]);
  t.true(c!.balancers.filter((b) => !b.self).every((b) => b.rttMs !== null && b.lastHeardMs !== null && b.lastHeardMs < 2000), 'peers: RTT and last heard measured');
  const text = await ok(t, ['status', '--cluster']);
  t.log(`tunlb status --cluster (lb1):\n${text}`);
  t.regex(text, new RegExp(`^cluster lab: 3 balancers, seen from lb1 \\(config ${h0}\\)$`, 'm'));
  for (const lb of BALANCERS) t.regex(text, new RegExp(`^ {2}${lb} +serving +${h0} +\\d`, 'm'), `${lb} row`);
  t.regex(text, /^ {2}every balancer that reported runs the same config$/m);

  const original = readFileSync(LAB_CONFIG, 'utf8');
  const changed = original.replace('{ address: 10.99.3.22, weight: 1,', '{ address: 10.99.3.22, weight: 2,');
  t.not(changed, original, 'lab.yaml has the weight to change');
  try {
    // 2. lb3 alone reloads a changed file: lb1 sees a mismatch (row, event, metric).
    writeFileSync(LAB_CONFIG, changed);
    t.regex(await ok(t, ['reload'], 'lb3'), /^reloaded: /m);
    t.true(await poll(async () => (c = await cluster()).mismatches.join() === 'lb3', 5000, 200), `lb1 sees lb3's other config: ${JSON.stringify(c?.mismatches)}`);
    const h1 = c!.balancers[2]!.configHash;
    t.not(h1, h0);
    const mis = await ok(t, ['status', '--cluster']);
    t.log(`after lb3 alone reloaded:\n${mis}`);
    t.regex(mis, new RegExp(`^ {2}lb3 +serving +${h1} ! `, 'm'));
    t.regex(mis, new RegExp(`^ {2}config mismatch: lb3 runs ${h1}, lb1 runs ${h0}$`, 'm'));
    const st = await json<{ events: Array<{ type: string; balancer: string; reason: string; origin?: string }> }>(t, ['status']);
    t.true(st.events.some((e) => e.type === 'config_mismatch' && e.balancer === 'lb3' && e.reason === `lb3 runs config ${h1}, lb1 runs ${h0}`), JSON.stringify(st.events.slice(-5)));
    const metrics = await execIn('lb1', ['curl', '-sS', '-m', '5', 'http://127.0.0.1:9180/metrics'], { timeoutMs: 10_000 });
    t.regex(metrics.stdout, /^tunlb_peer_config_mismatch\{peer="lb3"\} 1$/m);
    t.regex(metrics.stdout, /^tunlb_peer_config_mismatch\{peer="lb2"\} 0$/m);
    t.regex(metrics.stdout, new RegExp(`^tunlb_config_info\\{hash="${h0}"\\} 1$`, 'm'));
    const lb3ev = await json<{ events: Array<{ type: string; origin?: string }> }>(t, ['status'], 'lb3');
    t.true(lb3ev.events.some((e) => e.type === 'reload' && e.origin === 'api 127.0.0.1'), 'lb3: its reload, with its origin');

    // 3. reload --cluster from lb1: one line per balancer, all on the changed file's hash.
    const r = await tunlb(['reload', '--cluster']);
    t.log(`tunlb reload --cluster (lb1):\n${r.stdout}`);
    t.is(r.code, 0, show(r));
    const lines = r.stdout.trimEnd().split('\n');
    t.is(lines.length, 3, r.stdout);
    BALANCERS.forEach((lb, i) => t.regex(lines[i]!, new RegExp(`^${lb} {2}ok {8}config ${h1} {2}generation \\d+: `), lines[i]));
    t.true(await poll(async () => (c = await cluster()).mismatches.length === 0 && c.configHash === h1, 5000, 200), `mismatch over: ${JSON.stringify(c?.mismatches)}`);
    const lb2ev = await json<{ events: Array<{ type: string; origin?: string }> }>(t, ['status'], 'lb2');
    t.true(lb2ev.events.some((e) => e.type === 'reload' && e.origin === 'peer lb1'), 'lb2: the reload lb1 asked for, origin peer lb1');
    const lb1ev = await json<{ events: Array<{ type: string; balancer: string }> }>(t, ['status']);
    t.true(lb1ev.events.some((e) => e.type === 'config_match' && e.balancer === 'lb3'));
  } finally {
    writeFileSync(LAB_CONFIG, original);
  }
  // 4. Restored everywhere the same way.
  const back = await tunlb(['reload', '--cluster']);
  t.is(back.code, 0, show(back));
  t.is(back.stdout.split('\n').filter((l) => new RegExp(`^lb[123] {2}ok {8}config ${h0} `).test(l)).length, 3, back.stdout);
  t.true(await poll(async () => (c = await cluster()).configHash === h0 && c.mismatches.length === 0 && fresh(c), 5000, 200), JSON.stringify(c));
});

rootTest('capture: probes on lbnet0 into a pcap that tcpdump -r reads, and decoded lines', async (t) => {
  if (!labUp(t)) return;
  const pcap = path.join(work!, 'lbnet.pcap');
  const out = await ok(t, ['capture', '--iface', 'lbnet0', '--filter', 'udp port 7948', '--count', '6', '--duration-s', '20', '--out', pcap, '--decode', '--config', LAB_CONFIG], 'lb1', 60_000);
  const decoded = out.split('\n').filter((l) => /^\d\d:\d\d:\d\d\.\d{6} /.test(l));
  t.is(decoded.length, 6, out);
  for (const l of decoded) t.regex(l, /^\d\d:\d\d:\d\d\.\d{6} lb[123] → lb[123] (probe|probe-ack) seq=\d+ /, l);
  const td = await run('tcpdump', ['-n', '-r', pcap], { timeoutMs: 20_000 });
  t.is(td.code, 0, show(td));
  const pk = td.stdout.trimEnd().split('\n');
  t.is(pk.length, 6, td.stdout);
  for (const l of pk) t.regex(l, /IP 10\.99\.2\.1[123]\.7948 > 10\.99\.2\.1[123]\.7948: UDP/, l);
  t.regex(td.stderr, /link-type EN10MB/, td.stderr);
  // Our own reader decodes the file the same way (no root needed).
  const rd = await run(process.execPath, [TUNLB, 'capture', '--read', pcap, '--config', LAB_CONFIG], { timeoutMs: 30_000 });
  t.is(rd.code, 0, show(rd));
  t.is(rd.stdout.split('\n').filter((l) => / (probe|probe-ack) seq=/.test(l)).length, 6, rd.stdout);
});

rootTest('tcpdump -Q on tunlb0: out = what the kernel hands tunlb (to the VIP), in = what tunlb writes back (the answers, from the VIP), as docs/operations.md says', async (t) => {
  if (!labUp(t)) return;
  // Both directions at once, during two HTTP requests (their answers always come back through
  // lb1 in NAT mode: the servers' default route).
  const cap = (dir: string): Promise<RunResult> =>
    execIn('lb1', ['timeout', '15', 'tcpdump', '-nl', '-i', 'tunlb0', '-Q', dir, '-c', '6', 'tcp port 80'], { timeoutMs: 20_000 });
  const [qin, qout] = [cap('in'), cap('out')];
  await new Promise((r) => setTimeout(r, 1500)); // tcpdump attached (bounded: a missed packet only means fewer lines)
  for (let i = 0; i < 2; i++) await execIn('client', ['curl', '-sS', '-m', '5', '-o', '/dev/null', `http://${VIP4}/`], { timeoutMs: 10_000 });
  const [rin, rout] = await Promise.all([qin, qout]);
  const linesOf = (r: RunResult): string[] => r.stdout.split('\n').filter((l) => / IP /.test(l));
  t.log(`-Q in:\n${linesOf(rin).join('\n')}\n-Q out:\n${linesOf(rout).join('\n')}`);
  // kernel -> tunlb (egress of tunlb0): the client's packets to the VIP, the servers' answers to the client
  const vipIn = new RegExp(`IP ${CLIENT4.replace(/\./g, '\\.')}\\.\\d+ > ${VIP4.replace(/\./g, '\\.')}\\.80:`);
  const vipOut = new RegExp(`IP ${VIP4.replace(/\./g, '\\.')}\\.80 > ${CLIENT4.replace(/\./g, '\\.')}\\.\\d+:`);
  t.true(linesOf(rout).some((l) => vipIn.test(l)), '-Q out shows the client -> VIP packets the kernel routes into tunlb0');
  t.false(linesOf(rout).some((l) => vipOut.test(l)), '-Q out never shows a packet tunlb un-NATed');
  // tunlb -> kernel (ingress of tunlb0): the answers un-NATed to the VIP's address
  t.true(linesOf(rin).some((l) => vipOut.test(l)), '-Q in shows the VIP -> client answers tunlb writes back');
  t.false(linesOf(rin).some((l) => vipIn.test(l)), '-Q in never shows a packet to the VIP (tunlb rewrites those)');
  // The doc's comments say the same.
  const doc = readFileSync(path.join(REPO, 'docs', 'operations.md'), 'utf8');
  t.regex(doc, /tcpdump -ni tunlb0 -Q out .*# kernel → tunlb only/);
  t.regex(doc, /tcpdump -ni tunlb0 -Q in .*# tunlb → kernel only/);
});

rootTest('errors: one line with a stable code and a non-zero exit', async (t) => {
  if (!labUp(t)) return;
  t.regex(await refused(t, ['drain', 'web9', '10.99.3.22'], 'TUNLB_ADMIN', 1), /web9/);
  t.regex(await refused(t, ['undrain', 'web4', '10.99.3.99'], 'TUNLB_ADMIN', 1), /10\.99\.3\.99/);
  // No balancer there: the admin endpoint cannot be reached.
  t.regex(await refused(t, ['status', '--admin', '127.0.0.1:9'], 'TUNLB_ADMIN', 1), /cannot reach the admin endpoint 127\.0\.0\.1:9/);
  t.regex(await refused(t, ['stats', '--admin', '127.0.0.1:9'], 'TUNLB_ADMIN', 1), /cannot reach the admin endpoint/);
  // Unknown subcommand / option: one line and a hint, exit 2 (not the whole help).
  const bad = await run(process.execPath, [TUNLB, 'flows', '--colour', 'blue'], { timeoutMs: 30_000 });
  t.is(bad.code, 2, show(bad));
  t.deepEqual(bad.stderr.trimEnd().split('\n'), ["tunlb: unknown option '--colour'", "run 'tunlb flows --help' for its usage"]);
  const v = await run(process.execPath, [TUNLB, '--version'], { timeoutMs: 30_000 });
  t.is(v.code, 0, show(v));
  t.regex(v.stdout, /^tunlb \d+\.\d+\.\d+\n$/);
});

rootTest('drain-self / undrain-self: the peers see the balancer draining and give it no new flow; undrained, it serves again', async (t) => {
  if (!labUp(t)) return;
  const statusOf = async (from: string, id: string): Promise<string> => {
    const r = await tunlb(['status', '--json'], from, 15_000);
    if (r.code !== 0) return `status exit ${r.code}`;
    return (JSON.parse(r.stdout) as { balancers: Array<{ id: string; status: string }> }).balancers.find((b) => b.id === id)?.status ?? 'missing';
  };
  const seenBy = async (want: string): Promise<boolean> => (await statusOf('lb1', 'lb3')) === want && (await statusOf('lb2', 'lb3')) === want;
  const known = new Set((await json<FlowListing>(t, ['flows', '--limit', '100000'])).flows.map((f) => f.key));
  try {
    const out = await ok(t, ['drain-self'], 'lb3');
    t.log(`lb3$ tunlb drain-self\n  ${out.trim()}`);
    t.regex(out, /^drained: status draining; /);
    t.true(await poll(() => seenBy('draining'), 10_000, 200), `lb1 and lb2 see lb3 draining (lb1: ${await statusOf('lb1', 'lb3')}, lb2: ${await statusOf('lb2', 'lb3')})`);
    // New connections while lb3 drains (lb1, the entry, decides them): every one answered, none
    // of their records (the keys lb1 did not hold before) names lb3 as primary.
    await newConns(t, 40);
    const young = (await json<FlowListing>(t, ['flows', '--limit', '100000'])).flows.filter((f) => !known.has(f.key));
    const byPrimary = young.reduce<Record<string, number>>((a, f) => ((a[f.primary] = (a[f.primary] ?? 0) + 1), a), {});
    t.log(`flows created while lb3 drained, by primary: ${JSON.stringify(byPrimary)}`);
    t.true(young.length >= 40, `the new connections' flows are listed (${young.length})`);
    t.deepEqual(young.filter((f) => f.primary === 'lb3').map((f) => f.key).slice(0, 5), [], 'no flow created while lb3 drained has lb3 as primary');
    const ev = JSON.parse((await execIn('lb3', ['curl', '-sS', '-m', '3', 'http://127.0.0.1:9180/api/v1/events?limit=500'], { timeoutMs: 5000 })).stdout) as { events: Array<{ type: string; origin?: string }> };
    t.true(ev.events.some((e) => e.type === 'drain_self' && e.origin === 'api 127.0.0.1'), 'lb3 records the drain-self with its origin');
  } finally {
    const back = await tunlb(['undrain-self'], 'lb3');
    t.is(back.code, 0, show(back));
    t.log(`lb3$ tunlb undrain-self\n  ${back.stdout.trim()}`);
  }
  t.true(await poll(() => seenBy('serving'), 10_000, 200), `lb1 and lb2 see lb3 serving again (lb1: ${await statusOf('lb1', 'lb3')})`);
  t.is(await ok(t, ['ready'], 'lb1'), 'ready: lb1 serving, 2/2 peers serving, 6/6 checked backends healthy\n');
});

rootTest('a killed balancer: status, stats and ready call it dead, never serving; lab.sh status says DEAD; restarted, all serving again', async (t) => {
  if (!labUp(t)) return;
  const k = await lab(['kill', 'lb2'], 60_000);
  t.is(k.code, 0, show(k));
  try {
    t.true(
      await poll(async () => (await json<{ balancers: Array<{ id: string; state: string }> }>(t, ['status'])).balancers.some((b) => b.id === 'lb2' && b.state === 'dead'), 20_000, 200),
      'lb1 declares lb2 dead',
    );
    const st = await ok(t, ['status']);
    t.regex(st, /^ {2}lb2 +10\.99\.2\.12 +dead +- /m, `status: lb2 dead, its status not shown: ${st}`);
    t.notRegex(st, /^ {2}lb2 .*serving/m, st);
    const sj = await json<{ balancers: Array<{ id: string; status: string; lastStatus: string }> }>(t, ['status']);
    t.like(sj.balancers.find((b) => b.id === 'lb2'), { status: 'unknown', lastStatus: 'serving' });
    const stats = await ok(t, ['stats']);
    t.regex(stats, /^peer +lb2 +dead +- +rtt/m, stats);
    const r = await tunlb(['ready']);
    t.is(r.code, 3, show(r));
    t.regex(r.stdout, /^not ready: peer lb2 is dead \(no answer to probes\) \(lb1 serving, 1\/2 peers serving, 6\/6 checked backends healthy\)\n$/, r.stdout);
    const ls = await lab(['status'], 60_000);
    t.is(ls.code, 3, `lab.sh status exits 3 with a balancer down: ${show(ls)}`);
    t.regex(ls.stdout, /^ {2}lb2: DEAD \(no process: killed or stopped; start it with: scripts\/lab\.sh start lb2\)$/m, ls.stdout);
    t.regex(ls.stdout, /^ {2}lb1: pid \d+ alive$/m);
  } finally {
    const s = await lab(['start', 'lb2'], 120_000);
    t.is(s.code, 0, show(s));
  }
  t.is((await ok(t, ['ready', '--wait', '30'])).trim(), 'ready: lb1 serving, 2/2 peers serving, 6/6 checked backends healthy');
});

rootTest("logs: the lab's balancer logs are JSON lines only, every event documented; tunlb logs prints them", async (t) => {
  if (!labUp(t)) return;
  const documented = readFileSync(path.join(REPO, 'docs', 'logs.md'), 'utf8');
  for (const lb of BALANCERS) {
    const file = path.join(LAB_DIR, 'logs', `${lb}.log`);
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
    t.true(lines.length >= 3, `${file}: ${lines.length} lines`);
    const events = new Set<string>();
    for (const l of lines) {
      let rec: { event?: string; level?: string; time?: string; balancer?: string };
      try {
        rec = JSON.parse(l) as typeof rec;
      } catch {
        t.fail(`${file}: not a JSON line: ${l}`);
        continue;
      }
      t.truthy(rec.time && rec.level && rec.event, `${file}: time, level, event in ${l.slice(0, 200)}`);
      events.add(String(rec.event));
    }
    for (const e of events) t.true(documented.includes(`\`${e}\``), `${lb}: event ${e} is in docs/logs.md`);
    t.true(events.has('lab_start') && events.has('balancer_started'), `${lb}: ${[...events].join(', ')}`);
  }
  // lb2 was killed and restarted above: its log tells the story in order, readable.
  const pretty = await run(process.execPath, [TUNLB, 'logs', '--brief', '--event', 'lab_start,balancer_started', path.join(LAB_DIR, 'logs', 'lb2.log')], { timeoutMs: 30_000 });
  t.is(pretty.code, 0, show(pretty));
  const pl = pretty.stdout.trimEnd().split('\n');
  t.true(pl.length >= 4, pretty.stdout);
  t.regex(pl[0]!, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: lb2 lab_start: scripts\/lab\.sh starts lb2$/);
  t.regex(pl[1]!, /\] INFO: lb2 balancer_started: balancer lb2 serving on tunlb0$/);
  const down = await run(process.execPath, [TUNLB, 'logs', '--event', 'peer_down', path.join(LAB_DIR, 'logs', 'lb1.log')], { timeoutMs: 30_000 });
  t.regex(down.stdout, /\] WARN: lb1 peer_down: lb2: /, 'lb1 logged lb2 down');
});
