/**
 * Flow protocol states and idle timeouts.
 *
 * Units: seconds (the table stores u32 seconds since process start, docs/contracts.md "Time").
 * An entry is expired when `nowSec - lastSeen > timeout(state)`: it has been idle for more than
 * `timeout` whole seconds (strictly greater, so a 1 s coarse clock never cuts a flow short).
 *
 * Defaults follow the spirit of Linux conntrack (nf_conntrack_proto_tcp.c tcp_timeouts) and
 * IPVS, but shorter for the established state because a load balancer refreshes from traffic:
 *   TCP established 300 s, SYN seen 30 s, closing (FIN seen) 10 s, closed (RST) 5 s,
 *   UDP 30 s, ICMP/ICMPv6 10 s, any other IP protocol 30 s.
 */
import { TunlbError, ErrorCodes } from '../errors';

/** Protocol state of an entry (u8). TCP states are contiguous (TCP_SYN_SEEN..TCP_CLOSED). */
export const FlowState = {
  /** Slot of the entry array not in use. Never returned for a live entry. */
  FREE: 0,
  /** TCP: a SYN (or SYN+ACK) seen, or a TCP flow inserted and not yet touched. */
  TCP_SYN_SEEN: 1,
  /** TCP: an ACK without SYN seen after SYN_SEEN (also mid-stream pickup). */
  TCP_ESTABLISHED: 2,
  /** TCP: a FIN seen in either direction (closing / time-wait). */
  TCP_CLOSING: 3,
  /** TCP: a RST seen in either direction. */
  TCP_CLOSED: 4,
  UDP: 5,
  /** ICMP (1) and ICMPv6 (58) echo flows. */
  ICMP: 6,
  /** Any other IP protocol (keyed with ports 0). */
  OTHER: 7,
} as const;
export type FlowStateValue = (typeof FlowState)[keyof typeof FlowState];
export const FLOW_STATE_COUNT = 8;

/** Idle timeouts in seconds, per protocol/state. */
export interface FlowTimeouts {
  tcpEstablished: number;
  tcpSynSeen: number;
  tcpClosing: number;
  tcpClosed: number;
  udp: number;
  icmp: number;
  other: number;
}

export const DEFAULT_FLOW_TIMEOUTS: Readonly<FlowTimeouts> = Object.freeze({
  tcpEstablished: 300,
  tcpSynSeen: 30,
  tcpClosing: 10,
  tcpClosed: 5,
  udp: 30,
  icmp: 10,
  other: 30,
});

/**
 * Builds the per-state timeout table (index = FlowState value). Missing fields take the defaults.
 * Off the hot path: throws TUNLB_CONFIG_INVALID for a timeout that is not an integer in
 * 0 .. 2^31-1 seconds.
 */
export function buildTimeoutTable(partial?: Partial<FlowTimeouts>): Uint32Array {
  const t: FlowTimeouts = { ...DEFAULT_FLOW_TIMEOUTS, ...(partial ?? {}) };
  for (const [k, v] of Object.entries(t)) {
    if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
      throw new TunlbError(ErrorCodes.CONFIG_INVALID, `flow timeout ${k} must be an integer number of seconds >= 0, got ${String(v)}`);
    }
  }
  const table = new Uint32Array(FLOW_STATE_COUNT);
  table[FlowState.FREE] = 0;
  table[FlowState.TCP_SYN_SEEN] = t.tcpSynSeen;
  table[FlowState.TCP_ESTABLISHED] = t.tcpEstablished;
  table[FlowState.TCP_CLOSING] = t.tcpClosing;
  table[FlowState.TCP_CLOSED] = t.tcpClosed;
  table[FlowState.UDP] = t.udp;
  table[FlowState.ICMP] = t.icmp;
  table[FlowState.OTHER] = t.other;
  return table;
}

/** Initial state of a new entry from its IP protocol number (key byte 36). */
export function initialStateForProtocol(proto: number): FlowStateValue {
  switch (proto) {
    case 6:
      return FlowState.TCP_SYN_SEEN;
    case 17:
      return FlowState.UDP;
    case 1:
    case 58:
      return FlowState.ICMP;
    default:
      return FlowState.OTHER;
  }
}
