/**
 * Bulk sync at scale in the namespace lab (issue #15): 50,000 UDP flows from the client's own
 * address (hping3, one new source port per datagram, then the same ports again: a client
 * datagram after the echo's answer confirms each flow, and only confirmed flows are
 * replicated and synced, docs/flow-records.md), then kill -9 of lb2 and a restart while
 * traffic goes on (long-lived TCP connections, and new UDP flows created during the restart).
 * lb2 must serve again with every flow the cluster holds (the synced ones and those created
 * while it synced, which replication brought), within a bounded time, and report its sync.
 *
 * The lab runs with udp_s 600 here (a copy of config/lab.yaml), so no flow expires during the
 * test and "every flow" is exact. Waits are bounded polls that name what never came; the
 * generators are bounded in time (hping3 -c, timeout(1), traffic.ts --duration-s).
 * Root only; holds the lab session lock from `up` to `down`; `down` always runs.
 * Run alone: flock /tmp/tunlb-lab-session.lock npx ava --config ava.native.config.cjs native-tests/bulk-sync.test.ts
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { hasRoot, rootTest } from './helpers/root';
import {
  allServing,
  BALANCERS,
  execIn,
  flows,
  holdLabSession,
  labLogTail,
  longlivedSummary,
  poll,
  REPO,
  run,
  startTraffic,
  staleBuild,
  stats,
  statsOrUndefined,
  type FlowRow,
  type LabSession,
} from './helpers/traffic';

const LAB_SH = path.join(REPO, 'scripts', 'lab.sh');
const VIP4 = '10.99.0.10';
const FLOWS = 50_000;
const LIVE_NEW = 2_000;
const UDP_PORT = 5353;
/** Time to serving asserted (the target is 2 s for 50k flows; bench:cluster measures it). */
const SERVING_BOUND_MS = 10_000;

let session: LabSession | undefined;
let upError: string | undefined;
let dir: string | undefined;

function lab(args: string[], timeoutMs = 120_000) {
  return run('bash', [LAB_SH, ...args], { timeoutMs, env: { ...process.env, TUNLB_LAB_CONFIG: path.join(dir!, 'lab.yaml') } });
}

test.before(async () => {
  if (!hasRoot()) return;
  const stale = staleBuild(['src/cluster/sync-stream.ts', 'src/cluster/sync-runner.ts', 'src/cluster/cluster-node.ts', 'src/control/balancer.ts']);
  if (stale !== undefined) console.log(`bulk-sync.test.ts: WARNING: ${stale}`);
  dir = mkdtempSync(path.join(tmpdir(), 'tunlb-bulk-sync-'));
  // The lab's config with UDP flows that outlive the test.
  writeFileSync(path.join(dir, 'lab.yaml'), `${readFileSync(path.join(REPO, 'config', 'lab.yaml'), 'utf8')}\nflow_table:\n  timeouts: { udp_s: 600 }\n`);
  session = await holdLabSession();
  await lab(['down']);
  const r = await lab(['up'], 180_000);
  if (r.code !== 0) {
    upError = `lab.sh up failed (exit ${r.code}):\n${r.stderr.slice(-3000)}\n${BALANCERS.map((b) => `--- ${b}\n${labLogTail(b, 15)}`).join('\n')}`;
    return;
  }
  if (!(await poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((s) => allServing(s)), 20_000, 200))) {
    upError = 'the cluster did not serve 20 s after lab.sh up';
  }
});

test.after.always('lab down', async () => {
  if (!hasRoot()) return;
  try {
    const r = await lab(['down']);
    if (r.code !== 0) console.log(`bulk-sync.test.ts: lab.sh down exit ${r.code}: ${r.stderr}`);
  } finally {
    session?.release();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  }
});

/** hping3 in tunlb-client: `count` UDP datagrams to VIP:5353, source ports base, base+1, ... */
function hping(count: number, basePort: number, intervalUs: number) {
  return execIn('client', ['timeout', '120', 'hping3', '-2', '-q', '-p', String(UDP_PORT), '-s', String(basePort), '-i', `u${intervalUs}`, '-c', String(count), VIP4], {
    timeoutMs: 130_000,
  });
}

const udpFlows = (rows: FlowRow[]): Map<string, FlowRow> => new Map(rows.filter((f) => f.key.startsWith('udp ') && f.key.endsWith(`:${UDP_PORT}`)).map((f) => [f.key, f]));

rootTest('bulk sync: 50,000 flows, kill -9 and restart of lb2 under traffic: it serves again with every flow, and says how long it took', async (t) => {
  if (upError !== undefined) return t.fail(upError);
  // 1. 50,000 UDP flows from the client's own address, confirmed by the second pass (a client
  // datagram after the answer), replicated to every balancer.
  const gen = await hping(FLOWS, 10_000, 100);
  const gen2 = await hping(FLOWS, 10_000, 100);
  t.log(`hping3 ${FLOWS} datagrams twice: ${gen.seconds.toFixed(1)} s + ${gen2.seconds.toFixed(1)} s (exit ${gen.code}, ${gen2.code})`);
  let counts: number[] = [];
  const replicated = await poll(
    async () => {
      counts = (await Promise.all(BALANCERS.map(stats))).map((s) => s.flows.active);
      return counts.every((n) => n >= FLOWS);
    },
    60_000,
    500,
  );
  t.true(replicated, `every balancer holds ${FLOWS} flows (flows: ${counts.join(', ')})`);
  if (!replicated) return;

  // 2. Live traffic across the restart: long-lived TCP connections, and new UDP flows.
  const longlived = startTraffic(['longlived', '--conns', '30', '--interval-ms', '50', '--duration-s', '20', '--json'], 60_000);
  const connected = await longlived.waitLine(/connected/, 20_000);
  t.truthy(connected, 'the long-lived connections are up');

  // 3. kill -9 lb2; lb1 sees it dead.
  t.is((await lab(['kill', 'lb2'])).code, 0);
  const down = await poll(async () => (await stats('lb1')).membership?.peers.find((p) => p.id === 'lb2')?.state === 'dead', 10_000, 50);
  t.true(down, 'lb1 declares lb2 dead after the kill');
  const fresh = hping(LIVE_NEW, 61_000, 2000); // new flows while lb2 restarts and syncs (~4 s)

  // 4. Restart; time until lb1 sees it up and serving.
  const t0 = Date.now();
  const start = lab(['start', 'lb2']);
  let servingMs = -1;
  const served = await poll(
    async () => {
      const p = (await statsOrUndefined('lb1'))?.membership?.peers.find((x) => x.id === 'lb2');
      if (p?.state === 'up' && p.status === 'serving') {
        servingMs = Date.now() - t0;
        return true;
      }
      return false;
    },
    60_000,
    50,
  );
  const started = await start;
  t.is(started.code, 0, `lab.sh start lb2: ${started.stderr.slice(-500)}`);
  t.true(served, `lb2 serving again (as lb1 sees it) within 60 s: ${labLogTail('lb2', 10)}`);
  const s2 = await stats('lb2');
  const sync = (s2.membership as unknown as { sync: { state: string; received: number; total: number; elapsedMs: number; ratePerS: number; peer: string; sessions: number } }).sync;
  t.log(
    `lb2 serving ${servingMs} ms after lab.sh start (process start and discovery included); its sync: ${sync?.received} records from ${sync?.peer} in ` +
      `${Math.round(sync?.elapsedMs ?? -1)} ms (${sync?.ratePerS} records/s, ${sync?.sessions} session(s))`,
  );
  t.true(servingMs >= 0 && servingMs < SERVING_BOUND_MS, `lb2 served ${servingMs} ms after its start (bound ${SERVING_BOUND_MS} ms)`);
  t.like(sync, { state: 'done' });
  t.true(sync.received >= FLOWS, `lb2 received ${sync.received} records by bulk sync`);
  t.is(s2.membership?.status, 'serving');

  // 5. After the live traffic: lb2 holds every confirmed UDP flow lb1 holds, with the same
  // decision (the new flows confirmed by a second pass over their ports).
  await fresh;
  await hping(LIVE_NEW, 61_000, 500);
  // The kill, the restart and the new flows are behind us: the long-lived run ends here (its
  // --duration-s is the bound for a slow restart, not a typical one).
  longlived.stop();
  const ll = await longlivedSummary(t, longlived);
  if (ll !== undefined) {
    t.is(ll.res.survived, ll.res.conns, `long-lived connections survived the kill and the restart: ${ll.lines.slice(-3).join(' | ')}`);
  }
  let missing: string[] = [];
  let different: string[] = [];
  let total = 0;
  const complete = await poll(
    async () => {
      const [f1, f2] = await Promise.all([flows('lb1', 200_000), flows('lb2', 200_000)]);
      const m1 = udpFlows(f1.flows.filter((f) => f.confirmed));
      const m2 = udpFlows(f2.flows);
      total = m1.size;
      missing = [...m1.keys()].filter((k) => !m2.has(k));
      different = [...m1.values()].filter((f) => {
        const g = m2.get(f.key);
        return g !== undefined && (g.primary !== f.primary || g.backup !== f.backup || g.backend !== f.backend);
      }).map((f) => f.key);
      return missing.length === 0 && different.length === 0;
    },
    15_000,
    1000,
  );
  t.true(total >= FLOWS + LIVE_NEW * 0.95, `lb1 holds ${total} confirmed of the ${FLOWS + LIVE_NEW} UDP flows`);
  t.true(complete, `lb2 lacks ${missing.length} of lb1's ${total} UDP flows (${missing.slice(0, 3).join('; ')}), ${different.length} differ (${different.slice(0, 3).join('; ')})`);

  // 6. The sync is in lb2's events and metrics.
  const ev = (s2.membership?.events ?? []).map((e) => e.type);
  t.true(ev.includes('sync_started') && ev.includes('sync_done'), `events: ${ev.join(', ')}`);
  const metrics = await execIn('lb2', ['curl', '-sS', '-m', '3', 'http://127.0.0.1:9180/metrics'], { timeoutMs: 5000 });
  const last = /^tunlb_bulk_sync_last_records (\d+)/m.exec(metrics.stdout);
  t.true(last !== null && Number(last[1]) >= FLOWS, `tunlb_bulk_sync_last_records: ${last?.[1]}`);
  t.regex(metrics.stdout, /^tunlb_bulk_sync_duration_seconds [0-9.e-]+$/m);
  const status = await execIn('lb2', [process.execPath, path.join(REPO, 'bin', 'tunlb'), 'status'], { timeoutMs: 10_000 });
  t.regex(status.stdout, /bulk sync: done from lb\d: [\d,]+ records, [\d,]+ records\/s/);
});
