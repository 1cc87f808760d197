/**
 * The datagrams of a split super-packet (src/packet/gso-split.ts) as UDP GSO puts them on the
 * wire: chunk j = its header hdrs[hdrOff + j*hdrLen ..] followed by its payload slice
 * buf[payloadOff + j*chunk .. + min(chunk, rest)].
 */
import { ENCAP_HEADER_LEN, ENCAP_VNET_LEN } from '../../src/packet/encap';

export function chunkDatagram(
  hdrs: Uint8Array, hdrOff: number, hdrLen: number,
  buf: Uint8Array, payloadOff: number, payloadLen: number, chunk: number, j: number,
): Uint8Array {
  const from = payloadOff + j * chunk;
  const to = Math.min(payloadOff + payloadLen, from + chunk);
  const dg = new Uint8Array(hdrLen + to - from);
  dg.set(hdrs.subarray(hdrOff + j * hdrLen, hdrOff + (j + 1) * hdrLen));
  dg.set(buf.subarray(from, to), hdrLen);
  return dg;
}

/** A chunk datagram's parts: encapsulation header, virtio header, inner IP packet (copies). */
export function chunkParts(dg: Uint8Array): { encap: Uint8Array; vnet: Uint8Array; inner: Uint8Array } {
  const v = ENCAP_HEADER_LEN;
  return { encap: dg.slice(0, v), vnet: dg.slice(v, v + ENCAP_VNET_LEN), inner: dg.slice(v + ENCAP_VNET_LEN) };
}
