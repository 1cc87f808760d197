/**
 * Junk on the control port (issue 12, "Junk on the control port"): a bounded generator of
 * spoofed UDP datagrams toward balancers' control ports, for the lab and its tests. It sends
 * whole Ethernet frames through an AF_PACKET socket (src/dataplane/l2-socket.ts), so the IPv4
 * source can be any address (e.g. a balancer's: the datagrams claim to come from lb1). Run it
 * as root inside a lab namespace attached to lbnet, e.g. the router, on the bridge:
 *
 *   ip netns exec tunlb-router node --import tsx scripts/control-junk.ts \
 *     --iface br-lb --src 10.99.2.11 --to 10.99.2.12@<lb2 lbnet0 MAC> --to 239.99.0.1 \
 *     --port 7946 --pps 50000 --size 16-200 --duration-s 10 [--shape random|framed] [--json]
 *
 * Options
 *   --iface NAME       interface to send on (its MAC is the frames' source MAC: a spoofed IP
 *                      source with our own MAC, so the bridge's forwarding table is not poisoned)
 *   --src IPV4         IPv4 source address of every datagram (the spoofed peer)
 *   --to IPV4[@MAC]    a destination; repeat for several (datagrams alternate between them).
 *                      A multicast group needs no MAC (01:00:5e + low 23 bits, RFC 1112 §6.4);
 *                      a unicast one needs its next hop's MAC
 *   --port N           destination UDP port (default 7946)
 *   --sport N          source UDP port (default: random per datagram; a balancer's own port,
 *                      e.g. 7946, makes the junk look like its traffic down to the UDP header)
 *   --pps N            datagrams per second, paced (default 1000; at most 200000)
 *   --size A[-B]       UDP payload bytes, uniform in A..B (default 16-200; at most 65000). A
 *                      datagram longer than the interface MTU is sent as IPv4 fragments
 *                      (RFC 791), each <= MTU, offsets in 8-byte units
 *   --shape S          payload: `random` bytes (default), or `framed`: a well-formed
 *                      SignedEnvelope outer frame (field 1 = random bytes, field 2 = a random
 *                      32-byte "MAC"), the cheapest junk that a receiver must verify by HMAC
 *                      unless it checks more before
 *   --cluster-id HEX   with --shape framed: the envelope starts as a genuine one does
 *                      (version 1, then this 16-hex-digit cluster id, little-endian on the wire:
 *                      docs/protocol.md "Receive path"), so every datagram reaches the receiver's
 *                      HMAC: the most expensive junk without the key
 *   --payload HEX      send exactly these payloads (repeat the option for several), in turn,
 *                      instead of generated junk: replays of captured datagrams, forgeries
 *   --count N          stop after N datagrams (default: unbounded within --duration-s; with
 *                      --payload: one of each)
 *   --duration-s S     how long (default 10; at most 600). A hard timer exits at S + 5 s
 *   --json             one JSON summary line at the end: {"sent":..,"frames":..,"pps":..}
 *
 * The UDP checksum is 0 ("no checksum", RFC 768), so the receiving kernel does not drop the
 * datagrams before the socket: they reach the balancer's socket as junk would. Payloads come
 * from a pool of 4096 prebuilt datagrams (random at start), sent in batches of up to 256 frames
 * (sendmmsg); the pacing keeps the long-run rate at --pps. Exit status 0, 2 on a usage error.
 */
import { isIPv4 } from 'node:net';
import { randomBytes, randomInt } from 'node:crypto';
import { L2Socket, parseMac } from '../src/dataplane/l2-socket';

interface Dest {
  ip: Uint8Array;
  mac: Uint8Array;
}

interface Options {
  iface: string;
  src: Uint8Array;
  to: Dest[];
  port: number;
  /** Source port, or 0 for a random one per datagram. */
  sport: number;
  pps: number;
  sizeMin: number;
  sizeMax: number;
  shape: 'random' | 'framed';
  /** 8 bytes (little-endian) of the cluster id for framed junk, or null. */
  clusterId: Uint8Array | null;
  payloads: Uint8Array[];
  count: number;
  durationS: number;
  json: boolean;
}

const USAGE =
  'usage: control-junk.ts --iface NAME --src IPV4 --to IPV4[@MAC] [--to ...] [--port 7946] [--sport N] [--pps 1000] ' +
  '[--size 16-200] [--shape random|framed] [--duration-s 10] [--json]';

class UsageError extends Error {}

function ip4(text: string, what: string): Uint8Array {
  if (!isIPv4(text)) throw new UsageError(`${what} must be an IPv4 address, got "${text}"`);
  return Uint8Array.from(text.split('.').map(Number));
}

function parseArgs(argv: string[]): Options {
  const o: Options = { iface: '', src: new Uint8Array(4), to: [], port: 7946, sport: 0, pps: 1000, sizeMin: 16, sizeMax: 200, shape: 'random', clusterId: null, payloads: [], count: 0, durationS: 10, json: false };
  let haveSrc = false;
  const num = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`${name} must be a number in ${min}..${max}, got ${v ?? '(nothing)'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--json':
        o.json = true;
        continue;
      case '--iface':
        if (v === undefined) throw new UsageError('--iface needs a value');
        o.iface = v;
        break;
      case '--src':
        o.src = ip4(v ?? '', '--src');
        haveSrc = true;
        break;
      case '--to': {
        const [addr, macText] = (v ?? '').split('@');
        const ip = ip4(addr ?? '', '--to');
        const mac = new Uint8Array(6);
        if (ip[0]! >= 224 && ip[0]! <= 239) {
          mac.set([0x01, 0x00, 0x5e, ip[1]! & 0x7f, ip[2]!, ip[3]!]);
        } else if (macText === undefined || !parseMac(macText, mac)) {
          throw new UsageError(`--to ${v}: a unicast destination needs its MAC (IPV4@aa:bb:cc:dd:ee:ff)`);
        }
        o.to.push({ ip, mac });
        break;
      }
      case '--port':
        o.port = Math.floor(num(a, v, 1, 65535));
        break;
      case '--sport':
        o.sport = Math.floor(num(a, v, 1, 65535));
        break;
      case '--pps':
        o.pps = num(a, v, 1, 200000);
        break;
      case '--size': {
        const m = /^(\d+)(?:-(\d+))?$/.exec(v ?? '');
        if (!m) throw new UsageError(`--size must be N or A-B, got ${v ?? '(nothing)'}`);
        o.sizeMin = Number(m[1]);
        o.sizeMax = Number(m[2] ?? m[1]);
        if (o.sizeMin < 1 || o.sizeMax > 65000 || o.sizeMin > o.sizeMax) throw new UsageError('--size must be within 1..65000 and A <= B');
        break;
      }
      case '--shape':
        if (v !== 'random' && v !== 'framed') throw new UsageError('--shape must be random or framed');
        o.shape = v;
        break;
      case '--duration-s':
        o.durationS = num(a, v, 0.1, 600);
        break;
      case '--cluster-id': {
        if (!/^[0-9a-f]{16}$/i.test(v ?? '')) throw new UsageError('--cluster-id must be 16 hex digits');
        o.clusterId = Uint8Array.from(Buffer.from(v!, 'hex').reverse());
        break;
      }
      case '--payload': {
        if (!/^([0-9a-f]{2})+$/i.test(v ?? '') || v!.length > 130000) throw new UsageError('--payload must be hex bytes (at most 65000)');
        o.payloads.push(Uint8Array.from(Buffer.from(v!, 'hex')));
        break;
      }
      case '--count':
        o.count = Math.floor(num(a, v, 1, 1e9));
        break;
      default:
        throw new UsageError(`unknown option "${a}"`);
    }
    i++;
  }
  if (o.iface === '' || !haveSrc || o.to.length === 0) throw new UsageError('--iface, --src and at least one --to are required');
  return o;
}

/**
 * A SignedEnvelope-shaped payload of exactly `len` bytes (len >= 37): 0x0a L <L bytes> 0x12
 * 0x20 <32 bytes>; with `clusterId`, the L bytes start with 0x08 0x01 0x11 <cluster id>.
 */
function framedPayload(len: number, clusterId: Uint8Array | null): Uint8Array {
  const p = randomBytes(len);
  // 1 (tag) + varint(L) + L + 34 = len; varint is 1 byte below 128, else 2 (len <= 65000).
  let L = len - 36;
  let vlen = 1;
  if (L >= 128) {
    L = len - 37;
    vlen = 2;
  }
  if (L < 1) return p; // too short to frame: stays random
  p[0] = 0x0a;
  if (vlen === 1) p[1] = L;
  else {
    p[1] = (L & 0x7f) | 0x80;
    p[2] = L >> 7;
  }
  const macAt = 1 + vlen + L;
  if (clusterId !== null && L >= 11) {
    const e = 1 + vlen;
    p[e] = 0x08;
    p[e + 1] = 0x01;
    p[e + 2] = 0x11;
    p.set(clusterId, e + 3);
  }
  p[macAt] = 0x12;
  p[macAt + 1] = 0x20;
  return p;
}

/** IPv4 header checksum (RFC 791) of buf[off..off+20). */
function ipChecksum(buf: Uint8Array, off: number): number {
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += (buf[off + i]! << 8) | buf[off + i + 1]!;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/**
 * The frames of one datagram (one, or IPv4 fragments when it exceeds the MTU) appended to
 * `out`: each frame = Ethernet (14) + IPv4 (20) + [UDP (8) on the first] + data.
 */
function buildFrames(o: Options, srcMac: Uint8Array, mtu: number, dest: Dest, payload: Uint8Array, ipId: number, out: Uint8Array[]): void {
  const udp = new Uint8Array(8 + payload.length);
  const sport = o.sport || randomInt(1024, 65536);
  udp[0] = sport >> 8;
  udp[1] = sport & 0xff;
  udp[2] = o.port >> 8;
  udp[3] = o.port & 0xff;
  udp[4] = udp.length >> 8;
  udp[5] = udp.length & 0xff;
  // bytes 6-7: checksum 0 = none (RFC 768)
  udp.set(payload, 8);
  const maxData = (mtu - 20) & ~7; // fragment data in 8-byte units
  for (let at = 0; at < udp.length; at += maxData) {
    const n = Math.min(maxData, udp.length - at);
    const more = at + n < udp.length;
    const f = new Uint8Array(14 + 20 + n);
    f.set(dest.mac, 0);
    f.set(srcMac, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    const ip = 14;
    f[ip] = 0x45;
    const total = 20 + n;
    f[ip + 2] = total >> 8;
    f[ip + 3] = total & 0xff;
    f[ip + 4] = (ipId >> 8) & 0xff;
    f[ip + 5] = ipId & 0xff;
    const fo = (at >> 3) | (more ? 0x2000 : 0);
    f[ip + 6] = fo >> 8;
    f[ip + 7] = fo & 0xff;
    f[ip + 8] = dest.ip[0]! >= 224 ? 1 : 64; // TTL (1 for multicast, as the balancers send it)
    f[ip + 9] = 17;
    f.set(o.src, ip + 12);
    f.set(dest.ip, ip + 16);
    const c = ipChecksum(f, ip);
    f[ip + 10] = c >> 8;
    f[ip + 11] = c & 0xff;
    f.set(udp.subarray(at, at + n), ip + 20);
    out.push(f);
  }
}

async function main(): Promise<void> {
  let o: Options;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`control-junk: ${e.message}\n${USAGE}\n`);
      process.exit(2);
    }
    throw e;
  }
  const hard = setTimeout(() => process.exit(0), (o.durationS + 5) * 1000);
  hard.unref();
  const sock = L2Socket.open({ interface: o.iface, sndBuf: 8 << 20 });
  const mtu = sock.mtu;

  // The pool: POOL datagrams, each a list of frames, laid out in one batch buffer.
  const POOL = o.payloads.length > 0 ? o.payloads.length * o.to.length : 4096;
  const limit = o.count > 0 ? o.count : o.payloads.length > 0 ? POOL : Infinity;
  const frames: Uint8Array[] = [];
  const firstFrame = new Uint32Array(POOL + 1);
  for (let d = 0; d < POOL; d++) {
    firstFrame[d] = frames.length;
    const len = randomInt(o.sizeMin, o.sizeMax + 1);
    const payload =
      o.payloads.length > 0
        ? o.payloads[Math.floor(d / o.to.length)]!
        : o.shape === 'framed'
          ? framedPayload(len, o.clusterId)
          : randomBytes(len);
    buildFrames(o, sock.mac, mtu, o.to[d % o.to.length]!, payload, d, frames);
  }
  firstFrame[POOL] = frames.length;
  let bytes = 0;
  for (const f of frames) bytes += f.length;
  const buf = new Uint8Array(bytes);
  const offsets = new Uint32Array(frames.length);
  const sizes = new Uint32Array(frames.length);
  let at = 0;
  frames.forEach((f, i) => {
    buf.set(f, at);
    offsets[i] = at;
    sizes[i] = f.length;
    at += f.length;
  });
  // A sliding view over the pool's frame arrays for one send call.
  const view = { buf, offsets, sizes };
  const idOff = 14 + 4;

  const t0 = performance.now();
  const end = t0 + o.durationS * 1000;
  let sent = 0; // datagrams
  let sentFrames = 0;
  let refused = 0;
  let next = 0; // pool index
  let ipId = POOL;
  while (performance.now() < end && sent < limit) {
    const due = Math.min(limit, Math.floor(((performance.now() - t0) / 1000) * o.pps)) - sent;
    if (due <= 0) {
      await new Promise((r) => setTimeout(r, 1));
      continue;
    }
    // Up to `due` datagrams (at most 256 frames) from the pool, wrapping around.
    let dgrams = 0;
    const f0 = firstFrame[next]!;
    let f1 = f0;
    while (dgrams < due && next < POOL && f1 - f0 < 256) {
      // A fresh IP id per datagram so fragments of repeated pool entries never mix.
      ipId = (ipId + 1) & 0xffff;
      for (let f = firstFrame[next]!; f < firstFrame[next + 1]!; f++) {
        const o2 = offsets[f]! + idOff;
        buf[o2] = ipId >> 8;
        buf[o2 + 1] = ipId & 0xff;
        // The id is in the header checksum: recompute it (RFC 1624 would do too).
        buf[o2 + 6] = 0;
        buf[o2 + 7] = 0;
        const c = ipChecksum(buf, offsets[f]! + 14);
        buf[o2 + 6] = c >> 8;
        buf[o2 + 7] = c & 0xff;
      }
      f1 = firstFrame[next + 1]!;
      next++;
      dgrams++;
    }
    const count = f1 - f0;
    const n = sock.send({ buf: view.buf, offsets: offsets.subarray(f0, f1), sizes: sizes.subarray(f0, f1) }, count, null, null);
    sentFrames += n;
    refused += count - n;
    sent += dgrams;
    if (next >= POOL) next = 0;
    if (count - n > 0) await new Promise((r) => setImmediate(r)); // the queue is full: let it drain
  }
  const secs = (performance.now() - t0) / 1000;
  sock.close();
  const summary = { sent, frames: sentFrames, refusedFrames: refused, seconds: Math.round(secs * 100) / 100, pps: Math.round(sent / secs), mtu };
  if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else process.stdout.write(`control-junk: ${sent} datagrams (${sentFrames} frames, ${refused} refused) in ${summary.seconds} s = ${summary.pps}/s\n`);
  clearTimeout(hard);
}

void main().catch((e: unknown) => {
  process.stderr.write(`control-junk: ${(e as Error).message ?? String(e)}\n`);
  process.exit(1);
});
