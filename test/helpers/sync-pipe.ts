/**
 * An in-memory connection pair for the bulk sync stream (src/cluster/sync-stream.ts
 * SyncConnection), shaped like two net.Sockets over a network with bounded buffers:
 *
 * - write() queues bytes on the writer (`writableLength`); they move to the reader's receive
 *   buffer (at most `rcvBuf` bytes) one write at a time, each in its own setImmediate, and the
 *   reader emits them as 'data' unless it is paused. So a paused reader fills its receive
 *   buffer, then the writer's queue grows: the flow control TCP gives. 'drain' is emitted when
 *   the writer's queue empties.
 * - end(): the other side gets 'close' after the bytes queued before it; destroy(): both sides
 *   at once (queued bytes are lost).
 * - Faults, per write (the stream writes exactly one frame per write): `faults(from, n)` may
 *   return 'drop' (the frame is lost), 'dup' (delivered twice) or 'swap' (delivered after the
 *   next frame of the same direction). On TCP these cannot reach the application (TCP
 *   retransmits and orders segments), so they stand for what must be caught end to end: a
 *   stream that lost or repeated a frame fails its MAC and is resumed.
 */
import { EventEmitter } from 'node:events';
import type { SyncConnection } from '../../src/cluster/sync-stream';

export type PipeFault = 'drop' | 'dup' | 'swap' | null;

export interface PipeOptions {
  /** Receive buffer of each side, bytes (default 1 MiB). */
  rcvBuf?: number;
  /** Fault for the n-th write (0-based) of side `from` ('a' = the side that connected). */
  faults?: (from: 'a' | 'b', n: number, bytes: Uint8Array) => PipeFault;
}

export class PipeEnd extends EventEmitter implements SyncConnection {
  other!: PipeEnd;
  writableLength = 0;
  /** Bytes received and not yet emitted (paused). */
  rcvLength = 0;
  closed = false;
  writes = 0;
  readonly #out: Buffer[] = [];
  readonly #rcv: Buffer[] = [];
  #paused = false;
  #pumping = false;
  #held: Buffer | null = null;
  #endAfterQueue = false;
  /** The other side ended: close once the received bytes are read. */
  #eof = false;

  constructor(
    readonly side: 'a' | 'b',
    private readonly opts: PipeOptions,
  ) {
    super();
  }

  write(data: Uint8Array): boolean {
    if (this.closed) return false;
    const n = this.writes++;
    const fault = this.opts.faults?.(this.side, n, data) ?? null;
    const b = Buffer.from(data);
    if (fault === 'drop') return true;
    if (fault === 'swap' && this.#held === null) {
      this.#held = b;
      return true;
    }
    this.#queue(b);
    if (fault === 'dup') this.#queue(Buffer.from(b));
    if (this.#held !== null && fault !== 'swap') {
      this.#queue(this.#held);
      this.#held = null;
    }
    return this.writableLength < 16384;
  }

  #queue(b: Buffer): void {
    this.#out.push(b);
    this.writableLength += b.length;
    this.#pump();
  }

  /** Moves queued bytes to the other side while its receive buffer has room. */
  #pump(): void {
    if (this.#pumping || this.closed) return;
    this.#pumping = true;
    setImmediate(() => {
      this.#pumping = false;
      if (this.closed) return;
      const o = this.other;
      const cap = this.opts.rcvBuf ?? 1 << 20;
      while (this.#out.length > 0 && !o.closed && (o.rcvLength === 0 || o.rcvLength + this.#out[0]!.length <= cap)) {
        const b = this.#out.shift()!;
        this.writableLength -= b.length;
        o.#receive(b);
        if (this.#out.length > 0) {
          // one write per turn: the receiver's loop runs between frames
          this.#pump();
          return;
        }
      }
      if (this.#out.length === 0) {
        this.emit('drain');
        if (this.#endAfterQueue && !o.closed) {
          o.#eof = true; // after everything queued before end(): the reader closes once it read it all
          o.#flush();
        }
      }
    });
  }

  #receive(b: Buffer): void {
    this.#rcv.push(b);
    this.rcvLength += b.length;
    this.#flush();
  }

  #flush(): void {
    while (!this.#paused && !this.closed && this.#rcv.length > 0) {
      const b = this.#rcv.shift()!;
      this.rcvLength -= b.length;
      this.emit('data', b);
    }
    if (this.#eof && this.#rcv.length === 0 && !this.closed) {
      this.#closeBoth();
      return;
    }
    // room again: the writer may move more
    if (!this.closed) this.other.#pump();
  }

  pause(): this {
    this.#paused = true;
    return this;
  }

  resume(): this {
    this.#paused = false;
    setImmediate(() => this.#flush());
    return this;
  }

  end(): this {
    this.#endAfterQueue = true;
    this.#pump();
    return this;
  }

  destroy(): this {
    this.#closeBoth();
    return this;
  }

  #closeBoth(): void {
    for (const e of [this, this.other]) {
      if (e.closed) continue;
      e.closed = true;
      setImmediate(() => e.emit('close'));
    }
  }
}

/** A connected pair: `a` is the connecting side (the requester), `b` the accepted one. */
export function pipePair(opts: PipeOptions = {}): { a: PipeEnd; b: PipeEnd } {
  const a = new PipeEnd('a', opts);
  const b = new PipeEnd('b', opts);
  a.other = b;
  b.other = a;
  return { a, b };
}
