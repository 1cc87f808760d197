/**
 * Text of `tunlb vips` and `tunlb backends --stats` (issue 13: the operator's `ipvsadm -Ln
 * --stats --rate` and HAProxy `show stat`), from the body of GET /api/v1/vips
 * (src/control/service-view.ts ServicesBody). Pure: body in, text out (allocates freely; CLI only).
 *
 * `tunlb vips`: one line per VIP (name, address, method, affinity), each backend indented under
 * it, as ipvsadm -Ln lists a virtual service and its real servers; columns from
 * src/control/counters.ts SERVICE_COUNTERS (`head`): connections total and active always,
 * packets and bytes in/out with `stats`, their per-second rates with `rate`. Counters are this
 * balancer's (what it served); active connections are the flow records its table holds (the
 * cluster's count). Large figures are scaled as ipvsadm does (K, M, G: powers of 1000).
 *
 * `tunlb backends --stats`: one row per backend with its counters and the health-check detail
 * (last result, latency, consecutive failures, when, by which balancer; last change; time down).
 */
import { SERVICE_COUNTERS } from '../control/counters';
import type { BackendServiceRow, ServicesBody, VipServiceRow } from '../control/service-view';

/** 1234 → "1234", 123456 → "123K", 12345678 → "12.3M" (ipvsadm-style; powers of 1000). */
export function compact(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const a = Math.abs(n);
  if (a < 100_000) return Number.isInteger(n) ? String(n) : n.toFixed(a < 10 ? 1 : 0);
  for (const [div, unit] of [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'K']] as const) {
    if (a >= div) {
      const v = n / div;
      return `${Math.abs(v) < 10 ? v.toFixed(2) : Math.abs(v) < 100 ? v.toFixed(1) : v.toFixed(0)}${unit}`;
    }
  }
  return String(n);
}

/** "4.2s", "3m05s", "2h10m" from seconds (null → "-"). */
export function duration(s: number | null): string {
  if (s === null) return '-';
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** The figure columns: [header, value of a row] (which ones: `stats`, `rate`). */
function columns(opts: { stats?: boolean; rate?: boolean }): Array<[string, (r: VipServiceRow | BackendServiceRow) => string]> {
  const cols: Array<[string, (r: VipServiceRow | BackendServiceRow) => string]> = [];
  for (const d of SERVICE_COUNTERS) {
    const always = d.key === 'connections' || d.key === 'activeConnections';
    if (always || opts.stats) cols.push([d.head, (r) => compact(r[d.key])]);
  }
  if (opts.rate) {
    for (const d of SERVICE_COUNTERS) {
      if (d.rate === undefined) continue;
      const key = d.rate.key;
      cols.push([d.rate.head, (r) => (r.rates === null ? '-' : compact(r.rates[key] ?? 0))]);
    }
  }
  return cols;
}

/** Aligned rows: text columns left, figures (`right(i)`) right. */
function align(rows: string[][], right: (i: number) => boolean): string[] {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((v, i) => (right(i) ? v.padStart(w[i]!) : v.padEnd(w[i]!))).join('  ').trimEnd());
}

/** Weight cell: "3", or "3 (file 1)" while a runtime weight (`tunlb weight`) is in force. */
function weightText(x: BackendServiceRow): string {
  return x.fileWeight !== undefined && x.weight !== x.fileWeight ? `${x.weight} (file ${x.fileWeight})` : String(x.weight);
}

/** State cell: the state, with "+maint" in maintenance (`tunlb maintenance`). */
function stateText(x: BackendServiceRow): string {
  return `${x.state ?? '-'}${x.maintenance === true ? '+maint' : ''}`;
}

/** `tunlb vips` (header). */
export function formatVips(body: ServicesBody, opts: { stats?: boolean; rate?: boolean } = {}): string {
  if (body.vips.length === 0) return 'no VIPs';
  const cols = columns(opts);
  const head = ['VIP / backend', 'address', 'method', 'weight', 'state', ...cols.map((c) => c[0])];
  const rows: string[][] = [head];
  for (const v of body.vips) {
    rows.push([v.name, v.address, `${v.method}${v.affinity === 'none' ? '' : ` ${v.affinity}`}`, '', '', ...cols.map((c) => c[1](v))]);
    for (const x of v.backends) {
      rows.push([`  -> ${x.address}${x.port !== null ? `:${x.port}` : ''}`, '', '', weightText(x), stateText(x), ...cols.map((c) => c[1](x))]);
    }
  }
  const lines = align(rows, (i) => i === 3 || i >= 5);
  const notes: string[] = [];
  if (opts.rate) notes.push(body.rateWindowS === null ? 'rates: not yet known (the admin endpoint samples once a second)' : `rates per second over the last ${body.rateWindowS.toFixed(1)} s`);
  notes.push("counters: what this balancer served; ActiveConn: flow records in its table (the cluster's)");
  return [...lines, ...notes.map((n) => `(${n})`)].join('\n');
}

/** `tunlb backends --stats` (header). */
export function formatBackendStats(body: ServicesBody, opts: { rate?: boolean } = {}): string {
  const cols = columns({ stats: true, rate: opts.rate });
  const head = ['VIP', 'BACKEND', 'STATE', ...cols.map((c) => c[0]), 'CHECK', 'LATENCY', 'FAILS', 'CHECKED', 'BY', 'CHANGED', 'DOWN', 'DOWN TOTAL'];
  const rows: string[][] = [head];
  for (const v of body.vips) {
    for (const x of v.backends) {
      rows.push([
        v.name,
        `${x.address}${x.port !== null ? `:${x.port}` : ''}`,
        stateText(x),
        ...cols.map((c) => c[1](x)),
        x.checkOk === null ? '-' : x.checkOk === 1 ? 'ok' : 'failed',
        x.checkLatencyMs === null ? '-' : `${x.checkLatencyMs < 10 ? x.checkLatencyMs.toFixed(2) : Math.round(x.checkLatencyMs)}ms`,
        x.checkFailures === null ? '-' : String(x.checkFailures),
        x.lastCheckAt === null ? '-' : `${duration((body.at - x.lastCheckAt) / 1000)} ago`,
        x.checkedBy ?? '-',
        x.changedAt === null ? '-' : `${duration((body.at - x.changedAt) / 1000)} ago`,
        x.downForS === null || x.downForS === 0 ? '-' : duration(x.downForS),
        x.downTotalS === null ? '-' : duration(x.downTotalS),
      ]);
    }
  }
  if (rows.length === 1) return 'no backends';
  const latency = 3 + cols.length + 1;
  return align(rows, (i) => (i >= 3 && i < 3 + cols.length) || i === latency || i === latency + 1).join('\n');
}
