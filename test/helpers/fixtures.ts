/**
 * Table-driven fixtures for the packet core (Katran style): each entry has a description, an
 * input packet and the expected output. Shared by test/packet/*.test.ts; later layers may reuse
 * the addresses and packets (lab addressing from docs/contracts.md).
 */
import { PacketResult as R } from '../../src/packet/result';
import { CSUM_FULL, CSUM_PARTIAL } from '../../src/packet/checksum';
import * as P from './packets';

// Lab addresses (docs/contracts.md).
export const CLIENT = '10.99.1.2';
export const ROUTER = '10.99.1.1';
export const VIP = '10.99.0.10';
export const BACKEND = '10.99.3.21';
export const BACK_ROUTER = '10.99.3.1';
export const CLIENT6 = 'fd99:1::2';
export const ROUTER6 = 'fd99:1::1';
export const VIP6 = 'fd99::10';
export const BACKEND6 = 'fd99:3::21';
export const BACK_ROUTER6 = 'fd99:3::1';

/** A copy of `p` changed by `fn` (for malformed inputs). */
export function mut(p: Uint8Array, fn: (b: Uint8Array) => void): Uint8Array {
  const b = p.slice();
  fn(b);
  return b;
}

/**
 * `p` cut to `n` bytes with the IP length field fixed to match (IPv4 total length and header
 * checksum, IPv6 payload length), so the parser sees a consistent packet whose content ends at
 * `n`: the drop reason is then about the header that is cut, not about the IP length.
 */
export function cut(p: Uint8Array, n: number): Uint8Array {
  const b = p.slice(0, n);
  if (((b[0] as number) >> 4) === 4 && n >= 20) {
    b[2] = n >> 8;
    b[3] = n & 0xff;
    const hl = ((b[0] as number) & 15) * 4;
    if (hl <= n) {
      b[10] = 0;
      b[11] = 0;
      const c = ~P.sum16(b, 0, hl) & 0xffff;
      b[10] = c >> 8;
      b[11] = c & 0xff;
    }
  } else if (((b[0] as number) >> 4) === 6 && n >= 40) {
    b[4] = (n - 40) >> 8;
    b[5] = (n - 40) & 0xff;
  }
  return b;
}

const bytes = (n: number, fill = 0xab): Uint8Array => new Uint8Array(n).fill(fill);

export interface ParseExpect {
  result: number;
  /** keyToString of the expected key (checked only when result is OK). */
  key?: string;
  /** Expected PacketInfo fields (offsets relative to the packet start). */
  info?: Record<string, number>;
}

export interface ParseFixture {
  desc: string;
  pkt: Uint8Array;
  /** Bytes given to the parser (default: all). */
  len?: number;
  expect: ParseExpect;
}

const tcpReply4 = P.tcp4(VIP, CLIENT, 80, 40000, P.TCP_ACK, bytes(40));
const udpReply6 = P.udp6(VIP6, CLIENT6, 53, 40001, bytes(30));
const ext8 = Array.from({ length: 8 }, () => ({ type: 60 }));
const ext9 = Array.from({ length: 9 }, () => ({ type: 60 }));

export const parseFixtures: ParseFixture[] = [
  // ---- valid packets and their keys ----
  {
    desc: 'IPv4 TCP SYN: 5-tuple key, flags, offsets',
    pkt: P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_SYN),
    expect: {
      result: R.OK,
      key: `tcp ${CLIENT}:40000 -> ${VIP}:80`,
      info: { version: 4, proto: 6, l4Off: 20, l4Len: 20, l3Len: 40, sport: 40000, dport: 80, tcpFlags: 2, csumOff: 36, srcOff: 12, dstOff: 16, addrLen: 4, isFragment: 0, isIcmpError: 0 },
    },
  },
  {
    desc: 'IPv4 TCP with IP options (IHL 7) and TCP options: options skipped',
    pkt: P.tcp4(CLIENT, VIP, 40001, 443, P.TCP_SYN | P.TCP_ACK, bytes(10), { options: bytes(8, 1), tcpOptions: new Uint8Array([2, 4, 5, 0xb4]) }),
    expect: { result: R.OK, key: `tcp ${CLIENT}:40001 -> ${VIP}:443`, info: { l4Off: 28, l4Len: 34, tcpFlags: 0x12, csumOff: 44 } },
  },
  {
    desc: 'IPv4 TCP with link padding after total length: padding ignored',
    pkt: P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_ACK, bytes(0), { trailer: 6 }),
    expect: { result: R.OK, info: { l3Len: 40, l4Len: 20 } },
  },
  {
    desc: 'IPv4 UDP',
    pkt: P.udp4(CLIENT, VIP, 5353, 53, bytes(12)),
    expect: { result: R.OK, key: `udp ${CLIENT}:5353 -> ${VIP}:53`, info: { proto: 17, csumOff: 26, l4Len: 20 } },
  },
  {
    desc: 'IPv4 UDP with checksum 0 (RFC 768: none) parses',
    pkt: P.udp4(CLIENT, VIP, 5353, 53, bytes(3), { zeroChecksum: true }),
    expect: { result: R.OK, key: `udp ${CLIENT}:5353 -> ${VIP}:53` },
  },
  {
    desc: 'IPv6 TCP',
    pkt: P.tcp6(CLIENT6, VIP6, 40000, 80),
    expect: { result: R.OK, key: `tcp [${CLIENT6}]:40000 -> [${VIP6}]:80`, info: { version: 6, l4Off: 40, srcOff: 8, dstOff: 24, addrLen: 16, csumOff: 56, l3Len: 60 } },
  },
  {
    desc: 'IPv6 UDP after hop-by-hop, routing and destination options',
    pkt: P.udp6(CLIENT6, VIP6, 5353, 53, bytes(4), { ext: [{ type: 0 }, { type: 43, len: 24 }, { type: 60, len: 16 }] }),
    expect: { result: R.OK, key: `udp [${CLIENT6}]:5353 -> [${VIP6}]:53`, info: { l4Off: 88, l4Len: 12, csumOff: 94 } },
  },
  {
    desc: 'IPv6 TCP after AH (length in 4-byte units, RFC 4302)',
    pkt: P.tcp6(CLIENT6, VIP6, 40000, 80, P.TCP_ACK, bytes(0), { ext: [{ type: 51, len: 24 }] }),
    expect: { result: R.OK, key: `tcp [${CLIENT6}]:40000 -> [${VIP6}]:80`, info: { l4Off: 64 } },
  },
  {
    desc: 'IPv6 with exactly MAX (8) extension headers parses',
    pkt: P.tcp6(CLIENT6, VIP6, 40000, 80, P.TCP_ACK, bytes(0), { ext: ext8 }),
    expect: { result: R.OK, info: { l4Off: 40 + 64 } },
  },
  {
    desc: 'ICMPv4 echo request: identifier as both ports',
    pkt: P.icmp4Echo(CLIENT, VIP, P.ICMP4_ECHO_REQUEST, 77, 1, bytes(16)),
    expect: { result: R.OK, key: `icmp ${CLIENT}:77 -> ${VIP}:77`, info: { icmpType: 8, sport: 77, dport: 77, csumOff: 22 } },
  },
  {
    desc: 'ICMPv4 echo reply: identifier as both ports',
    pkt: P.icmp4Echo(BACKEND, CLIENT, P.ICMP4_ECHO_REPLY, 77, 1),
    expect: { result: R.OK, key: `icmp ${BACKEND}:77 -> ${CLIENT}:77`, info: { icmpType: 0 } },
  },
  {
    desc: 'ICMPv6 echo request: identifier as both ports',
    pkt: P.icmp6Echo(CLIENT6, VIP6, P.ICMP6_ECHO_REQUEST, 0x1234, 9),
    expect: { result: R.OK, key: `icmpv6 [${CLIENT6}]:4660 -> [${VIP6}]:4660`, info: { icmpType: 128, csumOff: 42 } },
  },
  {
    desc: 'ICMPv6 echo reply',
    pkt: P.icmp6Echo(BACKEND6, CLIENT6, P.ICMP6_ECHO_REPLY, 5, 9),
    expect: { result: R.OK, key: `icmpv6 [${BACKEND6}]:5 -> [${CLIENT6}]:5` },
  },
  {
    desc: 'ICMPv4 frag-needed (3/4) about a reply VIP->client: keyed by the embedded header reversed',
    pkt: P.icmp4Error(P.ICMP4_DEST_UNREACH, P.ICMP4_CODE_FRAG_NEEDED, ROUTER, VIP, tcpReply4, { mtu: 1400 }),
    expect: {
      result: R.OK,
      key: `tcp ${CLIENT}:40000 -> ${VIP}:80`,
      info: { isIcmpError: 1, icmpType: 3, icmpCode: 4, proto: 1, innerL3Off: 28, innerL4Off: 48, innerProto: 6, innerSrcOff: 40, innerDstOff: 44, innerSport: 80, innerDport: 40000, innerHasPorts: 1, innerL4Avail: 8, innerCsumOff: -1, sport: 0, dport: 0 },
    },
  },
  {
    desc: 'ICMPv4 error quoting the whole TCP segment: embedded TCP checksum offset known',
    pkt: P.icmp4Error(P.ICMP4_TIME_EXCEEDED, 0, ROUTER, VIP, tcpReply4, { embedLen: 1000 }),
    expect: { result: R.OK, key: `tcp ${CLIENT}:40000 -> ${VIP}:80`, info: { innerL4Avail: 60, innerCsumOff: 64 } },
  },
  {
    desc: 'ICMPv4 port unreachable from the backend about client->backend UDP: reversed key',
    pkt: P.icmp4Error(P.ICMP4_DEST_UNREACH, 3, BACKEND, CLIENT, P.udp4(CLIENT, BACKEND, 40000, 8053, bytes(4))),
    expect: { result: R.OK, key: `udp ${BACKEND}:8053 -> ${CLIENT}:40000`, info: { innerProto: 17, innerCsumOff: 54 } },
  },
  {
    desc: 'ICMPv4 parameter problem about an echo reply: identifier as ports',
    pkt: P.icmp4Error(P.ICMP4_PARAM_PROBLEM, 0, ROUTER, VIP, P.icmp4Echo(VIP, CLIENT, 0, 99, 3), { pointer: 8 }),
    expect: { result: R.OK, key: `icmp ${CLIENT}:99 -> ${VIP}:99`, info: { innerProto: 1, innerSport: 99, innerDport: 99 } },
  },
  {
    desc: 'ICMPv4 error about a non-first fragment: 3-tuple key (ports 0)',
    pkt: P.icmp4Error(P.ICMP4_TIME_EXCEEDED, 1, ROUTER, VIP, P.ipv4Fragment(VIP, CLIENT, 17, 7, 1480, false, bytes(16))),
    expect: { result: R.OK, key: `udp ${CLIENT}:0 -> ${VIP}:0`, info: { innerIsFragment: 1, innerHasPorts: 0 } },
  },
  {
    desc: 'ICMPv4 error about a first fragment: 3-tuple key like every fragment',
    pkt: P.icmp4Error(P.ICMP4_TIME_EXCEEDED, 1, ROUTER, VIP, P.fragmentPacket(P.udp4(VIP, CLIENT, 53, 40000, bytes(64)), 16)[0] as Uint8Array),
    expect: { result: R.OK, key: `udp ${CLIENT}:0 -> ${VIP}:0`, info: { innerIsFragment: 1, innerHasPorts: 1, innerSport: 53 } },
  },
  {
    desc: 'ICMPv6 packet too big about a TCP reply: reversed key',
    pkt: P.icmp6Error(P.ICMP6_PACKET_TOO_BIG, 0, ROUTER6, VIP6, P.tcp6(VIP6, CLIENT6, 80, 40000, P.TCP_ACK, bytes(100)), { mtu: 1280 }),
    expect: { result: R.OK, key: `tcp [${CLIENT6}]:40000 -> [${VIP6}]:80`, info: { isIcmpError: 1, icmpType: 2, innerL3Off: 48, innerL4Off: 88, innerCsumOff: 104, innerL4Avail: 120 } },
  },
  {
    desc: 'ICMPv6 destination unreachable about UDP, embedded packet with extension headers',
    pkt: P.icmp6Error(P.ICMP6_DEST_UNREACH, 4, BACKEND6, CLIENT6, P.udp6(CLIENT6, BACKEND6, 40000, 8053, bytes(8), { ext: [{ type: 0 }, { type: 60 }] })),
    expect: { result: R.OK, key: `udp [${BACKEND6}]:8053 -> [${CLIENT6}]:40000`, info: { innerL4Off: 104 } },
  },
  {
    desc: 'ICMPv6 time exceeded about an echo request',
    pkt: P.icmp6Error(P.ICMP6_TIME_EXCEEDED, 0, ROUTER6, VIP6, P.icmp6Echo(VIP6, CLIENT6, 129, 42, 1)),
    expect: { result: R.OK, key: `icmpv6 [${CLIENT6}]:42 -> [${VIP6}]:42` },
  },
  {
    desc: 'ICMPv6 parameter problem, embedded header cut right after the ports',
    pkt: P.icmp6Error(P.ICMP6_PARAM_PROBLEM, 0, ROUTER6, VIP6, udpReply6, { embedLen: 44, pointer: 6 }),
    expect: { result: R.OK, key: `udp [${CLIENT6}]:40001 -> [${VIP6}]:53`, info: { innerL4Avail: 4, innerCsumOff: -1 } },
  },
  {
    desc: 'IPv4 first fragment: 3-tuple key, L4 parsed (ports, checksum offset)',
    pkt: P.fragmentPacket(P.udp4(CLIENT, VIP, 5353, 53, bytes(100)), 40, 0x77)[0] as Uint8Array,
    expect: { result: R.OK, key: `udp ${CLIENT}:0 -> ${VIP}:0`, info: { isFragment: 1, isFirstFragment: 1, fragOffset: 0, moreFragments: 1, fragId: 0x77, sport: 5353, dport: 53, csumOff: 26 } },
  },
  {
    desc: 'IPv4 middle fragment: 3-tuple key, no L4',
    pkt: P.fragmentPacket(P.udp4(CLIENT, VIP, 5353, 53, bytes(100)), 40)[1] as Uint8Array,
    expect: { result: R.OK, key: `udp ${CLIENT}:0 -> ${VIP}:0`, info: { isFragment: 1, isFirstFragment: 0, fragOffset: 40, moreFragments: 1, sport: 0, csumOff: -1 } },
  },
  {
    desc: 'IPv4 last fragment of TCP: 3-tuple key',
    pkt: P.fragmentPacket(P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_ACK, bytes(100)), 64)[1] as Uint8Array,
    expect: { result: R.OK, key: `tcp ${CLIENT}:0 -> ${VIP}:0`, info: { isFragment: 1, fragOffset: 64, moreFragments: 0 } },
  },
  {
    desc: 'IPv6 first fragment: 3-tuple key, L4 parsed',
    pkt: P.fragmentPacket(P.udp6(CLIENT6, VIP6, 5353, 53, bytes(100)), 48, 0x10203)[0] as Uint8Array,
    expect: { result: R.OK, key: `udp [${CLIENT6}]:0 -> [${VIP6}]:0`, info: { isFragment: 1, isFirstFragment: 1, fragId: 0x10203, l4Off: 48, sport: 5353 } },
  },
  {
    desc: 'IPv6 non-first fragment after a destination options header: 3-tuple key',
    pkt: P.fragmentPacket(P.udp6(CLIENT6, VIP6, 5353, 53, bytes(100), { ext: [{ type: 60 }] }), 48)[2] as Uint8Array,
    expect: { result: R.OK, key: `udp [${CLIENT6}]:0 -> [${VIP6}]:0`, info: { isFragment: 1, fragOffset: 96, moreFragments: 0, l4Off: 56, csumOff: -1 } },
  },
  {
    desc: 'IPv6 atomic fragment (offset 0, M 0): a non-fragmented packet (RFC 6946), full key',
    pkt: P.fillChecksums(P.ipv6Fragment(CLIENT6, VIP6, 6, 9, 0, false, P.tcp6(CLIENT6, VIP6, 40000, 80).subarray(40))),
    expect: { result: R.OK, key: `tcp [${CLIENT6}]:40000 -> [${VIP6}]:80`, info: { isFragment: 0, l4Off: 48 } },
  },

  // ---- drop reasons ----
  { desc: 'empty buffer', pkt: new Uint8Array(0), expect: { result: R.TRUNCATED } },
  { desc: 'one byte, version 4', pkt: new Uint8Array([0x45]), expect: { result: R.TRUNCATED } },
  { desc: 'IPv4 header cut at 19 bytes', pkt: P.tcp4(CLIENT, VIP, 1, 2), len: 19, expect: { result: R.TRUNCATED } },
  { desc: 'IPv4 options cut (IHL 6, 22 bytes)', pkt: P.tcp4(CLIENT, VIP, 1, 2, 2, bytes(0), { options: bytes(4, 1) }), len: 22, expect: { result: R.TRUNCATED } },
  { desc: 'IPv6 header cut at 39 bytes', pkt: P.tcp6(CLIENT6, VIP6, 1, 2), len: 39, expect: { result: R.TRUNCATED } },
  { desc: 'version 5', pkt: mut(P.tcp4(CLIENT, VIP, 1, 2), (b) => (b[0] = 0x55)), expect: { result: R.BAD_VERSION } },
  { desc: 'version 0', pkt: new Uint8Array(40), expect: { result: R.BAD_VERSION } },
  { desc: 'IPv4 IHL 4', pkt: mut(P.tcp4(CLIENT, VIP, 1, 2), (b) => (b[0] = 0x44)), expect: { result: R.BAD_IHL } },
  { desc: 'IPv4 IHL 0', pkt: mut(P.tcp4(CLIENT, VIP, 1, 2), (b) => (b[0] = 0x40)), expect: { result: R.BAD_IHL } },
  { desc: 'IPv4 total length < IHL*4', pkt: mut(P.tcp4(CLIENT, VIP, 1, 2), (b) => ((b[2] = 0), (b[3] = 19))), expect: { result: R.BAD_TOTAL_LENGTH } },
  { desc: 'IPv4 total length > bytes read', pkt: P.tcp4(CLIENT, VIP, 1, 2), len: 39, expect: { result: R.BAD_TOTAL_LENGTH } },
  { desc: 'IPv6 payload length > bytes read', pkt: P.tcp6(CLIENT6, VIP6, 1, 2), len: 59, expect: { result: R.BAD_TOTAL_LENGTH } },
  { desc: 'IPv6 with 9 extension headers', pkt: P.tcp6(CLIENT6, VIP6, 1, 2, 2, bytes(0), { ext: ext9 }), expect: { result: R.IPV6_EXT_CHAIN_TOO_LONG } },
  { desc: 'IPv6 hop-by-hop not first (RFC 8200 §4.1)', pkt: P.tcp6(CLIENT6, VIP6, 1, 2, 2, bytes(0), { ext: [{ type: 60 }, { type: 0 }] }), expect: { result: R.IPV6_BAD_EXT } },
  {
    desc: 'IPv6 two fragment headers',
    pkt: P.ipv6(CLIENT6, VIP6, 17, bytes(16), { ext: [{ type: 44, fragOffset: 0, mf: true }, { type: 44, fragOffset: 0, mf: true }] }),
    expect: { result: R.IPV6_BAD_EXT },
  },
  { desc: 'IPv6 extension header longer than the payload', pkt: cut(P.tcp6(CLIENT6, VIP6, 1, 2, 2, bytes(0), { ext: [{ type: 60, len: 32 }] }), 70), expect: { result: R.TRUNCATED } },
  { desc: 'IPv4 GRE (47)', pkt: P.ipv4(CLIENT, VIP, 47, bytes(20)), expect: { result: R.UNSUPPORTED_PROTOCOL } },
  { desc: 'IPv6 ESP (50)', pkt: P.ipv6(CLIENT6, VIP6, 50, bytes(20)), expect: { result: R.UNSUPPORTED_PROTOCOL } },
  { desc: 'IPv6 No Next Header (59)', pkt: P.ipv6(CLIENT6, VIP6, 59, bytes(0)), expect: { result: R.UNSUPPORTED_PROTOCOL } },
  { desc: 'ICMPv6 carried in IPv4', pkt: P.ipv4(CLIENT, VIP, 58, bytes(8)), expect: { result: R.UNSUPPORTED_PROTOCOL } },
  { desc: 'ICMPv4 carried in IPv6', pkt: P.ipv6(CLIENT6, VIP6, 1, bytes(8)), expect: { result: R.UNSUPPORTED_PROTOCOL } },
  { desc: 'IPv4 fragment of GRE', pkt: P.ipv4Fragment(CLIENT, VIP, 47, 1, 8, false, bytes(8)), expect: { result: R.UNSUPPORTED_PROTOCOL } },
  {
    desc: 'IPv6 fragment whose fragment header is followed by destination options',
    pkt: P.ipv6(CLIENT6, VIP6, 17, bytes(16), { ext: [{ type: 44, fragOffset: 0, mf: true }, { type: 60 }] }),
    expect: { result: R.UNSUPPORTED_PROTOCOL },
  },
  { desc: 'ICMPv4 error about GRE', pkt: P.icmp4Error(3, 1, ROUTER, VIP, P.ipv4(VIP, CLIENT, 47, bytes(8))), expect: { result: R.UNSUPPORTED_PROTOCOL } },
  { desc: 'TCP header of 19 bytes', pkt: P.ipv4(CLIENT, VIP, 6, bytes(19, 0x50)), expect: { result: R.L4_TRUNCATED } },
  { desc: 'UDP header of 7 bytes', pkt: P.ipv6(CLIENT6, VIP6, 17, bytes(7)), expect: { result: R.L4_TRUNCATED } },
  { desc: 'ICMP header of 7 bytes', pkt: P.ipv4(CLIENT, VIP, 1, new Uint8Array([8, 0, 0, 0, 0, 1, 0])), expect: { result: R.L4_TRUNCATED } },
  { desc: 'ICMPv6 header of 4 bytes', pkt: P.ipv6(CLIENT6, VIP6, 58, new Uint8Array([128, 0, 0, 0])), expect: { result: R.L4_TRUNCATED } },
  {
    desc: 'tiny first fragment: TCP header split (RFC 1858)',
    pkt: P.fragmentPacket(P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_ACK, bytes(40)), 8)[0] as Uint8Array,
    expect: { result: R.L4_TRUNCATED },
  },
  { desc: 'TCP data offset 4', pkt: mut(P.tcp4(CLIENT, VIP, 1, 2), (b) => (b[32] = 0x40)), expect: { result: R.BAD_TCP_OFFSET } },
  { desc: 'TCP data offset 15 past the segment', pkt: mut(P.tcp4(CLIENT, VIP, 1, 2, 2, bytes(10)), (b) => (b[32] = 0xf0)), expect: { result: R.BAD_TCP_OFFSET } },
  { desc: 'UDP length 7', pkt: mut(P.udp4(CLIENT, VIP, 1, 2, bytes(4)), (b) => ((b[24] = 0), (b[25] = 7))), expect: { result: R.BAD_UDP_LENGTH } },
  { desc: 'UDP length beyond the datagram', pkt: mut(P.udp6(CLIENT6, VIP6, 1, 2, bytes(4)), (b) => ((b[44] = 0), (b[45] = 13))), expect: { result: R.BAD_UDP_LENGTH } },
  { desc: 'ICMPv4 redirect (5)', pkt: P.icmp4Error(5, 1, ROUTER, CLIENT, tcpReply4), expect: { result: R.ICMP_UNSUPPORTED_TYPE } },
  { desc: 'ICMPv4 timestamp (13)', pkt: P.icmp4Echo(CLIENT, VIP, 13, 1, 1, bytes(12)), expect: { result: R.ICMP_UNSUPPORTED_TYPE } },
  { desc: 'ICMPv6 neighbor solicitation (135)', pkt: P.icmp6Echo(CLIENT6, VIP6, 135, 0, 0, bytes(16)), expect: { result: R.ICMP_UNSUPPORTED_TYPE } },
  { desc: 'ICMPv6 router solicitation (133)', pkt: P.icmp6Echo(CLIENT6, VIP6, 133, 0, 0), expect: { result: R.ICMP_UNSUPPORTED_TYPE } },
  { desc: 'ICMPv4 error embedding IPv6', pkt: P.icmp4Error(3, 1, ROUTER, VIP, P.tcp6(VIP6, CLIENT6, 80, 1), { embedLen: 48 }), expect: { result: R.ICMP_INNER_MALFORMED } },
  { desc: 'ICMPv4 error with a 12-byte quote', pkt: P.icmp4Error(3, 1, ROUTER, VIP, tcpReply4, { embedLen: 12 }), expect: { result: R.ICMP_INNER_MALFORMED } },
  { desc: 'ICMPv4 error, embedded IHL 4', pkt: P.icmp4Error(3, 1, ROUTER, VIP, mut(tcpReply4, (b) => (b[0] = 0x44))), expect: { result: R.ICMP_INNER_MALFORMED } },
  { desc: 'ICMPv4 error, quote ends before the ports', pkt: P.icmp4Error(3, 1, ROUTER, VIP, tcpReply4, { embedLen: 22 }), expect: { result: R.ICMP_INNER_MALFORMED } },
  {
    desc: 'ICMPv4 error about an ICMP error (RFC 1122 forbids sending it)',
    pkt: P.icmp4Error(3, 1, ROUTER, VIP, P.icmp4Error(3, 1, VIP, CLIENT, tcpReply4), { embedLen: 36 }),
    expect: { result: R.ICMP_INNER_MALFORMED },
  },
  { desc: 'ICMPv6 error embedding IPv4', pkt: P.icmp6Error(1, 0, ROUTER6, VIP6, tcpReply4), expect: { result: R.ICMP_INNER_MALFORMED } },
  {
    desc: 'ICMPv6 error, embedded extension chain cut',
    pkt: P.icmp6Error(1, 0, ROUTER6, VIP6, P.udp6(VIP6, CLIENT6, 53, 1, bytes(8), { ext: [{ type: 0, len: 16 }] }), { embedLen: 48 }),
    expect: { result: R.ICMP_INNER_MALFORMED },
  },
];

/**
 * Truncation at every header boundary: a packet cut (with consistent IP length) at each
 * boundary, and the expected drop reason.
 */
export function truncationFixtures(): ParseFixture[] {
  const out: ParseFixture[] = [];
  const add = (name: string, p: Uint8Array, cuts: Array<[number, number]>): void => {
    for (const [n, result] of cuts) out.push({ desc: `${name} cut at ${n} bytes`, pkt: cut(p, n), expect: { result } });
  };
  const t4 = P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_ACK, bytes(8), { options: bytes(4, 1), tcpOptions: bytes(8, 1) });
  // IPv4 header 24 (with options), TCP header 28.
  add('IPv4+options TCP+options', t4, [
    [0, R.TRUNCATED],
    [19, R.TRUNCATED],
    [20, R.TRUNCATED],
    [23, R.TRUNCATED],
    [24, R.L4_TRUNCATED],
    [43, R.L4_TRUNCATED],
    [44, R.BAD_TCP_OFFSET],
    [51, R.BAD_TCP_OFFSET],
    [52, R.OK],
  ]);
  const u6 = P.udp6(CLIENT6, VIP6, 5353, 53, bytes(4), { ext: [{ type: 0 }, { type: 43, len: 16 }, { type: 44, fragOffset: 0, mf: false }] });
  // 40 | hbh 8 | routing 16 | fragment 8 (atomic) | UDP 8 + 4
  add('IPv6 hbh+routing+frag UDP', u6, [
    [39, R.TRUNCATED],
    [40, R.TRUNCATED],
    [41, R.TRUNCATED],
    [47, R.TRUNCATED],
    [48, R.TRUNCATED],
    [63, R.TRUNCATED],
    [64, R.TRUNCATED],
    [71, R.TRUNCATED],
    [72, R.L4_TRUNCATED],
    [79, R.L4_TRUNCATED],
    [80, R.BAD_UDP_LENGTH],
    [84, R.OK],
  ]);
  const e4 = P.icmp4Error(3, 4, ROUTER, VIP, tcpReply4, { mtu: 1400 });
  // 20 | ICMP 8 | embedded IP 20 | embedded TCP 8
  add('ICMPv4 error', e4, [
    [27, R.L4_TRUNCATED],
    [28, R.ICMP_INNER_MALFORMED],
    [47, R.ICMP_INNER_MALFORMED],
    [48, R.ICMP_INNER_MALFORMED],
    [51, R.ICMP_INNER_MALFORMED],
    [52, R.OK],
    [56, R.OK],
  ]);
  const e6 = P.icmp6Error(2, 0, ROUTER6, VIP6, P.tcp6(VIP6, CLIENT6, 80, 40000, P.TCP_ACK, bytes(20), { ext: [{ type: 60 }] }), { mtu: 1280 });
  // 40 | ICMPv6 8 | embedded IPv6 40 | dstopts 8 | TCP 20 + 20
  add('ICMPv6 error', e6, [
    [47, R.L4_TRUNCATED],
    [48, R.ICMP_INNER_MALFORMED],
    [87, R.ICMP_INNER_MALFORMED],
    [88, R.ICMP_INNER_MALFORMED],
    [95, R.ICMP_INNER_MALFORMED],
    [96, R.ICMP_INNER_MALFORMED],
    [99, R.ICMP_INNER_MALFORMED],
    [100, R.OK],
    [136, R.OK],
  ]);
  return out;
}

export interface NatFixture {
  desc: string;
  input: Uint8Array;
  op: 'dst' | 'src';
  addr: string;
  port: number;
  mode: number;
  /** Expected packet after the rewrite (for CSUM_PARTIAL: after completing the checksum). */
  expected: Uint8Array;
}

const pl = bytes(33, 0x5a);
export const natFixtures: NatFixture[] = [
  { desc: 'IPv4 TCP client->VIP:80 to backend:8080', input: P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_SYN, pl), op: 'dst', addr: BACKEND, port: 8080, mode: CSUM_FULL, expected: P.tcp4(CLIENT, BACKEND, 40000, 8080, P.TCP_SYN, pl) },
  { desc: 'IPv4 TCP same port', input: P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_ACK), op: 'dst', addr: BACKEND, port: 80, mode: CSUM_FULL, expected: P.tcp4(CLIENT, BACKEND, 40000, 80, P.TCP_ACK) },
  { desc: 'IPv4 TCP reply backend:8080 to VIP:80', input: P.tcp4(BACKEND, CLIENT, 8080, 40000, P.TCP_ACK, pl), op: 'src', addr: VIP, port: 80, mode: CSUM_FULL, expected: P.tcp4(VIP, CLIENT, 80, 40000, P.TCP_ACK, pl) },
  { desc: 'IPv4 TCP with IP options', input: P.tcp4(CLIENT, VIP, 1, 443, P.TCP_ACK, pl, { options: bytes(8, 1) }), op: 'dst', addr: BACKEND, port: 8443, mode: CSUM_FULL, expected: P.tcp4(CLIENT, BACKEND, 1, 8443, P.TCP_ACK, pl, { options: bytes(8, 1) }) },
  { desc: 'IPv4 UDP', input: P.udp4(CLIENT, VIP, 5353, 53, pl), op: 'dst', addr: BACKEND, port: 8053, mode: CSUM_FULL, expected: P.udp4(CLIENT, BACKEND, 5353, 8053, pl) },
  { desc: 'IPv4 UDP reply', input: P.udp4(BACKEND, CLIENT, 8053, 5353, pl), op: 'src', addr: VIP, port: 53, mode: CSUM_FULL, expected: P.udp4(VIP, CLIENT, 53, 5353, pl) },
  { desc: 'IPv4 UDP checksum 0 stays 0 (RFC 768)', input: P.udp4(CLIENT, VIP, 5353, 53, pl, { zeroChecksum: true }), op: 'dst', addr: BACKEND, port: 8053, mode: CSUM_FULL, expected: P.udp4(CLIENT, BACKEND, 5353, 8053, pl, { zeroChecksum: true }) },
  { desc: 'IPv6 TCP', input: P.tcp6(CLIENT6, VIP6, 40000, 80, P.TCP_SYN, pl), op: 'dst', addr: BACKEND6, port: 8080, mode: CSUM_FULL, expected: P.tcp6(CLIENT6, BACKEND6, 40000, 8080, P.TCP_SYN, pl) },
  { desc: 'IPv6 TCP reply', input: P.tcp6(BACKEND6, CLIENT6, 8080, 40000, P.TCP_ACK, pl), op: 'src', addr: VIP6, port: 80, mode: CSUM_FULL, expected: P.tcp6(VIP6, CLIENT6, 80, 40000, P.TCP_ACK, pl) },
  { desc: 'IPv6 UDP after extension headers', input: P.udp6(CLIENT6, VIP6, 5353, 53, pl, { ext: [{ type: 0 }, { type: 60 }] }), op: 'dst', addr: BACKEND6, port: 8053, mode: CSUM_FULL, expected: P.udp6(CLIENT6, BACKEND6, 5353, 8053, pl, { ext: [{ type: 0 }, { type: 60 }] }) },
  { desc: 'ICMPv4 echo: identifier kept (port = identifier)', input: P.icmp4Echo(CLIENT, VIP, 8, 77, 1, pl), op: 'dst', addr: BACKEND, port: 77, mode: CSUM_FULL, expected: P.icmp4Echo(CLIENT, BACKEND, 8, 77, 1, pl) },
  { desc: 'ICMPv4 echo reply to VIP', input: P.icmp4Echo(BACKEND, CLIENT, 0, 77, 1, pl), op: 'src', addr: VIP, port: 77, mode: CSUM_FULL, expected: P.icmp4Echo(VIP, CLIENT, 0, 77, 1, pl) },
  { desc: 'ICMPv4 echo: identifier changed', input: P.icmp4Echo(CLIENT, VIP, 8, 77, 1, pl), op: 'dst', addr: BACKEND, port: 1000, mode: CSUM_FULL, expected: P.icmp4Echo(CLIENT, BACKEND, 8, 1000, 1, pl) },
  { desc: 'ICMPv6 echo (pseudo-header covers addresses)', input: P.icmp6Echo(CLIENT6, VIP6, 128, 77, 1, pl), op: 'dst', addr: BACKEND6, port: 77, mode: CSUM_FULL, expected: P.icmp6Echo(CLIENT6, BACKEND6, 128, 77, 1, pl) },
  { desc: 'ICMPv6 echo reply', input: P.icmp6Echo(BACKEND6, CLIENT6, 129, 77, 1, pl), op: 'src', addr: VIP6, port: 77, mode: CSUM_FULL, expected: P.icmp6Echo(VIP6, CLIENT6, 129, 77, 1, pl) },
  // PARTIAL (virtio NEEDS_CSUM): expected = the full-checksum packet, compared after completion.
  { desc: 'PARTIAL IPv4 TCP', input: P.toPartial(P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_ACK, pl)), op: 'dst', addr: BACKEND, port: 8080, mode: CSUM_PARTIAL, expected: P.tcp4(CLIENT, BACKEND, 40000, 8080, P.TCP_ACK, pl) },
  { desc: 'PARTIAL IPv4 TCP reply', input: P.toPartial(P.tcp4(BACKEND, CLIENT, 8080, 40000, P.TCP_ACK, pl)), op: 'src', addr: VIP, port: 80, mode: CSUM_PARTIAL, expected: P.tcp4(VIP, CLIENT, 80, 40000, P.TCP_ACK, pl) },
  { desc: 'PARTIAL IPv4 UDP', input: P.toPartial(P.udp4(CLIENT, VIP, 5353, 53, pl)), op: 'dst', addr: BACKEND, port: 8053, mode: CSUM_PARTIAL, expected: P.udp4(CLIENT, BACKEND, 5353, 8053, pl) },
  { desc: 'PARTIAL IPv6 TCP', input: P.toPartial(P.tcp6(CLIENT6, VIP6, 40000, 80, P.TCP_ACK, pl)), op: 'dst', addr: BACKEND6, port: 8080, mode: CSUM_PARTIAL, expected: P.tcp6(CLIENT6, BACKEND6, 40000, 8080, P.TCP_ACK, pl) },
  { desc: 'PARTIAL IPv6 UDP reply', input: P.toPartial(P.udp6(BACKEND6, CLIENT6, 8053, 5353, pl)), op: 'src', addr: VIP6, port: 53, mode: CSUM_PARTIAL, expected: P.udp6(VIP6, CLIENT6, 53, 5353, pl) },
  { desc: 'PARTIAL ICMPv6 echo', input: P.toPartial(P.icmp6Echo(CLIENT6, VIP6, 128, 9, 1, pl)), op: 'dst', addr: BACKEND6, port: 9, mode: CSUM_PARTIAL, expected: P.icmp6Echo(CLIENT6, BACKEND6, 128, 9, 1, pl) },
  // ICMP errors (nf_nat_icmp_reply_translation semantics).
  {
    desc: 'ICMPv4 frag-needed from a client-side router about a reply: outer dst and embedded src to the backend',
    input: P.icmp4Error(3, 4, ROUTER, VIP, P.tcp4(VIP, CLIENT, 80, 40000, P.TCP_ACK, pl), { mtu: 1400 }),
    op: 'dst', addr: BACKEND, port: 8080, mode: CSUM_FULL,
    expected: P.icmp4Error(3, 4, ROUTER, BACKEND, P.tcp4(BACKEND, CLIENT, 8080, 40000, P.TCP_ACK, pl), { mtu: 1400 }),
  },
  {
    desc: 'ICMPv4 time exceeded quoting the whole TCP segment: embedded TCP checksum fixed too',
    input: P.icmp4Error(11, 0, ROUTER, VIP, P.tcp4(VIP, CLIENT, 80, 40000, P.TCP_ACK, pl), { embedLen: 500 }),
    op: 'dst', addr: BACKEND, port: 8080, mode: CSUM_FULL,
    expected: P.icmp4Error(11, 0, ROUTER, BACKEND, P.tcp4(BACKEND, CLIENT, 8080, 40000, P.TCP_ACK, pl), { embedLen: 500 }),
  },
  {
    desc: 'ICMPv4 port unreachable from the backend about client->backend UDP: outer src and embedded dst to the VIP',
    input: P.icmp4Error(3, 3, BACKEND, CLIENT, P.udp4(CLIENT, BACKEND, 40000, 8053, pl), { embedLen: 500 }),
    op: 'src', addr: VIP, port: 53, mode: CSUM_FULL,
    expected: P.icmp4Error(3, 3, VIP, CLIENT, P.udp4(CLIENT, VIP, 40000, 53, pl), { embedLen: 500 }),
  },
  {
    desc: 'ICMPv4 error from a backend-side router: outer source becomes the VIP (as Linux does)',
    input: P.icmp4Error(11, 0, BACK_ROUTER, CLIENT, P.tcp4(CLIENT, BACKEND, 40000, 8080, P.TCP_ACK, pl)),
    op: 'src', addr: VIP, port: 80, mode: CSUM_FULL,
    expected: P.icmp4Error(11, 0, VIP, CLIENT, P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_ACK, pl)),
  },
  {
    desc: 'ICMPv4 error about an echo reply: embedded identifier kept',
    input: P.icmp4Error(11, 0, ROUTER, VIP, P.icmp4Echo(VIP, CLIENT, 0, 77, 5, pl), { embedLen: 500 }),
    op: 'dst', addr: BACKEND, port: 77, mode: CSUM_FULL,
    expected: P.icmp4Error(11, 0, ROUTER, BACKEND, P.icmp4Echo(BACKEND, CLIENT, 0, 77, 5, pl), { embedLen: 500 }),
  },
  {
    desc: 'ICMPv4 error about a UDP reply with checksum 0: embedded checksum stays 0',
    input: P.icmp4Error(3, 4, ROUTER, VIP, P.udp4(VIP, CLIENT, 53, 40000, pl, { zeroChecksum: true }), { mtu: 576 }),
    op: 'dst', addr: BACKEND, port: 8053, mode: CSUM_FULL,
    expected: P.icmp4Error(3, 4, ROUTER, BACKEND, P.udp4(BACKEND, CLIENT, 8053, 40000, pl, { zeroChecksum: true }), { mtu: 576 }),
  },
  {
    desc: 'ICMPv6 packet too big about a TCP reply',
    input: P.icmp6Error(2, 0, ROUTER6, VIP6, P.tcp6(VIP6, CLIENT6, 80, 40000, P.TCP_ACK, pl), { mtu: 1280 }),
    op: 'dst', addr: BACKEND6, port: 8080, mode: CSUM_FULL,
    expected: P.icmp6Error(2, 0, ROUTER6, BACKEND6, P.tcp6(BACKEND6, CLIENT6, 8080, 40000, P.TCP_ACK, pl), { mtu: 1280 }),
  },
  {
    desc: 'ICMPv6 packet too big, quote cut inside the TCP header (checksum not quoted)',
    input: P.icmp6Error(2, 0, ROUTER6, VIP6, P.tcp6(VIP6, CLIENT6, 80, 40000, P.TCP_ACK, pl), { mtu: 1280, embedLen: 52 }),
    op: 'dst', addr: BACKEND6, port: 8080, mode: CSUM_FULL,
    expected: P.icmp6Error(2, 0, ROUTER6, BACKEND6, P.tcp6(BACKEND6, CLIENT6, 8080, 40000, P.TCP_ACK, pl), { mtu: 1280, embedLen: 52 }),
  },
  {
    desc: 'ICMPv6 destination unreachable from the backend about UDP',
    input: P.icmp6Error(1, 4, BACKEND6, CLIENT6, P.udp6(CLIENT6, BACKEND6, 40000, 8053, pl)),
    op: 'src', addr: VIP6, port: 53, mode: CSUM_FULL,
    expected: P.icmp6Error(1, 4, VIP6, CLIENT6, P.udp6(CLIENT6, VIP6, 40000, 53, pl)),
  },
  {
    desc: 'ICMPv6 time exceeded about an echo reply',
    input: P.icmp6Error(3, 0, ROUTER6, VIP6, P.icmp6Echo(VIP6, CLIENT6, 129, 42, 1, pl)),
    op: 'dst', addr: BACKEND6, port: 42, mode: CSUM_FULL,
    expected: P.icmp6Error(3, 0, ROUTER6, BACKEND6, P.icmp6Echo(BACKEND6, CLIENT6, 129, 42, 1, pl)),
  },
  {
    desc: 'PARTIAL ICMPv6 packet too big (only the pseudo-header change goes into the field)',
    input: P.toPartial(P.icmp6Error(2, 0, ROUTER6, VIP6, P.tcp6(VIP6, CLIENT6, 80, 40000, P.TCP_ACK, pl), { mtu: 1280 })),
    op: 'dst', addr: BACKEND6, port: 8080, mode: CSUM_PARTIAL,
    expected: P.icmp6Error(2, 0, ROUTER6, BACKEND6, P.tcp6(BACKEND6, CLIENT6, 8080, 40000, P.TCP_ACK, pl), { mtu: 1280 }),
  },
];
