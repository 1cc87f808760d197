/**
 * Result codes of the packet core (parse, NAT rewrite, encapsulation).
 *
 * Contract:
 * - Every hot-path function of src/packet/ returns one of these numbers; `OK` (0) is success and
 *   every other value is a drop reason. The data plane counts drops in a typed array indexed by
 *   the code (`new Float64Array(PACKET_RESULT_COUNT)`), and metrics label them with
 *   `packetResultNames[code]`.
 * - Values are STABLE: never renumber or rename one (dashboards and counters depend on them);
 *   add new codes at the end, before `PACKET_RESULT_COUNT`, and add the name to the list.
 */
export const PacketResult = {
  OK: 0,
  /** The buffer ends inside the IPv4/IPv6 fixed header or an IPv6 extension header. */
  TRUNCATED: 1,
  /** IP version nibble is neither 4 nor 6. */
  BAD_VERSION: 2,
  /** IPv4 IHL < 5 (RFC 791: minimum header is 5 words). */
  BAD_IHL: 3,
  /** IPv4 total length < IHL*4 or > bytes read; IPv6 40 + payload length > bytes read. */
  BAD_TOTAL_LENGTH: 4,
  /** More IPv6 extension headers than the parser walks (MAX_IPV6_EXT_HEADERS). */
  IPV6_EXT_CHAIN_TOO_LONG: 5,
  /** IPv6 extension header chain is malformed (hop-by-hop not first, two fragment headers). */
  IPV6_BAD_EXT: 6,
  /** The upper-layer protocol is not TCP, UDP, ICMP or ICMPv6 (includes ESP, No Next Header). */
  UNSUPPORTED_PROTOCOL: 7,
  /** The L4 header does not fit in the IP payload (TCP < 20, UDP < 8, ICMP < 8 bytes). */
  L4_TRUNCATED: 8,
  /** TCP data offset < 5 or the TCP header (data offset * 4) runs past the IP payload. */
  BAD_TCP_OFFSET: 9,
  /** ICMP/ICMPv6 type the balancer does not forward (not echo, not a supported error). */
  ICMP_UNSUPPORTED_TYPE: 10,
  /** The packet embedded in an ICMP error is malformed or too short to give its ports. */
  ICMP_INNER_MALFORMED: 11,
  /** Encapsulation header version is neither ENCAP_VERSION nor an older release's (ENCAP_OLD_VERSION). */
  ENCAP_BAD_VERSION: 12,
  /** Encapsulated datagram shorter than the header, or carries no inner packet. */
  ENCAP_TRUNCATED: 13,
  /** UDP length field < 8 or > IP payload (unfragmented datagrams only). */
  BAD_UDP_LENGTH: 14,
  /** Encapsulation header type is not ENCAP_TYPE_DATA. */
  ENCAP_BAD_TYPE: 15,
  /** Encapsulation header has reserved flag bits set. */
  ENCAP_BAD_FLAGS: 16,
  /** NAT: `info` does not describe this buffer/offset, or the new address is too short. */
  NAT_BAD_ARGUMENT: 17,
  /** NAT: the packet kind cannot be rewritten (e.g. unknown checksum mode). */
  NAT_UNSUPPORTED: 18,
  /** Encapsulation header of version 1 (before the data-port tag): a balancer running an older release. */
  ENCAP_OLD_VERSION: 19,
} as const;

/** One of the PacketResult values (the functions return plain `number` for speed). */
export type PacketResultCode = (typeof PacketResult)[keyof typeof PacketResult];

/** Number of result codes: size of per-reason counter arrays. */
export const PACKET_RESULT_COUNT = 20;

/** Stable snake_case names indexed by code, for metrics labels and logs. */
export const packetResultNames: readonly string[] = Object.freeze([
  'ok',
  'truncated',
  'bad_version',
  'bad_ihl',
  'bad_total_length',
  'ipv6_ext_chain_too_long',
  'ipv6_bad_ext',
  'unsupported_protocol',
  'l4_truncated',
  'bad_tcp_offset',
  'icmp_unsupported_type',
  'icmp_inner_malformed',
  'encap_bad_version',
  'encap_truncated',
  'bad_udp_length',
  'encap_bad_type',
  'encap_bad_flags',
  'nat_bad_argument',
  'nat_unsupported',
  'encap_old_version',
]);

/** Name of a code for logs; 'unknown' for a value outside the table (never throws). */
export function packetResultName(code: number): string {
  return code >= 0 && code < PACKET_RESULT_COUNT ? (packetResultNames[code] as string) : 'unknown';
}
