import test from 'ava';
import { keyFromParts, keyToString, newKey, reverseKey, keyEquals, copyKey, writeKey4, KEY_LEN } from '../../src/packet/flow-key';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import { formatIp, parseIp, parseIpInto } from '../../src/packet/addr';
import * as P from '../helpers/packets';

test('flow key: IPv4 layout is ::ffff:a.b.c.d, ports BE, proto, version, zero tail (docs/contracts.md)', (t) => {
  const k = keyFromParts('10.99.1.2', '10.99.0.10', 0x1234, 80, 6);
  const exp = new Uint8Array(40);
  exp.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, 1, 2], 0);
  exp.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, 0, 10], 16);
  exp.set([0x12, 0x34, 0, 80, 6, 4, 0, 0], 32);
  t.deepEqual([...k], [...exp]);
});

test('flow key: IPv6 layout', (t) => {
  const k = keyFromParts('fd99:1::2', 'fd99::10', 1, 2, 17);
  t.deepEqual([...k.subarray(0, 16)], [...P.ip('fd99:1::2')]);
  t.deepEqual([...k.subarray(16, 32)], [...P.ip('fd99::10')]);
  t.deepEqual([...k.subarray(32)], [0, 1, 0, 2, 17, 6, 0, 0]);
});

test('flow key: parser key equals keyFromParts; keyWords views the same aligned memory', (t) => {
  const info = new PacketInfo();
  const p = P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80);
  parsePacket(p, 0, p.length, info);
  t.true(keyEquals(info.key, keyFromParts('10.99.1.2', '10.99.0.10', 40000, 80, 6)));
  t.is(info.key.length, KEY_LEN);
  t.is(info.key.byteOffset % 4, 0);
  t.is(info.keyWords.buffer, info.key.buffer);
  t.is(info.keyWords.length, 10);
  info.key[0] = 0xaa;
  t.not(info.keyWords[0], 0);
});

test('flow key: reverseKey swaps addresses and ports, in place too', (t) => {
  const k = keyFromParts('fd99:1::2', 'fd99::10', 40000, 80, 6);
  const r = newKey();
  reverseKey(k, r);
  t.is(keyToString(r), 'tcp [fd99::10]:80 -> [fd99:1::2]:40000');
  const c = newKey();
  copyKey(k, c);
  reverseKey(c, c);
  t.true(keyEquals(c, r));
  reverseKey(r, r);
  t.true(keyEquals(r, k));
});

test('flow key: keyToString', (t) => {
  t.is(keyToString(keyFromParts('10.0.0.1', '10.0.0.2', 1, 2, 1)), 'icmp 10.0.0.1:1 -> 10.0.0.2:2');
  t.is(keyToString(keyFromParts('::1', 'fd00::', 0, 0, 58)), 'icmpv6 [::1]:0 -> [fd00::]:0');
  t.is(keyToString(keyFromParts('10.0.0.1', '10.0.0.2', 1, 2, 132)), 'proto132 10.0.0.1:1 -> 10.0.0.2:2');
});

test('flow key: keyFromParts rejects mixed families and bad text', (t) => {
  t.throws(() => keyFromParts('10.0.0.1', 'fd00::1', 1, 2, 6));
  t.throws(() => keyFromParts('10.0.0.256', '10.0.0.1', 1, 2, 6));
});

test('flow key: writeKey4 from a buffer at odd offsets', (t) => {
  const buf = new Uint8Array(11);
  buf.set([1, 2, 3, 4], 1);
  buf.set([5, 6, 7, 8], 7);
  const k = newKey();
  k.fill(0x77);
  writeKey4(k, buf, 1, 7, 9, 10, 17);
  t.is(keyToString(k), 'udp 1.2.3.4:9 -> 5.6.7.8:10');
  t.is(k[38], 0);
});

const addrTable: Array<[string, string | null]> = [
  ['10.0.0.1', '10.0.0.1'],
  ['255.255.255.255', '255.255.255.255'],
  ['fd00::1', 'fd00::1'],
  ['FD00:0:0:0:0:0:0:1', 'fd00::1'],
  ['::', '::'],
  ['::1', '::1'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ['2001:db8::', '2001:db8::'],
  ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ['1:0:3:4:5:6:7:8', '1:0:3:4:5:6:7:8'],
  ['::ffff:10.0.0.1', '::ffff:10.0.0.1'],
  ['256.0.0.1', null],
  ['01.0.0.1', null],
  ['1.2.3', null],
  ['1::2::3', null],
  ['1:2:3:4:5:6:7:8:9', null],
  ['12345::', null],
  ['', null],
];
for (const [text, out] of addrTable) {
  test(`addr: ${JSON.stringify(text)}`, (t) => {
    const b = new Uint8Array(16);
    const n = parseIpInto(text, b, 0);
    if (out === null) {
      t.is(n, 0);
      t.throws(() => parseIp(text));
    } else {
      t.is(formatIp(b, 0, n), out);
    }
  });
}
