/**
 * Anti-replay for control envelopes: one sliding window per sender, keyed by the sender's
 * incarnation, as IPsec does for ESP sequence numbers (RFC 4303 §3.4.3) with the
 * block-ring bitmap of RFC 6479 (no bit shifting when the window advances: whole 32-bit
 * blocks are cleared as the top moves).
 *
 * Per sender: the current incarnation, the highest sequence number accepted (`top`) and a
 * bitmap of the last WINDOW sequence numbers. For an envelope (incarnation, seq):
 *  - first envelope from this sender, or a larger incarnation (the sender restarted):
 *    the window is reset to this incarnation and seq is accepted;
 *  - a smaller incarnation: STALE_INCARNATION (sent before the sender's restart);
 *  - seq > top: accepted, the window slides so that seq is the new top;
 *  - top - WINDOW < seq <= top: accepted once (the bit is set), REPLAYED when seen again;
 *  - seq <= top - WINDOW (older than the window), or seq < 1: REPLAYED.
 *
 * Call it ONLY AFTER the MAC verified (and the envelope validated), as RFC 4303 §3.4.3
 * prescribes for the window update: the window is moved by the sequence number and
 * incarnation inside the datagram, so if unauthenticated datagrams could reach it, an
 * attacker could send seq = top + 10^9, or a huge incarnation, and make every genuine
 * datagram of that sender look REPLAYED / STALE afterwards: a denial of service without
 * the key. Authenticated input only moves it as far as the genuine sender did.
 *
 * Sequence numbers and incarnations are JS numbers (safe integers < 2^53; the 64-bit wire
 * values are decoded as numbers, src/protocol/pb-runtime.ts): all arithmetic here is
 * floating-point exact (division/modulo, no 32-bit bit operators on the numbers themselves),
 * so seq past 2^32 (reached in hours at 100k datagrams/s) works.
 *
 * Memory: 33 u32 per sender (WINDOW/32 + 1 spare block, RFC 6479 §2) plus two f64.
 * No allocation per check.
 */
import { ProtocolResult } from './result';

/** Sequence numbers tracked behind the highest one seen. */
export const REPLAY_WINDOW = 1024;
const BLOCK_BITS = 32;
/** Blocks in the ring: the window plus one spare block, so the top block can fill while the oldest is still whole. */
const BLOCKS = REPLAY_WINDOW / BLOCK_BITS + 1;

/** Replay windows for senders 0..senders-1 (balancer indexes). */
export class ReplayWindows {
  readonly senders: number;
  /** Current incarnation per sender; 0 = nothing accepted yet (incarnations are >= 1). */
  private readonly incarnation: Float64Array;
  /** Highest accepted seq per sender (0 = none). */
  private readonly top: Float64Array;
  /** BLOCKS words per sender; bit (seq % 32) of word (floor(seq / 32) % BLOCKS). */
  private readonly bitmap: Uint32Array;

  constructor(senders: number) {
    if (!Number.isInteger(senders) || senders < 1) throw new RangeError('ReplayWindows: senders must be >= 1');
    this.senders = senders;
    this.incarnation = new Float64Array(senders);
    this.top = new Float64Array(senders);
    this.bitmap = new Uint32Array(senders * BLOCKS);
  }

  /**
   * Checks (sender, incarnation, seq) and, if fresh, records it. Returns OK,
   * STALE_INCARNATION, REPLAYED, or UNKNOWN_SENDER for a sender index out of range.
   * Only for authenticated envelopes (see the module comment).
   */
  checkAndUpdate(sender: number, incarnation: number, seq: number): ProtocolResult {
    if (!(sender >= 0 && sender < this.senders) || !Number.isInteger(sender)) return ProtocolResult.UNKNOWN_SENDER;
    if (!(seq >= 1)) return ProtocolResult.REPLAYED;
    const cur = this.incarnation[sender]!;
    const base = sender * BLOCKS;
    if (incarnation < cur) return ProtocolResult.STALE_INCARNATION;
    if (incarnation > cur) {
      // First contact or a restart: a fresh window whose top is this seq.
      this.incarnation[sender] = incarnation;
      this.bitmap.fill(0, base, base + BLOCKS);
      this.top[sender] = seq;
      this.setBit(base, seq);
      return ProtocolResult.OK;
    }
    const top = this.top[sender]!;
    if (seq > top) {
      // Slide: clear the blocks between the old top's block and the new one (at most all).
      const oldBlock = Math.floor(top / BLOCK_BITS);
      const newBlock = Math.floor(seq / BLOCK_BITS);
      const n = Math.min(newBlock - oldBlock, BLOCKS);
      for (let i = 1; i <= n; i++) this.bitmap[base + ((oldBlock + i) % BLOCKS)] = 0;
      this.top[sender] = seq;
      this.setBit(base, seq);
      return ProtocolResult.OK;
    }
    if (top - seq >= REPLAY_WINDOW) return ProtocolResult.REPLAYED; // older than the window
    const word = base + (Math.floor(seq / BLOCK_BITS) % BLOCKS);
    const mask = 1 << seq % BLOCK_BITS;
    const w = this.bitmap[word]!;
    if ((w & mask) !== 0) return ProtocolResult.REPLAYED;
    this.bitmap[word] = w | mask;
    return ProtocolResult.OK;
  }

  /** Current incarnation of a sender (0 = none yet). */
  incarnationOf(sender: number): number {
    return this.incarnation[sender] ?? 0;
  }

  /** Highest accepted seq of a sender (0 = none yet). */
  topOf(sender: number): number {
    return this.top[sender] ?? 0;
  }

  /**
   * Forgets a sender: its next authenticated envelope starts a fresh window whatever its
   * incarnation. For an operator action or a config change (e.g. a balancer index reused by
   * another machine whose clock is behind), never on input from the network.
   */
  reset(sender: number): void {
    if (!(sender >= 0 && sender < this.senders)) return;
    this.incarnation[sender] = 0;
    this.top[sender] = 0;
    this.bitmap.fill(0, sender * BLOCKS, (sender + 1) * BLOCKS);
  }

  private setBit(base: number, seq: number): void {
    const word = base + (Math.floor(seq / BLOCK_BITS) % BLOCKS);
    this.bitmap[word] = this.bitmap[word]! | (1 << seq % BLOCK_BITS);
  }
}
