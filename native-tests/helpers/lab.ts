/**
 * The namespace lab (scripts/lab.sh) for native tests: the session lock, up/down, commands in
 * lab namespaces, and a balancer's admin endpoint (stats, flows). Root only; every command is
 * bounded in time; nothing here touches the root namespace's addresses or routes.
 *
 * The lab is shared with other users of this machine (benchmarks): a test file holds the lab
 * session lock (LAB_SESSION_LOCK, flock(1)) from before its first `up` to after its last
 * `down`. When an ancestor process already holds it (the documented way to run the suite is
 * `flock /tmp/tunlb-lab-session.lock npx ava ...`), the helper does not lock again (that would
 * deadlock: flock locks are per open file, not per process tree).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '..', '..');
export const LAB_SH = path.join(REPO, 'scripts', 'lab.sh');
export const LAB_DIR = '/run/tunlb-lab';
export const LAB_SESSION_LOCK = process.env['TUNLB_LAB_SESSION_LOCK'] ?? '/tmp/tunlb-lab-session.lock';

export const VIP4 = '10.99.0.10';
export const VIP6 = 'fd99::10';
export const CLIENT_NS = 'tunlb-client';
export const SERVERS = ['srv1', 'srv2', 'srv3'] as const;
export const ADMIN = '127.0.0.1:9180';

export interface RunResult {
  code: number;
  /** Signal that ended the command (e.g. SIGTERM on timeout), or null. */
  signal: string | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Runs a command (argv, no shell) with a hard timeout; never rejects. */
export function run(file: string, args: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: opts.timeoutMs ?? 60_000, killSignal: 'SIGKILL', maxBuffer: 1 << 26, env: opts.env ?? process.env },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: string }) | null;
        resolve({
          code: e ? (typeof e.code === 'number' ? e.code : -1) : 0,
          signal: e?.signal ?? null,
          stdout: String(stdout),
          stderr: String(stderr) + (e && typeof e.code !== 'number' && !e.signal ? String(e) : ''),
          seconds: Number(process.hrtime.bigint() - t0) / 1e9,
        });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** `scripts/lab.sh ARGS` (callers hold the session lock: see holdLabSession). */
export function lab(args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return run('bash', [LAB_SH, ...args], { timeoutMs });
}

/** Runs argv inside lab namespace `ns` ("client", "lb1", or the full "tunlb-..." name). */
export function execIn(ns: string, argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  const full = ns.startsWith('tunlb-') ? ns : `tunlb-${ns}`;
  return run('ip', ['netns', 'exec', full, ...argv], opts);
}

/** Starts argv inside a namespace as a child (for long-running clients); the caller kills it. */
export function spawnIn(ns: string, argv: string[]): ChildProcess {
  const full = ns.startsWith('tunlb-') ? ns : `tunlb-${ns}`;
  return spawn('ip', ['netns', 'exec', full, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
}

// ---- the session lock ----

/** PIDs of this process and its ancestors. */
function ancestors(): Set<number> {
  const out = new Set<number>();
  let pid = process.pid;
  for (let i = 0; i < 64 && pid > 1; i++) {
    out.add(pid);
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
      break;
    }
  }
  return out;
}

/** True when one of our ancestors holds a flock on `file` (from /proc/locks). */
export function lockHeldByAncestor(file: string): boolean {
  let ino: number;
  try {
    ino = statSync(file).ino;
  } catch {
    return false;
  }
  const mine = ancestors();
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 12345 00:1a:67890 0 EOF"
    const f = line.trim().split(/\s+/);
    if (f[1] !== 'FLOCK' || f[0]?.endsWith('->')) continue;
    const devIno = f[5]?.split(':');
    if (devIno && Number(devIno[2]) === ino && mine.has(Number(f[4]))) return true;
  }
  return false;
}

export interface LabSession {
  /** How the lock was obtained, for the test log. */
  how: string;
  release(): void;
}

/**
 * Holds the lab session lock until release() (or this process's exit): a `flock` child that
 * keeps the lock while its stdin is open. Waits at most `waitMs` for another holder.
 */
export async function holdLabSession(waitMs = 15 * 60_000): Promise<LabSession> {
  if (lockHeldByAncestor(LAB_SESSION_LOCK)) return { how: `held by the caller (${LAB_SESSION_LOCK})`, release: () => undefined };
  const t0 = Date.now();
  const child = spawn('flock', ['-w', String(Math.ceil(waitMs / 1000)), LAB_SESSION_LOCK, 'sh', '-c', 'echo locked; exec cat >/dev/null'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += String(d);
      if (out.includes('locked')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`could not take the lab session lock ${LAB_SESSION_LOCK} (flock exit ${code})`)));
  });
  child.unref();
  return {
    how: `taken after ${((Date.now() - t0) / 1000).toFixed(1)} s (${LAB_SESSION_LOCK})`,
    release: () => {
      child.stdin!.end();
    },
  };
}

// ---- namespaces ----

/** The lab's namespace names, from scripts/lab-topology.sh (the one source of truth). */
export async function labNamespaces(): Promise<string[]> {
  const r = await run('bash', [
    '-c',
    `source ${JSON.stringify(path.join(REPO, 'scripts', 'lab-topology.sh'))}; ` +
      'for n in "$LAB_CLIENT" "$LAB_ROUTER" "${LAB_BALANCERS[@]}" "${LAB_SERVERS[@]}"; do echo "$LAB_NS_PREFIX$n"; done',
  ]);
  return r.stdout.split('\n').filter(Boolean);
}

export async function existingNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { timeoutMs: 5000 });
  return r.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter(Boolean);
}

/** True when `dev` exists in namespace `ns`. */
export async function linkExists(ns: string, dev: string): Promise<boolean> {
  const full = ns.startsWith('tunlb-') ? ns : `tunlb-${ns}`;
  return (await run('ip', ['-n', full, 'link', 'show', 'dev', dev], { timeoutMs: 5000 })).code === 0;
}

// ---- admin endpoint (inside the balancer's namespace) ----

async function adminGet(lb: string, urlPath: string): Promise<unknown> {
  const r = await execIn(lb, ['curl', '-sS', '-m', '3', `http://${ADMIN}${urlPath}`], { timeoutMs: 5000 });
  if (r.code !== 0) throw new Error(`admin ${lb} ${urlPath}: curl exit ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as unknown;
}

export interface AdminStats {
  id: string;
  device: { name: string; features: Record<string, boolean>; stats: Record<string, number> };
  flows: { active: number; created: number };
  counters: { rxPackets: number; txPackets: number; forwardPackets: number; replyPackets: number; drops: Record<string, number> };
}

import type { FlowRow } from '../../src/control/flow-listing';
export type { FlowRow };

export function adminStats(lb = 'lb1'): Promise<AdminStats> {
  return adminGet(lb, '/api/v1/stats') as Promise<AdminStats>;
}

export async function adminFlows(lb = 'lb1', limit = 100000): Promise<{ total: number; flows: FlowRow[] }> {
  return (await adminGet(lb, `/api/v1/flows?limit=${limit}`)) as { total: number; flows: FlowRow[] };
}

/** The PID recorded by lab.sh for a lab process (lb1, srv2, ...), or undefined. */
export function labPid(name: string): number | undefined {
  try {
    const pid = Number(readFileSync(path.join(LAB_DIR, 'pids', `${name}.pid`), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** True while `pid` exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** The lab's entry as `lab.sh up` built it ('ecmp' or 'single'; from its state file). */
export function labEntry(): 'ecmp' | 'single' {
  try {
    return /^ENTRY_NOW=ecmp$/m.test(readFileSync(path.join(LAB_DIR, 'state'), 'utf8')) ? 'ecmp' : 'single';
  } catch {
    return 'single';
  }
}

/** The lab router's nexthops (gateway addresses, sorted) for `addr` (IPv4 or IPv6). */
export async function routerNexthops(addr: string): Promise<string[]> {
  const r = await execIn('router', ['ip', addr.includes(':') ? '-6' : '-4', 'route', 'show', addr], { timeoutMs: 5000 });
  return [...r.stdout.matchAll(/via (?:inet6 )?(\S+)/g)].map((m) => m[1]!).sort();
}

/** Polls `cond` every `everyMs` until it is true (returns true) or `timeoutMs` passes (false). */
export async function poll(cond: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The last `n` lines of a lab log (lb1, srv2, ...), for failure messages. */
export function labLogTail(name: string, n = 30): string {
  try {
    return readFileSync(path.join(LAB_DIR, 'logs', `${name}.log`), 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return `(no log ${name})`;
  }
}

/** A message when dist/ (what bin/tunlb runs) is older than one of `files` (default: the data path), else undefined. */
export function staleBuild(files: readonly string[] = ['src/dataplane/forwarder.ts', 'src/control/balancer.ts', 'src/packet/nat.ts', 'src/packet/parse.ts']): string | undefined {
  for (const f of files) {
    const dst = path.join(REPO, 'dist', f.replace(/\.ts$/, '.js'));
    let built: number;
    try {
      built = statSync(dst).mtimeMs;
    } catch {
      return `${dst} missing: run npm run build`;
    }
    if (statSync(path.join(REPO, f)).mtimeMs > built + 1000) return `${f} is newer than dist/ (bin/tunlb runs dist): run npm run build`;
  }
  return undefined;
}
