/**
 * IcmpPinger (src/backends/checks.ts) with fake raw sockets: echo request format (IPv4 with
 * its checksum, ICMPv6 without: the kernel fills it), reply matching (identifier, sequence,
 * token, source in any spelling), ICMP errors about our echo, timeouts, send and socket
 * errors, and that a socket is open only while an echo is outstanding. No network.
 */
import test from 'ava';
import { EventEmitter } from 'node:events';
import { IcmpPinger, inetChecksum, type RawSocket } from '../../src/backends/checks';

class FakeRaw extends EventEmitter implements RawSocket {
  readonly sent: Array<{ buf: Buffer; addr: string }> = [];
  closed = false;
  sendError: Error | null = null;
  constructor(readonly family: 4 | 6) {
    super();
  }
  send(buf: Buffer, off: number, len: number, addr: string, cb: (err: Error | null, bytes: number) => void): void {
    this.sent.push({ buf: Buffer.from(buf.subarray(off, off + len)), addr });
    const err = this.sendError;
    setImmediate(() => cb(err, err ? 0 : len));
  }
  close(): void {
    this.closed = true;
    this.emit('close');
  }
}

function harness() {
  const sockets: FakeRaw[] = [];
  const pinger = new IcmpPinger({
    identifier: 0x4242,
    createSocket: (family) => {
      const s = new FakeRaw(family);
      sockets.push(s);
      return s;
    },
  });
  return { pinger, sockets };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

function ipv4Header(src: string, dst: string, proto: number, payloadLen: number): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payloadLen, 2);
  h[8] = 64;
  h[9] = proto;
  Buffer.from(src.split('.').map(Number)).copy(h, 12);
  Buffer.from(dst.split('.').map(Number)).copy(h, 16);
  return h;
}

/** The echo reply a host would send for `req` (same id, seq and data), IPv4 with IP header. */
function reply4(req: Buffer, from: string): Buffer {
  const icmp = Buffer.from(req);
  icmp[0] = 0;
  icmp.writeUInt16BE(0, 2);
  icmp.writeUInt16BE(inetChecksum(icmp), 2);
  return Buffer.concat([ipv4Header(from, '10.0.0.1', 1, icmp.length), icmp]);
}

function reply6(req: Buffer): Buffer {
  const icmp = Buffer.from(req);
  icmp[0] = 129;
  return icmp;
}

test('IPv4: request format and checksum; the matching reply resolves ok; the socket closes when idle', async (t) => {
  const { pinger, sockets } = harness();
  const p = pinger.ping('10.0.0.21', 500);
  t.is(sockets.length, 1);
  t.is(pinger.openSockets, 1);
  const req = sockets[0]!.sent[0]!;
  t.is(req.addr, '10.0.0.21');
  t.is(req.buf.length, 16);
  t.is(req.buf[0], 8, 'echo request');
  t.is(req.buf.readUInt16BE(4), 0x4242, 'identifier');
  t.is(inetChecksum(req.buf), 0, 'valid checksum (RFC 1071: sums to 0)');
  // Noise first: another host, another identifier, a wrong token, an echo request.
  sockets[0]!.emit('message', reply4(req.buf, '10.0.0.99'), '10.0.0.99');
  const other = Buffer.from(req.buf);
  other.writeUInt16BE(0x1111, 4);
  sockets[0]!.emit('message', reply4(other, '10.0.0.21'), '10.0.0.21');
  const badToken = Buffer.from(req.buf);
  badToken[15] ^= 0xff;
  sockets[0]!.emit('message', reply4(badToken, '10.0.0.21'), '10.0.0.21');
  sockets[0]!.emit('message', Buffer.concat([ipv4Header('10.0.0.21', '10.0.0.1', 1, 16), req.buf]), '10.0.0.21');
  t.is(pinger.outstanding, 1);
  sockets[0]!.emit('message', reply4(req.buf, '10.0.0.21'), '10.0.0.21');
  const r = await p;
  t.true(r.ok);
  t.regex(r.reason, /^icmp echo reply in [\d.]+ ms$/);
  t.true(sockets[0]!.closed, 'closed: nothing outstanding');
  t.is(pinger.openSockets, 0);
  pinger.close();
});

test('IPv6: type 128, checksum left to the kernel; reply from a differently spelled source matches', async (t) => {
  const { pinger, sockets } = harness();
  const p = pinger.ping('fd00:3::21', 500);
  const req = sockets[0]!.sent[0]!;
  t.is(sockets[0]!.family, 6);
  t.is(req.buf[0], 128);
  t.is(req.buf.readUInt16BE(2), 0, 'checksum 0: filled by the kernel (RFC 3542 §3.1)');
  sockets[0]!.emit('message', reply6(req.buf), 'fd00:3:0:0:0:0:0:21');
  const r = await p;
  t.true(r.ok);
  pinger.close();
});

test('concurrent echoes share one socket per family and are matched by sequence', async (t) => {
  const { pinger, sockets } = harness();
  const a = pinger.ping('10.0.0.21', 500);
  const b = pinger.ping('10.0.0.22', 500);
  const c = pinger.ping('fd00::1', 500);
  t.is(sockets.length, 2);
  t.is(sockets[0]!.sent.length, 2);
  const [ra, rb] = sockets[0]!.sent;
  t.not(ra!.buf.readUInt16BE(6), rb!.buf.readUInt16BE(6));
  sockets[0]!.emit('message', reply4(rb!.buf, '10.0.0.22'), '10.0.0.22');
  t.true((await b).ok);
  t.false(sockets[0]!.closed, 'still one outstanding');
  sockets[0]!.emit('message', reply4(ra!.buf, '10.0.0.21'), '10.0.0.21');
  t.true((await a).ok);
  t.true(sockets[0]!.closed);
  t.false(sockets[1]!.closed);
  sockets[1]!.emit('message', reply6(sockets[1]!.sent[0]!.buf), 'fd00::1');
  t.true((await c).ok);
  pinger.close();
});

test('timeout: fails after timeoutMs and closes the socket', async (t) => {
  const { pinger, sockets } = harness();
  const t0 = Date.now();
  const r = await pinger.ping('10.0.0.21', 60);
  t.false(r.ok);
  t.is(r.reason, 'icmp timeout after 60 ms');
  t.true(Date.now() - t0 >= 55);
  t.true(sockets[0]!.closed);
  pinger.close();
});

test('ICMP errors about our echo fail at once with their name (IPv4 host unreachable, IPv6 address unreachable)', async (t) => {
  const { pinger, sockets } = harness();
  const p4 = pinger.ping('10.0.0.21', 1000);
  const req4 = sockets[0]!.sent[0]!.buf;
  // Destination unreachable from a router: original IP header + first 8 bytes of our echo.
  const inner = Buffer.concat([ipv4Header('10.0.0.1', '10.0.0.21', 1, 16), req4.subarray(0, 8)]);
  const err = Buffer.concat([Buffer.from([3, 1, 0, 0, 0, 0, 0, 0]), inner]);
  sockets[0]!.emit('message', Buffer.concat([ipv4Header('10.0.0.254', '10.0.0.1', 1, err.length), err]), '10.0.0.254');
  const r4 = await p4;
  t.false(r4.ok);
  t.is(r4.reason, 'icmp destination unreachable (host unreachable) from 10.0.0.254');

  const p6 = pinger.ping('fd00::21', 1000);
  const req6 = sockets[1]!.sent[0]!.buf;
  const ip6 = Buffer.alloc(40);
  ip6[0] = 0x60;
  ip6.writeUInt16BE(16, 4);
  ip6[6] = 58;
  ip6[7] = 64;
  ip6.writeUInt16BE(0xfd00, 24);
  ip6.writeUInt16BE(0x21, 38);
  const err6 = Buffer.concat([Buffer.from([1, 3, 0, 0, 0, 0, 0, 0]), ip6, req6]);
  sockets[1]!.emit('message', err6, 'fd00::fe');
  const r6 = await p6;
  t.false(r6.ok);
  t.is(r6.reason, 'icmp destination unreachable (address unreachable) from fd00::fe');
  pinger.close();
});

test('send errors and socket errors fail the echo; the next echo opens a new socket', async (t) => {
  const { pinger, sockets } = harness();
  const p = pinger.ping('10.0.0.21', 1000);
  sockets[0]!.emit('error', Object.assign(new Error('boom'), { code: 'ENETDOWN' }));
  const r = await p;
  t.false(r.ok);
  t.is(r.reason, 'icmp socket ENETDOWN');
  t.true(sockets[0]!.closed);
  const q = pinger.ping('10.0.0.21', 1000);
  t.is(sockets.length, 2);
  sockets[1]!.sendError = Object.assign(new Error('x'), { code: 'EHOSTUNREACH' });
  // This echo was sent before sendError was set; a second one fails on send.
  const q2 = pinger.ping('10.0.0.22', 1000);
  const r2 = await q2;
  t.is(r2.reason, 'icmp send EHOSTUNREACH');
  sockets[1]!.emit('message', reply4(sockets[1]!.sent[0]!.buf, '10.0.0.21'), '10.0.0.21');
  t.true((await q).ok);
  pinger.close();
});

test('close(): outstanding echoes fail, later pings fail at once, no socket stays open', async (t) => {
  const { pinger, sockets } = harness();
  const p = pinger.ping('10.0.0.21', 1000);
  pinger.close();
  t.is((await p).reason, 'icmp pinger closed');
  t.true(sockets[0]!.closed);
  t.is((await pinger.ping('10.0.0.21', 1000)).reason, 'icmp pinger closed');
  t.is(sockets.length, 1);
  t.is((await new IcmpPinger({ createSocket: () => new FakeRaw(4) }).ping('not-an-ip', 10)).reason, 'icmp: not an IP address: not-an-ip');
  await tick();
});
