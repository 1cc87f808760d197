/**
 * The keys derived from the cluster key for the data plane's HalfSipHash uses, one per use
 * (domain separation: knowing one reveals nothing of the other or of the cluster key):
 *   hash key      the cluster-wide hashes (flow hash, rendezvous row and member seeds): first
 *                 8 bytes of HMAC-SHA256(clusterKey, "tunlb rendezvous v1");
 *   data-tag key  the tag of every encapsulated packet on the data port
 *                 (src/decision/data-tag.ts): first 8 bytes of
 *                 HMAC-SHA256(clusterKey, "tunlb data-port tag v1").
 * What the flow hash computes is partly observable from outside (which backend a 5-tuple
 * reaches), a tag must not be: so the two never share a key. (The control channel's
 * HMAC-SHA256 uses the cluster key itself.)
 *
 * Contract (docs/contracts.md). Derived once at start-up or on key change (off the hot path;
 * node:crypto). Returned as `Uint32Array(2)`: the 8 bytes as two little-endian words, the form
 * `halfSipHash24` takes (k0 = bytes 0..3, k1 = bytes 4..7).
 */
import { createHmac } from 'node:crypto';
import { ErrorCodes, TunlbError } from '../errors';

/** HMAC message of the derivation; changing it re-keys every table of every cluster. */
export const HASH_KEY_LABEL = 'tunlb rendezvous v1';

/** Derive the rendezvous/flow hash key from the cluster key (raw bytes, or a UTF-8 string). */
export function deriveHashKey(clusterKey: Uint8Array | string): Uint32Array {
  return deriveKey(clusterKey, HASH_KEY_LABEL);
}

/** First 8 bytes of HMAC-SHA256(clusterKey, label), as key words. */
function deriveKey(clusterKey: Uint8Array | string, label: string): Uint32Array {
  const len = typeof clusterKey === 'string' ? Buffer.byteLength(clusterKey, 'utf8') : clusterKey.length;
  if (len === 0) {
    throw new TunlbError(ErrorCodes.CONFIG_KEY_MISSING, 'cluster key is empty: set a cluster key (shared secret) in the configuration');
  }
  const mac = createHmac('sha256', clusterKey).update(label, 'utf8').digest();
  return hashKeyFromBytes(mac.subarray(0, 8));
}

/** HMAC message of the data-tag key; changing it is a data-port wire change (header version). */
export const DATA_TAG_KEY_LABEL = 'tunlb data-port tag v1';

/** Derive the data-port tag key from the cluster key (raw bytes, or a UTF-8 string). */
export function deriveDataTagKey(clusterKey: Uint8Array | string): Uint32Array {
  return deriveKey(clusterKey, DATA_TAG_KEY_LABEL);
}

/** The `Uint32Array(2)` form of 8 raw key bytes (k0 = LE word of bytes 0..3, k1 = of 4..7). */
export function hashKeyFromBytes(bytes: Uint8Array): Uint32Array {
  if (bytes.length !== 8) {
    throw new TunlbError(ErrorCodes.TABLE_BUILD, `hash key must be 8 bytes, got ${bytes.length}`);
  }
  const k = new Uint32Array(2);
  k[0] = (bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24)) >>> 0;
  k[1] = (bytes[4]! | (bytes[5]! << 8) | (bytes[6]! << 16) | (bytes[7]! << 24)) >>> 0;
  return k;
}

/** The 8 key bytes back from the word form (for logs of a key fingerprint, tests). */
export function hashKeyToBytes(key: Uint32Array): Uint8Array {
  const b = new Uint8Array(8);
  for (let i = 0; i < 8; i++) b[i] = (key[i >> 2]! >>> ((i & 3) * 8)) & 0xff;
  return b;
}

/** True when two hash keys are the same 8 bytes. */
export function hashKeysEqual(a: Uint32Array, b: Uint32Array): boolean {
  return a[0] === b[0] && a[1] === b[1];
}
