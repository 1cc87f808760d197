/**
 * Compliance suite for anything implementing TunLike: the real TunDevice (native-tests/
 * tun-device.test.ts, driven from a network namespace) and FakeTunDevice (test/dataplane/
 * fake-tun.test.ts, driven by a tiny in-memory "kernel" below). Both must pass the same tests,
 * so pipeline unit tests written against the fake hold on the real device.
 *
 * A harness gives the suite a device plus a "kernel side": the kernel owns `kernelAddr` on the
 * device and routes `peerAddr` into it; it can send UDP into the device, listen for UDP the app
 * writes, and answers ICMP echo requests the app writes (as Linux does).
 */
import type { ExecutionContext } from 'ava';
import { isTunlbError, ErrorCodes } from '../../src/errors';
import { FakeTunDevice, type FakeTunOptions } from './fake-tun';
import { PacketBatch, VNET_GSO_TYPE, VNET_HDR_LEN } from '../../src/dataplane/packet-batch';
import type { TunLike } from '../../src/dataplane/tun-device';

export interface UdpListener {
  /** Payloads received so far, in arrival order. */
  received(): Uint8Array[];
  close(): void;
}

export interface TunHarness {
  dev: TunLike;
  /** The kernel's address on the device (IPv4 dotted quad). */
  kernelAddr: string;
  /** An address routed into the device (the app answers for it). */
  peerAddr: string;
  /** Kernel sends one UDP datagram per payload from kernelAddr to peerAddr:dport, into the device. */
  sendUdp(payloads: Uint8Array[], dport: number): Promise<void>;
  /** Kernel listens for UDP on kernelAddr:port (datagrams the app writes into the device). */
  listenUdp(port: number): Promise<UdpListener>;
  /** Tears everything down (device included); idempotent. */
  close(): Promise<void>;
}

export type TunHarnessFactory = () => Promise<TunHarness>;

/** Anything that registers an async AVA test (ava's `test`, `test.serial`, or rootTest). */
export type TestRegistrar = (title: string, impl: (t: ExecutionContext) => Promise<void>) => void;

// ---------------------------------------------------------------------------------------------
// Minimal IPv4 builders (RFC 791 header checksum, RFC 792 ICMP echo, RFC 768 UDP with checksum 0).

export function ip4(s: string): number[] {
  return s.split('.').map(Number);
}

function csum16(b: Uint8Array, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i + 1 < len; i += 2) s += (b[off + i] << 8) | b[off + i + 1];
  if (len & 1) s += b[off + len - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

function ipv4Header(out: Uint8Array, proto: number, src: string, dst: string, totalLen: number, id: number): void {
  out[0] = 0x45;
  out[1] = 0;
  out[2] = totalLen >> 8;
  out[3] = totalLen & 0xff;
  out[4] = id >> 8;
  out[5] = id & 0xff;
  out[6] = 0x40; // DF
  out[7] = 0;
  out[8] = 64;
  out[9] = proto;
  out.set(ip4(src), 12);
  out.set(ip4(dst), 16);
  const c = csum16(out, 0, 20);
  out[10] = c >> 8;
  out[11] = c & 0xff;
}

export function buildUdp4(src: string, sport: number, dst: string, dport: number, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(28 + payload.length);
  ipv4Header(p, 17, src, dst, p.length, 1);
  p[20] = sport >> 8;
  p[21] = sport & 0xff;
  p[22] = dport >> 8;
  p[23] = dport & 0xff;
  const ul = 8 + payload.length;
  p[24] = ul >> 8;
  p[25] = ul & 0xff; // checksum 0: none (IPv4)
  p.set(payload, 28);
  return p;
}

export function buildIcmpEcho4(src: string, dst: string, type: 0 | 8, id: number, seq: number, data: Uint8Array): Uint8Array {
  const p = new Uint8Array(28 + data.length);
  ipv4Header(p, 1, src, dst, p.length, seq);
  p[20] = type;
  p[24] = id >> 8;
  p[25] = id & 0xff;
  p[26] = seq >> 8;
  p[27] = seq & 0xff;
  p.set(data, 28);
  const c = csum16(p, 20, p.length - 20);
  p[22] = c >> 8;
  p[23] = c & 0xff;
  return p;
}

export interface ParsedIp4 {
  proto: number;
  src: string;
  dst: string;
  totalLen: number;
  /** UDP: ports; ICMP: type, code, id, seq. */
  sport: number;
  dport: number;
  icmpType: number;
  icmpId: number;
  icmpSeq: number;
  payload: Uint8Array;
}

export function parseIp4(p: Uint8Array): ParsedIp4 | undefined {
  if (p.length < 20 || p[0] >> 4 !== 4) return undefined;
  const ihl = (p[0] & 15) * 4;
  const r: ParsedIp4 = {
    proto: p[9], src: p.subarray(12, 16).join('.'), dst: p.subarray(16, 20).join('.'), totalLen: (p[2] << 8) | p[3],
    sport: 0, dport: 0, icmpType: -1, icmpId: 0, icmpSeq: 0, payload: p.subarray(ihl + 8),
  };
  if (r.proto === 17) {
    r.sport = (p[ihl] << 8) | p[ihl + 1];
    r.dport = (p[ihl + 2] << 8) | p[ihl + 3];
  } else if (r.proto === 1) {
    r.icmpType = p[ihl];
    r.icmpId = (p[ihl + 4] << 8) | p[ihl + 5];
    r.icmpSeq = (p[ihl + 6] << 8) | p[ihl + 7];
  }
  return r;
}

/** A payload that says which test and which packet it is. */
export function tagged(tag: number, i: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let k = 0; k < len; k++) b[k] = (tag * 31 + i * 7 + k) & 0xff;
  b[0] = tag;
  b[1] = i;
  return b;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}

/**
 * Reads through onReadable until `want` packets matching `keep` were seen or the timeout;
 * returns copies of them. Leaves polling stopped.
 */
export async function collect(
  dev: TunLike, batch: PacketBatch, want: number, timeoutMs: number, keep: (p: Uint8Array) => boolean = () => true,
): Promise<Uint8Array[]> {
  const got: Uint8Array[] = [];
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done(): void {
      clearTimeout(timer);
      dev.stop();
      resolve();
    }
    dev.onReadable(() => {
      let n: number;
      while ((n = dev.read(batch)) > 0) {
        for (let i = 0; i < n; i++) {
          const p = batch.packet(i);
          if (keep(p)) got.push(p.slice());
        }
      }
      if (got.length >= want) done();
    });
  });
  return got;
}

function isUdpTo(dport: number): (p: Uint8Array) => boolean {
  return (p) => {
    const q = parseIp4(p);
    return q !== undefined && q.proto === 17 && q.dport === dport;
  };
}

// ---------------------------------------------------------------------------------------------
// The suite.

export function runTunCompliance(test: TestRegistrar, name: string, factory: TunHarnessFactory): void {
  const withHarness = (title: string, body: (t: ExecutionContext, h: TunHarness) => Promise<void>) =>
    test(`${name}: ${title}`, async (t) => {
      const h = await factory();
      try {
        await body(t, h);
      } finally {
        await h.close();
      }
    });

  withHarness('reports name, mtu and features', async (t, h) => {
    t.true(h.dev.name.length > 0);
    t.true(h.dev.mtu >= 68);
    for (const k of ['vnetHdr', 'csum', 'tso4', 'tso6', 'multiQueue'] as const) t.is(typeof h.dev.features[k], 'boolean');
    t.is(h.dev.maxPacketSize, h.dev.features.tso4 || h.dev.features.tso6 ? 65535 : h.dev.mtu);
    t.false(h.dev.closed);
  });

  withHarness('read returns 0 when nothing is waiting', async (t, h) => {
    const b = new PacketBatch({ count: 8, maxPacket: h.dev.maxPacketSize });
    t.is(h.dev.read(b), 0);
    t.is(h.dev.read(b, 1), 0);
  });

  withHarness('batch read: many packets per call, sizes/offsets right, headroom untouched', async (t, h) => {
    const dport = 40001;
    const payloads = Array.from({ length: 20 }, (_, i) => tagged(1, i, 100 + i));
    const b = new PacketBatch({ count: 32, maxPacket: h.dev.maxPacketSize, headroom: 96 });
    b.buf.fill(0xa5);
    await h.sendUdp(payloads, dport);
    await sleep(30);
    const first = h.dev.read(b, 5);
    t.is(first, 5, 'read(batch, 5) stops at max');
    const seen: Uint8Array[] = [];
    for (let i = 0; i < first; i++) seen.push(b.packet(i).slice());
    b.buf.fill(0xa5);
    let n = 0;
    const end = Date.now() + 2000;
    while (seen.length < 20 && Date.now() < end) {
      n = h.dev.read(b);
      if (n === 0) {
        await sleep(10);
        continue;
      }
      for (let i = 0; i < n; i++) {
        t.is(b.offsets[i], i * b.slotSize + b.headroom, `offset of slot ${i}`);
        const q = parseIp4(b.packet(i));
        if (q === undefined || q.proto !== 17 || q.dport !== dport) continue; // stray kernel traffic
        t.is(q.totalLen, b.sizes[i], 'size = IPv4 total length');
        seen.push(b.packet(i).slice());
      }
      // Headroom and the slot tail after the packet are untouched.
      for (let s = 0; s < b.count; s++) {
        const start = s * b.slotSize;
        const pktEnd = s < n ? b.offsets[s] + b.sizes[s] : start + b.headroom;
        let clean = true;
        for (let k = start; k < start + b.headroom; k++) if (b.buf[k] !== 0xa5) clean = false;
        for (let k = pktEnd; k < start + b.slotSize; k++) if (b.buf[k] !== 0xa5) clean = false;
        if (!clean) t.fail(`slot ${s}: bytes outside the packet were written`);
      }
      b.buf.fill(0xa5);
    }
    t.true(n > 1 || seen.length === 20, 'more than one packet per read call');
    t.is(seen.length, 20);
    const got = seen.map((p) => parseIp4(p)!).sort((x, y) => x.payload[1] - y.payload[1]);
    for (let i = 0; i < 20; i++) {
      t.is(got[i].src, h.kernelAddr);
      t.is(got[i].dst, h.peerAddr);
      t.deepEqual(got[i].payload, payloads[i]);
    }
    if (h.dev.features.vnetHdr) t.is(b.vnet[VNET_GSO_TYPE], 0, 'a small UDP packet is not GSO');
    t.is(h.dev.read(b), 0, 'drained');
  });

  withHarness('write many packets (at any offset); the kernel receives them', async (t, h) => {
    const port = 40002;
    const l = await h.listenUdp(port);
    try {
      const b = new PacketBatch({ count: 16, maxPacket: h.dev.maxPacketSize });
      const payloads = Array.from({ length: 16 }, (_, i) => tagged(2, i, 64 + 3 * i));
      for (let i = 0; i < 16; i++) {
        b.setPacket(i, buildUdp4(h.peerAddr, 50000 + i, h.kernelAddr, port, payloads[i]));
        b.clearVnet(i);
      }
      // Move odd packets into their headroom, as an encapsulating stage would.
      for (let i = 1; i < 16; i += 2) {
        const o = b.offsets[i];
        b.buf.copyWithin(o - 40, o, o + b.sizes[i]);
        b.offsets[i] = o - 40;
      }
      t.is(h.dev.write(b, 16), 16);
      t.true(await until(() => l.received().length >= 16, 2000), 'kernel got all 16');
      const got = l.received().slice().sort((x, y) => x[1] - y[1]);
      t.deepEqual(got, payloads);
      t.is(h.dev.stats.writeErrors, 0);
    } finally {
      l.close();
    }
  });

  withHarness('a packet outside the buffer is skipped and counted, the rest written', async (t, h) => {
    const b = new PacketBatch({ count: 4, maxPacket: h.dev.maxPacketSize });
    const port = 40003;
    const l = await h.listenUdp(port);
    try {
      for (let i = 0; i < 4; i++) {
        b.setPacket(i, buildUdp4(h.peerAddr, 50000, h.kernelAddr, port, tagged(3, i, 20)));
        b.clearVnet(i);
      }
      b.offsets[1] = b.buf.length - 4; // runs past the end
      t.is(h.dev.write(b, 4), 3);
      t.is(h.dev.stats.writeErrors, 1);
      t.true(await until(() => l.received().length >= 3, 2000));
    } finally {
      l.close();
    }
  });

  withHarness('an ICMP echo request written by the app is answered through read', async (t, h) => {
    const b = new PacketBatch({ count: 8, maxPacket: h.dev.maxPacketSize });
    for (let seq = 1; seq <= 3; seq++) {
      b.setPacket(seq - 1, buildIcmpEcho4(h.peerAddr, h.kernelAddr, 8, 0x1234, seq, tagged(4, seq, 32)));
      b.clearVnet(seq - 1);
    }
    t.is(h.dev.write(b, 3), 3);
    const replies = await collect(h.dev, b, 3, 2000, (p) => {
      const q = parseIp4(p);
      return q !== undefined && q.proto === 1 && q.icmpType === 0 && q.icmpId === 0x1234;
    });
    t.is(replies.length, 3);
    for (const r of replies) {
      const q = parseIp4(r)!;
      t.is(q.src, h.kernelAddr);
      t.is(q.dst, h.peerAddr);
      t.deepEqual(q.payload, tagged(4, q.icmpSeq, 32));
    }
  });

  withHarness('onReadable is level-triggered and stop() pauses it', async (t, h) => {
    const dport = 40004;
    const b = new PacketBatch({ count: 8, maxPacket: h.dev.maxPacketSize });
    let calls = 0;
    let got = 0;
    h.dev.onReadable(() => {
      calls++;
      const n = h.dev.read(b, 1); // one per call: the callback must come again
      for (let i = 0; i < n; i++) if (isUdpTo(dport)(b.packet(i))) got++;
    });
    await h.sendUdp([tagged(5, 0, 10), tagged(5, 1, 10), tagged(5, 2, 10), tagged(5, 3, 10)], dport);
    t.true(await until(() => got >= 4, 2000), 'all four read, one per callback');
    t.true(calls >= 4);
    h.dev.stop();
    const before = calls;
    await h.sendUdp([tagged(5, 9, 10)], dport);
    await sleep(100);
    t.is(calls, before, 'no callback after stop()');
    const n = h.dev.read(b);
    t.true(n >= 1, 'the packet waited');
  });

  withHarness('waiting for packets never blocks the event loop', async (t, h) => {
    let ticks = 0;
    const iv = setInterval(() => ticks++, 5);
    h.dev.onReadable(() => {
      const b = new PacketBatch({ count: 1, maxPacket: h.dev.maxPacketSize });
      h.dev.read(b);
    });
    // A read that blocked would freeze the loop: no tick ever again (and the test times out).
    // Wait on the condition, not a fixed time: a loaded 2-core machine may tick a 5 ms interval
    // only a few times in 200 ms, yet a loop that runs gets there.
    const deadline = Date.now() + 10_000;
    while (ticks < 10 && Date.now() < deadline) await sleep(20);
    clearInterval(iv);
    h.dev.stop();
    t.true(ticks >= 10, `setInterval ticked ${ticks} times in 10 s while the device waited for packets`);
  });

  withHarness('close is idempotent and any later use throws DEVICE_CLOSED', async (t, h) => {
    const b = new PacketBatch({ count: 2, maxPacket: h.dev.maxPacketSize });
    h.dev.onReadable(() => undefined);
    h.dev.close();
    t.notThrows(() => h.dev.close());
    t.true(h.dev.closed);
    const isClosed = (e: unknown) => isTunlbError(e, ErrorCodes.DEVICE_CLOSED);
    for (const f of [() => h.dev.read(b), () => h.dev.write(b, 1), () => h.dev.onReadable(() => undefined), () => h.dev.stop()]) {
      const e = t.throws(f);
      t.true(isClosed(e), String(e));
    }
  });

  withHarness('a batch too small for the device is refused', async (t, h) => {
    if (h.dev.maxPacketSize <= 100) return void t.pass();
    const b = new PacketBatch({ count: 2, maxPacket: 100, headroom: 64 });
    const e = t.throws(() => h.dev.read(b));
    t.true(isTunlbError(e, ErrorCodes.DEVICE_IO));
  });
}

// ---------------------------------------------------------------------------------------------
// The fake's "kernel": answers what Linux would for the suite (UDP delivery, ICMP echo).

export function fakeTunHarness(opts: FakeTunOptions = {}): TunHarnessFactory {
  return async () => {
    const dev = new FakeTunDevice(opts);
    const kernelAddr = '10.77.0.1';
    const peerAddr = '10.77.0.2';
    const listeners = new Map<number, Uint8Array[]>();
    dev.onWrite = (w) => {
      const q = parseIp4(w.packet);
      if (q === undefined || q.dst !== kernelAddr) return;
      if (q.proto === 17) listeners.get(q.dport)?.push(q.payload.slice());
      else if (q.proto === 1 && q.icmpType === 8) {
        const reply = buildIcmpEcho4(kernelAddr, q.src, 0, q.icmpId, q.icmpSeq, q.payload);
        setImmediate(() => {
          if (!dev.closed) dev.inject(reply);
        });
      }
    };
    return {
      dev,
      kernelAddr,
      peerAddr,
      async sendUdp(payloads, dport) {
        for (const p of payloads) dev.inject(buildUdp4(kernelAddr, 33333, peerAddr, dport, p));
      },
      async listenUdp(port) {
        const got: Uint8Array[] = [];
        listeners.set(port, got);
        return { received: () => got, close: () => listeners.delete(port) };
      },
      async close() {
        dev.close();
      },
    };
  };
}

export { VNET_HDR_LEN };
