/**
 * The event loop's longest delay over a window, measured in the process under test:
 *   - `maxMs`: how late a 1 ms interval timer ran at worst (what a probe timer of the cluster's
 *     membership would see; src/cluster/membership.ts measures its own ticks so), and
 *     perf_hooks.monitorEventLoopDelay's max (libuv's view, 1 ms resolution): the larger.
 *   - `busyMs`: for each gap between two ticks, the CPU time the process used during it (user +
 *     system, process.cpuUsage), capped by the gap; the largest. This is the part of a delay
 *     the process spent working, not waiting for a CPU: on a loaded machine (a CPU hog, other
 *     jobs) the wall-clock figure grows with the scheduler's delays, this one does not. It
 *     counts every thread of the process (GC helpers too), so it errs on the high side.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

export interface LoopDelay {
  /** Longest delay seen, ms (the larger of `timerMs` and `histogramMs`). */
  maxMs: number;
  /** Latest a 1 ms interval tick ran, ms past its due time. */
  timerMs: number;
  /** monitorEventLoopDelay's max, ms. */
  histogramMs: number;
  /** Longest CPU-busy stretch between two ticks, ms (see header). */
  busyMs: number;
  /** Ticks of the interval timer (to see that it ran). */
  ticks: number;
}

export interface LoopDelayProbe {
  stop(): LoopDelay;
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

export function startLoopDelay(): LoopDelayProbe {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  let last = performance.now();
  let lastCpu = cpuMs();
  let worst = 0;
  let busy = 0;
  let ticks = 0;
  const gap = (): void => {
    const now = performance.now();
    const cpu = cpuMs();
    const late = now - last - 1;
    if (late > worst) worst = late;
    const b = Math.min(now - last, cpu - lastCpu);
    if (b > busy) busy = b;
    last = now;
    lastCpu = cpu;
  };
  const timer = setInterval(() => {
    gap();
    ticks++;
  }, 1);
  return {
    stop(): LoopDelay {
      clearInterval(timer);
      // Up to now: a stall that has not yet let the timer run counts too.
      gap();
      h.disable();
      const histogramMs = h.max / 1e6;
      return { maxMs: Math.max(worst, histogramMs), timerMs: worst, histogramMs, busyMs: busy, ticks };
    },
  };
}
