/**
 * The replicator's side state per flow-table entry (src/cluster/replicator.ts), indexed by
 * entry id and shared by its two halves: the sender (src/cluster/replication-sender.ts: when
 * it last sent a record of the entry, with which state) and the applier
 * (src/cluster/replication-applier.ts: whether this balancer forwarded packets of the entry
 * lately, which decides DELETEs and state adoption). 13 bytes per table entry.
 *
 * "This balancer forwarded a packet" is exact: FlowTable.packets counts only local packets
 * (records set lastSeen without counting), and `mark` holds the count at the last look.
 * Owned by the Replicator; `reset` whenever an id is freed or re-inserted.
 */
import type { FlowTable } from '../flow';

export class ReplicationSideState {
  /** Second of the last record we sent for the entry + 1 (0 = never). */
  readonly sentAt: Uint32Array;
  /** Flow state carried by that record. */
  readonly sentState: Uint8Array;
  /** table.packets(id) when last examined: a difference means local packets since. */
  readonly mark: Uint32Array;
  /** Second of the last local packet known + 1 (0 = none). */
  readonly localAt: Uint32Array;
  readonly #table: FlowTable;

  constructor(table: FlowTable) {
    this.#table = table;
    const cap = table.capacity;
    this.sentAt = new Uint32Array(cap);
    this.sentState = new Uint8Array(cap);
    this.mark = new Uint32Array(cap);
    this.localAt = new Uint32Array(cap);
  }

  /** Notes local packets of `id` since the last look (before we change its lastSeen). */
  syncLocal(id: number): void {
    const p = this.#table.packets(id);
    if (p !== this.mark[id]) {
      this.mark[id] = p;
      this.localAt[id] = this.#table.lastSeen(id) + 1;
    }
  }

  reset(id: number): void {
    this.sentAt[id] = 0;
    this.sentState[id] = 0;
    this.mark[id] = 0;
    this.localAt[id] = 0;
  }
}
