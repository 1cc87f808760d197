/**
 * The whole cluster as one balancer sees it (`tunlb status --cluster`, GET /api/v1/cluster,
 * the status page's cluster table): every balancer sends its own figures once a second in a
 * BalancerSummary (protocol/tunlb.proto) to every peer; ClusterView keeps the last accepted
 * one of each peer with the time it came (the owner's monotonic clock), so a reader shows a
 * peer's figures as the peer last reported them, with their age.
 *
 * Contracts:
 * - onSummary() takes only envelopes the receiver accepted (MAC, cluster, sender, replay
 *   window, confirmed incarnation: src/protocol/receiver.ts). A summary that fails the checks
 *   below is dropped whole and counted by reason (`drops`, SUMMARY_DROP_REASONS), never
 *   half-applied, never throws: a status outside PeerStatus, more RTT entries than balancers,
 *   a figure that is not a safe non-negative integer.
 * - What is kept is a copy (plain numbers and one small array per peer; the body's views into
 *   the receive buffer are not kept). Memory: one StoredSummary per balancer (<= 32).
 * - Sending is the owner's (ClusterNode.publishSummary, once a second: never per probe).
 */
import { MAX_BALANCERS } from '../protocol/flow-record';
import { hexOf } from '../config/config-hash';
import type { tunlb } from '../protocol';

export type SummaryFields = tunlb.v1.BalancerSummary.$Properties;

/** Why a summary was dropped (label values of tunlb_cluster_messages_dropped_total). */
export const SUMMARY_DROP_REASONS = ['bad_status', 'bad_rtts', 'bad_value'] as const;
export type SummaryDropReason = (typeof SUMMARY_DROP_REASONS)[number];

const STATUS_NAMES = ['unknown', 'syncing', 'serving', 'draining'] as const;

/** One peer's last summary, as reported (plus when it came). */
export interface StoredSummary {
  /** 'syncing' | 'serving' | 'draining' | 'unknown' (UNSPECIFIED). */
  readonly status: string;
  /** 12 hex digits, '' when not reported. */
  readonly configHash: string;
  readonly flowsHeld: number;
  readonly flowsPrimary: number;
  readonly flowsBackup: number;
  readonly packetsInPerS: number;
  readonly packetsOutPerS: number;
  readonly bytesInPerS: number;
  readonly bytesOutPerS: number;
  readonly uptimeS: number;
  readonly generation: number;
  /** Its smoothed RTT to each balancer, microseconds (0 = itself / unknown), by balancer index. */
  readonly peerRttUs: readonly number[];
  readonly liveMask: number;
  /** The owner's clock (ms) when it was accepted. */
  readonly receivedAtMs: number;
}

export interface ClusterViewStats {
  received: number;
  accepted: number;
  drops: Record<SummaryDropReason, number>;
}

function isCount(v: unknown): boolean {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Checks a decoded summary (header); returns the drop reason, or null when it is usable. */
export function checkSummary(s: SummaryFields, balancerCount: number): SummaryDropReason | null {
  const st = s.status ?? 0;
  if (!(Number.isInteger(st) && st >= 0 && st < STATUS_NAMES.length)) return 'bad_status';
  const rtts = s.peerRttUs ?? [];
  if (!Array.isArray(rtts) || rtts.length > Math.min(balancerCount, MAX_BALANCERS) || !rtts.every(isCount)) return 'bad_rtts';
  for (const v of [s.configHash, s.flowsHeld, s.flowsPrimary, s.flowsBackup, s.packetsInPerS, s.packetsOutPerS, s.bytesInPerS, s.bytesOutPerS, s.uptimeS, s.generation, s.liveMask]) {
    if (v !== undefined && v !== null && !isCount(Number(v))) return 'bad_value';
  }
  return null;
}

export class ClusterView {
  readonly stats: ClusterViewStats = { received: 0, accepted: 0, drops: { bad_status: 0, bad_rtts: 0, bad_value: 0 } };
  readonly #last: (StoredSummary | undefined)[];
  readonly #n: number;
  readonly #selfIndex: number;
  readonly #now: () => number;

  constructor(opts: { balancerCount: number; selfIndex: number; nowMs: () => number }) {
    this.#n = opts.balancerCount;
    this.#selfIndex = opts.selfIndex;
    this.#now = opts.nowMs;
    this.#last = new Array<StoredSummary | undefined>(opts.balancerCount).fill(undefined);
  }

  /** A verified summary from balancer `sender` (header). Returns true when kept. */
  onSummary(sender: number, s: SummaryFields): boolean {
    this.stats.received++;
    if (!(Number.isInteger(sender) && sender >= 0 && sender < this.#n) || sender === this.#selfIndex) {
      this.stats.drops.bad_value++;
      return false;
    }
    const why = checkSummary(s, this.#n);
    if (why !== null) {
      this.stats.drops[why]++;
      return false;
    }
    this.stats.accepted++;
    this.#last[sender] = {
      status: STATUS_NAMES[s.status ?? 0]!,
      configHash: hexOf(Number(s.configHash ?? 0)),
      flowsHeld: s.flowsHeld ?? 0,
      flowsPrimary: s.flowsPrimary ?? 0,
      flowsBackup: s.flowsBackup ?? 0,
      packetsInPerS: s.packetsInPerS ?? 0,
      packetsOutPerS: s.packetsOutPerS ?? 0,
      bytesInPerS: Number(s.bytesInPerS ?? 0),
      bytesOutPerS: Number(s.bytesOutPerS ?? 0),
      uptimeS: s.uptimeS ?? 0,
      generation: s.generation ?? 0,
      peerRttUs: Array.from(s.peerRttUs ?? []),
      liveMask: (s.liveMask ?? 0) >>> 0,
      receivedAtMs: this.#now(),
    };
    return true;
  }

  /** Balancer i's last summary and its age (ms), or null when none came (or i is this balancer). */
  last(i: number): { summary: StoredSummary; ageMs: number } | null {
    const s = this.#last[i];
    return s === undefined ? null : { summary: s, ageMs: Math.max(0, this.#now() - s.receivedAtMs) };
  }

  /** Forgets balancer i's summary (a restart: the old process's figures say nothing of the new). */
  forget(i: number): void {
    if (i >= 0 && i < this.#n) this.#last[i] = undefined;
  }
}
