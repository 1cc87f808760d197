/**
 * The forwarding pipeline of one balancer, over one batch of packets read from its TUN device
 * (or received from peers): the decisions. The batch loops that feed it and send what it
 * decided live in src/dataplane/data-plane.ts; the bytes of what it emits are written by
 * src/dataplane/peer-output.ts (encapsulation, split), src/dataplane/dsr-output.ts (Ethernet
 * framing), src/packet/nat.ts (rewrite) and src/packet/tcp-rst.ts (the reset of "Backend
 * down"). Each packet's state is one preallocated PacketContext (src/dataplane/packet-context.ts).
 * The steps below run in #process (1, 2), then in one method per direction: #toServer (3, 4,
 * 5, 7: a packet to a VIP) or #reply (6, 7), each step a section headed by its number and
 * name; their rare branches are methods (#flowMiss, #reuse, #serveElsewhere, #backendDown,
 * #replyFallback). One method per direction, not one per step: V8 then compiles an established
 * flow's packet as one unit (docs/performance.md "One method per direction").
 *
 *  1. parse      parsePacket: IPv4/IPv6, extension headers, TCP/UDP/ICMP, the flow key.
 *                Malformed: counted by PacketResult reason, dropped.
 *  2. classify   destination is a VIP → client→VIP direction (step 3);
 *                otherwise a reply from a backend → reply lookup (step 5).
 *  3. admit      the VIP serves the key's protocol and destination port, else counted drop
 *                (a first fragment: its L4 header's port; a later fragment has none and
 *                passes only for a flow its first fragment created: step 4).
 *  4. flow       flow-table hit: the record is the truth (its primary, backup and backend).
 *                Miss: new-flow decision (claims 1-2): flowHash = HalfSipHash(key);
 *                primary/backup = first two live balancers of ranking row flowHash & 0xffff
 *                (no other live: backup = next configured in rank, BACKUP_PENDING, settled
 *                by src/cluster/backup-repair.ts);
 *                backend = weighted-rendezvous row flowHash >>> 16 of the VIP's table (a VIP
 *                with source affinity: the row of its client address's affinity hash, the
 *                same for all of a client's flows: src/decision/affinity.ts, pickBackend); the
 *                record (forward key + NAT reply key) goes into the table (claim 3: the
 *                flow's primary hands it to the replication sink for every peer once the
 *                flow is CONFIRMED: FlowTable.touch, src/cluster/replication-policy.ts).
 *                Miss on a non-initial TCP packet (no SYN): "second chance" (GLB): the
 *                ranked primary is authoritative for its flows, so the packet goes there
 *                undecided unless this balancer is that primary. Miss on a later fragment
 *                (not from a peer): dropped (fragment_no_flow), it creates nothing.
 *  5. serve      who transmits to the server: the recorded primary if live (claim 4; this
 *                balancer itself: claim 6), else the backup (claim 5), else the next live
 *                balancer in the flow's rank. Another balancer: the unmodified packet is
 *                encapsulated (src/packet/encap.ts, with the decision in the header) into the
 *                peer batch for one sendmmsg to the peers' data ports. A GSO super-packet
 *                over the balancer network's MTU is split into chunk datagrams instead
 *                (src/packet/gso-split.ts, sent with UDP GSO; PeerOutput.segs), and the peer
 *                appends the chunks back into one packet on receipt (src/packet/gso-merge.ts).
 *  6. reply      (not to a VIP) lookup by reply key; a miss is steered to the flow's ranked
 *                primary (#steerReply) or counted (no_flow) and dropped. A reply of a flow
 *                not confirmed yet goes to the flow's recorded primary (#replyToPrimary),
 *                which must see it to confirm the flow.
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
 *   UDP, ICMP    the flow moves to the backend the current table picks for it (as for a new
 *                flow: its flow hash, or its client's affinity hash): the record is
 *                re-inserted with the new backend and its new reply key (entry id, packet
 *                count and created time restart), then
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
 * moved to the backend the table picks now (as for a new flow, source affinity included), as
 * IPVS's conn_reuse_mode does, instead of reaching a drained backend or being reset: the
 * record is re-bound (#rebind; counted:
 * synReuseRebound). Every balancer holding the record applies the same rule to the same
 * packet and table, so they agree; the flow's primary replicates the new decision. A record
 * whose backend still takes new flows keeps it, and the primary replicates it again when the
 * new handshake confirms it (#confirmed): a balancer whose copy had already expired (copies
 * expire up to a second apart: each process has its own clock) decided the SYN it received
 * itself, maybe elsewhere, and adopts the primary's record then. Any other packet of an
 * existing flow keeps its recorded backend.
 *
 * Packets from peers (processPeerBatch) take steps 1-4 and 7-8 only, and never reach step 5's
 * encapsulation: a packet from a peer is never forwarded again, except a steered reply (flag
 * REPLY) that this candidate primary holds no record of, passed on to the next candidate
 * (header VIP strictly increasing, so bounded; #steerReply) through the relay output, tagged
 * anew by this balancer for its receiver. Before anything else they must
 * come from a configured balancer's address (not_a_peer), parse (encapsulation header, inner
 * packet), and carry the right data-port tag for their header, inner flow key and sender →
 * receiver pair (src/decision/data-tag.ts; peer_bad_tag); a carried virtio header is checked
 * against the inner packet and rebuilt (src/packet/vnet-check.ts; peer_vnet_invalid). Only then
 * can a packet touch the flow table: a decision in the header is adopted, once validated
 * (src/dataplane/peer-decision.ts), for a flow this balancer does not hold yet.
 *
 * Hot path contract: processBatch allocates nothing, creates no closures and never throws;
 * every drop increments exactly one counter. Time is a coarse `nowSec` read once per batch.
 */
import { parsePacket } from '../packet/parse';
import { IPPROTO_TCP as TCP, IPPROTO_UDP as UDP } from '../packet/parse';
import { rewriteDst, rewriteSrc, CSUM_FULL, CSUM_PARTIAL } from '../packet/nat';
import { PacketResult } from '../packet/result';
import { KEY_DPORT as DPORT, KEY_PROTO as PROTO, KEY_SPORT as SPORT } from '../packet/flow-key';
import { TCP_ACK as ACK, TCP_RST as RST, TCP_SYN as SYN } from '../packet/tcp-flags';
import { VNET_HDR_LEN, VNET_F_NEEDS_CSUM } from '../packet/vnet';
import { writeTcpRst, RST_SCRATCH_LEN } from '../packet/tcp-rst';
import {
  parseEncap,
  ENCAP_F_NEW_FLOW,
  ENCAP_F_SECOND_CHANCE,
  ENCAP_F_FAILOVER,
  ENCAP_F_REPLY,
  ENCAP_NONE_U8,
  ENCAP_NONE_U16,
} from '../packet/encap';
import { hashFlowKey } from '../decision/halfsiphash';
import { dataTagMatches } from '../decision/data-tag';
import { checkPeerVnet } from '../packet/vnet-check';
import { checkPeerDecision, PeerDecision, PEER_DECISION_FIRST_REDECIDE } from './peer-decision';
import { ErrorCodes, TunlbError } from '../errors';
import { NO_BACKEND } from '../decision/backend-table';
import { type ForwardingTable, findVip, serviceVip, pickBackend, KEEP_PORT, METHOD_DSR, BACKEND_ELIGIBLE } from '../decision/forwarding-table';
import { writeReplyKey } from '../decision/reply-key';
import { buildReplySteering, forwardKeyOfReply, type ReplySteering } from '../decision/reply-steering';
import { FlowTable, FlowFlags, InsertResult, TouchResult } from '../flow';
import { FragCache } from '../flow/frag-cache';
import type { PacketBatch } from './packet-batch';
import { ForwardDrop } from './forward-drop';
import { ForwarderStats } from './forwarder-stats';
import { ServiceStats, SVC_CONNECTIONS, SVC_FIELDS, SVC_IN_BYTES, SVC_OUT_BYTES, SVC_OUT_PACKETS } from './service-stats';
import { PacketContext } from './packet-context';
import { PeerEmitter, PEER_QUEUED, type PeerAddresses, type PeerOutput } from './peer-output';
import { DsrEmitter, DSR_QUEUED, type DsrOutput } from './dsr-output';
import { MergeRun, mergeRun } from './peer-input';
import type { DsrNeighbours } from './neighbours';

// Imported functions and constants bound to module constants (measured on the compiled
// output, bench/forwarder-hot-path.bench.ts: see docs/performance.md "Module-local bindings").
const parse = parsePacket;
const natDst = rewriteDst;
const natSrc = rewriteSrc;
const flowHash = hashFlowKey;
const vipOf = findVip;
const backendOf = pickBackend;
const replyKeyOf = writeReplyKey;
const fwdKeyOfReply = forwardKeyOfReply;
const encapParse = parseEncap;
const merge = mergeRun;
const tagMatches = dataTagMatches;
const vnetCheck = checkPeerVnet;
const decisionCheck = checkPeerDecision;
const DECISION_OK = PeerDecision.OK;
const FIRST_REDECIDE = PEER_DECISION_FIRST_REDECIDE;
const rst = writeTcpRst;
const TCP_SYN = SYN;
const TCP_RST = RST;
const TCP_ACK = ACK;
const IPPROTO_TCP = TCP;
const IPPROTO_UDP = UDP;
const KEY_SPORT = SPORT;
const KEY_DPORT = DPORT;
const KEY_PROTO = PROTO;
const F_FROM_PEER = FlowFlags.FROM_PEER;
const F_REPLICATED = FlowFlags.REPLICATED;
const F_BACKUP_PENDING = FlowFlags.BACKUP_PENDING;
const F_CONFIRMED = FlowFlags.CONFIRMED;
const TOUCH_UNCONFIRMED = TouchResult.UNCONFIRMED;
const TOUCH_CONFIRMED_NOW = TouchResult.CONFIRMED_NOW;
const OK = PacketResult.OK;
const FULL = CSUM_FULL;
const PARTIAL = CSUM_PARTIAL;
const SVC_N = SVC_FIELDS;
const SVC_IN_B = SVC_IN_BYTES;
const SVC_OUT_P = SVC_OUT_PACKETS;
const SVC_OUT_B = SVC_OUT_BYTES;
const SVC_CONN = SVC_CONNECTIONS;

/** What processPacket decided. */
export const Action = { DROP: 0, EMIT: 1, TO_PEER: 2, TO_DSR: 3 } as const;
/** A step's "go on to the next step" (never returned by processPacket). */
const NEXT = -1;

/** Receives flow-table events the cluster layer replicates (claim 3). */
export interface FlowSink {
  /**
   * A flow was confirmed here (FlowTable.touch: docs/flow-records.md "Confirmation") and this
   * balancer replicates it: it is the flow's primary, or the primary is not live. Called once
   * per flow, on the hot path: O(1), no allocation.
   */
  flowReady(entryId: number): void;
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
  /** Cluster forwarding: peers' data addresses and the output batch. Absent: single balancer. */
  peers?: PeerAddresses;
  peerOutput?: PeerOutput;
  /**
   * The data-port tag key (src/decision/hash-key.ts deriveDataTagKey): tags what goes to
   * peers (relayed replies included), checks what comes from them. Required with `peers` or
   * `peerOutput`.
   */
  tagKey?: Uint32Array;
  /**
   * Peer egress for packets received from peers (a steered reply passed on to the next
   * candidate primary, src/decision/reply-steering.ts): a batch sharing the peer receive
   * batch's buffer, sent by the caller after processPeerBatch. Absent: such replies are dropped.
   */
  peerRelay?: PeerOutput;
  /** DSR: backend MACs and the frame output. Absent: DSR VIPs are dropped (method_unsupported). */
  dsr?: { neighbours: DsrNeighbours; output: DsrOutput };
}

export class Forwarder {
  readonly stats = new ForwarderStats();
  /** Per-VIP and per-backend counters (src/dataplane/service-stats.ts), in the current table's numbering. */
  readonly services: ServiceStats;
  /** services.counts and services.base, refreshed at every table swap (one field load per packet). */
  #sc: Float64Array;
  #sb: Int32Array;
  /** The packet being processed (refilled per packet, never reallocated). */
  readonly #ctx = new PacketContext();
  readonly #run = new MergeRun();
  readonly #table: FlowTable;
  readonly #hashKey: Uint32Array;
  /** The data-port tag key (an empty key without peers: every packet from a "peer" fails). */
  readonly #tagKey: Uint32Array;
  readonly #live: Uint8Array;
  readonly #pick = new Int32Array(2);
  readonly #replyBytes: Uint8Array;
  readonly #replyWords: Uint32Array;
  readonly #fwdBytes: Uint8Array;
  readonly #fwdWords: Uint32Array;
  readonly #sink: FlowSink | undefined;
  readonly #selfIndex: number;
  readonly #peers: PeerAddresses | undefined;
  /** Egress to peers (undefined: a single balancer) and to DSR backends (undefined: no DSR). */
  readonly #peerEmit: PeerEmitter | undefined;
  /** Egress to peers for packets that came from a peer (steered replies passed on). */
  readonly #relayEmit: PeerEmitter | undefined;
  readonly #dsrEmit: DsrEmitter | undefined;
  #ft: ForwardingTable;
  /** Backend address → (VIP, backend), for reply steering; rebuilt with the forwarding table. Absent: single balancer. */
  #steer: ReplySteering | undefined;
  /** Address scratch for building an RST in place (client and VIP addresses). */
  readonly #rstScratch = new Uint8Array(RST_SCRATCH_LEN);
  /** Later fragments of fragmented replies → their flow (src/flow/frag-cache.ts). */
  readonly #frags = new FragCache();
  /** Scratch key for the reply fallbacks (5-tuple of a first fragment, 3-tuple of a reply). */
  readonly #altBytes: Uint8Array;
  readonly #altWords: Uint32Array;
  /** Scratch of the affinity key (src/decision/affinity.ts). */
  readonly #affBytes = new Uint8Array(40);

  constructor(opts: ForwarderOptions) {
    this.#table = opts.table;
    this.#ft = opts.forwarding;
    this.services = new ServiceStats(opts.forwarding);
    this.#sc = this.services.counts;
    this.#sb = this.services.base;
    this.#hashKey = opts.hashKey;
    this.#live = opts.live;
    this.#sink = opts.sink;
    this.#selfIndex = opts.selfIndex;
    this.#peers = opts.peers;
    if ((opts.peers !== undefined || opts.peerOutput !== undefined) && (opts.tagKey === undefined || opts.tagKey.length !== 2)) {
      throw new TunlbError(ErrorCodes.USAGE, 'Forwarder: peers need the data-port tag key (tagKey: deriveDataTagKey(cluster key))');
    }
    this.#tagKey = opts.tagKey ?? new Uint32Array(2);
    this.#peerEmit =
      opts.peerOutput === undefined
        ? undefined
        : new PeerEmitter(opts.peers ?? { addrs: new Uint8Array(0), ports: new Uint16Array(0) }, opts.peerOutput, this.stats, this.#tagKey, opts.selfIndex);
    this.#relayEmit =
      opts.peerOutput === undefined || opts.peerRelay === undefined
        ? undefined
        : new PeerEmitter(opts.peers ?? { addrs: new Uint8Array(0), ports: new Uint16Array(0) }, opts.peerRelay, this.stats, this.#tagKey, opts.selfIndex);
    this.#dsrEmit = opts.dsr === undefined ? undefined : new DsrEmitter(opts.dsr.neighbours, opts.dsr.output, this.stats);
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

  /**
   * Swaps in a new forwarding table (between batches). Existing flows keep their records; the
   * per-VIP and per-backend counters follow the new numbering (ServiceStats.follow) in the
   * same step.
   */
  setForwarding(ft: ForwardingTable): void {
    this.#ft = ft;
    const sv = this.services;
    sv.follow(ft);
    this.#sc = sv.counts;
    this.#sb = sv.base;
    if (this.#steer !== undefined) this.#steer = buildReplySteering(ft);
  }

  /**
   * Processes `count` packets of `batch` in place. Returns how many packets to write: they
   * are compacted to indexes 0..n-1 of the batch (offsets, sizes and, when `vnet`, the
   * virtio headers). `vnet` = the device hands virtio_net_hdr (NEEDS_CSUM → partial
   * checksums). `nowSec`: seconds since process start. Packets for peers and DSR frames go to
   * the peer and DSR outputs (emptied first).
   */
  processBatch(batch: PacketBatch, count: number, vnet: boolean, nowSec: number): number {
    const buf = batch.buf;
    const offsets = batch.offsets;
    const sizes = batch.sizes;
    const vh = batch.vnet;
    const st = this.stats;
    const ctx = this.#ctx;
    if (this.#peerEmit !== undefined) this.#peerEmit.reset();
    if (this.#dsrEmit !== undefined) this.#dsrEmit.reset();
    st.batches++;
    st.batchSizeLog2[count > 0 ? Math.min(15, 31 - Math.clz32(count)) : 0]!++;
    ctx.beginBatch(buf, nowSec, vnet ? vh : null, false);
    let out = 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i]!;
      const len = sizes[i]!;
      st.rxPackets++;
      st.rxBytes += len;
      const mode = vnet && (vh[i * VNET_HDR_LEN]! & VNET_F_NEEDS_CSUM) !== 0 ? PARTIAL : FULL;
      ctx.begin(off, len, mode, vnet ? i * VNET_HDR_LEN : -1);
      if (this.#process(ctx) !== Action.EMIT) continue;
      // 8. emit: compact the kept packets to the front of the batch.
      if (ctx.outLen >= 0) sizes[i] = ctx.outLen;
      if (out !== i) {
        offsets[out] = off;
        sizes[out] = sizes[i]!;
        if (vnet) vh.copyWithin(out * VNET_HDR_LEN, i * VNET_HDR_LEN, (i + 1) * VNET_HDR_LEN);
      }
      out++;
    }
    return out;
  }

  /**
   * Processes `count` encapsulated packets received from peers (`batch` filled by
   * UdpBatchSocket.recv; `addrs` = their source addresses, 16 bytes each). Consecutive chunks
   * of a super-packet the sender split are first appended to the first chunk, in its slot
   * (src/dataplane/peer-input.ts). Inner packets to deliver are compacted to indexes 0..n-1
   * (offsets/sizes point at the inner packet; when `vnet`, batch.vnet holds each one's virtio
   * header: the carried one, or zeros). Returns n.
   */
  processPeerBatch(batch: PacketBatch, count: number, addrs: Uint8Array, vnet: boolean, nowSec: number): number {
    const buf = batch.buf;
    const offsets = batch.offsets;
    const sizes = batch.sizes;
    const vh = batch.vnet;
    const st = this.stats;
    const ctx = this.#ctx;
    const e = ctx.encap;
    const run = this.#run;
    if (this.#dsrEmit !== undefined) this.#dsrEmit.reset();
    if (this.#relayEmit !== undefined) this.#relayEmit.reset();
    // The carried virtio header (in `buf`, at e.vnetOff), for a DSR frame (the peer path never
    // encapsulates again).
    ctx.beginBatch(buf, nowSec, buf, true);
    let out = 0;
    for (let i = 0; i < count; i++) {
      st.peerRxPackets++;
      const sender = this.#peerIndexOf(addrs, i * 16);
      if (sender < 0) {
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
      let innerLen = e.innerLen;
      if (mode === PARTIAL) {
        const n = merge(batch, i, count, addrs, e, run);
        if (n > 0) {
          innerLen = run.len;
          i = run.last;
          st.peerRxPackets += n;
          st.peerRxMerged += n;
        }
      }
      ctx.begin(e.innerOff, innerLen, mode, e.vnetOff);
      ctx.peer = sender;
      if (this.#process(ctx) !== Action.EMIT) continue;
      offsets[out] = e.innerOff;
      sizes[out] = ctx.outLen >= 0 ? ctx.outLen : innerLen;
      if (vnet) {
        const o = out * VNET_HDR_LEN;
        if (e.vnetOff >= 0) for (let k = 0; k < VNET_HDR_LEN; k++) vh[o + k] = buf[e.vnetOff + k]!;
        else vh.fill(0, o, o + VNET_HDR_LEN);
      }
      out++;
    }
    return out;
  }

  /** One packet at buf[off .. off+len): returns an Action. Rewrites in place when EMIT. */
  processPacket(buf: Uint8Array, off: number, len: number, csumMode: number, nowSec: number): number {
    const ctx = this.#ctx;
    ctx.beginBatch(buf, nowSec, null, false);
    ctx.begin(off, len, csumMode, -1);
    return this.#process(ctx);
  }

  /**
   * The steps of the header, in order, for the packet in `ctx`: 1 and 2 here, then one
   * method per direction: #toServer (3, 4, 5, 7) or #reply (6, 7).
   */
  #process(ctx: PacketContext): number {
    // 1. parse
    const info = ctx.info;
    const buf = ctx.buf;
    const r = parse(buf, ctx.off, ctx.len, info);
    if (r !== OK) {
      this.stats.packetDrops[r]!++;
      return Action.DROP;
    }
    if (ctx.fromPeer) {
      // Before anything can touch state: the tag, and a carried virtio header.
      const p = this.#checkPeerPacket(ctx);
      if (p !== NEXT) return p;
    }
    // 2. classify
    const ft = this.#ft;
    let vip = vipOf(ft, buf, info.dstOff, info.addrLen);
    if (vip < 0) return this.#reply(ctx);
    // Several VIPs on this address (disjoint protocols or ports): the one serving this packet.
    if (ft.vipNextSame[vip]! >= 0) vip = serviceVip(ft, vip, info.key[KEY_PROTO]!, info.isFragment !== 0 ? info.dport : (info.key[KEY_DPORT]! << 8) | info.key[KEY_DPORT + 1]!);
    return this.#toServer(ctx, vip);
  }

  /**
   * A packet from a peer, its inner packet parsed: the data-port tag must match its header,
   * flow key and sender → this balancer (peer_bad_tag), and a carried virtio header must fit
   * the inner packet; it is rebuilt in place (peer_vnet_invalid, by reason). A merged run of
   * chunks is checked once: mergeRun only appends datagrams with the same header bytes (tag
   * included) and GRO's same 5-tuple, whose tags are therefore this one.
   */
  #checkPeerPacket(ctx: PacketContext): number {
    if (!tagMatches(ctx.buf, ctx.encap.hdrOff, this.#tagKey, ctx.info.key, ctx.peer, this.#selfIndex)) return this.#drop(ForwardDrop.PEER_BAD_TAG);
    if (ctx.vnetOff >= 0) {
      const v = vnetCheck(ctx.vnetBuf!, ctx.vnetOff, ctx.buf, ctx.off, ctx.len, ctx.info);
      if (v !== 0) {
        this.stats.peerVnetRefused[v]!++;
        return this.#drop(ForwardDrop.PEER_VNET_INVALID);
      }
    }
    return NEXT;
  }

  /**
   * Steps 3, 4, 5 and 7 of a client→VIP packet. One method, each step a section under its
   * header name, the rare branches out of line (#flowMiss, #reuse, #serveElsewhere,
   * #backendDown): V8 then compiles an established flow's packet as one unit with the flow
   * table's lookup and touch and the NAT rewrite inlined. As four step methods the same path
   * was 7-18 % slower (docs/performance.md "One method per direction").
   */
  #toServer(ctx: PacketContext, vip: number): number {
    const info = ctx.info;
    const st = this.stats;
    const ft = this.#ft;
    const table = this.#table;
    const key = info.key;
    const proto = key[KEY_PROTO]!;
    const nowSec = ctx.nowSec;

    // 3. admit: the VIP serves the key's protocol and destination port, and its method here.
    if (ft.vipProto[vip * 256 + proto] === 0) return this.#drop(ForwardDrop.PROTOCOL_NOT_SERVED);
    if ((proto === IPPROTO_TCP || proto === IPPROTO_UDP) && info.innerIsFragment === 0) {
      // A fragment's key has no ports: the first fragment is checked on its L4 header's port;
      // later ones carry none and pass only for a flow a first fragment created (step 4).
      if (info.isFragment === 0) {
        const dport = (key[KEY_DPORT]! << 8) | key[KEY_DPORT + 1]!;
        if (((ft.vipPorts[vip]![dport >>> 3]! >>> (dport & 7)) & 1) === 0) return this.#drop(ForwardDrop.PORT_NOT_SERVED);
      } else if (info.isFirstFragment !== 0) {
        const dport = info.dport;
        if (((ft.vipPorts[vip]![dport >>> 3]! >>> (dport & 7)) & 1) === 0) return this.#drop(ForwardDrop.PORT_NOT_SERVED);
      }
    }
    // Before the flow step: a VIP this data path cannot serve must not create (and replicate) records.
    if (ft.vipMethod[vip] === METHOD_DSR && this.#dsrEmit === undefined) return this.#drop(ForwardDrop.METHOD_UNSUPPORTED);

    // 4. flow: the record (its entry id), found (re-bound on connection reuse: #reuse), or on a miss
    // adopted from a peer's header, decided here, or the packet goes undecided to its ranked
    // primary (#flowMiss).
    const ref = table.lookup(info.keyWords, nowSec);
    let id: number;
    let encapFlags = 0;
    if (ref >= 0) {
      // A client→VIP packet can only match a forward key: reply keys have a backend source.
      if ((ref & 1) !== 0) return this.#drop(ForwardDrop.FLOW_CONFLICT);
      id = ref >>> 1;
      if (proto === IPPROTO_TCP && (info.tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN) {
        id = this.#reuse(ctx, id, vip);
        if (id < 0) return Action.DROP;
      }
    } else {
      const a = this.#flowMiss(ctx, vip);
      if (a !== NEXT) return a;
      id = ctx.id;
      encapFlags = ENCAP_F_NEW_FLOW;
    }
    // touch's direction: 0 a client packet, 2 an ICMP error (no evidence for confirmation).
    if (table.touch(id, nowSec, info.tcpFlags, info.isIcmpError << 1, info.tcpSeq, info.tcpAck, info.tcpSegLen) === TOUCH_CONFIRMED_NOW) this.#confirmed(id);

    // 5. serve: who transmits to the server. Not the recorded primary as this balancer, live
    // (never asked for a packet from a peer): #serveElsewhere. This balancer: the record's
    // backend must be up (#backendDown).
    if (!ctx.fromPeer) {
      const primary = table.primary(id);
      if (primary !== this.#selfIndex || this.#live[primary] === 0) {
        const a = this.#serveElsewhere(ctx, id, primary, encapFlags);
        if (a !== NEXT) return a;
      }
    }
    // The record's VIP and backend are the truth for an existing flow.
    const fv = table.vip(id);
    let be = table.backend(id);
    const upv = ft.backendUp[fv];
    // Down: backendUp 0, or an index the table does not have (a reload's "removed" mark, NO_BACKEND).
    if (upv !== undefined && (upv[be] ?? 0) === 0) {
      const a = this.#backendDown(ctx, id, fv);
      if (a !== NEXT) return a;
      id = ctx.id;
      be = table.backend(id);
    }

    // 7. rewrite (this balancer serves): NAT to the record's backend, or (DSR) the frame to it.
    const addrs = ft.backendAddr[fv];
    if (addrs === undefined || be * 16 >= addrs.length) return this.#drop(ForwardDrop.NO_BACKEND);
    if (ft.vipMethod[fv] === METHOD_DSR) return this.#toDsr(ctx, fv, be);
    // Port rewrite applies to TCP/UDP keys only (incl. ICMP errors quoting them); an echo's "port" is its identifier.
    const port = proto === IPPROTO_TCP || proto === IPPROTO_UDP ? ft.backendPort[fv]![be]! : KEEP_PORT;
    const rr = natDst(ctx.buf, ctx.off, info, addrs, be * 16 + (info.addrLen === 4 ? 12 : 0), port, ctx.csumMode);
    if (rr !== OK) {
      st.packetDrops[rr]!++;
      return Action.DROP;
    }
    st.forwardPackets++;
    st.txPackets++;
    st.txBytes += info.l3Len;
    const sc = this.#sc;
    const o = (this.#sb[fv]! + be) * SVC_N;
    sc[o]!++; // in packets (field 0)
    sc[o + SVC_IN_B]! += info.l3Len;
    return Action.EMIT;
  }

  /**
   * Step 4 on a SYN that hit record `id` (connection reuse, header): a record whose backend
   * takes no new flows moves to the backend the table picks now. Returns the flow's id (the
   * new entry when it moved), or -1: dropped (counted).
   */
  #reuse(ctx: PacketContext, id: number, vip: number): number {
    const table = this.#table;
    const ft = this.#ft;
    const upv = ft.backendUp[table.vip(id)];
    if (table.vip(id) === vip && upv !== undefined && (upv[table.backend(id)]! & BACKEND_ELIGIBLE) !== 0) return id;
    const nb = backendOf(ft, vip, this.#hashKey, ctx.info.key, flowHash(this.#hashKey, ctx.info.key), this.#affBytes);
    if (nb === NO_BACKEND) {
      this.#drop(ForwardDrop.NO_BACKEND);
      return -1;
    }
    const nid = this.#rebind(ctx, id, vip, nb, false);
    if (nid < 0) return -1;
    this.stats.synReuseRebound++;
    // A new connection on the new backend, counted once: by the receiving balancer (the
    // serving peer that re-binds its copy too sees it from a peer).
    if (!ctx.fromPeer) this.#sc[(this.#sb[vip]! + nb) * SVC_N + SVC_CONN]!++;
    return nid;
  }

  /**
   * Step 4 on a miss: adopt the decision of a peer's header or decide here (ctx.id = the new
   * entry: NEXT), or send the packet undecided to its ranked primary (second chance: TO_PEER),
   * or a counted drop.
   */
  #flowMiss(ctx: PacketContext, vip: number): number {
    const info = ctx.info;
    if (info.isIcmpError !== 0) return this.#drop(ForwardDrop.ICMP_ERROR_NO_FLOW);
    const e = ctx.encap;
    const fromPeer = ctx.fromPeer;
    // A later fragment creates nothing: its flow is the one its first fragment (which passed
    // the port check) created. A peer's packet carries the decision of a holder: adopted.
    if (!fromPeer && info.isFragment !== 0 && info.isFirstFragment === 0) return this.#drop(ForwardDrop.FRAGMENT_NO_FLOW);
    let id: number;
    if (fromPeer && (e.flags & ENCAP_F_SECOND_CHANCE) === 0) {
      // The sender decided (NEW_FLOW) or holds the record (failover): adopt its decision once validated.
      id = this.#adopt(ctx, vip);
    } else if (!fromPeer && info.key[KEY_PROTO] === IPPROTO_TCP && (info.tcpFlags & TCP_SYN) === 0 && info.isFragment === 0) {
      // Second chance: a mid-stream packet of a flow we hold no record of. The ranked
      // primary is authoritative; unless that is us, it decides.
      const h = flowHash(this.#hashKey, info.key);
      const pick = this.#pick;
      this.#ft.ranking.pickLive(h & 0xffff, this.#live, pick);
      const rp = pick[0]!;
      if (rp >= 0 && rp !== this.#selfIndex && this.#peerEmit !== undefined) {
        this.stats.secondChancePackets++;
        ctx.serving = rp;
        ctx.encapFlags = ENCAP_F_SECOND_CHANCE;
        ctx.primary = ENCAP_NONE_U8;
        ctx.backup = ENCAP_NONE_U8;
        ctx.backend = ENCAP_NONE_U16;
        ctx.vip = vip;
        return this.#toPeer(ctx);
      }
      id = this.#newFlow(ctx, vip);
    } else {
      id = this.#newFlow(ctx, vip);
    }
    if (id < 0) return Action.DROP;
    ctx.id = id;
    return NEXT;
  }

  /**
   * Step 5 when record `id`'s `primary` is another balancer or not live: the recorded primary
   * if live (claim 4), else the backup (claim 5), else the next live balancer in the flow's
   * rank. Another balancer: the packet goes to it encapsulated with the decision and
   * `encapFlags` (the flow step's: NEW_FLOW or 0) in the header (TO_PEER, or a counted drop);
   * this balancer: NEXT.
   */
  #serveElsewhere(ctx: PacketContext, id: number, primary: number, encapFlags: number): number {
    const table = this.#table;
    const backup = table.backup(id);
    let serving = primary;
    if (this.#live[primary] === 0) {
      serving = backup !== primary && this.#live[backup] !== 0 ? backup : this.#nextHolder(ctx, primary, backup);
      encapFlags |= ENCAP_F_FAILOVER;
      this.stats.failoverPackets++;
    }
    if (serving !== this.#selfIndex && serving >= 0 && this.#peerEmit !== undefined) {
      ctx.serving = serving;
      ctx.encapFlags = encapFlags;
      ctx.primary = primary;
      ctx.backup = backup;
      ctx.backend = table.backend(id);
      ctx.vip = table.vip(id);
      return this.#toPeer(ctx);
    }
    return NEXT;
  }

  /** Steps 6 and 7 of a packet not to a VIP (a reply from a backend). */
  #reply(ctx: PacketContext): number {
    const info = ctx.info;
    const st = this.stats;
    const table = this.#table;
    const nowSec = ctx.nowSec;
    // 6. reply: lookup by reply key; a miss is counted (no_flow) and dropped.
    let ref = table.lookup(info.keyWords, nowSec);
    if (ref < 0) ref = this.#replyFallback(ctx);
    if (ref < 0 || (ref & 1) === 0) {
      if (!ctx.fromPeer) return this.#steerReply(ctx, 0);
      // A steered reply this primary holds no record of: its flow went to another VIP listing the backend.
      return (ctx.encap.flags & ENCAP_F_REPLY) !== 0 ? this.#steerReply(ctx, ctx.encap.vip + 1) : this.#drop(ForwardDrop.NO_FLOW);
    }
    const id = ref >>> 1;
    // touch's direction: 1 a reply, 2 an ICMP error (no evidence).
    if (table.touch(id, nowSec, info.tcpFlags, 1 + info.isIcmpError, info.tcpSeq, info.tcpAck, info.tcpSegLen) === TOUCH_UNCONFIRMED && !ctx.fromPeer) {
      const a = this.#replyToPrimary(ctx, id);
      if (a !== NEXT) return a;
    }
    const ft = this.#ft;
    const vip = table.vip(id);
    if (vip >= ft.vipCount) return this.#drop(ForwardDrop.NO_FLOW);
    let port = KEEP_PORT;
    const be = table.backend(id);
    const ports = ft.backendPort[vip]!;
    const bp = ports[be];
    if (bp !== undefined && bp !== KEEP_PORT) {
      // The backend port differs from the VIP port: restore the client's original VIP port.
      table.copyKey(id, 0, this.#fwdWords, 0);
      port = (this.#fwdBytes[KEY_DPORT]! << 8) | this.#fwdBytes[KEY_DPORT + 1]!;
      // A fragment flow's key has no ports (docs/fragments.md): restore the VIP's
      // port when it has only one; with several it is unknown, so leave the port as the
      // backend sent it rather than writing 0.
      if (port === 0) port = ft.vipSolePort[vip]!;
    }
    // 7. rewrite: source backend:port → VIP:port.
    const rr = natSrc(ctx.buf, ctx.off, info, ft.vipAddr, vip * 16 + (info.addrLen === 4 ? 12 : 0), port, ctx.csumMode);
    if (rr !== OK) {
      st.packetDrops[rr]!++;
      return Action.DROP;
    }
    st.replyPackets++;
    st.txPackets++;
    st.txBytes += info.l3Len;
    // A removed backend's flow (index past the VIP's list): the VIP's removed slot.
    const sc = this.#sc;
    const o = (this.#sb[vip]! + (be < ports.length ? be : ports.length)) * SVC_N;
    sc[o + SVC_OUT_P]!++;
    sc[o + SVC_OUT_B]! += info.l3Len;
    return Action.EMIT;
  }

  /**
   * A reply whose key is in no index (docs/fragments.md). Returns a reply ref
   * ((id << 1) | 1) or -1. Runs only on a miss, so it costs nothing on the common path.
   *   first fragment     look up its 5-tuple (ports from its L4 header); on a hit, record the
   *                      datagram's (src, dst, proto, fragment id) → flow in the cache
   *   later fragment     the cache
   *   unfragmented TCP/UDP  its 3-tuple (ports 0): a flow the client created with fragments
   */
  #replyFallback(ctx: PacketContext): number {
    const info = ctx.info;
    const table = this.#table;
    const nowSec = ctx.nowSec;
    const proto = info.key[KEY_PROTO]!;
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return -1;
    if (info.isFragment !== 0) {
      if (info.isFirstFragment === 0) {
        const id = this.#frags.lookup(info.keyWords, info.fragId, nowSec, table);
        if (id < 0 || !table.hasReplyKey(id)) return -1;
        this.stats.replyLaterFragments++;
        return (id << 1) | 1;
      }
      const ref = this.#lookupWithPorts(ctx, info.sport, info.dport);
      if (ref < 0 || (ref & 1) === 0) return -1;
      this.#frags.insert(info.keyWords, info.fragId, ref >>> 1, table.created(ref >>> 1), nowSec);
      this.stats.replyFirstFragments++;
      return ref;
    }
    const ref = this.#lookupWithPorts(ctx, 0, 0);
    if (ref < 0 || (ref & 1) === 0) return -1;
    this.stats.replyThreeTuple++;
    return ref;
  }

  /** table.lookup of this packet's key with its ports replaced by `sport`/`dport`. */
  #lookupWithPorts(ctx: PacketContext, sport: number, dport: number): number {
    const alt = this.#altBytes;
    alt.set(ctx.info.key);
    alt[KEY_SPORT] = sport >>> 8;
    alt[KEY_SPORT + 1] = sport & 0xff;
    alt[KEY_DPORT] = dport >>> 8;
    alt[KEY_DPORT + 1] = dport & 0xff;
    return this.#table.lookup(this.#altWords, ctx.nowSec);
  }

  /**
   * Flow `id` was just confirmed by the current packet (a client packet). The flow's primary
   * replicates it: it sees every packet of the flow, replies of unconfirmed flows included
   * (#replyToPrimary), so it confirms too. So this balancer hands the flow to the replication
   * sink only when it is the primary, or the primary is not live (then the flow's server,
   * whoever confirms, replicates: the record must reach the peers). A record adopted from a
   * peer's header becomes this balancer's own (not FROM_PEER): it replicates, refreshes and
   * deletes it. A flow confirmed again (a new connection on a lingering record's 5-tuple,
   * kept on its backend: #reuse) was replicated before: it forgets REPLICATED, or the sink
   * would skip it as sent, and a peer that decided the new connection itself (its copy had
   * expired when it received the SYN) would name another backend than the one serving the
   * connection until the next refresh or the DELETE. The record goes out again at once and is
   * REPLICATED again (its expiry sends a DELETE).
   */
  #confirmed(id: number): void {
    const table = this.#table;
    const p = table.primary(id);
    if (p !== this.#selfIndex && this.#live[p] !== 0) return;
    const fl = table.flags(id);
    if ((fl & (F_FROM_PEER | F_REPLICATED)) !== 0) table.updateFlags(id, 0, F_FROM_PEER | F_REPLICATED);
    if (this.#sink !== undefined) this.#sink.flowReady(id);
  }

  /**
   * Step 6 for a reply of flow `id` that is not confirmed (a SYN-ACK; a datagram flow's
   * answer): the flow's primary must see it, or it cannot confirm the flow when the client's
   * next packet reaches it (that packet may come through another receiver: ECMP). So the reply
   * goes to the primary (flag REPLY), which un-NATs it; NEXT (un-NAT here) when this balancer
   * is the primary, the primary is not live, there are no peers, or the packet is a fragment
   * or an ICMP error.
   */
  #replyToPrimary(ctx: PacketContext, id: number): number {
    const table = this.#table;
    const p = table.primary(id);
    const info = ctx.info;
    if (p === this.#selfIndex || this.#live[p] === 0 || this.#peerEmit === undefined || info.isFragment !== 0 || info.isIcmpError !== 0) return NEXT;
    this.stats.unconfirmedRepliesToPrimary++;
    // As #steerReply's: a reply carries no backend (the primary finds the flow by its reply key).
    ctx.serving = p;
    ctx.encapFlags = ENCAP_F_REPLY;
    ctx.primary = p;
    ctx.backup = table.backup(id);
    ctx.backend = ENCAP_NONE_U16;
    ctx.vip = table.vip(id);
    return this.#toPeer(ctx);
  }

  /**
   * Reply steering (step 6): the current reply has no record here (not replicated yet: a
   * flow not confirmed yet, a flow another receiver decided a moment ago); send it
   * to its flow's ranked primary (the first live balancer of the ranking row of the forward key
   * rebuilt from the reply, src/decision/reply-steering.ts), which decided or adopted the flow
   * and so holds its record; flag REPLY. The candidate VIPs that list the reply's backend are
   * tried from `minVip` on (0 at the receiver; the header's VIP + 1 at a primary that missed),
   * skipping those whose primary is this balancer (it has no record: the lookup just missed).
   * Drops (no_flow) when no candidate is left, it is an ICMP error or a fragment, or there are
   * no peers.
   */
  #steerReply(ctx: PacketContext, minVip: number): number {
    const info = ctx.info;
    const sr = this.#steer;
    const em = ctx.fromPeer ? this.#relayEmit : this.#peerEmit;
    if (sr === undefined || em === undefined || info.isIcmpError !== 0 || info.isFragment !== 0) return this.#drop(ForwardDrop.NO_FLOW);
    const ft = this.#ft;
    const pick = this.#pick;
    let vip = minVip;
    let rp = -1;
    for (;;) {
      vip = fwdKeyOfReply(ft, sr, info.key, this.#altBytes, vip);
      if (vip < 0) return this.#drop(ForwardDrop.NO_FLOW);
      ft.ranking.pickLive(flowHash(this.#hashKey, this.#altBytes) & 0xffff, this.#live, pick);
      rp = pick[0]!;
      if (rp < 0) return this.#drop(ForwardDrop.NO_FLOW);
      if (rp !== this.#selfIndex) break;
      vip++;
    }
    this.stats.replySteeredPackets++;
    ctx.serving = rp;
    ctx.encapFlags = ENCAP_F_REPLY;
    ctx.primary = rp;
    ctx.backup = pick[1]! < 0 ? rp : pick[1]!;
    ctx.backend = ENCAP_NONE_U16;
    ctx.vip = vip;
    return this.#toPeer(ctx);
  }

  /** The next live balancer in the current packet's flow rank, skipping the dead primary and backup. */
  #nextHolder(ctx: PacketContext, primary: number, backup: number): number {
    const h = flowHash(this.#hashKey, ctx.info.key);
    const n = this.#ft.ranking.nextLiveHolder(h & 0xffff, this.#live, primary, backup);
    return n < 0 ? this.#selfIndex : n;
  }

  /** Emit to peer ctx.serving (src/dataplane/peer-output.ts); a packet from a peer goes to the relay output. */
  #toPeer(ctx: PacketContext): number {
    const d = (ctx.fromPeer ? this.#relayEmit! : this.#peerEmit!).emit(ctx, this.#ft.generation);
    return d === PEER_QUEUED ? Action.TO_PEER : this.#drop(d);
  }

  /** Emit the DSR frame to backend `be` of `vip` (src/dataplane/dsr-output.ts). */
  #toDsr(ctx: PacketContext, vip: number, be: number): number {
    const out = this.#dsrEmit;
    if (out === undefined) return this.#drop(ForwardDrop.METHOD_UNSUPPORTED);
    const d = out.emit(ctx, vip, be);
    if (d !== DSR_QUEUED) return this.#drop(d);
    const sc = this.#sc;
    const o = (this.#sb[vip]! + be) * SVC_N;
    sc[o]!++; // in packets (field 0)
    sc[o + SVC_IN_B]! += ctx.info.l3Len;
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

  /**
   * Inserts the decision carried by the current peer packet's header (flow learnt from a peer),
   * once validated (src/dataplane/peer-decision.ts): refused as no conforming balancer would
   * send it, the packet is dropped (-1, counted); refused as decided on another table than
   * ours, this balancer decides itself. Returns the entry id or -1 (counted).
   */
  #adopt(ctx: PacketContext, vip: number): number {
    const e = ctx.encap;
    const ft = this.#ft;
    const why = decisionCheck(e, vip, ctx.info.key, ft, this.#hashKey, this.#selfIndex);
    if (why !== DECISION_OK) {
      this.stats.peerDecisionRefused[why]!++;
      if (why < FIRST_REDECIDE) {
        this.#drop(ForwardDrop.PEER_DECISION_REFUSED);
        return -1;
      }
      this.#drop(ForwardDrop.PEER_DECISION_INVALID);
      return this.#newFlow(ctx, vip);
    }
    let replyWords: Uint32Array | null = null;
    if (ft.vipMethod[vip] !== METHOD_DSR) {
      if (!replyKeyOf(ft, vip, e.backend, ctx.info.key, 0, this.#replyBytes)) {
        this.#drop(ForwardDrop.NO_BACKEND);
        return -1;
      }
      replyWords = this.#replyWords;
    }
    const id = this.#table.insert(ctx.info.keyWords, replyWords, e.primary, e.backup, vip, e.backend, ctx.nowSec);
    if (id < 0) {
      this.#drop(id === InsertResult.FULL ? ForwardDrop.TABLE_FULL : ForwardDrop.FLOW_CONFLICT);
      return -1;
    }
    this.#table.updateFlags(id, F_FROM_PEER, 0);
    return id;
  }

  /** New-flow decision (claims 1-2) and record (claim 3). Returns the entry id or -1 (counted). */
  #newFlow(ctx: PacketContext, vip: number): number {
    const info = ctx.info;
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
    const be = backendOf(ft, vip, this.#hashKey, key, h, this.#affBytes);
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
    const id = this.#table.insert(info.keyWords, replyWords, primary, backup, vip, be, ctx.nowSec);
    if (id < 0) {
      this.#drop(id === InsertResult.FULL ? ForwardDrop.TABLE_FULL : ForwardDrop.FLOW_CONFLICT);
      return -1;
    }
    this.stats.flowsCreated++;
    this.#sc[(this.#sb[vip]! + be) * SVC_N + SVC_CONN]!++;
    if (pending && backup !== primary) {
      this.#table.updateFlags(id, F_BACKUP_PENDING, 0);
      this.stats.flowsNoLiveBackup++;
    }
    return id;
  }

  /**
   * The current packet (client→VIP) belongs to flow `id` whose backend is down (header
   * "Backend down"). TCP: the packet becomes a reset to the client in its place (ctx.outLen
   * set, flow removed): EMIT. UDP/ICMP: the flow moves (ctx.id = its new entry): NEXT.
   * Otherwise DROP (counted).
   */
  #backendDown(ctx: PacketContext, id: number, vip: number): number {
    const info = ctx.info;
    const table = this.#table;
    const ft = this.#ft;
    const proto = info.key[KEY_PROTO]!;
    if (proto === IPPROTO_TCP) {
      if (info.isIcmpError !== 0 || (info.isFragment !== 0 && info.isFirstFragment === 0) || info.csumOff < 0) {
        return this.#drop(ForwardDrop.NO_BACKEND);
      }
      table.remove(id);
      if ((info.tcpFlags & TCP_RST) !== 0 || info.isFragment !== 0) {
        // Never answer a reset with a reset (RFC 9293 3.10.7.1); a fragment has no whole segment.
        return this.#drop(ForwardDrop.NO_BACKEND);
      }
      const len = rst(ctx.buf, ctx.off, info, this.#rstScratch);
      // The reset has full checksums: its virtio header asks for nothing.
      const vb = ctx.vnetBuf;
      if (vb !== null && ctx.vnetOff >= 0) vb.fill(0, ctx.vnetOff, ctx.vnetOff + VNET_HDR_LEN);
      ctx.outLen = len;
      const st = this.stats;
      st.tcpResetBackendDown++;
      st.txPackets++;
      st.txBytes += len;
      return Action.EMIT;
    }
    if (info.isIcmpError !== 0) return this.#drop(ForwardDrop.NO_BACKEND);
    const nb = backendOf(ft, vip, this.#hashKey, info.key, flowHash(this.#hashKey, info.key), this.#affBytes);
    if (nb === NO_BACKEND) return this.#drop(ForwardDrop.NO_BACKEND);
    const nid = this.#rebind(ctx, id, vip, nb, true);
    if (nid < 0) return Action.DROP;
    this.stats.udpMovedBackendDown++;
    this.#sc[(this.#sb[vip]! + nb) * SVC_N + SVC_CONN]!++;
    ctx.id = nid;
    return NEXT;
  }

  /**
   * Moves flow `id` (this packet's forward key) to backend `nb` of `vip`, keeping its primary
   * and backup. NAT: the reply key changes with the backend, so the record is re-inserted
   * (entry id, packet count and created time restart; a peer-learnt flag is kept). DSR: the
   * decision is updated in place. `ready`: hand a flow decided here to the replication sink
   * at once when it was confirmed (a new connection confirms on its own handshake). Returns the flow's id, or -1 (drop counted).
   * Every balancer that holds the record and sees the packet makes the same move: `nb` comes
   * from the forwarding table, which is the same everywhere.
   */
  #rebind(ctx: PacketContext, id: number, vip: number, nb: number, ready: boolean): number {
    const info = ctx.info;
    const table = this.#table;
    const ft = this.#ft;
    const primary = table.primary(id);
    const backup = table.backup(id);
    // The flow's primary owns the new decision (replicates it; peers adopt a primary's record);
    // anyone else keeps a peer-learnt record peer-learnt (the primary makes the same move).
    const fromPeer = primary !== this.#selfIndex ? table.flags(id) & F_FROM_PEER : 0;
    // A moved flow stays confirmed; a new connection (reuse) confirms on its own handshake.
    const confirmed = ready ? table.flags(id) & F_CONFIRMED : 0;
    if (ft.vipMethod[vip] === METHOD_DSR) {
      table.setDecision(id, primary, backup, nb);
      if (table.vip(id) !== vip) table.setVip(id, vip);
      if (fromPeer === 0) {
        // In place: forget "replicated" too, so the new decision is sent again.
        table.updateFlags(id, 0, F_FROM_PEER | F_REPLICATED);
        if (ready && (table.flags(id) & F_CONFIRMED) !== 0 && this.#sink !== undefined) this.#sink.flowReady(id);
      }
      return id;
    }
    if (!replyKeyOf(ft, vip, nb, info.key, 0, this.#replyBytes)) {
      this.#drop(ForwardDrop.NO_BACKEND);
      return -1;
    }
    table.remove(id);
    const nid = table.insert(info.keyWords, this.#replyWords, primary, backup, vip, nb, ctx.nowSec);
    if (nid < 0) {
      this.#drop(nid === InsertResult.FULL ? ForwardDrop.TABLE_FULL : ForwardDrop.FLOW_CONFLICT);
      return -1;
    }
    if (confirmed !== 0) table.updateFlags(nid, F_CONFIRMED, 0);
    table.touch(nid, ctx.nowSec, 0, 0);
    if (fromPeer !== 0) table.updateFlags(nid, F_FROM_PEER, 0);
    else if (confirmed !== 0 && this.#sink !== undefined) this.#sink.flowReady(nid);
    return nid;
  }

  /** Counts a drop by ForwardDrop reason; returns Action.DROP. */
  #drop(reason: number): number {
    this.stats.forwardDrops[reason]!++;
    return Action.DROP;
  }
}
