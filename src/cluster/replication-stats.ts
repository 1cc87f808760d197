/**
 * The replicator's counters (src/cluster/replicator.ts): records and datagrams sent, the ready
 * and DELETE rings' drops, the refresh scan's cycles, and every received record's outcome
 * (applied, updated, deleted, or ignored with a reason in `rejectedByReason`). Bulk sync's
 * counters come from SyncStats (src/cluster/bulk-sync.ts). Read by the snapshot
 * (src/control/snapshot.ts) and the metrics (src/control/metrics.ts).
 */
import { SyncStats } from './bulk-sync';

/** Reasons a received record is ignored (keys of stats.rejectedByReason; stable names). */
export const REJECT_REASONS = [
  'bad_key',
  'bad_op',
  'bad_sender',
  'balancer_out_of_range',
  'vip_out_of_range',
  'backend_out_of_range',
  'generation_ambiguous',
  'backend_gone',
  'key_conflict',
  'table_full',
  'expired',
  'delete_unknown',
  'delete_locally_active',
  'internal_error',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export class ReplicatorStats extends SyncStats {
  /** Records / datagrams broadcast (CREATE, REFRESH, DELETE). */
  recordsSent = 0;
  datagramsSent = 0;
  createsSent = 0;
  refreshesSent = 0;
  deletesSent = 0;
  /** flowReady events dropped on a full ring (the refresh scan heals them). */
  queueDrops = 0;
  /** DELETEs dropped on a full ring (peers' copies expire on their own). */
  deleteQueueDrops = 0;
  /** Queued ready ids skipped at flush (no longer live, already sent, learnt, below threshold). */
  readySkipped = 0;
  /** CREATEs sent by the refresh scan for flows past the threshold but never sent. */
  readyHealed = 0;
  /** Full walks of the table by the refresh scan. */
  refreshCycles = 0;
  /** Records received from peers (broadcast and bulk sync). */
  recordsReceived = 0;
  /** New entries installed. */
  applied = 0;
  /** Known entries refreshed (and possibly re-decided). */
  updated = 0;
  /** Known entries whose decision was taken from their primary. */
  adopted = 0;
  /** Records with a differing decision from a non-primary sender (entry kept, lastSeen refreshed). */
  decisionKept = 0;
  /** Backend/VIP indexes mapped from an older generation to the current table. */
  remapped = 0;
  deleted = 0;
  /** Records ignored (sum of rejectedByReason). */
  ignored = 0;
  readonly rejectedByReason: Record<RejectReason, number> = Object.fromEntries(REJECT_REASONS.map((r) => [r, 0])) as Record<RejectReason, number>;
}
