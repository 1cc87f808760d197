/**
 * The backend state machine (src/backends/backend-state.ts): the table in its header, row by
 * row, with the reasons the owner logs.
 */
import test from 'ava';
import { BackendState, type BackendTransition } from '../../src/backends/backend-state';

type Step = ['ok' | 'fail', string | null]; // expected "from->to: reason" or null (no transition)

const fmt = (t: BackendTransition | null): string | null => (t ? `${t.from}->${t.to}: ${t.reason}` : null);

const cases: Array<{ desc: string; rise: number; fall: number; steps: Step[] }> = [
  {
    desc: 'first success decides at once (unknown -> healthy)',
    rise: 2,
    fall: 3,
    steps: [['ok', 'unknown->healthy: first check passed: d']],
  },
  {
    desc: 'first failure decides at once (unknown -> unhealthy)',
    rise: 2,
    fall: 3,
    steps: [['fail', 'unknown->unhealthy: first check failed: d']],
  },
  {
    desc: 'healthy -> unhealthy on the fall-th consecutive failure',
    rise: 2,
    fall: 3,
    steps: [
      ['ok', 'unknown->healthy: first check passed: d'],
      ['fail', null],
      ['fail', null],
      ['fail', 'healthy->unhealthy: 3 consecutive failures: d'],
      ['fail', null],
    ],
  },
  {
    desc: 'a success between failures restarts the count',
    rise: 2,
    fall: 3,
    steps: [
      ['ok', 'unknown->healthy: first check passed: d'],
      ['fail', null],
      ['fail', null],
      ['ok', null],
      ['fail', null],
      ['fail', null],
      ['fail', 'healthy->unhealthy: 3 consecutive failures: d'],
    ],
  },
  {
    desc: 'unhealthy -> healthy on the rise-th consecutive success; a failure restarts it',
    rise: 3,
    fall: 1,
    steps: [
      ['fail', 'unknown->unhealthy: first check failed: d'],
      ['ok', null],
      ['ok', null],
      ['fail', null],
      ['ok', null],
      ['ok', null],
      ['ok', 'unhealthy->healthy: 3 consecutive successes: d'],
    ],
  },
  {
    desc: 'rise 1 / fall 1: every change of result flips (singular wording)',
    rise: 1,
    fall: 1,
    steps: [
      ['ok', 'unknown->healthy: first check passed: d'],
      ['fail', 'healthy->unhealthy: 1 consecutive failure: d'],
      ['ok', 'unhealthy->healthy: 1 consecutive success: d'],
    ],
  },
];

for (const c of cases) {
  test(`checks: ${c.desc}`, (t) => {
    const s = new BackendState({ checked: true, rise: c.rise, fall: c.fall });
    t.is(s.state, 'unknown');
    t.false(s.eligible);
    c.steps.forEach(([r, want], i) => t.is(fmt(s.checkResult(r === 'ok', 'd')), want, `step ${i} (${r})`));
  });
}

test('eligible iff healthy, not draining, not removed; the event carries eligibility before/after', (t) => {
  const s = new BackendState({ checked: true, rise: 1, fall: 1 });
  const up = s.checkResult(true, 'd')!;
  t.like(up, { from: 'unknown', to: 'healthy', fromHealth: 'unknown', toHealth: 'healthy', cause: 'check', wasEligible: false, eligible: true });
  t.true(s.eligible);
  const dr = s.setDrained(true, 'drained by operator on lb1')!;
  t.like(dr, { from: 'healthy', to: 'draining', reason: 'drained by operator on lb1', cause: 'operator', wasEligible: true, eligible: false });
  t.false(s.eligible);
  t.is(s.setDrained(true, 'again'), null, 'draining twice changes nothing');
  // health changes while draining: the state stays draining, the event shows the health.
  const down = s.checkResult(false, 'connect ECONNREFUSED')!;
  t.like(down, { from: 'draining', to: 'draining', fromHealth: 'healthy', toHealth: 'unhealthy', wasEligible: false, eligible: false });
  t.is(down.reason, '1 consecutive failure: connect ECONNREFUSED');
  const und = s.setDrained(false, 'undrained by operator on lb2')!;
  t.like(und, { from: 'draining', to: 'unhealthy', eligible: false }, 'undrain returns to the health underneath');
  t.like(s.checkResult(true, 'ok')!, { from: 'unhealthy', to: 'healthy', eligible: true });
});

test('drain timeout: draining -> drained (down, still not eligible); undrain returns to the health; only a draining backend expires', (t) => {
  const s = new BackendState({ checked: false, rise: 1, fall: 1 });
  t.is(s.expireDrain('x'), null, 'not drained: nothing to expire');
  s.setDrained(true, 'drained by operator on lb1');
  t.false(s.down, 'draining keeps its flows');
  const ex = s.expireDrain('drain timeout 300 s passed')!;
  t.like(ex, { from: 'draining', to: 'drained', fromHealth: 'healthy', toHealth: 'healthy', cause: 'timeout', wasEligible: false, eligible: false });
  t.is(s.state, 'drained');
  t.true(s.down);
  t.true(s.drainExpired);
  t.is(s.expireDrain('again'), null);
  t.like(s.setDrained(false, 'undrained by operator on lb2')!, { from: 'drained', to: 'healthy', eligible: true });
  t.false(s.down);
  t.false(s.drainExpired);
  s.setDrained(true, 'drained again');
  t.is(s.state, 'draining', 'a new drain starts draining again');
});

test('removed is final', (t) => {
  const s = new BackendState({ checked: true, rise: 1, fall: 1 });
  s.checkResult(true, 'd');
  t.like(s.remove()!, { from: 'healthy', to: 'removed', reason: 'removed from the configuration', cause: 'config', eligible: false });
  t.is(s.state, 'removed');
  t.is(s.checkResult(false, 'd'), null);
  t.is(s.setDrained(true, 'x'), null);
  t.is(s.setHealth('unhealthy', 'x'), null);
  t.is(s.remove(), null);
  t.is(s.reconfigure({ checked: false, rise: 1, fall: 1 }), null);
  t.false(s.eligible);
});

test('a backend without a health check is healthy from the start and checks do not apply', (t) => {
  const s = new BackendState({ checked: false, rise: 2, fall: 3 });
  t.is(s.state, 'healthy');
  t.true(s.eligible);
  t.is(s.checkResult(false, 'd'), null);
  t.is(s.setHealth('unhealthy', 'peer'), null);
  t.true(s.eligible);
});

test('peer health (setHealth): applies, restarts counters, no event when equal', (t) => {
  const s = new BackendState({ checked: true, rise: 2, fall: 2 });
  s.checkResult(true, 'd');
  s.checkResult(false, 'd'); // one failure counted
  t.is(s.failures, 1);
  t.is(s.setHealth('healthy', 'lb2: fine'), null);
  const t1 = s.setHealth('unhealthy', 'lb2: 2 consecutive failures: x')!;
  t.like(t1, { from: 'healthy', to: 'unhealthy', cause: 'peer', reason: 'lb2: 2 consecutive failures: x' });
  t.is(s.failures, 0);
  t.is(s.checkResult(true, 'd'), null, 'rise 2 counted from the adopted state');
  t.like(s.checkResult(true, 'd')!, { to: 'healthy', reason: '2 consecutive successes: d' });
});

test('reconfigure: removing the check makes it healthy; adding one keeps the health; thresholds change', (t) => {
  const s = new BackendState({ checked: true, rise: 1, fall: 1 });
  s.checkResult(false, 'd');
  t.like(s.reconfigure({ checked: false, rise: 1, fall: 1 })!, { from: 'unhealthy', to: 'healthy', reason: 'no health check configured', cause: 'config' });
  t.is(s.reconfigure({ checked: true, rise: 2, fall: 2 }), null, 'adding a check keeps a serving backend serving');
  t.is(s.state, 'healthy');
  t.is(s.checkResult(false, 'd'), null);
  t.like(s.checkResult(false, 'd')!, { to: 'unhealthy', reason: '2 consecutive failures: d' });
  // draining stays draining when the check goes away; health underneath becomes healthy.
  s.setDrained(true, 'x');
  t.like(s.reconfigure({ checked: false, rise: 1, fall: 1 })!, { from: 'draining', to: 'draining', fromHealth: 'unhealthy', toHealth: 'healthy' });
});
