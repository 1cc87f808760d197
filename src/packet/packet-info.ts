/**
 * PacketInfo: what parsePacket learns about one packet. One instance is allocated per worker
 * (or per batch slot) and reused for every packet: all fields are numbers (small integers)
 * initialised in the constructor, so the object keeps one hidden class (monomorphic access).
 *
 * Offsets are ABSOLUTE indexes into the buffer given to parsePacket (not relative to the
 * packet start). A field documented "-1 when absent" is -1 when absent; other fields are 0 when
 * they do not apply. Values are valid only after parsePacket returned PacketResult.OK, until
 * the next parse into the same object.
 */
import { KEY_LEN, KEY_WORDS } from './flow-key';

export class PacketInfo {
  /** IP version: 4 or 6. */
  version = 0;
  /** Offset of the IP header (the `off` given to parsePacket). */
  l3Off = 0;
  /** IP packet length from the header: IPv4 total length; IPv6 40 + payload length. */
  l3Len = 0;
  /**
   * Offset of the upper-layer header: after IPv4 options / after the IPv6 extension chain.
   * For non-first fragments: offset of the fragment's payload (no L4 header there).
   */
  l4Off = 0;
  /** Bytes from l4Off to the end of the IP packet (l3Off + l3Len). */
  l4Len = 0;
  /**
   * Upper-layer protocol (6, 17, 1, 58). For IPv6 fragments this is the fragment header's Next
   * Header (for first fragments the chain is walked further and this is the real upper layer).
   */
  proto = 0;
  /** Offsets of the source and destination address bytes. */
  srcOff = 0;
  dstOff = 0;
  /** Address length: 4 or 16. */
  addrLen = 0;
  /** TCP/UDP ports; ICMP echo identifier (both); 0 for ICMP errors and non-first fragments. */
  sport = 0;
  dport = 0;
  /** TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN), 0 otherwise. */
  tcpFlags = 0;
  /**
   * A whole TCP segment (not a fragment, not an ICMP error): sequence number, acknowledgment
   * number (u32, RFC 9293 §3.1) and the sequence space the segment occupies (payload bytes,
   * + 1 for SYN, + 1 for FIN: §3.4). tcpSegLen is -1 for every other packet (then tcpSeq and
   * tcpAck are meaningless; a first fragment has them but only part of the segment).
   */
  tcpSeq = 0;
  tcpAck = 0;
  tcpSegLen = -1;
  /** 1 when the packet is a fragment (IPv4 MF or offset > 0; IPv6 fragment header, not atomic). */
  isFragment = 0;
  /** 1 for the first fragment (offset 0, more fragments), which carries the L4 header. */
  isFirstFragment = 0;
  /** Fragment offset in BYTES (header field * 8). */
  fragOffset = 0;
  /** More-fragments flag (0/1). */
  moreFragments = 0;
  /** Fragment identification (IPv4 16-bit, IPv6 32-bit); 0 when not a fragment. */
  fragId = 0;
  /** ICMP/ICMPv6 type and code (0 for other protocols). */
  icmpType = 0;
  icmpCode = 0;
  /** 1 for a supported ICMP error: the key is the embedded packet's key, reversed. */
  isIcmpError = 0;
  /** ICMP errors: offset of the embedded IP header, or -1. */
  innerL3Off = -1;
  /** ICMP errors: offset of the embedded upper-layer header (or fragment payload), or -1. */
  innerL4Off = -1;
  /** ICMP errors: embedded packet's upper-layer protocol. */
  innerProto = 0;
  /** ICMP errors: offsets of the embedded packet's source/destination address, or -1. */
  innerSrcOff = -1;
  innerDstOff = -1;
  /** ICMP errors: embedded ports (echo: identifier); 0 when innerHasPorts is 0. */
  innerSport = 0;
  innerDport = 0;
  /** ICMP errors: 1 when the embedded L4 header's ports (echo identifier) are present. */
  innerHasPorts = 0;
  /** ICMP errors: 1 when the embedded packet is a fragment (its key has ports 0). */
  innerIsFragment = 0;
  /** ICMP errors: bytes available in the buffer from innerL4Off to the end of the ICMP message. */
  innerL4Avail = 0;
  /** ICMP errors: offset of the embedded L4 checksum field if inside the message, else -1. */
  innerCsumOff = -1;
  /** Offset of the L4 checksum field (TCP, UDP, ICMP, ICMPv6), or -1 (non-first fragments). */
  csumOff = -1;
  /** The flow key (layout: docs/contracts.md, src/packet/flow-key.ts), written by parsePacket. */
  readonly key: Uint8Array;
  /** The same 40 bytes as 10 host-order u32 words (table-local hashing/compare only). */
  readonly keyWords: Uint32Array;

  constructor() {
    const ab = new ArrayBuffer(KEY_LEN);
    this.key = new Uint8Array(ab);
    this.keyWords = new Uint32Array(ab, 0, KEY_WORDS);
  }
}
