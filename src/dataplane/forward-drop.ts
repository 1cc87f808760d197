/**
 * Drop reasons of the forwarding decisions (src/dataplane/forwarder.ts), beside the packet
 * core's PacketResult reasons (parse and rewrite). Stable values: never renumber; add new
 * ones before FORWARD_DROP_COUNT and add their name.
 */
export const ForwardDrop = {
  /** To a VIP, but the VIP does not serve this IP protocol. */
  PROTOCOL_NOT_SERVED: 0,
  /** To a VIP, but not to one of its ports. */
  PORT_NOT_SERVED: 1,
  /** Not to a VIP and no flow has it as its reply (kernel housekeeping, expired flows). */
  NO_FLOW: 2,
  /** An ICMP error about a flow the balancer does not hold. */
  ICMP_ERROR_NO_FLOW: 3,
  /** The VIP has no eligible backend (all down, drained or weight 0). */
  NO_BACKEND: 4,
  /** No live balancer for the flow (cannot happen while this one lives). */
  NO_BALANCER: 5,
  /** The flow table is full and its policy refused the new flow. */
  TABLE_FULL: 6,
  /** The new flow's reply key is another flow's key (two VIPs NAT to one backend:port). */
  FLOW_CONFLICT: 7,
  /** The VIP's forwarding method is not available on this data path. */
  METHOD_UNSUPPORTED: 8,
  /** The TUN device refused or could not take the packet on write. */
  WRITE_FAILED: 9,
  /** An encapsulated packet whose outer source is not a configured balancer. */
  NOT_A_PEER: 10,
  /** A peer sent a packet with a virtio header but this TUN device has no offloads. */
  PEER_VNET_UNSUPPORTED: 11,
  /** The packet plus encapsulation does not fit one UDP datagram to the peer. */
  PEER_PACKET_TOO_BIG: 12,
  /** A note, not a drop: the decision in a peer's header was refused for a reason a table or
   *  health difference between balancers explains (a VIP or backend this table does not have
   *  or that takes no new flows here: tunlb_peer_decisions_refused_total says which); this
   *  balancer then decides itself (src/dataplane/peer-decision.ts). */
  PEER_DECISION_INVALID: 13,
  /** DSR: no link-layer address (yet) for the flow's backend; resolution is triggered. */
  DSR_NO_NEIGHBOUR: 14,
  /** A later fragment (no L4 header) of a flow this balancer holds no record of: its first
   *  fragment was refused (port not served) or not seen (docs/fragments.md). */
  FRAGMENT_NO_FLOW: 15,
  /** An encapsulated packet whose data-port tag is wrong (src/decision/data-tag.ts): forged,
   *  altered, replayed with another flow or decision, or sent with another cluster key. */
  PEER_BAD_TAG: 16,
  /** A peer's decision no balancer following the protocol makes, whatever its tables: dropped
   *  (src/dataplane/peer-decision.ts; tunlb_peer_decisions_refused_total says why). */
  PEER_DECISION_REFUSED: 17,
  /** A virtio header from a peer that does not fit its inner packet (src/packet/vnet-check.ts;
   *  tunlb_peer_vnet_refused_total says why). */
  PEER_VNET_INVALID: 18,
} as const;

export const FORWARD_DROP_COUNT = 19;

export const forwardDropNames: readonly string[] = Object.freeze([
  'protocol_not_served',
  'port_not_served',
  'no_flow',
  'icmp_error_no_flow',
  'no_backend',
  'no_balancer',
  'table_full',
  'flow_conflict',
  'method_unsupported',
  'write_failed',
  'not_a_peer',
  'peer_vnet_unsupported',
  'peer_packet_too_big',
  'peer_decision_invalid',
  'dsr_no_neighbour',
  'fragment_no_flow',
  'peer_bad_tag',
  'peer_decision_refused',
  'peer_vnet_invalid',
]);
