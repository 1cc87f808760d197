/**
 * The receiving side of one balancer: every control datagram goes through receive(), which
 * returns a DecodeResult whose `result` says what to do (only OK is processed) and counts
 * every outcome per ProtocolResult code (for metrics: PROTOCOL_RESULT_NAMES[code]).
 *
 * Checks, in order: decodeSigned (outer frame, MAC, envelope, version, body, records), then
 * the cluster id (WRONG_CLUSTER), the sender index (UNKNOWN_SENDER; FROM_SELF for our own
 * datagrams looped back by multicast), and last the replay window (STALE_INCARNATION,
 * REPLAYED). The window is updated only by envelopes that passed every other check, so
 * neither forged nor invalid datagrams can move it (src/protocol/replay-window.ts).
 *
 * Not checked here: Envelope.sent_at_ms against our clock (balancer clocks are not assumed
 * synchronised; freshness comes from the sequence window and incarnations).
 */
import { decodeSigned, DecodeResult, type MacKey } from './codec';
import { MAX_BALANCERS } from './flow-record';
import { ReplayWindows } from './replay-window';
import { PROTOCOL_RESULT_COUNT, ProtocolResult } from './result';

export interface ReceiverOptions {
  /** The cluster key (raw bytes or a KeyObject from macKey()). */
  key: MacKey;
  clusterId: number;
  /** This balancer's index; its own envelopes are FROM_SELF. -1 to accept every sender. */
  self: number;
  /** Number of configured balancers: senders 0..balancerCount-1 are known. */
  balancerCount: number;
}

export class EnvelopeReceiver {
  /** Datagrams received per ProtocolResult code (index = code). Float64 so they never wrap. */
  readonly counts = new Float64Array(PROTOCOL_RESULT_COUNT);
  readonly replay: ReplayWindows;
  private readonly key: MacKey;
  private readonly clusterId: number;
  private readonly self: number;
  private readonly balancerCount: number;

  constructor(opts: ReceiverOptions) {
    if (!Number.isInteger(opts.balancerCount) || opts.balancerCount < 1 || opts.balancerCount > MAX_BALANCERS) {
      throw new RangeError(`EnvelopeReceiver: balancerCount must be 1..${MAX_BALANCERS}`);
    }
    this.key = opts.key;
    this.clusterId = opts.clusterId;
    this.self = opts.self;
    this.balancerCount = opts.balancerCount;
    this.replay = new ReplayWindows(opts.balancerCount);
  }

  /** Verifies, decodes and checks one datagram at buf[off..off+len). Never throws. */
  receive(
    buf: Uint8Array,
    off: number,
    len: number,
    out: DecodeResult = new DecodeResult(),
    sourceOk?: (sender: number) => boolean,
  ): DecodeResult {
    decodeSigned(buf, off, len, this.key, out);
    if (out.result === ProtocolResult.OK) {
      const env = out.envelope!;
      let r: ProtocolResult;
      if (env.clusterId !== this.clusterId) r = ProtocolResult.WRONG_CLUSTER;
      else if (env.sender >= this.balancerCount) r = ProtocolResult.UNKNOWN_SENDER;
      else if (env.sender === this.self) r = ProtocolResult.FROM_SELF;
      // The source check comes before the replay window: a datagram that may not be from
      // its sender must not advance the sender's window (it would lock the real one out).
      else if (sourceOk !== undefined && !sourceOk(env.sender)) r = ProtocolResult.SOURCE_MISMATCH;
      else r = this.replay.checkAndUpdate(env.sender, env.incarnation, env.seq);
      if (r !== ProtocolResult.OK) {
        out.result = r;
        out.envelope = null;
      }
    }
    this.counts[out.result]++;
    return out;
  }
}
