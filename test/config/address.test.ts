import test from 'ava';
import { inspect } from 'node:util';
import { formatIpv6, ip, parseIpAddress } from '../../src/config';

const good: [text: string, canonical: string, family: 4 | 6, hex: string][] = [
  ['10.99.0.10', '10.99.0.10', 4, '00000000000000000000ffff0a63000a'],
  ['0.0.0.0', '0.0.0.0', 4, '00000000000000000000ffff00000000'],
  ['255.255.255.255', '255.255.255.255', 4, '00000000000000000000ffffffffffff'],
  ['fd99::10', 'fd99::10', 6, 'fd990000000000000000000000000010'],
  ['FD99:0:0:0:0:0:0:10', 'fd99::10', 6, 'fd990000000000000000000000000010'],
  ['fd99:3::21', 'fd99:3::21', 6, 'fd990003000000000000000000000021'],
  ['::', '::', 6, '00000000000000000000000000000000'],
  ['::1', '::1', 6, '00000000000000000000000000000001'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1', 6, '20010db8000000000001000000000001'],
  ['2001:0db8:0000:0001:0001:0001:0001:0001', '2001:db8:0:1:1:1:1:1', 6, '20010db8000000010001000100010001'],
  ['64:ff9b::192.0.2.33', '64:ff9b::c000:221', 6, '0064ff9b0000000000000000c0000221'],
  ['ff15::99:1', 'ff15::99:1', 6, 'ff150000000000000000000000990001'],
];
for (const [text, canonical, family, hex] of good) {
  test(`parseIpAddress(${text})`, (t) => {
    const a = parseIpAddress(text);
    if (typeof a === 'string') return t.fail(a);
    t.is(a.text, canonical);
    t.is(a.family, family);
    t.is(Buffer.from(a.bytes).toString('hex'), hex);
    t.is(JSON.stringify(a), JSON.stringify(canonical));
    t.is(formatIpv6(a.bytes).length > 0, true);
  });
}

const bad: [text: string, reason: RegExp][] = [
  ['10.0.0.256', /larger than 255/],
  ['10.0.0', /dotted-quad/],
  ['010.0.0.1', /leading zero/],
  ['1::2::3', /only once/],
  ['1:2:3:4:5:6:7:8:9', /8 groups/],
  ['fe80::1%eth0', /zone/],
  ['::ffff:10.0.0.1', /write the IPv4 address 10\.0\.0\.1/],
  ['12345::', /1 to 4 hex/],
  ['example.com', /dotted-quad/],
  ['', /empty/],
];
for (const [text, reason] of bad) {
  test(`parseIpAddress refuses ${JSON.stringify(text)}`, (t) => {
    const r = parseIpAddress(text);
    t.is(typeof r, 'string');
    t.regex(r as string, reason);
  });
}

test('address predicates', (t) => {
  t.true(ip('239.99.0.1').isMulticast);
  t.true(ip('ff02::1').isMulticast);
  t.false(ip('10.0.0.1').isMulticast);
  t.true(ip('0.0.0.0').isUnspecified);
  t.true(ip('::').isUnspecified);
  t.true(ip('127.0.0.2').isLoopback);
  t.true(ip('::1').isLoopback);
  t.true(ip('fd99::10').equals(ip('fd99:0::10')));
  t.false(ip('10.0.0.1').equals(ip('10.0.0.2')));
  t.deepEqual([...ip('10.1.2.3').v4Bytes()], [10, 1, 2, 3]);
  t.is(inspect(ip('10.1.2.3')), 'IpAddress(10.1.2.3)');
});
