/**
 * The echo check shared by the lab's traffic tools (scripts/traffic.ts longlived and
 * bench/cluster/stalls.ts): one message in flight per TCP connection to an echo server; the
 * bytes that come back must be that message, in order. Measuring tools, not part of tunlb.
 */

/** One connection's in-flight message and how many of its bytes came back so far. */
export interface EchoState {
  alive: boolean;
  /** The message in flight (null: none). Set it, with got = 0, when sending one. */
  pending: Buffer | null;
  got: number;
}

/**
 * Checks received bytes `d` against `c.pending`. Each completed echo clears `pending` and calls
 * `onEcho`; bytes when nothing is in flight, or different from what was sent, call `fail` with
 * the reason ("unexpected data", "bad echo") and stop. Ignored once `c.alive` is false.
 */
export function checkEcho(c: EchoState, d: Buffer, onEcho: () => void, fail: (reason: string) => void): void {
  if (!c.alive) return;
  let off = 0;
  while (off < d.length) {
    const p = c.pending;
    if (p === null) return fail('unexpected data');
    const n = Math.min(p.length - c.got, d.length - off);
    if (!d.subarray(off, off + n).equals(p.subarray(c.got, c.got + n))) return fail('bad echo');
    c.got += n;
    off += n;
    if (c.got === p.length) {
      c.pending = null;
      onEcho();
    }
  }
}
