/**
 * The configuration file schema (zod 4), in the file's own spelling (snake_case).
 *
 * This layer checks each field on its own: type, range, format, unknown keys. Checks that span
 * fields (uniqueness, address families, key loading, …) live in validate.ts; the camelCase
 * `Config` the rest of tunlb uses is built in load.ts. Every field below carries a comment
 * with its default; docs/configuration.md has the same table (test/config checks they agree,
 * through FIELDS at the end of this file).
 *
 * Objects are strict: an unknown key is an error (with a "did you mean" hint), so a typo such
 * as `contol_port` never silently falls back to a default.
 *
 * Nested objects use `.prefault({})`, not `.default({})`: zod 4's `.default` returns the
 * default as is, without applying the inner fields' defaults.
 */
import { z } from 'zod';
import { parseIpAddress } from './address';
import { parsePortSpec } from './ports';

// ---------------------------------------------------------------------------------------
// Building blocks

const int = (min: number, max: number) => z.number().int().min(min).max(max);
const port = () => int(1, 65535);

/** An IPv4 or IPv6 literal (no host names, no zone ids, no IPv4-mapped IPv6 text). */
const ipAddress = () =>
  z.string().superRefine((s, ctx) => {
    const r = parseIpAddress(s);
    if (typeof r === 'string') {
      ctx.addIssue({
        code: 'custom',
        message: `"${s}" is not an IP address: ${r}`,
        params: { fix: 'write an IPv4 literal such as 10.99.0.10 or an IPv6 literal such as fd99::10' },
      });
    }
  });

/** `host:port` or `[v6]:port` with an IP literal host. */
export function splitListen(s: string): { host: string; port: number } | string {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:[\]]+):(\d{1,5})$/.exec(s);
  if (!m) return 'expected host:port or [ipv6]:port';
  const p = Number(m[2]);
  if (p < 1 || p > 65535) return `port ${p} is not 1..65535`;
  const a = parseIpAddress(m[1]!);
  if (typeof a === 'string') return `host "${m[1]}" is not an IP literal (${a})`;
  return { host: a.text, port: p };
}

const listenAddress = () =>
  z.string().superRefine((s, ctx) => {
    const r = splitListen(s);
    if (typeof r === 'string') {
      ctx.addIssue({
        code: 'custom',
        message: `"${s}": ${r}`,
        params: { fix: 'write e.g. "127.0.0.1:9180" or "[::1]:9180"' },
      });
    }
  });

/** A DNS host name (letters, digits, "-", "_", dots; 1..253 chars; no port, no IP literal). */
const hostName = () =>
  z
    .string()
    .regex(/^(?=.{1,253}$)(?!\d+(\.\d+){3}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/);

/** The raw `ports` value: "*" or a list of ports and "a-b" ranges (see ports.ts). */
export type RawPorts = '*' | (number | string)[];
const portSpec = () =>
  z.custom<RawPorts>().superRefine((v, ctx) => {
    const r = parsePortSpec(v);
    if (Array.isArray(r)) {
      for (const i of r) ctx.addIssue({ code: 'custom', message: i.message, path: i.at, params: { fix: i.fix } });
    }
  });

/** `vips[].affinity`: "none", "source" or "source/<prefix length>" (the range is the VIP family's: validate.ts). */
export const AFFINITY_RE = /^(none|source)(?:\/(\d{1,3}))?$/;
const affinitySpec = () =>
  z.string().superRefine((s, ctx) => {
    const m = AFFINITY_RE.exec(s);
    if (m === null || (m[1] === 'none' && m[2] !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: `"${s}" is not an affinity`,
        params: { fix: 'write none, source (the whole client address), or source/<prefix length> such as source/24 (IPv4) or source/64 (IPv6)' },
      });
    }
  });

export const PROTOCOLS = ['tcp', 'udp', 'icmp'] as const;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

// ---------------------------------------------------------------------------------------
// cluster

export const ReplicationSchema = z.strictObject({
  /** How flow records reach peers: `multicast` to `group`, or `unicast` to every balancer's address. Default multicast. */
  mode: z.enum(['multicast', 'unicast']).default('multicast'),
  /** Multicast group for control messages (records, probes) and, if multicast, data. Same family as the balancers. Default 239.99.0.1. */
  group: ipAddress().default('239.99.0.1'),
  /** UDP port for control messages (flow records, probes, bulk sync). Default 7946. */
  control_port: port().default(7946),
  /** UDP port for encapsulated packets forwarded between balancers. Default 7947. */
  data_port: port().default(7947),
  /** UDP port for liveness probes and acks only, kept apart from the control port so junk there cannot starve them. Default 7948. */
  probe_port: port().default(7948),
  /** IP TTL / hop limit of multicast datagrams (1 = stay on the local link). Default 1. */
  ttl: int(1, 255).default(1),
  /** Max time a flow record waits in the send batch before the datagram goes out (0 = send at once). Default 1 ms. */
  flush_ms: int(0, 1000).default(1),
  /** Interval at which live flow records are re-sent so a lost datagram heals. Default 30 s. */
  refresh_s: int(1, 3600).default(30),
  /**
   * Ignored (a warning says so): a packet count is no evidence against spoofed floods (the
   * backend's SYN-ACK counted too). Flows are replicated once CONFIRMED (docs/flow-records.md
   * "Confirmation and replication"). Still accepted so that existing files load.
   */
  sync_threshold: int(1, 65535).optional(),
});

export const ProbeSchema = z.strictObject({
  /** Interval between liveness probes to each peer. Default 100 ms. */
  interval_ms: int(10, 60_000).default(100),
  /** Consecutive missed probes after which a peer is dead. Failover ≈ interval_ms × misses. Default 3. */
  misses: int(1, 100).default(3),
});

export const ClusterSchema = z.strictObject({
  /** Cluster name (required); SHA-256-hashed to the 64-bit cluster id on the wire. */
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/),
  /** Path of a file holding ≥32 bytes of key, hex or raw; relative to the config file. Exactly one of key_file/key_env. */
  key_file: z.string().min(1).optional(),
  /** Name of an environment variable holding the key in hex (≥64 hex digits). Exactly one of key_file/key_env. */
  key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).optional(),
  /** Flow-record replication between balancers. */
  replication: ReplicationSchema.prefault({}),
  /** Peer liveness probes. */
  probe: ProbeSchema.prefault({}),
  /** Directory of this balancer's state kept across restarts (its last incarnation, `<id>.incarnation`); relative to the config file. Default /var/lib/tunlb. */
  state_dir: z.string().min(1).default('/var/lib/tunlb'),
});

// ---------------------------------------------------------------------------------------
// balancers

export const BalancerSchema = z.strictObject({
  /** Unique balancer id (required): lower-case letters, digits, '-', 1..63 chars. */
  id: z.string().regex(/^[a-z0-9-]{1,63}$/),
  /** IPv4 or IPv6 address (required) this balancer uses for control and data traffic. */
  address: ipAddress(),
  /** Override of cluster.replication.control_port for this balancer. Default: the cluster's. */
  control_port: port().optional(),
  /** Override of cluster.replication.data_port for this balancer. Default: the cluster's. */
  data_port: port().optional(),
  /** Override of cluster.replication.probe_port for this balancer. Default: the cluster's. */
  probe_port: port().optional(),
});

// ---------------------------------------------------------------------------------------
// tun

export const TunSchema = z.strictObject({
  /** TUN interface name (IFNAMSIZ-1 = 15 chars max). Default tunlb0. */
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,15}$/)
    .refine((s) => s !== '.' && s !== '..', { message: 'interface name may not be "." or ".."' })
    .default('tunlb0'),
  /** Device MTU, 576..65535 (≥1280 when any VIP is IPv6). Default 1500. */
  mtu: int(576, 65535).default(1500),
  /** Number of TUN queues (IFF_MULTI_QUEUE when > 1), 1..256. Default 1. */
  queues: int(1, 256).default(1),
  /** Try IFF_VNET_HDR + TUNSETOFFLOAD (TSO/checksum offload); fall back without. Default true. */
  offload: z.boolean().default(true),
  /** Packets per read/write batch, 1..1024. Default 64. */
  batch: int(1, 1024).default(64),
});

// ---------------------------------------------------------------------------------------
// vips

export const HealthSchema = z.strictObject({
  /** Check kind (required): tcp connect, http GET, or icmp echo. */
  type: z.enum(['tcp', 'http', 'icmp']),
  /** Port to check (tcp, http). Default: the backend's port, else the VIP's lowest port; required when both are unset or "*". Not allowed for icmp. */
  port: port().optional(),
  /** HTTP request path (http only). Default "/". */
  path: z.string().regex(/^\/[\x21-\x7e]*$/).optional(),
  /** Expected HTTP status (http only), 100..599. Default 200. */
  expect_status: int(100, 599).optional(),
  /** Interval between checks. Default 1000 ms. */
  interval_ms: int(10, 3_600_000).default(1000),
  /** Timeout of one check; must be ≤ interval_ms. Default 500 ms. */
  timeout_ms: int(1, 3_600_000).default(500),
  /** Consecutive successes before a down backend is up. Default 2. */
  rise: int(1, 100).default(2),
  /** Consecutive failures before an up backend is down. Default 3. */
  fall: int(1, 100).default(3),
});

export const BackendSchema = z.strictObject({
  /** Backend address (required), same family as the VIP. */
  address: ipAddress(),
  /** Rewrite every VIP port to this one (NAT only). Default: keep the destination port. */
  port: port().optional(),
  /** Relative weight, 0..65535; 0 = no new flows (drain), existing flows stay. Default 1. */
  weight: int(0, 65535).default(1),
  /** Health check. Default: none (the backend is always considered up). */
  health: HealthSchema.optional(),
});

export const VipSchema = z.strictObject({
  /** Unique VIP name (required): letters, digits, '.', '_', '-', 1..63 chars. */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/),
  /** VIP address (required), IPv4 or IPv6. */
  address: ipAddress(),
  /** Protocols forwarded: subset of tcp, udp, icmp (ICMPv6 for IPv6 VIPs). Default all three. */
  protocols: z
    .array(z.enum(PROTOCOLS))
    .min(1)
    .superRefine((ps, ctx) => {
      const seen = new Set<string>();
      ps.forEach((p, i) => {
        if (seen.has(p)) ctx.addIssue({ code: 'custom', message: `"${p}" is listed twice`, path: [i], params: { fix: 'list each protocol once' } });
        seen.add(p);
      });
    })
    .default(['tcp', 'udp', 'icmp']),
  /** Destination ports forwarded (tcp/udp): "*" or a list of ports and "a-b" ranges. Default "*". */
  ports: portSpec().default('*'),
  /** Forwarding method: nat (rewrite destination) or dsr (direct server return, layer 2). Default nat. */
  method: z.enum(['nat', 'dsr']).default('nat'),
  /**
   * How long a drained backend keeps its established flows, in seconds; when it passes, the
   * backend's remaining flows are cut as if it were down (TCP reset, UDP/ICMP moved).
   * 0 = never (flows stay until they end). Default 300.
   */
  drain_timeout_s: int(0, 604_800).default(300),
  /**
   * Source affinity (IPVS persistence, HAProxy `balance source`): `none`, or `source` /
   * `source/<prefix>`: a new flow's backend is chosen from the client address alone (masked
   * to the prefix: 1..32 for an IPv4 VIP, 1..128 for IPv6; default the whole address), the
   * same on every balancer, so all of a client's connections reach one backend; primary and
   * backup balancers are still ranked per flow. Default none.
   */
  affinity: affinitySpec().default('none'),
  /** Backends (required), 1..65535; numbered by position (u16, 0xffff = none). */
  backends: z.array(BackendSchema).min(1).max(65535),
});

// ---------------------------------------------------------------------------------------
// flow_table, admin, log

export const TimeoutsSchema = z.strictObject({
  /** Idle timeout of an established TCP flow. Default 300 s. */
  tcp_established_s: int(1, 604_800).default(300),
  /** Idle timeout of a TCP flow that has seen only SYN / SYN-ACK. Default 30 s. */
  tcp_syn_s: int(1, 604_800).default(30),
  /** Timeout after FIN seen (closing). Default 10 s. */
  tcp_closing_s: int(1, 604_800).default(10),
  /** Timeout after RST seen. Default 5 s. */
  tcp_reset_s: int(1, 604_800).default(5),
  /** Idle timeout of a UDP flow. Default 30 s. */
  udp_s: int(1, 604_800).default(30),
  /** Idle timeout of an ICMP echo flow. Default 10 s. */
  icmp_s: int(1, 604_800).default(10),
});

export const FlowTableSchema = z.strictObject({
  /** Flow table slots, 16..2^26; rounded UP to a power of two (with a warning). Default 1048576 (2^20). */
  capacity: int(16, 2 ** 26).default(1_048_576),
  /** Flow timeouts, in seconds. */
  timeouts: TimeoutsSchema.prefault({}),
});

export const AdminSchema = z.strictObject({
  /** Admin API listen address, IP literal and port. Default 127.0.0.1:9180. */
  listen: listenAddress().default('127.0.0.1:9180'),
  /**
   * File holding the admin API bearer token; relative to the config file; mode 0600 (refused when
   * group or others may read it). Required when `listen` is not a loopback address. Default: none.
   */
  token_file: z.string().min(1).optional(),
  /**
   * Host names under which browsers may reach the admin API (Host and Origin headers), besides IP
   * literals and `localhost`: e.g. the name of a reverse proxy. Anything else is refused (403),
   * which stops DNS rebinding. Default: none.
   */
  allowed_hosts: z.array(hostName()).max(64).default([]),
});

export const AnnounceSchema = z.strictObject({
  /**
   * Kernel routing table (1..4294967295, not 253 default, 254 main, 255 local) into which the
   * balancer writes one route `VIP dev <tun>` per VIP while it is ready to serve it (synced,
   * TUN up, not draining, event loop alive); a routing daemon (BIRD) learns that table and
   * announces the VIPs. Default: none (no announcement).
   */
  table: int(1, 4_294_967_295)
    .refine((t) => t < 253 || t > 255, { message: 'tables 253 (default), 254 (main) and 255 (local) are the kernel\'s own' })
    .optional(),
  /**
   * File the balancer keeps at "0" while it announces and "1" otherwise (e.g. for keepalived's
   * track_file); "{id}" is replaced by the balancer's id. Default: none.
   */
  ready_file: z.string().min(1).optional(),
  /**
   * Watchdog: a thread that withdraws the announcement when the event loop has not run for this
   * long (a wedged balancer stops receiving); 0 = off. Default: probe.interval_ms × misses.
   */
  watchdog_ms: int(0, 60_000).optional(),
  /**
   * Planned stop (SIGTERM): longest wait for every live peer to acknowledge that this balancer
   * is leaving before it exits anyway. Default 2000 ms.
   */
  leave_timeout_ms: int(0, 60_000).default(2000),
});

export const LogSchema = z.strictObject({
  /** Log level (pino): fatal, error, warn, info, debug, trace, silent. Default info. */
  level: z.enum(LOG_LEVELS).default('info'),
});

// ---------------------------------------------------------------------------------------
// the file

export const ConfigFileSchema = z.strictObject({
  /** Cluster identity, key, replication and probes (required). */
  cluster: ClusterSchema,
  /** The balancers of the cluster (required), 1..32; numbered by position. */
  balancers: z.array(BalancerSchema).min(1).max(32),
  /** TUN device. */
  tun: TunSchema.prefault({}),
  /** Virtual IPs and their backends, at most 32767 (a flow record's VIP index is 15 bits). Default: none (forwards nothing; warns). */
  vips: z.array(VipSchema).max(32767).default([]),
  /** Flow table sizing and timeouts. */
  flow_table: FlowTableSchema.prefault({}),
  /** Admin API. */
  admin: AdminSchema.prefault({}),
  /** VIP announcement to a routing daemon (ECMP entry), watchdog, planned stop. */
  announce: AnnounceSchema.prefault({}),
  /** Logging. */
  log: LogSchema.prefault({}),
});

export type ConfigFile = z.output<typeof ConfigFileSchema>;
export type ConfigFileInput = z.input<typeof ConfigFileSchema>;

// ---------------------------------------------------------------------------------------
// Field reference: expected value and default of every leaf, keyed by path with list indexes
// written `[]`. Used in error messages ("expected …") and kept equal to docs/configuration.md
// by test/config/docs.test.ts.

export interface FieldDoc {
  /** What a valid value looks like. */
  readonly expect: string;
  /** The default, as written in the docs ("required" when there is none). */
  readonly default: string;
}

export const FIELDS: Readonly<Record<string, FieldDoc>> = {
  'cluster.id': { expect: 'a name of 1..63 letters, digits, ".", "_", "-"', default: 'required' },
  'cluster.key_file': { expect: 'a file path', default: 'one of key_file/key_env required' },
  'cluster.key_env': { expect: 'an environment variable name', default: 'one of key_file/key_env required' },
  'cluster.replication.mode': { expect: 'multicast or unicast', default: 'multicast' },
  'cluster.replication.group': { expect: 'a multicast IP address', default: '239.99.0.1' },
  'cluster.replication.control_port': { expect: 'an integer port 1..65535', default: '7946' },
  'cluster.replication.data_port': { expect: 'an integer port 1..65535', default: '7947' },
  'cluster.replication.probe_port': { expect: 'an integer port 1..65535', default: '7948' },
  'cluster.replication.ttl': { expect: 'an integer 1..255', default: '1' },
  'cluster.replication.flush_ms': { expect: 'an integer 0..1000 (milliseconds)', default: '1' },
  'cluster.replication.refresh_s': { expect: 'an integer 1..3600 (seconds)', default: '30' },
  'cluster.replication.sync_threshold': { expect: 'an integer 1..65535 (packets); ignored', default: 'none (ignored)' },
  'cluster.probe.interval_ms': { expect: 'an integer 10..60000 (milliseconds)', default: '100' },
  'cluster.probe.misses': { expect: 'an integer 1..100', default: '3' },
  'cluster.state_dir': { expect: 'a directory path', default: '/var/lib/tunlb' },
  'balancers[].id': { expect: 'a unique id of 1..63 chars a-z, 0-9, "-"', default: 'required' },
  'balancers[].address': { expect: 'an IPv4 or IPv6 address', default: 'required' },
  'balancers[].control_port': { expect: 'an integer port 1..65535', default: 'cluster.replication.control_port' },
  'balancers[].data_port': { expect: 'an integer port 1..65535', default: 'cluster.replication.data_port' },
  'balancers[].probe_port': { expect: 'an integer port 1..65535', default: 'cluster.replication.probe_port' },
  'tun.name': { expect: 'an interface name of 1..15 chars A-Z, a-z, 0-9, "_", ".", "-"', default: 'tunlb0' },
  'tun.mtu': { expect: 'an integer 576..65535', default: '1500' },
  'tun.queues': { expect: 'an integer 1..256', default: '1' },
  'tun.offload': { expect: 'true or false', default: 'true' },
  'tun.batch': { expect: 'an integer 1..1024 (packets)', default: '64' },
  'vips[].name': { expect: 'a unique name of 1..63 letters, digits, ".", "_", "-"', default: 'required' },
  'vips[].address': { expect: 'an IPv4 or IPv6 address', default: 'required' },
  'vips[].protocols': { expect: 'a list of tcp, udp, icmp', default: '[tcp, udp, icmp]' },
  'vips[].ports': { expect: '"*" or a list of ports 1..65535 and "low-high" ranges', default: '"*"' },
  'vips[].method': { expect: 'nat or dsr', default: 'nat' },
  'vips[].drain_timeout_s': { expect: 'an integer 0..604800 (seconds; 0 = never)', default: '300' },
  'vips[].affinity': { expect: 'none, source, or source/<prefix length> (1..32 IPv4, 1..128 IPv6)', default: 'none' },
  'vips[].backends': { expect: 'a list of 1..65535 backends', default: 'required' },
  'vips[].backends[].address': { expect: "an IP address of the VIP's family", default: 'required' },
  'vips[].backends[].port': { expect: 'an integer port 1..65535', default: 'keep the destination port' },
  'vips[].backends[].weight': { expect: 'an integer 0..65535', default: '1' },
  'vips[].backends[].health': { expect: 'a health check mapping', default: 'none (always up)' },
  'vips[].backends[].health.type': { expect: 'tcp, http or icmp', default: 'required' },
  'vips[].backends[].health.port': { expect: 'an integer port 1..65535', default: "backend port, else the VIP's lowest port" },
  'vips[].backends[].health.path': { expect: 'an HTTP path starting with "/"', default: '"/" (http)' },
  'vips[].backends[].health.expect_status': { expect: 'an integer HTTP status 100..599', default: '200 (http)' },
  'vips[].backends[].health.interval_ms': { expect: 'an integer 10..3600000 (milliseconds)', default: '1000' },
  'vips[].backends[].health.timeout_ms': { expect: 'an integer 1..3600000 (milliseconds), ≤ interval_ms', default: '500' },
  'vips[].backends[].health.rise': { expect: 'an integer 1..100', default: '2' },
  'vips[].backends[].health.fall': { expect: 'an integer 1..100', default: '3' },
  'flow_table.capacity': { expect: 'an integer 16..67108864 (rounded up to a power of two)', default: '1048576' },
  'flow_table.timeouts.tcp_established_s': { expect: 'an integer 1..604800 (seconds)', default: '300' },
  'flow_table.timeouts.tcp_syn_s': { expect: 'an integer 1..604800 (seconds)', default: '30' },
  'flow_table.timeouts.tcp_closing_s': { expect: 'an integer 1..604800 (seconds)', default: '10' },
  'flow_table.timeouts.tcp_reset_s': { expect: 'an integer 1..604800 (seconds)', default: '5' },
  'flow_table.timeouts.udp_s': { expect: 'an integer 1..604800 (seconds)', default: '30' },
  'flow_table.timeouts.icmp_s': { expect: 'an integer 1..604800 (seconds)', default: '10' },
  'admin.listen': { expect: '"ip:port" or "[ipv6]:port"', default: '127.0.0.1:9180' },
  'admin.token_file': { expect: 'a file path (mode 0600)', default: 'none' },
  'admin.allowed_hosts': { expect: 'a list of host names (no port), e.g. [tunlb-admin.example.net]', default: '[]' },
  'announce.table': { expect: 'an integer 1..4294967295, not 253..255', default: 'none (no announcement)' },
  'announce.ready_file': { expect: 'a file path ("{id}" = the balancer id)', default: 'none' },
  'announce.watchdog_ms': { expect: 'an integer 0..60000 (milliseconds; 0 = off)', default: 'probe.interval_ms × misses' },
  'announce.leave_timeout_ms': { expect: 'an integer 0..60000 (milliseconds)', default: '2000' },
  'log.level': { expect: LOG_LEVELS.join(', '), default: 'info' },
  // Sections (mappings / lists) themselves, for "missing" and "wrong type" messages.
  cluster: { expect: 'a mapping with id and key_file or key_env', default: 'required' },
  'cluster.replication': { expect: 'a mapping', default: '{}' },
  'cluster.probe': { expect: 'a mapping', default: '{}' },
  balancers: { expect: 'a list of 1..32 balancers', default: 'required' },
  tun: { expect: 'a mapping', default: '{}' },
  vips: { expect: 'a list of at most 32767 VIPs', default: '[]' },
  flow_table: { expect: 'a mapping', default: '{}' },
  'flow_table.timeouts': { expect: 'a mapping', default: '{}' },
  admin: { expect: 'a mapping', default: '{}' },
  announce: { expect: 'a mapping', default: '{}' },
  log: { expect: 'a mapping', default: '{}' },
};
