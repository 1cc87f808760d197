/**
 * Flow table basics: insert/lookup by forward and reply key, IPv4 and IPv6, DSR (no reply key),
 * forced collisions with wrap-around in a tiny table, conflicts, full-table policy, accessors.
 */
import test from 'ava';
import { FlowTable, InsertResult, FlowFlags, FlowState, TcpFlags, ExpireReason, hashKeyWords, MAX_VIPS } from '../../src/flow';

// ---- key builder (layout of docs/contracts.md "Flow key") ----
function addrBytes(a: string): number[] {
  if (!a.includes(':')) return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...a.split('.').map(Number)];
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]);
}
function key(src: string, sport: number, dst: string, dport: number, proto: number): Uint32Array {
  const b = new Uint8Array(40);
  b.set(addrBytes(src), 0);
  b.set(addrBytes(dst), 16);
  b[32] = sport >> 8; b[33] = sport & 0xff; b[34] = dport >> 8; b[35] = dport & 0xff;
  b[36] = proto; b[37] = src.includes(':') ? 6 : 4;
  return new Uint32Array(b.buffer, 0, 10);
}
const T = 1000; // "now" in seconds

test('insert then lookup by forward and reply key (IPv4, NAT)', (t) => {
  const ft = new FlowTable({ capacity: 1024 });
  const fwd = key('10.99.1.2', 40000, '10.99.0.10', 80, 6);
  const rep = key('10.99.3.21', 80, '10.99.1.2', 40000, 6);
  const id = ft.insert(fwd, rep, 1, 2, 3, 4, T);
  t.true(id >= 0);
  t.is(ft.lookup(fwd, T), id << 1);
  t.is(ft.lookup(rep, T), (id << 1) | 1);
  t.is(ft.primary(id), 1); t.is(ft.backup(id), 2); t.is(ft.vip(id), 3); t.is(ft.backend(id), 4);
  t.is(ft.state(id), FlowState.TCP_SYN_SEEN);
  t.is(ft.created(id), T); t.is(ft.lastSeen(id), T); t.is(ft.packets(id), 0);
  t.is(ft.size, 1); t.is(ft.inserts, 1); t.is(ft.hits, 2); t.is(ft.misses, 0);
  t.is(ft.lookup(key('10.99.1.2', 40001, '10.99.0.10', 80, 6), T), -1);
  t.is(ft.lookup(key('10.99.1.2', 40000, '10.99.0.10', 80, 17), T), -1, 'protocol is part of the key');
  t.is(ft.misses, 2);
});

test('IPv6 and IPv4 keys coexist and read back', (t) => {
  const ft = new FlowTable({ capacity: 64 });
  const f6 = key('fd99:1::2', 5000, 'fd99::10', 53, 17);
  const r6 = key('fd99:3::21', 53, 'fd99:1::2', 5000, 17);
  const f4 = key('10.99.1.2', 5000, '10.99.0.10', 53, 17);
  const r4 = key('10.99.3.21', 53, '10.99.1.2', 5000, 17);
  const a = ft.insert(f6, r6, 0, 1, 0, 7, T);
  const b = ft.insert(f4, r4, 1, 0, 0, 8, T);
  t.true(a >= 0 && b >= 0 && a !== b);
  t.is(ft.lookup(f6, T), a << 1);
  t.is(ft.lookup(r6, T), (a << 1) | 1);
  t.is(ft.lookup(f4, T), b << 1);
  t.is(ft.lookup(r4, T), (b << 1) | 1);
  t.is(ft.state(a), FlowState.UDP);
  const out = new Uint32Array(10);
  t.true(ft.copyKey(a, 1, out));
  t.deepEqual(Array.from(out), Array.from(r6));
  t.true(ft.copyKey(b, 0, out));
  t.deepEqual(Array.from(out), Array.from(f4));
});

test('the table copies keys in: the caller may reuse its buffer at once', (t) => {
  const ft = new FlowTable({ capacity: 8 });
  const k = key('10.0.0.1', 1, '10.0.0.2', 2, 17);
  const saved = Uint32Array.from(k);
  const id = ft.insert(k, null, 0, 0, 0, 0, T);
  k.fill(0xdeadbeef);
  t.is(ft.lookup(saved, T), id << 1);
  t.is(ft.lookup(k, T), -1);
});

test('DSR: replyKey null indexes only the forward key', (t) => {
  const ft = new FlowTable({ capacity: 8 });
  const fwd = key('10.99.1.2', 1234, '10.99.0.10', 80, 6);
  const id = ft.insert(fwd, null, 0, 1, 0, 2, T);
  t.is(ft.lookup(fwd, T), id << 1);
  t.false(ft.hasReplyKey(id));
  t.true((ft.flags(id) & FlowFlags.NO_REPLY_KEY) !== 0);
  t.false(ft.copyKey(id, 1, new Uint32Array(10)));
  t.true(ft.remove(id));
  t.is(ft.lookup(fwd, T), -1);
  t.is(ft.size, 0);
});

test('ICMP and other protocols get their initial state', (t) => {
  const ft = new FlowTable({ capacity: 8 });
  t.is(ft.state(ft.insert(key('10.0.0.1', 7, '10.0.0.2', 7, 1), null, 0, 0, 0, 0, T)), FlowState.ICMP);
  t.is(ft.state(ft.insert(key('fd00::1', 7, 'fd00::2', 7, 58), null, 0, 0, 0, 0, T)), FlowState.ICMP);
  t.is(ft.state(ft.insert(key('10.0.0.1', 0, '10.0.0.2', 0, 47), null, 0, 0, 0, 0, T)), FlowState.OTHER);
});

test('duplicate forward key -> EXISTS; reply key clashing with any key -> REPLY_CONFLICT', (t) => {
  const ft = new FlowTable({ capacity: 8 });
  const f = key('10.0.0.1', 1, '10.0.0.9', 80, 6);
  const r = key('10.0.3.21', 80, '10.0.0.1', 1, 6);
  const id = ft.insert(f, r, 0, 0, 0, 0, T);
  t.is(ft.insert(f, key('10.0.3.22', 80, '10.0.0.1', 1, 6), 0, 0, 0, 0, T), InsertResult.EXISTS);
  t.is(ft.lastConflictRef, id << 1);
  t.is(ft.insert(key('10.0.0.2', 1, '10.0.0.9', 80, 6), r, 0, 0, 0, 0, T), InsertResult.REPLY_CONFLICT);
  t.is(ft.lastConflictRef, (id << 1) | 1);
  t.is(ft.insert(key('10.0.0.3', 1, '10.0.0.9', 80, 6), f, 0, 0, 0, 0, T), InsertResult.REPLY_CONFLICT);
  const g = key('10.0.0.4', 1, '10.0.0.4', 1, 6);
  t.is(ft.insert(g, Uint32Array.from(g), 0, 0, 0, 0, T), InsertResult.REPLY_CONFLICT, 'reply == forward');
  t.is(ft.conflicts, 4);
  t.is(ft.size, 1);
});

test('reply-key takeover: a closing/closed TCP flow yields its reply key to a new flow (two VIPs sharing a backend); any other state conflicts', (t) => {
  const expired: Array<[number, number]> = [];
  const ft = new FlowTable({ capacity: 16, onExpire: (id, reason) => expired.push([id, reason]) });
  // Client port 40000 to VIP .10 then to VIP .11, both on backend 10.0.3.21:80: same reply key.
  const r = key('10.0.3.21', 80, '10.0.0.1', 40000, 6);
  const toVip = (v: number): Uint32Array => key('10.0.0.1', 40000, `10.0.0.${v}`, 80, 6);
  for (const [name, flags, yields] of [
    ['syn_seen', 0, false],
    ['established', TcpFlags.ACK, false],
    ['closing (FIN)', TcpFlags.FIN | TcpFlags.ACK, true],
    ['closed (RST)', TcpFlags.RST, true],
  ] as const) {
    const old = ft.insert(toVip(10), r, 0, 0, 0, 0, T);
    t.true(old >= 0, name);
    // A real handshake (SYN, SYN-ACK, the ACK of ISN + 1: confirmed), then the flags in window.
    ft.touch(old, T, TcpFlags.SYN, 0, 100, 0, 1);
    ft.touch(old, T, TcpFlags.SYN | TcpFlags.ACK, 1, 9000, 101, 1);
    if (flags !== 0) ft.touch(old, T, TcpFlags.ACK, 0, 101, 9001, 0);
    if (flags !== 0 && flags !== TcpFlags.ACK) ft.touch(old, T, flags, 0, 101, 9001, 0);
    expired.length = 0;
    const nid = ft.insert(toVip(11), r, 0, 0, 1, 0, T);
    if (yields) {
      t.true(nid >= 0, `${name}: the new flow gets the reply key`);
      t.deepEqual(expired, [[old, ExpireReason.TAKEOVER]], `${name}: the old flow is expired (callback: the replicator sends its DELETE)`);
      t.is(ft.lookup(r, T), (nid << 1) | 1);
      t.is(ft.lookup(toVip(10), T), -1);
      t.true(ft.remove(nid));
    } else {
      t.is(nid, InsertResult.REPLY_CONFLICT, `${name}: conflicts`);
      t.is(ft.lastConflictRef, (old << 1) | 1);
      t.deepEqual(expired, []);
      t.true(ft.remove(old));
    }
  }
  t.is(ft.takeovers, 2);
  // UDP never yields (no close): the same clash is a conflict.
  const ru = key('10.0.3.21', 53, '10.0.0.1', 40000, 17);
  t.true(ft.insert(key('10.0.0.1', 40000, '10.0.0.10', 53, 17), ru, 0, 0, 0, 0, T) >= 0);
  t.is(ft.insert(key('10.0.0.1', 40000, '10.0.0.11', 53, 17), ru, 0, 0, 1, 0, T), InsertResult.REPLY_CONFLICT);
});

test('forced collisions in a tiny table: same home slot, wrap-around, delete keeps the others findable', (t) => {
  const seed = 12345;
  const slotCount = 16;
  // Find 6 DSR keys whose home is the last slot (15), so their cluster wraps to 0..4.
  const keys: Uint32Array[] = [];
  for (let p = 1; keys.length < 6; p++) {
    const k = key('10.1.0.1', p, '10.99.0.10', 80, 17);
    if ((hashKeyWords(k, 0, seed) & (slotCount - 1)) === slotCount - 1) keys.push(k);
  }
  const ft = new FlowTable({ capacity: 7, slotCount, seed });
  const ids = keys.map((k, i) => ft.insert(k, null, i, 0, 0, i, T));
  t.true(ids.every((id) => id >= 0));
  keys.forEach((k, i) => t.is(ft.lookup(k, T), ids[i]! << 1));
  // Delete from the middle and from the head of the cluster, in turn.
  for (const del of [2, 0, 5, 3]) {
    t.true(ft.remove(ids[del]!));
    t.is(ft.lookup(keys[del]!, T), -1);
    keys.forEach((k, i) => {
      if (ft.isLive(ids[i]!)) t.is(ft.lookup(k, T), ids[i]! << 1, `key ${i} after deleting ${del}`);
    });
  }
  t.is(ft.size, 2);
  t.is(ft.deleted, 4);
  t.false(ft.remove(ids[2]!), 'removing a free entry is refused');
});

test('forward and reply keys with the same home slot', (t) => {
  const seed = 7;
  const slotCount = 8;
  const f = key('10.2.0.1', 1, '10.99.0.10', 80, 6);
  const hf = hashKeyWords(f, 0, seed) & 7;
  let r: Uint32Array | undefined;
  for (let p = 1; r === undefined; p++) {
    const c = key('10.3.0.21', 80, '10.2.0.1', p, 6);
    if ((hashKeyWords(c, 0, seed) & 7) === hf) r = c;
  }
  const ft = new FlowTable({ capacity: 3, slotCount, seed });
  const id = ft.insert(f, r, 0, 0, 0, 0, T);
  t.is(ft.lookup(f, T), id << 1);
  t.is(ft.lookup(r, T), (id << 1) | 1);
  ft.remove(id);
  t.is(ft.lookup(f, T), -1);
  t.is(ft.lookup(r, T), -1);
});

test('full table: refuses with FULL and counts refusedFull; an expired entry makes room', (t) => {
  const expiredIds: number[] = [];
  // No early drop here (below): every entry is unconfirmed, so it would evict one.
  const ft = new FlowTable({ capacity: 4, onExpire: (id) => expiredIds.push(id), earlyDrop: false });
  const ks = [1, 2, 3, 4].map((p) => key('10.0.0.1', p, '10.99.0.10', 53, 17));
  for (const k of ks) t.true(ft.insert(k, null, 0, 0, 0, 0, T) >= 0);
  const extra = key('10.0.0.1', 5, '10.99.0.10', 53, 17);
  t.is(ft.insert(extra, null, 0, 0, 0, 0, T + 10), InsertResult.FULL);
  t.is(ft.refusedFull, 1);
  t.is(ft.size, 4);
  // Keep three alive, let the first idle past the UDP timeout (30 s).
  for (const k of ks.slice(1)) ft.touch(ft.lookup(k, T + 20) >> 1, T + 20, 0, 0);
  const id = ft.insert(extra, null, 0, 0, 0, 0, T + 31);
  t.true(id >= 0);
  t.deepEqual(expiredIds, [0]);
  t.is(ft.expired, 1);
  t.is(ft.lookup(ks[0]!, T + 31), -1);
  for (const k of ks.slice(1)) t.true(ft.lookup(k, T + 31) >= 0);
  t.is(ft.lookup(extra, T + 31), id << 1);
  t.is(ft.refusedFull, 1);
});

test('full table: early drop evicts an unconfirmed entry (any protocol, answered or not), never a confirmed one', (t) => {
  // Table-driven: the entry in a full table of capacity 1, and whether a new flow evicts it.
  const fwd = key('10.0.0.1', 1, '10.99.0.10', 80, 6);
  const rep = key('10.99.3.21', 80, '10.0.0.1', 1, 6);
  const ufwd = key('10.0.0.1', 1, '10.99.0.10', 53, 17);
  const urep = key('10.99.3.21', 53, '10.0.0.1', 1, 17);
  const rows: Array<{ name: string; f: Uint32Array; r: Uint32Array; drive: (ft: FlowTable, id: number) => void; evicted: boolean }> = [
    { name: 'TCP SYN only', f: fwd, r: rep, drive: (ft, id) => ft.touch(id, T, TcpFlags.SYN, 0, 100, 0, 1), evicted: true },
    {
      name: 'TCP SYN answered by the backend (a spoofed SYN: its SYN-ACK and retransmits)',
      f: fwd,
      r: rep,
      drive: (ft, id) => {
        ft.touch(id, T, TcpFlags.SYN, 0, 100, 0, 1);
        for (let i = 0; i < 3; i++) ft.touch(id, T, TcpFlags.SYN | TcpFlags.ACK, 1, 9000, 101, 1);
      },
      evicted: true,
    },
    {
      name: 'TCP with a wrong ACK (a blind spoofer)',
      f: fwd,
      r: rep,
      drive: (ft, id) => {
        ft.touch(id, T, TcpFlags.SYN, 0, 100, 0, 1);
        ft.touch(id, T, TcpFlags.SYN | TcpFlags.ACK, 1, 9000, 101, 1);
        ft.touch(id, T, TcpFlags.ACK, 0, 101, 123456, 0);
      },
      evicted: true,
    },
    {
      name: 'TCP confirmed (the ACK of the server ISN)',
      f: fwd,
      r: rep,
      drive: (ft, id) => {
        ft.touch(id, T, TcpFlags.SYN, 0, 100, 0, 1);
        ft.touch(id, T, TcpFlags.SYN | TcpFlags.ACK, 1, 9000, 101, 1);
        ft.touch(id, T, TcpFlags.ACK, 0, 101, 9001, 0);
      },
      evicted: false,
    },
    { name: 'UDP answered (spoofed datagram)', f: ufwd, r: urep, drive: (ft, id) => (ft.touch(id, T, 0, 0), ft.touch(id, T, 0, 1)), evicted: true },
    { name: 'UDP confirmed (a query after the answer)', f: ufwd, r: urep, drive: (ft, id) => (ft.touch(id, T, 0, 0), ft.touch(id, T, 0, 1), ft.touch(id, T, 0, 0)), evicted: false },
    { name: 'learnt from a peer (confirmed by the replicator)', f: fwd, r: rep, drive: (ft, id) => ft.updateFlags(id, FlowFlags.FROM_PEER | FlowFlags.CONFIRMED, 0), evicted: false },
    { name: 'adopted from a peer header, replicated long ago, not confirmed', f: fwd, r: rep, drive: (ft, id) => ft.updateFlags(id, FlowFlags.FROM_PEER | FlowFlags.REPLICATED, 0), evicted: true },
  ];
  for (const row of rows) {
    const reasons: number[] = [];
    const ft = new FlowTable({ capacity: 1, onExpire: (_id, reason) => reasons.push(reason) });
    const id = ft.insert(row.f, row.r, 0, 0, 0, 0, T);
    row.drive(ft, id);
    const n = ft.insert(key('10.0.0.2', 1, '10.99.0.10', 80, 6), key('10.99.3.21', 80, '10.0.0.2', 1, 6), 0, 0, 0, 0, T);
    if (row.evicted) {
      t.true(n >= 0, `${row.name}: the new flow gets in`);
      t.is(ft.earlyDrops, 1, row.name);
      t.deepEqual(reasons, [ExpireReason.EARLY_DROP], row.name);
      t.is(ft.lookup(row.f, T), -1, row.name);
    } else {
      t.is(n, InsertResult.FULL, `${row.name}: kept, the new flow refused`);
      t.is(ft.refusedFull, 1, row.name);
      t.is(ft.lookup(row.f, T), id << 1, row.name);
    }
  }
  const noDrop = new FlowTable({ capacity: 1, earlyDrop: false });
  noDrop.insert(fwd, null, 0, 0, 0, 0, T);
  t.is(noDrop.insert(key('10.0.0.3', 1, '10.99.0.10', 80, 6), null, 0, 0, 0, 0, T), InsertResult.FULL);
});

test('setters: setDecision, setVip, setState, updateFlags, touch counts packets and SEEN_REPLY', (t) => {
  const ft = new FlowTable({ capacity: 4 });
  const id = ft.insert(key('10.0.0.1', 1, '10.0.0.2', 2, 17), key('10.0.0.3', 2, '10.0.0.1', 1, 17), 0, 1, 2, 3, T);
  ft.setDecision(id, 31, 30, 0xfffe);
  ft.setVip(id, MAX_VIPS - 1);
  t.deepEqual([ft.primary(id), ft.backup(id), ft.backend(id), ft.vip(id)], [31, 30, 0xfffe, MAX_VIPS - 1]);
  ft.updateFlags(id, FlowFlags.REPLICATED | FlowFlags.FROM_PEER | FlowFlags.NO_REPLY_KEY, 0);
  t.is(ft.flags(id), FlowFlags.REPLICATED | FlowFlags.FROM_PEER, 'NO_REPLY_KEY is not settable');
  ft.updateFlags(id, 0, FlowFlags.REPLICATED);
  t.is(ft.flags(id), FlowFlags.FROM_PEER);
  ft.touch(id, T + 1, 0, 0);
  ft.touch(id, T + 2, 0, 1);
  t.is(ft.packets(id), 2);
  t.is(ft.lastSeen(id), T + 2);
  t.true((ft.flags(id) & FlowFlags.SEEN_REPLY) !== 0);
  t.is(ft.state(id), FlowState.UDP);
  ft.setState(id, FlowState.FREE);
  t.is(ft.state(id), FlowState.UDP, 'FREE is not settable');
  ft.setState(id, FlowState.TCP_ESTABLISHED);
  t.is(ft.state(id), FlowState.TCP_ESTABLISHED);
});

test('constructor validates capacity and slotCount', (t) => {
  t.throws(() => new FlowTable({ capacity: 0 }), { message: /capacity/ });
  t.throws(() => new FlowTable({ capacity: 16, slotCount: 24 }), { message: /slotCount/ });
  t.throws(() => new FlowTable({ capacity: 16, slotCount: 16 }), { message: /slotCount/ });
  t.throws(() => new FlowTable({ capacity: 16, slotCount: 32 }), { message: /slotCount/ }, 'one slot must stay empty');
  t.notThrows(() => new FlowTable({ capacity: 15, slotCount: 32 }));
  t.throws(() => new FlowTable({ capacity: 4, timeouts: { udp: -1 } }), { message: /udp/ });
  t.is(new FlowTable({ capacity: 1000 }).slotCount, 4096);
});
