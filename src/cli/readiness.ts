/**
 * `tunlb ready`: is this balancer ready for traffic, as a whole cluster would need it?
 *
 * Ready means all of:
 *   serving     this balancer's status is `serving` (its bulk sync is done)
 *   peers       every other configured balancer is `up` (answers probes) and `serving`, except
 *               those named in `allowDown` (e.g. a balancer a test killed on purpose)
 *   backends    every backend with a health check is `healthy` in this balancer's view (a
 *               drained backend counts by its health too); backends without a check pass
 * One definition for scripts (scripts/lab.sh up/start waits on it), tests and operators.
 * Pure: takes the admin API's /api/v1/status and /api/v1/backends bodies, allocates freely
 * (off the packet path).
 */

export interface ReadinessStatus {
  self: { id: string; status: string };
  balancers: ReadonlyArray<{ id: string; self: boolean; state: string; status: string }>;
}

export interface ReadinessBackend {
  vip: string;
  backend: string;
  port: number | null;
  health: string;
  /** The health check's type; null when the backend has none. */
  check?: string | null;
}

export interface Readiness {
  ready: boolean;
  /** One line: what is ready, or every condition not met yet. */
  text: string;
  /** The unmet conditions (empty when ready). */
  missing: string[];
}

export function readiness(status: ReadinessStatus, backends: readonly ReadinessBackend[], allowDown: readonly string[] = []): Readiness {
  const missing: string[] = [];
  if (status.self.status !== 'serving') missing.push(`${status.self.id} is ${status.self.status}, not serving`);
  const peers = status.balancers.filter((b) => !b.self);
  let peersOk = 0;
  for (const p of peers) {
    if (allowDown.includes(p.id)) continue;
    if (p.state === 'up' && p.status === 'serving') peersOk++;
    else missing.push(peerProblem(p));
  }
  const checked = backends.filter((b) => b.check !== null && b.check !== undefined);
  let healthy = 0;
  for (const b of checked) {
    if (b.health === 'healthy') healthy++;
    else missing.push(`backend ${b.backend}${b.port !== null ? `:${b.port}` : ''} of ${b.vip} is ${b.health}`);
  }
  const expectPeers = peers.filter((p) => !allowDown.includes(p.id)).length;
  const summary = `${status.self.id} ${status.self.status}, ${peersOk}/${expectPeers} peers serving, ${healthy}/${checked.length} checked backends healthy`;
  return missing.length === 0
    ? { ready: true, text: `ready: ${summary}`, missing }
    : { ready: false, text: `not ready: ${missing.join('; ')} (${summary})`, missing };
}

/**
 * Why a peer is not ready, in words: its status only where it is known (a peer that answers
 * probes); a dead peer is "dead", never "dead/serving" (what it reported before it died is not
 * its status now).
 */
function peerProblem(p: { id: string; state: string; status: string }): string {
  if (p.state === 'dead') return `peer ${p.id} is dead (no answer to probes)`;
  if (p.state === 'unknown') return `peer ${p.id} has not answered a probe yet`;
  if (p.state === 'suspect') return `peer ${p.id} is suspect (missing probe answers)${p.status === 'serving' ? '' : `, ${p.status}`}`;
  return `peer ${p.id} is up but ${p.status}, not serving`;
}
