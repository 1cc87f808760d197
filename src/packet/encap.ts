/**
 * Balancer-to-balancer encapsulation (GUE/FOU-style, cf. draft-ietf-intarea-gue and Linux
 * FOU): the payload of an outer UDP datagram sent to a peer's data port (docs/contracts.md:
 * 7947 in the lab) is this 20-byte header followed by the ORIGINAL IP packet, unchanged.
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-------+-------+---------------+---------------+---------------+
 *   |version| type  |     flags     | primary index | backup index  |
 *   +-------+-------+---------------+---------------+---------------+
 *   |        backend index (u16)    |        VIP index (u16)        |
 *   +-------------------------------+-------------------------------+
 *   |                forwarding table generation (u32)              |
 *   +---------------------------------------------------------------+
 *   |                                                               |
 *   +                     data-port tag (64 bits)                   +
 *   |                                                               |
 *   +---------------------------------------------------------------+
 *   |  [flag VNET: 10-byte virtio_net_hdr]  original IPv4/IPv6 packet (unchanged) ...
 *
 *   version  (high nibble of byte 0) = ENCAP_VERSION (2). 1 is the header before the tag (12
 *            bytes, no tag): ENCAP_OLD_VERSION, so a balancer still running it is refused and
 *            counted (encap_old_version), never misparsed; anything else: ENCAP_BAD_VERSION.
 *   type     (low nibble of byte 0)  = ENCAP_TYPE_DATA (0); anything else: ENCAP_BAD_TYPE.
 *   flags    bit0 NEW_FLOW: the sender made this decision on a table miss (new record).
 *            bit1 REPLY: a NAT reply the sender holds no record of, steered to the flow's
 *                 ranked primary (src/decision/reply-steering.ts); no backend.
 *            bit2 SECOND_CHANCE: the sender had no record and forwards to the ranked primary.
 *            bit3 FAILOVER: sent to the backup (or a later holder) because the primary is dead.
 *            bit4 VNET: a 10-byte virtio_net_hdr (linux/virtio_net.h, little-endian, as the TUN
 *                 device exchanges it) follows this header, before the inner packet: the
 *                 packet is a GSO super-packet and/or carries a partial checksum
 *                 (NEEDS_CSUM); the receiver validates it against the inner packet and
 *                 rebuilds it (src/packet/vnet-check.ts) before its TUN device gets it, so the
 *                 kernel completes the checksum and segments there. A sender whose
 *                 super-packet exceeds the path's datagram size splits it first into smaller
 *                 GSO packets, each in its own datagram with this header (src/packet/gso-split.ts):
 *                 the receiver sees ordinary encapsulated packets.
 *            bits 5..7 reserved, sent 0; a receiver DROPS a header with any of them set
 *            (ENCAP_BAD_FLAGS): a new flag that changes handling needs every balancer to
 *            know it, so it comes with a version bump or a coordinated upgrade.
 *   primary / backup: balancer indexes (position in the config's balancer list, 0..31);
 *            ENCAP_NONE_U8 (0xff) = none.
 *   backend: backend index within the VIP (u16, big-endian); ENCAP_NONE_U16 (0xffff) = none.
 *   VIP:     VIP index (u16, big-endian).
 *   generation: the sender's forwarding-table generation (u32, big-endian), for diagnostics:
 *            generations are per-process counters, not comparable between balancers, so the
 *            receiver does not check it; it validates the decision against its own table
 *            instead (docs/flow-records.md "Generations", docs/protocol.md "Data port").
 *   tag:     HalfSipHash-2-4-64 with the data-tag key over bytes 0..11, the inner packet's flow
 *            key and the sender → receiver pair (src/decision/data-tag.ts). Written by the
 *            sender (writeDataTag) after this header; checked by the receiver after it parsed
 *            the inner packet, before anything else happens to it.
 *   All multi-byte fields but the tag are network byte order (the tag is the hash's output
 *   bytes). The header is a multiple of 4 bytes.
 *
 * A forwarded packet is never forwarded again (docs/protocol.md "Data port"); accepting only
 * configured peers (outer source address) and checking the tag are the data plane's job, not
 * this parser's.
 * Hot path: no allocation; results are PacketResult codes.
 */
import { PacketResult } from './result';

const R = PacketResult; // snapshot: see the note in parse.ts about imported bindings under tsx

export const ENCAP_HEADER_LEN = 20;
export const ENCAP_VERSION = 2;
/** The header version before the data-port tag (12 bytes): refused as ENCAP_OLD_VERSION. */
export const ENCAP_VERSION_UNTAGGED = 1;
/** Offset of the 8-byte tag in the header, and the header bytes the tag covers (0..11). */
export const ENCAP_TAG_OFF = 12;
export const ENCAP_TYPE_DATA = 0;
export const ENCAP_F_NEW_FLOW = 0x01;
export const ENCAP_F_REPLY = 0x02;
export const ENCAP_F_SECOND_CHANCE = 0x04;
export const ENCAP_F_FAILOVER = 0x08;
export const ENCAP_F_VNET = 0x10;
/** Length of the virtio_net_hdr carried after the header when ENCAP_F_VNET is set. */
export const ENCAP_VNET_LEN = 10;
/** Bits a receiver understands; any other bit set is ENCAP_BAD_FLAGS. */
export const ENCAP_F_KNOWN = 0x1f;
export const ENCAP_NONE_U8 = 0xff;
export const ENCAP_NONE_U16 = 0xffff;

/** Reusable result of parseEncap; all numbers. */
export class EncapInfo {
  version = 0;
  type = 0;
  flags = 0;
  primary = 0;
  backup = 0;
  backend = 0;
  vip = 0;
  generation = 0;
  /** Offset (absolute in buf) of the header: its bytes 0..11 and the tag at + ENCAP_TAG_OFF. */
  hdrOff = 0;
  /** Offset of the carried virtio_net_hdr (flag VNET), else -1. */
  vnetOff = -1;
  /** Offset (absolute in buf) and length of the inner IP packet. */
  innerOff = 0;
  innerLen = 0;
}

/**
 * Writes the header at `off` (the caller leaves ENCAP_HEADER_LEN bytes of headroom before the
 * packet: off = packetOff - ENCAP_HEADER_LEN), its tag zero: the caller tags it next
 * (src/decision/data-tag.ts writeDataTag; it needs the inner packet's flow key). Values are
 * masked to their field widths. Returns OK, or ENCAP_TRUNCATED when the header would not fit
 * in `buf`; writes nothing then.
 */
export function writeEncapHeader(
  buf: Uint8Array,
  off: number,
  flags: number,
  primary: number,
  backup: number,
  backend: number,
  vip: number,
  generation: number,
): number {
  if (off < 0 || off + ENCAP_HEADER_LEN > buf.length) return R.ENCAP_TRUNCATED;
  buf[off] = (ENCAP_VERSION << 4) | ENCAP_TYPE_DATA;
  buf[off + 1] = flags & ENCAP_F_KNOWN;
  buf[off + 2] = primary;
  buf[off + 3] = backup;
  buf[off + 4] = backend >>> 8;
  buf[off + 5] = backend;
  buf[off + 6] = vip >>> 8;
  buf[off + 7] = vip;
  buf[off + 8] = generation >>> 24;
  buf[off + 9] = generation >>> 16;
  buf[off + 10] = generation >>> 8;
  buf[off + 11] = generation;
  for (let i = ENCAP_TAG_OFF; i < ENCAP_HEADER_LEN; i++) buf[off + i] = 0;
  return R.OK;
}

/**
 * Validates the header of the `len`-byte UDP payload at `off` and fills `out`, including the
 * inner packet's offset and length (at least 1 byte; parse it with parsePacket). The tag is
 * not checked here (it covers the inner packet's flow key: src/decision/data-tag.ts).
 */
export function parseEncap(buf: Uint8Array, off: number, len: number, out: EncapInfo): number {
  if (off < 0 || len < 1 || off + len > buf.length) return R.ENCAP_TRUNCATED;
  const b0 = buf[off] as number;
  const version = b0 >>> 4;
  // The version first: an older release's datagram is named as such, whatever its length.
  if (version !== ENCAP_VERSION) return version === ENCAP_VERSION_UNTAGGED ? R.ENCAP_OLD_VERSION : R.ENCAP_BAD_VERSION;
  if (len <= ENCAP_HEADER_LEN) return R.ENCAP_TRUNCATED;
  if ((b0 & 0x0f) !== ENCAP_TYPE_DATA) return R.ENCAP_BAD_TYPE;
  const flags = buf[off + 1] as number;
  if ((flags & ~ENCAP_F_KNOWN) !== 0) return R.ENCAP_BAD_FLAGS;
  out.version = version;
  out.hdrOff = off;
  out.type = b0 & 0x0f;
  out.flags = flags;
  out.primary = buf[off + 2] as number;
  out.backup = buf[off + 3] as number;
  out.backend = ((buf[off + 4] as number) << 8) | (buf[off + 5] as number);
  out.vip = ((buf[off + 6] as number) << 8) | (buf[off + 7] as number);
  out.generation =
    (((buf[off + 8] as number) << 24) |
      ((buf[off + 9] as number) << 16) |
      ((buf[off + 10] as number) << 8) |
      (buf[off + 11] as number)) >>>
    0;
  let hdr = ENCAP_HEADER_LEN;
  if ((flags & ENCAP_F_VNET) !== 0) {
    if (len <= ENCAP_HEADER_LEN + ENCAP_VNET_LEN) return R.ENCAP_TRUNCATED;
    out.vnetOff = off + ENCAP_HEADER_LEN;
    hdr += ENCAP_VNET_LEN;
  } else {
    out.vnetOff = -1;
  }
  out.innerOff = off + hdr;
  out.innerLen = len - hdr;
  return R.OK;
}
