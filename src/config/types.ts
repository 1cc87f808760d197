/**
 * The parsed, validated configuration as the rest of tunlb sees it (camelCase).
 *
 * Built once by parseConfig/loadConfig; treat it as immutable. Addresses are `IpAddress`
 * (text + 16 mapped bytes), port sets are `PortSet` (65536-bit bitmap), the key is a
 * `SecretKey`. `JSON.stringify(config)` gives a readable dump with the key redacted.
 */
import type { IpAddress } from './address';
import type { PortSet } from './ports';
import type { KeySource, SecretKey } from './secret';
import type { LOG_LEVELS, PROTOCOLS } from './schema';

export type Protocol = (typeof PROTOCOLS)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface ReplicationConfig {
  readonly mode: 'multicast' | 'unicast';
  /** Multicast group (used when mode is multicast). */
  readonly group: IpAddress;
  readonly controlPort: number;
  readonly dataPort: number;
  readonly probePort: number;
  readonly ttl: number;
  readonly flushMs: number;
  readonly refreshS: number;
}

export interface ProbeConfig {
  readonly intervalMs: number;
  readonly misses: number;
}

export interface ClusterWireId {
  /** 16 lower-case hex digits (big-endian 64-bit value). */
  readonly hex: string;
  /** High and low 32 bits, unsigned (protobufjs Long-compatible: `{ high, low, unsigned: true }`). */
  readonly high: number;
  readonly low: number;
}

export interface ClusterConfig {
  /** Cluster name as written. */
  readonly id: string;
  /** 64-bit id on the wire: first 8 bytes of SHA-256("tunlb cluster id v1\0" + id), big-endian. */
  readonly wireId: ClusterWireId;
  /** The cluster key (≥ 32 bytes). Redacted in JSON/inspect; `key.reveal()` gives the bytes. */
  readonly key: SecretKey;
  /** Where the key came from (file path resolved against the config file's directory, or env name). */
  readonly keySource: KeySource;
  readonly replication: ReplicationConfig;
  readonly probe: ProbeConfig;
  /** Directory of state kept across restarts (the incarnation file), resolved against the config file's directory. */
  readonly stateDir: string;
}

export interface BalancerConfig {
  /** Position in `balancers` (0..31): the balancer's number in rankings and on the wire. */
  readonly index: number;
  readonly id: string;
  readonly address: IpAddress;
  /** Effective control port (override or cluster default). */
  readonly controlPort: number;
  /** Effective data port (override or cluster default). */
  readonly dataPort: number;
  /** Effective probe port (override or cluster default). */
  readonly probePort: number;
}

export interface TunConfig {
  readonly name: string;
  readonly mtu: number;
  readonly queues: number;
  readonly offload: boolean;
  readonly batch: number;
}

export interface HealthCheckConfig {
  readonly type: 'tcp' | 'http' | 'icmp';
  /** Port checked (tcp/http, resolved default); null for icmp. */
  readonly port: number | null;
  /** HTTP path (http; default "/"); null otherwise. */
  readonly path: string | null;
  /** Expected HTTP status (http; default 200); null otherwise. */
  readonly expectStatus: number | null;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly rise: number;
  readonly fall: number;
}

export interface BackendConfig {
  /** Position in the VIP's `backends` (u16; 0xffff means "none" on the wire). */
  readonly index: number;
  readonly address: IpAddress;
  /** Destination port to rewrite to; null = keep the packet's port. */
  readonly port: number | null;
  /** 0..65535; 0 = drain (no new flows). */
  readonly weight: number;
  /** null = no health check (always up). */
  readonly health: HealthCheckConfig | null;
}

export interface VipConfig {
  /** Position in `vips`. */
  readonly index: number;
  readonly name: string;
  readonly address: IpAddress;
  /** As configured, in file order. */
  readonly protocols: readonly Protocol[];
  /**
   * 256 entries indexed by IP protocol number: 1 when the VIP forwards it (6 TCP, 17 UDP,
   * 1 ICMP for IPv4 VIPs or 58 ICMPv6 for IPv6 VIPs), else 0.
   */
  readonly protocolAllowed: Uint8Array;
  /** Forwarded destination ports (tcp/udp; ICMP is not filtered by port). */
  readonly ports: PortSet;
  readonly method: 'nat' | 'dsr';
  /** Seconds a drained backend keeps its flows before they are cut (0 = never). */
  readonly drainTimeoutS: number;
  /**
   * Source affinity (`affinity: source[/prefix]`): a new flow's backend is chosen from the
   * client address masked to `prefixLen` bits (of the VIP family's address: 1..32 or 1..128),
   * not from the 5-tuple (src/decision/affinity.ts). Null: `affinity: none`.
   */
  readonly affinity: VipAffinity | null;
  readonly backends: readonly BackendConfig[];
}

export interface VipAffinity {
  readonly by: 'source';
  /** Prefix length in bits of the VIP family's address (32 / 128 = the whole address). */
  readonly prefixLen: number;
}

export interface FlowTimeouts {
  readonly tcpEstablishedS: number;
  readonly tcpSynS: number;
  readonly tcpClosingS: number;
  readonly tcpResetS: number;
  readonly udpS: number;
  readonly icmpS: number;
}

export interface FlowTableConfig {
  /** Effective slot count: the configured capacity rounded up to a power of two. */
  readonly capacity: number;
  /** The value written in the file. */
  readonly requestedCapacity: number;
  readonly timeouts: FlowTimeouts;
}

export interface AdminConfig {
  readonly listen: { readonly host: string; readonly port: number; readonly address: IpAddress };
  /** Absolute path (resolved against the config file's directory); null = no token. */
  readonly tokenFile: string | null;
  /** Host names accepted in Host/Origin headers besides IP literals and localhost (lower case, no trailing dot). */
  readonly allowedHosts: readonly string[];
}

export interface AnnounceConfig {
  /** Kernel table for the VIP routes; null = no announcement. */
  readonly table: number | null;
  /** Readiness file, "{id}" replaced, resolved against the config file's directory; null = none. */
  readonly readyFile: string | null;
  /** Event-loop stall (ms) after which the watchdog withdraws; 0 = off. */
  readonly watchdogMs: number;
  readonly leaveTimeoutMs: number;
}

export interface LogConfig {
  readonly level: LogLevel;
}

export interface Config {
  /** Where the config came from (file path or the sourceName given to parseConfig). */
  readonly source: string;
  readonly cluster: ClusterConfig;
  readonly balancers: readonly BalancerConfig[];
  readonly tun: TunConfig;
  readonly vips: readonly VipConfig[];
  readonly flowTable: FlowTableConfig;
  readonly admin: AdminConfig;
  readonly announce: AnnounceConfig;
  readonly log: LogConfig;
  /** Non-fatal remarks (e.g. capacity rounded up, admin exposed without token). Log them at warn. */
  readonly warnings: readonly string[];
}

/** One problem found in a configuration file. */
export interface ConfigIssue {
  /** Field path in the file's spelling, e.g. `vips[0].backends[2].weight` ("" = the whole file). */
  readonly path: string;
  /** What is wrong, including what was expected. */
  readonly message: string;
  /** How to fix it. */
  readonly fix: string;
  /** 1-based position in the source text, when known (YAML and JSON). */
  readonly line?: number;
  readonly column?: number;
}
