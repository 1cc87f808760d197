/**
 * Generations of flow records (src/cluster/replication-applier.ts, "Applying records from peers",
 * Generations): a record's backend index means "position in the VIP's backend list" of the
 * sender's forwarding table, named by its table_generation. This history remembers the VIP
 * names and backend id lists of the last GEN_HISTORY forwarding tables observed here, so a
 * record decided on another generation is mapped by name/id to the current indexes:
 *   - generation equal to the current table's, or no VIP/backend list change observed in this
 *     process: used as is;
 *   - a remembered generation: the VIP and backend mapped by name/id (backend_gone when the
 *     backend left the list; counted in stats.remapped when an index moved);
 *   - an unknown generation after a change to that VIP's list: generation_ambiguous.
 * Control plane (per record applied): allocates only when a new table is observed.
 */
import type { ForwardingTable } from '../decision/forwarding-table';

/** Why resolve() ignores a record (a subset of the replicator's reject reasons). */
export type GenerationReject = 'vip_out_of_range' | 'backend_out_of_range' | 'backend_gone' | 'generation_ambiguous';

/** Forwarding tables remembered. */
export const GEN_HISTORY = 16;

/** What is remembered of a forwarding table generation. */
interface GenView {
  readonly names: readonly string[];
  readonly ids: readonly (readonly string[])[];
}

export class GenerationHistory {
  /** resolve()'s output: the record's VIP and backend as indexes of the current table. */
  vip = 0;
  backend = 0;
  readonly #stats: { remapped: number };
  readonly #gens = new Map<number, GenView>();
  #lastFt: ForwardingTable | null = null;
  #lastView: GenView | null = null;
  /** VIP names whose backend list changed (or that appeared/moved) among observed tables. */
  readonly #changedVips = new Set<string>();
  #vipListChanged = false;

  constructor(stats: { remapped: number }) {
    this.#stats = stats;
  }

  /** Remembers the VIP names and backend lists of a forwarding table not seen yet. */
  observe(ft: ForwardingTable): void {
    if (ft === this.#lastFt) return;
    this.#lastFt = ft;
    const view: GenView = {
      names: ft.config.vips.map((v) => v.name),
      ids: ft.backendTables.map((b) => b.ids),
    };
    const prev = this.#lastView;
    if (prev !== null) {
      for (let v = 0; v < Math.max(prev.names.length, view.names.length); v++) {
        const name = view.names[v];
        const pi = name === undefined ? -1 : prev.names.indexOf(name);
        if (name === undefined || pi !== v || !sameList(prev.ids[pi] ?? [], view.ids[v] ?? [])) {
          if (name !== undefined) this.#changedVips.add(name);
          const pn = prev.names[v];
          if (pn !== undefined) this.#changedVips.add(pn);
          this.#vipListChanged = true;
        }
      }
    }
    this.#lastView = view;
    this.#gens.delete(ft.generation);
    this.#gens.set(ft.generation, view);
    if (this.#gens.size > GEN_HISTORY) this.#gens.delete(this.#gens.keys().next().value as number);
  }

  /**
   * Maps a record's (vip, backend, generation) to current indexes in `vip` / `backend`, or
   * returns the reason to ignore it. `ft` must have been observed.
   */
  resolve(ft: ForwardingTable, vip: number, backend: number, gen: number): GenerationReject | null {
    const cur = this.#lastView!;
    if (gen !== ft.generation && this.#vipListChanged) {
      const old = this.#gens.get(gen);
      if (old !== undefined) {
        const name = old.names[vip];
        const id = old.ids[vip]?.[backend];
        if (name === undefined) return 'vip_out_of_range';
        if (id === undefined) return 'backend_out_of_range';
        let nv = vip;
        if (cur.names[vip] !== name) {
          nv = cur.names.indexOf(name);
          if (nv < 0) return 'vip_out_of_range';
        }
        let nb = backend;
        const ids = cur.ids[nv]!;
        if (ids[backend] !== id) {
          nb = ids.indexOf(id);
          if (nb < 0) return 'backend_gone';
        }
        if (nv !== vip || nb !== backend) this.#stats.remapped++;
        vip = nv;
        backend = nb;
      } else {
        const name = cur.names[vip];
        if (name === undefined) return 'vip_out_of_range';
        if (this.#changedVips.has(name)) return 'generation_ambiguous';
      }
    }
    if (vip >= ft.vipCount) return 'vip_out_of_range';
    const addrs = ft.backendAddr[vip];
    if (addrs === undefined || backend * 16 + 16 > addrs.length) return 'backend_out_of_range';
    this.vip = vip;
    this.backend = backend;
    return null;
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
