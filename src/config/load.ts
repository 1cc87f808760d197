/**
 * Loading a configuration: read → parse (YAML or JSON) → schema → cross-field checks →
 * build the camelCase `Config`.
 *
 * Errors (all TunlbError, off the hot path, never containing key material):
 * - CONFIG_NOT_FOUND: the file does not exist / cannot be read.
 * - CONFIG_INVALID: syntax or validation errors; `details.errors` lists EVERY problem found as
 *   `ConfigIssue { path, message, fix, line?, column? }`, `details.source` names the file.
 * - CONFIG_KEY_MISSING: the file is valid but the cluster key cannot be loaded (missing, short,
 *   unreadable); same `details.errors` shape, plus `details.keySource`. When the file also has
 *   other errors, key problems are listed among them under CONFIG_INVALID.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { ErrorCodes, TunlbError } from '../errors';
import { ip, type IpAddress } from './address';
import { fromZodIssue, type PathKey } from './issues';
import { PortSet } from './ports';
import { AFFINITY_RE, ConfigFileSchema, splitListen, type ConfigFile } from './schema';
import type { KeySource, SecretKey } from './secret';
import type { BalancerConfig, ClusterWireId, Config, ConfigIssue, VipAffinity, VipConfig } from './types';
import { crossCheck } from './validate';

export interface ParseOptions {
  /** Environment for `cluster.key_env` (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** Directory relative key_file/token_file paths resolve against (default: the config file's directory, or cwd). */
  readonly baseDir?: string;
  /** Reads the key file (default fs.readFileSync); tests inject keys with it. */
  readonly readKeyFile?: (path: string) => Buffer;
  /** Reads admin.token_file (default: refuses group/other access, src/config/secret.ts); tests inject tokens with it. */
  readonly readTokenFile?: (path: string) => Buffer;
  /** Force the syntax instead of guessing from the name / content. */
  readonly format?: 'yaml' | 'json';
}

/** 64-bit wire id of a cluster name: first 8 bytes of SHA-256("tunlb cluster id v1\0" + id). */
export function clusterWireId(id: string): ClusterWireId {
  const h = createHash('sha256').update('tunlb cluster id v1\0').update(id, 'utf8').digest();
  return { hex: h.subarray(0, 8).toString('hex'), high: h.readUInt32BE(0), low: h.readUInt32BE(4) };
}

function invalid(source: string, issues: ConfigIssue[]): TunlbError {
  const summary = issues.map((i) => `${i.path || '(file)'}: ${i.message}`).join('; ');
  return new TunlbError(
    ErrorCodes.CONFIG_INVALID,
    `${source}: ${issues.length} configuration error${issues.length === 1 ? '' : 's'}: ${summary}`,
    { source, errors: issues },
  );
}

/** Parse text to plain data, with a locator from field path to line/column. */
function parseText(text: string, source: string, format: 'yaml' | 'json'): { data: unknown; locate: (p: readonly PathKey[]) => { line: number; column: number } | undefined } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const locate = (path: readonly PathKey[]) => {
    for (let n = path.length; n >= 0; n--) {
      const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
      const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
      if (range) {
        const pos = lc.linePos(range[0]);
        return { line: pos.line, column: pos.col };
      }
    }
    return undefined;
  };
  if (format === 'json') {
    try {
      return { data: JSON.parse(text) as unknown, locate };
    } catch (e) {
      throw invalid(source, [{ path: '', message: `not valid JSON: ${(e as Error).message}`, fix: 'correct the JSON syntax (or use YAML with a .yaml name)' }]);
    }
  }
  if (doc.errors.length > 0) {
    throw invalid(
      source,
      doc.errors.map((e) => {
        const pos = lc.linePos(e.pos[0]);
        return { path: '', message: `YAML syntax: ${e.message.split('\n')[0]}`, fix: 'correct the YAML at this position', line: pos.line, column: pos.col };
      }),
    );
  }
  return { data: doc.toJS({ maxAliasCount: 100 }) as unknown, locate };
}

/**
 * YAML writes a section whose fields are all commented out (`admin:` alone) as null; treat such
 * an optional section as absent, so its defaults apply. (Mutates the freshly parsed data.)
 */
const OPTIONAL_SECTIONS = [['tun'], ['vips'], ['flow_table'], ['admin'], ['announce'], ['log'], ['cluster', 'replication'], ['cluster', 'probe'], ['flow_table', 'timeouts']];
function dropEmptySections(data: Record<string, unknown>): void {
  for (const path of OPTIONAL_SECTIONS) {
    let parent: unknown = data;
    for (const k of path.slice(0, -1)) parent = parent !== null && typeof parent === 'object' ? (parent as Record<string, unknown>)[k] : undefined;
    if (parent === null || typeof parent !== 'object' || Array.isArray(parent)) continue;
    const last = path[path.length - 1]!;
    if ((parent as Record<string, unknown>)[last] === null) delete (parent as Record<string, unknown>)[last];
  }
}

function guessFormat(source: string, text: string): 'yaml' | 'json' {
  const ext = extname(source).toLowerCase();
  if (ext === '.json') return 'json';
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  return /^\s*[{[]/.test(text) ? 'json' : 'yaml';
}

/** Parse and validate configuration text. `sourceName` names it in messages (and picks YAML/JSON by extension). */
export function parseConfig(text: string, sourceName: string, opts: ParseOptions = {}): Config {
  const format = opts.format ?? guessFormat(sourceName, text);
  const { data, locate } = parseText(text, sourceName, format);
  if (data === null || data === undefined || typeof data !== 'object' || Array.isArray(data)) {
    throw invalid(sourceName, [{ path: '', message: `expected a mapping at the top level, got ${data === null || data === undefined ? 'an empty document' : Array.isArray(data) ? 'a list' : typeof data}`, fix: 'start from config/example.yaml' }]);
  }

  dropEmptySections(data as Record<string, unknown>);
  const parsed = ConfigFileSchema.safeParse(data, { reportInput: true });
  const issues: ConfigIssue[] = [];
  if (!parsed.success) {
    for (const iss of parsed.error.issues) {
      for (const ci of fromZodIssue(iss as Parameters<typeof fromZodIssue>[0], ConfigFileSchema)) issues.push(ci);
    }
  }
  const checked = crossCheck(data, {
    env: opts.env ?? process.env,
    baseDir: opts.baseDir ?? process.cwd(),
    ...(opts.readKeyFile ? { readKeyFile: opts.readKeyFile } : {}),
    ...(opts.readTokenFile ? { readTokenFile: opts.readTokenFile } : {}),
  });
  issues.push(...checked.issues);

  // Attach source positions.
  const positioned = issues.map((i) => {
    const pathArr: PathKey[] = [];
    for (const m of i.path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) pathArr.push(m[2] !== undefined ? Number(m[2]) : m[1]!);
    const pos = locate(pathArr);
    return pos ? { ...i, line: pos.line, column: pos.column } : i;
  });
  // Stable order: by position in the file, then path.
  positioned.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0) || a.path.localeCompare(b.path));

  if (positioned.length > 0) {
    if (checked.keyIssues.length === positioned.length) {
      const first = positioned[0]!;
      return failKey(sourceName, positioned, checked.keySource, first);
    }
    throw invalid(sourceName, positioned);
  }
  if (!parsed.success || !checked.key || !checked.keySource) {
    // Unreachable: a failed parse always yields issues; kept as a guard.
    throw invalid(sourceName, [{ path: 'cluster', message: 'configuration could not be validated', fix: 'report this as a bug' }]);
  }
  return build(parsed.data, sourceName, checked.key, checked.keySource, checked.ports, checked.warnings, opts.baseDir ?? process.cwd());
}

function failKey(source: string, issues: ConfigIssue[], keySource: KeySource | undefined, first: ConfigIssue): never {
  throw new TunlbError(ErrorCodes.CONFIG_KEY_MISSING, `${source}: ${first.path}: ${first.message} (fix: ${first.fix})`, {
    source,
    errors: issues,
    ...(keySource ? { keySource } : {}),
  });
}

/** Read and validate a configuration file (YAML, or JSON by `.json` extension or content). */
export function loadConfig(path: string, opts: ParseOptions = {}): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TunlbError(
      ErrorCodes.CONFIG_NOT_FOUND,
      code === 'ENOENT'
        ? `config file ${path} does not exist; pass the right path, or start from config/example.yaml`
        : `config file ${path} cannot be read (${code ?? 'error'}); check the path and permissions`,
      { path, ...(code ? { errno: code } : {}) },
      { cause: e },
    );
  }
  return parseConfig(text, path, { baseDir: dirname(resolve(path)), ...opts });
}

/** `vips[].affinity` (validated: schema.ts AFFINITY_RE, the prefix range in validate.ts). */
function parseAffinity(spec: string, family: 4 | 6): VipAffinity | null {
  const m = AFFINITY_RE.exec(spec);
  if (m === null || m[1] !== 'source') return null;
  return { by: 'source', prefixLen: m[2] === undefined ? (family === 4 ? 32 : 128) : Number(m[2]) };
}

const PROTO_NUMBERS = { tcp: [6, 6], udp: [17, 17], icmp: [1, 58] } as const;

function build(f: ConfigFile, source: string, key: SecretKey, keySource: KeySource, ports: (PortSet | undefined)[], warnings: string[], baseDir: string): Config {
  const rep = f.cluster.replication;
  const balancers: BalancerConfig[] = f.balancers.map((b, index) => ({
    index,
    id: b.id,
    address: ip(b.address),
    controlPort: b.control_port ?? rep.control_port,
    dataPort: b.data_port ?? rep.data_port,
    probePort: b.probe_port ?? rep.probe_port,
  }));
  const vips: VipConfig[] = f.vips.map((v, index) => {
    const address: IpAddress = ip(v.address);
    const portSet = ports[index]!;
    const protocolAllowed = new Uint8Array(256);
    for (const p of v.protocols) protocolAllowed[PROTO_NUMBERS[p][address.family === 4 ? 0 : 1]] = 1;
    const vip = {
      index,
      name: v.name,
      address,
      protocols: [...v.protocols],
      protocolAllowed,
      ports: portSet,
      method: v.method,
      drainTimeoutS: v.drain_timeout_s,
      affinity: parseAffinity(v.affinity, address.family),
      backends: v.backends.map((b, bi) => ({
        index: bi,
        address: ip(b.address),
        port: b.port ?? null,
        weight: b.weight,
        health: b.health
          ? {
              type: b.health.type,
              port: b.health.type === 'icmp' ? null : (b.health.port ?? b.port ?? portSet.first),
              path: b.health.type === 'http' ? (b.health.path ?? '/') : null,
              expectStatus: b.health.type === 'http' ? (b.health.expect_status ?? 200) : null,
              intervalMs: b.health.interval_ms,
              timeoutMs: b.health.timeout_ms,
              rise: b.health.rise,
              fall: b.health.fall,
            }
          : null,
      })),
    };
    // A lookup table, not data: keep it out of JSON dumps and util.inspect.
    Object.defineProperty(vip, 'protocolAllowed', { enumerable: false });
    return vip;
  });
  const t = f.flow_table.timeouts;
  const listen = splitListen(f.admin.listen);
  if (typeof listen === 'string') throw new Error('unreachable: admin.listen validated');
  return {
    source,
    cluster: {
      id: f.cluster.id,
      wireId: clusterWireId(f.cluster.id),
      key,
      keySource,
      replication: {
        mode: rep.mode,
        group: ip(rep.group),
        controlPort: rep.control_port,
        dataPort: rep.data_port,
        probePort: rep.probe_port,
        ttl: rep.ttl,
        flushMs: rep.flush_ms,
        refreshS: rep.refresh_s,
      },
      probe: { intervalMs: f.cluster.probe.interval_ms, misses: f.cluster.probe.misses },
      stateDir: resolve(baseDir, f.cluster.state_dir),
    },
    balancers,
    tun: { ...f.tun },
    vips,
    flowTable: {
      capacity: 2 ** Math.ceil(Math.log2(f.flow_table.capacity)),
      requestedCapacity: f.flow_table.capacity,
      timeouts: {
        tcpEstablishedS: t.tcp_established_s,
        tcpSynS: t.tcp_syn_s,
        tcpClosingS: t.tcp_closing_s,
        tcpResetS: t.tcp_reset_s,
        udpS: t.udp_s,
        icmpS: t.icmp_s,
      },
    },
    admin: {
      listen: { host: listen.host, port: listen.port, address: ip(listen.host) },
      tokenFile: f.admin.token_file === undefined ? null : resolve(baseDir, f.admin.token_file),
      allowedHosts: f.admin.allowed_hosts.map((h) => h.toLowerCase().replace(/\.$/, '')),
    },
    announce: {
      table: f.announce.table ?? null,
      // "{id}" is the selecting balancer's id: kept here, replaced by the balancer (one file per balancer).
      readyFile: f.announce.ready_file === undefined ? null : resolve(baseDir, f.announce.ready_file),
      watchdogMs: f.announce.watchdog_ms ?? f.cluster.probe.interval_ms * f.cluster.probe.misses,
      leaveTimeoutMs: f.announce.leave_timeout_ms,
    },
    log: { level: f.log.level },
    warnings,
  };
}

/** This balancer's entry: `id` must be one of `config.balancers[].id`. */
export function selectSelf(config: Config, id: string): { index: number; balancer: BalancerConfig } {
  const balancer = config.balancers.find((b) => b.id === id);
  if (!balancer) {
    const known = config.balancers.map((b) => b.id);
    throw new TunlbError(
      ErrorCodes.CONFIG_INVALID,
      `balancer id "${id}" is not in ${config.source} (known: ${known.join(', ')}); pass one of these ids, or add "${id}" to balancers`,
      { source: config.source, id, known, errors: [{ path: 'balancers', message: `no balancer with id "${id}"`, fix: `use one of ${known.join(', ')}` }] },
    );
  }
  return { index: balancer.index, balancer };
}

