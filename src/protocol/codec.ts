/**
 * The signed envelope: encoding (sign) and decoding (verify, then parse) of one control
 * datagram (protocol/tunlb.proto).
 *
 *   datagram = SignedEnvelope { envelope: bytes(Envelope), mac: HMAC-SHA256(clusterKey, envelope) }
 *
 * Receive order (decodeSigned), cheapest first, nothing decoded before it is authenticated:
 *  1. the outer frame, parsed by hand in its one canonical form (parseOuter): 0x0a, the
 *     envelope's length (a minimal varint of 1 or 2 bytes), the envelope, 0x12 0x20, the 32-byte
 *     MAC, and nothing else (MALFORMED_OUTER). No protobuf decoder runs on unauthenticated bytes;
 *  2. with `clusterId` given, the envelope's first bytes, still unauthenticated: every sender
 *     writes version first and cluster_id second (the generated encoder writes fields in number
 *     order; encodeSigned and the signer always set version), so a datagram whose envelope does
 *     not start with 0x08 <PROTOCOL_VERSION> 0x11 <our cluster id> is dropped before the HMAC
 *     (BAD_VERSION / WRONG_CLUSTER): junk with a valid frame costs a few byte compares, not a
 *     hash. (A datagram that passes is hashed; the MAC then decides.)
 *  3. the MAC, recomputed over the raw envelope bytes and compared in constant time
 *     (crypto.timingSafeEqual) (BAD_MAC);
 *  4. only then the Envelope is decoded (protobufjs), and checked: header, version, body, records.
 *
 * decodeSigned never throws on bad input: protobufjs' decoders throw on malformed input; the
 * exceptions are caught here, at the edge, and mapped to a ProtocolResult. It is stateless;
 * the stateful checks (source, cluster, sender, recipients, incarnation, replay window) are in
 * src/protocol/receiver.ts, which also checks the size and source before calling it.
 *
 * Not on the data-plane hot path (control datagrams: records, probes, sync), but kept
 * allocation-light: nothing is allocated for a datagram that fails steps 1-2; protobufjs'
 * decoded bytes fields are views into the datagram, so a caller that keeps anything (e.g. a
 * record key) copies it before it reuses the receive buffer.
 *
 * Outer-frame malleability: there is none left: the canonical form admits exactly one framing
 * of a given envelope and MAC.
 */
import { createHmac, createSecretKey, randomInt, timingSafeEqual, type KeyObject } from 'node:crypto';
import { ErrorCodes, TunlbError } from '../errors';
import { tunlb } from './generated/tunlb';
import { isValidRecord, MAX_BALANCERS } from './flow-record';
import { ProtocolResult } from './result';

/** The protocol version this code speaks (Envelope.version). */
export const PROTOCOL_VERSION = 1;
/** HMAC-SHA256 output length. */
export const MAC_LEN = 32;
/**
 * The largest control datagram a balancer sends, bytes of UDP payload (the record batcher's
 * budget: src/protocol/record-batcher.ts; probes, acks, health reports and sync chunks are
 * smaller or packed to the same budget). Receivers drop anything longer unread (OVERSIZE).
 */
export const MAX_CONTROL_DATAGRAM = 1400;
/** The smallest canonical SignedEnvelope: 0x0a 0x01 <1 byte> 0x12 0x20 <32 bytes>. */
export const MIN_CONTROL_DATAGRAM = 3 + 2 + MAC_LEN;

/** A cluster key: raw bytes, or a KeyObject made once with macKey() (slightly cheaper per datagram). */
export type MacKey = Uint8Array | KeyObject;

/** Makes a reusable KeyObject from the raw cluster key. */
export function macKey(raw: Uint8Array): KeyObject {
  return createSecretKey(raw);
}

/** The Envelope.body oneof names. */
export type BodyKind = 'records' | 'probe' | 'probeAck' | 'syncRequest' | 'syncChunk' | 'health' | 'summary' | 'reloadRequest' | 'reloadAnswer';
export const BODY_KINDS: readonly BodyKind[] = ['records', 'probe', 'probeAck', 'syncRequest', 'syncChunk', 'health', 'summary', 'reloadRequest', 'reloadAnswer'];

/** What each body kind takes when encoding (plain objects are fine). */
export interface BodyFields {
  records: tunlb.v1.FlowRecordBatch.$Properties;
  probe: tunlb.v1.Probe.$Properties;
  probeAck: tunlb.v1.ProbeAck.$Properties;
  syncRequest: tunlb.v1.SyncRequest.$Properties;
  syncChunk: tunlb.v1.SyncChunk.$Properties;
  health: tunlb.v1.HealthReport.$Properties;
  summary: tunlb.v1.BalancerSummary.$Properties;
  reloadRequest: tunlb.v1.ReloadRequest.$Properties;
  reloadAnswer: tunlb.v1.ReloadAnswer.$Properties;
}

/** Header fields of an envelope to encode; all safe non-negative integers. */
export interface EnvelopeHeader {
  /** Defaults to PROTOCOL_VERSION. */
  version?: number;
  clusterId: number;
  /** Balancer index, 0..31. */
  sender: number;
  /** >= 1, see newIncarnation(). */
  incarnation: number;
  /** >= 1, +1 per envelope per (sender, incarnation). */
  seq: number;
  /** Wall clock, ms since the Unix epoch. */
  sentAtMs: number;
  /** Bitmask of the balancers the envelope is meant for (bit i = index i); 0 or absent = every balancer. */
  recipients?: number;
}

/** An envelope to encode: the header plus exactly one body field. */
export type EnvelopeFields = EnvelopeHeader & { [K in BodyKind]?: BodyFields[K] | null };

/** A decoded FlowRecordBatch / SyncChunk: records are generated FlowRecord instances. */
export interface ReceivedRecordBatch {
  records: tunlb.v1.FlowRecord[];
}
export type ReceivedSyncChunk = Omit<tunlb.v1.SyncChunk, 'records'> & { records: tunlb.v1.FlowRecord[] };

/**
 * A decoded, authenticated Envelope. Exactly the body named by `body` is non-null. Absent
 * numeric fields read as 0 and absent bytes as empty (proto3 defaults). Bytes fields are
 * views into the datagram buffer.
 */
export interface ReceivedEnvelope {
  readonly version: number;
  readonly clusterId: number;
  readonly sender: number;
  readonly incarnation: number;
  readonly seq: number;
  readonly sentAtMs: number;
  /** Envelope.recipients: bit i = balancer i; 0 = every balancer (see tunlb.proto). */
  readonly recipients: number;
  readonly body: BodyKind;
  readonly records: ReceivedRecordBatch | null;
  readonly probe: tunlb.v1.Probe | null;
  readonly probeAck: tunlb.v1.ProbeAck | null;
  readonly syncRequest: tunlb.v1.SyncRequest | null;
  readonly syncChunk: ReceivedSyncChunk | null;
  readonly health: tunlb.v1.HealthReport | null;
  readonly summary: tunlb.v1.BalancerSummary | null;
  readonly reloadRequest: tunlb.v1.ReloadRequest | null;
  readonly reloadAnswer: tunlb.v1.ReloadAnswer | null;
}

/**
 * Output of decodeSigned / EnvelopeReceiver.receive; callers may keep one and pass it as `out`.
 * `envelope` is non-null only when `result` is OK. `sender` is Envelope.sender whenever the
 * envelope authenticated and decoded (for logs and per-peer counters), else -1.
 */
export class DecodeResult {
  result: ProtocolResult = ProtocolResult.OK;
  envelope: ReceivedEnvelope | null = null;
  sender = -1;
  /**
   * EnvelopeReceiver only: true when the envelope comes from its sender's confirmed
   * incarnation (its replay window checked it); false for a Probe or ProbeAck of an
   * incarnation not confirmed yet, which pass so that confirmation can happen
   * (src/protocol/receiver.ts). decodeSigned leaves it true.
   */
  confirmed = true;
}

function isSafeUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function bad(message: string, details?: Record<string, unknown>): TunlbError {
  return new TunlbError(ErrorCodes.PROTOCOL, message, details);
}

/** HMAC-SHA256(key, bytes). */
export function computeMac(key: MacKey, bytes: Uint8Array): Buffer {
  return createHmac('sha256', key).update(bytes).digest();
}

/**
 * Signs already encoded Envelope bytes: returns the SignedEnvelope datagram.
 * (Exported for the batcher and for tests that need to sign hand-made envelopes.)
 */
export function signEnvelopeBytes(envelope: Uint8Array, key: MacKey): Uint8Array {
  const mac = computeMac(key, envelope);
  return tunlb.v1.SignedEnvelope.encode({ envelope, mac }).finish();
}

/**
 * Encodes and signs one envelope. Throws TUNLB_PROTOCOL (a programming error, not input)
 * if a header field is not a safe non-negative integer, the sender is not 0..31, or the
 * envelope does not have exactly one body.
 */
export function encodeSigned(env: EnvelopeFields, key: MacKey): Uint8Array {
  if (
    !isSafeUint(env.clusterId) ||
    !isSafeUint(env.incarnation) ||
    !isSafeUint(env.seq) ||
    !isSafeUint(env.sentAtMs) ||
    !isSafeUint(env.sender) ||
    env.sender >= MAX_BALANCERS ||
    (env.version !== undefined && !isSafeUint(env.version))
  ) {
    throw bad('envelope header fields must be safe non-negative integers and sender 0..31', {
      sender: env.sender,
      seq: env.seq,
    });
  }
  let bodies = 0;
  for (const k of BODY_KINDS) if (env[k] != null) bodies++;
  if (bodies !== 1) throw bad(`an envelope needs exactly one body, got ${bodies}`);
  if (env.recipients !== undefined && !(Number.isInteger(env.recipients) && env.recipients >= 0 && env.recipients <= 0xffffffff)) {
    throw bad('envelope recipients must be a 32-bit mask', { recipients: env.recipients });
  }
  // Canonical form: version is always written, and first (the generated encoder writes fields
  // in number order); receivers check it before the MAC (module header, step 2).
  const msg = env.version === undefined ? { ...env, version: PROTOCOL_VERSION } : env;
  return signEnvelopeBytes(tunlb.v1.Envelope.encode(msg).finish(), key);
}

/** Where parseOuter found the parts of a SignedEnvelope (offsets into the datagram's buffer). */
export interface OuterFrame {
  envOff: number;
  envLen: number;
  macOff: number;
}

/**
 * Parses the outer frame in its canonical form only (module header, step 1): buf[off..off+len)
 * must be exactly 0x0a, varint L (1 or 2 bytes, minimal, 1 <= L), L envelope bytes, 0x12 0x20,
 * 32 MAC bytes. Fills `out` and returns true, or returns false. Allocates nothing; never throws.
 */
export function parseOuter(buf: Uint8Array, off: number, len: number, out: OuterFrame): boolean {
  if (len < MIN_CONTROL_DATAGRAM || buf[off] !== 0x0a) return false;
  let p = off + 1;
  const b0 = buf[p++]!;
  let envLen = b0;
  if (b0 & 0x80) {
    const b1 = buf[p++]!;
    // Two bytes at most (L < 16384, far above MAX_CONTROL_DATAGRAM); b1 = 0 is a non-minimal varint.
    if (b1 & 0x80 || b1 === 0) return false;
    envLen = (b0 & 0x7f) | (b1 << 7);
  }
  if (envLen === 0) return false;
  const macTag = p + envLen;
  if (macTag + 2 + MAC_LEN !== off + len) return false;
  if (buf[macTag] !== 0x12 || buf[macTag + 1] !== MAC_LEN) return false;
  out.envOff = p;
  out.envLen = envLen;
  out.macOff = macTag + 2;
  return true;
}

/**
 * Checks the unauthenticated first bytes of an envelope (module header, step 2): version
 * (0x08 PROTOCOL_VERSION) and, when clusterId is not 0, cluster_id (0x11 + 8 bytes,
 * little-endian). Returns OK, BAD_VERSION or WRONG_CLUSTER. Allocates nothing.
 */
export function checkEnvelopePrefix(buf: Uint8Array, envOff: number, envLen: number, clusterId: number): ProtocolResult {
  if (envLen < 2 || buf[envOff] !== 0x08 || buf[envOff + 1] !== PROTOCOL_VERSION) return ProtocolResult.BAD_VERSION;
  if (clusterId === 0) return ProtocolResult.OK;
  if (envLen < 11 || buf[envOff + 2] !== 0x11) return ProtocolResult.WRONG_CLUSTER;
  const p = envOff + 3;
  const lo = (buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24)) >>> 0;
  const hi = (buf[p + 4]! | (buf[p + 5]! << 8) | (buf[p + 6]! << 16) | (buf[p + 7]! << 24)) >>> 0;
  return hi * 4294967296 + lo === clusterId ? ProtocolResult.OK : ProtocolResult.WRONG_CLUSTER;
}

/** parseOuter's scratch output (single-threaded: decodeSigned never re-enters). */
const frame: OuterFrame = { envOff: 0, envLen: 0, macOff: 0 };

function fail(out: DecodeResult, r: ProtocolResult): DecodeResult {
  out.result = r;
  out.envelope = null;
  return out;
}

/**
 * Verifies and decodes one datagram at buf[off..off+len). Stateless: checks, in order, the
 * outer frame (MALFORMED_OUTER), with `clusterId` the envelope's unauthenticated first bytes
 * (BAD_VERSION, WRONG_CLUSTER), the MAC (BAD_MAC), the Envelope encoding and header
 * (MALFORMED_ENVELOPE: undecodable, incarnation or seq 0), the version (BAD_VERSION), the
 * body (UNKNOWN_BODY) and every flow record (BAD_RECORD). Never throws.
 */
export function decodeSigned(
  buf: Uint8Array,
  off: number,
  len: number,
  key: MacKey,
  out: DecodeResult = new DecodeResult(),
  clusterId?: number,
): DecodeResult {
  out.sender = -1;
  out.confirmed = true;
  if (
    !(buf instanceof Uint8Array) ||
    !Number.isInteger(off) ||
    !Number.isInteger(len) ||
    off < 0 ||
    len <= 0 ||
    off + len > buf.length
  ) {
    return fail(out, ProtocolResult.MALFORMED_OUTER);
  }
  if (!parseOuter(buf, off, len, frame)) return fail(out, ProtocolResult.MALFORMED_OUTER);
  const { envOff, envLen, macOff } = frame;
  if (clusterId !== undefined) {
    const r = checkEnvelopePrefix(buf, envOff, envLen, clusterId);
    if (r !== ProtocolResult.OK) return fail(out, r);
  }
  const envBytes = buf.subarray(envOff, envOff + envLen);
  // Constant time: a timing difference must not tell a forger how many leading bytes match.
  if (!timingSafeEqual(computeMac(key, envBytes), buf.subarray(macOff, macOff + MAC_LEN))) return fail(out, ProtocolResult.BAD_MAC);

  let env: tunlb.v1.Envelope;
  try {
    env = tunlb.v1.Envelope.decode(envBytes);
  } catch {
    return fail(out, ProtocolResult.MALFORMED_ENVELOPE);
  }
  if (env.incarnation < 1 || env.seq < 1) return fail(out, ProtocolResult.MALFORMED_ENVELOPE);
  out.sender = env.sender;
  if (env.version !== PROTOCOL_VERSION) return fail(out, ProtocolResult.BAD_VERSION);
  const body = env.body;
  if (body === undefined) return fail(out, ProtocolResult.UNKNOWN_BODY);
  const recs =
    body === 'records'
      ? (env.records as tunlb.v1.FlowRecordBatch).records
      : body === 'syncChunk'
        ? (env.syncChunk as tunlb.v1.SyncChunk).records
        : null;
  if (recs !== null) {
    for (let i = 0; i < recs.length; i++) {
      if (!isValidRecord(recs[i] as tunlb.v1.FlowRecord)) return fail(out, ProtocolResult.BAD_RECORD);
    }
  }
  out.result = ProtocolResult.OK;
  out.envelope = env as unknown as ReceivedEnvelope;
  return out;
}

/**
 * A fresh incarnation: wall-clock ms * 2048 + random(0..2047). Increases across restarts as
 * long as the wall clock does (and two starts in the same ms differ with probability 2047/2048);
 * below 2^53 until the year 2109.
 */
export function newIncarnation(wallMs: number = Date.now()): number {
  return wallMs * 2048 + randomInt(2048);
}

export interface SignerOptions {
  /** The cluster key (raw bytes or a KeyObject from macKey()). */
  key: MacKey;
  clusterId: number;
  /** This balancer's index (0..31). */
  sender: number;
  /** This process's incarnation (newIncarnation() at start). */
  incarnation: number;
  /** Wall clock for Envelope.sent_at_ms; default Date.now. */
  wallClockMs?: () => number;
}

/**
 * The sending side of one balancer: fills the header (cluster, sender, incarnation, the next
 * sequence number, time) and signs. It is the sequence number source of this sender: every
 * envelope it seals, of any body kind, takes the next number, starting at 1. Use one signer
 * per process (one incarnation); a restart makes a new incarnation and restarts at 1.
 */
export class EnvelopeSigner {
  readonly clusterId: number;
  readonly sender: number;
  readonly incarnation: number;
  private readonly key: MacKey;
  private readonly wallClockMs: () => number;
  private seq = 1;
  /** Reused message object: header plus exactly one non-null body at a time. */
  private readonly msg: EnvelopeFields & { version: number };

  constructor(opts: SignerOptions) {
    if (!isSafeUint(opts.clusterId) || !isSafeUint(opts.incarnation) || opts.incarnation < 1) {
      throw bad('signer needs a safe-integer clusterId and an incarnation >= 1');
    }
    if (!isSafeUint(opts.sender) || opts.sender >= MAX_BALANCERS) {
      throw bad(`sender index must be 0..${MAX_BALANCERS - 1}`, { sender: opts.sender });
    }
    this.key = opts.key;
    this.clusterId = opts.clusterId;
    this.sender = opts.sender;
    this.incarnation = opts.incarnation;
    this.wallClockMs = opts.wallClockMs ?? Date.now;
    this.msg = {
      version: PROTOCOL_VERSION,
      clusterId: opts.clusterId,
      sender: opts.sender,
      incarnation: opts.incarnation,
      seq: 0,
      sentAtMs: 0,
      recipients: 0,
      records: null,
      probe: null,
      probeAck: null,
      syncRequest: null,
      syncChunk: null,
      health: null,
      summary: null,
      reloadRequest: null,
      reloadAnswer: null,
    };
  }

  /** The sequence number the next sealed envelope will carry. */
  get nextSeq(): number {
    return this.seq;
  }

  /**
   * Encodes, numbers and signs one envelope with the given body; returns the datagram.
   * `recipient`: the one balancer index a unicast envelope is meant for (Envelope.recipients),
   * or -1 (default) for every balancer (records, health).
   */
  seal<K extends BodyKind>(kind: K, body: BodyFields[K], recipient = -1): Uint8Array {
    if (!(Number.isInteger(recipient) && recipient >= -1 && recipient < MAX_BALANCERS)) {
      throw bad(`recipient must be -1 or 0..${MAX_BALANCERS - 1}`, { recipient });
    }
    const m = this.msg;
    m.recipients = recipient < 0 ? 0 : (1 << recipient) >>> 0;
    m.seq = this.seq++;
    m.sentAtMs = Math.floor(this.wallClockMs());
    (m as Record<BodyKind, unknown>)[kind] = body;
    try {
      return encodeSigned(m, this.key);
    } finally {
      (m as Record<BodyKind, unknown>)[kind] = null;
    }
  }
}
