/**
 * Prints the result table of bench/dataplane/run.sh from its raw results directory:
 *   <mb>.kv             "key value" lines written by run.sh (UDP counters, CPU shares)
 *   <mb>-rr-udp.txt     rr.c output (n, lost, min/p50/p90/p99/max/mean in µs)
 *   <mb>-rr-tcp.txt
 *   <mb>-<test>.json    iperf3 -J: tcp1, tcp4 (1 and 4 streams, client→server), tcp1r, tcp4r
 *                       (-R, server→client), tcp1e, tcp1p, tcp1pr (3-balancer DSR, served by
 *                       the entry, by a peer, by a peer reversed)
 *   <mb>-<test>.flows.json   (tunlb-dsr3) lb1's flow table after the test (who served it)
 *   tunlb-dsr3.ports    "test port": the data connection's client port (iperf3 --cport)
 *   prof/*.cpuprofile   (BENCH_PROFILE=1) V8 CPU profile of the tunlb process
 * Middleboxes (<mb>): tunlb, kernel, haproxy, cplain, cgso (first table); tunlb-dsr, kernel-dsr,
 * with tunlb and kernel again as the NAT peers (second table, DSR); tunlb-dsr3 (third). A
 * missing one is a "—" column.
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
const DSR_MBS = ['tunlb-dsr', 'kernel-dsr', 'tunlb', 'kernel'] as const;
const ALL_MBS = ['tunlb', 'kernel', 'haproxy', 'cplain', 'cgso', 'tunlb-dsr', 'kernel-dsr', 'tunlb-dsr3'] as const;
type Mb = (typeof ALL_MBS)[number];
const TITLE: Record<Mb, string> = {
  tunlb: 'tunlb (1 balancer)',
  kernel: 'kernel nft DNAT',
  haproxy: 'HAProxy TCP, 1 thread',
  cplain: 'C TUN plain',
  cgso: 'C TUN vnet+TSO',
  'tunlb-dsr': 'tunlb DSR (1 balancer)',
  'kernel-dsr': 'kernel route DSR',
  'tunlb-dsr3': 'tunlb DSR, 3 balancers',
};
/** The client's node name (scripts/lab-topology.sh LAB_CLIENT): its kernel counters' prefix in <mb>.kv. */
const CLIENT = 'client';
/** Titles in the DSR table, where tunlb and kernel are the NAT peers. */
const DSR_TITLE: Record<(typeof DSR_MBS)[number], string> = {
  'tunlb-dsr': 'tunlb DSR',
  'kernel-dsr': 'kernel route (DSR-equivalent)',
  tunlb: 'tunlb NAT',
  kernel: 'kernel nft DNAT',
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
  for (const jn of readdirSync(dir)) {
    const m = new RegExp(`^${mb}-(tcp[0-9a-z]+)\\.json$`).exec(jn);
    if (m === null) continue;
    const p = m[1]!.slice(3);
    const jf = join(dir, jn);
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

// ---- DSR (direct server return) ----

const DSR_ROWS: Row[] = [
  { metric: 'TCP upload, 1 stream (Gbit/s): client→server, data through the balancer', key: 'tcp1_bps', fmt: gbit, cmp: 'ratio' },
  { metric: 'TCP upload, 4 streams (Gbit/s)', key: 'tcp4_bps', fmt: gbit, cmp: 'ratio' },
  { metric: 'TCP download, 1 stream (Gbit/s): -R, DSR data bypasses the balancer', key: 'tcp1r_bps', fmt: gbit, cmp: 'ratio' },
  { metric: 'TCP download, 4 streams (Gbit/s): -R', key: 'tcp4r_bps', fmt: gbit, cmp: 'ratio' },
  { metric: 'TCP request/response p50 (µs)', key: 'rr_tcp_p50_us', fmt: us, cmp: 'diff' },
  { metric: 'TCP request/response p99 (µs)', key: 'rr_tcp_p99_us', fmt: us, cmp: 'diff' },
  { metric: 'UDP request/response p50 (µs)', key: 'rr_udp_p50_us', fmt: us, cmp: 'diff' },
  { metric: 'TCP upload 1 stream: retransmits', key: 'tcp1_retransmits', fmt: int },
  { metric: 'TCP download 1 stream: retransmits', key: 'tcp1r_retransmits', fmt: int },
  { metric: "TCP upload 1 stream: dropped at lb1's TUN queue (packets)", key: 'tcp1_tun_dropped', fmt: int },
  { metric: "TCP download 1 stream: dropped at lb1's TUN queue (packets)", key: 'tcp1r_tun_dropped', fmt: int },
  { metric: 'TCP upload 1 stream: balancer process CPU (% of a core)', key: 'tcp1_cpu_mb', fmt: pct },
  { metric: 'TCP upload 4 streams: balancer process CPU', key: 'tcp4_cpu_mb', fmt: pct },
  { metric: 'TCP download 1 stream: balancer process CPU', key: 'tcp1r_cpu_mb', fmt: pct },
  { metric: 'TCP download 4 streams: balancer process CPU', key: 'tcp4r_cpu_mb', fmt: pct },
  { metric: "TCP upload 1 stream: balancer's core busy, incl. softirq (pinned)", key: 'tcp1_cpu_mbcore', fmt: pct },
  { metric: "TCP download 1 stream: balancer's core busy, incl. softirq (pinned)", key: 'tcp1r_cpu_mbcore', fmt: pct },
  { metric: 'TCP upload 1 stream: host CPU busy / softirq (% of a core)', key: 'tcp1_cpu_host', fmt: pct },
  { metric: 'TCP download 1 stream: host CPU busy / softirq (% of a core)', key: 'tcp1r_cpu_host', fmt: pct },
  { metric: 'TCP upload 1 / download 1: background CPU, other processes', key: 'tcp1_cpu_bg', fmt: pct },
];

function dsrCell(row: Row, v: Values | undefined): string {
  const s = cell(row, v);
  if (row.key !== 'tcp1_cpu_bg' || s === '—') return s;
  const r = v?.get('tcp1r_cpu_bg');
  return r === undefined ? s : `${s} / ${pct(r)}`;
}

/** lb1's flow-table entry for the data connection (client port) of a tunlb-dsr3 test. */
function servedBy(dir: string, test: string, port: number | undefined): string {
  const f = join(dir, `tunlb-dsr3-${test}.flows.json`);
  if (port === undefined || !existsSync(f)) return '?';
  try {
    const j = JSON.parse(readFileSync(f, 'utf8')) as { flows?: Array<{ key: string; primary: string; backup?: string }> };
    const hit = (j.flows ?? []).filter((x) => x.key.includes(`:${port} -> `));
    return hit.length > 0 ? hit.map((x) => `primary ${x.primary}, backup ${x.backup ?? '?'}`).join('; ') : 'not in lb1 table';
  } catch {
    return '?';
  }
}

function dsrReport(dir: string, res: Map<Mb, Values | undefined>): string[] {
  const out: string[] = [];
  const d = res.get('tunlb-dsr');
  const kd = res.get('kernel-dsr');
  const n = res.get('tunlb');
  const kn = res.get('kernel');
  if (d !== undefined || kd !== undefined) {
    out.push('DSR (direct server return): servers hold the VIP on lo and answer via the router; NAT peers on the NAT topology, same run.');
    out.push('');
    out.push(`| metric | ${DSR_MBS.map((m) => DSR_TITLE[m]).join(' | ')} | DSR/kernel DSR | DSR/tunlb NAT | tunlb NAT/kernel NAT |`);
    out.push(`|---|${DSR_MBS.map(() => '---:').join('|')}|---:|---:|---:|`);
    for (const row of DSR_ROWS) {
      const tv = d?.get(row.key);
      out.push(
        `| ${row.metric} | ${DSR_MBS.map((m) => dsrCell(row, res.get(m))).join(' | ')} | ${compare(row, tv, kd?.get(row.key))} | ` +
          `${compare(row, tv, n?.get(row.key))} | ${compare(row, n?.get(row.key), kn?.get(row.key))} |`,
      );
    }
    // The TCP ends' kernel counters (client, srv1) behind the retransmits, per test.
    for (const m of DSR_MBS) {
      const v = res.get(m);
      if (v === undefined) continue;
      for (const tst of ['tcp1', 'tcp1r', 'tcp4', 'tcp4r']) {
        const c = [...v.entries()].filter(([key]) => key.startsWith(`${tst}_snmp_${CLIENT}_`) || key.startsWith(`${tst}_snmp_srv1_`));
        if (c.length === 0) continue;
        out.push(`- ${DSR_TITLE[m]}, ${tst} (${v.get(`${tst}_retransmits`) ?? '?'} retransmits): ${c.map(([key, x]) => `${key.slice(`${tst}_snmp_`.length).replace('_', ' ')} ${x}`).join(', ')}`);
      }
    }
    out.push('');
  }
  const t3 = res.get('tunlb-dsr3');
  if (t3 !== undefined) {
    const ports = new Map<string, number>();
    const pf = join(dir, 'tunlb-dsr3.ports');
    if (existsSync(pf)) {
      for (const line of readFileSync(pf, 'utf8').trim().split('\n')) {
        const [k, x] = line.split(/\s+/);
        if (k !== undefined && x !== undefined) ports.set(k, Number(x));
      }
    }
    const tests: Array<[string, string]> = [
      ['tcp1e', 'upload, 1 stream, served by the entry (lb1)'],
      ['tcp1p', 'upload, 1 stream, served by a peer (lb3: lb1 encapsulates to it)'],
      ['tcp1pr', 'download (-R), 1 stream, served by a peer (lb3; only ACKs cross)'],
    ];
    const pinned = t3.get('tcp1e_cpu_mbcore') !== undefined ? 'all pinned to the middlebox core' : 'not pinned (BENCH_PIN=0)';
    out.push(`DSR, 3 balancers (${pinned}), one iperf3 stream with its data connection pinned (--cport) to a chosen primary:`);
    out.push('');
    out.push('| test | Gbit/s | retransmits | balancers CPU (% of a core): sum (lb1 / lb2 / lb3) | host busy / softirq | background | data flow in lb1 table | kernel counters (lbN: delta) |');
    out.push('|---|---:|---:|---:|---:|---:|---|---|');
    for (const [k, what] of tests) {
      const bps = t3.get(`${k}_bps`);
      const snmp = [...t3.entries()]
        .filter(([key]) => key.startsWith(`${k}_snmp_lb`))
        .map(([key, x]) => `${key.slice(`${k}_snmp_`.length).replace('_', ' ')}: ${x}`)
        .join(', ');
      const g = (key: string): string => {
        const x = t3.get(`${k}_${key}`);
        return x === undefined ? '—' : pct(x);
      };
      out.push(
        `| ${what} | ${bps === undefined ? '—' : gbit(bps)} | ${t3.get(`${k}_retransmits`) ?? '—'} | ` +
          `${g('cpu_mb')} (${['lb1', 'lb2', 'lb3'].map((b) => g(`cpu_mb_${b}`)).join(' / ')}) | ${g('cpu_host')} / ${g('cpu_softirq')} | ` +
          `${g('cpu_bg')} | ${servedBy(dir, k, ports.get(k))} | ${snmp || 'none'} |`,
      );
    }
    const e = t3.get('tcp1e_bps');
    const p = t3.get('tcp1p_bps');
    if (e !== undefined && p !== undefined) out.push('', `- peer-served / entry-served upload: ${(p / e).toFixed(2)}×`);
  }
  const dv = d?.get('tcp1_bps');
  const kdv = kd?.get('tcp1_bps');
  if (dv !== undefined && kdv !== undefined) {
    out.push(`- DSR upload 1 stream: tunlb ${gbit(dv)} Gbit/s = ${(dv / kdv).toFixed(2)}× the kernel's own forwarding (${gbit(kdv)}) on the same topology`);
  }
  const dr = d?.get('tcp1r_bps');
  const nr = n?.get('tcp1r_bps');
  if (dr !== undefined && nr !== undefined) {
    out.push(`- DSR download 1 stream (data bypasses the balancer): tunlb DSR ${gbit(dr)} Gbit/s = ${(dr / nr).toFixed(2)}× tunlb NAT (${gbit(nr)}), where every data packet crosses it`);
  }
  return out;
}

function main(): void {
  const dir = process.argv[2];
  if (dir === undefined) {
    console.error('usage: report.ts DIR');
    process.exit(2);
  }
  const res = new Map<Mb, Values | undefined>(ALL_MBS.map((m) => [m, readKv(dir, m)]));
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
  const lost = ALL_MBS.flatMap((m) =>
    ['udp', 'tcp'].map((p) => [m, p, res.get(m)?.get(`rr_${p}_lost`)] as const).filter(([, , x]) => x !== undefined && x > 0),
  );
  for (const m of ALL_MBS) {
    const noisy = ['rr_udp', 'rr_tcp', 'udp', 'tcp1', 'tcp4', 'tcp1r', 'tcp4r', 'tcp1e', 'tcp1p', 'tcp1pr']
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
  const dsr = dsrReport(dir, res);
  if (dsr.length > 0) console.log(['', ...dsr].join('\n'));
  for (const m of MBS) {
    const f = join(dir, `${m}-udp.perf.txt`);
    if (existsSync(f)) console.log(`\nperf, ${m} process during the UDP test (self time by DSO, then by symbol):\n${readFileSync(f, 'utf8').trimEnd()}`);
  }
  const prof = profileTop(dir);
  if (prof.length > 0) console.log(['', ...prof].join('\n'));
}

main();
