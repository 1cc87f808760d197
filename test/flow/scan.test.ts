/**
 * scan(cursor, maxEntries, fn) for bulk sync: exactly once without changes; under concurrent
 * inserts/removes, every entry live for the whole scan is visited exactly once (entries never
 * move) and fn only ever sees live entries.
 */
import test from 'ava';
import fc from 'fast-check';
import { FlowTable } from '../../src/flow';

function key(n: number): Uint32Array {
  const b = new Uint8Array(40);
  b[10] = 0xff; b[11] = 0xff; b[12] = 10; b[13] = n >> 16; b[14] = (n >> 8) & 0xff; b[15] = n & 0xff;
  b[26] = 0xff; b[27] = 0xff; b[28] = 10; b[29] = 99; b[31] = 10; b[35] = 80; b[36] = 17; b[37] = 4;
  return new Uint32Array(b.buffer, 0, 10);
}
const T = 10;

function fullScan(ft: FlowTable, max: number, between?: () => void): number[] {
  const seen: number[] = [];
  let c = 0;
  let calls = 0;
  do {
    c = ft.scan(c, max, (id) => {
      seen.push(id);
    });
    calls++;
    if (calls > 1_000_000) throw new Error('scan does not terminate');
    between?.();
  } while (c !== 0);
  return seen;
}

test('empty table: scan returns 0 at once', (t) => {
  const ft = new FlowTable({ capacity: 16 });
  t.is(ft.scan(0, 10, () => t.fail()), 0);
});

test('no changes: every live entry exactly once, chunk bounds respected', (t) => {
  const ft = new FlowTable({ capacity: 4096 });
  const ids: number[] = [];
  for (let i = 0; i < 3000; i++) ids.push(ft.insert(key(i), null, 0, 0, 0, 0, T));
  for (let i = 0; i < 3000; i += 3) ft.remove(ids[i]!); // holes
  const live = ids.filter((id) => ft.isLive(id)).sort((a, b) => a - b);
  for (const max of [1, 7, 100, 10_000]) {
    let c = 0;
    const seen: number[] = [];
    do {
      const before = seen.length;
      c = ft.scan(c, max, (id) => seen.push(id));
      t.true(seen.length - before <= max);
    } while (c !== 0);
    t.deepEqual(seen, live, `max ${max}`);
  }
});

test('concurrent inserts/removes: stable entries exactly once, fn sees only live entries', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 40 }),
      fc.array(fc.tuple(fc.boolean(), fc.nat(10_000)), { minLength: 1, maxLength: 400 }),
      (initial, chunk, changes) => {
        const ft = new FlowTable({ capacity: 512, seed: 1 });
        const stable = new Set<number>();
        const volatile: number[] = [];
        let next = 0;
        for (let i = 0; i < initial; i++) {
          const id = ft.insert(key(next++), null, 0, 0, 0, 0, T);
          if (i % 2 === 0) stable.add(id);
          else volatile.push(id);
        }
        let step = 0;
        const seen = new Map<number, number>();
        let c = 0;
        do {
          c = ft.scan(c, chunk, (id) => {
            if (!ft.isLive(id)) throw new Error(`visited free entry ${id}`);
            seen.set(id, (seen.get(id) ?? 0) + 1);
          });
          // Between chunks: a few inserts and removes of non-stable entries (ids get reused).
          for (let k = 0; k < 3 && step < changes.length; k++, step++) {
            const [ins, r] = changes[step]!;
            if (ins) {
              const id = ft.insert(key(next++), null, 0, 0, 0, 0, T);
              if (id >= 0) volatile.push(id);
            } else if (volatile.length > 0) {
              const [id] = volatile.splice(r % volatile.length, 1);
              ft.remove(id!);
            }
          }
        } while (c !== 0);
        for (const id of stable) if (seen.get(id) !== 1) return false;
        return true;
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

test('sparse table: a call examines a bounded number of ids', (t) => {
  const ft = new FlowTable({ capacity: 4096 });
  const ids: number[] = [];
  for (let i = 0; i < 4096; i++) ids.push(ft.insert(key(i), null, 0, 0, 0, 0, T));
  for (let i = 1; i < 4096; i++) ft.remove(ids[i]!); // only id 0 left, high water 4096
  let calls = 0;
  const seen = fullScan(ft, 4, () => calls++);
  t.deepEqual(seen, [ids[0]]);
  t.is(calls, Math.ceil(4096 / (4 * 8 + 64)));
});
