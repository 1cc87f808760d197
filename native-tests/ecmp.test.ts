/**
 * The ECMP entry (issue 11; `scripts/lab.sh up`, the default): every balancer announces the
 * VIPs through its BIRD (eBGP + BFD) to the router's BIRD, which installs one multipath route
 * per VIP; the servers' gateway (NAT) is a VRRP address held by one ready balancer.
 * For NAT and then DSR:
 *   (a) the router's FIB has 3 nexthops per VIP (IPv4 and IPv6), and 100 new connections are
 *       received by all three balancers (each one decides some: its TUN reads their SYNs);
 *   (b) 90 long-lived connections survive, with 0 resets (so every flow kept its backend, also
 *       those whose receiver changed), three losses in a row:
 *         kill -9 of lb1 (the old single entry)          stall <= 3 x probe interval + 200 ms
 *         (lb1 back and synced) isolate of lb3           stall <= BFD detection + 200 ms
 *         SIGTERM of lb2 (planned stop)                  stall <= 100 ms
 *   (c) NAT only: no false failover (peer_down, watchdog withdrawal, lost nexthop) under a 20 s
 *       saturating UDP flood through the VIP.
 * Root only; holds the lab session lock from the first `up` to the last `down`.
 * Run alone: flock /tmp/tunlb-lab-session.lock npx ava --config ava.native.config.cjs native-tests/ecmp.test.ts
 */
import test, { type ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { loadConfig, type Config } from '../src/config';
import { hasRoot, rootTest } from './helpers/root';
import {
  allServing,
  BALANCERS,
  LAB_CONFIG,
  execIn,
  holdLabSession,
  lab,
  labLogTail,
  longlivedSummary,
  poll,
  sleep,
  startTraffic,
  statsOrUndefined,
  type ClusterStats,
  type LabSession,
  type LonglivedResult,
} from './helpers/traffic';

const VIP4 = '10.99.0.10';
const VIP6 = 'fd99::10';
const LBNET4: Record<string, string> = { lb1: '10.99.2.11', lb2: '10.99.2.12', lb3: '10.99.2.13' };
const LBNET6: Record<string, string> = { lb1: 'fd99:2::11', lb2: 'fd99:2::12', lb3: 'fd99:2::13' };
/** scripts/lab-topology.sh LAB_BFD_INTERVAL_MS x LAB_BFD_MULTIPLIER. */
const BFD_DETECTION_MS = 300;
const CONNS = 90;

let session: LabSession | undefined;

test.before(async () => {
  if (!hasRoot()) return;
  session = await holdLabSession();
  await lab(['down']);
});

test.after.always('lab down', async () => {
  if (!hasRoot()) return;
  try {
    await lab(['down']);
  } finally {
    session?.release();
  }
});

const loadavg = (): string => {
  try {
    return readFileSync('/proc/loadavg', 'utf8').trim();
  } catch {
    return '?';
  }
};

/** The router's nexthops (gateway addresses) for the VIP of family 4 or 6. */
async function nexthops(fam: 4 | 6): Promise<string[]> {
  const r = await execIn('router', ['ip', `-${fam}`, 'route', 'show', fam === 4 ? VIP4 : VIP6], { timeoutMs: 5000 });
  return [...r.stdout.matchAll(/via (\S+)/g)].map((m) => m[1]!).sort();
}

async function wholeCluster(ms = 20_000): Promise<boolean> {
  return poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((x) => allServing(x)), ms, 200);
}

async function up(t: ExecutionContext, method: 'nat' | 'dsr'): Promise<Config | undefined> {
  const r = await lab(['up', '--method', method], 180_000);
  if (r.code !== 0) {
    t.fail(`lab.sh up --method ${method} failed (exit ${r.code}):\n${r.stderr.slice(-3000)}\n${BALANCERS.map((b) => `--- ${b}\n${labLogTail(b, 15)}`).join('\n')}`);
    return undefined;
  }
  t.true(await wholeCluster(), 'the cluster is not whole after up');
  return loadConfig(LAB_CONFIG);
}

/** Long-lived connections through the VIP; `event` runs 3 s in; the stall bound is checked. */
async function lossRound(t: ExecutionContext, what: string, bound: number, event: () => Promise<void>): Promise<LonglivedResult | undefined> {
  const gen = startTraffic(['longlived', '--conns', String(CONNS), '--interval-ms', '20', '--duration-s', '8', '--json'], 30_000);
  let at = 0;
  try {
    const connected = await gen.waitLine(/connected/, 10_000);
    t.truthy(connected, 'longlived did not connect');
    await sleep(3000);
    at = Date.now();
    await event();
  } catch (e) {
    gen.kill();
    throw e;
  }
  const sum = await longlivedSummary(t, gen);
  if (sum === undefined) return undefined;
  const res = sum.res;
  // The stall the event caused: stalls that ended after it (a connection's longest stall, when
  // it ended after the event; the per-second worst of the seconds that began after it). Stalls
  // that ended before the event are the shared machine's, not the loss's: logged, not bounded.
  const eventRel = at - res.startedAtEpochMs;
  const afterConn = res.perConn.filter((c) => c.maxStallEndedAtMs >= eventRel).map((c) => c.maxStallMs);
  const afterSec = res.timeline.filter((s) => (s.t - 1) * 1000 >= eventRel).map((s) => s.worstStallMs);
  const eventStall = Math.max(0, ...afterConn, ...afterSec);
  t.log(sum.lines.filter((l) => !l.startsWith('{') && /ended|stall/.test(l)).slice(0, 5).join('\n'));
  const top = [...res.perConn].sort((a, b) => b.maxStallMs - a.maxStallMs).slice(0, 5);
  t.log(
    `${what}: ${res.survived}/${res.connected} survived, ${res.resets} resets, longest stall after the event ${eventStall} ms (${afterConn.length} connections' longest stall ended after it); ` +
      `longest of the run ${res.maxStallMs} ms (ended ${res.maxStallEndedAtMs - eventRel} ms after the event), ` +
      `p50 ${res.p50StallMs} ms, p99 ${res.p99StallMs} ms, bound ${bound} ms; worst: ${top.map((c) => `${c.maxStallMs}`).join(', ')} ms; load ${loadavg()}`,
  );
  t.is(res.connected, CONNS, `${what}: only ${res.connected}/${CONNS} connected`);
  t.is(res.survived, CONNS, `${what}: ${CONNS - res.survived} connections ended: ${JSON.stringify(res.events.slice(0, 10))}`);
  t.is(res.resets, 0, `${what}: connections were reset`);
  t.true(eventStall <= bound, `${what}: longest stall after the event ${eventStall} ms > ${bound} ms`);
  return res;
}

async function labOk(t: ExecutionContext, args: string[]): Promise<void> {
  const r = await lab(args, 90_000);
  t.is(r.code, 0, `lab.sh ${args.join(' ')}: exit ${r.code}\n${r.stderr.slice(-2000)}\n${args[1] ? labLogTail(args[1], 20) : ''}`);
}

for (const method of ['nat', 'dsr'] as const) {
  rootTest(`ecmp ${method} (a): 3 nexthops per VIP at the router; 100 new connections are received by all three balancers`, async (t) => {
    const c = await up(t, method);
    if (c === undefined) return;
    t.deepEqual(await nexthops(4), Object.values(LBNET4).sort(), 'IPv4 VIP nexthops');
    t.deepEqual(await nexthops(6), Object.values(LBNET6).sort(), 'IPv6 VIP nexthops');
    // Each balancer's announcement, as it reports it.
    for (const b of BALANCERS) {
      const r = await execIn(b, ['curl', '-sS', '-m', '3', 'http://127.0.0.1:9180/metrics']);
      t.regex(r.stdout, /^tunlb_vip_announced\{vip="web4"\} 1$/m, `${b} announces web4`);
      t.regex(r.stdout, /^tunlb_vip_announced\{vip="web6"\} 1$/m, `${b} announces web6`);
    }
    const before = await Promise.all(BALANCERS.map(statsOrUndefined));
    const gen = startTraffic(['newconns', '--count', '100', '--concurrency', '10', '--duration-s', '30', '--json', '--quiet'], 45_000);
    const d = await gen.done;
    const sum = d.json.find((j) => j['mode'] === 'newconns') as { ok?: number; answered?: number; failed?: number } | undefined;
    t.log(`newconns: ${JSON.stringify(sum)}`);
    const after = await Promise.all(BALANCERS.map(statsOrUndefined));
    const decided = BALANCERS.map((_b, i) => (after[i]?.flows.created ?? 0) - (before[i]?.flows.created ?? 0));
    const read = BALANCERS.map((_b, i) => (after[i]?.counters.rxPackets ?? 0) - (before[i]?.counters.rxPackets ?? 0));
    t.log(`new flows decided (received first) per balancer: ${BALANCERS.map((b, i) => `${b} ${decided[i]}`).join(', ')}; TUN packets read: ${read.join(', ')}`);
    for (let i = 0; i < 3; i++) t.true(decided[i]! > 0, `${BALANCERS[i]} received no new connection (ECMP sends it none?)`);
    t.true(decided.reduce((a, b) => a + b, 0) >= 100, 'every connection was decided by its receiver');
  });

  rootTest(`ecmp ${method} (b): ${CONNS} long-lived connections survive kill -9 of lb1, isolate of lb3, SIGTERM of lb2`, async (t) => {
    const c = loadConfig(LAB_CONFIG);
    const interval = c.cluster.probe.intervalMs;
    t.true(await wholeCluster(), 'the cluster is not whole before the first loss');

    await lossRound(t, `${method} kill -9 lb1`, 3 * interval + 200, async () => {
      await labOk(t, ['kill', 'lb1']);
    });
    t.true(await poll(async () => !(await nexthops(4)).includes(LBNET4.lb1!), 5000, 50), 'the router still routes via lb1 after its kill');
    await labOk(t, ['start', 'lb1']);
    const synced = await poll(async () => {
      const s: ClusterStats | undefined = await statsOrUndefined('lb1');
      return s?.membership?.status === 'serving';
    }, 20_000, 200);
    t.true(synced, 'lb1 did not come back serving');
    t.true(await wholeCluster(), 'the cluster is not whole after lb1 came back');
    t.deepEqual(await nexthops(4), Object.values(LBNET4).sort(), 'lb1 announces again');

    await lossRound(t, `${method} isolate lb3`, BFD_DETECTION_MS + 200, async () => {
      await labOk(t, ['isolate', 'lb3']);
    });
    t.true(await poll(async () => !(await nexthops(4)).includes(LBNET4.lb3!), 5000, 50), 'the router removed the isolated lb3 (BFD)');
    await labOk(t, ['start', 'lb3']);
    t.true(await wholeCluster(30_000), 'the cluster is not whole after lb3 came back');

    await lossRound(t, `${method} SIGTERM lb2`, 100, async () => {
      await labOk(t, ['stop', 'lb2']);
    });
    const log = labLogTail('lb2', 40);
    t.regex(log, /"event":"self_left"/, 'lb2 logged its planned leave');
    t.true(await poll(async () => !(await nexthops(4)).includes(LBNET4.lb2!), 5000, 50), 'lb2 withdrew');
    await labOk(t, ['start', 'lb2']);
    t.true(await wholeCluster(), 'the cluster is not whole after lb2 came back');
  });
}

rootTest('ecmp nat (c): a 12 s saturating UDP flood through the VIP: no peer_down, no watchdog withdrawal, every nexthop stays', async (t) => {
  const r = await lab(['up', '--method', 'nat'], 180_000);
  t.is(r.code, 0, r.stderr.slice(-2000));
  t.true(await wholeCluster(), 'the cluster is not whole before the flood');
  const floodStart = Date.now();
  const gen = startTraffic(['udpflood', '--duration-s', '12', '--senders', '16', '--size', '64', '--json', '--quiet'], 40_000, { nice: 10 });
  const lost: string[] = [];
  const downs = new Set<string>();
  try {
    while (gen.child.exitCode === null && gen.child.signalCode === null && Date.now() - floodStart < 35_000) {
      const [n4, n6] = [await nexthops(4), await nexthops(6)];
      if (n4.length !== 3 || n6.length !== 3) lost.push(`${Date.now() - floodStart} ms: ${n4.join(' ')} / ${n6.join(' ')}`);
      await sleep(250);
    }
  } finally {
    gen.kill();
  }
  await gen.done;
  const all = await Promise.all(BALANCERS.map(statsOrUndefined));
  let watchdog = 0;
  for (const [i, s] of all.entries()) {
    for (const e of s?.membership?.events ?? []) if (e.type === 'peer_down' && Date.parse(e.at) >= floodStart) downs.add(`${BALANCERS[i]} ${e.at} ${e.id} ${e.reason ?? ''}`);
    const m = await execIn(BALANCERS[i]!, ['curl', '-sS', '-m', '3', 'http://127.0.0.1:9180/metrics']);
    watchdog += Number(/^tunlb_watchdog_withdrawals_total (\d+)/m.exec(m.stdout)?.[1] ?? 0);
  }
  t.log(`load ${loadavg()}; nexthop losses: ${lost.length}; peer_down: ${downs.size}; watchdog withdrawals: ${watchdog}`);
  t.deepEqual([...downs], [], 'peer_down during the flood');
  t.is(watchdog, 0, 'the watchdog withdrew during the flood');
  t.deepEqual(lost, [], 'the router lost a nexthop during the flood');
});
