/**
 * Who checks what (src/backends/health-monitor.ts, "Who checks what"): each backend with a
 * health check is checked by ONE balancer, its health owner, chosen by rendezvous hashing
 * among the live balancers that run a monitor, so checks spread evenly and only a dead
 * owner's backends move. Pure functions.
 */
import type { BackendConfig, VipConfig } from '../config';
import { compareIds, memberSeed, mixScore } from '../decision/rendezvous';

/** A peer stays a health-owner candidate for this many of its report periods after a report. */
export const CANDIDATE_PERIODS = 3.5;

/** The health-ownership key of a backend: "<vip name>/<backend address>". */
export function healthKey(vip: VipConfig, backend: BackendConfig): string {
  return `${vip.name}/${backend.address.text}`;
}

/**
 * Health owner of a backend among `candidates` (live[i] !== 0): highest score, ties to the id
 * that sorts first; -1 when there is no candidate. Exported for tests and tools.
 */
export function healthOwner(idHash: number, ids: readonly string[], hashKey: Uint32Array, candidates: ArrayLike<number>): number {
  let best = -1;
  let bestScore = -1;
  for (let i = 0; i < ids.length; i++) {
    if (!candidates[i]) continue;
    const s = mixScore(idHash, memberSeed(hashKey, ids[i]!));
    if (s > bestScore || (s === bestScore && compareIds(ids[i]!, ids[best]!) < 0)) {
      best = i;
      bestScore = s;
    }
  }
  return best;
}

/**
 * The owner among `candidates` (cand[i] !== 0) by the precomputed scores (scores[i] =
 * mixScore(idHash, memberSeed(hashKey, ids[i])): highest score, ties to the id that sorts
 * first; -1 when there is no candidate. The same rule as healthOwner, without hashing.
 */
export function ownerByScores(scores: Uint32Array, ids: readonly string[], cand: ArrayLike<number>): number {
  let best = -1;
  for (let i = 0; i < ids.length; i++) {
    if (!cand[i]) continue;
    if (best < 0 || scores[i]! > scores[best]! || (scores[i] === scores[best] && compareIds(ids[i]!, ids[best]!) < 0)) best = i;
  }
  return best;
}
