/**
 * The balancer's data-plane and flow-table counters, each declared once: the snapshot
 * (src/control/snapshot.ts: `counters` and `flows` of GET /api/v1/stats), the Prometheus
 * metrics (src/control/metrics.ts), `tunlb stats` (src/cli/stats-text.ts) and the status
 * page's counter table (src/control/status-page.ts) are all rendered from COUNTERS. A feature
 * that adds a counter adds one row here (and the field to the stats object it counts in).
 *
 * A row:
 *   section, key   where the value sits in the snapshot: snapshot[section][key]
 *   metric         the Prometheus family it is exported as (METRIC_FAMILIES: help, type,
 *                  label name); `label` = its label value in that family; no metric: not exported
 *   unit           what one count is
 *   help           what it counts (the status page's tooltip; the family's help is METRIC_FAMILIES')
 *   read           its source, from the balancer's read-only view (control plane only: read at
 *                  request or scrape time, never on the packet path)
 *   cli            its phrase on a `tunlb stats` row (STATS_ROWS): `{}` = the value with
 *                  thousands separators, `sep` = what goes before it (default ", ")
 * Order matters: the snapshot's keys, a family's series and a row's phrases follow it.
 *
 * Families read from other components' stats objects (replication, membership, health,
 * device; src/control/metrics.ts) stay with their objects: the snapshot spreads those whole.
 */
import type { BalancerView } from './balancer-view';
import { PeerDecision } from '../dataplane/peer-decision';
import { VnetCheck } from '../packet/vnet-check';
import { SVC_CONNECTIONS, SVC_IN_BYTES, SVC_IN_PACKETS, SVC_OUT_BYTES, SVC_OUT_PACKETS } from '../dataplane/service-stats';

export type CounterSection = 'counters' | 'flows';

export interface CounterDescriptor {
  readonly section: CounterSection;
  readonly key: string;
  readonly metric?: string;
  readonly label?: string;
  readonly unit: 'packets' | 'bytes' | 'datagrams' | 'flows';
  readonly help: string;
  readonly read: (v: BalancerView) => number;
  readonly cli?: { readonly row: string; readonly text: string; readonly sep?: string };
}

export interface MetricFamily {
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  /** The label that tells the family's series apart (each series one descriptor), if any. */
  readonly labelName?: string;
}

/** Prometheus families of COUNTERS, in exposition order. */
export const METRIC_FAMILIES: Readonly<Record<string, MetricFamily>> = {
  tunlb_packets_in_total: { type: 'counter', labelName: 'source', help: 'Packets received: read from the TUN device (tun) or encapsulated from peers (peer)' },
  tunlb_bytes_in_total: { type: 'counter', help: 'Bytes read from the TUN device (IP packets)' },
  tunlb_packets_out_total: { type: 'counter', labelName: 'dest', help: "Packets sent on: NAT'd to a backend, un-NAT'd to a client, encapsulated to a peer" },
  tunlb_bytes_out_total: { type: 'counter', help: "Bytes of packets NAT'd back into the TUN device (backend and client)" },
  tunlb_flows_active: { type: 'gauge', help: 'Flow records in the flow table (decided here and learnt from peers)' },
  tunlb_flows_capacity: { type: 'gauge', help: 'Flow table capacity' },
  tunlb_flows_created_total: { type: 'counter', help: 'Flows decided by this balancer (new-flow decisions)' },
  tunlb_flows_expired_total: { type: 'counter', help: 'Flow records removed after their idle timeout' },
  tunlb_flows_taken_over_total: { type: 'counter', help: 'Closing/closed TCP records removed because a new flow needed their reply key (two VIPs sharing a backend)' },
  tunlb_flows_refused_total: { type: 'counter', labelName: 'reason', help: 'Flows not inserted (table_full), unconfirmed records evicted to make room (early_drop) or flows clashing with another flow (conflict)' },
  tunlb_flows_confirmed_total: { type: 'counter', help: 'Flows confirmed by a packet here (TCP: the client acknowledged the server ISN; others: a client packet after the answer); only confirmed flows are replicated' },
  tunlb_tcp_out_of_window_total: { type: 'counter', help: 'Client RST/FIN of confirmed TCP flows ignored: outside the sequence window (a blind spoofer)' },
  tunlb_failover_packets_total: { type: 'counter', help: "Packets sent to a flow's backup (or a later holder) because its primary was dead" },
  tunlb_reply_fallback_packets_total: {
    type: 'counter',
    labelName: 'via',
    help: "Replies matched without the flow's reply key: a fragmented reply's first fragment by its 5-tuple, later ones by fragment id, a reply to a fragmented request by its 3-tuple",
  },
  tunlb_peer_split_total: {
    type: 'counter',
    labelName: 'what',
    help: "GSO super-packets encapsulated to a peer: split to the balancer network's MTU (super_packets, and the datagrams they became), or over the MTU and sent whole (sent_whole: IP-fragmented); merged: datagrams from peers appended to the one before them on receipt",
  },
  tunlb_flows_no_live_backup_total: { type: 'counter', help: 'New flows decided while no other balancer was live (backup = the next configured balancer in rank, pending)' },
  tunlb_backup_repair_total: {
    type: 'counter',
    labelName: 'result',
    help: 'Flows decided without a live backup, settled later: assigned (a live backup was given and replicated), confirmed (the recorded backup came up)',
  },
  tunlb_syn_reuse_rebound_total: { type: 'counter', help: 'New TCP connections (SYN) on a lingering record whose backend takes no new flows, moved to the current pick' },
  tunlb_second_chance_packets_total: { type: 'counter', help: 'Mid-stream packets without a record sent to their ranked primary' },
  tunlb_reply_steered_packets_total: { type: 'counter', labelName: 'why', help: "NAT replies sent to their flow's primary: no record here (reply steering, by the ranking), or a record not confirmed yet (to the recorded primary, which confirms it)" },
  tunlb_backend_down_flows_total: { type: 'counter', labelName: 'action', help: 'Established flows whose backend was down: TCP answered with a reset, UDP/ICMP moved' },
  tunlb_peer_decisions_refused_total: {
    type: 'counter',
    labelName: 'reason',
    help: "Decisions in peers' encapsulation headers refused (src/dataplane/peer-decision.ts): balancer, role, rank (dropped: no balancer following the protocol sends them); vip, backend_range, backend_ineligible (another table than ours: this balancer decided itself)",
  },
  tunlb_peer_vnet_refused_total: {
    type: 'counter',
    labelName: 'reason',
    help: 'Virtio headers from peers refused before they reached the kernel (src/packet/vnet-check.ts), packet dropped',
  },
};

const fs = (v: BalancerView): Readonly<BalancerView['forwarder']['stats']> => v.forwarder.stats;

/** Every counter, once. */
export const COUNTERS = [
  // ---- flows (snapshot.flows)
  { section: 'flows', key: 'active', metric: 'tunlb_flows_active', unit: 'flows', help: 'flow records in the table', read: (v) => v.table.size, cli: { row: 'flows', text: '{} active' } },
  { section: 'flows', key: 'capacity', metric: 'tunlb_flows_capacity', unit: 'flows', help: 'flow table capacity', read: (v) => v.table.capacity, cli: { row: 'flows', text: 'of {}', sep: ' ' } },
  { section: 'flows', key: 'created', metric: 'tunlb_flows_created_total', unit: 'flows', help: 'flows decided here', read: (v) => fs(v).flowsCreated, cli: { row: 'flows', text: '{} created here', sep: '; ' } },
  { section: 'flows', key: 'expired', metric: 'tunlb_flows_expired_total', unit: 'flows', help: 'records removed after their idle timeout', read: (v) => v.table.expired, cli: { row: 'flows', text: '{} expired' } },
  { section: 'flows', key: 'refusedFull', metric: 'tunlb_flows_refused_total', label: 'table_full', unit: 'flows', help: 'flows not inserted: table full', read: (v) => v.table.refusedFull, cli: { row: 'flows', text: 'refused: full {}', sep: '; ' } },
  { section: 'flows', key: 'earlyDrops', metric: 'tunlb_flows_refused_total', label: 'early_drop', unit: 'flows', help: 'unconfirmed records evicted to make room', read: (v) => v.table.earlyDrops, cli: { row: 'flows', text: 'early drop {}' } },
  { section: 'flows', key: 'conflicts', metric: 'tunlb_flows_refused_total', label: 'conflict', unit: 'flows', help: "flows whose key clashed with another flow's", read: (v) => v.table.conflicts, cli: { row: 'flows', text: 'conflict {}' } },
  { section: 'flows', key: 'confirmed', metric: 'tunlb_flows_confirmed_total', unit: 'flows', help: 'flows confirmed here (only confirmed flows are replicated)', read: (v) => v.table.confirmed, cli: { row: 'flows', text: '{} confirmed here', sep: '; ' } },
  { section: 'flows', key: 'tcpOutOfWindow', metric: 'tunlb_tcp_out_of_window_total', unit: 'packets', help: 'client RST/FIN outside the sequence window, ignored', read: (v) => v.table.outOfWindow, cli: { row: 'flows', text: '{} RST/FIN out of window' } },
  { section: 'flows', key: 'takeovers', metric: 'tunlb_flows_taken_over_total', unit: 'flows', help: 'closing TCP records that yielded their reply key', read: (v) => v.table.takeovers, cli: { row: 'flows', text: 'taken over {}', sep: '; ' } },
  // ---- packets (snapshot.counters)
  { section: 'counters', key: 'rxPackets', metric: 'tunlb_packets_in_total', label: 'tun', unit: 'packets', help: 'packets read from the TUN device', read: (v) => fs(v).rxPackets, cli: { row: 'packets in', text: '{} from TUN' } },
  { section: 'counters', key: 'rxBytes', metric: 'tunlb_bytes_in_total', unit: 'bytes', help: 'bytes read from the TUN device', read: (v) => fs(v).rxBytes, cli: { row: 'packets in', text: '({} B)', sep: ' ' } },
  { section: 'counters', key: 'txPackets', unit: 'packets', help: 'packets sent to backends and clients (NAT and DSR)', read: (v) => fs(v).txPackets },
  { section: 'counters', key: 'txBytes', metric: 'tunlb_bytes_out_total', unit: 'bytes', help: 'bytes of packets sent to backends and clients', read: (v) => fs(v).txBytes },
  { section: 'counters', key: 'forwardPackets', metric: 'tunlb_packets_out_total', label: 'backend', unit: 'packets', help: 'packets sent to a backend', read: (v) => fs(v).forwardPackets, cli: { row: 'packets out', text: '{} to backends' } },
  { section: 'counters', key: 'replyPackets', metric: 'tunlb_packets_out_total', label: 'client', unit: 'packets', help: "replies un-NAT'd to a client", read: (v) => fs(v).replyPackets, cli: { row: 'packets out', text: '{} to clients' } },
  { section: 'counters', key: 'peerTxPackets', metric: 'tunlb_packets_out_total', label: 'peer', unit: 'packets', help: 'packets encapsulated to a peer', read: (v) => fs(v).peerTxPackets, cli: { row: 'packets out', text: '{} to peers' } },
  { section: 'counters', key: 'peerRxPackets', metric: 'tunlb_packets_in_total', label: 'peer', unit: 'packets', help: 'encapsulated packets from peers', read: (v) => fs(v).peerRxPackets, cli: { row: 'packets in', text: '{} from peers' } },
  { section: 'counters', key: 'peerSplitPackets', metric: 'tunlb_peer_split_total', label: 'super_packets', unit: 'packets', help: 'GSO super-packets to peers split to the MTU', read: (v) => fs(v).peerSplitPackets, cli: { row: 'peer split', text: '{} super-packets split into' } },
  { section: 'counters', key: 'peerSplitDatagrams', metric: 'tunlb_peer_split_total', label: 'datagrams', unit: 'datagrams', help: 'the datagrams split super-packets became', read: (v) => fs(v).peerSplitDatagrams, cli: { row: 'peer split', text: '{} datagrams', sep: ' ' } },
  { section: 'counters', key: 'peerSplitSkipped', metric: 'tunlb_peer_split_total', label: 'sent_whole', unit: 'packets', help: 'super-packets over the MTU sent whole (IP-fragmented)', read: (v) => fs(v).peerSplitSkipped, cli: { row: 'peer split', text: '{} sent whole' } },
  { section: 'counters', key: 'peerRxMerged', metric: 'tunlb_peer_split_total', label: 'merged', unit: 'datagrams', help: 'datagrams from peers merged back into one packet', read: (v) => fs(v).peerRxMerged, cli: { row: 'peer split', text: '{} received datagrams merged' } },
  { section: 'counters', key: 'failoverPackets', metric: 'tunlb_failover_packets_total', unit: 'packets', help: "packets sent via a flow's backup (primary dead)", read: (v) => fs(v).failoverPackets, cli: { row: 'failover', text: '{} packets via a backup' } },
  { section: 'counters', key: 'secondChancePackets', metric: 'tunlb_second_chance_packets_total', unit: 'packets', help: 'mid-stream packets without a record sent to their ranked primary', read: (v) => fs(v).secondChancePackets, cli: { row: 'failover', text: '{} second-chance' } },
  { section: 'counters', key: 'replySteeredPackets', metric: 'tunlb_reply_steered_packets_total', label: 'no_record', unit: 'packets', help: "NAT replies without a record here sent to their flow's ranked primary", read: (v) => fs(v).replySteeredPackets, cli: { row: 'failover', text: '{} replies steered to their primary' } },
  { section: 'counters', key: 'unconfirmedRepliesToPrimary', metric: 'tunlb_reply_steered_packets_total', label: 'unconfirmed', unit: 'packets', help: "replies of flows not confirmed yet sent to the flow's recorded primary", read: (v) => fs(v).unconfirmedRepliesToPrimary, cli: { row: 'failover', text: '{} of unconfirmed flows' } },
  { section: 'counters', key: 'flowsNoLiveBackup', metric: 'tunlb_flows_no_live_backup_total', unit: 'flows', help: 'new flows decided while no other balancer was live (backup pending)', read: (v) => fs(v).flowsNoLiveBackup, cli: { row: 'backup', text: '{} flows decided without a live peer' } },
  { section: 'counters', key: 'backupsAssigned', metric: 'tunlb_backup_repair_total', label: 'assigned', unit: 'flows', help: 'of those, given a live backup later (src/cluster/backup-repair.ts)', read: (v) => v.backupRepair?.stats.assigned ?? 0, cli: { row: 'backup', text: '{} given a live backup later', sep: '; ' } },
  { section: 'counters', key: 'backupsConfirmed', metric: 'tunlb_backup_repair_total', label: 'confirmed', unit: 'flows', help: 'of those, whose recorded backup came up', read: (v) => v.backupRepair?.stats.confirmed ?? 0, cli: { row: 'backup', text: '{} whose backup came up' } },
  { section: 'counters', key: 'tcpResetBackendDown', metric: 'tunlb_backend_down_flows_total', label: 'tcp_reset', unit: 'flows', help: 'TCP flows on a down backend answered with a reset', read: (v) => fs(v).tcpResetBackendDown, cli: { row: 'backend down', text: '{} TCP flows reset' } },
  { section: 'counters', key: 'udpMovedBackendDown', metric: 'tunlb_backend_down_flows_total', label: 'moved', unit: 'flows', help: 'UDP/ICMP flows moved off a down backend', read: (v) => fs(v).udpMovedBackendDown, cli: { row: 'backend down', text: '{} UDP/ICMP flows moved' } },
  { section: 'counters', key: 'synReuseRebound', metric: 'tunlb_syn_reuse_rebound_total', unit: 'flows', help: 'new connections on a lingering record moved off a backend that takes no new flows', read: (v) => fs(v).synReuseRebound, cli: { row: 'backend down', text: '{} reused ports moved' } },
  { section: 'counters', key: 'replyFirstFragments', metric: 'tunlb_reply_fallback_packets_total', label: 'first_fragment', unit: 'packets', help: "first fragments of replies matched by their 5-tuple", read: (v) => fs(v).replyFirstFragments, cli: { row: 'reply match', text: 'fragments: {} first by 5-tuple' } },
  { section: 'counters', key: 'replyLaterFragments', metric: 'tunlb_reply_fallback_packets_total', label: 'later_fragment', unit: 'packets', help: 'later fragments of replies matched by fragment id', read: (v) => fs(v).replyLaterFragments, cli: { row: 'reply match', text: '{} later by id' } },
  { section: 'counters', key: 'replyThreeTuple', metric: 'tunlb_reply_fallback_packets_total', label: 'three_tuple', unit: 'packets', help: 'replies to fragmented requests matched by their 3-tuple', read: (v) => fs(v).replyThreeTuple, cli: { row: 'reply match', text: '{} by 3-tuple', sep: '; ' } },
  { section: 'counters', key: 'peerDecisionRefusedBalancer', metric: 'tunlb_peer_decisions_refused_total', label: 'balancer', unit: 'packets', help: "peer decisions refused: primary/backup out of range or equal (dropped)", read: (v) => fs(v).peerDecisionRefused[PeerDecision.BALANCER] ?? 0, cli: { row: 'peer input', text: 'peer decisions refused: {} balancer' } },
  { section: 'counters', key: 'peerDecisionRefusedRole', metric: 'tunlb_peer_decisions_refused_total', label: 'role', unit: 'packets', help: "peer decisions refused: sent to a balancer the flags do not make serve (dropped)", read: (v) => fs(v).peerDecisionRefused[PeerDecision.ROLE] ?? 0, cli: { row: 'peer input', text: '{} role' } },
  { section: 'counters', key: 'peerDecisionRefusedRank', metric: 'tunlb_peer_decisions_refused_total', label: 'rank', unit: 'packets', help: "peer decisions refused: a new flow's backup no ranking gives (dropped)", read: (v) => fs(v).peerDecisionRefused[PeerDecision.RANK] ?? 0, cli: { row: 'peer input', text: '{} rank' } },
  { section: 'counters', key: 'peerDecisionRefusedVip', metric: 'tunlb_peer_decisions_refused_total', label: 'vip', unit: 'packets', help: "peer decisions refused: VIP index not the destination's here (decided here)", read: (v) => fs(v).peerDecisionRefused[PeerDecision.VIP] ?? 0, cli: { row: 'peer input', text: '{} vip' } },
  { section: 'counters', key: 'peerDecisionRefusedBackendRange', metric: 'tunlb_peer_decisions_refused_total', label: 'backend_range', unit: 'packets', help: "peer decisions refused: backend index not in this table (decided here)", read: (v) => fs(v).peerDecisionRefused[PeerDecision.BACKEND_RANGE] ?? 0, cli: { row: 'peer input', text: '{} backend range' } },
  { section: 'counters', key: 'peerDecisionRefusedBackendIneligible', metric: 'tunlb_peer_decisions_refused_total', label: 'backend_ineligible', unit: 'packets', help: "peer decisions refused: new flow on a backend that takes no new flows here (decided here)", read: (v) => fs(v).peerDecisionRefused[PeerDecision.BACKEND_INELIGIBLE] ?? 0, cli: { row: 'peer input', text: '{} backend ineligible' } },
  { section: 'counters', key: 'peerVnetRefusedFlags', metric: 'tunlb_peer_vnet_refused_total', label: 'flags', unit: 'packets', help: 'peer virtio headers refused: unknown flags', read: (v) => fs(v).peerVnetRefused[VnetCheck.FLAGS] ?? 0, cli: { row: 'peer input', text: 'peer virtio headers refused: {} flags', sep: '; ' } },
  { section: 'counters', key: 'peerVnetRefusedGsoType', metric: 'tunlb_peer_vnet_refused_total', label: 'gso_type', unit: 'packets', help: 'peer virtio headers refused: gso_type not none/TCPv4/TCPv6', read: (v) => fs(v).peerVnetRefused[VnetCheck.GSO_TYPE] ?? 0, cli: { row: 'peer input', text: '{} gso type' } },
  { section: 'counters', key: 'peerVnetRefusedGsoPacket', metric: 'tunlb_peer_vnet_refused_total', label: 'gso_packet', unit: 'packets', help: 'peer virtio headers refused: TCP GSO on a packet that is not such TCP', read: (v) => fs(v).peerVnetRefused[VnetCheck.GSO_PACKET] ?? 0, cli: { row: 'peer input', text: '{} gso packet' } },
  { section: 'counters', key: 'peerVnetRefusedGsoSize', metric: 'tunlb_peer_vnet_refused_total', label: 'gso_size', unit: 'packets', help: 'peer virtio headers refused: gso_size below 48', read: (v) => fs(v).peerVnetRefused[VnetCheck.GSO_SIZE] ?? 0, cli: { row: 'peer input', text: '{} gso size' } },
  { section: 'counters', key: 'peerVnetRefusedCsum', metric: 'tunlb_peer_vnet_refused_total', label: 'csum', unit: 'packets', help: 'peer virtio headers refused: csum_start/csum_offset not the L4 checksum', read: (v) => fs(v).peerVnetRefused[VnetCheck.CSUM] ?? 0, cli: { row: 'peer input', text: '{} csum' } },
  { section: 'counters', key: 'peerVnetRefusedHdrLen', metric: 'tunlb_peer_vnet_refused_total', label: 'hdr_len', unit: 'packets', help: 'peer virtio headers refused: hdr_len beyond the packet', read: (v) => fs(v).peerVnetRefused[VnetCheck.HDR_LEN] ?? 0, cli: { row: 'peer input', text: '{} hdr len' } },
] as const satisfies readonly CounterDescriptor[];

/** The snapshot keys of one section, as a type (BalancerSnapshot's `flows` and `counters`). */
export type CounterKey<S extends CounterSection> = Extract<(typeof COUNTERS)[number], { section: S }>['key'];

/**
 * The counter rows of `tunlb stats`, in print order (between the device and drops rows).
 * `cluster`: printed only for a balancer with peers; `tail`: a snapshot text field appended
 * after "; ".
 */
export const STATS_ROWS: ReadonlyArray<{ readonly label: string; readonly cluster?: boolean; readonly tail?: 'peerSplit' }> = [
  { label: 'packets in' },
  { label: 'packets out' },
  { label: 'peer split', cluster: true, tail: 'peerSplit' },
  { label: 'flows' },
  { label: 'failover' },
  { label: 'backup', cluster: true },
  { label: 'backend down' },
  { label: 'reply match' },
];

/** snapshot[section] of COUNTERS, keys in table order. */
export function readSection<S extends CounterSection>(v: BalancerView, section: S): Record<CounterKey<S>, number> {
  const out: Record<string, number> = {};
  for (const d of COUNTERS as readonly CounterDescriptor[]) if (d.section === section) out[d.key] = d.read(v);
  return out as Record<CounterKey<S>, number>;
}

// ---------------------------------------------------------------------------------------
// Per-VIP and per-backend counters (issue 13; src/dataplane/service-stats.ts)
//
// Each row is one figure of a VIP and of each of its backends, declared once: its key on a
// VIP or backend row of GET /api/v1/vips (src/control/service-view.ts), its Prometheus family
// per scope (labels vip, or vip and backend, plus the family's labelName = `label`), its
// `tunlb vips --stats` / `tunlb backends --stats` column (`head`, ipvsadm's names), and, for
// counters, its rate (`rate`: per second over the admin endpoint's last RATE_WINDOW_S seconds:
// the JSON key and the `--rate` column). `field`: the ServiceStats field it reads; absent:
// connections active, from the admin endpoint's sliced scan of the flow table. A VIP's value
// is the sum of its backends' (and of its removed-backends slot).

export interface ServiceCounterDescriptor {
  readonly key: 'connections' | 'activeConnections' | 'inPackets' | 'outPackets' | 'inBytes' | 'outBytes';
  /** ServiceStats field (src/dataplane/service-stats.ts); undefined: flows held (the scan). */
  readonly field?: number;
  readonly unit: 'packets' | 'bytes' | 'flows';
  readonly help: string;
  /** Family per scope (SERVICE_METRIC_FAMILIES). */
  readonly metric: { readonly vip: string; readonly backend: string };
  /** Value of the family's labelName, if it has one. */
  readonly label?: string;
  /** CLI column. */
  readonly head: string;
  /** Counters: their per-second rate (JSON key, CLI column). */
  readonly rate?: { readonly key: string; readonly head: string };
}

/** Prometheus families of SERVICE_COUNTERS: labels vip (scope vip) or vip and backend (scope backend), then labelName. */
export const SERVICE_METRIC_FAMILIES: Readonly<Record<string, MetricFamily & { readonly scope: 'vip' | 'backend' }>> = {
  tunlb_vip_connections_total: { scope: 'vip', type: 'counter', help: 'Connections (flows) given to the VIP\'s backends by this balancer: new-flow decisions, reused ports moved, flows moved off a down backend' },
  tunlb_vip_connections_active: { scope: 'vip', type: 'gauge', help: "Flow records of the VIP in this balancer's table (every balancer holds every replicated record: the cluster's count); refreshed at most every 2 s" },
  tunlb_vip_packets_total: { scope: 'vip', type: 'counter', labelName: 'direction', help: 'Packets of the VIP this balancer served: in = client to backend (NAT and DSR), out = backend reply to client (NAT)' },
  tunlb_vip_bytes_total: { scope: 'vip', type: 'counter', labelName: 'direction', help: 'IP bytes of the VIP this balancer served: in = client to backend, out = backend reply to client (NAT)' },
  tunlb_backend_connections_total: { scope: 'backend', type: 'counter', help: 'Connections (flows) given to the backend by this balancer: new-flow decisions, reused ports moved, flows moved off a down backend' },
  tunlb_backend_connections_active: { scope: 'backend', type: 'gauge', help: "Flow records on the backend in this balancer's table (the cluster's count); refreshed at most every 2 s" },
  tunlb_backend_packets_total: { scope: 'backend', type: 'counter', labelName: 'direction', help: 'Packets this balancer served to (in) and from (out, NAT replies) the backend' },
  tunlb_backend_bytes_total: { scope: 'backend', type: 'counter', labelName: 'direction', help: 'IP bytes this balancer served to (in) and from (out, NAT replies) the backend' },
};

/** Every per-VIP/per-backend figure, once, in column order. */
export const SERVICE_COUNTERS: readonly ServiceCounterDescriptor[] = [
  { key: 'connections', field: SVC_CONNECTIONS, unit: 'flows', head: 'Conns', rate: { key: 'connectionsPerS', head: 'CPS' }, metric: { vip: 'tunlb_vip_connections_total', backend: 'tunlb_backend_connections_total' }, help: 'connections (flows) given to it here' },
  { key: 'activeConnections', unit: 'flows', head: 'ActiveConn', metric: { vip: 'tunlb_vip_connections_active', backend: 'tunlb_backend_connections_active' }, help: "flow records on it in this balancer's table (the cluster's count)" },
  { key: 'inPackets', field: SVC_IN_PACKETS, unit: 'packets', head: 'InPkts', rate: { key: 'inPacketsPerS', head: 'InPPS' }, metric: { vip: 'tunlb_vip_packets_total', backend: 'tunlb_backend_packets_total' }, label: 'in', help: 'packets client → backend served here' },
  { key: 'outPackets', field: SVC_OUT_PACKETS, unit: 'packets', head: 'OutPkts', rate: { key: 'outPacketsPerS', head: 'OutPPS' }, metric: { vip: 'tunlb_vip_packets_total', backend: 'tunlb_backend_packets_total' }, label: 'out', help: "replies backend → client un-NAT'd here" },
  { key: 'inBytes', field: SVC_IN_BYTES, unit: 'bytes', head: 'InBytes', rate: { key: 'inBytesPerS', head: 'InBPS' }, metric: { vip: 'tunlb_vip_bytes_total', backend: 'tunlb_backend_bytes_total' }, label: 'in', help: 'IP bytes client → backend served here' },
  { key: 'outBytes', field: SVC_OUT_BYTES, unit: 'bytes', head: 'OutBytes', rate: { key: 'outBytesPerS', head: 'OutBPS' }, metric: { vip: 'tunlb_vip_bytes_total', backend: 'tunlb_backend_bytes_total' }, label: 'out', help: "IP bytes backend → client un-NAT'd here" },
];

/**
 * The health-check detail of a backend row of GET /api/v1/vips (src/control/service-view.ts,
 * from HealthMonitor.states(): this balancer's check, or its health owner's as reported), each
 * exported as a gauge or counter with labels vip and backend: `key` on the row (null: no value,
 * no series), times `scale`.
 */
export interface BackendCheckDescriptor {
  readonly key: 'checkOk' | 'checkLatencyMs' | 'checkFailures' | 'lastCheckAt' | 'changedAt' | 'downForS' | 'downTotalS';
  readonly metric: string;
  readonly type: 'gauge' | 'counter';
  readonly scale: number;
  readonly help: string;
}

export const BACKEND_CHECKS: readonly BackendCheckDescriptor[] = [
  { key: 'checkOk', metric: 'tunlb_backend_check_ok', type: 'gauge', scale: 1, help: "The backend's last health check passed (1) or failed (0), as run here or by its health owner" },
  { key: 'checkLatencyMs', metric: 'tunlb_backend_check_latency_seconds', type: 'gauge', scale: 1e-3, help: "Latency of the backend's last health check (connect, HTTP answer or echo reply), seconds" },
  { key: 'checkFailures', metric: 'tunlb_backend_check_failures', type: 'gauge', scale: 1, help: 'Consecutive failed health checks of the backend (at the balancer that checks it)' },
  { key: 'lastCheckAt', metric: 'tunlb_backend_last_check_timestamp_seconds', type: 'gauge', scale: 1e-3, help: "When the backend's last health check completed, Unix time" },
  { key: 'changedAt', metric: 'tunlb_backend_last_change_timestamp_seconds', type: 'gauge', scale: 1e-3, help: "When the backend's state last changed (health, drain, reload), Unix time" },
  { key: 'downForS', metric: 'tunlb_backend_down_seconds', type: 'gauge', scale: 1, help: 'Seconds the backend has been down (unhealthy, drained past its timeout, removed); 0 while up' },
  { key: 'downTotalS', metric: 'tunlb_backend_downtime_seconds_total', type: 'counter', scale: 1, help: 'Seconds the backend has been down in all, as this balancer saw it (the current outage included)' },
];
