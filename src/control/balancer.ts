/**
 * One balancer process: wires the control plane (config, tables, timers, admin endpoint,
 * signals) to the data plane (TUN device → Forwarder → TUN device).
 *
 * Start-up order, each step failing with one clear line (TunlbError) before anything is
 * half-open:
 *   1. config loaded and validated; this balancer's entry selected (`--id`)
 *   2. its configured address present on a local interface (in its network namespace)
 *   3. hash key derived from the cluster key; forwarding table built and validated
 *   4. flow table preallocated (capacity from the config)
 *   5. cluster (more than one balancer): control channel bound, probes running, data socket
 *      for encapsulated packets bound on this balancer's address
 *   6. TUN device opened (offloads probed once; features logged), batch buffers allocated
 *   7. admin endpoint listening
 *   8. cluster: bulk sync from a live peer (this balancer reports SYNCING meanwhile, so no
 *      peer sends it flows), then SERVING; read loops armed
 *
 * Readiness (what a route announcement hooks, e.g. BGP for ECMP): `serving` turns true once
 * step 8 is done and the read loops run, and false at stop(); `onServingChange` (or the
 * option of the same name, registered before the sync starts) is called on each change.
 *
 * Shutdown (SIGTERM/SIGINT or `stop()`): stop reading, close the admin endpoint, release the
 * TUN device (the kernel removes it and its routes), log final counters. Idempotent.
 *
 * Event-loop contract: the read loop handles at most MAX_BATCHES_PER_WAKEUP batches per
 * readable event and then returns to libuv (the poll is level-triggered, so remaining
 * packets wake it again at once); timers (flow expiry, later liveness probes) therefore run
 * between bursts even under a saturating load.
 */
import { networkInterfaces } from 'node:os';
import { performance } from 'node:perf_hooks';
import { loadConfig, selectSelf, type Config } from '../config';
import { deriveHashKey } from '../cluster/hash-key';
import { FlowTable } from '../flow';
import { TunlbError, ErrorCodes } from '../errors';
import { TunDevice, type TunLike } from '../dataplane/tun-device';
import { PacketBatch, GSO_MAX_PACKET } from '../dataplane/packet-batch';
import { Forwarder } from '../dataplane/forwarder';
import { ForwardDrop } from '../dataplane/forward-drop';
import { buildForwardingTable, type ForwardingTable } from '../dataplane/forwarding-table';
import { createLogger, type Logger } from './logger';
import { ClusterNode } from '../cluster/cluster-node';
import { HealthMonitor, type HealthReportBody } from '../backends/health-monitor';
import { UdpBatchSocket } from '../dataplane/udp-batch-socket';
import { PeerArrays } from '../dataplane/packet-batch';
import { AdminServer } from './admin-server';
import { snapshotStats, type BalancerSnapshot } from './snapshot';
import { L2Socket, interfaceInfo } from '../dataplane/l2-socket';
import { NeighbourTable } from '../dataplane/neighbours';
import { createDsrOutput, type DsrOutput, type PeerOutput } from '../dataplane/forwarder';
import { reloadConfig, type ReloadResult } from './reload';

const MAX_BATCHES_PER_WAKEUP = 8;
/** Flow-table entry ids examined per expiry tick (every EXPIRY_INTERVAL_MS). */
const EXPIRY_BUDGET = 65536;
const EXPIRY_INTERVAL_MS = 100;

export interface BalancerOptions {
  configPath: string;
  id: string;
  /** Overrides config.log.level. */
  logLevel?: string;
  /** Overrides config.admin.listen ("host:port"); "off" disables it. */
  adminListen?: string;
  /** For tests: a device to use instead of opening the configured TUN device. */
  device?: TunLike;
  logger?: Logger;
  /** Called with true when this balancer serves (after its bulk sync) and false when it stops. */
  onServingChange?: (serving: boolean, reason: string) => void;
}

export class Balancer {
  readonly config: Config;
  readonly selfIndex: number;
  readonly selfId: string;
  readonly log: Logger;
  readonly table: FlowTable;
  readonly forwarder: Forwarder;
  readonly startedAt = new Date();
  readonly #device: TunLike;
  readonly #batch: PacketBatch;
  readonly #vnet: boolean;
  #t0 = performance.now();
  readonly #live: Uint8Array;
  readonly cluster: ClusterNode | undefined;
  /** Backend health, drain marks and the cluster-wide view of them (src/backends). */
  health!: HealthMonitor;
  readonly #hashKey: Uint32Array;
  #rebuildPending = false;
  readonly #dataSocket: UdpBatchSocket | undefined;
  readonly #peerRx: PacketBatch | undefined;
  readonly #peerRxAddrs: PeerArrays | undefined;
  readonly #peerOut: PeerOutput | undefined;
  #peerSplit: string;
  /** DSR (a VIP with method dsr and a back interface): neighbours, frame output, AF_PACKET socket. */
  readonly #dsr: { neighbours: NeighbourTable; output: DsrOutput; socket: L2Socket } | undefined;
  #admin: AdminServer | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  #serving = false;
  readonly #servingListeners = new Set<(serving: boolean, reason: string) => void>();
  #configPath = '';

  private constructor(
    config: Config,
    selfIndex: number,
    log: Logger,
    device: TunLike,
    forwarding: ForwardingTable,
    hashKey: Uint32Array,
    table: FlowTable,
    cluster: ClusterNode | undefined,
    dataSocket: UdpBatchSocket | undefined,
    dsr?: { neighbours: NeighbourTable; socket: L2Socket },
  ) {
    this.config = config;
    this.selfIndex = selfIndex;
    this.selfId = config.balancers[selfIndex]!.id;
    this.log = log;
    this.table = table;
    this.cluster = cluster;
    this.#hashKey = hashKey;
    this.#dataSocket = dataSocket;
    this.#device = device;
    this.#vnet = device.features.vnetHdr;
    const maxPacket = this.#vnet ? GSO_MAX_PACKET : Math.max(device.maxPacketSize, config.tun.mtu);
    this.#batch = new PacketBatch({ count: config.tun.batch, maxPacket });
    if (cluster !== undefined) {
      // Liveness is the membership's: a peer counts once it answers probes and serves.
      this.#live = cluster.membership.live;
      const self = config.balancers[selfIndex]!;
      const n = config.tun.batch;
      const split = this.#vnet && dataSocket !== undefined && dataSocket.gso
        ? peerMaxDatagram(self.address.text, self.address.family)
        : { maxDatagram: 0, why: this.#vnet ? 'sent whole: the kernel has no UDP GSO (UDP_SEGMENT)' : 'no GSO super-packets (tun.offload off)' };
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
      this.#peerRx = new PacketBatch({ count: config.tun.batch, maxPacket: GSO_MAX_PACKET });
      this.#peerRxAddrs = new PeerArrays(config.tun.batch);
    } else {
      this.#peerSplit = 'no peers';
      // A cluster of one: this balancer is every flow's primary (claim 6).
      this.#live = new Uint8Array(config.balancers.length);
      this.#live[selfIndex] = 1;
    }
    const peerAddrs = new Uint8Array(config.balancers.length * 16);
    const peerPorts = new Uint16Array(config.balancers.length);
    config.balancers.forEach((b, i) => {
      peerAddrs.set(b.address.bytes, i * 16);
      peerPorts[i] = b.dataPort;
    });
    if (dsr !== undefined) this.#dsr = { ...dsr, output: createDsrOutput(config.tun.batch, dsr.socket.vnetHdr) };
    this.forwarder = new Forwarder({
      table,
      forwarding,
      hashKey,
      selfIndex,
      live: this.#live,
      sink: cluster?.replicator,
      syncThreshold: config.cluster.replication.syncThreshold,
      peers: cluster !== undefined ? { addrs: peerAddrs, ports: peerPorts } : undefined,
      peerOutput: this.#peerOut,
      dsr: this.#dsr,
    });
  }

  /** Starts a balancer; throws TunlbError with a one-line message on any start-up problem. */
  static async start(opts: BalancerOptions): Promise<Balancer> {
    const config = loadConfig(opts.configPath);
    const self = selectSelf(config, opts.id);
    const log =
      opts.logger ?? createLogger({ level: opts.logLevel ?? config.log.level, name: self.balancer.id });
    for (const w of config.warnings) log.warn({ event: 'config_warning' }, w);
    if (opts.device === undefined) assertAddressPresent(self.balancer.address.text, `balancers[${self.index}].address`);
    const hashKey = deriveHashKey(config.cluster.key.reveal());
    const forwarding = buildForwardingTable(config, hashKey, 1);
    const t = config.flowTable.timeouts;
    let cluster: ClusterNode | undefined;
    const table = new FlowTable({
      capacity: config.flowTable.capacity,
      timeouts: {
        tcpEstablished: t.tcpEstablishedS,
        tcpSynSeen: t.tcpSynS,
        tcpClosing: t.tcpClosingS,
        tcpClosed: t.tcpResetS,
        udp: t.udpS,
        icmp: t.icmpS,
      },
      onExpire: (id) => cluster?.replicator.flowExpired(id),
    });
    const t0 = performance.now();
    const nowSec = (): number => Math.floor((performance.now() - t0) / 1000);
    let b: Balancer | undefined;
    let device: TunLike | undefined;
    let dataSocket: UdpBatchSocket | undefined;
    let dsr: { neighbours: NeighbourTable; socket: L2Socket } | undefined;
    try {
      if (config.balancers.length > 1) {
        cluster = await ClusterNode.start({
          config,
          selfIndex: self.index,
          table,
          forwarding: () => b!.forwarder.forwarding,
          nowSec,
          log,
          onHealth: (sender, body) => b?.health.onReport(sender, body as HealthReportBody),
          onEvent: () => b?.health.liveChanged(),
        });
        // Encapsulated GSO super-packets arrive as 64 KiB datagrams: a default-sized receive
        // buffer overflows under a TCP stream (UdpRcvbufErrors), so size it for bursts.
        dataSocket = UdpBatchSocket.open({
          address: self.balancer.address.text,
          port: self.balancer.dataPort,
          rcvBuf: 16 << 20,
          sndBuf: 8 << 20,
        });
      }
      device =
        opts.device ??
        TunDevice.open({ name: config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload, vnetHdr: config.tun.offload });
      if (opts.device === undefined && NeighbourTable.needed(forwarding)) dsr = openDsr(forwarding, device, log);
      b = new Balancer(config, self.index, log, device, forwarding, hashKey, table, cluster, dataSocket, dsr);
      b.#t0 = t0;
      b.#configPath = opts.configPath;
      b.#startHealth();
      const listen = opts.adminListen ?? `${config.admin.listen.host}:${config.admin.listen.port}`;
      if (listen !== 'off') b.#admin = await AdminServer.listen(listen, b);
      if (cluster !== undefined) await cluster.syncThenServe();
    } catch (e) {
      b?.health?.stop();
      cluster?.close();
      dataSocket?.close();
      dsr?.neighbours.close();
      dsr?.socket.close();
      if (device !== undefined && !device.closed) device.close();
      if (b !== undefined) await b.#admin?.close();
      throw e;
    }
    b.#arm();
    if (opts.onServingChange !== undefined) b.#servingListeners.add(opts.onServingChange);
    b.#setServing(true, cluster === undefined ? 'cluster of one' : cluster.syncedFrom !== null ? `bulk sync from ${cluster.syncedFrom} done` : 'no serving peer to sync from');
    log.info(
      {
        event: 'balancer_started',
        config: config.source,
        clusterId: config.cluster.id,
        balancers: config.balancers.map((x) => x.id),
        tun: device.name,
        features: device.features,
        vips: config.vips.map((v) => `${v.name} ${v.address.text} ${v.method} → ${v.backends.map((x) => x.address.text).join(',')}`),
        flowCapacity: config.flowTable.capacity,
        cluster: cluster ? { incarnation: cluster.incarnation, syncedFrom: cluster.syncedFrom, replication: config.cluster.replication.mode } : 'single',
        admin: b.#admin?.address ?? 'off',
        peerSplit: b.peerSplit,
      },
      `balancer ${self.balancer.id} serving on ${device.name}`,
    );
    return b;
  }

  /** True while this balancer serves (see "Readiness" in the header). */
  get serving(): boolean {
    return this.#serving;
  }

  /** Calls fn(serving, reason) on every change of `serving`; returns the unsubscribe function. */
  onServingChange(fn: (serving: boolean, reason: string) => void): () => void {
    this.#servingListeners.add(fn);
    return () => this.#servingListeners.delete(fn);
  }

  #setServing(serving: boolean, reason: string): void {
    if (this.#serving === serving) return;
    this.#serving = serving;
    for (const fn of [...this.#servingListeners]) {
      try {
        fn(serving, reason);
      } catch (e) {
        this.log.warn({ event: 'readiness_listener_failed', err: String(e) }, 'a readiness listener threw');
      }
    }
  }

  /** Seconds since start (the flow table's clock). */
  nowSec(): number {
    return Math.floor((performance.now() - this.#t0) / 1000);
  }

  get device(): TunLike {
    return this.#device;
  }

  get live(): Uint8Array {
    return this.#live;
  }

  /** DSR neighbour table (undefined without DSR VIPs); follow forwarding swaps with setForwarding. */
  get dsrNeighbours(): NeighbourTable | undefined {
    return this.#dsr?.neighbours;
  }

  /**
   * Starts backend health checks. Every eligibility change (health, drain) rebuilds the
   * forwarding table — incrementally: only the rows the backend won or now wins move — and
   * swaps it in between batches. New flows avoid ineligible backends; established flows
   * keep their recorded backend (the record is the truth) unless it is down (unhealthy:
   * backendUp, src/dataplane/forwarder.ts "Backend down": TCP reset, UDP/ICMP moved).
   */
  #startHealth(): void {
    const cluster = this.cluster;
    this.health = new HealthMonitor({
      config: this.config,
      selfIndex: this.selfIndex,
      hashKey: this.#hashKey,
      live: this.#live,
      nowMs: () => performance.now(),
      log: this.log,
      broadcast: (body) => {
        if (cluster !== undefined) cluster.channel.broadcast(cluster.channel.signer.seal('health', body));
      },
      // Every transition is a change of state or health (BackendState emits nothing else), and
      // each can change what the table holds: eligibility for new flows, and backendUp, which
      // decides what happens to existing flows (a drained backend going down, a drain timeout).
      onChange: () => this.#scheduleRebuild(),
    });
    // Until a backend's first check completes (milliseconds), the table built at start
    // treats it as eligible; the first result that makes it ineligible rebuilds the table.
    this.health.start();
  }

  #scheduleRebuild(): void {
    if (this.#rebuildPending) return;
    this.#rebuildPending = true;
    setImmediate(() => {
      this.#rebuildPending = false;
      if (this.#stopped) return;
      const prev = this.forwarder.forwarding;
      try {
        const hm = this.health;
        const ft = buildForwardingTable(prev.config, this.#hashKey, prev.generation, (vip, i) => hm.eligible(vip.index, i), prev, backendUpOf(hm));
        this.forwarder.setForwarding(ft);
      } catch (e) {
        this.log.error({ event: 'forwarding_table_rejected', err: (e as Error).message }, 'forwarding table rebuild failed; the running table stays');
      }
    });
  }

  /**
   * Reloads the config file (src/control/reload.ts): VIPs and backends change live, flows on
   * kept backends stay. Throws TunlbError (CONFIG_*, USAGE) when refused (logged; nothing
   * changed). `config` keeps the start-up config; forwarder.forwarding.config is the live one.
   */
  reload(): ReloadResult {
    if (this.#stopped) throw new TunlbError(ErrorCodes.USAGE, 'balancer stopped');
    return reloadConfig({
      configPath: this.#configPath,
      hashKey: this.#hashKey,
      forwarder: this.forwarder,
      table: this.table,
      health: this.health,
      log: this.log,
      nowSec: this.nowSec(),
      onForwarding: (ft) => this.#dsr?.neighbours.setForwarding(ft),
    });
  }

  snapshot(): BalancerSnapshot {
    return snapshotStats(this);
  }

  #arm(): void {
    this.#device.onReadable(() => this.#onReadable());
    this.#dataSocket?.onReadable(() => this.#onPeerReadable());
    this.#dsr?.neighbours.start();
    this.#expiryTimer = setInterval(() => this.table.expire(this.nowSec(), EXPIRY_BUDGET), EXPIRY_INTERVAL_MS);
  }

  #onReadable(): void {
    const dev = this.#device;
    const batch = this.#batch;
    const fwd = this.forwarder;
    for (let k = 0; k < MAX_BATCHES_PER_WAKEUP && !this.#stopped; k++) {
      const n = dev.read(batch, batch.count);
      if (n === 0) return;
      const m = fwd.processBatch(batch, n, this.#vnet, this.nowSec());
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

  /** How GSO super-packets to peers are sent (logged at start): split to the MTU, or whole and why. */
  get peerSplit(): string {
    return this.#peerSplit;
  }

  /** The kernel refused a UDP GSO send (EIO: no checksum offload on the path): send whole from now on. */
  #stopSplitting(sg: { maxDatagram: number }): void {
    sg.maxDatagram = 0;
    this.#peerSplit = 'sent whole: the kernel refused a UDP GSO send (EIO: no UDP checksum offload on the path)';
    this.log.warn({ event: 'peer_split_off', reason: this.#peerSplit }, `GSO super-packets to peers are now ${this.#peerSplit}`);
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
      const m = fwd.processPeerBatch(rx, n, pa.addrs, this.#vnet, this.nowSec());
      if (m > 0) {
        const w = this.#device.write(rx, m);
        if (w < m) fwd.stats.forwardDrops[ForwardDrop.WRITE_FAILED]! += m - w;
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

  /** Stops forwarding and releases everything. Idempotent. */
  async stop(reason = 'stop'): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#setServing(false, reason);
    if (this.#expiryTimer) clearInterval(this.#expiryTimer);
    this.health.stop();
    this.cluster?.close();
    this.#dsr?.neighbours.close();
    this.#dsr?.socket.close();
    try {
      if (this.#dataSocket !== undefined && !this.#dataSocket.closed) this.#dataSocket.close();
    } catch {
      /* already closed */
    }
    try {
      if (!this.#device.closed) {
        this.#device.stop();
        this.#device.close();
      }
    } catch (e) {
      this.log.warn({ event: 'device_close_failed', err: String(e) }, 'closing the TUN device failed');
    }
    await this.#admin?.close();
    this.log.info({ event: 'balancer_stopped', reason, stats: this.snapshot().counters }, `balancer ${this.selfId} stopped (${reason})`);
  }
}

/**
 * DSR: the neighbour table of the forwarding table's DSR backends and an AF_PACKET socket on
 * the interface that reaches them (with PACKET_VNET_HDR when the TUN device exchanges virtio
 * headers, so GSO super-packets leave whole). No such interface: warns, returns undefined (DSR
 * VIPs then drop as method_unsupported). Throws TunlbError when the socket cannot be opened.
 */
function openDsr(forwarding: ForwardingTable, device: TunLike, log: Logger): { neighbours: NeighbourTable; socket: L2Socket } | undefined {
  const neighbours = new NeighbourTable({
    forwarding,
    exclude: [device.name],
    warn: (msg, details) => log.warn({ event: 'dsr_neighbours', ...details }, msg),
  });
  const ifs = neighbours.interfaces;
  if (ifs.length === 0) {
    log.warn({ event: 'dsr_no_interface' }, 'no local interface reaches a DSR backend: DSR VIPs are not served');
    neighbours.close();
    return undefined;
  }
  let socket: L2Socket;
  try {
    socket = L2Socket.open({ interface: ifs[0]!, vnetHdr: device.features.vnetHdr });
  } catch (e) {
    neighbours.close();
    throw e;
  }
  log.info({ event: 'dsr_socket', interface: socket.name, ifindex: socket.ifindex, interfaces: ifs, vnetHdr: socket.vnetHdr }, `DSR frames leave on ${ifs.join(', ')}`);
  return { neighbours, socket };
}

/**
 * backendUp of a forwarding table from the monitor's view: down = unhealthy, drained past its
 * drain timeout, or removed ('draining' stays up and keeps its flows).
 */
export function backendUpOf(hm: HealthMonitor): (vip: { index: number }, i: number) => boolean {
  return (vip, i) => !hm.isDown(vip.index, i);
}

/**
 * The largest UDP payload to a peer that leaves without IP fragmentation: the MTU of the
 * interface holding this balancer's address (`addr`) minus the IP (20 / 40) and UDP (8)
 * headers. The path to a peer may have a smaller MTU than that interface (routed balancer
 * networks): then the kernel fragments as before. maxDatagram 0 = do not split; `why` says
 * what happens to super-packets, for the start-up log.
 */
function peerMaxDatagram(addr: string, family: 4 | 6): { maxDatagram: number; why: string } {
  const name = interfaceHolding(addr);
  if (name === undefined) return { maxDatagram: 0, why: `sent whole: no interface holds ${addr}` };
  let mtu: number;
  try {
    mtu = interfaceInfo(name).mtu;
  } catch (e) {
    return { maxDatagram: 0, why: `sent whole: cannot read the MTU of ${name} (${(e as Error).message})` };
  }
  const max = Math.min(65507, mtu - (family === 4 ? 28 : 48));
  return { maxDatagram: max, why: `split to ${max}-byte datagrams (MTU ${mtu} of ${name}), sent with UDP GSO` };
}

/** The name of the local interface that holds `addr`, if any. */
function interfaceHolding(addr: string): string | undefined {
  for (const [name, list] of Object.entries(networkInterfaces())) {
    for (const a of list ?? []) if (a.address === addr) return name;
  }
  return undefined;
}

/** Throws ADDRESS_NOT_PRESENT unless `addr` is configured on a local interface. */
export function assertAddressPresent(addr: string, field: string): void {
  if (interfaceHolding(addr) !== undefined) return;
  throw new TunlbError(
    ErrorCodes.ADDRESS_NOT_PRESENT,
    `${field} ${addr} is not on any interface here: run the balancer in the host or network namespace that owns it (e.g. ip netns exec NS tunlb run ...), or fix ${field}`,
    { address: addr, field },
  );
}
