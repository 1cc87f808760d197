import test from 'ava';
import { parsePacket } from '../../src/packet/parse';
import { PacketInfo } from '../../src/packet/packet-info';
import { keyToString } from '../../src/packet/flow-key';
import { PacketResult as R, packetResultNames } from '../../src/packet/result';
import { parseFixtures, truncationFixtures, type ParseFixture } from '../helpers/fixtures';

const info = new PacketInfo();

/** Runs one fixture with the packet at `shift` bytes into a larger buffer. */
function check(t: import('ava').ExecutionContext, f: ParseFixture, shift: number): void {
  const len = f.len ?? f.pkt.length;
  const buf = new Uint8Array(shift + f.pkt.length + 7).fill(0xee);
  buf.set(f.pkt, shift);
  const r = parsePacket(buf, shift, len, info);
  t.is(packetResultNames[r], packetResultNames[f.expect.result], `${f.desc} (at offset ${shift})`);
  if (r !== R.OK) return;
  t.is(info.l3Off, shift);
  if (f.expect.key !== undefined) t.is(keyToString(info.key), f.expect.key, f.desc);
  for (const [k, v] of Object.entries(f.expect.info ?? {})) {
    const actual = (info as unknown as Record<string, number>)[k];
    const expected = /Off$/.test(k) && v >= 0 ? v + shift : v;
    t.is(actual, expected, `${f.desc}: ${k}`);
  }
}

for (const f of parseFixtures) {
  test(`parse: ${f.desc}`, (t) => {
    check(t, f, 0);
    check(t, f, 13);
  });
}

for (const f of truncationFixtures()) {
  test(`parse truncated: ${f.desc}`, (t) => {
    check(t, f, 0);
    check(t, f, 5);
  });
}

test('every parse drop reason is covered by a fixture', (t) => {
  const seen = new Set([...parseFixtures, ...truncationFixtures()].map((f) => f.expect.result));
  const parseReasons = [
    R.OK, R.TRUNCATED, R.BAD_VERSION, R.BAD_IHL, R.BAD_TOTAL_LENGTH, R.IPV6_EXT_CHAIN_TOO_LONG, R.IPV6_BAD_EXT,
    R.UNSUPPORTED_PROTOCOL, R.L4_TRUNCATED, R.BAD_TCP_OFFSET, R.BAD_UDP_LENGTH, R.ICMP_UNSUPPORTED_TYPE, R.ICMP_INNER_MALFORMED,
  ];
  for (const r of parseReasons) t.true(seen.has(r), packetResultNames[r]);
});

test('parse: a reused PacketInfo carries nothing over from an ICMP error to the next packet', (t) => {
  const err = parseFixtures.find((f) => f.desc.startsWith('ICMPv4 frag-needed'))!;
  const syn = parseFixtures[0]!;
  t.is(parsePacket(err.pkt, 0, err.pkt.length, info), R.OK);
  t.is(info.isIcmpError, 1);
  t.is(parsePacket(syn.pkt, 0, syn.pkt.length, info), R.OK);
  t.is(info.isIcmpError, 0);
  t.is(info.innerL3Off, -1);
  t.is(info.innerCsumOff, -1);
  t.is(info.icmpType, 0);
});

test('parse: len beyond the buffer or a negative offset is TRUNCATED, not a throw', (t) => {
  const p = parseFixtures[0]!.pkt;
  t.is(parsePacket(p, 0, p.length + 1, info), R.TRUNCATED);
  t.is(parsePacket(p, -1, 10, info), R.TRUNCATED);
  t.is(parsePacket(p, p.length, 0, info), R.TRUNCATED);
});
