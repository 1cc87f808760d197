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
 * SYNC_DISCOVERY_MS; if a peer is up and serving, pull its whole flow table (verified by
 * count), trying the next peer on failure; then status SERVING. A balancer that finds no
 * live peer is the first of its cluster and serves at once.
 */
import { performance } from 'node:perf_hooks';
import type { Config } from '../config';
import type { FlowTable } from '../flow';
import type { Logger } from '../logger';
import type { ForwardingTable } from '../decision/forwarding-table';
import { newIncarnation, type ReceivedEnvelope } from '../protocol';
import { ControlChannel } from './control-channel';
import { Membership, type MembershipEvent, PeerState } from './membership';
import { Replicator } from './replicator';

/** How long a starting balancer listens for live peers before deciding it is the first. */
const SYNC_DISCOVERY_MS = 1000;
const SYNC_TIMEOUT_MS = 15000;
const REFRESH_TICK_MS = 100;

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
}

export class ClusterNode {
  readonly incarnation: number;
  readonly channel: ControlChannel;
  readonly membership: Membership;
  readonly replicator: Replicator;
  readonly events: Array<{ at: string } & MembershipEvent> = [];
  readonly #log: Logger;
  readonly #onHealth: ClusterNodeOptions['onHealth'];
  readonly #timers: NodeJS.Timeout[] = [];
  #syncedFrom: string | null = null;
  #closed = false;

  private constructor(opts: ClusterNodeOptions, channel: ControlChannel, incarnation: number) {
    const c = opts.config;
    this.incarnation = incarnation;
    this.channel = channel;
    this.#log = opts.log;
    this.#onHealth = opts.onHealth;
    this.membership = new Membership({
      selfIndex: opts.selfIndex,
      ids: c.balancers.map((b) => b.id),
      intervalMs: c.cluster.probe.intervalMs,
      misses: c.cluster.probe.misses,
      nowMs: () => performance.now(),
      sendProbe: (peer, body) => channel.sendTo(peer, channel.signer.seal('probe', body)),
      sendAck: (peer, body) => channel.sendTo(peer, channel.signer.seal('probeAck', body)),
      selfIncarnation: incarnation,
      initialStatus: 'syncing',
      onEvent: (e) => {
        this.events.push({ at: new Date().toISOString(), ...e });
        if (this.events.length > 200) this.events.shift();
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
  }

  static async start(opts: Omit<ClusterNodeOptions, never>): Promise<ClusterNode> {
    const incarnation = newIncarnation();
    let node: ClusterNode | undefined;
    const channel = await ControlChannel.open({
      config: opts.config,
      selfIndex: opts.selfIndex,
      incarnation,
      log: opts.log,
      onEnvelope: (env) => {
        if (node !== undefined) node.#dispatch(env);
      },
    });
    node = new ClusterNode(opts, channel, incarnation);
    const c = opts.config;
    node.#timers.push(setInterval(() => node!.membership.tick(), c.cluster.probe.intervalMs));
    node.#timers.push(setInterval(() => node!.replicator.flush(), Math.max(1, c.cluster.replication.flushMs)));
    node.#timers.push(setInterval(() => node!.replicator.refreshTick(), REFRESH_TICK_MS));
    node.membership.tick();
    return node;
  }

  #dispatch(env: ReceivedEnvelope): void {
    if (this.#closed) return;
    switch (env.body) {
      case 'probe':
        this.membership.onProbe(env.sender, env.incarnation, env.probe!);
        return;
      case 'probeAck':
        this.membership.onProbeAck(env.sender, env.incarnation, env.probeAck!);
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
      default:
        return;
    }
  }

  /**
   * Bulk sync before serving: waits up to SYNC_DISCOVERY_MS for serving peers, pulls the
   * flow table from the first that answers (then the next on failure), then reports SERVING.
   */
  async syncThenServe(): Promise<void> {
    const m = this.membership;
    const deadline = performance.now() + SYNC_DISCOVERY_MS;
    const servingPeers = (): number[] =>
      m.peers().filter((p) => p.index !== m.selfIndex && m.stateOf(p.index) === PeerState.UP && p.status === 'serving').map((p) => p.index);
    while (performance.now() < deadline && servingPeers().length === 0 && !this.#closed) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const peer of servingPeers()) {
      if (this.#closed) return;
      const id = m.ids[peer]!;
      const t0 = performance.now();
      try {
        const r = await this.replicator.requestSync(peer, SYNC_TIMEOUT_MS);
        this.#syncedFrom = id;
        this.#log.info(
          { event: 'bulk_sync_done', peer: id, records: r.records, chunks: r.chunks, ms: Math.round(performance.now() - t0) },
          `bulk sync from ${id}: ${r.records} flow records`,
        );
        break;
      } catch (e) {
        this.#log.warn({ event: 'bulk_sync_failed', peer: id, err: (e as Error).message }, `bulk sync from ${id} failed; trying the next peer`);
      }
    }
    if (this.#syncedFrom === null) {
      this.#log.info({ event: 'bulk_sync_skipped', reason: 'no serving peer answered' }, 'no serving peer: starting with an empty flow table');
    }
    m.setSelfStatus('serving');
  }

  get syncedFrom(): string | null {
    return this.#syncedFrom;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    this.replicator.flush();
    this.channel.close();
  }
}
