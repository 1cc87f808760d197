/**
 * Confirmation and the TCP sequence checks of FlowTable.touch (docs/flow-records.md
 * "Confirmation and replication", "RST and FIN"), table-driven: each row is a sequence of
 * packets of one flow and what the entry must show after it.
 */
import test from 'ava';
import { FlowFlags, FlowState, FlowTable, TcpFlags, TouchResult } from '../../src/flow';

const { SYN, ACK, FIN, RST, PSH } = TcpFlags;
const T = 100;
const C_ISN = 0xfffffff0; // the client's ISN: its sequence numbers wrap through 0
const S_ISN = 0x12345678;

function key(proto: number, port = 40000, v = 0): Uint32Array {
  const b = new Uint8Array(40);
  b[10] = b[11] = 0xff;
  b.set([10, 99, 1, 2 + v], 12);
  b[26] = b[27] = 0xff;
  b.set([10, 99, 0, 10], 28);
  b[32] = port >> 8;
  b[33] = port & 0xff;
  b[35] = 80;
  b[36] = proto;
  b[37] = 4;
  return new Uint32Array(b.buffer, 0, 10);
}
function replyKey(proto: number, port = 40000): Uint32Array {
  const b = new Uint8Array(40);
  b[10] = b[11] = 0xff;
  b.set([10, 99, 3, 21], 12);
  b[26] = b[27] = 0xff;
  b.set([10, 99, 1, 2], 28);
  b[33] = 80;
  b[34] = port >> 8;
  b[35] = port & 0xff;
  b[36] = proto;
  b[37] = 4;
  return new Uint32Array(b.buffer, 0, 10);
}

/** A packet: direction (c = client → VIP, s = server reply, e = an ICMP error about the flow), TCP flags, seq, ack, payload bytes. */
type Pkt = [dir: 'c' | 's' | 'e', flags: number, seq?: number, ack?: number, len?: number];

/** Touches entry `id` with one packet (TCP: a whole segment); returns the TouchResult. */
function send(ft: FlowTable, id: number, p: Pkt, tcp: boolean): number {
  const [d, flags, seq = 0, ack = 0, len = 0] = p;
  if (d === 'e') return ft.touch(id, T, 0, 2);
  if (!tcp) return ft.touch(id, T, 0, d === 's' ? 1 : 0);
  const segLen = len + (flags & SYN ? 1 : 0) + (flags & FIN ? 1 : 0);
  return ft.touch(id, T, flags, d === 's' ? 1 : 0, seq >>> 0, ack >>> 0, segLen);
}

/** The handshake of a NAT TCP flow: SYN, SYN-ACK, the client's ACK of ISN + 1. */
const HANDSHAKE: Pkt[] = [
  ['c', SYN, C_ISN],
  ['s', SYN | ACK, S_ISN, C_ISN + 1],
  ['c', ACK, C_ISN + 1, S_ISN + 1],
];
const NEXT = (C_ISN + 1) >>> 0; // the client's next sequence number after the handshake

interface Row {
  name: string;
  proto?: number;
  dsr?: boolean;
  packets: Pkt[];
  confirmed: boolean;
  state: number;
  /** TouchResult of the last packet. */
  last?: number;
  outOfWindow?: number;
  /** CONFIRMED_NOW results over the row (default 1 when confirmed, else 0): once per connection. */
  confirmations?: number;
}

const rows: Row[] = [
  // ---- TCP through NAT: confirmation
  { name: 'SYN only', packets: [['c', SYN, C_ISN]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'SYN and the SYN-ACK (and its retransmits): a spoofed SYN gets this far', packets: [...HANDSHAKE.slice(0, 2), HANDSHAKE[1]!, HANDSHAKE[1]!], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'the ACK of the server ISN + 1 confirms', packets: HANDSHAKE, confirmed: true, state: FlowState.TCP_ESTABLISHED, last: TouchResult.CONFIRMED_NOW },
  { name: 'then data: confirmed, nothing new', packets: [...HANDSHAKE, ['c', ACK | PSH, NEXT, S_ISN + 1, 100]], confirmed: true, state: FlowState.TCP_ESTABLISHED, last: TouchResult.CONFIRMED },
  { name: 'an ACK of ISN + 2 (one past): not confirmed', packets: [...HANDSHAKE.slice(0, 2), ['c', ACK, C_ISN + 1, S_ISN + 2]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'a blind spoofer\'s ACK (random ack number)', packets: [...HANDSHAKE.slice(0, 2), ['c', ACK, C_ISN + 1, 0x0badf00d]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'an ACK before any reply (no server ISN known)', packets: [['c', SYN, C_ISN], ['c', ACK, C_ISN + 1, S_ISN + 1]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'an ACK with SYN or RST does not confirm', packets: [...HANDSHAKE.slice(0, 2), ['c', SYN | ACK, C_ISN, S_ISN + 1], ['c', RST | ACK, C_ISN + 1, S_ISN + 1]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'the confirming ACK with FIN: CLOSING', packets: [...HANDSHAKE.slice(0, 2), ['c', ACK | FIN, C_ISN + 1, S_ISN + 1]], confirmed: true, state: FlowState.TCP_CLOSING },
  {
    name: 'picked up mid-stream: the client acks server data it received (up to 64 KiB behind)',
    packets: [['c', ACK, 5000, 700], ['s', ACK | PSH, 700, 5000, 1400], ['c', ACK, 5000, 700 + 1400 - 60000]],
    confirmed: true,
    state: FlowState.TCP_ESTABLISHED,
  },
  { name: 'picked up mid-stream: an ack 70 KB behind is no evidence', packets: [['c', ACK, 5000, 700], ['s', ACK | PSH, 700, 5000, 1400], ['c', ACK, 5000, 700 + 1400 - 70000]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'a server RST before the ACK: CLOSED, and the ACK does not confirm it', packets: [...HANDSHAKE.slice(0, 2), ['s', RST, S_ISN + 1], ['c', ACK, C_ISN + 1, S_ISN + 1]], confirmed: false, state: FlowState.TCP_CLOSED },
  { name: 'unconfirmed: a client RST or FIN is unverifiable and ignored', packets: [['c', SYN, C_ISN], ['c', RST, C_ISN + 1], ['c', FIN | ACK, C_ISN + 1, 5]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  // ---- TCP through NAT: RST and FIN of a confirmed flow
  { name: 'client RST at the next sequence number: CLOSED', packets: [...HANDSHAKE, ['c', RST, NEXT]], confirmed: true, state: FlowState.TCP_CLOSED },
  { name: 'client RST 64 KiB behind (a reset answering a server segment): CLOSED', packets: [...HANDSHAKE, ['c', ACK | PSH, NEXT, S_ISN + 1, 65536], ['c', RST, NEXT]], confirmed: true, state: FlowState.TCP_CLOSED },
  { name: 'client RST 64 KiB + 1 behind: ignored', packets: [...HANDSHAKE, ['c', ACK | PSH, NEXT, S_ISN + 1, 65537], ['c', RST, NEXT]], confirmed: true, state: FlowState.TCP_ESTABLISHED, last: TouchResult.OUT_OF_WINDOW, outOfWindow: 1 },
  { name: 'client RST 128 KiB ahead (segments this balancer missed): CLOSED', packets: [...HANDSHAKE, ['c', RST, NEXT + 131072]], confirmed: true, state: FlowState.TCP_CLOSED },
  { name: 'client RST 128 KiB + 1 ahead: ignored', packets: [...HANDSHAKE, ['c', RST, NEXT + 131073]], confirmed: true, state: FlowState.TCP_ESTABLISHED, last: TouchResult.OUT_OF_WINDOW, outOfWindow: 1 },
  { name: 'a spoofed RST half the sequence space away: ignored', packets: [...HANDSHAKE, ['c', RST, NEXT + 0x80000000]], confirmed: true, state: FlowState.TCP_ESTABLISHED, outOfWindow: 1 },
  { name: 'a spoofed FIN out of window: ignored', packets: [...HANDSHAKE, ['c', FIN | ACK, NEXT + 0x40000000, S_ISN + 1]], confirmed: true, state: FlowState.TCP_ESTABLISHED, outOfWindow: 1 },
  { name: 'client FIN after 1 MB of data in order: CLOSING', packets: [...HANDSHAKE, ...Array.from({ length: 16 }, (_, i): Pkt => ['c', ACK | PSH, NEXT + i * 65536, S_ISN + 1, 65536]), ['c', FIN | ACK, NEXT + 16 * 65536, S_ISN + 1]], confirmed: true, state: FlowState.TCP_CLOSING },
  {
    name: 'a spoofed data segment out of window does not move the reference: the RST it aims at is ignored',
    packets: [...HANDSHAKE, ['c', ACK | PSH, NEXT + 0x40000000, S_ISN + 1, 100], ['c', RST, NEXT + 0x40000000 + 100]],
    confirmed: true,
    state: FlowState.TCP_ESTABLISHED,
    outOfWindow: 1,
  },
  { name: 'a retransmission far behind moves nothing; the RST at the next sequence number still closes', packets: [...HANDSHAKE, ['c', ACK | PSH, NEXT, S_ISN + 1, 300000], ['c', ACK | PSH, NEXT, S_ISN + 1, 1000], ['c', RST, NEXT + 300000]], confirmed: true, state: FlowState.TCP_CLOSED },
  { name: 'a server RST (reply direction) is trusted', packets: [...HANDSHAKE, ['s', RST, 0x777]], confirmed: true, state: FlowState.TCP_CLOSED },
  { name: 'a server FIN (reply direction) is trusted', packets: [...HANDSHAKE, ['s', FIN | ACK, 0x777, NEXT]], confirmed: true, state: FlowState.TCP_CLOSING },
  { name: 'a stray SYN on an established flow is ignored', packets: [...HANDSHAKE, ['c', SYN, 42]], confirmed: true, state: FlowState.TCP_ESTABLISHED },
  { name: 'a new SYN after the close (port reuse) reopens it, unconfirmed', packets: [...HANDSHAKE, ['c', FIN | ACK, NEXT, S_ISN + 1], ['c', SYN, 0x5000]], confirmed: false, state: FlowState.TCP_SYN_SEEN, confirmations: 1 },
  {
    name: 'the reopened connection confirms on its own handshake',
    packets: [...HANDSHAKE, ['c', FIN | ACK, NEXT, S_ISN + 1], ['c', SYN, 0x5000], ['s', SYN | ACK, 0x9000, 0x5001], ['c', ACK, 0x5001, 0x9001]],
    confirmed: true,
    state: FlowState.TCP_ESTABLISHED,
    confirmations: 2,
  },
  // ---- TCP through DSR (no reply key: replies bypass the balancer)
  { name: 'DSR: SYN only', dsr: true, packets: [['c', SYN, C_ISN]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'DSR: the client\'s first ACK confirms (no server ISN to check)', dsr: true, packets: [['c', SYN, C_ISN], ['c', ACK, C_ISN + 1, 99]], confirmed: true, state: FlowState.TCP_ESTABLISHED },
  { name: 'DSR: RST out of window ignored', dsr: true, packets: [['c', SYN, C_ISN], ['c', ACK, C_ISN + 1, 99], ['c', RST, C_ISN + 0x10000000]], confirmed: true, state: FlowState.TCP_ESTABLISHED, outOfWindow: 1 },
  // ---- datagram flows
  { name: 'UDP: a query', proto: 17, packets: [['c', 0]], confirmed: false, state: FlowState.UDP },
  { name: 'UDP: a query and its answer (a spoofed source gets this far)', proto: 17, packets: [['c', 0], ['s', 0]], confirmed: false, state: FlowState.UDP },
  { name: 'UDP: queries without an answer', proto: 17, packets: [['c', 0], ['c', 0], ['c', 0]], confirmed: false, state: FlowState.UDP },
  { name: 'UDP: an ICMP error about the answer (a router: the spoofed source is unreachable) is no evidence', proto: 17, packets: [['c', 0], ['s', 0], ['e', 0], ['e', 0]], confirmed: false, state: FlowState.UDP },
  { name: 'UDP: an ICMP error from the backend is no answer', proto: 17, packets: [['c', 0], ['e', 0], ['c', 0]], confirmed: false, state: FlowState.UDP },
  { name: 'TCP: ICMP errors change nothing', packets: [...HANDSHAKE.slice(0, 2), ['e', 0], ['e', 0]], confirmed: false, state: FlowState.TCP_SYN_SEEN },
  { name: 'UDP: a query after the answer confirms', proto: 17, packets: [['c', 0], ['s', 0], ['c', 0]], confirmed: true, state: FlowState.UDP, last: TouchResult.CONFIRMED_NOW },
  { name: 'ICMP echo: a request after the reply confirms', proto: 1, packets: [['c', 0], ['s', 0], ['c', 0]], confirmed: true, state: FlowState.ICMP },
  { name: 'UDP through DSR: the second datagram confirms', proto: 17, dsr: true, packets: [['c', 0], ['c', 0]], confirmed: true, state: FlowState.UDP },
  { name: 'UDP through DSR: one datagram', proto: 17, dsr: true, packets: [['c', 0]], confirmed: false, state: FlowState.UDP },
];

for (const r of rows) {
  test(`confirmation: ${r.name}`, (t) => {
    const proto = r.proto ?? 6;
    const ft = new FlowTable({ capacity: 16 });
    const id = ft.insert(key(proto), r.dsr ? null : replyKey(proto), 0, 1, 0, 0, T);
    let last = -1;
    const results: number[] = [];
    for (const p of r.packets) {
      last = send(ft, id, p, proto === 6);
      results.push(last);
    }
    t.is(ft.isConfirmed(id), r.confirmed, 'confirmed');
    t.is((ft.flags(id) & FlowFlags.CONFIRMED) !== 0, r.confirmed);
    t.is(ft.state(id), r.state, 'state');
    if (r.last !== undefined) t.is(last, r.last, 'result of the last packet');
    t.is(ft.outOfWindow, r.outOfWindow ?? 0, 'RST/FIN ignored out of window');
    const now = results.filter((x) => x === TouchResult.CONFIRMED_NOW).length;
    t.is(now, r.confirmations ?? (r.confirmed ? 1 : 0), 'CONFIRMED_NOW once per connection');
    t.is(ft.confirmed, now);
  });
}

test('confirmation: a record learnt from a peer (confirmed, no reference yet): its first client segment sets the reference; a RST before that is ignored', (t) => {
  const ft = new FlowTable({ capacity: 4 });
  const id = ft.insert(key(6), replyKey(6), 0, 1, 0, 0, T);
  ft.updateFlags(id, FlowFlags.FROM_PEER | FlowFlags.CONFIRMED, 0);
  ft.setState(id, FlowState.TCP_ESTABLISHED);
  t.is(send(ft, id, ['c', RST, 12345], true), TouchResult.OUT_OF_WINDOW, 'no reference: ignored');
  t.is(ft.state(id), FlowState.TCP_ESTABLISHED);
  t.is(send(ft, id, ['c', ACK | PSH, 5000, 1, 10], true), TouchResult.CONFIRMED);
  t.is(send(ft, id, ['c', RST, 0x80000000], true), TouchResult.OUT_OF_WINDOW);
  t.is(ft.state(id), FlowState.TCP_ESTABLISHED);
  t.is(send(ft, id, ['c', RST, 5010], true), TouchResult.CONFIRMED);
  t.is(ft.state(id), FlowState.TCP_CLOSED);
  t.is(ft.outOfWindow, 2);
});

test('confirmation: an out-of-window RST does not shorten the flow (deadline stays the established one)', (t) => {
  const ft = new FlowTable({ capacity: 4 });
  const id = ft.insert(key(6), replyKey(6), 0, 1, 0, 0, T);
  for (const p of HANDSHAKE) send(ft, id, p, true);
  ft.touch(id, T + 10, RST, 0, (NEXT + 0x20000000) >>> 0, 0, 0);
  t.is(ft.state(id), FlowState.TCP_ESTABLISHED);
  t.is(ft.timeoutOf(id), 300);
  t.false(ft.isExpired(id, T + 10 + 6), 'alive 6 s later (a RST that counted would have given it 5 s)');
});
