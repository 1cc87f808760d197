/** Table-local key hash: XXH32 over the 40 key bytes (little-endian hosts), seeded, well spread. */
import test from 'ava';
import { hashKeyWords } from '../../src/flow';

const LE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

test('equals XXH32(bytes 0..39, seed) on little-endian hosts (vectors from a byte-level reference)', (t) => {
  if (!LE) {
    t.pass('big-endian host: a different (still seeded) hash');
    return;
  }
  const b = new Uint8Array(48);
  for (let i = 0; i < 40; i++) b[i + 8] = i;
  const w = new Uint32Array(b.buffer);
  t.is(hashKeyWords(w, 2, 0), 3601256194, 'reads at a word offset');
  t.is(hashKeyWords(w, 2, 0xdeadbeef), 3099606319);
});

test('seed changes the hash; one-bit key changes spread over the low (slot) bits', (t) => {
  const w = new Uint32Array(10);
  w[9] = 0x0406;
  t.not(hashKeyWords(w, 0, 1), hashKeyWords(w, 0, 2));
  // Sequential client ports / addresses into 1024 buckets: no bucket far above the mean.
  const buckets = new Uint32Array(1024);
  const n = 1 << 18;
  for (let i = 0; i < n; i++) {
    w[3] = 0x0a000000 + (i >>> 6);
    w[8] = (i & 63) | (80 << 16);
    buckets[hashKeyWords(w, 0, 12345) & 1023]!++;
  }
  const mean = n / 1024;
  let chi2 = 0;
  for (const c of buckets) chi2 += ((c - mean) * (c - mean)) / mean;
  t.true(chi2 < 1023 + 6 * Math.sqrt(2 * 1023), `chi2 ${chi2.toFixed(0)} for 1023 dof`);
});
