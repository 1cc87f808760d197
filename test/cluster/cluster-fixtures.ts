/** Shared fixtures of the test/cluster tests (not a test file itself). */
import { hashFlowKey } from '../../src/decision/halfsiphash';

/** Small deterministic PRNG (xorshift32) so failures reproduce. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** Fisher-Yates shuffle copy with a seeded PRNG. */
export function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = xs.slice();
  const rnd = prng(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = rnd() % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * Write a random IPv4 TCP flow key (docs/contracts.md layout: IPv4-mapped addresses, ports
 * big-endian, protocol 6, version 4) into `key` (40 bytes).
 */
export function randomFlowKey(rnd: () => number, key: Uint8Array): void {
  key.fill(0);
  key[10] = 0xff;
  key[11] = 0xff;
  const src = rnd();
  key[12] = src >>> 24;
  key[13] = (src >>> 16) & 0xff;
  key[14] = (src >>> 8) & 0xff;
  key[15] = src & 0xff;
  key[26] = 0xff;
  key[27] = 0xff;
  key[28] = 10;
  key[29] = 99;
  key[30] = 0;
  key[31] = 10;
  const sport = 1024 + (rnd() % 64000);
  key[32] = sport >>> 8;
  key[33] = sport & 0xff;
  key[34] = 0;
  key[35] = 80;
  key[36] = 6;
  key[37] = 4;
}

/** `count` cluster flow hashes of random flow keys. */
export function randomFlowHashes(hashKey: Uint32Array, count: number, seed: number): Uint32Array {
  const rnd = prng(seed);
  const key = new Uint8Array(40);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    randomFlowKey(rnd, key);
    out[i] = hashFlowKey(hashKey, key);
  }
  return out;
}
