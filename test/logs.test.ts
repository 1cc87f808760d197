/**
 * docs/logs.md lists every log event: each `event` name the sources write (src/**, the
 * `tunlb run` last words, the membership events, scripts/lab.sh's marker) is in its table, and
 * the table names nothing else. A new log line with a new event name fails here until it is
 * documented. Event names written from a variable are allowed only at the known places
 * (NOT_LITERAL: the membership events, whose names are the MembershipEventType union).
 */
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fatalLine } from '../src/logger';

const REPO = join(__dirname, '..');

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name !== 'generated') out.push(...tsFiles(p));
    } else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/**
 * `event:` followed by something other than a string literal, where that is known to be fine:
 * membership events (names: the MembershipEventType union, read below), and places where
 * `event` is not a log field (a parameter, a type, an API answer).
 */
const NOT_LITERAL: ReadonlyArray<readonly [file: string, text: string, why: string, names?: readonly string[]]> = [
  ['src/cluster/cluster-node.ts', 'event: e.type', 'membership event: MembershipEventType'],
  ['src/cluster/membership.ts', 'event: e.type', 'membership event: MembershipEventType'],
  ['src/control/announcer.ts', 'event: type', 'an announcement change', ['vip_announced', 'vip_withdrawn']],
  ['src/backends/health-monitor.ts', 'event: BackendEvent)', 'a parameter'],
  ['src/backends/health-types.ts', 'event: BackendEvent)', 'a parameter'],
  ['src/control/admin-server.ts', 'event: ev', "the drain API's answer"],
];

function usedEvents(): { names: Map<string, string>; dynamic: string[] } {
  const names = new Map<string, string>();
  const dynamic: string[] = [];
  for (const file of tsFiles(join(REPO, 'src'))) {
    const rel = relative(REPO, file);
    const text = readFileSync(file, 'utf8');
    // An `event` field of an object literal (after `{` or `,`; not a parameter like on(event: 'data', ...)).
    for (const m of text.matchAll(/[{,]\s*(event: ('([a-z0-9_]+)'|[^,}\s]+))/g)) {
      if (m[3] !== undefined) names.set(m[3], rel);
      else {
        const known = NOT_LITERAL.find(([f, x]) => f === rel && x === m[1]);
        if (known === undefined) dynamic.push(`${rel}: ${m[1]}`);
        // The names such a place writes, each a string literal in that file.
        for (const n of known?.[3] ?? []) {
          if (text.includes(`'${n}'`)) names.set(n, rel);
          else dynamic.push(`${rel}: '${n}' not found (NOT_LITERAL is out of date)`);
        }
      }
    }
  }
  // The membership events: the MembershipEventType union.
  const membership = readFileSync(join(REPO, 'src', 'cluster', 'membership.ts'), 'utf8');
  const union = /export type MembershipEventType =([^;]+);/.exec(membership)![1]!;
  for (const m of union.matchAll(/'([a-z_]+)'/g)) names.set(m[1]!, 'src/cluster/membership.ts (MembershipEventType)');
  // The lab's start marker.
  for (const m of readFileSync(join(REPO, 'scripts', 'lab.sh'), 'utf8').matchAll(/"event":"([a-z0-9_]+)"/g)) names.set(m[1]!, 'scripts/lab.sh');
  return { names, dynamic };
}

/** Event names in the first column of docs/logs.md's "Events" table (a cell may name several). */
function documentedEvents(): Set<string> {
  const doc = readFileSync(join(REPO, 'docs', 'logs.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Events'));
  const out = new Set<string>();
  for (const line of section.split('\n')) {
    const cell = /^\| ([^|]+) \|/.exec(line)?.[1];
    if (cell === undefined || cell === 'event' || cell.startsWith('---')) continue;
    for (const m of cell.matchAll(/`([a-z0-9_]+)`/g)) out.add(m[1]!);
  }
  return out;
}

test('logs: every event name the sources write is documented in docs/logs.md, and the table names no other', (t) => {
  const { names, dynamic } = usedEvents();
  t.deepEqual(dynamic, [], 'event names set from a variable outside the known places: make them literals, or list the place in NOT_LITERAL');
  const documented = documentedEvents();
  t.true(names.size >= 30, `${names.size} event names found in the sources`);
  const undocumented = [...names].filter(([n]) => !documented.has(n)).map(([n, where]) => `${n} (${where})`);
  t.deepEqual(undocumented, [], 'events missing from docs/logs.md');
  const stale = [...documented].filter((n) => !names.has(n));
  t.deepEqual(stale, [], 'docs/logs.md names events no source writes');
  for (const must of ['balancer_started', 'peer_down', 'backend_state', 'config_reloaded', 'start_failed', 'crashed', 'lab_start']) t.true(names.has(must), must);
});

test("logs: a process's last words (fatalLine) are one JSON line in the logger's shape", (t) => {
  const line = fatalLine({ balancer: 'lb1', event: 'start_failed', code: 'TUNLB_CONFIG_NOT_FOUND', exitCode: 2 }, 'config file x does not exist');
  t.true(line.endsWith('\n'));
  t.is(line.indexOf('\n'), line.length - 1, 'one line');
  const rec = JSON.parse(line) as Record<string, unknown>;
  t.deepEqual(Object.keys(rec), ['level', 'time', 'balancer', 'event', 'code', 'exitCode', 'msg']);
  t.like(rec, { level: 'fatal', balancer: 'lb1', event: 'start_failed', msg: 'config file x does not exist' });
  t.false(Number.isNaN(Date.parse(String(rec['time']))));
});
