/**
 * Idle timeouts per protocol and TCP state, expiry on lookup, incremental sweep with a budget,
 * callback-before-removal contract, configurable timeouts.
 */
import test from 'ava';
import { FlowTable, FlowState, TcpFlags, DEFAULT_FLOW_TIMEOUTS } from '../../src/flow';

function key(n: number, proto: number, v6 = false): Uint32Array {
  const b = new Uint8Array(40);
  if (v6) { b[0] = 0xfd; b[15] = 1; } else { b[10] = 0xff; b[11] = 0xff; b[12] = 10; }
  b[13] = (n >> 16) & 0xff; b[14] = (n >> 8) & 0xff; b[15] = n & 0xff;
  b[26] = 0xff; b[27] = 0xff; b[28] = 10; b[29] = 99; b[31] = 10;
  b[32] = 0x9c; b[33] = 0x40; b[35] = 80; b[36] = proto; b[37] = v6 ? 6 : 4;
  return new Uint32Array(b.buffer, 0, 10);
}
const T = 500;

/** Entry alive at lastSeen + timeout, gone (lookup miss) at lastSeen + timeout + 1. */
function assertTimeout(t: import('ava').ExecutionContext, ft: FlowTable, k: Uint32Array, last: number, timeout: number, what: string): void {
  const id = ft.lookup(k, last + timeout) >> 1;
  t.true(id >= 0, `${what}: alive at +${timeout}`);
  t.is(ft.timeoutOf(id), timeout, what);
  t.false(ft.isExpired(id, last + timeout));
  t.true(ft.isExpired(id, last + timeout + 1));
  t.is(ft.lookup(k, last + timeout + 1), -1, `${what}: gone at +${timeout + 1}`);
}

test('default timeouts per protocol: UDP 30, ICMP 10, other 30, TCP SYN_SEEN 30', (t) => {
  const ft = new FlowTable({ capacity: 64 });
  for (const [proto, to, st] of [[17, 30, FlowState.UDP], [1, 10, FlowState.ICMP], [58, 10, FlowState.ICMP], [47, 30, FlowState.OTHER], [6, 30, FlowState.TCP_SYN_SEEN]] as const) {
    const k = key(proto, proto, proto === 58);
    const id = ft.insert(k, null, 0, 0, 0, 0, T);
    t.is(ft.state(id), st);
    assertTimeout(t, ft, k, T, to, `proto ${proto}`);
  }
  t.is(ft.expired, 5);
  t.is(ft.size, 0);
});

/** One whole TCP segment of entry `id` (direction, flags, sequence numbers, segment length). */
function seg(ft: FlowTable, id: number, now: number, flags: number, dir: number, seq: number, ack = 0, len = 0): number {
  return ft.touch(id, now, flags, dir, seq, ack, len + (flags & TcpFlags.SYN ? 1 : 0) + (flags & TcpFlags.FIN ? 1 : 0));
}

test('TCP state timeouts: SYN -> SYN_SEEN (30), confirmed -> ESTABLISHED (300), FIN -> CLOSING (10), RST -> CLOSED (5)', (t) => {
  // Entries without a reply key (DSR): the client's first ACK confirms (test/flow/confirmation.test.ts has the rules).
  const ft = new FlowTable({ capacity: 64 });
  const k1 = key(1, 6);
  let id = ft.insert(k1, null, 0, 0, 0, 0, T);
  seg(ft, id, T, TcpFlags.SYN, 0, 100);
  t.is(ft.state(id), FlowState.TCP_SYN_SEEN);
  seg(ft, id, T, TcpFlags.SYN | TcpFlags.ACK, 1, 9000, 101);
  t.is(ft.state(id), FlowState.TCP_SYN_SEEN, 'SYN+ACK keeps SYN_SEEN');
  seg(ft, id, T + 1, TcpFlags.ACK, 0, 101, 9001);
  t.is(ft.state(id), FlowState.TCP_ESTABLISHED);
  seg(ft, id, T + 2, TcpFlags.SYN, 0, 101);
  t.is(ft.state(id), FlowState.TCP_ESTABLISHED, 'stray SYN ignored when established');
  assertTimeout(t, ft, k1, T + 2, 300, 'established');

  const k2 = key(2, 6);
  id = ft.insert(k2, null, 0, 0, 0, 0, T);
  seg(ft, id, T, TcpFlags.ACK | TcpFlags.PSH, 0, 100, 1, 10);
  seg(ft, id, T + 5, TcpFlags.FIN | TcpFlags.ACK, 1, 5000, 110);
  t.is(ft.state(id), FlowState.TCP_CLOSING, 'FIN shortens');
  seg(ft, id, T + 6, TcpFlags.ACK, 0, 110, 5001);
  t.is(ft.state(id), FlowState.TCP_CLOSING, 'the last ACK does not revive the flow');
  assertTimeout(t, ft, k2, T + 6, 10, 'closing');

  const k3 = key(3, 6);
  id = ft.insert(k3, null, 0, 0, 0, 0, T);
  seg(ft, id, T, TcpFlags.ACK, 0, 100, 1);
  seg(ft, id, T + 7, TcpFlags.RST, 1, 1);
  t.is(ft.state(id), FlowState.TCP_CLOSED);
  seg(ft, id, T + 7, TcpFlags.FIN, 0, 100);
  t.is(ft.state(id), FlowState.TCP_CLOSED, 'FIN after RST stays CLOSED');
  assertTimeout(t, ft, k3, T + 7, 5, 'closed');

  const k4 = key(4, 6);
  id = ft.insert(k4, null, 0, 0, 0, 0, T);
  seg(ft, id, T, TcpFlags.ACK, 0, 100, 1);
  seg(ft, id, T, TcpFlags.FIN | TcpFlags.ACK, 0, 100, 1);
  t.is(ft.state(id), FlowState.TCP_CLOSING);
  seg(ft, id, T + 1, TcpFlags.SYN, 0, 77777);
  t.is(ft.state(id), FlowState.TCP_SYN_SEEN, 'a new SYN reopens a closing flow (port reuse)');
  seg(ft, id, T + 1, TcpFlags.RST | TcpFlags.ACK, 1, 0, 77778);
  seg(ft, id, T + 2, TcpFlags.SYN, 0, 88888);
  t.is(ft.state(id), FlowState.TCP_SYN_SEEN, 'and a closed one');
});

test('a TCP packet without a whole segment (fragment, ICMP error: segLen -1) changes no state', (t) => {
  const ft = new FlowTable({ capacity: 4 });
  const id = ft.insert(key(1, 6), null, 0, 0, 0, 0, T);
  ft.touch(id, T, TcpFlags.ACK, 0);
  ft.touch(id, T, TcpFlags.RST, 0);
  t.is(ft.state(id), FlowState.TCP_SYN_SEEN);
  t.is(ft.packets(id), 2);
});

test('touch ignores TCP flags for UDP entries', (t) => {
  const ft = new FlowTable({ capacity: 4 });
  const id = ft.insert(key(1, 17), null, 0, 0, 0, 0, T);
  ft.touch(id, T, TcpFlags.RST, 0);
  t.is(ft.state(id), FlowState.UDP);
});

test('configurable timeouts', (t) => {
  const ft = new FlowTable({ capacity: 8, timeouts: { udp: 3, tcpEstablished: 7200 } });
  const ku = key(1, 17);
  ft.insert(ku, null, 0, 0, 0, 0, T);
  assertTimeout(t, ft, ku, T, 3, 'udp 3');
  const kt = key(2, 6);
  const id = ft.insert(kt, null, 0, 0, 0, 0, T);
  ft.touch(id, T, TcpFlags.ACK, 0, 1, 1, 0);
  assertTimeout(t, ft, kt, T, 7200, 'established 7200');
  const k = key(3, 1);
  ft.insert(k, null, 0, 0, 0, 0, T);
  assertTimeout(t, ft, k, T, DEFAULT_FLOW_TIMEOUTS.icmp, 'icmp default');
});

test('lookup of an expired entry: miss, removal, callback before removal with keys readable', (t) => {
  const seen: Array<[number, boolean, number]> = [];
  const out = new Uint32Array(10);
  const ft: FlowTable = new FlowTable({
    capacity: 8,
    onExpire: (id) => {
      const ok = ft.copyKey(id, 1, out);
      seen.push([id, ok, out[9]!]);
    },
  });
  const f = key(1, 17);
  const r = key(2, 17);
  const id = ft.insert(f, r, 0, 0, 0, 0, T);
  t.is(ft.lookup(r, T + 31), -1);
  t.deepEqual(seen, [[id, true, r[9]!]]);
  t.is(ft.lookup(f, T + 31), -1, 'both keys unlinked');
  t.is(ft.expired, 1);
  t.is(ft.misses, 2);
  t.is(ft.size, 0);
});

test('expire() is incremental: bounded work per call, the cursor covers every entry', (t) => {
  const ft = new FlowTable({ capacity: 256 });
  for (let i = 0; i < 200; i++) {
    const id = ft.insert(key(i, i % 2 === 0 ? 17 : 6), null, 0, 0, 0, 0, T);
    if (i % 2 === 1) ft.touch(id, T, TcpFlags.ACK, 0, 1, 1, 0); // established (no reply key: confirmed by the ACK): 300 s
  }
  const got: number[] = [];
  let calls = 0;
  while (got.length < 100 && calls < 100) {
    const n = ft.expire(T + 31, 16, (id) => got.push(id));
    t.true(n <= 16);
    calls++;
  }
  t.is(got.length, 100, 'every UDP entry expired');
  t.true(got.every((id) => ft.state(id) === FlowState.FREE));
  t.is(calls, Math.ceil(200 / 16), 'each call examined 16 ids');
  t.is(ft.size, 100);
  t.is(ft.expired, 100);
  t.is(ft.expire(T + 31, 1000), 0, 'budget above the id range examines each id once');
  t.is(ft.expire(T + 302, 1000), 100);
  t.is(ft.size, 0);
  t.is(ft.expire(T + 302, 1000), 0);
});

test('setState keeps lastSeen and moves the deadline; setLastSeen refreshes without counting a packet', (t) => {
  const ft = new FlowTable({ capacity: 4 });
  const k = key(9, 6);
  const id = ft.insert(k, null, 0, 0, 0, 0, T);
  t.is(ft.deadline(id), T + 30);
  ft.setState(id, FlowState.TCP_ESTABLISHED); // e.g. a record learnt from a peer
  t.is(ft.lastSeen(id), T);
  t.is(ft.deadline(id), T + 300);
  ft.setLastSeen(id, T + 100);
  t.is(ft.lastSeen(id), T + 100);
  t.is(ft.packets(id), 0);
  t.is(ft.lookup(k, T + 400), id << 1);
  t.is(ft.lookup(k, T + 401), -1);
});
