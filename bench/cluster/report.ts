/**
 * Prints the result table of bench/cluster/run.sh from its raw results directory:
 *   run.kv                      "key value" lines (times, counters, CPU ticks, probe settings)
 *   measured                    commit, dist build time, machine
 *   newflows.json / .cmd        the UDP new-flow generator's summary and command line
 *   nf-{before,after}-lbN.json  admin stats (/api/v1/stats) of each balancer around the run
 *   nf-{before,after}-lbN.snmp  the balancer namespace's UDP InDatagrams InErrors RcvbufErrors
 *   nf-samples.txt              "epochMs flowsCreated" of lb1, about once a second
 *   nf-top.txt                  `top -b -n 2 -d 1` of the balancers, mid-run
 *   nf.cpu{0,1}[.bg]            CPU snapshots around the run (run.sh cpu_snap)
 *   traffic.json / stalls.json  failover runs: scripts/traffic.ts longlived and bench/cluster/stalls.ts
 *   {traffic,stalls}.cmd        their command lines
 *   {traffic,stalls}-flows.json lb1's /api/v1/flows before the kill (primary of each connection)
 *   {traffic,stalls}-lb1-after.json  lb1's stats after the run (membership events)
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
/** CPU (% of one core) of processes outside the lab between two cpu_snaps (their .bg files). */
function bgPct(f0: string, f1: string, hz: number): number {
  const a = snap(`${f0}.bg`);
  const b = snap(`${f1}.bg`);
  const w = (num(snap(f1).get('t_ms')) - num(snap(f0).get('t_ms'))) / 1000;
  let t = 0;
  for (const [pid, v] of b) t += v - (a.get(pid) ?? 0);
  return w > 0 ? (100 * t) / hz / w : NaN;
}
/** lb1's CPU and main-thread run-queue wait (% of wall time) between two cpu_snaps. */
function lb1Load(f0: string, f1: string, hz: number): string {
  const a = snap(f0);
  const b = snap(f1);
  const w = (num(b.get('t_ms')) - num(a.get('t_ms'))) / 1000;
  if (!(w > 0)) return '';
  const cpu = (100 * (num(b.get('lb1')) - num(a.get('lb1')))) / hz / w;
  const wait = (100 * (num(b.get('lb1_wait_ns')) - num(a.get('lb1_wait_ns')))) / 1e9 / w;
  return `lb1 CPU ${fmt(cpu)} %, its event loop waiting for a CPU ${fmt(wait)} % of the time; processes outside the lab ${fmt(bgPct(f0, f1, hz))} % of a core`;
}
/** A cpu_snap file of run.sh: "name value" lines. */
function snap(f: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of (text(f) ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) m.set(k, Number(v));
  }
  return m;
}
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
function profileTop(lb: string, win: [number, number] | undefined, top = 20): string[] {
  const pdir = join(dir, 'prof', lb);
  if (!existsSync(pdir)) return [];
  const out: string[] = [];
  for (const f of readdirSync(pdir).filter((x) => x.endsWith('.cpuprofile'))) {
    interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
    const p = JSON.parse(readFileSync(join(pdir, f), 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number };
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
    let ts = p.startTime;
    let life = 0;
    for (let i = 0; i < p.samples.length; i++) {
      const n = byId.get(p.samples[i]!);
      const dt = p.timeDeltas[i] ?? 0;
      ts += dt;
      life += dt;
      if (n === undefined) continue;
      if (win !== undefined && (ts < win[0] || ts > win[1])) continue;
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
    out.push(
      `${lb} ${f}: ${win ? `the new-flow run's ${((win[1] - win[0]) / 1e6).toFixed(1)} s window` : 'whole life'} (${(life / 1e6).toFixed(1)} s profiled): ` +
        `${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (JS + native calls + GC; syscalls and the softirq work they run count as busy)`,
    );
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
    const peersSent = dr('lb2', 'recordsSent') + dr('lb3', 'recordsSent');
    rows.push([
      'Records on the wire per new flow (whole cluster)',
      `${fmt((recs + peersSent) / Math.max(1, created), 2)}: lb1 ${fmt(recs)}, lb2 ${fmt(dr('lb2', 'recordsSent'))} (${fmt(dr('lb2', 'refreshesSent'))} REFRESH), lb3 ${fmt(dr('lb3', 'recordsSent'))} (${fmt(dr('lb3', 'refreshesSent'))} REFRESH) — ` +
        'a peer that is the primary of a flow lb1 encapsulated to it announces the flow again',
      'Δ `membership.replication.{recordsSent,refreshesSent}` of lb1..3 / Δ flows.created of lb1',
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
    const c0 = snap('nf.cpu0');
    const c1 = snap('nf.cpu1');
    const hz = num(kv.get('hz')) || 100;
    const wall = (num(c1.get('t_ms')) - num(c0.get('t_ms'))) / 1000 || secs;
    const dd = (k: string): number => num(c1.get(k)) - num(c0.get(k));
    const core = (ticks: number): number => (100 * ticks) / hz / wall;
    const ncpu = num(kv.get('ncpu'));
    const hostTotal = dd('host_total') || 1;
    const hostPct = (k: string): number => (100 * ncpu * dd(k)) / hostTotal;
    const srvTicks = ['srv1', 'srv2', 'srv3'].reduce((t, n) => t + dd(n), 0);
    const genPct = (100 * num(gen.cpuS)) / wall;
    const lb1Pct = core(dd('lb1'));
    rows.push([
      'CPU budget during the run (% of one core; the machine has ' + `${ncpu} CPUs = ${ncpu * 100} %)`,
      `lb1 **${fmt(lb1Pct)}**, lb2 ${fmt(core(dd('lb2')))}, lb3 ${fmt(core(dd('lb3')))}, servers (3 × node) ${fmt(core(srvTicks))}, generator ${fmt(genPct)}, ` +
        `processes outside the lab ${fmt(num(kv.get('nf_bg_pct')))}; host: user ${fmt(hostPct('host_user'))}, sys ${fmt(hostPct('host_sys'))}, softirq ${fmt(hostPct('host_softirq'))}, idle **${fmt(hostPct('host_idle'))}**`,
      '/proc/PID/stat utime+stime of each process, /proc/stat, over the run',
    ]);
    const run = dd('lb1_run_ns') / 1e6;
    const waitMs = dd('lb1_wait_ns') / 1e6;
    const pidName = (p: number): string => BALANCERS.find((b) => num(kv.get(`pid_${b}`)) === p) ?? String(p);
    const topTxt = [...topCpu().entries()].map(([p, c]) => `${pidName(p)} ${fmt(c, 1)} %`).join(', ');
    rows.push([
      "**Is lb1 at 100 % CPU?** (lb1's main thread, the event loop)",
      `ran ${fmt((100 * run) / (wall * 1000))} % of the time, **waited runnable for a CPU ${fmt((100 * waitMs) / (wall * 1000))} %**; \`top\` mid-run (PID: %CPU): ${topTxt || '—'}`,
      '/proc/PID/schedstat of lb1 (run, run-queue wait); `top -b -n 2 -d 1 -p lb1,lb2,lb3`',
    ]);
    const usPerFlow = (1e6 * (lb1Pct / 100) * wall) / Math.max(1, created);
    const ut = dd('lb1_utime');
    const stt = dd('lb1_stime');
    const userUs = (1e6 * ut) / hz / Math.max(1, created);
    const sysUs = (1e6 * stt) / hz / Math.max(1, created);
    rows.push([
      'lb1 CPU per new flow',
      `${fmt(usPerFlow, 1)} µs of lb1 CPU per flow created (its ${fmt(rx / Math.max(1, created), 2)} packets read per flow, record, encapsulation or NAT write, replies included): ` +
        `**≈ ${fmt(1e6 / usPerFlow)} new flows/s if lb1 had one core to itself** (a projection, not a measurement). ` +
        `Split: user ${fmt(userUs, 1)} µs (JS, V8, GC) + system ${fmt(sysUs, 1)} µs (TUN read/write and sendmmsg syscalls; with veth links the kernel work of the receiving namespaces runs inside them)`,
      'lb1 CPU seconds (utime, stime) / Δ flows.created',
    ]);
    const q0 = snap('nf.idle0');
    const q1 = snap('nf.idle1');
    const qw = (num(q1.get('t_ms')) - num(q0.get('t_ms'))) / 1000;
    if (qw > 0) {
      rows.push([
        'Idle cluster (no traffic; the last 1 s sample before the run)',
        BALANCERS.map((b) => `${b} ${fmt((100 * (num(q1.get(b)) - num(q0.get(b)))) / hz / qw, 1)} %`).join(', ') + ' of a core',
        '/proc/PID/stat utime+stime',
      ]);
    }
    // paced sweep
    const steps: string[] = [];
    let best = 0;
    for (let i = 0; existsSync(file(`sw${i}.json`)); i++) {
      const g = json(`sw${i}.json`);
      const b0 = json(`sw${i}-before.json`);
      const b1 = json(`sw${i}-after.json`);
      if (!g || !b0 || !b1) continue;
      const sec = num(g.secs) || 1;
      const cr = (num(b1.flows?.created) - num(b0.flows?.created)) / sec;
      const share = cr / Math.max(1, num(g.pps));
      const td = num(kv.get(`sw${i}_tundrop1`)) - num(kv.get(`sw${i}_tundrop0`));
      const s0 = snap(`sw${i}.cpu0`);
      const s1 = snap(`sw${i}.cpu1`);
      const w = (num(s1.get('t_ms')) - num(s0.get('t_ms'))) / 1000 || sec;
      const lbCpu = (100 * (num(s1.get('lb1')) - num(s0.get('lb1')))) / hz / w;
      const lbWait = (100 * (num(s1.get('lb1_wait_ns')) - num(s0.get('lb1_wait_ns')))) / 1e9 / w;
      const idle = (100 * ncpu * (num(s1.get('host_idle')) - num(s0.get('host_idle')))) / Math.max(1, num(s1.get('host_total')) - num(s0.get('host_total')));
      if (share >= 0.95) best = Math.max(best, cr);
      const us = (lbCpu / 100) * w * 1e6 / Math.max(1, cr * sec);
      const bgp = num(kv.get(`sw${i}_bg_pct`));
      steps.push(`${fmt(num(g.pps))} → **${fmt(cr)}** (${fmt(100 * share)} %, TUN drops ${fmt(td)}; lb1 CPU ${fmt(lbCpu)} % = ${fmt(us, 1)} µs/flow, waiting ${fmt(lbWait)} %; outside the lab ${fmt(bgp)} %, host idle ${fmt(idle)} %)`);
    }
    if (steps.length > 0) {
      rows.push([
        'Paced: offered/s → created by lb1/s',
        steps.join('<br>') + `<br>highest rate with ≥ 95 % of the offered flows created: **${best > 0 ? fmt(best) + '/s' : 'none'}**`,
        code(text('sweep.cmd')) + ' (RATE per step, FIRST = tuples used before)',
      ]);
    }
  } else if (nfCmd !== undefined) {
    rows.push(['1. New flows/s created by lb1', 'not measured (see newflows.err)', code(nfCmd)]);
  }

  // ---------------------------------------------------------------- failover --
  for (const name of ['traffic', 'stalls'] as const) {
    const fo = json(`${name}.json`);
    const cmd = text(`${name}.cmd`);
    const killMs = num(kv.get(`${name}_kill_ms`));
    const killedMs = num(kv.get(`${name}_killed_ms`)) || killMs;
    if (!fo?.perConn) {
      if (cmd) rows.push([`3. Failover (${name})`, `no result (see ${name}.out, ${name}.err)`, code(cmd)]);
      continue;
    }
    const conns = fo.perConn as Json[];
    const flows = (json(`${name}-flows.json`)?.flows ?? []) as Json[];
    const primaryOf = new Map<number, string>();
    for (const f of flows) {
      const m = /^tcp [\d.]+:(\d+) -> /.exec(String(f.key));
      if (m) primaryOf.set(Number(m[1]), String(f.primary));
    }
    const isVictim = (c: Json): boolean => primaryOf.get(num(c.localPort)) === 'lb2';
    const isOther = (c: Json): boolean => primaryOf.has(num(c.localPort)) && !isVictim(c);
    const killAt = (killMs - num(fo.startedAtEpochMs)) / 1000;
    const survived = `**${fo.survived}/${fo.conns} survived, ${fo.resets} resets**, ${fo.otherErrors} other ends, ${fo.connectFailures} connect failures`;
    if (name === 'traffic') {
      rows.push([
        `**3. Failover stall** (scripts/traffic.ts): ${fo.conns} long-lived TCP connections, ${fo.intervalMs} ms interval, SIGKILL of lb2 at ${fmt(killAt, 1)} s of ${fo.durationS} s`,
        `longest stall per connection (whole run, incl. set-up): ${stallCell(stallStats(conns))}; ${survived}`,
        code(cmd) + ' ; `bash scripts/lab.sh kill lb2`',
      ]);
      rows.push([
        '… by primary (traffic.ts)',
        `primary lb2: ${stallCell(stallStats(conns.filter(isVictim)))}; others: ${stallCell(stallStats(conns.filter(isOther)))}`,
        "primaries from lb1's `/api/v1/flows` before the kill",
      ]);
    } else {
      // longest gap before the kill (load alone) and from the kill on (a gap spanning the kill counts as failover)
      const win = (c: Json, after: boolean): number => {
        let m = 0;
        for (const [a, b] of (c.gaps ?? []) as Array<[number, number]>) if (after ? b > killMs : b <= killMs) m = Math.max(m, b - a);
        return m;
      };
      const st = (cs: Json[], after: boolean): ReturnType<typeof stallStats> => stallStats(cs.map((c) => ({ maxStallMs: win(c, after) })));
      rows.push([
        `**3. Failover stall** (bench/cluster/stalls.ts, ${fo.warmupS} s warm-up not counted): ${fo.conns} connections, ${fo.intervalMs} ms interval, SIGKILL of lb2 ${fmt((killMs - num(fo.windowStartMs)) / 1000, 1)} s into the ${fmt((num(fo.windowEndMs) - num(fo.windowStartMs)) / 1000, 1)} s window`,
        `longest stall per connection **from the kill on**: ${stallCell(st(conns, true))}; ${survived}`,
        code(cmd) + ' ; `bash scripts/lab.sh kill lb2`',
      ]);
      rows.push([
        '… by primary (stalls.ts, from the kill on)',
        `primary lb2: ${stallCell(st(conns.filter(isVictim), true))}; others: ${stallCell(st(conns.filter(isOther), true))}`,
        "primaries from lb1's `/api/v1/flows` before the kill; gaps > 3 intervals",
      ]);
      rows.push([
        '… before the kill (the load alone, same connections)',
        `${stallCell(st(conns, false))}`,
        'gaps that ended before the kill (gaps ≤ 3 intervals count as 0)',
      ]);
    }
    const events = (json(`${name}-lb1-after.json`)?.membership?.events ?? []) as Json[];
    const down = events.find((e) => e.type === 'peer_down' && e.id === 'lb2' && Date.parse(String(e.at)) >= killMs - 50);
    const servingMs = kv.get(`${name}_restart_serving_ms`);
    rows.push([
      `Detection and return (${name} run)`,
      (down
        ? `lb1 declared lb2 down ${fmt(Date.parse(String(down.at)) - killedMs)} ms after \`lab.sh kill\` returned (${fmt(Date.parse(String(down.at)) - killMs)} ms after it was called): "${down.reason}"`
        : 'no peer_down event of lb2 in lb1') +
        '; ' +
        (servingMs !== undefined && servingMs >= 0
          ? `lb2 serving again (every balancer sees it up and serving) ${fmt(servingMs / 1000, 1)} s after \`lab.sh start lb2\``
          : 'lb2 NOT serving 60 s after `lab.sh start lb2`'),
      "lb1's `membership.events` vs the kill time; `bash scripts/lab.sh start lb2`, then `membership.peers` of lb1..3",
    ]);
    rows.push([
      `Load during the ${name} run`,
      lb1Load(`${name}.cpu0`, `${name}.cpu1`, num(kv.get('hz')) || 100) || '—',
      '/proc/PID/stat, /proc/PID/schedstat of lb1; processes in the root network namespace',
    ]);
  }

  syncRows(kv, rows);

  console.log(`## tunlb cluster benchmark (3 balancers, entry lb1)\n`);
  console.log((text('measured') ?? '').trim().split('\n').map((l) => `- ${l}`).join('\n'));
  console.log(`- probes: every ${probeMs ?? '?'} ms, dead after ${misses ?? '?'} misses (cluster.probe in /run/tunlb-lab/lab.yaml)\n`);
  console.log('| measure | result | command |');
  console.log('|---|---|---|');
  for (const [a, b, c] of rows) console.log(`| ${a} | ${b} | ${c} |`);
  for (const n of notes) console.log(`\n${n}`);
  const g = json('newflows.json');
  const win: [number, number] | undefined = g?.monoStartUs ? [num(g.monoStartUs), num(g.monoEndUs)] : undefined;
  const prof = BALANCERS.flatMap((b) => profileTop(b, win));
  if (prof.length > 0) console.log(['', '```', ...prof, '```'].join('\n'));
}

/**
 * The sync test's rows (run.sh sync_one): per N of SYNC_FLOWS, from run.kv `syncN_*`, the
 * balancers' stats (syncN-lbX-end.json), lb2's after it served (syncN-lb2-after.json: its
 * membership.sync) and lb2's log (syncN-lb2.log: the sync events of the restarted process).
 */
function syncRows(kv: Map<string, number>, rows: Array<[string, string, string]>): void {
  const ns = [...kv.keys()].map((k) => /^sync(\d+)_start_ms$/.exec(k)?.[1]).filter((x): x is string => x !== undefined).map(Number).sort((a, b) => a - b);
  const cmd = text('sync.cmd');
  for (const n of ns) {
    const tag = `sync${n}`;
    const startMs = num(kv.get(`${tag}_start_ms`));
    const servingMs = kv.get(`${tag}_serving_ms`);
    const sync = json(`${tag}-lb2-after.json`)?.membership?.sync as Json | null | undefined;
    // lb2's log since its last start: first line, sync_started, sync_done (pino's ms times)
    const log = (text(`${tag}-lb2.log`) ?? '').split('\n');
    // scripts/lab.sh marks each start with a JSON line of event lab_start (older: a '==== ' line)
    const from = log.map((l) => l.startsWith('==== ') || l.includes('"event":"lab_start"')).lastIndexOf(true);
    const entries = log.slice(from + 1).flatMap((l) => {
      try {
        return [JSON.parse(l) as Json];
      } catch {
        return [];
      }
    });
    const at = (ev: string): number => Date.parse(String(entries.find((e) => e.event === ev)?.time ?? ''));
    const first = Date.parse(String(entries[0]?.time ?? ''));
    const t = (x: number): string => (Number.isFinite(x) ? `${fmt((x - startMs) / 1000, 2)} s` : '—');
    const after = (b: string): number => num(kv.get(`${tag}_after_${b}`));
    // lb2 restarted: its counter started again at 0
    const stalls = BALANCERS.map((b) => `${b} ${fmt(num(kv.get(`${tag}_stalls1_${b}`)) - (b === 'lb2' ? 0 : num(kv.get(`${tag}_stalls0_${b}`))))}`).join(', ');
    const peer = String(sync?.peer ?? '?');
    const resp = json(`${tag}-${peer}-end.json`)?.membership?.replication as Json | undefined;
    const killMs = num(kv.get(`${tag}_kill_ms`));
    // peer_down events after the kill other than lb2's own death: false failovers (late probe
    // answers on a loaded machine), by the balancer that declared them
    const falseDowns = BALANCERS.map((b) => {
      const n = ((json(`${tag}-${b}-end.json`)?.membership?.events ?? []) as Json[]).filter(
        (e) => e.type === 'peer_down' && e.id !== 'lb2' && Date.parse(String(e.at)) >= killMs,
      ).length;
      return `${b} ${n}`;
    }).join(', ');
    const recs = num(sync?.received);
    const ms = num(sync?.elapsedMs);
    rows.push([
      `**4. Bulk sync of ${fmt(n)} flows** to a restarted lb2 (SIGKILL, \`lab.sh start lb2\`, ${fmt(num(kv.get(`${tag}_lb1_flows`)))} flows in lb1 before; new flows arriving meanwhile)`,
      `**serving ${servingMs !== undefined && servingMs >= 0 ? `${fmt(servingMs / 1000, 2)} s` : 'NOT within 60 s'} after \`lab.sh start\`** (lb1 sees it up and serving); ` +
        `its sync: **${fmt(recs)} records from ${peer} in ${fmt(ms / 1000, 2)} s (${fmt(ms > 0 ? (recs * 1000) / ms : NaN)} records/s)**, ${fmt(num(sync?.sessions))} session(s), state ${sync?.state ?? '?'}; ` +
        `its process logged first at ${t(first)}, sync_started ${t(at('sync_started'))}, sync_done ${t(at('sync_done'))} after \`lab.sh start\`; ` +
        `flows before the kill: lb1 ${fmt(num(kv.get(`${tag}_before_lb1`)))}, lb2 ${fmt(num(kv.get(`${tag}_before_lb2`)))}, lb3 ${fmt(num(kv.get(`${tag}_before_lb3`)))}; ` +
        `3 s after the live traffic: lb2 ${fmt(after('lb2'))}, lb1 ${fmt(after('lb1'))}, lb3 ${fmt(after('lb3'))}; ` +
        (kv.get(`${tag}_converged_ms`) !== undefined
          ? `lb2 held as many flows as lb1 (${fmt(num(kv.get(`${tag}_final_lb1`)))}) ${fmt(num(kv.get(`${tag}_converged_ms`)) / 1000, 1)} s later (replication's refresh); `
          : `lb2 still short of lb1 90 s later (lb2 ${fmt(num(kv.get(`${tag}_final_lb2`)))}, lb1 ${fmt(num(kv.get(`${tag}_final_lb1`)))}); `) +
        `responder ${peer}: table snapshot ${fmt(num(resp?.syncSnapshotLastMs))} ms; event-loop stalls during the run: ${stalls}; peer_down events after the kill other than lb2's (false failovers; by the balancer that declared them): ${falseDowns}`,
      code(cmd),
    ]);
    rows.push([`Load during the ${fmt(n)}-flow sync`, lb1Load(`${tag}.cpu0`, `${tag}.cpu1`, num(kv.get('hz')) || 100) || '—', 'from `lab.sh start lb2` until lb1 sees it serving']);
  }
}

main();
