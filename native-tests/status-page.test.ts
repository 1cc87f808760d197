/**
 * The status page (GET / of the admin endpoint, src/control/status-page.ts) in a real browser
 * against the three-balancer lab: Debian's Chromium driven by playwright-core (no browser
 * download), run INSIDE tunlb-lb1's namespace (the admin endpoint listens on 127.0.0.1:9180
 * there), so nothing leaves the lab. The page must load without script errors, show the three
 * balancers (lb2 and lb3 up and serving) with flow counts that add up (the cards' primary-of
 * figures sum to lb1's flows held), and show lb2 dead within 5 s of `lab.sh kill lb2`, never
 * "serving" once dead; after a start-up burst of 1,500 new connections, the failover must still
 * be visible on the charts (its own chart, scaled to it, and a peer-down marker). The /metrics
 * scrape of the same lab passes `promtool check metrics`.
 * A second test runs one balancer with an admin token in a namespace of its own: the page asks
 * for the token with a form (no window.prompt, which hangs headless browsers), says when a
 * token is refused, and shows the data once the right one is entered.
 * Screenshots go to /tmp (paths in the test log).
 *
 * Needs root (namespaces) and /usr/bin/chromium (apt-get install chromium, or
 * scripts/install-deps.sh); skips with a message otherwise. Holds the lab session lock
 * (/tmp/tunlb-lab-session.lock) from `up` to `down`; `down` always runs. The browser runs
 * with a fresh --user-data-dir and every network feature that would reach out turned off.
 * Run alone: flock /tmp/tunlb-lab-session.lock npx ava --config ava.native.config.cjs native-tests/status-page.test.ts
 */
import test from 'ava';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { hasRoot, NEEDS_ROOT } from './helpers/root';
import { createNetns, removeNetns, runIn, uniqueNetnsName } from './helpers/netns';
import { ADMIN, REPO, execIn, holdLabSession, lab, labLogTail, poll, type LabSession } from './helpers/lab';
import { startTraffic } from './helpers/traffic';

const CHROMIUM = '/usr/bin/chromium';
const NS = 'tunlb-lb1';
const SHOT_UP = '/tmp/tunlb-status-page-3-balancers.png';
const SHOT_DEAD = '/tmp/tunlb-status-page-lb2-dead.png';
const SHOT_TOKEN = '/tmp/tunlb-status-page-token-form.png';
const SHOT_TOKEN_OK = '/tmp/tunlb-status-page-token-accepted.png';
/** The page must show lb2 dead within this long after `lab.sh kill lb2` returned. */
const DEAD_WITHIN_MS = 5000;

const skipReason = !hasRoot()
  ? NEEDS_ROOT
  : !existsSync(CHROMIUM)
    ? `skipped: ${CHROMIUM} is missing (apt-get install chromium, or bash scripts/install-deps.sh)`
    : undefined;
if (skipReason !== undefined) console.log(`native-tests/status-page.test.ts: ${skipReason}`);

let session: LabSession | undefined;
let upError: string | undefined;
let work: string | undefined;

/** dist/ is what the lab runs (bin/tunlb): it must hold this status page. */
function staleDist(): string | undefined {
  const built = path.join(REPO, 'dist', 'src', 'control', 'status-page.js');
  if (!existsSync(built)) return `${built} missing: run npm run build (the lab runs dist/)`;
  for (const f of ['admin-server.ts', 'status-page.ts', 'metrics.ts']) {
    const src = path.join(REPO, 'src', 'control', f);
    const dst = path.join(REPO, 'dist', 'src', 'control', f.replace(/\.ts$/, '.js'));
    if (!existsSync(dst) || statSync(src).mtimeMs > statSync(dst).mtimeMs + 1000) return `src/control/${f} is newer than dist/: run npm run build (the lab runs dist/)`;
  }
  return undefined;
}

/**
 * The browser driver, run with `ip netns exec tunlb-lb1 node --import tsx driver.ts` from the
 * repository (for tsx). Talks JSON lines: prints {phase:'up'}, waits for "killed" on stdin,
 * prints {phase:'dead'}; {phase:'error'} on any failure.
 */
function driverSource(playwright: string, userDataDir: string): string {
  return `
const { chromium } = require(${JSON.stringify(playwright)});
const readline = require('node:readline');
const URL = 'http://${ADMIN}/';
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));
const cards = (page) => page.$$eval('.bal', (els) => els.map((e) => ({ id: e.dataset.balancer, state: e.dataset.state, status: e.dataset.status,
  primaryOf: Number(e.dataset.primaryOf), flowsHeld: e.dataset.flowsHeld === undefined ? null : Number(e.dataset.flowsHeld), text: e.innerText.replace(/\\s+/g, ' ') })));
// Each chart: its y-axis top, and per series the highest point as a share of the plot height
// (the plot area is y = 8 .. 150 of the 170-unit-high viewBox: status-page.ts drawChart).
const charts = (page) => page.$$eval('svg.plot', (els) => els.map((svg) => ({
  id: svg.id,
  max: Number(svg.getAttribute('data-max')),
  series: Array.from(svg.querySelectorAll('polyline[data-series]')).map((pl) => {
    const ys = (pl.getAttribute('points') || '').split(' ').filter(Boolean).map((p) => Number(p.split(',')[1]));
    return { name: pl.getAttribute('data-series'), points: ys.length, peak: ys.length ? (150 - Math.min.apply(null, ys)) / 142 : 0 };
  }),
  markers: Array.from(svg.querySelectorAll('line.marker')).map((m) => m.getAttribute('data-balancer') + ' ' + m.getAttribute('data-event')),
})));

(async () => {
  const ctx = await chromium.launchPersistentContext(${JSON.stringify(userDataDir)}, {
    executablePath: ${JSON.stringify(CHROMIUM)},
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    viewport: { width: 1360, height: 1000 },
    timeout: 30000,
  });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const problems = [];
    page.on('pageerror', (e) => problems.push('pageerror: ' + e.message));
    page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
    page.on('requestfailed', (r) => problems.push('requestfailed: ' + r.url() + ' ' + (r.failure() ? r.failure().errorText : '')));
    page.on('request', (r) => { if (!r.url().startsWith('http://${ADMIN}/')) problems.push('request to another origin: ' + r.url()); });
    page.on('dialog', (d) => { problems.push('dialog: ' + d.type() + ' ' + d.message()); d.dismiss().catch(() => undefined); });
    const resp = await page.goto(URL, { waitUntil: 'load', timeout: 15000 });
    const httpStatus = resp ? resp.status() : 0;
    // Three cards; lb2 and lb3 up and serving; data arrived.
    // Predicates are functions without named inner functions: tsx (esbuild keepNames) would
    // wrap those in a __name() helper the page does not have, and the page's CSP forbids
    // string predicates (eval).
    await page.waitForFunction(
      () =>
        document.querySelectorAll('.bal').length === 3 &&
        document.querySelectorAll('.bal[data-state=up][data-status=serving]').length === 2 &&
        document.querySelector('.bal[data-balancer=lb1][data-state=self]') !== null &&
        document.getElementById('conn').dataset.ok === '1',
      null,
      { timeout: 20000, polling: 100 },
    );
    // A few seconds of rates for the chart.
    await page.waitForTimeout(4000);
    const kpis = await page.$$eval('.kpi', (els) => els.map((e) => e.innerText.replace(/\\s+/g, ' ')));
    const chartPoints = await page.$$eval('svg.plot polyline', (els) => els.map((e) => (e.getAttribute('points') || '').split(' ').filter(Boolean).length));
    await page.screenshot({ path: ${JSON.stringify(SHOT_UP)}, fullPage: true });
    const backendStates = await page.$$eval('[data-backend-state]', (els) => els.map((e) => e.getAttribute('data-backend-state')));
    // The VIP/backend table (GET /api/v1/vips): a row per VIP and per backend with its figures.
    const services = await page.$$eval('tr[data-vip]', (els) => els.map((e) => ({ vip: e.dataset.vip, backend: e.dataset.backend || null, connections: Number(e.dataset.connections), active: Number(e.dataset.active), inPackets: Number(e.dataset.inPackets), outPackets: Number(e.dataset.outPackets) })));
    const serviceHead = await page.$$eval('table.services th', (els) => els.map((e) => e.textContent));
    // The cards and the figures as one render shows them (one evaluate: no refresh in between).
    const same = await page.evaluate(() => ({
      kpis: Array.from(document.querySelectorAll('.kpi')).map((e) => e.innerText.replace(/\\s+/g, ' ')),
      held: Number(document.querySelector('.bal[data-flows-held]').dataset.flowsHeld),
      primaries: Array.from(document.querySelectorAll('.bal')).map((e) => Number(e.dataset.primaryOf)),
    }));
    // The cluster table (GET /api/v1/cluster: every balancer's own summary over the control channel).
    await page.waitForFunction(() => document.querySelectorAll('tr[data-cluster-row][data-status=serving]').length === 3, null, { timeout: 10000, polling: 200 }).catch(() => undefined);
    const cluster = await page.$$eval('tr[data-cluster-row]', (els) => els.map((e) => ({ id: e.dataset.clusterRow, status: e.dataset.status, config: e.dataset.config, mismatch: e.dataset.mismatch })));
    // Wider than the window: the page itself scrolls sideways (the VIP table scrolls in its own box).
    const layout = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, window: window.innerWidth, vipBox: document.getElementById('vip-list').clientWidth, vipTable: document.getElementById('vip-list').scrollWidth }));
    out({ phase: 'up', httpStatus, title: await page.title(), cards: await cards(page), kpis, same, chartPoints, backendStates, services, serviceHead, cluster, layout, charts: await charts(page), problems: problems.slice() });

    await nextLine();
    const t0 = Date.now();
    let deadMs = -1;
    let waitError = null;
    try {
      await page.waitForFunction(() => document.querySelector('.bal[data-balancer=lb2][data-state=dead]') !== null, null,
        { timeout: ${DEAD_WITHIN_MS}, polling: 100 });
      deadMs = Date.now() - t0;
    } catch (e) {
      waitError = String(e && e.message || e);
    }
    // The failover on its own chart: a peer-down marker and failover packets plotted.
    let failoverShown = true;
    await page.waitForFunction(
      () => document.querySelector('#chart-fail line.marker[data-event=peer_down][data-balancer=lb2]') !== null &&
        (document.querySelector('#chart-fail polyline[data-series=failover]')?.getAttribute('points') || '').split(' ').some((p) => Number(p.split(',')[1]) < 140),
      null, { timeout: 15000, polling: 250 },
    ).catch(() => { failoverShown = false; });
    // Let the event list and the failover figures settle for the screenshot.
    await page.waitForTimeout(2500);
    await page.screenshot({ path: ${JSON.stringify(SHOT_DEAD)}, fullPage: true });
    const events = await page.$$eval('#event-list tbody tr', (els) => els.map((e) => e.innerText.replace(/\\s+/g, ' ')));
    await page.waitForFunction(() => document.querySelector('tr[data-cluster-row=lb2][data-status=down]') !== null, null, { timeout: 5000, polling: 200 }).catch(() => undefined);
    const clusterAfter = await page.$$eval('tr[data-cluster-row]', (els) => els.map((e) => ({ id: e.dataset.clusterRow, status: e.dataset.status, config: e.dataset.config, mismatch: e.dataset.mismatch })));
    out({ phase: 'dead', deadMs, waitError, failoverShown, title: await page.title(), cards: await cards(page), charts: await charts(page), events, cluster: clusterAfter, problems: problems.slice() });
  } finally {
    await ctx.close();
  }
})().catch((e) => { out({ phase: 'error', error: String(e && e.stack || e) }); process.exitCode = 1; }).finally(() => lines.close());
`;
}

interface Card {
  id: string;
  state: string;
  status: string;
  primaryOf: number;
  flowsHeld: number | null;
  text: string;
}

interface Chart {
  id: string;
  max: number;
  series: Array<{ name: string; points: number; peak: number }>;
  markers: string[];
}

test.before(async () => {
  if (skipReason !== undefined) return;
  const stale = staleDist();
  if (stale !== undefined) {
    upError = stale;
    return;
  }
  session = await holdLabSession();
  await lab(['down']);
  const r = await lab(['up', '--entry', 'single'], 180_000);
  if (r.code !== 0) {
    upError = `lab.sh up failed (exit ${r.code}):\n${r.stderr.slice(-3000)}\n${['lb1', 'lb2', 'lb3'].map((b) => `--- ${b}\n${labLogTail(b, 15)}`).join('\n')}`;
    return;
  }
  // Every balancer serving (they sync with each other after `up` returns).
  await poll(async () => {
    const s = await execIn('lb1', ['curl', '-sS', '-m', '2', `http://${ADMIN}/api/v1/status`], { timeoutMs: 4000 });
    try {
      const st = JSON.parse(s.stdout) as { balancers: Array<{ state: string; status: string }> };
      return st.balancers.every((b) => (b.state === 'self' || b.state === 'up') && b.status === 'serving');
    } catch {
      return false;
    }
  }, 20_000, 200);
});

test.after.always('lab down, release the lab', async (t) => {
  if (skipReason !== undefined) return;
  try {
    if (session !== undefined) {
      const r = await lab(['down']);
      t.log(`lab down (after.always): exit ${r.code} in ${r.seconds.toFixed(1)} s`);
    }
  } finally {
    session?.release();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  }
});

const title = 'status page: headless Chromium in tunlb-lb1 shows three balancers, then lb2 dead within 5 s of kill -9';
(skipReason === undefined ? test.serial : test.skip)(skipReason === undefined ? title : `${title} (${skipReason})`, async (t) => {
  if (upError !== undefined) t.fail(upError);
  if (upError !== undefined) return;
  work = mkdtempSync(path.join(tmpdir(), 'tunlb-browser-'));
  const profile = path.join(work, 'profile');
  const driver = path.join(work, 'driver.ts');
  writeFileSync(driver, driverSource(require.resolve('playwright-core'), profile));

  // A start-up burst first: 1,500 new HTTP connections (the page's history holds it, and the
  // failover later must still be visible next to it).
  const burst = await execIn(
    'client',
    [process.execPath, '--import', 'tsx', path.join(REPO, 'scripts', 'traffic.ts'), 'newconns', '--count', '1500', '--concurrency', '20', '--target', '10.99.0.10:80', '--duration-s', '60', '--json', '--quiet'],
    { timeoutMs: 90_000 },
  );
  t.is(burst.code, 0, `burst: ${burst.stderr.slice(-1000)}`);
  t.log(`start-up burst: ${burst.stdout.trim().split('\n').pop()?.slice(0, 200) ?? ''}`);

  // Traffic through the VIP (client namespace only; bounded in time): long-lived echo
  // connections (those whose primary is lb2 fail over to their backup after the kill: the
  // page's failover figures) and a stream of new HTTP connections (flow rates).
  const longlived = startTraffic(['longlived', '--conns', '24', '--interval-ms', '50', '--duration-s', '30', '--quiet'], 45_000);
  const traffic = execIn(
    'client',
    ['sh', '-c', 'i=0; while [ $i -lt 60 ]; do curl -s -m 1 -o /dev/null http://10.99.0.10/; i=$((i+1)); sleep 0.15; done'],
    { timeoutMs: 30_000 },
  );

  const child = spawn('ip', ['netns', 'exec', NS, process.execPath, '--import', 'tsx', driver], {
    cwd: REPO,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, HOME: work },
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += String(d);
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const messages: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    try {
      messages.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      stderr += `driver: ${l}\n`;
    }
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (phase: string): Promise<Record<string, unknown>> => {
    for (;;) {
      const m = messages.find((x) => x['phase'] === phase || x['phase'] === 'error');
      if (m !== undefined) {
        if (m['phase'] === 'error') throw new Error(`browser driver: ${String(m['error'])}\n${stderr.slice(-2000)}`);
        return m;
      }
      const done = await Promise.race([new Promise<boolean>((r) => waiters.push(() => r(false))), exited.then(() => true)]);
      if (done && !messages.some((x) => x['phase'] === phase || x['phase'] === 'error')) {
        throw new Error(`browser driver exited before '${phase}':\n${stderr.slice(-3000)}`);
      }
    }
  };

  try {
    const up = await next('up');
    const cards = up['cards'] as Card[];
    t.log(`page up: HTTP ${String(up['httpStatus'])}, title "${String(up['title'])}"`);
    for (const c of cards) t.log(`  ${c.id}: ${c.state}/${c.status} | ${c.text}`);
    t.log(`  kpis: ${(up['kpis'] as string[]).join(' | ')}`);
    t.log(`  chart points per series: ${JSON.stringify(up['chartPoints'])}`);
    t.log(`screenshot (3 balancers): ${SHOT_UP}`);
    t.is(up['httpStatus'], 200);
    t.deepEqual(cards.map((c) => c.id), ['lb1', 'lb2', 'lb3'], 'three balancers, in config order');
    t.like(cards[0], { state: 'self', status: 'serving' });
    t.like(cards[1], { state: 'up', status: 'serving' });
    t.like(cards[2], { state: 'up', status: 'serving' });
    t.regex(String(up['title']), /tunlb lb1 · 3\/3 live/);
    t.true((up['chartPoints'] as number[]).some((n) => n >= 3), 'the charts have data');
    t.deepEqual(up['backendStates'], ['healthy', 'healthy', 'healthy', 'healthy', 'healthy', 'healthy'], 'a state badge per lab backend');
    // The VIP/backend table: web4 and web6 with three backends each; lb1 (the page's balancer,
    // the single entry) decided the burst's 1,500 web4 connections, spread over its backends.
    type ServiceRow = { vip: string; backend: string | null; connections: number; active: number; inPackets: number; outPackets: number };
    const services = up['services'] as ServiceRow[];
    t.log(`  service rows: ${services.map((r) => `${r.vip}${r.backend ? ` ${r.backend}` : ''} conns ${r.connections} active ${r.active} in ${r.inPackets} out ${r.outPackets}`).join(' | ')}`);
    t.deepEqual(services.filter((r) => r.backend === null).map((r) => r.vip), ['web4', 'web6'], 'a row per VIP');
    t.is(services.filter((r) => r.backend !== null).length, 6, 'a row per backend');
    for (const vip of ['web4', 'web6']) {
      const rows = services.filter((r) => r.vip === vip);
      const total = rows.find((r) => r.backend === null)!;
      t.is(total.connections, rows.filter((r) => r.backend !== null).reduce((a, r) => a + r.connections, 0), `${vip}: the VIP's connections are its backends'`);
    }
    const web4 = services.filter((r) => r.vip === 'web4' && r.backend !== null);
    t.true(web4.reduce((a, r) => a + r.connections, 0) >= 1500, `the burst's connections are on web4's backends: ${web4.map((r) => r.connections).join(', ')}`);
    t.true(web4.every((r) => r.connections > 0 && r.inPackets > 0 && r.outPackets > 0), 'every web4 backend took connections and packets both ways');
    for (const h of ['conns', 'active', 'conn/s', 'in pkt/s', 'out pkt/s', 'last check', 'down']) t.true((up['serviceHead'] as string[]).includes(h), `the table has a "${h}" column`);
    t.deepEqual(up['problems'], [], 'no script errors, dialogs, failed or foreign requests');
    // The whole cluster at once: a row per balancer, every one serving, one config version.
    type ClusterRow = { id: string; status: string; config: string; mismatch: string };
    const clusterUp = up['cluster'] as ClusterRow[];
    t.log(`  cluster table: ${clusterUp.map((r) => `${r.id} ${r.status} ${r.config}${r.mismatch === '1' ? ' MISMATCH' : ''}`).join(' | ')}`);
    t.deepEqual(clusterUp.map((r) => `${r.id} ${r.status}`), ['lb1 serving', 'lb2 serving', 'lb3 serving'], 'the cluster table: every balancer serving');
    t.true(clusterUp.every((r) => /^[0-9a-f]{12}$/.test(r.config) && r.config === clusterUp[0]!.config && r.mismatch === '0'), 'one config version everywhere, no mismatch');
    const layout = up['layout'] as { page: number; window: number; vipBox: number; vipTable: number };
    t.log(`  layout at ${layout.window} px: page ${layout.page} px wide; VIP table ${layout.vipTable} px in a ${layout.vipBox} px box`);
    t.true(layout.page <= layout.window, `the page does not scroll sideways at ${layout.window} px (${layout.page} px wide)`);
    t.true(layout.vipTable <= layout.vipBox, `the VIP table fits its box at ${layout.window} px (${layout.vipTable} px in ${layout.vipBox} px)`);
    // The flow counts agree: the cards' primary-of figures add up to the flows lb1 holds.
    const held = cards[0]!.flowsHeld!;
    const primaries = cards.reduce((n, c) => n + c.primaryOf, 0);
    t.log(`  flows held ${held}; primary of: ${cards.map((c) => `${c.id} ${c.primaryOf}`).join(', ')} (sum ${primaries})`);
    t.true(held >= 1000, `the burst's flows are held: ${held}`);
    t.is(primaries, held, 'primary-of counts sum to flows held');
    // In one render: the active-flows figure, flows held and the primary-of figures are one count.
    const same = up['same'] as { kpis: string[]; held: number; primaries: number[] };
    t.is(same.primaries.reduce((a, b) => a + b, 0), same.held, 'one render: primary-of sums to flows held');
    t.is(same.kpis.find((k) => k.startsWith('active flows')), `active flows ${same.held.toLocaleString('en-US')}`, 'one render: active flows = flows held');

    const k = await lab(['kill', 'lb2'], 30_000);
    t.is(k.code, 0, `lab.sh kill lb2: ${k.stderr}`);
    child.stdin.write('killed\n');
    const dead = await next('dead');
    const after = dead['cards'] as Card[];
    t.log(`lb2 shown dead ${String(dead['deadMs'])} ms after kill -9 returned; title "${String(dead['title'])}"`);
    for (const c of after) t.log(`  ${c.id}: ${c.state}/${c.status} | ${c.text}`);
    for (const e of (dead['events'] as string[]).slice(0, 8)) t.log(`  event: ${e}`);
    t.log(`screenshot (lb2 dead): ${SHOT_DEAD}`);
    t.true(
      (dead['deadMs'] as number) >= 0 && (dead['deadMs'] as number) <= DEAD_WITHIN_MS,
      `lb2 dead on the page within ${DEAD_WITHIN_MS} ms: ${String(dead['deadMs'])} ${String(dead['waitError'] ?? '')}`,
    );
    t.like(after.find((c) => c.id === 'lb2'), { state: 'dead', status: 'unknown' });
    t.notRegex(after.find((c) => c.id === 'lb2')!.text, /serving/i, 'a dead balancer is never shown as serving');
    // The failover after the burst is visible: a peer-down marker, and the failover series on
    // its own chart rises well off the baseline (the packets chart is scaled to the burst).
    const ch = dead['charts'] as Chart[];
    for (const c of ch) t.log(`  chart ${c.id}: max ${c.max}; ${c.series.map((x) => `${x.name} peak ${(x.peak * 100).toFixed(0)}% (${x.points} points)`).join(', ')}; markers ${c.markers.join(', ')}`);
    t.true(dead['failoverShown'] as boolean, 'the failover chart shows failover packets and the peer-down marker');
    const fail = ch.find((c) => c.id === 'chart-fail')!;
    const pk = ch.find((c) => c.id === 'chart-pkts')!;
    t.true(fail.series.find((x) => x.name === 'failover')!.peak >= 0.35, 'failover packets reach at least a third of their chart');
    t.true(pk.markers.includes('lb2 peer_down') && fail.markers.includes('lb2 peer_down'), 'every chart marks lb2 down');
    t.true(pk.max > fail.max, `the burst sets the packets chart's scale (${pk.max}) above the failover chart's (${fail.max})`);
    t.like(after.find((c) => c.id === 'lb3'), { state: 'up', status: 'serving' });
    t.regex(after.find((c) => c.id === 'lb2')!.text, /DEAD/i);
    t.regex(String(dead['title']), /2\/3 live/);
    t.true((dead['events'] as string[]).some((e) => /lb2 peer down/.test(e)), 'the peer_down event is listed');
    t.true((dead['events'] as string[]).some((e) => /lb1 failover active/.test(e)), 'the failover (derived from failover packets) is listed');
    t.deepEqual(dead['problems'], [], 'no script errors, failed or foreign requests');
    const clusterDead = dead['cluster'] as ClusterRow[];
    t.log(`  cluster table after the kill: ${clusterDead.map((r) => `${r.id} ${r.status}`).join(' | ')}`);
    t.deepEqual(clusterDead.map((r) => `${r.id} ${r.status}`), ['lb1 serving', 'lb2 down', 'lb3 serving'], 'the cluster table shows lb2 down');

    // The same truth in /metrics (scraped inside the namespace).
    const m = await execIn('lb1', ['curl', '-sS', '-m', '3', `http://${ADMIN}/metrics`], { timeoutMs: 5000 });
    t.regex(m.stdout, /^tunlb_peer_state\{peer="lb2",state="dead"\} 1$/m);
    t.regex(m.stdout, /^tunlb_peer_status\{peer="lb2",status="serving"\} 0$/m, 'a dead peer is not serving');
    t.regex(m.stdout, /^tunlb_peer_state\{peer="lb3",state="up"\} 1$/m);
    t.regex(m.stdout, /^tunlb_failovers_total [1-9]/m);
    t.regex(m.stdout, /^tunlb_peer_probe_rtt_seconds_count\{peer="lb3"\} [1-9]/m);
    // promtool's lint of the whole scrape (the format an operator's Prometheus ingests).
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: m.stdout, encoding: 'utf8', timeout: 30_000 });
    t.is(lint.status, 0, `promtool check metrics on lb1's /metrics:\n${lint.stdout}${lint.stderr}${lint.error ? String(lint.error) : ''}`);
    t.is(await exited, 0, `driver exit: ${stderr.slice(-1000)}`);
  } finally {
    clearTimeout(killer);
    if (child.exitCode === null) child.kill('SIGKILL');
    longlived.kill();
    await Promise.all([traffic, longlived.done]);
  }
});

/**
 * The token test's browser driver: opens the page of an endpoint with admin.token_file, which
 * must show its token form (no dialog), refuse a wrong token, and show the data with the right
 * one; prints one JSON line {phase:'token', ...} (or {phase:'error'}).
 */
function tokenDriverSource(playwright: string, userDataDir: string, goodToken: string): string {
  return `
const { chromium } = require(${JSON.stringify(playwright)});
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
(async () => {
  const ctx = await chromium.launchPersistentContext(${JSON.stringify(userDataDir)}, {
    executablePath: ${JSON.stringify(CHROMIUM)},
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    viewport: { width: 1360, height: 900 },
    timeout: 30000,
  });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const problems = [];
    const dialogs = [];
    page.on('dialog', (d) => { dialogs.push(d.type() + ': ' + d.message()); d.dismiss().catch(() => undefined); });
    page.on('pageerror', (e) => problems.push('pageerror: ' + e.message));
    page.on('request', (r) => { if (!r.url().startsWith('http://${ADMIN}/')) problems.push('request to another origin: ' + r.url()); });
    await page.goto('http://${ADMIN}/', { waitUntil: 'load', timeout: 15000 });
    // The form appears (the first API call answered 401); nothing blocks the page.
    await page.waitForSelector('#token-form:not([hidden]) #token-input', { timeout: 10000 });
    const connAsking = await page.$eval('#conn-text', (e) => e.textContent);
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    await page.screenshot({ path: ${JSON.stringify(SHOT_TOKEN)}, fullPage: false });
    // A wrong token: refused, the form stays.
    await page.fill('#token-input', 'not-the-token');
    await page.click('#token-form button[type=submit]');
    await page.waitForFunction(() => /refused/.test(document.getElementById('token-note').textContent), null, { timeout: 10000, polling: 100 });
    const refusedNote = await page.$eval('#token-note', (e) => e.textContent);
    // The right one: the form goes, the data comes.
    await page.fill('#token-input', ${JSON.stringify(goodToken)});
    await page.press('#token-input', 'Enter');
    await page.waitForFunction(() => document.getElementById('conn').dataset.ok === '1' && document.querySelectorAll('.bal').length === 1 &&
      document.getElementById('token-form').hidden, null, { timeout: 10000, polling: 100 });
    await page.waitForTimeout(1500);
    await page.screenshot({ path: ${JSON.stringify(SHOT_TOKEN_OK)}, fullPage: false });
    const card = await page.$eval('.bal', (e) => e.dataset.balancer + ' ' + e.dataset.state + '/' + e.dataset.status);
    // The token stays in the tab: a reload shows the data without asking.
    await page.reload({ waitUntil: 'load' });
    await page.waitForFunction(() => document.getElementById('conn').dataset.ok === '1', null, { timeout: 10000, polling: 100 });
    const formAfterReload = await page.$eval('#token-form', (e) => e.hidden);
    out({ phase: 'token', connAsking, focused, refusedNote, card, formHiddenAfterReload: formAfterReload, url: page.url(), dialogs, problems });
  } finally {
    await ctx.close();
  }
})().catch((e) => { out({ phase: 'error', error: String(e && e.stack || e) }); process.exitCode = 1; });
`;
}

const tokenTitle = 'status page: with admin.token_file the page asks for the token with a form (no dialog), refuses a wrong one, shows the data with the right one';
(skipReason === undefined ? test.serial : test.skip)(skipReason === undefined ? tokenTitle : `${tokenTitle} (${skipReason})`, async (t) => {
  // One balancer with a token, in a namespace of its own (not the lab): its address on lo.
  const ns = uniqueNetnsName('page');
  const dir = mkdtempSync(path.join(tmpdir(), 'tunlb-page-token-'));
  const token = `tok-${randomBytes(8).toString('hex')}`;
  let balancer: ChildProcess | undefined;
  try {
    createNetns(ns);
    runIn(ns, ['ip', 'addr', 'add', '10.77.8.11/32', 'dev', 'lo']);
    writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
    writeFileSync(path.join(dir, 'admin.token'), `${token}\n`, { mode: 0o600 });
    const cfg = path.join(dir, 'tunlb.yaml');
    writeFileSync(
      cfg,
      `cluster: { id: page-token, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.77.8.11 }
tun: { name: tunt-page0 }
vips:
  - name: web4
    address: 10.77.0.10
    backends:
      - { address: 10.77.3.21 }
admin: { listen: "${ADMIN}", token_file: admin.token }
`,
    );
    let log = '';
    balancer = spawn('ip', ['netns', 'exec', ns, process.execPath, path.join(REPO, 'bin', 'tunlb'), 'run', '--config', cfg, '--id', 'lb1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    balancer.stderr!.on('data', (d) => (log += String(d)));
    const listening = await poll(async () => /"event":"balancer_started"/.test(log) || balancer!.exitCode !== null, 20_000, 100);
    t.true(listening && balancer.exitCode === null, `the balancer started: ${log.slice(-2000)}`);
    if (balancer.exitCode !== null) return;

    const driver = path.join(dir, 'token-driver.ts');
    writeFileSync(driver, tokenDriverSource(require.resolve('playwright-core'), path.join(dir, 'profile'), token));
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', driver], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: dir } });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (d) => (stdout += String(d)));
      c.stderr.on('data', (d) => (stderr += String(d)));
      const killer = setTimeout(() => c.kill('SIGKILL'), 90_000);
      c.on('close', (code) => {
        clearTimeout(killer);
        resolve({ code, stdout, stderr });
      });
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    const res = JSON.parse(line || '{}') as Record<string, unknown>;
    t.is(res['phase'], 'token', `driver: ${line}\n${r.stderr.slice(-2000)}`);
    t.log(`token form: conn "${String(res['connAsking'])}", refused note "${String(res['refusedNote'])}", card ${String(res['card'])}`);
    t.log(`screenshots: ${SHOT_TOKEN} (asking), ${SHOT_TOKEN_OK} (accepted)`);
    t.deepEqual(res['dialogs'], [], 'no window.prompt or any other dialog');
    t.deepEqual(res['problems'], []);
    t.is(res['connAsking'], 'token required');
    t.is(res['focused'], 'token-input', 'the token field has the focus');
    t.regex(String(res['refusedNote']), /that token was refused \(HTTP 401\)/);
    t.is(res['card'], 'lb1 self/serving', 'the data shows once the token is accepted');
    t.true(res['formHiddenAfterReload'] as boolean, 'the token is kept for the tab: no form after a reload');
    t.false(String(res['url']).includes(token), 'the token is not in the address bar');
    t.is(r.code, 0);
  } finally {
    if (balancer !== undefined && balancer.exitCode === null) {
      balancer.kill('SIGTERM');
      await poll(async () => balancer!.exitCode !== null, 10_000, 100);
      if (balancer.exitCode === null) balancer.kill('SIGKILL');
    }
    removeNetns(ns);
    rmSync(dir, { recursive: true, force: true });
  }
});
