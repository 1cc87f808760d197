/**
 * Validation of a decision adopted from a peer (src/dataplane/forwarder.ts step 4, a packet
 * from a peer whose flow this balancer holds no record of, flags without SECOND_CHANCE). The
 * data-port tag (src/decision/data-tag.ts) proves the header came from a holder of the cluster
 * key; this checks that the decision is one a balancer following the protocol makes, so a
 * buggy peer, a replay or a key holder gone wrong cannot put a flow on a backend this balancer
 * would never choose, or on the wrong balancer.
 *
 * What a conforming sender puts in the header (forwarder.ts, "serve" and "flow" steps):
 *   - primary and backup: two different configured balancers (the balancer list cannot change
 *     on a reload, so indexes mean the same balancers everywhere);
 *   - no FAILOVER: it sends to the primary; FAILOVER: the primary is dead in its view, so it
 *     sends to the backup or the next live holder in rank, never to the primary;
 *   - NEW_FLOW: it decided just now (never with FAILOVER: the primary it picks is live), by the
 *     ranking row of the flow hash: primary = first live, backup = second live, so the backup
 *     ranks after the primary; or, no other balancer live, backup = the row's first member
 *     other than the primary (BACKUP_PENDING, src/cluster/backup-repair.ts), which ranks first
 *     when the primary does not. Liveness views differ between balancers for a moment at every
 *     change, so nothing here depends on this balancer's view of liveness;
 *   - the VIP its table gives the packet's destination, and a backend of that VIP's table
 *     (NEW_FLOW: one that takes new flows there).
 * Accepted: a decision that passes every check, in this order:
 *   BALANCER   primary and backup < the balancer count, and different           else DROP
 *   ROLE       this balancer is the primary unless FAILOVER, not it with FAILOVER;
 *              NEW_FLOW without FAILOVER; no REPLY (a steered reply goes to a
 *              client, never to a VIP)                                             else DROP
 *   RANK       NEW_FLOW: in row flowHash & 0xffff the backup ranks after the
 *              primary, or ranks first (the pending rule)                         else DROP
 *   VIP        the header's VIP index is the one this table gives the
 *              destination                                                        else DECIDE
 *   BACKEND_RANGE  the backend index exists for that VIP in this table            else DECIDE
 *   BACKEND_INELIGIBLE  NEW_FLOW: that backend takes new flows here (healthy,
 *              not draining, weight > 0)                                          else DECIDE
 * DROP: no conforming balancer sends it, with any table: the packet is dropped, no state
 * (forward drop peer_decision_refused). DECIDE: the sender's table differs from ours (a reload
 * or a health change reached one balancer first): this balancer decides itself as for a
 * client's packet (a note: peer_decision_invalid), and being the flow's primary, its record is
 * the one the cluster keeps. Each refusal is counted by reason
 * (tunlb_peer_decisions_refused_total{reason}). An existing flow's backend that is down here
 * is not a refusal: the record is adopted and the "Backend down" rule applies (TCP reset, UDP
 * moved), as for a record learnt by replication.
 *
 * The generation in the header is not compared: generations are per-process counters
 * (docs/flow-records.md "Generations"), so equal numbers do not mean equal tables; the checks
 * above are against this balancer's own table, which is the one it serves with.
 *
 * Per new flow adopted (not per packet): one flow hash for NEW_FLOW; no allocation.
 */
import { hashFlowKey } from '../decision/halfsiphash';
import { BACKEND_ELIGIBLE, type ForwardingTable } from '../decision/forwarding-table';
import { ENCAP_F_FAILOVER, ENCAP_F_NEW_FLOW, ENCAP_F_REPLY, type EncapInfo } from '../packet/encap';

const flowHash = hashFlowKey;
const F_NEW_FLOW = ENCAP_F_NEW_FLOW;
const F_FAILOVER = ENCAP_F_FAILOVER;
const F_REPLY = ENCAP_F_REPLY;
const ELIGIBLE = BACKEND_ELIGIBLE;

/** checkPeerDecision's result. Stable values: add new ones before PEER_DECISION_COUNT. */
export const PeerDecision = {
  OK: 0,
  BALANCER: 1,
  ROLE: 2,
  RANK: 3,
  VIP: 4,
  BACKEND_RANGE: 5,
  BACKEND_INELIGIBLE: 6,
} as const;

export const PEER_DECISION_COUNT = 7;

/** Reasons from this one on are table differences: the receiver decides itself. Below: dropped. */
export const PEER_DECISION_FIRST_REDECIDE = PeerDecision.VIP;

export const peerDecisionNames: readonly string[] = Object.freeze(['ok', 'balancer', 'role', 'rank', 'vip', 'backend_range', 'backend_ineligible']);

/**
 * The decision in header `e` of a packet to VIP `vip` (this table's index for its destination)
 * with flow key `key`, received by balancer `self`: PeerDecision.OK or the first check it fails
 * (file header). `hashKey`: the cluster hash key (the ranking row).
 */
export function checkPeerDecision(e: EncapInfo, vip: number, key: Uint8Array, ft: ForwardingTable, hashKey: Uint32Array, self: number): number {
  const ranking = ft.ranking;
  const n = ranking.width;
  const p = e.primary;
  const b = e.backup;
  const f = e.flags;
  if (p >= n || b >= n || p === b) return PeerDecision.BALANCER;
  const newFlow = (f & F_NEW_FLOW) !== 0;
  if ((f & F_FAILOVER) !== 0 ? newFlow || p === self : p !== self) return PeerDecision.ROLE;
  if ((f & F_REPLY) !== 0) return PeerDecision.ROLE;
  if (newFlow) {
    const row = flowHash(hashKey, key) & 0xffff;
    const rb = ranking.rankOf(row, b);
    if (rb !== 0 && rb < ranking.rankOf(row, p)) return PeerDecision.RANK;
  }
  if (e.vip !== vip) return PeerDecision.VIP;
  const addrs = ft.backendAddr[vip];
  if (addrs === undefined || e.backend * 16 >= addrs.length) return PeerDecision.BACKEND_RANGE;
  if (newFlow && ((ft.backendUp[vip]![e.backend] ?? 0) & ELIGIBLE) === 0) return PeerDecision.BACKEND_INELIGIBLE;
  return PeerDecision.OK;
}
