/**
 * TunDevice: a Linux TUN device (IFF_TUN | IFF_NO_PI) driven in batches from the event loop,
 * shaped like wireguard-go's tun.Device: read/write many packets per call into caller-owned
 * PacketBatch buffers with headroom. The fd is O_NONBLOCK; readiness comes from libuv
 * (uv_poll on the fd, in the addon): no thread pool, never a blocking syscall on the loop.
 *
 * Typical loop (no allocation per packet):
 *   dev.onReadable(() => { let n; while ((n = dev.read(rx)) > 0) { ...; dev.write(tx, m); } });
 *
 * Ownership: the device owns its fd; batches belong to the caller and are only touched during
 * a read/write call. close() is idempotent: it stops polling, closes the fd and so releases
 * the device (a non-persistent TUN device disappears with its last fd); every other method
 * then throws TunlbError(DEVICE_CLOSED). Process exit releases it too (fd is O_CLOEXEC, so
 * child processes never inherit it).
 */
import { ErrorCodes, TunlbError } from '../errors';
import {
  FEAT_CSUM, FEAT_MULTI_QUEUE, FEAT_TSO4, FEAT_TSO6, FEAT_VNET_HDR, INFO_ERRORS, INFO_LAST_ERRNO, INFO_LEN,
  INFO_STOPPED_AGAIN, INFO_TRUNCATED, native, netnsPath, netnsMissingMessage, errnoCode, errnoSyscall, WANT_MULTI_QUEUE, WANT_OFFLOAD,
  WANT_VNET_HDR, type NativeAddon,
} from './native';
import { GSO_MAX_PACKET, type PacketBatch } from './packet-batch';
import { PolledFd } from './polled-fd';

/** What the device actually got (probed once at open); log it. */
export interface TunFeatures {
  /** Packets carry a virtio_net_hdr, exchanged through PacketBatch.vnet. */
  vnetHdr: boolean;
  /** TUN_F_CSUM: packets may carry partial checksums (vnet flag NEEDS_CSUM). */
  csum: boolean;
  /** TUN_F_TSO4 / TUN_F_TSO6: reads may return TCP GSO super-packets up to 64 KiB. */
  tso4: boolean;
  tso6: boolean;
  /** IFF_MULTI_QUEUE: more queues may be opened on the same name. */
  multiQueue: boolean;
}

/** Counters, updated once per call (cumulative). */
export interface TunStats {
  readPackets: number;
  readBytes: number;
  /**
   * Packets read that were longer than their batch slot (e.g. the MTU raised under a running
   * balancer): delivered with size 0, so the forwarder drops them (counted as truncated).
   */
  readTruncated: number;
  writePackets: number;
  writeBytes: number;
  /** Packets the kernel refused (bad length/offset, EINVAL, ...); lastErrno tells why. */
  writeErrors: number;
  /** write() calls that stopped at EAGAIN (the rest of that batch was not written). */
  writeAgain: number;
  lastErrno: number;
}

/** The interface the forwarding pipeline uses; TunDevice and FakeTunDevice implement it. */
export interface TunLike {
  readonly name: string;
  readonly mtu: number;
  readonly features: Readonly<TunFeatures>;
  /** Largest packet a read may return: the MTU, or 65535 with TSO. Batch capacity must be ≥ it. */
  readonly maxPacketSize: number;
  readonly closed: boolean;
  readonly stats: Readonly<TunStats>;
  /**
   * Reads up to `max` (default batch.count) packets into slots 0..n-1 of `batch` until the
   * kernel has no more (EAGAIN). Sets sizes[i], offsets[i] = i*slotSize + headroom and, with
   * features.vnetHdr, the slot's virtio header. Returns n; 0 = nothing now. Never blocks.
   * sizes[i] ≤ batch.capacity always: a packet longer than its slot has size 0 (counted in
   * stats.readTruncated).
   * Throws DEVICE_IO only when the device itself failed (e.g. deleted), DEVICE_CLOSED after close.
   */
  read(batch: PacketBatch, max?: number): number;
  /**
   * Writes packets 0..count-1 (buf[offsets[i] .. +sizes[i]], with the slot's virtio header
   * when features.vnetHdr). Returns how many the kernel took. EAGAIN stops early; packets the
   * kernel refuses are skipped and counted in stats.writeErrors. The caller counts
   * count - returned as drops (a count, not an index).
   */
  write(batch: PacketBatch, count: number): number;
  /**
   * Calls `cb` from the event loop whenever packets are waiting (level-triggered: again on the
   * next loop turn if they were not all read). Replaces any earlier callback and starts polling.
   */
  onReadable(cb: () => void): void;
  /** Stops calling the onReadable callback (polling can be restarted with onReadable). */
  stop(): void;
  /** Idempotent. */
  close(): void;
}

export interface TunOpenOptions {
  /** Interface name (≤ 15 bytes); "tun%d" lets the kernel pick (see device.name). */
  name: string;
  /** MTU set with SIOCSIFMTU. Default 1500. */
  mtu?: number;
  /** IFF_MULTI_QUEUE: each open of the same name adds a queue (one per worker). */
  multiQueue?: boolean;
  /** IFF_VNET_HDR: exchange a virtio_net_hdr per packet (PacketBatch.vnet). */
  vnetHdr?: boolean;
  /** TUNSETOFFLOAD CSUM|TSO4|TSO6 as far as the kernel accepts (implies vnetHdr). */
  offload?: boolean;
  /**
   * Network namespace to create the device in: a name from `ip netns add NAME`
   * (/run/netns/NAME) or an absolute path. The calling thread enters it around the open and
   * returns; the device and its fd stay in that namespace.
   */
  netns?: string;
}

function closedError(name: string): TunlbError {
  return new TunlbError(ErrorCodes.DEVICE_CLOSED, `TUN device ${name} is closed`, { device: name });
}

/**
 * Maps an Error thrown by the addon's tunOpen to a TunlbError (one line, with the fix).
 * Exported for unit tests.
 */
export function mapTunOpenError(e: unknown, name: string, netns: string | undefined): TunlbError {
  const code = errnoCode(e);
  const syscall = errnoSyscall(e);
  const details = { device: name, netns, errno: code, syscall };
  const opts = { cause: e };
  if (syscall === 'open netns' || syscall === 'setns') {
    if (code === 'ENOENT') {
      return new TunlbError(ErrorCodes.DEVICE_IO,
        netnsMissingMessage(netns),
        details, opts);
    }
    if (code === 'EPERM' || code === 'EACCES') {
      return new TunlbError(ErrorCodes.NO_PERMISSION,
        `cannot enter network namespace "${netns}": run as root or grant CAP_SYS_ADMIN`, details, opts);
    }
    return new TunlbError(ErrorCodes.DEVICE_IO,
      `cannot enter network namespace "${netns}" (${syscall}: ${code ?? 'unknown error'})`, details, opts);
  }
  if (code === 'EPERM' || code === 'EACCES') {
    return new TunlbError(ErrorCodes.NO_PERMISSION,
      `cannot create TUN device ${name} (${syscall}: ${code}): run as root or grant CAP_NET_ADMIN`, details, opts);
  }
  if (syscall === 'open /dev/net/tun' && (code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO')) {
    return new TunlbError(ErrorCodes.NO_TUN_DEVICE,
      `no TUN support (/dev/net/tun: ${code}): load the module with \`modprobe tun\``, details, opts);
  }
  if (syscall === 'TUNSETIFF' && code === 'EBUSY') {
    return new TunlbError(ErrorCodes.DEVICE_BUSY,
      `TUN device name ${name} is in use (another fd has it; open it with multiQueue to add queues)`, details, opts);
  }
  if (syscall === 'TUNSETIFF' && code === 'EINVAL') {
    return new TunlbError(ErrorCodes.DEVICE_BUSY,
      `a device named ${name} exists with another type or flags (multi-queue/vnet mismatch?): pick another name`,
      details, opts);
  }
  return new TunlbError(ErrorCodes.DEVICE_IO,
    `cannot open TUN device ${name} (${syscall}: ${code ?? String(e)})`, details, opts);
}

export class TunDevice extends PolledFd implements TunLike {
  readonly name: string;
  readonly mtu: number;
  readonly features: Readonly<TunFeatures>;
  readonly maxPacketSize: number;
  readonly stats: TunStats = {
    readPackets: 0, readBytes: 0, readTruncated: 0, writePackets: 0, writeBytes: 0, writeErrors: 0, writeAgain: 0, lastErrno: 0,
  };
  private readonly info = new Int32Array(INFO_LEN);
  private readonly vnet: boolean;

  private constructor(nat: NativeAddon, fd: number, name: string, mtu: number, feat: number) {
    super(nat, fd);
    this.name = name;
    this.mtu = mtu;
    this.features = Object.freeze({
      vnetHdr: (feat & FEAT_VNET_HDR) !== 0,
      csum: (feat & FEAT_CSUM) !== 0,
      tso4: (feat & FEAT_TSO4) !== 0,
      tso6: (feat & FEAT_TSO6) !== 0,
      multiQueue: (feat & FEAT_MULTI_QUEUE) !== 0,
    });
    this.vnet = this.features.vnetHdr;
    this.maxPacketSize = this.features.tso4 || this.features.tso6 ? GSO_MAX_PACKET : mtu;
  }

  /** Opens (creating if needed) the device, sets its MTU and brings it up. */
  static open(opts: TunOpenOptions): TunDevice {
    const mtu = opts.mtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new RangeError(`TUN mtu must be 68..65535, got ${mtu}`);
    const nat = native();
    let want = 0;
    if (opts.multiQueue) want |= WANT_MULTI_QUEUE;
    if (opts.vnetHdr) want |= WANT_VNET_HDR;
    if (opts.offload) want |= WANT_OFFLOAD | WANT_VNET_HDR;
    let r: { fd: number; name: string; features: number };
    try {
      r = nat.tunOpen(opts.name, mtu, want, netnsPath(opts.netns));
    } catch (e) {
      throw mapTunOpenError(e, opts.name, opts.netns);
    }
    return new TunDevice(nat, r.fd, r.name, mtu, r.features);
  }


  read(batch: PacketBatch, max: number = batch.count): number {
    const fd = this.fd;
    if (fd < 0) throw closedError(this.name);
    if (batch.slotSize - batch.headroom < this.maxPacketSize) this.tooSmall(batch);
    if (max > batch.count) max = batch.count;
    const info = this.info;
    const trunc = info[INFO_TRUNCATED];
    const n = this.nat.tunRead(fd, batch.buf, batch.offsets, batch.sizes, batch.slotSize, batch.headroom, max,
      this.vnet ? batch.vnet : null, info);
    if (n < 0) {
      this.stats.lastErrno = -n;
      throw new TunlbError(ErrorCodes.DEVICE_IO, `reading TUN device ${this.name} failed (errno ${-n})`,
        { device: this.name, errno: -n });
    }
    if (n > 0) {
      const st = this.stats;
      st.readPackets += n;
      // The addon reports a packet longer than its slot with size 0 (native/tun.cc tunRead);
      // the same check here keeps sizes within the slots whatever the addon build says.
      let bytes = 0;
      let over = info[INFO_TRUNCATED] - trunc;
      const sizes = batch.sizes;
      const cap = batch.slotSize - batch.headroom;
      for (let i = 0; i < n; i++) {
        const s = sizes[i];
        if (s > cap) {
          sizes[i] = 0;
          over++;
        } else {
          bytes += s;
        }
      }
      st.readBytes += bytes;
      if (over !== 0) st.readTruncated += over;
    }
    return n;
  }

  write(batch: PacketBatch, count: number): number {
    const fd = this.fd;
    if (fd < 0) throw closedError(this.name);
    if (count > batch.count) count = batch.count;
    const info = this.info;
    info[INFO_STOPPED_AGAIN] = 0;
    const errs = info[INFO_ERRORS];
    const n = this.nat.tunWrite(fd, batch.buf, batch.offsets, batch.sizes, count, this.vnet ? batch.vnet : null, info);
    const st = this.stats;
    st.writePackets += n;
    if (info[INFO_ERRORS] !== errs) {
      st.writeErrors += info[INFO_ERRORS] - errs;
      st.lastErrno = info[INFO_LAST_ERRNO];
    }
    if (info[INFO_STOPPED_AGAIN] !== 0) st.writeAgain++;
    // Bytes: exact when nothing was skipped (the common case), else an upper bound of the prefix.
    let bytes = 0;
    const sizes = batch.sizes;
    for (let i = 0; i < n; i++) bytes += sizes[i];
    st.writeBytes += bytes;
    return n;
  }

  protected closedError(): TunlbError {
    return closedError(this.name);
  }

  private tooSmall(batch: PacketBatch): never {
    throw new TunlbError(ErrorCodes.DEVICE_IO,
      `batch slots hold ${batch.slotSize - batch.headroom} bytes but ${this.name} may return ${this.maxPacketSize}: ` +
        'allocate the PacketBatch with maxPacket = device.maxPacketSize',
      { device: this.name });
  }
}
