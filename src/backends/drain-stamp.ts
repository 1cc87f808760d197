/**
 * Drain stamps (src/backends/health-monitor.ts, "Drain"): a cluster-wide drain mark is last
 * writer wins by its stamp = wall ms * MAX_BALANCERS + the writer's balancer index, never
 * going back (max(wall ms, previous ms + 1)), so every balancer orders marks the same way and
 * the drain timeout counts from the same wall time everywhere. Pure functions.
 */

/** Most balancers (drain stamps carry the index in 5 bits). */
export const MAX_BALANCERS = 32;

/** Wall ms of a drain stamp (stamp = ms * MAX_BALANCERS + balancer index). */
export function drainWallMs(stamp: number): number {
  return Math.floor(stamp / MAX_BALANCERS);
}

/** Index of the balancer that wrote `stamp`. */
export function drainOrigin(stamp: number): number {
  return stamp % MAX_BALANCERS;
}

/** The stamp balancer `selfIndex` writes over `previous` at wall time `wallMs`. */
export function nextDrainStamp(previous: number, wallMs: number, selfIndex: number): number {
  const ms = Math.max(Math.floor(wallMs), Math.floor(previous / MAX_BALANCERS) + 1);
  return ms * MAX_BALANCERS + selfIndex;
}
