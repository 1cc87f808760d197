/** `tunlb ready` (src/cli/readiness.ts): one readiness definition, table-driven. */
import test from 'ava';
import { readiness, type ReadinessBackend, type ReadinessStatus } from '../../src/cli/readiness';

const lb = (id: string, state: string, status: string) => ({ id, self: state === 'self', state, status });
const status = (self: string, ...peers: Array<[string, string, string]>): ReadinessStatus => ({
  self: { id: 'lb1', status: self },
  balancers: [lb('lb1', 'self', self), ...peers.map(([id, st, s]) => lb(id, st, s))],
});
const be = (backend: string, health: string, check: string | null = 'tcp'): ReadinessBackend => ({ vip: 'web4', backend, port: null, health, check });
const HEALTHY = [be('10.99.3.21', 'healthy'), be('10.99.3.22', 'healthy'), be('10.99.3.23', 'unknown', null)];

const cases: Array<{ desc: string; st: ReadinessStatus; backends: ReadinessBackend[]; allow?: string[]; ready: boolean; text: RegExp }> = [
  {
    desc: 'whole cluster serving, checked backends healthy (an unchecked one does not count)',
    st: status('serving', ['lb2', 'up', 'serving'], ['lb3', 'up', 'serving']),
    backends: HEALTHY,
    ready: true,
    text: /^ready: lb1 serving, 2\/2 peers serving, 2\/2 checked backends healthy$/,
  },
  {
    desc: 'still syncing',
    st: status('syncing', ['lb2', 'up', 'serving'], ['lb3', 'up', 'serving']),
    backends: HEALTHY,
    ready: false,
    text: /^not ready: lb1 is syncing, not serving \(/,
  },
  {
    desc: 'a peer still starting, another suspect',
    st: status('serving', ['lb2', 'up', 'syncing'], ['lb3', 'suspect', 'serving']),
    backends: HEALTHY,
    ready: false,
    text: /peer lb2 is up but syncing, not serving; peer lb3 is suspect \(missing probe answers\)/,
  },
  {
    // The API reports a dead peer's status as unknown; even an older balancer's "serving" for a
    // dead peer is never repeated as its status.
    desc: 'a dead peer is "dead", never "dead/serving"',
    st: status('serving', ['lb2', 'dead', 'serving'], ['lb3', 'unknown', 'unknown']),
    backends: HEALTHY,
    ready: false,
    text: /^not ready: peer lb2 is dead \(no answer to probes\); peer lb3 has not answered a probe yet \(lb1 serving, 0\/2 peers serving/,
  },
  {
    desc: 'a backend not yet healthy (its first checks failed before the server listened)',
    st: status('serving', ['lb2', 'up', 'serving']),
    backends: [be('10.99.3.21', 'healthy'), be('10.99.3.22', 'unhealthy')],
    ready: false,
    text: /backend 10\.99\.3\.22 of web4 is unhealthy.*1\/2 checked backends healthy/,
  },
  {
    desc: 'a balancer allowed down (killed on purpose) is not required',
    st: status('serving', ['lb2', 'dead', 'serving'], ['lb3', 'up', 'serving']),
    backends: HEALTHY,
    allow: ['lb2'],
    ready: true,
    text: /1\/1 peers serving/,
  },
  {
    desc: 'a single balancer: no peers',
    st: status('serving'),
    backends: [{ vip: 'v', backend: 'fd99:3::21', port: 8080, health: 'unknown', check: 'http' }],
    ready: false,
    text: /backend fd99:3::21:8080 of v is unknown/,
  },
];

for (const c of cases) {
  test(`readiness: ${c.desc}`, (t) => {
    const r = readiness(c.st, c.backends, c.allow);
    t.is(r.ready, c.ready, r.text);
    t.regex(r.text, c.text);
    t.is(r.missing.length === 0, c.ready);
    t.notRegex(r.text, /dead\S*serving|dead\/serving/, 'a dead peer is never called serving');
  });
}
