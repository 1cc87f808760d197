/**
 * Source affinity (`vips[].affinity: source[/prefix]`; IPVS persistence `-p`, HAProxy
 * `balance source`): the backend of a new flow of such a VIP is chosen from the client's
 * address alone, masked to the VIP's prefix, so every connection of one client (or of one
 * client network, with a prefix) reaches the same backend: iperf3's control and data
 * connections, FTP's, session-bound web applications.
 *
 *   affinity key   40 bytes in the flow key's layout (docs/contracts.md): bytes 0..15 = the
 *                  flow key's source address (IPv4-mapped for IPv4) AND the VIP's mask;
 *                  byte 38 = 0x01; every other byte 0. A flow key's byte 38 is always 0, so
 *                  an affinity key is never a flow key.
 *   affinity hash  hashFlowKey(clusterHashKey, affinity key): HalfSipHash-2-4 under the
 *                  cluster hash key, the same function and key as the flow hash.
 *   backend row    affinityHash >>> 16 of the VIP's weighted-rendezvous backend table (the
 *                  flow hash's `>>> 16` convention).
 *
 * Only the backend changes: the balancer ranking (primary, backup) stays per flow
 * (flowHash & 0xffff), so a client's connections still spread over the balancers.
 *
 * The same on every balancer: it depends on the cluster key, the masked client address and
 * the backend table only (which every balancer builds alike), never on which balancer
 * received the packet (ECMP entry, docs/entry.md) or on time. Every place that picks a backend
 * for a flow uses it (src/dataplane/forwarder.ts: the new-flow decision, "Connection reuse",
 * "Backend down"), so a client's new connection on a reused port, or its UDP flow moved off a
 * down backend, goes where the client's other flows go now. Weights hold over many clients
 * (each client address is one draw from the weighted table), not within one client.
 *
 * Hot path: no allocation; the caller owns the 40-byte scratch (4-byte aligned).
 */
import { hashFlowKey } from './halfsiphash';

/** Byte 38 of an affinity key (a flow key's is 0). */
export const AFFINITY_KEY_MARK = 0x01;

/**
 * The 16-byte mask (flow key address form) of a prefix of `prefixLen` bits of a family-`family`
 * address: IPv4 is IPv4-mapped (`::ffff:a.b.c.d`), so its 12 mapping bytes are kept whole.
 * Off the hot path (the forwarding table's build).
 */
export function affinityMask(family: 4 | 6, prefixLen: number): Uint8Array {
  const m = new Uint8Array(16);
  let bits = family === 4 ? 96 + prefixLen : prefixLen;
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) m[i] = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
  return m;
}

/**
 * The affinity hash (header) of the flow key `key` (bytes 0..15 = its source address) under
 * `mask[maskOff .. maskOff+16)`, built in `scratch` (40 bytes, 4-byte aligned, caller-owned;
 * fully rewritten). Returns a u32.
 */
export function affinityHash(hashKey: Uint32Array, key: Uint8Array, mask: Uint8Array, maskOff: number, scratch: Uint8Array): number {
  for (let i = 0; i < 16; i++) scratch[i] = key[i]! & mask[maskOff + i]!;
  for (let i = 16; i < 40; i++) scratch[i] = 0;
  scratch[38] = AFFINITY_KEY_MARK;
  return hashFlowKey(hashKey, scratch, 0);
}
