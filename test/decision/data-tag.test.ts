/**
 * The data-port tag (src/decision/data-tag.ts) and its key (src/decision/hash-key.ts): the
 * 64-bit HalfSipHash against the reference vectors, the specialised tag against the generic
 * hash over the documented 52 bytes, and what a tag binds (every header byte, every flow-key
 * byte, sender, receiver, key).
 */
import test from 'ava';
import fc from 'fast-check';
import { createHmac } from 'node:crypto';
import { halfSipHash24x64 } from '../../src/decision/halfsiphash';
import { DATA_TAG_KEY_LABEL, deriveDataTagKey, deriveHashKey, hashKeyFromBytes, hashKeysEqual } from '../../src/decision/hash-key';
import { dataTag, dataTagMatches, writeDataTag, DATA_TAG_MESSAGE_LEN } from '../../src/decision/data-tag';
import { ENCAP_F_NEW_FLOW, ENCAP_HEADER_LEN, ENCAP_TAG_OFF, writeEncapHeader } from '../../src/packet/encap';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import * as P from '../helpers/packets';

/**
 * `vectors_hsip64` of github.com/veorq/SipHash (vectors.h): HalfSipHash-2-4 with 64-bit output,
 * key = bytes 00..07, message i = bytes 00..(i-1); the 8 output bytes in the reference's order.
 */
const VECTORS_HSIP64 = [
  '218d1f59b9b83cc8', 'be552412f8387315', '064f39ef7c50eb57', 'ce0f1a45f7060679', 'd5e78a175be52ea1', 'cb9d7c3f2f3db580', 'ce3e91358aa2bc25', 'ff202728b07bc684',
  'edfee820bce4858c', '5b51cccc13888307', '95b0469f06a6f2ee', 'ae26333994ddcd48', '7bc71f9faef5c799', '5a2352d75a0c3744', '3bb1a870eae8e658', '217d0bcb4e81c902',
  '7336aad25f7bf3b5', '37adc0641c4c4f6a', 'c9b2db2b9a3e42f9', 'f910e48020ab363c', '1bf52b0a6feea7db', '00741dc269e8b3ef', 'e20103fa1ba776ef', '4c2210e54b681d73',
  '70741045ae3fa6f1', '0c86403739714038', '0d899ed8112923f0', '226bf5fab81ee1b8', '2d925ffb1e0016b5', '361958d52cee10f1', '291aaf864898179d', '863c7f155c34117c',
  '28709d46d811626c', '248477681d28f89c', '8324e4d7528f9830', 'f9efd4e13aea6bd8', '86d67a40ec4276dc', '3f6292eccca97e35', 'cbd92ee724d42109', '368df6808d403d79',
  '5b38c81c67c8ae4c', '95ab7189d439acb3', 'a91a52c025327024', '5b0087c69528acea', '1e30f3ad27dcb15a', '697f5c9a90324ed4', '495c0f995557dc38', '9427202a3c29f94d',
  'a9eaa8c04ba93e3e', 'eea4c1737d011218', '912d568fd8f65a49', '56919596b0ff5c97', '02445a7998f550e1', '86ec466ce71d1fb2', '359569e7d289e3bc', '871b05ca62bb7c96',
  'a1a492f942f15f1d', '12ec267ff6095b6e', '5d1b5ea1b231d89d', 'd8cfb4453f92ee54', 'd6762890bf26e460', '313563a4b7ed5cf3', 'f90b3ab572d46693', '2ea63c71bf326087',
];

const REF_KEY = hashKeyFromBytes(Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
const REF_MSG = Uint8Array.from({ length: 64 }, (_, i) => i);

function tagHex(out: Uint32Array): string {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(out[0]!, 0);
  b.writeUInt32LE(out[1]!, 4);
  return b.toString('hex');
}

test('HalfSipHash-2-4, 64-bit output, matches the 64 reference vectors (lengths 0..63), also inside a larger buffer', (t) => {
  const out = new Uint32Array(2);
  const buf = new Uint8Array(64 + 9).fill(0xee);
  buf.set(REF_MSG, 9);
  for (let len = 0; len < 64; len++) {
    halfSipHash24x64(REF_KEY, REF_MSG, 0, len, out);
    t.is(tagHex(out), VECTORS_HSIP64[len], `length ${len}`);
    halfSipHash24x64(REF_KEY, buf, 9, len, out);
    t.is(tagHex(out), VECTORS_HSIP64[len], `length ${len} at offset 9`);
  }
});

/** The 52 bytes the tag covers, assembled as docs/contracts.md "Data-port tag" says. */
function message(hdr: Uint8Array, hdrOff: number, key40: Uint8Array, sender: number, receiver: number): Uint8Array {
  const m = new Uint8Array(DATA_TAG_MESSAGE_LEN);
  m.set(hdr.subarray(hdrOff, hdrOff + 12), 0);
  m.set(key40.subarray(0, 40), 12);
  m[12 + 38] = sender;
  m[12 + 39] = receiver;
  return m;
}

test('dataTag equals the generic 64-bit hash over the 52 documented bytes (header 0..11, flow key with sender and receiver in bytes 38, 39)', (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 12, maxLength: 12 }),
      fc.uint8Array({ minLength: 40, maxLength: 40 }),
      fc.integer({ min: 0, max: 31 }),
      fc.integer({ min: 0, max: 31 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 9 }),
      (hdr12, key40, from, to, k0, k1, off) => {
        key40[38] = 0;
        key40[39] = 0;
        const key = Uint32Array.of(k0, k1);
        const hbuf = new Uint8Array(off + 20);
        hbuf.set(hdr12, off);
        const a = new Uint32Array(2);
        const b = new Uint32Array(2);
        dataTag(key, hbuf, off, key40, from, to, a);
        halfSipHash24x64(key, message(hbuf, off, key40, from, to), 0, DATA_TAG_MESSAGE_LEN, b);
        return a[0] === b[0] && a[1] === b[1];
      },
    ),
    { numRuns: 3000 },
  );
  t.pass();
});

test('data-tag key = first 8 bytes of HMAC-SHA256(clusterKey, "tunlb data-port tag v1"), and it is not the hash key', (t) => {
  const clusterKey = Buffer.alloc(32, 0x42);
  t.is(DATA_TAG_KEY_LABEL, 'tunlb data-port tag v1');
  const mac = createHmac('sha256', clusterKey).update('tunlb data-port tag v1').digest();
  t.true(hashKeysEqual(deriveDataTagKey(clusterKey), hashKeyFromBytes(mac.subarray(0, 8))));
  t.false(hashKeysEqual(deriveDataTagKey(clusterKey), deriveHashKey(clusterKey)), 'domain separation');
  t.false(hashKeysEqual(deriveDataTagKey(clusterKey), deriveDataTagKey(Buffer.alloc(32, 0x43))));
  t.throws(() => deriveDataTagKey(''));
});

/** A header + inner packet as a peer sends it, tagged lb `from` → `to`. */
function datagram(inner: Uint8Array, from: number, to: number, key: Uint32Array) {
  const dg = new Uint8Array(ENCAP_HEADER_LEN + inner.length);
  writeEncapHeader(dg, 0, ENCAP_F_NEW_FLOW, 1, 2, 0, 0, 7);
  dg.set(inner, ENCAP_HEADER_LEN);
  const info = new PacketInfo();
  parsePacket(dg, ENCAP_HEADER_LEN, inner.length, info);
  writeDataTag(dg, 0, key, info.key, from, to);
  return { dg, info };
}

test('a tag verifies for exactly its header, flow key, sender, receiver and key: any one byte or index changed fails', (t) => {
  const key = deriveDataTagKey(Buffer.alloc(32, 0x42));
  const { dg, info } = datagram(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_SYN), 0, 1, key);
  t.true(dataTagMatches(dg, 0, key, info.key, 0, 1));
  t.notDeepEqual([...dg.subarray(ENCAP_TAG_OFF, ENCAP_TAG_OFF + 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
  for (let i = 0; i < 12; i++) {
    const c = dg.slice();
    c[i]! ^= 0x01;
    t.false(dataTagMatches(c, 0, key, info.key, 0, 1), `header byte ${i}`);
  }
  for (let i = ENCAP_TAG_OFF; i < ENCAP_HEADER_LEN; i++) {
    const c = dg.slice();
    c[i]! ^= 0x80;
    t.false(dataTagMatches(c, 0, key, info.key, 0, 1), `tag byte ${i}`);
  }
  for (let i = 0; i < 38; i++) {
    const k = info.key.slice();
    k[i]! ^= 0x01;
    t.false(dataTagMatches(dg, 0, key, k, 0, 1), `flow key byte ${i}`);
  }
  t.false(dataTagMatches(dg, 0, key, info.key, 2, 1), 'another sender');
  t.false(dataTagMatches(dg, 0, key, info.key, 0, 2), 'another receiver');
  t.false(dataTagMatches(dg, 0, key, info.key, 1, 0), 'the reverse direction');
  t.false(dataTagMatches(dg, 0, deriveDataTagKey(Buffer.alloc(32, 0x43)), info.key, 0, 1), 'another cluster key');
  t.false(dataTagMatches(dg, 0, deriveHashKey(Buffer.alloc(32, 0x42)), info.key, 0, 1), 'the hash key');
  // The payload is not covered (a chunk of a split super-packet shares the tag).
  const c = dg.slice();
  c[c.length - 1]! ^= 0xff;
  t.true(dataTagMatches(c, 0, key, info.key, 0, 1), 'payload bytes are not covered');
});
