/**
 * The monitoring files the project ships (monitoring/): the Prometheus alert rules and their
 * promtool unit tests, and the Grafana dashboard. Checked as a Prometheus or Grafana user
 * would meet them: `promtool check rules`, `promtool test rules`, every dashboard query valid
 * PromQL (promtool parses it as a recording rule), and every metric a rule or a panel reads
 * exposed by a balancer's /metrics (a real balancer's scrape plus a three-balancer cluster's,
 * with peers up and dead).
 */
import { ClusterView } from '../../src/cluster/cluster-view';
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { Metrics } from '../../src/control/metrics';
import { Membership, type ProbeBody } from '../../src/cluster/membership';
import { ForwarderStats } from '../../src/dataplane/forwarder-stats';
import { ServiceStats } from '../../src/dataplane/service-stats';
import { ReplicatorStats } from '../../src/cluster/replicator';
import type { Balancer } from '../../src/control/balancer';
import { startBalancer } from '../helpers/balancer-harness';
import { promtool, promtoolTest } from '../helpers/promtool';

const REPO = join(__dirname, '..', '..');
const RULES = join(REPO, 'monitoring', 'tunlb-alerts.yml');
const RULE_TESTS = join(REPO, 'monitoring', 'tunlb-alerts.test.yml');
const DASHBOARD = join(REPO, 'monitoring', 'tunlb-dashboard.json');

interface Target {
  expr?: string;
  refId?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query?: unknown }> };
  annotations?: { list: Array<{ expr?: string }> };
}

const dashboard = (): Dashboard => JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;

/** Every PromQL expression of the dashboard: panel targets and annotations, with where it is. */
function dashboardExprs(d: Dashboard): Array<{ where: string; expr: string }> {
  const out: Array<{ where: string; expr: string }> = [];
  for (const p of d.panels) for (const t of p.targets ?? []) if (t.expr !== undefined) out.push({ where: `panel "${p.title}" ${t.refId ?? ''}`, expr: t.expr });
  for (const a of d.annotations?.list ?? []) if (a.expr !== undefined) out.push({ where: 'annotation', expr: a.expr });
  return out;
}

/** Every alert rule's expression. */
function ruleExprs(): Array<{ where: string; expr: string }> {
  const doc = parseYaml(readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  return doc.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })));
}

/** Grafana's variables replaced by what Prometheus would receive (for promtool). */
function substituteGrafana(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '1m').replace(/\$\{?instance\}?/g, '.*');
}

/** Metric names an expression reads: identifiers of the exposition's prefixes (and `up`). */
function metricNames(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\b((?:tunlb|process|nodejs)_[a-z0-9_]+)\b/g)].map((m) => m[1]!))];
}

/** Sample names (the part before `{` or the value) of exposition texts. */
function sampleNames(...texts: string[]): Set<string> {
  const out = new Set<string>();
  for (const text of texts) {
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
      if (m) out.add(m[1]!);
    }
  }
  return out;
}

/** A balancer's whole scrape, and a three-balancer cluster's (lb2 up with RTT samples, lb3 dead). */
async function scrapes(t: import('ava').ExecutionContext): Promise<string[]> {
  const s = await startBalancer(t, {
    config: `
cluster: { id: mon-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-mon0 }
vips:
  - name: web4
    address: 10.99.0.10
    backends:
      - { address: 10.99.3.21 }
admin: { listen: "127.0.0.1:9180" }
`,
    tunName: 'tunlb-mon0',
    key: Buffer.alloc(32, 0x3a),
    logLevel: 'info',
  });
  const own = await (await fetch(`http://${s.admin}/metrics`, { signal: AbortSignal.timeout(3000) })).text();

  let now = 1000;
  const probes: Array<{ peer: number; body: ProbeBody }> = [];
  const m = new Membership({
    selfIndex: 0,
    ids: ['lb1', 'lb2', 'lb3'],
    intervalMs: 50,
    misses: 3,
    nowMs: () => now,
    sendProbe: (peer, body) => probes.push({ peer, body }),
    sendAck: () => undefined,
    selfIncarnation: 1,
    initialStatus: 'serving',
  });
  const stub = {
    selfId: 'lb1',
    selfIndex: 0,
    config: { cluster: { id: 'mon' }, tun: { batch: 64 }, balancers: [] },
    configHash: () => ({ value: 0x0123456789ab, hex: '0123456789ab' }),
    operatorEvents: { events: [], record: () => undefined },
    nowSec: () => 1,
    forwarder: { stats: new ForwarderStats(), services: new ServiceStats({ config: { vips: [] } } as never), forwarding: { generation: 1, config: { vips: [] } } },
    table: { size: 0, capacity: 64, expired: 0, refusedFull: 0, earlyDrops: 0, conflicts: 0 },
    device: { stats: { readPackets: 0, readBytes: 0, writePackets: 0, writeBytes: 0, writeErrors: 0 } },
    cluster: {
      incarnation: 1,
      membership: m,
      replicator: { stats: new ReplicatorStats() },
      channel: { stats: { sent: 0, received: 0 }, rejectCounts: () => ({}) },
      events: [],
      view: new ClusterView({ balancerCount: 3, selfIndex: 0, nowMs: () => 0 }),
      reloads: { stats: { requestsSent: 2, requestsReceived: 1 } },
      syncProgress: () => ({ state: 'done', peer: null, received: 0, total: 0, ratePerS: 0, elapsedMs: 0, cursor: 0, sessions: 0, resumes: 0, lastError: null, startedAt: null }),
    },
  } as unknown as Balancer;
  const metrics = new Metrics(stub, { rttSampleMs: 0, nowMs: () => now });
  t.teardown(() => metrics.close());
  for (let i = 0; i < 6; i++) {
    m.tick();
    // lb2 answers every probe; lb3 only the first (then it goes silent: suspect, dead).
    for (const peer of i === 0 ? [1, 2] : [1]) {
      const p = [...probes].reverse().find((x) => x.peer === peer)!;
      m.onProbeAck(peer, 100 + peer, { nonce: p.body.nonce, probeSentAtMs: p.body.sentAtMs, proberIncarnation: 1, status: 2 });
    }
    metrics.sampleRtt();
    now += 50;
  }
  const cluster = await metrics.text();
  t.regex(cluster, /^tunlb_peer_state\{peer="lb3",state="dead"\} 1$/m, 'the cluster scrape has a dead peer');
  return [own, cluster];
}

promtoolTest('monitoring: `promtool check rules` accepts the alert rules', (t) => {
  const r = promtool(['check', 'rules', RULES]);
  t.is(r.status, 0, r.output);
  t.regex(r.output, /SUCCESS: \d+ rules found/);
});

promtoolTest('monitoring: the alert rules pass their promtool unit tests (a balancer killed, a backend down, a VIP without backends, a full table)', (t) => {
  const r = promtool(['test', 'rules', RULE_TESTS]);
  t.is(r.status, 0, r.output);
  t.regex(r.output, /SUCCESS/);
});

promtoolTest('monitoring: every Grafana dashboard query is valid PromQL', (t) => {
  const exprs = dashboardExprs(dashboard());
  t.true(exprs.length >= 20, `the dashboard has ${exprs.length} queries`);
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-dash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'dashboard-exprs.yml');
  // Each query as a recording rule: promtool parses (and type-checks) every expression.
  const rules = exprs.map((e, i) => `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(substituteGrafana(e.expr))}`).join('\n');
  writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules}\n`);
  const r = promtool(['check', 'rules', file]);
  t.is(r.status, 0, `${r.output}\n(queries, in order: ${exprs.map((e, i) => `${i} ${e.where}`).join('; ')})`);

  // The check catches a broken query.
  writeFileSync(file, 'groups:\n  - name: dashboard\n    rules:\n      - record: dashboard:broken\n        expr: "sum by (instance (rate(tunlb_packets_in_total[1m]))"\n');
  t.not(promtool(['check', 'rules', file]).status, 0, 'promtool rejects a malformed query');
});

test('monitoring: every metric the alert rules and the dashboard read is exposed by /metrics', async (t) => {
  const exposed = sampleNames(...(await scrapes(t)));
  t.true(exposed.has('tunlb_peer_probe_rtt_seconds_bucket') && exposed.has('process_cpu_seconds_total'), 'the scrapes are whole');
  const missing: string[] = [];
  let n = 0;
  for (const { where, expr } of [...ruleExprs(), ...dashboardExprs(dashboard())]) {
    for (const name of metricNames(expr)) {
      n++;
      if (!exposed.has(name)) missing.push(`${where}: ${name}`);
    }
  }
  t.true(n > 40, `${n} metric references checked`);
  t.deepEqual(missing, [], 'metrics no balancer exposes');
  // And the check would see a misspelt one.
  t.false(exposed.has('tunlb_peer_states'));
});

test('monitoring: the Grafana dashboard is a well-formed dashboard (uid, variables, panels on the 24-column grid without overlap, data source variable)', (t) => {
  const d = dashboard();
  t.is(d.uid, 'tunlb-overview');
  const vars = d.templating.list.map((v) => `${v.name}:${v.type}`);
  t.deepEqual(vars, ['datasource:datasource', 'instance:query']);
  const ids = new Set<number>();
  const cells = new Map<string, string>();
  for (const p of d.panels) {
    t.false(ids.has(p.id), `panel id ${p.id} is unique`);
    ids.add(p.id);
    const g = p.gridPos;
    t.true(g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0, `"${p.title}" fits the grid`);
    for (let x = g.x; x < g.x + g.w; x++) {
      for (let y = g.y; y < g.y + g.h; y++) {
        const other = cells.get(`${x},${y}`);
        t.is(other, undefined, `"${p.title}" overlaps "${other}"`);
        cells.set(`${x},${y}`, p.title);
      }
    }
    if (p.type === 'row') continue;
    t.is(p.datasource?.uid, '${datasource}', `"${p.title}" reads the chosen data source`);
    t.true((p.targets ?? []).length > 0, `"${p.title}" has a query`);
    const refs = (p.targets ?? []).map((x) => x.refId);
    t.is(new Set(refs).size, refs.length, `"${p.title}": refIds unique`);
    for (const x of p.targets ?? []) t.regex(x.expr ?? '', /instance=~"\$instance"/, `"${p.title}" ${x.refId} follows the balancer selector`);
  }
});
