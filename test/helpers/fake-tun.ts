/**
 * FakeTunDevice: an in-memory TunLike for unit tests of the forwarding pipeline (no root, no
 * kernel). "Kernel → app": inject() queues a copy of a packet, which read() then delivers with
 * the same slot layout as TunDevice. "App → kernel": write() copies each packet into
 * `written` (and calls `onWrite`, which a test may use to answer, e.g. echo replies).
 *
 * It follows the real device's semantics where tests can observe them: bounded queue (like
 * the TUN txqueuelen, 500 by default; overflow is dropped and counted), level-triggered
 * onReadable from the event loop (setImmediate, never synchronously inside inject), write
 * stopping early to emulate EAGAIN (`writeLimit`), packets outside the buffer skipped and
 * counted, DEVICE_CLOSED after close.
 */
import { ErrorCodes, TunlbError } from '../../src/errors';
import { GSO_MAX_PACKET, VNET_HDR_LEN, type PacketBatch } from '../../src/dataplane/packet-batch';
import type { TunFeatures, TunLike, TunStats } from '../../src/dataplane/tun-device';

export interface FakeTunOptions {
  name?: string;
  mtu?: number;
  features?: Partial<TunFeatures>;
  /** Packets queued kernel → app before inject() drops. Default 500. */
  queueLimit?: number;
  /** Packets accepted per write() call before it stops as on EAGAIN. Default unlimited. */
  writeLimit?: number;
}

export interface FakeWritten {
  packet: Uint8Array;
  /** The virtio header written with it (features.vnetHdr only). */
  vnet: Uint8Array | undefined;
}

const EINVAL = 22;

export class FakeTunDevice implements TunLike {
  readonly name: string;
  readonly mtu: number;
  readonly features: Readonly<TunFeatures>;
  readonly maxPacketSize: number;
  readonly stats: TunStats = {
    readPackets: 0, readBytes: 0, readTruncated: 0, writePackets: 0, writeBytes: 0, writeErrors: 0, writeAgain: 0, lastErrno: 0,
  };
  /** Packets injected but dropped because the queue was full. */
  injectDrops = 0;
  /** Everything the app wrote, oldest first (see takeWritten). */
  readonly written: FakeWritten[] = [];
  /** Called for each packet the app writes (after it is recorded). */
  onWrite: ((w: FakeWritten) => void) | undefined;
  writeLimit: number;

  private readonly queue: { packet: Uint8Array; vnet: Uint8Array | undefined }[] = [];
  private readonly queueLimit: number;
  private isClosed = false;
  private polling = false;
  private scheduled = false;
  private cb: (() => void) | undefined;

  constructor(opts: FakeTunOptions = {}) {
    this.name = opts.name ?? 'faketun0';
    this.mtu = opts.mtu ?? 1500;
    const f = opts.features ?? {};
    this.features = Object.freeze({
      vnetHdr: f.vnetHdr ?? false,
      csum: f.csum ?? false,
      tso4: f.tso4 ?? false,
      tso6: f.tso6 ?? false,
      multiQueue: f.multiQueue ?? false,
    });
    this.maxPacketSize = this.features.tso4 || this.features.tso6 ? GSO_MAX_PACKET : this.mtu;
    this.queueLimit = opts.queueLimit ?? 500;
    this.writeLimit = opts.writeLimit ?? Infinity;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Packets waiting to be read. */
  get pending(): number {
    return this.queue.length;
  }

  /**
   * Kernel → app: queues a copy of `packet` (and of its virtio header, zeros if omitted).
   * Returns false when dropped (queue full, or larger than maxPacketSize).
   */
  inject(packet: Uint8Array, vnet?: Uint8Array): boolean {
    if (this.isClosed) throw this.closedError();
    if (this.queue.length >= this.queueLimit || packet.length > this.maxPacketSize || packet.length === 0) {
      this.injectDrops++;
      return false;
    }
    this.queue.push({ packet: packet.slice(), vnet: vnet === undefined ? undefined : vnet.slice(0, VNET_HDR_LEN) });
    this.schedule();
    return true;
  }

  /** Returns and forgets what the app wrote so far. */
  takeWritten(): FakeWritten[] {
    return this.written.splice(0, this.written.length);
  }

  read(batch: PacketBatch, max: number = batch.count): number {
    if (this.isClosed) throw this.closedError();
    if (batch.slotSize - batch.headroom < this.maxPacketSize) {
      throw new TunlbError(ErrorCodes.DEVICE_IO,
        `batch slots hold ${batch.slotSize - batch.headroom} bytes but ${this.name} may return ${this.maxPacketSize}`);
    }
    if (max > batch.count) max = batch.count;
    let n = 0;
    while (n < max && this.queue.length > 0) {
      const q = this.queue.shift()!;
      const off = n * batch.slotSize + batch.headroom;
      batch.buf.set(q.packet, off);
      batch.offsets[n] = off;
      batch.sizes[n] = q.packet.length;
      if (this.features.vnetHdr) {
        batch.vnet.fill(0, n * VNET_HDR_LEN, (n + 1) * VNET_HDR_LEN);
        if (q.vnet !== undefined) batch.vnet.set(q.vnet, n * VNET_HDR_LEN);
      }
      this.stats.readBytes += q.packet.length;
      n++;
    }
    this.stats.readPackets += n;
    return n;
  }

  write(batch: PacketBatch, count: number): number {
    if (this.isClosed) throw this.closedError();
    if (count > batch.count) count = batch.count;
    let written = 0;
    for (let i = 0; i < count; i++) {
      const off = batch.offsets[i];
      const len = batch.sizes[i];
      if (len === 0 || off + len > batch.buf.length) {
        this.stats.writeErrors++;
        this.stats.lastErrno = EINVAL;
        continue;
      }
      if (written >= this.writeLimit) {
        this.stats.writeAgain++;
        break;
      }
      const w: FakeWritten = {
        packet: batch.buf.slice(off, off + len),
        vnet: this.features.vnetHdr ? batch.vnet.slice(i * VNET_HDR_LEN, (i + 1) * VNET_HDR_LEN) : undefined,
      };
      this.written.push(w);
      written++;
      this.stats.writeBytes += len;
      this.onWrite?.(w);
    }
    this.stats.writePackets += written;
    return written;
  }

  onReadable(cb: () => void): void {
    if (this.isClosed) throw this.closedError();
    this.cb = cb;
    this.polling = true;
    this.schedule();
  }

  stop(): void {
    if (this.isClosed) throw this.closedError();
    this.polling = false;
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.polling = false;
    this.cb = undefined;
    this.queue.length = 0;
  }

  /** Level-triggered like uv_poll: fires on a later loop turn while packets are waiting. */
  private schedule(): void {
    if (!this.polling || this.scheduled || this.queue.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (!this.polling || this.isClosed || this.queue.length === 0) return;
      this.cb?.();
      this.schedule();
    });
  }

  private closedError(): TunlbError {
    return new TunlbError(ErrorCodes.DEVICE_CLOSED, `TUN device ${this.name} is closed`, { device: this.name });
  }
}
