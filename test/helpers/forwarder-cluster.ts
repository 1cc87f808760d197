/**
 * Three (or N) forwarders wired to each other through their peer outputs, each with its own
 * flow table and no replication (records travel only in encapsulation headers): a packet
 * delivered to one node as read from its TUN device is followed to the peer that serves it.
 * For tests of what the data plane decides and counts across balancers (ECMP entry: any
 * balancer may receive a flow). Test-only; allocates freely.
 */
import { parseConfig, type Config } from '../../src/config';
import { deriveDataTagKey, deriveHashKey } from '../../src/decision/hash-key';
import { FlowTable } from '../../src/flow';
import { Forwarder } from '../../src/dataplane/forwarder';
import type { PeerOutput } from '../../src/dataplane/peer-output';
import { buildForwardingTable, type ForwardingTable } from '../../src/decision/forwarding-table';
import { forwardDropNames } from '../../src/dataplane/forward-drop';
import { PacketBatch } from '../../src/dataplane/packet-batch';
import { PacketInfo } from '../../src/packet/packet-info';
import { parsePacket } from '../../src/packet/parse';
import { formatIp } from '../../src/packet/addr';

export const CLUSTER_KEY = Buffer.alloc(32, 0x5a);
const KEY_PATH = '/keys/forwarder-cluster.key';

/** parseConfig of `yaml` with the test key (`cluster.key_file: ${KEY_FILE}`). */
export const KEY_FILE = KEY_PATH;
export function testConfig(yaml: string, name = 'cluster.yaml'): Config {
  const readKeyFile = (p: string): Buffer => {
    if (p === KEY_PATH) return Buffer.from(CLUSTER_KEY);
    throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
  };
  return parseConfig(yaml, name, { readKeyFile, env: {}, baseDir: '/' });
}

export interface ClusterNode {
  fwd: Forwarder;
  table: FlowTable;
  batch: PacketBatch;
  peerOut: PeerOutput;
}

/** Packets that left the balancers: written to a TUN device (with the node that wrote it). */
export interface Delivery {
  tun: Array<{ node: number; pkt: Uint8Array }>;
  /** Encapsulated hops: from → to. */
  hops: Array<[number, number]>;
}

export interface ForwarderCluster {
  config: Config;
  hashKey: Uint32Array;
  ft: ForwardingTable;
  live: Uint8Array;
  nodes: ClusterNode[];
  /** Delivers `pkt` to node `at` as read from its TUN device; follows encapsulated packets to their peer. */
  deliver(at: number, pkt: Uint8Array, nowSec?: number): Delivery;
  /** Drops by ForwardDrop name, nonzero only. */
  drops(i: number): Record<string, number>;
  /**
   * Swaps a forwarding table of `config` (generation + 1) into every node (as a reload's or a
   * health rebuild's swap); `eligible` (new flows) and `up` (existing flows) per VIP and backend index.
   */
  swap(config: Config, eligible?: (vip: number, be: number) => boolean, up?: (vip: number, be: number) => boolean): ForwardingTable;
}

export function forwarderCluster(yaml: string): ForwarderCluster {
  const config = testConfig(yaml);
  const hashKey = deriveHashKey(config.cluster.key.reveal());
  const tagKey = deriveDataTagKey(config.cluster.key.reveal());
  const ft = buildForwardingTable(config, hashKey, 1);
  const n = config.balancers.length;
  const live = new Uint8Array(n).fill(1);
  const peerAddrs = new Uint8Array(n * 16);
  const peerPorts = new Uint16Array(n);
  config.balancers.forEach((b, i) => {
    peerAddrs.set(b.address.bytes, i * 16);
    peerPorts[i] = b.dataPort;
  });
  const nodes: ClusterNode[] = config.balancers.map((_, self) => {
    const table = new FlowTable({ capacity: 8192, seed: 31 + self, earlyDrop: false, timeouts: { tcpEstablished: 300, tcpSynSeen: 30, tcpClosing: 30, tcpClosed: 10, udp: 30, icmp: 10 } });
    const batch = new PacketBatch({ count: 8, maxPacket: 65535 });
    const peerOut: PeerOutput = { batch: new PacketBatch({ count: 8, maxPacket: 65535, share: batch }), addrs: new Uint8Array(8 * 16), ports: new Uint16Array(8), count: 0 };
    const fwd = new Forwarder({
      table,
      forwarding: ft,
      hashKey,
      tagKey,
      selfIndex: self,
      live,
      peers: n > 1 ? { addrs: peerAddrs, ports: peerPorts } : undefined,
      peerOutput: n > 1 ? peerOut : undefined,
    });
    return { fwd, table, batch, peerOut };
  });
  const c: ForwarderCluster = {
    config,
    hashKey,
    ft,
    live,
    nodes,
    deliver(at, pkt, nowSec = 1) {
      const out: Delivery = { tun: [], hops: [] };
      const node = nodes[at]!;
      node.batch.setPacket(0, pkt);
      const m = node.fwd.processBatch(node.batch, 1, false, nowSec);
      for (let i = 0; i < m; i++) out.tun.push({ node: at, pkt: node.batch.buf.slice(node.batch.offsets[i]!, node.batch.offsets[i]! + node.batch.sizes[i]!) });
      const po = node.peerOut;
      for (let k = 0; k < po.count; k++) {
        const dg = po.batch.buf.slice(po.batch.offsets[k]!, po.batch.offsets[k]! + po.batch.sizes[k]!);
        const dst = po.addrs.subarray(k * 16, k * 16 + 16);
        let to = -1;
        for (let i = 0; i < n; i++) if (peerAddrs.subarray(i * 16, i * 16 + 16).every((b, j) => b === dst[j])) to = i;
        out.hops.push([at, to]);
        const rx = nodes[to]!;
        const rb = new PacketBatch({ count: 2, maxPacket: 65535 });
        rb.setPacket(0, dg);
        const addrs = peerAddrs.slice(at * 16, at * 16 + 16);
        const r = rx.fwd.processPeerBatch(rb, 1, addrs, false, nowSec);
        for (let i = 0; i < r; i++) out.tun.push({ node: to, pkt: rb.buf.slice(rb.offsets[i]!, rb.offsets[i]! + rb.sizes[i]!) });
      }
      return out;
    },
    drops(i) {
      const d: Record<string, number> = {};
      nodes[i]!.fwd.stats.forwardDrops.forEach((v, k) => {
        if (v > 0) d[forwardDropNames[k]!] = v;
      });
      return d;
    },
    swap(next, eligible, up) {
      const cur = nodes[0]!.fwd.forwarding;
      const nft = buildForwardingTable(
        next,
        hashKey,
        cur.generation + 1,
        eligible === undefined ? undefined : (v, i) => eligible(v.index, i),
        cur,
        up === undefined ? undefined : (v, i) => up(v.index, i),
      );
      for (const nd of nodes) nd.fwd.setForwarding(nft);
      c.ft = nft;
      return nft;
    },
  };
  return c;
}

const info = new PacketInfo();
/** Source and destination of an IP packet (text) and its ports. */
export function endpoints(pkt: Uint8Array): { src: string; dst: string; sport: number; dport: number } {
  parsePacket(pkt, 0, pkt.length, info);
  return { src: formatIp(pkt, info.srcOff, info.addrLen), dst: formatIp(pkt, info.dstOff, info.addrLen), sport: info.sport, dport: info.dport };
}
