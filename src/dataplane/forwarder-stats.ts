/**
 * The forwarder's counters (src/dataplane/forwarder.ts and its emitters, peer-output.ts and
 * dsr-output.ts): plain numbers and typed arrays bumped on the hot path (no allocation), read
 * by the control plane at request or scrape time (src/control/counters.ts declares how each is
 * exported). Monotonic for the life of the process.
 */
import { PACKET_RESULT_COUNT } from '../packet/result';
import { FORWARD_DROP_COUNT } from './forward-drop';
import { VNET_CHECK_COUNT } from '../packet/vnet-check';
import { PEER_DECISION_COUNT } from './peer-decision';

export class ForwarderStats {
  rxPackets = 0;
  /** Encapsulated packets sent to / received from peers. */
  peerTxPackets = 0;
  /** GSO super-packets to peers split to the MTU (each counted once in peerTxPackets), and their datagrams. */
  peerSplitPackets = 0;
  peerSplitDatagrams = 0;
  /** Super-packets over the MTU sent whole (IP-fragmented): no room for their chunk headers, or not TCP. */
  peerSplitSkipped = 0;
  /** Datagrams from peers appended to the one before them (a split super-packet put back together). */
  peerRxMerged = 0;
  peerRxPackets = 0;
  /** Packets sent to a flow's backup or a later holder because its primary was dead. */
  failoverPackets = 0;
  /** Non-initial packets without a record sent to their ranked primary. */
  secondChancePackets = 0;
  /** NAT replies without a record here sent to their flow's ranked primary (reply steering). */
  replySteeredPackets = 0;
  /** Replies of flows not confirmed yet sent to the flow's recorded primary, so that it can confirm them. */
  unconfirmedRepliesToPrimary = 0;
  /**
   * New flows decided while no other balancer was live: their backup is the next configured
   * balancer in rank (flag BACKUP_PENDING) until a live one is assigned.
   */
  flowsNoLiveBackup = 0;
  /** DSR frames queued for the AF_PACKET socket (also counted in forwardPackets). */
  dsrPackets = 0;
  rxBytes = 0;
  txPackets = 0;
  txBytes = 0;
  flowsCreated = 0;
  forwardPackets = 0;
  replyPackets = 0;
  /** TCP packets of flows whose backend is down answered with an RST to the client (flow removed). */
  tcpResetBackendDown = 0;
  /** UDP/ICMP flows moved to another backend because theirs was down. */
  udpMovedBackendDown = 0;
  /**
   * New TCP connections (a SYN without ACK) on a 5-tuple whose lingering record names a backend
   * that takes no new flows (draining, down, weight 0), moved to the table's pick ("Connection
   * reuse").
   */
  synReuseRebound = 0;
  /**
   * Replies matched although their key was not the flow's reply key (docs/fragments.md):
   * the first fragment of a fragmented reply by its full 5-tuple, a later
   * fragment by the fragment-id cache, an unfragmented reply to a flow created by fragments
   * (keyed without ports) by its 3-tuple.
   */
  replyFirstFragments = 0;
  replyLaterFragments = 0;
  replyThreeTuple = 0;
  /** TUN batches processed, and their sizes: index k counts batches of 2^k .. 2^(k+1)-1 packets. */
  batches = 0;
  readonly batchSizeLog2 = new Float64Array(16);
  /** Drops by PacketResult code (parse and rewrite). */
  readonly packetDrops = new Float64Array(PACKET_RESULT_COUNT);
  /** Drops by ForwardDrop code (decisions). */
  readonly forwardDrops = new Float64Array(FORWARD_DROP_COUNT);
  /**
   * Decisions in peers' headers refused, by PeerDecision reason (src/dataplane/peer-decision.ts):
   * each also counted once in forwardDrops, as peer_decision_refused (dropped) or
   * peer_decision_invalid (a note: this balancer decided itself).
   */
  readonly peerDecisionRefused = new Float64Array(PEER_DECISION_COUNT);
  /** Virtio headers from peers refused, by VnetCheck reason (src/packet/vnet-check.ts); each a peer_vnet_invalid drop. */
  readonly peerVnetRefused = new Float64Array(VNET_CHECK_COUNT);
}
