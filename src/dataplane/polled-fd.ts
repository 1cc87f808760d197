/**
 * What every batched fd wrapper of the addon shares (TunDevice, UdpBatchSocket): a libuv poll
 * handle (uv_poll, level-triggered, on the event loop: never the thread pool) that calls JS
 * when the fd is readable, and the close order libuv requires.
 *
 * Contract:
 * - `fd` is owned by the wrapper: -1 once closed. Subclasses do their I/O on it and throw
 *   `closedError()` when it is -1.
 * - `onReadable(cb)` replaces the callback and (re)starts polling; `stop()` pauses it;
 *   `unref()` lets the process exit while polling (like socket.unref()).
 * - `close()` is idempotent: it drops the callback, closes the poll handle BEFORE the fd
 *   (libuv's rule: a poll handle must not outlive its fd), then closes the fd. Any later
 *   `onReadable`/`stop` throws `closedError()`.
 */
import type { TunlbError } from '../errors';
import { UV_READABLE, type NativeAddon, type NativePoller } from './native';

export abstract class PolledFd {
  protected fd: number;
  protected readonly nat: NativeAddon;
  private poller: NativePoller | undefined;
  private readableCb: (() => void) | undefined;

  protected constructor(nat: NativeAddon, fd: number) {
    this.nat = nat;
    this.fd = fd;
  }

  /** The DEVICE_CLOSED / SOCKET error this wrapper throws once closed. */
  protected abstract closedError(): TunlbError;

  get closed(): boolean {
    return this.fd < 0;
  }

  /** Level-triggered readiness callback: called while the fd has data to read. */
  onReadable(cb: () => void): void {
    if (this.fd < 0) throw this.closedError();
    this.readableCb = cb;
    if (this.poller === undefined) {
      this.poller = new this.nat.Poller(this.fd, () => {
        const f = this.readableCb;
        if (f !== undefined && this.fd >= 0) f();
      });
    }
    this.poller.start(UV_READABLE);
  }

  stop(): void {
    if (this.fd < 0) throw this.closedError();
    this.poller?.stop();
  }

  unref(): void {
    this.poller?.unref();
  }

  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    this.readableCb = undefined;
    this.poller?.close(); // before the fd is closed (libuv's rule)
    this.poller = undefined;
    this.nat.closeFd(fd);
  }
}
