/**
 * Property tests (fast-check): random valid packets survive NAT with checksums that verify from
 * scratch; random or mutated bytes never make the parser or the rewrites throw or write
 * outside the packet.
 */
import test from 'ava';
import fc from 'fast-check';
import { parsePacket } from '../../src/packet/parse';
import { PacketInfo } from '../../src/packet/packet-info';
import { rewriteDst, rewriteSrc, CSUM_FULL, CSUM_PARTIAL } from '../../src/packet/nat';
import { keyToString } from '../../src/packet/flow-key';
import { formatIp } from '../../src/packet/addr';
import { PacketResult as R, PACKET_RESULT_COUNT } from '../../src/packet/result';
import * as P from '../helpers/packets';

const info = new PacketInfo();

const addr4 = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => formatIp(b, 0, 4));
const addr6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => formatIp(b, 0, 16));
const port = fc.integer({ min: 0, max: 0xffff });
const payload = fc.uint8Array({ maxLength: 80 });
const ext6 = fc.array(
  fc.record({ type: fc.constantFrom(43, 60, 51), n: fc.integer({ min: 1, max: 3 }) }).map((e) => ({ type: e.type, len: e.type === 51 ? 12 + 4 * (e.n - 1) : 8 * e.n })),
  { maxLength: 4 },
);

interface Spec {
  v6: boolean;
  kind: 'tcp' | 'udp' | 'echo';
  src: string;
  dst: string;
  sport: number;
  dport: number;
  payload: Uint8Array;
  flags: number;
  udpZero: boolean;
  hbh: boolean;
  ext: Array<{ type: number; len: number }>;
  ipOpts: number;
  newAddr: string;
  newPort: number;
}

const spec: fc.Arbitrary<Spec> = fc
  .record({
    v6: fc.boolean(),
    kind: fc.constantFrom('tcp' as const, 'udp' as const, 'echo' as const),
    a4: fc.tuple(addr4, addr4, addr4),
    a6: fc.tuple(addr6, addr6, addr6),
    sport: port,
    dport: port,
    payload,
    flags: fc.integer({ min: 0, max: 255 }),
    udpZero: fc.boolean(),
    hbh: fc.boolean(),
    ext: ext6,
    ipOpts: fc.integer({ min: 0, max: 10 }),
    newPort: port,
  })
  .map((r) => {
    const [src, dst, newAddr] = r.v6 ? r.a6 : r.a4;
    return { ...r, src, dst, newAddr } as Spec;
  });

function build(s: Spec, dst = s.dst, dport = s.dport, src = s.src, sport = s.sport): Uint8Array {
  const o = { options: new Uint8Array(s.ipOpts * 4).fill(1), ext: [...(s.hbh ? [{ type: 0 }] : []), ...s.ext] };
  if (s.kind === 'tcp') return s.v6 ? P.tcp6(src, dst, sport, dport, s.flags, s.payload, o) : P.tcp4(src, dst, sport, dport, s.flags, s.payload, o);
  if (s.kind === 'udp') return s.v6 ? P.udp6(src, dst, sport, dport, s.payload, o) : P.udp4(src, dst, sport, dport, s.payload, { ...o, zeroChecksum: s.udpZero });
  // echo: the identifier is `sport` and stands for both ports
  return s.v6 ? P.icmp6Echo(src, dst, 128, sport, 1, s.payload, o) : P.icmp4Echo(src, dst, 8, sport, 1, s.payload, o);
}

const ep = (v6: boolean, a: string, p: number): string => (v6 ? `[${a}]:${p}` : `${a}:${p}`);
const pname = (s: Spec): string => (s.kind === 'echo' ? (s.v6 ? 'icmpv6' : 'icmp') : s.kind);

/** Zeroes the L4 checksum field so that 0x0000 / 0xffff (both valid one's-complement zeros) compare equal. */
function normCsum(p: Uint8Array): string {
  const q = p.slice();
  const L = P.layout(q);
  const co = L.l4Off + (L.proto === 6 ? 16 : L.proto === 17 ? 6 : 2);
  const v = (q[co]! << 8) | q[co + 1]!;
  if (v === 0xffff && !(L.proto === 17)) {
    q[co] = 0;
    q[co + 1] = 0;
  }
  return P.hex(q);
}

test('property: random packets parse to the expected key; rewriteDst gives valid checksums and the expected packet', (t) => {
  fc.assert(
    fc.property(spec, (s) => {
      const pkt = build(s);
      if (parsePacket(pkt, 0, pkt.length, info) !== R.OK) return false;
      const id = s.sport;
      const expKey = s.kind === 'echo' ? `${pname(s)} ${ep(s.v6, s.src, id)} -> ${ep(s.v6, s.dst, id)}` : `${pname(s)} ${ep(s.v6, s.src, s.sport)} -> ${ep(s.v6, s.dst, s.dport)}`;
      if (keyToString(info.key) !== expKey) return false;
      const a = P.ip(s.newAddr);
      if (rewriteDst(pkt, 0, info, a, 0, s.newPort, CSUM_FULL) !== R.OK) return false;
      if (!P.validChecksums(pkt)) return false;
      const exp = s.kind === 'echo' ? build({ ...s, sport: s.newPort }, s.newAddr) : build(s, s.newAddr, s.newPort);
      return normCsum(pkt) === normCsum(exp);
    }),
    { numRuns: 400 },
  );
  t.pass();
});

test('property: rewriteSrc then back restores the packet (up to the one\'s-complement zero)', (t) => {
  fc.assert(
    fc.property(spec, (s) => {
      const pkt = build(s);
      const orig = pkt.slice();
      const a = P.ip(s.newAddr);
      if (parsePacket(pkt, 0, pkt.length, info) !== R.OK) return false;
      if (rewriteSrc(pkt, 0, info, a, 0, s.newPort, CSUM_FULL) !== R.OK || !P.validChecksums(pkt)) return false;
      if (parsePacket(pkt, 0, pkt.length, info) !== R.OK) return false;
      if (rewriteSrc(pkt, 0, info, P.ip(s.src), 0, s.sport, CSUM_FULL) !== R.OK || !P.validChecksums(pkt)) return false;
      return normCsum(pkt) === normCsum(orig);
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('property: PARTIAL mode: rewrite then completing the checksum gives a valid packet', (t) => {
  fc.assert(
    fc.property(spec, fc.boolean(), (s, dst) => {
      if (s.kind === 'udp' && s.udpZero && !s.v6) return true; // no checksum to offload
      const pkt = P.toPartial(build(s));
      if (parsePacket(pkt, 0, pkt.length, info) !== R.OK) return false;
      const a = P.ip(s.newAddr);
      const r = dst ? rewriteDst(pkt, 0, info, a, 0, s.newPort, CSUM_PARTIAL) : rewriteSrc(pkt, 0, info, a, 0, s.newPort, CSUM_PARTIAL);
      return r === R.OK && P.validChecksums(P.completePartial(pkt));
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('property: ICMP errors about random packets, any quote length: translation keeps every checksum valid', (t) => {
  fc.assert(
    fc.property(spec, fc.boolean(), fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 4 }), (s, toBackend, extra, typeIdx) => {
      const inner = build({ ...s, udpZero: false });
      const L = P.layout(inner);
      const embedLen = Math.min(inner.length, L.l4Off + 8 + extra);
      const router = s.v6 ? 'fd99:1::1' : '10.99.1.1';
      const err = s.v6
        ? P.icmp6Error([1, 2, 3, 4, 1][typeIdx]!, 0, router, s.src, inner, { embedLen })
        : P.icmp4Error([3, 11, 12, 3, 3][typeIdx]!, typeIdx === 3 ? 4 : 0, router, s.src, inner, { embedLen });
      if (parsePacket(err, 0, err.length, info) !== R.OK || info.isIcmpError !== 1) return false;
      const a = P.ip(s.newAddr);
      const r = toBackend ? rewriteDst(err, 0, info, a, 0, s.newPort, CSUM_FULL) : rewriteSrc(err, 0, info, a, 0, s.newPort, CSUM_FULL);
      return r === R.OK && P.checksumErrors(err).length === 0;
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('property: fragments rewritten one by one reassemble into a valid datagram', (t) => {
  fc.assert(
    fc.property(spec, fc.integer({ min: 1, max: 6 }), (s, k) => {
      const pkt = build({ ...s, payload: new Uint8Array(s.payload.length + 60).fill(5) });
      const frags = P.fragmentPacket(pkt, k * 16 + 16);
      const a = P.ip(s.newAddr);
      for (const f of frags) {
        if (parsePacket(f, 0, f.length, info) !== R.OK) return false;
        if (rewriteDst(f, 0, info, a, 0, s.newPort, CSUM_FULL) !== R.OK) return false;
      }
      return P.validChecksums(P.reassemble(frags));
    }),
    { numRuns: 200 },
  );
  t.pass();
});

function safeRun(buf: Uint8Array, off: number, len: number, addr: Uint8Array, p: number, mode: number): boolean {
  const r = parsePacket(buf, off, len, info);
  if (!Number.isInteger(r) || r < 0 || r >= PACKET_RESULT_COUNT) return false;
  if (r !== R.OK) return true;
  // Offsets stay inside the packet.
  const end = off + info.l3Len;
  if (info.l3Len > len || info.l4Off < off || info.l4Off > end || info.csumOff >= end - 1) return false;
  if (info.isIcmpError && (info.innerL4Off > end || info.innerCsumOff >= end - 1)) return false;
  const before = buf.slice();
  const r2 = (p & 1 ? rewriteDst : rewriteSrc)(buf, off, info, addr, 0, p, mode);
  if (r2 !== R.OK) return false;
  for (let i = 0; i < buf.length; i++) if ((i < off || i >= end) && buf[i] !== before[i]) return false;
  return true;
}

test('property: random bytes never make parse or rewrite throw, nor write outside the packet', (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 300 }),
      fc.constantFrom(0x40, 0x45, 0x46, 0x4f, 0x60, 0x00),
      fc.integer({ min: 0, max: 8 }),
      port,
      fc.constantFrom(CSUM_FULL, CSUM_PARTIAL),
      (bytes, b0, guard, p, mode) => {
        const buf = new Uint8Array(bytes.length + 2 * guard).fill(0x99);
        buf.set(bytes, guard);
        if (bytes.length > 0 && b0 !== 0) buf[guard] = b0 | (bytes[0]! & (b0 === 0x60 ? 0x0f : 0));
        return safeRun(buf, guard, bytes.length, new Uint8Array(16).fill(7), p, mode);
      },
    ),
    { numRuns: 3000 },
  );
  t.pass();
});

test('property: mutated valid packets (byte changes, truncation) never throw or write outside', (t) => {
  fc.assert(
    fc.property(
      spec,
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      fc.nat(),
      fc.boolean(),
      (s, muts, cutAt, errWrap) => {
        let pkt = build(s);
        if (errWrap) pkt = s.v6 ? P.icmp6Error(2, 0, 'fd00::9', s.src, pkt) : P.icmp4Error(3, 4, '10.9.9.9', s.src, pkt, { embedLen: 1000 });
        for (const [i, v] of muts) pkt[i % pkt.length] = v;
        const len = cutAt % (pkt.length + 1);
        const buf = new Uint8Array(pkt.length + 8).fill(0x99);
        buf.set(pkt, 4);
        return safeRun(buf, 4, len, P.ip(s.newAddr), s.newPort, CSUM_FULL);
      },
    ),
    { numRuns: 2000 },
  );
  t.pass();
});
