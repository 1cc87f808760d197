/**
 * The compliance-suite harness for the real TunDevice: a fresh namespace per test, the device
 * created in it (TunDevice.open netns option), kernel address 10.77.0.1/24 on it so that
 * 10.77.0.2 (the app's side) is routed into the device. The "kernel side" sends and receives
 * with UdpBatchSocket sockets opened in the same namespace.
 */
import { PacketBatch, PeerArrays } from '../../src/dataplane/packet-batch';
import { TunDevice, type TunOpenOptions } from '../../src/dataplane/tun-device';
import { ipToBytes16, UdpBatchSocket } from '../../src/dataplane/udp-batch-socket';
import type { TunHarness, TunHarnessFactory, UdpListener } from '../../test/helpers/tun-compliance';
import { createNetns, ipIn, removeNetns, uniqueNetnsName } from './netns';

export const KERNEL_ADDR = '10.77.0.1';
export const PEER_ADDR = '10.77.0.2';

export function netnsTunHarness(opts: Partial<TunOpenOptions> = {}): TunHarnessFactory {
  return async (): Promise<TunHarness> => {
    const ns = uniqueNetnsName('tun');
    createNetns(ns);
    let dev: TunDevice;
    try {
      dev = TunDevice.open({ name: 'tunlb0', mtu: 1400, ...opts, netns: ns });
      ipIn(ns, ['addr', 'add', `${KERNEL_ADDR}/24`, 'dev', dev.name]);
    } catch (e) {
      removeNetns(ns);
      throw e;
    }
    const sockets: UdpBatchSocket[] = [];
    let sender: UdpBatchSocket | undefined;
    let closed = false;
    return {
      dev,
      kernelAddr: KERNEL_ADDR,
      peerAddr: PEER_ADDR,
      async sendUdp(payloads, dport) {
        sender ??= UdpBatchSocket.open({ address: KERNEL_ADDR, port: 0, netns: ns });
        if (!sockets.includes(sender)) sockets.push(sender);
        const b = new PacketBatch({ count: payloads.length, maxPacket: 1400 });
        const peers = new PeerArrays(payloads.length);
        payloads.forEach((p, i) => {
          b.setPacket(i, p);
          ipToBytes16(PEER_ADDR, peers.addrs, 16 * i);
          peers.ports[i] = dport;
        });
        const n = sender.send(b, payloads.length, peers.addrs, peers.ports);
        if (n !== payloads.length) throw new Error(`harness sent ${n}/${payloads.length}`);
      },
      async listenUdp(port): Promise<UdpListener> {
        const s = UdpBatchSocket.open({ address: KERNEL_ADDR, port, netns: ns });
        sockets.push(s);
        const got: Uint8Array[] = [];
        const b = new PacketBatch({ count: 64, maxPacket: 1400 });
        const peers = new PeerArrays(64);
        s.onReadable(() => {
          let n: number;
          while ((n = s.recv(b, b.count, peers.addrs, peers.ports)) > 0) {
            for (let i = 0; i < n; i++) got.push(b.packet(i).slice());
          }
        });
        return { received: () => got, close: () => s.close() };
      },
      async close() {
        if (closed) return;
        closed = true;
        for (const s of sockets) s.close();
        dev.close();
        removeNetns(ns);
      },
    };
  };
}
