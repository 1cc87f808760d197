/**
 * Framing and authentication of the bulk sync stream (protocol/tunlb.proto "bulk sync
 * stream"): one TCP connection from a (re)starting balancer, the requester, to a serving
 * peer, the responder. Pure: bytes in, frames out; the sockets are the caller's
 * (src/cluster/sync-transport.ts), the session logic too (src/cluster/sync-stream.ts).
 *
 *   frame = length (u32 BE: bytes that follow) | SyncFrame | mac (32 bytes)
 *   mac   = HMAC-SHA256(K, direction | number (u64 BE) | SyncFrame [| requester nonce])
 *
 * - direction: SyncDirection.REQUESTER (0x43) or RESPONDER (0x53): a frame cannot be reflected
 *   back to its sender. `number` counts frames per direction from 0, implicitly (it is not on
 *   the wire): a dropped, repeated, reordered or spliced frame fails its MAC.
 * - K: the cluster key for frame 0 of each direction (the hellos); the responder's welcome
 *   also covers the requester's nonce (`extra`), so an old welcome cannot be replayed to a
 *   new requester. Every later frame uses syncSessionKey(clusterKey, requester nonce,
 *   responder nonce), so the requester's first keyed frame (its request) proves it holds the
 *   key AND saw this responder's fresh nonce: a replayed hello earns a welcome, never data.
 * - The reader verifies the MAC before it decodes anything (no protobuf parser sees
 *   unauthenticated bytes), then checks the records of a chunk (isValidRecord). Every failure
 *   is a SyncStreamResult; the owner counts it and closes the connection. A reader that
 *   failed stays failed (a byte stream cannot be resynchronised).
 *
 * Costs: one HMAC per frame (a chunk frame is ~32 KiB: ~1,000 IPv4 records), and the
 * protobuf encode/decode of its records. Not on the data-plane hot path.
 */
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { tunlb } from './generated/tunlb';
import { MAC_LEN, type MacKey } from './codec';
import { isValidRecord } from './flow-record';

/** Version of the stream protocol this code speaks (SyncHello.stream_version). */
export const SYNC_STREAM_VERSION = 1;
/** Length of each side's SyncHello.nonce. */
export const SYNC_NONCE_LEN = 16;
/** Bytes of the length prefix. */
export const SYNC_FRAME_PREFIX = 4;
/** Largest frame a reader accepts by default (length prefix value), bytes. */
export const SYNC_MAX_FRAME = 1 << 20;
/** Frame direction bytes (the first byte of every MAC input). */
export const SyncDirection = { REQUESTER: 0x43, RESPONDER: 0x53 } as const;
export type SyncDirection = (typeof SyncDirection)[keyof typeof SyncDirection];

/** Label of the session key derivation (with both nonces). */
const SESSION_LABEL = Buffer.from('tunlb sync stream v1', 'ascii');

/**
 * What a reader made of the next frame. Stable codes and names (metrics, logs): never renumber
 * or rename one, add new ones at the end.
 */
export const SyncStreamResult = {
  OK: 0,
  /** Length prefix below the MAC's size, or above the reader's maximum. */
  MALFORMED_FRAME: 1,
  /** The MAC does not match (wrong key, wrong frame number: lost/repeated/reordered frame, forgery). */
  BAD_MAC: 2,
  /** Authentic, but the SyncFrame does not decode or has no body. */
  MALFORMED_BODY: 3,
  /** A FlowRecord of a chunk is invalid (isValidRecord). */
  BAD_RECORD: 4,
} as const;
export type SyncStreamResult = (typeof SyncStreamResult)[keyof typeof SyncStreamResult];
export const SYNC_STREAM_RESULT_NAMES: readonly string[] = Object.freeze(['ok', 'malformed_frame', 'bad_mac', 'malformed_body', 'bad_record']);

/** The session key both ends derive once the hellos are exchanged. */
export function syncSessionKey(clusterKey: MacKey, requesterNonce: Uint8Array, responderNonce: Uint8Array): KeyObject {
  const raw = createHmac('sha256', clusterKey).update(SESSION_LABEL).update(requesterNonce).update(responderNonce).digest();
  return createSecretKey(raw);
}

function frameMac(key: MacKey, direction: number, n: number, body: Uint8Array, extra: Uint8Array | null): Buffer {
  const head = Buffer.allocUnsafe(9);
  head[0] = direction;
  head.writeUInt32BE(Math.floor(n / 0x100000000), 1);
  head.writeUInt32BE(n >>> 0, 5);
  const h = createHmac('sha256', key).update(head).update(body);
  if (extra !== null) h.update(extra);
  return h.digest();
}

/** Seals the frames of one direction of one connection (numbers them 0, 1, 2, ...). */
export class SyncFrameWriter {
  #n = 0;

  constructor(readonly direction: SyncDirection) {}

  /** Frames sealed so far (= the number the next one gets). */
  get sent(): number {
    return this.#n;
  }

  /**
   * Encodes `frame`, MACs it with `key` (and `extra` appended to the MAC input, see the
   * module header) and returns the bytes to write: a fresh Buffer the caller may keep.
   */
  seal(frame: tunlb.v1.SyncFrame.$Properties, key: MacKey, extra: Uint8Array | null = null): Buffer {
    const body = tunlb.v1.SyncFrame.encode(frame).finish();
    const mac = frameMac(key, this.direction, this.#n++, body, extra);
    const out = Buffer.allocUnsafe(SYNC_FRAME_PREFIX + body.length + MAC_LEN);
    out.writeUInt32BE(body.length + MAC_LEN, 0);
    out.set(body, SYNC_FRAME_PREFIX);
    out.set(mac, SYNC_FRAME_PREFIX + body.length);
    return out;
  }
}

/** One read attempt's outcome (a caller keeps one and passes it to next()). */
export class SyncFrameResult {
  result: SyncStreamResult = SyncStreamResult.OK;
  frame: tunlb.v1.SyncFrame | null = null;
  /** Encoded size of the frame (prefix, body, MAC). */
  bytes = 0;
}

/**
 * Reassembles and verifies the frames of the OTHER end (`direction` = its direction). The
 * owner sets `key` (and `extra`) before each frame it expects, pushes bytes as they arrive and
 * pulls frames with next(). Never throws on input.
 */
export class SyncFrameReader {
  /** Key of the next frame (cluster key for frame 0, then the session key). */
  key: MacKey | null = null;
  /** Appended to the next frame's MAC input (the requester's nonce for the welcome). */
  extra: Uint8Array | null = null;
  #chunks: Buffer[] = [];
  #head = 0;
  #buffered = 0;
  #n = 0;
  #failed: SyncStreamResult = SyncStreamResult.OK;

  constructor(
    readonly direction: SyncDirection,
    readonly maxFrame = SYNC_MAX_FRAME,
  ) {}

  /** Bytes received and not yet consumed by next(). */
  get buffered(): number {
    return this.#buffered;
  }

  /** True when next() has something to return: a whole frame, or a failure. */
  get ready(): boolean {
    if (this.#failed !== SyncStreamResult.OK) return true;
    if (this.#buffered < SYNC_FRAME_PREFIX) return false;
    const len = this.#peekU32();
    return len < MAC_LEN + 1 || len > this.maxFrame || this.#buffered >= SYNC_FRAME_PREFIX + len;
  }

  /** Frames verified so far. */
  get received(): number {
    return this.#n;
  }

  /** The failure that stopped this reader (OK while it works). */
  get failed(): SyncStreamResult {
    return this.#failed;
  }

  /** Appends received bytes (kept by reference: the caller must not reuse the buffer). */
  push(bytes: Buffer): void {
    if (bytes.length === 0 || this.#failed !== SyncStreamResult.OK) return;
    this.#chunks.push(bytes);
    this.#buffered += bytes.length;
  }

  /**
   * Reads the next whole frame into `out`: false when it has not fully arrived (nothing
   * consumed); true with out.result OK and out.frame set, or with a failure code (the reader
   * then stays failed and returns that failure again).
   */
  next(out: SyncFrameResult): boolean {
    out.frame = null;
    out.bytes = 0;
    if (this.#failed !== SyncStreamResult.OK) {
      out.result = this.#failed;
      return true;
    }
    if (this.#buffered < SYNC_FRAME_PREFIX) return false;
    const len = this.#peekU32();
    if (len < MAC_LEN + 1 || len > this.maxFrame) return this.#fail(out, SyncStreamResult.MALFORMED_FRAME);
    if (this.#buffered < SYNC_FRAME_PREFIX + len) return false;
    this.#consume(SYNC_FRAME_PREFIX);
    const frame = this.#take(len);
    out.bytes = SYNC_FRAME_PREFIX + len;
    const body = frame.subarray(0, len - MAC_LEN);
    const mac = frame.subarray(len - MAC_LEN);
    if (this.key === null) return this.#fail(out, SyncStreamResult.BAD_MAC);
    const want = frameMac(this.key, this.direction, this.#n, body, this.extra);
    if (!timingSafeEqual(want, mac)) return this.#fail(out, SyncStreamResult.BAD_MAC);
    this.#n++;
    let f: tunlb.v1.SyncFrame;
    try {
      f = tunlb.v1.SyncFrame.decode(body);
    } catch {
      return this.#fail(out, SyncStreamResult.MALFORMED_BODY);
    }
    if (f.body === undefined) return this.#fail(out, SyncStreamResult.MALFORMED_BODY);
    if (f.body === 'chunk') {
      const recs = (f.chunk as tunlb.v1.SyncChunk).records;
      for (let i = 0; i < recs.length; i++) if (!isValidRecord(recs[i] as tunlb.v1.FlowRecord)) return this.#fail(out, SyncStreamResult.BAD_RECORD);
    }
    out.result = SyncStreamResult.OK;
    out.frame = f;
    return true;
  }

  #fail(out: SyncFrameResult, r: SyncStreamResult): true {
    this.#failed = r;
    this.#chunks = [];
    this.#head = 0;
    this.#buffered = 0;
    out.result = r;
    out.frame = null;
    return true;
  }

  #peekU32(): number {
    const c = this.#chunks[0]!;
    if (c.length - this.#head >= 4) return c.readUInt32BE(this.#head);
    let v = 0;
    let i = 0;
    let off = this.#head;
    for (let k = 0; k < 4; k++) {
      while (off >= this.#chunks[i]!.length) {
        i++;
        off = 0;
      }
      v = v * 256 + this.#chunks[i]![off++]!;
    }
    return v;
  }

  #consume(n: number): void {
    this.#buffered -= n;
    while (n > 0) {
      const c = this.#chunks[0]!;
      const left = c.length - this.#head;
      if (n < left) {
        this.#head += n;
        return;
      }
      n -= left;
      this.#chunks.shift();
      this.#head = 0;
    }
  }

  /** The next n bytes: a view when they sit in one received chunk, else a copy. */
  #take(n: number): Buffer {
    const c = this.#chunks[0]!;
    if (c.length - this.#head >= n) {
      const v = c.subarray(this.#head, this.#head + n);
      this.#consume(n);
      return v;
    }
    const out = Buffer.allocUnsafe(n);
    let o = 0;
    while (o < n) {
      const d = this.#chunks[0]!;
      const k = Math.min(n - o, d.length - this.#head);
      d.copy(out, o, this.#head, this.#head + k);
      o += k;
      this.#consume(k);
    }
    return out;
  }
}
