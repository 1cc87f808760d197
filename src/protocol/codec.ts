/**
 * The signed envelope: encoding (sign) and decoding (verify, then parse) of one control
 * datagram (protocol/tunlb.proto).
 *
 *   datagram = SignedEnvelope { envelope: bytes(Envelope), mac: HMAC-SHA256(clusterKey, envelope) }
 *
 * Receive order (decodeSigned): the outer frame is parsed (two length-delimited fields), the
 * MAC is recomputed over the raw envelope bytes and compared in constant time
 * (crypto.timingSafeEqual), and only then is the Envelope decoded. So the protobuf decoder
 * never sees unauthenticated bytes beyond the outer frame, and a forged datagram costs one HMAC.
 *
 * decodeSigned never throws on bad input: protobufjs' decoders throw on malformed input; the
 * exceptions are caught here, at the edge, and mapped to a ProtocolResult. It is stateless;
 * the stateful checks (cluster, sender, replay window) are in src/protocol/receiver.ts.
 *
 * Not on the data-plane hot path (control datagrams: records, probes, sync), but kept
 * allocation-light: protobufjs' decoded bytes fields are views into the datagram, so a caller
 * that keeps anything (e.g. a record key) copies it before it reuses the receive buffer.
 *
 * Outer-frame malleability: bytes outside `envelope` (unknown outer fields, a repeated field 1
 * where the last one wins) are not authenticated; they are discarded and cannot change what
 * is accepted, and a re-framed copy of an accepted envelope is caught by the replay window.
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

/** A cluster key: raw bytes, or a KeyObject made once with macKey() (slightly cheaper per datagram). */
export type MacKey = Uint8Array | KeyObject;

/** Makes a reusable KeyObject from the raw cluster key. */
export function macKey(raw: Uint8Array): KeyObject {
  return createSecretKey(raw);
}

/** The Envelope.body oneof names. */
export type BodyKind = 'records' | 'probe' | 'probeAck' | 'syncRequest' | 'syncChunk' | 'health';
export const BODY_KINDS: readonly BodyKind[] = ['records', 'probe', 'probeAck', 'syncRequest', 'syncChunk', 'health'];

/** What each body kind takes when encoding (plain objects are fine). */
export interface BodyFields {
  records: tunlb.v1.FlowRecordBatch.$Properties;
  probe: tunlb.v1.Probe.$Properties;
  probeAck: tunlb.v1.ProbeAck.$Properties;
  syncRequest: tunlb.v1.SyncRequest.$Properties;
  syncChunk: tunlb.v1.SyncChunk.$Properties;
  health: tunlb.v1.HealthReport.$Properties;
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
  readonly body: BodyKind;
  readonly records: ReceivedRecordBatch | null;
  readonly probe: tunlb.v1.Probe | null;
  readonly probeAck: tunlb.v1.ProbeAck | null;
  readonly syncRequest: tunlb.v1.SyncRequest | null;
  readonly syncChunk: ReceivedSyncChunk | null;
  readonly health: tunlb.v1.HealthReport | null;
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
  const w = tunlb.v1.Envelope.encode(env);
  // version is optional for the caller; field order is free on the wire.
  if (env.version === undefined) w.uint32(/* id 1, varint */ 8).uint32(PROTOCOL_VERSION);
  return signEnvelopeBytes(w.finish(), key);
}

function fail(out: DecodeResult, r: ProtocolResult): DecodeResult {
  out.result = r;
  out.envelope = null;
  return out;
}

/**
 * Verifies and decodes one datagram at buf[off..off+len). Stateless: checks, in order, the
 * outer frame (MALFORMED_OUTER), the MAC (BAD_MAC), the Envelope encoding and header
 * (MALFORMED_ENVELOPE: undecodable, incarnation or seq 0), the version (BAD_VERSION), the
 * body (UNKNOWN_BODY) and every flow record (BAD_RECORD). Never throws.
 */
export function decodeSigned(
  buf: Uint8Array,
  off: number,
  len: number,
  key: MacKey,
  out: DecodeResult = new DecodeResult(),
): DecodeResult {
  out.sender = -1;
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
  let signed: tunlb.v1.SignedEnvelope;
  try {
    signed = tunlb.v1.SignedEnvelope.decode(buf.subarray(off, off + len));
  } catch {
    return fail(out, ProtocolResult.MALFORMED_OUTER);
  }
  const envBytes = signed.envelope;
  const mac = signed.mac;
  if (envBytes.length === 0 || mac.length !== MAC_LEN) return fail(out, ProtocolResult.MALFORMED_OUTER);
  // Constant time: a timing difference must not tell a forger how many leading bytes match.
  if (!timingSafeEqual(computeMac(key, envBytes), mac)) return fail(out, ProtocolResult.BAD_MAC);

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
      records: null,
      probe: null,
      probeAck: null,
      syncRequest: null,
      syncChunk: null,
      health: null,
    };
  }

  /** The sequence number the next sealed envelope will carry. */
  get nextSeq(): number {
    return this.seq;
  }

  /** Encodes, numbers and signs one envelope with the given body; returns the datagram. */
  seal<K extends BodyKind>(kind: K, body: BodyFields[K]): Uint8Array {
    const m = this.msg;
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
