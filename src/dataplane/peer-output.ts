/**
 * Peer egress: encapsulates the packet the forwarder decided another balancer serves
 * (src/packet/encap.ts, the decision in the header) into the peer output, for one sendmmsg to
 * the peers' data ports after the batch (UdpBatchSocket.send).
 *
 * The unmodified packet stays in its slot; the header goes into the headroom before it, tagged
 * for its receiver (src/decision/data-tag.ts: over the header, the packet's flow key and the
 * sender → receiver pair) (plus
 * the packet's virtio header when it carries offload state: flag VNET, so the peer's kernel
 * completes the checksum or segments it). A GSO super-packet over the balancer network's MTU is
 * split into chunk datagrams instead (src/packet/gso-split.ts; PeerSegments, sent with UDP
 * GSO), so it is not IP-fragmented; the peer appends the chunks back into one packet on
 * receipt (src/dataplane/peer-input.ts). The chunks share the super-packet's header and flow
 * key, so its tag is computed once and copied with the header into every chunk's.
 *
 * Hot path: no allocation; an entry that cannot be queued returns the ForwardDrop reason and
 * the caller counts it.
 */
import { PacketResult } from '../packet/result';
import {
  writeEncapHeader,
  ENCAP_HEADER_LEN,
  ENCAP_VNET_LEN,
  ENCAP_F_VNET,
} from '../packet/encap';
import { GsoSplit, gsoSplitHeaders, newGsoSplitResult } from '../packet/gso-split';
import { writeDataTag } from '../decision/data-tag';
import { ForwardDrop } from './forward-drop';
import type { PacketBatch } from './packet-batch';
import type { PacketContext } from './packet-context';
import type { ForwarderStats } from './forwarder-stats';
import type { SendSegments } from './udp-batch-socket';

const OK = PacketResult.OK;
const encapWrite = writeEncapHeader;
const tag = writeDataTag;
const splitHeaders = gsoSplitHeaders;
const SPLIT_OK = GsoSplit.OK;
/** Largest UDP payload a peer datagram can carry (IPv4: 65535 - 20 - 8). */
const MAX_UDP_PAYLOAD = 65507;
/** What emit returns when the packet was queued (any other value: a ForwardDrop reason). */
export const PEER_QUEUED = -1;

/**
 * Where encapsulated packets for peers go: a batch sharing the TUN read batch's buffer
 * (PacketBatch `share`), with per-packet peer data addresses, filled by processBatch and
 * sent by the caller with one UdpBatchSocket.send. `count` is reset by every processBatch.
 */
export interface PeerOutput {
  readonly batch: PacketBatch;
  readonly addrs: Uint8Array;
  readonly ports: Uint16Array;
  count: number;
  /** Splitting GSO super-packets to the balancer network's MTU (absent: never split). */
  readonly segs?: PeerSegments;
}

/**
 * Segmented peer entries (src/packet/gso-split.ts; sent by UdpBatchSocket.send as
 * SendSegments, with UDP GSO). Entry k of the peer output with chunk[k] > 0 is a super-packet
 * split into chunk[k]-byte payloads (batch offsets/sizes = the payload in place), each behind
 * its header at hdrs[hdrOffs[k] + j * hdrLens[k]]. `used` = bytes of `hdrs` taken by this
 * batch (reset with `count`). `maxDatagram` = the largest UDP payload that leaves
 * unfragmented (interface MTU − IP and UDP headers); 0 = do not split (no UDP GSO, MTU unknown).
 */
export interface PeerSegments extends SendSegments {
  used: number;
  maxDatagram: number;
}

/** Peers' data-plane addresses: 16 bytes each (IPv4-mapped), and data ports, by balancer index. */
export interface PeerAddresses {
  readonly addrs: Uint8Array;
  readonly ports: Uint16Array;
}

/**
 * Encapsulates packets into a PeerOutput, tagged with `tagKey` as sent by balancer `self`;
 * counts peerTxPackets and the split counters in `stats`.
 */
export class PeerEmitter {
  readonly output: PeerOutput;
  readonly #peers: PeerAddresses;
  readonly #stats: ForwarderStats;
  readonly #split = newGsoSplitResult();
  readonly #tagKey: Uint32Array;
  readonly #self: number;

  constructor(peers: PeerAddresses, output: PeerOutput, stats: ForwarderStats, tagKey: Uint32Array, self: number) {
    this.#peers = peers;
    this.output = output;
    this.#stats = stats;
    this.#tagKey = tagKey;
    this.#self = self;
  }

  /** Empties the output (a new batch). */
  reset(): void {
    this.output.count = 0;
    if (this.output.segs !== undefined) this.output.segs.used = 0;
  }

  /**
   * Appends the context's (unmodified) packet for balancer ctx.serving, with the decision
   * ctx.encapFlags / primary / backup / backend / vip and the forwarding table `generation` in
   * its header. Returns PEER_QUEUED or the ForwardDrop reason. Never throws.
   */
  emit(ctx: PacketContext, generation: number): number {
    const po = this.output;
    const buf = ctx.buf;
    const off = ctx.off;
    const len = ctx.info.l3Len;
    let flags = ctx.encapFlags;
    let hdr = ENCAP_HEADER_LEN;
    if (ctx.hasOffload()) {
      // Partial checksum and/or GSO super-packet: carry the virtio header so the peer's
      // kernel completes it (flag VNET).
      const vb = ctx.vnetBuf!;
      const vo = ctx.vnetOff;
      hdr += ENCAP_VNET_LEN;
      flags |= ENCAP_F_VNET;
      for (let k = 0; k < ENCAP_VNET_LEN; k++) buf[off - ENCAP_VNET_LEN + k] = vb[vo + k]!;
    }
    const sg = po.segs;
    if (sg !== undefined && sg.maxDatagram > 0 && (flags & ENCAP_F_VNET) !== 0 && len + hdr > sg.maxDatagram) {
      // A TCP packet (GSO or one segment) over the MTU: split it into chunks (no IP fragmentation).
      if (this.#emitSplit(ctx, flags, generation, sg)) return PEER_QUEUED;
      this.#stats.peerSplitSkipped++;
    }
    if (len + hdr > MAX_UDP_PAYLOAD) return ForwardDrop.PEER_PACKET_TOO_BIG;
    const start = off - hdr;
    if (encapWrite(buf, start, flags, ctx.primary, ctx.backup, ctx.backend, ctx.vip, generation) !== OK) {
      return ForwardDrop.PEER_PACKET_TOO_BIG;
    }
    tag(buf, start, this.#tagKey, ctx.info.key, this.#self, ctx.serving);
    const k = po.count;
    if (k >= po.batch.count) return ForwardDrop.WRITE_FAILED;
    po.batch.offsets[k] = start;
    po.batch.sizes[k] = len + hdr;
    if (sg !== undefined) sg.chunk[k] = 0;
    this.#addEntry(k, ctx.serving);
    return PEER_QUEUED;
  }

  /**
   * emit for a GSO super-packet larger than the MTU allows: the encapsulation header and the
   * chunk headers go to sg.hdrs, the payload stays in place; one peer-output entry. False
   * (nothing appended) when it cannot be split: the caller sends it whole.
   */
  #emitSplit(ctx: PacketContext, flags: number, generation: number, sg: PeerSegments): boolean {
    const po = this.output;
    const k = po.count;
    const at = sg.used;
    const hdrs = sg.hdrs;
    if (k >= po.batch.count) return false;
    if (encapWrite(hdrs, at, flags, ctx.primary, ctx.backup, ctx.backend, ctx.vip, generation) !== OK) return false;
    // Tagged before the split copies the header into every chunk's.
    tag(hdrs, at, this.#tagKey, ctx.info.key, this.#self, ctx.serving);
    const res = this.#split;
    const r = splitHeaders(ctx.buf, ctx.off, ctx.info.l3Len, ctx.vnetBuf!, ctx.vnetOff, hdrs, at, hdrs.length, sg.maxDatagram, res);
    if (r !== SPLIT_OK) return false;
    po.batch.offsets[k] = res.payloadOff;
    po.batch.sizes[k] = res.payloadLen;
    sg.chunk[k] = res.chunk;
    sg.hdrOffs[k] = at;
    sg.hdrLens[k] = res.hdrLen;
    sg.used = at + res.count * res.hdrLen;
    this.#addEntry(k, ctx.serving);
    this.#stats.peerSplitPackets++;
    this.#stats.peerSplitDatagrams += res.count;
    return true;
  }

  /** Completes peer-output entry k (its bytes already set): peer `peer`'s data address and port. */
  #addEntry(k: number, peer: number): void {
    const po = this.output;
    const peers = this.#peers;
    const pa = peers.addrs;
    const o = k * 16;
    const p = peer * 16;
    for (let i = 0; i < 16; i++) po.addrs[o + i] = pa[p + i]!;
    po.ports[k] = peers.ports[peer]!;
    po.count = k + 1;
    this.#stats.peerTxPackets++;
  }
}
