/**
 * Whole-table work on the event loop in time slices (issue 12, "Event loop budget").
 *
 * One event loop runs the data plane, the probes of the cluster's membership and the admin
 * endpoint. While the loop is busy, probes are not answered: a peer declares this balancer
 * SUSPECT after `probe.interval_ms × 1.25` of silence and DEAD after `interval_ms × misses`
 * (lab: 62.5 ms and 150 ms; defaults 125 ms and 300 ms; src/cluster/membership.ts). So work
 * that walks the flow table (up to millions of records) never runs in one go: it is cut into
 * small steps (a few thousand entry ids, well under a millisecond each), run for at most
 * SLICE_MS, then the loop is given back (setImmediate: timers and I/O — probes, acks, packets —
 * run before the next slice). The longest the loop waits on such work is one slice plus one
 * step: a small fraction of the probe budget whatever the table's size.
 *
 * Contract for a step: synchronous, bounded (≪ SLICE_MS), returns true when the work is done;
 * the state it walks may change between slices (FlowTable.scan's guarantee covers that).
 */
import { performance } from 'node:perf_hooks';

/** Longest run of work between two yields to the event loop, ms. */
export const SLICE_MS = 5;

/** Resolves on the next turn of the event loop, after pending I/O and timers. */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Runs `step` until it returns true, at most `sliceMs` at a time between yields. `stop`, checked
 * before each slice, ends the work early (e.g. the client went away); resolves true when the
 * work finished, false when stopped.
 */
export async function runSliced(step: () => boolean, opts: { sliceMs?: number; stop?: () => boolean } = {}): Promise<boolean> {
  const sliceMs = opts.sliceMs ?? SLICE_MS;
  for (;;) {
    if (opts.stop?.() === true) return false;
    const end = performance.now() + sliceMs;
    do {
      if (step()) return true;
    } while (performance.now() < end);
    await yieldToLoop();
  }
}
