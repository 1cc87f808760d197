/** Incarnations never go back across restarts, even when the clock does (src/cluster/incarnation.ts). */
import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { isTunlbError } from '../../src/errors';
import { incarnationFile, nextIncarnation } from '../../src/cluster/incarnation';

function dir(t: import('ava').ExecutionContext): string {
  const d = mkdtempSync(path.join(tmpdir(), 'tunlb-inc-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const NOW = 1_800_000_000_000; // ms, 2027
const HOUR = 3_600_000;

test('first start: the clock\'s incarnation, persisted before use', (t) => {
  const d = dir(t);
  const c = nextIncarnation(d, 'lb1', NOW);
  t.is(c.source, 'clock');
  t.is(c.previous, null);
  t.is(c.stateProblem, null);
  t.true(c.incarnation >= NOW * 2048 && c.incarnation < (NOW + 1) * 2048);
  t.is(readFileSync(incarnationFile(d, 'lb1'), 'utf8'), `${c.incarnation}\n`);
  t.deepEqual(readdirSync(d), ['lb1.incarnation'], 'no temporary file left behind');
});

// [what, clock of each start (ms offsets from NOW)]: every start's incarnation exceeds the previous.
const RESTARTS: Array<[string, number[]]> = [
  ['clock forward', [0, HOUR, 2 * HOUR]],
  ['clock went back an hour between two starts', [0, -HOUR]],
  ['clock went back a year, then forward a little', [0, -365 * 24 * HOUR, -365 * 24 * HOUR + 1000]],
  ['two starts in the same millisecond', [0, 0, 0, 0]],
];
for (const [what, clocks] of RESTARTS) {
  test(`restarts: ${what}: every incarnation is larger than the one before`, (t) => {
    const d = dir(t);
    let prev = 0;
    for (const ms of clocks) {
      const c = nextIncarnation(d, 'lb2', NOW + ms);
      t.true(c.incarnation > prev, `${c.incarnation} after ${prev}`);
      if (prev !== 0) t.is(c.previous, prev);
      if (prev !== 0 && (NOW + ms) * 2048 + 2047 <= prev) t.is(c.source, 'state', 'the clock is behind: continued from the file');
      prev = c.incarnation;
    }
  });
}

test('balancers sharing a state directory keep their own files', (t) => {
  const d = dir(t);
  const a = nextIncarnation(d, 'lb1', NOW + HOUR);
  const b = nextIncarnation(d, 'lb2', NOW);
  t.true(b.incarnation < a.incarnation, 'lb2 is not pushed by lb1');
  t.deepEqual(readdirSync(d).sort(), ['lb1.incarnation', 'lb2.incarnation']);
});

test('an unusable state file counts as lost: the clock\'s value, and the reason for a warning', (t) => {
  for (const junk of ['', 'hello\n', '-5\n', '1e30\n', '99999999999999999999\n']) {
    const d = dir(t);
    writeFileSync(incarnationFile(d, 'lb1'), junk);
    const c = nextIncarnation(d, 'lb1', NOW);
    t.is(c.previous, null, JSON.stringify(junk));
    t.truthy(c.stateProblem, JSON.stringify(junk));
    t.is(c.source, 'clock');
    t.is(readFileSync(incarnationFile(d, 'lb1'), 'utf8'), `${c.incarnation}\n`, 'rewritten');
  }
});

test('a lost file with the clock behind: the incarnation goes back (documented; peers heal it by a fresh answer)', (t) => {
  const d = dir(t);
  const first = nextIncarnation(d, 'lb1', NOW);
  rmSync(incarnationFile(d, 'lb1'));
  const second = nextIncarnation(d, 'lb1', NOW - HOUR);
  t.true(second.incarnation < first.incarnation);
  t.is(second.previous, null);
});

test('a state directory that cannot be created is a start-up error naming cluster.state_dir', (t) => {
  const d = dir(t);
  writeFileSync(path.join(d, 'a-file'), 'x');
  const e = t.throws(() => nextIncarnation(path.join(d, 'a-file', 'state'), 'lb1', NOW));
  t.true(isTunlbError(e, 'TUNLB_CONFIG_INVALID'));
  t.regex((e as Error).message, /^cluster\.state_dir .*: cannot keep this balancer's incarnation there \(ENOTDIR\); create the directory/);
});

test('a missing state directory is created', (t) => {
  const d = dir(t);
  const c = nextIncarnation(path.join(d, 'deep', 'er'), 'lb1', NOW);
  t.is(readFileSync(c.file, 'utf8'), `${c.incarnation}\n`);
});
