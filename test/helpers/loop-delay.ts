/**
 * The event loop's longest delay over a window, measured two ways in the process under test:
 *   - a 1 ms interval timer that records how late each tick ran (what a probe timer of the
 *     cluster's membership would see; src/cluster/membership.ts measures its own ticks so);
 *   - perf_hooks.monitorEventLoopDelay (libuv's view, 1 ms resolution), its max.
 * `stop()` returns the larger of the two in milliseconds, and each figure.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

export interface LoopDelay {
  /** Longest delay seen, ms (the larger of `timerMs` and `histogramMs`). */
  maxMs: number;
  /** Latest a 1 ms interval tick ran, ms past its due time. */
  timerMs: number;
  /** monitorEventLoopDelay's max, ms. */
  histogramMs: number;
  /** Ticks of the interval timer (to see that it ran). */
  ticks: number;
}

export interface LoopDelayProbe {
  stop(): LoopDelay;
}

export function startLoopDelay(): LoopDelayProbe {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  let last = performance.now();
  let worst = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    const late = now - last - 1;
    if (late > worst) worst = late;
    last = now;
    ticks++;
  }, 1);
  return {
    stop(): LoopDelay {
      clearInterval(timer);
      // Lateness up to now: a stall that has not yet let the timer run counts too.
      const tail = performance.now() - last - 1;
      if (tail > worst) worst = tail;
      h.disable();
      const histogramMs = h.max / 1e6;
      return { maxMs: Math.max(worst, histogramMs), timerMs: worst, histogramMs, ticks };
    },
  };
}
