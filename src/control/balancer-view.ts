/**
 * What the control plane's readers see of a running balancer: the admin endpoint, the
 * Prometheus metrics, the snapshot (GET /api/v1/stats, `tunlb stats`, the shutdown log) and
 * the flow listing read a BalancerView, never the Balancer class itself, so none of them
 * imports src/control/balancer.ts (which starts them) and none can reach its I/O.
 *
 * Contract: every member is read at request or scrape time, on the event loop, never from the
 * packet path; the objects behind it are owned by the balancer and live as long as it does.
 * Counters are monotonic for the life of the process. BalancerControl adds the few commands
 * the admin endpoint may run (drain marks, config reload).
 */
import type { Config } from '../config';
import type { ForwardingTable } from '../decision/forwarding-table';
import type { ForwarderStats } from '../dataplane/forwarder-stats';
import type { ServiceStats } from '../dataplane/service-stats';
import type { TunLike } from '../dataplane/tun-device';
import type { ClusterNode } from '../cluster/cluster-node';
import type { BackupRepair } from '../cluster/backup-repair';
import type { HealthMonitor } from '../backends/health-monitor';
import type { FlowSource } from './flow-listing';
import type { ReloadResult } from './reload';
import type { Announcer } from './announcer';
import type { ConfigHash } from '../config/config-hash';
import type { OperatorEvents } from './operator-events';
import type { ClusterReloadRow } from '../cluster/cluster-reload';

export interface BalancerView extends FlowSource {
  readonly selfId: string;
  readonly selfIndex: number;
  readonly startedAt: Date;
  /** The start-up config (balancers, cluster id, admin, TUN batch); the live VIPs are forwarder.forwarding.config. */
  readonly config: Pick<Config, 'cluster' | 'balancers' | 'tun' | 'admin'>;
  /** How GSO super-packets to peers are sent (split to the MTU, or whole and why). */
  readonly peerSplit: string;
  /** `services`: per-VIP and per-backend counters (src/dataplane/service-stats.ts), in the numbering of `forwarding`. */
  readonly forwarder: { readonly stats: Readonly<ForwarderStats>; readonly services: Readonly<ServiceStats>; readonly forwarding: ForwardingTable };
  readonly device: Pick<TunLike, 'name' | 'mtu' | 'features' | 'stats'>;
  /** Undefined in a cluster of one. */
  readonly cluster: Pick<ClusterNode, 'incarnation' | 'channel' | 'membership' | 'replicator' | 'events' | 'syncedFrom' | 'syncProgress' | 'view' | 'reloads' | 'publishSummary'> | undefined;
  /** Backup repair of flows decided without a live peer (src/cluster/backup-repair.ts); undefined in a cluster of one. */
  readonly backupRepair?: Pick<BackupRepair, 'stats'> | undefined;
  /** Undefined before the health monitor starts. */
  readonly health: (Pick<HealthMonitor, 'states' | 'stats'> & Partial<Pick<HealthMonitor, 'onOverride'>>) | undefined;
  /** The VIP announcement (ECMP entry): per-VIP state, holds, events, counters. */
  readonly announcer?: Pick<Announcer, 'table' | 'ready' | 'vips' | 'holds' | 'events' | 'stats'>;
  /** Operator actions with their origin (src/control/operator-events.ts). */
  readonly operatorEvents: Pick<OperatorEvents, 'events' | 'record'>;
  /** The running config's version (src/config/config-hash.ts). */
  configHash(): ConfigHash;
  /** Seconds since start (the flow table's clock). */
  nowSec(): number;
}

/** The admin endpoint's view: the readers' one plus the commands it serves. */
export interface BalancerControl extends BalancerView {
  readonly health: Pick<HealthMonitor, 'states' | 'stats' | 'drain' | 'undrain' | 'setWeight' | 'setMaintenance'> & Partial<Pick<HealthMonitor, 'onOverride'>>;
  /**
   * Reloads the config file; resolves when its remap is over, rejects with TunlbError when
   * refused (nothing changed). With `origin` (e.g. "api 127.0.0.1"), the outcome is an operator event.
   */
  reload(origin?: string): Promise<ReloadResult>;
  /** `tunlb reload --cluster`: this balancer and every peer (src/control/balancer.ts). */
  reloadCluster(origin: string, timeoutMs: number): Promise<ClusterReloadRow[]>;
  /** `tunlb drain-self` / `undrain-self` (src/control/balancer.ts); `origin` for the operator event. */
  drainSelf(origin?: string): Promise<void>;
  undrainSelf(origin?: string): Promise<void>;
}
