/**
 * A JSON-ready picture of one balancer's state and counters, for the admin endpoint, the
 * CLI and the shutdown log. Built on demand (allocates; never on the packet path). The
 * `flows` and `counters` figures are declared in src/control/counters.ts (COUNTERS); the
 * fields below type them for readers of the JSON.
 */
import { packetResultNames } from '../packet/result';
import { forwardDropNames } from '../dataplane/forward-drop';
import type { BalancerView } from './balancer-view';
import { readSection, type CounterKey } from './counters';

export interface BalancerSnapshot {
  id: string;
  index: number;
  cluster: string;
  startedAt: string;
  uptimeS: number;
  device: { name: string; mtu: number; features: object; stats: object };
  /** How GSO super-packets to peers are sent: split to the MTU (and to what size), or whole and why. */
  peerSplit: string;
  /** src/control/counters.ts, section 'flows'. */
  flows: Record<CounterKey<'flows'>, number>;
  /** src/control/counters.ts, section 'counters', and the drops by reason (nonzero only). */
  counters: Record<CounterKey<'counters'>, number> & { drops: Record<string, number> };
  membership: null | {
    incarnation: number;
    status: string;
    syncedFrom: string | null;
    /** This balancer's bulk sync (src/cluster/sync-runner.ts SyncProgress), null when none ran. */
    sync: unknown;
    peers: unknown[];
    replication: unknown;
    controlRejected: Record<string, number>;
    events: unknown[];
  };
  forwarding: { generation: number; vips: Array<{ name: string; address: string; method: string; backends: string[] }> };
}

export function snapshotStats(b: BalancerView): BalancerSnapshot {
  const st = b.forwarder.stats;
  const drops: Record<string, number> = {};
  st.packetDrops.forEach((v, i) => {
    if (i !== 0 && v > 0) drops[packetResultNames[i] ?? `packet_${i}`] = v;
  });
  st.forwardDrops.forEach((v, i) => {
    if (v > 0) drops[forwardDropNames[i] ?? `forward_${i}`] = v;
  });
  const ft = b.forwarder.forwarding;
  return {
    id: b.selfId,
    index: b.selfIndex,
    cluster: b.config.cluster.id,
    startedAt: b.startedAt.toISOString(),
    uptimeS: b.nowSec(),
    device: { name: b.device.name, mtu: b.device.mtu, features: { ...b.device.features }, stats: { ...b.device.stats } },
    peerSplit: b.peerSplit,
    flows: readSection(b, 'flows'),
    counters: { ...readSection(b, 'counters'), drops },
    membership:
      b.cluster === undefined
        ? null
        : {
            incarnation: b.cluster.incarnation,
            status: b.cluster.membership.selfStatus,
            syncedFrom: b.cluster.syncedFrom,
            sync: b.cluster.syncProgress(),
            peers: b.cluster.membership.peers(),
            replication: { ...b.cluster.replicator.stats },
            controlRejected: b.cluster.channel.rejectCounts(),
            events: b.cluster.events.slice(-50),
          },
    forwarding: {
      generation: ft.generation,
      vips: ft.config.vips.map((v) => ({
        name: v.name,
        address: v.address.text,
        method: v.method,
        backends: v.backends.map((x) => x.address.text),
      })),
    },
  };
}
