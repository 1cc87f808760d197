/**
 * Backup repair: flows decided while no other balancer was live get a live backup once one is.
 *
 * A flow decided by this balancer while it saw no live peer (a peer still starting, or every
 * peer dead) records as backup the next configured balancer in the flow's rank (never the
 * primary itself while another balancer is configured) and carries flag BACKUP_PENDING
 * (src/flow/table.ts). Whenever liveness changes, `request()` walks the flow table in slices
 * of `budget` entry ids per event-loop turn (setImmediate between slices, so probes and the
 * data plane run in between; 1M entries take ~60 slices). For each live entry with
 * BACKUP_PENDING whose primary is this balancer (the primary owns the decision):
 *   recorded backup live      the flag is cleared (that balancer holds the record: it bulk
 *                             synced from a live peer before serving, and replication covers
 *                             what came after)
 *   another balancer live     the backup becomes the first live balancer after the primary in
 *                             the flow's rank, the flag is cleared, and the record is handed
 *                             to the replication sink again (REPLICATED cleared + flowReady),
 *                             so every peer adopts the new decision (a record from the flow's
 *                             primary is authoritative: src/cluster/replication-applier.ts)
 *   none live                 unchanged; the next liveness change looks again
 * Entries whose primary is another balancer are left to that balancer.
 *
 * Off the hot path: allocates nothing per entry; a slice costs ~budget x (one flag read), plus
 * one key hash per repaired flow.
 */
import { FlowFlags, type FlowTable } from '../flow';
import type { BalancerRanking } from '../decision/balancer-ranking';
import { hashFlowKey } from '../decision/halfsiphash';

const F_BACKUP_PENDING = FlowFlags.BACKUP_PENDING;
const F_REPLICATED = FlowFlags.REPLICATED;
const KEY_WORDS = 10;

export interface BackupRepairOptions {
  table: FlowTable;
  /** The cluster's hash key (src/decision/hash-key.ts): the flow's rank row is hashFlowKey & 0xffff. */
  hashKey: Uint32Array;
  selfIndex: number;
  /** live[i] = 1 while balancer i is up and serving (owned by the membership). */
  live: Uint8Array;
  /** The ranking of the current forwarding table (read at every slice). */
  ranking: () => BalancerRanking;
  /** Replication sink: flowReady(id) queues the record for every peer. */
  sink: { flowReady(entryId: number): void };
  /** Entry ids visited per slice. Default 16384. */
  budget?: number;
}

export class BackupRepair {
  /** Flows given a live backup; flags cleared because the recorded backup came up; full walks. */
  readonly stats = { assigned: 0, confirmed: 0, walks: 0 };
  readonly #o: Required<BackupRepairOptions>;
  readonly #keyWords = new Uint32Array(KEY_WORDS);
  readonly #keyBytes = new Uint8Array(this.#keyWords.buffer);
  #cursor = -1; // -1: no walk running
  #again = false;
  #closed = false;
  #timer: NodeJS.Immediate | undefined;

  constructor(opts: BackupRepairOptions) {
    this.#o = { budget: 16384, ...opts };
  }

  /** Liveness changed: walk the table (again, from the start, if a walk is running). */
  request(): void {
    if (this.#closed) return;
    if (this.#cursor >= 0) {
      this.#again = true;
      return;
    }
    this.#cursor = 0;
    this.#schedule();
  }

  /** True while a walk is running or queued. */
  get busy(): boolean {
    return this.#cursor >= 0;
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearImmediate(this.#timer);
    this.#timer = undefined;
    this.#cursor = -1;
  }

  #schedule(): void {
    this.#timer = setImmediate(() => {
      this.#timer = undefined;
      this.#slice();
    });
  }

  /** One slice of the walk; runs synchronously (tests may call runToEnd). */
  #slice(): void {
    if (this.#closed || this.#cursor < 0) return;
    const next = this.#o.table.scan(this.#cursor, this.#o.budget, (id) => this.#visit(id));
    if (next !== 0) {
      this.#cursor = next;
      this.#schedule();
      return;
    }
    this.stats.walks++;
    this.#cursor = -1;
    if (this.#again) {
      this.#again = false;
      this.request();
    }
  }

  /** Runs a requested walk to its end at once (tests, shutdown paths). */
  runToEnd(): void {
    while (this.#cursor >= 0 && !this.#closed) {
      if (this.#timer !== undefined) {
        clearImmediate(this.#timer);
        this.#timer = undefined;
      }
      this.#slice();
    }
  }

  #visit(id: number): void {
    const o = this.#o;
    const t = o.table;
    if ((t.flags(id) & F_BACKUP_PENDING) === 0) return;
    const primary = t.primary(id);
    if (primary !== o.selfIndex) return;
    const backup = t.backup(id);
    if (backup !== primary && o.live[backup] !== 0) {
      t.updateFlags(id, 0, F_BACKUP_PENDING);
      this.stats.confirmed++;
      return;
    }
    if (!t.copyKey(id, 0, this.#keyWords, 0)) return;
    const row = hashFlowKey(o.hashKey, this.#keyBytes) & 0xffff;
    const nb = o.ranking().nextLiveHolder(row, o.live, primary, -1);
    if (nb < 0) return;
    t.setDecision(id, primary, nb, t.backend(id));
    t.updateFlags(id, 0, F_BACKUP_PENDING | F_REPLICATED);
    o.sink.flowReady(id);
    this.stats.assigned++;
  }
}
