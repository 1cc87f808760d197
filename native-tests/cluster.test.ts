/**
 * The three-balancer cluster in the namespace lab (`scripts/lab.sh up`: lb1..lb3, entry lb1):
 *   (a) replication: every balancer holds every flow with the same primary, backup, backend;
 *   (b) failover: long-lived TCP connections survive kill -9 of a balancer (and, after it came
 *       back and synced, of another one), each stalling at most 3 probe intervals + 200 ms;
 *   (d) no false failover under a saturating UDP flood through the VIP (12 s);
 *   (c) security: forged, replayed and non-peer control datagrams change nothing and are counted.
 * (c) runs last: a datagram that wrongly got through could disturb the cluster.
 *
 * Root only (network namespaces); every test skips with NEEDS_ROOT otherwise. The file holds the
 * lab session lock (/tmp/tunlb-lab-session.lock) from `up` to `down`; `down` always runs.
 * Traffic comes from scripts/traffic.ts in tunlb-client and is bounded in time.
 * Run alone: flock /tmp/tunlb-lab-session.lock npx ava --config ava.native.config.cjs native-tests/cluster.test.ts
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import * as path from 'node:path';
import { loadConfig, type Config } from '../src/config';
import { clusterIdNumber } from '../src/cluster/control-channel';
import { encodeSigned, macKey, newIncarnation, Op, type MacKey } from '../src/protocol';
import { hasRoot, rootTest } from './helpers/root';
import { LAB_SH } from './helpers/lab';
import {
  allServing,
  BALANCERS,
  LAB_CONFIG,
  flows,
  holdLabSession,
  lab,
  labLogTail,
  pcapUdpPayloads,
  poll,
  run,
  REPO,
  sendUdpFrom,
  sleep,
  staleBuild,
  startTraffic,
  stats,
  statsOrUndefined,
  type ClusterStats,
  type FlowRow,
  type LabSession,
  longlivedSummary,
  type LonglivedResult,
} from './helpers/traffic';

const VIP4 = '10.99.0.10';
const CLIENT4 = '10.99.1.2';
const LBNET4: Record<string, string> = { lb1: '10.99.2.11', lb2: '10.99.2.12', lb3: '10.99.2.13' };
const ROUTER_LBNET4 = '10.99.2.1';
const CONTROL_PORT = 7946;
const JUNK_TS = path.join(REPO, 'scripts', 'control-junk.ts');

let session: LabSession | undefined;
/** Set when `up` failed: every test then fails at once with this message. */
let upError: string | undefined;
let config: Config | undefined;

test.before(async () => {
  if (!hasRoot()) return;
  const stale = staleBuild();
  if (stale !== undefined) console.log(`cluster.test.ts: WARNING: ${stale}`);
  session = await holdLabSession();
  await lab(['down']);
  const r = await lab(['up'], 180_000);
  if (r.code !== 0) {
    upError = `lab.sh up failed (exit ${r.code}):\n${r.stderr.slice(-3000)}\n${BALANCERS.map((b) => `--- ${b}\n${labLogTail(b, 15)}`).join('\n')}`;
    return;
  }
  config = loadConfig(LAB_CONFIG);
  // up returns once the VIP answers; the balancers may still be syncing with each other.
  await poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((s) => allServing(s)), 15_000, 200);
});

test.after.always('lab down', async () => {
  if (!hasRoot()) return;
  try {
    const r = await lab(['down']);
    if (r.code !== 0) console.log(`cluster.test.ts: lab.sh down exit ${r.code}: ${r.stderr}`);
  } finally {
    session?.release();
  }
});

function requireUp(t: ExecutionContext): Config {
  if (upError !== undefined || config === undefined) {
    t.fail(upError ?? 'lab not up');
    throw new Error('lab not up');
  }
  return config;
}


/** /proc/loadavg (the lab shares the machine's CPUs with whatever else runs). */
const loadavg = (): string => {
  try {
    return readFileSync('/proc/loadavg', 'utf8').trim();
  } catch {
    return '?';
  }
};

const keyOf = (sport: number, dport: number, proto = 'tcp', src = CLIENT4, dst = VIP4): string => `${proto} ${src}:${sport} -> ${dst}:${dport}`;

function snapshotLine(s: ClusterStats | undefined): string {
  if (!s) return 'no answer';
  const m = s.membership;
  return (
    `flows ${s.flows.active}, status ${m?.status}, syncedFrom ${m?.syncedFrom}, peers ` +
    (m?.peers ?? []).filter((p) => p.state !== 'self').map((p) => `${p.id}=${p.state}/${p.status}`).join(' ') +
    `, peerTx ${s.counters.peerTxPackets}, peerRx ${s.counters.peerRxPackets}, failover ${s.counters.failoverPackets}`
  );
}

// ------------------------------------------------------------------------------ (a) ------------

rootTest('cluster (a): 100 new HTTP connections are replicated to every balancer with the same decision', async (t) => {
  requireUp(t);
  const gen = startTraffic(['newconns', '--count', '100', '--concurrency', '10', '--hold-s', '10', '--duration-s', '40', '--json', '--quiet'], 60_000);
  try {
    const holding = await gen.waitLine(/"phase":"holding"/, 30_000);
    if (holding === undefined) {
      const d = await gen.done;
      t.fail(`newconns did not reach the hold phase: ${d.lines.join('\n')}\n${d.stderr}`);
      return;
    }
    const h = JSON.parse(holding) as { localPorts: number[]; rows: Array<{ localPort: number; server: string | null }> };
    t.is(h.localPorts.length, 100, `only ${h.localPorts.length}/100 HTTP connections answered: ${JSON.stringify(h.rows.filter((r) => r.server === null))}`);
    const keys = h.localPorts.map((p) => keyOf(p, 80));
    const serverByKey = new Map(h.rows.map((r) => [keyOf(r.localPort, 80), r.server]));

    let tables: Record<string, Map<string, FlowRow>> = {};
    const missing = (): Record<string, number> => Object.fromEntries(BALANCERS.map((b) => [b, keys.filter((k) => !tables[b]?.has(k)).length]));
    const t0 = Date.now();
    const complete = await poll(
      async () => {
        const all = await Promise.all(BALANCERS.map((b) => flows(b)));
        tables = Object.fromEntries(BALANCERS.map((b, i) => [b, new Map(all[i]!.flows.map((f) => [f.key, f]))]));
        return Object.values(missing()).every((n) => n === 0);
      },
      5000,
      200,
    );
    t.log(`replicated to all three in ${Date.now() - t0} ms (missing per balancer at the end: ${JSON.stringify(missing())})`);
    t.true(complete, `flows missing after 5 s: ${JSON.stringify(missing())}`);

    let differ = 0;
    const primaries: Record<string, number> = {};
    const backends: Record<string, number> = {};
    for (const k of keys) {
      const rows = BALANCERS.map((b) => tables[b]!.get(k));
      if (rows.some((r) => r === undefined)) continue;
      const [r1, r2, r3] = rows as FlowRow[];
      const same = (a: FlowRow, b: FlowRow): boolean => a.primary === b.primary && a.backup === b.backup && a.backend === b.backend;
      if (!same(r1!, r2!) || !same(r1!, r3!)) {
        differ++;
        if (differ <= 5) t.log(`decision differs for ${k}: ${rows.map((r, i) => `${BALANCERS[i]}: ${r!.primary}/${r!.backup}/${r!.backend}`).join('; ')}`);
      }
      t.not(r1!.primary, r1!.backup, `${k}: primary and backup are the same balancer`);
      primaries[r1!.primary] = (primaries[r1!.primary] ?? 0) + 1;
      backends[r1!.backend] = (backends[r1!.backend] ?? 0) + 1;
      // The backend in the record is the server that answered.
      const srv = serverByKey.get(k);
      const want = srv ? `10.99.3.${20 + Number(srv.slice(3))}` : undefined;
      if (want !== undefined && r1!.backend !== want) t.fail(`${k}: answered by ${srv} but recorded backend ${r1!.backend}`);
    }
    t.is(differ, 0, `${differ} flows have different primary/backup/backend on different balancers`);
    t.log(`primaries: ${JSON.stringify(primaries)}  backends: ${JSON.stringify(backends)}`);
    t.true(Object.keys(primaries).length >= 2, `all 100 flows have the same primary: ${JSON.stringify(primaries)}`);
    const d = await gen.done;
    const summary = d.json.find((j) => j['mode'] === 'newconns') as { holdMoved: number; holdErrors: number; holdAnswers: number } | undefined;
    if (summary) {
      t.log(`held connections: ${summary.holdAnswers} keep-alive answers, ${summary.holdMoved} moved, ${summary.holdErrors} errors`);
      t.is(summary.holdMoved, 0, 'a kept-alive connection was answered by another server');
    }
  } finally {
    gen.kill();
  }
});

// ------------------------------------------------------------------------------ (b) ------------

/** Runs longlived traffic, kills `victim` after killAfterMs, returns the generator's summary. */
async function failoverRound(t: ExecutionContext, victim: string, bound: number): Promise<LonglivedResult | undefined> {
  const before = await flows('lb1');
  const spawnedAt = Date.now();
  const gen = startTraffic(['longlived', '--conns', '60', '--interval-ms', '20', '--duration-s', '9', '--json'], 30_000);
  let killAt = 0;
  let ours: FlowRow[] = [];
  try {
    const connected = await gen.waitLine(/connected/, 10_000);
    t.truthy(connected, 'longlived did not connect');
    // Let the connections settle (records replicated) for 3 s, then kill.
    await sleep(3000);
    const mine = await flows('lb1');
    ours = mine.flows.filter((f) => f.key.startsWith(`tcp ${CLIENT4}:`) && f.key.endsWith(`-> ${VIP4}:7`) && !before.flows.some((b) => b.key === f.key));
    const asPrimary = ours.filter((f) => f.primary === victim).length;
    const asBackup = ours.filter((f) => f.backup === victim).length;
    killAt = Date.now();
    const k = await lab(['kill', victim], 20_000);
    t.is(k.code, 0, `lab.sh kill ${victim}: ${k.stderr}`);
    t.log(`killed ${victim} (kill -9) ${((killAt - spawnedAt) / 1000).toFixed(2)} s after starting the traffic; of our ${ours.length} flows on lb1, ${asPrimary} had ${victim} as primary, ${asBackup} as backup`);
  } catch (e) {
    gen.kill();
    throw e;
  }
  const sum = await longlivedSummary(t, gen);
  if (sum === undefined) return undefined;
  const res = sum.res;
  const killRel = killAt - res.startedAtEpochMs;
  t.log(sum.lines.filter((l) => !l.startsWith('{')).join('\n'));
  // Stalls by the victim's role in each connection's flow (from lb1's records before the kill).
  const role = new Map(ours.map((f) => [f.key, f.primary === victim ? 'primary' : f.backup === victim ? 'backup' : 'neither']));
  const groups: Record<string, LonglivedResult['perConn']> = {};
  for (const pc of res.perConn) (groups[role.get(keyOf(pc.localPort, 7)) ?? 'unknown'] ??= []).push(pc);
  const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? 0;
  t.log(
    `longest stall by ${victim}'s role in the flow (ended: when the stall ended, ms after the kill): ` +
      Object.entries(groups)
        .map(([r, v]) => {
          const st = v.map((x) => x.maxStallMs);
          return `${r} (${v.length} conns): max ${Math.max(...st)} ms, median ${median(st)} ms, ${st.filter((x) => x > 3 * res.intervalMs).length} over ${3 * res.intervalMs} ms, ended median ${median(v.map((x) => x.maxStallEndedAtMs - killRel))} ms`;
        })
        .join('; '),
  );
  t.log(`load average at the end: ${loadavg()}`);
  const top = [...res.perConn].sort((a, b) => b.maxStallMs - a.maxStallMs).slice(0, 5);
  t.log(
    `stalls: max ${res.maxStallMs} ms (conn ${res.maxStallConn}, ended ${res.maxStallEndedAtMs - killRel} ms after the kill), p50 ${res.p50StallMs} ms, p99 ${res.p99StallMs} ms, bound ${bound} ms; ` +
      `worst five: ${top.map((c) => `conn ${c.id} ${c.maxStallMs} ms`).join(', ')}`,
  );
  t.is(res.connected, 60, `only ${res.connected}/60 connected`);
  t.is(res.survived, 60, `${60 - res.survived} connections ended: ${JSON.stringify(res.events)}`);
  t.is(res.resets, 0, 'connections were reset');
  t.true(res.maxStallMs <= bound, `longest stall ${res.maxStallMs} ms > ${bound} ms (3 x probe interval + 200 ms)`);
  return res;
}

rootTest('cluster (b): 60 long-lived connections survive kill -9 of lb2, then (lb2 back, synced) of lb3', async (t) => {
  const c = requireUp(t);
  const interval = c.cluster.probe.intervalMs;
  const bound = 3 * interval + 200;
  t.log(`probe interval ${interval} ms, misses ${c.cluster.probe.misses}: stall bound ${bound} ms`);

  await failoverRound(t, 'lb2', bound);
  const after1 = await Promise.all(BALANCERS.map(statsOrUndefined));
  t.log(`after killing lb2: ${BALANCERS.map((b, i) => `${b}: ${snapshotLine(after1[i])}`).join(' | ')}`);
  for (const b of ['lb1', 'lb3']) {
    const ev = after1[BALANCERS.indexOf(b as 'lb1')]?.membership?.events.filter((e) => e.id === 'lb2' && e.type === 'peer_down') ?? [];
    t.true(ev.length > 0, `${b} has no peer_down event for lb2`);
  }

  // lb2 comes back: it must sync before serving.
  const lb1Flows = (await stats('lb1')).flows.active;
  const s = await lab(['start', 'lb2'], 60_000);
  t.is(s.code, 0, `lab.sh start lb2: ${s.stderr}\n${labLogTail('lb2')}`);
  let lb2: ClusterStats | undefined;
  const synced = await poll(
    async () => {
      lb2 = await statsOrUndefined('lb2');
      const m = lb2?.membership;
      return m?.status === 'serving' && (m.syncedFrom !== null || Math.abs(lb2!.flows.active - lb1Flows) <= 2);
    },
    20_000,
    200,
  );
  t.log(`lb2 back: ${snapshotLine(lb2)} (lb1 holds ${lb1Flows} flows)`);
  t.true(synced, `lb2 did not report serving + synced within 20 s: ${snapshotLine(lb2)}\n${labLogTail('lb2', 20)}`);
  // Every balancer sees lb2 up and serving again before lb3 is killed.
  const seen = await poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((x) => allServing(x)), 10_000, 200);
  t.true(seen, 'not every balancer sees every peer up and serving after lb2 came back');

  await failoverRound(t, 'lb3', bound);

  // Leave a whole cluster for the next tests. Started the way the README's hand-run wrapper
  // does (`flock FILE bash -c …`, without -o: the lock's descriptor is inherited): once the
  // wrapper is gone, the lock is free and no lab daemon holds it (issue 13, the lab lock leak).
  const leakDir = mkdtempSync(path.join(tmpdir(), 'tunlb-lock-leak-'));
  const leakLock = path.join(leakDir, 'session.lock');
  try {
    const r = await run('flock', [leakLock, 'bash', '-c', `bash '${LAB_SH}' start lb3`], { timeoutMs: 60_000 });
    t.is(r.code, 0, `flock … lab.sh start lb3: ${r.stderr}`);
    const holders: string[] = [];
    for (const pid of readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))) {
      let fds: string[] = [];
      try {
        fds = readdirSync(`/proc/${pid}/fd`);
      } catch {
        continue; // gone, or not ours to read
      }
      for (const fd of fds) {
        try {
          if (readlinkSync(`/proc/${pid}/fd/${fd}`) === leakLock) holders.push(`${pid} (${readFileSync(`/proc/${pid}/comm`, 'utf8').trim()})`);
        } catch {
          // closed meanwhile
        }
      }
    }
    t.deepEqual(holders, [], 'processes still holding the wrapper\'s lock file after it ended');
    const free = await run('flock', ['-n', leakLock, 'true'], { timeoutMs: 5_000 });
    t.is(free.code, 0, 'the wrapper\'s lock is still held after lab.sh start returned and the wrapper ended');
  } finally {
    rmSync(leakDir, { recursive: true, force: true });
  }
  await poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((x) => allServing(x)), 20_000, 200);
});

// ------------------------------------------------------------------------------ (d) ------------

rootTest('cluster (d): a 12 s saturating UDP flood through the VIP causes no peer_down anywhere', async (t) => {
  requireUp(t);
  const ready = await poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((x) => allServing(x)), 20_000, 200);
  t.true(ready, 'the cluster is not whole (every balancer serving, every peer up) before the flood');
  const loadBefore = loadavg();
  const floodStart = Date.now();
  const gen = startTraffic(['udpflood', '--duration-s', '12', '--senders', '16', '--size', '64', '--json'], 40_000, { nice: 10 });
  const suspects = new Set<string>();
  const downs = new Set<string>();
  let maxRtt = 0;
  const watch = async (): Promise<void> => {
    const all = await Promise.all(BALANCERS.map(statsOrUndefined));
    all.forEach((s, i) => {
      const m = s?.membership;
      if (!m) {
        downs.add(`${BALANCERS[i]}: admin endpoint did not answer`);
        return;
      }
      for (const e of m.events) {
        if (Date.parse(e.at) < floodStart) continue;
        const line = `${BALANCERS[i]} ${e.at} ${e.type} ${e.id} (${e.reason ?? ''})`;
        if (e.type === 'peer_down') downs.add(line);
        if (e.type === 'peer_suspect') suspects.add(line);
      }
      for (const p of m.peers) if (p.rttMs !== null) maxRtt = Math.max(maxRtt, p.rttMs);
    });
  };
  try {
    while (gen.child.exitCode === null && gen.child.signalCode === null && Date.now() - floodStart < 35_000) {
      await watch();
      await sleep(500);
    }
  } finally {
    gen.kill();
  }
  const d = await gen.done;
  await watch();
  const res = d.json.find((j) => j['mode'] === 'udpflood') as { sent: number; received: number; sendErrors: number; perSecond: unknown[] } | undefined;
  const lb1 = await statsOrUndefined('lb1');
  t.log(`flood: ${res ? `${res.sent} datagrams sent (${Math.round(res.sent / 12)}/s), ${res.received} echoes, ${res.sendErrors} send errors` : `no summary: ${d.stderr}`}`);
  t.log(`load average before ${loadBefore}, after ${loadavg()} (${cpus().length} CPUs)`);
  t.log(`lb1 drops during/after the flood: ${JSON.stringify(lb1?.counters.drops)}; highest probe RTT seen ${maxRtt} ms`);
  if (suspects.size) {
    const per: Record<string, number> = {};
    for (const l of suspects) {
      const [obs, , , peer] = l.split(' ');
      per[`${obs}->${peer}`] = (per[`${obs}->${peer}`] ?? 0) + 1;
    }
    const silent = [...suspects].map((l) => Number(/no ack for (\d+) ms/.exec(l)?.[1] ?? 0));
    t.log(`peer_suspect events (allowed): ${suspects.size} (observer->peer: ${JSON.stringify(per)}), longest silence ${Math.max(...silent)} ms`);
  }
  t.truthy(res && res.sent > 0, 'the flood sent nothing');
  t.deepEqual([...downs], [], 'peer_down during the flood');
  const after = await Promise.all(BALANCERS.map(statsOrUndefined));
  t.true(after.every((x) => allServing(x)), `after the flood: ${after.map((x) => snapshotLine(x)).join(' | ')}`);
});

// ------------------------------------------------------------------------------ (c) ------------

/** A records envelope with one CREATE for a key no real flow has (so acceptance would show). */
function forgedRecords(c: Config, key: MacKey, sender: number, incarnation: number, seq: number, srcLast: number): Uint8Array {
  const k = Buffer.alloc(13);
  Buffer.from([10, 99, 1, srcLast]).copy(k, 0); // src 10.99.1.<srcLast>
  Buffer.from([10, 99, 0, 10]).copy(k, 4); // dst the VIP
  k.writeUInt16BE(4242, 8);
  k.writeUInt16BE(80, 10);
  k[12] = 6;
  return encodeSigned(
    {
      clusterId: clusterIdNumber(c),
      sender,
      incarnation,
      seq,
      sentAtMs: Date.now(),
      records: { records: [{ op: Op.CREATE, key: k, primary: 0, backup: 1, vip: 0, backend: 0, state: 2, ageS: 0, idleS: 0 }] },
    },
    key,
  );
}

interface Counts {
  active: Record<string, number>;
  rejected: Record<string, Record<string, number>>;
  stats: Record<string, ClusterStats>;
}
async function counts(): Promise<Counts> {
  const all = await Promise.all(BALANCERS.map((b) => stats(b)));
  return {
    active: Object.fromEntries(BALANCERS.map((b, i) => [b, all[i]!.flows.active])),
    rejected: Object.fromEntries(BALANCERS.map((b, i) => [b, { ...(all[i]!.membership?.controlRejected ?? {}) }])),
    stats: Object.fromEntries(BALANCERS.map((b, i) => [b, all[i]!])),
  };
}
const delta = (a: Counts, b: Counts, lb: string, reason: string): number => (b.rejected[lb]![reason] ?? 0) - (a.rejected[lb]![reason] ?? 0);

/** MAC address of a balancer's lbnet interface. */
async function lbnetMac(lb: string): Promise<string> {
  const r = await run('ip', ['-n', `tunlb-${lb}`, '-o', 'link', 'show', 'dev', 'lbnet0'], { timeoutMs: 5000 });
  const m = /link\/ether ([0-9a-f:]{17})/.exec(r.stdout);
  if (!m) throw new Error(`no MAC for lbnet0 in tunlb-${lb}: ${r.stdout}${r.stderr}`);
  return m[1]!;
}

/**
 * Sends each payload once to each of `to` (balancer names), from the router's lbnet bridge
 * with IPv4 source `src` and UDP source port 7946 (scripts/control-junk.ts, AF_PACKET).
 */
async function sendSpoofed(src: string, to: string[], payloads: Uint8Array[]): Promise<void> {
  const dests = await Promise.all(to.map(async (lb) => ['--to', `${LBNET4[lb]}@${await lbnetMac(lb)}`]));
  const r = await run('ip', ['netns', 'exec', 'tunlb-router', process.execPath, '--import', 'tsx', JUNK_TS, '--iface', 'br-lb', '--src', src, '--sport', String(CONTROL_PORT),
    '--port', String(CONTROL_PORT), '--pps', '1000', '--duration-s', '5', '--json', ...dests.flat(), ...payloads.flatMap((p) => ['--payload', Buffer.from(p).toString('hex')])], { timeoutMs: 30_000 });
  const want = payloads.length * to.length;
  if (r.code !== 0 || !r.stdout.includes(`"sent":${want}`)) throw new Error(`spoofed send from ${src} failed: exit ${r.code} ${r.stdout} ${r.stderr}`);
}

async function fakeKeysPresent(srcs: number[]): Promise<string[]> {
  const out: string[] = [];
  for (const b of BALANCERS) {
    const f = await flows(b);
    for (const s of srcs) if (f.flows.some((r) => r.key === keyOf(4242, 80, 'tcp', `10.99.1.${s}`))) out.push(`${b} holds 10.99.1.${s}:4242`);
  }
  return out;
}

rootTest('cluster (c): forged, replayed and non-peer control datagrams change nothing and are counted', async (t) => {
  const c = requireUp(t);
  const labKey = macKey(c.cluster.key.reveal());
  const ready = await poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((x) => allServing(x)), 20_000, 200);
  t.true(ready, 'the cluster is not whole before the security test');
  // Material for the replay: a genuine records datagram of lb1, captured on lbnet in tunlb-lb3
  // while new flows are made (lb2 and lb3 received and accepted it).
  const dir = mkdtempSync(path.join(tmpdir(), 'tunlb-cluster-'));
  const pcap = path.join(dir, 'ctrl.pcap');
  let replayed: Buffer | undefined;
  try {
    const cap = run('ip', ['netns', 'exec', 'tunlb-lb3', 'timeout', '8', 'tcpdump', '-i', 'lbnet0', '-U', '-n', '-s', '0', '-c', '4', '-w', pcap,
      `udp dst port ${CONTROL_PORT} and src host ${LBNET4['lb1']} and dst host 239.99.0.1`], { timeoutMs: 15_000 });
    await sleep(700); // tcpdump attaches
    const gen = startTraffic(['newconns', '--count', '20', '--concurrency', '2', '--duration-s', '6', '--quiet'], 15_000);
    const capRes = await cap;
    gen.kill();
    await gen.done;
    const pkts = pcapUdpPayloads(pcap);
    t.log(`captured ${pkts.length} records datagrams of lb1 on lbnet (tcpdump exit ${capRes.code}${capRes.code ? `: ${capRes.stderr.trim().split('\n').pop()}` : ''})`);
    replayed = pkts[0]?.payload;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (replayed === undefined) {
    // Fallback: an authentic lb1 datagram with a sequence number lb1 used long ago.
    t.log('no capture: replaying a crafted lb1 datagram with seq 1 of its current incarnation instead');
    replayed = Buffer.from(forgedRecords(c, labKey, 0, (await stats('lb1')).membership!.incarnation, 1, 202));
  }
  // The capture's connections are replicated everywhere before the baseline is taken.
  await poll(async () => {
    const a = await Promise.all(BALANCERS.map((b) => stats(b)));
    return a.every((x) => Math.abs(x.flows.active - a[0]!.flows.active) <= 1);
  }, 5000, 200);
  const before = await counts();
  const lb3Inc = before.stats['lb3']!.membership!.incarnation;

  // Datagrams that claim a balancer's address come from the router, spoofed down to the UDP
  // source port (the balancers check address AND port before decoding: docs/protocol.md
  // "Receive path"), through scripts/control-junk.ts.
  // 1. Forged: claims to be lb3 (from lb3's own address and control port), signed with a wrong key.
  const wrongKey = macKey(randomBytes(32));
  const forged = forgedRecords(c, wrongKey, 2, lb3Inc, 1e9, 201);
  await sendSpoofed(LBNET4['lb3']!, ['lb1', 'lb2'], [forged]);

  // 2. Replayed: the captured datagram, sent again (twice) from lb1's address to lb2 and lb3.
  await sendSpoofed(LBNET4['lb1']!, ['lb2', 'lb3'], [replayed, replayed]);

  // 3. A correctly signed envelope that claims to be lb3, with lb3's incarnation and a sequence
  //    number far ahead of lb3's, from lb2's address (if it moved lb1's replay window, lb3's
  //    genuine probes would be dropped as replayed afterwards and lb1 would declare lb3 down);
  //    and, from a non-peer address (the router's lbnet address), one from an unknown sender
  //    index and the impostor again.
  const afterFirst = await counts();
  const unknownSender = forgedRecords(c, labKey, 7, newIncarnation(), 1, 203);
  const impostor = forgedRecords(c, labKey, 2, lb3Inc, 1e9, 204);
  const sentImpostorAt = Date.now();
  await sendSpoofed(LBNET4['lb2']!, ['lb1'], [impostor]);
  await sendUdpFrom('router', ROUTER_LBNET4, LBNET4['lb1']!, CONTROL_PORT, [unknownSender, impostor]);

  // Give lb1 well over misses x interval to (wrongly) lose lb3, then look.
  const deadline = Date.now() + Math.max(1500, 10 * c.cluster.probe.intervalMs);
  let lb1View: ClusterStats | undefined;
  while (Date.now() < deadline) {
    lb1View = await stats('lb1');
    const p = lb1View.membership!.peers.find((x) => x.id === 'lb3');
    if (p?.state !== 'up') break;
    await sleep(100);
  }
  await sleep(300);
  const after = await counts();
  const present = await fakeKeysPresent([201, 202, 203, 204]);

  t.log(`controlRejected before: ${JSON.stringify(before.rejected)}`);
  t.log(`controlRejected after:  ${JSON.stringify(after.rejected)}`);
  t.log(`flows active before ${JSON.stringify(before.active)}, after ${JSON.stringify(after.active)}`);

  const lb1After = after.stats['lb1']!.membership!;
  const lb3Peer = lb1After.peers.find((p) => p.id === 'lb3');
  const downs = lb1After.events.filter((e) => Date.parse(e.at) >= sentImpostorAt && (e.type === 'peer_down' || e.type === 'peer_suspect'));
  t.log(`lb1's view of lb3 after the impostor: ${JSON.stringify(lb3Peer)}; lb1 events since: ${JSON.stringify(downs)}`);
  if (lb3Peer?.state !== 'up') {
    // Diagnosis: does lb1 get lb3 back by itself, or only when lb3 restarts (new incarnation)?
    await sleep(3000);
    const later = await stats('lb1');
    const p3 = later.membership!.peers.find((p) => p.id === 'lb3');
    t.log(
      `3 s later lb1 sees lb3 ${p3?.state} (lastAckAgoMs ${Math.round(p3?.lastAckAgoMs ?? -1)}), lb1 replayed ${later.membership!.controlRejected['replayed'] ?? 0} ` +
        `(was ${after.rejected['lb1']!['replayed'] ?? 0}); lb3 sees lb1 ${after.stats['lb3']!.membership!.peers.find((p) => p.id === 'lb1')?.state}`,
    );
  }

  // (AVA stops a test at its first failed assertion: everything worth logging is logged above.)
  t.deepEqual(present, [], 'a forged/replayed/non-peer record was installed');
  t.true(delta(before, after, 'lb1', 'bad_mac') >= 1, 'lb1 did not count the forged datagram as bad_mac');
  t.true(delta(before, after, 'lb2', 'bad_mac') >= 1, 'lb2 did not count the forged datagram as bad_mac');
  for (const b of ['lb2', 'lb3']) {
    const n = delta(before, afterFirst, b, 'replayed') + delta(before, afterFirst, b, 'stale_incarnation');
    t.true(n >= 2, `${b} counted ${n} of the 2 replayed datagrams as replayed/stale_incarnation`);
  }
  const nonPeer = delta(afterFirst, after, 'lb1', 'not_a_peer');
  t.true(nonPeer >= 2, `lb1 counted ${nonPeer} of the 2 non-peer datagrams as not_a_peer`);
  t.true(delta(afterFirst, after, 'lb1', 'source_mismatch') >= 1, "the impostor from lb2's address was not counted as source_mismatch");

  // Nothing else changed: lb1 still sees lb3 up, no peer_down since the datagrams, no new replay drops of lb3.
  t.is(lb3Peer?.state, 'up', "a datagram from a non-peer address changed lb1's view of lb3");
  t.deepEqual(downs, [], 'peer_suspect/peer_down at lb1 after the non-peer datagrams');
  const replayJump = delta(afterFirst, after, 'lb1', 'replayed') + delta(afterFirst, after, 'lb1', 'stale_incarnation');
  t.true(replayJump <= 2, `lb1 dropped ${replayJump} genuine datagrams as replayed/stale after the impostor (its replay window was moved by an unaccepted datagram)`);
  for (const b of BALANCERS) t.true(after.active[b]! <= before.active[b]!, `${b}: flow count grew from ${before.active[b]} to ${after.active[b]}`);
});
