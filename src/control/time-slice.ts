/**
 * Whole-table work on the event loop in time slices (issue 12, "Event loop budget").
 *
 * One event loop runs the data plane, the probes of the cluster's membership and the admin
 * endpoint. While the loop is busy, probes are not answered: a peer declares this balancer
 * SUSPECT after `probe.interval_ms × 1.25` of silence and DEAD after `interval_ms × misses`
 * (lab: 62.5 ms and 150 ms; defaults 125 ms and 300 ms; src/cluster/membership.ts). So work
 * that walks the flow table (up to millions of records) or builds rendezvous tables (65536
 * rows each) never runs in one go: it is cut into small steps (well under a millisecond each)
 * and run by one scheduler, at most SLICE_MS of steps per turn of the loop, shared by every job
 * (a listing, flow counts, a reload's build and remap, a health rebuild, the expiry sweep):
 * concurrent jobs take turns, step by step, within the same slice; they never add up.
 *
 * The slice runs from setImmediate, i.e. in the check phase of a loop turn, one slice per turn:
 * between two slices the loop runs its timers (the probe ticks) and polls I/O (probes, acks,
 * packets). Never from an I/O callback directly: that runs in the poll phase, and the check
 * phase of the same turn would run another slice before any timer (measured: up to 8 'drain'
 * callbacks chain in one turn). So the longest the loop waits on such work is one slice plus
 * one step, a small fraction of the probe budget whatever the table's size; the price is
 * throughput (a 1M-flow walk takes tens of turns instead of one call).
 *
 * Contract for a step: synchronous, bounded (≪ SLICE_MS), returns true when its job is done;
 * whatever it walks may change between steps (FlowTable.scan's guarantee covers that). A step
 * that throws ends its job (the promise rejects); the others go on.
 */
import { performance } from 'node:perf_hooks';

/** Longest run of steps per turn of the event loop, ms. */
export const SLICE_MS = 5;

/** Resolves on the next turn of the event loop, after pending I/O and timers. */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

interface Job {
  readonly step: () => boolean;
  readonly stop: (() => boolean) | undefined;
  readonly resolve: (finished: boolean) => void;
  readonly reject: (e: unknown) => void;
}

const jobs: Job[] = [];
let scheduled = false;

/**
 * Arms the next slice: from a slice, on the next turn's check phase; otherwise (a job arrives
 * while none is pending, typically from an I/O callback that has already worked in this turn)
 * one turn later, so that the timers run between that work and the first slice.
 */
function schedule(fromSlice: boolean): void {
  if (scheduled || jobs.length === 0) return;
  scheduled = true;
  if (fromSlice) setImmediate(runSlice);
  else setImmediate(() => setImmediate(runSlice));
}

/** One slice: the jobs' steps round-robin until SLICE_MS is spent or no job is left. */
function runSlice(): void {
  scheduled = false;
  const end = performance.now() + SLICE_MS;
  let i = 0;
  while (jobs.length > 0) {
    if (i >= jobs.length) i = 0;
    const j = jobs[i]!;
    let done: boolean;
    try {
      if (j.stop?.() === true) {
        jobs.splice(i, 1);
        j.resolve(false);
        continue;
      }
      done = j.step();
    } catch (e) {
      jobs.splice(i, 1);
      j.reject(e);
      continue;
    }
    if (done) {
      jobs.splice(i, 1);
      j.resolve(true);
    } else {
      i++;
    }
    if (performance.now() >= end) break;
  }
  schedule(true);
}

/**
 * Runs `step` until it returns true, in the shared slices (header): never in the caller's turn.
 * `stop`, checked before each step, ends the job early (e.g. the client went away). Resolves
 * true when the work finished, false when stopped; rejects with what a step threw.
 */
export function runSliced(step: () => boolean, opts: { stop?: () => boolean } = {}): Promise<boolean> {
  return new Promise((resolve, reject) => {
    jobs.push({ step, stop: opts.stop, resolve, reject });
    schedule(false);
  });
}

/** Jobs waiting for or in a slice (tests, diagnostics). */
export function slicedJobs(): number {
  return jobs.length;
}
