/**
 * The VIP announcement (src/control/announcer.ts) without root: the `ip` commands it runs are
 * recorded by an injected runner, the ready file is a temp file, and the watchdog thread is
 * real (its `ip route del` fails harmlessly without root; the ready file and the flag are what
 * it must get right).
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Announcer, type AnnouncerOptions } from '../../src/control/announcer';
import { createLogger } from '../../src/logger';

const VIPS = [
  { name: 'web4', address: '10.99.0.10', family: 4 as const },
  { name: 'web6', address: 'fd99::10', family: 6 as const },
];

function harness(over: Partial<AnnouncerOptions> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-announce-'));
  const readyFile = join(dir, 'ready');
  const calls: string[] = [];
  let fail: RegExp | null = null;
  const a = new Announcer({
    table: 101,
    device: 'tunlb0',
    vips: VIPS,
    readyFile,
    watchdogMs: 0,
    log: createLogger({ level: 'silent', name: 'test' }),
    ip: async (args) => {
      calls.push(args.join(' '));
      return fail !== null && fail.test(args.join(' ')) ? 'RTNETLINK answers: Operation not permitted' : null;
    },
    ...over,
  });
  const ready = (): string => readFileSync(readyFile, 'utf8');
  return { a, calls, ready, dir, setFail: (r: RegExp | null) => (fail = r), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

test('starts held (not announced, ready file 1); release(starting) adds one route per VIP in the table, then the ready file reads 0', async (t) => {
  const h = harness();
  t.teardown(h.cleanup);
  t.false(h.a.ready);
  t.is(h.ready(), '1\n');
  t.deepEqual(h.a.vips().map((v) => v.announced), [false, false]);
  await h.a.release('starting');
  t.deepEqual(h.calls, ['-4 route replace 10.99.0.10/32 dev tunlb0 table 101', '-6 route replace fd99::10/128 dev tunlb0 table 101']);
  t.deepEqual(h.a.vips().map((v) => [v.name, v.announced, v.reason]), [['web4', true, 'ready'], ['web6', true, 'ready']]);
  t.is(h.ready(), '0\n');
  t.deepEqual(h.a.events.map((e) => `${e.type} ${e.vip}`), ['vip_announced web4', 'vip_announced web6']);
});

// Table: holds set and released in order; what the table holds after each step.
const steps: Array<{ name: string; run: (a: Announcer) => Promise<void>; announced: boolean; reason: RegExp }> = [
  { name: 'release starting', run: (a) => a.release('starting'), announced: true, reason: /^ready$/ },
  { name: 'hold drained', run: (a) => a.hold('drained', 'tunlb drain-self'), announced: false, reason: /drained: tunlb drain-self/ },
  { name: 'hold watchdog too', run: (a) => a.hold('watchdog', 'stalled'), announced: false, reason: /drained.*watchdog/ },
  { name: 'release drained (watchdog still held)', run: (a) => a.release('drained'), announced: false, reason: /^watchdog: stalled$/ },
  { name: 'release watchdog', run: (a) => a.release('watchdog'), announced: true, reason: /^ready$/ },
  { name: 'hold leaving', run: (a) => a.hold('leaving', 'SIGTERM'), announced: false, reason: /leaving: SIGTERM/ },
  { name: 'leaving is never released', run: (a) => a.release('leaving'), announced: false, reason: /leaving/ },
];
test('holds: announced only with none left; each change reaches the table once', async (t) => {
  const h = harness();
  t.teardown(h.cleanup);
  for (const s of steps) {
    const before = h.calls.length;
    const was = h.a.vips()[0]!.announced;
    await s.run(h.a);
    const v = h.a.vips()[0]!;
    t.is(v.announced, s.announced, s.name);
    t.regex(v.reason, s.reason, s.name);
    t.is(h.ready(), s.announced ? '0\n' : '1\n', `${s.name}: ready file`);
    t.is(h.calls.length - before, was === s.announced ? 0 : 2, `${s.name}: route changes`);
    if (was !== s.announced) t.regex(h.calls[before]!, s.announced ? / replace / : / del /, s.name);
  }
});

test('a failed route change is logged as an event, counted, and retried', async (t) => {
  const h = harness();
  t.teardown(h.cleanup);
  h.setFail(/-6 route replace/);
  await h.a.release('starting');
  t.deepEqual(h.a.vips().map((v) => v.announced), [true, false]);
  t.is(h.ready(), '1\n', 'not every VIP is announced: not ready');
  t.is(h.a.stats.failures, 1);
  t.true(h.a.events.some((e) => e.type === 'announce_failed' && e.vip === 'web6' && /Operation not permitted/.test(e.reason)));
  h.setFail(null);
  const deadline = Date.now() + 3000;
  while (!h.a.vips()[1]!.announced && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.true(h.a.vips()[1]!.announced, 'retried within RETRY_MS');
  t.is(h.ready(), '0\n');
  await h.a.close();
});

test('a withdrawal of a route the kernel already removed (the TUN device is gone) is not a failure', async (t) => {
  // The runner reports "No such process" like `ip route del` of a missing route.
  const h2 = harness({ ip: async (args) => (args[2] === 'del' ? 'RTNETLINK answers: No such process' : null) });
  t.teardown(h2.cleanup);
  await h2.a.release('starting');
  await h2.a.close();
  t.deepEqual(h2.a.vips().map((v) => v.announced), [false, false]);
  t.is(h2.a.stats.failures, 0);
});

test('close withdraws and leaves the ready file at 1; without a table nothing is routed', async (t) => {
  const h = harness();
  t.teardown(h.cleanup);
  await h.a.release('starting');
  await h.a.close();
  t.deepEqual(h.a.vips().map((v) => v.announced), [false, false]);
  t.is(h.ready(), '1\n');
  const n = harness({ table: null });
  t.teardown(n.cleanup);
  await n.a.release('starting');
  t.deepEqual(n.calls, []);
  t.deepEqual(n.a.vips().map((v) => [v.announced, v.reason]), [[false, 'announce.table not set'], [false, 'announce.table not set']]);
  t.is(n.ready(), '0\n', 'the ready file follows readiness without a table');
});

test('watchdog: a main loop blocked past watchdog_ms makes the thread withdraw (ready file 1); the loop logs it and announces again', async (t) => {
  const h = harness({ watchdogMs: 80, watchdog: true });
  t.teardown(h.cleanup);
  await h.a.release('starting');
  t.is(h.ready(), '0\n');
  // Let the heartbeat run a little, then block this event loop until the watchdog thread has
  // withdrawn (the ready file reads 1), at most 10 s (a loaded machine schedules the thread late).
  await new Promise((r) => setTimeout(r, 100));
  const t0 = Date.now();
  let readyDuringStall = '';
  while (Date.now() - t0 < 10_000) {
    if (Date.now() - t0 > 80 && h.ready() === '1\n') {
      readyDuringStall = '1\n';
      break;
    }
  }
  const blockedMs = Date.now() - t0;
  t.is(readyDuringStall, '1\n', `the watchdog thread wrote the ready file while this loop was stuck (blocked ${blockedMs} ms)`);
  t.true(blockedMs > 80, 'not before the budget');
  const deadline = Date.now() + 10_000;
  while (!h.a.events.some((e) => e.type === 'watchdog_withdrew') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const ev = h.a.events.find((e) => e.type === 'watchdog_withdrew');
  t.truthy(ev, 'watchdog_withdrew event');
  t.regex(ev!.reason, /event loop stalled \d+ ms \(watchdog_ms 80\)/);
  // ≥ 1: on a loaded machine the loop may stall past 80 ms again by itself.
  t.true(h.a.stats.watchdogWithdrawals >= 1);
  while (h.ready() !== '0\n' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.is(h.ready(), '0\n', 'announced again');
  t.deepEqual(h.a.vips().map((v) => v.announced), [true, true]);
  t.true(h.calls.filter((c) => / replace /.test(c)).length >= 4, 'routes added again after the stall');
  await h.a.close();
});

test('setVips (a reload): a removed VIP is withdrawn at once, an added one announced when ready, a kept one untouched', async (t) => {
  const h = harness();
  t.teardown(h.cleanup);
  await h.a.release('starting');
  h.calls.length = 0;
  const WEB4B = { name: 'web4b', address: '10.99.0.11', family: 4 as const };
  await h.a.setVips([VIPS[0]!, WEB4B]);
  t.deepEqual(h.calls, ['-6 route del fd99::10/128 dev tunlb0 table 101', '-4 route replace 10.99.0.11/32 dev tunlb0 table 101']);
  t.deepEqual(h.a.vips().map((v) => [v.name, v.announced]), [['web4', true], ['web4b', true]]);
  t.deepEqual(h.a.events.slice(-2).map((e) => `${e.type} ${e.vip} ${e.reason}`), ['vip_withdrawn web6 removed by reload', 'vip_announced web4b ready']);
  // While held, a VIP added by a reload waits for readiness; a removed one still goes at once.
  await h.a.hold('drained', 'tunlb drain-self');
  h.calls.length = 0;
  await h.a.setVips([WEB4B, VIPS[1]!]);
  t.deepEqual(h.calls, [], 'nothing was announced while drained (web4 was withdrawn by the hold already)');
  t.deepEqual(h.a.vips().map((v) => [v.name, v.announced]), [['web4b', false], ['web6', false]]);
  await h.a.release('drained');
  t.deepEqual(h.calls, ['-4 route replace 10.99.0.11/32 dev tunlb0 table 101', '-6 route replace fd99::10/128 dev tunlb0 table 101']);
});

test('setVips: a failed withdrawal of a removed VIP is retried', async (t) => {
  const h = harness();
  t.teardown(h.cleanup);
  await h.a.release('starting');
  h.setFail(/del fd99::10/);
  await h.a.setVips([VIPS[0]!]);
  t.true(h.a.stats.failures >= 1);
  h.setFail(null);
  const ok = await new Promise<boolean>((resolve) => {
    const t0 = Date.now();
    const poll = (): void => {
      if (h.calls.filter((c) => c === '-6 route del fd99::10/128 dev tunlb0 table 101').length >= 2) return resolve(true);
      if (Date.now() - t0 > 5000) return resolve(false);
      setTimeout(poll, 20);
    };
    poll();
  });
  t.true(ok, `retried: ${h.calls.join(' | ')}`);
});
