/**
 * The `tunlb` command line as a user meets it, without root or a balancer: the real CLI run
 * from the sources (test/helpers/tunlb-cli.ts) for --version, usage errors (one line and a
 * hint, exit 2), `tunlb run`'s start-up failure in a log (a JSON line) and on a terminal (plain
 * text, through script(1)'s pseudo-terminal), `tunlb logs` and the pino-pretty recipe; and the
 * pure formatters of `tunlb backends` and `tunlb drain`.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backendTable, drainMessage } from '../../src/cli/main';
import { overrideMessage } from '../../src/cli/runtime-text';

const REPO = join(__dirname, '..', '..');
const CLI = join(REPO, 'test', 'helpers', 'tunlb-cli.ts');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `tunlb ARGS` (stdin: `input`), bounded to 30 s; asynchronous, so tests overlap. */
function tunlb(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

test('cli: --version prints the package version', async (t) => {
  const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
  for (const flag of ['--version', '-V']) {
    const r = await tunlb([flag]);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, `tunlb ${version}\n`);
  }
});

const USAGE: Array<{ args: string[]; line: RegExp; hint: string }> = [
  { args: ['stauts'], line: /^tunlb: unknown command 'stauts' \(did you mean one of stats, status\?\)$/, hint: "run 'tunlb --help' for the commands" },
  { args: ['flows', '--bogus'], line: /^tunlb: unknown option '--bogus'$/, hint: "run 'tunlb flows --help' for its usage" },
  { args: ['drain', 'web4'], line: /^tunlb: missing required argument 'address'$/, hint: "run 'tunlb drain --help' for its usage" },
  { args: ['run', '--id', 'lb1'], line: /^tunlb: required option '-c, --config <file>' not specified$/, hint: "run 'tunlb run --help' for its usage" },
  { args: ['stats', 'extra'], line: /^tunlb: too many arguments for 'stats'/, hint: "run 'tunlb stats --help' for its usage" },
  { args: ['run', '-c', 'x.yaml', '-i', 'lb1', '--log-level', 'loud'], line: /^tunlb: option '--log-level <level>' argument 'loud' is invalid\. Allowed choices are fatal, error/, hint: "run 'tunlb run --help' for its usage" },
  { args: ['ready', '--wait', 'soon'], line: /^tunlb: --wait must be a number of seconds >= 0, got "soon" \[TUNLB_USAGE\]$/, hint: "run 'tunlb ready --help' for its usage" },
  { args: ['flows', '--limit', '0'], line: /^tunlb: flows limit: "0" is not a whole number in 1\.\.100000 \[TUNLB_USAGE\]$/, hint: "run 'tunlb flows --help' for its usage" },
  { args: ['weight', 'web4', '10.99.3.21', '70000'], line: /^tunlb: weight: weight must be an integer 0\.\.65535 \(0: no new flows\) or "file" \(back to the file's weight\), got "70000" \[TUNLB_USAGE\]$/, hint: "run 'tunlb weight --help' for its usage" },
  { args: ['weight', 'web4', '10.99.3.21', 'heavy'], line: /^tunlb: weight: weight must be an integer 0\.\.65535 .*got "heavy" \[TUNLB_USAGE\]$/, hint: "run 'tunlb weight --help' for its usage" },
  { args: ['weight', 'web4', '10.99.3.21'], line: /^tunlb: missing required argument 'weight'$/, hint: "run 'tunlb weight --help' for its usage" },
  { args: ['maintenance', 'web4', '10.99.3.21', 'maybe'], line: /^tunlb: maintenance: expected on or off, got "maybe" \[TUNLB_USAGE\]$/, hint: "run 'tunlb maintenance --help' for its usage" },
];

for (const c of USAGE) {
  test(`cli: usage error \`tunlb ${c.args.join(' ')}\` is one line and a hint, exit 2`, async (t) => {
    const r = await tunlb(c.args);
    t.is(r.code, 2, r.stderr);
    t.is(r.stdout, '');
    const l = lines(r.stderr);
    t.is(l.length, 2, `not the whole help:\n${r.stderr}`);
    t.regex(l[0]!, c.line);
    t.is(l[1], c.hint);
  });
}

test('cli: `tunlb` alone prints the help on stderr, exit 2; `tunlb --help` on stdout, exit 0', async (t) => {
  const bare = await tunlb([]);
  t.is(bare.code, 2);
  t.regex(bare.stderr, /^Usage: tunlb \[options\] \[command\]/);
  const help = await tunlb(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^Usage: tunlb/);
  for (const cmd of ['run', 'status', 'backends', 'drain', 'ready', 'logs', 'capture']) t.regex(help.stdout, new RegExp(`^  ${cmd}\\b`, 'm'), cmd);
  t.regex(help.stdout, /-V, --version +print the version/);
});

test('cli: `tunlb run` that cannot start, into a log (a pipe): one start_failed JSON line, exit 2; on a terminal: plain lines', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'bad.yaml');
  writeFileSync(cfg, 'cluster: { id: c, key_file: missing.key }\nbalancers: [{ id: lb1, address: 10.77.1.1 }]\nvips: []\ntun_typo: 1\n');

  const r = await tunlb(['run', '--config', cfg, '--id', 'lb1']);
  t.is(r.code, 2);
  const l = lines(r.stderr);
  t.is(l.length, 1, r.stderr);
  const rec = JSON.parse(l[0]!) as Record<string, unknown>;
  t.like(rec, { level: 'fatal', balancer: 'lb1', event: 'start_failed', code: 'TUNLB_CONFIG_INVALID', exitCode: 2 });
  t.regex(String(rec['time']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.regex(String(rec['msg']), /bad\.yaml: 2 configuration errors/);
  const errors = rec['errors'] as string[];
  t.is(errors.length, 2);
  t.true(errors.some((e) => /bad\.yaml:4:\d+: tun_typo: unknown field/.test(e)), errors.join('\n'));

  const missing = await tunlb(['run', '--config', join(dir, 'nope.yaml'), '--id', 'lb1']);
  t.is(missing.code, 2);
  t.like(JSON.parse(lines(missing.stderr)[0]!), { event: 'start_failed', code: 'TUNLB_CONFIG_NOT_FOUND' });

  // The same on a terminal (script(1) gives the command a pseudo-terminal): the sentences.
  const cmd = [process.execPath, '--import', 'tsx', CLI, 'run', '--config', cfg, '--id', 'lb1'].map((a) => `'${a}'`).join(' ');
  const tty = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: REPO, encoding: 'utf8', timeout: 30_000 });
  t.is(tty.status, 2, tty.stdout);
  const out = lines(tty.stdout.replace(/\r/g, ''));
  t.regex(out[0]!, /^tunlb: .*bad\.yaml: 2 configuration errors/);
  t.true(out.some((x) => /bad\.yaml:4:\d+: tun_typo: unknown field/.test(x)));
  t.false(out.some((x) => x.startsWith('{')), 'no JSON on a terminal');
});

/** Log lines as a balancer writes them (and one line that is not JSON). */
const LOG = [
  '{"level":"info","time":"2026-12-07T20:32:44.101Z","balancer":"lb1","event":"lab_start","cmd":"node bin/tunlb run","msg":"scripts/lab.sh starts lb1"}',
  '{"level":"info","time":"2026-12-07T20:32:44.563Z","balancer":"lb1","event":"backend_state","vip":"web4","backend":"10.99.3.23","from":"unknown","to":"healthy","reason":"first check passed","msg":"backend web4/10.99.3.23: unknown -> healthy: first check passed"}',
  'not json: something else wrote here',
  '{"level":"warn","time":"2026-12-07T20:33:14.138Z","balancer":"lb1","event":"peer_down","peer":"lb3","reason":"no answer for 187 ms","msg":"lb3: down (no answer for 187 ms)"}',
].join('\n');

test('cli: `tunlb logs` prints one line per event (time, level, balancer, event, message, fields) and filters by event and level', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-logs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'lb1.log');
  writeFileSync(file, `${LOG}\n`);

  const all = await tunlb(['logs', file]);
  t.is(all.code, 0, all.stderr);
  const out = lines(all.stdout);
  t.is(out.length, 4, all.stdout);
  t.regex(out[1]!, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: lb1 backend_state: backend web4\/10\.99\.3\.23: unknown -> healthy: first check passed \{"vip":"web4",/);
  t.is(out[2], 'not json: something else wrote here', 'other lines pass through');
  t.regex(out[3]!, /\] WARN: lb1 peer_down: lb3: down \(no answer for 187 ms\) \{"peer":"lb3","reason":"no answer for 187 ms"\}$/);
  t.false(all.stdout.includes('\u001b['), 'no colours when the output is not a terminal');

  const down = await tunlb(['logs', '--event', 'peer_down', '--brief'], `${LOG}\n`);
  t.is(down.code, 0, down.stderr);
  t.deepEqual(lines(down.stdout).map((l) => l.replace(/^\[[^\]]+\] /, '')), ['WARN: lb1 peer_down: lb3: down (no answer for 187 ms)'], 'stdin, one event, no fields');

  const warn = await tunlb(['logs', '--level', 'warn', file]);
  t.is(lines(warn.stdout).length, 1);

  const nofile = await tunlb(['logs', join(dir, 'nope.log')]);
  t.is(nofile.code, 2);
  t.regex(nofile.stderr, /^tunlb: logs: cannot read .*nope\.log: ENOENT/);
});

test('cli: the pino-pretty recipe (`... | npx pino-pretty`) reads a balancer log', (t) => {
  const bin = join(REPO, 'node_modules', '.bin', 'pino-pretty');
  const r = spawnSync(bin, ['--colorize', 'false'], { input: `${LOG}\n`, encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /WARN.*: lb3: down \(no answer for 187 ms\)/);
  t.regex(r.stdout, /event: "peer_down"/);
});

const ROW = {
  vip: 'web4',
  backend: '10.99.3.22',
  port: null,
  weight: 2,
  health: 'healthy',
  drained: true,
  eligible: false,
  reason: 'drained by operator on lb1',
  flows: 12,
};

test('cli: `tunlb backends` is a table with a header row, numbers right-aligned', (t) => {
  const now = Date.parse('2026-12-07T12:00:00Z');
  const text = backendTable(
    [
      { ...ROW, state: 'draining', drainDeadlineMs: now + 250_000 },
      { ...ROW, backend: 'fd99:3::21', port: 8080, weight: 10, flows: 3, state: 'healthy', drained: false, eligible: true, reason: 'check passed', drainDeadlineMs: null },
    ],
    now,
  );
  const l = text.split('\n');
  t.regex(l[0]!, /^VIP +BACKEND +WEIGHT +FLOWS +STATE +HEALTH +NEW FLOWS +WHY$/);
  t.regex(l[1]!, /^web4 +10\.99\.3\.22 +2 +12 +draining +healthy +no +drained by operator on lb1 until 12:04:10Z \(in 4m10s\)$/);
  t.regex(l[2]!, /^web4 +fd99:3::21:8080 +10 +3 +healthy +healthy +yes +check passed$/);
  t.is(l[0]!.indexOf('STATE'), l[1]!.indexOf('draining'), 'columns aligned');
  t.is(l[0]!.indexOf('FLOWS') + 'FLOWS'.length, l[1]!.indexOf('12') + 2, 'numbers right-aligned');
  t.is(backendTable([], now), 'no backends');
});

test('cli: `tunlb drain` says "draining until ...", never "drained" while flows may stay', (t) => {
  const now = Date.parse('2026-12-07T12:00:00Z');
  const cases: Array<[Parameters<typeof drainMessage>, RegExp]> = [
    [['drain', 'web4', '10.99.3.22', true, { ...ROW, state: 'draining', drainDeadlineMs: now + 300_000 }, now],
      /^web4 10\.99\.3\.22: draining until 12:05:00Z \(in 5m0s\): no new flows; its 12 flow\(s\) stay until they end, and the deadline cuts the rest$/],
    [['drain', 'web4', '10.99.3.22', false, { ...ROW, state: 'draining', drainDeadlineMs: null }, now],
      /^web4 10\.99\.3\.22: draining \(already drained\): no new flows; its 12 flow\(s\) stay until they end \(no drain_timeout_s: no deadline\)$/],
    [['drain', 'web4', '10.99.3.22', false, { ...ROW, state: 'drained', drainDeadlineMs: now - 1000 }, now],
      /^web4 10\.99\.3\.22: drained \(already drained\): the drain timeout has passed/],
    [['drain', 'web4', '10.99.3.22', true, undefined, now], /^web4 10\.99\.3\.22: draining: no new flows$/],
    [['undrain', 'web4', '10.99.3.22', true, { ...ROW, state: 'healthy', drained: false, eligible: true, drainDeadlineMs: null }, now],
      /^web4 10\.99\.3\.22: drain ended: healthy, takes new flows again$/],
    [['undrain', 'web4', '10.99.3.22', false, { ...ROW, state: 'unhealthy', health: 'unhealthy', drained: false, eligible: false, drainDeadlineMs: null }, now],
      /^web4 10\.99\.3\.22: was not drained: unhealthy \(no new flows until it is healthy\)$/],
  ];
  for (const [args, re] of cases) {
    const m = drainMessage(...args);
    t.regex(m, re);
    if (args[0] === 'drain' && args[4]?.state === 'draining') t.false(/\bdrained\b(?! \))/.test(m.replace('(already drained)', '')), m);
  }
});

test('cli: `tunlb backends` shows a runtime weight as a difference from the file, and maintenance apart from drain', (t) => {
  const now = Date.parse('2026-12-07T12:00:00Z');
  const at = now - 60_000;
  const base = { ...ROW, drained: false, state: 'healthy', drainDeadlineMs: null, fileWeight: 1, weightOverride: null, maintenance: false, overrideBy: null, overrideAtMs: null };
  const text = backendTable(
    [
      { ...base, backend: '10.99.3.21', weight: 3, weightOverride: 3, eligible: true, reason: 'first check passed', overrideBy: 'lb2', overrideAtMs: at },
      { ...base, backend: '10.99.3.22', weight: 1, maintenance: true, eligible: false, reason: 'first check passed', overrideBy: 'lb1', overrideAtMs: at },
      { ...base, backend: '10.99.3.23', weight: 1, maintenance: true, state: 'draining', drained: true, eligible: false, reason: 'drained by operator on lb1', overrideBy: 'lb1', overrideAtMs: at },
      { ...base, backend: '10.99.3.24', weight: 1, eligible: true, reason: 'first check passed' },
    ],
    now,
  );
  const l = text.split('\n');
  t.regex(l[1]!, /^web4 +10\.99\.3\.21 +3 \(file 1\) +12 +healthy +healthy +yes +runtime weight 3 \(set on lb2 at 11:59:00Z, until reload\); first check passed$/);
  t.regex(l[2]!, /^web4 +10\.99\.3\.22 +1 +12 +maint +healthy +no +maintenance \(set on lb1 at 11:59:00Z, until reload\); first check passed$/);
  t.regex(l[3]!, /^web4 +10\.99\.3\.23 +1 +12 +draining\+maint +healthy +no +maintenance/);
  t.regex(l[4]!, /^web4 +10\.99\.3\.24 +1 +12 +healthy +healthy +yes +first check passed$/);
  t.is(l[0]!.indexOf('STATE'), l[2]!.indexOf('maint'), 'columns aligned');
});

test('cli: `tunlb weight` / `tunlb maintenance` say what the backend does now, cluster-wide', (t) => {
  const row = { ...ROW, drained: false, state: 'healthy', fileWeight: 1, maintenance: false };
  const cases: Array<[Parameters<typeof overrideMessage>, RegExp]> = [
    [['weight', 'web4', '10.99.3.22', true, { ...row, weight: 0, weightOverride: 0, eligible: true }], /^web4 10\.99\.3\.22: weight 0 \(file 1\) on every balancer until the next reload; no new flows; its 12 flow\(s\) keep their backend$/],
    [['weight', 'web4', '10.99.3.22', false, { ...row, weight: 3, weightOverride: 3, eligible: true }], /^web4 10\.99\.3\.22: weight 3 \(file 1\) \(already so\) on every balancer until the next reload; takes new flows;/],
    [['weight', 'web4', '10.99.3.22', true, { ...row, weight: 1, weightOverride: null, eligible: true }], /^web4 10\.99\.3\.22: weight 1 \(the file's\) on every balancer/],
    [['maintenance', 'web4', '10.99.3.22', true, { ...row, maintenance: true, eligible: false }], /^web4 10\.99\.3\.22: maintenance on every balancer until `off` or the next reload: no new flows; its 12 flow\(s\) continue; health checks go on \(health healthy\)$/],
    [['maintenance', 'web4', '10.99.3.22', true, { ...row, maintenance: false, eligible: true }], /^web4 10\.99\.3\.22: maintenance off: healthy, takes new flows$/],
  ];
  for (const [args, re] of cases) t.regex(overrideMessage(...args), re);
});
