/**
 * Cluster-test helpers around the namespace lab (scripts/lab.sh): the lab session lock, lab
 * commands, a balancer's admin endpoint, scripts/traffic.ts in the client namespace, and
 * sending hand-made UDP datagrams from inside a lab namespace. Root only. Every command is
 * bounded in time; every process started here is killed by its PID; nothing touches the root
 * namespace (commands run through `ip netns exec tunlb-*`).
 */
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { execIn, LAB_DIR, REPO } from './lab';

// The lab session lock, lab.sh, commands in namespaces, polling, logs: helpers/lab.ts.
export { holdLabSession, lab, execIn, poll, run, labLogTail, staleBuild, LAB_DIR, REPO, type LabSession, type RunResult } from './lab';

export const TRAFFIC_TS = path.join(REPO, 'scripts', 'traffic.ts');
export const LAB_CONFIG = path.join(LAB_DIR, 'lab.yaml');
export const BALANCERS = ['lb1', 'lb2', 'lb3'] as const;
export type BalancerId = (typeof BALANCERS)[number];
export const ADMIN = '127.0.0.1:9180';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- admin endpoint of a balancer (inside its namespace) ----

import type { PeerView } from '../../src/cluster/membership';
export type { PeerView };

export interface MembershipEventRow {
  at: string;
  type: string;
  id: string;
  reason?: string;
  rttMs?: number;
  incarnation?: number;
}

export interface ClusterStats {
  id: string;
  index: number;
  uptimeS: number;
  flows: { active: number; created: number; expired: number };
  counters: { rxPackets: number; txPackets: number; peerTxPackets: number; peerRxPackets: number; failoverPackets: number; secondChancePackets: number; drops: Record<string, number> };
  membership: null | {
    incarnation: number;
    status: string;
    syncedFrom: string | null;
    peers: PeerView[];
    replication: Record<string, unknown>;
    controlRejected: Record<string, number>;
    events: MembershipEventRow[];
  };
}

import type { FlowRow } from '../../src/control/flow-listing';
export type { FlowRow };

async function adminGet(lb: string, urlPath: string): Promise<unknown> {
  const r = await execIn(lb, ['curl', '-sS', '-m', '3', `http://${ADMIN}${urlPath}`], { timeoutMs: 5000 });
  if (r.code !== 0) throw new Error(`admin ${lb} ${urlPath}: curl exit ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as unknown;
}

export function stats(lb: string): Promise<ClusterStats> {
  return adminGet(lb, '/api/v1/stats') as Promise<ClusterStats>;
}

/** stats(lb), or undefined when the endpoint does not answer (balancer down or starting). */
export async function statsOrUndefined(lb: string): Promise<ClusterStats | undefined> {
  try {
    return await stats(lb);
  } catch {
    return undefined;
  }
}

export async function flows(lb: string, limit = 100000): Promise<{ total: number; flows: FlowRow[] }> {
  return (await adminGet(lb, `/api/v1/flows?limit=${limit}`)) as { total: number; flows: FlowRow[] };
}

// ---- scripts/traffic.ts in the client namespace ----

export interface TrafficRun {
  child: ChildProcess;
  /** Every stdout line so far. */
  lines: string[];
  /** Resolves when the generator exits (never rejects): exit code, every line, the JSON lines. */
  done: Promise<{ code: number | null; lines: string[]; json: Array<Record<string, unknown>>; stderr: string }>;
  /** Resolves with the first stdout line matching re (or undefined when the process ends first). */
  waitLine(re: RegExp, timeoutMs: number): Promise<string | undefined>;
  /** longlived: end the run now (SIGINT), with its summary as at the end of --duration-s. */
  stop(): void;
  kill(): void;
}

/**
 * Starts `node --import tsx scripts/traffic.ts ARGS` in tunlb-client. The generator bounds
 * itself (--duration-s); killAfterMs is a second, outer bound (SIGKILL by PID).
 */
export function startTraffic(args: string[], killAfterMs: number, opts: { nice?: number } = {}): TrafficRun {
  // ip netns exec (and nice) exec node: the child's PID is the generator's. `nice`: the lab
  // runs clients, balancers and servers on the same two cores; a flood generator at lower
  // priority models clients on other machines instead of starving the balancers of CPU.
  const niceArgs = opts.nice !== undefined ? ['nice', '-n', String(opts.nice)] : [];
  const child = spawn('ip', ['netns', 'exec', 'tunlb-client', ...niceArgs, process.execPath, '--import', 'tsx', TRAFFIC_TS, ...args], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string | undefined) => void }> = [];
  let buf = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of waiters.splice(0)) {
        if (w.re.test(line)) w.resolve(line);
        else waiters.push(w);
      }
    }
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (stderr += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  const done = new Promise<{ code: number | null; lines: string[]; json: Array<Record<string, unknown>>; stderr: string }>((resolve) => {
    child.once('close', (code) => {
      clearTimeout(killer);
      if (buf) lines.push(buf);
      for (const w of waiters.splice(0)) w.resolve(undefined);
      const json: Array<Record<string, unknown>> = [];
      for (const l of lines) {
        if (!l.startsWith('{')) continue;
        try {
          json.push(JSON.parse(l) as Record<string, unknown>);
        } catch {
          /* not JSON after all */
        }
      }
      resolve({ code, lines, json, stderr });
    });
  });
  return {
    child,
    lines,
    done,
    waitLine(re, timeoutMs) {
      const seen = lines.find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(undefined);
      return new Promise((resolve) => {
        const w = { re, resolve: (l: string | undefined) => (clearTimeout(timer), resolve(l)) };
        const timer = setTimeout(() => {
          const k = waiters.indexOf(w);
          if (k >= 0) waiters.splice(k, 1);
          resolve(undefined);
        }, timeoutMs);
        waiters.push(w);
      });
    },
    stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/**
 * Waits for a `longlived --json` run to end and returns its summary with the run's output
 * lines; fails the test (with the output) and returns undefined when there is no summary.
 */
export async function longlivedSummary(t: ExecutionContext, gen: TrafficRun): Promise<{ res: LonglivedResult; lines: string[] } | undefined> {
  const d = await gen.done;
  const res = d.json.find((j) => j['mode'] === 'longlived') as LonglivedResult | undefined;
  if (res === undefined) {
    t.fail(`no longlived summary: exit ${d.code}\n${d.lines.join('\n')}\n${d.stderr}`);
    return undefined;
  }
  return { res, lines: d.lines };
}

/** This balancer serves and sees every configured peer up and serving (peers in `expectDown` excepted). */
export function allServing(s: ClusterStats | undefined, expectDown: string[] = []): boolean {
  const m = s?.membership;
  if (!m || m.status !== 'serving') return false;
  return m.peers.every((p) => p.state === 'self' || expectDown.includes(p.id) || (p.state === 'up' && p.status === 'serving'));
}

/** What `traffic.ts longlived --json` prints last. */
export interface LonglivedResult {
  conns: number;
  intervalMs: number;
  connected: number;
  connectFailures: number;
  survived: number;
  resets: number;
  otherErrors: number;
  echoes: number;
  startedAtEpochMs: number;
  maxStallMs: number;
  maxStallConn: number | null;
  maxStallEndedAtMs: number;
  p50StallMs: number;
  p99StallMs: number;
  perConn: Array<{ id: number; localPort: number; ok: number; maxStallMs: number; maxStallEndedAtMs: number; ended: string | null; endedAtMs: number | null }>;
  events: Array<{ tMs: number; conn: number; event: string }>;
  timeline: Array<{ t: number; alive: number; echoes: number; worstStallMs: number }>;
}

// ---- hand-made datagrams from inside a namespace ----

const SEND_JS = `
const dgram = require('node:dgram');
const [bind, sport, dst, port, ...hex] = process.argv.slice(1);
const s = dgram.createSocket(bind.includes(':') ? 'udp6' : 'udp4');
s.bind({ address: bind, port: Number(sport) }, async () => {
  for (const h of hex) {
    await new Promise((r, j) => s.send(Buffer.from(h, 'hex'), Number(port), dst, (e) => (e ? j(e) : r())));
    await new Promise((r) => setTimeout(r, 20));
  }
  s.close();
  console.log('sent ' + hex.length);
});
`;

/**
 * Sends each payload as one UDP datagram from bindAddr (an address of namespace ns; source port
 * `sport`, 0 = any) to dst:port.
 */
export async function sendUdpFrom(ns: string, bindAddr: string, dst: string, port: number, payloads: Uint8Array[], sport = 0): Promise<void> {
  const r = await execIn(ns, [process.execPath, '-e', SEND_JS, bindAddr, String(sport), dst, String(port), ...payloads.map((p) => Buffer.from(p).toString('hex'))], { timeoutMs: 10_000 });
  if (r.code !== 0 || !r.stdout.includes(`sent ${payloads.length}`)) throw new Error(`sending from ${ns} ${bindAddr} failed: ${r.code} ${r.stderr}`);
}

/**
 * The UDP payloads of a classic pcap file (linktype 1, Ethernet; IPv4 and IPv6 without
 * extension headers), with their addresses. For replaying captured control datagrams.
 */
export function pcapUdpPayloads(file: string): Array<{ src: string; dst: string; dport: number; payload: Buffer }> {
  const b = readFileSync(file);
  if (b.length < 24) return [];
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const u32 = (o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const linktype = u32(20);
  const out: Array<{ src: string; dst: string; dport: number; payload: Buffer }> = [];
  let off = 24;
  while (off + 16 <= b.length) {
    const incl = u32(off + 8);
    const pkt = b.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    let p = linktype === 1 ? 14 : linktype === 113 ? 16 : 0; // Ethernet, Linux cooked
    const etherType = linktype === 1 ? pkt.readUInt16BE(12) : linktype === 113 ? pkt.readUInt16BE(14) : 0x0800;
    if (etherType === 0x0800) {
      const ihl = (pkt[p]! & 0x0f) * 4;
      if (pkt[p + 9] !== 17) continue;
      const src = Array.from(pkt.subarray(p + 12, p + 16)).join('.');
      const dst = Array.from(pkt.subarray(p + 16, p + 20)).join('.');
      p += ihl;
      const ulen = pkt.readUInt16BE(p + 4);
      out.push({ src, dst, dport: pkt.readUInt16BE(p + 2), payload: Buffer.from(pkt.subarray(p + 8, p + ulen)) });
    }
  }
  return out;
}
