// The real TUN device against the shared compliance suite, plus what only a kernel can show:
// namespaces, EBUSY, multi-queue, offload probing, permissions. Root only (see helpers/root.ts).
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { ErrorCodes, isTunlbError } from '../src/errors';
import { PacketBatch } from '../src/dataplane/packet-batch';
import { TunDevice } from '../src/dataplane/tun-device';
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
