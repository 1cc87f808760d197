/**
 * UdpBatchSocket: a non-blocking UDP socket moved in batches with recvmmsg(2)/sendmmsg(2),
 * using the same PacketBatch as the TUN device plus per-packet peer arrays (PeerArrays:
 * 16-byte addresses, IPv4 as IPv4-mapped ::ffff:a.b.c.d as in docs/contracts.md, and ports
 * in host order). Readiness comes from uv_poll, as for TunDevice. Used for balancer-to-
 * balancer encapsulated packets and flow records (multicast on lbnet).
 *
 * An IPv6 socket is dual-stack (IPV6_V6ONLY off): IPv4 peers appear as mapped addresses.
 * close() is idempotent; every other method then throws TunlbError(DEVICE_CLOSED).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { constants } from 'node:os';
import { ErrorCodes, TunlbError } from '../errors';
import {
  INFO_ERRORS, INFO_LAST_ERRNO, INFO_LEN, INFO_STOPPED_AGAIN, INFO_TRUNCATED, native, netnsPath, netnsMissingMessage, errnoCode,
  errnoSyscall, type NativeAddon,
} from './native';
import type { PacketBatch } from './packet-batch';
import { PolledFd } from './polled-fd';

export interface UdpMulticastOptions {
  /** Group to join, e.g. 239.99.0.1. */
  group: string;
  /** Address of the local interface to join on and send from (IPv4: IP_MULTICAST_IF). Default: any. */
  interfaceAddress?: string;
  /** IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS. Default 1 (link-local). */
  ttl?: number;
  /** IP_MULTICAST_LOOP: receive our own sends. Default false. */
  loop?: boolean;
}

export interface UdpBatchSocketOptions {
  /** Local address to bind ('0.0.0.0', '::', a unicast address, or the multicast group). */
  address: string;
  /** Local port; 0 lets the kernel pick (see socket.port). */
  port: number;
  /** 4 or 6; default from `address`. */
  family?: 4 | 6;
  /** Network namespace (name or absolute path) to create the socket in; it stays there. */
  netns?: string;
  multicast?: UdpMulticastOptions;
  /** SO_REUSEADDR (several sockets on one multicast port). */
  reuseAddr?: boolean;
  /** SO_RCVBUF / SO_SNDBUF in bytes (the kernel doubles and caps them). */
  rcvBuf?: number;
  sndBuf?: number;
}

export interface UdpStats {
  recvPackets: number;
  recvBytes: number;
  /** Datagrams longer than their slot: delivered with size 0 (drop them). */
  recvTruncated: number;
  sentPackets: number;
  sendErrors: number;
  sendAgain: number;
  lastErrno: number;
  /** 1 once a segmented send was refused with EIO and `gso` was turned off. */
  gsoDisabled: number;
}

/** errno EIO: the kernel's answer to UDP GSO without checksum offload on the path. */
const EIO = constants.errno.EIO;

/** Writes `ip` (IPv4 → ::ffff:a.b.c.d, or IPv6) as 16 bytes at out[off]. False if it is not an IP. */
export function ipToBytes16(ip: string, out: Uint8Array, off = 0): boolean {
  if (isIPv4(ip)) {
    out.fill(0, off, off + 10);
    out[off + 10] = 0xff;
    out[off + 11] = 0xff;
    const p = ip.split('.');
    for (let i = 0; i < 4; i++) out[off + 12 + i] = Number(p[i]);
    return true;
  }
  if (!isIPv6(ip)) return false;
  let s = ip;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  const words: number[] = [];
  const parseGroups = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const b = g.split('.').map(Number);
        out.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
      } else out.push(parseInt(g, 16));
    }
    return out;
  };
  const dbl = s.indexOf('::');
  if (dbl >= 0) {
    const head = parseGroups(s.slice(0, dbl));
    const tail = parseGroups(s.slice(dbl + 2));
    words.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  } else words.push(...parseGroups(s));
  for (let i = 0; i < 8; i++) {
    out[off + 2 * i] = words[i] >> 8;
    out[off + 2 * i + 1] = words[i] & 0xff;
  }
  return true;
}

/** The text form of the 16 bytes at a[off] (IPv4-mapped → dotted quad). Not for the hot path. */
export function bytes16ToIp(a: Uint8Array, off = 0): string {
  let mapped = a[off + 10] === 0xff && a[off + 11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (a[off + i] !== 0) mapped = false;
  if (mapped) return `${a[off + 12]}.${a[off + 13]}.${a[off + 14]}.${a[off + 15]}`;
  const w: string[] = [];
  for (let i = 0; i < 8; i++) w.push(((a[off + 2 * i] << 8) | a[off + 2 * i + 1]).toString(16));
  // Compress the longest run of zero words (RFC 5952).
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && w[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return w.join(':');
  return `${w.slice(0, best).join(':')}::${w.slice(best + bestLen).join(':')}`;
}

function closedError(what: string): TunlbError {
  return new TunlbError(ErrorCodes.DEVICE_CLOSED, `UDP socket ${what} is closed`, { socket: what });
}

/** Maps an Error thrown by the addon's udpOpen to a TunlbError. Exported for unit tests. */
export function mapUdpOpenError(e: unknown, what: string, netns: string | undefined): TunlbError {
  const code = errnoCode(e);
  const syscall = errnoSyscall(e);
  const details = { socket: what, netns, errno: code, syscall };
  const opts = { cause: e };
  if ((syscall === 'open netns' || syscall === 'setns') && code === 'ENOENT') {
    return new TunlbError(ErrorCodes.SOCKET,
      netnsMissingMessage(netns),
      details, opts);
  }
  if (code === 'EPERM' || code === 'EACCES') {
    return new TunlbError(ErrorCodes.NO_PERMISSION,
      `cannot open UDP socket ${what} (${syscall}: ${code}): run as root or grant CAP_NET_ADMIN/CAP_NET_BIND_SERVICE`,
      details, opts);
  }
  if (code === 'EADDRNOTAVAIL' || code === 'ENODEV') {
    return new TunlbError(ErrorCodes.ADDRESS_NOT_PRESENT,
      `cannot open UDP socket ${what}: address not present on this host (${syscall}: ${code})`, details, opts);
  }
  if (code === 'EADDRINUSE') {
    return new TunlbError(ErrorCodes.SOCKET,
      `cannot bind UDP socket ${what}: address in use (use reuseAddr for a shared multicast port)`, details, opts);
  }
  return new TunlbError(ErrorCodes.SOCKET,
    `cannot open UDP socket ${what} (${syscall || 'udpOpen'}: ${code ?? (e as Error)?.message})`, details, opts);
}

/**
 * Segmented entries of a send (src/packet/gso-split.ts), index i ↔ datagram entry i: when
 * chunk[i] > 0, entry i is buf[offsets[i] .. +sizes[i]] cut into chunk[i]-byte payloads, each
 * sent behind its header hdrs[hdrOffs[i] + j*hdrLens[i] .. +hdrLens[i]] as one UDP datagram
 * (UDP GSO: one message, the kernel segments). chunk[i] = 0: a plain datagram. Caller-owned.
 */
export interface SendSegments {
  chunk: Uint16Array;
  hdrs: Uint8Array;
  hdrOffs: Uint32Array;
  hdrLens: Uint16Array;
}

export class UdpBatchSocket extends PolledFd {
  readonly family: 4 | 6;
  readonly address: string;
  /** The bound port (the kernel's choice when opened with port 0). */
  readonly port: number;
  readonly stats: UdpStats = {
    recvPackets: 0, recvBytes: 0, recvTruncated: 0, sentPackets: 0, sendErrors: 0, sendAgain: 0, lastErrno: 0, gsoDisabled: 0,
  };
  private readonly info = new Int32Array(INFO_LEN);
  /**
   * The kernel takes UDP GSO (UDP_SEGMENT) on this socket: probed at open; turned off for
   * good when a segmented send is refused with EIO (no UDP checksum offload on the path), as
   * wireguard-go's StdNetBind does.
   */
  gso: boolean;

  private constructor(nat: NativeAddon, fd: number, family: 4 | 6, address: string, port: number, gso: boolean) {
    super(nat, fd);
    this.family = family;
    this.address = address;
    this.port = port;
    this.gso = gso;
  }

  static open(opts: UdpBatchSocketOptions): UdpBatchSocket {
    const what = `${opts.address}:${opts.port}${opts.netns ? ` in netns ${opts.netns}` : ''}`;
    const addr = new Uint8Array(16);
    if (!ipToBytes16(opts.address, addr)) {
      throw new TunlbError(ErrorCodes.SOCKET, `not an IP address: "${opts.address}"`, { socket: what });
    }
    const family: 4 | 6 = opts.family ?? (isIPv4(opts.address) ? 4 : 6);
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
      throw new TunlbError(ErrorCodes.SOCKET, `bad UDP port ${opts.port}`, { socket: what });
    }
    let group: Uint8Array | null = null;
    let iface: Uint8Array | null = null;
    const mc = opts.multicast;
    if (mc !== undefined) {
      group = new Uint8Array(16);
      if (!ipToBytes16(mc.group, group)) throw new TunlbError(ErrorCodes.SOCKET, `bad multicast group "${mc.group}"`);
      if (mc.interfaceAddress !== undefined) {
        iface = new Uint8Array(16);
        if (!ipToBytes16(mc.interfaceAddress, iface)) {
          throw new TunlbError(ErrorCodes.SOCKET, `bad multicast interface address "${mc.interfaceAddress}"`);
        }
      }
    }
    const nat = native();
    let r: { fd: number; port: number; gso: boolean };
    try {
      r = nat.udpOpen(family, addr, opts.port, netnsPath(opts.netns),
        [opts.reuseAddr ? 1 : 0, opts.rcvBuf ?? 0, opts.sndBuf ?? 0, mc?.ttl ?? 1, mc?.loop ? 1 : 0], group, iface);
    } catch (e) {
      throw mapUdpOpenError(e, what, opts.netns);
    }
    return new UdpBatchSocket(nat, r.fd, family, opts.address, r.port, r.gso === true);
  }


  /**
   * Receives up to `max` datagrams into slots 0..n-1 (same layout as TunDevice.read) and their
   * senders into addrs/ports (index i ↔ slot i). Returns n; 0 = nothing now. A datagram longer
   * than the slot has size 0 (counted in stats.recvTruncated).
   */
  recv(batch: PacketBatch, max: number, addrs: Uint8Array, ports: Uint16Array): number {
    const fd = this.fd;
    if (fd < 0) throw closedError(this.address);
    if (max > batch.count) max = batch.count;
    const info = this.info;
    const trunc = info[INFO_TRUNCATED];
    const n = this.nat.udpRecv(fd, batch.buf, batch.offsets, batch.sizes, batch.slotSize, batch.headroom, max, addrs,
      ports, info);
    if (n < 0) {
      this.stats.lastErrno = -n;
      throw new TunlbError(ErrorCodes.SOCKET, `receiving on UDP socket ${this.address}:${this.port} failed (errno ${-n})`,
        { errno: -n });
    }
    const st = this.stats;
    st.recvPackets += n;
    if (info[INFO_TRUNCATED] !== trunc) st.recvTruncated += info[INFO_TRUNCATED] - trunc;
    let bytes = 0;
    const sizes = batch.sizes;
    for (let i = 0; i < n; i++) bytes += sizes[i];
    st.recvBytes += bytes;
    return n;
  }

  /**
   * Sends entries 0..count-1: datagram buf[offsets[i] .. +sizes[i]] to addrs[16i..], ports[i],
   * or, with `segs` and segs.chunk[i] > 0, that entry's segmented datagrams (SendSegments; only
   * while `gso`). Returns how many entries the kernel took; EAGAIN stops early, refused
   * datagrams are skipped and counted (stats.sendErrors). The caller counts count - returned
   * as drops. A segmented send refused with EIO turns `gso` off (stats.gsoDisabled).
   */
  send(batch: PacketBatch, count: number, addrs: Uint8Array, ports: Uint16Array, segs?: SendSegments): number {
    const fd = this.fd;
    if (fd < 0) throw closedError(this.address);
    if (count > batch.count) count = batch.count;
    const info = this.info;
    info[INFO_STOPPED_AGAIN] = 0;
    const errs = info[INFO_ERRORS];
    const n = this.nat.udpSend(fd, this.family, batch.buf, batch.offsets, batch.sizes, count, addrs, ports, info,
      segs?.chunk ?? null, segs?.hdrs, segs?.hdrOffs, segs?.hdrLens);
    const st = this.stats;
    st.sentPackets += n;
    if (info[INFO_ERRORS] !== errs) {
      st.sendErrors += info[INFO_ERRORS] - errs;
      st.lastErrno = info[INFO_LAST_ERRNO];
      if (segs !== undefined && st.lastErrno === EIO && this.gso) {
        this.gso = false;
        st.gsoDisabled = 1;
      }
    }
    if (info[INFO_STOPPED_AGAIN] !== 0) st.sendAgain++;
    return n;
  }

  protected closedError(): TunlbError {
    return closedError(this.address);
  }
}
