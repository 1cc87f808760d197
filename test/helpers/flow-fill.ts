/**
 * Fills a balancer's flow table with many synthetic flows (for the event-loop budget test and
 * bench/admin-loop-delay.bench.ts): records inserted directly into the table, as if decided
 * here, without packets. Flow i is client 10.(100 + i / 2^24).x.y:port → the VIP's address and
 * first port, TCP established (two of three) or UDP (one of three), backend i mod the VIP's
 * backend count, with the NAT reply key the forwarder would write. Off the hot path: the table
 * and the forwarding table are the balancer's own; keys are scratch arrays reused per insert.
 */
import type { FlowTable } from '../../src/flow';
import { TcpFlags } from '../../src/flow';
import type { ForwardingTable } from '../../src/decision/forwarding-table';
import { writeReplyKey } from '../../src/decision/reply-key';
import { KEY_DPORT, KEY_DST, KEY_PROTO, KEY_SPORT, KEY_SRC, KEY_VERSION } from '../../src/packet/flow-key';

export interface FillTarget {
  readonly table: FlowTable;
  readonly forwarder: { readonly forwarding: ForwardingTable };
  readonly selfIndex: number;
  nowSec(): number;
}

/** Inserts `n` flows into VIP `vipIndex` (default 0); returns how many were inserted. */
export function fillFlows(b: FillTarget, n: number, vipIndex = 0): number {
  const ft = b.forwarder.forwarding;
  const vip = ft.config.vips[vipIndex];
  if (vip === undefined) throw new Error(`fillFlows: no VIP ${vipIndex}`);
  if (vip.address.family !== 4) throw new Error('fillFlows: an IPv4 VIP is needed');
  const nb = vip.backends.length;
  const fb = new ArrayBuffer(40);
  const fwd = new Uint8Array(fb);
  const fwdWords = new Uint32Array(fb);
  const rb = new ArrayBuffer(40);
  const rep = new Uint8Array(rb);
  const repWords = new Uint32Array(rb);
  fwd[KEY_SRC + 10] = 0xff;
  fwd[KEY_SRC + 11] = 0xff;
  fwd[KEY_DST + 10] = 0xff;
  fwd[KEY_DST + 11] = 0xff;
  fwd.set(vip.address.bytes.subarray(12, 16), KEY_DST + 12);
  const vport = vip.ports.first;
  fwd[KEY_DPORT] = vport >>> 8;
  fwd[KEY_DPORT + 1] = vport & 0xff;
  fwd[KEY_VERSION] = 4;
  const now = b.nowSec();
  const t = b.table;
  let inserted = 0;
  for (let i = 0; i < n; i++) {
    // 2^24 clients per /8 step, 1 port each: distinct keys for any n the table holds.
    fwd[KEY_SRC + 12] = 10;
    fwd[KEY_SRC + 13] = 100 + ((i >>> 24) & 0x3f);
    fwd[KEY_SRC + 14] = (i >>> 16) & 0xff;
    fwd[KEY_SRC + 15] = (i >>> 8) & 0xff;
    const port = 1024 + (i & 0xff);
    fwd[KEY_SPORT] = port >>> 8;
    fwd[KEY_SPORT + 1] = port & 0xff;
    const tcp = i % 3 !== 2;
    fwd[KEY_PROTO] = tcp ? 6 : 17;
    const be = i % nb;
    if (!writeReplyKey(ft, vipIndex, be, fwd, 0, rep)) throw new Error('fillFlows: no reply key');
    const id = t.insert(fwdWords, repWords, b.selfIndex, b.selfIndex, vipIndex, be, now);
    if (id < 0) continue;
    if (tcp) {
      t.touch(id, now, TcpFlags.SYN, 0);
      t.touch(id, now, TcpFlags.SYN | TcpFlags.ACK, 1);
      t.touch(id, now, TcpFlags.ACK, 0);
    } else {
      t.touch(id, now, 0, 0);
    }
    inserted++;
  }
  return inserted;
}
