/**
 * Virtio headers from the network (src/packet/vnet-check.ts): every kind of bad header is
 * refused with its reason and left unchanged; accepted ones are rebuilt from the inner packet.
 */
import test from 'ava';
import { checkPeerVnet, VnetCheck, vnetCheckNames, VNET_CHECK_COUNT, VNET_MIN_GSO_SIZE } from '../../src/packet/vnet-check';
import { VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP } from '../../src/packet/vnet';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import { PacketResult } from '../../src/packet/result';
import * as P from '../helpers/packets';

const C = VNET_F_NEEDS_CSUM;
/** A virtio header: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (LE u16s). */
function vh(flags: number, type: number, hdrLen: number, gsoSize: number, start: number, off: number): number[] {
  return [flags, type, hdrLen & 0xff, hdrLen >> 8, gsoSize & 0xff, gsoSize >> 8, start & 0xff, start >> 8, off & 0xff, off >> 8];
}

const data = new Uint8Array(1448 * 3).fill(0x61);
const tcp4 = P.toPartial(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_ACK, data));
const tcp6 = P.toPartial(P.tcp6('fd99:1::2', 'fd99::10', 40000, 80, P.TCP_ACK, data));
const tcp6opts = P.toPartial(P.tcp6('fd99:1::2', 'fd99::10', 40000, 80, P.TCP_ACK, data, { tcpOptions: Uint8Array.of(1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2) }));
const udp4 = P.toPartial(P.udp4('10.99.1.2', '10.99.0.10', 40000, 53, new Uint8Array(100)));
const icmp4 = P.icmp4Echo('10.99.1.2', '10.99.0.10', 8, 7, 1);
const frags = P.fragmentPacket(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_ACK, new Uint8Array(3000)), 1480);
const first = frags[0]!;
const later = frags[1]!;

interface Case {
  desc: string;
  pkt: Uint8Array;
  v: number[];
  /** VnetCheck reason, or the rebuilt header when accepted. */
  expect: number | number[];
}

const cases: Case[] = [
  // ---- accepted, rebuilt
  { desc: 'all zero', pkt: tcp4, v: vh(0, 0, 0, 0, 0, 0), expect: vh(0, 0, 0, 0, 0, 0) },
  { desc: 'DATA_VALID only: cleared (the end host verifies)', pkt: tcp4, v: vh(VNET_F_DATA_VALID, 0, 0, 0, 0, 0), expect: vh(0, 0, 0, 0, 0, 0) },
  { desc: 'partial checksum, one TCP segment', pkt: tcp4, v: vh(C, 0, 0, 0, 20, 16), expect: vh(C, 0, 0, 0, 20, 16) },
  { desc: 'partial checksum with DATA_VALID: DATA_VALID cleared', pkt: tcp4, v: vh(C | VNET_F_DATA_VALID, 0, 0, 0, 20, 16), expect: vh(C, 0, 0, 0, 20, 16) },
  { desc: 'TCPv4 GSO, hdr_len the kernel\'s linear-part hint: rebuilt as IP + TCP header', pkt: tcp4, v: vh(C, VNET_GSO_TCPV4, 1000, 1448, 20, 16), expect: vh(C, VNET_GSO_TCPV4, 40, 1448, 20, 16) },
  { desc: 'TCPv6 GSO with ECN', pkt: tcp6, v: vh(C, VNET_GSO_TCPV6 | VNET_GSO_ECN, 60, 1448, 40, 16), expect: vh(C, VNET_GSO_TCPV6 | VNET_GSO_ECN, 60, 1448, 40, 16) },
  { desc: 'TCPv6 GSO, TCP options: hdr_len covers them', pkt: tcp6opts, v: vh(C, VNET_GSO_TCPV6, 0, 1448, 40, 16), expect: vh(C, VNET_GSO_TCPV6, 72, 1448, 40, 16) },
  { desc: 'GSO at the smallest segment Linux sends', pkt: tcp4, v: vh(C, VNET_GSO_TCPV4, 40, VNET_MIN_GSO_SIZE, 20, 16), expect: vh(C, VNET_GSO_TCPV4, 40, VNET_MIN_GSO_SIZE, 20, 16) },
  { desc: 'partial UDP checksum', pkt: udp4, v: vh(C, 0, 0, 0, 20, 6), expect: vh(C, 0, 0, 0, 20, 6) },
  { desc: 'gso_size without GSO: dropped from the rebuilt header', pkt: tcp4, v: vh(0, 0, 0, 1448, 0, 0), expect: vh(0, 0, 0, 0, 0, 0) },
  { desc: 'csum fields without NEEDS_CSUM: zeroed', pkt: tcp4, v: vh(0, 0, 0, 0, 60, 2), expect: vh(0, 0, 0, 0, 0, 0) },
  // ---- refused
  { desc: 'unknown flag (RSC_INFO, 4)', pkt: tcp4, v: vh(4, 0, 0, 0, 0, 0), expect: VnetCheck.FLAGS },
  { desc: 'every flag bit', pkt: tcp4, v: vh(0xff, VNET_GSO_TCPV4, 40, 1448, 20, 16), expect: VnetCheck.FLAGS },
  { desc: 'gso_type UDP (UFO)', pkt: udp4, v: vh(C, VNET_GSO_UDP, 28, 1400, 20, 6), expect: VnetCheck.GSO_TYPE },
  { desc: 'gso_type UDP_L4 (USO)', pkt: udp4, v: vh(C, 5, 28, 64, 20, 6), expect: VnetCheck.GSO_TYPE },
  { desc: 'gso_type 2 (unknown)', pkt: tcp4, v: vh(C, 2, 40, 1448, 20, 16), expect: VnetCheck.GSO_TYPE },
  { desc: 'gso_type 0x7f', pkt: tcp4, v: vh(C, 0x7f, 40, 1448, 20, 16), expect: VnetCheck.GSO_TYPE },
  { desc: 'ECN bit without GSO', pkt: tcp4, v: vh(C, VNET_GSO_ECN, 0, 0, 20, 16), expect: VnetCheck.GSO_TYPE },
  { desc: 'TCPv6 GSO on an IPv4 packet', pkt: tcp4, v: vh(C, VNET_GSO_TCPV6, 40, 1448, 20, 16), expect: VnetCheck.GSO_PACKET },
  { desc: 'TCPv4 GSO on an IPv6 packet', pkt: tcp6, v: vh(C, VNET_GSO_TCPV4, 60, 1448, 40, 16), expect: VnetCheck.GSO_PACKET },
  { desc: 'TCP GSO on a UDP packet', pkt: udp4, v: vh(C, VNET_GSO_TCPV4, 28, 64, 20, 6), expect: VnetCheck.GSO_PACKET },
  { desc: 'TCP GSO on an ICMP packet', pkt: icmp4, v: vh(C, VNET_GSO_TCPV4, 28, 64, 20, 2), expect: VnetCheck.GSO_PACKET },
  { desc: 'TCP GSO without NEEDS_CSUM', pkt: tcp4, v: vh(0, VNET_GSO_TCPV4, 40, 1448, 0, 0), expect: VnetCheck.GSO_PACKET },
  { desc: 'TCP GSO on a first fragment', pkt: first, v: vh(C, VNET_GSO_TCPV4, 40, 536, 20, 16), expect: VnetCheck.GSO_PACKET },
  { desc: 'gso_size 0', pkt: tcp4, v: vh(C, VNET_GSO_TCPV4, 40, 0, 20, 16), expect: VnetCheck.GSO_SIZE },
  { desc: 'gso_size 1 (one packet becomes 4,344 segments)', pkt: tcp4, v: vh(C, VNET_GSO_TCPV4, 40, 1, 20, 16), expect: VnetCheck.GSO_SIZE },
  { desc: 'gso_size one below the smallest', pkt: tcp4, v: vh(C, VNET_GSO_TCPV4, 40, VNET_MIN_GSO_SIZE - 1, 20, 16), expect: VnetCheck.GSO_SIZE },
  { desc: 'csum_start inside the payload (a checksum written over data)', pkt: tcp4, v: vh(C, 0, 0, 0, 60, 16), expect: VnetCheck.CSUM },
  { desc: 'csum_offset 0 (the checksum over the source port)', pkt: tcp4, v: vh(C, 0, 0, 0, 20, 0), expect: VnetCheck.CSUM },
  { desc: 'csum_start in the IP header', pkt: tcp4, v: vh(C, 0, 0, 0, 0, 10), expect: VnetCheck.CSUM },
  { desc: 'csum_start past the packet', pkt: tcp4, v: vh(C, 0, 0, 0, 65000, 16), expect: VnetCheck.CSUM },
  { desc: 'csum_offset past the packet', pkt: tcp4, v: vh(C, 0, 0, 0, 20, 0xffff), expect: VnetCheck.CSUM },
  { desc: 'UDP with TCP\'s checksum offset', pkt: udp4, v: vh(C, 0, 0, 0, 20, 16), expect: VnetCheck.CSUM },
  { desc: 'NEEDS_CSUM on a first fragment', pkt: first, v: vh(C, 0, 0, 0, 20, 16), expect: VnetCheck.CSUM },
  { desc: 'NEEDS_CSUM on a later fragment (no L4 header)', pkt: later, v: vh(C, 0, 0, 0, 20, 16), expect: VnetCheck.CSUM },
  { desc: 'hdr_len past the packet', pkt: tcp4, v: vh(C, VNET_GSO_TCPV4, tcp4.length + 1, 1448, 20, 16), expect: VnetCheck.HDR_LEN },
  { desc: 'hdr_len 0xffff on a plain packet', pkt: tcp4, v: vh(0, 0, 0xffff, 0, 0, 0), expect: VnetCheck.HDR_LEN },
];

for (const c of cases) {
  const name = typeof c.expect === 'number' ? `refused (${vnetCheckNames[c.expect]})` : 'accepted';
  test(`virtio header from a peer, ${name}: ${c.desc}`, (t) => {
    const info = new PacketInfo();
    // The header right before the packet, as a datagram carries it.
    const buf = new Uint8Array(10 + c.pkt.length);
    buf.set(c.v, 0);
    buf.set(c.pkt, 10);
    t.is(parsePacket(buf, 10, c.pkt.length, info), PacketResult.OK);
    const before = buf.slice();
    const r = checkPeerVnet(buf, 0, buf, 10, c.pkt.length, info);
    if (typeof c.expect === 'number') {
      t.is(vnetCheckNames[r], vnetCheckNames[c.expect]);
      t.deepEqual([...buf], [...before], 'nothing written');
    } else {
      t.is(vnetCheckNames[r], 'ok');
      t.deepEqual([...buf.subarray(0, 10)], c.expect, 'rebuilt header');
      t.deepEqual([...buf.subarray(10)], [...c.pkt], 'packet untouched');
    }
  });
}

test('every refusal reason has a case and a name', (t) => {
  t.is(vnetCheckNames.length, VNET_CHECK_COUNT);
  const seen = new Set(cases.filter((c) => typeof c.expect === 'number').map((c) => c.expect as number));
  for (let r = 1; r < VNET_CHECK_COUNT; r++) t.true(seen.has(r), vnetCheckNames[r]!);
});
