/**
 * `tunlb weight` and `tunlb maintenance` (runtime overrides, src/backends/runtime-override.ts):
 * their arguments, checked before anything is sent (a usage error, exit 2), what they print, and
 * how `tunlb backends` shows an override as a difference from the file: WEIGHT "3 (file 1)",
 * STATE "maint" (its health stays in HEALTH), WHY "maintenance (set on lb1 at 12:00:00Z); ...".
 * Pure functions.
 */
import { ErrorCodes, TunlbError } from '../errors';
import { parseWeight } from '../backends/runtime-override';

/** The fields of a `tunlb backends` row these read (older balancers lack the override fields). */
export interface OverrideRow {
  readonly weight: number;
  readonly fileWeight?: number;
  readonly weightOverride?: number | null;
  readonly maintenance?: boolean;
  readonly overrideBy?: string | null;
  readonly overrideAtMs?: number | null;
  readonly state: string;
  readonly health: string;
  readonly eligible: boolean;
  readonly flows?: number;
}

/** `tunlb weight`'s WEIGHT argument: 0..65535, or "file" (returns null). Throws TunlbError(USAGE). */
export function weightArg(text: string): number | null {
  const r = parseWeight(text.trim().toLowerCase() === 'file' ? 'file' : text);
  if (!r.ok) throw new TunlbError(ErrorCodes.USAGE, `weight: ${r.error}`);
  return r.weight;
}

/** `tunlb maintenance`'s on|off argument. Throws TunlbError(USAGE). */
export function maintenanceArg(text: string): boolean {
  const t = text.trim().toLowerCase();
  if (t === 'on') return true;
  if (t === 'off') return false;
  throw new TunlbError(ErrorCodes.USAGE, `maintenance: expected on or off, got ${JSON.stringify(text)}`);
}

/** WEIGHT cell: "3", or "3 (file 1)" while a runtime weight differs from the file's. */
export function weightCell(x: OverrideRow): string {
  return x.weightOverride !== undefined && x.weightOverride !== null && x.fileWeight !== undefined ? `${x.weight} (file ${x.fileWeight})` : String(x.weight);
}

/** STATE cell: the state, "maint" in maintenance (health shown beside it), "draining+maint" when both. */
export function stateCell(x: OverrideRow): string {
  if (x.maintenance !== true) return x.state;
  return x.state === x.health ? 'maint' : `${x.state}+maint`;
}

/** Start of the WHY cell while an override is in force: "maintenance, weight 3 (set on lb1 at 12:00:00Z); ". */
export function overrideNote(x: OverrideRow): string {
  const parts: string[] = [];
  if (x.maintenance === true) parts.push('maintenance');
  if (x.weightOverride !== undefined && x.weightOverride !== null) parts.push(`runtime weight ${x.weightOverride}`);
  if (parts.length === 0) return '';
  const at = typeof x.overrideAtMs === 'number' ? ` at ${new Date(x.overrideAtMs).toISOString().slice(11, 19)}Z` : '';
  return `${parts.join(', ')} (set on ${x.overrideBy ?? '?'}${at}, until reload); `;
}

/** What `tunlb weight` / `tunlb maintenance` print: what the backend does now, cluster-wide. */
export function overrideMessage(cmd: 'weight' | 'maintenance', vip: string, address: string, changed: boolean, row: OverrideRow | undefined): string {
  const who = `${vip} ${address}`;
  const same = changed ? '' : ' (already so)';
  if (row === undefined) return `${who}: ${cmd} set${same}, on every balancer until the next reload`;
  const flows = row.flows !== undefined ? `its ${row.flows} flow(s)` : 'its flows';
  const newFlows = row.eligible && row.weight > 0 ? 'takes new flows' : row.maintenance === true ? 'no new flows (maintenance)' : 'no new flows';
  if (cmd === 'weight') {
    const w = row.weightOverride === null || row.weightOverride === undefined ? `weight ${row.weight} (the file's)` : `weight ${row.weight} (file ${row.fileWeight ?? '?'})`;
    return `${who}: ${w}${same} on every balancer until the next reload; ${newFlows}; ${flows} keep their backend`;
  }
  if (row.maintenance === true) {
    return `${who}: maintenance${same} on every balancer until \`off\` or the next reload: no new flows; ${flows} continue; health checks go on (health ${row.health})`;
  }
  return `${who}: maintenance off${same}: ${row.state}, ${newFlows}`;
}
