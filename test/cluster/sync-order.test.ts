/**
 * The cluster-wide sync order and the responder's snapshot (src/cluster/sync-order.ts): the
 * row function is pinned (every balancer and version must agree, or a resume on another peer
 * would skip flows), spreads keys evenly, and a snapshot lists every syncable flow exactly
 * once in row order, built in bounded steps.
 */
import test from 'ava';
import { FlowTable } from '../../src/flow';
import { syncRow, SyncSnapshotBuilder, SYNC_ROWS } from '../../src/cluster/sync-order';

function v4Key(src: number, sport: number, out = new Uint8Array(new ArrayBuffer(40))): Uint8Array {
  out.fill(0);
  out[10] = out[11] = out[26] = out[27] = 0xff;
  out.set([10, 1, (src >>> 8) & 0xff, src & 0xff], 12);
  out.set([10, 99, 0, 10], 28);
  out[32] = sport >>> 8;
  out[33] = sport & 0xff;
  out[35] = 80;
  out[36] = 6;
  out[37] = 4;
  return out;
}

test('syncRow is pinned: these values are a wire contract (docs/contracts.md "Sync order")', (t) => {
  const zero = new Uint8Array(40);
  t.is(syncRow(zero), 19161);
  const k = new Uint8Array(40);
  k[10] = k[11] = k[26] = k[27] = 0xff;
  k.set([10, 99, 1, 2], 12);
  k.set([10, 99, 0, 10], 28);
  k[32] = 0x04;
  k[33] = 0xd2; // 1234
  k[35] = 80;
  k[36] = 6;
  k[37] = 4;
  t.is(syncRow(k), 50510); // tcp 10.99.1.2:1234 -> 10.99.0.10:80
  const k6 = new Uint8Array(40);
  k6.set([0xfd, 0x99, 0, 1], 0);
  k6[15] = 2;
  k6.set([0xfd, 0x99], 16);
  k6[31] = 0x10;
  k6[33] = 53;
  k6[35] = 53;
  k6[36] = 17;
  k6[37] = 6;
  t.is(syncRow(k6), 58040); // udp [fd99:1::2]:53 -> [fd99::10]:53
  // An offset reads the same key.
  const big = new Uint8Array(48);
  big.set(k, 8);
  t.is(syncRow(big, 8), 50510);
});

test('syncRow spreads 1M sequential client ports/addresses evenly over the 65,536 rows', (t) => {
  const counts = new Uint32Array(SYNC_ROWS);
  const k = new Uint8Array(new ArrayBuffer(40));
  for (let i = 0; i < 1_000_000; i++) counts[syncRow(v4Key(i >>> 16, i & 0xffff, k))]!++;
  let max = 0;
  let empty = 0;
  for (const c of counts) {
    if (c > max) max = c;
    if (c === 0) empty++;
  }
  // Poisson(15.3): P(> 45) is ~1e-9 per row; about e^-15 of rows empty.
  t.true(max <= 45, `largest row ${max}`);
  t.true(empty <= 5, `${empty} empty rows`);
});

/** A table with `n` flows. */
function tableWith(n: number): { table: FlowTable; keys: Uint8Array[] } {
  const table = new FlowTable({ capacity: 1 << 15, seed: 7 });
  const keys: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const k = v4Key(i >>> 10, 1024 + (i & 1023));
    const id = table.insert(new Uint32Array(k.buffer), null, 0, 1, 0, 0, 1);
    if (id < 0) throw new Error(`insert ${i}: ${id}`);
    keys.push(k);
  }
  return { table, keys };
}

test('a snapshot holds every live flow once, by increasing row, with rowStart bounds', (t) => {
  const { table } = tableWith(20_000);
  for (let id = 0; id < 20_000; id += 7) table.remove(id); // holes in the id space
  const b = new SyncSnapshotBuilder(table);
  let steps = 0;
  while (!b.step(0.05)) steps++;
  const s = b.result!;
  const want = new Set<number>();
  table.scan(0, 1 << 20, (id) => want.add(id));
  t.is(s.count, want.size);
  t.is(new Set(s.ids).size, s.count, 'no id twice');
  t.true([...s.ids].every((id) => want.has(id)));
  t.true(steps > 3, `built in ${steps + 1} steps`);
  const w = new Uint32Array(10);
  let prev = -1;
  for (let i = 0; i < s.count; i++) {
    table.copyKey(s.ids[i]!, 0, w, 0);
    const r = syncRow(new Uint8Array(w.buffer));
    t.true(r >= prev, 'rows increase');
    if (r < prev) break;
    t.true(s.rowStart[r]! <= i && i < s.rowStart[r + 1]!, `id at ${i} within its row's bounds`);
    prev = r;
  }
  t.is(s.rowStart[SYNC_ROWS], s.count);
  t.is(s.start(0), 0);
  t.is(s.start(SYNC_ROWS), s.count);
  t.is(s.start(SYNC_ROWS + 5), s.count);
});

test('a snapshot of an empty table is empty; ids arrays grow past the first estimate', (t) => {
  const empty = new FlowTable({ capacity: 64, seed: 1 });
  const b = new SyncSnapshotBuilder(empty);
  let steps = 1;
  while (!b.step(1)) steps++;
  t.true(steps <= 3, `${steps} steps for an empty table`);
  t.is(b.result!.count, 0);
  // The builder sizes its arrays from table.size at construction: flows added during the
  // build (behind the cursor or not) must not overflow them.
  const { table } = tableWith(100);
  const g = new SyncSnapshotBuilder(table);
  for (let i = 100; i < 3000; i++) table.insert(new Uint32Array(v4Key(200 + (i >>> 10), i & 1023).buffer), null, 0, 1, 0, 0, 1);
  while (!g.step(1));
  t.is(g.result!.count, 3000);
});
