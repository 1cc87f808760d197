/**
 * The forwarding pipeline of one balancer, over one batch of packets read from its TUN device.
 *
 *  1. parse      parsePacket: IPv4/IPv6, extension headers, TCP/UDP/ICMP, the flow key.
 *                Malformed: counted by PacketResult reason, dropped.
 *  2. classify   destination is a VIP → client→VIP direction (step 3);
 *                otherwise a reply from a backend → reply lookup (step 5).
 *  3. admit      the VIP serves the key's protocol and destination port, else counted drop.
 *  4. flow       flow-table hit: the record is the truth (its primary, backup and backend).
 *                Miss: new-flow decision (claims 1-2): flowHash = HalfSipHash(key);
 *                primary/backup = first two live balancers of ranking row flowHash & 0xffff
 *                (no other live: backup = next configured in rank, BACKUP_PENDING, settled
 *                by src/cluster/backup-repair.ts);
 *                backend = weighted-rendezvous row flowHash >>> 16 of the VIP's table; the
 *                record (forward key + NAT reply key) goes into the table (claim 3: the
 *                replication sink queues it for every peer once the flow reaches the
 *                replication threshold).
 *                Miss on a non-initial TCP packet (no SYN): "second chance" (GLB): the
 *                ranked primary is authoritative for its flows, so the packet goes there
 *                undecided unless this balancer is that primary.
 *  5. serve      who transmits to the server: the recorded primary if live (claim 4; this
 *                balancer itself: claim 6), else the backup (claim 5), else the next live
 *                balancer in the flow's rank. Another balancer: the unmodified packet is
 *                encapsulated (src/packet/encap.ts, with the decision in the header) into the
 *                peer batch for one sendmmsg to the peers' data ports. A GSO super-packet
 *                over the balancer network's MTU is split into chunk datagrams instead
 *                (src/packet/gso-split.ts, sent with UDP GSO; PeerOutput.segs), and the peer
 *                appends the chunks back into one packet on receipt (src/packet/gso-merge.ts).
 *  6. reply      (not to a VIP) lookup by reply key. A miss on a packet read from the TUN
 *                device (the record is not here yet: a handshake below the sync threshold, a
 *                flow another receiver decided a moment ago) is steered to the flow's primary:
 *                the forward key is rebuilt from the reply (src/dataplane/reply-steering.ts)
 *                and ranked like a new flow; the packet is encapsulated there with flag REPLY
 *                and the decision found (replySteeredPackets). No VIP fits, this balancer is
 *                the ranked primary, or the packet came from a peer: counted (no_flow), dropped.
 *  7. rewrite    NAT: destination VIP:port → backend:port, or for replies source
 *                backend:port → VIP:port, with incremental checksums (RFC 1624), honouring
 *                virtio NEEDS_CSUM (partial checksums) when the TUN device has offloads on.
 *  8. emit       the packet stays in its slot; kept packets are compacted to the front of
 *                the batch (offsets/sizes, and virtio headers when enabled) for one batched
 *                write back into the TUN device, where the kernel routes it on.
 *     DSR        (VIP with method dsr, when a DsrOutput is wired; else method_unsupported)
 *                steps 1-5 as NAT, but the flow has no reply key, and the serving balancer
 *                does not rewrite: it writes a 14-byte Ethernet header (dst = the backend's
 *                MAC from the neighbour table, src = our interface's, ethertype IPv4/IPv6) in
 *                the headroom and appends the frame to the DSR output for one batched
 *                AF_PACKET send; the VIP stays the destination, the backend holds it on its
 *                loopback and answers the client directly. No MAC yet: dsr_no_neighbour.
 *
 * Backend down (issue 5): a flow's record is the truth, but when the forwarding table marks
 * its backend down (backendUp = 0: unhealthy, drained past its drain timeout, or removed by a
 * reload; draining stays up and keeps its flows), the serving balancer, at the flow's next
 * client→VIP packet:
 *   TCP          does not forward it: the packet is rewritten in place into a minimal RST to
 *                the client, as if from VIP:port (RFC 9293 3.10.7.1: ACK set → seq = SEG.ACK,
 *                no ACK; else seq = 0, ACK, ack = SEG.SEQ + SEG.LEN; fresh IPv4/IPv6 header,
 *                full checksums, virtio header zeroed), emitted in the packet's place, and the
 *                flow is removed (counted: tcpResetBackendDown). A client RST is just dropped.
 *                So the client sees a reset, never a silent hang.
 *   UDP, ICMP    the flow moves to the backend the current table picks for its flow hash
 *                (as a new flow would): the record is re-inserted with the new backend and
 *                its new reply key (entry id, packet count and created time restart), then
 *                the packet is forwarded (counted: udpMovedBackendDown). Replies from the new
 *                backend are un-NATed by the new reply key; late ones of the old are no_flow.
 *   Either way, no eligible backend left → no_backend. ICMP errors and non-first fragments
 *   of such a flow are dropped (no_backend). Peers holding the record apply the same rule
 *   when they serve it (their tables pick the same new backend); the removal is not
 *   replicated (their copies expire).
 *
 * Connection reuse: a new connection (a SYN without ACK or RST) on a 5-tuple whose record
 * lingers (the client reused its port: TIME_WAIT reuse, a NAT in front of many clients) and
 * names a backend that takes no new flows (draining, drained, unhealthy, removed, weight 0) is
 * moved to the backend the table picks now, as IPVS's conn_reuse_mode does, instead of
 * reaching a drained backend or being reset: the record is re-bound (#rebind; counted:
 * synReuseRebound). Every balancer holding the record applies the same rule to the same
 * packet and table, so they agree; the flow's primary replicates the new decision. Any other
 * packet of an existing flow keeps its recorded backend.
 *
 * Packets from peers (processPeerBatch) take steps 1-4 and 7-8 only: they are accepted only
 * from configured balancers' addresses, a decision in the header is adopted for a flow this
 * balancer does not hold yet, and they are never forwarded again.
 *
 * Hot path contract: processBatch allocates nothing, creates no closures and never throws;
 * every drop increments exactly one counter. Time is a coarse `nowSec` read once per batch.
 */
import { PacketInfo } from '../packet/packet-info';
import { parsePacket } from '../packet/parse';
import { rewriteDst, rewriteSrc, CSUM_FULL, CSUM_PARTIAL } from '../packet/nat';
import { PacketResult, PACKET_RESULT_COUNT } from '../packet/result';
import { hashFlowKey } from '../cluster/halfsiphash';
import { NO_BACKEND } from '../cluster/backend-table';
import { FlowTable, InsertResult } from '../flow';
import type { PacketBatch } from './packet-batch';
import { VNET_HDR_LEN, VNET_F_NEEDS_CSUM } from './packet-batch';
import { type ForwardingTable, findVip, KEEP_PORT, METHOD_DSR, BACKEND_ELIGIBLE } from './forwarding-table';
import { ForwardDrop, FORWARD_DROP_COUNT } from './forward-drop';
import {
  EncapInfo,
  parseEncap,
  writeEncapHeader,
  ENCAP_HEADER_LEN,
  ENCAP_VNET_LEN,
  ENCAP_F_NEW_FLOW,
  ENCAP_F_SECOND_CHANCE,
  ENCAP_F_FAILOVER,
  ENCAP_F_VNET,
  ENCAP_F_REPLY,
  ENCAP_NONE_U16,
} from '../packet/encap';
import { buildReplySteering, forwardKeyOfReply, type ReplySteering } from './reply-steering';
import { FlowFlags } from '../flow';
import { writeReplyKey } from './reply-key';
import { internetChecksum, l4Checksum } from '../packet/checksum';
import { type DsrNeighbours, NEIGH_STRIDE, NEIGH_VALID, NEIGH_SRC_MAC } from './neighbours';
import { FragCache } from '../flow/frag-cache';
import { GsoSplit, gsoSplitHeaders, newGsoSplitResult } from '../packet/gso-split';
import { gsoAppend } from '../packet/gso-merge';
import type { SendSegments } from './udp-batch-socket';

// Imported functions bound to module constants: under tsx (tests, dev runs) each use of an
// imported binding is otherwise a getter call that V8 does not inline (measured: 7x slower).
const parse = parsePacket;
const natDst = rewriteDst;
const natSrc = rewriteSrc;
const flowHash = hashFlowKey;
const vipOf = findVip;
const replyKeyOf = writeReplyKey;
const fwdKeyOfReply = forwardKeyOfReply;
const encapParse = parseEncap;
const encapWrite = writeEncapHeader;
const splitHeaders = gsoSplitHeaders;
const mergeNext = gsoAppend;
const SPLIT_OK = GsoSplit.OK;
const ipChecksum = internetChecksum;
const tcpChecksum = l4Checksum;
const TCP_FIN = 0x01;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;
/** processPacket-internal: #backendDown rewrote the packet into a TCP RST to emit. */
const RST_EMITTED = -2;
const F_FROM_PEER = FlowFlags.FROM_PEER;
const F_REPLICATED = FlowFlags.REPLICATED;
const F_BACKUP_PENDING = FlowFlags.BACKUP_PENDING;
const TCP_SYN = 0x02;
/** Largest UDP payload a peer datagram can carry (IPv4: 65535 - 20 - 8). */
const MAX_UDP_PAYLOAD = 65507;
const OK = PacketResult.OK;
const FULL = CSUM_FULL;
const PARTIAL = CSUM_PARTIAL;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const KEY_SPORT = 32;
const KEY_DPORT = 34;
/** Ethernet II header in front of a DSR frame (dst MAC, src MAC, ethertype). */
const ETH_HLEN = 14;

/** What processPacket decided. */
export const Action = { DROP: 0, EMIT: 1, TO_PEER: 2, TO_DSR: 3 } as const;

/** Receives flow-table events the cluster layer replicates (claim 3). */
export interface FlowSink {
  /**
   * A flow decided by this balancer reached its replication threshold (TCP: `syncThreshold`
   * packets, others: the first packet). Called once per flow, on the hot path: O(1), no
   * allocation.
   */
  flowReady(entryId: number): void;
}

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

/** Peers' data-plane addresses: 16 bytes each (IPv4-mapped), and data ports, by balancer index. */
export interface PeerAddresses {
  readonly addrs: Uint8Array;
  readonly ports: Uint16Array;
}

export class ForwarderStats {
  rxPackets = 0;
  /** Encapsulated packets sent to / received from peers. */
  peerTxPackets = 0;
  /** GSO super-packets to peers split to the MTU (each counted once in peerTxPackets), and their datagrams. */
  peerSplitPackets = 0;
  peerSplitDatagrams = 0;
  /** Super-packets over the MTU sent whole (IP-fragmented): no room for their chunk headers, or not TCP. */
  peerSplitSkipped = 0;
  /** Datagrams from peers appended to the one before them (a split super-packet put back together). */
  peerRxMerged = 0;
  peerRxPackets = 0;
  /** Packets sent to a flow's backup or a later holder because its primary was dead. */
  failoverPackets = 0;
  /** Non-initial packets without a record sent to their ranked primary. */
  secondChancePackets = 0;
  /** Replies without a record here sent to their flow's ranked primary (reply steering). */
  replySteeredPackets = 0;
  /**
   * New flows decided while no other balancer was live: their backup is the next configured
   * balancer in rank (flag BACKUP_PENDING) until a live one is assigned.
   */
  flowsNoLiveBackup = 0;
  /** DSR frames queued for the AF_PACKET socket (also counted in forwardPackets). */
  dsrPackets = 0;
  rxBytes = 0;
  txPackets = 0;
  txBytes = 0;
  flowsCreated = 0;
  forwardPackets = 0;
  replyPackets = 0;
  /** TCP packets of flows whose backend is down answered with an RST to the client (flow removed). */
  tcpResetBackendDown = 0;
  /** UDP/ICMP flows moved to another backend because theirs was down. */
  udpMovedBackendDown = 0;
  /**
   * New TCP connections (a SYN without ACK) on a 5-tuple whose lingering record names a backend
   * that takes no new flows (draining, down, weight 0), moved to the table's pick ("Connection
   * reuse").
   */
  synReuseRebound = 0;
  /**
   * Replies matched although their key was not the flow's reply key (docs/design.md
   * "Fragments"): the first fragment of a fragmented reply by its full 5-tuple, a later
   * fragment by the fragment-id cache, an unfragmented reply to a flow created by fragments
   * (keyed without ports) by its 3-tuple.
   */
  replyFirstFragments = 0;
  replyLaterFragments = 0;
  replyThreeTuple = 0;
  /** TUN batches processed, and their sizes: index k counts batches of 2^k .. 2^(k+1)-1 packets. */
  batches = 0;
  readonly batchSizeLog2 = new Float64Array(16);
  /** Drops by PacketResult code (parse and rewrite). */
  readonly packetDrops = new Float64Array(PACKET_RESULT_COUNT);
  /** Drops by ForwardDrop code (decisions). */
  readonly forwardDrops = new Float64Array(FORWARD_DROP_COUNT);
}

export interface ForwarderOptions {
  table: FlowTable;
  forwarding: ForwardingTable;
  hashKey: Uint32Array;
  /** This balancer's index in the config's balancer list. */
  selfIndex: number;
  /** live[i] = 1 when balancer i is alive (this balancer always is). Owned by the cluster layer. */
  live: Uint8Array;
  sink?: FlowSink;
  /** TCP packets a flow must see before it is replicated (IPVS sync_threshold). Default 1. */
  syncThreshold?: number;
  /** Cluster forwarding: peers' data addresses and the output batch. Absent: single balancer. */
  peers?: PeerAddresses;
  peerOutput?: PeerOutput;
  /** DSR: backend MACs and the frame output. Absent: DSR VIPs are dropped (method_unsupported). */
  dsr?: { neighbours: DsrNeighbours; output: DsrOutput };
}

export class Forwarder {
  readonly stats = new ForwarderStats();
  readonly #info = new PacketInfo();
  readonly #split = newGsoSplitResult();
  readonly #table: FlowTable;
  readonly #hashKey: Uint32Array;
  readonly #live: Uint8Array;
  readonly #pick = new Int32Array(2);
  readonly #replyBytes: Uint8Array;
  readonly #replyWords: Uint32Array;
  readonly #fwdBytes: Uint8Array;
  readonly #fwdWords: Uint32Array;
  readonly #sink: FlowSink | undefined;
  readonly #selfIndex: number;
  readonly #syncThreshold: number;
  readonly #peers: PeerAddresses | undefined;
  readonly #peerOut: PeerOutput | undefined;
  readonly #encap = new EncapInfo();
  readonly #dsrNeigh: DsrNeighbours | undefined;
  readonly #dsrOut: DsrOutput | undefined;
  #ft: ForwardingTable;
  /** Backend address → (VIP, backend), for reply steering; rebuilt with the forwarding table. Absent: single balancer. */
  #steer: ReplySteering | undefined;
  /** Per packet: the virtio header of the packet being processed (-1 = none), for peer sends. */
  #vnetOff = -1;
  #vnetBuf: Uint8Array | null = null;
  /** Per packet: the length to emit when it differs from the input (an RST in its place), else -1. */
  #outLen = -1;
  /** Address scratch for building an RST in place (client and VIP addresses). */
  readonly #addrScratch = new Uint8Array(32);
  /** Later fragments of fragmented replies → their flow (src/flow/frag-cache.ts). */
  readonly #frags = new FragCache();
  /** Scratch key for the reply fallbacks (5-tuple of a first fragment, 3-tuple of a reply). */
  readonly #altBytes: Uint8Array;
  readonly #altWords: Uint32Array;

  constructor(opts: ForwarderOptions) {
    this.#table = opts.table;
    this.#ft = opts.forwarding;
    this.#hashKey = opts.hashKey;
    this.#live = opts.live;
    this.#sink = opts.sink;
    this.#selfIndex = opts.selfIndex;
    this.#syncThreshold = Math.max(1, opts.syncThreshold ?? 1);
    this.#peers = opts.peers;
    this.#peerOut = opts.peerOutput;
    this.#dsrNeigh = opts.dsr?.neighbours;
    this.#dsrOut = opts.dsr?.output;
    this.#steer = opts.peerOutput !== undefined ? buildReplySteering(opts.forwarding) : undefined;
    const rb = new ArrayBuffer(40);
    this.#replyBytes = new Uint8Array(rb);
    this.#replyWords = new Uint32Array(rb);
    const fb = new ArrayBuffer(40);
    this.#fwdBytes = new Uint8Array(fb);
    this.#fwdWords = new Uint32Array(fb);
    const ab = new ArrayBuffer(40);
    this.#altBytes = new Uint8Array(ab);
    this.#altWords = new Uint32Array(ab);
  }

  get forwarding(): ForwardingTable {
    return this.#ft;
  }

  /** Swaps in a new forwarding table (between batches). Existing flows keep their records. */
  setForwarding(ft: ForwardingTable): void {
    this.#ft = ft;
    if (this.#steer !== undefined) this.#steer = buildReplySteering(ft);
  }

  /**
   * Processes `count` packets of `batch` in place. Returns how many packets to write: they
   * are compacted to indexes 0..n-1 of the batch (offsets, sizes and, when `vnet`, the
   * virtio headers). `vnet` = the device hands virtio_net_hdr (NEEDS_CSUM → partial
   * checksums). `nowSec`: seconds since process start.
   */
  processBatch(batch: PacketBatch, count: number, vnet: boolean, nowSec: number): number {
    const buf = batch.buf;
    const offsets = batch.offsets;
    const sizes = batch.sizes;
    const vh = batch.vnet;
    const st = this.stats;
    if (this.#peerOut !== undefined) {
      this.#peerOut.count = 0;
      if (this.#peerOut.segs !== undefined) this.#peerOut.segs.used = 0;
    }
    st.batches++;
    st.batchSizeLog2[count > 0 ? Math.min(15, 31 - Math.clz32(count)) : 0]!++;
    if (this.#dsrOut !== undefined) this.#dsrOut.count = 0;
    this.#vnetBuf = vnet ? vh : null;
    let out = 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i]!;
      const len = sizes[i]!;
      st.rxPackets++;
      st.rxBytes += len;
      const mode = vnet && (vh[i * VNET_HDR_LEN]! & VNET_F_NEEDS_CSUM) !== 0 ? PARTIAL : FULL;
      this.#vnetOff = vnet ? i * VNET_HDR_LEN : -1;
      this.#outLen = -1;
      if (this.processPacket(buf, off, len, mode, nowSec) !== Action.EMIT) continue;
      if (this.#outLen >= 0) sizes[i] = this.#outLen;
      if (out !== i) {
        offsets[out] = off;
        sizes[out] = sizes[i]!;
        if (vnet) vh.copyWithin(out * VNET_HDR_LEN, i * VNET_HDR_LEN, (i + 1) * VNET_HDR_LEN);
      }
      out++;
    }
    this.#vnetOff = -1;
    return out;
  }

  /**
   * Processes `count` encapsulated packets received from peers (`batch` filled by
   * UdpBatchSocket.recv; `addrs` = their source addresses, 16 bytes each). Consecutive chunks
   * of a super-packet the sender split (same peer, same encapsulation header, TCP segments
   * that continue each other) are first appended to the first chunk, in its slot. Inner
   * packets to deliver are compacted to indexes 0..n-1 (offsets/sizes point at the inner packet; when
   * `vnet`, batch.vnet holds each one's virtio header: the carried one, or zeros). Returns n.
   */
  processPeerBatch(batch: PacketBatch, count: number, addrs: Uint8Array, vnet: boolean, nowSec: number): number {
    const buf = batch.buf;
    const offsets = batch.offsets;
    const sizes = batch.sizes;
    const vh = batch.vnet;
    const st = this.stats;
    const e = this.#encap;
    if (this.#dsrOut !== undefined) this.#dsrOut.count = 0;
    let out = 0;
    for (let i = 0; i < count; i++) {
      st.peerRxPackets++;
      if (this.#peerIndexOf(addrs, i * 16) < 0) {
        this.#drop(ForwardDrop.NOT_A_PEER);
        continue;
      }
      const r = encapParse(buf, offsets[i]!, sizes[i]!, e);
      if (r !== OK) {
        st.packetDrops[r]!++;
        continue;
      }
      let mode = FULL;
      if (e.vnetOff >= 0) {
        if (!vnet) {
          this.#drop(ForwardDrop.PEER_VNET_UNSUPPORTED);
          continue;
        }
        if ((buf[e.vnetOff]! & VNET_F_NEEDS_CSUM) !== 0) mode = PARTIAL;
      }
      // A split super-packet arrives as consecutive datagrams from the same peer with the same
      // header: append the following chunks to this one (GRO rules, src/packet/gso-merge.ts) so
      // it is rewritten and written out once. The merged packet stays in this datagram's slot.
      let innerLen = e.innerLen;
      if (mode === PARTIAL) {
        const slotEnd = offsets[i]! - batch.headroom + batch.slotSize;
        // A datagram with the same header bytes has its virtio header and inner packet at the
        // same distances from its start.
        const vRel = e.vnetOff - offsets[i]!;
        const iRel = e.innerOff - offsets[i]!;
        while (i + 1 < count) {
          const j = i + 1;
          if (sizes[j]! <= iRel || !sameBytes(addrs, i * 16, addrs, j * 16, 16) || !sameBytes(buf, offsets[i]!, buf, offsets[j]!, ENCAP_HEADER_LEN)) break;
          const n = mergeNext(buf, e.innerOff, innerLen, slotEnd - e.innerOff, buf, e.vnetOff, offsets[j]! + iRel, sizes[j]! - iRel, offsets[j]! + vRel);
          if (n === 0) break;
          innerLen = n;
          i = j;
          st.peerRxPackets++;
          st.peerRxMerged++;
        }
      }
      // The carried virtio header, for a DSR frame (the peer path never encapsulates again).
      this.#vnetBuf = e.vnetOff >= 0 ? buf : null;
      this.#vnetOff = e.vnetOff;
      this.#outLen = -1;
      const act = this.#fromPeer(buf, e.innerOff, innerLen, mode, nowSec);
      this.#vnetBuf = null;
      this.#vnetOff = -1;
      if (act !== Action.EMIT) continue;
      offsets[out] = e.innerOff;
      sizes[out] = this.#outLen >= 0 ? this.#outLen : innerLen;
      if (vnet) {
        const o = out * VNET_HDR_LEN;
        if (e.vnetOff >= 0) for (let k = 0; k < VNET_HDR_LEN; k++) vh[o + k] = buf[e.vnetOff + k]!;
        else vh.fill(0, o, o + VNET_HDR_LEN);
      }
      out++;
    }
    return out;
  }

  #fromPeer(buf: Uint8Array, off: number, len: number, csumMode: number, nowSec: number): number {
    const info = this.#info;
    const r = parse(buf, off, len, info);
    if (r !== OK) {
      this.stats.packetDrops[r]!++;
      return Action.DROP;
    }
    const vip = vipOf(this.#ft, buf, info.dstOff, info.addrLen);
    if (vip < 0) return this.#toClient(buf, off, csumMode, nowSec, true);
    return this.#toBackend(buf, off, vip, csumMode, nowSec, true);
  }

  /** One packet at buf[off .. off+len): returns an Action. Rewrites in place when EMIT. */
  processPacket(buf: Uint8Array, off: number, len: number, csumMode: number, nowSec: number): number {
    const info = this.#info;
    const st = this.stats;
    const r = parse(buf, off, len, info);
    if (r !== OK) {
      st.packetDrops[r]!++;
      return Action.DROP;
    }
    const ft = this.#ft;
    const vip = vipOf(ft, buf, info.dstOff, info.addrLen);
    return vip >= 0 ? this.#toBackend(buf, off, vip, csumMode, nowSec, false) : this.#toClient(buf, off, csumMode, nowSec, false);
  }

  #toBackend(buf: Uint8Array, off: number, vip: number, csumMode: number, nowSec: number, fromPeer: boolean): number {
    const info = this.#info;
    const st = this.stats;
    const ft = this.#ft;
    const key = info.key;
    const proto = key[36]!;
    if (ft.vipProto[vip * 256 + proto] === 0) return this.#drop(ForwardDrop.PROTOCOL_NOT_SERVED);
    if ((proto === IPPROTO_TCP || proto === IPPROTO_UDP) && info.isFragment === 0 && info.innerIsFragment === 0) {
      const dport = (key[KEY_DPORT]! << 8) | key[KEY_DPORT + 1]!;
      if (((ft.vipPorts[vip]![dport >>> 3]! >>> (dport & 7)) & 1) === 0) return this.#drop(ForwardDrop.PORT_NOT_SERVED);
    }
    // Before the flow step: a VIP this data path cannot serve must not create (and replicate) records.
    if (ft.vipMethod[vip] === METHOD_DSR && this.#dsrOut === undefined) return this.#drop(ForwardDrop.METHOD_UNSUPPORTED);
    const table = this.#table;
    const ref = table.lookup(info.keyWords, nowSec);
    let id: number;
    let encapFlags = 0;
    if (ref >= 0) {
      // A client→VIP packet can only match a forward key: reply keys have a backend source.
      if ((ref & 1) !== 0) return this.#drop(ForwardDrop.FLOW_CONFLICT);
      id = ref >>> 1;
      if (proto === IPPROTO_TCP && (info.tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN) {
        // Connection reuse: a SYN on a lingering record whose backend takes no new flows.
        const upv = ft.backendUp[table.vip(id)];
        if (table.vip(id) !== vip || upv === undefined || (upv[table.backend(id)]! & BACKEND_ELIGIBLE) === 0) {
          const nb = ft.backendTables[vip]!.lookup(flowHash(this.#hashKey, key));
          if (nb === NO_BACKEND) return this.#drop(ForwardDrop.NO_BACKEND);
          id = this.#rebind(id, vip, nb, nowSec, false);
          if (id < 0) return Action.DROP;
          st.synReuseRebound++;
        }
      }
    } else {
      if (info.isIcmpError !== 0) return this.#drop(ForwardDrop.ICMP_ERROR_NO_FLOW);
      const e = this.#encap;
      if (fromPeer && (e.flags & ENCAP_F_SECOND_CHANCE) === 0 && e.vip === vip && e.backend !== ENCAP_NONE_U16) {
        // The sender decided (NEW_FLOW) or holds the record (failover): adopt its decision.
        id = this.#adopt(vip, nowSec);
      } else if (!fromPeer && proto === IPPROTO_TCP && (info.tcpFlags & TCP_SYN) === 0 && info.isFragment === 0) {
        // Second chance: a mid-stream packet of a flow we hold no record of. The ranked
        // primary is authoritative; unless that is us, it decides.
        const h = flowHash(this.#hashKey, key);
        const pick = this.#pick;
        ft.ranking.pickLive(h & 0xffff, this.#live, pick);
        const rp = pick[0]!;
        if (rp >= 0 && rp !== this.#selfIndex && this.#peerOut !== undefined) {
          st.secondChancePackets++;
          return this.#toPeer(buf, off, rp, ENCAP_F_SECOND_CHANCE, ENCAP_NONE_U16 & 0xff, ENCAP_NONE_U16 & 0xff, ENCAP_NONE_U16, vip);
        }
        id = this.#newFlow(vip, nowSec);
      } else {
        id = this.#newFlow(vip, nowSec);
      }
      if (id < 0) return Action.DROP;
      encapFlags = ENCAP_F_NEW_FLOW;
    }
    table.touch(id, nowSec, info.tcpFlags, 0);
    if (this.#sink !== undefined && (table.flags(id) & F_FROM_PEER) === 0) {
      const thr = proto === IPPROTO_TCP ? this.#syncThreshold : 1;
      if (table.packets(id) === thr) this.#sink.flowReady(id);
    }
    if (!fromPeer) {
      const primary = table.primary(id);
      const backup = table.backup(id);
      let serving = primary;
      if (this.#live[primary] === 0) {
        serving = backup !== primary && this.#live[backup] !== 0 ? backup : this.#nextHolder(primary, backup);
        encapFlags |= ENCAP_F_FAILOVER;
        st.failoverPackets++;
      }
      if (serving !== this.#selfIndex && serving >= 0 && this.#peerOut !== undefined) {
        return this.#toPeer(buf, off, serving, encapFlags, primary, backup, table.backend(id), table.vip(id));
      }
    }
    // The record's VIP and backend are the truth for an existing flow.
    const fv = table.vip(id);
    let be = table.backend(id);
    const upv = ft.backendUp[fv];
    // Down: backendUp 0, or an index the table does not have (a reload's "removed" mark, NO_BACKEND).
    if (upv !== undefined && (upv[be] ?? 0) === 0) {
      id = this.#backendDown(buf, off, id, fv, nowSec);
      if (id < 0) return id === RST_EMITTED ? Action.EMIT : Action.DROP;
      be = table.backend(id);
    }
    const addrs = ft.backendAddr[fv];
    if (addrs === undefined || be * 16 >= addrs.length) return this.#drop(ForwardDrop.NO_BACKEND);
    if (ft.vipMethod[fv] === METHOD_DSR) return this.#toDsr(buf, off, fv, be);
    // Port rewrite applies to TCP/UDP keys only (incl. ICMP errors quoting them); an echo's "port" is its identifier.
    const port = proto === IPPROTO_TCP || proto === IPPROTO_UDP ? ft.backendPort[fv]![be]! : KEEP_PORT;
    const rr = natDst(buf, off, info, addrs, be * 16 + (info.addrLen === 4 ? 12 : 0), port, csumMode);
    if (rr !== OK) {
      st.packetDrops[rr]!++;
      return Action.DROP;
    }
    st.forwardPackets++;
    st.txPackets++;
    st.txBytes += info.l3Len;
    return Action.EMIT;
  }

  /**
   * A reply whose key is in no index (docs/design.md "Fragments"). Returns a reply ref
   * ((id << 1) | 1) or -1. Runs only on a miss, so it costs nothing on the common path.
   *   first fragment     look up its 5-tuple (ports from its L4 header); on a hit, record the
   *                      datagram's (src, dst, proto, fragment id) → flow in the cache
   *   later fragment     the cache
   *   unfragmented TCP/UDP  its 3-tuple (ports 0): a flow the client created with fragments
   */
  #replyFallback(nowSec: number): number {
    const info = this.#info;
    const table = this.#table;
    const proto = info.key[36]!;
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return -1;
    if (info.isFragment !== 0) {
      if (info.isFirstFragment === 0) {
        const id = this.#frags.lookup(info.keyWords, info.fragId, nowSec, table);
        if (id < 0 || !table.hasReplyKey(id)) return -1;
        this.stats.replyLaterFragments++;
        return (id << 1) | 1;
      }
      const ref = this.#lookupWithPorts(info.sport, info.dport, nowSec);
      if (ref < 0 || (ref & 1) === 0) return -1;
      this.#frags.insert(info.keyWords, info.fragId, ref >>> 1, table.created(ref >>> 1), nowSec);
      this.stats.replyFirstFragments++;
      return ref;
    }
    const ref = this.#lookupWithPorts(0, 0, nowSec);
    if (ref < 0 || (ref & 1) === 0) return -1;
    this.stats.replyThreeTuple++;
    return ref;
  }

  /** table.lookup of this packet's key with its ports replaced by `sport`/`dport`. */
  #lookupWithPorts(sport: number, dport: number, nowSec: number): number {
    const alt = this.#altBytes;
    alt.set(this.#info.key);
    alt[KEY_SPORT] = sport >>> 8;
    alt[KEY_SPORT + 1] = sport & 0xff;
    alt[KEY_DPORT] = dport >>> 8;
    alt[KEY_DPORT + 1] = dport & 0xff;
    return this.#table.lookup(this.#altWords, nowSec);
  }

  #toClient(buf: Uint8Array, off: number, csumMode: number, nowSec: number, fromPeer: boolean): number {
    const info = this.#info;
    const st = this.stats;
    const table = this.#table;
    let ref = table.lookup(info.keyWords, nowSec);
    if (ref < 0) ref = this.#replyFallback(nowSec);
    if (ref < 0 || (ref & 1) === 0) return fromPeer ? this.#drop(ForwardDrop.NO_FLOW) : this.#steerReply(buf, off);
    const id = ref >>> 1;
    table.touch(id, nowSec, info.tcpFlags, 1);
    if (this.#sink !== undefined && info.key[36] === IPPROTO_TCP && (table.flags(id) & F_FROM_PEER) === 0) {
      if (table.packets(id) === this.#syncThreshold) this.#sink.flowReady(id);
    }
    const ft = this.#ft;
    const vip = table.vip(id);
    if (vip >= ft.vipCount) return this.#drop(ForwardDrop.NO_FLOW);
    let port = KEEP_PORT;
    const bp = ft.backendPort[vip]![table.backend(id)];
    if (bp !== undefined && bp !== KEEP_PORT) {
      // The backend port differs from the VIP port: restore the client's original VIP port.
      table.copyKey(id, 0, this.#fwdWords, 0);
      port = (this.#fwdBytes[KEY_DPORT]! << 8) | this.#fwdBytes[KEY_DPORT + 1]!;
      // A fragment flow's key has no ports (docs/design.md "Fragments"): restore the VIP's
      // port when it has only one; with several it is unknown, so leave the port as the
      // backend sent it rather than writing 0.
      if (port === 0) port = ft.vipSolePort[vip]!;
    }
    const rr = natSrc(buf, off, info, ft.vipAddr, vip * 16 + (info.addrLen === 4 ? 12 : 0), port, csumMode);
    if (rr !== OK) {
      st.packetDrops[rr]!++;
      return Action.DROP;
    }
    st.replyPackets++;
    st.txPackets++;
    st.txBytes += info.l3Len;
    return Action.EMIT;
  }

  /**
   * Reply steering (step 6): the current reply has no record here; send it to its flow's
   * ranked primary (the first live balancer of the rebuilt forward key's ranking row), which
   * decided or adopted the flow and so holds its record. Drops (no_flow) when no VIP fits the
   * reply, it is an ICMP error or a fragment, or this balancer is that primary.
   */
  #steerReply(buf: Uint8Array, off: number): number {
    const info = this.#info;
    const sr = this.#steer;
    if (sr === undefined || this.#peerOut === undefined || info.isIcmpError !== 0 || info.isFragment !== 0) return this.#drop(ForwardDrop.NO_FLOW);
    const ft = this.#ft;
    const vip = fwdKeyOfReply(ft, sr, info.key, this.#altBytes);
    if (vip < 0) return this.#drop(ForwardDrop.NO_FLOW);
    const pick = this.#pick;
    ft.ranking.pickLive(flowHash(this.#hashKey, this.#altBytes) & 0xffff, this.#live, pick);
    const rp = pick[0]!;
    if (rp < 0 || rp === this.#selfIndex) return this.#drop(ForwardDrop.NO_FLOW);
    this.stats.replySteeredPackets++;
    const bk = pick[1]! < 0 ? rp : pick[1]!;
    return this.#toPeer(buf, off, rp, ENCAP_F_REPLY, rp, bk, ENCAP_NONE_U16, vip);
  }

  /** The next live balancer in the current packet's flow rank, skipping the dead primary and backup. */
  #nextHolder(primary: number, backup: number): number {
    const h = flowHash(this.#hashKey, this.#info.key);
    const n = this.#ft.ranking.nextLiveHolder(h & 0xffff, this.#live, primary, backup);
    return n < 0 ? this.#selfIndex : n;
  }

  /**
   * Encapsulates the current (unmodified) packet to balancer `peer`'s data port: header in
   * the headroom before the packet (plus the virtio header when the packet has one with
   * offload state), appended to the peer output batch. Never throws.
   */
  #toPeer(buf: Uint8Array, off: number, peer: number, flags: number, primary: number, backup: number, backend: number, vip: number): number {
    const po = this.#peerOut!;
    const len = this.#info.l3Len;
    let hdr = ENCAP_HEADER_LEN;
    const vb = this.#vnetBuf;
    const vo = this.#vnetOff;
    if (vb !== null && vo >= 0 && (vb[vo] !== 0 || vb[vo + 1] !== 0)) {
      // Partial checksum and/or GSO super-packet: carry the virtio header so the peer's
      // kernel completes it (flag VNET).
      hdr += ENCAP_VNET_LEN;
      flags |= ENCAP_F_VNET;
      for (let k = 0; k < ENCAP_VNET_LEN; k++) buf[off - ENCAP_VNET_LEN + k] = vb[vo + k]!;
    }
    const sg = po.segs;
    if (sg !== undefined && sg.maxDatagram > 0 && (flags & ENCAP_F_VNET) !== 0 && len + hdr > sg.maxDatagram) {
      // A TCP packet (GSO or one segment) over the MTU: split it into chunks (no IP fragmentation).
      if (this.#toPeerSplit(buf, off, len, peer, flags, primary, backup, backend, vip, sg)) return Action.TO_PEER;
      this.stats.peerSplitSkipped++;
    }
    if (len + hdr > MAX_UDP_PAYLOAD) return this.#drop(ForwardDrop.PEER_PACKET_TOO_BIG);
    const start = off - hdr;
    if (encapWrite(buf, start, flags, primary, backup, backend, vip, this.#ft.generation) !== OK) {
      return this.#drop(ForwardDrop.PEER_PACKET_TOO_BIG);
    }
    const k = po.count;
    if (k >= po.batch.count) return this.#drop(ForwardDrop.WRITE_FAILED);
    po.batch.offsets[k] = start;
    po.batch.sizes[k] = len + hdr;
    if (sg !== undefined) sg.chunk[k] = 0;
    this.#addPeerEntry(po, k, peer);
    return Action.TO_PEER;
  }

  /**
   * #toPeer for a GSO super-packet larger than the MTU allows: the encapsulation header and
   * the chunk headers go to sg.hdrs, the payload stays in place; one peer-output entry.
   * False (nothing appended) when it cannot be split: the caller sends it whole.
   */
  #toPeerSplit(
    buf: Uint8Array, off: number, len: number, peer: number, flags: number,
    primary: number, backup: number, backend: number, vip: number, sg: PeerSegments,
  ): boolean {
    const po = this.#peerOut!;
    const k = po.count;
    const at = sg.used;
    const hdrs = sg.hdrs;
    if (k >= po.batch.count) return false;
    if (encapWrite(hdrs, at, flags, primary, backup, backend, vip, this.#ft.generation) !== OK) return false;
    const res = this.#split;
    const r = splitHeaders(buf, off, len, this.#vnetBuf!, this.#vnetOff, hdrs, at, hdrs.length, sg.maxDatagram, res);
    if (r !== SPLIT_OK) return false;
    po.batch.offsets[k] = res.payloadOff;
    po.batch.sizes[k] = res.payloadLen;
    sg.chunk[k] = res.chunk;
    sg.hdrOffs[k] = at;
    sg.hdrLens[k] = res.hdrLen;
    sg.used = at + res.count * res.hdrLen;
    this.#addPeerEntry(po, k, peer);
    this.stats.peerSplitPackets++;
    this.stats.peerSplitDatagrams += res.count;
    return true;
  }

  /** Completes peer-output entry k (its bytes already set): peer `peer`'s data address and port. */
  #addPeerEntry(po: PeerOutput, k: number, peer: number): void {
    const peers = this.#peers!;
    const pa = peers.addrs;
    const o = k * 16;
    const p = peer * 16;
    for (let i = 0; i < 16; i++) po.addrs[o + i] = pa[p + i]!;
    po.ports[k] = peers.ports[peer]!;
    po.count = k + 1;
    this.stats.peerTxPackets++;
  }

  /**
   * DSR (this balancer serves): the unmodified packet, behind an Ethernet header to backend
   * `be`'s MAC written into the headroom, appended to the DSR output. Never throws.
   */
  #toDsr(buf: Uint8Array, off: number, vip: number, be: number): number {
    const out = this.#dsrOut;
    const nb = this.#dsrNeigh;
    if (out === undefined || nb === undefined) return this.#drop(ForwardDrop.METHOD_UNSUPPORTED);
    const rows = nb.rows[vip];
    const o = be * NEIGH_STRIDE;
    if (rows === undefined || o + NEIGH_STRIDE > rows.length || rows[o + NEIGH_VALID] !== 1) {
      nb.missing(vip, be);
      return this.#drop(ForwardDrop.DSR_NO_NEIGHBOUR);
    }
    const k = out.count;
    if (k >= out.offsets.length || (k > 0 && out.buf !== buf) || off < ETH_HLEN) return this.#drop(ForwardDrop.WRITE_FAILED);
    const info = this.#info;
    const len = info.l3Len;
    // The virtio header first: a peer's carried header may sit right before the packet, where
    // the Ethernet header goes.
    const ov = out.vnet;
    if (ov !== null) {
      const d = k * VNET_HDR_LEN;
      const vb = this.#vnetBuf;
      const vo = this.#vnetOff;
      if (vb !== null && vo >= 0 && (vb[vo] !== 0 || vb[vo + 1] !== 0)) {
        for (let i = 0; i < VNET_HDR_LEN; i++) ov[d + i] = vb[vo + i]!;
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
    if (info.addrLen === 4) {
      buf[start + 12] = 0x08;
      buf[start + 13] = 0x00;
    } else {
      buf[start + 12] = 0x86;
      buf[start + 13] = 0xdd;
    }
    out.buf = buf;
    out.offsets[k] = start;
    out.sizes[k] = len + ETH_HLEN;
    out.ifindex[k] = nb.ifindex[vip]![be]!;
    out.count = k + 1;
    const st = this.stats;
    st.dsrPackets++;
    st.forwardPackets++;
    st.txPackets++;
    st.txBytes += len;
    return Action.TO_DSR;
  }

  /** Index of the balancer whose data address is addrs[off..off+16), or -1. */
  #peerIndexOf(addrs: Uint8Array, off: number): number {
    const peers = this.#peers;
    if (peers === undefined) return -1;
    const pa = peers.addrs;
    const n = pa.length >>> 4;
    for (let b = 0; b < n; b++) {
      if (b === this.#selfIndex) continue;
      let i = 0;
      const base = b * 16;
      for (; i < 16; i++) if (pa[base + i] !== addrs[off + i]) break;
      if (i === 16) return b;
    }
    return -1;
  }

  /** Inserts the decision carried by the current peer packet's header (flow learnt from a peer). */
  #adopt(vip: number, nowSec: number): number {
    const e = this.#encap;
    const ft = this.#ft;
    const n = ft.config.balancers.length;
    const addrs = ft.backendAddr[vip]!;
    if (e.primary >= n || e.backup >= n || e.backend * 16 >= addrs.length) {
      // Decided on another table than ours (or garbage): decide ourselves.
      this.#drop(ForwardDrop.PEER_DECISION_INVALID);
      return this.#newFlow(vip, nowSec);
    }
    let replyWords: Uint32Array | null = null;
    if (ft.vipMethod[vip] !== METHOD_DSR) {
      if (!replyKeyOf(ft, vip, e.backend, this.#info.key, 0, this.#replyBytes)) return -1;
      replyWords = this.#replyWords;
    }
    const id = this.#table.insert(this.#info.keyWords, replyWords, e.primary, e.backup, vip, e.backend, nowSec);
    if (id < 0) {
      this.#drop(id === InsertResult.FULL ? ForwardDrop.TABLE_FULL : ForwardDrop.FLOW_CONFLICT);
      return -1;
    }
    this.#table.updateFlags(id, F_FROM_PEER, 0);
    return id;
  }

  /** New-flow decision (claims 1-2) and record (claim 3). Returns the entry id or -1 (counted). */
  #newFlow(vip: number, nowSec: number): number {
    const info = this.#info;
    const ft = this.#ft;
    const key = info.key;
    const h = flowHash(this.#hashKey, key);
    const pick = this.#pick;
    ft.ranking.pickLive(h & 0xffff, this.#live, pick);
    const primary = pick[0]!;
    if (primary < 0) {
      this.#drop(ForwardDrop.NO_BALANCER);
      return -1;
    }
    // No other balancer live (a peer still starting, or all dead): the backup is the next
    // configured balancer in the flow's rank, never the primary itself while another exists.
    // Marked BACKUP_PENDING: the cluster layer gives it a live backup once one is up
    // (src/cluster/backup-repair.ts).
    let backup = pick[1]!;
    const pending = backup < 0;
    if (pending) backup = ft.ranking.nextInRank(h & 0xffff, primary);
    const be = ft.backendTables[vip]!.lookup(h);
    if (be === NO_BACKEND) {
      this.#drop(ForwardDrop.NO_BACKEND);
      return -1;
    }
    let replyWords: Uint32Array | null = null;
    if (ft.vipMethod[vip] !== METHOD_DSR) {
      if (!replyKeyOf(ft, vip, be, key, 0, this.#replyBytes)) {
        this.#drop(ForwardDrop.NO_BACKEND);
        return -1;
      }
      replyWords = this.#replyWords;
    }
    const id = this.#table.insert(info.keyWords, replyWords, primary, backup, vip, be, nowSec);
    if (id < 0) {
      this.#drop(id === InsertResult.FULL ? ForwardDrop.TABLE_FULL : ForwardDrop.FLOW_CONFLICT);
      return -1;
    }
    this.stats.flowsCreated++;
    if (pending && backup !== primary) {
      this.#table.updateFlags(id, F_BACKUP_PENDING, 0);
      this.stats.flowsNoLiveBackup++;
    }
    return id;
  }

  /**
   * The current packet (client→VIP) belongs to flow `id` whose backend is down (header
   * "Backend down"). Returns the flow's new entry id (UDP/ICMP moved: forward the packet),
   * RST_EMITTED (TCP: the packet is now an RST to the client, #outLen set, flow removed), or
   * -1 (dropped, counted).
   */
  #backendDown(buf: Uint8Array, off: number, id: number, vip: number, nowSec: number): number {
    const info = this.#info;
    const table = this.#table;
    const ft = this.#ft;
    const proto = info.key[36]!;
    if (proto === IPPROTO_TCP) {
      if (info.isIcmpError !== 0 || (info.isFragment !== 0 && info.isFirstFragment === 0) || info.csumOff < 0) {
        this.#drop(ForwardDrop.NO_BACKEND);
        return -1;
      }
      table.remove(id);
      if ((info.tcpFlags & TCP_RST) !== 0 || info.isFragment !== 0) {
        // Never answer a reset with a reset (RFC 9293 3.10.7.1); a fragment has no whole segment.
        this.#drop(ForwardDrop.NO_BACKEND);
        return -1;
      }
      this.#outLen = this.#writeRst(buf, off);
      const st = this.stats;
      st.tcpResetBackendDown++;
      st.txPackets++;
      st.txBytes += this.#outLen;
      return RST_EMITTED;
    }
    if (info.isIcmpError !== 0) {
      this.#drop(ForwardDrop.NO_BACKEND);
      return -1;
    }
    const nb = ft.backendTables[vip]!.lookup(flowHash(this.#hashKey, info.key));
    if (nb === NO_BACKEND) {
      this.#drop(ForwardDrop.NO_BACKEND);
      return -1;
    }
    const nid = this.#rebind(id, vip, nb, nowSec, true);
    if (nid >= 0) this.stats.udpMovedBackendDown++;
    return nid;
  }

  /**
   * Moves flow `id` (this packet's forward key) to backend `nb` of `vip`, keeping its primary
   * and backup. NAT: the reply key changes with the backend, so the record is re-inserted
   * (entry id, packet count and created time restart; a peer-learnt flag is kept). DSR: the
   * decision is updated in place. `ready`: hand a flow decided here to the replication sink
   * at once (else the usual threshold applies). Returns the flow's id, or -1 (drop counted).
   * Every balancer that holds the record and sees the packet makes the same move: `nb` comes
   * from the forwarding table, which is the same everywhere.
   */
  #rebind(id: number, vip: number, nb: number, nowSec: number, ready: boolean): number {
    const info = this.#info;
    const table = this.#table;
    const ft = this.#ft;
    const primary = table.primary(id);
    const backup = table.backup(id);
    // The flow's primary owns the new decision (replicates it; peers adopt a primary's record);
    // anyone else keeps a peer-learnt record peer-learnt (the primary makes the same move).
    const fromPeer = primary !== this.#selfIndex ? table.flags(id) & F_FROM_PEER : 0;
    if (ft.vipMethod[vip] === METHOD_DSR) {
      table.setDecision(id, primary, backup, nb);
      if (table.vip(id) !== vip) table.setVip(id, vip);
      if (fromPeer === 0) {
        // In place: forget "replicated" too, so the new decision is sent again.
        table.updateFlags(id, 0, F_FROM_PEER | F_REPLICATED);
        if (ready && this.#sink !== undefined) this.#sink.flowReady(id);
      }
      return id;
    }
    if (!replyKeyOf(ft, vip, nb, info.key, 0, this.#replyBytes)) {
      this.#drop(ForwardDrop.NO_BACKEND);
      return -1;
    }
    table.remove(id);
    const nid = table.insert(info.keyWords, this.#replyWords, primary, backup, vip, nb, nowSec);
    if (nid < 0) {
      this.#drop(nid === InsertResult.FULL ? ForwardDrop.TABLE_FULL : ForwardDrop.FLOW_CONFLICT);
      return -1;
    }
    table.touch(nid, nowSec, 0, 0);
    if (fromPeer !== 0) table.updateFlags(nid, F_FROM_PEER, 0);
    else if (ready && this.#sink !== undefined) this.#sink.flowReady(nid);
    return nid;
  }

  /**
   * Rewrites the current TCP packet (client→VIP, at buf[off..]) in place into an RST from
   * VIP:port to the client (RFC 9293 3.10.7.1): IPv4 (20-byte header, DF, TTL 64) or IPv6
   * (hop limit 64) + a 20-byte TCP header, window 0, full checksums. The RST is never longer
   * than the packet (IPv4 >= 40 bytes, IPv6 >= 60). Zeroes the packet's virtio header. Returns
   * the RST's length.
   */
  #writeRst(buf: Uint8Array, off: number): number {
    const info = this.#info;
    const l4 = info.l4Off;
    const flags = info.tcpFlags;
    const seq = ((buf[l4 + 4]! << 24) | (buf[l4 + 5]! << 16) | (buf[l4 + 6]! << 8) | buf[l4 + 7]!) >>> 0;
    const ackNo = ((buf[l4 + 8]! << 24) | (buf[l4 + 9]! << 16) | (buf[l4 + 10]! << 8) | buf[l4 + 11]!) >>> 0;
    let segLen = info.l4Len - (buf[l4 + 12]! >>> 4) * 4;
    if ((flags & TCP_SYN) !== 0) segLen++;
    if ((flags & TCP_FIN) !== 0) segLen++;
    const cport = info.sport;
    const vport = info.dport;
    const alen = info.addrLen;
    const sc = this.#addrScratch;
    for (let i = 0; i < alen; i++) {
      sc[i] = buf[info.srcOff + i]!;
      sc[16 + i] = buf[info.dstOff + i]!;
    }
    let t: number;
    let srcOff: number;
    if (info.version === 4) {
      t = off + 20;
      buf[off] = 0x45;
      buf[off + 1] = 0;
      buf[off + 2] = 0;
      buf[off + 3] = 40;
      buf[off + 4] = 0;
      buf[off + 5] = 0;
      buf[off + 6] = 0x40; // DF
      buf[off + 7] = 0;
      buf[off + 8] = 64;
      buf[off + 9] = IPPROTO_TCP;
      buf[off + 10] = 0;
      buf[off + 11] = 0;
      srcOff = off + 12;
    } else {
      t = off + 40;
      buf[off] = 0x60;
      buf[off + 1] = 0;
      buf[off + 2] = 0;
      buf[off + 3] = 0;
      buf[off + 4] = 0;
      buf[off + 5] = 20;
      buf[off + 6] = IPPROTO_TCP;
      buf[off + 7] = 64;
      srcOff = off + 8;
    }
    const dstOff = srcOff + alen;
    for (let i = 0; i < alen; i++) {
      buf[srcOff + i] = sc[16 + i]!; // from the VIP
      buf[dstOff + i] = sc[i]!; // to the client
    }
    if (info.version === 4) {
      const c = ipChecksum(buf, off, 20);
      buf[off + 10] = c >>> 8;
      buf[off + 11] = c & 0xff;
    }
    let rseq = 0;
    let rack = 0;
    let rflags = TCP_RST;
    if ((flags & TCP_ACK) !== 0) rseq = ackNo;
    else {
      rack = (seq + segLen) >>> 0;
      rflags = TCP_RST | TCP_ACK;
    }
    buf[t] = vport >>> 8;
    buf[t + 1] = vport & 0xff;
    buf[t + 2] = cport >>> 8;
    buf[t + 3] = cport & 0xff;
    buf[t + 4] = rseq >>> 24;
    buf[t + 5] = (rseq >>> 16) & 0xff;
    buf[t + 6] = (rseq >>> 8) & 0xff;
    buf[t + 7] = rseq & 0xff;
    buf[t + 8] = rack >>> 24;
    buf[t + 9] = (rack >>> 16) & 0xff;
    buf[t + 10] = (rack >>> 8) & 0xff;
    buf[t + 11] = rack & 0xff;
    buf[t + 12] = 5 << 4;
    buf[t + 13] = rflags;
    for (let i = 14; i < 20; i++) buf[t + i] = 0; // window 0, checksum, urgent pointer
    const c = tcpChecksum(buf, srcOff, dstOff, alen, IPPROTO_TCP, t, 20, t + 16, true);
    buf[t + 16] = c >>> 8;
    buf[t + 17] = c & 0xff;
    const vb = this.#vnetBuf;
    const vo = this.#vnetOff;
    if (vb !== null && vo >= 0) vb.fill(0, vo, vo + VNET_HDR_LEN);
    return t + 20 - off;
  }

  #drop(reason: number): number {
    this.stats.forwardDrops[reason]!++;
    return Action.DROP;
  }
}

/** a[ao .. ao+n) equals b[bo .. bo+n). */
function sameBytes(a: Uint8Array, ao: number, b: Uint8Array, bo: number, n: number): boolean {
  for (let k = 0; k < n; k++) if (a[ao + k] !== b[bo + k]) return false;
  return true;
}
