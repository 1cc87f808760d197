// The real TUN device against the shared compliance suite, plus what only a kernel can show:
// namespaces, EBUSY, multi-queue, offload probing, permissions. Root only (see helpers/root.ts).
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { ErrorCodes, isTunlbError } from '../src/errors';
import { INFO_LEN, INFO_TRUNCATED, native, netnsPath, WANT_VNET_HDR } from '../src/dataplane/native';
import { PacketBatch, PeerArrays } from '../src/dataplane/packet-batch';
import { TunDevice } from '../src/dataplane/tun-device';
import { ipToBytes16, UdpBatchSocket } from '../src/dataplane/udp-batch-socket';
import { runTunCompliance } from '../test/helpers/tun-compliance';
import { ipIn, testNetns } from './helpers/netns';
import { rootTest } from './helpers/root';
import { nobodyInNetns } from './helpers/unprivileged';
import { netnsTunHarness } from './helpers/tun-harness';

runTunCompliance(rootTest, 'TunDevice', netnsTunHarness());
runTunCompliance(rootTest, 'TunDevice (vnetHdr+offload)', netnsTunHarness({ offload: true }));

rootTest('TunDevice: open in a missing namespace is a clear error', (t) => {
  const e = t.throws(() => TunDevice.open({ name: 'tunlb0', netns: 'tunlb-t-does-not-exist' }));
  t.true(isTunlbError(e, ErrorCodes.DEVICE_IO));
  t.regex(e!.message, /network namespace "tunlb-t-does-not-exist" does not exist.*ip netns add/);
});

rootTest('TunDevice: a second open of the same name without multi-queue is DEVICE_BUSY', (t) => {
  const ns = testNetns(t, 'busy');
  const a = TunDevice.open({ name: 'tunlb0', netns: ns });
  t.teardown(() => a.close());
  const e = t.throws(() => TunDevice.open({ name: 'tunlb0', netns: ns }));
  t.true(isTunlbError(e, ErrorCodes.DEVICE_BUSY), String(e));
  a.close();
  // Released: the name is free again (the non-persistent device went away with its fd).
  const b = TunDevice.open({ name: 'tunlb0', netns: ns });
  b.close();
  t.pass();
});

rootTest('TunDevice: multi-queue opens several queues of one device', (t) => {
  const ns = testNetns(t, 'mq');
  const qs = [0, 1, 2].map(() => TunDevice.open({ name: 'tunlb0', netns: ns, multiQueue: true }));
  t.teardown(() => qs.forEach((q) => q.close()));
  t.true(qs.every((q) => q.features.multiQueue));
  t.regex(ipIn(ns, ['-d', 'link', 'show', 'tunlb0']), /multi_queue/);
  const e = t.throws(() => TunDevice.open({ name: 'tunlb0', netns: ns }));
  t.true(isTunlbError(e, ErrorCodes.DEVICE_BUSY), 'a single-queue open of a multi-queue device is refused');
});

rootTest('TunDevice: vnetHdr/offload probing reports features, MTU and link state are set', (t) => {
  const ns = testNetns(t, 'feat');
  const plain = TunDevice.open({ name: 'tunlb0', netns: ns, mtu: 1300 });
  t.teardown(() => plain.close());
  t.deepEqual({ ...plain.features }, { vnetHdr: false, csum: false, tso4: false, tso6: false, multiQueue: false });
  const link = ipIn(ns, ['link', 'show', 'tunlb0']);
  t.regex(link, /mtu 1300/);
  t.regex(link, /[<,]UP[,>]/);
  const off = TunDevice.open({ name: 'tunlb1', netns: ns, offload: true });
  t.teardown(() => off.close());
  t.log('offload features', off.features);
  t.true(off.features.vnetHdr);
  t.true(off.features.csum);
  t.is(off.maxPacketSize, off.features.tso4 || off.features.tso6 ? 65535 : off.mtu);
  const vnetOnly = TunDevice.open({ name: 'tunlb2', netns: ns, vnetHdr: true });
  t.teardown(() => vnetOnly.close());
  t.true(vnetOnly.features.vnetHdr);
  t.false(vnetOnly.features.tso4);
  const offloadLink = ipIn(ns, ['link', 'show', 'tunlb1']);
  t.regex(offloadLink, /tunlb1/);
});

rootTest('TunDevice: the device is created in the namespace, not in the caller\'s', (t) => {
  const ns = testNetns(t, 'where');
  const name = `tlbw${process.pid % 100000}`;
  const d = TunDevice.open({ name, netns: ns });
  t.teardown(() => d.close());
  t.regex(ipIn(ns, ['link', 'show', name]), new RegExp(name));
  const here = spawnSync('ip', ['link', 'show', name], { timeout: 5000, encoding: 'utf8' });
  t.not(here.status, 0, 'not visible in the root namespace');
});

rootTest('TunDevice: without CAP_NET_ADMIN, open is NO_PERMISSION', (t) => {
  const ns = testNetns(t, 'perm');
  // A child as nobody with no capabilities; it opens a device in the current namespace,
  // which TUNSETIFF refuses before anything is created.
  const script = `
    const { TunDevice } = require(${JSON.stringify(resolve(__dirname, '../src/dataplane/tun-device'))});
    try { TunDevice.open({ name: 'tunlbperm0' }); console.log('OPENED'); }
    catch (e) { console.log(e.code + ' ' + e.message); }`;
  // (Through a private bind mount of the repository: the clone may sit where nobody cannot enter.)
  const r = spawnSync('ip', nobodyInNetns(ns, [process.execPath, '--import=tsx', '-e', script]), { timeout: 20000, encoding: 'utf8' });
  t.log(r.stdout.trim(), r.stderr.trim().slice(0, 300));
  t.regex(r.stdout, /TUNLB_NO_PERMISSION .*CAP_NET_ADMIN/);
});

rootTest('TunDevice: read after the namespace (and so the device) is gone throws DEVICE_IO, close still works', (t) => {
  const ns = testNetns(t, 'gone');
  const d = TunDevice.open({ name: 'tunlb0', netns: ns });
  ipIn(ns, ['link', 'del', 'tunlb0']);
  const b = new PacketBatch({ count: 4, maxPacket: d.maxPacketSize });
  const e = t.throws(() => d.read(b));
  t.true(isTunlbError(e, ErrorCodes.DEVICE_IO), String(e));
  t.notThrows(() => d.close());
});

// native/tun.cc tunRead: a TUN read has no MSG_TRUNC (the kernel copies what fits and returns
// that), so a packet longer than the slot must be detected by the addon and come back as size 0
// and counted, never as a whole packet of the slot's size (or a size beyond the slot). Made
// real by raising the MTU under a reader whose batch was sized for the old one.
for (const vnetHdr of [false, true]) {
  rootTest(`TunDevice${vnetHdr ? ' (vnetHdr)' : ''}: a packet longer than its read slot (MTU raised under the reader) has size 0 and is counted; the next one is intact`, async (t) => {
    const ns = testNetns(t, 'clamp');
    const dev = TunDevice.open({ name: 'tunlb0', mtu: 1400, netns: ns, vnetHdr });
    t.teardown(() => dev.close());
    ipIn(ns, ['addr', 'add', '10.77.0.1/24', 'dev', dev.name]);
    const rx = new PacketBatch({ count: 8, maxPacket: dev.maxPacketSize });
    t.is(rx.capacity, 1408);
    rx.buf.fill(0xa5);
    ipIn(ns, ['link', 'set', dev.name, 'mtu', '4000']);
    const tx = UdpBatchSocket.open({ address: '10.77.0.1', port: 0, netns: ns });
    t.teardown(() => tx.close());
    const sb = new PacketBatch({ count: 2, maxPacket: 4000 });
    sb.setPacket(0, new Uint8Array(3000).fill(7)); // 3028 bytes on the TUN device
    sb.setPacket(1, new Uint8Array(100).fill(8)); // 128
    const peers = new PeerArrays(2);
    for (let i = 0; i < 2; i++) {
      ipToBytes16('10.77.0.2', peers.addrs, 16 * i);
      peers.ports[i] = 9;
    }
    t.is(tx.send(sb, 2, peers.addrs, peers.ports), 2);
    const sizes: number[] = [];
    let small: Uint8Array | undefined;
    const deadline = Date.now() + 5000;
    while (sizes.length < 2 && Date.now() < deadline) {
      const n = dev.read(rx);
      for (let i = 0; i < n; i++) {
        sizes.push(rx.sizes[i]!);
        if (rx.sizes[i] === 128) small = rx.packet(i).slice();
      }
      if (n === 0) await new Promise((r) => setTimeout(r, 10));
    }
    t.deepEqual(sizes, [0, 128], 'both packets read within 5 s: the long one as size 0, the short one whole');
    t.is(dev.stats.readTruncated, 1);
    t.true(small !== undefined && small.subarray(28).every((b) => b === 8), 'the short packet is intact');
    for (let i = 0; i < rx.count; i++) {
      t.true(rx.buf.subarray(i * rx.slotSize, i * rx.slotSize + rx.headroom).every((b) => b === 0xa5), `slot ${i}'s headroom untouched`);
    }
  });
}

// The same at the addon's own interface, with slots smaller than a packet: sizes never exceed
// slotSize - headroom, the long packet is counted in info[INFO_TRUNCATED], the kernel copies
// nothing past the slot, and a packet that exactly fills its slot is still read whole (the
// kernel returns only what it copied, so "as long as the slot" alone would be ambiguous).
for (const vnetHdr of [false, true]) {
  rootTest(`addon tunRead${vnetHdr ? ' (vnetHdr)' : ''}: slots smaller than a packet give size 0 and info[INFO_TRUNCATED], never a size beyond the slot`, async (t) => {
    const ns = testNetns(t, 'rawclamp');
    const nat = native();
    const { fd, name } = nat.tunOpen('tunlb0', 1400, vnetHdr ? WANT_VNET_HDR : 0, netnsPath(ns));
    t.teardown(() => nat.closeFd(fd));
    ipIn(ns, ['addr', 'add', '10.77.0.1/24', 'dev', name]);
    const tx = UdpBatchSocket.open({ address: '10.77.0.1', port: 0, netns: ns });
    t.teardown(() => tx.close());
    const sb = new PacketBatch({ count: 3, maxPacket: 1400 });
    sb.setPacket(0, new Uint8Array(500).fill(7)); // 528 bytes on the TUN device
    sb.setPacket(1, new Uint8Array(100).fill(8)); // 128
    sb.setPacket(2, new Uint8Array(164).fill(9)); // 192: exactly the slot
    const peers = new PeerArrays(3);
    for (let i = 0; i < 3; i++) {
      ipToBytes16('10.77.0.2', peers.addrs, 16 * i);
      peers.ports[i] = 9;
    }
    t.is(tx.send(sb, 3, peers.addrs, peers.ports), 3);
    const SLOT = 256;
    const HEAD = 64; // 192 bytes per packet
    const buf = new Uint8Array(4 * SLOT).fill(0xa5);
    const offsets = new Uint32Array(4);
    const sizes = new Uint32Array(4);
    const vnet = vnetHdr ? new Uint8Array(4 * nat.vnetHdrLen) : null;
    const info = new Int32Array(INFO_LEN);
    const got: number[] = [];
    const deadline = Date.now() + 5000;
    let full: Uint8Array | undefined;
    while (got.length < 3 && Date.now() < deadline) {
      const n = nat.tunRead(fd, buf, offsets, sizes, SLOT, HEAD, 4, vnet, info);
      t.true(n >= 0, `tunRead: ${n}`);
      for (let i = 0; i < n; i++) {
        t.is(offsets[i], i * SLOT + HEAD);
        got.push(sizes[i]!);
        if (sizes[i] === 192) full = buf.slice(offsets[i]!, offsets[i]! + 192);
      }
      if (n === 0) await new Promise((r) => setTimeout(r, 10));
    }
    t.deepEqual(got, [0, 128, 192], 'all three read within 5 s: the long one as size 0 (not 192 or 528), the others whole');
    t.true(full !== undefined && full.subarray(28).every((b) => b === 9), 'the packet that fills its slot is intact');
    t.is(info[INFO_TRUNCATED], 1);
    for (let i = 0; i < 4; i++) t.true(buf.subarray(i * SLOT, i * SLOT + HEAD).every((b) => b === 0xa5), `slot ${i}'s headroom untouched`);
  });
}
