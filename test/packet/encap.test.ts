import test from 'ava';
import {
  EncapInfo,
  ENCAP_HEADER_LEN,
  ENCAP_F_NEW_FLOW,
  ENCAP_F_REPLY,
  ENCAP_F_SECOND_CHANCE,
  ENCAP_F_FAILOVER,
  ENCAP_NONE_U16,
  ENCAP_NONE_U8,
  parseEncap,
  writeEncapHeader,
} from '../../src/packet/encap';
import { parsePacket } from '../../src/packet/parse';
import { PacketInfo } from '../../src/packet/packet-info';
import { keyToString } from '../../src/packet/flow-key';
import { PacketResult as R } from '../../src/packet/result';
import * as P from '../helpers/packets';

test('encap: header written into headroom, parsed back, inner packet unchanged', (t) => {
  const pkt = P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80);
  const headroom = 24;
  const buf = new Uint8Array(headroom + pkt.length);
  buf.set(pkt, headroom);
  const off = headroom - ENCAP_HEADER_LEN;
  t.is(writeEncapHeader(buf, off, ENCAP_F_NEW_FLOW | ENCAP_F_FAILOVER, 2, 0, 513, 7, 0xdeadbeef), R.OK);
  t.deepEqual([...buf.subarray(off, headroom)], [0x20, 0x09, 2, 0, 0x02, 0x01, 0, 7, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0], 'the tag is left zero for the tagger');
  const e = new EncapInfo();
  t.is(parseEncap(buf, off, buf.length - off, e), R.OK);
  t.like(e, { version: 2, type: 0, flags: 9, primary: 2, backup: 0, backend: 513, vip: 7, generation: 0xdeadbeef, hdrOff: off, innerOff: headroom, innerLen: pkt.length });
  const info = new PacketInfo();
  t.is(parsePacket(buf, e.innerOff, e.innerLen, info), R.OK);
  t.is(keyToString(info.key), 'tcp 10.99.1.2:40000 -> 10.99.0.10:80');
});

test('encap: every flag and "none" values round-trip', (t) => {
  const buf = new Uint8Array(ENCAP_HEADER_LEN + 1);
  const e = new EncapInfo();
  for (const f of [0, ENCAP_F_NEW_FLOW, ENCAP_F_REPLY, ENCAP_F_SECOND_CHANCE, ENCAP_F_FAILOVER, 15]) {
    t.is(writeEncapHeader(buf, 0, f, 31, ENCAP_NONE_U8, ENCAP_NONE_U16, 0xffff, 0), R.OK);
    t.is(parseEncap(buf, 0, buf.length, e), R.OK);
    t.like(e, { flags: f, primary: 31, backup: 0xff, backend: 0xffff, vip: 0xffff, generation: 0, innerLen: 1 });
  }
});

const Z8 = [0, 0, 0, 0, 0, 0, 0, 0];
const bad: Array<{ desc: string; bytes: number[]; len?: number; expected: number }> = [
  { desc: 'header only, no inner packet', bytes: [0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...Z8], expected: R.ENCAP_TRUNCATED },
  { desc: '19 bytes', bytes: [0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], expected: R.ENCAP_TRUNCATED },
  { desc: 'empty', bytes: [], expected: R.ENCAP_TRUNCATED },
  { desc: 'version 1 (an older release, no tag): named as such', bytes: [0x10, 0x01, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x45, 0, 0, 28], expected: R.ENCAP_OLD_VERSION },
  { desc: 'version 1, header only', bytes: [0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], expected: R.ENCAP_OLD_VERSION },
  { desc: 'version 3', bytes: [0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...Z8, 0x45], expected: R.ENCAP_BAD_VERSION },
  { desc: 'version 0', bytes: [0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...Z8, 0x45], expected: R.ENCAP_BAD_VERSION },
  { desc: 'an IPv4 packet (no header at all)', bytes: [0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0], expected: R.ENCAP_BAD_VERSION },
  { desc: 'type 1', bytes: [0x21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...Z8, 0x45], expected: R.ENCAP_BAD_TYPE },
  { desc: 'reserved flag bit 5', bytes: [0x20, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...Z8, 0x45], expected: R.ENCAP_BAD_FLAGS },
  { desc: 'VNET flag without room for the virtio header and a packet', bytes: [0x20, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...Z8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], expected: R.ENCAP_TRUNCATED },
  { desc: 'len past the buffer', bytes: [0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...Z8, 0x45], len: 22, expected: R.ENCAP_TRUNCATED },
];
for (const b of bad) {
  test(`encap drop: ${b.desc}`, (t) => {
    const buf = new Uint8Array(b.bytes);
    t.is(parseEncap(buf, 0, b.len ?? buf.length, new EncapInfo()), b.expected);
  });
}

test('encap: writing without enough headroom is a result code, nothing written', (t) => {
  const buf = new Uint8Array(ENCAP_HEADER_LEN - 1);
  t.is(writeEncapHeader(buf, 0, 0, 0, 0, 0, 0, 0), R.ENCAP_TRUNCATED);
  t.is(writeEncapHeader(buf, -1, 0, 0, 0, 0, 0, 0), R.ENCAP_TRUNCATED);
  t.deepEqual([...buf], new Array(ENCAP_HEADER_LEN - 1).fill(0));
});

test('VNET flag: the virtio header sits between the encapsulation header and the packet', (t) => {
  const bytes = [0x20, 0x10, 0, 1, 0, 2, 0, 0, 0, 0, 0, 1, /* tag */ ...Z8, /* vnet */ 1, 1, 0x36, 0, 0xa8, 5, 0x22, 0, 0x10, 0, /* packet */ 0x45, 0];
  const info = new EncapInfo();
  t.is(parseEncap(new Uint8Array(bytes), 0, bytes.length, info), R.OK);
  t.is(info.vnetOff, 20);
  t.is(info.innerOff, 30);
  t.is(info.innerLen, 2);
});
