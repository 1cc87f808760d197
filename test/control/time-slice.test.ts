/**
 * The time-slice scheduler (src/control/time-slice.ts): jobs share one slice per turn of the
 * event loop, timers run between slices, a job never starts in its caller's turn, a throwing
 * step ends only its own job, `stop` ends a job early. Serial: the scheduler is one per process.
 */
import test from 'ava';
import { performance } from 'node:perf_hooks';
import { runSliced, slicedJobs, SLICE_MS } from '../../src/control/time-slice';

/** A step that keeps the CPU busy `ms` and counts itself; done after `n` steps. */
function busyJob(ms: number, n: number, log: { at: number; ms: number }[]): () => boolean {
  let k = 0;
  return () => {
    const s = performance.now();
    while (performance.now() - s < ms);
    log.push({ at: s, ms: performance.now() - s });
    return ++k >= n;
  };
}

test.serial('two jobs share the slices; between two timer ticks the steps take at most one slice and one step', async (t) => {
  const log: { at: number; ms: number }[] = [];
  const ticks: number[] = [];
  const timer = setInterval(() => ticks.push(performance.now()), 1);
  const [a, b] = await Promise.all([runSliced(busyJob(0.5, 60, log)), runSliced(busyJob(0.5, 60, log))]);
  clearInterval(timer);
  t.true(a && b);
  t.is(log.length, 120);
  t.is(slicedJobs(), 0);
  // Steps between consecutive ticks: their total minus the last one is within the slice.
  let worst = 0;
  for (let i = 1; i < ticks.length; i++) {
    const inGap = log.filter((s) => s.at > ticks[i - 1]! && s.at < ticks[i]!);
    if (inGap.length === 0) continue;
    const total = inGap.reduce((x, s) => x + s.ms, 0) - inGap[inGap.length - 1]!.ms;
    worst = Math.max(worst, total);
  }
  t.log(`most step time between two timer ticks (less the last step): ${worst.toFixed(2)} ms (slice ${SLICE_MS} ms)`);
  t.true(worst <= SLICE_MS + 0.5, `${worst.toFixed(2)} ms of steps without a timer tick`);
  t.true(ticks.length >= 10, 'the timer ran during the jobs');
});

test.serial('a job never starts in its caller\'s turn, nor in the check phase of that turn', async (t) => {
  const order: string[] = [];
  const done = runSliced(() => {
    order.push('step');
    return true;
  });
  setImmediate(() => order.push('immediate queued after the job'));
  order.push('caller');
  await Promise.resolve();
  order.push('microtask');
  await done;
  t.deepEqual(order, ['caller', 'microtask', 'immediate queued after the job', 'step']);
});

test.serial('a throwing step rejects its own job only; stop ends a job with false', async (t) => {
  let other = 0;
  const bad = runSliced(() => {
    throw new Error('boom');
  });
  const good = runSliced(() => ++other >= 100);
  let stopNow = false;
  let n = 0;
  const stopped = runSliced(
    () => {
      if (++n === 5) stopNow = true;
      return false;
    },
    { stop: () => stopNow },
  );
  await t.throwsAsync(bad, { message: 'boom' });
  t.true(await good);
  t.is(other, 100);
  t.false(await stopped);
  t.is(n, 5);
});
