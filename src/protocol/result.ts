/**
 * Result codes of the balancer-to-balancer protocol's receive path. Every datagram a balancer
 * receives on the control port ends in exactly one of these; drops are counted per code
 * (`counts[code]++`), never thrown. Numeric values and names are stable (metrics and logs use
 * the names): never renumber or rename one, add new ones at the end.
 *
 * Order of the checks (src/protocol/receiver.ts, src/protocol/codec.ts), cheapest and
 * unauthenticated first, stateful last (docs/protocol.md "Receive path"):
 *   before any decoding (no HMAC, no protobuf):
 *     oversize -> not_a_peer / from_self (source address and port) -> malformed_outer (strict
 *     outer frame) -> bad_version / wrong_cluster (the envelope's first bytes)
 *   authentication:  bad_mac
 *   authenticated:   malformed_envelope -> bad_version -> unknown_body -> bad_record ->
 *                    wrong_cluster -> unknown_sender -> from_self -> wrong_recipient ->
 *                    source_mismatch -> wrong_port
 *   stateful:        stale_incarnation / unconfirmed / replayed
 */
export const ProtocolResult = {
  /** Authentic, fresh and well-formed: process it. */
  OK: 0,
  /** Not a SignedEnvelope: truncated, garbage, missing `envelope`, or `mac` not 32 bytes. */
  MALFORMED_OUTER: 1,
  /** HMAC-SHA256 over the envelope bytes does not match `mac` (wrong key, corruption, forgery). */
  BAD_MAC: 2,
  /** Authentic, but the Envelope (or a body) does not decode, or a header field is out of range. */
  MALFORMED_ENVELOPE: 3,
  /** Envelope.version is not the version this balancer speaks. */
  BAD_VERSION: 4,
  /** No body this version knows (none at all, or a body type added later). */
  UNKNOWN_BODY: 5,
  /** A FlowRecord is invalid (op unspecified/unknown, key length not 13/40, index out of range). */
  BAD_RECORD: 6,
  /** Envelope.cluster_id is not this cluster's. */
  WRONG_CLUSTER: 7,
  /** Envelope.sender is not a configured balancer index. */
  UNKNOWN_SENDER: 8,
  /** Envelope.sender is this balancer (multicast loopback, or a misconfigured peer). */
  FROM_SELF: 9,
  /** Envelope.incarnation is older than the sender's current one (a datagram from before a restart). */
  STALE_INCARNATION: 10,
  /** Envelope.seq was already seen, or is older than the 1024-wide replay window. */
  REPLAYED: 11,
  /**
   * Authentic, but the datagram's source address is not the configured address of its
   * sender. Checked BEFORE the replay window, so such a datagram cannot advance it.
   */
  SOURCE_MISMATCH: 12,
  /**
   * Longer than the largest datagram a balancer sends (MAX_CONTROL_DATAGRAM, 1400 bytes of UDP
   * payload), or truncated by the receive slot. Checked first: nothing of it is read.
   */
  OVERSIZE: 13,
  /**
   * The UDP source (address and port) is not a configured balancer's control or probe
   * endpoint. Checked before any decoding. (A spoofed peer source passes; the MAC decides.)
   */
  NOT_A_PEER: 14,
  /** Authentic, but Envelope.recipients names other balancers only (a unicast envelope replayed to another one). */
  WRONG_RECIPIENT: 15,
  /**
   * Authentic and new, but from an incarnation of its sender that this balancer has not
   * confirmed yet: only a ProbeAck echoing one of our probe nonces confirms an incarnation
   * (src/protocol/replay-window.ts). Probes and acks pass (they are how confirmation happens);
   * every other body waits. Stops datagrams of a sender's earlier life, replayed to a
   * receiver that has no replay window for it yet (it restarted), from being accepted.
   */
  UNCONFIRMED: 16,
  /** Authentic, but a body the socket it came in on does not carry (records on the probe port). */
  WRONG_PORT: 17,
} as const;

export type ProtocolResult = (typeof ProtocolResult)[keyof typeof ProtocolResult];

/** Number of result codes: size of a per-code counter array (`new Float64Array(PROTOCOL_RESULT_COUNT)`). */
export const PROTOCOL_RESULT_COUNT = 18;

/** Stable snake_case names, indexed by code: metric label values and log fields. */
export const PROTOCOL_RESULT_NAMES: readonly string[] = Object.freeze([
  'ok',
  'malformed_outer',
  'bad_mac',
  'malformed_envelope',
  'bad_version',
  'unknown_body',
  'bad_record',
  'wrong_cluster',
  'unknown_sender',
  'from_self',
  'stale_incarnation',
  'replayed',
  'source_mismatch',
  'oversize',
  'not_a_peer',
  'wrong_recipient',
  'unconfirmed',
  'wrong_port',
]);

/** Name of a result code ('unknown' for a number that is not one). */
export function protocolResultName(code: number): string {
  return PROTOCOL_RESULT_NAMES[code] ?? 'unknown';
}
