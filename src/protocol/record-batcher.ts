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
 * encoding, so a record is added only if the datagram still fits. The sequence number is
 * budgeted with the signer's next number at append() time; other envelopes of the same signer
 * (probes, ...) may take numbers before flush(), and if that makes the seq varint one byte
 * longer and the datagram one byte too big, flush() moves the last record(s) into a second
 * datagram. So every datagram is within the budget, and packing is exact.
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
  delimitedSize,
  FLOW_KEY_LEN,
  flowRecordSize,
  isCompactV4,
  varintSize,
  fillRecordSlot,
  type FlowRecordFields,
  type RecordSlot,
} from './flow-record';

/** Default UDP payload budget of one control datagram. */
export const DEFAULT_DATAGRAM_BUDGET = 1400;

/**
 * Bytes of a SignedEnvelope around an Envelope whose header is `headerLen` bytes and whose
 * body field carries `bodyLen` bytes.
 */
export function signedDatagramSize(headerLen: number, bodyLen: number): number {
  const env = headerLen + delimitedSize(bodyLen);
  return delimitedSize(env) + delimitedSize(MAC_LEN);
}

/**
 * Encoded size of an Envelope header from this signer with sequence number `seq` (version,
 * cluster_id, sender, incarnation, seq, sent_at_ms; zero fields are omitted, sent_at_ms is
 * counted as present), plus `recipients` (fixed32, 5 bytes) for a unicast envelope that names
 * its recipient.
 */
export function envelopeHeaderSize(signer: EnvelopeSigner, seq: number, withRecipient = false): number {
  return (
    (withRecipient ? 5 : 0) +
    1 + varintSize(PROTOCOL_VERSION) +
    (signer.clusterId === 0 ? 0 : 9) +
    (signer.sender === 0 ? 0 : 1 + varintSize(signer.sender)) +
    9 + // incarnation, fixed64, >= 1
    1 + varintSize(seq) +
    9 // sent_at_ms, fixed64
  );
}

interface Slot extends RecordSlot {
  /** Delimited size of the record in the batch body. */
  size: number;
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
  }

  /** Records waiting for the next flush. */
  pending(): number {
    return this.count;
  }

  /** Size the pending records' datagram would have if flushed now (0 if none). */
  pendingBytes(): number {
    return this.count === 0 ? 0 : signedDatagramSize(this.headerLen(), this.bodyLen);
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
    if (this.count > 0 && signedDatagramSize(this.headerLen(), this.bodyLen + recLen) > this.budget) this.flush();
    if (signedDatagramSize(this.headerLen(), recLen) > this.budget) {
      // Unreachable with budget >= 256 (a record is at most ~100 bytes); kept as a guard.
      throw new TunlbError(ErrorCodes.PROTOCOL, 'flow record larger than the datagram budget');
    }
    const slot = this.slot(this.count);
    slot.size = recLen;
    fillRecordSlot(slot, f, key, keyOff, compact);
    this.count++;
    this.bodyLen += recLen;
  }

  /**
   * Signs and emits the pending records, normally as one datagram (two in the rare case
   * described in the module comment); returns how many records were emitted.
   */
  flush(): number {
    const n = this.count;
    if (n === 0) return 0;
    let body = this.bodyLen;
    let k = n;
    while (k > 1 && signedDatagramSize(this.headerLen(), body) > this.budget) body -= this.slots[--k]!.size;
    this.count = 0;
    this.bodyLen = 0;
    this.sealRange(0, k);
    if (k < n) this.sealRange(k, n);
    return n;
  }

  /** Header size with the sequence number the next datagram will carry. */
  private headerLen(): number {
    return envelopeHeaderSize(this.signer, this.signer.nextSeq);
  }

  private sealRange(from: number, to: number): void {
    const recs = new Array<tunlb.v1.FlowRecord>(to - from);
    for (let i = from; i < to; i++) recs[i - from] = this.slots[i]!.rec;
    const dgram = this.signer.seal('records', { records: recs });
    this.datagrams++;
    this.records += to - from;
    this.emit(dgram, to - from);
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
      s = { rec, size: 0, key40: new Uint8Array(FLOW_KEY_LEN), key13: new Uint8Array(COMPACT_V4_KEY_LEN) };
      rec.key = s.key40;
      this.slots.push(s);
    }
    return s;
  }
}
