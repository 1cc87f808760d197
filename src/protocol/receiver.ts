/**
 * The receiving side of one balancer: every control datagram goes through receive(), which
 * returns a DecodeResult whose `result` says what to do (only OK is processed) and counts
 * every outcome per ProtocolResult code (for metrics: PROTOCOL_RESULT_NAMES[code]).
 *
 * Checks, in order (docs/protocol.md "Receive path"), each a counted drop:
 *  1. before any decoding (no HMAC, no protobuf, nothing allocated):
 *     - size: at most `maxDatagram` bytes (OVERSIZE);
 *     - source: the owner says which configured balancer's control or probe endpoint the UDP
 *       source (address and port) is, if any (NOT_A_PEER; our own address: FROM_SELF);
 *     - the strict outer frame and the envelope's first bytes (codec.decodeSigned:
 *       MALFORMED_OUTER, BAD_VERSION, WRONG_CLUSTER);
 *  2. the MAC (BAD_MAC), then the authenticated envelope (MALFORMED_ENVELOPE, BAD_VERSION,
 *     UNKNOWN_BODY, BAD_RECORD), cluster id (WRONG_CLUSTER), sender index (UNKNOWN_SENDER;
 *     FROM_SELF for our own), recipients (WRONG_RECIPIENT: a unicast envelope meant for
 *     another balancer), the source address against the sender's (SOURCE_MISMATCH), and the
 *     body against the socket (WRONG_PORT: the probe socket carries probes and acks only);
 *  3. last, the sender's incarnation and the replay window (STALE_INCARNATION, UNCONFIRMED,
 *     REPLAYED; src/protocol/replay-window.ts). The window is moved only by envelopes that
 *     passed every other check, so neither forged, misdirected nor spoofed-source datagrams
 *     can move it.
 *
 * Incarnations (step 3): records, health reports and sync messages are accepted only from a
 * sender's CONFIRMED incarnation. Probes and acks of an unconfirmed incarnation pass with
 * `out.confirmed = false`: the owner answers such a probe (its sender cannot confirm us
 * otherwise), and when such an ack echoes one of its own probe nonces it calls confirm()
 * (src/cluster/cluster-node.ts), which starts the window at that ack. `confirmBy:
 * 'first-envelope'` instead adopts any larger incarnation on its first authentic envelope
 * (trust on first use: test doubles without membership, never the daemon).
 *
 * Not checked here: Envelope.sent_at_ms against our clock (balancer clocks are not assumed
 * synchronised; freshness comes from probe nonces, the sequence window and incarnations).
 */
import { decodeSigned, DecodeResult, MAX_CONTROL_DATAGRAM, type MacKey } from './codec';
import { MAX_BALANCERS } from './flow-record';
import { ReplayWindows } from './replay-window';
import { PROTOCOL_RESULT_COUNT, ProtocolResult } from './result';

/** `source` of receive(): the owner did not check the source (tests, in-memory networks). */
export const SOURCE_UNCHECKED = -2;
/** `source` of receive(): the UDP source is no configured balancer's control or probe endpoint. */
export const SOURCE_NOT_A_PEER = -1;

/** `via` of receive(): which socket a datagram came in on. */
export const Via = {
  /** The control port: every body (records, health, sync; probes and acks from peers of the first release). */
  CONTROL: 0,
  /** The probe port: Probe and ProbeAck only. */
  PROBE: 1,
} as const;
export type Via = (typeof Via)[keyof typeof Via];

export interface ReceiverOptions {
  /** The cluster key (raw bytes or a KeyObject from macKey()). */
  key: MacKey;
  clusterId: number;
  /** This balancer's index; its own envelopes are FROM_SELF. -1 to accept every sender. */
  self: number;
  /** Number of configured balancers: senders 0..balancerCount-1 are known. */
  balancerCount: number;
  /** Largest datagram accepted, bytes (default MAX_CONTROL_DATAGRAM). */
  maxDatagram?: number;
  /** How an incarnation becomes confirmed (header). Default 'probe-ack'. */
  confirmBy?: 'probe-ack' | 'first-envelope';
}

export class EnvelopeReceiver {
  /** Datagrams received per ProtocolResult code (index = code). Float64 so they never wrap. */
  readonly counts = new Float64Array(PROTOCOL_RESULT_COUNT);
  readonly replay: ReplayWindows;
  readonly maxDatagram: number;
  private readonly key: MacKey;
  private readonly clusterId: number;
  private readonly self: number;
  private readonly balancerCount: number;
  private readonly adoptFirst: boolean;

  constructor(opts: ReceiverOptions) {
    if (!Number.isInteger(opts.balancerCount) || opts.balancerCount < 1 || opts.balancerCount > MAX_BALANCERS) {
      throw new RangeError(`EnvelopeReceiver: balancerCount must be 1..${MAX_BALANCERS}`);
    }
    const max = opts.maxDatagram ?? MAX_CONTROL_DATAGRAM;
    if (!Number.isInteger(max) || max < 64 || max > 65507) throw new RangeError('EnvelopeReceiver: maxDatagram must be 64..65507');
    this.key = opts.key;
    this.clusterId = opts.clusterId;
    this.self = opts.self;
    this.balancerCount = opts.balancerCount;
    this.maxDatagram = max;
    this.adoptFirst = opts.confirmBy === 'first-envelope';
    this.replay = new ReplayWindows(opts.balancerCount);
  }

  /**
   * Checks and decodes one datagram at buf[off..off+len) (header). `source`: the index of the
   * configured balancer whose control or probe endpoint the UDP source is, SOURCE_NOT_A_PEER,
   * or SOURCE_UNCHECKED (default). `via`: the socket it came in on (default Via.CONTROL).
   * A datagram the socket truncated is passed with len > maxDatagram (OVERSIZE). Never throws.
   */
  receive(
    buf: Uint8Array,
    off: number,
    len: number,
    out: DecodeResult = new DecodeResult(),
    source: number = SOURCE_UNCHECKED,
    via: Via = Via.CONTROL,
  ): DecodeResult {
    const r = this.check(buf, off, len, out, source, via);
    if (r !== ProtocolResult.OK) {
      out.result = r;
      out.envelope = null;
    }
    this.counts[out.result]++;
    return out;
  }

  /** Counts a datagram the owner dropped itself by one of the receiver's reasons (e.g. OVERSIZE when truncated). */
  count(result: ProtocolResult): void {
    this.counts[result]++;
  }

  /**
   * Confirms `incarnation` of `sender` (header, step 3): call it when an ack of that
   * incarnation, signed with sequence number `seq`, echoed one of our own probe nonces.
   * Returns true when the confirmed incarnation changed.
   */
  confirm(sender: number, incarnation: number, seq: number): boolean {
    return this.replay.confirm(sender, incarnation, seq);
  }

  private check(buf: Uint8Array, off: number, len: number, out: DecodeResult, source: number, via: Via): ProtocolResult {
    out.sender = -1;
    out.confirmed = true;
    if (len > this.maxDatagram) return ProtocolResult.OVERSIZE;
    if (source === SOURCE_NOT_A_PEER) return ProtocolResult.NOT_A_PEER;
    if (source >= 0 && source === this.self) return ProtocolResult.FROM_SELF;
    decodeSigned(buf, off, len, this.key, out, this.clusterId);
    if (out.result !== ProtocolResult.OK) return out.result;
    const env = out.envelope!;
    if (env.clusterId !== this.clusterId) return ProtocolResult.WRONG_CLUSTER;
    const sender = env.sender;
    if (sender >= this.balancerCount) return ProtocolResult.UNKNOWN_SENDER;
    if (sender === this.self) return ProtocolResult.FROM_SELF;
    const to = env.recipients;
    if (to !== 0 && this.self >= 0 && ((to >>> this.self) & 1) === 0) return ProtocolResult.WRONG_RECIPIENT;
    // The source check comes before the replay window: a datagram that may not be from its
    // sender must not advance the sender's window (it would lock the real one out).
    if (source >= 0 && source !== sender) return ProtocolResult.SOURCE_MISMATCH;
    const probing = env.body === 'probe' || env.body === 'probeAck';
    if (via === Via.PROBE && !probing) return ProtocolResult.WRONG_PORT;
    if (this.adoptFirst) return this.replay.adopt(sender, env.incarnation, env.seq);
    const r = this.replay.checkAndUpdate(sender, env.incarnation, env.seq);
    if ((r === ProtocolResult.UNCONFIRMED || r === ProtocolResult.STALE_INCARNATION) && probing) {
      // How confirmation happens (header): the owner answers, or matches the nonce.
      out.confirmed = false;
      return ProtocolResult.OK;
    }
    return r;
  }
}
