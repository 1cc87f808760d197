/**
 * A balancer restarted with its wall clock behind the previous start's (issue 12 item 9:
 * "a restarted balancer whose clock went back is rejected by every peer"), in the namespace
 * lab. lb2 is killed and started again under libfaketime (LD_PRELOAD, FAKETIME=-1d: only the
 * wall clock goes back, the monotonic clock is left alone), twice:
 *
 *   (a) its state file kept: its incarnation must still be larger than the previous one
 *       (src/cluster/incarnation.ts), and both peers must take it back: up and serving, with the
 *       new incarnation;
 *   (b) its state file deleted as well, and the clock two days back: the incarnation goes back
 *       (nothing left to know better), and the peers must still take it back, once the previous
 *       incarnation is silent (docs/failure-model.md "Incarnations"), with a peer_restarted
 *       event that says so.
 *
 * Root only; skips otherwise. Holds the lab session lock from `up` to `down`; `down` always runs.
 * Waits on conditions (bounded polls), never on fixed sleeps.
 * Run alone: npx ava --config ava.native.config.cjs native-tests/restart-clock.test.ts
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { hasRoot, rootTest } from './helpers/root';
import { allServing, BALANCERS, holdLabSession, lab, labLogTail, LAB_DIR, poll, REPO, run, stats, statsOrUndefined, type ClusterStats, type LabSession } from './helpers/traffic';

const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
const STATE_FILE = path.join(LAB_DIR, 'state.d', 'lb2.incarnation');

let session: LabSession | undefined;
let upError: string | undefined;

test.before(async () => {
  if (!hasRoot()) return;
  session = await holdLabSession();
  await lab(['down']);
  const r = await lab(['up'], 180_000);
  if (r.code !== 0) {
    upError = `lab.sh up failed (exit ${r.code}):\n${r.stderr.slice(-3000)}\n${BALANCERS.map((b) => `--- ${b}\n${labLogTail(b, 15)}`).join('\n')}`;
    return;
  }
  const ok = await poll(async () => (await Promise.all(BALANCERS.map(statsOrUndefined))).every((s) => allServing(s)), 30_000, 200);
  if (!ok) upError = 'the three balancers did not all report serving peers within 30 s of `lab.sh up`';
});

test.after.always('lab down', async () => {
  if (!hasRoot()) return;
  try {
    const r = await lab(['down']);
    if (r.code !== 0) console.log(`restart-clock.test.ts: lab.sh down exit ${r.code}: ${r.stderr}`);
  } finally {
    session?.release();
  }
});

/** How lb1 and lb3 see lb2: state/status/incarnation, or why not. */
async function peersView(): Promise<Array<{ from: string; state: string; status: string; incarnation: number }>> {
  const out: Array<{ from: string; state: string; status: string; incarnation: number }> = [];
  for (const b of ['lb1', 'lb3']) {
    const s = await statsOrUndefined(b);
    const p = s?.membership?.peers.find((x) => x.id === 'lb2');
    out.push({ from: b, state: p?.state ?? '?', status: p?.status ?? '?', incarnation: p?.incarnation ?? 0 });
  }
  return out;
}

/** Kills lb2 (-9) and waits until both peers see it dead. */
async function killLb2(t: ExecutionContext): Promise<void> {
  const k = await lab(['kill', 'lb2'], 30_000);
  t.is(k.code, 0, `lab.sh kill lb2: ${k.stderr}`);
  const dead = await poll(async () => (await peersView()).every((v) => v.state === 'dead'), 10_000, 100);
  t.true(dead, `lb1 and lb3 did not see lb2 dead within 10 s: ${JSON.stringify(await peersView())}`);
}

/** Starts lb2 with its wall clock `offset` (libfaketime syntax, e.g. "-1d") behind; lab.sh waits until it is ready. */
function startLb2(offset: string): Promise<{ code: number; stderr: string }> {
  // The lab's balancer command (TUNLB_CMD, as lab.sh takes it), under libfaketime.
  const base = process.env['TUNLB_CMD'] ?? `${process.execPath} ${path.join(REPO, 'bin', 'tunlb')} run --config ${path.join(LAB_DIR, 'lab.yaml')} --id {id}`;
  const cmd = `env LD_PRELOAD=${LIBFAKETIME} FAKETIME=${offset} FAKETIME_DONT_FAKE_MONOTONIC=1 ${base}`;
  return run('bash', [path.join(REPO, 'scripts', 'lab.sh'), 'start', 'lb2'], { timeoutMs: 120_000, env: { ...process.env, TUNLB_CMD: cmd, LAB_READY_TIMEOUT: '30' } });
}

/** Waits until lb1 and lb3 both see lb2 up and serving with incarnation `inc`; returns the last view. */
async function waitTakenBack(inc: number, timeoutMs: number): Promise<{ ok: boolean; view: Awaited<ReturnType<typeof peersView>> }> {
  let view = await peersView();
  const ok = await poll(async () => {
    view = await peersView();
    return view.every((v) => v.state === 'up' && v.status === 'serving' && v.incarnation === inc);
  }, timeoutMs, 100);
  return { ok, view };
}

rootTest('restart with the clock behind: the incarnation still grows, and the peers take the balancer back', async (t) => {
  if (upError !== undefined) {
    t.fail(upError);
    return;
  }
  t.true(existsSync(LIBFAKETIME), `${LIBFAKETIME} missing: run scripts/install-deps.sh (Debian package faketime)`);
  const before: ClusterStats = await stats('lb2');
  const inc1 = before.membership!.incarnation;

  // (a) the clock a day behind, the state file kept.
  await killLb2(t);
  const t0 = Date.now();
  const s1 = await startLb2('-1d');
  const inc2 = (await statsOrUndefined('lb2'))?.membership?.incarnation ?? 0;
  const a = await waitTakenBack(inc2, 15_000);
  t.log(`(a) clock -1 day, state kept: incarnation ${inc1} -> ${inc2}; lab.sh start exit ${s1.code}; peers after ${Date.now() - t0} ms: ${JSON.stringify(a.view)}`);
  t.is(s1.code, 0, `lab.sh start lb2 (clock -1d) failed: ${s1.stderr.slice(-1500)}\n${labLogTail('lb2', 20)}`);
  t.true(inc2 > inc1, `the incarnation went back: ${inc1} -> ${inc2}`);
  t.true(a.ok, `lb1 and lb3 did not take lb2 back (up, serving, incarnation ${inc2}) within 15 s: ${JSON.stringify(a.view)}`);

  // (b) the clock two days behind and the state file gone: the incarnation goes back.
  await killLb2(t);
  rmSync(STATE_FILE, { force: true });
  const t1 = Date.now();
  const s2 = await startLb2('-2d');
  const inc3 = (await statsOrUndefined('lb2'))?.membership?.incarnation ?? 0;
  const b = await waitTakenBack(inc3, 15_000);
  const events = (await stats('lb1')).membership!.events.filter((e) => e.type === 'peer_restarted' && e.id === 'lb2' && Date.parse(e.at) >= t1);
  t.log(`(b) clock -2 days, state lost: incarnation ${inc2} -> ${inc3}; lab.sh start exit ${s2.code}; peers after ${Date.now() - t1} ms: ${JSON.stringify(b.view)}; lb1 events: ${JSON.stringify(events)}`);
  t.is(s2.code, 0, `lab.sh start lb2 (clock -2d, no state) failed: ${s2.stderr.slice(-1500)}\n${labLogTail('lb2', 20)}`);
  t.true(inc3 < inc2, 'with the state lost and the clock behind, the incarnation is the clock\'s (lower)');
  t.true(b.ok, `lb1 and lb3 did not take lb2 back with its lower incarnation within 15 s: ${JSON.stringify(b.view)}`);
  t.true(events.some((e) => /went back/.test(e.reason ?? '')), `lb1 logged no peer_restarted "went back" for lb2: ${JSON.stringify(events)}`);
  const final = await Promise.all(BALANCERS.map(statsOrUndefined));
  t.true(final.every((s) => allServing(s)), 'the cluster is not whole at the end');
});
