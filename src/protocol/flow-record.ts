/**
 * FlowRecord helpers: the two wire forms of the flow key, record validation and exact
 * encoded sizes (so the batcher can pack datagrams without trial encoding).
 *
 * Wire key forms (protocol/tunlb.proto, FlowRecord.key):
 *  - 40 bytes: the flow key of docs/contracts.md, verbatim;
 *  - 13 bytes, compact IPv4: src IPv4 (4) | dst IPv4 (4) | src port (2) | dst port (2) | proto (1),
 *    used only when the 40-byte key is exactly the canonical IPv4 form (::ffff:a.b.c.d
 *    addresses, version byte 4, zero padding), so expansion gives back the same 40 bytes.
 */
import type { tunlb } from './generated/tunlb';

/** Length of a flow key (docs/contracts.md). */
export const FLOW_KEY_LEN = 40;
/** Length of the compact IPv4 wire form of a flow key. */
export const COMPACT_V4_KEY_LEN = 13;
/** Balancer indexes are 0..MAX_BALANCERS-1 (docs/contracts.md). */
export const MAX_BALANCERS = 32;
/** Backend index meaning "none" (docs/contracts.md). */
export const BACKEND_NONE = 0xffff;

/** FlowRecord.op values (protocol/tunlb.proto enum Op). */
export const Op = { UNSPECIFIED: 0, CREATE: 1, REFRESH: 2, DELETE: 3 } as const;
export type Op = (typeof Op)[keyof typeof Op];

/**
 * The fields of one record as the caller hands them to the batcher (everything but the key,
 * which is passed as (buf, off) to avoid a copy). Callers may keep one object and refill it.
 * All values are non-negative integers < 2^32.
 */
export interface FlowRecordFields {
  op: number;
  primary: number;
  backup: number;
  vip: number;
  backend: number;
  state: number;
  /** Age of the flow in seconds at send time (now - created). */
  ageS: number;
  /** Seconds since the last packet of the flow (now - last seen). */
  idleS: number;
  tableGeneration: number;
}

/** A decoded record (what codec.decodeSigned yields). `key` is a view into the datagram. */
export type DecodedFlowRecord = tunlb.v1.FlowRecord;

/** True when key[off..off+40) is the canonical IPv4 form and can travel as 13 bytes. */
export function isCompactV4(key: Uint8Array, off: number): boolean {
  if (key[off + 37] !== 4 || key[off + 38] !== 0 || key[off + 39] !== 0) return false;
  for (let i = 0; i < 10; i++) if (key[off + i] !== 0 || key[off + 16 + i] !== 0) return false;
  return (
    key[off + 10] === 0xff && key[off + 11] === 0xff && key[off + 26] === 0xff && key[off + 27] === 0xff
  );
}

/** Writes the compact form of the (canonical IPv4) 40-byte key at key[off] into out[outOff..+13). */
export function compactV4Key(key: Uint8Array, off: number, out: Uint8Array, outOff: number): void {
  for (let i = 0; i < 4; i++) {
    out[outOff + i] = key[off + 12 + i]!;
    out[outOff + 4 + i] = key[off + 28 + i]!;
    out[outOff + 8 + i] = key[off + 32 + i]!; // both ports, big-endian as in the key
  }
  out[outOff + 12] = key[off + 36]!;
}

/**
 * Writes the 40-byte flow key for a wire key (13 or 40 bytes) into out[outOff..outOff+40).
 * Returns false (and writes nothing) if the wire key has another length. Use it to copy a
 * decoded record's key out of the datagram buffer before that buffer is reused.
 */
export function expandWireKey(wire: Uint8Array, out: Uint8Array, outOff: number): boolean {
  if (wire.length === FLOW_KEY_LEN) {
    out.set(wire, outOff);
    return true;
  }
  if (wire.length !== COMPACT_V4_KEY_LEN) return false;
  out.fill(0, outOff, outOff + FLOW_KEY_LEN);
  out[outOff + 10] = 0xff;
  out[outOff + 11] = 0xff;
  out[outOff + 26] = 0xff;
  out[outOff + 27] = 0xff;
  for (let i = 0; i < 4; i++) {
    out[outOff + 12 + i] = wire[i]!;
    out[outOff + 28 + i] = wire[4 + i]!;
    out[outOff + 32 + i] = wire[8 + i]!;
  }
  out[outOff + 36] = wire[12]!;
  out[outOff + 37] = 4;
  return true;
}

/**
 * Validity of a decoded record (after the MAC verified): op CREATE/REFRESH/DELETE, key 13 or
 * 40 bytes (a 40-byte key with version byte 4 or 6 and zero padding), balancer indexes < 32,
 * backend a u16.
 */
export function isValidRecord(r: DecodedFlowRecord): boolean {
  const op = r.op as number;
  if (op !== Op.CREATE && op !== Op.REFRESH && op !== Op.DELETE) return false;
  const k = r.key;
  if (k.length === FLOW_KEY_LEN) {
    if ((k[37] !== 4 && k[37] !== 6) || k[38] !== 0 || k[39] !== 0) return false;
  } else if (k.length !== COMPACT_V4_KEY_LEN) {
    return false;
  }
  return r.primary < MAX_BALANCERS && r.backup < MAX_BALANCERS && r.backend <= 0xffff;
}

/** Bytes of a protobuf varint holding the non-negative integer v (v < 2^53). */
export function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 5;
  v = Math.floor(v / 0x800000000); // 2^35
  while (v > 0) {
    n++;
    v = Math.floor(v / 128);
  }
  return n;
}

/** Bytes of a one-byte-tag varint field holding v; 0 when v is 0 (proto3 does not send zeros). */
function vfield(v: number): number {
  return v === 0 ? 0 : 1 + varintSize(v);
}

/** Encoded size of a FlowRecord message body (without its own tag/length) with a wire key of keyLen bytes. */
export function flowRecordSize(f: FlowRecordFields, keyLen: number): number {
  return (
    vfield(f.op) +
    (keyLen === 0 ? 0 : 1 + varintSize(keyLen) + keyLen) +
    vfield(f.primary) +
    vfield(f.backup) +
    vfield(f.vip) +
    vfield(f.backend) +
    vfield(f.state) +
    vfield(f.ageS) +
    vfield(f.idleS) +
    vfield(f.tableGeneration)
  );
}

/** Size of a length-delimited field (one-byte tag) whose payload is n bytes. */
export function delimitedSize(n: number): number {
  return 1 + varintSize(n) + n;
}

/**
 * A reusable FlowRecord message with its own key buffers, so packing records into datagrams
 * allocates nothing per record once the slot exists (RecordBatcher, bulk-sync chunks).
 */
export interface RecordSlot {
  rec: tunlb.v1.FlowRecord;
  key40: Uint8Array;
  key13: Uint8Array;
}

/**
 * Copies `f` and the 40-byte key at key[keyOff..] into the slot's record; the key travels in
 * its 13-byte form when `compact` (isCompactV4). The record references the slot's buffers.
 */
export function fillRecordSlot(slot: RecordSlot, f: FlowRecordFields, key: Uint8Array, keyOff: number, compact: boolean): void {
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
}
