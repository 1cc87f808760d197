import test from 'ava';
import { PacketResult, PACKET_RESULT_COUNT, packetResultNames, packetResultName } from '../../src/packet/result';

test('result codes: dense 0..COUNT-1, OK is 0, one stable snake_case name each', (t) => {
  const entries = Object.entries(PacketResult);
  t.is(PacketResult.OK, 0);
  t.is(entries.length, PACKET_RESULT_COUNT);
  t.is(packetResultNames.length, PACKET_RESULT_COUNT);
  t.deepEqual(new Set(entries.map(([, v]) => v)).size, PACKET_RESULT_COUNT);
  for (const [k, v] of entries) {
    t.true(v >= 0 && v < PACKET_RESULT_COUNT);
    t.is(packetResultNames[v], k.toLowerCase(), `name of ${k}`);
    t.regex(packetResultNames[v]!, /^[a-z][a-z0-9_]*$/);
  }
  t.is(packetResultName(-1), 'unknown');
  t.is(packetResultName(PACKET_RESULT_COUNT), 'unknown');
});

test('result codes: values are stable (changing one breaks dashboards)', (t) => {
  t.like(PacketResult, {
    OK: 0, TRUNCATED: 1, BAD_VERSION: 2, BAD_IHL: 3, BAD_TOTAL_LENGTH: 4, IPV6_EXT_CHAIN_TOO_LONG: 5, IPV6_BAD_EXT: 6,
    UNSUPPORTED_PROTOCOL: 7, L4_TRUNCATED: 8, BAD_TCP_OFFSET: 9, ICMP_UNSUPPORTED_TYPE: 10, ICMP_INNER_MALFORMED: 11,
    ENCAP_BAD_VERSION: 12, ENCAP_TRUNCATED: 13, BAD_UDP_LENGTH: 14, ENCAP_BAD_TYPE: 15, ENCAP_BAD_FLAGS: 16,
    NAT_BAD_ARGUMENT: 17, NAT_UNSUPPORTED: 18,
  });
});
