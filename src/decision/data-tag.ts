/**
 * The data-port tag (docs/protocol.md "Data port", byte rules in docs/contracts.md "Data-port
 * tag"): a 64-bit keyed tag in the header of every encapsulated packet (src/packet/encap.ts),
 * so a balancer accepts an encapsulated packet only from a holder of the cluster key. The outer
 * source address proves nothing (anyone on the balancer network can put a peer's there).
 *
 *   tag = HalfSipHash-2-4, 64-bit output (the reference's outlen 8), keyed with the data-tag key
 *         (first 8 bytes of HMAC-SHA256(clusterKey, "tunlb data-port tag v1"),
 *         src/decision/hash-key.ts), over these 52 bytes:
 *     bytes  0..11  the encapsulation header's bytes 0..11 as sent (version and type, flags,
 *                   primary, backup, backend, VIP, generation): the decision cannot be changed;
 *     bytes 12..51  the inner packet's 40-byte flow key (docs/contracts.md "Flow key") as
 *                   parsePacket writes it, except its bytes 38 and 39 (zero in every key): the
 *                   SENDING balancer's index, then the RECEIVING balancer's index. So a tag is
 *                   good for one flow, one decision, and one sender → receiver pair: a captured
 *                   datagram cannot be replayed with another inner 5-tuple or decision, nor to
 *                   or as another balancer.
 *   The header carries the output at bytes 12..19: the reference's 8 output bytes (out[0]
 *   little-endian, then out[1] little-endian).
 *
 * What the tag does not cover, on purpose: the inner packet beyond its flow key (payload,
 * sequence numbers, TCP flags) and the virtio header. Chunks of a split super-packet share one
 * tag (same header, same flow key), so the split computes it once per super-packet and the
 * receiver once per merged run; a replay with another payload is what a client could send to
 * the VIP itself (it goes through the same admission, and the virtio header is validated on
 * receipt: src/packet/vnet-check.ts). An exact replay of a captured datagram is not detected:
 * it repeats a packet of a flow with a decision a balancer made (docs/protocol.md).
 *
 * Why 64 bits: a 32-bit tag is guessed once in 2^32 tries, about once an hour at a data port's
 * receive rate of ~10^6 datagrams/s; 64 bits is never at any rate. The key is 64 bits
 * (HalfSipHash), so an offline search of the key from captured datagrams costs 2^64 hashes.
 *
 * Hot path: no allocation, no closure, no exception; about 1.5x the flow hash (13 message
 * words, 4 more finalisation rounds; bench/peer-path.bench.ts, docs/performance.md).
 */

import { halfSipHash24x64 } from './halfsiphash';

/** Length of the tag in the header, and of the message it covers. */
export const DATA_TAG_LEN = 8;
export const DATA_TAG_MESSAGE_LEN = 52;

/** The 52-byte message of the tag being computed (module-owned, reused: single-threaded). */
const message = new Uint8Array(DATA_TAG_MESSAGE_LEN);

/**
 * The tag of header hdr[hdrOff .. +12) and flow key flowKey[0 .. 40) from balancer `sender` to
 * balancer `receiver` (indexes 0..255): out[0], out[1]. The message is assembled in a reused
 * buffer and hashed by halfSipHash24x64 (src/decision/halfsiphash.ts): one implementation of
 * the rounds. Caller guarantees the bounds.
 */
export function dataTag(key: Uint32Array, hdr: Uint8Array, hdrOff: number, flowKey: Uint8Array, sender: number, receiver: number, out: Uint32Array): void {
  const m = message;
  for (let i = 0; i < 12; i++) m[i] = hdr[hdrOff + i]!;
  for (let i = 0; i < 38; i++) m[12 + i] = flowKey[i]!;
  m[50] = sender & 0xff;
  m[51] = receiver & 0xff;
  halfSipHash24x64(key, m, 0, DATA_TAG_MESSAGE_LEN, out);
}

/** Scratch of writeDataTag / dataTagMatches (module-owned, reused: single-threaded). */
const scratch = new Uint32Array(2);

/**
 * Computes the tag of the header at buf[hdrOff] (its bytes 0..11 written) and writes it to
 * buf[hdrOff + 12 .. +20) (src/packet/encap.ts ENCAP_TAG_OFF). Caller guarantees the bounds.
 */
export function writeDataTag(buf: Uint8Array, hdrOff: number, key: Uint32Array, flowKey: Uint8Array, sender: number, receiver: number): void {
  const t = scratch;
  dataTag(key, buf, hdrOff, flowKey, sender, receiver, t);
  const a = t[0]!;
  const b = t[1]!;
  const o = hdrOff + 12;
  buf[o] = a;
  buf[o + 1] = a >>> 8;
  buf[o + 2] = a >>> 16;
  buf[o + 3] = a >>> 24;
  buf[o + 4] = b;
  buf[o + 5] = b >>> 8;
  buf[o + 6] = b >>> 16;
  buf[o + 7] = b >>> 24;
}

/**
 * True when the tag at buf[hdrOff + 12 .. +20) is the tag of the header at buf[hdrOff] and
 * `flowKey` from `sender` to `receiver`. Caller guarantees the bounds.
 */
export function dataTagMatches(buf: Uint8Array, hdrOff: number, key: Uint32Array, flowKey: Uint8Array, sender: number, receiver: number): boolean {
  const t = scratch;
  dataTag(key, buf, hdrOff, flowKey, sender, receiver, t);
  const o = hdrOff + 12;
  const a = (buf[o]! | (buf[o + 1]! << 8) | (buf[o + 2]! << 16) | (buf[o + 3]! << 24)) >>> 0;
  const b = (buf[o + 4]! | (buf[o + 5]! << 8) | (buf[o + 6]! << 16) | (buf[o + 7]! << 24)) >>> 0;
  // Both words compared whatever the first gives (no early exit on the tag's bytes).
  return ((a ^ t[0]!) | (b ^ t[1]!)) === 0;
}
