/**
 * Encapsulated datagrams as a peer sends them (src/dataplane/peer-output.ts): header, optional
 * virtio header, inner packet, and the data-port tag for a sender → receiver pair
 * (src/decision/data-tag.ts), for tests that feed processPeerBatch by hand.
 */
import { writeDataTag } from '../../src/decision/data-tag';
import { ENCAP_F_VNET, ENCAP_HEADER_LEN, EncapInfo, parseEncap, writeEncapHeader } from '../../src/packet/encap';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import { PacketResult } from '../../src/packet/result';

export interface Decision {
  flags: number;
  primary: number;
  backup: number;
  backend: number;
  vip: number;
  generation?: number;
}

/**
 * (Re)computes the tag of the encapsulated datagram dg[off .. off+len) as balancer `from` sends
 * it to `to` (the header's bytes 0..11 and the inner packet as they are now). Returns false
 * (tag left alone) when the header or the inner packet does not parse.
 */
export function tagDatagram(dg: Uint8Array, tagKey: Uint32Array, from: number, to: number, off = 0, len = dg.length - off): boolean {
  const e = new EncapInfo();
  const info = new PacketInfo();
  if (parseEncap(dg, off, len, e) !== PacketResult.OK) return false;
  if (parsePacket(dg, e.innerOff, e.innerLen, info) !== PacketResult.OK) return false;
  writeDataTag(dg, off, tagKey, info.key, from, to);
  return true;
}

/** A tagged datagram from balancer `from` to `to` carrying `inner` (and `vnet` with flag VNET). */
export function peerDatagram(d: Decision, inner: Uint8Array, tagKey: Uint32Array, from: number, to: number, vnet?: ArrayLike<number>): Uint8Array {
  const v = vnet === undefined ? 0 : vnet.length;
  const dg = new Uint8Array(ENCAP_HEADER_LEN + v + inner.length);
  writeEncapHeader(dg, 0, d.flags | (vnet === undefined ? 0 : ENCAP_F_VNET), d.primary, d.backup, d.backend, d.vip, d.generation ?? 1);
  if (vnet !== undefined) dg.set(vnet, ENCAP_HEADER_LEN);
  dg.set(inner, ENCAP_HEADER_LEN + v);
  if (!tagDatagram(dg, tagKey, from, to)) throw new Error('peerDatagram: the inner packet does not parse');
  return dg;
}
