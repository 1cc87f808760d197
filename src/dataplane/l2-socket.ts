/**
 * L2Socket: an AF_PACKET socket (packet(7), SOCK_RAW) that sends whole Ethernet frames in
 * batches with sendmmsg(2): the DSR output of the forwarder (direct server return: the packet
 * keeps the VIP as destination and reaches the backend's MAC address on the back network).
 *
 * Frames come from caller-owned arrays (a FrameBatch: a PacketBatch, or the forwarder's
 * DsrOutput over the read batch's buffer): frame i = buf[offsets[i] .. +sizes[i]], starting
 * with its 14-byte Ethernet header (dst MAC, src MAC, ethertype 0x0800 / 0x86DD) that the
 * forwarder wrote into the packet's headroom. Each frame may name its own interface
 * (`ifindex[i]`, 0 = the socket's); the kernel takes the protocol from the ethertype.
 *
 * Offloads (`vnetHdr`, PACKET_VNET_HDR): each frame is then preceded by a 10-byte
 * virtio_net_hdr (linux/virtio_net.h, the same layout as the TUN device's, little-endian);
 * csum_start and hdr_len count from the Ethernet header. A GSO super-packet read from the TUN
 * device (gso_type ≠ 0, up to 64 KiB) leaves as ONE frame and the kernel segments it (or a
 * TSO-capable path carries it whole, as veth does); a partial checksum (NEEDS_CSUM) is
 * completed by the kernel. Without vnetHdr every frame must be complete and ≤ MTU + 14.
 *
 * The socket is bound to one interface with protocol 0: it registers no receive hook and
 * never queues incoming frames. It is created in the process's current namespace, or in
 * `netns` (like the TUN device), and stays there. close() is idempotent; every other method
 * then throws TunlbError(DEVICE_CLOSED). Needs CAP_NET_RAW (NO_PERMISSION otherwise).
 */
import { ErrorCodes, TunlbError } from '../errors';
import {
  INFO_ERRORS, INFO_LAST_ERRNO, INFO_LEN, INFO_STOPPED_AGAIN, errnoCode, errnoSyscall, native, netnsPath, netnsMissingMessage,
  type NativeAddon,
} from './native';

/** Bytes of the Ethernet II header the forwarder prepends (dst MAC, src MAC, ethertype). */
export const ETH_HDR_LEN = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_IPV6 = 0x86dd;

/** What the L2 socket sends: frame i = buf[offsets[i] .. offsets[i] + sizes[i]). */
export interface FrameBatch {
  readonly buf: Uint8Array;
  readonly offsets: Uint32Array;
  readonly sizes: Uint32Array;
}

export interface InterfaceInfo {
  name: string;
  ifindex: number;
  /** 6 bytes. */
  mac: Uint8Array;
  mtu: number;
}

/** The addon's AF_PACKET functions (native/packet-socket.cc). */
interface PacketAddon {
  ifInfo(name: string, netnsPath: string): InterfaceInfo;
  packetOpen(name: string, netnsPath: string, opts: [vnetHdr: number, sndBuf: number]): InterfaceInfo & { fd: number };
  packetSend(
    fd: number, ifindex: number, buf: Uint8Array, offsets: Uint32Array, sizes: Uint32Array, count: number,
    vnet: Uint8Array | null, ifindexes: Int32Array | null, info: Int32Array,
  ): number;
}

export interface L2SocketOptions {
  /** Interface to bind (and whose MAC is the frames' source), e.g. "back0". */
  interface: string;
  /** Network namespace (name or absolute path) to open the socket in; default the current one. */
  netns?: string;
  /** PACKET_VNET_HDR: every send passes one virtio_net_hdr per frame. Default false. */
  vnetHdr?: boolean;
  /** SO_SNDBUF in bytes (the kernel doubles and caps it). Default 4 MiB (64 KiB GSO frames). */
  sndBuf?: number;
}

export interface L2Stats {
  sentFrames: number;
  sendErrors: number;
  sendAgain: number;
  lastErrno: number;
}

function addon(): NativeAddon & PacketAddon {
  return native() as NativeAddon & PacketAddon;
}

/** Maps an Error thrown by the addon's packetOpen / ifInfo to a TunlbError. Exported for unit tests. */
export function mapPacketOpenError(e: unknown, what: string, netns: string | undefined): TunlbError {
  if (e instanceof TunlbError) return e;
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
      `cannot open packet socket ${what} (${syscall}: ${code}): run as root or grant CAP_NET_RAW`, details, opts);
  }
  if (code === 'ENODEV' || code === 'ENXIO') {
    return new TunlbError(ErrorCodes.SOCKET, `cannot open packet socket ${what}: no such interface (${syscall}: ${code})`,
      details, opts);
  }
  return new TunlbError(ErrorCodes.SOCKET,
    `cannot open packet socket ${what} (${syscall || 'packetOpen'}: ${code ?? (e as Error)?.message})`, details, opts);
}

/** Index, MAC and MTU of interface `name` (in `netns`, default the current namespace). Not for the hot path. */
export function interfaceInfo(name: string, netns?: string): InterfaceInfo {
  try {
    return addon().ifInfo(name, netnsPath(netns));
  } catch (e) {
    throw mapPacketOpenError(e, `on ${name}${netns ? ` in netns ${netns}` : ''}`, netns);
  }
}

/** "aa:bb:cc:dd:ee:ff" of 6 bytes at a[off]. Not for the hot path. */
export function formatMac(a: Uint8Array, off = 0): string {
  const p: string[] = [];
  for (let i = 0; i < 6; i++) p.push((a[off + i] ?? 0).toString(16).padStart(2, '0'));
  return p.join(':');
}

/** Writes "aa:bb:cc:dd:ee:ff" as 6 bytes at out[off]; false if it is not a MAC address. */
export function parseMac(text: string, out: Uint8Array, off = 0): boolean {
  const m = /^([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})$/i.exec(text.trim());
  if (m === null) return false;
  for (let i = 0; i < 6; i++) out[off + i] = parseInt(m[i + 1]!, 16);
  return true;
}

export class L2Socket {
  readonly name: string;
  readonly ifindex: number;
  readonly mac: Uint8Array;
  readonly mtu: number;
  readonly vnetHdr: boolean;
  readonly stats: L2Stats = { sentFrames: 0, sendErrors: 0, sendAgain: 0, lastErrno: 0 };
  private fd: number;
  private readonly nat: NativeAddon & PacketAddon;
  private readonly info = new Int32Array(INFO_LEN);

  private constructor(nat: NativeAddon & PacketAddon, r: InterfaceInfo & { fd: number }, vnetHdr: boolean) {
    this.nat = nat;
    this.fd = r.fd;
    this.name = r.name;
    this.ifindex = r.ifindex;
    this.mac = r.mac;
    this.mtu = r.mtu;
    this.vnetHdr = vnetHdr;
  }

  /** Opens the socket; throws TunlbError (SOCKET, NO_PERMISSION, NATIVE_ADDON_MISSING). */
  static open(opts: L2SocketOptions): L2Socket {
    const what = `on ${opts.interface}${opts.netns ? ` in netns ${opts.netns}` : ''}`;
    const nat = addon();
    const vnet = opts.vnetHdr === true;
    let r: InterfaceInfo & { fd: number };
    try {
      r = nat.packetOpen(opts.interface, netnsPath(opts.netns), [vnet ? 1 : 0, opts.sndBuf ?? 4 << 20]);
    } catch (e) {
      throw mapPacketOpenError(e, what, opts.netns);
    }
    return new L2Socket(nat, r, vnet);
  }

  get closed(): boolean {
    return this.fd < 0;
  }

  /**
   * Sends frames 0..count-1 of `frames`; `vnet` (one virtio_net_hdr per frame, required when
   * the socket has vnetHdr, else must be null) and `ifindex` (per frame, 0 = this socket's
   * interface; null = all on it). Returns how many the kernel took: EAGAIN stops early,
   * refused frames are skipped and counted (stats.sendErrors). The caller counts
   * count - returned as drops. Allocates nothing.
   */
  send(frames: FrameBatch, count: number, vnet: Uint8Array | null, ifindex: Int32Array | null): number {
    const fd = this.fd;
    if (fd < 0) throw new TunlbError(ErrorCodes.DEVICE_CLOSED, `packet socket on ${this.name} is closed`, { socket: this.name });
    if (count <= 0) return 0;
    if (this.vnetHdr && vnet === null) throw new RangeError('L2Socket.send: a socket opened with vnetHdr needs the virtio headers');
    const info = this.info;
    info[INFO_STOPPED_AGAIN] = 0;
    const errs = info[INFO_ERRORS]!;
    const n = this.nat.packetSend(fd, this.ifindex, frames.buf, frames.offsets, frames.sizes, count,
      this.vnetHdr ? vnet : null, ifindex, info);
    const st = this.stats;
    st.sentFrames += n;
    if (info[INFO_ERRORS] !== errs) {
      st.sendErrors += info[INFO_ERRORS]! - errs;
      st.lastErrno = info[INFO_LAST_ERRNO]!;
    }
    if (info[INFO_STOPPED_AGAIN] !== 0) st.sendAgain++;
    return n;
  }

  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    this.nat.closeFd(fd);
  }
}
