import test from 'ava';
import fc from 'fast-check';
import { createHmac } from 'node:crypto';
import { FLOW_KEY_BYTES, halfSipHash24, halfSipHash24U32, hashFlowKey } from '../../src/decision/halfsiphash';
import { deriveHashKey, HASH_KEY_LABEL, hashKeyFromBytes, hashKeysEqual, hashKeyToBytes } from '../../src/decision/hash-key';
import { mixScore } from '../../src/decision/rendezvous';
import { isTunlbError } from '../../src/errors';

/**
 * Reference vectors of HalfSipHash-2-4 with 32-bit output: `vectors_hsip32` of
 * github.com/veorq/SipHash (vectors.h). Key = bytes 00..07, message i = bytes 00..(i-1).
 * Each entry is the 4 output bytes in the reference's order (the u32 written little-endian).
 */
const VECTORS_HSIP32 = [
  'a9359f5b', '27475ab8', 'fa62a603', '8afee704', '2a6e4689', 'c5fab669', '5863fc23', '8bcf63c5',
  'd0b8848f', 'f806e779', '94b07934', '08083050', '57f0872f', '77e663ff', 'd6fff87c', '74fe2b97',
  'd9b5ac84', 'c474645b', '465b8d9b', '7befe387', 'e34d1045', '613f62b3', '70f367fe', 'e6adb8bd',
  '27400c63', '26787875', '4f567b5f', '3ab0e669', 'b0644000', 'ff670fb4', '509e338b', '5d589f1a',
  'fee72112', '33753259', '6a434f8c', 'fe28b729', 'e75cc6ec', '697e8d54', '63688b0f', '650b62b4',
  'b6bc1840', '5d074505', '2442fd2e', '7bb7863a', '7705d548', 'd75208b1', 'b6d499c8', '0892202e',
  '69e12ce3', '8db580e5', '369764c6', '016e0204', '3b85f3d4', 'fedb66be', '1e692a3a', 'c68984c0',
  'a5c5b940', '9be9e88c', '7dbc8140', '7c078ec5', 'd4e76c73', '428fcbb9', 'bd83997a', '59ea4a74',
];

const REF_KEY = hashKeyFromBytes(Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
const REF_MSG = Uint8Array.from({ length: 64 }, (_, i) => i);

function leHex(x: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(x >>> 0);
  return b.toString('hex');
}

test('reference key words are little-endian', (t) => {
  t.is(REF_KEY[0], 0x03020100);
  t.is(REF_KEY[1], 0x07060504);
  t.deepEqual([...hashKeyToBytes(REF_KEY)], [0, 1, 2, 3, 4, 5, 6, 7]);
});

test('HalfSipHash-2-4 matches the 64 reference vectors (lengths 0..63)', (t) => {
  t.is(VECTORS_HSIP32.length, 64);
  for (let len = 0; len < 64; len++) {
    t.is(leHex(halfSipHash24(REF_KEY, REF_MSG, 0, len)), VECTORS_HSIP32[len], `length ${len}`);
  }
});

test('HalfSipHash-2-4 honours off/len (message inside a larger buffer)', (t) => {
  const buf = new Uint8Array(64 + 7).fill(0xee);
  buf.set(REF_MSG, 5);
  for (let len = 0; len < 64; len++) {
    t.is(leHex(halfSipHash24(REF_KEY, buf, 5, len)), VECTORS_HSIP32[len], `length ${len} at offset 5`);
  }
});

test('result is an unsigned 32-bit integer', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), fc.integer({ min: 0 }), fc.integer({ min: 0 }), (data, a, b) => {
      const h = halfSipHash24(Uint32Array.of(a, b), data, 0, data.length);
      return Number.isInteger(h) && h >= 0 && h <= 0xffffffff;
    }),
  );
  t.pass();
});

test('hashFlowKey equals the generic function on the same 40 bytes', (t) => {
  t.is(hashFlowKey(REF_KEY, REF_MSG), halfSipHash24(REF_KEY, REF_MSG, 0, FLOW_KEY_BYTES));
  t.is(leHex(hashFlowKey(REF_KEY, REF_MSG)), VECTORS_HSIP32[40]);
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 40, maxLength: 40 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 12 }),
      (key40, k0, k1, off) => {
        const hk = Uint32Array.of(k0, k1);
        const buf = new Uint8Array(off + 40);
        buf.set(key40, off);
        return hashFlowKey(hk, key40) === halfSipHash24(hk, key40, 0, 40) && hashFlowKey(hk, buf, off) === halfSipHash24(hk, key40, 0, 40);
      },
    ),
    { numRuns: 2000 },
  );
  t.pass();
});

test('halfSipHash24U32 equals the generic function over the 4 LE bytes', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), (x, k0, k1) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(x);
      const hk = Uint32Array.of(k0, k1);
      return halfSipHash24U32(hk, x) === halfSipHash24(hk, b, 0, 4);
    }),
    { numRuns: 2000 },
  );
  t.is(leHex(halfSipHash24U32(REF_KEY, 0x03020100)), VECTORS_HSIP32[4]);
});

test('deriveHashKey = first 8 bytes of HMAC-SHA256(clusterKey, "tunlb rendezvous v1"), LE words', (t) => {
  t.is(HASH_KEY_LABEL, 'tunlb rendezvous v1');
  const clusterKey = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const mac = createHmac('sha256', clusterKey).update('tunlb rendezvous v1').digest();
  const k = deriveHashKey(clusterKey);
  t.true(k instanceof Uint32Array);
  t.is(k.length, 2);
  t.is(k[0], mac.readUInt32LE(0));
  t.is(k[1], mac.readUInt32LE(4));
  t.deepEqual(Buffer.from(hashKeyToBytes(k)), mac.subarray(0, 8));
  // a string key is its UTF-8 bytes
  t.true(hashKeysEqual(deriveHashKey('s3cret'), deriveHashKey(Buffer.from('s3cret', 'utf8'))));
  t.false(hashKeysEqual(deriveHashKey('s3cret'), deriveHashKey('s3cret2')));
});

test('deriveHashKey rejects an empty cluster key', (t) => {
  const e = t.throws(() => deriveHashKey(''));
  t.true(isTunlbError(e, 'TUNLB_CONFIG_KEY_MISSING'));
  t.throws(() => deriveHashKey(new Uint8Array(0)));
  t.throws(() => hashKeyFromBytes(new Uint8Array(7)));
});

test('score mix is MurmurHash3_x86_32 of the 4 LE bytes of the member seed', (t) => {
  // Published MurmurHash3_x86_32 vectors: bytes 21 43 65 87 with seed 0 and 0x5082EDEE.
  t.is(mixScore(0, 0x87654321), 0xf55b516b);
  t.is(mixScore(0x5082edee, 0x87654321), 0x2362f9de);
  // bytes 00 00 00 00 and ff ff ff ff with seed 0
  t.is(mixScore(0, 0), 0x2362f9de);
  t.is(mixScore(0, 0xffffffff), 0x76293b50);
});
