/**
 * Cross-field checks: everything that needs more than one field (uniqueness, address
 * families, key loading, defaults that depend on other fields).
 *
 * They run even when some fields failed the schema, on whatever parts did parse ("salvage"),
 * so one run reports every error it can find rather than one layer at a time.
 */
import { z } from 'zod';
import { resolve } from 'node:path';
import { parseIpAddress, type IpAddress } from './address';
import { parsePortSpec, PortSet } from './ports';
import { loadKeyEnv, loadKeyFile, loadTokenFile, type KeySource, type SecretKey } from './secret';
import {
  AFFINITY_RE,
  AdminSchema,
  BackendSchema,
  BalancerSchema,
  ClusterSchema,
  FlowTableSchema,
  ReplicationSchema,
  TimeoutsSchema,
  TunSchema,
  VipSchema,
} from './schema';
import type { ConfigIssue } from './types';

type Balancer = Partial<z.output<typeof BalancerSchema>>;
type Backend = Partial<z.output<typeof BackendSchema>>;
type VipHeader = Partial<z.output<typeof VipSchema>>;

/**
 * Parse each field of an object on its own: the fields that are valid, even when siblings are
 * not (so `balancers[0].id` still counts for uniqueness when `balancers[0].address` is bad).
 */
function fields<S extends z.ZodObject>(schema: S, v: unknown): Partial<z.output<S>> {
  const raw = obj(v);
  const out: Record<string, unknown> = {};
  for (const [k, fs] of Object.entries(schema.shape)) {
    const r = (fs as z.ZodType).safeParse(raw[k]);
    if (r.success && r.data !== undefined) out[k] = r.data;
  }
  return out as Partial<z.output<S>>;
}

export interface CheckOptions {
  readonly env: NodeJS.ProcessEnv;
  /** Directory relative key_file / token_file paths are resolved against. */
  readonly baseDir: string;
  readonly readKeyFile?: (path: string) => Buffer;
  /** Reads admin.token_file (default: readSecretFile, which refuses group/other access). */
  readonly readTokenFile?: (path: string) => Buffer;
}

export interface CheckResult {
  readonly issues: ConfigIssue[];
  /** Subset of `issues` about the cluster key (missing / short / unreadable). */
  readonly keyIssues: ConfigIssue[];
  readonly warnings: string[];
  readonly key?: SecretKey;
  readonly keySource?: KeySource;
  /** Parsed VIP port sets, by VIP index (only for VIPs whose ports parsed). */
  readonly ports: (PortSet | undefined)[];
}

function addr(s: string | undefined): IpAddress | undefined {
  if (s === undefined) return undefined;
  const r = parseIpAddress(s);
  return typeof r === 'string' ? undefined : r;
}

const obj = (v: unknown): Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

export function crossCheck(raw: unknown, opts: CheckOptions): CheckResult {
  const issues: ConfigIssue[] = [];
  const keyIssues: ConfigIssue[] = [];
  const warnings: string[] = [];
  const add = (path: string, message: string, fix: string) => issues.push({ path, message, fix });
  const root = obj(raw);

  // --- salvage whatever parses --------------------------------------------------------
  const rawCluster = obj(root['cluster']);
  const cluster = fields(ClusterSchema, rawCluster);
  const rep = fields(ReplicationSchema, rawCluster['replication']);
  const balancers: Balancer[] = list(root['balancers']).map((b) => fields(BalancerSchema, b));
  const tun = fields(TunSchema, root['tun']);
  const capacity = fields(FlowTableSchema, root['flow_table']).capacity;
  const timeouts = fields(TimeoutsSchema, obj(root['flow_table'])['timeouts']);
  const admin = fields(AdminSchema, root['admin']);
  const vips: { vip: VipHeader; backends: Backend[] }[] = list(root['vips']).map((v) => ({
    vip: fields(VipSchema, v),
    backends: list(obj(v)['backends']).map((b) => fields(BackendSchema, b)),
  }));
  const ports = vips.map(({ vip }) => {
    if (vip.ports === undefined) return undefined;
    const p = parsePortSpec(vip.ports);
    return p instanceof PortSet ? p : undefined;
  });

  // --- cluster key ----------------------------------------------------------------------
  let key: SecretKey | undefined;
  let keySource: KeySource | undefined;
  const clusterIsMap = root['cluster'] !== null && typeof root['cluster'] === 'object' && !Array.isArray(root['cluster']);
  const hasFile = typeof rawCluster['key_file'] === 'string';
  const hasEnv = typeof rawCluster['key_env'] === 'string';
  if (clusterIsMap && hasFile && hasEnv) {
    add('cluster', 'both key_file and key_env are set', 'keep exactly one of cluster.key_file, cluster.key_env');
  } else if (clusterIsMap && !hasFile && !hasEnv && !('key_file' in rawCluster) && !('key_env' in rawCluster)) {
    add('cluster', 'no cluster key: neither key_file nor key_env is set', 'add cluster.key_file: /path/to/cluster.key (≥32 bytes, e.g. head -c 32 /dev/urandom > FILE) or cluster.key_env: VAR');
  } else if (cluster?.key_file !== undefined && cluster.key_env === undefined) {
    const path = resolve(opts.baseDir, cluster.key_file);
    keySource = { kind: 'file', path };
    const r = loadKeyFile(path, opts.readKeyFile);
    if (r.ok) key = r.key;
    else keyIssues.push({ path: 'cluster.key_file', message: r.message, fix: r.fix });
  } else if (cluster?.key_env !== undefined && cluster.key_file === undefined) {
    keySource = { kind: 'env', name: cluster.key_env };
    const r = loadKeyEnv(cluster.key_env, opts.env);
    if (r.ok) key = r.key;
    else keyIssues.push({ path: 'cluster.key_env', message: r.message, fix: r.fix });
  }

  // --- balancers --------------------------------------------------------------------------
  const balAddr = balancers.map((b) => addr(b?.address));
  const firstFamily = balAddr.find((a) => a !== undefined)?.family;
  const idSeen = new Map<string, number>();
  const addrSeen = new Map<string, number>();
  balancers.forEach((b, i) => {
    if (b.id !== undefined) {
      const prev = idSeen.get(b.id);
      if (prev !== undefined) add(`balancers[${i}].id`, `duplicate balancer id "${b.id}" (also balancers[${prev}].id)`, 'give every balancer a unique id');
      else idSeen.set(b.id, i);
    }
    const cp = b.control_port ?? rep.control_port;
    const dp = b.data_port ?? rep.data_port;
    const pp = b.probe_port ?? rep.probe_port;
    if (cp !== undefined && cp === dp) add(`balancers[${i}].data_port`, `data port ${dp} equals the control port`, 'use different control and data ports');
    if (pp !== undefined && (pp === cp || pp === dp)) {
      add(`balancers[${i}].probe_port`, `probe port ${pp} equals the ${pp === cp ? 'control' : 'data'} port`, 'use a probe port of its own (default 7948)');
    }
    const a = balAddr[i];
    if (!a) return;
    const prevA = addrSeen.get(a.text);
    if (prevA !== undefined) add(`balancers[${i}].address`, `duplicate balancer address ${a.text} (also balancers[${prevA}].address)`, 'give every balancer its own address');
    else addrSeen.set(a.text, i);
    if (a.family !== firstFamily) {
      add(`balancers[${i}].address`, `${a.text} is IPv${a.family} but the first balancer is IPv${firstFamily}; all balancers must use one family`, `use an IPv${firstFamily} address for every balancer`);
    }
    if (a.isMulticast || a.isUnspecified) add(`balancers[${i}].address`, `${a.text} is a ${a.isMulticast ? 'multicast' : 'unspecified'} address, not a host address`, "use the balancer's own unicast address");
  });

  // --- replication ----------------------------------------------------------------------
  const g = addr(rep.group);
  if (g && rep.mode === 'multicast') {
    if (!g.isMulticast) add('cluster.replication.group', `${g.text} is not a multicast address`, 'use a group in 239.0.0.0/8 (IPv4) or ff15::/16 (IPv6), e.g. 239.99.0.1');
    else if (firstFamily !== undefined && g.family !== firstFamily) {
      add('cluster.replication.group', `group ${g.text} is IPv${g.family} but the balancers are IPv${firstFamily}`, firstFamily === 6 ? 'set an IPv6 group, e.g. ff15::99:1' : 'set an IPv4 group, e.g. 239.99.0.1');
    }
  }
  if (rep.control_port !== undefined && rep.control_port === rep.data_port) add('cluster.replication.data_port', `data port ${rep.data_port} equals the control port`, 'use different ports (defaults 7946 and 7947)');
  if (rep.probe_port !== undefined && (rep.probe_port === rep.control_port || rep.probe_port === rep.data_port)) {
    add('cluster.replication.probe_port', `probe port ${rep.probe_port} equals the ${rep.probe_port === rep.control_port ? 'control' : 'data'} port`, 'use different ports (defaults 7946, 7947 and 7948)');
  }
  if (rep.refresh_s !== undefined && timeouts.tcp_established_s !== undefined && rep.refresh_s >= timeouts.tcp_established_s) {
    add('cluster.replication.refresh_s', `refresh_s ${rep.refresh_s} is not below flow_table.timeouts.tcp_established_s ${timeouts.tcp_established_s}: peers' copies would expire before being refreshed`, 'lower refresh_s or raise tcp_established_s');
  }
  if (rep.sync_threshold !== undefined) {
    warnings.push('cluster.replication.sync_threshold is ignored: flows are replicated once confirmed (docs/flow-records.md "Confirmation and replication"); remove it');
  }
  if (rep.refresh_s !== undefined && timeouts.udp_s !== undefined && rep.refresh_s > timeouts.udp_s) {
    warnings.push(`cluster.replication.refresh_s (${rep.refresh_s}) > flow_table.timeouts.udp_s (${timeouts.udp_s}): peers' copies of long UDP flows may expire between refreshes`);
  }

  // --- vips and backends --------------------------------------------------------------------
  const nameSeen = new Map<string, number>();
  const vipAddr = vips.map(({ vip }) => addr(vip?.address));
  const allBackendAddrs = new Map<string, string>();
  vips.forEach(({ backends }, i) =>
    backends.forEach((b, j) => {
      const a = addr(b?.address);
      if (a && !allBackendAddrs.has(a.text)) allBackendAddrs.set(a.text, `vips[${i}].backends[${j}]`);
    }),
  );
  let anyV6 = firstFamily === 6;
  vips.forEach(({ vip, backends }, i) => {
    const va = vipAddr[i];
    if (vip.name !== undefined) {
      const prev = nameSeen.get(vip.name);
      if (prev !== undefined) add(`vips[${i}].name`, `duplicate VIP name "${vip.name}" (also vips[${prev}].name)`, 'give every VIP a unique name');
      else nameSeen.set(vip.name, i);
    }
    if (va) {
      if (va.family === 6) anyV6 = true;
      if (va.isMulticast || va.isUnspecified) add(`vips[${i}].address`, `${va.text} is a ${va.isMulticast ? 'multicast' : 'unspecified'} address`, 'use a unicast address for the VIP');
      const bi = balAddr.findIndex((b) => b?.equals(va));
      if (bi !== -1) add(`vips[${i}].address`, `VIP address ${va.text} is also balancers[${bi}].address`, 'use an address of its own for the VIP');
      const be = allBackendAddrs.get(va.text);
      if (be) add(`vips[${i}].address`, `VIP address ${va.text} is also ${be}.address`, 'a VIP cannot be its own backend; use different addresses');
      // Same address twice: allowed only when (protocol, port) never overlap.
      for (let k = 0; k < i; k++) {
        const other = vips[k]!.vip;
        if (!vipAddr[k]?.equals(va) || !vip.protocols || !other.protocols) continue;
        const protos = vip.protocols.filter((p) => other.protocols!.includes(p));
        const pi = ports[i];
        const pk = ports[k];
        const clash = protos.includes('icmp') || (protos.length > 0 && pi && pk && pi.intersects(pk));
        if (clash) {
          add(`vips[${i}].address`, `VIP address ${va.text} with protocols ${protos.join('/')} overlaps vips[${k}] ("${other.name}")`, 'use another address, or make the two VIPs\' protocols or ports disjoint (icmp may be on only one)');
        }
      }
    }
    if (va && vip.affinity !== undefined) {
      const m = AFFINITY_RE.exec(vip.affinity);
      const max = va.family === 4 ? 32 : 128;
      const len = m?.[2] === undefined ? undefined : Number(m[2]);
      if (len !== undefined && (len < 1 || len > max)) {
        add(
          `vips[${i}].affinity`,
          `prefix /${len} does not fit an IPv${va.family} VIP (${va.text}): the client address has ${max} bits`,
          `use source/1 .. source/${max} (e.g. source/${va.family === 4 ? 24 : 64}), or source for the whole address`,
        );
      }
    }
    const bSeen = new Map<string, number>();
    let weightSum = 0;
    let allWeights = true;
    backends.forEach((b, j) => {
      const p = `vips[${i}].backends[${j}]`;
      if (b.weight === undefined) allWeights = false;
      else weightSum += b.weight;
      const ba = addr(b.address);
      if (ba) {
        if (va && ba.family !== va.family) {
          add(`${p}.address`, `IPv${ba.family} backend ${ba.text} in IPv${va.family} VIP ${vip.name !== undefined ? `"${vip.name}" ` : ''}(${va.text}); a backend must be the same family as its VIP`, `use an IPv${va.family} backend address, or move it to an IPv${ba.family} VIP`);
        }
        const prevB = bSeen.get(ba.text);
        if (prevB !== undefined) add(`${p}.address`, `duplicate backend ${ba.text} (also vips[${i}].backends[${prevB}].address)`, 'list each backend once; use weight to give it more traffic');
        else bSeen.set(ba.text, j);
        if (ba.isMulticast || ba.isUnspecified) add(`${p}.address`, `${ba.text} is a ${ba.isMulticast ? 'multicast' : 'unspecified'} address`, "use the server's unicast address");
        const bi = balAddr.findIndex((x) => x?.equals(ba));
        if (bi !== -1) add(`${p}.address`, `backend ${ba.text} is also balancers[${bi}].address`, 'a balancer cannot be a backend; use the server address');
      }
      if (b.port !== undefined && vip.method === 'dsr') {
        add(`${p}.port`, 'port rewriting is impossible with method dsr (the packet reaches the backend unchanged)', `remove ${p}.port, or set vips[${i}].method: nat`);
      }
      const h = b.health;
      if (h) {
        const hp = `${p}.health`;
        if (h.type === 'icmp' && h.port !== undefined) add(`${hp}.port`, 'an icmp check has no port', `remove ${hp}.port`);
        if (h.type !== 'http' && h.path !== undefined) add(`${hp}.path`, `path applies to http checks only (type is ${h.type})`, `remove ${hp}.path or set type: http`);
        if (h.type !== 'http' && h.expect_status !== undefined) add(`${hp}.expect_status`, `expect_status applies to http checks only (type is ${h.type})`, `remove ${hp}.expect_status or set type: http`);
        if (h.timeout_ms > h.interval_ms) add(`${hp}.timeout_ms`, `timeout_ms ${h.timeout_ms} is longer than interval_ms ${h.interval_ms}`, `set timeout_ms ≤ interval_ms`);
        if (h.type !== 'icmp' && h.port === undefined && b.port === undefined && ports[i]?.all) {
          add(`${hp}.port`, `missing: the VIP forwards all ports and the backend has no port, so the ${h.type} check has no port to use`, `add ${hp}.port (e.g. 80)`);
        }
      }
    });
    if (allWeights && backends.length > 0 && weightSum === 0) {
      warnings.push(`vips[${i}] ("${vip.name}"): every backend has weight 0, so the VIP takes no new flows`);
    }
  });

  // --- tun, flow table, admin --------------------------------------------------------------
  if (tun.mtu !== undefined && anyV6 && tun.mtu < 1280) add('tun.mtu', `mtu ${tun.mtu} is below 1280, the IPv6 minimum (RFC 8200 §5), and the config uses IPv6`, 'set tun.mtu to 1280 or more');
  if (capacity !== undefined) {
    const p2 = 2 ** Math.ceil(Math.log2(capacity));
    if (p2 !== capacity) warnings.push(`flow_table.capacity ${capacity} rounded up to ${p2} (a power of two)`);
  }
  const rawAdmin = obj(root['admin']);
  if (typeof rawAdmin['token_file'] === 'string' && rawAdmin['token_file'] !== '') {
    const r = loadTokenFile(resolve(opts.baseDir, rawAdmin['token_file']), opts.readTokenFile);
    if (!r.ok) add('admin.token_file', r.message, r.fix);
  }
  if (admin.listen !== undefined) {
    const l = admin.listen.includes(']') ? admin.listen.slice(1, admin.listen.indexOf(']')) : admin.listen.slice(0, admin.listen.lastIndexOf(':'));
    const la = addr(l);
    if (la && !la.isLoopback && !('token_file' in rawAdmin)) {
      add(
        'admin.listen',
        `${admin.listen} is not a loopback address and admin.token_file is not set: the admin API (drain, reload, flows) would be open to the network`,
        "set admin.token_file to a file with a bearer token ((umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /etc/tunlb/admin.token)), or listen on 127.0.0.1 or [::1]",
      );
    }
  }
  if ('vips' in root && Array.isArray(root['vips']) && root['vips'].length === 0) warnings.push('vips is empty: this cluster forwards nothing');
  if (!('vips' in root)) warnings.push('no vips configured: this cluster forwards nothing');

  issues.push(...keyIssues);
  return { issues, keyIssues, warnings, ...(key ? { key } : {}), ...(keySource ? { keySource } : {}), ports };
}
