/**
 * Flow-record replication (src/cluster/replicator.ts) between Replicators over an in-memory
 * network (test/helpers/replication-loopback.ts): every datagram is really signed and goes
 * through the receiver's EnvelopeReceiver (MAC, replay window) before onRecords.
 */
import test from 'ava';
import { CONFIRMING_PACKETS, LoopbackCluster, LOOPBACK_CLUSTER_ID, type LoopbackMember } from '../helpers/replication-loopback';
import { REJECT_REASONS } from '../../src/cluster/replicator';
import { buildForwardingTable } from '../../src/decision/forwarding-table';
import { writeReplyKey } from '../../src/decision/reply-key';
import type { FlowSink } from '../../src/dataplane/forwarder';
import { FlowFlags, FlowState } from '../../src/flow';
import { EnvelopeSigner, macKey, Op, ProtocolResult, RecordBatcher, type FlowRecordFields } from '../../src/protocol';
import { loopbackConfig } from '../helpers/replication-loopback';

const TCP = 6;
const UDP = 17;

function key40(c: LoopbackCluster, i: number, vip = 0, proto = TCP): Uint8Array {
  const k = new Uint8Array(new ArrayBuffer(40));
  c.flowKey(i, vip, proto, k);
  return k;
}
function words(k: Uint8Array): Uint32Array {
  return new Uint32Array(k.buffer, k.byteOffset, 10);
}
/** Entry id of key `k` in member m's table, or -1. */
function find(m: LoopbackMember, k: Uint8Array): number {
  const ref = m.table.lookup(words(k), m.now);
  return ref >= 0 && (ref & 1) === 0 ? ref >>> 1 : -1;
}
function decision(m: LoopbackMember, id: number): [number, number, number, number] {
  const t = m.table;
  return [t.primary(id), t.backup(id), t.vip(id), t.backend(id)];
}
function fields(over: Partial<FlowRecordFields> = {}): FlowRecordFields {
  return { op: Op.CREATE, primary: 0, backup: 1, vip: 0, backend: 0, state: FlowState.TCP_ESTABLISHED, ageS: 0, idleS: 0, tableGeneration: 1, ...over };
}
/** Signs records as balancer `sender` with the cluster's key and delivers them to `to`. */
function inject(c: LoopbackCluster, signer: EnvelopeSigner, to: number, recs: Array<[FlowRecordFields, Uint8Array]>): number {
  const dgrams: Uint8Array[] = [];
  const b = new RecordBatcher(signer, (d) => dgrams.push(d));
  for (const [f, k] of recs) b.append(f, k, 0);
  b.flush();
  let r = 0;
  for (const d of dgrams) r = c.net.deliver({ from: signer.sender, to, dgram: d, n: -1 });
  return r;
}
function peerSigner(c: LoopbackCluster, sender: number): EnvelopeSigner {
  return new EnvelopeSigner({ key: c.key, clusterId: LOOPBACK_CLUSTER_ID, sender, incarnation: Date.now() * 2048 + 99 });
}

test('100 flows created on A appear on B and C with identical primary/backup/vip/backend', (t) => {
  const c = new LoopbackCluster({ balancers: 3, capacity: 4096 });
  const [a, b, cc] = [c.join(0), c.join(1), c.join(2)];
  const sink: FlowSink = a.replicator; // the forwarder's sink interface (type check)
  t.truthy(sink);
  const keys: Uint8Array[] = [];
  for (let i = 0; i < 100; i++) {
    const vip = i % 3; // NAT v4, NAT v6, DSR v4
    const k = key40(c, i, vip, i % 4 === 0 ? UDP : TCP);
    keys.push(k);
    const nb = vip === 0 ? 3 : 2;
    t.true(c.openFlow(a, k, i % 3, (i + 1) % 3, vip, i % nb, CONFIRMING_PACKETS) >= 0);
  }
  t.is(a.replicator.pending, 100);
  const dgrams = a.replicator.flush();
  t.true(dgrams >= 3 && dgrams <= 6, `${dgrams} datagrams`);
  t.log(`100 mixed records (v4 compact + v6) in ${dgrams} datagrams: ${(100 / dgrams).toFixed(1)} records/datagram`);
  c.net.deliverAll();
  for (const m of [b, cc]) {
    t.is(m.table.size, 100);
    t.is(m.replicator.stats.applied, 100);
    for (const k of keys) {
      const ida = find(a, k);
      const id = find(m, k);
      t.true(id >= 0);
      t.deepEqual(decision(m, id), decision(a, ida));
      t.is(m.table.flags(id) & FlowFlags.FROM_PEER, FlowFlags.FROM_PEER);
      t.is(m.table.packets(id), 0, 'records do not count packets');
      // NAT: the reply key is indexed (backend -> client finds the flow); DSR: none.
      const vip = m.table.vip(id);
      t.is(m.table.hasReplyKey(id), vip !== 2);
      if (vip !== 2) {
        const rk = new Uint8Array(new ArrayBuffer(40));
        t.true(writeReplyKey(m.ft, vip, m.table.backend(id), k, 0, rk));
        t.is(m.table.lookup(words(rk), m.now), id * 2 + 1);
      }
    }
  }
  t.is(a.table.flags(find(a, keys[0]!)) & FlowFlags.REPLICATED, FlowFlags.REPLICATED);
  t.is(a.replicator.stats.recordsSent, 100);
  // Nothing more to send; a second flush sends nothing.
  t.is(a.replicator.flush(), 0);
});

test('records carry state and idle time: lastSeen = now - idle_s, never moved back', (t) => {
  const c = new LoopbackCluster({ balancers: 2, capacity: 256 });
  const [a, b] = [c.join(0), c.join(1)];
  a.now = 1000;
  b.now = 50; // clocks count from each process's start
  const k = key40(c, 7);
  const id = c.openFlow(a, k, 0, 1, 0, 1, 3); // SYN, SYN-ACK, ACK -> ESTABLISHED
  a.now = 1012; // idle 12 s at send time
  a.replicator.flush();
  c.net.deliverAll();
  const idb = find(b, k);
  t.is(b.table.state(idb), FlowState.TCP_ESTABLISHED);
  t.is(b.table.lastSeen(idb), 50 - 12);
  t.is(b.table.deadline(idb), 38 + 300);
  // A later packet on A and a REFRESH: B's lastSeen moves forward ...
  // (b's clock = a's clock - 962)
  c.packets(a, id, 1);
  a.replicator.refreshTick(); // not due yet (refreshS 30) -> nothing
  t.is(c.net.queued, 0);
  a.now += 30;
  b.now = a.now - 962;
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  c.net.deliverAll();
  t.is(b.table.lastSeen(idb), 1012 - 962);
  // ... and a stale record (idle 100 s) does not move it back.
  t.is(inject(c, peerSigner(c, 0), 1, [[fields({ op: Op.REFRESH, backend: 1, idleS: 100 }), k]]), ProtocolResult.OK);
  t.is(b.table.lastSeen(idb), 50);
});

test('confirmation policy: TCP is replicated on the ACK of the server ISN, not on SYN or SYN-ACK; UDP on a query after an answer', (t) => {
  const c = new LoopbackCluster({ balancers: 2, capacity: 2048 });
  const [a, b] = [c.join(0), c.join(1)];
  const k = key40(c, 1);
  const id = c.openFlow(a, k, 0, 1, 0, 0, 2); // SYN and the backend's SYN-ACK
  a.replicator.flush();
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  t.is(c.net.deliverAll(), 0, 'SYN and SYN-ACK send nothing (flush and refresh scan)');
  t.is(find(b, k), -1);
  t.false(a.table.isConfirmed(id));
  c.packets(a, id, 1); // the client's ACK of ISN + 1
  t.true(a.table.isConfirmed(id));
  t.is(a.replicator.pending, 1);
  a.replicator.flush();
  c.net.deliverAll();
  const idb = find(b, k);
  t.true(idb >= 0);
  t.true(b.table.isConfirmed(idb), 'a learnt record is confirmed');
  // UDP: the query and its answer send nothing; the next query does.
  const ku = key40(c, 2, 0, UDP);
  const idu = c.openFlow(a, ku, 0, 1, 0, 2, 2);
  a.replicator.flush();
  t.is(c.net.deliverAll(), 0);
  c.packets(a, idu, 1);
  a.replicator.flush();
  c.net.deliverAll();
  t.true(find(b, ku) >= 0);
  // A spoofed SYN flood (each SYN answered by the backend) and a spoofed UDP flood (each
  // answered): no replication traffic, and the entries' expiry sends no DELETE either.
  const sent0 = c.net.sent;
  for (let i = 0; i < 1000; i++) t.true(c.openFlow(a, key40(c, 10_000 + i), 0, 1, 0, 0, 2) >= 0);
  for (let i = 0; i < 1000; i++) t.true(c.openFlow(a, key40(c, 20_000 + i, 0, UDP), 0, 1, 0, 0, 2) >= 0);
  a.replicator.flush();
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  t.is(c.net.sent, sent0);
  a.now += 31; // SYN_SEEN and UDP time out after 30 s
  t.is(a.table.expire(a.now, 10_000), 2001, "the flood and the UDP flow; the confirmed TCP flow is established (300 s)");
  a.replicator.flush();
  t.is(a.replicator.stats.deletesSent, 1, 'only the replicated UDP flow sends a DELETE');
  t.is(c.net.sent, sent0 + 1);
});

test('a confirmed flow is sent by its primary; the refresh scan heals a lost ready event only there (or when the primary is not live)', (t) => {
  const live = new Uint8Array([1, 1, 1]);
  const c = new LoopbackCluster({ balancers: 3, capacity: 256, replicator: { live, queueCapacity: 16 } });
  const [a, b] = [c.join(0), c.join(1)];
  c.join(2);
  // Flows decided by A: primary A (20: more than the ring of 16), primary B (1).
  const mine = Array.from({ length: 20 }, (_, i) => key40(c, i));
  for (const k of mine) c.openFlow(a, k, 0, 1, 0, 0, 2);
  const kb = key40(c, 100);
  const idb = c.openFlow(a, kb, 1, 2, 0, 0, 2);
  // Confirmed by hand (the forwarder's rule runs in the data plane): A's own ready events.
  for (const k of mine) {
    const id = find(a, k);
    a.table.updateFlags(id, FlowFlags.CONFIRMED, 0);
    a.replicator.flowReady(id);
  }
  a.table.updateFlags(idb, FlowFlags.CONFIRMED, 0);
  t.is(a.replicator.stats.queueDrops, 4);
  a.replicator.flush();
  c.net.deliverAll();
  t.is(b.table.size, 16);
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  c.net.deliverAll();
  t.is(b.table.size, 20, 'the 4 dropped events healed');
  t.is(a.replicator.stats.readyHealed, 4);
  t.is(find(b, kb), -1, "B's flow is B's to send while B lives");
  live[1] = 0;
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  c.net.deliverAll();
  t.true(find(b, kb) >= 0, 'its primary not live: A sends it');
  t.is(a.replicator.stats.readyHealed, 5);
});

test('a record from the primary makes the receiver\'s own unsent record confirmed and learnt (the primary refreshes it)', (t) => {
  const live = new Uint8Array([1, 1, 1]);
  const c = new LoopbackCluster({ balancers: 3, capacity: 256, replicator: { live } });
  const [a, b] = [c.join(0), c.join(1)];
  const k = key40(c, 3);
  // A received and decided the flow, B is its primary; A saw SYN and SYN-ACK only.
  const ida = c.openFlow(a, k, 1, 0, 0, 0, 2);
  t.false(a.table.isConfirmed(ida));
  inject(c, b.signer, 0, [[fields({ primary: 1, backup: 0, backend: 0 }), k]]);
  t.true(a.table.isConfirmed(ida));
  t.is(a.table.flags(ida) & FlowFlags.FROM_PEER, FlowFlags.FROM_PEER);
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  t.is(c.net.queued, 0, 'A sends nothing of it');
});

test('the refresh scan never sends a record of an unconfirmed flow: one adopted from a peer header whose state changed, one reopened by a new SYN', (t) => {
  const live = new Uint8Array([1, 1]);
  const c = new LoopbackCluster({ balancers: 2, capacity: 256, refreshS: 10, replicator: { live } });
  const [a, b] = [c.join(0), c.join(1)];
  // A spoofed SYN decided by B and adopted by A, its primary (FROM_PEER, unconfirmed); the
  // backend's SYN-ACK reaches A, then a RST from the backend changes its state.
  const k = key40(c, 9);
  const id = c.openFlow(a, k, 0, 1, 0, 0, 2);
  a.table.updateFlags(id, FlowFlags.FROM_PEER, 0);
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  a.table.touch(id, a.now, 0x04, 1, 0x7ffffff1, 0, 0); // RST from the backend: CLOSED
  t.is(a.table.state(id), FlowState.TCP_CLOSED);
  a.now += 1;
  for (let i = 0; i < 3 * a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  t.is(c.net.deliverAll(), 0, 'nothing sent (its state changed while A forwards it: a learnt flow would be refreshed)');
  t.is(find(b, k), -1);
  // A replicated flow closed, then reopened by a new SYN (unconfirmed): silent until its new
  // handshake confirms it, then refreshed (its state changed).
  const k2 = key40(c, 10);
  const id2 = c.openFlow(a, k2, 0, 1, 0, 0, CONFIRMING_PACKETS);
  a.replicator.flush();
  c.net.deliverAll();
  t.true(find(b, k2) >= 0);
  a.table.touch(id2, a.now, 0x11, 0, 0x10000001, 0x7ffffff1, 0); // FIN in window
  a.table.touch(id2, a.now, 0x02, 0, 0x20000000, 0, 1); // a new SYN: reopened, unconfirmed
  t.false(a.table.isConfirmed(id2));
  a.now += 11;
  const sent0 = c.net.sent;
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  t.is(c.net.sent, sent0, 'the reopened flow is not refreshed while unconfirmed');
  a.table.touch(id2, a.now, 0x12, 1, 0x30000000, 0x20000001, 1); // SYN-ACK
  a.table.touch(id2, a.now, 0x10, 0, 0x20000001, 0x30000001, 0); // the ACK of it: confirmed
  t.true(a.table.isConfirmed(id2));
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  c.net.deliverAll();
  t.is(b.table.state(find(b, k2)), FlowState.TCP_ESTABLISHED, 'refreshed once confirmed again');
});

test('expiry on A sends a DELETE: the flow is gone on B, kept on C which forwarded a packet just now', (t) => {
  const c = new LoopbackCluster({ balancers: 3, capacity: 256 });
  const [a, b, cc] = [c.join(0), c.join(1), c.join(2)];
  const ks = [key40(c, 1, 0, UDP), key40(c, 2, 0, UDP)];
  for (const k of ks) c.openFlow(a, k, 0, 1, 0, 0, CONFIRMING_PACKETS);
  a.replicator.flush();
  c.net.deliverAll();
  t.true(find(b, ks[0]!) >= 0 && find(cc, ks[0]!) >= 0);
  // C forwards a packet of flow 0 (e.g. it took it over) 20 s later; A's copy idles out.
  a.now += 20;
  cc.now += 20;
  cc.table.touch(find(cc, ks[0]!), cc.now, 0, 0);
  a.now += 11; // UDP timeout 30 s since the last packet on A
  cc.now += 1;
  b.now += 31;
  t.is(a.table.expire(a.now, 100), 2);
  t.is(a.replicator.pending, 2);
  a.replicator.flush();
  c.net.deliverAll();
  t.is(a.replicator.stats.deletesSent, 2);
  t.is(find(b, ks[1]!), -1);
  t.is(b.replicator.stats.deleted + b.replicator.stats.rejectedByReason.delete_unknown, 2);
  t.true(find(cc, ks[0]!) >= 0, 'C forwarded a packet within deleteGraceS: its own expiry decides');
  t.is(cc.replicator.stats.rejectedByReason.delete_locally_active, 1);
  t.is(find(cc, ks[1]!), -1);
  // Removing by DELETE does not echo a DELETE from B or C.
  t.is(b.replicator.pending + cc.replicator.pending, 0);
});

test('refresh heals a dropped datagram; a full ready ring is counted and healed by the scan', (t) => {
  const c = new LoopbackCluster({ balancers: 2, capacity: 1024, refreshS: 10, replicator: { queueCapacity: 16 } });
  const [a, b] = [c.join(0), c.join(1)];
  let first = true;
  c.net.filter = () => {
    if (!first) return true;
    first = false;
    return false;
  };
  const keys = Array.from({ length: 100 }, (_, i) => key40(c, i, 0, UDP));
  for (const k of keys) c.openFlow(a, k, 0, 1, 0, 1, CONFIRMING_PACKETS);
  t.is(a.replicator.stats.queueDrops, 84, 'ring of 16: 84 ready events dropped');
  a.replicator.flush();
  c.net.deliverAll();
  t.is(c.net.dropped, 1);
  t.is(b.table.size, 0, 'the only datagram (16 records) was lost');
  // The scan sends CREATEs for the 84 never sent at once ...
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  c.net.deliverAll();
  t.is(b.table.size, 84);
  // ... and the 16 lost ones are re-sent as REFRESH after refreshS: a REFRESH of an unknown key installs it.
  a.now += 10;
  b.now += 10;
  for (let i = 0; i < a.replicator.refreshCycleTicks; i++) a.replicator.refreshTick();
  c.net.deliverAll();
  t.is(b.table.size, 100);
  for (const k of keys) t.deepEqual(decision(b, find(b, k)), [0, 1, 0, 1]);
  t.true(a.replicator.stats.refreshesSent >= 100);
});

test('forged (wrong key) and replayed datagrams change nothing and are counted', (t) => {
  const c = new LoopbackCluster({ balancers: 3, capacity: 256 });
  const [a, b] = [c.join(0), c.join(1)];
  c.join(2);
  const captured: Uint8Array[] = [];
  c.net.tap = (d) => {
    if (d.to === 1) captured.push(d.dgram);
  };
  const k = key40(c, 1, 0, UDP);
  c.openFlow(a, k, 0, 1, 0, 0, CONFIRMING_PACKETS);
  a.replicator.flush();
  c.net.deliverAll();
  const id = find(b, k);
  t.true(id >= 0);
  const before = decision(b, id);
  // Replay of A's datagram (e.g. after its DELETE): REPLAYED, nothing applied.
  t.is(c.net.deliver({ from: 0, to: 1, dgram: captured[0]!, n: -1 }), ProtocolResult.REPLAYED);
  // Forgery: a record with another decision, signed with a wrong key, claiming to be A.
  const forger = new EnvelopeSigner({ key: macKey(Buffer.alloc(32, 0x66)), clusterId: LOOPBACK_CLUSTER_ID, sender: 0, incarnation: Date.now() * 4096 });
  t.is(inject(c, forger, 1, [[fields({ primary: 0, backup: 2, backend: 2 }), k]]), ProtocolResult.BAD_MAC);
  // Another cluster with the same key.
  const other = new EnvelopeSigner({ key: c.key, clusterId: LOOPBACK_CLUSTER_ID + 1, sender: 0, incarnation: Date.now() * 4096 });
  t.is(inject(c, other, 1, [[fields({ primary: 0, backup: 2, backend: 2 }), k]]), ProtocolResult.WRONG_CLUSTER);
  t.deepEqual(decision(b, id), before);
  const counts = c.net.node(1).receiver.counts;
  t.is(counts[ProtocolResult.REPLAYED], 1);
  t.is(counts[ProtocolResult.BAD_MAC], 1);
  t.is(counts[ProtocolResult.WRONG_CLUSTER], 1);
  t.is(b.replicator.stats.recordsReceived, 1);
});

test('authenticated but unusable records are ignored and counted by reason; garbage never throws', (t) => {
  const c = new LoopbackCluster({ balancers: 3, capacity: 256 });
  const b = c.join(1);
  b.now = 1000;
  const s2 = peerSigner(c, 2);
  const k = (i: number): Uint8Array => key40(c, i);
  inject(c, s2, 1, [
    [fields({ vip: 9 }), k(1)],
    [fields({ vip: 0, backend: 3 }), k(2)], // web4 has 3 backends (0..2)
    [fields({ vip: 2, backend: 0xffff }), k(3)],
    [fields({ primary: 5 }), k(4)], // 3 balancers
    [fields({ op: Op.DELETE }), k(5)],
    [fields({ idleS: 400 }), k(6)], // already idle past ESTABLISHED's 300 s
    [fields({ vip: 1, backend: 1 }), key40(c, 7, 1)], // fine (IPv6)
  ]);
  const r = b.replicator.stats.rejectedByReason;
  t.is(r.vip_out_of_range, 1);
  t.is(r.backend_out_of_range, 2);
  t.is(r.balancer_out_of_range, 1);
  t.is(r.delete_unknown, 1);
  t.is(r.expired, 1);
  t.is(b.replicator.stats.applied, 1);
  t.is(b.replicator.stats.ignored, 6);
  t.is(b.table.size, 1);
  // A record keyed by an existing flow's reply key is refused.
  const idv6 = find(b, key40(c, 7, 1));
  const rk = new Uint8Array(new ArrayBuffer(40));
  b.table.copyKey(idv6, 1, new Uint32Array(rk.buffer));
  inject(c, s2, 1, [[fields(), rk]]);
  t.is(r.key_conflict, 1);
  // Direct garbage: never throws, counted.
  const rep = b.replicator;
  t.notThrows(() => {
    rep.onRecords(2, { records: [null as never, { op: 1, key: new Uint8Array(7) } as never, { op: 9, key: k(1) } as never] });
    rep.onRecords(1, { records: [{ op: 1, key: k(1) } as never] }); // from self
    rep.onRecords(2, null as never);
    rep.onRecords(2, { records: [{ op: 1, key: k(8), primary: -1, backup: 0, vip: 0, backend: 0 } as never] });
    rep.onSyncChunk(2, null as never);
    rep.onSyncChunk(2, { requestId: 5, chunkIndex: 0, records: [] } as never);
    rep.onSyncRequest(7, { requestId: 1, fromCursor: 0 } as never);
  });
  t.is(r.bad_key, 2);
  t.is(r.bad_op, 1);
  t.is(r.bad_sender, 2);
  t.true(r.balancer_out_of_range >= 2);
  t.deepEqual(Object.keys(r), [...REJECT_REASONS]);
  t.is(b.table.size, 1);
});

test('the record is the truth: a known decision is kept unless the sender is its primary (authoritative)', (t) => {
  const c = new LoopbackCluster({ balancers: 3, capacity: 256 });
  const b = c.join(1);
  const k = key40(c, 42);
  const s0 = peerSigner(c, 0);
  const s2 = peerSigner(c, 2);
  inject(c, s2, 1, [[fields({ primary: 2, backup: 0, backend: 0 }), k]]);
  const id = find(b, k);
  t.deepEqual(decision(b, id), [2, 0, 0, 0]);
  // Balancer 0 sends another decision naming 2 as primary: not authoritative, kept.
  inject(c, s0, 1, [[fields({ op: Op.REFRESH, primary: 2, backup: 1, backend: 1 }), k]]);
  t.deepEqual(decision(b, find(b, k)), [2, 0, 0, 0]);
  t.is(b.replicator.stats.decisionKept, 1);
  // Balancer 0 claims the flow as its own primary with backend 1: it is authoritative for what
  // it records as its flow -> adopted, and the NAT reply key follows the backend.
  inject(c, s0, 1, [[fields({ op: Op.REFRESH, primary: 0, backup: 2, backend: 1 }), k]]);
  const id2 = find(b, k);
  t.deepEqual(decision(b, id2), [0, 2, 0, 1]);
  t.is(b.replicator.stats.adopted, 1);
  const rk = new Uint8Array(new ArrayBuffer(40));
  writeReplyKey(b.ft, 0, 1, k, 0, rk);
  t.is(b.table.lookup(words(rk), b.now), id2 * 2 + 1, 'reply key of the adopted backend');
  writeReplyKey(b.ft, 0, 0, k, 0, rk);
  t.is(b.table.lookup(words(rk), b.now), -1, 'old reply key gone');
  t.is(b.table.size, 1);
  // Primary/backup change only (same backend): setDecision in place.
  inject(c, s2, 1, [[fields({ op: Op.REFRESH, primary: 2, backup: 1, backend: 1 }), k]]);
  t.deepEqual(decision(b, find(b, k)), [2, 1, 0, 1]);
  t.is(find(b, k), id2);
});

test('table generations: same list -> as is; known older list -> remapped by backend id; unknown after a change -> ignored', (t) => {
  const c = new LoopbackCluster({ balancers: 3, capacity: 256 });
  const b = c.join(1);
  const s0 = peerSigner(c, 0);
  // Unknown generation 7 before any list change: the index cannot mean another backend.
  inject(c, s0, 1, [[fields({ tableGeneration: 7, backend: 2 }), key40(c, 1)]]);
  t.is(b.replicator.stats.applied, 1);
  // Health-only rebuild (generation 2, same list): generation-1 records map as is.
  b.ft = buildForwardingTable(c.config, c.hashKey, 2, () => true, b.ft);
  inject(c, s0, 1, [[fields({ tableGeneration: 1, backend: 2 }), key40(c, 2)]]);
  t.is(b.table.backend(find(b, key40(c, 2))), 2);
  // Backend list change (generation 3: a backend inserted at position 0 of web4).
  b.ft = buildForwardingTable(loopbackConfig(3, true), c.hashKey, 3);
  // A generation-1 record (backend 2 = 10.99.3.23 then) maps to index 3 now.
  inject(c, s0, 1, [[fields({ tableGeneration: 1, backend: 2 }), key40(c, 3)]]);
  const id3 = find(b, key40(c, 3));
  t.is(b.table.backend(id3), 3);
  t.is(b.replicator.stats.remapped, 1);
  // Unknown generation after a change of web4's list: ambiguous; web6 (unchanged) is fine.
  inject(c, s0, 1, [[fields({ tableGeneration: 99, backend: 1 }), key40(c, 4)]]);
  t.is(b.replicator.stats.rejectedByReason.generation_ambiguous, 1);
  inject(c, s0, 1, [[fields({ tableGeneration: 99, vip: 1, backend: 1 }), key40(c, 5, 1)]]);
  t.true(find(b, key40(c, 5, 1)) >= 0);
  // Current generation: as is.
  inject(c, s0, 1, [[fields({ tableGeneration: 3, backend: 0 }), key40(c, 6)]]);
  t.is(b.table.backend(find(b, key40(c, 6))), 0);
});

test('a learnt flow forwarded here after its primary died is refreshed (and deleted) by this balancer', (t) => {
  const live = new Uint8Array([1, 1, 1]);
  const c = new LoopbackCluster({ balancers: 3, capacity: 256, refreshS: 10, replicator: { live } });
  const [a, b, cc] = [c.join(0), c.join(1), c.join(2)];
  const k = key40(c, 5, 0, UDP);
  c.openFlow(a, k, 0, 1, 0, 0, CONFIRMING_PACKETS);
  a.replicator.flush();
  c.net.deliverAll();
  const idb = find(b, k);
  // B forwards packets of it while A lives: A refreshes, B does not.
  b.table.touch(idb, b.now, 0, 0);
  for (let i = 0; i < b.replicator.refreshCycleTicks; i++) b.replicator.refreshTick();
  t.is(c.net.queued, 0);
  // A dies: B, still forwarding it, becomes its refresher.
  live[0] = 0;
  b.now += 1;
  b.table.touch(idb, b.now, 0, 0);
  for (let i = 0; i < b.replicator.refreshCycleTicks; i++) b.replicator.refreshTick();
  t.true(c.net.queued >= 1);
  c.net.deliverAll();
  t.is(b.replicator.stats.refreshesSent, 1);
  t.is(b.table.flags(idb) & FlowFlags.REPLICATED, FlowFlags.REPLICATED);
  // Its expiry on B now sends a DELETE to C.
  b.now += 31;
  cc.now += 40;
  b.table.expire(b.now, 100);
  b.replicator.flush();
  c.net.deliverAll();
  t.is(find(cc, k), -1);
});
