/**
 * Reply steering (NAT return path without a single point of failure, docs/entry.md):
 * a server's reply that reaches a balancer holding no record of its flow (the record is not
 * replicated yet: a TCP handshake below the sync threshold, a flow decided by another
 * receiver a moment ago) is not dropped but sent to the flow's primary, found by the same
 * deterministic ranking that chose it. For that the balancer rebuilds the flow's FORWARD key
 * from the reply key (the inverse of src/dataplane/reply-key.ts):
 *
 *   reply key    backend:bport → client:cport   (proto, version)
 *   forward key  client:cport  → VIP:vport      (same proto, version)
 *
 * The VIP comes from the backend's address: the VIPs that list it (this index, one entry per
 * (VIP, backend)). vport is bport when the backend keeps the port (and for ICMP echo, whose
 * "ports" are the identifier); with a port-rewriting backend it is the VIP's only port, and a
 * VIP serving several ports cannot be told (not steered, counted). When several VIPs list the
 * backend (and protocol and port fit more than one), the reply cannot tell which VIP its flow
 * went to: the candidates are tried in configuration order, one balancer after another. The
 * receiver steers to the primary of the first candidate whose primary is not itself; a primary
 * that holds no record of the reply either passes it on to the primary of the next candidate
 * after the one the header names (ENCAP_F_REPLY, header vip = the candidate tried). The
 * candidate index only grows, so a reply crosses at most one balancer per candidate VIP.
 *
 * Built once per forwarding table (off the hot path); `forwardKeyOfReply` runs only on a
 * reply-key miss and allocates nothing.
 */
import type { ForwardingTable } from './forwarding-table';
import { KEEP_PORT, METHOD_DSR } from './forwarding-table';

const KEY_SRC = 0;
const KEY_DST = 16;
const KEY_SPORT = 32;
const KEY_DPORT = 34;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

/** Backend address → (VIP, backend) entries, chained hashing over typed arrays. */
export interface ReplySteering {
  readonly mask: number;
  /** Per bucket: first entry index, or -1. */
  readonly heads: Int32Array;
  /** Per entry: next entry in its bucket, or -1. */
  readonly next: Int32Array;
  /** Per entry: VIP index. */
  readonly vip: Int32Array;
  /** Per entry: backend index within its VIP. */
  readonly backend: Int32Array;
}

/** Hash of the 16-byte address at a[off..]: bucket index under `mask`. */
function addrBucket(a: Uint8Array, off: number, mask: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < 16; i++) h = Math.imul(h ^ a[off + i]!, 0x01000193);
  return (h >>> 0) & mask;
}

/** The index of the NAT backends of `ft` (DSR VIPs have no replies through a balancer). */
export function buildReplySteering(ft: ForwardingTable): ReplySteering {
  let n = 0;
  for (let v = 0; v < ft.vipCount; v++) if (ft.vipMethod[v] !== METHOD_DSR) n += ft.backendAddr[v]!.length >>> 4;
  let size = 16;
  while (size < n * 2) size *= 2;
  const heads = new Int32Array(size).fill(-1);
  const next = new Int32Array(n);
  const vip = new Int32Array(n);
  const backend = new Int32Array(n);
  let e = 0;
  // Insert in reverse so a chain lists (VIP, backend) pairs in configuration order.
  for (let v = ft.vipCount - 1; v >= 0; v--) {
    if (ft.vipMethod[v] === METHOD_DSR) continue;
    const addrs = ft.backendAddr[v]!;
    for (let b = (addrs.length >>> 4) - 1; b >= 0; b--) {
      const k = addrBucket(addrs, b * 16, size - 1);
      vip[e] = v;
      backend[e] = b;
      next[e] = heads[k]!;
      heads[k] = e;
      e++;
    }
  }
  return { mask: size - 1, heads, next, vip, backend };
}

/**
 * Writes into `out` (40 bytes) the forward key of the flow whose reply key is `rk` (40 bytes,
 * from a backend) through the first candidate VIP with index ≥ `minVip`, and returns that VIP
 * index, or -1 when no NAT VIP from `minVip` on could have sent a flow to that backend and
 * port (then `out` is unspecified).
 */
export function forwardKeyOfReply(ft: ForwardingTable, st: ReplySteering, rk: Uint8Array, out: Uint8Array, minVip = 0): number {
  const proto = rk[36]!;
  const ported = proto === IPPROTO_TCP || proto === IPPROTO_UDP;
  const bport = (rk[KEY_SPORT]! << 8) | rk[KEY_SPORT + 1]!;
  for (let e = st.heads[addrBucket(rk, KEY_SRC, st.mask)]!; e >= 0; e = st.next[e]!) {
    const v = st.vip[e]!;
    if (v < minVip) continue;
    const b = st.backend[e]!;
    const addrs = ft.backendAddr[v]!;
    let same = true;
    for (let i = 0; i < 16; i++) {
      if (addrs[b * 16 + i] !== rk[KEY_SRC + i]) {
        same = false;
        break;
      }
    }
    if (!same || ft.vipProto[v * 256 + proto] === 0) continue;
    let vport = bport;
    if (ported) {
      const bp = ft.backendPort[v]![b]!;
      if (bp !== KEEP_PORT) {
        if (bp !== bport) continue;
        vport = ft.vipSolePort[v]!;
        if (vport === KEEP_PORT) continue;
      }
      if (((ft.vipPorts[v]![vport >>> 3]! >>> (vport & 7)) & 1) === 0) continue;
    }
    for (let i = 0; i < 16; i++) {
      out[KEY_SRC + i] = rk[KEY_DST + i]!;
      out[KEY_DST + i] = ft.vipAddr[v * 16 + i]!;
    }
    out[KEY_SPORT] = rk[KEY_DPORT]!;
    out[KEY_SPORT + 1] = rk[KEY_DPORT + 1]!;
    out[KEY_DPORT] = vport >>> 8;
    out[KEY_DPORT + 1] = vport & 0xff;
    for (let i = 36; i < 40; i++) out[i] = rk[i]!;
    return v;
  }
  return -1;
}
