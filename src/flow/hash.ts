/**
 * Table-local hash of a 40-byte flow key (docs/contracts.md, "Flow key"), read as ten u32 words
 * in host order. This is NOT the cluster hash (HalfSipHash in src/cluster/): it only has to
 * spread keys over one process's slots. It is XXH32 (Yann Collet, BSD-2) specialised to a
 * 40-byte input: two 16-byte stripes over four independent lanes (short dependency chains, so
 * the CPU overlaps them), the 8-byte tail, then XXH32's avalanche. Each table draws a random
 * 32-bit seed so that 5-tuples chosen to collide on one balancer do not collide across restarts
 * or on another balancer. (On a little-endian host the words are the bytes in XXH32's order, so
 * the value equals XXH32(key40, seed); on big-endian it is still a good hash, just different.)
 *
 * Contract: pure, no allocation; reads words[off .. off+9]; returns a u32 (0 .. 2^32-1).
 */

const P1 = 0x9e3779b1 | 0;
const P2 = 0x85ebca77 | 0;
const P3 = 0xc2b2ae3d | 0;
const P4 = 0x27d4eb2f | 0;

function lane(v: number, w: number): number {
  v = (v + Math.imul(w, P2)) | 0;
  v = (v << 13) | (v >>> 19);
  return Math.imul(v, P1);
}

function tail4(h: number, w: number): number {
  h = (h + Math.imul(w, P3)) | 0;
  h = (h << 17) | (h >>> 15);
  return Math.imul(h, P4);
}

/** XXH32 of the 10 words at `words[off..off+9]` with `seed`; u32 result. */
export function hashKeyWords(words: Uint32Array, off: number, seed: number): number {
  let v1 = (seed + P1 + P2) | 0;
  let v2 = (seed + P2) | 0;
  let v3 = seed | 0;
  let v4 = (seed - P1) | 0;
  v1 = lane(v1, words[off]!);
  v2 = lane(v2, words[off + 1]!);
  v3 = lane(v3, words[off + 2]!);
  v4 = lane(v4, words[off + 3]!);
  v1 = lane(v1, words[off + 4]!);
  v2 = lane(v2, words[off + 5]!);
  v3 = lane(v3, words[off + 6]!);
  v4 = lane(v4, words[off + 7]!);
  let h = (((v1 << 1) | (v1 >>> 31)) + ((v2 << 7) | (v2 >>> 25)) + ((v3 << 12) | (v3 >>> 20)) + ((v4 << 18) | (v4 >>> 14))) | 0;
  h = (h + 40) | 0; // input length in bytes
  h = tail4(h, words[off + 8]!);
  h = tail4(h, words[off + 9]!);
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}
