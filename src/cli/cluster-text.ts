/**
 * Text of `tunlb status --cluster` (from GET /api/v1/cluster, src/control/cluster-status.ts
 * ClusterBody) and of `tunlb reload --cluster` (from POST /api/v1/reload/cluster). Pure: body in,
 * text out (CLI only).
 *
 * `status --cluster`: one row per balancer of the config: status (serving, syncing, draining as
 * it reports; down when dead here), config hash (a `!` after a hash that differs from the
 * asking balancer's), flows held and as primary, packets per second in and out, the asking
 * balancer's smoothed probe RTT to it and when it last answered, and the age of its figures
 * (a peer's are what it last reported). Then one line per config mismatch.
 *
 * `reload --cluster`: one line per balancer: `ok`, `refused` or `no answer`, the config hash
 * running after it, and what changed / why it was refused / how long it was waited for.
 * clusterReloadExit() gives the exit code: 0 every balancer reloaded, 2 one refused (as a
 * refused `tunlb reload`), 1 one did not answer in time (and none refused).
 */
import type { ClusterBody } from '../control/cluster-status';
import type { ClusterReloadRow } from '../cluster/cluster-reload';
import { compact } from './vips-text';

function ms(v: number | null): string {
  if (v === null) return '-';
  return v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`;
}

/** `tunlb status --cluster` (header). */
export function formatCluster(body: ClusterBody): string {
  const head = ['balancer', 'status', 'config', 'flows', 'primary', 'pkt/s in', 'pkt/s out', 'rtt ms', 'heard', 'figures'];
  const cells = body.balancers.map((r) => [
    r.id,
    r.status,
    r.configHash === '' ? '-' : `${r.configHash}${r.configMismatch ? ' !' : ''}`,
    r.flowsHeld === null ? '-' : compact(r.flowsHeld),
    r.flowsPrimary === null ? '-' : compact(r.flowsPrimary),
    r.packetsInPerS === null ? '-' : compact(r.packetsInPerS),
    r.packetsOutPerS === null ? '-' : compact(r.packetsOutPerS),
    r.rttMs === null ? '-' : r.rttMs.toFixed(2),
    r.self ? 'self' : ms(r.lastHeardMs),
    r.reportAgeMs === null ? 'none yet' : r.self ? 'now' : `${ms(r.reportAgeMs)} old`,
  ]);
  const right = new Set([3, 4, 5, 6, 7, 8]);
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => `  ${c.map((x, i) => (right.has(i) ? x.padStart(w[i]!) : x.padEnd(w[i]!))).join('  ').trimEnd()}`;
  const out = [
    `cluster ${body.cluster}: ${body.balancers.length} balancers, seen from ${body.self} (config ${body.configHash})`,
    line(head),
    ...cells.map(line),
  ];
  for (const r of body.balancers) {
    if (r.configMismatch) out.push(`  config mismatch: ${r.id} runs ${r.configHash}, ${body.self} runs ${body.configHash}`);
  }
  if (body.mismatches.length === 0) out.push('  every balancer that reported runs the same config');
  return out.join('\n');
}

/** `tunlb reload --cluster`: one line per balancer (header). */
export function formatClusterReload(rows: readonly ClusterReloadRow[]): string {
  const w = Math.max(...rows.map((r) => r.id.length));
  return rows
    .map((r) => {
      const what = r.ok === true ? 'ok' : r.ok === false ? 'refused' : 'no answer';
      const hash = r.configHash === '' ? '' : ` config ${r.configHash}`;
      return `${r.id.padEnd(w)}  ${what.padEnd(9)}${hash}  ${r.detail}`;
    })
    .join('\n');
}

/** Exit code of `tunlb reload --cluster` (header). */
export function clusterReloadExit(rows: readonly ClusterReloadRow[]): number {
  if (rows.some((r) => r.ok === false)) return 2;
  if (rows.some((r) => r.ok === null)) return 1;
  return 0;
}
