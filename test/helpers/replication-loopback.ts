/**
 * An in-memory "network" for Replicators: what the owner's sockets do, without sockets, for
 * tests, benches and simulations. Every datagram goes through the destination's real
 * EnvelopeReceiver (MAC, cluster, sender, replay window) before Replicator.onEnvelope, so
 * signing and verification are exercised exactly as on the wire.
 *
 * Delivery:
 *  - 'manual': datagrams queue up; deliverAll() delivers them in FIFO order (also those
 *    queued while delivering) and returns how many it delivered. Deterministic.
 *  - 'async': each datagram is delivered in its own setImmediate, like a socket's 'message'
 *    events (used for bulk sync, whose server paces itself with setImmediate).
 * `filter` may drop datagrams (loss); `tap` sees every datagram sent (counting, capture).
 *
 * LoopbackCluster builds whole clusters on such a net (config, forwarding table, flow tables
 * wired to their replicators' flowExpired, per-member clocks) and simulates the forwarder's
 * side of the contract (insert, touch with a real exchange's sequence numbers, flowReady on
 * confirmation: src/cluster/replication-policy.ts). Not used by the daemon.
 */
import { parseConfig, type Config } from '../../src/config';
import { buildForwardingTable, METHOD_DSR, type ForwardingTable } from '../../src/decision/forwarding-table';
import { writeReplyKey } from '../../src/decision/reply-key';
import { FlowFlags, FlowTable, TcpFlags, TouchResult, type FlowTimeouts } from '../../src/flow';
import { DecodeResult, EnvelopeReceiver, EnvelopeSigner, macKey, ProtocolResult, type MacKey } from '../../src/protocol';
import { deriveHashKey } from '../../src/decision/hash-key';
import { replicatesConfirmed } from '../../src/cluster/replication-policy';
import { Replicator, type ReplicatorOptions } from '../../src/cluster/replicator';

export interface LoopbackDatagram {
  readonly from: number;
  readonly to: number;
  readonly dgram: Uint8Array;
  /** Sequence number of the datagram on this net (0, 1, ...). */
  readonly n: number;
}

export interface LoopbackNode {
  readonly index: number;
  readonly replicator: Replicator;
  readonly receiver: EnvelopeReceiver;
}

export interface LoopbackNetOptions {
  key: MacKey;
  clusterId: number;
  balancerCount: number;
  mode?: 'manual' | 'async';
}

export class LoopbackNet {
  readonly mode: 'manual' | 'async';
  /** Return false to drop a datagram (it is still counted in `sent`). */
  filter: ((d: LoopbackDatagram) => boolean) | null = null;
  tap: ((d: LoopbackDatagram) => void) | null = null;
  sent = 0;
  delivered = 0;
  dropped = 0;
  /** Datagrams the receivers rejected (not OK), by ProtocolResult code. */
  rejected = 0;
  private readonly nodes: (LoopbackNode | undefined)[] = [];
  private readonly queue: LoopbackDatagram[] = [];
  private readonly out = new DecodeResult();

  constructor(private readonly opts: LoopbackNetOptions) {
    this.mode = opts.mode ?? 'manual';
  }

  /** The `broadcast` function for balancer `from`: to every other attached balancer. */
  broadcastFrom(from: number): (dgram: Uint8Array) => void {
    return (dgram) => {
      for (let to = 0; to < this.nodes.length; to++) if (to !== from && this.nodes[to] !== undefined) this.send(from, to, dgram);
    };
  }

  /** The `sendTo` function for balancer `from`. */
  sendToFrom(from: number): (peer: number, dgram: Uint8Array) => void {
    return (peer, dgram) => this.send(from, peer, dgram);
  }

  /** Attaches a replicator as balancer `index` with its own receiver. */
  attach(index: number, replicator: Replicator): LoopbackNode {
    // No membership here to confirm incarnations by probe: trust on first use (src/protocol/receiver.ts).
    const receiver = new EnvelopeReceiver({ key: this.opts.key, clusterId: this.opts.clusterId, self: index, balancerCount: this.opts.balancerCount, confirmBy: 'first-envelope' });
    const node = { index, replicator, receiver };
    this.nodes[index] = node;
    return node;
  }

  node(index: number): LoopbackNode {
    const n = this.nodes[index];
    if (n === undefined) throw new Error(`no balancer ${index} on this loopback net`);
    return n;
  }

  /** Queued datagrams (manual mode). */
  get queued(): number {
    return this.queue.length;
  }

  /** Drops every queued datagram (manual mode). */
  clear(): void {
    this.queue.length = 0;
  }

  /** Delivers queued datagrams, FIFO, until none is left (manual mode). */
  deliverAll(): number {
    let n = 0;
    while (this.queue.length > 0) {
      const d = this.queue.shift()!;
      this.deliver(d);
      n++;
    }
    return n;
  }

  /** Delivers one datagram to its destination now (also usable to inject crafted ones). */
  deliver(d: LoopbackDatagram): number {
    const node = this.nodes[d.to];
    if (node === undefined) return ProtocolResult.UNKNOWN_SENDER;
    const r = node.receiver.receive(d.dgram, 0, d.dgram.length, this.out);
    if (r.result !== ProtocolResult.OK) {
      this.rejected++;
      return r.result;
    }
    this.delivered++;
    node.replicator.onEnvelope(r.envelope!);
    return ProtocolResult.OK;
  }

  private send(from: number, to: number, dgram: Uint8Array): void {
    const d: LoopbackDatagram = { from, to, dgram, n: this.sent++ };
    this.tap?.(d);
    if (this.filter !== null && !this.filter(d)) {
      this.dropped++;
      return;
    }
    if (this.mode === 'manual') this.queue.push(d);
    else setImmediate(() => this.deliver(d));
  }
}

// ----------------------------------------------------------------------------- a whole cluster


/** Cluster id used on the loopback net. */
export const LOOPBACK_CLUSTER_ID = 0x7e57;

/**
 * The loopback cluster's configuration: `balancers` balancers lb0.., VIPs
 *   0 web4 10.99.0.10 NAT, backends .21, .22 (port 8080), .23
 *   1 web6 fd99::10   NAT, backends fd99:3::21, ::22
 *   2 dsr4 10.99.0.20 DSR, backends .31, .32
 * `extraBackend` appends one backend to web4 (a backend-list change).
 */
export function loopbackConfig(balancers: number, extraBackend = false): Config {
  const web4 = [{ address: '10.99.3.21' }, { address: '10.99.3.22', port: 8080 }, { address: '10.99.3.23' }];
  if (extraBackend) web4.unshift({ address: '10.99.3.20' });
  const cfg = {
    cluster: { id: 'loopback', key_file: '/loopback.key' },
    balancers: Array.from({ length: balancers }, (_, i) => ({ id: `lb${i}`, address: `10.0.0.${11 + i}` })),
    vips: [
      { name: 'web4', address: '10.99.0.10', protocols: ['tcp', 'udp', 'icmp'], ports: '*', method: 'nat', backends: web4 },
      { name: 'web6', address: 'fd99::10', protocols: ['tcp', 'udp'], ports: '*', method: 'nat', backends: [{ address: 'fd99:3::21' }, { address: 'fd99:3::22' }] },
      { name: 'dsr4', address: '10.99.0.20', protocols: ['tcp'], ports: '*', method: 'dsr', backends: [{ address: '10.99.3.31' }, { address: '10.99.3.32' }] },
    ],
  };
  return parseConfig(JSON.stringify(cfg), 'loopback.json', { readKeyFile: () => Buffer.alloc(32, 0x5a), env: {}, baseDir: '/' });
}

export interface LoopbackMember {
  readonly index: number;
  readonly table: FlowTable;
  readonly replicator: Replicator;
  readonly signer: EnvelopeSigner;
  /** This member's clock (nowSec); tests move it. */
  now: number;
  /** This member's forwarding table; tests may swap it. */
  ft: ForwardingTable;
}

/**
 * Packets of LoopbackCluster.openFlow that confirm any flow: NAT client, reply, client (TCP:
 * SYN, SYN-ACK, the ACK of the server's ISN; UDP: query, answer, the next query); DSR: two
 * client packets (the third is data).
 */
export const CONFIRMING_PACKETS = 3;
/** The exchange's initial sequence numbers (client, server). */
const CLIENT_ISN = 0x10000000;
const SERVER_ISN = 0x7ffffff0;

export interface LoopbackClusterOptions {
  balancers: number;
  capacity: number;
  refreshS?: number;
  mode?: 'manual' | 'async';
  timeouts?: Partial<FlowTimeouts>;
  /** Extra replicator options for every member. */
  replicator?: Partial<ReplicatorOptions>;
}

export class LoopbackCluster {
  readonly net: LoopbackNet;
  readonly config: Config;
  readonly hashKey: Uint32Array;
  readonly key = macKey(Buffer.alloc(32, 0x5a));
  readonly members: (LoopbackMember | undefined)[] = [];
  private readonly ft0: ForwardingTable;
  private readonly bytes = new Uint8Array(new ArrayBuffer(40));
  private readonly words = new Uint32Array(this.bytes.buffer);
  private readonly reply = new Uint8Array(new ArrayBuffer(40));
  private readonly replyWords = new Uint32Array(this.reply.buffer);

  constructor(private readonly opts: LoopbackClusterOptions) {
    this.config = loopbackConfig(opts.balancers);
    this.hashKey = deriveHashKey(Buffer.alloc(32, 0x5a));
    this.ft0 = buildForwardingTable(this.config, this.hashKey, 1);
    this.net = new LoopbackNet({ key: this.key, clusterId: LOOPBACK_CLUSTER_ID, balancerCount: opts.balancers, mode: opts.mode ?? 'manual' });
  }

  /** Starts balancer `index` with an empty table (a fresh or restarted process). */
  join(index: number): LoopbackMember {
    const o = this.opts;
    let rep: Replicator | undefined;
    const table = new FlowTable({
      capacity: o.capacity,
      seed: 1234 + index,
      ...(o.timeouts ? { timeouts: o.timeouts } : {}),
      onExpire: (id) => rep!.flowExpired(id),
    });
    const signer = new EnvelopeSigner({ key: this.key, clusterId: LOOPBACK_CLUSTER_ID, sender: index, incarnation: 1000 + this.net.sent + index * 7 + Date.now() });
    const m: LoopbackMember = {
      index,
      table,
      signer,
      now: 100,
      ft: this.ft0,
      replicator: undefined as unknown as Replicator,
    };
    rep = new Replicator({
      table,
      selfIndex: index,
      balancerCount: o.balancers,
      forwarding: () => m.ft,
      signer,
      broadcast: this.net.broadcastFrom(index),
      sendTo: this.net.sendToFrom(index),
      nowSec: () => m.now,
      refreshS: o.refreshS ?? 30,
      ...(o.replicator ?? {}),
    });
    (m as { replicator: Replicator }).replicator = rep;
    this.members[index] = m;
    this.net.attach(index, rep);
    return m;
  }

  member(index: number): LoopbackMember {
    const m = this.members[index];
    if (m === undefined) throw new Error(`balancer ${index} has not joined`);
    return m;
  }

  /**
   * Writes the i-th test flow key into `out` (40 bytes): VIP `vip` of the loopback config,
   * client 10.1.x.y / fd01::x:y port 1024.., protocol `proto`.
   */
  flowKey(i: number, vip: number, proto: number, out: Uint8Array): void {
    out.fill(0);
    const v6 = vip === 1;
    if (v6) {
      out.set([0xfd, 0x01], 0);
      out[12] = (i >>> 24) & 0xff;
      out[13] = (i >>> 16) & 0xff;
      out[14] = (i >>> 8) & 0xff;
      out[15] = i & 0xff;
      out.set(this.ft0.vipAddr.subarray(16, 32), 16);
    } else {
      out[10] = out[11] = out[26] = out[27] = 0xff;
      out.set([10, 1, (i >>> 8) & 0xff, i & 0xff], 12);
      out.set(this.ft0.vipAddr.subarray(vip * 16 + 12, vip * 16 + 16), 28);
    }
    const sport = 1024 + ((i >>> 16) & 0x3fff);
    out[32] = sport >>> 8;
    out[33] = sport & 0xff;
    out[35] = 80;
    out[36] = proto;
    out[37] = v6 ? 6 : 4;
  }

  /**
   * What the forwarder does for a new flow, then the first `packets` packets of an exchange
   * (CONFIRMING_PACKETS and more: a confirmed flow, see packets()): insert with the given
   * decision (NAT VIPs with their reply key), touch, flowReady on confirmation.
   * Returns the entry id (or the negative InsertResult).
   */
  openFlow(m: LoopbackMember, key: Uint8Array, primary: number, backup: number, vip: number, backend: number, packets: number): number {
    this.bytes.set(key.subarray(0, 40));
    let reply: Uint32Array | null = null;
    if (m.ft.vipMethod[vip] !== METHOD_DSR) {
      if (!writeReplyKey(m.ft, vip, backend, this.bytes, 0, this.reply)) return -100;
      reply = this.replyWords;
    }
    const id = m.table.insert(this.words, reply, primary, backup, vip, backend, m.now);
    if (id < 0) return id;
    this.packets(m, id, packets);
    return id;
  }

  /**
   * `n` more packets of entry `id`, continuing its exchange from its packet count, with the
   * forwarder's confirmation rule (src/dataplane/forwarder.ts #confirmed). NAT: 1 client (TCP:
   * SYN), 2 reply (SYN-ACK), 3 client (the ACK of the server's ISN: confirmed), then client
   * data. DSR: 1 client (SYN), 2 client (ACK: confirmed), then data. TCP sequence numbers are a
   * real connection's.
   */
  packets(m: LoopbackMember, id: number, n: number): void {
    const t = m.table;
    for (let p = 0; p < n; p++) {
      const k = t.packets(id) + 1; // this packet's number in the exchange
      const tcp = t.state(id) >= 1 && t.state(id) <= 4;
      const nat = t.hasReplyKey(id);
      let r: number;
      if (!tcp) {
        r = t.touch(id, m.now, 0, nat && k === 2 ? 1 : 0);
      } else if (k === 1) {
        r = t.touch(id, m.now, TcpFlags.SYN, 0, CLIENT_ISN, 0, 1);
      } else if (nat && k === 2) {
        r = t.touch(id, m.now, TcpFlags.SYN | TcpFlags.ACK, 1, SERVER_ISN, CLIENT_ISN + 1, 1);
      } else {
        const data = k - (nat ? 3 : 2); // data segments of 100 bytes before this one
        r = t.touch(id, m.now, TcpFlags.ACK, 0, CLIENT_ISN + 1 + 100 * data, SERVER_ISN + 1, data === 0 ? 0 : 100);
      }
      if (r === TouchResult.CONFIRMED_NOW && replicatesConfirmed(t.primary(id), m.index, undefined)) {
        t.updateFlags(id, 0, FlowFlags.FROM_PEER);
        m.replicator.flowReady(id);
      }
    }
  }
}
