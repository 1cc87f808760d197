/**
 * Real health checks (src/backends/checks.ts, health-monitor.ts) against a real server, in two
 * namespaces this file creates and removes (tunlb-t-health-<random>-c / -s, IPv4 and IPv6 on
 * one veth pair). Nothing runs in the root namespace: the checker (a HealthMonitor with the
 * real checks, raw-socket ICMP included) and the server (node:http) are child processes
 * started with `ip netns exec`, and are stopped by their PIDs. Does not use the lab.
 *
 *   checker ns  veth 10.213.0.1/24 fd13:213::1/64  ──  10.213.0.2/24 fd13:213::2/64 veth  server ns
 *
 * Checks (interval 200 ms, timeout 150 ms, rise 2, fall 3): tcp, http (GET /health → 200)
 * and icmp, each over IPv4 and IPv6, plus an http check expecting 200 from /fail (503).
 *   server up                → healthy;
 *   server process killed    → tcp/http unhealthy within interval × fall (+ the last check's
 *                              time and a little slack), "3 consecutive failures: connect
 *                              ECONNREFUSED"; icmp stays healthy (the host still answers);
 *   server restarted         → healthy after exactly rise (2) successes;
 *   host stops answering echo (icmp_echo_ignore_all) → icmp unhealthy within the same bound
 *                              ("… icmp timeout after 150 ms"); back → healthy after rise;
 * and the checker leaves no TIME_WAIT sockets (checks close with RST) and holds no raw socket
 * while idle. One-shot checks show that timeouts are honoured and reasons are precise.
 * Needs root; skips otherwise.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { createNetns, ipIn, removeNetns, runIn } from './helpers/netns';
import { hasRoot, nativeSuite } from './helpers/root';

const rootTest = nativeSuite('health checks');
const REPO = path.resolve(__dirname, '..');
const TAG = randomBytes(3).toString('hex');
const NS_C = `tunlb-t-health-${TAG}-c`;
const NS_S = `tunlb-t-health-${TAG}-s`;
const C4 = '10.213.0.1';
const S4 = '10.213.0.2';
const C6 = 'fd13:213::1';
const S6 = 'fd13:213::2';
const NOBODY4 = '10.213.0.3';
const NOBODY6 = 'fd13:213::3';
const PORT = 8080;
const SILENT_PORT = 8081;

const INTERVAL = 200;
const TIMEOUT = 150;
const RISE = 2;
const FALL = 3;
/** Scheduling and pipe latency allowed on top of the documented bound. */
const SLACK = 250;
/** Unhealthy at most this long after the failure starts (interval × fall + the deciding check's time). */
const DOWN_BOUND = INTERVAL * FALL + TIMEOUT + SLACK;

let dir = '';
const children = new Set<ChildProcess>();

const SERVER_JS = `
const http = require('node:http');
const net = require('node:net');
const srv = http.createServer((req, res) => { res.writeHead(req.url === '/health' ? 200 : 503, { 'content-type': 'text/plain' }); res.end('x'); });
srv.listen(${PORT}, '::', () => {
  // Accepts connections and never answers (http timeout case).
  const silent = net.createServer((s) => s.on('error', () => undefined));
  silent.listen(${SILENT_PORT}, '::', () => process.stdout.write('listening\\n'));
});
`;

const CHECKER_JS = `
const { performance } = require('node:perf_hooks');
const fs = require('node:fs');
const REPO = process.env.TUNLB_REPO;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const checks = require(REPO + '/src/backends/checks.ts');
if (process.argv[2] === 'oneshot') {
  const targets = JSON.parse(process.argv[3]);
  const pinger = new checks.IcmpPinger();
  Promise.all(targets.map(async (t) => {
    const t0 = performance.now();
    const r = await checks.runCheck(t, pinger);
    return { ...r, elapsed: performance.now() - t0 };
  })).then((results) => {
    out({ type: 'results', results, openSockets: pinger.openSockets });
    pinger.close();
  });
} else {
  const { parseConfig } = require(REPO + '/src/config/index.ts');
  const { deriveHashKey } = require(REPO + '/src/decision/hash-key.ts');
  const { HealthMonitor } = require(REPO + '/src/backends/health-monitor.ts');
  const config = parseConfig(fs.readFileSync(process.argv[3], 'utf8'), 'health.yaml', { env: { TUNLB_HEALTH_KEY: 'ab'.repeat(32) } });
  const m = new HealthMonitor({
    config, selfIndex: 0, hashKey: deriveHashKey(config.cluster.key.reveal()), live: new Uint8Array([1]),
    nowMs: () => performance.now(), broadcast: () => undefined,
    onChange: (_v, _b, e) => out({ type: 'event', vip: e.vip, backend: e.backend, from: e.from, to: e.to, reason: e.reason }),
  });
  const keepAlive = setInterval(() => undefined, 1000); // the monitor's timers are unref'd
  process.on('SIGTERM', () => {
    m.stop();
    clearInterval(keepAlive);
    out({ type: 'stopped', states: m.states().map((s) => [s.vip, s.state]), stats: m.stats });
    process.exit(0);
  });
  m.start();
  out({ type: 'ready' });
}
`;

function healthYaml(): string {
  const h = (extra: string) => `{ interval_ms: ${INTERVAL}, timeout_ms: ${TIMEOUT}, rise: ${RISE}, fall: ${FALL}, ${extra} }`;
  const vip = (name: string, addr: string, backend: string, health: string) =>
    `  - { name: ${name}, address: "${addr}", ports: [${PORT}], backends: [ { address: "${backend}", health: ${health} } ] }`;
  return [
    'cluster: { id: health-native, key_env: TUNLB_HEALTH_KEY }',
    'balancers:',
    `  - { id: lb1, address: ${C4} }`,
    'vips:',
    vip('tcp4', '10.214.0.1', S4, h('type: tcp')),
    vip('http4', '10.214.0.2', S4, h('type: http, path: /health')),
    vip('icmp4', '10.214.0.3', S4, h('type: icmp')),
    vip('tcp6', 'fd14::1', S6, h('type: tcp')),
    vip('http6', 'fd14::2', S6, h('type: http, path: /health')),
    vip('icmp6', 'fd14::3', S6, h('type: icmp')),
    vip('http4bad', '10.214.0.4', S4, h('type: http, path: /fail, expect_status: 200')),
    '',
  ].join('\n');
}

/** A child process inside a namespace (`ip netns exec` execs: the PID is the program's). */
function spawnIn(ns: string, argv: string[]): ChildProcess {
  const c = spawn('ip', ['netns', 'exec', ns, ...argv], { cwd: REPO, env: { ...process.env, TUNLB_REPO: REPO }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(c);
  c.once('exit', () => children.delete(c));
  return c;
}

/** Kills one child by its PID and waits for its exit. */
async function killChild(c: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  process.kill(c.pid!, signal);
  await exited;
}

/** JSON lines of a child's stdout, each with its arrival time (performance.now()). */
class Lines {
  readonly items: Array<{ at: number; v: any }> = [];
  #waiters: Array<() => void> = [];
  stderr = '';
  constructor(c: ChildProcess) {
    createInterface({ input: c.stdout! }).on('line', (l) => {
      let v: unknown = l;
      try {
        v = JSON.parse(l);
      } catch {
        /* plain text */
      }
      this.items.push({ at: performance.now(), v });
      for (const w of this.#waiters.splice(0)) w();
    });
    c.stderr!.on('data', (d) => (this.stderr += String(d)));
  }
  /** The first line from index `from` on that matches, with its arrival time; throws after timeoutMs. */
  async wait(pred: (v: any) => boolean, timeoutMs: number, from = 0): Promise<{ at: number; v: any }> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const hit = this.items.slice(from).find((x) => pred(x.v));
      if (hit) return hit;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting; lines: ${JSON.stringify(this.items.slice(from).map((x) => x.v))}; stderr: ${this.stderr}`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }
}

let currentServer: ChildProcess | null = null;

/** Starts the server (stopping an earlier one first: a failed assertion skips a test's cleanup). */
async function startServer(): Promise<ChildProcess> {
  if (currentServer) await killChild(currentServer);
  const c = spawnIn(NS_S, [process.execPath, path.join(dir, 'server.js')]);
  currentServer = c;
  await new Lines(c).wait((v) => v === 'listening', 10_000);
  return c;
}

/** Waits until the checker namespace reaches the server over IPv4 and IPv6 (veth carrier, ND). */
async function waitReachable(): Promise<void> {
  const deadline = performance.now() + 10_000;
  for (const argv of [['ping', '-c1', '-W1', S4], ['ping', '-6', '-c1', '-W1', S6]]) {
    for (;;) {
      try {
        runIn(NS_C, argv, 3000);
        break;
      } catch (e) {
        if (performance.now() > deadline) throw new Error(`${argv.join(' ')} in ${NS_C} fails: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

const event = (vip: string, to: string) => (v: any) => v?.type === 'event' && v.vip === vip && v.to === to;

test.before(async () => {
  if (!hasRoot()) return;
  dir = mkdtempSync(path.join(tmpdir(), 'tunlb-health-'));
  writeFileSync(path.join(dir, 'server.js'), SERVER_JS);
  writeFileSync(path.join(dir, 'checker.js'), CHECKER_JS);
  writeFileSync(path.join(dir, 'health.yaml'), healthYaml());
  createNetns(NS_C, { ipv6: true });
  createNetns(NS_S, { ipv6: true });
  // The pair is created inside the checker namespace, its peer moved straight to the server's.
  ipIn(NS_C, ['link', 'add', 'hc0', 'type', 'veth', 'peer', 'name', 'hs0', 'netns', NS_S]);
  ipIn(NS_C, ['addr', 'add', `${C4}/24`, 'dev', 'hc0']);
  ipIn(NS_C, ['addr', 'add', `${C6}/64`, 'dev', 'hc0', 'nodad']);
  ipIn(NS_S, ['addr', 'add', `${S4}/24`, 'dev', 'hs0']);
  ipIn(NS_S, ['addr', 'add', `${S6}/64`, 'dev', 'hs0', 'nodad']);
  ipIn(NS_C, ['link', 'set', 'hc0', 'up']);
  ipIn(NS_S, ['link', 'set', 'hs0', 'up']);
  await waitReachable();
});

test.after.always(async () => {
  if (!hasRoot()) return;
  for (const c of [...children]) await killChild(c).catch(() => undefined);
  removeNetns(NS_C);
  removeNetns(NS_S);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

rootTest('one-shot checks: timeouts honoured, precise reasons, no raw socket left open', async (t) => {
  const server = await startServer();
  const targets = [
    { type: 'tcp', address: S4, family: 4, port: PORT, path: null, expectStatus: null, timeoutMs: 300 },
    { type: 'tcp', address: S6, family: 6, port: PORT, path: null, expectStatus: null, timeoutMs: 300 },
    { type: 'tcp', address: S6, family: 6, port: 8082, path: null, expectStatus: null, timeoutMs: 300 },
    { type: 'tcp', address: NOBODY4, family: 4, port: PORT, path: null, expectStatus: null, timeoutMs: 300 },
    { type: 'http', address: S4, family: 4, port: PORT, path: '/health', expectStatus: 200, timeoutMs: 300 },
    { type: 'http', address: S6, family: 6, port: PORT, path: '/fail', expectStatus: 200, timeoutMs: 300 },
    { type: 'http', address: S4, family: 4, port: SILENT_PORT, path: '/', expectStatus: 200, timeoutMs: 300 },
    { type: 'icmp', address: S4, family: 4, port: null, path: null, expectStatus: null, timeoutMs: 300 },
    { type: 'icmp', address: S6, family: 6, port: null, path: null, expectStatus: null, timeoutMs: 300 },
    { type: 'icmp', address: NOBODY4, family: 4, port: null, path: null, expectStatus: null, timeoutMs: 300 },
    { type: 'icmp', address: NOBODY6, family: 6, port: null, path: null, expectStatus: null, timeoutMs: 300 },
  ];
  const c = spawnIn(NS_C, [process.execPath, '--import', 'tsx', path.join(dir, 'checker.js'), 'oneshot', JSON.stringify(targets)]);
  const lines = new Lines(c);
  const { v } = await lines.wait((x) => x?.type === 'results', 20_000);
  const rs = v.results as Array<{ ok: boolean; reason: string; rttMs: number; elapsed: number }>;
  rs.forEach((r, i) => t.log(`${targets[i]!.type} ${targets[i]!.address}:${targets[i]!.port ?? ''}: ok=${r.ok} ${r.reason} (${r.elapsed.toFixed(1)} ms)`));
  const expect: Array<[boolean, RegExp]> = [
    [true, /^tcp connect in [\d.]+ ms$/],
    [true, /^tcp connect in [\d.]+ ms$/],
    [false, /^connect ECONNREFUSED$/],
    [false, /^connect timeout after 300 ms$/],
    [true, /^http 200 in [\d.]+ ms$/],
    [false, /^http status 503 \(expected 200\)$/],
    [false, /^http timeout after 300 ms$/],
    [true, /^icmp echo reply in [\d.]+ ms$/],
    [true, /^icmp echo reply in [\d.]+ ms$/],
    [false, /^icmp (timeout after 300 ms|destination unreachable .*)$/],
    [false, /^icmp (timeout after 300 ms|destination unreachable .*)$/],
  ];
  expect.forEach(([ok, re], i) => {
    t.is(rs[i]!.ok, ok, `target ${i}`);
    t.regex(rs[i]!.reason, re, `target ${i}`);
    t.true(rs[i]!.elapsed < 300 + 100, `target ${i} took ${rs[i]!.elapsed} ms (timeout 300)`);
  });
  for (const i of [3, 6]) t.true(rs[i]!.elapsed >= 295, `target ${i} waited its timeout`);
  t.is(v.openSockets, 0, 'the pinger closed its raw sockets once no echo was outstanding');
  await new Promise<void>((r) => (c.exitCode !== null ? r() : c.once('exit', () => r())));
  t.is(c.exitCode, 0, lines.stderr);
  await killChild(server);
});

rootTest('monitor: up → healthy; server killed → unhealthy within interval × fall; restarted → healthy after rise; same for icmp v4/v6', async (t) => {
  let server = await startServer();
  const checker = spawnIn(NS_C, [process.execPath, '--import', 'tsx', path.join(dir, 'checker.js'), 'monitor', path.join(dir, 'health.yaml')]);
  const ev = new Lines(checker);
  await ev.wait((v) => v?.type === 'ready', 20_000);
  const UP = ['tcp4', 'http4', 'icmp4', 'tcp6', 'http6', 'icmp6'];
  const TCPISH = ['tcp4', 'http4', 'tcp6', 'http6'];
  const ICMP = ['icmp4', 'icmp6'];
  for (const vip of UP) {
    const { v } = await ev.wait(event(vip, 'healthy'), INTERVAL + TIMEOUT + 2000);
    t.regex(v.reason, /^first check passed: /, vip);
  }
  const bad = await ev.wait(event('http4bad', 'unhealthy'), INTERVAL + TIMEOUT + 2000);
  t.is(bad.v.reason, 'first check failed: http status 503 (expected 200)');

  // --- the server process stops ---
  await new Promise((r) => setTimeout(r, 3 * INTERVAL));
  let mark = ev.items.length;
  const killedAt = performance.now();
  await killChild(server);
  for (const vip of TCPISH) {
    const { at, v } = await ev.wait(event(vip, 'unhealthy'), DOWN_BOUND + 2000, mark);
    const ms = at - killedAt;
    t.log(`${vip}: unhealthy ${ms.toFixed(0)} ms after the server was killed (bound ${INTERVAL * FALL} + ${TIMEOUT} + slack ${SLACK}): ${v.reason}`);
    t.true(ms <= DOWN_BOUND, `${vip}: ${ms} ms`);
    t.is(v.reason, '3 consecutive failures: connect ECONNREFUSED');
  }
  t.false(ev.items.slice(mark).some((x) => ICMP.includes(x.v?.vip)), 'icmp is not affected by the server process');

  // --- the server comes back ---
  await new Promise((r) => setTimeout(r, 2 * INTERVAL));
  mark = ev.items.length;
  const restartedAt = performance.now();
  server = await startServer();
  const listeningAt = performance.now();
  for (const vip of TCPISH) {
    const { at, v } = await ev.wait(event(vip, 'healthy'), RISE * INTERVAL + SLACK + 2000, mark);
    t.log(`${vip}: healthy ${(at - listeningAt).toFixed(0)} ms after the server listened again: ${v.reason}`);
    t.regex(v.reason, /^2 consecutive successes: /);
    t.true(at - listeningAt >= (RISE - 1) * INTERVAL * 0.9 - 5, `${vip}: not before ${RISE} successes`);
    t.true(at - listeningAt <= RISE * INTERVAL + SLACK, `${vip}: ${at - listeningAt} ms`);
  }
  void restartedAt;

  // --- the host stops answering echo requests (v4 and v6) ---
  mark = ev.items.length;
  const mutedAt = performance.now();
  runIn(NS_S, ['sysctl', '-qw', 'net.ipv4.icmp_echo_ignore_all=1', 'net.ipv6.icmp.echo_ignore_all=1']);
  for (const vip of ICMP) {
    const { at, v } = await ev.wait(event(vip, 'unhealthy'), DOWN_BOUND + 2000, mark);
    const ms = at - mutedAt;
    t.log(`${vip}: unhealthy ${ms.toFixed(0)} ms after echo replies stopped: ${v.reason}`);
    t.true(ms <= DOWN_BOUND, `${vip}: ${ms} ms`);
    t.is(v.reason, `3 consecutive failures: icmp timeout after ${TIMEOUT} ms`);
  }
  t.false(ev.items.slice(mark).some((x) => TCPISH.includes(x.v?.vip)), 'tcp/http not affected');
  mark = ev.items.length;
  const unmutedAt = performance.now();
  runIn(NS_S, ['sysctl', '-qw', 'net.ipv4.icmp_echo_ignore_all=0', 'net.ipv6.icmp.echo_ignore_all=0']);
  for (const vip of ICMP) {
    const { at, v } = await ev.wait(event(vip, 'healthy'), RISE * INTERVAL + TIMEOUT + SLACK + 2000, mark);
    t.log(`${vip}: healthy ${(at - unmutedAt).toFixed(0)} ms after echo replies resumed: ${v.reason}`);
    t.regex(v.reason, /^2 consecutive successes: icmp echo reply in /);
    t.true(at - unmutedAt <= RISE * INTERVAL + TIMEOUT + SLACK, `${vip}: ${at - unmutedAt} ms`);
  }

  // --- sockets: no TIME_WAIT (RST close), no raw socket held while idle ---
  const tw = runIn(NS_C, ['ss', '-Htan', 'state', 'time-wait']).trim();
  t.is(tw, '', `TIME_WAIT sockets in the checker namespace:\n${tw}`);
  let idle = 0;
  for (let i = 0; i < 20; i++) {
    if (runIn(NS_C, ['ss', '-Hwan']).trim() === '') idle++;
    await new Promise((r) => setTimeout(r, 13));
  }
  t.log(`raw sockets: none open in ${idle}/20 samples`);
  t.true(idle >= 15, `raw socket open in ${20 - idle}/20 samples`);

  // --- clean stop ---
  const exited = new Promise<number | null>((r) => checker.once('exit', (code) => r(code)));
  process.kill(checker.pid!, 'SIGTERM');
  const stopped = await ev.wait((v) => v?.type === 'stopped', 5000);
  t.deepEqual(Object.fromEntries(stopped.v.states), { tcp4: 'healthy', http4: 'healthy', icmp4: 'healthy', tcp6: 'healthy', http6: 'healthy', icmp6: 'healthy', http4bad: 'unhealthy' });
  t.is(await exited, 0, ev.stderr);
  await killChild(server);
});
