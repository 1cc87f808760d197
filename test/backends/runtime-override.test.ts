/**
 * Runtime overrides (src/backends/runtime-override.ts, health-monitor.ts "Runtime overrides"):
 * the marks' wire decoding (malformed ones dropped), last writer wins by stamp (ties: a repeat),
 * and, over a simulated cluster whose reports go through the real protobuf encoding: a weight or
 * maintenance set on one balancer reaches every balancer, every balancer then builds the same
 * forwarding table, maintenance keeps the checks going, a reload clears the overrides everywhere,
 * a lost change report heals, and a (re)joining balancer learns the marks from its peers.
 */
import test from 'ava';
import { buildForwardingTable } from '../../src/decision/forwarding-table';
import { decodeMaintenanceMark, decodeWeightMark, parseWeight, wins } from '../../src/backends/runtime-override';
import { healthKey, type OverrideEvent } from '../../src/backends/health-monitor';
import { memberSeed } from '../../src/decision/rendezvous';
import { ErrorCodes, isTunlbError } from '../../src/errors';
import { backendAddr, HASH_KEY, makeConfig, overTheWire, SimCluster } from './helpers';

const WALL0 = 1_700_000_000_000;
const stamp = (ms: number, by: number): number => (WALL0 + ms) * 32 + by;

test('decodeWeightMark / decodeMaintenanceMark: none, marks, and malformed fields (3 balancers)', (t) => {
  const cases: Array<[string, Parameters<typeof decodeWeightMark>[0], string]> = [
    ['no stamp', {}, 'none'],
    ['weight set', { weightStamp: stamp(0, 1), weight: 7, weightSet: true }, 'mark 7'],
    ['weight 0 set', { weightStamp: stamp(0, 1), weightSet: true }, 'mark 0'],
    ['back to the file', { weightStamp: stamp(0, 2), weight: 9 }, 'mark file'],
    ['weight 65535', { weightStamp: stamp(0, 0), weight: 65535, weightSet: true }, 'mark 65535'],
    ['weight 65536', { weightStamp: stamp(0, 0), weight: 65536, weightSet: true }, 'malformed'],
    ['stamp names balancer 5 of 3', { weightStamp: stamp(0, 5), weight: 1, weightSet: true }, 'malformed'],
    ['stamp not a safe integer', { weightStamp: 2 ** 60, weight: 1, weightSet: true }, 'malformed'],
  ];
  for (const [what, b, want] of cases) {
    const d = decodeWeightMark(b, 3);
    const got = d.kind === 'mark' ? `mark ${d.mark.weight ?? 'file'}` : d.kind;
    t.is(got, want, what);
  }
  t.deepEqual(decodeMaintenanceMark({}, 3), { kind: 'none' });
  t.deepEqual(decodeMaintenanceMark({ maintStamp: stamp(1, 2), maintenance: true }, 3), { kind: 'mark', mark: { stamp: stamp(1, 2), on: true } });
  t.deepEqual(decodeMaintenanceMark({ maintStamp: stamp(1, 2) }, 3), { kind: 'mark', mark: { stamp: stamp(1, 2), on: false } });
  t.is(decodeMaintenanceMark({ maintStamp: stamp(1, 3), maintenance: true }, 3).kind, 'malformed');
});

test('last writer wins: a larger stamp replaces, an equal stamp (a repeat) or a smaller one does not; same ms: the balancer index decides', (t) => {
  t.true(wins({ stamp: stamp(5, 0) }, { stamp: stamp(4, 2) }), 'later ms wins whoever wrote it');
  t.false(wins({ stamp: stamp(4, 2) }, { stamp: stamp(5, 0) }));
  t.true(wins({ stamp: stamp(5, 2) }, { stamp: stamp(5, 1) }), 'same ms: the higher index wins, on every balancer alike');
  t.false(wins({ stamp: stamp(5, 1) }, { stamp: stamp(5, 1) }), 'equal stamp: the same mark');
  t.true(wins({ stamp: stamp(0, 0) }, { stamp: 0 }), 'any mark beats none');
});

test('parseWeight: integers 0..65535 and "file"; anything else is refused with the range', (t) => {
  for (const [v, w] of [[0, 0], ['3', 3], [65535, 65535], ['file', null], [null, null]] as const) t.deepEqual(parseWeight(v), { ok: true, weight: w });
  for (const v of [-1, 65536, 1.5, '1e3', 'x', '', true, {}]) {
    const r = parseWeight(v);
    t.false(r.ok, JSON.stringify(v));
    if (!r.ok) t.regex(r.error, /weight must be an integer 0\.\.65535 \(0: no new flows\) or "file"/);
  }
});

/** The backend table rows of VIP 0 as each live node would build it from its own view. */
function tables(sim: SimCluster): Uint16Array[] {
  return sim.nodes
    .filter((n) => n.up)
    .map((n) =>
      buildForwardingTable(sim.config, HASH_KEY, 1, (vip, i) => n.monitor.eligible(vip.index, i), undefined, (vip, i) => !n.monitor.isDown(vip.index, i), (vip, i) => n.monitor.weightOf(vip.index, i)).backendTables[0]!.snapshotRows(),
    );
}

function overrides(sim: SimCluster): OverrideEvent[][] {
  return sim.nodes.map((n) => {
    const evs: OverrideEvent[] = [];
    n.monitor.onOverride((e) => evs.push(e));
    return evs;
  });
}

test('weight: set on lb2, every balancer holds it and builds the same table; the table follows the weight; events name the origin', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 4, health: null }));
  const evs = overrides(sim);
  sim.start();
  await sim.clock.advance(1000);
  const before = tables(sim);
  const ev = sim.nodes[1]!.monitor.setWeight('web4', backendAddr(2), 5, 'api 127.0.0.1:40000')!;
  t.like(ev, { type: 'backend_weight', weight: 5, fileWeight: 1, by: 'lb2', origin: 'api 127.0.0.1:40000', reason: `web4 ${backendAddr(2)}: weight 5 (file 1), set on lb2` });
  await sim.clock.advance(1);
  t.deepEqual(sim.nodes.map((n) => n.monitor.weightOf(0, 2)), [5, 5, 5]);
  t.like(sim.nodes[0]!.monitor.states()[2], { weight: 5, fileWeight: 1, weightOverride: 5, maintenance: false, overrideBy: 'lb2', overrideAtMs: WALL0 + 1000 });
  t.like(evs[0]!.at(-1), { type: 'backend_weight', weight: 5, by: 'lb2', origin: 'peer lb2' });
  t.like(evs[2]!.at(-1), { origin: 'peer lb2' });
  const after = tables(sim);
  t.deepEqual(after[1], after[0], 'lb1 and lb2 build identical tables');
  t.deepEqual(after[2], after[0], 'lb3 too');
  // Backend 2 now holds about 5/8 of the rows (weights 1,1,5,1); rows only moved TO it.
  const share = after[0]!.filter((b) => b === 2).length / after[0]!.length;
  t.true(share > 0.55 && share < 0.70, `share ${share}`);
  for (let r = 0; r < before[0]!.length; r++) if (after[0]![r] !== before[0]![r]) t.is(after[0]![r], 2);
  // Weight 0: no rows at all (no new flows), and the backend is still up for its flows.
  sim.nodes[0]!.monitor.setWeight(0, backendAddr(2), 0, 'api x');
  await sim.clock.advance(1);
  const zero = tables(sim);
  t.is(zero[0]!.filter((b) => b === 2).length, 0);
  t.deepEqual(zero[2], zero[0]);
  t.deepEqual(sim.nodes.map((n) => n.monitor.isDown(0, 2)), [false, false, false]);
  // Setting the weight in force again changes nothing and sends nothing.
  const sent = sim.nodes[0]!.sent.length;
  t.is(sim.nodes[0]!.monitor.setWeight('web4', backendAddr(2), 0, 'api x'), null);
  await sim.clock.advance(1);
  t.is(sim.nodes[0]!.sent.length, sent);
  // Back to the file's weight: the first table again.
  sim.nodes[2]!.monitor.setWeight('web4', backendAddr(2), null, 'api y');
  await sim.clock.advance(1);
  const back = tables(sim);
  for (const tb of back) t.deepEqual(tb, before[0]);
  t.like(sim.nodes[0]!.monitor.states()[2], { weight: 1, weightOverride: null, overrideBy: null });
  sim.stop();
});

test('concurrent writers: the later command wins everywhere, whatever the delivery order; a replayed older mark changes nothing', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 3, health: null }));
  sim.start();
  await sim.clock.advance(1000);
  // lb1 and lb3 set weights 1 ms apart while every change report is lost...
  sim.drop = (_f, _t, body) => !body.periodic;
  sim.nodes[2]!.monitor.setWeight('web4', backendAddr(0), 7, 'api a');
  await sim.clock.advance(1);
  sim.nodes[0]!.monitor.setWeight('web4', backendAddr(0), 4, 'api b');
  t.deepEqual(sim.nodes.map((n) => n.monitor.weightOf(0, 0)), [4, 1, 7], 'before any report');
  // ...the periodic reports (each balancer repeats what it holds) settle on the later one.
  await sim.clock.advance(1100);
  t.deepEqual(sim.nodes.map((n) => n.monitor.weightOf(0, 0)), [4, 4, 4]);
  // A replay of lb3's older mark (a delayed periodic report) changes nothing.
  const old = sim.nodes[2]!.sent.find((b) => b.backends!.some((x) => x.weight === 7))!;
  sim.nodes[1]!.monitor.onReport(2, overTheWire({ ...old, sequence: 10_000 }));
  t.is(sim.nodes[1]!.monitor.weightOf(0, 0), 4);
  // The same stamp with another value (a writer never does this): the held mark stays, on every balancer alike.
  const held = sim.nodes[1]!.sent.at(-1)!.backends!.find((x) => x.backend === 0)!;
  sim.nodes[1]!.monitor.onReport(0, overTheWire({ epoch: 1e6, sequence: 1, periodic: true, periodMs: 1000, backends: [{ ...held, weight: 9 }] }));
  t.is(sim.nodes[1]!.monitor.weightOf(0, 0), 4);
  sim.stop();
});

test('maintenance: no new flows on every balancer, flows stay (not down), health checks and their reports go on, state and health still shown', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 4, health: { type: 'tcp', port: 80, interval_ms: 100, timeout_ms: 50, rise: 1, fall: 1 } }));
  const evs = overrides(sim);
  sim.start();
  await sim.clock.advance(1000);
  t.deepEqual(sim.eligibility(), ['1111', '1111', '1111']);
  const addr = backendAddr(1);
  const ev = sim.nodes[0]!.monitor.setMaintenance('web4', addr, true, 'api 127.0.0.1:1')!;
  t.like(ev, { type: 'backend_maintenance', maintenance: true, by: 'lb1', reason: `web4 ${addr}: maintenance on: no new flows, flows continue, checks go on, set on lb1` });
  await sim.clock.advance(1);
  t.deepEqual(sim.eligibility(), ['1011', '1011', '1011']);
  for (const n of sim.nodes) t.like(n.monitor.states()[1], { maintenance: true, state: 'healthy', health: 'healthy', eligible: false, down: false, drained: false });
  t.like(evs[2]!.at(-1), { type: 'backend_maintenance', maintenance: true, origin: 'peer lb1' });
  const rows = tables(sim);
  t.is(rows[0]!.filter((b) => b === 1).length, 0, 'no rows: no new flows');
  t.deepEqual(rows[1], rows[0]);
  // Checks go on: the backend fails, every balancer sees it unhealthy (and down) while in maintenance.
  const calls = sim.backends.callsFor(addr);
  await sim.clock.advance(500);
  t.true(sim.backends.callsFor(addr) >= calls + 4, 'checked about every 100 ms during maintenance');
  sim.backends.down.add(addr);
  await sim.clock.advance(300);
  for (const n of sim.nodes) t.like(n.monitor.states()[1], { maintenance: true, state: 'unhealthy', down: true });
  sim.backends.down.delete(addr);
  await sim.clock.advance(300);
  // Off (from another balancer): new flows again.
  sim.nodes[2]!.monitor.setMaintenance('web4', addr, false, 'api z');
  await sim.clock.advance(1);
  t.deepEqual(sim.eligibility(), ['1111', '1111', '1111']);
  t.is(sim.nodes[2]!.monitor.setMaintenance('web4', addr, false, 'api z'), null, 'already off');
  sim.stop();
});

test('reload: clearOverrides on one balancer returns every override to the file values on every balancer', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 4, health: null }));
  const evs = overrides(sim);
  sim.start();
  await sim.clock.advance(1000);
  const file = tables(sim)[0]!;
  sim.nodes[0]!.monitor.setWeight('web4', backendAddr(0), 3, 'api a');
  sim.nodes[1]!.monitor.setMaintenance('web4', backendAddr(3), true, 'api b');
  sim.nodes[1]!.monitor.drain('web4', backendAddr(2));
  await sim.clock.advance(1);
  t.deepEqual(sim.eligibility(), ['1100', '1100', '1100']);
  // lb3 reloads (Balancer.reload → reloadConfig → health.updateConfig, then clearOverrides).
  sim.nodes[2]!.monitor.updateConfig(sim.config);
  const cleared = sim.nodes[2]!.monitor.clearOverrides('reload on lb3');
  t.deepEqual(cleared.map((e) => `${e.type} ${e.backend} ${e.origin}`), [`backend_weight ${backendAddr(0)} reload on lb3`, `backend_maintenance ${backendAddr(3)} reload on lb3`]);
  await sim.clock.advance(1);
  t.deepEqual(sim.nodes.map((n) => n.monitor.weightOf(0, 0)), [1, 1, 1]);
  t.deepEqual(sim.eligibility(), ['1101', '1101', '1101'], 'maintenance ended; the drain (not an override) stays');
  t.like(evs[0]!.at(-1), { type: 'backend_maintenance', maintenance: false, by: 'lb3', origin: 'peer lb3' });
  sim.nodes[1]!.monitor.undrain('web4', backendAddr(2));
  await sim.clock.advance(1);
  for (const tb of tables(sim)) t.deepEqual(tb, file, 'the file table everywhere');
  t.deepEqual(sim.nodes[0]!.monitor.clearOverrides('reload on lb1'), [], 'nothing left to clear');
  sim.stop();
});

test('a restarted balancer learns the overrides from its peers within a report period (and a lost change report heals)', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 4, health: null }));
  sim.start();
  await sim.clock.advance(1000);
  sim.kill(2);
  sim.drop = (_f, to, body) => to === 1 && !body.periodic; // lb2 misses the change reports
  sim.nodes[0]!.monitor.setWeight('web4', backendAddr(1), 0, 'api a');
  sim.nodes[0]!.monitor.setMaintenance('web4', backendAddr(3), true, 'api a');
  await sim.clock.advance(1);
  t.is(sim.nodes[1]!.monitor.weightOf(0, 1), 1, 'change report lost');
  sim.revive(2);
  const n2 = sim.nodes[2]!;
  t.deepEqual([n2.monitor.weightOf(0, 1), n2.monitor.inMaintenance(0, 3)], [1, false], 'a fresh monitor holds no mark');
  await sim.clock.advance(1100);
  for (const n of sim.nodes) t.deepEqual([n.monitor.weightOf(0, 1), n.monitor.inMaintenance(0, 3)], [0, true], `lb${n.index + 1}`);
  const rows = tables(sim);
  t.deepEqual(rows[2], rows[0], 'the restarted balancer builds the same table');
  t.deepEqual(rows[1], rows[0]);
  sim.stop();
});

test('malformed marks from a peer are dropped and counted; the rest of the entry still applies', async (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 3, backends: 2, health: null }));
  const m = sim.nodes[0]!.monitor;
  const vip = sim.config.vips[0]!;
  const idHash = (b: number): number => memberSeed(HASH_KEY, healthKey(vip, vip.backends[b]!)) >>> 0;
  m.onReport(1, overTheWire({
    epoch: 5,
    sequence: 1,
    periodic: true,
    periodMs: 1000,
    backends: [
      { vip: 0, backend: 0, idHash: idHash(0), weightStamp: stamp(0, 1), weight: 70_000, weightSet: true, maintStamp: stamp(0, 1), maintenance: true },
      { vip: 0, backend: 1, idHash: idHash(1), weightStamp: stamp(0, 9), weight: 2, weightSet: true },
    ],
  }));
  t.is(m.stats.overridesMalformed, 2);
  t.is(m.weightOf(0, 0), 1, 'weight 70000 dropped');
  t.true(m.inMaintenance(0, 0), "the entry's good maintenance mark applies");
  t.is(m.weightOf(0, 1), 1, 'a stamp naming balancer 9 of 3 dropped');
  t.is(m.stats.overridesApplied, 1);
  sim.stop();
});

test('setWeight / setMaintenance: unknown VIP or backend, a port that is not the backend\'s, a weight out of range', (t) => {
  const sim = new SimCluster(makeConfig({ balancers: 1, backends: 2, health: null }));
  const m = sim.nodes[0]!.monitor;
  const cases: Array<[() => unknown, (typeof ErrorCodes)[keyof typeof ErrorCodes], RegExp]> = [
    [() => m.setWeight('nope', backendAddr(0), 1, 'x'), ErrorCodes.ADMIN, /^no VIP "nope" \(VIPs: web4\)$/],
    [() => m.setWeight('web4', '10.7.7.7', 1, 'x'), ErrorCodes.ADMIN, /^no backend 10\.7\.7\.7 in VIP web4 \(backends: 10\.0\.0\.1, 10\.0\.0\.2\)$/],
    [() => m.setMaintenance('web4', `${backendAddr(0)}:8080`, true, 'x'), ErrorCodes.ADMIN, /has no port of its own \(it keeps the VIP port\): name it without a port/],
    [() => m.setWeight('web4', backendAddr(0), 65536, 'x'), ErrorCodes.USAGE, /^weight must be an integer 0\.\.65535/],
    [() => m.setWeight('web4', backendAddr(0), -1, 'x'), ErrorCodes.USAGE, /^weight must be an integer 0\.\.65535/],
  ];
  for (const [fn, code, re] of cases) {
    const e = t.throws(fn);
    t.true(isTunlbError(e, code), `${e?.message}`);
    t.regex(e!.message, re);
  }
  t.is(m.weightOf(0, 0), 1, 'nothing changed');
  sim.stop();
});
