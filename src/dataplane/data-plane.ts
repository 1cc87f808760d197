/**
 * The data plane of one balancer: its batch loops and egress, around the Forwarder's
 * decisions (src/dataplane/forwarder.ts).
 *
 *   TUN readable   read a batch → Forwarder.processBatch → write the kept packets back into
 *                  the TUN device, send the peer output (one sendmmsg, UDP GSO for split
 *                  super-packets), send the DSR frames (one sendmmsg on the AF_PACKET socket)
 *   peer readable  recvmmsg a batch of encapsulated packets → Forwarder.processPeerBatch →
 *                  write into the TUN device, send the DSR frames
 * Every packet a send or write does not take is counted as forward drop write_failed.
 *
 * Event-loop contract: a readable callback handles at most MAX_BATCHES_PER_WAKEUP batches and
 * then returns to libuv (the poll is level-triggered, so remaining packets wake it again at
 * once); timers (flow expiry, liveness probes) therefore run between bursts even under a
 * saturating load. No allocation, closure or exception per packet or per batch.
 *
 * Ownership: the DataPlane owns its batches and outputs, and closes the device and sockets
 * it was given (close(), idempotent). The Balancer (src/control/balancer.ts) opens them and
 * swaps forwarding tables through `forwarder`.
 */
import { Forwarder, type ForwarderOptions } from './forwarder';
import { ForwardDrop } from './forward-drop';
import { PacketBatch, PeerArrays, GSO_MAX_PACKET } from './packet-batch';
import type { TunLike } from './tun-device';
import type { UdpBatchSocket } from './udp-batch-socket';
import type { L2Socket } from './l2-socket';
import type { NeighbourTable } from './neighbours';
import type { PeerAddresses, PeerOutput } from './peer-output';
import { createDsrOutput, type DsrOutput } from './dsr-output';

/** Batches handled per readable event before returning to the event loop. */
export const MAX_BATCHES_PER_WAKEUP = 8;

/** pino-compatible subset. */
export interface DataPlaneLogger {
  warn(obj: object, msg?: string): void;
}

/** The forwarder's options (src/dataplane/forwarder.ts) but its outputs, which the data plane builds, and: */
export interface DataPlaneOptions extends Pick<ForwarderOptions, 'table' | 'forwarding' | 'hashKey' | 'selfIndex' | 'live' | 'sink' | 'syncThreshold'> {
  device: TunLike;
  /** Packets per batch (config tun.batch). */
  batch: number;
  /** MTU of the TUN device (config tun.mtu): slot size without offloads. */
  mtu: number;
  /** Cluster: the data socket for encapsulated packets, the peers' data addresses, and how super-packets are split. */
  peers?: {
    socket: UdpBatchSocket;
    addresses: PeerAddresses;
    /** Largest UDP payload to a peer without IP fragmentation (0: do not split), and why, for the log. */
    split: { maxDatagram: number; why: string };
  };
  /** DSR: the neighbour table and the AF_PACKET socket. */
  dsr?: { neighbours: NeighbourTable; socket: L2Socket };
  /** Seconds since start (the flow table's clock), read once per batch. */
  nowSec: () => number;
  log: DataPlaneLogger;
}

export class DataPlane {
  readonly forwarder: Forwarder;
  readonly #device: TunLike;
  readonly #batch: PacketBatch;
  readonly #vnet: boolean;
  readonly #nowSec: () => number;
  readonly #log: DataPlaneLogger;
  readonly #dataSocket: UdpBatchSocket | undefined;
  readonly #peerRx: PacketBatch | undefined;
  readonly #peerRxAddrs: PeerArrays | undefined;
  readonly #peerOut: PeerOutput | undefined;
  /** Steered replies passed on from the peer path (shares #peerRx's buffer). */
  readonly #peerRelay: PeerOutput | undefined;
  #peerSplit: string;
  readonly #dsr: { neighbours: NeighbourTable; output: DsrOutput; socket: L2Socket } | undefined;
  #stopped = false;

  constructor(opts: DataPlaneOptions) {
    const device = opts.device;
    this.#device = device;
    this.#nowSec = opts.nowSec;
    this.#log = opts.log;
    this.#vnet = device.features.vnetHdr;
    const maxPacket = this.#vnet ? GSO_MAX_PACKET : Math.max(device.maxPacketSize, opts.mtu);
    const n = opts.batch;
    this.#batch = new PacketBatch({ count: n, maxPacket });
    const p = opts.peers;
    if (p !== undefined) {
      this.#dataSocket = p.socket;
      const split = p.split;
      this.#peerSplit = split.why;
      this.#peerOut = {
        batch: new PacketBatch({ count: n, maxPacket, share: this.#batch }),
        addrs: new Uint8Array(n * 16),
        ports: new Uint16Array(n),
        count: 0,
        // Chunk headers: ~4.5 KiB per 64 KiB super-packet at MTU 1500; a full batch of them fits.
        // Not allocated when nothing is split.
        segs: split.maxDatagram === 0 ? undefined : {
          chunk: new Uint16Array(n), hdrs: new Uint8Array(n * 8192), hdrOffs: new Uint32Array(n), hdrLens: new Uint16Array(n),
          used: 0, maxDatagram: split.maxDatagram,
        },
      };
      this.#peerRx = new PacketBatch({ count: n, maxPacket: GSO_MAX_PACKET });
      this.#peerRxAddrs = new PeerArrays(n);
      this.#peerRelay = {
        batch: new PacketBatch({ count: n, maxPacket: GSO_MAX_PACKET, share: this.#peerRx }),
        addrs: new Uint8Array(n * 16),
        ports: new Uint16Array(n),
        count: 0,
      };
    } else {
      this.#peerSplit = 'no peers';
    }
    if (opts.dsr !== undefined) this.#dsr = { ...opts.dsr, output: createDsrOutput(n, opts.dsr.socket.vnetHdr) };
    this.forwarder = new Forwarder({
      table: opts.table,
      forwarding: opts.forwarding,
      hashKey: opts.hashKey,
      selfIndex: opts.selfIndex,
      live: opts.live,
      sink: opts.sink,
      syncThreshold: opts.syncThreshold,
      peers: p?.addresses,
      peerOutput: this.#peerOut,
      peerRelay: this.#peerRelay,
      dsr: this.#dsr,
    });
  }

  get device(): TunLike {
    return this.#device;
  }

  /** DSR neighbour table (undefined without DSR VIPs). */
  get dsrNeighbours(): NeighbourTable | undefined {
    return this.#dsr?.neighbours;
  }

  /** How GSO super-packets to peers are sent (logged at start): split to the MTU, or whole and why. */
  get peerSplit(): string {
    return this.#peerSplit;
  }

  /** Arms the read loops (TUN device, data socket) and the DSR neighbour refresh. */
  start(): void {
    this.#device.onReadable(() => this.#onReadable());
    this.#dataSocket?.onReadable(() => this.#onPeerReadable());
    this.#dsr?.neighbours.start();
  }

  /**
   * Stops the loops and releases the device and sockets (the kernel removes the TUN device and
   * its routes). Idempotent. Throws only what closing the TUN device throws (the caller logs it).
   */
  close(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#dsr?.neighbours.close();
    this.#dsr?.socket.close();
    try {
      if (this.#dataSocket !== undefined && !this.#dataSocket.closed) this.#dataSocket.close();
    } catch {
      /* already closed */
    }
    if (!this.#device.closed) {
      this.#device.stop();
      this.#device.close();
    }
  }

  /** TUN readable: read → decide → write / send to peers / send DSR frames. */
  #onReadable(): void {
    const dev = this.#device;
    const batch = this.#batch;
    const fwd = this.forwarder;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP && !this.#stopped; k++) {
      const n = dev.read(batch, batch.count);
      if (n === 0) return;
      const m = fwd.processBatch(batch, n, this.#vnet, this.#nowSec());
      if (m > 0) {
        const w = dev.write(batch, m);
        if (w < m) fwd.stats.forwardDrops[ForwardDrop.WRITE_FAILED]! += m - w;
      }
      const po = this.#peerOut;
      if (po !== undefined && po.count > 0) {
        const sock = this.#dataSocket!;
        const sg = po.segs;
        const w = sock.send(po.batch, po.count, po.addrs, po.ports, sg !== undefined && sg.used > 0 ? sg : undefined);
        if (w < po.count) fwd.stats.forwardDrops[ForwardDrop.WRITE_FAILED]! += po.count - w;
        if (sg !== undefined && sg.maxDatagram > 0 && !sock.gso) this.#stopSplitting(sg);
      }
      if (this.#dsr !== undefined) this.#sendDsr();
      if (n < batch.count) return;
    }
  }

  /** The kernel refused a UDP GSO send (EIO: no checksum offload on the path): send whole from now on. */
  #stopSplitting(sg: { maxDatagram: number }): void {
    sg.maxDatagram = 0;
    this.#peerSplit = 'sent whole: the kernel refused a UDP GSO send (EIO: no UDP checksum offload on the path)';
    this.#log.warn({ event: 'peer_split_off', reason: this.#peerSplit }, `GSO super-packets to peers are now ${this.#peerSplit}`);
  }

  /** Encapsulated packets from peers: decapsulate, rewrite, write into the TUN device. */
  #onPeerReadable(): void {
    const sock = this.#dataSocket!;
    const rx = this.#peerRx!;
    const pa = this.#peerRxAddrs!;
    const fwd = this.forwarder;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP && !this.#stopped; k++) {
      const n = sock.recv(rx, rx.count, pa.addrs, pa.ports);
      if (n === 0) return;
      const m = fwd.processPeerBatch(rx, n, pa.addrs, this.#vnet, this.#nowSec());
      if (m > 0) {
        const w = this.#device.write(rx, m);
        if (w < m) fwd.stats.forwardDrops[ForwardDrop.WRITE_FAILED]! += m - w;
      }
      const pr = this.#peerRelay!;
      if (pr.count > 0) {
        const w = sock.send(pr.batch, pr.count, pr.addrs, pr.ports);
        if (w < pr.count) fwd.stats.forwardDrops[ForwardDrop.WRITE_FAILED]! += pr.count - w;
      }
      if (this.#dsr !== undefined) this.#sendDsr();
      if (n < rx.count) return;
    }
  }

  /** Sends the DSR frames of the batch just processed (one sendmmsg on the AF_PACKET socket). */
  #sendDsr(): void {
    const d = this.#dsr!;
    const o = d.output;
    if (o.count === 0) return;
    const w = d.socket.send(o, o.count, o.vnet, o.ifindex);
    if (w < o.count) this.forwarder.stats.forwardDrops[ForwardDrop.WRITE_FAILED]! += o.count - w;
  }
}
