/**
 * Membership and liveness of the balancers of a cluster (docs/protocol.md "Balancer to balancer":
 * liveness probes). A pure, timer-driven state machine: it owns no socket and no timer. The
 * owner calls `tick()` every `intervalMs`, hands it every *verified* Probe / ProbeAck (after
 * src/protocol/receiver.ts: MAC, cluster, replay window), and sends what it asks through
 * `sendProbe` / `sendAck` (sealed with the process's EnvelopeSigner, unicast on the control
 * port). Time comes from `nowMs` (performance.now in production, a fake clock in tests).
 *
 * Output: `live`, a Uint8Array the forwarder reads on every packet (primary/backup choice in
 * BalancerRanking.pickLive, forwarding to peers). It is updated in place, never replaced:
 *
 *   live[i] = 1  iff  i is this balancer (always), or
 *                     state[i] is UP or SUSPECT (it answers probes; one missed probe is not
 *                     a failure) AND its last reported status is SERVING.
 *
 * ## Peer state machine (per peer; PeerState)
 *
 *            first ack                 silence > interval + slack
 *   UNKNOWN ----------> UP --------------------------------------> SUSPECT
 *                       ^  <--------------------------------------   |
 *                       |         ack ('peer_up')                    | silence > misses × interval
 *                       |                                            v ('peer_down')
 *                       +----------------- ack ('peer_up') ------- DEAD
 *   (UP also goes straight to DEAD when misses × interval <= interval + slack, e.g. misses = 1.)
 *
 * - UNKNOWN: never acked (since this process started). Not live, no deadline, no events: a
 *   peer that is down when we start stays UNKNOWN until it first answers.
 * - Only an ACK that matches an outstanding probe nonce moves a peer to UP (it proves the
 *   round trip us → peer → us, i.e. that forwarded packets can reach it). Acks with an
 *   unknown or already used nonce (late duplicates, acks to probes older than the last
 *   `misses + 2` sent), or whose echoed send time differs from ours, are ignored and counted
 *   (`stats.acksStale`). With `selfIncarnation` set, acks addressed to a previous
 *   incarnation of this balancer (ProbeAck.prober_incarnation) are ignored too.
 * - A verified PROBE from a peer is evidence that it is alive: it is answered at once
 *   (sendAck), and for a peer in UP or SUSPECT it defers DEAD (not SUSPECT, and it never
 *   makes an UNKNOWN/DEAD peer UP). So random loss of acks alone does not fail a peer over,
 *   while a peer whose acks stop arriving shows as SUSPECT to the operator. Caveat: if the
 *   path us → peer breaks in one direction only, its probes keep it SUSPECT (live) here
 *   while it sees us DEAD; `probeIsEvidence: false` makes only acks count.
 * - `peer_down` is emitted exactly once per transition to DEAD and counted in
 *   `stats.failovers`. DEAD peers are still probed every tick, so they come back (UP,
 *   'peer_up') on the first matching ack.
 *
 * ## Incarnations and status
 * Envelope.incarnation (given by the owner with each message) is chosen at process start and
 * increases across restarts (src/cluster/incarnation.ts). A peer's incarnation is learnt from
 * FRESH answers only: an ack that matches one of our outstanding probe nonces proves that the
 * incarnation that signed it is alive now, while any other datagram could be a replay of an
 * earlier life of the peer. So onProbeAck returns true when it took a fresh ack, and the owner
 * then confirms that incarnation to its EnvelopeReceiver (which accepts records, health and
 * sync only from confirmed incarnations: src/protocol/receiver.ts). Probes of an incarnation
 * the receiver has not confirmed (`confirmed = false`) are answered, at most
 * UNCONFIRMED_ANSWERS per peer per tick (a replayed probe costs one ack to the peer's own
 * address, no more), and make us send that peer a probe at once (a challenge, at most one per
 * peer per tick), so a restarted peer is confirmed within one round trip instead of one
 * interval; they change nothing else (state, status, incarnation).
 * The first fresh incarnation of a peer is recorded; a higher one means the peer restarted
 * ('peer_restarted', stats.restarts): its flow table is gone,
 * and it normally reports SYNCING until its bulk sync is done, so it is not live until it
 * reports SERVING ('peer_serving'), even while its state is UP. A lower incarnation is a
 * message from a previous process (stale): ignored and counted — except a fresh ack from a
 * lower incarnation while the known one is silent (the peer is DEAD or UNKNOWN): that is a
 * peer restarted with its clock behind and its incarnation state lost; it is taken as a
 * restart (stats.incarnationsBack), so such a peer rejoins after one detection time instead
 * of being ignored until its clock catches up. (Two live processes claiming one balancer
 * would flap this way; the counter and the events show it.) Status comes from
 * Probe.status and ProbeAck.status (PeerStatus; UNSPECIFIED is treated as SYNCING, as
 * tunlb.proto says); changes emit 'peer_serving' / 'peer_syncing' / 'peer_draining'.
 * A DRAINING peer is not live: peers stop choosing it for new flows.
 *
 * ## Config version
 * Every probe and ack carries the sender's config hash (Probe.config_hash, set with
 * setConfigHash; src/config/config-hash.ts). The hash of a peer is taken from its probes (of a
 * confirmed incarnation) and fresh acks, and kept while it is dead. A peer whose hash is known
 * and differs from ours (ours set) is in config mismatch: 'config_mismatch' when that starts
 * (a peer reports another hash, or we reload), 'config_match' when it ends; reasons name the
 * peer and both hashes. A peer that reports no hash (0: an earlier release) is never a mismatch.
 *
 * ## RTT
 * Each probe carries a random nonce (48 bits, never 0) and our send time; the ack echoes
 * both. RTT = now - our stored send time of the matched probe (so an ack cannot be credited
 * to a newer probe: no retransmission ambiguity, cf. Karn). `rttMs` is the last sample,
 * `rttAvgMs` the EWMA with alpha = 1/8 as TCP's SRTT (RFC 6298 §2):
 * SRTT <- 7/8 SRTT + 1/8 R', the first sample taken as is.
 *
 * ## Deadlines are time-based, and a late tick is not the peer's silence
 * Requirement: data-plane load must never cause a false failover. Two rules make sure:
 *
 * 1. Deadlines come from the clock, not from counting ticks: a peer is SUSPECT when
 *    `now - lastAck > intervalMs + slackMs` and DEAD when `now - lastHeard > misses ×
 *    intervalMs` (lastHeard = last ack, or probe, see above). Ticks only *evaluate* the
 *    deadlines (so a transition is seen at the first tick after its deadline, i.e. DEAD
 *    between misses × interval and (misses + 1) × interval after the last ack). Counting
 *    ticks would be wrong in the other direction too: extra or bunched-up ticks (a timer
 *    catching up after a stall) would each count a "miss" within milliseconds.
 *
 * 2. Local stalls are not counted against the peer. If the event loop stalls (a long data-plane
 *    burst, GC, the process being descheduled), tick() runs late, and meanwhile (a) we sent
 *    no probe, so the peer had nothing to answer, and (b) acks that did arrive sit unread
 *    in the control socket: after a stall libuv runs the timers phase BEFORE the poll phase,
 *    so the late tick runs before those acks reach onProbeAck. Time since lastAck alone
 *    would blame the peer for our stall, and a stall longer than misses × interval would
 *    fail over every healthy peer at once. So each tick measures its own lateness,
 *    `late = now - previousTick - intervalMs`; when `late > slackMs` it is a stall:
 *      - every UP/SUSPECT peer's deadline bases move forward by `late` (never past now;
 *        stats.stalls / stats.stallMs), so silence is measured in time during which we
 *        were actually probing and reading; and
 *      - that tick makes no transition: the answers queued during the stall are read in the
 *        same loop iteration, right after it, and the next tick judges with them. A tick
 *        right after such a skipped tick always judges, so persistent lateness (every tick
 *        late) only halves how often deadlines are judged and cannot hide a dead peer;
 *        there, the poll phase after each tick reads the previous round's answers, so the
 *        silence a judging tick sees stays about one interval for a healthy peer.
 *    Real silence is still detected: after a stall, a dead peer is DEAD once `misses`
 *    intervals of probing (stall time excluded) passed without an answer: the stall delays
 *    detection by its own length, never causes it. (misses = 1 leaves no margin for two
 *    stalls in a row; the default 3 does.) The owner must call tick() every intervalMs
 *    (setInterval), not less often.
 *
 * The owner's part of the same requirement: probes and acks go on a probe socket of their own
 * (probe_port, 7948), separate from the control socket's records and junk, the data socket and
 * the TUN device; the owner reads that socket right before every tick
 * (ControlChannel.readProbes), so answers that already arrived are seen by the tick that
 * judges; and the read loop yields to libuv between bursts (src/control/balancer.ts), so
 * neither timers nor control reads starve.
 * Marking control datagrams DSCP CS6 helps where the network is congested.
 *
 * Wiring (owner): `const m = new Membership({ ..., nowMs: () => performance.now(),
 * sendProbe: (i, b) => unicast(i, signer.seal('probe', b)), sendAck: (i, b) => unicast(i,
 * signer.seal('probeAck', b)), selfIncarnation: signer.incarnation, onEvent: (e) =>
 * logMembershipEvent(log, e) })`; pass `m.live` to the Forwarder; `setInterval(() => m.tick(),
 * intervalMs)`; for each envelope the receiver accepts: body 'probe' → `m.onProbe(env.sender,
 * env.incarnation, env.probe)`, 'probeAck' → `m.onProbeAck(env.sender, env.incarnation,
 * env.probeAck)`; `m.setSelfStatus('serving')` when bulk sync is done (the default is
 * 'syncing', so a balancer that never says so is never chosen by its peers).
 *
 * Not on the hot path (≤ 31 peers × 10 probes/s): small objects per probe are fine. Nothing
 * here throws after construction (except setSelfStatus on a status that does not exist);
 * bad input is ignored and counted.
 */
import type { tunlb } from '../protocol';
import { randomInt } from 'node:crypto';
import { ErrorCodes, TunlbError } from '../errors';
import { hexOf } from '../config/config-hash';

/** Peer states; see the state machine in the file header. */
export const PeerState = { UNKNOWN: 0, UP: 1, SUSPECT: 2, DEAD: 3 } as const;
export type PeerStateValue = (typeof PeerState)[keyof typeof PeerState];
const STATE_NAMES = ['unknown', 'up', 'suspect', 'dead'] as const;

/** tunlb.v1.PeerStatus values (test/cluster/membership.test.ts checks them against the generated enum). */
export const PeerStatusValue = { UNSPECIFIED: 0, SYNCING: 1, SERVING: 2, DRAINING: 3 } as const;
const STATUS_NAMES = ['unknown', 'syncing', 'serving', 'draining'] as const;

export type SelfStatus = 'syncing' | 'serving' | 'draining';
const SELF_STATUS: Record<SelfStatus, number> = {
  syncing: PeerStatusValue.SYNCING,
  serving: PeerStatusValue.SERVING,
  draining: PeerStatusValue.DRAINING,
};

/** Most balancers in a cluster (docs/contracts.md; matches BalancerRanking's MAX_BALANCERS). */
const MAX_MEMBERS = 32;

export type MembershipEventType =
  | 'peer_up'
  | 'peer_suspect'
  | 'peer_down'
  | 'peer_restarted'
  | 'peer_serving'
  | 'peer_syncing'
  | 'peer_draining'
  | 'config_mismatch'
  | 'config_match';

/** One state or status change of a peer (one log event each, src/logger.ts). */
export interface MembershipEvent {
  type: MembershipEventType;
  /** Balancer index. */
  peer: number;
  /** Balancer id (config). */
  id: string;
  /** Human-readable cause, e.g. "no ack for 312 ms (3 intervals)". */
  reason: string;
  /** peer_up: the RTT of the ack that brought it up. */
  rttMs?: number;
  /** peer_restarted / peer_up: the peer's (new) incarnation. */
  incarnation?: number;
  /** peer_suspect / peer_down: silence counted against the peer, ms (stalls excluded). */
  silentMs?: number;
  /** config_mismatch / config_match: the peer's and this balancer's config hashes (12 hex). */
  peerConfig?: string;
  selfConfig?: string;
}

export type ProbeBody = tunlb.v1.Probe.$Properties;
export type ProbeAckBody = tunlb.v1.ProbeAck.$Properties;

export interface MembershipOptions {
  /** This balancer's index in `ids`. */
  selfIndex: number;
  /** Balancer ids in config order; index = position (docs/contracts.md), 1..32 of them. */
  ids: readonly string[];
  /** Probe interval (config cluster.probe.interval_ms); tick() is called this often. */
  intervalMs: number;
  /** DEAD after `misses` consecutive intervals without an answer (cluster.probe.misses, >= 1). */
  misses: number;
  /** Monotonic clock, ms (performance.now in production). */
  nowMs: () => number;
  /** Seal (EnvelopeSigner.seal('probe', body)) and unicast to balancer `peer`. */
  sendProbe: (peer: number, body: ProbeBody) => void;
  /** Seal (EnvelopeSigner.seal('probeAck', body)) and unicast back to balancer `peer`. */
  sendAck: (peer: number, body: ProbeAckBody) => void;
  /** State and status changes (log them, e.g. with logMembershipEvent). Called synchronously. */
  onEvent?: (e: MembershipEvent) => void;
  /**
   * This process's incarnation (the signer's). When given, acks whose prober_incarnation
   * differs (answers to a previous process of ours) are ignored, and peers() shows it.
   */
  selfIncarnation?: number;
  /** Status reported until setSelfStatus() is called. Default 'syncing' (not yet primary). */
  initialStatus?: SelfStatus;
  /**
   * Tolerance for timer lateness, ms: SUSPECT needs silence > intervalMs + slackMs, and a tick
   * later than intervalMs + slackMs after the previous one is a stall (header, rule 2).
   * Default intervalMs / 4.
   */
  slackMs?: number;
  /** Whether a verified probe from an UP/SUSPECT peer defers its DEAD deadline (header). Default true. */
  probeIsEvidence?: boolean;
  /** Nonce source (tests); default a random integer in [1, 2^48). Must never return 0. */
  nonce?: () => number;
}

export interface PeerView {
  index: number;
  id: string;
  /** 'self' | 'unknown' | 'up' | 'suspect' | 'dead' */
  state: string;
  /**
   * 'unknown' | 'syncing' | 'serving' | 'draining' | 'status(n)': what the peer reports now.
   * 'unknown' while never heard from AND while dead: a dead peer's status is not known (it is
   * never shown as serving); what it reported last is `lastStatus`.
   */
  status: string;
  /** The status the peer reported last, kept while it is dead ('unknown' if never heard). */
  lastStatus: string;
  /** 0 while never heard from. */
  incarnation: number;
  /** Whether live[index] is set. */
  live: boolean;
  rttMs: number | null;
  rttAvgMs: number | null;
  lastAckAgoMs: number | null;
  /** Whole intervals without an ack counted against the peer (stalls excluded); 0 after an ack. */
  misses: number;
  /** The config hash (12 hex) the peer reported last, kept while it is dead; '' if never reported. */
  configHash: string;
  /** True while the peer's last reported config hash differs from ours (header, "Config version"). */
  configMismatch: boolean;
}

export interface MembershipStats {
  probesSent: number;
  /** Acks that matched an outstanding probe. */
  acksReceived: number;
  /** Verified probes addressed to this balancer (each answered). */
  probesReceived: number;
  /** peer_down events. */
  failovers: number;
  acksSent: number;
  /** Acks ignored: unknown/used nonce, echoed send time mismatch, or bad peer index. */
  acksStale: number;
  /** Acks ignored because they answer a previous incarnation of this balancer. */
  acksWrongIncarnation: number;
  /** Probes ignored: bad peer index (self, out of range) or target not this balancer. */
  probesDropped: number;
  /** Probes/acks ignored because the peer's incarnation is lower than the known one. */
  staleIncarnation: number;
  /** peer_restarted events. */
  restarts: number;
  /** Restarts taken with a LOWER incarnation (fresh ack while the old one was silent). */
  incarnationsBack: number;
  /** Verified probes of an unconfirmed incarnation (answered or not). */
  probesUnconfirmed: number;
  /** Of those, not answered: more than UNCONFIRMED_ANSWERS from that peer in one tick. */
  probesUnconfirmedUnanswered: number;
  /** Probes sent at once to a peer whose unconfirmed probe came in (challenges). */
  challenges: number;
  /** peer_suspect events. */
  suspects: number;
  /** Ticks that came late by more than slackMs (local stalls), and their total lateness. */
  stalls: number;
  stallMs: number;
}

class Peer {
  state: PeerStateValue = PeerState.UNKNOWN;
  status = -1; // -1 = never heard; else a PeerStatus value (UNSPECIFIED normalised to SYNCING)
  incarnation = 0;
  /** Deadline base for SUSPECT: time of the last matching ack, moved forward by stalls. */
  ackBaseMs = 0;
  /** Deadline base for DEAD: last ack or (probeIsEvidence) probe, moved forward by stalls. */
  heardBaseMs = 0;
  /** Real time of the last matching ack (for lastAckAgoMs), or -1. */
  lastAckMs = -1;
  /** Our send time of the probe the last matching ack answered, or -1 (leave: acked after?). */
  lastAckedProbeMs = -1;
  rttMs = -1;
  srttMs = -1;
  misses = 0;
  /** Unconfirmed probes answered since the last tick, and whether we challenged since then. */
  unconfirmedAnswers = 0;
  challenged = false;
  /** Last config hash the peer reported (Probe/ProbeAck.config_hash), 0 = never; and whether it differs from ours. */
  configHash = 0;
  configMismatch = false;
  /** Ring of outstanding probes: nonce (0 = free slot) and our send time. */
  readonly nonces: Float64Array;
  readonly sentAt: Float64Array;
  ringNext = 0;

  constructor(
    readonly index: number,
    readonly id: string,
    ring: number,
  ) {
    this.nonces = new Float64Array(ring);
    this.sentAt = new Float64Array(ring);
  }
}

function validationError(message: string, details?: Record<string, unknown>): TunlbError {
  return new TunlbError(ErrorCodes.CONFIG_INVALID, message, details);
}

/** Answers to probes of an unconfirmed incarnation, per peer per tick (header, "Incarnations"). */
export const UNCONFIRMED_ANSWERS = 2;

function randomNonce(): number {
  return randomInt(1, 2 ** 48);
}

function statusName(s: number): string {
  return s < 0 ? 'unknown' : (STATUS_NAMES[s] ?? `status(${s})`);
}

export class Membership {
  /** See the header. Updated in place; live[self] = 1 always. */
  readonly live: Uint8Array;
  /** +1 whenever a bit of `live` changes (for owners that derive anything from it). */
  liveGeneration = 0;
  readonly stats: MembershipStats = {
    probesSent: 0,
    acksReceived: 0,
    probesReceived: 0,
    failovers: 0,
    acksSent: 0,
    acksStale: 0,
    acksWrongIncarnation: 0,
    probesDropped: 0,
    staleIncarnation: 0,
    restarts: 0,
    incarnationsBack: 0,
    probesUnconfirmed: 0,
    probesUnconfirmedUnanswered: 0,
    challenges: 0,
    suspects: 0,
    stalls: 0,
    stallMs: 0,
  };
  readonly selfIndex: number;
  readonly ids: readonly string[];
  readonly intervalMs: number;
  readonly misses: number;
  readonly slackMs: number;

  readonly #peers: Peer[];
  readonly #now: () => number;
  readonly #sendProbe: (peer: number, body: ProbeBody) => void;
  readonly #sendAck: (peer: number, body: ProbeAckBody) => void;
  readonly #onEvent: ((e: MembershipEvent) => void) | undefined;
  readonly #nonce: () => number;
  readonly #selfIncarnation: number | undefined;
  readonly #probeIsEvidence: boolean;
  #selfStatus: number;
  /** This balancer's config hash (Probe.config_hash), 0 = not set. */
  #selfConfigHash = 0;
  /** When leave() was first called (our clock), or -1. */
  #leaveSinceMs = -1;
  #lastTickMs = -1;
  #ticked = false;
  #judgedLast = true;

  constructor(opts: MembershipOptions) {
    const n = opts.ids.length;
    if (n < 1 || n > MAX_MEMBERS) throw validationError(`a cluster has 1..${MAX_MEMBERS} balancers, got ${n}`);
    if (!Number.isInteger(opts.selfIndex) || opts.selfIndex < 0 || opts.selfIndex >= n) {
      throw validationError(`selfIndex must be 0..${n - 1}`, { selfIndex: opts.selfIndex });
    }
    if (!(Number.isFinite(opts.intervalMs) && opts.intervalMs > 0)) {
      throw validationError('probe intervalMs must be a positive number', { intervalMs: opts.intervalMs });
    }
    if (!Number.isInteger(opts.misses) || opts.misses < 1) {
      throw validationError('probe misses must be an integer >= 1', { misses: opts.misses });
    }
    const slack = opts.slackMs ?? opts.intervalMs / 4;
    if (!(Number.isFinite(slack) && slack >= 0)) throw validationError('slackMs must be >= 0', { slackMs: slack });
    this.selfIndex = opts.selfIndex;
    this.ids = Object.freeze(opts.ids.slice());
    this.intervalMs = opts.intervalMs;
    this.misses = opts.misses;
    this.slackMs = slack;
    this.#now = opts.nowMs;
    this.#sendProbe = opts.sendProbe;
    this.#sendAck = opts.sendAck;
    this.#onEvent = opts.onEvent;
    this.#nonce = opts.nonce ?? randomNonce;
    this.#selfIncarnation = opts.selfIncarnation;
    this.#probeIsEvidence = opts.probeIsEvidence ?? true;
    this.#selfStatus = SELF_STATUS[opts.initialStatus ?? 'syncing'];
    // Outstanding probes kept per peer: enough for an ack to the probe sent just before a
    // stall to still match after it (header, rule 2), plus margin.
    const ring = opts.misses + 2;
    this.#peers = this.ids.map((id, i) => new Peer(i, id, ring));
    this.live = new Uint8Array(n);
    this.live[this.selfIndex] = 1;
  }

  /** This balancer's reported status. */
  get selfStatus(): SelfStatus {
    return this.#selfStatus === PeerStatusValue.SERVING
      ? 'serving'
      : this.#selfStatus === PeerStatusValue.DRAINING
        ? 'draining'
        : 'syncing';
  }

  /**
   * This balancer's config version (src/config/config-hash.ts), carried in every probe and ack
   * from now on; call at start and after each reload. Every peer's mismatch is judged again
   * (config_mismatch / config_match events, header "Config version").
   */
  setConfigHash(value: number): void {
    if (!(Number.isSafeInteger(value) && value >= 0)) throw validationError('config hash must be a safe non-negative integer', { value });
    this.#selfConfigHash = value;
    for (const p of this.#peers) if (p.index !== this.selfIndex) this.#judgeConfig(p);
  }

  /** This balancer's config hash as set by setConfigHash (0 = not set). */
  get configHash(): number {
    return this.#selfConfigHash;
  }

  /** Peers whose last reported config hash differs from ours now. */
  configMismatches(): number {
    let n = 0;
    for (const p of this.#peers) if (p.configMismatch) n++;
    return n;
  }

  /** Reported in every probe and ack from now on (peers learn it within one interval). */
  setSelfStatus(status: SelfStatus): void {
    const v = SELF_STATUS[status];
    if (v === undefined) throw validationError(`unknown status '${String(status)}'`);
    this.#selfStatus = v;
  }

  /**
   * Planned stop or drain-self: status DRAINING from now on, and a probe carrying it to every
   * peer at once (not at the next tick). A peer that reads it counts this balancer as not live
   * at once (`live[i] = 0`): it sends the flows whose primary is this balancer to their backup
   * and decides no new flow for it. Call again to resend (lost probes); `leaveAcked` says when
   * every peer has answered a probe sent since the first call.
   */
  leave(): void {
    const now = this.#now();
    if (this.#leaveSinceMs < 0) this.#leaveSinceMs = now;
    this.#selfStatus = PeerStatusValue.DRAINING;
    this.#sendProbes(now);
  }

  /** Back from a drain-self: SERVING again (peers learn it from the next probe). */
  unleave(): void {
    this.#leaveSinceMs = -1;
    this.#selfStatus = PeerStatusValue.SERVING;
    this.#sendProbes(this.#now());
  }

  /**
   * True once every peer that counts as alive (UP or SUSPECT) has acked a probe we sent since
   * `leave()`: each has read our DRAINING status (acks are sent after the probe is processed),
   * so none sends us flows any more. Peers that are DEAD or UNKNOWN have nothing to hand over.
   */
  leaveAcked(): boolean {
    if (this.#leaveSinceMs < 0) return false;
    for (const p of this.#peers) {
      if (p.index === this.selfIndex) continue;
      if (p.state !== PeerState.UP && p.state !== PeerState.SUSPECT) continue;
      if (p.lastAckedProbeMs < this.#leaveSinceMs) return false;
    }
    return true;
  }

  /** State of balancer i (PeerState); self reads as UP. */
  stateOf(i: number): PeerStateValue {
    return i === this.selfIndex ? PeerState.UP : (this.#peers[i]?.state ?? PeerState.UNKNOWN);
  }

  /** live as a bitmask (bit i = live[i]); N <= 32. */
  liveMask(): number {
    let m = 0;
    for (let i = 0; i < this.live.length; i++) if (this.live[i]) m |= 1 << i;
    return m >>> 0;
  }

  /**
   * Called every intervalMs: credits a local stall (header, rule 2), evaluates every peer's
   * deadlines (state changes, events), then sends one probe to every peer.
   */
  tick(): void {
    const now = this.#now();
    const I = this.intervalMs;
    let judge = true;
    if (this.#ticked) {
      const late = now - this.#lastTickMs - I;
      if (late > this.slackMs) {
        this.stats.stalls++;
        this.stats.stallMs += late;
        for (const p of this.#peers) {
          if (p.state !== PeerState.UP && p.state !== PeerState.SUSPECT) continue;
          p.ackBaseMs = Math.min(now, p.ackBaseMs + late);
          p.heardBaseMs = Math.min(now, p.heardBaseMs + late);
        }
        // Answers that arrived during the stall are still unread (timers run before I/O):
        // no transition now, the next tick judges. Never two ticks in a row, so persistent
        // lateness only halves how often deadlines are judged.
        judge = !this.#judgedLast;
      }
    }
    this.#ticked = true;
    this.#lastTickMs = now;
    this.#judgedLast = judge;

    for (const p of this.#peers) {
      if (p.index === this.selfIndex || p.state === PeerState.UNKNOWN) continue;
      const silent = now - p.ackBaseMs;
      p.misses = silent > 0 ? Math.ceil(silent / I) - 1 : 0;
      if (!judge || p.state === PeerState.DEAD) continue;
      const unheard = now - p.heardBaseMs;
      if (unheard > this.misses * I) {
        p.state = PeerState.DEAD;
        this.stats.failovers++;
        this.#updateLive(p);
        this.#emit({
          type: 'peer_down',
          peer: p.index,
          id: p.id,
          reason: `no answer for ${Math.round(unheard)} ms (limit ${this.misses} × ${I} ms)`,
          silentMs: unheard,
        });
      } else if (p.state === PeerState.UP && silent > I + this.slackMs) {
        p.state = PeerState.SUSPECT;
        this.stats.suspects++;
        this.#updateLive(p);
        this.#emit({
          type: 'peer_suspect',
          peer: p.index,
          id: p.id,
          reason: `no ack for ${Math.round(silent)} ms (interval ${I} ms)`,
          silentMs: silent,
        });
      }
    }

    // A new tick: the per-tick budgets for unconfirmed probes renew (header, "Incarnations").
    for (const p of this.#peers) {
      p.unconfirmedAnswers = 0;
      p.challenged = false;
    }
    this.#sendProbes(now);
  }

  /** One probe to every peer, stamped `now`, carrying our status. */
  #sendProbes(now: number): void {
    for (const p of this.#peers) {
      if (p.index === this.selfIndex) continue;
      this.#probe(p, now);
    }
  }

  /** Sends one probe to `p` stamped `now`, its nonce kept in p's ring of outstanding probes. */
  #probe(p: Peer, now: number): void {
    let nonce = this.#nonce();
    // 0 reads as "absent" in proto3 and would match an ack without a nonce; never use it.
    if (!(Number.isSafeInteger(nonce) && nonce > 0)) nonce = randomNonce();
    const slot = p.ringNext;
    p.ringNext = (slot + 1) % p.nonces.length;
    p.nonces[slot] = nonce;
    p.sentAt[slot] = now;
    this.stats.probesSent++;
    this.#sendProbe(p.index, {
      nonce,
      sentAtMs: Math.floor(now),
      target: p.index,
      status: this.#selfStatus as tunlb.v1.PeerStatus,
      configHash: this.#selfConfigHash,
    });
  }

  /**
   * A verified Probe from balancer `peer` whose envelope carried `incarnation`. Answered at
   * once with sendAck; also evidence the peer is alive (header). `confirmed`: whether the
   * receiver has confirmed that incarnation (default true); an unconfirmed probe is answered
   * (within UNCONFIRMED_ANSWERS per tick), challenged with a probe, and changes nothing else
   * (header, "Incarnations").
   */
  onProbe(peer: number, incarnation: number, probe: ProbeBody, confirmed = true): void {
    const p = this.#peerAt(peer);
    if (p === null || (probe.target ?? 0) !== this.selfIndex) {
      this.stats.probesDropped++;
      return;
    }
    if (!confirmed) {
      this.stats.probesUnconfirmed++;
      if (p.unconfirmedAnswers < UNCONFIRMED_ANSWERS) {
        p.unconfirmedAnswers++;
        this.#answer(peer, incarnation, probe);
      } else {
        this.stats.probesUnconfirmedUnanswered++;
      }
      if (!p.challenged) {
        p.challenged = true;
        this.stats.challenges++;
        this.#probe(p, this.#now());
      }
      return;
    }
    if (!this.#checkIncarnation(p, incarnation)) return;
    this.stats.probesReceived++;
    this.#answer(peer, incarnation, probe);
    if (this.#probeIsEvidence && (p.state === PeerState.UP || p.state === PeerState.SUSPECT)) {
      p.heardBaseMs = this.#now();
    }
    this.#setStatus(p, probe.status ?? 0);
    this.#setPeerConfig(p, probe.configHash ?? 0);
  }

  #answer(peer: number, incarnation: number, probe: ProbeBody): void {
    this.stats.acksSent++;
    this.#sendAck(peer, {
      nonce: probe.nonce ?? 0,
      probeSentAtMs: probe.sentAtMs ?? 0,
      proberIncarnation: incarnation,
      status: this.#selfStatus as tunlb.v1.PeerStatus,
      configHash: this.#selfConfigHash,
    });
  }

  /**
   * A verified ProbeAck from balancer `peer` whose envelope carried `incarnation`. Must match
   * an outstanding probe nonce; then RTT, state UP, incarnation and status are updated.
   * Returns true when it did (a fresh answer of `incarnation`: the owner confirms it to its
   * receiver, header "Incarnations"), false when the ack was ignored.
   */
  onProbeAck(peer: number, incarnation: number, ack: ProbeAckBody): boolean {
    const p = this.#peerAt(peer);
    if (p === null) {
      this.stats.acksStale++;
      return false;
    }
    if (this.#selfIncarnation !== undefined && (ack.proberIncarnation ?? 0) !== this.#selfIncarnation) {
      this.stats.acksWrongIncarnation++;
      return false;
    }
    const nonce = ack.nonce ?? 0;
    let slot = -1;
    if (nonce !== 0) {
      for (let i = 0; i < p.nonces.length; i++) {
        if (p.nonces[i] === nonce) {
          slot = i;
          break;
        }
      }
    }
    if (slot < 0 || (ack.probeSentAtMs ?? 0) !== Math.floor(p.sentAt[slot]!)) {
      this.stats.acksStale++;
      return false;
    }
    if (!this.#checkIncarnation(p, incarnation, p.state === PeerState.DEAD || p.state === PeerState.UNKNOWN)) return false;
    p.nonces[slot] = 0; // each probe is answered once; a duplicate is stale
    const now = this.#now();
    this.stats.acksReceived++;
    const rtt = Math.max(0, now - p.sentAt[slot]!);
    p.rttMs = rtt;
    p.srttMs = p.srttMs < 0 ? rtt : p.srttMs + (rtt - p.srttMs) / 8;
    p.lastAckMs = now;
    p.lastAckedProbeMs = p.sentAt[slot]!;
    p.ackBaseMs = now;
    p.heardBaseMs = now;
    p.misses = 0;
    const was = p.state;
    if (was !== PeerState.UP) {
      p.state = PeerState.UP;
      this.#updateLive(p);
      this.#emit({
        type: 'peer_up',
        peer: p.index,
        id: p.id,
        reason: was === PeerState.UNKNOWN ? 'first ack' : `ack after ${STATE_NAMES[was]}`,
        rttMs: rtt,
        incarnation: p.incarnation,
      });
    }
    this.#setStatus(p, ack.status ?? 0);
    this.#setPeerConfig(p, ack.configHash ?? 0);
    return true;
  }

  /** One row per balancer, self included (state 'self'), for the admin endpoint / CLI. */
  peers(): PeerView[] {
    const now = this.#now();
    return this.#peers.map((p) => {
      if (p.index === this.selfIndex) {
        return {
          index: p.index,
          id: p.id,
          state: 'self',
          status: statusName(this.#selfStatus),
          lastStatus: statusName(this.#selfStatus),
          incarnation: this.#selfIncarnation ?? 0,
          live: true,
          rttMs: null,
          rttAvgMs: null,
          lastAckAgoMs: null,
          misses: 0,
          configHash: hexOf(this.#selfConfigHash),
          configMismatch: false,
        };
      }
      return {
        index: p.index,
        id: p.id,
        state: STATE_NAMES[p.state],
        status: p.state === PeerState.DEAD ? 'unknown' : statusName(p.status),
        lastStatus: statusName(p.status),
        incarnation: p.incarnation,
        live: this.live[p.index] === 1,
        rttMs: p.rttMs < 0 ? null : p.rttMs,
        rttAvgMs: p.srttMs < 0 ? null : p.srttMs,
        lastAckAgoMs: p.lastAckMs < 0 ? null : now - p.lastAckMs,
        misses: p.misses,
        configHash: hexOf(p.configHash),
        configMismatch: p.configMismatch,
      };
    });
  }

  #peerAt(i: number): Peer | null {
    if (!Number.isInteger(i) || i === this.selfIndex) return null;
    return this.#peers[i] ?? null;
  }

  /**
   * Records a first or higher incarnation (restart event); false (counted) if stale. With
   * `backOk` (a fresh ack while the known incarnation is silent) a lower one is a restart too
   * (header, "Incarnations").
   */
  #checkIncarnation(p: Peer, incarnation: number, backOk = false): boolean {
    const back = incarnation < p.incarnation;
    if (back && !backOk) {
      this.stats.staleIncarnation++;
      return false;
    }
    if (incarnation !== p.incarnation) {
      const previous = p.incarnation;
      p.incarnation = incarnation;
      if (back) this.stats.incarnationsBack++;
      if (previous !== 0) {
        this.stats.restarts++;
        // The old process's status says nothing about the new one: not live until it reports
        // SERVING (the caller's #setStatus follows at once with the reported status).
        p.status = -1;
        this.#updateLive(p);
        this.#emit({
          type: 'peer_restarted',
          peer: p.index,
          id: p.id,
          reason: back
            ? `incarnation ${previous} -> ${incarnation} (went back: a fresh answer while ${previous} was silent)`
            : `incarnation ${previous} -> ${incarnation}`,
          incarnation,
        });
      }
    }
    return true;
  }

  #setStatus(p: Peer, raw: number): void {
    const s = raw === PeerStatusValue.UNSPECIFIED ? PeerStatusValue.SYNCING : raw;
    if (s === p.status) return;
    const before = p.status;
    p.status = s;
    this.#updateLive(p);
    const type: MembershipEventType | null =
      s === PeerStatusValue.SERVING
        ? 'peer_serving'
        : s === PeerStatusValue.SYNCING
          ? 'peer_syncing'
          : s === PeerStatusValue.DRAINING
            ? 'peer_draining'
            : null;
    if (type !== null) {
      this.#emit({ type, peer: p.index, id: p.id, reason: `status ${statusName(before)} -> ${statusName(s)}` });
    }
  }

  /** A config hash reported by peer `p` (0 or garbage: not reported, nothing changes). */
  #setPeerConfig(p: Peer, raw: number): void {
    const v = Number(raw);
    if (!(Number.isSafeInteger(v) && v > 0) || v === p.configHash) return;
    p.configHash = v;
    this.#judgeConfig(p);
  }

  /** Mismatch of p's config with ours: events on each start and end (header, "Config version"). */
  #judgeConfig(p: Peer): void {
    const mismatch = this.#selfConfigHash !== 0 && p.configHash !== 0 && p.configHash !== this.#selfConfigHash;
    if (mismatch === p.configMismatch) return;
    p.configMismatch = mismatch;
    const peerConfig = hexOf(p.configHash);
    const selfConfig = hexOf(this.#selfConfigHash);
    this.#emit({
      type: mismatch ? 'config_mismatch' : 'config_match',
      peer: p.index,
      id: p.id,
      reason: mismatch
        ? `${p.id} runs config ${peerConfig}, ${this.ids[this.selfIndex]} runs ${selfConfig}`
        : `${p.id} and ${this.ids[this.selfIndex]} run the same config ${selfConfig}`,
      peerConfig,
      selfConfig,
    });
  }

  #updateLive(p: Peer): void {
    const v =
      (p.state === PeerState.UP || p.state === PeerState.SUSPECT) && p.status === PeerStatusValue.SERVING ? 1 : 0;
    if (this.live[p.index] !== v) {
      this.live[p.index] = v;
      this.liveGeneration++;
    }
  }

  #emit(e: MembershipEvent): void {
    this.#onEvent?.(e);
  }
}

/** The part of a pino Logger logMembershipEvent needs. */
export interface MembershipLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/**
 * Logs one membership event as one structured line (src/logger.ts: `event` and
 * `reason`); peer_suspect and peer_down at warn, the rest at info.
 */
export function logMembershipEvent(log: MembershipLog, e: MembershipEvent): void {
  const fields: Record<string, unknown> = { event: e.type, peer: e.id, peerIndex: e.peer, reason: e.reason };
  if (e.rttMs !== undefined) fields['rttMs'] = Math.round(e.rttMs * 1000) / 1000;
  if (e.incarnation !== undefined) fields['incarnation'] = e.incarnation;
  if (e.silentMs !== undefined) fields['silentMs'] = Math.round(e.silentMs);
  if (e.peerConfig !== undefined) fields['peerConfig'] = e.peerConfig;
  if (e.selfConfig !== undefined) fields['selfConfig'] = e.selfConfig;
  const msg = `${e.id}: ${e.type.replace('peer_', '')} (${e.reason})`;
  if (e.type === 'peer_down' || e.type === 'peer_suspect' || e.type === 'config_mismatch') log.warn(fields, msg);
  else log.info(fields, msg);
}
