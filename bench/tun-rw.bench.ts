/**
 * TUN read+write throughput through the native addon, in a namespace of its own (root only).
 * Run alone: node --import=tsx bench/tun-rw.bench.ts [seconds=3] [inflight=512] [--offload]
 * or within `npm run bench:micro -- tun` (exports run(); returns no rows when not root).
 *
 * Closed loop on one event loop (so generator and forwarder share the core; the figure is a
 * floor for the forwarder alone): a UdpBatchSocket in the namespace keeps `inflight` 64-byte
 * datagrams going 10.77.0.1 → 10.77.0.2, which routes them into the TUN; the app reads them in
 * batches, swaps addresses and ports in place (checksums unchanged by a swap) and writes them
 * back; the kernel delivers them to the socket, which sends them again. Reported: packets/s
 * read (= written) by the app.
 */
import { PacketBatch, PeerArrays } from '../src/dataplane/packet-batch';
import { TunDevice } from '../src/dataplane/tun-device';
import { ipToBytes16, UdpBatchSocket } from '../src/dataplane/udp-batch-socket';
import { createNetns, ipIn, removeNetns, uniqueNetnsName } from '../native-tests/helpers/netns';

interface BenchRow {
  name: string;
  value: number;
  unit: string;
  target?: string;
}

export interface TunRwResult {
  offload: boolean;
  features: object;
  inflight: number;
  batch: number;
  seconds: number;
  forwardedPps: number;
}

/** One closed-loop measurement in a fresh namespace (removed afterwards, and at exit anyway). */
export async function measure(seconds: number, inflight: number, offload: boolean): Promise<TunRwResult> {
  const ns = uniqueNetnsName('bench');
  createNetns(ns);
  const dev = (() => {
    try {
      return TunDevice.open({ name: 'tunlb0', mtu: 1500, netns: ns, offload });
    } catch (e) {
      removeNetns(ns);
      throw e;
    }
  })();
  let sock: UdpBatchSocket | undefined;
  try {
    ipIn(ns, ['addr', 'add', '10.77.0.1/24', 'dev', 'tunlb0']);
    sock = UdpBatchSocket.open({ address: '10.77.0.1', port: 0, netns: ns, rcvBuf: 4 << 20, sndBuf: 4 << 20 });
    const s = sock;
    const B = 64;
    const rx = new PacketBatch({ count: B, maxPacket: dev.maxPacketSize });
    const sb = new PacketBatch({ count: B, maxPacket: 1500 });
    const peers = new PeerArrays(B);
    for (let i = 0; i < B; i++) {
      sb.setPacket(i, new Uint8Array(64 - 28));
      ipToBytes16('10.77.0.2', peers.addrs, 16 * i);
      peers.ports[i] = 9;
    }
    const rp = new PeerArrays(B);
    let fwd = 0;
    dev.onReadable(() => {
      let n: number;
      while ((n = dev.read(rx)) > 0) {
        const buf = rx.buf;
        for (let i = 0; i < n; i++) {
          const o = rx.offsets[i];
          const ihl = (buf[o] & 15) * 4;
          for (let k = 0; k < 4; k++) {
            const a = buf[o + 12 + k];
            buf[o + 12 + k] = buf[o + 16 + k];
            buf[o + 16 + k] = a;
          }
          for (let k = 0; k < 2; k++) {
            const a = buf[o + ihl + k];
            buf[o + ihl + k] = buf[o + ihl + 2 + k];
            buf[o + ihl + 2 + k] = a;
          }
          // With vnetHdr the header read is written back as is: a swap keeps the partial
          // (NEEDS_CSUM) pseudo-header sum and csum_start/offset valid.
        }
        fwd += dev.write(rx, n);
      }
    });
    s.onReadable(() => {
      let n: number;
      while ((n = s.recv(sb, B, rp.addrs, rp.ports)) > 0) {
        for (let i = 0; i < n; i++) sb.offsets[i] = sb.packetStart(i);
        s.send(sb, n, peers.addrs, peers.ports);
      }
    });
    for (let sent = 0; sent < inflight; sent += B) s.send(sb, Math.min(B, inflight - sent), peers.addrs, peers.ports);
    await new Promise((r) => setTimeout(r, 500)); // warm-up
    const t0 = performance.now();
    const f0 = fwd;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const dt = (performance.now() - t0) / 1000;
    return {
      offload, features: { ...dev.features }, inflight, batch: B, seconds: Number(dt.toFixed(2)),
      forwardedPps: Math.round((fwd - f0) / dt),
    };
  } finally {
    dev.close();
    sock?.close();
    removeNetns(ns);
  }
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** For bench/run-micro.ts. */
export async function run(): Promise<BenchRow[]> {
  if (!isRoot()) {
    process.stderr.write('  tun-rw: skipped: needs root (TUN devices and network namespaces)\n');
    return [];
  }
  const plain = await measure(2, 1024, false);
  const off = await measure(2, 1024, true);
  return [
    { name: 'tun read+write 64B (closed loop, 1 thread)', value: plain.forwardedPps / 1000, unit: 'kpps' },
    { name: 'tun read+write 64B, vnet hdr + offload', value: off.forwardedPps / 1000, unit: 'kpps' },
  ];
}

if (require.main === module) {
  if (!isRoot()) {
    console.log('tun-rw bench: skipped: needs root (TUN devices and network namespaces)');
  } else {
    const seconds = Number(process.argv[2] ?? 3);
    const inflight = Number(process.argv[3] ?? 512);
    measure(seconds, inflight, process.argv.includes('--offload')).then(
      (r) => console.log(JSON.stringify({ bench: 'tun-rw', ...r })),
      (e: unknown) => {
        console.error(e);
        process.exitCode = 1;
      },
    );
  }
}
