/**
 * Prints the result table of bench/dataplane/run.sh from its raw results directory:
 *   <mb>.kv             "key value" lines written by run.sh (UDP counters, CPU shares)
 *   <mb>-rr-udp.txt     rr.c output (n, lost, min/p50/p90/p99/max/mean in µs)
 *   <mb>-rr-tcp.txt
 *   <mb>-tcp1.json      iperf3 -J, 1 and 4 streams
 *   <mb>-tcp4.json
 *   prof/*.cpuprofile   (BENCH_PROFILE=1) V8 CPU profile of the tunlb process
 * Middleboxes (<mb>): tunlb, kernel, haproxy, cplain, cgso; a missing one is a "—" column.
 *
 * Usage: node --import tsx bench/dataplane/report.ts DIR
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** 64-byte UDP pps of the C plain TUN forwarder in shared/bench/RESULTS.md (used when not measured). */
const C_PLAIN_REFERENCE_PPS = 185_000;
const TARGET_UDP_VS_C = 0.9;
const TARGET_TCP1_VS_HAPROXY = 1.0;
const TARGET_ADDED_P50_US = 50;
/** Background CPU (other processes, % of a core) above which a middlebox's figures are flagged. */
const NOISY_BG_PCT = 20;

const MBS = ['tunlb', 'kernel', 'haproxy', 'cplain', 'cgso'] as const;
type Mb = (typeof MBS)[number];
const TITLE: Record<Mb, string> = {
  tunlb: 'tunlb (1 balancer)',
  kernel: 'kernel nft DNAT',
  haproxy: 'HAProxy TCP, 1 thread',
  cplain: 'C TUN plain',
  cgso: 'C TUN vnet+TSO',
};

type Values = Map<string, number>;

function readKv(dir: string, mb: Mb): Values | undefined {
  const f = join(dir, `${mb}.kv`);
  if (!existsSync(f)) return undefined;
  const v: Values = new Map();
  for (const line of readFileSync(f, 'utf8').split('\n')) {
    const [k, x] = line.trim().split(/\s+/);
    if (k && x !== undefined && x !== '' && Number.isFinite(Number(x))) v.set(k, Number(x));
  }
  for (const proto of ['udp', 'tcp']) {
    const rf = join(dir, `${mb}-rr-${proto}.txt`);
    if (!existsSync(rf)) continue;
    const words = readFileSync(rf, 'utf8').trim().split('\n').at(-1)?.split(/\s+/) ?? [];
    for (let i = 0; i + 1 < words.length; i += 2) {
      const x = Number(words[i + 1]);
      if (Number.isFinite(x)) v.set(`rr_${proto}_${words[i]}`, x);
    }
  }
  for (const p of [1, 4]) {
    const jf = join(dir, `${mb}-tcp${p}.json`);
    if (!existsSync(jf)) continue;
    try {
      const j = JSON.parse(readFileSync(jf, 'utf8')) as {
        end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } };
      };
      const bps = j.end?.sum_received?.bits_per_second;
      if (typeof bps === 'number' && bps > 0) v.set(`tcp${p}_bps`, bps);
      const rt = j.end?.sum_sent?.retransmits;
      if (typeof rt === 'number') v.set(`tcp${p}_retransmits`, rt);
    } catch {
      // iperf3 failed: its JSON holds an "error" field or is cut; the cell stays empty.
    }
  }
  return v;
}

interface Row {
  metric: string;
  key: string;
  fmt: (x: number) => string;
  /** How tunlb compares: 'ratio' (tunlb/x) for rates, 'diff' (tunlb - x) for latencies. */
  cmp?: 'ratio' | 'diff';
  target?: string;
}

const kpps = (x: number): string => `${(x / 1000).toFixed(0)}k`;
const gbit = (x: number): string => (x / 1e9).toFixed(2);
const us = (x: number): string => x.toFixed(0);
const pct = (x: number): string => `${x.toFixed(0)}%`;
const int = (x: number): string => x.toFixed(0);

const ROWS: Row[] = [
  { metric: 'UDP 64 B delivered, 256 flows (pps)', key: 'udp_delivered_pps', fmt: kpps, cmp: 'ratio',
    target: `≥ ${TARGET_UDP_VS_C}× C plain` },
  { metric: 'UDP offered by the generator (pps)', key: 'udp_offered_pps', fmt: kpps },
  { metric: 'UDP: dropped at the TUN queue (packets)', key: 'udp_tun_dropped', fmt: int },
  { metric: 'UDP: middlebox process CPU (% of a core)', key: 'udp_cpu_mb', fmt: pct },
  { metric: "UDP: middlebox's core busy, incl. softirq (pinned)", key: 'udp_cpu_mbcore', fmt: pct },
  { metric: "UDP: generator's core busy, incl. softirq (pinned)", key: 'udp_cpu_gencore', fmt: pct },
  { metric: 'UDP: host CPU busy / softirq (% of a core, all cores)', key: 'udp_cpu_host', fmt: pct },
  { metric: 'UDP: background CPU, other processes (% of a core)', key: 'udp_cpu_bg', fmt: pct },
  { metric: 'TCP 1 stream (Gbit/s)', key: 'tcp1_bps', fmt: gbit, cmp: 'ratio', target: `≥ ${TARGET_TCP1_VS_HAPROXY}× HAProxy` },
  { metric: 'TCP 4 streams (Gbit/s)', key: 'tcp4_bps', fmt: gbit, cmp: 'ratio' },
  { metric: 'TCP 1 stream: middlebox process CPU (% of a core)', key: 'tcp1_cpu_mb', fmt: pct },
  { metric: 'TCP 4 streams: middlebox process CPU (% of a core)', key: 'tcp4_cpu_mb', fmt: pct },
  { metric: "TCP 1 stream: middlebox's core busy, incl. softirq (pinned)", key: 'tcp1_cpu_mbcore', fmt: pct },
  { metric: 'TCP 1 stream: host CPU busy / softirq (% of a core)', key: 'tcp1_cpu_host', fmt: pct },
  { metric: 'TCP 1 stream: background CPU, other processes (% of a core)', key: 'tcp1_cpu_bg', fmt: pct },
  { metric: 'UDP request/response p50 (µs)', key: 'rr_udp_p50_us', fmt: us, cmp: 'diff',
    target: `≤ +${TARGET_ADDED_P50_US} µs over kernel` },
  { metric: 'UDP request/response p99 (µs)', key: 'rr_udp_p99_us', fmt: us, cmp: 'diff' },
  { metric: 'TCP request/response p50 (µs)', key: 'rr_tcp_p50_us', fmt: us, cmp: 'diff',
    target: `≤ +${TARGET_ADDED_P50_US} µs over kernel` },
  { metric: 'TCP request/response p99 (µs)', key: 'rr_tcp_p99_us', fmt: us, cmp: 'diff' },
];

function compare(row: Row, t: number | undefined, o: number | undefined): string {
  if (row.cmp === undefined || t === undefined || o === undefined || o === 0) return '—';
  if (row.cmp === 'ratio') return `${(t / o).toFixed(2)}×`;
  const d = t - o;
  return `${d >= 0 ? '+' : ''}${d.toFixed(0)} µs`;
}

function cell(row: Row, v: Values | undefined): string {
  const x = v?.get(row.key);
  if (x === undefined) return '—';
  let s = row.fmt(x);
  if (row.key.endsWith('_cpu_host')) {
    const soft = v?.get(row.key.replace('_cpu_host', '_cpu_softirq'));
    if (soft !== undefined) s += ` / ${pct(soft)}`;
  }
  return s;
}

function verdict(ok: boolean): string {
  return ok ? 'MET' : 'NOT MET';
}

/** Top self-time functions of the V8 CPU profiles in dir/prof (BENCH_PROFILE=1). */
function profileTop(dir: string, top = 15): string[] {
  const pdir = join(dir, 'prof');
  if (!existsSync(pdir)) return [];
  const files = readdirSync(pdir).filter((f) => f.endsWith('.cpuprofile'));
  const out: string[] = [];
  for (const f of files) {
    interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
    const p = JSON.parse(readFileSync(join(pdir, f), 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const self = new Map<string, number>();
    let total = 0;
    let idle = 0;
    for (let i = 0; i < p.samples.length; i++) {
      const n = byId.get(p.samples[i]!);
      const dt = p.timeDeltas[i] ?? 0;
      if (n === undefined) continue;
      total += dt;
      const fn = n.callFrame.functionName || '(anonymous)';
      if (fn === '(idle)') {
        idle += dt;
        continue;
      }
      const url = n.callFrame.url.replace(/^file:\/\//, '').replace(/^.*\/(src|dist|node_modules)\//, '$1/');
      const k = url ? `${fn}  ${url}:${n.callFrame.lineNumber + 1}` : fn;
      self.set(k, (self.get(k) ?? 0) + dt);
    }
    const busy = total - idle;
    out.push(`CPU profile ${f}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s not idle; top self time (% of not idle):`);
    [...self.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .forEach(([k, t]) => out.push(`  ${((100 * t) / busy).toFixed(1).padStart(5)}%  ${k}`));
  }
  return out;
}

function main(): void {
  const dir = process.argv[2];
  if (dir === undefined) {
    console.error('usage: report.ts DIR');
    process.exit(2);
  }
  const res = new Map<Mb, Values | undefined>(MBS.map((m) => [m, readKv(dir, m)]));
  const t = res.get('tunlb');
  const k = res.get('kernel');
  const h = res.get('haproxy');
  const lines: string[] = [];
  const measured = join(dir, 'measured');
  if (existsSync(measured)) lines.push(`tunlb measured: ${readFileSync(measured, 'utf8').trim()}`, '');
  lines.push(`| metric | ${MBS.map((m) => TITLE[m]).join(' | ')} | tunlb/kernel | tunlb/HAProxy | target |`);
  lines.push(`|---|${MBS.map(() => '---:').join('|')}|---:|---:|---|`);
  for (const row of ROWS) {
    const cells = MBS.map((m) => cell(row, res.get(m)));
    const tv = t?.get(row.key);
    lines.push(
      `| ${row.metric} | ${cells.join(' | ')} | ${compare(row, tv, k?.get(row.key))} | ${compare(row, tv, h?.get(row.key))} | ${row.target ?? ''} |`,
    );
  }
  console.log(lines.join('\n'));
  console.log('');

  // Targets, with what each is compared against.
  const tUdp = t?.get('udp_delivered_pps');
  const cUdp = res.get('cplain')?.get('udp_delivered_pps');
  if (tUdp !== undefined) {
    const ref = cUdp ?? C_PLAIN_REFERENCE_PPS;
    const r = tUdp / ref;
    console.log(
      `- UDP 64 B: tunlb ${kpps(tUdp)} pps = ${r.toFixed(2)}× C plain (${kpps(ref)}, ${cUdp !== undefined ? 'this run' : 'RESULTS.md'}); ` +
        `target ≥ ${TARGET_UDP_VS_C}×: ${verdict(r >= TARGET_UDP_VS_C)}` +
        (cUdp !== undefined ? `; vs RESULTS.md's ${kpps(C_PLAIN_REFERENCE_PPS)}: ${(tUdp / C_PLAIN_REFERENCE_PPS).toFixed(2)}×` : ''),
    );
  }
  const tTcp = t?.get('tcp1_bps');
  const hTcp = h?.get('tcp1_bps');
  if (tTcp !== undefined && hTcp !== undefined) {
    const r = tTcp / hTcp;
    console.log(
      `- TCP 1 stream: tunlb ${gbit(tTcp)} Gbit/s = ${r.toFixed(2)}× HAProxy (${gbit(hTcp)}); target ≥ ${TARGET_TCP1_VS_HAPROXY}×: ${verdict(r >= TARGET_TCP1_VS_HAPROXY)}`,
    );
  }
  for (const proto of ['udp', 'tcp']) {
    const a = t?.get(`rr_${proto}_p50_us`);
    const b = k?.get(`rr_${proto}_p50_us`);
    if (a === undefined || b === undefined) continue;
    console.log(
      `- added p50 latency over kernel DNAT (${proto.toUpperCase()} request/response): ${(a - b).toFixed(0)} µs ` +
        `(tunlb ${us(a)}, kernel ${us(b)}); target ≤ ${TARGET_ADDED_P50_US} µs: ${verdict(a - b <= TARGET_ADDED_P50_US)}`,
    );
  }
  const lost = MBS.flatMap((m) =>
    ['udp', 'tcp'].map((p) => [m, p, res.get(m)?.get(`rr_${p}_lost`)] as const).filter(([, , x]) => x !== undefined && x > 0),
  );
  for (const m of MBS) {
    const noisy = ['rr_udp', 'rr_tcp', 'udp', 'tcp1', 'tcp4']
      .map((k) => [k, res.get(m)?.get(`${k}_cpu_bg`)] as const)
      .filter(([, x]) => x !== undefined && x > NOISY_BG_PCT);
    if (noisy.length > 0) {
      console.log(
        `- WARNING: other processes on this machine used ${noisy.map(([k, x]) => `${pct(x!)} (${k})`).join(', ')} of a core ` +
          `during ${m}'s tests: those figures are low; rerun on a quiet machine`,
      );
    }
  }
  for (const [m, p, x] of lost) console.log(`- note: ${m} lost ${x} ${p.toUpperCase()} requests (not in the percentiles)`);
  for (const m of MBS) {
    const f = join(dir, `${m}-udp.perf.txt`);
    if (existsSync(f)) console.log(`\nperf, ${m} process during the UDP test (self time by DSO, then by symbol):\n${readFileSync(f, 'utf8').trimEnd()}`);
  }
  const prof = profileTop(dir);
  if (prof.length > 0) console.log(['', ...prof].join('\n'));
}

main();
