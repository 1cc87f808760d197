/**
 * DSR egress: frames the packet the forwarder decided to serve by direct server return (a VIP
 * with method dsr) and queues it for one batched AF_PACKET send (L2Socket.send) after the batch.
 *
 * A frame = a 14-byte Ethernet II header (dst = the backend's MAC from the neighbour table,
 * src = our interface's, ethertype IPv4/IPv6) written into the packet's headroom + the
 * unmodified packet: the VIP stays the destination, the backend holds it on its loopback and
 * answers the client directly. With PACKET_VNET_HDR (`vnet`), each frame also gets its virtio
 * header: the packet's own with csum_start and hdr_len moved by the Ethernet header (they
 * count from the frame's start on a packet socket), or zeros.
 *
 * Hot path: no allocation; a frame that cannot be queued returns the ForwardDrop reason and
 * the caller counts it.
 */
import { VNET_HDR_LEN, VNET_F_NEEDS_CSUM } from '../packet/vnet';
import { ForwardDrop } from './forward-drop';
import { type DsrNeighbours, NEIGH_STRIDE, NEIGH_VALID, NEIGH_SRC_MAC } from './neighbours';
import type { PacketContext } from './packet-context';
import type { ForwarderStats } from './forwarder-stats';
import { ETH_HDR_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from './l2-socket';

const ETH_HLEN = ETH_HDR_LEN;
/** What emit returns when the frame was queued (any other value: a ForwardDrop reason). */
export const DSR_QUEUED = -1;

/**
 * DSR frames (Ethernet header + unmodified packet) for one batched AF_PACKET send
 * (L2Socket.send(output, count, vnet, ifindex)) after each processBatch / processPeerBatch,
 * which reset `count`. Frames point into the buffer of the batch being processed (`buf`, set
 * by the forwarder): send them before the next read into it. `vnet` (null = the socket has no
 * PACKET_VNET_HDR) holds each frame's virtio_net_hdr: the packet's own, csum_start and hdr_len
 * moved by the 14-byte Ethernet header, or zeros. Capacity = offsets.length.
 */
export interface DsrOutput {
  buf: Uint8Array;
  readonly offsets: Uint32Array;
  readonly sizes: Uint32Array;
  readonly vnet: Uint8Array | null;
  readonly ifindex: Int32Array;
  count: number;
}

/** A DsrOutput with room for `capacity` frames (vnet headers when `vnet`). */
export function createDsrOutput(capacity: number, vnet: boolean): DsrOutput {
  return {
    buf: new Uint8Array(0),
    offsets: new Uint32Array(capacity),
    sizes: new Uint32Array(capacity),
    vnet: vnet ? new Uint8Array(capacity * VNET_HDR_LEN) : null,
    ifindex: new Int32Array(capacity),
    count: 0,
  };
}

/** Frames DSR packets into a DsrOutput; counts dsrPackets, forwardPackets and tx in `stats`. */
export class DsrEmitter {
  readonly output: DsrOutput;
  readonly #neigh: DsrNeighbours;
  readonly #stats: ForwarderStats;

  constructor(neighbours: DsrNeighbours, output: DsrOutput, stats: ForwarderStats) {
    this.#neigh = neighbours;
    this.output = output;
    this.#stats = stats;
  }

  /** Empties the output (a new batch). */
  reset(): void {
    this.output.count = 0;
  }

  /**
   * Appends the context's packet as a frame to backend `be` of VIP `vip`. Returns DSR_QUEUED,
   * or the ForwardDrop reason (no MAC yet: dsr_no_neighbour, the neighbour table asked to
   * resolve it; no room, another buffer, no headroom: write_failed). Never throws.
   */
  emit(ctx: PacketContext, vip: number, be: number): number {
    const out = this.output;
    const nb = this.#neigh;
    const buf = ctx.buf;
    const off = ctx.off;
    const rows = nb.rows[vip];
    const o = be * NEIGH_STRIDE;
    if (rows === undefined || o + NEIGH_STRIDE > rows.length || rows[o + NEIGH_VALID] !== 1) {
      nb.missing(vip, be);
      return ForwardDrop.DSR_NO_NEIGHBOUR;
    }
    const k = out.count;
    if (k >= out.offsets.length || (k > 0 && out.buf !== buf) || off < ETH_HLEN) return ForwardDrop.WRITE_FAILED;
    const info = ctx.info;
    const len = info.l3Len;
    // The virtio header first: a peer's carried header may sit right before the packet, where
    // the Ethernet header goes.
    const ov = out.vnet;
    if (ov !== null) {
      const d = k * VNET_HDR_LEN;
      const vb = ctx.vnetBuf;
      const vo = ctx.vnetOff;
      if (ctx.hasOffload()) {
        for (let i = 0; i < VNET_HDR_LEN; i++) ov[d + i] = vb![vo + i]!;
        // csum_start (+6) and hdr_len (+2) count from the frame's start on a packet socket.
        if ((ov[d]! & VNET_F_NEEDS_CSUM) !== 0) {
          const cs = (ov[d + 6]! | (ov[d + 7]! << 8)) + ETH_HLEN;
          ov[d + 6] = cs & 0xff;
          ov[d + 7] = cs >>> 8;
        }
        const hl = ov[d + 2]! | (ov[d + 3]! << 8);
        if (hl !== 0) {
          ov[d + 2] = (hl + ETH_HLEN) & 0xff;
          ov[d + 3] = (hl + ETH_HLEN) >>> 8;
        }
      } else {
        for (let i = 0; i < VNET_HDR_LEN; i++) ov[d + i] = 0;
      }
    }
    const start = off - ETH_HLEN;
    for (let i = 0; i < 6; i++) {
      buf[start + i] = rows[o + i]!;
      buf[start + 6 + i] = rows[o + NEIGH_SRC_MAC + i]!;
    }
    const type = info.addrLen === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6;
    buf[start + 12] = type >>> 8;
    buf[start + 13] = type & 0xff;
    out.buf = buf;
    out.offsets[k] = start;
    out.sizes[k] = len + ETH_HLEN;
    out.ifindex[k] = nb.ifindex[vip]![be]!;
    out.count = k + 1;
    const st = this.#stats;
    st.dsrPackets++;
    st.forwardPackets++;
    st.txPackets++;
    st.txBytes += len;
    return DSR_QUEUED;
  }
}
