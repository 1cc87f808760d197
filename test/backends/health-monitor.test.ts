/**
 * HealthMonitor (src/backends/health-monitor.ts) with fake checks and a fake clock: rise/fall
 * timing and reasons, jitter, drain, ownership by rendezvous rank and takeover, reports
 * (real protobuf encoding) applied / ignored, loss healing, restart adoption, reload, report
 * packing, and agreement of every balancer's eligibility (and backend table).
 */
import test from 'ava';
import { HealthMonitor, healthKey, healthOwner, DEFAULT_REPORT_BUDGET, type BackendEvent, type HealthReportBody } from '../../src/backends/health-monitor';
import { memberSeed } from '../../src/decision/rendezvous';
import { buildForwardingTable } from '../../src/decision/forwarding-table';
import { ErrorCodes, isTunlbError } from '../../src/errors';
import { tunlb } from '../../src/protocol';
import { backendAddr, FakeBackends, FakeClock, HASH_KEY, makeConfig, overTheWire, seededRandom, SimCluster } from './helpers';

const HS = tunlb.v1.HealthState;

/** One monitor alone (cluster of one), fake clock and fake backends. */
function single(o: Parameters<typeof makeConfig>[0] = {}) {
  const config = makeConfig({ balancers: 1, ...o });
  const clock = new FakeClock();
  const backends = new FakeBackends(clock);
  const events: BackendEvent[] = [];
  const sent: HealthReportBody[] = [];
  const m = new HealthMonitor({
    config,
    selfIndex: 0,
    hashKey: HASH_KEY,
    live: new Uint8Array([1]),
    nowMs: clock.nowMs,
    timers: clock,
    random: seededRandom(1),
    wallClockMs: () => 1_700_000_000_000 + clock.now,
    epoch: 5,
    runCheck: backends.runner(0),
    broadcast: (b) => sent.push(overTheWire(b)),
    onChange: (_v, _b, e) => events.push(e),
  });
  return { config, clock, backends, events, sent, m };
}

test('no health check: healthy and eligible from the start, nothing is checked', async (t) => {
  const { m, clock, backends, events } = single({ health: null });
  t.deepEqual(
    m.states().map((s) => [s.state, s.eligible, s.check, s.owner]),
    [
      ['healthy', true, null, null],
      ['healthy', true, null, null],
      ['healthy', true, null, null],
    ],
  );
  m.start();
  await clock.advance(5000);
  t.is(backends.calls.length, 0);
  t.is(events.length, 0);
  m.stop();
});

test('fall: a failing backend is unhealthy within interval x fall, with the reason; rise brings it back', async (t) => {
  const { m, clock, backends, events } = single({ backends: 1, health: { type: 'tcp', port: 80, interval_ms: 200, timeout_ms: 100, rise: 2, fall: 3 } });
  const a = backendAddr(0);
  t.is(m.stateOf(0, 0), 'unknown');
  t.false(m.eligible(0, 0), 'unknown is not eligible');
  m.start();
  await clock.advance(200);
  t.is(m.stateOf(0, 0), 'healthy');
  t.like(events[0], { from: 'unknown', to: 'healthy', reason: 'first check passed: tcp connect in 1 ms', vip: 'web4', backend: a, by: 'lb1', eligible: true });

  await clock.advance(500);
  const stoppedAt = clock.now;
  backends.down.add(a);
  let downAt = -1;
  while (clock.now < stoppedAt + 2000 && downAt < 0) {
    await clock.advance(10);
    if (m.stateOf(0, 0) === 'unhealthy') downAt = clock.now;
  }
  t.true(downAt > 0);
  t.true(downAt - stoppedAt <= 200 * 3 + 10, `unhealthy ${downAt - stoppedAt} ms after the stop (bound interval x fall)`);
  const down = events.at(-1)!;
  t.like(down, { from: 'healthy', to: 'unhealthy', reason: '3 consecutive failures: connect ECONNREFUSED', cause: 'check', wasEligible: true, eligible: false });
  t.false(m.eligible(0, 0));

  backends.down.delete(a);
  const restartedAt = clock.now;
  const checksBefore = backends.callsFor(a);
  let upAt = -1;
  while (clock.now < restartedAt + 2000 && upAt < 0) {
    await clock.advance(10);
    if (m.stateOf(0, 0) === 'healthy') upAt = clock.now;
  }
  t.true(upAt > 0);
  t.is(backends.callsFor(a) - checksBefore, 2, 'healthy after exactly rise successes');
  t.like(events.at(-1), { from: 'unhealthy', to: 'healthy', reason: '2 consecutive successes: tcp connect in 1 ms', eligible: true });
  const st = m.states()[0]!;
  t.like(st, { state: 'healthy', owner: 'lb1', checkedHere: true, decidedBy: 'lb1', successes: 2, failures: 0 });
  t.like(st.lastCheck, { ok: true });
  m.stop();
});

test('checks are jittered (first within one interval, then 90..100% of the interval) and never overlap', async (t) => {
  const { m, clock, backends } = single({ backends: 20, health: { type: 'icmp', interval_ms: 1000, timeout_ms: 500, rise: 1, fall: 1 } });
  backends.delayMs = 300;
  m.start();
  await clock.advance(20_000);
  const first = new Map<string, number>();
  const gaps: number[] = [];
  for (let i = 0; i < 20; i++) {
    const at = backends.calls.filter((c) => c.address === backendAddr(i)).map((c) => c.at);
    first.set(backendAddr(i), at[0]!);
    for (let k = 1; k < at.length; k++) gaps.push(at[k]! - at[k - 1]!);
  }
  t.true([...first.values()].every((x) => x >= 0 && x < 1000));
  t.true(new Set([...first.values()].map((x) => Math.floor(x / 100))).size > 3, 'first checks spread over the interval');
  t.true(gaps.every((g) => g >= 900 && g <= 1000), `gaps in [900, 1000]: ${Math.min(...gaps)}..${Math.max(...gaps)}`);
  t.true(new Set(gaps).size > 10, 'gaps vary');
  m.stop();
  await clock.advance(1000); // checks in flight at stop() settle (their results are dropped)
  t.is(clock.pending, 0, 'stop() leaves no timer');
});

test('a check runner that never settles is failed by the watchdog (timeout + 1 s) and checking goes on', async (t) => {
  const config = makeConfig({ balancers: 1, backends: 1, health: { type: 'tcp', port: 80, interval_ms: 1000, timeout_ms: 500, rise: 1, fall: 1 } });
  const clock = new FakeClock();
  let calls = 0;
  const m = new HealthMonitor({
    config,
    selfIndex: 0,
    hashKey: HASH_KEY,
    live: new Uint8Array([1]),
    nowMs: clock.nowMs,
    timers: clock,
    random: () => 0,
    runCheck: () => {
      calls++;
      return new Promise(() => undefined);
    },
    broadcast: () => undefined,
    onChange: () => undefined,
  });
  m.start();
  await clock.advance(1600);
  t.is(m.stateOf(0, 0), 'unhealthy');
  t.regex(m.states()[0]!.reason, /check did not finish within 1500 ms/);
  await clock.advance(2000);
  t.true(calls >= 2);
  m.stop();
});

test('drain / undrain: not eligible while draining, cluster-wide mark in a change report; errors for unknown names', async (t) => {
  const { m, clock, events, sent } = single({ health: null });
  m.start();
  await clock.advance(10);
  const ev = m.drain('web4', backendAddr(1))!;
  t.like(ev, { from: 'healthy', to: 'draining', reason: 'drained by operator on lb1', cause: 'operator', eligible: false, backendIndex: 1 });
  t.false(m.eligible(0, 1));
  t.true(m.eligible(0, 0));
  await clock.advance(0);
  const change = sent.find((b) => !b.periodic)!;
  t.truthy(change);
  t.is(change.backends!.length, 1);
  t.like(change.backends![0], { vip: 0, backend: 1, drained: true });
  t.true(Number(change.backends![0]!.drainStamp) > 0);
  t.is(m.drain(0, backendAddr(1)), null, 'draining again: no transition');
  t.like(m.undrain('web4', backendAddr(1))!, { from: 'draining', to: 'healthy', eligible: true });
  t.is(events.length, 2);
  // The periodic report repeats every drain mark (also undrained ones, so undrain heals too).
  await clock.advance(1000);
  const periodic = sent.filter((b) => b.periodic).at(-1)!;
  t.like(periodic.backends![0], { vip: 0, backend: 1, drained: false });
  const e1 = t.throws(() => m.drain('nope', backendAddr(0)));
  t.true(isTunlbError(e1, ErrorCodes.ADMIN));
  t.regex(e1!.message, /no VIP "nope" \(VIPs: web4\)/);
  const e2 = t.throws(() => m.drain('web4', '10.7.7.7'));
  t.regex(e2!.message, /no backend 10\.7\.7\.7 in VIP web4/);
  m.stop();
});

test('drain accepts any spelling of an IPv6 address', (t) => {
  const config = makeConfig({
    balancers: 1,
    vips: [{ name: 'web6', address: 'fd00::10', ports: [80], backends: [{ address: 'fd00:3::21' }, { address: 'fd00:3::22' }] }],
  });
  const m = new HealthMonitor({ config, selfIndex: 0, hashKey: HASH_KEY, live: new Uint8Array([1]), nowMs: () => 0, broadcast: () => undefined, onChange: () => undefined, runCheck: async () => ({ ok: true, rttMs: 0, reason: '' }) });
  t.like(m.drain('web6', 'FD00:0003:0:0::0022')!, { backend: 'fd00:3::22', to: 'draining' });
  m.stop();
});

test('ownership: rendezvous by (vip/backend, balancer id); each backend is checked by exactly one balancer; spread is even', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 300, health: { type: 'tcp', port: 80, interval_ms: 1000, timeout_ms: 500, rise: 1, fall: 1 } }));
  sim.start();
  await sim.clock.advance(2000); // everyone heard everyone
  const ids = sim.config.balancers.map((b) => b.id);
  const owners = [0, 0, 0];
  for (let b = 0; b < 300; b++) {
    const want = healthOwner(memberSeed(HASH_KEY, healthKey(sim.config.vips[0]!, sim.config.vips[0]!.backends[b]!)), ids, HASH_KEY, [1, 1, 1]);
    for (const n of sim.nodes) t.is(n.monitor.ownerOf(0, b), want);
    owners[want]!++;
  }
  t.true(owners.every((c) => c > 70 && c < 130), `spread ${owners}`);
  const t0 = sim.clock.now;
  sim.backends.calls.length = 0;
  await sim.clock.advance(5000);
  for (let b = 0; b < 300; b++) {
    const by = new Set(sim.backends.calls.filter((c) => c.address === backendAddr(b) && c.at >= t0).map((c) => c.by));
    t.is(by.size, 1, `backend ${b} checked by ${[...by]}`);
    t.true(by.has(sim.nodes[0]!.monitor.ownerOf(0, b)));
  }
  // At start, before hearing anyone, a balancer checks everything (all are its own).
  t.true(sim.nodes[0]!.monitor.stats.ownershipChanges > 0);
  sim.stop();
});

test("peers apply the owner's reports: same state and reason everywhere within the report latency", async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 6, health: { type: 'tcp', port: 80, interval_ms: 200, timeout_ms: 100, rise: 2, fall: 2 } }));
  sim.start();
  await sim.clock.advance(2000);
  t.deepEqual(sim.eligibility(), ['111111', '111111', '111111']);
  const b = 4;
  const owner = sim.nodes[0]!.monitor.ownerOf(0, b);
  const ownerId = sim.config.balancers[owner]!.id;
  sim.backends.down.add(backendAddr(b));
  await sim.clock.advance(600);
  t.deepEqual(sim.eligibility(), ['111101', '111101', '111101']);
  for (const n of sim.nodes) {
    const ev = n.events.filter((e) => e.backendIndex === b).at(-1)!;
    if (n.index === owner) t.like(ev, { to: 'unhealthy', cause: 'check', by: ownerId, reason: '2 consecutive failures: connect ECONNREFUSED' });
    else t.like(ev, { to: 'unhealthy', cause: 'peer', by: ownerId, reason: `${ownerId}: 2 consecutive failures: connect ECONNREFUSED` });
    t.is(n.monitor.states()[b]!.decidedBy, ownerId);
  }
  // Only the owner checked it.
  t.deepEqual(new Set(sim.backends.calls.filter((c) => c.address === backendAddr(b) && c.at > 1500).map((c) => c.by)), new Set([owner]));
  sim.stop();
});

test("check detail everywhere: the owner's last check (ok, latency, consecutive failures, age) reaches every balancer; time down counts", async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 3, health: { type: 'tcp', port: 80, interval_ms: 200, timeout_ms: 100, rise: 2, fall: 2 } }));
  sim.backends.delayMs = 3;
  sim.start();
  await sim.clock.advance(2000);
  const b = 1;
  const owner = sim.nodes[0]!.monitor.ownerOf(0, b);
  const ownerId = sim.config.balancers[owner]!.id;
  for (const n of sim.nodes) {
    const st = n.monitor.states()[b]!;
    t.like(st.lastCheck, { ok: true, rttMs: 3, by: ownerId, failures: 0 }, `${n.index}: the owner's check`);
    // Reported at most a report period (1 s) plus a check interval ago.
    t.true(st.lastCheckAgoMs !== null && st.lastCheckAgoMs <= 1200, `${n.index}: last check ${st.lastCheckAgoMs} ms ago`);
    t.is(st.downForMs, 0);
    t.is(st.downTotalMs, 0);
  }
  sim.backends.down.add(backendAddr(b));
  await sim.clock.advance(1500);
  for (const n of sim.nodes) {
    const st = n.monitor.states()[b]!;
    t.is(st.state, 'unhealthy');
    t.like(st.lastCheck, { ok: false, by: ownerId });
    t.true(st.lastCheck!.failures >= 2, `${n.index}: consecutive failures at the owner ${st.lastCheck!.failures}`);
    t.true(st.downForMs > 500 && st.downForMs < 1500, `${n.index}: down for ${st.downForMs} ms`);
    t.is(st.downTotalMs, st.downForMs);
    t.is(st.changedAgoMs, st.downForMs, 'the last change is the one that took it down');
  }
  const downFor = sim.nodes[owner]!.monitor.states()[b]!.downForMs;
  sim.backends.down.delete(backendAddr(b));
  await sim.clock.advance(2000);
  for (const n of sim.nodes) {
    const st = n.monitor.states()[b]!;
    t.is(st.state, 'healthy');
    t.is(st.downForMs, 0, 'up again');
    t.true(st.downTotalMs >= downFor && st.downTotalMs < downFor + 600, `${n.index}: down ${st.downTotalMs} ms in all`);
    t.like(st.lastCheck, { ok: true, failures: 0 });
  }
  sim.stop();
});

test('takeover: when the owner dies the next in rank checks, starting from the last shared state', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 30, health: { type: 'tcp', port: 80, interval_ms: 200, timeout_ms: 100, rise: 3, fall: 2 } }));
  sim.start();
  await sim.clock.advance(2000);
  const ids = sim.config.balancers.map((b) => b.id);
  // A backend owned by lb2 (index 1), currently unhealthy.
  const b = sim.config.vips[0]!.backends.findIndex((_, i) => sim.nodes[0]!.monitor.ownerOf(0, i) === 1);
  t.true(b >= 0);
  sim.backends.down.add(backendAddr(b));
  await sim.clock.advance(1000);
  t.deepEqual(sim.nodes.map((n) => n.monitor.stateOf(0, b)), ['unhealthy', 'unhealthy', 'unhealthy']);
  const key = memberSeed(HASH_KEY, healthKey(sim.config.vips[0]!, sim.config.vips[0]!.backends[b]!));
  const next = healthOwner(key, ids, HASH_KEY, [1, 0, 1]);
  t.not(next, 1);

  sim.kill(1);
  const killedAt = sim.clock.now;
  await sim.clock.advance(150); // within one tick the live change is seen
  for (const n of [sim.nodes[0]!, sim.nodes[2]!]) t.is(n.monitor.ownerOf(0, b), next);
  // The new owner starts from the last shared state: unhealthy, not unknown; it checks it.
  t.is(sim.nodes[next]!.monitor.stateOf(0, b), 'unhealthy');
  await sim.clock.advance(500);
  t.true(sim.backends.callsFor(backendAddr(b), next) >= 2);
  t.is(sim.nodes[next]!.monitor.stateOf(0, b), 'unhealthy', 'no flap through unknown or healthy');
  t.false(sim.nodes[next]!.events.some((e) => e.backendIndex === b && e.atMs >= killedAt && e.to !== 'unhealthy'));
  // The server comes back: the new owner needs rise (3) successes, counted from zero.
  sim.backends.down.delete(backendAddr(b));
  const upAt = sim.clock.now;
  const before = sim.backends.callsFor(backendAddr(b), next);
  while (sim.nodes[next]!.monitor.stateOf(0, b) !== 'healthy' && sim.clock.now < upAt + 2000) await sim.clock.advance(5);
  t.is(sim.backends.callsFor(backendAddr(b), next) - before, 3);
  await sim.clock.advance(10);
  t.deepEqual(sim.eligibility().map((s) => s[b]), ['1', '1']);
  // Backends lb2 did not own did not move.
  for (let i = 0; i < 30; i++) {
    const full = healthOwner(memberSeed(HASH_KEY, healthKey(sim.config.vips[0]!, sim.config.vips[0]!.backends[i]!)), ids, HASH_KEY, [1, 1, 1]);
    if (full !== 1) t.is(sim.nodes[0]!.monitor.ownerOf(0, i), full, `backend ${i} stays with ${ids[full]}`);
  }
  sim.stop();
});

test('a restarted balancer adopts the shared state before its own first result, then owns its share again', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 30, health: { type: 'tcp', port: 80, interval_ms: 1000, timeout_ms: 500, rise: 2, fall: 2 } }));
  sim.start();
  await sim.clock.advance(3000);
  // Every backend owned by lb3 is down.
  const lb3owned = sim.config.vips[0]!.backends.map((_, i) => i).filter((i) => sim.nodes[0]!.monitor.ownerOf(0, i) === 2);
  t.true(lb3owned.length > 0);
  sim.kill(2);
  for (const i of lb3owned) sim.backends.down.add(backendAddr(i));
  await sim.clock.advance(4000);
  for (const i of lb3owned) t.is(sim.nodes[0]!.monitor.stateOf(0, i), 'unhealthy');
  // lb3 restarts with a fresh monitor; its checks run within its first interval, but the
  // periodic reports of lb1/lb2 (every second) reach it first for most backends.
  sim.backends.delayMs = 400;
  sim.revive(2);
  await sim.clock.advance(1500);
  const lb3 = sim.nodes[2]!;
  for (const i of lb3owned) t.is(lb3.monitor.stateOf(0, i), 'unhealthy', `backend ${i}`);
  t.false(lb3.events.some((e) => e.to === 'healthy' && lb3owned.includes(e.backendIndex)), 'never shown healthy');
  await sim.clock.advance(3000);
  for (const i of lb3owned) for (const n of sim.nodes) t.is(n.monitor.ownerOf(0, i), 2);
  t.deepEqual(new Set(sim.eligibility()).size, 1);
  sim.stop();
});

test('stale reports are ignored: older sequence, older epoch, non-owner sender, other configuration', (t) => {
  const config = makeConfig({ balancers: 3, backends: 30, health: { type: 'tcp', port: 80, rise: 1, fall: 1 } });
  const clock = new FakeClock();
  const m = new HealthMonitor({
    config,
    selfIndex: 0,
    hashKey: HASH_KEY,
    live: new Uint8Array([1, 1, 1]),
    nowMs: clock.nowMs,
    timers: clock,
    runCheck: async () => ({ ok: true, rttMs: 0, reason: '' }),
    broadcast: () => undefined,
    onChange: () => undefined,
  });
  const vip = config.vips[0]!;
  const hash = (i: number) => memberSeed(HASH_KEY, healthKey(vip, vip.backends[i]!)) >>> 0;
  // Make lb2 and lb3 candidates (heard), then pick a backend lb2 owns and one lb3 owns.
  m.onReport(1, overTheWire({ epoch: 100, sequence: 1, periodic: true, periodMs: 1000, backends: [] }));
  m.onReport(2, overTheWire({ epoch: 200, sequence: 1, periodic: true, periodMs: 1000, backends: [] }));
  const b2 = vip.backends.findIndex((_, i) => m.ownerOf(0, i) === 1);
  const b3 = vip.backends.findIndex((_, i) => m.ownerOf(0, i) === 2);
  const entry = (b: number, state: number, extra: object = {}) => ({ vip: 0, backend: b, idHash: hash(b), state, ...extra });
  const send = (from: number, epoch: number, seq: number, ...e: object[]) => m.onReport(from, overTheWire({ epoch, sequence: seq, periodic: false, periodMs: 1000, backends: e }));

  send(1, 100, 5, entry(b2, HS.HEALTH_STATE_UNHEALTHY, { reason: 'connect ECONNREFUSED' }));
  t.is(m.stateOf(0, b2), 'unhealthy');
  t.is(m.states()[b2]!.reason, 'lb2: connect ECONNREFUSED');
  send(1, 100, 4, entry(b2, HS.HEALTH_STATE_HEALTHY));
  t.is(m.stateOf(0, b2), 'unhealthy', 'an older sequence of the same sender is stale');
  t.is(m.stats.entriesStale, 1);
  send(1, 99, 50, entry(b2, HS.HEALTH_STATE_HEALTHY));
  t.is(m.stateOf(0, b2), 'unhealthy', 'an older epoch (previous run) is stale');
  t.is(m.stats.entriesStale, 2);
  send(2, 200, 9, entry(b2, HS.HEALTH_STATE_HEALTHY));
  t.is(m.stateOf(0, b2), 'unhealthy', 'lb3 is not the owner of this backend');
  t.is(m.stats.entriesNotOwner, 1);
  send(1, 100, 6, { ...entry(b2, HS.HEALTH_STATE_HEALTHY), idHash: (hash(b2) ^ 1) >>> 0 });
  t.is(m.stateOf(0, b2), 'unhealthy', 'id hash of another configuration');
  send(1, 100, 7, { vip: 0, backend: 999, idHash: 1, state: HS.HEALTH_STATE_HEALTHY }, { vip: 7, backend: 0, idHash: 1, state: HS.HEALTH_STATE_HEALTHY });
  t.is(m.stats.entriesUnknown, 3);
  send(1, 100, 8, entry(b2, HS.HEALTH_STATE_HEALTHY));
  t.is(m.stateOf(0, b2), 'healthy', 'a newer one applies');
  t.is(m.states()[b2]!.reason, 'reported by lb2');
  send(1, 101, 1, entry(b2, HS.HEALTH_STATE_UNHEALTHY));
  t.is(m.stateOf(0, b2), 'unhealthy', 'a restarted sender (higher epoch) starts its sequence again');
  // A restart whose epoch went BACK (its clock behind, its incarnation state lost): stale until
  // membership reports the restart (peerRestarted), then heard again.
  send(1, 90, 1, entry(b2, HS.HEALTH_STATE_HEALTHY));
  t.is(m.stateOf(0, b2), 'unhealthy', 'a lower epoch before peerRestarted is stale');
  m.peerRestarted(1);
  send(1, 90, 2, entry(b2, HS.HEALTH_STATE_HEALTHY));
  t.is(m.stateOf(0, b2), 'healthy', 'after peerRestarted, the lower epoch is heard');
  send(1, 101, 2, entry(b2, HS.HEALTH_STATE_UNHEALTHY));
  send(1, 90, 3, entry(b2, HS.HEALTH_STATE_UNHEALTHY));
  t.is(m.stateOf(0, b2), 'unhealthy');
  send(1, 101, 3, entry(b2, HS.HEALTH_STATE_UNHEALTHY));
  // A backend we know nothing about is adopted from anyone (a restart learns the shared state)...
  t.is(m.stateOf(0, b3), 'unknown');
  send(1, 101, 2, entry(b3, HS.HEALTH_STATE_HEALTHY));
  t.is(m.stateOf(0, b3), 'healthy');
  // ...but once known, only its owner moves it.
  send(1, 101, 3, entry(b3, HS.HEALTH_STATE_UNHEALTHY));
  t.is(m.stateOf(0, b3), 'healthy');
  send(2, 200, 2, entry(b3, HS.HEALTH_STATE_UNHEALTHY));
  t.is(m.stateOf(0, b3), 'unhealthy');
  // Reports from ourselves or from out-of-range senders are ignored.
  m.onReport(0, overTheWire({ epoch: 1, sequence: 1, backends: [entry(b3, HS.HEALTH_STATE_HEALTHY)] }));
  m.onReport(7, overTheWire({ epoch: 1, sequence: 1, backends: [entry(b3, HS.HEALTH_STATE_HEALTHY)] }));
  t.is(m.stateOf(0, b3), 'unhealthy');
  m.stop();
});

/** A VIP of `n` unchecked backends with the given drain timeout. */
function drainVip(n: number, drainTimeoutS: number) {
  return [{ name: 'web4', address: '10.8.0.10', ports: [80], drain_timeout_s: drainTimeoutS, backends: Array.from({ length: n }, (_, i) => ({ address: backendAddr(i) })) }];
}

test('drain timeout: every balancer moves the backend to drained (down) when drain_timeout_s has passed since the drain stamp', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, vips: drainVip(3, 2) }));
  sim.start();
  await sim.clock.advance(1000);
  const drainAt = sim.clock.now;
  sim.nodes[1]!.monitor.drain('web4', backendAddr(1));
  await sim.clock.advance(1);
  for (const n of sim.nodes) {
    const st = n.monitor.states()[1]!;
    t.like(st, { state: 'draining', down: false, drainedAtMs: 1_700_000_000_000 + drainAt, drainDeadlineMs: 1_700_000_000_000 + drainAt + 2000 });
  }
  await sim.clock.advance(2000 - 1 - 100);
  t.deepEqual(sim.nodes.map((n) => n.monitor.stateOf(0, 1)), ['draining', 'draining', 'draining'], 'not before the timeout');
  await sim.clock.advance(200); // the deadline plus one tick (100 ms)
  t.deepEqual(sim.nodes.map((n) => n.monitor.stateOf(0, 1)), ['drained', 'drained', 'drained']);
  for (const n of sim.nodes) {
    t.true(n.monitor.states()[1]!.down);
    t.is(n.monitor.stats.drainsExpired, 1);
    const ev = n.events.find((e) => e.to === 'drained')!;
    t.like(ev, { from: 'draining', cause: 'timeout', eligible: false, by: sim.config.balancers[n.index]!.id });
    t.regex(ev.reason, /^drain timeout 2 s passed \(drained by operator on lb2 at 2023-11-14T22:13:21\.000Z\); remaining flows are cut$/);
  }
  t.deepEqual(sim.eligibility(), ['101', '101', '101']);
  // A balancer that (re)starts later learns the old stamp from a periodic report and is due at once.
  sim.kill(2);
  await sim.clock.advance(500);
  sim.revive(2);
  await sim.clock.advance(1100 + 100);
  t.is(sim.nodes[2]!.monitor.stateOf(0, 1), 'drained');
  t.like(sim.nodes[2]!.events.find((e) => e.backendIndex === 1 && e.to === 'drained'), { cause: 'timeout' });
  // Undrain ends it everywhere.
  sim.nodes[0]!.monitor.undrain('web4', backendAddr(1));
  await sim.clock.advance(1);
  t.deepEqual(sim.nodes.map((n) => n.monitor.stateOf(0, 1)), ['healthy', 'healthy', 'healthy']);
  t.deepEqual(sim.nodes.map((n) => n.monitor.states()[1]!.down), [false, false, false]);
  sim.stop();
});

test('drain timeout 0: a drained backend keeps its flows (two hours later still draining, not drained)', async (t) => {
  const { m, clock } = single({ vips: drainVip(2, 0) });
  m.start();
  m.drain('web4', backendAddr(0));
  await clock.advance(2 * 3600 * 1000); // two hours (the default timeout is 300 s)
  t.like(m.states()[0], { state: 'draining', down: false, drainDeadlineMs: null });
  t.is(m.expireDrains(), 0);
  m.stop();
});

test('drain marks: last writer wins by stamp, from any balancer; older marks are ignored', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 4, health: null }));
  sim.start();
  await sim.clock.advance(1000);
  sim.nodes[1]!.monitor.drain('web4', backendAddr(2));
  await sim.clock.advance(1);
  t.deepEqual(sim.eligibility(), ['1101', '1101', '1101']);
  const ev = sim.nodes[0]!.events.at(-1)!;
  t.like(ev, { from: 'healthy', to: 'draining', reason: 'drained by operator on lb2', cause: 'operator', by: 'lb2' });
  await sim.clock.advance(5);
  sim.nodes[2]!.monitor.undrain('web4', backendAddr(2));
  await sim.clock.advance(1);
  t.deepEqual(sim.eligibility(), ['1111', '1111', '1111']);
  // A delayed copy of the old drain mark (a replayed periodic report) changes nothing.
  const old = sim.nodes[1]!.sent.find((b) => b.backends!.some((x) => x.drained))!;
  sim.nodes[0]!.monitor.onReport(1, overTheWire({ ...old, sequence: 10_000 }));
  t.deepEqual(sim.eligibility(), ['1111', '1111', '1111']);
  sim.stop();
});

test('a lost change report heals with the next periodic report', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 2, backends: 10, health: { type: 'tcp', port: 80, interval_ms: 100, timeout_ms: 50, rise: 1, fall: 1 } }));
  sim.start();
  await sim.clock.advance(2000);
  const b = sim.config.vips[0]!.backends.findIndex((_, i) => sim.nodes[0]!.monitor.ownerOf(0, i) === 0);
  sim.drop = (_f, _t, body) => !body.periodic; // every change report is lost
  sim.backends.down.add(backendAddr(b));
  while (sim.nodes[0]!.monitor.stateOf(0, b) !== 'unhealthy') await sim.clock.advance(1);
  t.is(sim.nodes[1]!.monitor.stateOf(0, b), 'healthy', 'change report lost');
  await sim.clock.advance(1000);
  t.is(sim.nodes[1]!.monitor.stateOf(0, b), 'unhealthy', 'healed by the periodic report');
  t.like(sim.nodes[1]!.events.at(-1), { reason: 'reported by lb1', cause: 'peer' });
  sim.stop();
});

test('a live peer that sends no reports (older version) owns nothing; an empty report (v1 without fields) is accepted', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 2, backends: 20, health: { type: 'tcp', port: 80, interval_ms: 100, timeout_ms: 50, rise: 1, fall: 1 } }));
  sim.kill(1); // lb2's monitor does not run...
  sim.nodes[0]!.live[1] = 1; // ...but membership says lb2 is live
  sim.nodes[0]!.monitor.start();
  await sim.clock.advance(3000);
  for (let i = 0; i < 20; i++) t.is(sim.nodes[0]!.monitor.ownerOf(0, i), 0);
  t.deepEqual(sim.eligibility(), ['1'.repeat(20)]);
  // An old-version HealthReport: no fields at all.
  sim.nodes[0]!.monitor.onReport(1, tunlb.v1.HealthReport.decode(new Uint8Array(0)));
  t.is(sim.nodes[0]!.monitor.stats.reportsReceived, 1);
  sim.stop();
});

test('every balancer agrees on eligibility and on the backend table through random failures, drains and a failover', async (t) => {
  const N = 40;
  const sim = new SimCluster(makeConfig({ balancers: 4, backends: N, health: { type: 'http', port: 80, interval_ms: 200, timeout_ms: 100, rise: 2, fall: 2 } }), { seed: 3 });
  const rnd = seededRandom(99);
  sim.start();
  await sim.clock.advance(2000);
  for (let round = 0; round < 12; round++) {
    for (let k = 0; k < 4; k++) {
      const a = backendAddr(Math.floor(rnd() * N));
      if (sim.backends.down.has(a)) sim.backends.down.delete(a);
      else sim.backends.down.add(a);
    }
    if (round === 3) sim.nodes[1]!.monitor.drain('web4', backendAddr(7));
    if (round === 5) sim.kill(3);
    if (round === 8) sim.nodes[0]!.monitor.undrain('web4', backendAddr(7));
    await sim.clock.advance(1500); // > interval x max(rise, fall) + report latency
    const views = sim.eligibility();
    t.is(new Set(views).size, 1, `round ${round}: ${views.join(' ')}`);
    const expect = sim.config.vips[0]!.backends.map((b) => (sim.backends.down.has(b.address.text) || (round >= 3 && round < 8 && b.address.text === backendAddr(7)) ? '0' : '1')).join('');
    t.is(views[0], expect, `round ${round}: the view matches the backends`);
  }
  // Same eligibility => the same backend table on every balancer (same backend for a new flow).
  const tables = sim.nodes
    .filter((n) => n.up)
    .map((n) => buildForwardingTable(sim.config, HASH_KEY, 1, (vip, i) => n.monitor.eligible(vip.index, i)).backendTables[0]!.snapshotRows());
  for (const tb of tables.slice(1)) t.deepEqual(tb, tables[0]);
  sim.stop();
});

test('unchecked (unknown) health is not reported, drain marks are', (t) => {
  const config = makeConfig({ balancers: 1, backends: 1000, health: { type: 'tcp', port: 80, rise: 1, fall: 1 } });
  const clock = new FakeClock();
  const m = new HealthMonitor({ config, selfIndex: 0, hashKey: HASH_KEY, live: new Uint8Array([1]), nowMs: clock.nowMs, timers: clock, runCheck: async () => ({ ok: true, rttMs: 0, reason: '' }), broadcast: () => undefined, onChange: () => undefined });
  const vip = config.vips[0]!;
  // No check has run (health unknown): only the drain marks are reported.
  for (let i = 0; i < 50; i++) m.drain('web4', vip.backends[i * 20]!.address.text);
  const bodies = m.report();
  t.true(bodies.length >= 1);
  let n = 0;
  for (const b of bodies) {
    const len = tunlb.v1.HealthReport.encode({ ...b, sequence: 2 ** 40 }).finish().length;
    t.true(len <= DEFAULT_REPORT_BUDGET, `${len} bytes`);
    n += b.backends!.length;
  }
  t.is(n, 50, 'unknown health is not reported; drain marks are');
  m.stop();
});

test('report packing with 1000 owned backends: several datagrams under the budget, every backend once', async (t) => {
  const { m, clock } = single({ backends: 1000, health: { type: 'tcp', port: 80, interval_ms: 1000, timeout_ms: 500, rise: 1, fall: 1 } });
  m.start();
  await clock.advance(1100);
  const bodies = m.report();
  t.true(bodies.length > 1);
  const seen = new Set<number>();
  for (const b of bodies) {
    const len = tunlb.v1.HealthReport.encode({ ...b, sequence: 2 ** 40 }).finish().length;
    t.true(len <= DEFAULT_REPORT_BUDGET, `${len} bytes`);
    t.true(b.periodic!);
    for (const x of b.backends!) {
      t.is(x.state, HS.HEALTH_STATE_HEALTHY);
      t.falsy(x.reason, 'periodic reports carry no reasons');
      seen.add(x.backend!);
    }
  }
  t.is(seen.size, 1000);
  t.log(`${bodies.length} reports for 1000 backends`);
  m.stop();
});

test('reload (updateConfig): kept backends keep state under new indexes, removed ones get a removed event, new ones start unknown', async (t) => {
  const h = { type: 'tcp' as const, port: 80, interval_ms: 100, timeout_ms: 50, rise: 1, fall: 1 };
  const mk = (addrs: string[]) =>
    makeConfig({ balancers: 1, vips: [{ name: 'web4', address: '10.8.0.10', ports: [80], backends: addrs.map((address) => ({ address, health: h })) }] });
  const c1 = mk(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
  const clock = new FakeClock();
  const backends = new FakeBackends(clock);
  const events: BackendEvent[] = [];
  const m = new HealthMonitor({ config: c1, selfIndex: 0, hashKey: HASH_KEY, live: new Uint8Array([1]), nowMs: clock.nowMs, timers: clock, random: seededRandom(2), runCheck: backends.runner(0), broadcast: () => undefined, onChange: (_v, _b, e) => events.push(e) });
  backends.down.add('10.0.0.2');
  m.start();
  await clock.advance(500);
  m.drain('web4', '10.0.0.3');
  t.deepEqual(m.states().map((s) => s.state), ['healthy', 'unhealthy', 'draining']);
  events.length = 0;
  m.updateConfig(mk(['10.0.0.3', '10.0.0.2', '10.0.0.9']));
  t.deepEqual(events.map((e) => [e.backend, e.from, e.to, e.reason, e.backendIndex]), [['10.0.0.1', 'healthy', 'removed', 'removed from the configuration', 0]]);
  t.deepEqual(m.states().map((s) => [s.backend, s.state]), [
    ['10.0.0.3', 'draining'],
    ['10.0.0.2', 'unhealthy'],
    ['10.0.0.9', 'unknown'],
  ]);
  await clock.advance(500);
  t.deepEqual(m.states().map((s) => s.state), ['draining', 'unhealthy', 'healthy']);
  t.is(backends.calls.filter((c) => c.address === '10.0.0.1' && c.at > 500).length, 0, 'removed backends are not checked');
  m.stop();
});

test('stop() cancels everything; start() again resumes', async (t) => {
  const { m, clock, backends } = single({ backends: 5, health: { type: 'tcp', port: 80, interval_ms: 100, timeout_ms: 50, rise: 1, fall: 1 } });
  m.start();
  await clock.advance(1000);
  m.stop();
  t.is(clock.pending, 0);
  const n = backends.calls.length;
  await clock.advance(1000);
  t.is(backends.calls.length, n);
  m.start();
  await clock.advance(1000);
  t.true(backends.calls.length > n);
  m.stop();
});

test('drain marks from a peer: onPeerDrain names the balancer that took the command (the event origin), not on the one that took it', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 2, health: null }));
  sim.start();
  await sim.clock.advance(100);
  sim.nodes[1]!.monitor.drain(0, backendAddr(1));
  await sim.clock.advance(10);
  t.deepEqual(sim.nodes[1]!.peerDrains, [], 'lb2 took the command itself: no peer drain there');
  for (const i of [0, 2]) t.deepEqual(sim.nodes[i]!.peerDrains, [`web4 ${backendAddr(1)} drained lb2 lb2`], `node ${i}`);
  // The periodic repeats of the mark change nothing: no more calls.
  await sim.clock.advance(2500);
  t.is(sim.nodes[0]!.peerDrains.length, 1);
  sim.nodes[2]!.monitor.undrain(0, backendAddr(1));
  await sim.clock.advance(10);
  t.deepEqual(sim.nodes[0]!.peerDrains.at(-1), `web4 ${backendAddr(1)} undrained lb3 lb3`);
  t.deepEqual(sim.nodes[1]!.peerDrains, [`web4 ${backendAddr(1)} undrained lb3 lb3`]);
  sim.stop();
});
