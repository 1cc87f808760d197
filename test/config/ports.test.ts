import test from 'ava';
import { parsePortSpec, PortSet } from '../../src/config';

const cases: [spec: unknown, normalised: string, inSet: number[], notInSet: number[]][] = [
  ['*', '*', [0, 1, 80, 65535], []],
  [[80], '80', [80], [79, 81, 0]],
  [[443, 80, '8000-8080'], '80,443,8000-8080', [80, 443, 8000, 8040, 8080], [81, 7999, 8081]],
  [['1-10', '5-20', 21], '1-21', [1, 21], [0, 22]],
  [['65535'], '65535', [65535], [65534]],
  [[' 100 - 200 '], '100-200', [100, 200], [201]],
];
for (const [spec, normalised, inSet, notInSet] of cases) {
  test(`ports ${JSON.stringify(spec)}`, (t) => {
    const s = parsePortSpec(spec);
    if (!(s instanceof PortSet)) return t.fail(JSON.stringify(s));
    t.is(s.toString(), normalised);
    for (const p of inSet) t.true(s.has(p), `${p} in set`);
    for (const p of notInSet) t.false(s.has(p), `${p} not in set`);
    t.is(s.bitmap.length, 8192);
  });
}

const bad: [spec: unknown, at: (string | number)[][], msg: RegExp][] = [
  [['90-80'], [[0]], /backwards/],
  [[0], [[0]], /1\.\.65535/],
  [[65536], [[0]], /1\.\.65535/],
  [['1-65536'], [[0]], /65536/],
  [[1.5], [[0]], /integer/],
  [['http'], [[0]], /neither a port nor/],
  [[80, {}, '9-8'], [[1], [2]], /mapping|backwards/],
  [[], [[]], /empty/],
  ['all', [[]], /expected "\*" or a list/],
  [80, [[]], /\[80\]/],
  [null, [[]], /expected/],
];
for (const [spec, at, msg] of bad) {
  test(`ports ${JSON.stringify(spec)} refused`, (t) => {
    const r = parsePortSpec(spec);
    if (!Array.isArray(r)) return t.fail('accepted');
    t.deepEqual(r.map((i) => i.at), at);
    t.regex(r.map((i) => `${i.message} ${i.fix}`).join('\n'), msg);
  });
}

test('size, first, intersects, JSON', (t) => {
  const a = parsePortSpec([80, '1000-1009']) as PortSet;
  const b = parsePortSpec(['1005-2000']) as PortSet;
  const c = parsePortSpec([81]) as PortSet;
  t.is(a.size, 11);
  t.is(a.first, 80);
  t.true(a.intersects(b));
  t.false(a.intersects(c));
  t.deepEqual(JSON.parse(JSON.stringify(a)), [80, '1000-1009']);
  t.is(JSON.stringify(parsePortSpec('*')), '"*"');
});
