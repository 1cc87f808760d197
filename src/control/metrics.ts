/**
 * Prometheus metrics of one balancer (prom-client), served by the admin endpoint at
 * GET /metrics. Control plane only.
 *
 * Contract: nothing here touches the packet path. Every counter and gauge is a prom-client
 * metric with a `collect()` callback that copies the balancer's existing counters
 * (ForwarderStats, FlowTable, TUN device stats, Membership, Replicator, ControlChannel) at
 * scrape time. The one exception is the probe RTT histogram: Membership keeps only the last
 * RTT sample per peer, so a timer (every probe interval, unref'd, stopped by close()) reads
 * Membership.peers() and observes each new sample (a sample is new when the peer's last-ack
 * time moved; acks closer together than one timer period are seen once: a sample, not a
 * census).
 *
 * Counters are monotonic as long as the process lives (the source counters never go back);
 * a restarted balancer starts from zero, which Prometheus' rate() handles as a reset.
 *
 * The data-plane and flow-table families (packets and bytes in and out, flows, failover,
 * second chance, backup repair, peer split, reply fallbacks, backend-down flows, SYN reuse) are rendered from
 * src/control/counters.ts (METRIC_FAMILIES, COUNTERS), where each is declared once. The others:
 *
 * Names (all `tunlb_`; label values are the stable names of src/packet/result.ts,
 * src/dataplane/forward-drop.ts, src/protocol/result.ts, src/cluster/replication-stats.ts):
 *   tunlb_info{balancer,cluster,incarnation}                   1
 *   tunlb_uptime_seconds
 *   tunlb_self_status{status}                                  1 for this balancer's status, 0 for the others
 *                                                              (syncing|serving|draining)
 *   tunlb_vip_announced{vip}                                   1 while this balancer announces the VIP (ECMP entry)
 *   tunlb_announce_changes_total{op=announce|withdraw|failed}, tunlb_watchdog_withdrawals_total
 *   tunlb_device_packets_total{op=read|write}, tunlb_device_bytes_total{op}, tunlb_device_write_errors_total,
 *   tunlb_device_read_truncated_total
 *   tunlb_drops_total{stage=packet|forward,reason}             every reason, zeros included
 *   tunlb_records_sent_total{op=create|refresh|delete}, tunlb_record_datagrams_sent_total
 *   tunlb_records_received_total
 *   tunlb_records_applied_total{result=applied|updated|adopted|decision_kept|deleted}
 *   tunlb_records_rejected_total{reason}                       Replicator.stats.rejectedByReason
 *   tunlb_record_queue_drops_total{queue=ready|delete}
 *   tunlb_bulk_syncs_total{result=completed|failed}, tunlb_bulk_sync_records_total{direction=sent|received}
 *   tunlb_bulk_sync_progress_records{kind=received|total}      this balancer's own sync (total 0 until known)
 *   tunlb_bulk_sync_duration_seconds, tunlb_bulk_sync_last_records   the last completed sync (0 before)
 *   tunlb_bulk_sync_sessions_total{kind=started|resumed}       stream sessions of this balancer's sync
 *   tunlb_bulk_sync_session_failures_total{cause}              sessions that ended before their done chunk
 *   tunlb_bulk_sync_served_total{result=served|refused|broken} answers to peers' syncs
 *   tunlb_bulk_sync_stream_drops_total{reason}                 stream connections dropped (MAC, handshake, ...), zeros included
 *   tunlb_control_datagrams_total{direction=sent|received}
 *   tunlb_control_rejected_total{reason}                       ControlChannel.rejectCounts(), zeros included
 *   tunlb_peer_state{peer,state}                               1 for the peer's state, 0 for the others
 *                                                              (unknown|up|suspect|dead)
 *   tunlb_peer_status{peer,status}                             1 for the peer's reported status, 0 for the others
 *                                                              (unknown|syncing|serving|draining; a dead
 *                                                              peer's status is unknown)
 *   tunlb_peer_live{peer}                                      1 when this balancer sends it flows
 *   tunlb_peer_rtt_smoothed_seconds{peer}                      SRTT (RFC 6298 EWMA)
 *   tunlb_peer_probe_rtt_seconds{peer}                         histogram of sampled probe RTTs
 *   tunlb_probes_sent_total, tunlb_probe_acks_received_total, tunlb_probe_acks_stale_total
 *   tunlb_peer_restarts_total
 *   tunlb_peer_suspects_total                                  peer_suspect events (Membership.stats.suspects)
 *   tunlb_probes_unconfirmed_total{answer=sent|withheld}       probes of an unconfirmed incarnation (replays, restarts)
 *   tunlb_probe_challenges_total                               probes sent at once to a peer whose unconfirmed probe came in
 *   tunlb_peer_incarnations_back_total                         restarts taken with a lower incarnation (clock back, state lost)
 *   tunlb_failovers_total                                      peer_down events (Membership.stats.failovers)
 *   tunlb_event_loop_stalls_total, tunlb_event_loop_stall_seconds_total   late probe ticks (Membership)
 *   tunlb_config_info{hash}                                    1; hash = the running config's version (12 hex)
 *   tunlb_peer_config_mismatch{peer}                           1 while the peer reports another config hash
 *   tunlb_cluster_summaries_received_total, tunlb_cluster_messages_dropped_total{reason}
 *                                                              peers' cluster-view summaries (src/cluster/cluster-view.ts)
 *   tunlb_cluster_reload_requests_total{direction=sent|received}   `tunlb reload --cluster` requests
 *   tunlb_forwarding_generation, tunlb_vip_backends{vip}
 *   tunlb_backend_state{vip,backend,state}                     1 for the backend's current state, 0 for the others
 *                                                              (unknown|healthy|unhealthy|draining|drained|removed)
 *   tunlb_backend_eligible{vip,backend}                        1 when new flows may go there
 *   tunlb_backend_weight{vip,backend}                          weight in force: the runtime override (`tunlb weight`) or the file's
 *   tunlb_backend_file_weight{vip,backend}                     the configuration file's weight
 *   tunlb_backend_maintenance{vip,backend}                     1 in maintenance (`tunlb maintenance`), else 0
 *   tunlb_backend_overrides_total{result=applied|malformed}    runtime marks from peers applied / dropped as malformed
 *   tunlb_vip_connections_total{vip}, tunlb_vip_connections_active{vip},
 *   tunlb_vip_{packets,bytes}_total{vip,direction=in|out}      per VIP (src/control/counters.ts SERVICE_METRIC_FAMILIES)
 *   tunlb_backend_connections_total{vip,backend}, tunlb_backend_connections_active{vip,backend},
 *   tunlb_backend_{packets,bytes}_total{vip,backend,direction} per backend (the same figures)
 *   tunlb_backend_check_ok, _check_latency_seconds, _check_failures, _last_check_timestamp_seconds,
 *   _last_change_timestamp_seconds, _down_seconds, _downtime_seconds_total {vip,backend}
 *                                                              the health-check detail (BACKEND_CHECKS)
 *   tunlb_health_checks_total{result=ok|failed}                checks run by this balancer (HealthMonitor.stats)
 *   tunlb_health_reports_total{direction=sent|received}
 *   tunlb_drains_expired_total                                 drains whose drain_timeout_s passed here
 *   tunlb_dataplane_batch_capacity                             packets per TUN read (config tun.batch)
 *   tunlb_dataplane_batch_size                                 histogram, only when the forwarder counts
 *                                                              batches (see BATCH_SOURCE below)
 * plus prom-client's default process/Node.js metrics (process_*, nodejs_*: CPU, memory,
 * event-loop lag, GC), less the three gauges whose names end in _total
 * (nodejs_active_{handles,requests,resources}_total: `promtool check metrics` rejects a
 * non-counter named *_total; sum(nodejs_active_handles) by () is the same number).
 *
 * States are one series per state name (value 1 for the current one, 0 for the others), never
 * number codes: `tunlb_peer_state{state="dead"} == 1` reads as what it means, and each
 * state's series can be summed across balancers.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { packetResultNames } from '../packet/result';
import { forwardDropNames } from '../dataplane/forward-drop';
import { PROTOCOL_RESULT_NAMES } from '../protocol/result';
import { REJECT_REASONS } from '../cluster/replicator';
import { SYNC_STREAM_DROP_REASONS } from '../cluster/bulk-sync';
import { SUMMARY_DROP_REASONS } from '../cluster/cluster-view';
import type { BalancerView } from './balancer-view';
import { BACKEND_CHECKS, COUNTERS, METRIC_FAMILIES, SERVICE_COUNTERS, SERVICE_METRIC_FAMILIES, type CounterDescriptor } from './counters';
import { backendCheckValue, servicesBody, type HeldFlows, type ServicesBody } from './service-view';
import type { BackendStateName } from '../backends/backend-state';
import type { BackendStatus } from '../backends/health-monitor';

/** Peer liveness states (src/cluster/membership.ts), for the one-hot tunlb_peer_state. */
export const PEER_STATES = ['unknown', 'up', 'suspect', 'dead'] as const;
/** Reported statuses, for the one-hot tunlb_peer_status (a status not in the list reads as unknown). */
export const PEER_STATUSES = ['unknown', 'syncing', 'serving', 'draining'] as const;
/** This balancer's statuses, for the one-hot tunlb_self_status. */
export const SELF_STATUSES = ['syncing', 'serving', 'draining'] as const;
/** prom-client default metrics dropped from the scrape (gauges named *_total; see the header). */
const DROPPED_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];
/** Every backend state name (src/backends/backend-state.ts), for the one-hot state gauge. */
const BACKEND_STATES: readonly BackendStateName[] = ['unknown', 'healthy', 'unhealthy', 'draining', 'drained', 'removed'];

/** Probe RTT buckets, seconds: 50 µs .. 250 ms (lab RTTs are tens of µs to a few ms). */
export const RTT_BUCKETS_S = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];

/**
 * Batch-size counters the histogram reads (ForwarderStats has them): `stats.batches` (TUN batches processed) and
 * `stats.batchSizeLog2` (Float64Array; index k counts batches of 2^k .. 2^(k+1)-1 packets),
 * each bumped once per processBatch, never per packet. Sum = stats.rxPackets.
 */
interface BatchSource {
  batches?: number;
  batchSizeLog2?: Float64Array;
  rxPackets: number;
}

export class Metrics {
  readonly registry = new Registry();
  readonly #b: BalancerView;
  readonly #rtt: Histogram<'peer'>;
  /** Per peer: membership-clock time of the last ack whose RTT was observed. */
  readonly #lastAckAt = new Map<number, number>();
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;
  /** The backends' states of the scrape in progress (text()), read once for the three backend gauges. */
  #scrapeBackends: BackendStatus[] | undefined;
  /** The per-VIP/per-backend rows of the scrape in progress (text()), built once for their families. */
  #scrapeServices: ServicesBody | undefined;
  readonly #heldFlows: (() => Promise<HeldFlows> | HeldFlows) | undefined;

  /**
   * `rttSampleMs`: RTT sampling period (default the probe interval; 0 = no timer, call
   * sampleRtt()). `nowMs`: the membership's clock (default performance.now, as ClusterNode's).
   * `defaultMetrics`: prom-client's process/Node.js metrics (default true). `heldFlows`: the
   * flow records held per VIP and backend (the admin endpoint's cached scan), read once per
   * scrape for the *_connections_active gauges (absent: those gauges read 0).
   */
  constructor(
    b: BalancerView,
    opts: { rttSampleMs?: number; nowMs?: () => number; defaultMetrics?: boolean; heldFlows?: () => Promise<HeldFlows> | HeldFlows } = {},
  ) {
    this.#b = b;
    this.#heldFlows = opts.heldFlows;
    this.#now = opts.nowMs ?? (() => performance.now());
    const r = this.registry;
    const registers = [r];
    const st = b.forwarder.stats;
    const dev = (): typeof b.device.stats => b.device.stats;
    const c = b.cluster;

    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({ name, help, registers, collect() { this.set(read()); } });
    };
    const counter = (name: string, help: string, read: () => number): void => {
      new Counter({ name, help, registers, collect() { this.reset(); this.inc(read()); } });
    };
    /** A labelled counter: `read` returns [labelValue, value] pairs for `label`. */
    const counterBy = <L extends string>(name: string, help: string, label: L, read: () => Array<[string, number]>): void => {
      new Counter<L>({
        name,
        help,
        registers,
        labelNames: [label],
        collect() {
          this.reset();
          for (const [k, v] of read()) this.inc({ [label]: k } as Record<L, string>, v);
        },
      });
    };
    const gaugeBy = <L extends string>(name: string, help: string, label: L, read: () => Array<[string, number]>): void => {
      new Gauge<L>({
        name,
        help,
        registers,
        labelNames: [label],
        collect() {
          this.reset();
          for (const [k, v] of read()) this.set({ [label]: k } as Record<L, string>, v);
        },
      });
    };

    // ---- identity
    new Gauge({
      name: 'tunlb_info',
      help: 'This balancer: id, cluster id and incarnation (value 1)',
      registers,
      labelNames: ['balancer', 'cluster', 'incarnation'],
      collect() {
        this.reset();
        this.set({ balancer: b.selfId, cluster: b.config.cluster.id, incarnation: String(c?.incarnation ?? 0) }, 1);
      },
    });
    gauge('tunlb_uptime_seconds', 'Seconds since this balancer started', () => b.nowSec());
    gaugeBy('tunlb_self_status', "This balancer's status, one series per status: 1 = the current one", 'status', () => {
      const now = c?.membership.selfStatus ?? 'serving';
      return SELF_STATUSES.map((x) => [x, x === now ? 1 : 0]);
    });

    // ---- the data-plane and flow-table counters (src/control/counters.ts), one family each
    const rows = COUNTERS as readonly CounterDescriptor[];
    for (const [name, fam] of Object.entries(METRIC_FAMILIES)) {
      const series = rows.filter((d) => d.metric === name);
      if (fam.labelName === undefined) {
        const d = series[0]!;
        (fam.type === 'gauge' ? gauge : counter)(name, fam.help, () => d.read(b));
      } else if (fam.type === 'gauge') {
        gaugeBy(name, fam.help, fam.labelName, () => series.map((d) => [d.label!, d.read(b)]));
      } else {
        counterBy(name, fam.help, fam.labelName, () => series.map((d) => [d.label!, d.read(b)]));
      }
    }

    // ---- the TUN device (kernel side)
    counterBy('tunlb_device_packets_total', 'Packets the TUN device read and wrote (kernel side)', 'op', () => [
      ['read', dev().readPackets],
      ['write', dev().writePackets],
    ]);
    counterBy('tunlb_device_bytes_total', 'Bytes the TUN device read and wrote (kernel side)', 'op', () => [
      ['read', dev().readBytes],
      ['write', dev().writeBytes],
    ]);
    counter('tunlb_device_write_errors_total', 'Packets the kernel refused on a TUN write', () => dev().writeErrors);
    counter('tunlb_device_read_truncated_total', 'Packets read from the TUN device that were longer than their batch slot (dropped as truncated)', () => dev().readTruncated);

    // ---- drops: every reason, zeros included (a series exists before its first drop)
    new Counter<'stage' | 'reason'>({
      name: 'tunlb_drops_total',
      help: 'Packets dropped, by stage (packet: parse/rewrite, forward: decision) and reason',
      registers,
      labelNames: ['stage', 'reason'],
      collect() {
        this.reset();
        for (let i = 1; i < st.packetDrops.length; i++) this.inc({ stage: 'packet', reason: packetResultNames[i] ?? `packet_${i}` }, st.packetDrops[i]!);
        for (let i = 0; i < st.forwardDrops.length; i++) this.inc({ stage: 'forward', reason: forwardDropNames[i] ?? `forward_${i}` }, st.forwardDrops[i]!);
      },
    });


    // ---- replication
    const rs = c?.replicator.stats;
    counterBy('tunlb_records_sent_total', 'Flow records multicast to peers, by operation', 'op', () => [
      ['create', rs?.createsSent ?? 0],
      ['refresh', rs?.refreshesSent ?? 0],
      ['delete', rs?.deletesSent ?? 0],
    ]);
    counter('tunlb_record_datagrams_sent_total', 'Record datagrams multicast to peers', () => rs?.datagramsSent ?? 0);
    counter('tunlb_records_received_total', 'Flow records received from peers (multicast and bulk sync)', () => rs?.recordsReceived ?? 0);
    counterBy('tunlb_records_applied_total', 'Received records that changed the flow table, by outcome', 'result', () => [
      ['applied', rs?.applied ?? 0],
      ['updated', rs?.updated ?? 0],
      ['adopted', rs?.adopted ?? 0],
      ['decision_kept', rs?.decisionKept ?? 0],
      ['deleted', rs?.deleted ?? 0],
    ]);
    counterBy('tunlb_records_rejected_total', 'Received records ignored, by reason', 'reason', () =>
      REJECT_REASONS.map((k) => [k, rs?.rejectedByReason[k] ?? 0]),
    );
    counterBy('tunlb_record_queue_drops_total', 'Record events dropped on a full queue (the refresh scan heals ready drops)', 'queue', () => [
      ['ready', rs?.queueDrops ?? 0],
      ['delete', rs?.deleteQueueDrops ?? 0],
    ]);
    counterBy('tunlb_bulk_syncs_total', 'Bulk syncs this balancer pulled from a peer, by result', 'result', () => [
      ['completed', rs?.syncsCompleted ?? 0],
      ['failed', rs?.syncsFailed ?? 0],
    ]);
    counterBy('tunlb_bulk_sync_records_total', 'Flow records moved by bulk sync (sent: served to peers)', 'direction', () => [
      ['sent', rs?.syncRecordsSent ?? 0],
      ['received', rs?.syncRecordsReceived ?? 0],
    ]);
    gaugeBy('tunlb_bulk_sync_progress_records', "This balancer's bulk sync: records received, and the expected total (0 until known)", 'kind', () => {
      const p = c?.syncProgress() ?? null;
      return [
        ['received', p?.received ?? 0],
        ['total', p?.total ?? 0],
      ];
    });
    gauge('tunlb_bulk_sync_duration_seconds', 'Duration of the last completed bulk sync of this balancer (0 before)', () => (rs?.syncLastMs ?? 0) / 1000);
    gauge('tunlb_bulk_sync_last_records', 'Records of the last completed bulk sync of this balancer (0 before)', () => rs?.syncLastRecords ?? 0);
    counterBy('tunlb_bulk_sync_sessions_total', 'Sync stream sessions this balancer started, and those that resumed from a cursor', 'kind', () => [
      ['started', rs?.syncSessions ?? 0],
      ['resumed', rs?.syncResumes ?? 0],
    ]);
    counterBy('tunlb_bulk_sync_session_failures_total', 'Sync stream sessions that ended before their done chunk, by cause', 'cause', () =>
      Object.entries(rs?.syncSessionFailures ?? {}),
    );
    counterBy('tunlb_bulk_sync_served_total', "Answers to peers' bulk syncs: to the end, refused (busy, not serving, ...), broken off", 'result', () => [
      ['served', rs?.syncStreamsServed ?? 0],
      ['refused', Object.values(rs?.syncStreamsRefused ?? {}).reduce((a, v) => a + v, 0)],
      ['broken', rs?.syncJobsCancelled ?? 0],
    ]);
    counterBy('tunlb_bulk_sync_stream_drops_total', 'Sync stream connections dropped, by reason (bad MAC, handshake, not a peer, ...)', 'reason', () =>
      SYNC_STREAM_DROP_REASONS.map((k) => [k, rs?.syncStreamDrops[k] ?? 0]),
    );
    counterBy('tunlb_control_datagrams_total', 'Datagrams on the control channel (probes, acks, records, sync)', 'direction', () => [
      ['sent', c?.channel.stats.sent ?? 0],
      ['received', c?.channel.stats.received ?? 0],
    ]);
    counterBy('tunlb_control_rejected_total', 'Control datagrams rejected, by reason (MAC, replay, cluster, sender, ...)', 'reason', () => {
      const got = c?.channel.rejectCounts() ?? {};
      const out: Array<[string, number]> = [];
      for (const name of PROTOCOL_RESULT_NAMES) if (name !== 'ok') out.push([name, got[name] ?? 0]);
      for (const [k, v] of Object.entries(got)) if (!PROTOCOL_RESULT_NAMES.includes(k)) out.push([k, v]);
      return out;
    });

    // ---- peers
    const peerRows = (): ReturnType<NonNullable<typeof c>['membership']['peers']> =>
      c === undefined ? [] : c.membership.peers().filter((p) => p.state !== 'self');
    /** One series per (peer, name): 1 for the peer's current `pick(p)`, 0 for the other names. */
    const peerOneHot = (name: string, help: string, label: string, names: readonly string[], pick: (p: ReturnType<typeof peerRows>[number]) => string): void => {
      new Gauge({
        name,
        help,
        registers,
        labelNames: ['peer', label],
        collect() {
          this.reset();
          for (const p of peerRows()) {
            const now = names.includes(pick(p)) ? pick(p) : names[0]!;
            for (const x of names) this.set({ peer: p.id, [label]: x }, x === now ? 1 : 0);
          }
        },
      });
    };
    peerOneHot('tunlb_peer_state', "Peer liveness state, one series per state: 1 = the peer's current state", 'state', PEER_STATES, (p) => p.state);
    peerOneHot(
      'tunlb_peer_status',
      "Peer's reported status, one series per status: 1 = the current one (unknown while the peer is dead or never heard)",
      'status',
      PEER_STATUSES,
      (p) => p.status,
    );
    gaugeBy('tunlb_peer_live', 'Peer live for forwarding (answers probes and serves): 1, else 0', 'peer', () =>
      peerRows().map((p) => [p.id, p.live ? 1 : 0]),
    );
    gaugeBy('tunlb_peer_rtt_smoothed_seconds', 'Smoothed probe RTT (EWMA 1/8, RFC 6298), seconds; absent before the first ack', 'peer', () =>
      peerRows().flatMap((p): Array<[string, number]> => (p.rttAvgMs === null ? [] : [[p.id, p.rttAvgMs / 1000]])),
    );
    this.#rtt = new Histogram({
      name: 'tunlb_peer_probe_rtt_seconds',
      help: 'Probe round-trip times, seconds (sampled every probe interval)',
      registers,
      labelNames: ['peer'],
      buckets: RTT_BUCKETS_S,
    });
    const ms = c?.membership.stats;
    counter('tunlb_probes_sent_total', 'Liveness probes sent', () => ms?.probesSent ?? 0);
    counter('tunlb_probe_acks_received_total', 'Probe acks that matched an outstanding probe', () => ms?.acksReceived ?? 0);
    counter('tunlb_probe_acks_stale_total', 'Probe acks ignored (unknown nonce, late duplicate, previous incarnation)', () =>
      (ms?.acksStale ?? 0) + (ms?.acksWrongIncarnation ?? 0),
    );
    counter('tunlb_peer_restarts_total', 'Peers seen with a new incarnation (restarted)', () => ms?.restarts ?? 0);
    counter('tunlb_peer_suspects_total', 'Peers silent for more than one probe interval (peer_suspect events)', () => ms?.suspects ?? 0);
    counterBy('tunlb_probes_unconfirmed_total', 'Verified probes of an incarnation not confirmed yet (a restarted peer, or a replay), by whether they were answered', 'answer', () => [
      ['sent', (ms?.probesUnconfirmed ?? 0) - (ms?.probesUnconfirmedUnanswered ?? 0)],
      ['withheld', ms?.probesUnconfirmedUnanswered ?? 0],
    ]);
    counter('tunlb_probe_challenges_total', 'Probes sent at once to a peer whose unconfirmed probe came in', () => ms?.challenges ?? 0);
    counter('tunlb_peer_incarnations_back_total', 'Peer restarts taken with a lower incarnation (clock went back and state lost)', () => ms?.incarnationsBack ?? 0);
    counter('tunlb_failovers_total', 'Peers declared dead (peer_down events): their flows go to their backups', () => ms?.failovers ?? 0);
    counter('tunlb_event_loop_stalls_total', 'Probe ticks that ran late (event-loop stalls; not counted against peers)', () => ms?.stalls ?? 0);
    counter('tunlb_event_loop_stall_seconds_total', 'Total lateness of late probe ticks, seconds', () => (ms?.stallMs ?? 0) / 1000);

    // ---- configuration and its version across the cluster (src/config/config-hash.ts)
    new Gauge({
      name: 'tunlb_config_info',
      help: "The running config's version: hash = first 48 bits of SHA-256 over its canonical form, 12 hex digits (value 1)",
      registers,
      labelNames: ['hash'],
      collect() {
        this.reset();
        this.set({ hash: b.configHash().hex }, 1);
      },
    });
    gaugeBy('tunlb_peer_config_mismatch', "Peer's last reported config hash differs from this balancer's: 1, else 0 (0 while it never reported one)", 'peer', () =>
      peerRows().map((p) => [p.id, p.configMismatch ? 1 : 0]),
    );
    counterBy('tunlb_cluster_messages_dropped_total', "Peers' cluster-view summaries dropped after authentication, by reason (src/cluster/cluster-view.ts)", 'reason', () =>
      SUMMARY_DROP_REASONS.map((r) => [r, c?.view.stats.drops[r] ?? 0]),
    );
    counter('tunlb_cluster_summaries_received_total', "Peers' cluster-view summaries accepted (one per peer per second)", () => c?.view.stats.accepted ?? 0);
    counterBy('tunlb_cluster_reload_requests_total', 'Cluster reload requests (`tunlb reload --cluster`): sent to peers, received from peers', 'direction', () => [
      ['sent', c?.reloads.stats.requestsSent ?? 0],
      ['received', c?.reloads.stats.requestsReceived ?? 0],
    ]);
    gauge('tunlb_forwarding_generation', 'Generation of the forwarding table (VIPs and backends); changes on reload', () => b.forwarder.forwarding.generation);
    gaugeBy('tunlb_vip_backends', 'Backends configured per VIP', 'vip', () =>
      b.forwarder.forwarding.config.vips.map((v) => [v.name, v.backends.length]),
    );

    // ---- the ECMP entry (src/control/announcer.ts)
    gaugeBy('tunlb_vip_announced', 'This balancer announces the VIP (its route is in announce.table): 1, else 0', 'vip', () =>
      (b.announcer?.vips() ?? []).map((v) => [v.name, v.announced ? 1 : 0]),
    );
    counterBy('tunlb_announce_changes_total', 'VIP announcement changes, by op (announce, withdraw, failed)', 'op', () => {
      const a = b.announcer?.stats;
      return [['announce', a?.announced ?? 0], ['withdraw', a?.withdrawn ?? 0], ['failed', a?.failures ?? 0]];
    });
    counter('tunlb_watchdog_withdrawals_total', 'Announcements withdrawn by the watchdog (event loop stalled past announce.watchdog_ms)', () => b.announcer?.stats.watchdogWithdrawals ?? 0);

    // ---- backends (HealthMonitor's shared view; the same on every balancer)
    const backends = (): BackendStatus[] => this.#scrapeBackends ?? b.health?.states() ?? [];
    const backendGauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge<string>, rows: BackendStatus[]) => void): void => {
      new Gauge({ name, help, registers, labelNames, collect() { this.reset(); if (b.health !== undefined) fill(this, backends()); } });
    };
    backendGauge('tunlb_backend_state', "Backend state, one series per state name: 1 = the backend's current state", ['vip', 'backend', 'state'], (g, rows) => {
      for (const x of rows) for (const name of BACKEND_STATES) g.set({ vip: x.vip, backend: x.backend, state: name }, x.state === name ? 1 : 0);
    });
    backendGauge('tunlb_backend_eligible', 'Backend takes new flows (healthy, not draining, not in maintenance, not removed)', ['vip', 'backend'], (g, rows) => {
      for (const x of rows) g.set({ vip: x.vip, backend: x.backend }, x.eligible ? 1 : 0);
    });
    backendGauge('tunlb_backend_weight', "Backend weight in force: the runtime override (tunlb weight, until the next reload) or the file's", ['vip', 'backend'], (g, rows) => {
      for (const x of rows) g.set({ vip: x.vip, backend: x.backend }, x.weight);
    });
    backendGauge('tunlb_backend_file_weight', "Backend weight in the configuration file", ['vip', 'backend'], (g, rows) => {
      for (const x of rows) g.set({ vip: x.vip, backend: x.backend }, x.fileWeight ?? x.weight);
    });
    backendGauge('tunlb_backend_maintenance', 'Backend in maintenance (tunlb maintenance: no new flows, flows continue, checks go on): 1, else 0', ['vip', 'backend'], (g, rows) => {
      for (const x of rows) g.set({ vip: x.vip, backend: x.backend }, x.maintenance === true ? 1 : 0);
    });
    counterBy('tunlb_backend_overrides_total', "Runtime weight/maintenance marks in peers' health reports: applied here, or dropped as malformed", 'result', () => [
      ['applied', b.health?.stats.overridesApplied ?? 0],
      ['malformed', b.health?.stats.overridesMalformed ?? 0],
    ]);
    counterBy('tunlb_health_checks_total', 'Health checks run by this balancer, by result', 'result', () => {
      const hs = b.health?.stats;
      return [['ok', hs ? hs.checksRun - hs.checksFailed : 0], ['failed', hs?.checksFailed ?? 0]];
    });
    counterBy('tunlb_health_reports_total', 'Backend health reports on the control channel', 'direction', () => [
      ['sent', b.health?.stats.reportsSent ?? 0],
      ['received', b.health?.stats.reportsReceived ?? 0],
    ]);
    counter('tunlb_drains_expired_total', 'Drained backends whose drain_timeout_s passed here (remaining flows cut)', () => b.health?.stats.drainsExpired ?? 0);

    // ---- per VIP and per backend (src/control/counters.ts SERVICE_COUNTERS, BACKEND_CHECKS;
    // rows from src/control/service-view.ts, built once per scrape). Labels: vip (the VIP's
    // name) and backend (its address, as tunlb_backend_state): bounded by the config.
    const services = (): ServicesBody => this.#scrapeServices ?? servicesBody(b, undefined, undefined);
    for (const [name, fam] of Object.entries(SERVICE_METRIC_FAMILIES)) {
      const series = SERVICE_COUNTERS.filter((d) => d.metric[fam.scope] === name);
      const labelNames = [...(fam.scope === 'vip' ? ['vip'] : ['vip', 'backend']), ...(fam.labelName === undefined ? [] : [fam.labelName])];
      const fill = (put: (labels: Record<string, string>, v: number) => void): void => {
        for (const v of services().vips) {
          for (const d of series) {
            const extra: Record<string, string> = fam.labelName === undefined ? {} : { [fam.labelName]: d.label! };
            if (fam.scope === 'vip') put({ vip: v.name, ...extra }, v[d.key]);
            else for (const x of v.backends) put({ vip: v.name, backend: x.address, ...extra }, x[d.key]);
          }
        }
      };
      if (fam.type === 'counter') {
        new Counter({ name, help: fam.help, registers, labelNames, collect() { this.reset(); fill((l, v) => this.inc(l, v)); } });
      } else {
        new Gauge({ name, help: fam.help, registers, labelNames, collect() { this.reset(); fill((l, v) => this.set(l, v)); } });
      }
    }
    for (const d of BACKEND_CHECKS) {
      const fill = (put: (labels: Record<string, string>, v: number) => void): void => {
        for (const v of services().vips) {
          for (const x of v.backends) {
            const val = backendCheckValue(x, d.key, d.scale);
            if (val !== null) put({ vip: v.name, backend: x.address }, val);
          }
        }
      };
      const labelNames = ['vip', 'backend'];
      if (d.type === 'counter') {
        new Counter({ name: d.metric, help: d.help, registers, labelNames, collect() { this.reset(); fill((l, v) => this.inc(l, v)); } });
      } else {
        new Gauge({ name: d.metric, help: d.help, registers, labelNames, collect() { this.reset(); fill((l, v) => this.set(l, v)); } });
      }
    }

    // ---- data-plane batches
    gauge('tunlb_dataplane_batch_capacity', 'Packets per TUN read at most (config tun.batch)', () => b.config.tun.batch);
    const bs = st as unknown as BatchSource;
    if (bs.batchSizeLog2 instanceof Float64Array && typeof bs.batches === 'number') {
      const log2 = bs.batchSizeLog2;
      // Bucket k holds sizes 2^k .. 2^(k+1)-1, so its upper bound is 2^(k+1)-1 (le is inclusive).
      const bounds = Array.from(log2, (_, k) => 2 ** (k + 1) - 1);
      r.registerMetric({
        name: 'tunlb_dataplane_batch_size',
        help: 'Packets per TUN read batch processed by the forwarder',
        type: 'histogram',
        aggregator: 'sum',
        get: async () => {
          const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
          let cum = 0;
          for (let k = 0; k < log2.length; k++) {
            cum += log2[k]!;
            values.push({ metricName: 'tunlb_dataplane_batch_size_bucket', labels: { le: bounds[k]! }, value: cum });
          }
          values.push({ metricName: 'tunlb_dataplane_batch_size_bucket', labels: { le: '+Inf' }, value: bs.batches! });
          values.push({ metricName: 'tunlb_dataplane_batch_size_sum', labels: {}, value: bs.rxPackets });
          values.push({ metricName: 'tunlb_dataplane_batch_size_count', labels: {}, value: bs.batches! });
          return { name: 'tunlb_dataplane_batch_size', help: 'Packets per TUN read batch processed by the forwarder', type: 'histogram', values, aggregator: 'sum' };
        },
      } as unknown as Parameters<Registry['registerMetric']>[0]);
    }

    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: r });
      for (const name of DROPPED_DEFAULT_METRICS) r.removeSingleMetric(name);
    }

    if (c !== undefined && opts.rttSampleMs !== 0) {
      const every = Math.max(10, opts.rttSampleMs ?? c.membership.intervalMs);
      this.#timer = setInterval(() => this.sampleRtt(), every);
      this.#timer.unref();
    }
  }

  /**
   * Observes each peer's RTT sample once: a sample is new when the peer's last ack is more
   * recent than the one observed before (compared with 1 ms slack: the two readings of the
   * ack time differ by the clock's advance between peers() calls). Called by the timer;
   * public for tests.
   */
  sampleRtt(): void {
    const c = this.#b.cluster;
    if (c === undefined) return;
    for (const p of c.membership.peers()) {
      if (p.state === 'self' || p.rttMs === null || p.lastAckAgoMs === null) continue;
      const ackAt = this.#now() - p.lastAckAgoMs;
      const prev = this.#lastAckAt.get(p.index);
      if (prev !== undefined && ackAt - prev < 1) continue;
      this.#lastAckAt.set(p.index, ackAt);
      this.#rtt.observe({ peer: p.id }, p.rttMs / 1000);
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text (Prometheus text format 0.0.4). */
  async text(): Promise<string> {
    const held = this.#heldFlows === undefined ? undefined : await this.#heldFlows();
    this.#scrapeBackends = this.#b.health?.states();
    this.#scrapeServices = servicesBody(this.#b, held, undefined);
    try {
      return await this.registry.metrics();
    } finally {
      this.#scrapeBackends = undefined;
      this.#scrapeServices = undefined;
    }
  }

  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
