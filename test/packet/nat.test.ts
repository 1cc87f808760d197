import test from 'ava';
import { parsePacket } from '../../src/packet/parse';
import { PacketInfo } from '../../src/packet/packet-info';
import { rewriteDst, rewriteSrc, CSUM_FULL, CSUM_PARTIAL, KEEP_PORT } from '../../src/packet/nat';
import { keyToString } from '../../src/packet/flow-key';
import { PacketResult as R, packetResultNames } from '../../src/packet/result';
import * as P from '../helpers/packets';
import { natFixtures, CLIENT, VIP, BACKEND, CLIENT6, VIP6, BACKEND6 } from '../helpers/fixtures';

const info = new PacketInfo();

/** Parses and rewrites `pkt` placed at `shift` in a larger buffer; returns the rewritten copy. */
function rewrite(pkt: Uint8Array, op: 'dst' | 'src', addr: string, port: number, mode: number, shift = 0): { r: number; out: Uint8Array } {
  const buf = new Uint8Array(shift + pkt.length + 3).fill(0xcc);
  buf.set(pkt, shift);
  const pr = parsePacket(buf, shift, pkt.length, info);
  if (pr !== R.OK) return { r: pr, out: pkt };
  const a = P.ip(addr);
  const r = (op === 'dst' ? rewriteDst : rewriteSrc)(buf, shift, info, a, 0, port, mode);
  return { r, out: buf.slice(shift, shift + pkt.length) };
}

for (const f of natFixtures) {
  test(`nat: ${f.desc}`, (t) => {
    for (const shift of [0, 7]) {
      const { r, out } = rewrite(f.input, f.op, f.addr, f.port, f.mode, shift);
      t.is(packetResultNames[r], 'ok');
      const final = f.mode === CSUM_PARTIAL ? P.completePartial(out) : out;
      t.deepEqual(P.checksumErrors(final), [], `${f.desc}: checksums from scratch`);
      t.is(P.hex(final), P.hex(f.expected), `${f.desc}: bytes equal the expected packet`);
    }
  });
}

test('nat: rewriteDst then rewriteSrc of the reply restores the client view (v4 and v6 TCP)', (t) => {
  for (const [c, v, b] of [[CLIENT, VIP, BACKEND], [CLIENT6, VIP6, BACKEND6]] as const) {
    const fwd = rewrite(c.includes(':') ? P.tcp6(c, v, 40000, 80) : P.tcp4(c, v, 40000, 80), 'dst', b, 8080, CSUM_FULL);
    t.is(fwd.r, R.OK);
    t.is(parsePacket(fwd.out, 0, fwd.out.length, info), R.OK);
    t.is(keyToString(info.key), c.includes(':') ? `tcp [${c}]:40000 -> [${b}]:8080` : `tcp ${c}:40000 -> ${b}:8080`);
    const reply = c.includes(':') ? P.tcp6(b, c, 8080, 40000, P.TCP_ACK | P.TCP_SYN) : P.tcp4(b, c, 8080, 40000, P.TCP_ACK | P.TCP_SYN);
    const back = rewrite(reply, 'src', v, 80, CSUM_FULL);
    const expected = c.includes(':') ? P.tcp6(v, c, 80, 40000, P.TCP_ACK | P.TCP_SYN) : P.tcp4(v, c, 80, 40000, P.TCP_ACK | P.TCP_SYN);
    t.is(P.hex(back.out), P.hex(expected));
  }
});

test('nat: KEEP_PORT changes only the address', (t) => {
  const { r, out } = rewrite(P.udp4(CLIENT, VIP, 5353, 53), 'dst', BACKEND, KEEP_PORT, CSUM_FULL);
  t.is(r, R.OK);
  t.is(P.hex(out), P.hex(P.udp4(CLIENT, BACKEND, 5353, 53)));
});

test('nat: PARTIAL mode leaves the field alone on a port-only change and adds address changes as a plain sum', (t) => {
  const pkt = P.toPartial(P.tcp4(CLIENT, VIP, 40000, 80));
  const before = (pkt[36]! << 8) | pkt[37]!;
  const portOnly = rewrite(pkt, 'dst', VIP, 8080, CSUM_PARTIAL).out;
  t.is((portOnly[36]! << 8) | portOnly[37]!, before);
  const both = rewrite(pkt, 'dst', BACKEND, 8080, CSUM_PARTIAL).out;
  // The field must equal the pseudo-header sum of the new packet (what the kernel would write).
  t.is(P.hex(both), P.hex(P.toPartial(P.tcp4(CLIENT, BACKEND, 40000, 8080))));
});

test('nat: IPv4 fragments: each fragment rewritten, reassembly equals the expected datagram', (t) => {
  for (const [mk, mkExp] of [
    [() => P.tcp4(CLIENT, VIP, 40000, 80, P.TCP_ACK, new Uint8Array(150).fill(7)), () => P.tcp4(CLIENT, BACKEND, 40000, 8080, P.TCP_ACK, new Uint8Array(150).fill(7))],
    [() => P.udp6(CLIENT6, VIP6, 5353, 53, new Uint8Array(150).fill(7)), () => P.udp6(CLIENT6, BACKEND6, 5353, 8053, new Uint8Array(150).fill(7))],
  ] as const) {
    const frags = P.fragmentPacket(mk(), 48);
    const exp = mkExp();
    const v6 = exp[0]! >> 4 === 6;
    const out = frags.map((f) => {
      const { r, out } = rewrite(f, 'dst', v6 ? BACKEND6 : BACKEND, v6 ? 8053 : 8080, CSUM_FULL);
      t.is(r, R.OK);
      t.true(P.validChecksums(out));
      return out;
    });
    const re = P.reassemble(out);
    t.deepEqual(P.checksumErrors(re), []);
    t.is(P.hex(re), P.hex(P.reassemble(P.fragmentPacket(exp, 48))));
  }
});

test('nat: bad arguments are result codes', (t) => {
  const pkt = P.tcp4(CLIENT, VIP, 1, 80);
  t.is(parsePacket(pkt, 0, pkt.length, info), R.OK);
  const a = P.ip(BACKEND);
  t.is(rewriteDst(pkt, 1, info, a, 0, 80, CSUM_FULL), R.NAT_BAD_ARGUMENT);
  t.is(rewriteDst(pkt, 0, info, a, 1, 80, CSUM_FULL), R.NAT_BAD_ARGUMENT);
  t.is(rewriteDst(pkt, 0, info, P.ip(BACKEND6), 0, 80, CSUM_FULL), R.OK); // 16 bytes: first 4 used
  t.is(parsePacket(pkt, 0, pkt.length, info), R.OK);
  t.is(rewriteSrc(pkt, 0, info, a, 0, 70000, CSUM_FULL), R.NAT_BAD_ARGUMENT);
  t.is(rewriteSrc(pkt, 0, info, a, 0, 80, 7), R.NAT_UNSUPPORTED);
  const p6 = P.tcp6(CLIENT6, VIP6, 1, 80);
  t.is(parsePacket(p6, 0, p6.length, info), R.OK);
  t.is(rewriteDst(p6, 0, info, a, 0, 80, CSUM_FULL), R.NAT_BAD_ARGUMENT);
});
