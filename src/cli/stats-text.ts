/**
 * `tunlb stats` for people: the admin endpoint's snapshot (src/control/snapshot.ts,
 * GET /api/v1/stats) as a few aligned lines. Pure: object in, string out; `--json` prints the
 * snapshot itself. Tolerates missing fields (an older balancer answers with fewer). The counter
 * rows (packets, peer split, flows, failover, backend down, reply match) are rendered from the
 * counter table (src/control/counters.ts: STATS_ROWS, and each counter's `cli` phrase).
 */
import { COUNTERS, STATS_ROWS, type CounterDescriptor } from '../control/counters';

interface Snapshot {
  id?: string;
  cluster?: string;
  uptimeS?: number;
  device?: { name?: string; mtu?: number; features?: Record<string, unknown> };
  peerSplit?: string;
  flows?: Record<string, unknown>;
  counters?: Record<string, unknown> & { drops?: Record<string, number> };
  membership?: null | {
    status?: string;
    incarnation?: number;
    syncedFrom?: string | null;
    sync?: SyncProgressText | null;
    peers?: Array<{ id?: string; state?: string; status?: string; rttMs?: number | null; live?: boolean }>;
    replication?: Record<string, unknown>;
    controlRejected?: Record<string, number>;
  };
  forwarding?: { generation?: number; vips?: Array<{ name?: string; address?: string; method?: string; backends?: string[] }> };
}

const n = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** 1234567 → "1,234,567". */
function num(v: unknown): string {
  return Math.round(n(v)).toLocaleString('en-US');
}

function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return d > 0 ? `${d}d${h}h${m}m` : h > 0 ? `${h}h${m}m${sec}s` : m > 0 ? `${m}m${sec}s` : `${sec}s`;
}

/** The nonzero entries of a counter map as "name=value, ..." (or "none"). */
function nonzero(m: Record<string, number> | undefined): string {
  const parts = Object.entries(m ?? {})
    .filter(([, v]) => n(v) > 0)
    .sort((a, b) => n(b[1]) - n(a[1]))
    .map(([k, v]) => `${k}=${num(v)}`);
  return parts.length > 0 ? parts.join(', ') : 'none';
}

/** A bulk sync's progress as the admin endpoint reports it (src/cluster/sync-runner.ts SyncProgress). */
export interface SyncProgressText {
  state?: string;
  peer?: string | null;
  received?: number;
  total?: number | null;
  ratePerS?: number;
  elapsedMs?: number;
  cursor?: number;
  sessions?: number;
  resumes?: number;
  lastError?: string | null;
}

/**
 * One line for a bulk sync: "syncing from lb1: 312,400 of 1,000,000 records (31%), 180,000
 * records/s, 1.7 s, 2 sessions (1 resume); last error: ..." or "done from lb1: ...". Null in:
 * "none (no serving peer when it started)".
 */
export function formatSync(p: SyncProgressText | null | undefined): string {
  if (p == null) return 'none (no serving peer when it started, or a cluster of one)';
  const total = typeof p.total === 'number' ? p.total : null;
  const pct = total !== null && total > 0 ? ` (${Math.min(100, Math.floor((n(p.received) * 100) / total))}%)` : '';
  const of = total !== null ? ` of ${num(total)}` : '';
  const sessions = n(p.sessions);
  const resumes = n(p.resumes);
  const tail =
    `, ${num(p.ratePerS)} records/s, ${(n(p.elapsedMs) / 1000).toFixed(1)} s` +
    `, ${sessions} session${sessions === 1 ? '' : 's'}${resumes > 0 ? ` (${resumes} resume${resumes === 1 ? '' : 's'})` : ''}` +
    (p.lastError ? `; last error: ${p.lastError}` : '');
  switch (p.state) {
    case 'syncing':
      return `syncing from ${p.peer ?? '?'}: ${num(p.received)}${of} records${pct}${tail}`;
    case 'done':
      return `done from ${p.peer ?? '?'}: ${num(p.received)} records${tail}`;
    case 'failed':
      return `incomplete: ${num(p.received)} records applied${tail}`;
    default:
      return String(p.state ?? '?');
  }
}

export function formatStats(body: unknown): string {
  const s = (body ?? {}) as Snapshot;
  const c = s.counters ?? {};
  const f = s.flows ?? {};
  const lines: string[] = [];
  const row = (label: string, value: string): void => {
    lines.push(`${label.padEnd(12)} ${value}`);
  };
  const ms = s.membership;
  row('balancer', `${s.id ?? '?'} in cluster ${s.cluster ?? '?'}, up ${duration(n(s.uptimeS))}${ms ? `, ${ms.status ?? '?'} (incarnation ${ms.incarnation ?? '?'}${ms.syncedFrom ? `, synced from ${ms.syncedFrom}` : ''})` : ', no peers'}`);
  const feats = Object.entries(s.device?.features ?? {})
    .filter(([, v]) => v === true)
    .map(([k]) => k);
  row('device', `${s.device?.name ?? '?'} mtu ${s.device?.mtu ?? '?'}${feats.length > 0 ? ` (${feats.join(', ')})` : ''}`);
  for (const r of STATS_ROWS) {
    if (r.cluster === true && !ms) continue;
    let text = '';
    for (const d of COUNTERS as readonly CounterDescriptor[]) {
      if (d.cli?.row !== r.label) continue;
      const v = (d.section === 'flows' ? f : c)[d.key];
      text += (text === '' ? '' : (d.cli.sep ?? ', ')) + d.cli.text.replace('{}', num(v));
    }
    if (r.tail !== undefined) text += `; ${s[r.tail] ?? '?'}`;
    row(r.label, text);
  }
  row('drops', nonzero(c.drops));
  if (ms) {
    const r = ms.replication ?? {};
    row('records', `${num(r['recordsSent'])} sent in ${num(r['datagramsSent'])} datagrams, ${num(r['recordsReceived'])} received, ${num(r['applied'])} applied`);
    row('rejected', nonzero(ms.controlRejected));
    if (ms.sync !== undefined) row('bulk sync', formatSync(ms.sync));
    for (const p of ms.peers ?? []) {
      if (p.state === 'self') continue;
      // A peer's status is known only while it answers probes: a dead peer is never "serving".
      const status = p.state === 'up' || p.state === 'suspect' ? (p.status ?? '?') : '-';
      row('peer', `${(p.id ?? '?').padEnd(8)} ${(p.state ?? '?').padEnd(8)} ${status.padEnd(8)} ${p.rttMs !== null && p.rttMs !== undefined ? `rtt ${p.rttMs.toFixed(2)} ms` : 'rtt -'}${p.live ? '' : ' (not live)'}`);
    }
  }
  const fw = s.forwarding;
  for (const v of fw?.vips ?? []) row('vip', `${v.name ?? '?'} ${v.address ?? '?'} ${v.method ?? '?'} → ${(v.backends ?? []).join(' ')}`);
  if (fw) row('generation', String(fw.generation ?? '?'));
  return lines.join('\n');
}
