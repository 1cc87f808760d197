/**
 * Packs flow records into signed datagrams under a byte budget (default 1400 bytes of UDP
 * payload, signature included: fits a 1500-byte MTU with IPv6 + UDP headers and room for a
 * tunnel on the path).
 *
 * Usage (replication, off the data-plane hot path):
 *   const b = new RecordBatcher(signer, (dgram, n) => socket.send(dgram));
 *   b.append(fields, key, keyOff);         // may emit a full datagram first
 *   ...                                    // the caller's timer (e.g. every 10 ms):
 *   if (b.pending() > 0) b.flush();
 *
 * Sizes are computed exactly from the fields (src/protocol/flow-record.ts) instead of trial
 * encoding, so a record is added only if the datagram still fits; the only slack is the
 * sequence number, budgeted at its largest (8-byte) varint because other envelopes from the
 * same signer (probes, ...) may take numbers between append() and flush().
 *
 * Allocation: records are copied into a pool of preallocated FlowRecord objects with their
 * own key buffers (reused from one datagram to the next), so append() allocates nothing;
 * flush() allocates what protobufjs' encoder needs plus one array per datagram.
 *
 * Ownership: the datagram passed to `emit` is a fresh buffer the callee may keep.
 */
import { TunlbError, ErrorCodes } from '../errors';
import { tunlb } from './generated/tunlb';
import { MAC_LEN, PROTOCOL_VERSION, type EnvelopeSigner } from './codec';
import {
  COMPACT_V4_KEY_LEN,
  compactV4Key,
  delimitedSize,
  FLOW_KEY_LEN,
  flowRecordSize,
  isCompactV4,
  varintSize,
  type FlowRecordFields,
} from './flow-record';

/** Default UDP payload budget of one control datagram. */
export const DEFAULT_DATAGRAM_BUDGET = 1400;

/** Largest varint of a safe integer (< 2^53): the seq slack (see module comment). */
const MAX_SAFE_VARINT = 8;

/**
 * Bytes of a SignedEnvelope around an Envelope whose header is `headerLen` bytes and whose
 * body field carries `bodyLen` bytes.
 */
export function signedDatagramSize(headerLen: number, bodyLen: number): number {
  const env = headerLen + delimitedSize(bodyLen);
  return delimitedSize(env) + delimitedSize(MAC_LEN);
}

/**
 * Largest encoded size of an Envelope header from this signer, sequence number budgeted at
 * its largest (version, cluster_id, sender, incarnation, seq, sent_at_ms; zeros are omitted).
 */
export function envelopeHeaderBudget(signer: EnvelopeSigner): number {
  return (
    1 + varintSize(PROTOCOL_VERSION) +
    (signer.clusterId === 0 ? 0 : 9) +
    (signer.sender === 0 ? 0 : 1 + varintSize(signer.sender)) +
    9 + // incarnation, fixed64, >= 1
    1 + MAX_SAFE_VARINT + // seq
    9 // sent_at_ms, fixed64
  );
}

interface Slot {
  rec: tunlb.v1.FlowRecord;
  key40: Uint8Array;
  key13: Uint8Array;
}

export interface RecordBatcherOptions {
  /** UDP payload budget per datagram in bytes (default 1400; at least 256). */
  budget?: number;
}

export class RecordBatcher {
  readonly budget: number;
  /** Datagrams emitted so far. */
  datagrams = 0;
  /** Records emitted so far. */
  records = 0;

  private readonly signer: EnvelopeSigner;
  private readonly emit: (datagram: Uint8Array, records: number) => void;
  private readonly headerLen: number;
  private readonly slots: Slot[] = [];
  private count = 0;
  /** Encoded bytes of the FlowRecordBatch body so far (sum of the records' delimited sizes). */
  private bodyLen = 0;

  constructor(
    signer: EnvelopeSigner,
    emit: (datagram: Uint8Array, records: number) => void,
    opts: RecordBatcherOptions = {},
  ) {
    const budget = opts.budget ?? DEFAULT_DATAGRAM_BUDGET;
    if (!Number.isInteger(budget) || budget < 256 || budget > 65507) {
      throw new TunlbError(ErrorCodes.PROTOCOL, `record batch budget must be 256..65507 bytes, got ${budget}`);
    }
    this.budget = budget;
    this.signer = signer;
    this.emit = emit;
    this.headerLen = envelopeHeaderBudget(signer);
  }

  /** Records waiting for the next flush. */
  pending(): number {
    return this.count;
  }

  /** Upper bound of the size the pending records' datagram would have now (0 if none). */
  pendingBytes(): number {
    return this.count === 0 ? 0 : signedDatagramSize(this.headerLen, this.bodyLen);
  }

  /**
   * Adds one record; the key is the 40-byte flow key at key[keyOff] (copied; IPv4 keys in the
   * canonical form travel in 13 bytes). If the record does not fit the pending datagram, that
   * datagram is flushed first. Fields must be integers 0..2^32-1 (not checked here: the
   * receiver rejects invalid records as bad_record).
   */
  append(f: FlowRecordFields, key: Uint8Array, keyOff: number): void {
    const compact = isCompactV4(key, keyOff);
    const keyLen = compact ? COMPACT_V4_KEY_LEN : FLOW_KEY_LEN;
    const recLen = delimitedSize(flowRecordSize(f, keyLen));
    if (this.count > 0 && signedDatagramSize(this.headerLen, this.bodyLen + recLen) > this.budget) this.flush();
    if (signedDatagramSize(this.headerLen, recLen) > this.budget) {
      // Unreachable with budget >= 256 (a record is at most ~100 bytes); kept as a guard.
      throw new TunlbError(ErrorCodes.PROTOCOL, 'flow record larger than the datagram budget');
    }
    const slot = this.slot(this.count);
    const r = slot.rec;
    r.op = f.op;
    r.primary = f.primary;
    r.backup = f.backup;
    r.vip = f.vip;
    r.backend = f.backend;
    r.state = f.state;
    r.ageS = f.ageS;
    r.idleS = f.idleS;
    r.tableGeneration = f.tableGeneration;
    if (compact) {
      compactV4Key(key, keyOff, slot.key13, 0);
      r.key = slot.key13;
    } else {
      slot.key40.set(key.subarray(keyOff, keyOff + FLOW_KEY_LEN));
      r.key = slot.key40;
    }
    this.count++;
    this.bodyLen += recLen;
  }

  /** Signs and emits the pending records as one datagram; returns how many records it carried. */
  flush(): number {
    const n = this.count;
    if (n === 0) return 0;
    const recs = new Array<tunlb.v1.FlowRecord>(n);
    for (let i = 0; i < n; i++) recs[i] = this.slots[i]!.rec;
    this.count = 0;
    this.bodyLen = 0;
    const dgram = this.signer.seal('records', { records: recs });
    this.datagrams++;
    this.records += n;
    this.emit(dgram, n);
    return n;
  }

  private slot(i: number): Slot {
    let s = this.slots[i];
    if (s === undefined) {
      const rec = new tunlb.v1.FlowRecord();
      // Own properties: the generated encoder only writes fields that are own and non-zero.
      rec.op = 0;
      rec.primary = 0;
      rec.backup = 0;
      rec.vip = 0;
      rec.backend = 0;
      rec.state = 0;
      rec.ageS = 0;
      rec.idleS = 0;
      rec.tableGeneration = 0;
      s = { rec, key40: new Uint8Array(FLOW_KEY_LEN), key13: new Uint8Array(COMPACT_V4_KEY_LEN) };
      rec.key = s.key40;
      this.slots.push(s);
    }
    return s;
  }
}
