import test from 'ava';
import {
  csumAdd,
  csumAddrDelta,
  csumApplyDelta,
  csumFold,
  csumPartial,
  csumReplaceAddr,
  csumUpdate16,
  csumUpdate32,
  internetChecksum,
  ipv4HeaderChecksum,
  l4Checksum,
  pseudoSum4,
  pseudoSum6,
  CSUM_FULL,
  CSUM_PARTIAL,
} from '../../src/packet/checksum';
import * as P from '../helpers/packets';

const u8 = (...b: number[]): Uint8Array => new Uint8Array(b);

const table: Array<{ desc: string; run: () => number; expected: number }> = [
  // RFC 1071 §3 numerical example: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
  { desc: 'RFC 1071 §3 example sum', run: () => csumPartial(u8(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7), 0, 8, 0), expected: 0xddf2 },
  { desc: 'RFC 1071 §3 example checksum', run: () => internetChecksum(u8(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7), 0, 8), expected: 0x220d },
  { desc: 'odd length pads a zero byte on the right', run: () => csumPartial(u8(0x12, 0x34, 0x56), 0, 3, 0), expected: 0x6834 },
  { desc: 'odd start offset', run: () => csumPartial(u8(0xff, 0x12, 0x34), 1, 2, 0), expected: 0x1234 },
  // RFC 1624 §4: m = 0x5555 -> 0x3285, HC = 0xdd2f; eqn. 3 gives 0x0000 (eqn. 2 would give 0xffff).
  { desc: 'RFC 1624 §4 example (eqn. 3)', run: () => csumUpdate16(0xdd2f, 0x5555, 0x3285), expected: 0x0000 },
  { desc: 'csumUpdate32 = two csumUpdate16', run: () => csumUpdate32(0x1234, 0x0a000001, 0xc0a80101), expected: csumUpdate16(csumUpdate16(0x1234, 0x0a00, 0xc0a8), 0x0001, 0x0101) },
  { desc: 'csumAdd end-around carry', run: () => csumAdd(0xffff, 0x0002), expected: 0x0002 },
  { desc: 'csumFold of a large accumulator', run: () => csumFold(0x1_0000_0000 + 0x1_0001), expected: csumFold(0x1 + 0x1_0001) },
];
for (const c of table) test(`checksum: ${c.desc}`, (t) => t.is(c.run(), c.expected));

test('checksum: IPv4 header checksum of a built packet equals its field', (t) => {
  const p = P.tcp4('10.99.1.2', '10.99.0.10', 1, 2, P.TCP_SYN, new Uint8Array(0), { options: new Uint8Array(4).fill(1) });
  t.is(ipv4HeaderChecksum(p, 0, 24), (p[10]! << 8) | p[11]!);
});

test('checksum: l4Checksum matches the builders for TCP/UDP/ICMP v4/v6', (t) => {
  const cases: Array<[Uint8Array, number, number, boolean]> = [
    [P.tcp4('10.0.0.1', '10.0.0.2', 1, 2, 2, new Uint8Array(5).fill(9)), 20, 36, true],
    [P.udp4('10.0.0.1', '10.0.0.2', 1, 2, new Uint8Array(5).fill(9)), 20, 26, true],
    [P.icmp4Echo('10.0.0.1', '10.0.0.2', 8, 1, 2), 20, 22, false],
    [P.tcp6('fd00::1', 'fd00::2', 1, 2), 40, 56, true],
    [P.icmp6Echo('fd00::1', 'fd00::2', 128, 1, 2, new Uint8Array(3)), 40, 42, true],
  ];
  for (const [p, l4, co, pseudo] of cases) {
    const v6 = p[0]! >> 4 === 6;
    const proto = v6 ? p[6]! : p[9]!;
    const c = l4Checksum(p, v6 ? 8 : 12, v6 ? 24 : 16, v6 ? 16 : 4, proto, l4, p.length - l4, co, pseudo);
    t.is(c, (p[co]! << 8) | p[co + 1]!);
  }
});

test('checksum: pseudo-header sums (RFC 768 / RFC 8200 §8.1)', (t) => {
  const a = P.ip('10.0.0.1');
  const b = P.ip('10.0.0.2');
  const buf = new Uint8Array([...a, ...b]);
  t.is(pseudoSum4(buf, 0, 4, 6, 20), csumFold(0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 20));
  const a6 = P.ip('fd00::1');
  const b6 = P.ip('fd00::2');
  const buf6 = new Uint8Array([...a6, ...b6]);
  t.is(pseudoSum6(buf6, 0, 16, 58, 0x10008), csumFold(0xfd00 + 1 + 0xfd00 + 2 + 58 + 1 + 8));
});

test('checksum: csumReplaceAddr (FULL) equals recomputation; (PARTIAL) equals the new pseudo sum', (t) => {
  const p = P.udp4('10.0.0.1', '10.99.0.10', 1000, 53, new Uint8Array(11).fill(3));
  const q = p.slice();
  const nb = P.ip('10.99.3.21');
  csumReplaceAddr(q, 26, 16, nb, 0, 4, CSUM_FULL);
  csumReplaceAddr(q, 10, 16, nb, 0, 4, CSUM_FULL);
  q.set(nb, 16);
  t.true(P.validChecksums(q));
  const part = P.toPartial(P.tcp6('fd00::1', 'fd99::10', 1, 2));
  const nb6 = P.ip('fd99:3::21');
  csumReplaceAddr(part, 56, 24, nb6, 0, 16, CSUM_PARTIAL);
  part.set(nb6, 24);
  t.is(P.hex(part), P.hex(P.toPartial(P.tcp6('fd00::1', 'fd99:3::21', 1, 2))));
});

test('checksum: a no-op address delta keeps a checksum valid', (t) => {
  const p = P.tcp4('10.0.0.1', '10.0.0.2', 1, 2);
  const d = csumAddrDelta(p, 12, p, 12, 4);
  const c = csumApplyDelta((p[36]! << 8) | p[37]!, d);
  const q = p.slice();
  q[36] = c >> 8;
  q[37] = c & 0xff;
  t.true(P.validChecksums(q));
});
