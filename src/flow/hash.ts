/**
 * Table-local hash of a 40-byte flow key (docs/contracts.md, "Flow key"), read as ten u32 words
 * in host order. This is NOT the cluster hash (HalfSipHash in src/cluster/): it only has to
 * spread keys over one process's slots, so it is MurmurHash3_x86_32's block loop and
 * finaliser over exactly 10 words (Austin Appleby, public domain), seeded per table with a
 * random 32-bit value so that an attacker who can pick 5-tuples cannot precompute collisions
 * across restarts.
 *
 * Contract: pure, no allocation; reads words[off .. off+9]; returns a u32 (0 .. 2^32-1).
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function round(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** MurmurHash3-x86-32 of the 10 words at `words[off..off+9]` with `seed`; u32 result. */
export function hashKeyWords(words: Uint32Array, off: number, seed: number): number {
  let h = seed | 0;
  h = round(h, words[off]!);
  h = round(h, words[off + 1]!);
  h = round(h, words[off + 2]!);
  h = round(h, words[off + 3]!);
  h = round(h, words[off + 4]!);
  h = round(h, words[off + 5]!);
  h = round(h, words[off + 6]!);
  h = round(h, words[off + 7]!);
  h = round(h, words[off + 8]!);
  h = round(h, words[off + 9]!);
  h ^= 40; // length in bytes
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
