/**
 * Peer ingress: the receiving side of a split super-packet (src/dataplane/peer-output.ts). A
 * super-packet the sender split arrives as consecutive datagrams from the same peer with the
 * same encapsulation header; mergeRun appends the chunks that follow a datagram to it (GRO
 * rules, src/packet/gso-merge.ts), in its slot, so the forwarder rewrites, writes or sends it
 * once. Reordered or foreign datagrams end the run (they go one by one).
 *
 * Hot path: no allocation; the result goes into a caller-owned MergeRun.
 */
import { gsoAppend } from '../packet/gso-merge';
import { ENCAP_HEADER_LEN, type EncapInfo } from '../packet/encap';
import type { PacketBatch } from './packet-batch';

const mergeNext = gsoAppend;

/** mergeRun's result: the merged inner packet's length and the index of the last datagram used. */
export class MergeRun {
  len = 0;
  last = 0;
}

/**
 * Datagram i of `batch` (its header parsed into `e`, carrying a partial checksum) and the ones
 * after it up to `count`: appends each following chunk that continues the packet (same peer
 * address in `addrs`, same header bytes as the datagram before it, GRO rules) to datagram i's inner packet. Sets
 * run.len (the inner packet's new length; e.innerLen when nothing was appended) and run.last
 * (the last datagram consumed, i when none). Returns the number of datagrams appended.
 */
export function mergeRun(batch: PacketBatch, i: number, count: number, addrs: Uint8Array, e: EncapInfo, run: MergeRun): number {
  const buf = batch.buf;
  const offsets = batch.offsets;
  const sizes = batch.sizes;
  let innerLen = e.innerLen;
  let last = i;
  const slotEnd = offsets[i]! - batch.headroom + batch.slotSize;
  // A datagram with the same header bytes has its virtio header and inner packet at the
  // same distances from its start.
  const vRel = e.vnetOff - offsets[i]!;
  const iRel = e.innerOff - offsets[i]!;
  while (last + 1 < count) {
    const j = last + 1;
    if (sizes[j]! <= iRel || !sameBytes(addrs, last * 16, addrs, j * 16, 16) || !sameBytes(buf, offsets[last]!, buf, offsets[j]!, ENCAP_HEADER_LEN)) break;
    const n = mergeNext(buf, e.innerOff, innerLen, slotEnd - e.innerOff, buf, e.vnetOff, offsets[j]! + iRel, sizes[j]! - iRel, offsets[j]! + vRel);
    if (n === 0) break;
    innerLen = n;
    last = j;
  }
  run.len = innerLen;
  run.last = last;
  return last - i;
}

/** a[ao .. ao+n) equals b[bo .. bo+n). */
function sameBytes(a: Uint8Array, ao: number, b: Uint8Array, bo: number, n: number): boolean {
  for (let k = 0; k < n; k++) if (a[ao + k] !== b[bo + k]) return false;
  return true;
}
