/**
 * Model-based test: random insert / remove / lookup / expire sequences on a tiny, crowded table
 * (many collisions, clusters wrapping around the slot array) checked against a JS Map model.
 * After every step every key the model holds must be findable with the right ref and fields,
 * and keys the model does not hold must miss.
 */
import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { FlowTable, InsertResult } from '../../src/flow';

const KEYSPACE = 24;
/** Key n of a small family (IPv4 for even n, IPv6 for odd n), UDP. */
function key(n: number): Uint32Array {
  const b = new Uint8Array(40);
  if (n % 2 === 0) { b[10] = 0xff; b[11] = 0xff; b[12] = 10; b[15] = n; } else { b[0] = 0xfd; b[15] = n; }
  b[31] = 10; b[33] = n; b[35] = 53; b[36] = 17; b[37] = n % 2 === 0 ? 4 : 6;
  return new Uint32Array(b.buffer, 0, 10);
}
const KEYS = Array.from({ length: KEYSPACE }, (_, n) => key(n));

type Op =
  | { op: 'insert'; a: number; b: number | null; backend: number }
  | { op: 'removeKey'; a: number }
  | { op: 'lookup'; a: number }
  | { op: 'advance'; dt: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('insert' as const), a: fc.nat(KEYSPACE - 1), b: fc.option(fc.nat(KEYSPACE - 1), { nil: null }), backend: fc.nat(0xffff) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('removeKey' as const), a: fc.nat(KEYSPACE - 1) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('lookup' as const), a: fc.nat(KEYSPACE - 1) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('advance' as const), dt: fc.constantFrom(1, 5, 31) }) },
);

interface ModelEntry { fwd: number; reply: number | null; backend: number; lastSeen: number }

test('flow table matches a Map model over random operation sequences (tiny table, collisions)', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(3, 5, 7), fc.array(opArb, { maxLength: 200 }), (seed, capacity, ops) => {
      // No early drop: the model covers indexing, expiry and refusal (early drop: table.test.ts).
      const ft = new FlowTable({ capacity, slotCount: 16, seed, timeouts: { udp: 30 }, earlyDrop: false });
      const index = new Map<number, number>(); // key number -> ref
      const entries = new Map<number, ModelEntry>(); // entry id -> entry
      let now = 100;
      const forget = (id: number): void => {
        const e = entries.get(id)!;
        index.delete(e.fwd);
        if (e.reply !== null) index.delete(e.reply);
        entries.delete(id);
      };
      const isExpired = (e: ModelEntry): boolean => now - e.lastSeen > 30;
      for (const o of ops) {
        switch (o.op) {
          case 'insert': {
            if (o.b === o.a) {
              assert.equal(ft.insert(KEYS[o.a]!, KEYS[o.b]!, 1, 2, 3, o.backend, now), InsertResult.REPLY_CONFLICT);
              break;
            }
            // The table probes the forward key first (an expired holder is removed, a live one
            // means EXISTS at once), then the reply key likewise.
            const r = ft.insert(KEYS[o.a]!, o.b === null ? null : KEYS[o.b]!, 1, 2, 3, o.backend, now);
            const fref = index.get(o.a);
            if (fref !== undefined) {
              if (!isExpired(entries.get(fref >> 1)!)) { assert.equal(r, InsertResult.EXISTS); assert.equal(ft.lastConflictRef, fref); break; }
              forget(fref >> 1);
            }
            const rref = o.b === null ? undefined : index.get(o.b);
            if (rref !== undefined) {
              if (!isExpired(entries.get(rref >> 1)!)) { assert.equal(r, InsertResult.REPLY_CONFLICT); assert.equal(ft.lastConflictRef, rref); break; }
              forget(rref >> 1);
            }
            if (entries.size === capacity) {
              // Full: the table evicts an expired entry if there is one, else refuses.
              const victims = [...entries].filter(([, e]) => isExpired(e));
              if (victims.length === 0) { assert.equal(r, InsertResult.FULL); break; }
              assert.ok(r >= 0);
              assert.ok(victims.some(([id]) => !ft.isLive(id) || id === r), 'an expired entry was evicted');
              for (const [id] of victims) if (!ft.isLive(id) || id === r) forget(id);
            }
            assert.ok(r >= 0, `insert ok, got ${r}`);
            assert.ok(!entries.has(r), 'fresh id');
            entries.set(r, { fwd: o.a, reply: o.b, backend: o.backend, lastSeen: now });
            index.set(o.a, r << 1);
            if (o.b !== null) index.set(o.b, (r << 1) | 1);
            break;
          }
          case 'removeKey': {
            const ref = index.get(o.a);
            if (ref === undefined) break;
            assert.ok(ft.remove(ref >> 1));
            forget(ref >> 1);
            break;
          }
          case 'lookup': {
            const ref = index.get(o.a);
            const got = ft.lookup(KEYS[o.a]!, now);
            if (ref === undefined) assert.equal(got, -1);
            else if (isExpired(entries.get(ref >> 1)!)) { assert.equal(got, -1); forget(ref >> 1); }
            else {
              assert.equal(got, ref);
              ft.touch(ref >> 1, now, 0, ref & 1);
              entries.get(ref >> 1)!.lastSeen = now;
            }
            break;
          }
          case 'advance':
            now += o.dt;
            break;
        }
        // Invariants: size, every model key findable with its fields, non-model keys miss.
        // (Probe at lastSeen time so nothing expires during the check.)
        assert.equal(ft.size, entries.size);
        for (let k = 0; k < KEYSPACE; k++) {
          const ref = index.get(k);
          if (ref === undefined) { assert.equal(ft.lookup(KEYS[k]!, now), -1); continue; }
          const e = entries.get(ref >> 1)!;
          assert.equal(ft.lookup(KEYS[k]!, e.lastSeen), ref);
          assert.equal(ft.backend(ref >> 1), e.backend);
        }
      }
    }),
    { numRuns: Number(process.env.FLOW_MODEL_RUNS ?? 300) },
  );
  t.pass();
});
