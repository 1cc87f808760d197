/**
 * `tunlb run` start-up errors, as an operator sees them: exit code and stderr of the real CLI
 * (bin/tunlb → dist/, build first with `npm run build`), run inside a namespace this file
 * creates (tunlb-t-start-<random>, its loopback holding the balancer address) and
 * removes at the end. Needs root (namespaces, TUN); skips otherwise. Does not use the lab.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createNetns, ipIn, removeNetns } from './helpers/netns';
import { hasRoot, nativeSuite } from './helpers/root';
import { NOBODY, nobodyInNetns } from './helpers/unprivileged';
import { REPO, run, poll, staleBuild, type RunResult } from './helpers/lab';

const rootTest = nativeSuite('startup errors');
const NS = `tunlb-t-start-${randomBytes(4).toString('hex')}`;
const ADDR = '10.77.9.11';
const TUN = 'tunt-start0';
const TUNLB = path.join(REPO, 'bin', 'tunlb');
const NODE = process.execPath;

let dir = '';
const children: ChildProcess[] = [];

/**
 * A config for the test namespace. `lb2` adds a second balancer (its address absent from the
 * namespace); without it the config is a cluster of one, so `run` goes as far as the TUN device
 * without any peer traffic.
 */
function configText(o: { keyFile?: string; tun?: string; extra?: string; lb2?: string } = {}): string {
  return `
cluster: { id: start-test, key_file: ${o.keyFile ?? 'cluster.key'} }
balancers:
  - { id: lb1, address: ${ADDR} }
${o.lb2 ? `  - { id: lb2, address: ${o.lb2} }` : ''}
tun: { name: ${o.tun ?? TUN}, mtu: 1500 }
vips:
  - name: web4
    address: 10.77.0.10
    backends:
      - { address: 10.77.3.21 }
${o.extra ?? ''}`;
}

/** Writes a config file into the temp dir (readable by everyone: the no-root case needs it). */
function writeConfig(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text, { mode: 0o644 });
  return p;
}

/** `tunlb run` in the test namespace (optionally as nobody); bounded: 20 s. */
function tunlbRun(args: string[], opts: { asNobody?: boolean } = {}): Promise<RunResult> {
  const argv = opts.asNobody
    ? nobodyInNetns(NS, [NODE, TUNLB, 'run', ...args])
    : ['netns', 'exec', NS, NODE, TUNLB, 'run', ...args];
  return run('ip', argv, { timeoutMs: 20_000 });
}

/**
 * What the operator is told, as lines: `tunlb run` with its stderr on a pipe (as here, as in a
 * log file) writes its start-up failure as one `start_failed` JSON line (src/cli/main.ts); on a
 * terminal it prints the same message and config errors as plain lines, which this rebuilds
 * ("tunlb: MSG [CODE]", or "tunlb: MSG" and one line per config error). Throws when stderr
 * holds anything but JSON lines (a log stays JSON to the last line) or no start_failed line.
 */
function errLines(r: RunResult): string[] {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  const recs = lines.map((l) => {
    try {
      return JSON.parse(l) as { event?: string; msg?: string; code?: string; errors?: string[]; level?: string };
    } catch {
      throw new Error(`stderr line is not JSON: ${l}`);
    }
  });
  const f = recs.find((x) => x.event === 'start_failed');
  if (f === undefined) throw new Error(`no start_failed line in stderr:\n${r.stderr}`);
  if (f.level !== 'fatal') throw new Error(`start_failed at level ${f.level}`);
  return f.errors !== undefined ? [`tunlb: ${f.msg}`, ...f.errors] : [`tunlb: ${f.msg} [${f.code}]`];
}

test.before(() => {
  if (!hasRoot()) return;
  const stale = staleBuild();
  if (stale) console.log(`startup-errors: WARNING: ${stale}`);
  dir = mkdtempSync(path.join(tmpdir(), 'tunlb-start-'));
  chmodSync(dir, 0o755);
  writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
  // A key nobody (65534) can read, for the no-permission case.
  writeFileSync(path.join(dir, 'nobody.key'), randomBytes(32), { mode: 0o600 });
  chownSync(path.join(dir, 'nobody.key'), NOBODY, NOBODY);
  createNetns(NS);
  // The balancer's address on the namespace's loopback (no dummy/veth module needed).
  ipIn(NS, ['addr', 'add', `${ADDR}/32`, 'dev', 'lo']);
});

test.after.always(() => {
  if (!hasRoot()) return;
  for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid) c.kill('SIGKILL');
  removeNetns(NS);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

rootTest('a bad config exits 2 and names every field path with its fix', async (t) => {
  const cfg = writeConfig(
    'bad.yaml',
    configText({ lb2: '10.77.9' }).replace('- { address: 10.77.3.21 }', '- { address: 10.77.3.21, weight: -1 }') + 'tun_typo: 1\n',
  );
  const r = await tunlbRun(['--config', cfg, '--id', 'lb1', '--admin', 'off']);
  t.log(r.stderr.trim());
  t.is(r.code, 2, r.stderr);
  const lines = errLines(r);
  t.regex(lines[0]!, /^tunlb: .*bad\.yaml: 3 configuration errors: /);
  const body = lines.slice(1).join('\n');
  for (const field of ['balancers[1].address', 'vips[0].backends[0].weight', 'tun_typo']) {
    const line = lines.slice(1).find((l) => l.includes(`: ${field}: `));
    t.truthy(line, `no line for ${field} in:\n${body}`);
    t.regex(line!, /bad\.yaml:\d+:\d+: .*\(fix: .+\)$/, `${field}: position and fix`);
  }
});

rootTest('an unknown --id exits 2 and names the known ids', async (t) => {
  const cfg = writeConfig('two.yaml', configText({ lb2: '10.77.9.12' }));
  const r = await tunlbRun(['--config', cfg, '--id', 'lb7', '--admin', 'off']);
  t.log(r.stderr.trim());
  t.is(r.code, 2, r.stderr);
  t.regex(errLines(r)[0]!, /^tunlb: balancer id "lb7" is not in .*two\.yaml \(known: lb1, lb2\); pass one of these ids, or add "lb7" to balancers$/);
});

rootTest('a missing config file exits 2 with the fix', async (t) => {
  const r = await tunlbRun(['--config', path.join(dir, 'nope.yaml'), '--id', 'lb1']);
  t.is(r.code, 2, r.stderr);
  t.deepEqual(errLines(r), [`tunlb: config file ${path.join(dir, 'nope.yaml')} does not exist; pass the right path, or start from config/example.yaml [TUNLB_CONFIG_NOT_FOUND]`]);
});

rootTest('the balancer address not present in the namespace: one clear line, exit 1', async (t) => {
  const cfg = writeConfig('two.yaml', configText({ lb2: '10.77.9.12' }));
  const r = await tunlbRun(['--config', cfg, '--id', 'lb2', '--admin', 'off']);
  t.log(r.stderr.trim());
  t.is(r.code, 1, r.stderr);
  const lines = errLines(r);
  t.is(lines.length, 1, r.stderr);
  t.regex(lines[0]!, /^tunlb: balancers\[1\]\.address 10\.77\.9\.12 is not on any interface here: run the balancer in the host or network namespace that owns it \(e\.g\. ip netns exec NS tunlb run \.\.\.\), or fix balancers\[1\]\.address \[TUNLB_ADDRESS_NOT_PRESENT\]$/);
  t.false(await tunExists(), 'no TUN device left behind');
});

rootTest('a missing key file exits 2 with the line that says how to make one', async (t) => {
  const key = path.join(dir, 'missing.key');
  const cfg = writeConfig('nokey.yaml', configText({ keyFile: key }));
  const r = await tunlbRun(['--config', cfg, '--id', 'lb1', '--admin', 'off']);
  t.log(r.stderr.trim());
  t.is(r.code, 2, r.stderr);
  const lines = errLines(r);
  t.true(lines.length >= 1);
  t.true(lines[0]!.startsWith('tunlb: '), lines[0]);
  t.true(lines[0]!.includes(`key file ${key} does not exist`), lines[0]);
  t.true(lines[0]!.includes(`(fix: generate one: (umask 077; head -c 32 /dev/urandom > ${key}))`), lines[0]);
});

rootTest('a key file group or others may read, admin.listen beyond loopback without a token, the same by --admin: exit 2 with the field and the fix', async (t) => {
  const key = path.join(dir, 'open.key');
  writeFileSync(key, randomBytes(32), { mode: 0o644 });
  chmodSync(key, 0o644);
  const r1 = await tunlbRun(['--config', writeConfig('openkey.yaml', configText({ keyFile: key })), '--id', 'lb1', '--admin', 'off']);
  t.log(r1.stderr.trim());
  t.is(r1.code, 2, r1.stderr);
  t.true(errLines(r1)[0]!.includes(`cluster.key_file: key file ${key} has mode 0644: readable by group and others (fix: chmod 600 ${key}`), errLines(r1)[0]);

  const r2 = await tunlbRun(['--config', writeConfig('wide.yaml', configText({ extra: 'admin: { listen: "0.0.0.0:9180" }' })), '--id', 'lb1']);
  t.log(r2.stderr.trim());
  t.is(r2.code, 2, r2.stderr);
  t.regex(errLines(r2).join('\n'), /admin\.listen: 0\.0\.0\.0:9180 is not a loopback address and admin\.token_file is not set.*\(fix: set admin\.token_file /);

  const r3 = await tunlbRun(['--config', writeConfig('ok-admin.yaml', configText()), '--id', 'lb1', '--admin', '0.0.0.0:9180']);
  t.log(r3.stderr.trim());
  t.is(r3.code, 2, r3.stderr);
  t.regex(errLines(r3)[0]!, /^tunlb: admin endpoint 0\.0\.0\.0:9180 \(--admin\) is not on a loopback address and admin\.token_file is not set: .* \[TUNLB_USAGE\]$/);
  t.false(await tunExists(), 'no TUN device left behind');
});

async function tunExists(name = TUN): Promise<boolean> {
  return (await run('ip', ['-n', NS, 'link', 'show', 'dev', name], { timeoutMs: 5000 })).code === 0;
}

rootTest('TUN name busy: a second balancer with the same tun.name in the namespace gets one DEVICE_BUSY line; the first exits 0 on SIGTERM', async (t) => {
  const cfg = writeConfig('ok.yaml', configText());
  const first = spawn('ip', ['netns', 'exec', NS, NODE, TUNLB, 'run', '--config', cfg, '--id', 'lb1', '--admin', 'off', '--log-level', 'warn'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(first);
  let firstErr = '';
  first.stderr!.on('data', (d) => (firstErr += String(d)));
  const exited = new Promise<number | null>((resolve) => first.once('exit', (code) => resolve(code)));
  t.true(await poll(() => tunExists(), 15_000), `first balancer never created ${TUN}: ${firstErr}`);

  const r = await tunlbRun(['--config', cfg, '--id', 'lb1', '--admin', 'off']);
  t.log(r.stderr.trim());
  t.is(r.code, 1, r.stderr);
  const lines = errLines(r);
  t.is(lines.length, 1, r.stderr);
  t.is(lines[0], `tunlb: TUN device name ${TUN} is in use (another fd has it; open it with multiQueue to add queues) [TUNLB_DEVICE_BUSY]`);
  t.true(await tunExists(), 'the first balancer still holds the device');

  first.kill('SIGTERM');
  // The bound's timer is cleared once the race is decided: a pending one would keep this test
  // file's process alive for the rest of its 10 s after the last test.
  let bound: NodeJS.Timeout | undefined;
  const code = await Promise.race([exited, new Promise<string>((r) => (bound = setTimeout(() => r('timeout'), 10_000)))]);
  clearTimeout(bound);
  t.is(code, 0, `first balancer exit after SIGTERM: ${firstErr}`);
  t.true(await poll(async () => !(await tunExists()), 5000), `${TUN} still there after the balancer exited`);
});

rootTest('not root: a key only root can read, then the TUN device: one no-permission line each', async (t) => {
  const cfgRootKey = writeConfig('rootkey.yaml', configText());
  const r1 = await tunlbRun(['--config', cfgRootKey, '--id', 'lb1', '--admin', 'off'], { asNobody: true });
  t.log(r1.stderr.trim());
  t.is(r1.code, 2, r1.stderr);
  t.regex(errLines(r1)[0]!, /key file .*cluster\.key is not readable by this user \(EACCES\).*\(fix: run as a user that can read it, or chmod\/chown .*cluster\.key\)/);

  const cfg = writeConfig('nobody.yaml', configText({ keyFile: 'nobody.key' }));
  const r2 = await tunlbRun(['--config', cfg, '--id', 'lb1', '--admin', 'off'], { asNobody: true });
  t.log(r2.stderr.trim());
  t.is(r2.code, 1, r2.stderr);
  const lines = errLines(r2);
  t.is(lines.length, 1, r2.stderr);
  // EACCES when /dev/net/tun is not world-accessible (mode 0600 on some hosts), else EPERM.
  t.regex(lines[0]!, new RegExp(`^tunlb: cannot create TUN device ${TUN} \\((open /dev/net/tun: EACCES|TUNSETIFF: EPERM)\\): run as root or grant CAP_NET_ADMIN \\[TUNLB_NO_PERMISSION\\]$`));
  t.false(await tunExists());
});
