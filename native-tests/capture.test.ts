/**
 * `tunlb capture` live, in the namespace lab with three balancers (`scripts/lab.sh up`): on
 * tunlb-lb1's lbnet interface while tunlb-client fetches the VIP over HTTP, the pcap file is
 * read by `tcpdump -r` packet for packet, and `--decode` (with the lab config: names and the
 * cluster key) shows verified flow records and encapsulated packets; probes and their acks;
 * a capture on the TUN device (raw IP link type); SIGINT ends a capture with a complete file;
 * a missing interface is one clear error.
 *
 * Needs root (namespaces, TUN, libpcap) and tcpdump; skips with a message otherwise. Runs
 * bin/tunlb (dist/): build first (`npm run build`). The lab is shared: the file holds the lab
 * session lock from before `up` to after `down`. All traffic stays between lab namespaces;
 * every process is bounded in time and killed by its PID.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { hasRoot, nativeSuite } from './helpers/root';
import { LAB_DIR, REPO, VIP4, execIn, holdLabSession, lab, labLogTail, run, type LabSession } from './helpers/lab';

const rootTest = nativeSuite('capture (lab, 3 balancers)');
const TUNLB = path.join(REPO, 'bin', 'tunlb');
const LAB_CONFIG = path.join(LAB_DIR, 'lab.yaml');

let session: LabSession | undefined;
let up = false;
let upError = '';
let dir = '';
const children = new Set<ChildProcess>();

/** dist/ must hold the capture code as it is in src/ (bin/tunlb runs dist). */
function staleCapture(): string | undefined {
  for (const f of ['capture.ts', 'capture-decode.ts', 'capture-pcap.ts']) {
    const js = path.join(REPO, 'dist', 'src', 'capture', f.replace(/\.ts$/, '.js'));
    let built: number;
    try {
      built = statSync(js).mtimeMs;
    } catch {
      return `${js} missing: run npm run build`;
    }
    if (statSync(path.join(REPO, 'src', 'capture', f)).mtimeMs > built + 1000) return `src/capture/${f} is newer than dist/: run npm run build`;
  }
  return undefined;
}

test.before(async () => {
  if (!hasRoot()) return;
  dir = mkdtempSync(path.join(tmpdir(), 'tunlb-capture-'));
  const stale = staleCapture();
  if (stale) {
    upError = stale;
    return;
  }
  session = await holdLabSession();
  await lab(['down']);
  const r = await lab(['up', '--entry', 'single'], 180_000);
  up = r.code === 0;
  if (!up) upError = `lab up failed (exit ${r.code}):\n${r.stderr.slice(-3000)}\n${labLogTail('lb1')}`;
});

test.after.always('lab down, release the lab', async (t) => {
  if (!hasRoot()) return;
  for (const c of children) if (c.pid && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
  try {
    if (session) {
      const r = await lab(['down']);
      t.log(`lab down: exit ${r.code} in ${r.seconds.toFixed(1)} s`);
    }
  } finally {
    session?.release();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

interface Capture {
  child: ChildProcess;
  /** Resolves when the capture prints that it listens. */
  listening: Promise<void>;
  /** Resolves with the exit code and output when it ends. */
  done: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
}

/** Starts `tunlb capture ARGS` inside lab namespace tunlb-NS (a child we kill by PID). */
function startCapture(ns: string, args: string[]): Capture {
  const child = spawn('ip', ['netns', 'exec', `tunlb-${ns}`, process.execPath, TUNLB, 'capture', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  let onListen: () => void = () => undefined;
  const listening = new Promise<void>((resolve) => (onListen = resolve));
  child.stdout!.on('data', (d) => (stdout += String(d)));
  child.stderr!.on('data', (d) => {
    stderr += String(d);
    if (stderr.includes('capture: listening')) onListen();
  });
  const done = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      // let the pipes drain
      setTimeout(() => resolve({ code, signal, stdout, stderr }), 100);
    });
  });
  void done.then(() => onListen());
  return { child, listening, done };
}

/** Waits for the capture to end by itself, else SIGINT (then SIGKILL) it by PID; returns its result. */
async function finish(c: Capture, ms: number) {
  const timer = setTimeout(() => c.child.pid && c.child.exitCode === null && process.kill(c.child.pid, 'SIGINT'), ms);
  const killer = setTimeout(() => c.child.pid && c.child.exitCode === null && process.kill(c.child.pid, 'SIGKILL'), ms + 5000);
  const r = await c.done;
  clearTimeout(timer);
  clearTimeout(killer);
  return r;
}

/** `count` HTTP GETs of the VIP from tunlb-client, each on a new connection (a new flow). */
function curls(count: number) {
  return execIn('client', ['sh', '-c', `i=0; ok=0; while [ $i -lt ${count} ]; do i=$((i+1)); curl -s -m 2 -o /dev/null http://${VIP4}/ && ok=$((ok+1)); done; echo ok=$ok`], {
    timeoutMs: 120_000,
  });
}

/** Packets in a pcap file as tcpdump reads them (one line each). */
async function tcpdumpRead(file: string, filter: string[] = []) {
  const r = await run('tcpdump', ['-nn', '-r', file, ...filter], { timeoutMs: 20_000 });
  return { ...r, lines: r.stdout.split('\n').filter(Boolean) };
}

function needLab(t: { fail(m: string): void }): boolean {
  if (!up) t.fail(upError || 'the lab is not up');
  return up;
}

rootTest('records and encapsulated packets on lb1 lbnet0: a pcap file tcpdump reads, and decoded lines', async (t) => {
  if (!needLab(t)) return;
  const file = path.join(dir, 'lbnet.pcap');
  const N = 40;
  // Flow records go to the group; encapsulated packets to the data port. (Probes, unicast on
  // the control port every 50 ms, are left out: they would fill the count before any flow.)
  const c = startCapture('lb1', [
    '--iface', 'lbnet0', '--filter', 'udp port 7947 or (udp port 7946 and dst host 239.99.0.1)',
    '--count', String(N), '--duration-s', '60', '--out', file, '--decode', '--config', LAB_CONFIG,
  ]);
  await c.listening;
  const client = await curls(60);
  t.log(`client: ${client.stdout.trim()} in ${client.seconds.toFixed(1)} s`);
  const r = await finish(c, 20_000);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, new RegExp(`capture: ${N} packet\\(s\\) written to .* \\(stopped: count\\)`));

  const td = await tcpdumpRead(file);
  t.is(td.code, 0, td.stderr);
  t.is(td.lines.length, N, td.stdout);
  t.regex(td.stderr, /link-type EN10MB/);
  t.true(td.lines.every((l) => /\.794[67]\b/.test(l)), 'every packet matches the filter');

  const lines = r.stdout.split('\n').filter(Boolean);
  t.true(lines.length >= N, r.stdout); // one line per packet, one per record
  const record = lines.find((l) => / lb\d → group records seq=\d+ (\[\d+\/\d+\] )?create 10\.99\.1\.2:\d+→10\.99\.0\.10:80\/tcp primary=lb\d backup=(lb\d|none) backend=#\d\(10\.99\.3\.2\d\)$/.test(l));
  t.truthy(record, `a verified create record line in:\n${r.stdout}`);
  const enc = lines.find((l) => / lb1 → lb[23] encap [A-Z_|-]+ primary=lb[23] backup=(lb\d|none) backend=#\d\(10\.99\.3\.2\d\)( gso=\S+| csum=partial)? inner 10\.99\.1\.2:\d+→10\.99\.0\.10:80 tcp \[/.test(l));
  t.truthy(enc, `an encap line from lb1 to lb2/lb3 in:\n${r.stdout}`);
  t.false(/unverified|BAD MAC|other cluster|not a tunlb envelope/.test(r.stdout), r.stdout);
  t.log(`${record}\n${enc}`);
  // tunlb capture --read gives the same lines from the file (no libpcap involved)
  const rd = await run(process.execPath, [TUNLB, 'capture', '--read', file, '--config', LAB_CONFIG], { timeoutMs: 30_000 });
  t.is(rd.code, 0, rd.stderr);
  const strip = (s: string): string[] => s.split('\n').filter(Boolean).map((l) => l.replace(/^\S+ /, ''));
  t.deepEqual(strip(rd.stdout), strip(r.stdout).filter((l) => !/probe-ack/.test(l)));
});

rootTest('probes and acks on the probe port, with round trips; no key: "(unverified)"', async (t) => {
  if (!needLab(t)) return;
  const c = startCapture('lb1', ['--iface', 'lbnet0', '--filter', 'udp port 7948', '--count', '12', '--duration-s', '20', '--decode']);
  const r = await finish(c, 25_000);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n').filter(Boolean);
  t.is(lines.length, 12, r.stdout);
  t.true(lines.some((l) => / 10\.99\.2\.11 → 10\.99\.2\.1[23] probe seq=\d+ target=#[12] status=serving \(unverified\)$/.test(l)), r.stdout);
  t.true(lines.some((l) => / 10\.99\.2\.1[23] → 10\.99\.2\.11 probe-ack seq=\d+ status=serving( rtt=\d+\.\d{3}ms)? \(unverified\)$/.test(l)), r.stdout);
  t.regex(r.stderr, /key: none/);
});

rootTest('the TUN device: raw IP link type, VIP packets readable by tcpdump', async (t) => {
  if (!needLab(t)) return;
  const file = path.join(dir, 'tun.pcap');
  const c = startCapture('lb1', ['--iface', 'tunlb0', '--filter', 'tcp port 80', '--count', '10', '--duration-s', '30', '--out', file, '--decode']);
  await c.listening;
  await curls(5);
  const r = await finish(c, 20_000);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /listening on tunlb0 \(RAW\)/);
  const td = await tcpdumpRead(file);
  t.is(td.code, 0, td.stderr);
  t.regex(td.stderr, /link-type RAW/);
  t.is(td.lines.length, 10, td.stdout);
  // the client's SYN to the VIP as it comes out of the kernel into tunlb0
  t.true(td.lines.some((l) => /IP 10\.99\.1\.2\.\d+ > 10\.99\.0\.10\.80: Flags \[S\]/.test(l)), td.stdout);
  t.true(r.stdout.split('\n').some((l) => / 10\.99\.1\.2:\d+ → 10\.99\.0\.10:80 tcp \[S\] len=0$/.test(l)), r.stdout);
});

rootTest('SIGINT ends a capture with a complete file; an unknown interface is one clear error', async (t) => {
  if (!needLab(t)) return;
  const file = path.join(dir, 'sigint.pcap');
  const c = startCapture('lb1', ['--iface', 'lbnet0', '--out', file]);
  await c.listening;
  await new Promise((r) => setTimeout(r, 1500)); // probes flow all the time on lbnet0
  process.kill(c.child.pid!, 'SIGINT');
  const r = await finish(c, 10_000);
  t.is(r.code, 0, r.stderr);
  const m = /capture: (\d+) packet\(s\) written to .* \(stopped: signal\)/.exec(r.stderr);
  t.truthy(m, r.stderr);
  const td = await tcpdumpRead(file);
  t.is(td.code, 0, td.stderr);
  t.is(td.lines.length, Number(m![1]));
  t.true(td.lines.length > 0);

  const bad = await run('ip', ['netns', 'exec', 'tunlb-lb1', process.execPath, TUNLB, 'capture', '--iface', 'nosuch0', '--decode', '--count', '1'], { timeoutMs: 20_000 });
  t.is(bad.code, 2, bad.stderr);
  t.regex(bad.stderr, /^tunlb: no interface nosuch0 here \(interfaces: .*lbnet0/);
  // One line, plus the usage hint every usage error ends with (docs/operations.md "Exit codes").
  t.deepEqual(bad.stderr.trim().split('\n').slice(1), ["run 'tunlb capture --help' for its usage"], bad.stderr);
  const badFilter = await run('ip', ['netns', 'exec', 'tunlb-lb1', process.execPath, TUNLB, 'capture', '--iface', 'lbnet0', '--filter', 'udp port', '--decode'], { timeoutMs: 20_000 });
  t.is(badFilter.code, 2, badFilter.stderr);
  t.regex(badFilter.stderr, /^tunlb: bad --filter 'udp port'/);
});
