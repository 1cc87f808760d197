/**
 * FlowTable "Index remap" (config reload): beginRemap switches every record to the new VIP and
 * backend numbering at once; a record is translated at its first access or by remapStep; records
 * of removed backends read NO_BACKEND, records of removed VIPs are removed by the walk; records
 * inserted during the remap carry the new numbering; a second remap waits for the first.
 */
import test from 'ava';
import { FlowTable, VIP_REMOVED } from '../../src/flow';
import { isTunlbError, ErrorCodes } from '../../src/errors';

const T = 100;
const NO_BACKEND = 0xffff;

function key(i: number, proto = 17): Uint32Array {
  const b = new Uint8Array(40);
  b[10] = 0xff; b[11] = 0xff; b[12] = 10; b[13] = 1; b[14] = (i >> 8) & 0xff; b[15] = i & 0xff;
  b[26] = 0xff; b[27] = 0xff; b[28] = 10; b[29] = 99; b[31] = 10;
  b[32] = 0x10; b[33] = 0; b[35] = 53; b[36] = proto; b[37] = 4;
  return new Uint32Array(b.buffer, 0, 10);
}

// Old numbering: VIP 0 "a" with backends [x, y, z], VIP 1 "b" with [p].
// New: VIP "b" moves to 0 (backend p stays 0); VIP "a" moves to 1 with backends [z, x] (y removed).
// A third old VIP 2 "c" is removed.
const vipMap = Int32Array.from([1, 0, -1]);
const backendBase = Int32Array.from([0, 3, 4, 5]);
const backendMap = Int32Array.from([1, -1, 0, 0, -1]); // a: x→1, y→removed, z→0; b: p→0; c: q→removed

/** A table with `n` flows per (vip, backend) of the old numbering: [vip, backend, id][]. */
function filled(n = 10): { t: FlowTable; flows: [number, number, number][] } {
  const t = new FlowTable({ capacity: 256 });
  const flows: [number, number, number][] = [];
  let i = 0;
  for (const [v, nb] of [[0, 3], [1, 1], [2, 1]] as const) {
    for (let b = 0; b < nb; b++) {
      for (let k = 0; k < n; k++) {
        const id = t.insert(key(i++), null, 0, 1, v, b, T);
        flows.push([v, b, id]);
      }
    }
  }
  return { t, flows };
}

const NEW: Record<string, [number, number]> = {
  '0,0': [1, 1],
  '0,1': [1, NO_BACKEND],
  '0,2': [1, 0],
  '1,0': [0, 0],
  '2,0': [VIP_REMOVED, NO_BACKEND],
};

test('beginRemap: every record reads in the new numbering at once; remapStep finishes and removes removed VIPs', (t) => {
  const { t: ft, flows } = filled();
  ft.beginRemap(vipMap, backendBase, backendMap);
  t.true(ft.remapping);
  // Half the records are read (as packets would), before any walk.
  for (const [v, b, id] of flows.slice(0, flows.length / 2)) {
    t.deepEqual([ft.vip(id), ft.backend(id)], NEW[`${v},${b}`], `record of (${v}, ${b}) read before the walk`);
  }
  t.is(ft.remapCounts.translated, flows.length / 2);
  let steps = 0;
  while (!ft.remapStep(7)) steps++;
  t.true(steps > 3, 'the walk took several steps');
  t.false(ft.remapping);
  for (const [v, b, id] of flows) {
    if (v === 2) {
      t.false(ft.isLive(id), 'removed VIP: record removed');
      continue;
    }
    t.deepEqual([ft.vip(id), ft.backend(id)], NEW[`${v},${b}`]);
  }
  t.deepEqual(ft.remapCounts, { translated: flows.length, remapped: flows.length, cut: 10, removed: 10 });
  t.is(ft.size, flows.length - 10);
});

test('setters during a remap translate first: setDecision keeps the new VIP index, setVip the new backend', (t) => {
  const { t: ft, flows } = filled(1);
  ft.beginRemap(vipMap, backendBase, backendMap);
  const [, , idX] = flows[0]!; // (0, 0) → (1, 1)
  const [, , idZ] = flows[2]!; // (0, 2) → (1, 0)
  ft.setDecision(idX, 3, 4, 0);
  t.deepEqual([ft.primary(idX), ft.backup(idX), ft.vip(idX), ft.backend(idX)], [3, 4, 1, 0]);
  ft.setVip(idZ, 0);
  t.deepEqual([ft.vip(idZ), ft.backend(idZ)], [0, 0]);
  while (!ft.remapStep(64));
  t.deepEqual([ft.vip(idX), ft.backend(idX)], [1, 0], 'the walk does not translate twice');
  t.deepEqual([ft.vip(idZ), ft.backend(idZ)], [0, 0]);
});

test('records inserted during a remap are in the new numbering; a second remap waits for the first', (t) => {
  const { t: ft } = filled(2);
  ft.beginRemap(vipMap, backendBase, backendMap);
  const id = ft.insert(key(1000), null, 0, 1, 1, 1, T); // decided on the new table: VIP 1 ("a"), backend 1 (x)
  t.deepEqual([ft.vip(id), ft.backend(id)], [1, 1], 'not translated again');
  const e = t.throws(() => ft.beginRemap(vipMap, backendBase, backendMap));
  t.true(isTunlbError(e, ErrorCodes.USAGE));
  while (!ft.remapStep(5));
  t.deepEqual([ft.vip(id), ft.backend(id)], [1, 1]);
  // The next remap (back to the old numbering of VIP "a" for this flow) starts now.
  ft.beginRemap(Int32Array.from([0, 0]), Int32Array.from([0, 1, 3]), Int32Array.from([0, 2, 1]));
  t.deepEqual([ft.vip(id), ft.backend(id)], [0, 1], 'VIP 1 → 0, backend 1 → 1');
  while (!ft.remapStep(5));
  t.false(ft.remapping);
});

test('remapStep without a remap is done at once; beginRemap checks its maps', (t) => {
  const ft = new FlowTable({ capacity: 4 });
  t.true(ft.remapStep(10));
  const e = t.throws(() => ft.beginRemap(Int32Array.from([0]), Int32Array.from([0]), new Int32Array(0)));
  t.true(isTunlbError(e, ErrorCodes.USAGE));
  t.false(ft.remapping);
});
