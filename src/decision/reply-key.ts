/**
 * The NAT reply key of a flow (Linux conntrack's reply tuple): the key the backend's answers
 * carry, so the balancer can find the flow from them and rewrite the source back to the VIP.
 *
 *   forward key  client:cport → VIP:vport      (proto, version)
 *   reply key    backend:bport → client:cport  (same proto, version)
 *
 * bport is the backend's configured port, or vport when the backend keeps the port (and
 * always for fragment keys, whose ports are 0, and ICMP echo, whose "ports" are the
 * identifier). Used by the forwarder for new flows and by replication for records learnt
 * from peers. Hot path: no allocation.
 */
import type { ForwardingTable } from './forwarding-table';
import { KEEP_PORT } from './forwarding-table';
import * as flowKey from '../packet/flow-key';

// The key layout (src/packet/flow-key.ts), bound to module constants for the hot path.
const KEY_SRC = flowKey.KEY_SRC;
const KEY_DST = flowKey.KEY_DST;
const KEY_SPORT = flowKey.KEY_SPORT;
const KEY_DPORT = flowKey.KEY_DPORT;
const KEY_PROTO = flowKey.KEY_PROTO;

/**
 * Writes the reply key of forward key `fwd` (40 bytes at fwd[fwdOff..]) for backend `be`
 * of VIP `vip` into `out` (40 bytes). Returns false when the VIP/backend index is not in
 * this table (the caller drops or ignores the record).
 */
export function writeReplyKey(ft: ForwardingTable, vip: number, be: number, fwd: Uint8Array, fwdOff: number, out: Uint8Array): boolean {
  const addrs = ft.backendAddr[vip];
  if (addrs === undefined || be * 16 + 16 > addrs.length) return false;
  const ab = be * 16;
  for (let i = 0; i < 16; i++) {
    out[KEY_SRC + i] = addrs[ab + i]!;
    out[KEY_DST + i] = fwd[fwdOff + KEY_SRC + i]!;
  }
  const bp = ft.backendPort[vip]![be]!;
  const portless = fwd[fwdOff + KEY_SPORT] === 0 && fwd[fwdOff + KEY_SPORT + 1] === 0 && fwd[fwdOff + KEY_DPORT] === 0 && fwd[fwdOff + KEY_DPORT + 1] === 0;
  const proto = fwd[fwdOff + KEY_PROTO]!;
  if (bp === KEEP_PORT || portless || (proto !== 6 && proto !== 17)) {
    out[KEY_SPORT] = fwd[fwdOff + KEY_DPORT]!;
    out[KEY_SPORT + 1] = fwd[fwdOff + KEY_DPORT + 1]!;
  } else {
    out[KEY_SPORT] = bp >>> 8;
    out[KEY_SPORT + 1] = bp & 0xff;
  }
  out[KEY_DPORT] = fwd[fwdOff + KEY_SPORT]!;
  out[KEY_DPORT + 1] = fwd[fwdOff + KEY_SPORT + 1]!;
  for (let i = 36; i < 40; i++) out[i] = fwd[fwdOff + i]!;
  return true;
}
