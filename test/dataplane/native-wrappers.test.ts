// The parts of the native wrappers that need no root and no kernel: addon loading errors,
// errno → TunlbError mapping, address conversion, TunDevice.read's accounting of what the addon
// returns.
import test from 'ava';
import { ErrorCodes, isTunlbError, type ErrorCode } from '../../src/errors';
import { addonCandidates, INFO_TRUNCATED, loadNative, netnsPath, type NativeAddon } from '../../src/dataplane/native';
import { PacketBatch } from '../../src/dataplane/packet-batch';
import { mapTunOpenError, TunDevice } from '../../src/dataplane/tun-device';
import { bytes16ToIp, ipToBytes16, mapUdpOpenError } from '../../src/dataplane/udp-batch-socket';

const errnoError = (code: string, syscall: string) => Object.assign(new Error(`${syscall}: ${code}`), { code, syscall });

test('a missing addon gives NATIVE_ADDON_MISSING naming the fix', (t) => {
  const e = t.throws(() => loadNative(['/nonexistent/tunlb_native.node']));
  t.true(isTunlbError(e, ErrorCodes.NATIVE_ADDON_MISSING));
  t.regex(e!.message, /npm ci/);
  t.regex(e!.message, /npx node-gyp rebuild/);
});

test('addon candidates are the repo root build dir (src and dist layouts)', (t) => {
  const c = addonCandidates();
  t.true(c.every((p) => p.endsWith('build/Release/tunlb_native.node')));
});

test('netns option: name or absolute path', (t) => {
  t.is(netnsPath(undefined), '');
  t.is(netnsPath('lb1'), '/run/netns/lb1');
  t.is(netnsPath('/proc/1/ns/net'), '/proc/1/ns/net');
});

const tunCases: [string, string, ErrorCode, RegExp][] = [
  ['EPERM', 'TUNSETIFF', ErrorCodes.NO_PERMISSION, /CAP_NET_ADMIN/],
  ['EACCES', 'open /dev/net/tun', ErrorCodes.NO_PERMISSION, /root/],
  ['ENOENT', 'open /dev/net/tun', ErrorCodes.NO_TUN_DEVICE, /modprobe tun/],
  ['ENODEV', 'open /dev/net/tun', ErrorCodes.NO_TUN_DEVICE, /modprobe tun/],
  ['EBUSY', 'TUNSETIFF', ErrorCodes.DEVICE_BUSY, /in use/],
  ['EINVAL', 'TUNSETIFF', ErrorCodes.DEVICE_BUSY, /another type or flags/],
  ['ENOENT', 'open netns', ErrorCodes.DEVICE_IO, /ip netns add lbx/],
  ['EIO', 'SIOCSIFMTU', ErrorCodes.DEVICE_IO, /SIOCSIFMTU/],
];
for (const [code, syscall, want, msg] of tunCases) {
  test(`TUN open error ${code} at ${syscall} → ${want}`, (t) => {
    const e = mapTunOpenError(errnoError(code, syscall), 'tunlb0', 'lbx');
    t.is(e.code, want);
    t.regex(e.message, msg);
  });
}

test('UDP open errors', (t) => {
  t.is(mapUdpOpenError(errnoError('EADDRINUSE', 'bind'), 'x', undefined).code, ErrorCodes.SOCKET);
  t.is(mapUdpOpenError(errnoError('EADDRNOTAVAIL', 'bind'), 'x', undefined).code, ErrorCodes.ADDRESS_NOT_PRESENT);
  t.is(mapUdpOpenError(errnoError('EACCES', 'bind'), 'x', undefined).code, ErrorCodes.NO_PERMISSION);
  const ns = mapUdpOpenError(errnoError('ENOENT', 'open netns'), 'x', 'nope');
  t.is(ns.code, ErrorCodes.SOCKET);
  t.regex(ns.message, /ip netns add nope/);
});

test('addresses: IPv4-mapped and IPv6 round trips (docs/contracts.md form)', (t) => {
  const b = new Uint8Array(16);
  t.true(ipToBytes16('10.99.2.11', b));
  t.deepEqual([...b], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, 2, 11]);
  t.is(bytes16ToIp(b), '10.99.2.11');
  for (const ip of ['fd99:2::11', '::1', '::', 'fe80::1:2:3:4', '2001:db8:0:1:1:1:1:1', 'ff02::1']) {
    t.true(ipToBytes16(ip, b), ip);
    t.is(bytes16ToIp(b), ip);
  }
  t.true(ipToBytes16('::ffff:1.2.3.4', b));
  t.is(bytes16ToIp(b), '1.2.3.4');
  t.false(ipToBytes16('nope', b));
});

// TunDevice.read over a stand-in for the addon's tunRead: what the addon reports (a packet
// longer than its slot: size 0, info[INFO_TRUNCATED] + 1, native/tun.cc) and what it must never
// report (a size beyond the slot) both end as size 0 and stats.readTruncated; the other packets
// are untouched.
const readCases: Array<{ desc: string; addon: Array<[size: number, truncated: boolean]>; sizes: number[]; truncated: number; bytes: number }> = [
  { desc: 'packets that fit', addon: [[60, false], [1408, false]], sizes: [60, 1408], truncated: 0, bytes: 1468 },
  { desc: 'the addon reports an oversize packet (size 0, counted)', addon: [[60, false], [0, true], [40, false]], sizes: [60, 0, 40], truncated: 1, bytes: 100 },
  { desc: 'a size beyond the slot is cut to 0 and counted', addon: [[1409, false], [40, false], [65535, false]], sizes: [0, 40, 0], truncated: 2, bytes: 40 },
];
for (const c of readCases) {
  test(`TunDevice.read: ${c.desc}`, (t) => {
    const fake = {
      tunRead(_fd: number, _buf: Uint8Array, offsets: Uint32Array, sizes: Uint32Array, slot: number, head: number, max: number, _v: unknown, info: Int32Array): number {
        const n = Math.min(max, c.addon.length);
        for (let i = 0; i < n; i++) {
          offsets[i] = i * slot + head;
          sizes[i] = c.addon[i]![0];
          if (c.addon[i]![1]) info[INFO_TRUNCATED]!++;
        }
        return n;
      },
    } as unknown as NativeAddon;
    // The constructor is private (TunDevice.open opens a real device); build one over the stand-in.
    const Ctor = TunDevice as unknown as new (nat: NativeAddon, fd: number, name: string, mtu: number, feat: number) => TunDevice;
    const dev = new Ctor(fake, 99, 'tunfake0', 1400, 0);
    const b = new PacketBatch({ count: 4, maxPacket: 1400 });
    t.is(b.capacity, 1408);
    for (let round = 1; round <= 2; round++) {
      t.is(dev.read(b), c.addon.length);
      t.deepEqual([...b.sizes.subarray(0, c.addon.length)], c.sizes);
      t.true([...b.sizes].every((s) => s <= b.capacity), 'no size beyond the slot');
      t.is(dev.stats.readTruncated, c.truncated * round, 'counted once per read, cumulative');
      t.is(dev.stats.readBytes, c.bytes * round);
      t.is(dev.stats.readPackets, c.addon.length * round);
    }
  });
}
