/**
 * This balancer's membership of the cluster: the control channel, liveness (Membership),
 * flow-record replication and bulk sync (Replicator), and the timers that drive them.
 *
 * Timers (all on the event loop; the data plane yields to libuv after a bounded number of
 * batches, so none of them is starved under load):
 *   probe     every cluster.probe.interval_ms: Membership.tick (evaluate silence, send probes)
 *   flush     every cluster.replication.flush_ms: Replicator.flush (queued records → datagrams)
 *   refresh   every 100 ms: Replicator.refreshTick (bounded table scan, periodic REFRESH)
 *
 * Start-up (docs/failure-model.md "Bulk sync"): status SYNCING (peers do not count this balancer as
 * live, so they send it neither new flows nor failover traffic); probe for up to
 * SYNC_DISCOVERY_MS; if a peer is up and serving, pull its whole flow table over the sync
 * stream (src/cluster/sync-runner.ts: TCP, resumed from where it stopped, on another peer when
 * one fails); then status SERVING. A balancer that finds no live peer is the first of its
 * cluster and serves at once. Every balancer answers its peers' syncs once it serves itself
 * (SyncStreamServer behind a TCP listener on its address and control port number).
 *
 * Readiness (the hook for route announcement, e.g. BGP for ECMP): `serving` is true from the
 * moment this balancer reports SERVING (its bulk sync done, or skipped because no peer
 * serves) until close(); `onServingChange(fn)` calls fn on every change, `whenServing()`
 * resolves at the first. Peers count a balancer live (give it primary roles) on the same
 * status, so announcing on `serving` means it attracts traffic exactly when it may own flows.
 */
import { performance } from 'node:perf_hooks';
import type { Config } from '../config';
import type { FlowTable } from '../flow';
import type { Logger } from '../logger';
import type { ForwardingTable } from '../decision/forwarding-table';
import { macKey, Via, type ReceivedEnvelope } from '../protocol';
import { countBy } from './bulk-sync';
import { clusterIdNumber, ControlChannel } from './control-channel';
import { nextIncarnation } from './incarnation';
import { Membership, type MembershipEvent, PeerState } from './membership';
import { Replicator } from './replicator';
import { SyncRunner, type SyncEvent, type SyncOutcome, type SyncProgress } from './sync-runner';
import { SyncStreamServer } from './sync-responder';
import type { SyncStreamIdentity } from './sync-stream';
import { connectSync, SyncListener } from './sync-transport';
import { ClusterView, type SummaryFields } from './cluster-view';
import { ClusterReload, type ReloadOutcome } from './cluster-reload';

/** How long a starting balancer listens for live peers before deciding it is the first. */
const SYNC_DISCOVERY_MS = 1000;
/** Timeout of the datagram sync, used only with a peer of the first release (no sync stream). */
const LEGACY_SYNC_TIMEOUT_MS = 15000;
const REFRESH_TICK_MS = 100;

/** An event of this balancer's cluster life, as `tunlb status` lists them. */
export type ClusterEvent = { at: string } & (MembershipEvent | SyncEvent);

export interface ClusterNodeOptions {
  config: Config;
  selfIndex: number;
  table: FlowTable;
  forwarding: () => ForwardingTable;
  nowSec: () => number;
  log: Logger;
  /** Called for every membership event (after it is logged), e.g. to count failovers. */
  onEvent?: (e: MembershipEvent) => void;
  /** Verified HealthReport bodies from peers (src/backends/health-monitor.ts onReport). */
  onHealth?: (sender: number, body: NonNullable<ReceivedEnvelope['health']>) => void;
  /**
   * Reloads this balancer's config file when a peer asks (`tunlb reload --cluster` on that
   * peer; src/cluster/cluster-reload.ts); `origin` is "peer <id>". Without it, requests are
   * answered as refused.
   */
  reloadSelf?: (origin: string) => Promise<ReloadOutcome>;
}

export class ClusterNode {
  readonly incarnation: number;
  readonly channel: ControlChannel;
  readonly membership: Membership;
  readonly replicator: Replicator;
  /** Answers peers' bulk syncs (behind #listener). */
  readonly syncServer: SyncStreamServer;
  readonly events: ClusterEvent[] = [];
  /** Peers' last summaries (src/cluster/cluster-view.ts). */
  readonly view: ClusterView;
  /** `tunlb reload --cluster`, both sides (src/cluster/cluster-reload.ts). */
  readonly reloads: ClusterReload;
  readonly #config: Config;
  readonly #identity: SyncStreamIdentity;
  readonly #log: Logger;
  readonly #onHealth: ClusterNodeOptions['onHealth'];
  readonly #timers: NodeJS.Timeout[] = [];
  #listener: SyncListener | undefined;
  #runner: SyncRunner | undefined;
  #syncedFrom: string | null = null;
  #outcome: SyncOutcome | undefined;
  #serving = false;
  readonly #servingListeners = new Set<(serving: boolean, reason: string) => void>();
  #closed = false;

  private constructor(opts: ClusterNodeOptions, channel: ControlChannel, incarnation: number) {
    const c = opts.config;
    this.incarnation = incarnation;
    this.channel = channel;
    this.#config = c;
    this.#log = opts.log;
    this.#onHealth = opts.onHealth;
    this.membership = new Membership({
      selfIndex: opts.selfIndex,
      ids: c.balancers.map((b) => b.id),
      intervalMs: c.cluster.probe.intervalMs,
      misses: c.cluster.probe.misses,
      nowMs: () => performance.now(),
      // Unicast envelopes name their recipient; probes and acks go out on the probe port.
      sendProbe: (peer, body) => channel.sendProbe(peer, channel.signer.seal('probe', body, peer)),
      sendAck: (peer, body) => channel.sendProbe(peer, channel.signer.seal('probeAck', body, peer)),
      selfIncarnation: incarnation,
      initialStatus: 'syncing',
      onEvent: (e) => {
        this.#pushEvent(e);
        // A restarted peer's last summary is its previous process's: shown as none until the new one's.
        if (e.type === 'peer_restarted') this.view.forget(e.peer);
        const level = e.type === 'peer_down' || e.type === 'peer_suspect' ? 'warn' : 'info';
        this.#log[level]({ event: e.type, peer: e.id, reason: e.reason, rttMs: e.rttMs, incarnation: e.incarnation }, `${e.id}: ${e.type} (${e.reason})`);
        opts.onEvent?.(e);
      },
    });
    this.replicator = new Replicator({
      table: opts.table,
      selfIndex: opts.selfIndex,
      balancerCount: c.balancers.length,
      balancerIds: c.balancers.map((b) => b.id),
      forwarding: opts.forwarding,
      signer: channel.signer,
      broadcast: (d) => channel.broadcast(d),
      sendTo: (peer, d) => channel.sendTo(peer, d),
      nowSec: opts.nowSec,
      refreshS: c.cluster.replication.refreshS,
      live: this.membership.live,
      log: opts.log,
    });
    this.#identity = {
      key: macKey(c.cluster.key.reveal()),
      clusterId: clusterIdNumber(c),
      selfIndex: opts.selfIndex,
      incarnation,
      balancerCount: c.balancers.length,
    };
    this.view = new ClusterView({ balancerCount: c.balancers.length, selfIndex: opts.selfIndex, nowMs: () => performance.now() });
    const reloadSelf = opts.reloadSelf;
    this.reloads = new ClusterReload({
      selfIndex: opts.selfIndex,
      ids: c.balancers.map((b) => b.id),
      sendRequest: (peer, body) => channel.sendTo(peer, channel.signer.seal('reloadRequest', body, peer)),
      sendAnswer: (peer, body) => channel.sendTo(peer, channel.signer.seal('reloadAnswer', body, peer)),
      reloadSelf: reloadSelf ?? (() => Promise.resolve({ ok: false, configHash: 0, detail: 'this balancer takes no reload requests' })),
    });
    this.syncServer = new SyncStreamServer({
      ...this.#identity,
      host: this.replicator.syncHost,
      stats: this.replicator.stats,
      isServing: () => this.membership.selfStatus === 'serving',
    });
  }

  #pushEvent(e: MembershipEvent | SyncEvent): void {
    this.events.push({ at: new Date().toISOString(), ...e });
    if (this.events.length > 200) this.events.shift();
  }

  static async start(opts: Omit<ClusterNodeOptions, never>): Promise<ClusterNode> {
    // Larger than every earlier incarnation of this balancer, persisted before first use
    // (src/cluster/incarnation.ts); throws CONFIG_INVALID naming cluster.state_dir otherwise.
    const self = opts.config.balancers[opts.selfIndex]!;
    const inc = nextIncarnation(opts.config.cluster.stateDir, self.id);
    const incarnation = inc.incarnation;
    if (inc.stateProblem !== null) {
      opts.log.warn({ event: 'incarnation_state_lost', file: inc.file, problem: inc.stateProblem }, `incarnation state unusable (${inc.stateProblem}): using the clock's`);
    }
    opts.log.info(
      { event: 'incarnation', incarnation, previous: inc.previous, source: inc.source, file: inc.file },
      inc.source === 'state'
        ? `incarnation ${incarnation}: the clock is behind the previous start's (${inc.previous}), continuing from the state file`
        : `incarnation ${incarnation}`,
    );
    let node: ClusterNode | undefined;
    const channel = await ControlChannel.open({
      config: opts.config,
      selfIndex: opts.selfIndex,
      incarnation,
      log: opts.log,
      onEnvelope: (env, confirmed, via) => {
        if (node !== undefined) node.#dispatch(env, confirmed, via);
      },
    });
    node = new ClusterNode(opts, channel, incarnation);
    const c = opts.config;
    try {
      node.#listener = await SyncListener.open({
        address: self.address.text,
        port: self.controlPort,
        peers: c.balancers.map((b) => b.address.text),
        selfIndex: opts.selfIndex,
        onConnection: (sock, peer) => node!.syncServer.accept(sock, peer),
        onReject: () => countBy(node!.replicator.stats.syncStreamDrops, 'not_a_peer'),
        log: opts.log,
      });
    } catch (e) {
      channel.close();
      throw e;
    }
    // Answers already in the probe socket are read before the tick judges (ControlChannel.readProbes).
    node.#timers.push(
      setInterval(() => {
        node!.channel.readProbes();
        node!.membership.tick();
      }, c.cluster.probe.intervalMs),
    );
    node.#timers.push(setInterval(() => node!.replicator.flush(), Math.max(1, c.cluster.replication.flushMs)));
    node.#timers.push(setInterval(() => node!.replicator.refreshTick(), REFRESH_TICK_MS));
    node.membership.tick();
    return node;
  }

  /**
   * One accepted envelope (src/cluster/control-channel.ts). Only probes and acks come with
   * `confirmed = false` (the receiver holds every other body back until the sender's
   * incarnation is confirmed); a fresh ack, i.e. one that echoes one of our probe nonces,
   * confirms its incarnation to the receiver (src/cluster/membership.ts "Incarnations").
   */
  #dispatch(env: ReceivedEnvelope, confirmed: boolean, _via: Via): void {
    if (this.#closed) return;
    switch (env.body) {
      case 'probe':
        this.membership.onProbe(env.sender, env.incarnation, env.probe!, confirmed);
        return;
      case 'probeAck':
        if (this.membership.onProbeAck(env.sender, env.incarnation, env.probeAck!) && this.channel.receiver.confirm(env.sender, env.incarnation, env.seq)) {
          this.#log.debug({ event: 'peer_confirmed', peer: this.membership.ids[env.sender], incarnation: env.incarnation }, 'peer incarnation confirmed by a fresh ack');
        }
        return;
      case 'records':
        this.replicator.onRecords(env.sender, env.records!);
        return;
      case 'syncRequest':
        this.replicator.onSyncRequest(env.sender, env.syncRequest!);
        return;
      case 'syncChunk':
        this.replicator.onSyncChunk(env.sender, env.syncChunk!);
        return;
      case 'health':
        this.#onHealth?.(env.sender, env.health!);
        return;
      case 'summary':
        this.view.onSummary(env.sender, env.summary!);
        return;
      case 'reloadRequest':
        this.reloads.onRequest(env.sender, env.reloadRequest!);
        return;
      case 'reloadAnswer':
        this.reloads.onAnswer(env.sender, env.reloadAnswer!);
        return;
      default:
        return;
    }
  }

  /**
   * Bulk sync before serving: waits up to SYNC_DISCOVERY_MS for serving peers, pulls the flow
   * table (SyncRunner: resumed and retried across peers until complete, or until no peer
   * serves any more), then reports SERVING.
   */
  async syncThenServe(): Promise<void> {
    const m = this.membership;
    const c = this.#config;
    const deadline = performance.now() + SYNC_DISCOVERY_MS;
    // Serving peers in ring order after this balancer (lb2 asks lb3 first, lb3 asks lb1): when
    // several balancers restart, their syncs spread over the peers instead of all loading the
    // first one.
    const n = c.balancers.length;
    const servingPeers = (): number[] =>
      m
        .peers()
        .filter((p) => p.index !== m.selfIndex && m.stateOf(p.index) === PeerState.UP && p.status === 'serving')
        .map((p) => p.index)
        .sort((a, b) => ((a - m.selfIndex + n) % n) - ((b - m.selfIndex + n) % n));
    while (performance.now() < deadline && servingPeers().length === 0 && !this.#closed) {
      await new Promise((r) => setTimeout(r, 20));
    }
    if (this.#closed) return;
    if (servingPeers().length > 0) {
      const self = c.balancers[m.selfIndex]!;
      this.#runner = new SyncRunner({
        ...this.#identity,
        host: this.replicator.syncHost,
        stats: this.replicator.stats,
        connect: (peer) => connectSync(c.balancers[peer]!.address.text, c.balancers[peer]!.controlPort, self.address.text),
        candidates: servingPeers,
        peerAlive: (peer) => m.stateOf(peer) !== PeerState.DEAD && m.stateOf(peer) !== PeerState.UNKNOWN,
        legacy: (peer) => this.replicator.requestSync(peer, LEGACY_SYNC_TIMEOUT_MS),
        onEvent: (e) => this.#pushEvent(e),
      });
      const r = await this.#runner.run();
      this.#outcome = r;
      if (this.#closed) return;
      if (r.ok) {
        const id = m.ids[r.peer]!;
        this.#syncedFrom = id;
        this.#log.info(
          { event: 'bulk_sync_done', peer: id, records: r.records, sessions: r.sessions, ms: Math.round(r.ms) },
          `bulk sync from ${id}: ${r.records} flow records in ${Math.round(r.ms)} ms`,
        );
      } else {
        this.#log.warn({ event: 'bulk_sync_incomplete', records: r.records, reason: r.reason }, `bulk sync incomplete (${r.reason}): serving with ${r.records} records applied`);
      }
    } else {
      this.#log.info({ event: 'bulk_sync_skipped', reason: 'no serving peer answered' }, 'no serving peer: starting with an empty flow table');
    }
    m.setSelfStatus('serving');
    this.#setServing(true, this.#syncedFrom !== null ? `bulk sync from ${this.#syncedFrom} done` : 'no serving peer to sync from');
  }

  /**
   * Sends this balancer's summary to every peer (multicast, or the same bytes to each); the
   * owner calls it once a second (src/cluster/cluster-view.ts). Never throws.
   */
  publishSummary(fields: SummaryFields): void {
    if (this.#closed) return;
    this.channel.broadcast(this.channel.signer.seal('summary', fields));
  }

  /** The bulk sync's progress (null when no sync ran: no serving peer, or not started yet). */
  syncProgress(): SyncProgress | null {
    return this.#runner?.snapshot() ?? null;
  }

  /** The bulk sync's result once it ended. */
  get syncOutcome(): SyncOutcome | undefined {
    return this.#outcome;
  }

  /** True while this balancer reports SERVING (see "Readiness" in the header). */
  get serving(): boolean {
    return this.#serving;
  }

  /** Calls fn(serving, reason) on every change of `serving`; returns the unsubscribe function. */
  onServingChange(fn: (serving: boolean, reason: string) => void): () => void {
    this.#servingListeners.add(fn);
    return () => this.#servingListeners.delete(fn);
  }

  /** Resolves once this balancer serves (at once if it does). */
  whenServing(): Promise<void> {
    if (this.#serving) return Promise.resolve();
    return new Promise((resolve) => {
      const off = this.onServingChange((s) => {
        if (s) {
          off();
          resolve();
        }
      });
    });
  }

  #setServing(serving: boolean, reason: string): void {
    if (this.#serving === serving) return;
    this.#serving = serving;
    for (const fn of [...this.#servingListeners]) {
      try {
        fn(serving, reason);
      } catch (e) {
        this.#log.warn({ event: 'readiness_listener_failed', err: String(e) }, 'a readiness listener threw');
      }
    }
  }

  get syncedFrom(): string | null {
    return this.#syncedFrom;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#setServing(false, 'stopping');
    for (const t of this.#timers) clearInterval(t);
    this.reloads.close();
    this.#runner?.stop();
    this.syncServer.stop();
    this.#listener?.close();
    this.replicator.stop();
    this.replicator.flush();
    this.channel.close();
  }
}
