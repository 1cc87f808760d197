import test from 'ava';
import { MIN_HEADROOM, PacketBatch, PeerArrays, VNET_HDR_LEN, vnetU16, VNET_GSO_SIZE } from '../../src/dataplane/packet-batch';

test('layout: slots, headroom, offsets at packet starts', (t) => {
  const b = new PacketBatch({ count: 4, maxPacket: 1500, headroom: 64 });
  t.is(b.slotSize % 64, 0);
  t.true(b.slotSize - b.headroom >= 1500);
  t.is(b.buf.length, 4 * b.slotSize);
  t.is(b.vnet.length, 4 * VNET_HDR_LEN);
  for (let i = 0; i < 4; i++) t.is(b.offsets[i], i * b.slotSize + 64);
  t.is(b.capacity, b.slotSize - 64);
});

test('headroom below the minimum and silly counts are refused', (t) => {
  t.throws(() => new PacketBatch({ count: 4, maxPacket: 1500, headroom: MIN_HEADROOM - 1 }), { instanceOf: RangeError });
  t.throws(() => new PacketBatch({ count: 0, maxPacket: 1500 }), { instanceOf: RangeError });
  t.throws(() => new PacketBatch({ count: 1, maxPacket: 70000 }), { instanceOf: RangeError });
});

test('setPacket / packet / clearVnet / vnetU16', (t) => {
  const b = new PacketBatch({ count: 2, maxPacket: 100 });
  b.setPacket(1, new Uint8Array([1, 2, 3]));
  t.deepEqual(b.packet(1), new Uint8Array([1, 2, 3]));
  t.is(b.offsets[1], b.slotSize + b.headroom);
  b.vnet.fill(7);
  t.is(vnetU16(b, 1, VNET_GSO_SIZE), 0x0707);
  b.clearVnet(1);
  t.is(vnetU16(b, 1, VNET_GSO_SIZE), 0);
  t.is(b.vnet[0], 7);
  t.throws(() => b.setPacket(0, new Uint8Array(b.capacity + 1)));
});

test('PeerArrays sizes', (t) => {
  const p = new PeerArrays(8);
  t.is(p.addrs.length, 128);
  t.is(p.ports.length, 8);
});
