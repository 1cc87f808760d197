// The parts of the native wrappers that need no root and no kernel: addon loading errors,
// errno → TunlbError mapping, address conversion.
import test from 'ava';
import { ErrorCodes, isTunlbError, type ErrorCode } from '../../src/errors';
import { addonCandidates, loadNative, netnsPath } from '../../src/dataplane/native';
import { mapTunOpenError } from '../../src/dataplane/tun-device';
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
