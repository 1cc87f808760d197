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
 *   9. announcement (src/control/announcer.ts): the VIP routes go into announce.table (a
 *      routing daemon announces them: ECMP entry), the ready file reads 0
 *
 * Readiness: `serving` turns true once step 8 is done and the read loops run, and false at
 * stop(); `onServingChange` (or the start option of the same name, which also sees the first
 * change) is called on each change. The announcer (step 9) follows the same moment.
 *
 * Planned stop (SIGTERM/SIGINT: `leave()`): withdraw the announcement (the routers stop
 * sending VIP traffic here within milliseconds), tell the peers this balancer is leaving
 * (status DRAINING, at once: they hand its flows to their backups), keep serving what still
 * arrives until every live peer has acknowledged (at most announce.leave_timeout_ms) plus
 * LEAVE_LINGER_MS for packets in flight, then `stop()`.
 *
 * Shutdown (`stop()`): withdraw, stop reading, close the admin endpoint, release the TUN
 * device (the kernel removes it and its routes), log final counters. Idempotent.
 *
 * The packet loops (TUN read → Forwarder → TUN write / peer send / DSR send) are the data
 * plane's (src/dataplane/data-plane.ts, with its event-loop contract); this class opens what
 * they use, starts them, and swaps forwarding tables in between batches.
 */
import { networkInterfaces } from 'node:os';
import { performance } from 'node:perf_hooks';
import { loadConfig, selectSelf, type Config } from '../config';
import { deriveDataTagKey, deriveHashKey } from '../decision/hash-key';
import { FlowTable } from '../flow';
import { TunlbError, ErrorCodes } from '../errors';
import { TunDevice, type TunLike } from '../dataplane/tun-device';
import type { Forwarder } from '../dataplane/forwarder';
import { DataPlane } from '../dataplane/data-plane';
import { buildForwardingTable, forwardingTableSteps, type ForwardingTable } from '../decision/forwarding-table';
import { createLogger, type Logger } from '../logger';
import { ClusterNode } from '../cluster/cluster-node';
import { BackupRepair } from '../cluster/backup-repair';
import { HealthMonitor, type HealthReportBody } from '../backends/health-monitor';
import { UdpBatchSocket } from '../dataplane/udp-batch-socket';
import { AdminServer } from './admin-server';
import { snapshotStats, type BalancerSnapshot } from './snapshot';
import { L2Socket, interfaceInfo } from '../dataplane/l2-socket';
import { NeighbourTable } from '../dataplane/neighbours';
import { reloadConfig, reloadLine, type ReloadResult } from './reload';
import { configHash, type ConfigHash } from '../config/config-hash';
import { OperatorEvents } from './operator-events';
import type { ClusterReloadRow } from '../cluster/cluster-reload';
import type { PeerReloadResult, ReloadOutcome } from '../cluster/cluster-reload';
import { runSliced, yieldToLoop } from './time-slice';
import { Announcer, type AnnounceVip } from './announcer';

/**
 * Flow-table entry ids examined per expiry tick (every EXPIRY_INTERVAL_MS), in steps of
 * EXPIRY_STEP run in the shared time slices (src/control/time-slice.ts): examining an id costs
 * nanoseconds, but removing an expired flow ~1-2 us, so when a mass of flows expires at once (a
 * flood's records: 65,536 removals took 50-130 ms in one call) the sweep is spread over turns
 * of the loop. A tick whose sweep has not finished is skipped (expired flows are also removed
 * by the lookups and inserts that meet them).
 */
const EXPIRY_BUDGET = 65536;
const EXPIRY_STEP = 1024;
const EXPIRY_INTERVAL_MS = 100;
/** Planned stop: how often the leaving probes are resent until every peer acknowledged. */
const LEAVE_RESEND_MS = 10;
/** Planned stop: serving on after the peers acknowledged, for packets already in flight. */
const LEAVE_LINGER_MS = 50;

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
  readonly startedAt = new Date();
  /** The packet loops, the forwarder and their I/O (src/dataplane/data-plane.ts). */
  readonly #dataPlane: DataPlane;
  #t0 = performance.now();
  readonly #live: Uint8Array;
  readonly cluster: ClusterNode | undefined;
  /** Gives flows decided without a live peer a live backup once one is up (cluster only). */
  readonly backupRepair: BackupRepair | undefined;
  /** Backend health, drain marks and the cluster-wide view of them (src/backends). */
  health!: HealthMonitor;
  readonly #hashKey: Uint32Array;
  /** A rebuild is running (#rebuildLoop) / another one is wanted after it. */
  #rebuilding = false;
  #rebuildWanted = false;
  #admin: AdminServer | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  /** An expiry sweep is running in the time slices. */
  #expiring = false;
  /** The VIP announcement (ECMP entry), readiness file and watchdog. */
  announcer!: Announcer;
  #leaving: Promise<void> | undefined;
  #stopped = false;
  #serving = false;
  readonly #servingListeners = new Set<(serving: boolean, reason: string) => void>();
  #configPath = '';
  /** The last reload (settled or not): the next one starts after it. */
  #reloads: Promise<void> = Promise.resolve();
  /** Operator actions with their origin (src/control/operator-events.ts). */
  readonly operatorEvents: OperatorEvents;
  /** configHash() of the config it was computed for (the live one changes on reloads only). */
  #hashOf: { config: Config; hash: ConfigHash } | undefined;

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
    this.operatorEvents = new OperatorEvents(this.selfId);
    this.log = log;
    this.table = table;
    this.cluster = cluster;
    this.#hashKey = hashKey;
    if (cluster !== undefined) {
      // Liveness is the membership's: a peer counts once it answers probes and serves.
      this.#live = cluster.membership.live;
    } else {
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
    const self = config.balancers[selfIndex]!;
    const vnet = device.features.vnetHdr;
    this.#dataPlane = new DataPlane({
      device,
      batch: config.tun.batch,
      mtu: config.tun.mtu,
      table,
      forwarding,
      hashKey,
      // The data-port tag key (src/decision/data-tag.ts), derived apart from the hash key.
      tagKey: deriveDataTagKey(config.cluster.key.reveal()),
      selfIndex,
      live: this.#live,
      sink: cluster?.replicator,
      peers:
        cluster !== undefined && dataSocket !== undefined
          ? {
              socket: dataSocket,
              addresses: { addrs: peerAddrs, ports: peerPorts },
              split: vnet && dataSocket.gso
                ? peerMaxDatagram(self.address.text, self.address.family)
                : { maxDatagram: 0, why: vnet ? 'sent whole: the kernel has no UDP GSO (UDP_SEGMENT)' : 'no GSO super-packets (tun.offload off)' },
            }
          : undefined,
      dsr,
      nowSec: () => this.nowSec(),
      log,
    });
    this.backupRepair =
      cluster === undefined
        ? undefined
        : new BackupRepair({
            table,
            hashKey,
            selfIndex,
            live: this.#live,
            ranking: () => this.forwarder.forwarding.ranking,
            sink: cluster.replicator,
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
          // A peer's `tunlb reload --cluster`: reload our own file, answer with the outcome.
          reloadSelf: (origin) => (b === undefined ? Promise.resolve({ ok: false, configHash: 0, detail: 'balancer still starting' }) : b.#reloadOutcome(origin)),
          table,
          forwarding: () => b!.forwarder.forwarding,
          nowSec,
          log,
          onHealth: (sender, body) => b?.health.onReport(sender, body as HealthReportBody),
          onEvent: (e) => {
            if (e.type === 'peer_restarted') b?.health.peerRestarted(e.peer);
            b?.health.liveChanged();
            // A peer came (or went): flows decided without a live backup may get one now.
            if (b !== undefined && b.forwarder.stats.flowsNoLiveBackup > 0) b.backupRepair?.request();
          },
        });
        // The config version travels in every probe from the next tick (src/config/config-hash.ts).
        cluster.membership.setConfigHash(configHash(config).value);
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
      const an = config.announce;
      b.announcer = new Announcer({
        table: opts.device === undefined ? an.table : null,
        device: device.name,
        vips: announceVips(config),
        readyFile: an.readyFile === null ? null : an.readyFile.replaceAll('{id}', self.balancer.id),
        watchdogMs: an.watchdogMs,
        log,
      });
      b.#configPath = opts.configPath;
      b.#startHealth();
      const listen = opts.adminListen ?? `${config.admin.listen.host}:${config.admin.listen.port}`;
      if (listen !== 'off') b.#admin = await AdminServer.listen(listen, b);
      if (cluster !== undefined) await cluster.syncThenServe();
    } catch (e) {
      await b?.announcer?.close();
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
    await b.announcer.release('starting');
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
        announce: config.announce.table === null ? 'off' : { table: config.announce.table, vips: b.announcer.vips().map((v) => `${v.name} ${v.announced ? 'announced' : 'withdrawn'}`) },
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
    return this.#dataPlane.device;
  }

  get forwarder(): Forwarder {
    return this.#dataPlane.forwarder;
  }

  get live(): Uint8Array {
    return this.#live;
  }

  /** DSR neighbour table (undefined without DSR VIPs); follow forwarding swaps with setForwarding. */
  get dsrNeighbours(): NeighbourTable | undefined {
    return this.#dataPlane.dsrNeighbours;
  }

  /**
   * Starts backend health checks. Every eligibility change (health, drain, maintenance) and every
   * runtime weight (src/backends/runtime-override.ts) rebuilds the
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
      // Report epochs must grow across restarts like incarnations: the same persisted value.
      ...(cluster !== undefined ? { epoch: cluster.incarnation } : {}),
      broadcast: (body) => {
        if (cluster !== undefined) cluster.channel.broadcast(cluster.channel.signer.seal('health', body));
      },
      // Every transition is a change of state or health (BackendState emits nothing else), and
      // each can change what the table holds: eligibility for new flows, and backendUp, which
      // decides what happens to existing flows (a drained backend going down, a drain timeout).
      onChange: () => this.#scheduleRebuild(),
      // An operator's drain mark from another balancer: in the event history with its origin.
      onPeerDrain: (ev, drained, origin, sender) =>
        this.operatorEvents.record(
          drained ? 'backend_drain' : 'backend_undrain',
          `${ev.vip} ${ev.backend} ${drained ? 'drained' : 'undrained'} by operator on ${origin} (mark received from ${sender})`,
          `peer ${origin === this.selfId ? sender : origin}`,
        ),
    });
    // A runtime weight or maintenance change (command, peer, reload) changes the table too.
    this.health.onOverride(() => this.#scheduleRebuild());
    // Until a backend's first check completes (milliseconds), the table built at start
    // treats it as eligible; the first result that makes it ineligible rebuilds the table.
    this.health.start();
  }

  /**
   * Rebuilds the forwarding table from the health monitor's view, soon: on the next turn of the
   * event loop (a burst of transitions makes one rebuild), built in time slices while the
   * running table serves (src/control/time-slice.ts), then swapped in between batches. A
   * transition during a build makes another build after it; a build whose base table was
   * replaced meanwhile (a reload) is dropped and made again from the new one.
   */
  #scheduleRebuild(): void {
    this.#rebuildWanted = true;
    if (this.#rebuilding) return;
    this.#rebuilding = true;
    void this.#rebuildLoop().finally(() => {
      this.#rebuilding = false;
    });
  }

  async #rebuildLoop(): Promise<void> {
    while (this.#rebuildWanted && !this.#stopped) {
      await yieldToLoop();
      this.#rebuildWanted = false;
      if (this.#stopped) return;
      const prev = this.forwarder.forwarding;
      const hm = this.health;
      let ft: ForwardingTable | undefined;
      try {
        const steps = forwardingTableSteps(prev.config, this.#hashKey, prev.generation, (vip, i) => hm.eligible(vip.index, i), prev, backendUpOf(hm), (vip, i) => hm.weightOf(vip.index, i));
        await runSliced(() => {
          const r = steps.next();
          if (r.done === true) ft = r.value;
          return r.done === true;
        });
      } catch (e) {
        this.log.error({ event: 'forwarding_table_rejected', err: (e as Error).message }, 'forwarding table rebuild failed; the running table stays');
        continue;
      }
      if (this.#stopped) return;
      if (this.forwarder.forwarding !== prev) {
        this.#rebuildWanted = true;
        continue;
      }
      if (ft !== undefined) this.forwarder.setForwarding(ft);
    }
  }

  /**
   * Reloads the config file (src/control/reload.ts): VIPs and backends change live, flows on
   * kept backends stay. Rejects with TunlbError (CONFIG_*, USAGE) when refused (logged; nothing
   * changed). `config` keeps the start-up config; forwarder.forwarding.config is the live one.
   * Reloads run one at a time (a reload waits for the previous one's remap to end); each
   * resolves when its remap is over.
   */
  reload(origin?: string): Promise<ReloadResult> {
    const run = async (): Promise<ReloadResult> => {
      if (this.#stopped) throw new TunlbError(ErrorCodes.USAGE, 'balancer stopped');
      return this.#reloadNow(origin);
    };
    const p = this.#reloads.then(run, run);
    this.#reloads = p.then(
      () => undefined,
      () => undefined,
    );
    if (origin !== undefined) {
      // Operator events (src/control/operator-events.ts): what changed, or why it was refused.
      p.then(
        (r) => this.operatorEvents.record('reload', `config ${this.configHash().hex}, ${reloadLine(r)}`, origin),
        (e: unknown) => this.operatorEvents.record('reload_refused', `the running config ${this.configHash().hex} stays: ${(e as Error)?.message ?? String(e)}`, origin, 'warn'),
      );
    }
    return p;
  }

  /**
   * The config version of the config running now (the last one loaded, at start or by a
   * reload; src/config/config-hash.ts), computed once per config.
   */
  configHash(): ConfigHash {
    const config = this.forwarder.forwarding.config;
    if (this.#hashOf?.config !== config) this.#hashOf = { config, hash: configHash(config) };
    return this.#hashOf.hash;
  }

  /** A reload asked by a peer (`peer <id>`): its outcome as a ReloadAnswer carries it. */
  #reloadOutcome(origin: string): Promise<ReloadOutcome> {
    return this.reload(origin).then(
      (r) => ({ ok: true, configHash: this.configHash().value, detail: reloadLine(r) }),
      (e: unknown) => ({ ok: false, configHash: this.configHash().value, detail: (e as Error)?.message ?? String(e) }),
    );
  }

  /**
   * `tunlb reload --cluster`: reloads this balancer's file and asks every peer to reload its own
   * (src/cluster/cluster-reload.ts), at the same time; resolves after at most `timeoutMs` with
   * one row per balancer (this one first, then the peers in config order). Never rejects: a
   * refusal is a row with ok false, a peer that did not answer in time one with ok null.
   */
  async reloadCluster(origin: string, timeoutMs: number): Promise<ClusterReloadRow[]> {
    const c = this.cluster;
    this.operatorEvents.record('reload_cluster', `reload of every balancer asked (answers within ${timeoutMs} ms)`, origin);
    const [self, peers] = await Promise.all([
      this.reload(origin).then(
        (r): ClusterReloadRow => ({ id: this.selfId, self: true, ok: true, configHash: this.configHash().hex, detail: reloadLine(r), ms: 0 }),
        (e: unknown): ClusterReloadRow => ({ id: this.selfId, self: true, ok: false, configHash: this.configHash().hex, detail: (e as Error)?.message ?? String(e), ms: 0 }),
      ),
      c === undefined ? Promise.resolve([] as PeerReloadResult[]) : c.reloads.requestAll(timeoutMs),
    ]);
    const peersView = c?.membership.peers();
    return [
      self,
      ...peers.map((p): ClusterReloadRow => {
        const state = peersView?.[p.index]?.state;
        return {
          id: p.id,
          self: false,
          ok: p.ok,
          configHash: p.configHash > 0 ? p.configHash.toString(16).padStart(12, '0') : '',
          detail: p.ok === null && state !== undefined && state !== 'up' ? `${p.detail} (peer ${state})` : p.detail,
          ms: Math.round(p.ms),
        };
      }),
    ];
  }

  /**
   * One reload of the file (serialised by reload()); the new config hash goes to the probes.
   * `origin`: who asked (operator events); the runtime overrides it clears name this balancer
   * ("reload on lb1", with the origin when known).
   */
  async #reloadNow(origin: string | undefined): Promise<ReloadResult> {
    const r = await reloadConfig({
      origin: origin === undefined ? `reload on ${this.selfId}` : `reload on ${this.selfId} (${origin})`,
      configPath: this.#configPath,
      hashKey: this.#hashKey,
      forwarder: this.forwarder,
      table: this.table,
      health: this.health,
      log: this.log,
      onForwarding: (ft) => {
        this.#dataPlane.dsrNeighbours?.setForwarding(ft);
        // The reload's table took the health view of its start: apply the current one.
        this.#scheduleRebuild();
        // VIPs added are announced (when ready), removed ones withdrawn.
        void this.announcer.setVips(announceVips(ft.config));
      },
    });
    // The new config's version travels in the next probes (peers judge the mismatch).
    this.cluster?.membership.setConfigHash(this.configHash().value);
    return r;
  }

  snapshot(): BalancerSnapshot {
    return snapshotStats(this);
  }

  #arm(): void {
    this.#dataPlane.start();
    this.#expiryTimer = setInterval(() => this.#expireSlice(), EXPIRY_INTERVAL_MS);
  }

  /** One expiry tick: up to EXPIRY_BUDGET ids, in EXPIRY_STEP steps, in the shared slices. */
  #expireSlice(): void {
    if (this.#expiring) return;
    this.#expiring = true;
    const now = this.nowSec();
    let n = 0;
    void runSliced(
      () => {
        this.table.expire(now, EXPIRY_STEP);
        n += EXPIRY_STEP;
        return n >= EXPIRY_BUDGET;
      },
      { stop: () => this.#stopped },
    ).finally(() => {
      this.#expiring = false;
    });
  }

  /** How GSO super-packets to peers are sent (logged at start): split to the MTU, or whole and why. */
  get peerSplit(): string {
    return this.#dataPlane.peerSplit;
  }

  /**
   * `tunlb drain-self` (maintenance): withdraw the announcement and tell the peers this
   * balancer drains (they hand its flows to their backups and give it no new ones); it keeps
   * serving whatever still reaches it. `undrainSelf` undoes it.
   */
  async drainSelf(origin?: string): Promise<void> {
    if (this.#stopped || this.#leaving !== undefined) throw new TunlbError(ErrorCodes.USAGE, 'balancer is stopping');
    if (origin !== undefined) this.operatorEvents.record('drain_self', `${this.selfId} drained: announcement withdrawn, peers take its flows over`, origin);
    await this.announcer.hold('drained', 'tunlb drain-self');
    this.cluster?.membership.leave();
    this.log.info({ event: 'self_drained' }, `${this.selfId} drained: announcement withdrawn, peers take its flows over`);
  }

  async undrainSelf(origin?: string): Promise<void> {
    if (this.#stopped || this.#leaving !== undefined) throw new TunlbError(ErrorCodes.USAGE, 'balancer is stopping');
    if (origin !== undefined) this.operatorEvents.record('undrain_self', `${this.selfId} undrained: serving and announcing again`, origin);
    this.cluster?.membership.unleave();
    await this.announcer.release('drained');
    this.log.info({ event: 'self_undrained' }, `${this.selfId} undrained: serving and announcing again`);
  }

  /**
   * Planned stop (SIGTERM, SIGINT): withdraw, tell the peers, serve until they have taken over
   * (bounded by announce.leave_timeout_ms), then stop(). Idempotent; returns the same promise.
   */
  leave(reason = 'SIGTERM'): Promise<void> {
    this.#leaving ??= this.#leave(reason);
    return this.#leaving;
  }

  async #leave(reason: string): Promise<void> {
    if (this.#stopped) return;
    const t0 = performance.now();
    await this.announcer.hold('leaving', reason);
    const withdrawnMs = performance.now() - t0;
    const m = this.cluster?.membership;
    let acked = true;
    if (m !== undefined) {
      const limit = t0 + this.config.announce.leaveTimeoutMs;
      m.leave();
      while (!m.leaveAcked() && performance.now() < limit && !this.#stopped) {
        await new Promise((r) => setTimeout(r, LEAVE_RESEND_MS));
        if (!m.leaveAcked()) m.leave();
      }
      acked = m.leaveAcked();
      await new Promise((r) => setTimeout(r, LEAVE_LINGER_MS));
    }
    const ms = Math.round(performance.now() - t0);
    this.log.info(
      { event: 'self_left', reason, withdrawnMs: Math.round(withdrawnMs), peersAcked: acked, ms },
      acked ? `${this.selfId} left: withdrawn in ${Math.round(withdrawnMs)} ms, peers took over, ${ms} ms in all`
        : `${this.selfId} leaving: not every peer acknowledged within ${this.config.announce.leaveTimeoutMs} ms; stopping anyway`,
    );
    await this.stop(reason);
  }

  /** Stops forwarding and releases everything. Idempotent. */
  async stop(reason = 'stop'): Promise<void> {
    if (this.#stopped) return;
    await this.announcer?.close();
    if (this.#stopped) return;
    this.#stopped = true;
    this.#setServing(false, reason);
    if (this.#expiryTimer) clearInterval(this.#expiryTimer);
    this.health.stop();
    this.backupRepair?.close();
    this.cluster?.close();
    try {
      this.#dataPlane.close();
    } catch (e) {
      this.log.warn({ event: 'device_close_failed', err: String(e) }, 'closing the TUN device failed');
    }
    await this.#admin?.close();
    this.log.info({ event: 'balancer_stopped', reason, stats: this.snapshot().counters }, `balancer ${this.selfId} stopped (${reason})`);
  }
}

/** The VIPs a balancer announces (docs/entry.md): every configured VIP. */
function announceVips(config: Config): AnnounceVip[] {
  return config.vips.map((v) => ({ name: v.name, address: v.address.text, family: v.address.family }));
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
