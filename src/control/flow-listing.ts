/**
 * Flow records as JSON rows (admin endpoint GET /api/v1/flows, `tunlb flows`): key, VIP,
 * primary, backup, backend, state, packets, age, idle time, confirmed; with filters.
 *
 * Control plane only: walks the flow table with its chunked scan (src/flow/table.ts), allocates
 * per listed row, never touches the packet path. `FlowScan` is a listing in steps (the admin
 * endpoint runs it in time slices and streams the rows); `listFlows` runs one to the end. Both
 * are functions of a FlowSource (a Balancer is one; tests pass a FlowTable and a parsed config)
 * and a FlowQuery, so they can be tested without a device or a socket.
 *
 * Filters (AND across filters; a comma list inside one filter is an OR), by query parameter /
 * CLI flag:
 *   vip=NAME|ADDRESS         the flow's VIP (name, or its address in any spelling)
 *   backend=ADDRESS          the flow's backend address, any spelling (10.99.3.21, fd99:3:0::21,
 *                            FD99:3::21, ::ffff:10.99.3.21 for an IPv4 backend)
 *   client=ADDR[/LEN]|ADDR:PORT|[V6]:PORT   the client (source) address of the flow, a prefix,
 *                            or an address and source port
 *   proto=tcp|udp|icmp|icmpv6 (icmp matches ICMP and ICMPv6 echo flows; a number: any protocol)
 *   primary=ID, backup=ID    the balancer ids of the flow's record
 *   state=NAME               flow states of the flow table (src/flow/timeouts.ts FlowState):
 *                            tcp_syn_seen, tcp_established, tcp_closing, tcp_closed, udp, icmp,
 *                            other ("tcp_" may be left out, "-" for "_", any case)
 *   min-age=S                flows created at least S seconds ago
 *   max-idle=S               flows that saw a packet in the last S seconds
 *   limit=N                  at most N rows (matching rows count toward it)
 *
 * The scan stops once one more matching flow than the limit is found: `truncated` is then true
 * (more flows match than were listed). `scanned` is how many flows the scan examined, `matched`
 * how many of those matched (when truncated, limit + 1: at least that many match), `total` the
 * flows in the table. A value that cannot be a filter (unknown VIP, backend or balancer id,
 * bad address, state, protocol or number) throws TunlbError(USAGE) with one line.
 */
import type { Config } from '../config';
import { TunlbError, ErrorCodes } from '../errors';
import { FlowState, VIP_REMOVED, type FlowTable } from '../flow';
import { formatIp, parseIpInto } from '../packet/addr';
import { keyToString } from '../packet/flow-key';
import { NO_BACKEND } from '../decision/backend-table';

export interface FlowRow {
  key: string;
  vip: string;
  primary: string;
  backup: string;
  backend: string;
  /** FlowState value (src/flow/timeouts.ts). */
  state: number;
  /** The state's name as the `state` filter takes it (tcp_established, udp, ...). */
  stateName: string;
  packets: number;
  ageS: number;
  idleS: number;
  /** Confirmed (docs/flow-records.md "Confirmation and replication"): replicated, never early-dropped. */
  confirmed: boolean;
}

export interface FlowListing {
  /** Flows in the table. */
  total: number;
  /** Flows the scan examined (all of them unless truncated). */
  scanned: number;
  /** Matching flows found by the scan (when truncated: limit + 1, at least that many match). */
  matched: number;
  /** More flows match than are listed. */
  truncated: boolean;
  limit: number;
  /** The filters applied, normalised (empty when none). */
  filters: Record<string, string>;
  /** Set when the listing ended early for another reason than the limit (then `truncated`). */
  interrupted?: string;
  flows: FlowRow[];
}

/** What listFlows reads: a Balancer fits; tests pass a FlowTable and a parsed config. */
export interface FlowSource {
  readonly table: FlowTable;
  /** The live forwarding config (VIPs and backends change on reload). */
  readonly forwarder: { readonly forwarding: { readonly config: Pick<Config, 'vips'> } };
  /** Balancers (fixed for the life of the process). */
  readonly config: Pick<Config, 'balancers'>;
  nowSec(): number;
}

/** The filters, as query parameters / CLI flags give them (text; undefined = not set). */
export interface FlowFilterText {
  vip?: string;
  backend?: string;
  client?: string;
  proto?: string;
  primary?: string;
  backup?: string;
  state?: string;
  'min-age'?: string;
  'max-idle'?: string;
}

/** Query parameter names of GET /api/v1/flows (= `tunlb flows` flag names without "--"). */
export const FLOW_QUERY_PARAMS = ['limit', 'vip', 'backend', 'client', 'proto', 'primary', 'backup', 'state', 'min-age', 'max-idle'] as const;
export const DEFAULT_FLOW_LIMIT = 1000;
export const MAX_FLOW_LIMIT = 100000;

/** FlowState values by the name the `state` filter takes (lower case). */
export const FLOW_STATE_NAMES: Readonly<Record<string, number>> = Object.freeze(
  Object.fromEntries(Object.entries(FlowState).filter(([k]) => k !== 'FREE').map(([k, v]) => [k.toLowerCase(), v])),
);
const STATE_BY_VALUE: string[] = [];
for (const [k, v] of Object.entries(FLOW_STATE_NAMES)) STATE_BY_VALUE[v] = k;

export function stateName(state: number): string {
  return STATE_BY_VALUE[state] ?? `state${state}`;
}

/** A compiled filter: sets of table values, checked per scanned flow. */
export interface FlowQuery {
  limit: number;
  /** VIP indexes in the forwarding config. */
  vips?: Set<number>;
  /** (vip index << 16) | backend index of the matching backends. */
  backends?: Set<number>;
  client?: { bytes: Uint8Array; prefixBits: number; port: number | null };
  protos?: Set<number>;
  primaries?: Set<number>;
  backups?: Set<number>;
  states?: Set<number>;
  minAgeS?: number;
  maxIdleS?: number;
  /** Normalised text of each filter, echoed in the listing. */
  text: Record<string, string>;
}

function usage(message: string): TunlbError {
  return new TunlbError(ErrorCodes.USAGE, message);
}

function list(name: string, v: string): string[] {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) throw usage(`flows filter ${name}: empty value in "${v}"`);
  return parts;
}

/**
 * 16 bytes (IPv4 as ::ffff:a.b.c.d, the flow key's form) of an address in any spelling, or
 * undefined. IPv4-mapped IPv6 text is the IPv4 address; IPv6 in any case and compression.
 */
export function addressBytes(text: string): Uint8Array | undefined {
  const t = text.trim();
  const out = new Uint8Array(16);
  const tmp = new Uint8Array(16);
  const n = parseIpInto(t, tmp, 0);
  if (n === 4) {
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(tmp.subarray(0, 4), 12);
    return out;
  }
  if (n === 16) {
    out.set(tmp);
    return out;
  }
  return undefined;
}

function addrText(b: Uint8Array): string {
  let v4 = b[10] === 0xff && b[11] === 0xff;
  for (let i = 0; i < 10 && v4; i++) if (b[i] !== 0) v4 = false;
  return v4 ? formatIp(b, 12, 4) : formatIp(b, 0, 16);
}

function isV4(b: Uint8Array): boolean {
  return addrText(b).indexOf(':') < 0;
}

function seconds(name: string, v: string): number {
  const t = v.trim();
  const n = Number(t);
  if (t === '' || !Number.isFinite(n) || n < 0) throw usage(`flows filter ${name}: "${v}" is not a number of seconds >= 0`);
  return n;
}

/** Parses a limit: a positive integer, at most MAX_FLOW_LIMIT. */
export function parseFlowLimit(v: string): number {
  const t = v.trim();
  const n = Number(t);
  if (!/^\d+$/.test(t) || n < 1 || n > MAX_FLOW_LIMIT) throw usage(`flows limit: "${v}" is not a whole number in 1..${MAX_FLOW_LIMIT}`);
  return n;
}

type ClientFilter = NonNullable<FlowQuery['client']>;

function parseClient(v: string): ClientFilter & { text: string } {
  const t = v.trim();
  let addr = t;
  let port: number | null = null;
  let prefix: number | null = null;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  const v4port = /^([0-9.]+):(\d+)$/.exec(t);
  const slash = /^([^/]+)\/(\d+)$/.exec(t);
  if (bracket) {
    addr = bracket[1]!;
    if (bracket[2] !== undefined) port = Number(bracket[2]);
  } else if (v4port) {
    addr = v4port[1]!;
    port = Number(v4port[2]);
  } else if (slash) {
    addr = slash[1]!;
    prefix = Number(slash[2]);
  }
  const bytes = addressBytes(addr);
  const bad = `flows filter client: "${v}" is not ADDRESS, ADDRESS/PREFIX, ADDRESS:PORT or [IPv6]:PORT`;
  if (bytes === undefined) throw usage(bad);
  if (port !== null && (port < 0 || port > 65535)) throw usage(`flows filter client: port ${port} is not in 0..65535`);
  const v4 = isV4(bytes);
  if (prefix !== null && (prefix > (v4 ? 32 : 128))) throw usage(`flows filter client: prefix /${prefix} is longer than ${v4 ? 32 : 128} bits`);
  const prefixBits = prefix === null ? 128 : v4 ? 96 + prefix : prefix;
  const txt = `${v4 || port === null ? addrText(bytes) : `[${addrText(bytes)}]`}${prefix !== null ? `/${prefix}` : ''}${port !== null ? `:${port}` : ''}`;
  return { bytes, prefixBits, port, text: txt };
}

const PROTOS: Record<string, number[]> = { tcp: [6], udp: [17], icmp: [1, 58], icmpv6: [58], icmp6: [58] };

/**
 * Compiles the text filters against a source's VIPs, backends and balancers. Throws
 * TunlbError(USAGE) with one line for a value that cannot be a filter.
 */
export function compileFlowQuery(src: Pick<FlowSource, 'forwarder' | 'config'>, f: FlowFilterText, limit = DEFAULT_FLOW_LIMIT): FlowQuery {
  const q: FlowQuery = { limit, text: {} };
  const vips = src.forwarder.forwarding.config.vips;
  const balancers = src.config.balancers;
  if (f.vip !== undefined) {
    q.vips = new Set();
    for (const name of list('vip', f.vip)) {
      let v = vips.find((x) => x.name === name);
      if (v === undefined) {
        const b = addressBytes(name);
        if (b !== undefined) v = vips.find((x) => x.address.bytes.every((y, i) => y === b[i]));
      }
      if (v === undefined) throw usage(`flows filter vip: no VIP "${name}" (VIPs: ${vips.map((x) => `${x.name} ${x.address.text}`).join(', ') || 'none'})`);
      q.vips.add(v.index);
    }
    q.text['vip'] = [...q.vips].map((i) => vips[i]!.name).join(',');
  }
  if (f.backend !== undefined) {
    q.backends = new Set();
    const names: string[] = [];
    for (const a of list('backend', f.backend)) {
      const b = addressBytes(a);
      if (b === undefined) throw usage(`flows filter backend: "${a}" is not an IPv4 or IPv6 address`);
      let found = false;
      for (const v of vips) {
        for (const be of v.backends) {
          if (be.address.bytes.every((y, i) => y === b[i])) {
            q.backends.add((v.index << 16) | be.index);
            found = true;
          }
        }
      }
      if (!found) {
        const all = [...new Set(vips.flatMap((v) => v.backends.map((x) => x.address.text)))];
        throw usage(`flows filter backend: ${addrText(b)} is not a backend of any VIP (backends: ${all.join(', ') || 'none'})`);
      }
      names.push(addrText(b));
    }
    q.text['backend'] = names.join(',');
  }
  if (f.client !== undefined) {
    const c = parseClient(f.client);
    q.client = { bytes: c.bytes, prefixBits: c.prefixBits, port: c.port };
    q.text['client'] = c.text;
  }
  if (f.proto !== undefined) {
    q.protos = new Set();
    const names: string[] = [];
    for (const p of list('proto', f.proto)) {
      const l = p.toLowerCase();
      const nums = PROTOS[l] ?? (/^\d{1,3}$/.test(l) && Number(l) <= 255 ? [Number(l)] : undefined);
      if (nums === undefined) throw usage(`flows filter proto: "${p}" is not tcp, udp, icmp, icmpv6 or a protocol number 0..255`);
      for (const n of nums) q.protos.add(n);
      names.push(l);
    }
    q.text['proto'] = names.join(',');
  }
  for (const which of ['primary', 'backup'] as const) {
    const v = f[which];
    if (v === undefined) continue;
    const set = new Set<number>();
    for (const id of list(which, v)) {
      const i = balancers.findIndex((x) => x.id === id);
      if (i < 0) throw usage(`flows filter ${which}: no balancer "${id}" (balancers: ${balancers.map((x) => x.id).join(', ')})`);
      set.add(i);
    }
    if (which === 'primary') q.primaries = set;
    else q.backups = set;
    q.text[which] = [...set].map((i) => balancers[i]!.id).join(',');
  }
  if (f.state !== undefined) {
    q.states = new Set();
    for (const s of list('state', f.state)) {
      const k = s.toLowerCase().replace(/-/g, '_');
      const v = FLOW_STATE_NAMES[k] ?? FLOW_STATE_NAMES[`tcp_${k}`];
      if (v === undefined) throw usage(`flows filter state: "${s}" is not a flow state (${Object.keys(FLOW_STATE_NAMES).join(', ')})`);
      q.states.add(v);
    }
    q.text['state'] = [...q.states].map(stateName).join(',');
  }
  if (f['min-age'] !== undefined) {
    q.minAgeS = seconds('min-age', f['min-age']);
    q.text['min-age'] = String(q.minAgeS);
  }
  if (f['max-idle'] !== undefined) {
    q.maxIdleS = seconds('max-idle', f['max-idle']);
    q.text['max-idle'] = String(q.maxIdleS);
  }
  return q;
}

/**
 * GET /api/v1/flows query parameters to a FlowQuery (the admin endpoint's parsing). Unknown
 * parameters are refused (a typo must not silently list everything). A missing or unusable
 * `limit` takes the default (as before filters existed); every filter value is checked.
 */
export function flowQueryFromParams(src: Pick<FlowSource, 'forwarder' | 'config'>, params: URLSearchParams): FlowQuery {
  const known = new Set<string>(FLOW_QUERY_PARAMS);
  for (const k of params.keys()) {
    if (!known.has(k)) throw usage(`flows: unknown parameter "${k}" (parameters: ${FLOW_QUERY_PARAMS.join(', ')})`);
  }
  const raw = params.get('limit');
  const n = raw === null ? DEFAULT_FLOW_LIMIT : Number(raw);
  const limit = Number.isInteger(n) && n >= 1 ? Math.min(n, MAX_FLOW_LIMIT) : DEFAULT_FLOW_LIMIT;
  const f: FlowFilterText = {};
  for (const k of FLOW_QUERY_PARAMS) {
    if (k === 'limit') continue;
    const all = params.getAll(k);
    if (all.length > 0) f[k] = all.join(',');
  }
  return compileFlowQuery(src, f, limit);
}

/**
 * A listing in progress: a cursor over the table (FlowTable.scan) that examines a bounded number
 * of entries per `step`, so a caller can walk a large table in time slices with the event loop
 * free in between (src/control/time-slice.ts; GET /api/v1/flows streams the rows of each slice).
 * Between steps the table may change: a flow live for the whole listing is examined exactly
 * once; flows inserted or removed meanwhile may or may not be listed (not a snapshot). The
 * listing is interpreted against the forwarding table current at its start: when a reload
 * replaces it, the next step ends the listing (`interrupted`, `truncated`).
 */
export class FlowScan {
  readonly #src: FlowSource;
  readonly #q: FlowQuery;
  readonly #limit: number;
  readonly #ft: FlowSource['forwarder']['forwarding'];
  readonly #now: number;
  readonly #words = new Uint32Array(10);
  readonly #bytes = new Uint8Array(this.#words.buffer);
  readonly #visit: (id: number) => void;
  #rows: FlowRow[] = [];
  #listed = 0;
  #scanned = 0;
  #matched = 0;
  #cursor = 0;
  #done = false;
  #stop = false;
  #interrupted: string | null = null;

  constructor(src: FlowSource, query: FlowQuery | number) {
    this.#src = src;
    this.#q = typeof query === 'number' ? { limit: query, text: {} } : query;
    this.#limit = Math.max(0, Math.floor(this.#q.limit));
    this.#ft = src.forwarder.forwarding;
    this.#now = src.nowSec();
    this.#visit = (id) => this.#check(id);
  }

  /** True once the scan reached the end of the table or one match past the limit. */
  get done(): boolean {
    return this.#done;
  }

  /**
   * Examines up to `maxEntries` more live entries (FlowTable.scan's bound: at most
   * maxEntries * 8 + 64 ids); returns `done`.
   */
  step(maxEntries = 4096): boolean {
    if (this.#done) return true;
    if (this.#src.forwarder.forwarding.config !== this.#ft.config) {
      this.#interrupted = 'the configuration was reloaded during the listing';
      this.#stop = true;
    } else {
      this.#cursor = this.#src.table.scan(this.#cursor, maxEntries, this.#visit);
    }
    if (this.#cursor === 0 || this.#stop) this.#done = true;
    return this.#done;
  }

  /** The rows found since the last call (the caller owns them). */
  takeRows(): FlowRow[] {
    const r = this.#rows;
    this.#rows = [];
    return r;
  }

  /** The listing's figures (rows apart); final once `done`. */
  summary(): Omit<FlowListing, 'flows'> {
    const out: Omit<FlowListing, 'flows'> = {
      total: this.#src.table.size,
      scanned: this.#scanned,
      matched: this.#matched,
      truncated: this.#stop,
      limit: this.#limit,
      filters: this.#q.text,
    };
    if (this.#interrupted !== null) out.interrupted = this.#interrupted;
    return out;
  }

  #check(id: number): void {
    if (this.#stop) return;
    const q = this.#q;
    const t = this.#src.table;
    this.#scanned++;
    if (q.vips !== undefined && !q.vips.has(t.vip(id))) return;
    if (q.backends !== undefined && !q.backends.has((t.vip(id) << 16) | t.backend(id))) return;
    if (q.primaries !== undefined && !q.primaries.has(t.primary(id))) return;
    if (q.backups !== undefined && !q.backups.has(t.backup(id))) return;
    if (q.states !== undefined && !q.states.has(t.state(id))) return;
    const now = this.#now;
    if (q.minAgeS !== undefined && now - t.created(id) < q.minAgeS) return;
    if (q.maxIdleS !== undefined && now - t.lastSeen(id) > q.maxIdleS) return;
    const bytes = this.#bytes;
    if (!t.copyKey(id, 0, this.#words, 0)) return;
    if (q.protos !== undefined && !q.protos.has(bytes[36]!)) return;
    const c = q.client;
    if (c !== undefined) {
      // Client prefix: whole bytes compared, then the bits of a partial byte.
      const cFull = c.prefixBits >>> 3;
      const cMask = (0xff << (8 - (c.prefixBits & 7))) & 0xff;
      for (let i = 0; i < cFull; i++) if (bytes[i] !== c.bytes[i]) return;
      if (cMask !== 0 && ((bytes[cFull]! ^ c.bytes[cFull]!) & cMask) !== 0) return;
      if (c.port !== null && ((bytes[32]! << 8) | bytes[33]!) !== c.port) return;
    }
    this.#matched++;
    if (this.#listed >= this.#limit) {
      // One match past the limit: the listing is truncated; nothing more to learn.
      this.#stop = true;
      return;
    }
    this.#listed++;
    const vips = this.#ft.config.vips;
    const ids = this.#src.config.balancers;
    const v = t.vip(id);
    const be = t.backend(id);
    const vip = vips[v];
    this.#rows.push({
      key: keyToString(bytes),
      vip: vip?.name ?? (v === VIP_REMOVED ? '(removed)' : `#${v}`),
      primary: ids[t.primary(id)]?.id ?? `#${t.primary(id)}`,
      backup: ids[t.backup(id)]?.id ?? `#${t.backup(id)}`,
      backend: vip?.backends[be]?.address.text ?? (be === NO_BACKEND ? '(removed)' : `#${be}`),
      state: t.state(id),
      stateName: stateName(t.state(id)),
      packets: t.packets(id),
      ageS: now - t.created(id),
      idleS: now - t.lastSeen(id),
      confirmed: t.isConfirmed(id),
    });
  }
}

/**
 * Lists the flows of `src` that match `query` (a number: a limit and no filters) in one call:
 * for tests and small tables; the admin endpoint walks a FlowScan in time slices instead.
 */
export function listFlows(src: FlowSource, query: FlowQuery | number): FlowListing {
  const scan = new FlowScan(src, query);
  const flows: FlowRow[] = [];
  while (!scan.step()) flows.push(...scan.takeRows());
  flows.push(...scan.takeRows());
  return { ...scan.summary(), flows };
}
