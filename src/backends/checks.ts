/**
 * Health checks of one backend: TCP connect, HTTP GET, ICMP / ICMPv6 echo.
 *
 * Contract of every check:
 * - resolves (never rejects) with `{ ok, rttMs, reason }`: `rttMs` is the time from start to
 *   the deciding event (connect, status line, echo reply, or the failure), `reason` one line
 *   ("tcp connect in 0.4 ms", "connect ECONNREFUSED", "timeout after 500 ms");
 * - resolves by `timeoutMs` at the latest (a timer started with the check);
 * - leaves no socket behind: TCP and HTTP sockets are closed with a reset
 *   (`resetAndDestroy`, SO_LINGER 0 — as HAProxy's checks do) so the checker does not pile up
 *   TIME_WAIT sockets (1,000 backends at 1 s would hold ~60,000), and the ICMP pinger closes
 *   its raw socket as soon as no echo is outstanding (`IcmpPinger`).
 * - runs in the caller's network namespace and routing (the balancer's): source address and
 *   interface are the kernel's choice for the backend address.
 *
 * ICMP uses the `raw-socket` package (root or CAP_NET_RAW): one raw socket per family,
 * shared by all outstanding echoes of an `IcmpPinger` and matched by (source address,
 * identifier, sequence, payload token). IPv4: type 8 → 0, checksum computed here (RFC 792);
 * the kernel hands raw IPv4 sockets the IP header, which is skipped. IPv6: type 128 → 129
 * (RFC 4443 §4); the kernel fills the ICMPv6 checksum on raw ICMPv6 sockets (RFC 3542 §3.1)
 * and hands no IPv6 header. An ICMP error about our echo (destination unreachable, time
 * exceeded) fails the check at once with its name.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import { randomBytes, randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';

export interface CheckResult {
  readonly ok: boolean;
  /** ms from start to the deciding event (3 decimals). */
  readonly rttMs: number;
  /** One line: what was seen. */
  readonly reason: string;
}

/** What to check; built from a backend's HealthCheckConfig by the monitor. */
export interface CheckTarget {
  readonly type: 'tcp' | 'http' | 'icmp';
  /** Address text (IPv4 dotted quad or IPv6). */
  readonly address: string;
  readonly family: 4 | 6;
  /** tcp/http port (null for icmp). */
  readonly port: number | null;
  /** http path. */
  readonly path: string | null;
  /** http expected status. */
  readonly expectStatus: number | null;
  readonly timeoutMs: number;
}

const round3 = (ms: number): number => Math.round(ms * 1000) / 1000;

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err?.code ?? err?.message ?? String(e);
}

/** TCP connect to address:port; success = the handshake completed. */
export function tcpCheck(address: string, port: number, timeoutMs: number): Promise<CheckResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let done = false;
    const sock = net.connect({ host: address, port, family: net.isIPv6(address) ? 6 : 4 });
    const finish = (ok: boolean, reason: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      closeSocket(sock);
      resolve({ ok, rttMs: round3(performance.now() - t0), reason });
    };
    const timer = setTimeout(() => finish(false, `connect timeout after ${timeoutMs} ms`), timeoutMs);
    sock.once('connect', () => finish(true, `tcp connect in ${round3(performance.now() - t0)} ms`));
    sock.once('error', (e) => finish(false, `connect ${errText(e)}`));
  });
}

function closeSocket(sock: net.Socket): void {
  sock.removeAllListeners('connect');
  sock.on('error', () => undefined); // a late error after close must not become uncaught
  try {
    if (!sock.destroyed && sock.readyState === 'open') sock.resetAndDestroy();
    else sock.destroy();
  } catch {
    sock.destroy();
  }
}

/**
 * HTTP/1.1 GET http://address:port/path ("Connection: close", no agent, no body read);
 * success = status == expectStatus. Redirects are not followed (a 301 is a 301).
 */
export function httpCheck(address: string, port: number, path: string, expectStatus: number, timeoutMs: number): Promise<CheckResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let done = false;
    const v6 = net.isIPv6(address);
    const req = http.request({
      host: address,
      family: v6 ? 6 : 4,
      port,
      path,
      method: 'GET',
      agent: false,
      headers: { Host: v6 ? `[${address}]:${port}` : `${address}:${port}`, 'User-Agent': 'tunlb-health/1', Accept: '*/*', Connection: 'close' },
    });
    let connected = false;
    req.once('socket', (s: net.Socket) => {
      if (!s.connecting) connected = true;
      else s.once('connect', () => (connected = true));
    });
    const finish = (ok: boolean, reason: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const sock = req.socket;
      req.removeAllListeners('response');
      req.on('error', () => undefined);
      if (sock) closeSocket(sock);
      req.destroy();
      resolve({ ok, rttMs: round3(performance.now() - t0), reason });
    };
    const timer = setTimeout(() => finish(false, `${connected ? 'http' : 'connect'} timeout after ${timeoutMs} ms`), timeoutMs);
    req.once('response', (res) => {
      res.on('error', () => undefined);
      res.resume();
      const s = res.statusCode ?? 0;
      const ms = round3(performance.now() - t0);
      if (s === expectStatus) finish(true, `http ${s} in ${ms} ms`);
      else finish(false, `http status ${s} (expected ${expectStatus})`);
    });
    req.once('error', (e) => {
      // Errors before the connection is up are connect errors; later ones are HTTP errors
      // (e.g. "http ECONNRESET", "http HPE_INVALID_CONSTANT").
      finish(false, `${connected ? 'http' : 'connect'} ${errText(e)}`);
    });
    req.end();
  });
}

// ---------------------------------------------------------------------------------------
// ICMP echo

/** The subset of raw-socket's Socket used here (the package ships no types). */
export interface RawSocket {
  on(ev: 'message', fn: (buf: Buffer, source: string) => void): void;
  on(ev: 'error', fn: (e: Error) => void): void;
  on(ev: 'close', fn: () => void): void;
  send(buf: Buffer, off: number, len: number, addr: string, cb: (err: Error | null, bytes: number) => void): void;
  close(): void;
}
interface RawModule {
  createSocket(o: { protocol: number; addressFamily?: number; bufferSize?: number }): RawSocket;
  Protocol: Record<string, number>;
  AddressFamily: Record<string, number>;
}

/** A raw ICMP (family 4) or ICMPv6 (family 6) socket from the raw-socket package. */
export function openRawIcmpSocket(family: 4 | 6): RawSocket {
  const r = raw();
  return family === 4
    ? r.createSocket({ protocol: r.Protocol['ICMP']!, bufferSize: 2048 })
    : r.createSocket({ protocol: r.Protocol['ICMPv6']!, addressFamily: r.AddressFamily['IPv6']!, bufferSize: 2048 });
}

/** RFC 1071 Internet checksum of buf (one's complement of the one's-complement sum). */
export function inetChecksum(buf: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (buf.length & 1) sum += buf[buf.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface IcmpPingerOptions {
  /** ICMP identifier of this pinger's echoes (default random 1..65535). */
  identifier?: number;
  /** Socket factory (default openRawIcmpSocket; tests inject fakes). */
  createSocket?: (family: 4 | 6) => RawSocket;
}

let rawModule: RawModule | null = null;
function raw(): RawModule {
  // Loaded on first use: a cluster without ICMP checks never loads the addon.
  rawModule ??= require('raw-socket') as RawModule;
  return rawModule;
}

const ICMP4_ECHO_REQUEST = 8;
const ICMP4_ECHO_REPLY = 0;
const ICMP4_ERRORS: Record<number, string> = { 3: 'destination unreachable', 11: 'time exceeded', 12: 'parameter problem' };
const ICMP4_UNREACH_CODES: Record<number, string> = { 0: 'net unreachable', 1: 'host unreachable', 2: 'protocol unreachable', 3: 'port unreachable', 9: 'net prohibited', 10: 'host prohibited', 13: 'administratively prohibited' };
const ICMP6_ECHO_REQUEST = 128;
const ICMP6_ECHO_REPLY = 129;
const ICMP6_ERRORS: Record<number, string> = { 1: 'destination unreachable', 3: 'time exceeded', 4: 'parameter problem' };
const ICMP6_UNREACH_CODES: Record<number, string> = { 0: 'no route', 1: 'administratively prohibited', 3: 'address unreachable', 4: 'port unreachable', 5: 'source address failed policy', 6: 'reject route' };
/** Echo payload: 8 random bytes per echo (matched on reply). */
const TOKEN_LEN = 8;
const ECHO_LEN = 8 + TOKEN_LEN;

interface PendingEcho {
  readonly family: 4 | 6;
  /** Canonical address bytes (16, mapped for IPv4) for the source comparison. */
  readonly addrKey: string;
  readonly token: Buffer;
  readonly t0: number;
  readonly resolve: (r: CheckResult) => void;
  timer: NodeJS.Timeout;
}

/** Canonical comparison form of an address text (IPv6 spellings differ), or null. */
function addrKey(text: string): string | null {
  const t = text.split('%')[0]!;
  if (net.isIPv4(t)) return `4:${t}`;
  if (!net.isIPv6(t)) return null;
  return `6:${expandV6(t)}`;
}

function expandV6(a: string): string {
  // Full 8-group lower-case form; handles "::" and an embedded IPv4 tail.
  let s = a.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const p = v4[1]!.split('.').map(Number);
    s = s.slice(0, -v4[1]!.length) + `${((p[0]! << 8) | p[1]!).toString(16)}:${((p[2]! << 8) | p[3]!).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const tl = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail !== undefined ? new Array(8 - h.length - tl.length).fill('0') : [];
  return [...h, ...fill, ...tl].map((g) => parseInt(g, 16).toString(16)).join(':');
}

/**
 * Sends ICMP / ICMPv6 echo requests and matches replies. One raw socket per family, opened
 * on the first echo and closed when the last outstanding echo is answered or times out (so
 * an idle pinger holds no socket and sees no traffic). One identifier per pinger (random),
 * a 16-bit sequence per echo, and a random payload token. `close()` fails outstanding echoes
 * ("pinger closed") and closes the sockets.
 */
export class IcmpPinger {
  readonly identifier: number;
  #seq = randomInt(0x10000);
  #sockets: [RawSocket | null, RawSocket | null] = [null, null];
  /** Outstanding echoes by sequence number. */
  readonly #pending = new Map<number, PendingEcho>();
  #closed = false;

  readonly #createSocket: (family: 4 | 6) => RawSocket;

  constructor(opts: IcmpPingerOptions = {}) {
    this.identifier = (opts.identifier ?? randomInt(1, 0x10000)) & 0xffff;
    this.#createSocket = opts.createSocket ?? openRawIcmpSocket;
  }

  /** True after close(). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Outstanding echoes (for tests). */
  get outstanding(): number {
    return this.#pending.size;
  }
  /** Open raw sockets (0..2; for tests). */
  get openSockets(): number {
    return (this.#sockets[0] ? 1 : 0) + (this.#sockets[1] ? 1 : 0);
  }

  /** One echo to `address`; resolves with the reply, an ICMP error, a send error or a timeout. */
  ping(address: string, timeoutMs: number): Promise<CheckResult> {
    return new Promise((resolve) => {
      const t0 = performance.now();
      const key = addrKey(address);
      if (this.#closed) return resolve({ ok: false, rttMs: 0, reason: 'icmp pinger closed' });
      if (key === null) return resolve({ ok: false, rttMs: 0, reason: `icmp: not an IP address: ${address}` });
      const family: 4 | 6 = key.startsWith('6:') ? 6 : 4;
      let seq = -1;
      for (let i = 0; i < 0x10000; i++) {
        this.#seq = (this.#seq + 1) & 0xffff;
        if (!this.#pending.has(this.#seq)) {
          seq = this.#seq;
          break;
        }
      }
      if (seq < 0) return resolve({ ok: false, rttMs: 0, reason: 'icmp: too many outstanding echoes' });
      let sock: RawSocket;
      try {
        sock = this.#socket(family);
      } catch (e) {
        return resolve({ ok: false, rttMs: round3(performance.now() - t0), reason: `icmp socket ${errText(e)}` });
      }
      const token = randomBytes(TOKEN_LEN);
      const pkt = Buffer.alloc(ECHO_LEN);
      pkt[0] = family === 4 ? ICMP4_ECHO_REQUEST : ICMP6_ECHO_REQUEST;
      pkt.writeUInt16BE(this.identifier, 4);
      pkt.writeUInt16BE(seq, 6);
      token.copy(pkt, 8);
      if (family === 4) pkt.writeUInt16BE(inetChecksum(pkt), 2);
      const p: PendingEcho = {
        family,
        addrKey: key,
        token,
        t0,
        resolve,
        timer: setTimeout(() => this.#finish(seq, false, `icmp timeout after ${timeoutMs} ms`), timeoutMs),
      };
      this.#pending.set(seq, p);
      sock.send(pkt, 0, pkt.length, address.split('%')[0]!, (err) => {
        if (err) this.#finish(seq, false, `icmp send ${errText(err)}`);
      });
    });
  }

  /** Fails outstanding echoes and closes the sockets; later pings fail at once. */
  close(): void {
    this.#closed = true;
    for (const seq of [...this.#pending.keys()]) this.#finish(seq, false, 'icmp pinger closed');
    this.#closeSockets();
  }

  #socket(family: 4 | 6): RawSocket {
    const i = family === 4 ? 0 : 1;
    const existing = this.#sockets[i];
    if (existing) return existing;
    const s = this.#createSocket(family);
    s.on('message', (buf, source) => this.#onMessage(family, buf, source));
    // raw-socket closes the socket itself after an 'error' from the addon; recv errors are
    // emitted without closing. Either way: fail this family's echoes and start afresh.
    s.on('error', (e) => this.#onSocketError(family, s, e));
    s.on('close', () => {
      if (this.#sockets[i] === s) this.#sockets[i] = null;
    });
    this.#sockets[i] = s;
    return s;
  }

  #onSocketError(family: 4 | 6, s: RawSocket, e: Error): void {
    for (const [seq, p] of [...this.#pending]) if (p.family === family) this.#finish(seq, false, `icmp socket ${errText(e)}`);
    const i = family === 4 ? 0 : 1;
    if (this.#sockets[i] === s) {
      this.#sockets[i] = null;
      try {
        s.close();
      } catch {
        /* already closed */
      }
    }
  }

  #onMessage(family: 4 | 6, buf: Buffer, source: string): void {
    let off = 0;
    if (family === 4) {
      if (buf.length < 20 || buf[0]! >> 4 !== 4) return;
      off = (buf[0]! & 0x0f) * 4;
    }
    if (buf.length < off + 8) return;
    const type = buf[off]!;
    const code = buf[off + 1]!;
    const reply = family === 4 ? ICMP4_ECHO_REPLY : ICMP6_ECHO_REPLY;
    if (type === reply) {
      if (buf.readUInt16BE(off + 4) !== this.identifier) return;
      const seq = buf.readUInt16BE(off + 6);
      const p = this.#pending.get(seq);
      if (!p || p.family !== family || buf.length < off + ECHO_LEN) return;
      if (!buf.subarray(off + 8, off + ECHO_LEN).equals(p.token)) return;
      if (addrKey(source) !== p.addrKey) return;
      this.#finish(seq, true, `icmp echo reply in ${round3(performance.now() - p.t0)} ms`);
      return;
    }
    const errName = family === 4 ? ICMP4_ERRORS[type] : ICMP6_ERRORS[type];
    if (errName === undefined) return;
    // The invoking packet follows the 8-byte error header: IP header, then our echo header.
    let inner = off + 8;
    let innerDst: string;
    if (family === 4) {
      if (buf.length < inner + 20 || buf[inner]! >> 4 !== 4 || buf[inner + 9] !== 1) return;
      innerDst = `4:${buf[inner + 16]}.${buf[inner + 17]}.${buf[inner + 18]}.${buf[inner + 19]}`;
      inner += (buf[inner]! & 0x0f) * 4;
    } else {
      if (buf.length < inner + 40 || buf[inner]! >> 4 !== 6 || buf[inner + 6] !== 58) return;
      const g: string[] = [];
      for (let i = 0; i < 8; i++) g.push(buf.readUInt16BE(inner + 24 + 2 * i).toString(16));
      innerDst = `6:${g.join(':')}`;
      inner += 40;
    }
    if (buf.length < inner + 8) return;
    const echoReq = family === 4 ? ICMP4_ECHO_REQUEST : ICMP6_ECHO_REQUEST;
    if (buf[inner] !== echoReq || buf.readUInt16BE(inner + 4) !== this.identifier) return;
    const seq = buf.readUInt16BE(inner + 6);
    const p = this.#pending.get(seq);
    if (!p || p.family !== family || p.addrKey !== innerDst) return;
    const codes = family === 4 ? (type === 3 ? ICMP4_UNREACH_CODES : {}) : type === 1 ? ICMP6_UNREACH_CODES : {};
    const what = codes[code] !== undefined ? ` (${codes[code]})` : ` (code ${code})`;
    this.#finish(seq, false, `icmp ${errName}${what} from ${source}`);
  }

  #finish(seq: number, ok: boolean, reason: string): void {
    const p = this.#pending.get(seq);
    if (!p) return;
    this.#pending.delete(seq);
    clearTimeout(p.timer);
    p.resolve({ ok, rttMs: round3(performance.now() - p.t0), reason });
    if (!this.#hasPending(p.family)) this.#closeFamily(p.family);
  }

  #hasPending(family: 4 | 6): boolean {
    for (const p of this.#pending.values()) if (p.family === family) return true;
    return false;
  }

  #closeFamily(family: 4 | 6): void {
    const i = family === 4 ? 0 : 1;
    const s = this.#sockets[i];
    this.#sockets[i] = null;
    if (s) {
      try {
        s.close();
      } catch {
        /* already closed */
      }
    }
  }

  #closeSockets(): void {
    this.#closeFamily(4);
    this.#closeFamily(6);
  }
}

/** One ICMP echo with a pinger of its own (closed afterwards). Prefer a shared IcmpPinger. */
export async function icmpCheck(address: string, timeoutMs: number, pinger?: IcmpPinger): Promise<CheckResult> {
  if (pinger) return pinger.ping(address, timeoutMs);
  const own = new IcmpPinger();
  try {
    return await own.ping(address, timeoutMs);
  } finally {
    own.close();
  }
}

/** Runs the check a target describes (ICMP through `pinger` when given). Never rejects. */
export async function runCheck(target: CheckTarget, pinger?: IcmpPinger): Promise<CheckResult> {
  try {
    switch (target.type) {
      case 'tcp':
        return await tcpCheck(target.address, target.port ?? 0, target.timeoutMs);
      case 'http':
        return await httpCheck(target.address, target.port ?? 80, target.path ?? '/', target.expectStatus ?? 200, target.timeoutMs);
      case 'icmp':
        return await icmpCheck(target.address, target.timeoutMs, pinger);
      default:
        return { ok: false, rttMs: 0, reason: `unknown check type ${(target as CheckTarget).type}` };
    }
  } catch (e) {
    return { ok: false, rttMs: 0, reason: `check error: ${errText(e)}` };
  }
}
