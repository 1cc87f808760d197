// UdpBatchSocket against the kernel, inside test namespaces. Root only (see helpers/root.ts).
import { ErrorCodes, isTunlbError } from '../src/errors';
import { PacketBatch, PeerArrays } from '../src/dataplane/packet-batch';
import { TunDevice } from '../src/dataplane/tun-device';
import { bytes16ToIp, ipToBytes16, UdpBatchSocket } from '../src/dataplane/udp-batch-socket';
import { tagged } from '../test/helpers/tun-compliance';
import { ipIn, testNetns } from './helpers/netns';
import { nativeSuite } from './helpers/root';

const rootTest = nativeSuite('UdpBatchSocket');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Receives through onReadable until `want` datagrams or the timeout. */
async function recvAll(s: UdpBatchSocket, b: PacketBatch, peers: PeerArrays, want: number, ms = 2000) {
  const got: { data: Uint8Array; from: string; port: number; off: number }[] = [];
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      s.stop();
      resolve();
    }
    s.onReadable(() => {
      let n: number;
      while ((n = s.recv(b, b.count, peers.addrs, peers.ports)) > 0) {
        for (let i = 0; i < n; i++) {
          got.push({ data: b.packet(i).slice(), from: bytes16ToIp(peers.addrs, 16 * i), port: peers.ports[i], off: b.offsets[i] });
        }
      }
      if (got.length >= want) done();
    });
  });
  return got;
}

function fill(b: PacketBatch, peers: PeerArrays, count: number, to: string, port: number, tag: number): Uint8Array[] {
  const payloads: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const p = tagged(tag, i, 20 + i * 11);
    payloads.push(p);
    b.setPacket(i, p);
    ipToBytes16(to, peers.addrs, 16 * i);
    peers.ports[i] = port;
  }
  return payloads;
}

rootTest('sendmmsg/recvmmsg a batch: payloads, sizes, offsets and peers right', async (t) => {
  const ns = testNetns(t, 'udp');
  const a = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  const r = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  t.teardown(() => { a.close(); r.close(); });
  t.true(a.port > 0 && r.port > 0 && a.port !== r.port);
  const b = new PacketBatch({ count: 64, maxPacket: 1500 });
  const peers = new PeerArrays(64);
  const payloads = fill(b, peers, 50, '127.0.0.1', r.port, 1);
  t.is(a.send(b, 50, peers.addrs, peers.ports), 50);
  const rb = new PacketBatch({ count: 64, maxPacket: 1500 });
  const rp = new PeerArrays(64);
  await sleep(20);
  const n = r.recv(rb, 64, rp.addrs, rp.ports);
  t.is(n, 50, 'one recvmmsg call takes the whole batch');
  for (let i = 0; i < n; i++) {
    t.is(rb.offsets[i], i * rb.slotSize + rb.headroom);
    t.deepEqual(rb.packet(i), payloads[i]);
    t.is(bytes16ToIp(rp.addrs, 16 * i), '127.0.0.1');
    t.is(rp.ports[i], a.port);
  }
  t.is(r.recv(rb, 64, rp.addrs, rp.ports), 0, 'empty: 0, not a block');
  t.is(a.stats.sentPackets, 50);
  t.is(r.stats.recvPackets, 50);
});

rootTest('an IPv6 socket is dual-stack: IPv4 peers appear IPv4-mapped', async (t) => {
  const ns = testNetns(t, 'udp6', { ipv6: true });
  const r = UdpBatchSocket.open({ address: '::', port: 0, netns: ns });
  const a4 = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  const a6 = UdpBatchSocket.open({ address: '::1', port: 0, netns: ns });
  t.teardown(() => { r.close(); a4.close(); a6.close(); });
  const b = new PacketBatch({ count: 4, maxPacket: 1500 });
  const peers = new PeerArrays(4);
  fill(b, peers, 2, '127.0.0.1', r.port, 2);
  t.is(a4.send(b, 2, peers.addrs, peers.ports), 2);
  fill(b, peers, 2, '::1', r.port, 3);
  t.is(a6.send(b, 2, peers.addrs, peers.ports), 2);
  const got = await recvAll(r, new PacketBatch({ count: 8, maxPacket: 1500 }), new PeerArrays(8), 4);
  t.is(got.length, 4);
  t.deepEqual(got.map((g) => g.from).sort(), ['127.0.0.1', '127.0.0.1', '::1', '::1']);
});

rootTest('datagrams to an unreachable family are skipped and counted; the rest go', async (t) => {
  const ns = testNetns(t, 'udpbad');
  const a = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  const r = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  t.teardown(() => { a.close(); r.close(); });
  const b = new PacketBatch({ count: 4, maxPacket: 1500 });
  const peers = new PeerArrays(4);
  fill(b, peers, 4, '127.0.0.1', r.port, 4);
  ipToBytes16('::1', peers.addrs, 16); // an IPv6 peer on an IPv4 socket
  t.is(a.send(b, 4, peers.addrs, peers.ports), 3);
  t.is(a.stats.sendErrors, 1);
  const got = await recvAll(r, new PacketBatch({ count: 8, maxPacket: 1500 }), new PeerArrays(8), 3);
  t.is(got.length, 3);
});

rootTest('a datagram longer than its slot is reported with size 0 and counted', async (t) => {
  const ns = testNetns(t, 'udptrunc');
  const a = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  const r = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  t.teardown(() => { a.close(); r.close(); });
  const big = new PacketBatch({ count: 2, maxPacket: 4000 });
  const peers = new PeerArrays(2);
  big.setPacket(0, tagged(5, 0, 3000));
  big.setPacket(1, tagged(5, 1, 100));
  ipToBytes16('127.0.0.1', peers.addrs, 0);
  ipToBytes16('127.0.0.1', peers.addrs, 16);
  peers.ports.fill(r.port);
  t.is(a.send(big, 2, peers.addrs, peers.ports), 2);
  await sleep(20);
  const small = new PacketBatch({ count: 4, maxPacket: 1000, headroom: 64 });
  const rp = new PeerArrays(4);
  t.is(r.recv(small, 4, rp.addrs, rp.ports), 2);
  t.is(small.sizes[0], 0);
  t.is(small.sizes[1], 100);
  t.is(r.stats.recvTruncated, 1);
});

rootTest('multicast: join a group on an interface, send with loop, receive the batch', async (t) => {
  const ns = testNetns(t, 'mcast');
  // A TUN device inside the test namespace carries the group (lo cannot multicast; the
  // dummy driver may be missing): its sends also leave through the TUN, unread, harmless.
  const tun = TunDevice.open({ name: 'mc0', netns: ns });
  t.teardown(() => tun.close());
  ipIn(ns, ['addr', 'add', '10.99.2.11/24', 'dev', 'mc0']);
  const mc = { group: '239.99.0.1', interfaceAddress: '10.99.2.11', ttl: 1, loop: true };
  const r = UdpBatchSocket.open({ address: '0.0.0.0', port: 7947, netns: ns, reuseAddr: true, multicast: mc });
  const s = UdpBatchSocket.open({ address: '10.99.2.11', port: 0, netns: ns, multicast: mc });
  t.teardown(() => { r.close(); s.close(); });
  const b = new PacketBatch({ count: 8, maxPacket: 1500 });
  const peers = new PeerArrays(8);
  const payloads = fill(b, peers, 8, '239.99.0.1', 7947, 6);
  t.is(s.send(b, 8, peers.addrs, peers.ports), 8);
  const got = await recvAll(r, new PacketBatch({ count: 16, maxPacket: 1500 }), new PeerArrays(16), 8);
  t.is(got.length, 8);
  t.deepEqual(got.map((g) => g.data), payloads);
  t.true(got.every((g) => g.from === '10.99.2.11' && g.port === s.port));
});

rootTest('a reading socket never blocks the event loop', async (t) => {
  const ns = testNetns(t, 'udpnb');
  const r = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  t.teardown(() => r.close());
  let ticks = 0;
  const iv = setInterval(() => ticks++, 5);
  const got = await recvAll(r, new PacketBatch({ count: 4, maxPacket: 1500 }), new PeerArrays(4), 1, 200);
  clearInterval(iv);
  t.is(got.length, 0);
  t.true(ticks >= 15, `ticked ${ticks} times in 200 ms`);
});

rootTest('errors: missing namespace, address not present, port in use; close idempotent then DEVICE_CLOSED', (t) => {
  const e1 = t.throws(() => UdpBatchSocket.open({ address: '0.0.0.0', port: 0, netns: 'tunlb-t-does-not-exist' }));
  t.true(isTunlbError(e1, ErrorCodes.SOCKET));
  t.regex(e1!.message, /ip netns add tunlb-t-does-not-exist/);
  const ns = testNetns(t, 'udperr');
  const e2 = t.throws(() => UdpBatchSocket.open({ address: '10.1.2.3', port: 0, netns: ns }));
  t.true(isTunlbError(e2, ErrorCodes.ADDRESS_NOT_PRESENT), String(e2));
  const a = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  const e3 = t.throws(() => UdpBatchSocket.open({ address: '127.0.0.1', port: a.port, netns: ns }));
  t.true(isTunlbError(e3, ErrorCodes.SOCKET));
  t.regex(e3!.message, /in use/);
  a.close();
  t.notThrows(() => a.close());
  const b = new PacketBatch({ count: 1, maxPacket: 100 });
  const p = new PeerArrays(1);
  for (const f of [() => a.recv(b, 1, p.addrs, p.ports), () => a.send(b, 1, p.addrs, p.ports), () => a.onReadable(() => undefined)]) {
    t.true(isTunlbError(t.throws(f), ErrorCodes.DEVICE_CLOSED));
  }
});

rootTest('UDP GSO: segmented entries leave as their datagrams (header + payload slice), in order with plain ones', async (t) => {
  const ns = testNetns(t, 'udpgso');
  const a = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns });
  const r = UdpBatchSocket.open({ address: '127.0.0.1', port: 0, netns: ns, rcvBuf: 4 << 20 });
  t.teardown(() => { a.close(); r.close(); });
  t.true(a.gso, 'UDP_SEGMENT is available on this kernel (4.18+)');
  // Entries: plain, segmented (10 000 B in 1 000 B chunks, 24-byte headers), plain, segmented
  // needing two messages (130 chunks of 300 B: more than 64 segments per message).
  const b = new PacketBatch({ count: 4, maxPacket: 40000 });
  const peers = new PeerArrays(4);
  const segs = { chunk: new Uint16Array(4), hdrs: new Uint8Array(8192), hdrOffs: new Uint32Array(4), hdrLens: new Uint16Array(4) };
  const big1 = tagged(7, 1, 10000);
  const big2 = tagged(7, 2, 39000);
  b.setPacket(0, tagged(7, 0, 100));
  b.setPacket(1, big1);
  b.setPacket(2, tagged(7, 3, 200));
  b.setPacket(3, big2);
  for (let i = 0; i < 4; i++) {
    ipToBytes16('127.0.0.1', peers.addrs, 16 * i);
    peers.ports[i] = r.port;
  }
  const setSeg = (i: number, chunk: number, hl: number, at: number, n: number) => {
    segs.chunk[i] = chunk;
    segs.hdrLens[i] = hl;
    segs.hdrOffs[i] = at;
    for (let j = 0; j < n; j++) segs.hdrs.fill((i * 50 + j) & 0xff, at + j * hl, at + (j + 1) * hl);
  };
  setSeg(1, 1000, 24, 0, 10);
  setSeg(3, 300, 16, 512, 130);
  t.is(a.send(b, 4, peers.addrs, peers.ports, segs), 4, 'every entry handed over');
  t.is(a.stats.sendErrors, 0);
  const rb = new PacketBatch({ count: 256, maxPacket: 2000 });
  const got = await recvAll(r, rb, new PeerArrays(256), 1 + 10 + 1 + 130);
  t.is(got.length, 142, 'one datagram per plain entry and per chunk');
  const want: Uint8Array[] = [tagged(7, 0, 100)];
  for (let j = 0; j < 10; j++) want.push(Buffer.concat([Buffer.alloc(24, 50 + j), big1.subarray(j * 1000, (j + 1) * 1000)]));
  want.push(tagged(7, 3, 200));
  for (let j = 0; j < 130; j++) want.push(Buffer.concat([Buffer.alloc(16, (150 + j) & 0xff), big2.subarray(j * 300, Math.min(39000, (j + 1) * 300))]));
  t.deepEqual(got.map((g) => Buffer.from(g.data).toString('hex')), want.map((w) => Buffer.from(w).toString('hex')), 'contents and order');
  // An entry whose headers lie outside the header buffer is refused alone.
  setSeg(1, 1000, 24, 8190, 0);
  t.is(a.send(b, 3, peers.addrs, peers.ports, segs), 2, 'the bad entry is skipped, the others go');
  t.is(a.stats.sendErrors, 1);
});
