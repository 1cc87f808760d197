/**
 * Anti-replay for control envelopes: one sliding window per sender, for the sender's
 * CONFIRMED incarnation, as IPsec does for ESP sequence numbers (RFC 4303 §3.4.3) with the
 * block-ring bitmap of RFC 6479 (no bit shifting when the window advances: whole 32-bit
 * blocks are cleared as the top moves).
 *
 * Per sender: the confirmed incarnation (0 = none yet), the highest sequence number accepted
 * (`top`) and a bitmap of the last WINDOW sequence numbers. For an envelope (incarnation, seq):
 *  - incarnation is the confirmed one:
 *      seq > top: accepted, the window slides so that seq is the new top;
 *      top - WINDOW < seq <= top: accepted once (the bit is set), REPLAYED when seen again;
 *      seq <= top - WINDOW (older than the window), or seq < 1: REPLAYED;
 *  - a smaller incarnation: STALE_INCARNATION (sent before the sender's restart);
 *  - none confirmed yet, or a larger incarnation: UNCONFIRMED. The window does not move.
 *
 * Confirmation (`confirm`): the owner confirms an incarnation when it holds proof that the
 * incarnation is alive NOW: an authenticated ProbeAck that echoes the nonce of one of our own
 * outstanding probes (src/cluster/membership.ts). The window then starts at that ack's
 * sequence number with everything at or below it counted as seen: a datagram the sender
 * signed before the ack (one that may have been captured earlier, even before this receiver
 * started) is REPLAYED, and only what it signs after is accepted. This closes the hole of a
 * window learnt from the first authentic envelope ("trust on first use"): a restarted
 * receiver has no window, so the first datagram of a sender's PREVIOUS incarnation (or an old
 * one of its current incarnation), replayed to it, would otherwise be accepted and set the
 * window. Genuine datagrams a peer signed before answering are lost once, at a restart (they
 * would have been dropped as UNCONFIRMED anyway); bulk sync and refreshes cover them.
 * `adopt` is trust on first use, kept for test doubles without membership (EnvelopeReceiver's
 * `confirmBy: 'first-envelope'`): a fresh window whose top is the envelope's seq.
 *
 * Call checkAndUpdate ONLY AFTER the MAC verified (and the envelope validated), as RFC 4303
 * §3.4.3 prescribes for the window update: the window is moved by the sequence number inside
 * the datagram, so if unauthenticated datagrams could reach it, an attacker could send
 * seq = top + 10^9 and make every genuine datagram of that sender look REPLAYED afterwards: a
 * denial of service without the key. Authenticated input only moves it as far as the genuine
 * sender did. The same holds for confirm(): authenticated, nonce-matched acks only.
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
  /** Confirmed incarnation per sender; 0 = none yet (incarnations are >= 1). */
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
   * Checks (sender, incarnation, seq) and, if fresh, records it. Returns OK, REPLAYED,
   * STALE_INCARNATION, UNCONFIRMED (see the module comment), or UNKNOWN_SENDER for a sender
   * index out of range. Only for authenticated envelopes (see the module comment).
   */
  checkAndUpdate(sender: number, incarnation: number, seq: number): ProtocolResult {
    if (!(sender >= 0 && sender < this.senders) || !Number.isInteger(sender)) return ProtocolResult.UNKNOWN_SENDER;
    const cur = this.incarnation[sender]!;
    if (incarnation !== cur) return cur !== 0 && incarnation < cur ? ProtocolResult.STALE_INCARNATION : ProtocolResult.UNCONFIRMED;
    if (!(seq >= 1)) return ProtocolResult.REPLAYED;
    const base = sender * BLOCKS;
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

  /**
   * Confirms `incarnation` of `sender` from a fresh answer signed with sequence number `seq`
   * (module comment): its window starts at top = seq with every sequence number <= seq counted
   * as seen. Does nothing when that incarnation is already the confirmed one (its window
   * stays). May confirm a SMALLER incarnation than the current one (a peer whose clock went
   * back and that lost its state: the owner decides when; src/cluster/membership.ts).
   * Returns true when the confirmed incarnation changed.
   */
  confirm(sender: number, incarnation: number, seq: number): boolean {
    if (!(sender >= 0 && sender < this.senders) || !Number.isInteger(sender)) return false;
    if (!(incarnation >= 1 && seq >= 1)) return false;
    if (this.incarnation[sender] === incarnation) return false;
    this.incarnation[sender] = incarnation;
    this.top[sender] = seq;
    // Every block holds sequence numbers below top's block (all seen), except top's own block,
    // where only the bits up to top are set (higher ones are future numbers).
    const base = sender * BLOCKS;
    this.bitmap.fill(0xffffffff, base, base + BLOCKS);
    const r = seq % BLOCK_BITS;
    this.bitmap[base + (Math.floor(seq / BLOCK_BITS) % BLOCKS)] = r === BLOCK_BITS - 1 ? 0xffffffff : ((1 << (r + 1)) - 1) >>> 0;
    return true;
  }

  /**
   * Trust on first use (test doubles only, module comment): an incarnation larger than the
   * current one (or the first) becomes current with a fresh window whose top is `seq` (older
   * sequence numbers of it are still accepted once). Returns OK, STALE_INCARNATION, or what
   * checkAndUpdate returns for the current incarnation.
   */
  adopt(sender: number, incarnation: number, seq: number): ProtocolResult {
    if (!(sender >= 0 && sender < this.senders) || !Number.isInteger(sender)) return ProtocolResult.UNKNOWN_SENDER;
    const cur = this.incarnation[sender]!;
    if (incarnation <= cur) return this.checkAndUpdate(sender, incarnation, seq);
    if (!(seq >= 1)) return ProtocolResult.REPLAYED;
    const base = sender * BLOCKS;
    this.incarnation[sender] = incarnation;
    this.bitmap.fill(0, base, base + BLOCKS);
    this.top[sender] = seq;
    this.setBit(base, seq);
    return ProtocolResult.OK;
  }

  /** Confirmed incarnation of a sender (0 = none yet). */
  incarnationOf(sender: number): number {
    return this.incarnation[sender] ?? 0;
  }

  /** Highest accepted seq of a sender (0 = none yet). */
  topOf(sender: number): number {
    return this.top[sender] ?? 0;
  }

  /**
   * Forgets a sender: none of its incarnations is confirmed until the next confirm(). For an
   * operator action or a config change, never on input from the network.
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
