/**
 * A JSON-ready picture of one balancer's state and counters, for the admin endpoint, the
 * CLI and the shutdown log. Built on demand (allocates; never on the packet path).
 */
import { packetResultNames } from '../packet/result';
import { forwardDropNames } from '../dataplane/forward-drop';
import type { Balancer } from './balancer';

export interface BalancerSnapshot {
  id: string;
  index: number;
  cluster: string;
  startedAt: string;
  uptimeS: number;
  device: { name: string; mtu: number; features: object; stats: object };
  /** How GSO super-packets to peers are sent: split to the MTU (and to what size), or whole and why. */
  peerSplit: string;
  flows: { active: number; capacity: number; created: number; expired: number; refusedFull: number; earlyDrops: number; conflicts: number; takeovers: number };
  counters: {
    rxPackets: number;
    rxBytes: number;
    txPackets: number;
    txBytes: number;
    forwardPackets: number;
    replyPackets: number;
    peerTxPackets: number;
    peerRxPackets: number;
    /** GSO super-packets to peers split to the MTU, their datagrams, and those sent whole (over the MTU). */
    peerSplitPackets: number;
    peerSplitDatagrams: number;
    peerSplitSkipped: number;
    /** Datagrams from peers merged into the one before them (a split super-packet put back together). */
    peerRxMerged: number;
    failoverPackets: number;
    secondChancePackets: number;
    /** Flows on a backend that went down (src/dataplane/forwarder.ts "Backend down"). */
    tcpResetBackendDown: number;
    udpMovedBackendDown: number;
    /** New TCP connections on a lingering record moved off a backend that takes no new flows. */
    synReuseRebound: number;
    /** Replies matched by a fallback key (src/dataplane/forwarder.ts #replyFallback). */
    replyFirstFragments: number;
    replyLaterFragments: number;
    replyThreeTuple: number;
    drops: Record<string, number>;
  };
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

export function snapshotStats(b: Balancer): BalancerSnapshot {
  const st = b.forwarder.stats;
  const drops: Record<string, number> = {};
  st.packetDrops.forEach((v, i) => {
    if (i !== 0 && v > 0) drops[packetResultNames[i] ?? `packet_${i}`] = v;
  });
  st.forwardDrops.forEach((v, i) => {
    if (v > 0) drops[forwardDropNames[i] ?? `forward_${i}`] = v;
  });
  const t = b.table;
  const ft = b.forwarder.forwarding;
  return {
    id: b.selfId,
    index: b.selfIndex,
    cluster: b.config.cluster.id,
    startedAt: b.startedAt.toISOString(),
    uptimeS: b.nowSec(),
    device: { name: b.device.name, mtu: b.device.mtu, features: { ...b.device.features }, stats: { ...b.device.stats } },
    peerSplit: b.peerSplit,
    flows: {
      active: t.size,
      capacity: t.capacity,
      created: st.flowsCreated,
      expired: t.expired,
      refusedFull: t.refusedFull,
      earlyDrops: t.earlyDrops,
      conflicts: t.conflicts,
      takeovers: t.takeovers,
    },
    counters: {
      rxPackets: st.rxPackets,
      rxBytes: st.rxBytes,
      txPackets: st.txPackets,
      txBytes: st.txBytes,
      forwardPackets: st.forwardPackets,
      replyPackets: st.replyPackets,
      peerTxPackets: st.peerTxPackets,
      peerRxPackets: st.peerRxPackets,
      peerSplitPackets: st.peerSplitPackets,
      peerSplitDatagrams: st.peerSplitDatagrams,
      peerSplitSkipped: st.peerSplitSkipped,
      peerRxMerged: st.peerRxMerged,
      failoverPackets: st.failoverPackets,
      secondChancePackets: st.secondChancePackets,
      tcpResetBackendDown: st.tcpResetBackendDown,
      udpMovedBackendDown: st.udpMovedBackendDown,
      synReuseRebound: st.synReuseRebound,
      replyFirstFragments: st.replyFirstFragments,
      replyLaterFragments: st.replyLaterFragments,
      replyThreeTuple: st.replyThreeTuple,
      drops,
    },
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
