/**
 * Neighbour resolution for DSR: backend IP → MAC address, from the kernel's neighbour table
 * (ARP for IPv4, NDP for IPv6) of the interface that reaches the backend, copied into typed
 * arrays the forwarder reads per packet.
 *
 * Hot-path view (DsrNeighbours), one entry per backend of each DSR VIP (VIP and backend
 * indexes as in the forwarding table), NEIGH_STRIDE bytes at `be * NEIGH_STRIDE` in rows[vip]:
 *
 *   +0..5   destination MAC (the backend's)           +6..11  source MAC (our interface's)
 *   +12     valid (1: the kernel has a link-layer address for it, in any NUD state but
 *           FAILED / INCOMPLETE)                      +13     family (4 / 6)   +14..15 zero
 *
 * and ifindex[vip][be], the interface to send the frame on. NAT VIPs have empty arrays. The
 * arrays are replaced whole (setForwarding) and written in place only by refresh(), between
 * batches (one event loop), so a batch never sees half an entry.
 *
 * Which interface: the one whose subnet contains the backend (os.networkInterfaces(); not
 * loopback, not the TUN device): DSR needs the backend on a directly attached network.
 *
 * Freshness: the table is re-read every `refreshMs` (default 1 s; an rtnetlink RTM_GETNEIGH
 * dump by the addon, native/neighbours.cc, as `ip neigh show` makes; `ip -j neigh show`, then
 * /proc/net/arp, only if that fails) and soon (≤ 50 ms later) after the hot path reported
 * a backend without a usable entry (missing(): a flag, no allocation). A backend whose entry is
 * missing, FAILED, INCOMPLETE or STALE is probed: one UDP datagram to its discard port (9) so the
 * kernel resolves (ARP / NS) or re-confirms (STALE → DELAY → PROBE → REACHABLE) it; the probe
 * is answered with an ICMP port unreachable at most. Probes are rate-limited per backend (one
 * per refresh interval); every backend is probed once at start.
 */
import { execFile } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { METHOD_DSR, type ForwardingTable } from '../decision/forwarding-table';
import { interfaceInfo, parseMac, type InterfaceInfo } from './l2-socket';
import { native, netnsPath } from './native';
import { bytes16ToIp, ipToBytes16 } from './udp-batch-socket';

export const NEIGH_STRIDE = 16;
export const NEIGH_DST_MAC = 0;
export const NEIGH_SRC_MAC = 6;
export const NEIGH_VALID = 12;
export const NEIGH_FAMILY = 13;
/** UDP port the resolution probes go to (RFC 863 discard). */
export const PROBE_PORT = 9;

/** What the forwarder reads per DSR packet. */
export interface DsrNeighbours {
  /** Per VIP: backendCount × NEIGH_STRIDE bytes (layout above); empty for NAT VIPs. */
  readonly rows: readonly Uint8Array[];
  /** Per VIP: the interface index to each backend (0 = none found). */
  readonly ifindex: readonly Int32Array[];
  /** Hot path: backend `be` of VIP `vip` has no usable entry: resolve it soon. O(1), no allocation. */
  missing(vip: number, be: number): void;
}

/** One row of the kernel's neighbour table. */
export interface NeighbourEntry {
  /** IP address (text). */
  dst: string;
  dev: string;
  /** "aa:bb:..", or undefined when the kernel has none (FAILED, INCOMPLETE). */
  lladdr?: string;
  /** NUD states, e.g. ["REACHABLE"], ["STALE"], ["FAILED"]. */
  state: string[];
}

export interface NeighbourStats {
  refreshes: number;
  refreshErrors: number;
  probes: number;
  /** missing() calls (hot path). */
  misses: number;
  /** Backends with a valid entry / without, after the last refresh. */
  resolved: number;
  unresolved: number;
  /** Backends for which no interface's subnet contains the address. */
  noInterface: number;
  lastError: string;
}

export interface NeighbourTableOptions {
  forwarding: ForwardingTable;
  /** Interval of the periodic re-read, ms. Default 1000. */
  refreshMs?: number;
  /** Reads the kernel neighbour table. Default: `ip -j neigh show`, else /proc/net/arp. */
  read?: () => Promise<NeighbourEntry[]>;
  /** Local interfaces (default os.networkInterfaces). */
  interfaces?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  /** Index and MAC of an interface (default: the addon's ifInfo). */
  ifInfo?: (name: string) => InterfaceInfo;
  /** Makes the kernel resolve `ip` (default: a UDP datagram to its discard port). */
  probe?: (ip: string, family: 4 | 6) => void;
  /** Interface names never used for backends (default: the TUN device's). */
  exclude?: string[];
  /** Called with a message when something is wrong (no interface for a backend, read errors). */
  warn?: (msg: string, details: Record<string, unknown>) => void;
}

interface Target {
  vip: number;
  be: number;
  ip: string;
  family: 4 | 6;
  dev: string | undefined;
  lastProbeMs: number;
}

/** NUD_* state bits of linux/neighbour.h, in the order `ip neigh` prints them. */
const NUD_NAMES: readonly (readonly [bit: number, name: string])[] = [
  [0x01, 'INCOMPLETE'], [0x02, 'REACHABLE'], [0x04, 'STALE'], [0x08, 'DELAY'],
  [0x10, 'PROBE'], [0x20, 'FAILED'], [0x40, 'NOARP'], [0x80, 'PERMANENT'],
];

const NUD_NOARP = 0x40;

/** NUD_* bits → state names as `ip -j neigh` gives them (0 = "NONE"). */
export function nudStates(bits: number): string[] {
  const out: string[] = [];
  for (const [bit, name] of NUD_NAMES) if ((bits & bit) !== 0) out.push(name);
  return out.length === 0 ? ['NONE'] : out;
}

/**
 * The kernel's neighbour table (both families) of the current network namespace, or of
 * `netns`, by the addon's rtnetlink dump. Control path (synchronous, bounded by a 2 s
 * receive timeout). Throws the addon's errno Error.
 */
export function dumpKernelNeighbours(netns?: string): NeighbourEntry[] {
  const rows = native().neighDump(netnsPath(netns));
  const out: NeighbourEntry[] = [];
  for (const r of rows) {
    // As `ip neigh show`: no NUD_NONE entries and no NOARP-only ones (multicast, loopback).
    if ((r.state & ~NUD_NOARP) === 0) continue;
    out.push({ dst: r.dst, dev: r.dev, lladdr: r.lladdr, state: nudStates(r.state) });
  }
  return out;
}

/**
 * The kernel's neighbour table: the rtnetlink dump; if that fails (an addon without it, a
 * sandbox that refuses netlink), `ip -j neigh show`; then /proc/net/arp (IPv4 only).
 */
export async function readKernelNeighbours(): Promise<NeighbourEntry[]> {
  try {
    return dumpKernelNeighbours();
  } catch {
    return readNeighboursByIp();
  }
}

/** `ip -j neigh show` (both families), or /proc/net/arp (IPv4 only) when `ip` fails. */
async function readNeighboursByIp(): Promise<NeighbourEntry[]> {
  try {
    const out = await new Promise<string>((resolve, reject) => {
      execFile('ip', ['-j', 'neigh', 'show'], { timeout: 2000, maxBuffer: 16 << 20 }, (err, stdout) =>
        err ? reject(err) : resolve(String(stdout)),
      );
    });
    return parseIpNeighJson(out);
  } catch (e) {
    try {
      return parseProcNetArp(await readFile('/proc/net/arp', 'utf8'));
    } catch {
      throw e;
    }
  }
}

/** Parses `ip -j neigh show` output. */
export function parseIpNeighJson(text: string): NeighbourEntry[] {
  const t = text.trim();
  if (t === '') return [];
  const rows = JSON.parse(t) as Array<{ dst?: string; dev?: string; lladdr?: string; state?: string[] }>;
  const out: NeighbourEntry[] = [];
  for (const r of rows) {
    if (typeof r.dst !== 'string' || typeof r.dev !== 'string') continue;
    out.push({ dst: r.dst, dev: r.dev, lladdr: typeof r.lladdr === 'string' ? r.lladdr : undefined, state: Array.isArray(r.state) ? r.state : [] });
  }
  return out;
}

/** Parses /proc/net/arp (flags 0x2 = ATF_COM: complete). */
export function parseProcNetArp(text: string): NeighbourEntry[] {
  const out: NeighbourEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6) continue;
    const complete = (parseInt(f[2]!, 16) & 0x2) !== 0;
    out.push({ dst: f[0]!, dev: f[5]!, lladdr: complete ? f[3] : undefined, state: [complete ? 'REACHABLE' : 'INCOMPLETE'] });
  }
  return out;
}

/** True when the entry gives a usable link-layer address. */
function usable(e: NeighbourEntry): boolean {
  if (e.lladdr === undefined) return false;
  return !e.state.includes('FAILED') && !e.state.includes('INCOMPLETE');
}

/** True when the entry should be (re)confirmed by a probe. */
function wantsProbe(e: NeighbourEntry | undefined): boolean {
  return e === undefined || !usable(e) || e.state.includes('STALE');
}

/** True when `ip` (16 bytes at a) is inside addr/prefix (16 bytes at n, prefix in IPv6 bits). */
function inPrefix(a: Uint8Array, n: Uint8Array, prefix: number): boolean {
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    if (bits === 0) return true;
    const mask = (0xff << (8 - bits)) & 0xff;
    if ((a[i]! & mask) !== (n[i]! & mask)) return false;
  }
  return true;
}

/** Name of the (non-internal) interface whose subnet contains `ip`, or undefined. */
export function interfaceFor(ip: string, ifaces: NodeJS.Dict<NetworkInterfaceInfo[]>, exclude: readonly string[] = []): string | undefined {
  const a = new Uint8Array(16);
  if (!ipToBytes16(ip, a)) return undefined;
  const v4 = ip.includes('.') && !ip.includes(':');
  const n = new Uint8Array(16);
  let best: string | undefined;
  let bestLen = -1;
  for (const [name, list] of Object.entries(ifaces)) {
    if (exclude.includes(name)) continue;
    for (const x of list ?? []) {
      if (x.internal || x.cidr === null) continue;
      if ((x.family === 'IPv4') !== v4) continue;
      const plen = Number(x.cidr.slice(x.cidr.indexOf('/') + 1)) + (v4 ? 96 : 0);
      if (!ipToBytes16(x.address, n) || !inPrefix(a, n, plen)) continue;
      if (plen > bestLen) {
        best = name;
        bestLen = plen;
      }
    }
  }
  return best;
}

export class NeighbourTable implements DsrNeighbours {
  rows: Uint8Array[] = [];
  ifindex: Int32Array[] = [];
  readonly stats: NeighbourStats = {
    refreshes: 0, refreshErrors: 0, probes: 0, misses: 0, resolved: 0, unresolved: 0, noInterface: 0, lastError: '',
  };
  readonly #refreshMs: number;
  readonly #read: () => Promise<NeighbourEntry[]>;
  readonly #interfaces: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  readonly #ifInfo: (name: string) => InterfaceInfo;
  readonly #probe: (ip: string, family: 4 | 6) => void;
  readonly #exclude: string[];
  readonly #warn: (msg: string, details: Record<string, unknown>) => void;
  #targets: Target[] = [];
  /** Per VIP: 1 where the hot path reported a miss since the last refresh. */
  #wanted: Uint8Array[] = [];
  #wantedAny = 0;
  #cache = new Map<string, NeighbourEntry>();
  #ifCache = new Map<string, InterfaceInfo | null>();
  #timer: NodeJS.Timeout | undefined;
  #fastTimer: NodeJS.Timeout | undefined;
  #refreshing: Promise<void> | undefined;
  #lastRefreshMs = 0;
  #sockets: { 4?: Socket; 6?: Socket } = {};
  #warned = new Set<string>();

  constructor(opts: NeighbourTableOptions) {
    this.#refreshMs = opts.refreshMs ?? 1000;
    this.#read = opts.read ?? readKernelNeighbours;
    this.#interfaces = opts.interfaces ?? networkInterfaces;
    this.#ifInfo = opts.ifInfo ?? ((name) => interfaceInfo(name));
    this.#probe = opts.probe ?? ((ip, fam) => this.#udpProbe(ip, fam));
    this.#exclude = opts.exclude ?? [];
    this.#warn = opts.warn ?? (() => undefined);
    this.setForwarding(opts.forwarding);
  }

  /** True when the table has at least one DSR VIP. */
  static needed(ft: ForwardingTable): boolean {
    for (let v = 0; v < ft.vipCount; v++) if (ft.vipMethod[v] === METHOD_DSR) return true;
    return false;
  }

  /** The interfaces (by name) that reach at least one DSR backend. */
  get interfaces(): string[] {
    return [...new Set(this.#targets.map((t) => t.dev).filter((d): d is string => d !== undefined))];
  }

  /**
   * (Re)builds the arrays for a forwarding table (start, reload): one row per backend of every
   * DSR VIP, filled from the last read of the kernel table. Call between batches.
   */
  setForwarding(ft: ForwardingTable): void {
    const ifaces = this.#interfaces();
    const rows: Uint8Array[] = [];
    const idx: Int32Array[] = [];
    const wanted: Uint8Array[] = [];
    const targets: Target[] = [];
    const ip = new Uint8Array(16);
    let noIf = 0;
    for (let v = 0; v < ft.vipCount; v++) {
      const addrs = ft.backendAddr[v]!;
      const n = ft.vipMethod[v] === METHOD_DSR ? addrs.length >>> 4 : 0;
      rows.push(new Uint8Array(n * NEIGH_STRIDE));
      idx.push(new Int32Array(n));
      wanted.push(new Uint8Array(n));
      for (let b = 0; b < n; b++) {
        for (let k = 0; k < 16; k++) ip[k] = addrs[b * 16 + k]!;
        const text = bytes16ToIp(ip);
        const family: 4 | 6 = ft.vipFamily[v] === 4 ? 4 : 6;
        const dev = interfaceFor(text, ifaces, this.#exclude);
        if (dev === undefined) {
          noIf++;
          this.#warnOnce(`noif ${text}`, `DSR backend ${text} is on no directly attached network (no interface's subnet contains it): its packets are dropped (dsr_no_neighbour)`, { backend: text });
        }
        const info = dev === undefined ? null : this.#interfaceInfo(dev);
        rows[v]![b * NEIGH_STRIDE + NEIGH_FAMILY] = family;
        if (info !== null) {
          rows[v]!.set(info.mac.subarray(0, 6), b * NEIGH_STRIDE + NEIGH_SRC_MAC);
          idx[v]![b] = info.ifindex;
        }
        targets.push({ vip: v, be: b, ip: text, family, dev: info === null ? undefined : dev, lastProbeMs: -Infinity });
      }
    }
    this.rows = rows;
    this.ifindex = idx;
    this.#wanted = wanted;
    this.#targets = targets;
    this.stats.noInterface = noIf;
    this.#fill(false);
  }

  missing(vip: number, be: number): void {
    this.stats.misses++;
    const w = this.#wanted[vip];
    if (w !== undefined && be < w.length) w[be] = 1;
    this.#wantedAny = 1;
  }

  /** Probes every backend once, reads the table, and keeps it fresh until close(). */
  start(): void {
    if (this.#timer !== undefined) return;
    const now = Date.now();
    for (const t of this.#targets) this.#probeTarget(t, now);
    void this.refresh();
    // A second read shortly after the first probes have been answered.
    setTimeout(() => void this.refresh(), 100).unref();
    this.#timer = setInterval(() => void this.refresh(), this.#refreshMs);
    this.#timer.unref();
    this.#fastTimer = setInterval(() => {
      if (this.#wantedAny !== 0 && Date.now() - this.#lastRefreshMs >= 50) void this.refresh();
    }, 50);
    this.#fastTimer.unref();
  }

  /** Reads the kernel table, updates the rows, probes what needs it. One at a time; never rejects. */
  refresh(): Promise<void> {
    if (this.#refreshing !== undefined) return this.#refreshing;
    this.#refreshing = this.#doRefresh().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async #doRefresh(): Promise<void> {
    this.#lastRefreshMs = Date.now();
    const wasWanted = this.#wantedAny !== 0;
    this.#wantedAny = 0;
    let entries: NeighbourEntry[];
    try {
      entries = await this.#read();
    } catch (e) {
      this.stats.refreshErrors++;
      this.stats.lastError = String((e as Error)?.message ?? e);
      this.#warnOnce('read', `reading the neighbour table failed: ${this.stats.lastError}`, {});
      return;
    }
    const cache = new Map<string, NeighbourEntry>();
    for (const e of entries) cache.set(`${e.dev} ${normalise(e.dst)}`, e);
    this.#cache = cache;
    this.stats.refreshes++;
    this.#fill(true);
    if (wasWanted) for (const w of this.#wanted) w.fill(0);
  }

  /** Copies the cached kernel entries into the rows; with `probe`, probes what needs it. */
  #fill(probe: boolean): void {
    const now = Date.now();
    let ok = 0;
    let bad = 0;
    for (const t of this.#targets) {
      const row = this.rows[t.vip]!;
      const o = t.be * NEIGH_STRIDE;
      const e = t.dev === undefined ? undefined : this.#cache.get(`${t.dev} ${normalise(t.ip)}`);
      if (e !== undefined && usable(e) && parseMac(e.lladdr!, row, o + NEIGH_DST_MAC)) {
        row[o + NEIGH_VALID] = 1;
        ok++;
      } else {
        row[o + NEIGH_VALID] = 0;
        bad++;
      }
      if (probe && t.dev !== undefined && (wantsProbe(e) || this.#wanted[t.vip]![t.be] === 1)) this.#probeTarget(t, now);
    }
    this.stats.resolved = ok;
    this.stats.unresolved = bad;
  }

  #probeTarget(t: Target, now: number): void {
    if (t.dev === undefined || now - t.lastProbeMs < this.#refreshMs / 2) return;
    t.lastProbeMs = now;
    this.stats.probes++;
    try {
      this.#probe(t.ip, t.family);
    } catch (e) {
      this.stats.lastError = String((e as Error)?.message ?? e);
    }
  }

  #udpProbe(ip: string, family: 4 | 6): void {
    let s = this.#sockets[family];
    if (s === undefined) {
      s = createSocket(family === 4 ? 'udp4' : 'udp6');
      s.on('error', () => undefined); // ICMP errors and unreachable backends are expected
      s.unref();
      this.#sockets[family] = s;
    }
    s.send(PROBE_BYTE, PROBE_PORT, ip, () => undefined);
  }

  #interfaceInfo(name: string): InterfaceInfo | null {
    let i = this.#ifCache.get(name);
    if (i === undefined) {
      try {
        i = this.#ifInfo(name);
      } catch (e) {
        i = null;
        this.#warnOnce(`ifinfo ${name}`, `cannot read interface ${name}: ${(e as Error).message}`, { interface: name });
      }
      this.#ifCache.set(name, i);
    }
    return i;
  }

  #warnOnce(key: string, msg: string, details: Record<string, unknown>): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.#warn(msg, details);
  }

  /** Stops the timers and closes the probe sockets. Idempotent. */
  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#fastTimer !== undefined) clearInterval(this.#fastTimer);
    this.#timer = undefined;
    this.#fastTimer = undefined;
    for (const s of [this.#sockets[4], this.#sockets[6]]) {
      try {
        s?.close();
      } catch {
        /* already closed */
      }
    }
    this.#sockets = {};
  }
}

const PROBE_BYTE = Buffer.from([0]);

/** Canonical text of an IP address (IPv6 compressed, lower case), so table and config agree. */
function normalise(ip: string): string {
  const b = new Uint8Array(16);
  return ipToBytes16(ip, b) ? bytes16ToIp(b) : ip;
}
