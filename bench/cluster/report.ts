/**
 * Prints the result table of bench/cluster/run.sh from its raw results directory:
 *   run.kv                      "key value" lines (times, counters, CPU ticks, probe settings)
 *   measured                    commit, dist build time, machine
 *   newflows.json / .cmd        the UDP new-flow generator's summary and command line
 *   nf-{before,after}-lbN.json  admin stats (/api/v1/stats) of each balancer around the run
 *   nf-{before,after}-lbN.snmp  the balancer namespace's UDP InDatagrams InErrors RcvbufErrors
 *   nf-samples.txt              "epochMs flowsCreated" of lb1, about once a second
 *   nf-top.txt                  `top -b -n 2 -d 1` of the balancers, mid-run
 *   baseline.json / failover.json / *.cmd   scripts/traffic.ts longlived summaries and commands
 *   failover-flows.json         lb1's /api/v1/flows before the kill (primary of each connection)
 *   failover-lb1-after.json     lb1's stats after the failover run (membership events)
 *   prof/lbN/*.cpuprofile       (BENCH_PROFILE=1) V8 CPU profiles of the balancers
 *
 * Usage: node --import tsx bench/cluster/report.ts DIR
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const TARGET_NEW_FLOWS = 50_000;
const BALANCERS = ['lb1', 'lb2', 'lb3'] as const;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let dir = '';
const file = (f: string): string => join(dir, f);
const text = (f: string): string | undefined => (existsSync(file(f)) ? readFileSync(file(f), 'utf8') : undefined);
function json(f: string): Json | undefined {
  const t = text(f);
  if (t === undefined) return undefined;
  try {
    return JSON.parse(t.trim().split('\n').pop() ?? '') as Json;
  } catch {
    return undefined;
  }
}
function readKv(): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of (text('run.kv') ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && v !== '') m.set(k, Number(v));
  }
  return m;
}
const num = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
const fmt = (x: number, d = 0): string => (Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '—');
const pct = (sorted: number[], p: number): number => {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
};
const code = (s: string | undefined): string => (s ? '`' + s.trim().replace(/\|/g, '\\|') + '`' : '—');
const snmp = (f: string): number[] => (text(f) ?? '0 0 0').trim().split(/\s+/).map(Number);

function stallStats(conns: Json[]): { n: number; p50: number; p90: number; p99: number; max: number } {
  const s = conns.map((c) => num(c.maxStallMs)).sort((a, b) => a - b);
  return { n: s.length, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: s.length ? s[s.length - 1]! : NaN };
}
const stallCell = (s: ReturnType<typeof stallStats>): string => `p50 **${fmt(s.p50)}** ms, p90 ${fmt(s.p90)} ms, p99 **${fmt(s.p99)}** ms, max **${fmt(s.max)}** ms (n = ${s.n})`;

/** top's last frame: PID → %CPU. */
function topCpu(): Map<number, number> {
  const m = new Map<number, number>();
  const t = text('nf-top.txt') ?? '';
  const frames = t.split(/^top - /m);
  const last = frames[frames.length - 1] ?? '';
  for (const line of last.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 12 && /^\d+$/.test(f[0]!) && /^[\d.]+$/.test(f[8]!)) m.set(Number(f[0]), Number(f[8]));
  }
  return m;
}

/** Top self-time functions of the V8 CPU profiles in dir/prof/<lb>/ (BENCH_PROFILE=1). */
function profileTop(lb: string, top = 20): string[] {
  const pdir = join(dir, 'prof', lb);
  if (!existsSync(pdir)) return [];
  const out: string[] = [];
  for (const f of readdirSync(pdir).filter((x) => x.endsWith('.cpuprofile'))) {
    interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
    const p = JSON.parse(readFileSync(join(pdir, f), 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const name = (n: Node): string => {
      const fn = n.callFrame.functionName || '(anonymous)';
      const url = n.callFrame.url.replace(/^file:\/\//, '').replace(/^.*\/(src|dist|node_modules)\//, '$1/');
      return url ? `${fn}  ${url}:${n.callFrame.lineNumber + 1}` : fn;
    };
    const self = new Map<string, number>();
    const incl = new Map<string, number>();
    let total = 0;
    let idle = 0;
    for (let i = 0; i < p.samples.length; i++) {
      const n = byId.get(p.samples[i]!);
      const dt = p.timeDeltas[i] ?? 0;
      if (n === undefined) continue;
      total += dt;
      if (n.callFrame.functionName === '(idle)') {
        idle += dt;
        continue;
      }
      self.set(name(n), (self.get(name(n)) ?? 0) + dt);
      const seen = new Set<string>();
      for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
        const k = name(byId.get(id)!);
        if (!seen.has(k)) {
          seen.add(k);
          incl.set(k, (incl.get(k) ?? 0) + dt);
        }
      }
    }
    const busy = total - idle;
    out.push(`${lb} ${f}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (JS + native + GC)`);
    out.push('  self time, % of busy:');
    [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)
      .forEach(([k, t]) => out.push(`  ${((100 * t) / busy).toFixed(1).padStart(5)}%  ${k}`));
    out.push('  inclusive time (project functions), % of busy:');
    [...incl.entries()].filter(([k]) => /  (src|dist)\//.test(k)).sort((a, b) => b[1] - a[1]).slice(0, top)
      .forEach(([k, t]) => out.push(`  ${((100 * t) / busy).toFixed(1).padStart(5)}%  ${k}`));
  }
  return out;
}

function main(): void {
  dir = process.argv[2] ?? '';
  if (!dir) {
    console.error('usage: report.ts DIR');
    process.exit(2);
  }
  const kv = readKv();
  const rows: Array<[string, string, string]> = [];
  const notes: string[] = [];
  const probeMs = kv.get('probe_interval_ms');
  const misses = kv.get('probe_misses');

  // ---------------------------------------------------------------- new flows (lb1) --
  const gen = json('newflows.json');
  const before = Object.fromEntries(BALANCERS.map((b) => [b, json(`nf-before-${b}.json`) ?? {}])) as Record<string, Json>;
  const after = Object.fromEntries(BALANCERS.map((b) => [b, json(`nf-after-${b}.json`) ?? {}])) as Record<string, Json>;
  const nfCmd = text('newflows.cmd')?.trim();
  if (gen !== undefined) {
    const secs = num(gen.secs) || 1;
    const d = (b: string, f: (s: Json) => unknown): number => num(f(after[b] ?? {})) - num(f(before[b] ?? {}));
    const created = d('lb1', (s) => s.flows?.created);
    const rate = created / secs;
    const rx = d('lb1', (s) => s.counters?.rxPackets);
    const tunDrop = num(kv.get('nf_tundrop1')) - num(kv.get('nf_tundrop0'));
    // peak one-second rate from the sampler
    const samples = (text('nf-samples.txt') ?? '').trim().split('\n').map((l) => l.split(' ').map(Number)).filter((x) => x.length === 2 && Number.isFinite(x[1]!));
    let peak = 0;
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i]![0]! - samples[i - 1]![0]!) / 1000;
      if (dt > 0.5) peak = Math.max(peak, (samples[i]![1]! - samples[i - 1]![1]!) / dt);
    }
    const drops = (after.lb1?.counters?.drops ?? {}) as Record<string, number>;
    const dropsBefore = (before.lb1?.counters?.drops ?? {}) as Record<string, number>;
    const dropText = Object.keys(drops).map((k) => [k, num(drops[k]) - num(dropsBefore[k])] as const).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${fmt(v)}`).join(', ');
    rows.push([
      '**1. New flows/s created by lb1** (3 balancers, replication on; UDP, one datagram per new 5-tuple)',
      `**${fmt(rate)}/s** over ${fmt(secs, 1)} s (${fmt(created)} flows; peak 1-s ${fmt(peak)}/s) — target ≥ ${fmt(TARGET_NEW_FLOWS)}/s: **${rate >= TARGET_NEW_FLOWS ? 'MET' : 'NOT MET'}**. ` +
        `Offered ${fmt(num(gen.pps))}/s (${fmt(num(gen.sent))} sent, ${fmt(num(gen.unique))} distinct tuples); lb1 read ${fmt(rx / secs)} pkt/s from tunlb0; ` +
        `kernel dropped ${fmt(tunDrop)} (${fmt((100 * tunDrop) / Math.max(1, num(gen.sent)), 1)} %) at lb1's full TUN queue` + (dropText ? `; lb1 drops: ${dropText}` : ''),
      code(nfCmd) + ' ; rate = Δ`flows.created` of lb1 / send time',
    ]);
    const r = (b: string): Json => after[b]?.membership?.replication ?? {};
    const rb = (b: string): Json => before[b]?.membership?.replication ?? {};
    const dr = (b: string, k: string): number => num(r(b)[k]) - num(rb(b)[k]);
    const recs = dr('lb1', 'recordsSent');
    const dgrams = dr('lb1', 'datagramsSent');
    rows.push([
      'Replication from lb1 during the run',
      `${fmt(recs)} records (${fmt(dr('lb1', 'createsSent'))} CREATE) = **${fmt((100 * recs) / Math.max(1, created), 1)} %** of the flows created, in ${fmt(dgrams)} datagrams (${fmt(dgrams / secs)}/s); ready-ring drops ${fmt(dr('lb1', 'queueDrops'))}`,
      'Δ `membership.replication.{recordsSent,datagramsSent,createsSent,queueDrops}` of lb1',
    ]);
    rows.push([
      '**2. Records per datagram**',
      `**${fmt(recs / Math.max(1, dgrams), 1)}** (recordsSent / datagramsSent of lb1)`,
      'same counters',
    ]);
    for (const b of ['lb2', 'lb3']) {
      const s0 = snmp(`nf-before-${b}.snmp`);
      const s1 = snmp(`nf-after-${b}.snmp`);
      rows.push([
        `Records received by ${b}`,
        `${fmt(dr(b, 'recordsReceived'))} received (${fmt((100 * dr(b, 'recordsReceived')) / Math.max(1, recs), 1)} % of lb1's), ${fmt(dr(b, 'applied'))} applied, ${fmt(dr(b, 'updated'))} updated, ${fmt(dr(b, 'ignored'))} ignored; ` +
          `flows.active ${fmt(num(after[b]?.flows?.active))} (lb1: ${fmt(num(after.lb1?.flows?.active))}); kernel UDP receive-buffer drops in ${b}'s namespace ${fmt(num(s1[2]) - num(s0[2]))}`,
        `Δ \`membership.replication.{recordsReceived,applied,updated,ignored}\`, \`flows.active\` of ${b}; RcvbufErrors of /proc/net/snmp in tunlb-${b}`,
      ]);
    }
    const srv = num(kv.get('nf_srv_rx1')) - num(kv.get('nf_srv_rx0'));
    const echoes = num(kv.get('nf_echo1')) - num(kv.get('nf_echo0'));
    rows.push([
      'Datagrams delivered to the servers / echoed back',
      `${fmt(srv / secs)}/s at the servers (${fmt((100 * srv) / Math.max(1, num(gen.sent)), 1)} % of sent); ${fmt(echoes / secs)}/s echoes back at the client (${fmt((100 * echoes) / Math.max(1, num(gen.sent)), 1)} %)`,
      'Δ eth0 rx_packets of tunlb-srv1..3; nft counter in tunlb-client',
    ]);
    const hz = num(kv.get('nf_hz')) || 100;
    const top = topCpu();
    const wall = (num(kv.get('nf_end_ms')) - num(kv.get('nf_start_ms'))) / 1000 || secs;
    const cpu = BALANCERS.map((b) => {
      const pid = num(before[b]?.pid);
      void pid;
      return `${b} ${fmt((100 * num(kv.get(`nf_ticks_${b}`))) / hz / wall)} %`;
    }).join(', ');
    const topTxt = [...top.entries()].map(([p, c]) => `${p}: ${fmt(c, 1)} %`).join(', ');
    const ncpu = num(kv.get('nf_ncpu'));
    const host = (100 * num(kv.get('nf_host_busy'))) / Math.max(1, num(kv.get('nf_host_total')));
    rows.push([
      'CPU during the run (% of one core)',
      `${cpu}; host busy ${fmt(host)} % of ${ncpu} CPUs. \`top\` mid-run (PID: %CPU): ${topTxt || '—'}`,
      '/proc/PID/stat utime+stime over the run; `top -b -n 2 -d 1 -p lb1,lb2,lb3`',
    ]);
  } else {
    rows.push(['1. New flows/s created by lb1', 'not measured (see newflows.err)', code(nfCmd)]);
  }

  // ---------------------------------------------------------------- failover --
  const base = json('baseline.json');
  if (base?.perConn) {
    const s = stallStats(base.perConn as Json[]);
    rows.push([
      `Baseline: ${base.conns} long-lived TCP connections, ${base.intervalMs} ms interval, ${base.durationS} s, nothing killed`,
      `longest stall per connection: ${stallCell(s)}; ${base.survived}/${base.conns} survived, ${base.resets} resets`,
      code(text('baseline.cmd')),
    ]);
  }
  const fo = json('failover.json');
  if (fo?.perConn) {
    const conns = fo.perConn as Json[];
    const all = stallStats(conns);
    const flows = (json('failover-flows.json')?.flows ?? []) as Json[];
    const primaryOf = new Map<number, string>();
    for (const f of flows) {
      const m = /^tcp [\d.]+:(\d+) -> /.exec(String(f.key));
      if (m) primaryOf.set(Number(m[1]), String(f.primary));
    }
    const victim = conns.filter((c) => primaryOf.get(num(c.localPort)) === 'lb2');
    const others = conns.filter((c) => primaryOf.has(num(c.localPort)) && primaryOf.get(num(c.localPort)) !== 'lb2');
    const killMs = num(kv.get('failover_kill_ms'));
    const killAt = killMs - num(fo.startedAtEpochMs);
    const events = (json('failover-lb1-after.json')?.membership?.events ?? []) as Json[];
    const down = events.find((e) => e.type === 'peer_down' && e.id === 'lb2' && Date.parse(String(e.at)) >= killMs - 50);
    const detect = down ? Date.parse(String(down.at)) - killMs : NaN;
    rows.push([
      `**3. Failover stall**: ${fo.conns} long-lived TCP connections, ${fo.intervalMs} ms interval, \`lab.sh kill lb2\` (SIGKILL) at ${fmt(killAt / 1000, 1)} s of ${fo.durationS} s`,
      `longest stall per connection, all: ${stallCell(all)}; **${fo.survived}/${fo.conns} survived, ${fo.resets} resets**, ${fo.otherErrors} other errors, ${fo.connectFailures} connect failures`,
      code(text('failover.cmd')) + ' ; `bash scripts/lab.sh kill lb2` ' + `${fmt((num(kv.get('failover_kill_ms')) - num(kv.get('failover_connected_ms'))) / 1000, 1)} s after all connected`,
    ]);
    rows.push([
      '… connections whose primary was lb2 / the others',
      `primary lb2: ${stallCell(stallStats(victim))}; others: ${stallCell(stallStats(others))}`,
      "primaries from lb1's `/api/v1/flows` before the kill",
    ]);
    rows.push([
      'Detection',
      down ? `lb1 declared lb2 down ${fmt(detect)} ms after the kill ("${down.reason}")` : 'no peer_down event of lb2 found in lb1',
      "lb1's `membership.events` (peer_down) vs the kill time",
    ]);
  }
  const vipMs = kv.get('restart_vip_ms');
  const servingMs = kv.get('restart_serving_ms');
  if (vipMs !== undefined) {
    rows.push([
      'lb2 back',
      servingMs !== undefined && servingMs >= 0 ? `serving again (every balancer sees it up and serving) ${fmt(servingMs / 1000, 1)} s after \`lab.sh start lb2\` (lab.sh returned after ${fmt(vipMs / 1000, 1)} s)` : 'NOT serving 60 s after lab.sh start lb2',
      '`bash scripts/lab.sh start lb2`; then `membership.peers` of lb1..3',
    ]);
  }

  console.log(`## tunlb cluster benchmark (3 balancers, entry lb1)\n`);
  console.log((text('measured') ?? '').trim().split('\n').map((l) => `- ${l}`).join('\n'));
  console.log(`- probes: every ${probeMs ?? '?'} ms, dead after ${misses ?? '?'} misses (cluster.probe in /run/tunlb-lab/lab.yaml)\n`);
  console.log('| measure | result | command |');
  console.log('|---|---|---|');
  for (const [a, b, c] of rows) console.log(`| ${a} | ${b} | ${c} |`);
  for (const n of notes) console.log(`\n${n}`);
  const prof = BALANCERS.flatMap((b) => profileTop(b));
  if (prof.length > 0) console.log(['', '```', ...prof, '```'].join('\n'));
}

main();
