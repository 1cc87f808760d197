/**
 * Shared pieces of the rendezvous (highest-random-weight) tables: row seeds, member seeds and
 * the score mix. Everything here is a pure function of the cluster hash key and of identity
 * *strings*, never of list positions or insertion order, so every balancer computes the same
 * scores (docs/contracts.md, docs/hashing.md "Rendezvous scores").
 *
 * Definitions (the cluster-wide contract; change only together with every balancer):
 * - ROWS = 65536 rows. Balancer ranking row = `flowHash & 0xffff`, backend table row =
 *   `flowHash >>> 16`.
 * - rowSeed[r]   = HalfSipHash-2-4(hashKey, "row" || r as 4 bytes little-endian)  (7 bytes)
 * - memberSeed   = HalfSipHash-2-4(hashKey, UTF-8 bytes of the id string)
 * - score32(r,m) = MurmurHash3_x86_32 of the 4 bytes memberSeed (LE) with seed rowSeed[r]
 *   (`mixScore` below: Appleby's body round for one 4-byte block, then the length xor and
 *   fmix32). A bijection in rowSeed for fixed member, and avalanching in both inputs.
 * - Ties of score32 (probability 2^-32 per pair per row) go to the id that sorts first by
 *   JavaScript string comparison (UTF-16 code units, `a < b`).
 */
import { halfSipHash24 } from './halfsiphash';

/** Rows of every rendezvous table (2^16). */
export const ROWS = 65536;

let cachedK0 = -1;
let cachedK1 = -1;
let cachedSeeds: Uint32Array | null = null;

/**
 * The 65536 row seeds for a hash key. Cached for the last key (the cluster has one key);
 * the returned array is shared and must be treated as read-only.
 */
export function rowSeeds(hashKey: Uint32Array): Uint32Array {
  if (cachedSeeds !== null && cachedK0 === hashKey[0] && cachedK1 === hashKey[1]) return cachedSeeds;
  const seeds = new Uint32Array(ROWS);
  const msg = new Uint8Array([0x72, 0x6f, 0x77, 0, 0, 0, 0]); // "row" || r (LE)
  for (let r = 0; r < ROWS; r++) {
    msg[3] = r & 0xff;
    msg[4] = (r >>> 8) & 0xff;
    // r < 2^16: bytes 5 and 6 stay 0
    seeds[r] = halfSipHash24(hashKey, msg, 0, 7);
  }
  cachedK0 = hashKey[0]!;
  cachedK1 = hashKey[1]!;
  cachedSeeds = seeds;
  return seeds;
}

/** Member (balancer or backend) seed: HalfSipHash-2-4 of the UTF-8 id. */
export function memberSeed(hashKey: Uint32Array, id: string): number {
  const bytes = Buffer.from(id, 'utf8');
  return halfSipHash24(hashKey, bytes, 0, bytes.length);
}

/**
 * The member half of `mixScore`, precomputable once per member:
 * k = rotl(memberSeed * c1, 15) * c2 (MurmurHash3 block scramble).
 */
export function memberMix(seed: number): number {
  let k = Math.imul(seed | 0, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, 0x1b873593) | 0;
}

/** score32 from a row seed and a precomputed `memberMix`; u32. */
export function mixWith(rowSeed: number, mixedMember: number): number {
  let h = rowSeed ^ mixedMember;
  h = (h << 13) | (h >>> 19);
  h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  h ^= 4; // length of the MurmurHash3 input in bytes
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** score32(rowSeed, memberSeed) = MurmurHash3_x86_32(LE bytes of memberSeed, seed = rowSeed). */
export function mixScore(rowSeed: number, memberSeedValue: number): number {
  return mixWith(rowSeed, memberMix(memberSeedValue));
}

/** Tie order of ids: negative when `a` wins a score tie against `b`. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Rank of each id in sorted id order (0 = sorts first = wins ties), for O(1) tie breaks.
 * Ids must be distinct.
 */
export function idOrder(ids: readonly string[]): Int32Array {
  const idx = ids.map((_, i) => i);
  idx.sort((x, y) => compareIds(ids[x]!, ids[y]!));
  const order = new Int32Array(ids.length);
  for (let i = 0; i < idx.length; i++) order[idx[i]!] = i;
  return order;
}
