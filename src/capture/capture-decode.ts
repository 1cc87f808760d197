/**
 * `tunlb capture --decode`: one readable line per captured packet, with tunlb's own traffic
 * spelled out. Pure functions over the captured bytes (unit-tested on crafted frames); not
 * the data plane: it allocates freely and never throws on malformed input (every problem is
 * described in the line instead).
 *
 *   control port (default 7946; protocol/tunlb.proto): SignedEnvelope datagrams
 *     lb1 → group records seq=12 create 10.99.1.2:40000→10.99.0.10:80/tcp primary=lb2 backup=lb3 backend=#1
 *     lb1 → lb2 probe seq=40 target=lb2 status=serving
 *     lb2 → lb1 probe-ack seq=41 status=serving rtt=0.211ms
 *     lb2 → lb1 sync-request id=5f3a… from=0 / lb1 → lb2 sync-chunk id=5f3a… chunk=0 records=36 total=36 next=812 done
 *   data port (default 7947; src/packet/encap.ts): encapsulated packets
 *     lb1 → lb2 encap NEW_FLOW primary=lb2 backup=lb3 backend=#0 inner 10.99.1.2:40000→10.99.0.10:80 tcp [S]
 *   anything else: a short tcpdump-like line (10.99.1.2:40000 → 10.99.0.10:80 tcp [S] len=0).
 *
 * Authentication: with the cluster key the HMAC of every control datagram is verified (the
 * line has no mark when it verifies, "[BAD MAC …]" when it does not); without the key the
 * envelope is decoded anyway and the line ends in "(unverified)". Encapsulated packets the
 * same way with their data-port tag (src/decision/data-tag.ts: "[BAD TAG]"; it needs the
 * sender's and receiver's balancer indexes, so a configuration too, else "(tag unverified)"). A datagram with several
 * records gives one line per record ("records seq=12 [2/5] create …").
 *
 * Names: with a configuration (decoderOptionsFromConfig), balancer addresses and indexes are
 * shown by id (lb1) and backends with their address (#1(10.99.3.22)); without one, addresses
 * stay addresses and indexes are shown as #N. Multicast destinations are shown as "group".
 */
import { dataTagMatches } from '../decision/data-tag';
import { parsePacket } from '../packet/parse';
import { PacketInfo } from '../packet/packet-info';
import type { Config } from '../config';
import { formatIp } from '../packet/addr';
import {
  EncapInfo,
  ENCAP_F_FAILOVER,
  ENCAP_F_NEW_FLOW,
  ENCAP_F_REPLY,
  ENCAP_F_SECOND_CHANCE,
  ENCAP_F_VNET,
  ENCAP_NONE_U16,
  ENCAP_NONE_U8,
  parseEncap,
} from '../packet/encap';
import { PacketResult, packetResultName } from '../packet/result';
import {
  DecodeResult,
  decodeSigned,
  expandWireKey,
  PROTOCOL_RESULT_NAMES,
  ProtocolResult,
  tunlb,
  type MacKey,
  type ReceivedEnvelope,
} from '../protocol';
import { LINKTYPE } from './capture-pcap';

export const DEFAULT_CONTROL_PORT = 7946;
/** Probes and acks travel on their own port (docs/protocol.md); decoded as control datagrams. */
export const DEFAULT_PROBE_PORT = 7948;
export const DEFAULT_DATA_PORT = 7947;

/** Names of the cluster's balancers and backends (from a configuration). */
export interface CaptureNames {
  /** Balancer index → id. */
  balancers: readonly string[];
  /** Balancer address (canonical text, RFC 5952 for IPv6) → id. */
  byAddress: ReadonlyMap<string, string>;
  /** VIP index → name and backend addresses (by backend index). */
  vips: ReadonlyArray<{ name: string; backends: readonly string[] }>;
}

export interface DecoderOptions {
  /** UDP ports carrying control datagrams: control and probe ports (default [7946, 7948]). */
  controlPorts?: readonly number[];
  /** UDP ports carrying encapsulated packets (default [7947]). */
  dataPorts?: readonly number[];
  /** The cluster key: control datagrams are verified with it; null/absent: "(unverified)". */
  key?: MacKey | null;
  names?: CaptureNames | null;
  /** Envelope.cluster_id of the configured cluster; other ids are marked [other cluster]. */
  clusterId?: number | null;
  /** The data-port tag key (deriveDataTagKey of the cluster key): encapsulated packets' tags are verified. */
  tagKey?: Uint32Array | null;
}

/** Decoder options from a loaded configuration: ports, names, cluster id (not the key). */
export function decoderOptionsFromConfig(c: Config): DecoderOptions {
  const uniq = (xs: number[]): number[] => [...new Set(xs)];
  return {
    controlPorts: uniq([
      c.cluster.replication.controlPort,
      ...c.balancers.map((b) => b.controlPort),
      c.cluster.replication.probePort,
      ...c.balancers.map((b) => b.probePort),
    ]),
    dataPorts: uniq([c.cluster.replication.dataPort, ...c.balancers.map((b) => b.dataPort)]),
    names: {
      balancers: c.balancers.map((b) => b.id),
      byAddress: new Map(c.balancers.map((b) => [b.address.text, b.id])),
      vips: c.vips.map((v) => ({
        name: v.name,
        backends: v.backends.map((b) => (b.port === null ? b.address.text : b.address.family === 6 ? `[${b.address.text}]:${b.port}` : `${b.address.text}:${b.port}`)),
      })),
    },
    // The 53-bit number the control channel puts in Envelope.cluster_id (src/cluster/control-channel.ts).
    clusterId: (c.cluster.wireId.high & 0x1fffff) * 4294967296 + c.cluster.wireId.low,
  };
}

const OP_NAMES: Record<number, string> = { 1: 'create', 2: 'refresh', 3: 'delete' };
const STATUS_NAMES: Record<number, string> = { 0: 'unspecified', 1: 'syncing', 2: 'serving', 3: 'draining' };
const PROTO_NAMES: Record<number, string> = {
  1: 'icmp',
  2: 'igmp',
  6: 'tcp',
  17: 'udp',
  41: 'ipv6-in-ipv4',
  47: 'gre',
  50: 'esp',
  51: 'ah',
  58: 'icmp6',
  59: 'no-next-header',
  89: 'ospf',
  103: 'pim',
  112: 'vrrp',
  132: 'sctp',
};
const ICMP4_NAMES: Record<number, string> = {
  0: 'echo-reply',
  3: 'unreachable',
  5: 'redirect',
  8: 'echo-request',
  11: 'time-exceeded',
  12: 'parameter-problem',
};
const ICMP6_NAMES: Record<number, string> = {
  1: 'unreachable',
  2: 'packet-too-big',
  3: 'time-exceeded',
  4: 'parameter-problem',
  128: 'echo-request',
  129: 'echo-reply',
  130: 'mld-query',
  131: 'mld-report',
  133: 'router-solicitation',
  134: 'router-advertisement',
  135: 'neighbor-solicitation',
  136: 'neighbor-advertisement',
  137: 'redirect',
  143: 'mld2-report',
};
const GSO_NAMES: Record<number, string> = { 1: 'tcpv4', 3: 'udp', 4: 'tcpv6', 5: 'udp_l4' };

const protoName = (p: number): string => PROTO_NAMES[p] ?? `proto-${p}`;
const u16 = (b: Uint8Array, o: number): number => ((b[o] as number) << 8) | (b[o + 1] as number);
const u32 = (b: Uint8Array, o: number): number => u16(b, o) * 65536 + u16(b, o + 2);
/** "a:p" for IPv4, "[a]:p" for IPv6. */
const ep = (addr: string, port: number): string => (addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`);

/** TCP flags the way tcpdump prints them: S F R P U E W, "." for ACK. */
export function tcpFlagsText(f: number): string {
  let s = '';
  if (f & 0x02) s += 'S';
  if (f & 0x01) s += 'F';
  if (f & 0x04) s += 'R';
  if (f & 0x08) s += 'P';
  if (f & 0x20) s += 'U';
  if (f & 0x40) s += 'E';
  if (f & 0x80) s += 'W';
  if (f & 0x10) s += '.';
  return s || 'none';
}

/** tcpdump-style local time of a µs timestamp: HH:MM:SS.uuuuuu. */
export function formatTime(tsUs: number): string {
  const d = new Date(Math.floor(tsUs / 1000));
  const p2 = (n: number): string => String(n).padStart(2, '0');
  const us = Math.floor(tsUs % 1e6);
  return `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}.${String(us).padStart(6, '0')}`;
}

/** What walkIp learns about an IP packet. */
export interface IpView {
  version: 4 | 6;
  src: string;
  dst: string;
  /** Upper-layer protocol (after IPv6 extension headers; for IPv6 fragments, the fragment header's). */
  proto: number;
  /** Offset of the upper-layer header (or fragment payload), absolute in the buffer. */
  l4Off: number;
  /** End of the IP packet in the buffer: min(header's length, bytes captured). */
  end: number;
  /** The IP header says the packet is longer than what was captured/carried. */
  cut: boolean;
  /** Fragment offset in bytes, and more-fragments flag. */
  fragOff: number;
  more: boolean;
  fragId: number;
}

/** Walks an IPv4/IPv6 header (and IPv6 extension headers) tolerantly; a string says what is wrong. */
export function walkIp(buf: Uint8Array, off: number, len: number): IpView | string {
  if (len < 1) return 'empty packet';
  const v = (buf[off] as number) >>> 4;
  if (v === 4) {
    if (len < 20) return `IPv4 truncated (${len} bytes)`;
    const ihl = ((buf[off] as number) & 0x0f) * 4;
    if (ihl < 20 || ihl > len) return `IPv4 bad header length ${ihl}`;
    const total = u16(buf, off + 2);
    // Total length 0: a GSO super-packet larger than 64 KiB (BIG TCP); take what is there.
    const want = total === 0 ? len : total;
    const frag = u16(buf, off + 6);
    return {
      version: 4,
      src: formatIp(buf, off + 12, 4),
      dst: formatIp(buf, off + 16, 4),
      proto: buf[off + 9] as number,
      l4Off: off + ihl,
      end: off + Math.min(want, len),
      cut: want > len,
      fragOff: (frag & 0x1fff) * 8,
      more: (frag & 0x2000) !== 0,
      fragId: u16(buf, off + 4),
    };
  }
  if (v === 6) {
    if (len < 40) return `IPv6 truncated (${len} bytes)`;
    const plen = u16(buf, off + 4);
    const want = plen === 0 ? len : 40 + plen;
    const end = off + Math.min(want, len);
    const r: IpView = {
      version: 6,
      src: formatIp(buf, off + 8, 16),
      dst: formatIp(buf, off + 24, 16),
      proto: buf[off + 6] as number,
      l4Off: off + 40,
      end,
      cut: want > len,
      fragOff: 0,
      more: false,
      fragId: 0,
    };
    for (let i = 0; i < 8; i++) {
      const p = r.l4Off;
      if (r.proto === 0 || r.proto === 43 || r.proto === 60) {
        if (p + 2 > end) return r;
        r.proto = buf[p] as number;
        r.l4Off = p + ((buf[p + 1] as number) + 1) * 8;
      } else if (r.proto === 51) {
        if (p + 2 > end) return r;
        r.proto = buf[p] as number;
        r.l4Off = p + ((buf[p + 1] as number) + 2) * 4;
      } else if (r.proto === 44) {
        if (p + 8 > end) return r;
        const fo = u16(buf, p + 2);
        r.proto = buf[p] as number;
        r.fragOff = fo & 0xfff8;
        r.more = (fo & 1) !== 0;
        r.fragId = u32(buf, p + 4);
        r.l4Off = p + 8;
        if (r.fragOff !== 0) return r; // no upper-layer header in a later fragment
      } else {
        return r;
      }
    }
    return r;
  }
  return `not IP (version ${v})`;
}

/** Ports and a short description of the transport part of an IP packet. */
interface L4View {
  sport: number;
  dport: number;
  hasPorts: boolean;
  /** e.g. "tcp [S.] len=0", "udp len=12", "icmp echo-request id=7 seq=1". */
  text: string;
  /** UDP only: payload offset and length (clamped to what was captured). */
  payloadOff: number;
  payloadLen: number;
}

function l4View(buf: Uint8Array, ip: IpView): L4View {
  const p = ip.l4Off;
  const avail = ip.end - p;
  const out: L4View = { sport: 0, dport: 0, hasPorts: false, text: protoName(ip.proto), payloadOff: 0, payloadLen: 0 };
  if (ip.fragOff !== 0) {
    out.text = `${protoName(ip.proto)} fragment id=${ip.fragId} off=${ip.fragOff} len=${Math.max(avail, 0)}${ip.more ? '' : ' last'}`;
    return out;
  }
  const fragNote = ip.more ? ` (first fragment id=${ip.fragId})` : '';
  if (ip.proto === 6) {
    if (avail < 20) {
      out.text = `tcp truncated${fragNote}`;
      return out;
    }
    out.sport = u16(buf, p);
    out.dport = u16(buf, p + 2);
    out.hasPorts = true;
    const doff = ((buf[p + 12] as number) >>> 4) * 4;
    out.text = `tcp [${tcpFlagsText(buf[p + 13] as number)}] len=${Math.max(avail - doff, 0)}${ip.cut ? '+' : ''}${fragNote}`;
  } else if (ip.proto === 17) {
    if (avail < 8) {
      out.text = `udp truncated${fragNote}`;
      return out;
    }
    out.sport = u16(buf, p);
    out.dport = u16(buf, p + 2);
    out.hasPorts = true;
    const ulen = u16(buf, p + 4);
    out.payloadOff = p + 8;
    out.payloadLen = Math.max(0, Math.min(ulen - 8, avail - 8));
    out.text = `udp len=${Math.max(ulen - 8, 0)}${fragNote}`;
  } else if (ip.proto === 1 || ip.proto === 58) {
    if (avail < 4) {
      out.text = `${protoName(ip.proto)} truncated`;
      return out;
    }
    const type = buf[p] as number;
    const code = buf[p + 1] as number;
    const names = ip.proto === 1 ? ICMP4_NAMES : ICMP6_NAMES;
    const echo = ip.proto === 1 ? type === 0 || type === 8 : type === 128 || type === 129;
    let t = `${protoName(ip.proto)} ${names[type] ?? `type=${type}`}`;
    if (echo && avail >= 8) {
      out.sport = out.dport = u16(buf, p + 4);
      t += ` id=${u16(buf, p + 4)} seq=${u16(buf, p + 6)}`;
    } else if (!echo && code !== 0) {
      t += ` code=${code}`;
    }
    out.text = t + fragNote;
  } else {
    out.text = `${protoName(ip.proto)} len=${Math.max(avail, 0)}${fragNote}`;
  }
  return out;
}

/** The compact form used for inner packets and record keys: "a:p→b:q tcp [S]". */
function innerText(buf: Uint8Array, off: number, len: number): string {
  const ip = walkIp(buf, off, len);
  if (typeof ip === 'string') return `(${ip})`;
  const l4 = l4View(buf, ip);
  if (!l4.hasPorts || ip.proto === 1 || ip.proto === 58) return `${ip.src}→${ip.dst} ${l4.text}`;
  if (ip.proto === 6) {
    const flags = buf[ip.l4Off + 13] as number;
    return `${ep(ip.src, l4.sport)}→${ep(ip.dst, l4.dport)} tcp [${tcpFlagsText(flags)}]${ip.more ? ' (fragment)' : ''}`;
  }
  return `${ep(ip.src, l4.sport)}→${ep(ip.dst, l4.dport)} ${protoName(ip.proto)}${ip.more ? ' (fragment)' : ''}`;
}

/** A record's flow key (13- or 40-byte wire form) as "10.99.1.2:40000→10.99.0.10:80/tcp". */
export function wireKeyText(wire: Uint8Array): string {
  const key = new Uint8Array(40);
  if (!expandWireKey(wire, key, 0)) return `key(${wire.length} bytes)`;
  const v4 = key[37] === 4;
  const src = formatIp(key, v4 ? 12 : 0, v4 ? 4 : 16);
  const dst = formatIp(key, v4 ? 28 : 16, v4 ? 4 : 16);
  const sport = u16(key, 32);
  const dport = u16(key, 34);
  const p = key[36] as number;
  if (p === 1 || p === 58) return `${src}→${dst}/${protoName(p)} id=${sport}`;
  return `${ep(src, sport)}→${ep(dst, dport)}/${protoName(p)}`;
}

function isMulticast(addr: string): boolean {
  if (addr.includes(':')) return addr.toLowerCase().startsWith('ff');
  const first = Number(addr.split('.')[0]);
  return first >= 224 && first <= 239;
}

/** The probe table is bounded: a capture of probes whose acks never come stays small. */
const MAX_PENDING_PROBES = 4096;

/**
 * The decoder of one capture. Keeps a little state across packets (outstanding probes, to
 * show each ack's round trip as seen at the capture point).
 */
export class CaptureDecoder {
  readonly controlPorts: ReadonlySet<number>;
  readonly dataPorts: ReadonlySet<number>;
  readonly key: MacKey | null;
  readonly names: CaptureNames | null;
  readonly clusterId: number | null;
  readonly #probes = new Map<string, number>();
  readonly tagKey: Uint32Array | null;
  readonly #encap = new EncapInfo();
  readonly #inner = new PacketInfo();
  readonly #dr = new DecodeResult();

  constructor(opts: DecoderOptions = {}) {
    this.controlPorts = new Set(opts.controlPorts ?? [DEFAULT_CONTROL_PORT, DEFAULT_PROBE_PORT]);
    this.dataPorts = new Set(opts.dataPorts ?? [DEFAULT_DATA_PORT]);
    this.key = opts.key ?? null;
    this.names = opts.names ?? null;
    this.clusterId = opts.clusterId ?? null;
    this.tagKey = opts.tagKey ?? null;
  }

  /** A balancer index as its id, "#N", or "none" (0xff). */
  balancer(i: number): string {
    if (i === ENCAP_NONE_U8) return 'none';
    return this.names?.balancers[i] ?? `#${i}`;
  }

  /** A backend index within a VIP: "#1", "#1(10.99.3.22)" with names, "none" for 0xffff. */
  backend(vip: number, be: number): string {
    if (be === ENCAP_NONE_U16) return 'none';
    const a = this.names?.vips[vip]?.backends[be];
    return a === undefined ? `#${be}` : `#${be}(${a})`;
  }

  /** An address as a balancer id when it is one. */
  host(addr: string): string {
    return this.names?.byAddress.get(addr) ?? addr;
  }

  /** Decodes one captured frame of the given LINKTYPE into lines (without timestamps). */
  decodeFrame(linktype: number, frame: Uint8Array, len: number = frame.length, tsUs = 0): string[] {
    len = Math.min(len, frame.length);
    switch (linktype) {
      case LINKTYPE.RAW:
        return this.decodeIp(frame, 0, len, tsUs);
      case LINKTYPE.ETHERNET: {
        if (len < 14) return [`ethernet truncated (${len} bytes)`];
        let off = 12;
        let type = u16(frame, off);
        // 802.1Q / 802.1ad tags: skip up to two.
        for (let i = 0; i < 2 && (type === 0x8100 || type === 0x88a8) && off + 6 <= len; i++) {
          off += 4;
          type = u16(frame, off);
        }
        return this.decodeEtherType(type, frame, off + 2, len - off - 2, tsUs);
      }
      case LINKTYPE.LINUX_SLL:
        if (len < 16) return [`linux-sll truncated (${len} bytes)`];
        return this.decodeEtherType(u16(frame, 14), frame, 16, len - 16, tsUs);
      case LINKTYPE.NULL: {
        if (len < 4) return [`null/loopback truncated (${len} bytes)`];
        let fam = frame[0]! | (frame[1]! << 8) | (frame[2]! << 16) | (frame[3]! << 24);
        if (fam > 0xffff || fam < 0) fam = u32(frame, 0);
        if (fam === 2) return this.decodeIp(frame, 4, len - 4, tsUs);
        if (fam === 10 || fam === 24 || fam === 28 || fam === 30) return this.decodeIp(frame, 4, len - 4, tsUs);
        return [`loopback family ${fam} len=${len - 4}`];
      }
      default:
        return [`link type ${linktype}: ${len} bytes (not decoded)`];
    }
  }

  decodeEtherType(type: number, buf: Uint8Array, off: number, len: number, tsUs: number): string[] {
    if (type === 0x0800 || type === 0x86dd) return this.decodeIp(buf, off, len, tsUs);
    if (type === 0x0806) return [arpText(buf, off, len)];
    return [`ethertype 0x${type.toString(16).padStart(4, '0')} len=${len}`];
  }

  /** Decodes one IP packet (IPv4 or IPv6) at buf[off..off+len). */
  decodeIp(buf: Uint8Array, off: number, len: number, tsUs = 0): string[] {
    const ip = walkIp(buf, off, len);
    if (typeof ip === 'string') return [ip];
    const l4 = l4View(buf, ip);
    if (ip.proto === 17 && l4.hasPorts && ip.fragOff === 0) {
      const payload = buf.subarray(l4.payloadOff, l4.payloadOff + l4.payloadLen);
      const frag = ip.more || ip.cut;
      const ctl = this.controlPorts.has(l4.dport) || (this.controlPorts.has(l4.sport) && !this.dataPorts.has(l4.dport));
      const data = !ctl && (this.dataPorts.has(l4.dport) || this.dataPorts.has(l4.sport));
      if (ctl) {
        if (frag) return [`${this.host(ip.src)} → ${this.dst(ip.dst)} control: incomplete datagram (${l4.text}; captured ${payload.length} bytes)`];
        return this.decodeControl(ip.src, ip.dst, payload, tsUs);
      }
      if (data) {
        const line = this.decodeEncap(ip.src, ip.dst, payload);
        return [frag ? `${line} (outer IP fragment: inner packet cut)` : line];
      }
    }
    if (l4.hasPorts && ip.proto !== 1 && ip.proto !== 58) return [`${ep(ip.src, l4.sport)} → ${ep(ip.dst, l4.dport)} ${l4.text}`];
    return [`${ip.src} → ${ip.dst} ${l4.text}`];
  }

  dst(addr: string): string {
    return isMulticast(addr) ? 'group' : this.host(addr);
  }

  /**
   * One control datagram (the UDP payload) from src to dst, as lines. Verifies the MAC when
   * the decoder has the key. Never throws.
   */
  decodeControl(src: string, dst: string, payload: Uint8Array, tsUs = 0): string[] {
    const head = `${this.host(src)} → ${this.dst(dst)}`;
    let env: ReceivedEnvelope;
    let mark = '';
    if (this.key !== null) {
      const r = decodeSigned(payload, 0, payload.length, this.key, this.#dr);
      if (r.result === ProtocolResult.MALFORMED_OUTER) return [`${head} control: not a tunlb envelope (${payload.length} bytes)`];
      if (r.result === ProtocolResult.OK) {
        env = r.envelope!;
      } else {
        mark = r.result === ProtocolResult.BAD_MAC ? ' [BAD MAC: forged, or another cluster key]' : ` [invalid: ${PROTOCOL_RESULT_NAMES[r.result] ?? r.result}]`;
        const raw = rawEnvelope(payload);
        if (typeof raw === 'string') return [`${head} control: ${raw}${mark}`];
        env = raw;
      }
    } else {
      const raw = rawEnvelope(payload);
      if (typeof raw === 'string') return [`${head} control: ${raw}`];
      env = raw;
      mark = ' (unverified)';
    }
    if (this.clusterId !== null && env.clusterId !== this.clusterId) mark += ' [other cluster]';
    const seq = `seq=${env.seq}`;
    switch (env.body) {
      case 'records': {
        const recs = env.records?.records ?? [];
        if (recs.length === 0) return [`${head} records ${seq} (empty)${mark}`];
        return recs.map((r, i) => `${head} records ${seq}${recs.length > 1 ? ` [${i + 1}/${recs.length}]` : ''} ${this.recordText(r)}${mark}`);
      }
      case 'probe': {
        const p = env.probe!;
        this.#rememberProbe(src, p.nonce, tsUs);
        return [`${head} probe ${seq} target=${this.balancer(p.target)} status=${STATUS_NAMES[p.status] ?? p.status}${mark}`];
      }
      case 'probeAck': {
        const a = env.probeAck!;
        const k = `${dst}/${a.nonce}`;
        const sent = this.#probes.get(k);
        let rtt = '';
        if (sent !== undefined && tsUs >= sent) {
          this.#probes.delete(k);
          rtt = ` rtt=${((tsUs - sent) / 1000).toFixed(3)}ms`;
        }
        return [`${head} probe-ack ${seq} status=${STATUS_NAMES[a.status] ?? a.status}${rtt}${mark}`];
      }
      case 'syncRequest': {
        const s = env.syncRequest!;
        return [`${head} sync-request ${seq} id=${hex(s.requestId)} from=${s.fromCursor}${mark}`];
      }
      case 'syncChunk': {
        const c = env.syncChunk!;
        return [
          `${head} sync-chunk ${seq} id=${hex(c.requestId)} chunk=${c.chunkIndex} records=${c.records.length} total=${c.totalRecords} next=${c.nextCursor}${c.done ? ' done' : ''}${mark}`,
        ];
      }
      case 'health':
        return this.healthLines(head, seq, env.health as unknown as LooseHealth, mark);
      case 'summary': {
        const x = env.summary!;
        return [
          `${head} summary ${seq} status=${STATUS_NAMES[x.status] ?? x.status} config=${Number(x.configHash).toString(16).padStart(12, '0')} flows=${x.flowsHeld} primary=${x.flowsPrimary} pps-in=${x.packetsInPerS} pps-out=${x.packetsOutPerS}${mark}`,
        ];
      }
      case 'reloadRequest':
        return [`${head} reload-request ${seq} id=${hex(env.reloadRequest!.requestId)}${mark}`];
      case 'reloadAnswer': {
        const x = env.reloadAnswer!;
        return [`${head} reload-answer ${seq} id=${hex(x.requestId)} ${x.ok ? 'ok' : 'refused'} config=${Number(x.configHash).toString(16).padStart(12, '0')} ${JSON.stringify(x.detail)}${mark}`];
      }
      default:
        return [`${head} control ${seq} (no body this version knows)${mark}`];
    }
  }

  /** "create 10.99.1.2:40000→10.99.0.10:80/tcp primary=lb2 backup=lb3 backend=#1". */
  recordText(r: tunlb.v1.FlowRecord): string {
    const op = OP_NAMES[r.op] ?? `op-${r.op}`;
    const backup = r.backup === r.primary ? 'none' : this.balancer(r.backup);
    return `${op} ${wireKeyText(r.key)} primary=${this.balancer(r.primary)} backup=${backup} backend=${this.backend(r.vip, r.backend)}`;
  }

  /** One encapsulated packet (the UDP payload of a datagram to a data port), as a line. */
  decodeEncap(src: string, dst: string, payload: Uint8Array): string {
    const head = `${this.host(src)} → ${this.dst(dst)} encap`;
    const e = this.#encap;
    const r = parseEncap(payload, 0, payload.length, e);
    if (r !== PacketResult.OK) return `${head} bad header: ${packetResultName(r)} (${payload.length} bytes)`;
    const flags: string[] = [];
    if (e.flags & ENCAP_F_NEW_FLOW) flags.push('NEW_FLOW');
    if (e.flags & ENCAP_F_REPLY) flags.push('REPLY');
    if (e.flags & ENCAP_F_SECOND_CHANCE) flags.push('SECOND_CHANCE');
    if (e.flags & ENCAP_F_FAILOVER) flags.push('FAILOVER');
    if (e.flags & ENCAP_F_VNET) flags.push('VNET');
    let gso = '';
    if (e.vnetOff >= 0) {
      const t = (payload[e.vnetOff + 1] as number) & 0x7f;
      const size = (payload[e.vnetOff + 4] as number) | ((payload[e.vnetOff + 5] as number) << 8);
      if (t !== 0) gso = ` gso=${GSO_NAMES[t] ?? t}/${size}`;
      else if ((payload[e.vnetOff] as number) & 1) gso = ' csum=partial';
    }
    return (
      `${head} ${flags.length ? flags.join('|') : '-'} primary=${this.balancer(e.primary)} backup=${this.balancer(e.backup)} ` +
      `backend=${this.backend(e.vip, e.backend)}${gso} inner ${innerText(payload, e.innerOff, e.innerLen)}${this.#tagMark(src, dst, payload)}`
    );
  }

  /** "" when the tag of the datagram just parsed into #encap verifies, else why not. */
  #tagMark(src: string, dst: string, payload: Uint8Array): string {
    const e = this.#encap;
    const ids = this.names?.balancers;
    const from = ids?.indexOf(this.names?.byAddress.get(src) ?? '') ?? -1;
    const to = ids?.indexOf(this.names?.byAddress.get(dst) ?? '') ?? -1;
    if (this.tagKey === null || from < 0 || to < 0) return ' (tag unverified)';
    const info = this.#inner;
    if (parsePacket(payload, e.innerOff, e.innerLen, info) !== PacketResult.OK) return ' [BAD TAG: inner packet does not parse]';
    return dataTagMatches(payload, e.hdrOff, this.tagKey, info.key, from, to) ? '' : ' [BAD TAG]';
  }

  /** "health seq=7 periodic backends=6", or one line per changed backend entry. */
  healthLines(head: string, seq: string, h: LooseHealth | null, mark: string): string[] {
    const list = h?.backends ?? [];
    const kind = h?.periodic ? ' periodic' : '';
    const hs = h?.sequence ? ` hseq=${h.sequence}` : '';
    if (list.length === 0 || h?.periodic) return [`${head} health ${seq}${kind}${hs} backends=${list.length}${mark}`];
    return list.map((b, i) => {
      const vip = b.vip ?? 0;
      const vipName = this.names?.vips[vip]?.name ?? `vip#${vip}`;
      const drain = b.drainStamp ? (b.drained ? ' drained' : ' undrained') : '';
      const weight = b.weightStamp ? (b.weightSet ? ` weight=${b.weight ?? 0}` : ' weight=file') : '';
      const maint = b.maintStamp ? (b.maintenance ? ' maint' : ' maint-off') : '';
      const state = b.state ? ` ${HEALTH_NAMES[b.state] ?? `state-${b.state}`}` : '';
      const reason = b.reason ? ` "${b.reason}"` : '';
      return `${head} health ${seq}${hs}${list.length > 1 ? ` [${i + 1}/${list.length}]` : ''} ${vipName} ${this.backend(vip, b.backend ?? 0)}${state}${drain}${weight}${maint}${reason}${mark}`;
    });
  }

  #rememberProbe(prober: string, nonce: number, tsUs: number): void {
    if (this.#probes.size >= MAX_PENDING_PROBES) {
      const oldest = this.#probes.keys().next().value;
      if (oldest !== undefined) this.#probes.delete(oldest);
    }
    this.#probes.set(`${prober}/${nonce}`, tsUs);
  }
}

function hex(n: number): string {
  return Number.isSafeInteger(n) ? n.toString(16) : String(n);
}

/**
 * HealthReport as far as this build's schema has fields for it (version 1 started with an
 * empty message; backends' health entries were added later): read loosely, absent = 0.
 */
interface LooseHealth {
  epoch?: number;
  sequence?: number;
  periodic?: boolean;
  backends?: Array<{ vip?: number; backend?: number; state?: number; reason?: string; drainStamp?: number; drained?: boolean; weightStamp?: number; weight?: number; weightSet?: boolean; maintStamp?: number; maintenance?: boolean }>;
}
const HEALTH_NAMES: Record<number, string> = { 0: 'no-health', 1: 'healthy', 2: 'unhealthy' };

/** Decodes SignedEnvelope + Envelope without verifying the MAC; a string says why it failed. */
function rawEnvelope(payload: Uint8Array): ReceivedEnvelope | string {
  let signed: tunlb.v1.SignedEnvelope;
  try {
    signed = tunlb.v1.SignedEnvelope.decode(payload);
  } catch {
    return `not a tunlb envelope (${payload.length} bytes)`;
  }
  if (signed.envelope.length === 0) return `not a tunlb envelope (${payload.length} bytes)`;
  try {
    return tunlb.v1.Envelope.decode(signed.envelope) as unknown as ReceivedEnvelope;
  } catch {
    return `envelope does not decode (${signed.envelope.length} bytes)`;
  }
}

function macText(b: Uint8Array, o: number): string {
  const h: string[] = [];
  for (let i = 0; i < 6; i++) h.push((b[o + i] as number).toString(16).padStart(2, '0'));
  return h.join(':');
}

function arpText(b: Uint8Array, off: number, len: number): string {
  if (len < 28 || u16(b, off) !== 1 || u16(b, off + 2) !== 0x0800) return `arp len=${len}`;
  const op = u16(b, off + 6);
  const spa = formatIp(b, off + 14, 4);
  const tpa = formatIp(b, off + 24, 4);
  if (op === 1) return `arp who-has ${tpa} tell ${spa}`;
  if (op === 2) return `arp reply ${spa} is-at ${macText(b, off + 8)}`;
  return `arp op=${op} ${spa} → ${tpa}`;
}
