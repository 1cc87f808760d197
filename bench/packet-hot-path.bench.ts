/**
 * Packet core hot path: ns per packet over a preallocated batch (as the data plane sees a TUN
 * read batch: one big buffer, fixed-size slots).
 *   parse+key          parsePacket (validation + flow key) of IPv4 TCP
 *   parse+key+NAT      parsePacket + rewriteDst (address + port, IPv4 header and TCP checksums)
 *   (and the same for IPv6 TCP, for comparison)
 * Each figure is the median of RUNS runs of ROUNDS passes over the batch, after a warm-up.
 *
 *   npx tsx bench/packet-hot-path.bench.ts      prints a table
 *   npm run bench:micro -- packet               through the runner (uses run())
 */
import * as parse from '../src/packet/parse';
import { PacketInfo } from '../src/packet/packet-info';
import * as nat from '../src/packet/nat';
import { PacketResult } from '../src/packet/result';
import { parseIp } from '../src/packet/addr';
import { tcp4, tcp6, TCP_ACK } from '../test/helpers/packets';
import type { BenchRow } from './run-micro';

// Snapshot imported functions/constants, as the data plane should: under tsx (esbuild CJS) every
// use of an imported binding is a getter call that V8 does not inline (see src/packet/parse.ts).
const { parsePacket } = parse;
const { rewriteDst, CSUM_FULL } = nat;
const R = PacketResult;

const BATCH = 256;
const SLOT = 2048;
const ROUNDS = 2000;
const RUNS = 7;
const TARGET_NS = 150;

interface Batch {
  buf: Uint8Array;
  offs: Int32Array;
  lens: Int32Array;
}

function makeBatch(v6: boolean): Batch {
  const buf = new Uint8Array(BATCH * SLOT);
  const offs = new Int32Array(BATCH);
  const lens = new Int32Array(BATCH);
  const payload = new Uint8Array(64).fill(0x61);
  for (let i = 0; i < BATCH; i++) {
    const p = v6
      ? tcp6(`fd99:1::${(i % 250) + 2}`, 'fd99::10', 30000 + i, 80, TCP_ACK, payload)
      : tcp4(`10.99.1.${(i % 250) + 2}`, '10.99.0.10', 30000 + i, 80, TCP_ACK, payload);
    // 64 bytes of headroom per slot, as the data plane leaves for encapsulation.
    offs[i] = i * SLOT + 64;
    lens[i] = p.length;
    buf.set(p, offs[i]!);
  }
  return { buf, offs, lens };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
}

/** Runs `pass` ROUNDS times per run; returns the median ns per packet. */
function measure(pass: () => number): number {
  for (let i = 0; i < 300; i++) pass(); // warm-up: let the JIT optimise
  const results: number[] = [];
  let sink = 0;
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ROUNDS; i++) sink += pass();
    const dt = Number(process.hrtime.bigint() - t0);
    results.push(dt / (ROUNDS * BATCH));
  }
  if (sink === -1) console.log(sink); // keep the work observable
  return median(results);
}

function benchParse(b: Batch): number {
  const info = new PacketInfo();
  const { buf, offs, lens } = b;
  return measure(() => {
    let bad = 0;
    for (let i = 0; i < BATCH; i++) {
      if (parsePacket(buf, offs[i] as number, lens[i] as number, info) !== R.OK) bad++;
      bad += info.key[33] as number & 0;
    }
    return bad;
  });
}

function benchParseNat(b: Batch, backendA: Uint8Array, backendB: Uint8Array): number {
  const info = new PacketInfo();
  const { buf, offs, lens } = b;
  let flip = 0;
  return measure(() => {
    let bad = 0;
    const addr = (flip ^= 1) !== 0 ? backendA : backendB;
    const port = flip !== 0 ? 8080 : 8081;
    for (let i = 0; i < BATCH; i++) {
      const off = offs[i] as number;
      if (parsePacket(buf, off, lens[i] as number, info) !== R.OK) {
        bad++;
        continue;
      }
      if (rewriteDst(buf, off, info, addr, 0, port, CSUM_FULL) !== R.OK) bad++;
    }
    return bad;
  });
}

export async function run(): Promise<BenchRow[]> {
  const b4 = makeBatch(false);
  const b6 = makeBatch(true);
  const target = `< ${TARGET_NS} ns`;
  return [
    { name: 'packet parse+key IPv4 TCP', value: benchParse(b4), unit: 'ns/pkt', target },
    { name: 'packet parse+key+NAT IPv4 TCP', value: benchParseNat(b4, parseIp('10.99.3.21'), parseIp('10.99.3.22')), unit: 'ns/pkt', target },
    { name: 'packet parse+key IPv6 TCP', value: benchParse(b6), unit: 'ns/pkt' },
    { name: 'packet parse+key+NAT IPv6 TCP', value: benchParseNat(b6, parseIp('fd99:3::21'), parseIp('fd99:3::22')), unit: 'ns/pkt' },
  ];
}

if (require.main === module) {
  run()
    .then((rows) => {
      const w = Math.max(...rows.map((r) => r.name.length));
      console.log(`node ${process.version}; batch ${BATCH}, ${ROUNDS} passes x ${RUNS} runs, median`);
      for (const r of rows) console.log(`${r.name.padEnd(w)}  ${r.value.toFixed(1).padStart(7)} ${r.unit}  ${r.target ?? ''}`);
    })
    .catch((e: unknown) => {
      console.error(e);
      process.exit(1);
    });
}
