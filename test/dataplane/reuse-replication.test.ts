/**
 * Connection reuse and replication (src/dataplane/forwarder.ts "Connection reuse", #confirmed;
 * docs/flow-records.md "Confirmation and replication"): a new connection on a 5-tuple whose
 * record lingers on the flow's primary keeps that record's backend when it still takes new
 * flows. Another balancer whose copy of the old record is gone (its own expiry, a second
 * earlier on its clock) decided the new connection itself when its SYN arrived (ECMP
 * receiver): another backend, under the current weights. The primary serves the connection on
 * its record's backend; when the new handshake confirms the flow there, the primary must send
 * the record again, or the other balancer keeps naming a backend that does not serve the
 * connection (until the primary's next refresh or DELETE), and takes it there on a failover.
 *
 * The primary is a real Forwarder over a LoopbackCluster member's table with its real
 * Replicator as the sink; the other balancer is a member of the same loopback net.
 */
import test from 'ava';
import { deriveDataTagKey } from '../../src/decision/hash-key';
import { Forwarder } from '../../src/dataplane/forwarder';
import type { PeerOutput } from '../../src/dataplane/peer-output';
import { PacketBatch } from '../../src/dataplane/packet-batch';
import { writeReplyKey } from '../../src/decision/reply-key';
import { FlowFlags, TcpFlags } from '../../src/flow';
import { parsePacket } from '../../src/packet/parse';
import { PacketInfo } from '../../src/packet/packet-info';
import { formatIp } from '../../src/packet/addr';
import { LoopbackCluster, type LoopbackMember } from '../helpers/replication-loopback';
import * as P from '../helpers/packets';

const SYN = 0x02;
const ACK = 0x10;
const FIN = 0x01;
const C_ISN = 0x01020304;
const S_ISN = 0xfedcba98;
const C_ISN2 = 0x51525354;
const S_ISN2 = 0x0badf00d;

const cases = [
  { name: 'IPv4', vip: 0, client: '10.1.0.7', vipAddr: '10.99.0.10', tcp: P.tcp4, backends: ['10.99.3.21', '10.99.3.22', '10.99.3.23'] },
  { name: 'IPv6', vip: 1, client: 'fd01::7', vipAddr: 'fd99::10', tcp: P.tcp6, backends: ['fd99:3::21', 'fd99:3::22'] },
] as const;

const info = new PacketInfo();
/** A forwarded packet's destination: backend address and port. */
function dstOf(pkt: Uint8Array): { addr: string; port: number } {
  parsePacket(pkt, 0, pkt.length, info);
  return { addr: formatIp(pkt, info.dstOff, info.addrLen), port: info.dport };
}

/** The primary's data path: a Forwarder on member `m`'s table, its replicator as the sink. */
function primaryPath(c: LoopbackCluster, m: LoopbackMember) {
  const tagKey = deriveDataTagKey(Buffer.alloc(32, 0x5a));
  const n = c.config.balancers.length;
  const peerAddrs = new Uint8Array(n * 16);
  const peerPorts = new Uint16Array(n);
  c.config.balancers.forEach((b, i) => {
    peerAddrs.set(b.address.bytes, i * 16);
    peerPorts[i] = b.dataPort;
  });
  const batch = new PacketBatch({ count: 4, maxPacket: 65535 });
  const peerOut: PeerOutput = { batch: new PacketBatch({ count: 4, maxPacket: 65535, share: batch }), addrs: new Uint8Array(4 * 16), ports: new Uint16Array(4), count: 0 };
  const fwd = new Forwarder({
    table: m.table,
    forwarding: m.ft,
    hashKey: c.hashKey,
    tagKey,
    selfIndex: m.index,
    live: new Uint8Array(n).fill(1),
    sink: m.replicator,
    peers: { addrs: peerAddrs, ports: peerPorts },
    peerOutput: peerOut,
  });
  /** One packet from the TUN device; what the forwarder wrote back to it (or nothing). */
  const deliver = (pkt: Uint8Array): Uint8Array | undefined => {
    batch.setPacket(0, pkt);
    const k = fwd.processBatch(batch, 1, false, m.now);
    return k === 1 ? batch.buf.slice(batch.offsets[0]!, batch.offsets[0]! + batch.sizes[0]!) : undefined;
  };
  return { fwd, deliver };
}

for (const f of cases) {
  test(`${f.name}: a reused 5-tuple kept on its lingering record's backend is replicated again when the new connection confirms; the peer that decided it elsewhere adopts it`, (t) => {
    const c = new LoopbackCluster({ balancers: 2, capacity: 1024 });
    const x = c.join(0);
    const y = c.join(1);
    const px = primaryPath(c, x);
    const key = new Uint32Array(10);
    let checked = 0;
    for (let sport = 40000; sport < 40400 && checked < 8; sport++) {
      // The old connection: SYN at x; only flows x is the primary of.
      const syn = px.deliver(f.tcp(f.client, f.vipAddr, sport, 80, SYN, undefined, { seq: C_ISN }));
      const probe = f.tcp(f.client, f.vipAddr, sport, 80, SYN);
      parsePacket(probe, 0, probe.length, info);
      key.set(new Uint32Array(info.key.slice().buffer));
      const ref = x.table.lookup(key, x.now);
      if (ref < 0 || x.table.primary(ref >>> 1) !== x.index || syn === undefined) {
        if (ref >= 0) x.table.remove(ref >>> 1);
        continue;
      }
      checked++;
      const { addr: be, port: bport } = dstOf(syn);
      px.deliver(f.tcp(be, f.client, bport, sport, SYN | ACK, undefined, { seq: S_ISN, ack: C_ISN + 1 }));
      px.deliver(f.tcp(f.client, f.vipAddr, sport, 80, ACK, undefined, { seq: C_ISN + 1, ack: S_ISN + 1 }));
      x.replicator.flush();
      c.net.deliverAll();
      const yOld = y.table.lookup(key, y.now);
      t.true(yOld >= 0, 'the old connection reached the peer');
      // It closes: the records linger (tcp_closing_s) on x; on y the copy is gone (its own expiry).
      px.deliver(f.tcp(f.client, f.vipAddr, sport, 80, FIN | ACK, undefined, { seq: C_ISN + 1, ack: S_ISN + 1 }));
      px.deliver(f.tcp(be, f.client, bport, sport, FIN | ACK, undefined, { seq: S_ISN + 1, ack: C_ISN + 2 }));
      px.deliver(f.tcp(f.client, f.vipAddr, sport, 80, ACK, undefined, { seq: C_ISN + 2, ack: S_ISN + 2 }));
      const xid = x.table.lookup(key, x.now) >>> 1;
      t.is(x.table.state(xid), 3 /* TCP_CLOSING */);
      y.table.remove(yOld >>> 1);
      // y received the new connection's SYN with no record: its own decision, another backend
      // (what its Forwarder does on a miss), not confirmed; the packet went to the primary x.
      const xb = x.table.backend(xid);
      const yb = (xb + 1) % f.backends.length;
      const reply = new Uint8Array(40);
      const keyBytes = new Uint8Array(key.buffer);
      t.true(writeReplyKey(y.ft, f.vip, yb, keyBytes, 0, reply));
      const yid = y.table.insert(key, new Uint32Array(reply.buffer), x.index, y.index, f.vip, yb, y.now);
      y.table.touch(yid, y.now, TcpFlags.SYN, 0, C_ISN2, 0, 1);
      // The new connection at x: its lingering record's backend takes new flows, so it is kept.
      const syn2 = px.deliver(f.tcp(f.client, f.vipAddr, sport, 80, SYN, undefined, { seq: C_ISN2 }));
      t.deepEqual(dstOf(syn2!), { addr: be, port: bport }, 'the new connection follows the lingering record');
      t.false(x.table.isConfirmed(xid), 'the reopened flow confirms on its own handshake');
      px.deliver(f.tcp(be, f.client, bport, sport, SYN | ACK, undefined, { seq: S_ISN2, ack: C_ISN2 + 1 }));
      const created = x.replicator.stats.createsSent + x.replicator.stats.refreshesSent;
      px.deliver(f.tcp(f.client, f.vipAddr, sport, 80, ACK, undefined, { seq: C_ISN2 + 1, ack: S_ISN2 + 1 }));
      t.true(x.table.isConfirmed(xid));
      x.replicator.flush();
      c.net.deliverAll();
      t.is(x.replicator.stats.createsSent + x.replicator.stats.refreshesSent, created + 1, 'the primary sends the reconfirmed record at once');
      const yNew = y.table.lookup(key, y.now);
      t.true(yNew >= 0);
      t.is((f.backends as readonly string[])[y.table.backend(yNew >>> 1)], be, `port ${sport}: the peer's record names the backend that serves the connection`);
      t.not(y.table.flags(yNew >>> 1) & FlowFlags.CONFIRMED, 0);
      t.not(x.table.flags(xid) & FlowFlags.REPLICATED, 0, 'replicated again: its expiry sends a DELETE');
    }
    t.is(checked, 8, 'eight flows whose primary is x');
  });
}
