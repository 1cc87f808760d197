/**
 * A virtio_net_hdr that came from the network (carried by an encapsulated packet, flag VNET:
 * src/packet/encap.ts) is checked against the inner packet it describes and rebuilt before the
 * TUN device gets it. The kernel trusts what a TUN writer says in it (tun_get_user →
 * virtio_net_hdr_to_skb, include/linux/virtio_net.h): a checksum offset inside the payload
 * makes it write a checksum over data bytes, a tiny gso_size makes one packet tens of thousands
 * of segments, an unexpected gso_type takes paths this balancer never uses (UFO, UDP GSO). So
 * only what a tunlb peer sends is accepted, checked field by field against the parsed inner
 * packet, and the header handed on is rebuilt from the accepted values:
 *
 *   flags      NEEDS_CSUM and DATA_VALID only (FLAGS otherwise). DATA_VALID ("checksum
 *              already verified") is cleared: a claim from the network is not taken, the end
 *              host verifies.
 *   gso_type   NONE, or TCPV4 / TCPV6 (ECN bit allowed with those); anything else (UDP UFO,
 *              UDP_L4, unknown; ECN on NONE) is GSO_TYPE.
 *   TCP GSO    the inner packet is TCP of that IP version, neither a fragment nor an ICMP
 *              error, with NEEDS_CSUM (the kernel's GSO completes the checksum it set up):
 *              GSO_PACKET otherwise; gso_size >= TCP_MIN_SND_MSS (48, include/net/tcp.h: the
 *              smallest segment Linux sends): GSO_SIZE otherwise (0 included).
 *   NEEDS_CSUM csum_start = the inner packet's L4 header, csum_offset = its checksum field
 *              (TCP 16, UDP 6, ICMP/ICMPv6 2) as the parser found them, not on a fragment: CSUM
 *              otherwise.
 *   hdr_len    at most the inner packet's length (HDR_LEN otherwise); rebuilt as the IP + TCP
 *              header length for GSO (what gso-split.ts writes), 0 otherwise.
 *   gso_size   kept for GSO, 0 otherwise.
 * A refused header drops the packet (the caller counts the reason): nothing of it reaches the
 * kernel.
 *
 * Pure function over (buffer, offset); no allocation, never throws.
 */
import type { PacketInfo } from './packet-info';
import {
  VNET_CSUM_OFFSET, VNET_CSUM_START, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_FLAGS, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_SIZE,
  VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_TYPE, VNET_HDR_LEN_FIELD,
} from './vnet';

/** The smallest gso_size accepted: Linux's TCP_MIN_SND_MSS (include/net/tcp.h). */
export const VNET_MIN_GSO_SIZE = 48;

/** Why checkPeerVnet refused a header (0 = accepted). Stable values: add before the count. */
export const VnetCheck = {
  OK: 0,
  /** A flag other than NEEDS_CSUM and DATA_VALID. */
  FLAGS: 1,
  /** gso_type not NONE, TCPV4 or TCPV6 (UDP UFO, UDP_L4, unknown), or ECN without TCP GSO. */
  GSO_TYPE: 2,
  /** TCP GSO on a packet that is not TCP of that IP version, a fragment, an ICMP error, or without NEEDS_CSUM. */
  GSO_PACKET: 3,
  /** gso_size below VNET_MIN_GSO_SIZE (0 included). */
  GSO_SIZE: 4,
  /** NEEDS_CSUM whose csum_start / csum_offset are not the inner packet's L4 checksum field, or on a fragment. */
  CSUM: 5,
  /** hdr_len beyond the inner packet. */
  HDR_LEN: 6,
} as const;

export const VNET_CHECK_COUNT = 7;

export const vnetCheckNames: readonly string[] = Object.freeze(['ok', 'flags', 'gso_type', 'gso_packet', 'gso_size', 'csum', 'hdr_len']);

const KNOWN_FLAGS = VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID;

/**
 * Checks the virtio header v[vo .. vo+10) carried with the inner packet buf[off .. off+len)
 * (parsed into `info` by parsePacket: OK), and on success rebuilds it in place (see the file
 * header). Returns VnetCheck.OK or the reason it was refused (then `v` is unchanged).
 */
export function checkPeerVnet(v: Uint8Array, vo: number, buf: Uint8Array, off: number, len: number, info: PacketInfo): number {
  const flags = v[vo + VNET_FLAGS]!;
  if ((flags & ~KNOWN_FLAGS) !== 0) return VnetCheck.FLAGS;
  const typeByte = v[vo + VNET_GSO_TYPE]!;
  const type = typeByte & ~VNET_GSO_ECN;
  const gso = type !== VNET_GSO_NONE;
  if (gso ? type !== VNET_GSO_TCPV4 && type !== VNET_GSO_TCPV6 : typeByte !== VNET_GSO_NONE) return VnetCheck.GSO_TYPE;
  const csum = (flags & VNET_F_NEEDS_CSUM) !== 0;
  const hdrLen = v[vo + VNET_HDR_LEN_FIELD]! | (v[vo + VNET_HDR_LEN_FIELD + 1]! << 8);
  const gsoSize = v[vo + VNET_GSO_SIZE]! | (v[vo + VNET_GSO_SIZE + 1]! << 8);
  let tcpEnd = 0;
  if (gso) {
    if (
      !csum || info.proto !== 6 || info.isFragment !== 0 || info.isIcmpError !== 0 ||
      (type === VNET_GSO_TCPV4 ? info.version !== 4 : info.version !== 6)
    ) {
      return VnetCheck.GSO_PACKET;
    }
    if (gsoSize < VNET_MIN_GSO_SIZE) return VnetCheck.GSO_SIZE;
    // The parser checked the TCP header fits (data offset within the packet).
    tcpEnd = info.l4Off - off + (buf[info.l4Off + 12]! >>> 4) * 4;
  }
  const start = info.l4Off - off;
  const field = info.csumOff - info.l4Off;
  if (csum) {
    if (info.csumOff < 0 || info.isFragment !== 0) return VnetCheck.CSUM;
    const cs = v[vo + VNET_CSUM_START]! | (v[vo + VNET_CSUM_START + 1]! << 8);
    const co = v[vo + VNET_CSUM_OFFSET]! | (v[vo + VNET_CSUM_OFFSET + 1]! << 8);
    if (cs !== start || co !== field) return VnetCheck.CSUM;
  }
  if (hdrLen > len) return VnetCheck.HDR_LEN;
  // Rebuild from the accepted values.
  v[vo + VNET_FLAGS] = csum ? VNET_F_NEEDS_CSUM : 0;
  v[vo + VNET_GSO_TYPE] = typeByte;
  le16(v, vo + VNET_HDR_LEN_FIELD, tcpEnd);
  le16(v, vo + VNET_GSO_SIZE, gso ? gsoSize : 0);
  le16(v, vo + VNET_CSUM_START, csum ? start : 0);
  le16(v, vo + VNET_CSUM_OFFSET, csum ? field : 0);
  return VnetCheck.OK;
}

function le16(b: Uint8Array, o: number, x: number): void {
  b[o] = x & 0xff;
  b[o + 1] = (x >>> 8) & 0xff;
}
