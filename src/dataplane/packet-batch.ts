/**
 * PacketBatch: the caller-owned buffers every batched device call reads into and writes from
 * (the shape of wireguard-go's tun.Device Read(bufs, sizes, offset)). Allocate one per
 * direction at start-up and reuse it for the life of the process; nothing here allocates
 * per packet.
 *
 * Layout: one Uint8Array `buf` of `count` slots of `slotSize` bytes. The first `headroom`
 * bytes of each slot are reserved (never written by a read) so the pipeline can prepend
 * encapsulation headers in place: to prepend N bytes to packet i, write them at
 * offsets[i] - N, then set offsets[i] -= N and sizes[i] += N (N ≤ headroom).
 *
 *   slot i:  [ headroom ............ | packet (≤ slotSize - headroom) ............... ]
 *            ^ i*slotSize            ^ offsets[i] after a read      ^ + sizes[i]
 *
 * - `sizes[i]`   packet length in bytes (IP header onwards; never includes a virtio header).
 * - `offsets[i]` byte index of the packet in `buf`. Reads set it to i*slotSize + headroom;
 *                writes send buf[offsets[i] .. offsets[i]+sizes[i]) as is, so a packet may
 *                start anywhere in buf (even in another slot).
 * - `vnet`       one virtio_net_hdr per slot (VNET_HDR_LEN bytes at i*VNET_HDR_LEN), used only
 *                by a TUN device opened with features.vnetHdr: a read fills it, a write sends it
 *                in front of the packet. Kept apart from the packet so the packet always
 *                starts at its IP header and the headroom stays usable. Fields (linux/
 *                virtio_net.h, little-endian, the device sets TUNSETVNETLE):
 *                  +0 flags (u8: 1 = NEEDS_CSUM, 2 = DATA_VALID)   +1 gso_type (u8: 0 NONE,
 *                  1 TCPV4, 3 UDP, 4 TCPV6, 0x80 ECN)  +2 hdr_len (u16)  +4 gso_size (u16)
 *                  +6 csum_start (u16)  +8 csum_offset (u16)
 *                A read of a GSO super-packet (TSO on) gives gso_type ≠ 0 and a packet up to
 *                64 KiB; with NEEDS_CSUM the L4 checksum field holds only the pseudo-header sum
 *                (the kernel or the peer completes it). To write a plain packet, clear the
 *                header (`clearVnet`) — gso NONE, flags 0 — or forward the header read with it.
 *                Careful: a packet read with NEEDS_CSUM carries a partial L4 checksum; write it
 *                back with its header (adjusting csum_start if the IP header moved), or
 *                complete the checksum before clearing the header, else the kernel drops it.
 */

/** Minimum headroom: more than the 20-byte encapsulation header and a 10-byte virtio header (src/packet/encap.ts) need. */
export const MIN_HEADROOM = 64;
export const DEFAULT_HEADROOM = 128;
/** Largest packet a TUN device with TSO may hand over (a 64 KiB GSO super-packet). */
export const GSO_MAX_PACKET = 65535;

// The virtio_net_hdr layout lives in the packet layer (src/packet/vnet.ts).
export {
  VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_UDP, VNET_GSO_TCPV6,
  VNET_GSO_ECN, VNET_FLAGS, VNET_GSO_TYPE, VNET_HDR_LEN_FIELD, VNET_GSO_SIZE, VNET_CSUM_START, VNET_CSUM_OFFSET,
} from '../packet/vnet';
import { VNET_HDR_LEN } from '../packet/vnet';

export interface PacketBatchOptions {
  /** Number of slots (packets per batch). */
  count: number;
  /** Largest packet the batch must hold (e.g. the device MTU, or GSO_MAX_PACKET with offloads). */
  maxPacket: number;
  /** Reserved bytes in front of each packet; ≥ MIN_HEADROOM. Default DEFAULT_HEADROOM. */
  headroom?: number;
  /**
   * Use this batch's buffer instead of allocating one: the new batch has its own offsets,
   * sizes and virtio headers over the same bytes (same count, maxPacket and headroom). Used
   * to send a subset of a batch's packets elsewhere (e.g. encapsulated to peers) without
   * copying them.
   */
  share?: PacketBatch;
}

export class PacketBatch {
  readonly buf: Uint8Array;
  readonly count: number;
  readonly slotSize: number;
  readonly headroom: number;
  readonly sizes: Uint32Array;
  readonly offsets: Uint32Array;
  readonly vnet: Uint8Array;

  constructor(opts: PacketBatchOptions) {
    const headroom = opts.headroom ?? DEFAULT_HEADROOM;
    if (!Number.isInteger(opts.count) || opts.count < 1 || opts.count > 65536) {
      throw new RangeError(`PacketBatch: count must be 1..65536, got ${opts.count}`);
    }
    if (!Number.isInteger(headroom) || headroom < MIN_HEADROOM) {
      throw new RangeError(`PacketBatch: headroom must be an integer ≥ ${MIN_HEADROOM}, got ${headroom}`);
    }
    if (!Number.isInteger(opts.maxPacket) || opts.maxPacket < 1 || opts.maxPacket > GSO_MAX_PACKET) {
      throw new RangeError(`PacketBatch: maxPacket must be 1..${GSO_MAX_PACKET}, got ${opts.maxPacket}`);
    }
    // Slots rounded up to 64 bytes so each packet's headroom starts cache-line aligned.
    const slotSize = Math.ceil((headroom + opts.maxPacket) / 64) * 64;
    if (slotSize * opts.count > 2 ** 31) throw new RangeError('PacketBatch: larger than 2 GiB');
    this.count = opts.count;
    this.headroom = headroom;
    this.slotSize = slotSize;
    if (opts.share !== undefined && opts.share.buf.length !== slotSize * opts.count) {
      throw new RangeError('PacketBatch: a shared batch must have the same count, maxPacket and headroom');
    }
    this.buf = opts.share !== undefined ? opts.share.buf : new Uint8Array(slotSize * opts.count);
    this.sizes = new Uint32Array(opts.count);
    this.offsets = new Uint32Array(opts.count);
    this.vnet = new Uint8Array(opts.count * VNET_HDR_LEN);
    this.resetOffsets();
  }

  /** Bytes a packet may occupy in one slot after the headroom. */
  get capacity(): number {
    return this.slotSize - this.headroom;
  }

  /** Byte index where slot i's packet starts when nothing has been prepended. */
  packetStart(i: number): number {
    return i * this.slotSize + this.headroom;
  }

  /** Points every offset at its slot's packet start and every size at 0. */
  resetOffsets(): void {
    for (let i = 0; i < this.count; i++) this.offsets[i] = i * this.slotSize + this.headroom;
    this.sizes.fill(0);
  }

  /** Zeroes slot i's virtio header (gso NONE, flags 0): what a plain packet write needs. */
  clearVnet(i: number): void {
    this.vnet.fill(0, i * VNET_HDR_LEN, (i + 1) * VNET_HDR_LEN);
  }

  /** Copies `packet` into slot i (at its packet start) and sets its offset/size; tests and tools only. */
  setPacket(i: number, packet: Uint8Array): void {
    if (packet.length > this.capacity) throw new RangeError(`packet of ${packet.length} bytes > slot capacity ${this.capacity}`);
    const off = this.packetStart(i);
    this.buf.set(packet, off);
    this.offsets[i] = off;
    this.sizes[i] = packet.length;
  }

  /** A view (no copy) of packet i; tests and tools only (it allocates a view). */
  packet(i: number): Uint8Array {
    return this.buf.subarray(this.offsets[i], this.offsets[i] + this.sizes[i]);
  }
}

/** Reads the little-endian u16 field at `field` (VNET_* byte offset) of slot i's virtio header. */
export function vnetU16(batch: PacketBatch, i: number, field: number): number {
  const o = i * VNET_HDR_LEN + field;
  return batch.vnet[o] | (batch.vnet[o + 1] << 8);
}


/**
 * Peer addresses for batched UDP: `addrs` 16 bytes per packet (IPv6, or IPv4-mapped
 * ::ffff:a.b.c.d as in docs/contracts.md), `ports` in host order. Same indexing as the batch.
 */
export class PeerArrays {
  readonly addrs: Uint8Array;
  readonly ports: Uint16Array;
  constructor(readonly count: number) {
    this.addrs = new Uint8Array(count * 16);
    this.ports = new Uint16Array(count);
  }
}
