/**
 * When a flow becomes worth replicating (the flood policy of claim 3), as one O(1) table the
 * forwarder reads on the hot path.
 *
 * Policy (IPVS sync_threshold idea, docs/protocol.md "Balancer to balancer"): a flow's record is sent
 * to every peer once the flow has seen `readyAt[proto]` packets in this balancer's flow table:
 *   - TCP: `syncThreshold` packets (cluster.replication.sync_threshold);
 *   - every other protocol (UDP, ICMP, ...): its first packet (there is no handshake to wait for).
 * The forwarder, right after `table.touch(id, ...)`, does
 *     if (table.packets(id) === readyAt[proto]) sink.flowReady(id);
 * `packets` counts packets of BOTH directions (FlowTable.touch), and is exact-equal-tested so
 * the event fires once per flow (packets only grows; it saturates at 2^32-1).
 *
 * Which threshold suits (TCP):
 *  - 1: the SYN alone replicates the flow: even a connection that fails over mid-handshake
 *    survives, but every spoofed SYN becomes a record multicast to every peer (a SYN flood
 *    becomes a replication flood), and replicated entries are also exempt from the table's
 *    early drop.
 *  - 2: replicated at the handshake's second packet. With DSR (replies bypass the balancer)
 *    that is the client's ACK, which a spoofed source never sends: a spoofed SYN flood costs
 *    no replication traffic. With NAT the second packet is the backend's SYN-ACK (reply
 *    direction, counted too), which the backend sends to spoofed sources as well, so 2 does
 *    NOT filter spoofed SYNs on NAT VIPs.
 *  - 3 (recommended for NAT clusters; 2 suffices for DSR-only ones): SYN, SYN-ACK, then the
 *    client's ACK: only a client that received the SYN-ACK (a real source) gets replicated.
 *    The record leaves at the next flush (~flushMs = 1 ms) after the handshake's last ACK, so
 *    an established connection is replicated before (or with) its first data segment.
 *    A connection that fails over during its handshake is lost; the client retries the SYN.
 * A count is not proof: an attacker who sends `syncThreshold` packets per spoofed 5-tuple still
 * gets them replicated, but then pays at least as many packets as the replication costs (one
 * ~36-byte record per flow, batched ~36 per datagram), so there is no amplification.
 * The configuration default is 3 (docs/configuration.md); the Replicator works with any value.
 */
import { IPPROTO_TCP } from '../packet/parse';

/**
 * readyAt[ipProtocol] = packet count at which a flow of that protocol is replicated
 * (Uint16Array(256): TCP = syncThreshold, every other protocol 1). Build once per config.
 */
export function buildReadyThresholds(syncThreshold: number): Uint16Array {
  const t = new Uint16Array(256).fill(1);
  t[IPPROTO_TCP] = Math.max(1, Math.min(0xffff, Math.floor(syncThreshold)));
  return t;
}

/** FlowState values of TCP (src/flow/timeouts.ts: TCP_SYN_SEEN..TCP_CLOSED are contiguous). */
const ST_TCP_FIRST = 1;
const ST_TCP_LAST = 4;

/**
 * Threshold for a live entry given its flow-table state (no key copy needed): TCP states use
 * `syncThreshold`, every other state 1. Used off the hot path (refresh scan, flush checks).
 */
export function readyThresholdForState(state: number, syncThreshold: number): number {
  return state >= ST_TCP_FIRST && state <= ST_TCP_LAST ? Math.max(1, syncThreshold) : 1;
}
