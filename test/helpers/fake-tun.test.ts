import test from 'ava';
import { FakeTunDevice } from './fake-tun';
import { PacketBatch, VNET_HDR_LEN } from '../../src/dataplane/packet-batch';
import { buildUdp4, fakeTunHarness, runTunCompliance, tagged } from './tun-compliance';

runTunCompliance(test, 'FakeTunDevice', fakeTunHarness());
runTunCompliance(test, 'FakeTunDevice (vnet+tso)', fakeTunHarness({ features: { vnetHdr: true, csum: true, tso4: true, tso6: true } }));

test('fake: queue limit drops and counts', (t) => {
  const dev = new FakeTunDevice({ queueLimit: 3 });
  const p = buildUdp4('10.0.0.1', 1, '10.0.0.2', 2, tagged(9, 0, 10));
  t.true(dev.inject(p));
  t.true(dev.inject(p));
  t.true(dev.inject(p));
  t.false(dev.inject(p));
  t.is(dev.injectDrops, 1);
  t.is(dev.pending, 3);
});

test('fake: writeLimit emulates EAGAIN, the caller counts the rest as drops', (t) => {
  const dev = new FakeTunDevice({ writeLimit: 2 });
  const b = new PacketBatch({ count: 4, maxPacket: 1500 });
  for (let i = 0; i < 4; i++) b.setPacket(i, buildUdp4('10.0.0.1', 1, '10.0.0.2', 2, tagged(9, i, 10)));
  t.is(dev.write(b, 4), 2);
  t.is(dev.stats.writeAgain, 1);
  t.is(dev.takeWritten().length, 2);
  t.is(dev.written.length, 0);
});

test('fake: virtio headers travel with packets in PacketBatch.vnet', (t) => {
  const dev = new FakeTunDevice({ features: { vnetHdr: true } });
  const hdr = new Uint8Array([1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0]);
  dev.inject(buildUdp4('10.0.0.1', 1, '10.0.0.2', 2, tagged(9, 0, 10)), hdr);
  const b = new PacketBatch({ count: 2, maxPacket: 1500 });
  t.is(dev.read(b), 1);
  t.deepEqual(b.vnet.subarray(0, VNET_HDR_LEN), hdr);
  t.is(dev.write(b, 1), 1);
  t.deepEqual(dev.written[0].vnet, hdr);
});
