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
 *                primary/backup = first two live balancers of ranking row flowHash & 0xffff;
 *                backend = weighted-rendezvous row flowHash >>> 16 of the VIP's table; the
 *                record (forward key + NAT reply key) goes into the table (claim 3: the
 *                replication sink queues it for every peer).
 *  5. reply      (not to a VIP) lookup by reply key; a miss is counted (no_flow) and dropped.
 *  6. rewrite    NAT: destination VIP:port → backend:port, or for replies source
 *                backend:port → VIP:port, with incremental checksums (RFC 1624), honouring
 *                virtio NEEDS_CSUM (partial checksums) when the TUN device has offloads on.
 *  7. emit       the packet stays in its slot; kept packets are compacted to the front of
 *                the batch (offsets/sizes, and virtio headers when enabled) for one batched
 *                write back into the TUN device, where the kernel routes it on.
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
import { type ForwardingTable, findVip, KEEP_PORT, METHOD_DSR } from './forwarding-table';
import { ForwardDrop, FORWARD_DROP_COUNT } from './forward-drop';
import { writeReplyKey } from './reply-key';

// Imported functions bound to module constants: under tsx (tests, dev runs) each use of an
// imported binding is otherwise a getter call that V8 does not inline (measured: 7x slower).
const parse = parsePacket;
const natDst = rewriteDst;
const natSrc = rewriteSrc;
const flowHash = hashFlowKey;
const vipOf = findVip;
const replyKeyOf = writeReplyKey;
const OK = PacketResult.OK;
const FULL = CSUM_FULL;
const PARTIAL = CSUM_PARTIAL;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const KEY_DPORT = 34;

/** What processPacket decided. */
export const Action = { DROP: 0, EMIT: 1 } as const;

/** Receives flow-table events the cluster layer replicates (claim 3). */
export interface FlowSink {
  /** A flow was created by this balancer's decision. Called on the hot path: must not allocate much. */
  flowCreated(entryId: number): void;
}

export class ForwarderStats {
  rxPackets = 0;
  rxBytes = 0;
  txPackets = 0;
  txBytes = 0;
  flowsCreated = 0;
  forwardPackets = 0;
  replyPackets = 0;
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
}

export class Forwarder {
  readonly stats = new ForwarderStats();
  readonly #info = new PacketInfo();
  readonly #table: FlowTable;
  readonly #hashKey: Uint32Array;
  readonly #live: Uint8Array;
  readonly #pick = new Int32Array(2);
  readonly #replyBytes: Uint8Array;
  readonly #replyWords: Uint32Array;
  readonly #fwdBytes: Uint8Array;
  readonly #fwdWords: Uint32Array;
  readonly #sink: FlowSink | undefined;
  #ft: ForwardingTable;

  constructor(opts: ForwarderOptions) {
    this.#table = opts.table;
    this.#ft = opts.forwarding;
    this.#hashKey = opts.hashKey;
    this.#live = opts.live;
    this.#sink = opts.sink;
    const rb = new ArrayBuffer(40);
    this.#replyBytes = new Uint8Array(rb);
    this.#replyWords = new Uint32Array(rb);
    const fb = new ArrayBuffer(40);
    this.#fwdBytes = new Uint8Array(fb);
    this.#fwdWords = new Uint32Array(fb);
  }

  get forwarding(): ForwardingTable {
    return this.#ft;
  }

  /** Swaps in a new forwarding table (between batches). Existing flows keep their records. */
  setForwarding(ft: ForwardingTable): void {
    this.#ft = ft;
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
    let out = 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i]!;
      const len = sizes[i]!;
      st.rxPackets++;
      st.rxBytes += len;
      const mode = vnet && (vh[i * VNET_HDR_LEN]! & VNET_F_NEEDS_CSUM) !== 0 ? PARTIAL : FULL;
      if (this.processPacket(buf, off, len, mode, nowSec) !== Action.EMIT) continue;
      if (out !== i) {
        offsets[out] = off;
        sizes[out] = len;
        if (vnet) vh.copyWithin(out * VNET_HDR_LEN, i * VNET_HDR_LEN, (i + 1) * VNET_HDR_LEN);
      }
      out++;
    }
    return out;
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
    return vip >= 0 ? this.#toBackend(buf, off, vip, csumMode, nowSec) : this.#toClient(buf, off, csumMode, nowSec);
  }

  #toBackend(buf: Uint8Array, off: number, vip: number, csumMode: number, nowSec: number): number {
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
    if (ft.vipMethod[vip] === METHOD_DSR) return this.#drop(ForwardDrop.METHOD_UNSUPPORTED);
    const table = this.#table;
    const ref = table.lookup(info.keyWords, nowSec);
    let id: number;
    if (ref >= 0) {
      // A client→VIP packet can only match a forward key: reply keys have a backend source.
      if ((ref & 1) !== 0) return this.#drop(ForwardDrop.FLOW_CONFLICT);
      id = ref >>> 1;
    } else {
      if (info.isIcmpError !== 0) return this.#drop(ForwardDrop.ICMP_ERROR_NO_FLOW);
      id = this.#newFlow(vip, nowSec);
      if (id < 0) return Action.DROP;
    }
    table.touch(id, nowSec, info.tcpFlags, 0);
    // The record's VIP and backend are the truth for an existing flow.
    const fv = table.vip(id);
    const be = table.backend(id);
    const addrs = ft.backendAddr[fv];
    if (addrs === undefined || be * 16 >= addrs.length) return this.#drop(ForwardDrop.NO_BACKEND);
    if (ft.vipMethod[fv] === METHOD_DSR) return this.#drop(ForwardDrop.METHOD_UNSUPPORTED);
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

  #toClient(buf: Uint8Array, off: number, csumMode: number, nowSec: number): number {
    const info = this.#info;
    const st = this.stats;
    const table = this.#table;
    const ref = table.lookup(info.keyWords, nowSec);
    if (ref < 0 || (ref & 1) === 0) return this.#drop(ForwardDrop.NO_FLOW);
    const id = ref >>> 1;
    table.touch(id, nowSec, info.tcpFlags, 1);
    const ft = this.#ft;
    const vip = table.vip(id);
    if (vip >= ft.vipCount) return this.#drop(ForwardDrop.NO_FLOW);
    let port = KEEP_PORT;
    const bp = ft.backendPort[vip]![table.backend(id)];
    if (bp !== undefined && bp !== KEEP_PORT) {
      // The backend port differs from the VIP port: restore the client's original VIP port.
      table.copyKey(id, 0, this.#fwdWords, 0);
      port = (this.#fwdBytes[KEY_DPORT]! << 8) | this.#fwdBytes[KEY_DPORT + 1]!;
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

  /** New-flow decision (claims 1-2) and record (claim 3). Returns the entry id or -1 (counted). */
  #newFlow(vip: number, nowSec: number): number {
    const info = this.#info;
    const ft = this.#ft;
    const key = info.key;
    const h = flowHash(this.#hashKey, key);
    const pick = this.#pick;
    ft.ranking.pickLive(h & 0xffff, this.#live, pick);
    const primary = pick[0]!;
    const backup = pick[1]! < 0 ? primary : pick[1]!;
    if (primary < 0) {
      this.#drop(ForwardDrop.NO_BALANCER);
      return -1;
    }
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
    if (this.#sink !== undefined) this.#sink.flowCreated(id);
    return id;
  }

  #drop(reason: number): number {
    this.stats.forwardDrops[reason]!++;
    return Action.DROP;
  }
}
