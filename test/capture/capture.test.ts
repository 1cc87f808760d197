/**
 * tunlb capture without root: the pcap writer/reader (src/capture/capture-pcap.ts), the
 * decoders of tunlb's traffic on crafted bytes (src/capture/capture-decode.ts: flow records,
 * probes, bulk sync, encapsulation, other packets, link layers), option checks and the
 * --read mode of runCapture (src/capture/capture.ts). Live capture (libpcap) is in
 * native-tests/capture.test.ts.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config';
import { isTunlbError, ErrorCodes } from '../../src/errors';
import { ENCAP_F_FAILOVER, ENCAP_F_NEW_FLOW, ENCAP_F_VNET, ENCAP_HEADER_LEN, writeEncapHeader } from '../../src/packet/encap';
import { keyFromParts } from '../../src/packet/flow-key';
import { compactV4Key, encodeSigned, type EnvelopeFields } from '../../src/protocol';
import { tunlb } from '../../src/protocol/generated/tunlb';
import { CaptureDecoder, decoderOptionsFromConfig, tcpFlagsText, walkIp, wireKeyText } from '../../src/capture/capture-decode';
import {
  LINKTYPE,
  linkTypeFromCap,
  pcapGlobalHeader,
  pcapRecordHeader,
  PcapWriter,
  readPcap,
} from '../../src/capture/capture-pcap';
import { runCapture, wireLength, type CaptureOptions } from '../../src/capture/capture';
import * as P from '../helpers/packets';
import { deriveDataTagKey } from '../../src/decision/hash-key';
import { tagDatagram } from '../helpers/peer-datagram';

const KEY = Buffer.alloc(32, 0x5c);
const OTHER_KEY = Buffer.alloc(32, 0x11);
const LB1 = '10.99.2.11';
const LB2 = '10.99.2.12';
const LB3 = '10.99.2.13';
const GROUP = '239.99.0.1';

const LAB_YAML = `
cluster: { id: lab, key_file: cluster.key, replication: { mode: multicast, group: 239.99.0.1, control_port: 7946, data_port: 7947 } }
balancers:
  - { id: lb1, address: ${LB1} }
  - { id: lb2, address: ${LB2} }
  - { id: lb3, address: ${LB3} }
vips:
  - name: web4
    address: 10.99.0.10
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }, { address: 10.99.3.23 }]
  - name: web6
    address: "fd99::10"
    backends: [{ address: "fd99:3::21" }, { address: "fd99:3::22", port: 8080 }]
`;
const labConfig = () => parseConfig(LAB_YAML, 'lab.yaml', { readKeyFile: () => KEY });

function header(seq: number, sender = 0): Omit<EnvelopeFields, 'records'> {
  return { clusterId: 77, sender, incarnation: 1000, seq, sentAtMs: 1_700_000_000_000 };
}

function v4Key(src: string, dst: string, sport: number, dport: number, proto: number): Uint8Array {
  const k = keyFromParts(src, dst, sport, dport, proto);
  const c = new Uint8Array(13);
  compactV4Key(k, 0, c, 0);
  return c;
}

const rec = (over: Partial<tunlb.v1.FlowRecord.$Properties> = {}): tunlb.v1.FlowRecord.$Properties => ({
  op: 1,
  key: v4Key('10.99.1.2', '10.99.0.10', 40000, 80, 6),
  primary: 1,
  backup: 2,
  vip: 0,
  backend: 1,
  state: 2,
  ageS: 0,
  idleS: 0,
  tableGeneration: 3,
  ...over,
});

/** Ethernet II frame around an IP packet. */
function eth(ipPkt: Uint8Array, type = 0x0800): Uint8Array {
  const f = new Uint8Array(14 + ipPkt.length);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(ipPkt, 14);
  return f;
}

const TAG_KEY = deriveDataTagKey(KEY);

/**
 * One encapsulated packet: header + inner, as the UDP payload to the data port, tagged with
 * KEY's data-tag key as balancer index `route[0]` sends it to `route[1]` (lb1 → lb2 unless given).
 */
function encap(inner: Uint8Array, flags: number, primary: number, backup: number, backend: number, vip = 0, vnet?: Uint8Array, route = [0, 1]): Uint8Array {
  const extra = vnet ? vnet.length : 0;
  const b = new Uint8Array(ENCAP_HEADER_LEN + extra + inner.length);
  writeEncapHeader(b, 0, flags | (vnet ? ENCAP_F_VNET : 0), primary, backup, backend, vip, 9);
  if (vnet) b.set(vnet, ENCAP_HEADER_LEN);
  b.set(inner, ENCAP_HEADER_LEN + extra);
  tagDatagram(b, TAG_KEY, route[0]!, route[1]!);
  return b;
}

// ---- pcap file format ----

test('pcap global header: magic, version 2.4, snaplen, LINKTYPE, little-endian', (t) => {
  const h = pcapGlobalHeader(LINKTYPE.ETHERNET, 65535);
  t.is(h.length, 24);
  t.deepEqual([...h], [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0]);
  t.is(pcapGlobalHeader(LINKTYPE.RAW).readUInt32LE(20), 101);
});

test('pcap record header: seconds, microseconds, saved and wire lengths', (t) => {
  const h = pcapRecordHeader(1_700_000_123_456_789, 60, 74);
  t.is(h.readUInt32LE(0), 1_700_000_123);
  t.is(h.readUInt32LE(4), 456_789);
  t.is(h.readUInt32LE(8), 60);
  t.is(h.readUInt32LE(12), 74);
  // orig_len is never below incl_len
  t.is(pcapRecordHeader(0, 60, 10).readUInt32LE(12), 60);
});

test("cap's link type names map to LINKTYPE values; unknown ones are a usage error", (t) => {
  t.is(linkTypeFromCap('ETHERNET'), 1);
  t.is(linkTypeFromCap('RAW'), 101); // not DLT_RAW (12/14): the file format's value
  t.is(linkTypeFromCap('LINKTYPE_LINUX_SLL'), 113);
  t.is(linkTypeFromCap('NULL'), 0);
  const e = t.throws(() => linkTypeFromCap('Unknown linktype 147'));
  t.true(isTunlbError(e, ErrorCodes.USAGE));
});

test('PcapWriter writes a file readPcap (and tcpdump -r, when installed) reads back packet by packet', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-cap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'x.pcap');
  const w = new PcapWriter(file, LINKTYPE.ETHERNET, 65535, 64 * 1024 + 100);
  const frames = [
    eth(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_SYN)),
    eth(P.udp4(LB1, GROUP, 7946, 7946, new Uint8Array(100))),
    eth(P.icmp4Echo('10.99.1.2', '10.99.0.10', 8, 7, 1)),
  ];
  let ts = 1_700_000_000_000_000;
  for (const f of frames) w.write(f, f.length, (ts += 1500));
  // a big frame forces a flush in the middle
  const big = eth(P.udp4(LB1, LB2, 7947, 7947, new Uint8Array(60000)));
  w.write(big, big.length, (ts += 1));
  w.close();
  w.close(); // idempotent
  t.is(w.packets, 4);
  const f = readPcap(readFileSync(file));
  t.is(f.linktype, 1);
  t.is(f.snaplen, 65535);
  t.false(f.truncated);
  t.is(f.records.length, 4);
  t.deepEqual([...f.records[0]!.data], [...frames[0]!]);
  t.is(f.records[3]!.data.length, big.length);
  t.is(f.records[1]!.tsUs - f.records[0]!.tsUs, 1500);
  let out = '';
  try {
    out = execFileSync('tcpdump', ['-nn', '-r', file], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return t.log('tcpdump not installed: file read back by readPcap only');
    throw e;
  }
  const lines = out.trim().split('\n');
  t.is(lines.length, 4, out);
  t.regex(lines[0]!, /10\.99\.1\.2\.40000 > 10\.99\.0\.10\.80: Flags \[S\]/);
  t.regex(lines[2]!, /ICMP echo request, id 7, seq 1/);
});

test('readPcap: big-endian and nanosecond files, cut-off files, and what is not pcap', (t) => {
  const be = Buffer.alloc(24 + 16 + 4);
  be.writeUInt32BE(0xa1b23c4d, 0); // ns magic, big-endian
  be.writeUInt16BE(2, 4);
  be.writeUInt16BE(4, 6);
  be.writeUInt32BE(65535, 16);
  be.writeUInt32BE(101, 20);
  be.writeUInt32BE(10, 24);
  be.writeUInt32BE(123_456_789, 28);
  be.writeUInt32BE(4, 32);
  be.writeUInt32BE(4, 36);
  const f = readPcap(be);
  t.is(f.linktype, 101);
  t.is(f.records[0]!.tsUs, 10_123_456);
  t.false(f.truncated);
  t.true(readPcap(be.subarray(0, 30)).truncated);
  const ng = Buffer.alloc(28);
  ng.writeUInt32LE(0x0a0d0d0a, 0);
  const e = t.throws(() => readPcap(ng, 'x.pcapng'));
  t.regex(e!.message, /pcapng/);
  t.throws(() => readPcap(Buffer.alloc(3)));
});

test('wireLength: link header + IP length, never below the captured length', (t) => {
  const p = P.udp4(LB1, LB2, 1, 2, new Uint8Array(1000));
  const f = eth(p);
  t.is(wireLength(LINKTYPE.ETHERNET, f, 100), 14 + p.length); // snapped capture
  t.is(wireLength(LINKTYPE.RAW, p, p.length), p.length);
  const small = eth(P.udp4(LB1, LB2, 1, 2)); // 42 bytes, padded to 60 on the wire
  const padded = new Uint8Array(60);
  padded.set(small);
  t.is(wireLength(LINKTYPE.ETHERNET, padded, 60), 60);
  const p6 = P.udp6('fd99:2::11', 'fd99:2::12', 1, 2, new Uint8Array(10));
  t.is(wireLength(LINKTYPE.RAW, p6, 20), p6.length);
  t.is(wireLength(LINKTYPE.NULL, p6, p6.length), p6.length);
});

// ---- decoding: control datagrams ----

test('records: the documented line, verified with the key', (t) => {
  const d = new CaptureDecoder({ ...decoderOptionsFromConfig(labConfig()), key: KEY, clusterId: 77 });
  const dg = encodeSigned({ ...header(12), records: { records: [rec()] } }, KEY);
  t.deepEqual(d.decodeIp(P.udp4(LB1, GROUP, 7946, 7946, dg), 0, 20 + 8 + dg.length), [
    'lb1 → group records seq=12 create 10.99.1.2:40000→10.99.0.10:80/tcp primary=lb2 backup=lb3 backend=#1(10.99.3.22)',
  ]);
});

test('records: without a key the line says "(unverified)"; without a config, addresses and #indexes', (t) => {
  const d = new CaptureDecoder();
  const dg = encodeSigned({ ...header(12), records: { records: [rec()] } }, KEY);
  t.deepEqual(d.decodeControl(LB1, GROUP, dg), [
    `${LB1} → group records seq=12 create 10.99.1.2:40000→10.99.0.10:80/tcp primary=#1 backup=#2 backend=#1 (unverified)`,
  ]);
});

test('records: another key is a BAD MAC mark (content still shown), another cluster is marked', (t) => {
  const opts = decoderOptionsFromConfig(labConfig());
  const dg = encodeSigned({ ...header(5), records: { records: [rec({ op: 3 })] } }, OTHER_KEY);
  const [line] = new CaptureDecoder({ ...opts, key: KEY }).decodeControl(LB1, GROUP, dg);
  t.regex(line!, /^lb1 → group records seq=5 delete .* \[BAD MAC: forged, or another cluster key\] \[other cluster\]$/);
  // the lab config's real cluster id differs from 77
  const [l2] = new CaptureDecoder({ ...opts, key: OTHER_KEY }).decodeControl(LB1, GROUP, dg);
  t.regex(l2!, /delete .*backend=#1\(10\.99\.3\.22\) \[other cluster\]$/);
});

test('records: several per datagram give one line each; IPv6 keys, refresh, no backup, no backend', (t) => {
  const d = new CaptureDecoder({ ...decoderOptionsFromConfig(labConfig()), key: KEY, clusterId: 77 });
  const k6 = keyFromParts('fd99:1::2', 'fd99::10', 5555, 80, 6);
  const dg = encodeSigned(
    {
      ...header(40, 2),
      records: {
        records: [
          rec({ op: 2, key: k6, vip: 1, backend: 1, primary: 2, backup: 2 }),
          rec({ op: 1, key: v4Key('10.99.1.2', '10.99.0.10', 9, 9, 1), backend: 0xffff, primary: 0, backup: 1 }),
          rec({ op: 1, key: v4Key('10.99.1.2', '10.99.0.10', 50000, 53, 17), backend: 2 }),
        ],
      },
    },
    KEY,
  );
  t.deepEqual(d.decodeControl(LB3, GROUP, dg), [
    'lb3 → group records seq=40 [1/3] refresh [fd99:1::2]:5555→[fd99::10]:80/tcp primary=lb3 backup=none backend=#1([fd99:3::22]:8080)',
    'lb3 → group records seq=40 [2/3] create 10.99.1.2→10.99.0.10/icmp id=9 primary=lb1 backup=lb2 backend=none',
    'lb3 → group records seq=40 [3/3] create 10.99.1.2:50000→10.99.0.10:53/udp primary=lb2 backup=lb3 backend=#2(10.99.3.23)',
  ]);
});

test('probe and probe-ack (with the round trip seen at the capture point), sync request/chunk', (t) => {
  const d = new CaptureDecoder({ ...decoderOptionsFromConfig(labConfig()), key: KEY, clusterId: 77 });
  const probe = encodeSigned({ ...header(7, 0), probe: { nonce: 424242, sentAtMs: 100, target: 1, status: 2 } }, KEY);
  const ack = encodeSigned({ ...header(9, 1), probeAck: { nonce: 424242, probeSentAtMs: 100, proberIncarnation: 1000, status: 1 } }, KEY);
  t.deepEqual(d.decodeControl(LB1, LB2, probe, 1_000_000), ['lb1 → lb2 probe seq=7 target=lb2 status=serving']);
  t.deepEqual(d.decodeControl(LB2, LB1, ack, 1_000_250), ['lb2 → lb1 probe-ack seq=9 status=syncing rtt=0.250ms']);
  // a second ack with the same nonce has no probe left to match
  t.deepEqual(d.decodeControl(LB2, LB1, ack, 1_000_900), ['lb2 → lb1 probe-ack seq=9 status=syncing']);
  const req = encodeSigned({ ...header(3, 1), syncRequest: { requestId: 0xabcdef, fromCursor: 0 } }, KEY);
  t.deepEqual(d.decodeControl(LB2, LB1, req), ['lb2 → lb1 sync-request seq=3 id=abcdef from=0']);
  const chunk = encodeSigned(
    { ...header(20, 0), syncChunk: { requestId: 0xabcdef, chunkIndex: 4, nextCursor: 812, done: true, totalRecords: 150, records: [rec(), rec()] } },
    KEY,
  );
  t.deepEqual(d.decodeControl(LB1, LB2, chunk), ['lb1 → lb2 sync-chunk seq=20 id=abcdef chunk=4 records=2 total=150 next=812 done']);
  const health = encodeSigned({ ...header(21, 0), health: {} }, KEY);
  t.regex(d.decodeControl(LB1, GROUP, health)[0]!, /^lb1 → group health seq=21/);
});

test('health reports: periodic ones in one line, changes one line per backend with state, drain and reason', (t) => {
  const d = new CaptureDecoder({ ...decoderOptionsFromConfig(labConfig()), key: KEY, clusterId: 77 });
  const periodic = encodeSigned({ ...header(30), health: { epoch: 5, sequence: 9, periodic: true, periodMs: 1000, backends: [{ vip: 0, backend: 0, state: 1 }, { vip: 0, backend: 1, state: 1 }] } }, KEY);
  t.deepEqual(d.decodeControl(LB1, GROUP, periodic), ['lb1 → group health seq=30 periodic hseq=9 backends=2']);
  const change = encodeSigned(
    {
      ...header(31),
      health: {
        epoch: 5,
        sequence: 10,
        backends: [
          { vip: 0, backend: 1, state: 2, reason: '3 consecutive failures: connect ECONNREFUSED' },
          { vip: 1, backend: 1, drainStamp: 12345, drained: true },
        ],
      },
    },
    KEY,
  );
  t.deepEqual(d.decodeControl(LB1, GROUP, change), [
    'lb1 → group health seq=31 hseq=10 [1/2] web4 #1(10.99.3.22) unhealthy "3 consecutive failures: connect ECONNREFUSED"',
    'lb1 → group health seq=31 hseq=10 [2/2] web6 #1([fd99:3::22]:8080) drained',
  ]);
});

test('control port garbage, empty record batches and truncated datagrams are described, never thrown', (t) => {
  const d = new CaptureDecoder({ key: KEY });
  t.deepEqual(d.decodeControl(LB1, GROUP, new Uint8Array([0xff, 0xff, 0xff])), [`${LB1} → group control: not a tunlb envelope (3 bytes)`]);
  const u = new CaptureDecoder();
  t.deepEqual(u.decodeControl(LB1, GROUP, Buffer.from('hello world')), [`${LB1} → group control: not a tunlb envelope (11 bytes)`]);
  const empty = encodeSigned({ ...header(1), records: { records: [] } }, KEY);
  t.deepEqual(d.decodeControl(LB1, GROUP, empty), [`${LB1} → group records seq=1 (empty)`]);
  const dg = encodeSigned({ ...header(2), records: { records: [rec()] } }, KEY);
  for (let n = 0; n < dg.length; n += 7) {
    const lines = u.decodeControl(LB1, GROUP, dg.subarray(0, n));
    t.is(lines.length >= 1, true);
  }
  // a fragment of a control datagram
  const frag = P.udp4(LB1, GROUP, 7946, 7946, new Uint8Array(200));
  frag[6] = 0x20; // MF
  t.regex(d.decodeIp(frag, 0, frag.length)[0]!, /control: incomplete datagram/);
});

// ---- decoding: encapsulation ----

test('encap: the documented line, with and without names; flags, VNET/GSO, bad headers', (t) => {
  const inner = P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_SYN);
  const noNames = new CaptureDecoder();
  t.is(
    noNames.decodeEncap(LB1, LB2, encap(inner, ENCAP_F_NEW_FLOW, 1, 2, 0)),
    `${LB1} → ${LB2} encap NEW_FLOW primary=#1 backup=#2 backend=#0 inner 10.99.1.2:40000→10.99.0.10:80 tcp [S] (tag unverified)`,
  );
  const d = new CaptureDecoder({ ...decoderOptionsFromConfig(labConfig()), tagKey: TAG_KEY });
  t.is(
    d.decodeEncap(LB1, LB3, encap(inner, ENCAP_F_FAILOVER, 1, 2, 0, 0, undefined, [0, 2])),
    'lb1 → lb3 encap FAILOVER primary=lb2 backup=lb3 backend=#0(10.99.3.21) inner 10.99.1.2:40000→10.99.0.10:80 tcp [S]',
  );
  // The tag: another receiver, an altered decision, another key, no key.
  t.regex(d.decodeEncap(LB1, LB2, encap(inner, ENCAP_F_FAILOVER, 1, 2, 0, 0, undefined, [0, 2])), / tcp \[S\] \[BAD TAG\]$/);
  const altered = encap(inner, ENCAP_F_FAILOVER, 1, 2, 0, 0, undefined, [0, 2]);
  altered[5] = 2;
  t.regex(d.decodeEncap(LB1, LB3, altered), /backend=#2\(10\.99\.3\.23\) .* \[BAD TAG\]$/);
  const other = new CaptureDecoder({ ...decoderOptionsFromConfig(labConfig()), tagKey: deriveDataTagKey(OTHER_KEY) });
  t.regex(other.decodeEncap(LB1, LB3, encap(inner, ENCAP_F_FAILOVER, 1, 2, 0, 0, undefined, [0, 2])), /\[BAD TAG\]$/);
  t.regex(new CaptureDecoder(decoderOptionsFromConfig(labConfig())).decodeEncap(LB1, LB3, encap(inner, 0, 1, 2, 0)), /\(tag unverified\)$/);
  const inner6 = P.udp6('fd99:1::2', 'fd99::10', 1000, 53, new Uint8Array(4));
  t.is(
    d.decodeEncap(LB1, LB2, encap(inner6, 0, 1, 0xff, 0xffff, 1)),
    'lb1 → lb2 encap - primary=lb2 backup=none backend=none inner [fd99:1::2]:1000→[fd99::10]:53 udp',
  );
  const vnet = new Uint8Array([1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0]); // NEEDS_CSUM, TCPV4, gso_size 1448
  t.regex(d.decodeEncap(LB1, LB2, encap(inner, 0, 1, 2, 0, 0, vnet)), /encap VNET primary=lb2 .* gso=tcpv4\/1448 inner 10\.99\.1\.2:40000/);
  const bad = encap(inner, 0, 1, 2, 0);
  bad[0] = 0x30;
  t.is(d.decodeEncap(LB1, LB2, bad), `lb1 → lb2 encap bad header: encap_bad_version (${bad.length} bytes)`);
  bad[0] = 0x10;
  t.is(d.decodeEncap(LB1, LB2, bad), `lb1 → lb2 encap bad header: encap_old_version (${bad.length} bytes)`);
  t.regex(d.decodeEncap(LB1, LB2, Uint8Array.of(0x20, 0, 0, 0, 0)), /encap bad header: encap_truncated/);
  // garbage inner packet
  t.regex(d.decodeEncap(LB1, LB2, encap(new Uint8Array([0x00, 1, 2]), 0, 1, 2, 0)), /inner \(not IP \(version 0\)\) \[BAD TAG: inner packet does not parse\]$/);
});

test('encap over the data port, in an Ethernet frame, and a fragmented outer datagram', (t) => {
  const d = new CaptureDecoder({ ...decoderOptionsFromConfig(labConfig()), tagKey: TAG_KEY });
  const inner = P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_ACK | P.TCP_PSH, new Uint8Array(10));
  const frame = eth(P.udp4(LB1, LB2, 7947, 7947, encap(inner, ENCAP_F_NEW_FLOW, 1, 2, 1)));
  t.deepEqual(d.decodeFrame(LINKTYPE.ETHERNET, frame), [
    'lb1 → lb2 encap NEW_FLOW primary=lb2 backup=lb3 backend=#1(10.99.3.22) inner 10.99.1.2:40000→10.99.0.10:80 tcp [P.]',
  ]);
  const first = P.udp4(LB1, LB2, 7947, 7947, encap(inner, 0, 1, 2, 1));
  first[6] = 0x20; // MF: a first fragment
  t.regex(d.decodeIp(first, 0, first.length)[0]!, /encap - primary=lb2 .*\(outer IP fragment: inner packet cut\)$/);
});

// ---- decoding: everything else ----

test('other packets: tcp/udp/icmp one-liners, IPv6, fragments, ARP, VLAN, cooked and raw link types', (t) => {
  const d = new CaptureDecoder();
  t.deepEqual(d.decodeIp(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_SYN | P.TCP_ACK), 0, 40), ['10.99.1.2:40000 → 10.99.0.10:80 tcp [S.] len=0']);
  const udp6 = P.udp6('fd99:1::2', 'fd99::10', 1234, 5353, new Uint8Array(5));
  t.deepEqual(d.decodeFrame(LINKTYPE.RAW, udp6), ['[fd99:1::2]:1234 → [fd99::10]:5353 udp len=5']);
  t.deepEqual(d.decodeIp(P.icmp4Echo('10.99.1.2', '10.99.0.10', 8, 7, 3), 0, 28), ['10.99.1.2 → 10.99.0.10 icmp echo-request id=7 seq=3']);
  const e6 = P.icmp6Echo('fd99:1::2', 'fd99::10', 129, 7, 3);
  t.deepEqual(d.decodeFrame(LINKTYPE.RAW, e6), ['fd99:1::2 → fd99::10 icmp6 echo-reply id=7 seq=3']);
  const later = P.udp4('10.99.1.2', '10.99.0.10', 1, 2, new Uint8Array(40));
  later[6] = 0x00;
  later[7] = 0x05; // offset 40 bytes, last fragment
  t.regex(d.decodeIp(later, 0, later.length)[0]!, /^10\.99\.1\.2 → 10\.99\.0\.10 udp fragment id=\d+ off=40 len=48 last$/);
  // ARP who-has
  const arp = new Uint8Array(28);
  arp.set([0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 99, 2, 11, 0, 0, 0, 0, 0, 0, 10, 99, 2, 12]);
  t.deepEqual(d.decodeFrame(LINKTYPE.ETHERNET, eth(arp, 0x0806)), ['arp who-has 10.99.2.12 tell 10.99.2.11']);
  // 802.1Q tag in front of IPv4
  const ip = P.udp4(LB1, LB2, 9, 9);
  const tagged = new Uint8Array(18 + ip.length);
  tagged.set(eth(ip).subarray(0, 12));
  tagged.set([0x81, 0x00, 0x00, 0x05, 0x08, 0x00], 12);
  tagged.set(ip, 18);
  t.deepEqual(d.decodeFrame(LINKTYPE.ETHERNET, tagged), [`${LB1}:9 → ${LB2}:9 udp len=0`]);
  // Linux cooked (the "any" device)
  const sll = new Uint8Array(16 + ip.length);
  sll[14] = 0x08;
  sll.set(ip, 16);
  t.deepEqual(d.decodeFrame(LINKTYPE.LINUX_SLL, sll), [`${LB1}:9 → ${LB2}:9 udp len=0`]);
  t.deepEqual(d.decodeFrame(LINKTYPE.ETHERNET, new Uint8Array(5)), ['ethernet truncated (5 bytes)']);
  t.deepEqual(d.decodeFrame(LINKTYPE.ETHERNET, eth(new Uint8Array(4), 0x88cc)), ['ethertype 0x88cc len=4']);
  t.deepEqual(d.decodeIp(new Uint8Array([0x45, 0, 0]), 0, 3), ['IPv4 truncated (3 bytes)']);
  // IGMP (multicast joins on lbnet)
  const igmp = P.ipv4(LB1, '224.0.0.22', 2, new Uint8Array(8));
  t.deepEqual(d.decodeIp(igmp, 0, igmp.length), [`${LB1} → 224.0.0.22 igmp len=8`]);
});

test('walkIp walks IPv6 extension headers; tcpFlagsText and wireKeyText', (t) => {
  const p = P.udp6('fd99:1::2', 'fd99::10', 1, 2, new Uint8Array(3), { ext: [{ type: 0 }, { type: 60 }] });
  const v = walkIp(p, 0, p.length);
  t.is(typeof v, 'object');
  if (typeof v === 'object') {
    t.is(v.proto, 17);
    t.is(v.l4Off, p.length - 11);
  }
  t.is(tcpFlagsText(0x12), 'S.');
  t.is(tcpFlagsText(0x11), 'F.');
  t.is(tcpFlagsText(0x04), 'R');
  t.is(tcpFlagsText(0), 'none');
  t.is(wireKeyText(new Uint8Array(7)), 'key(7 bytes)');
  t.is(wireKeyText(v4Key('10.99.1.2', '10.99.0.10', 0, 0, 17)), '10.99.1.2:0→10.99.0.10:0/udp');
});

test('decoderOptionsFromConfig: every control/data port, ids by index and address, backends by VIP', (t) => {
  const o = decoderOptionsFromConfig(labConfig());
  t.deepEqual(o.controlPorts, [7946, 7948], 'control and probe ports');
  t.deepEqual(o.dataPorts, [7947]);
  t.deepEqual(o.names!.balancers, ['lb1', 'lb2', 'lb3']);
  t.is(o.names!.byAddress.get(LB3), 'lb3');
  t.deepEqual(o.names!.vips[1], { name: 'web6', backends: ['fd99:3::21', '[fd99:3::22]:8080'] });
  t.true(Number.isSafeInteger(o.clusterId));
});

// ---- runCapture: options, --read ----

test('runCapture: option errors are one clear usage error', async (t) => {
  const table: Array<[CaptureOptions, RegExp]> = [
    [{}, /--iface/],
    [{ iface: 'lbnet0' }, /--out FILE, --decode/],
    [{ read: 'x.pcap', iface: 'lbnet0' }, /--read decodes an existing file/],
    [{ iface: 'x', decode: true, count: -1 }, /--count/],
    [{ iface: 'x', decode: true, controlPorts: [70000] }, /ports must be/],
  ];
  for (const [opts, re] of table) {
    const e = await t.throwsAsync(runCapture({ ...opts, note: () => undefined }));
    t.true(isTunlbError(e, ErrorCodes.USAGE), String(e));
    t.regex(e!.message, re);
  }
  const e = await t.throwsAsync(runCapture({ iface: 'x', decode: true, keyFile: '/nonexistent/key', note: () => undefined }));
  t.true(isTunlbError(e, ErrorCodes.CONFIG_KEY_MISSING));
});

test('runCapture --read decodes a pcap file with the config names and its key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-cap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'cluster.key'), KEY, { mode: 0o600 });
  writeFileSync(join(dir, 'lab.yaml'), LAB_YAML);
  const file = join(dir, 'in.pcap');
  const w = new PcapWriter(file, LINKTYPE.ETHERNET);
  const dg = encodeSigned({ ...header(12), records: { records: [rec()] } }, KEY);
  const frames = [
    eth(P.udp4(LB1, GROUP, 7946, 7946, dg)),
    eth(P.udp4(LB1, LB2, 7947, 7947, encap(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_SYN), ENCAP_F_NEW_FLOW, 1, 2, 0))),
    eth(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_SYN)),
  ];
  frames.forEach((f, i) => w.write(f, f.length, 1_700_000_000_000_000 + i));
  w.close();
  const lines: string[] = [];
  const notes: string[] = [];
  const s = await runCapture({ read: file, config: join(dir, 'lab.yaml'), print: (l) => lines.push(l), note: (l) => notes.push(l) });
  t.is(s.packets, 3);
  t.is(lines.length, 3);
  // the lab config's cluster id is not the test header's 77
  t.regex(lines[0]!, /^\d\d:\d\d:\d\d\.000000 lb1 → group records seq=12 create 10\.99\.1\.2:40000→10\.99\.0\.10:80\/tcp primary=lb2 backup=lb3 backend=#1\(10\.99\.3\.22\) \[other cluster\]$/);
  t.regex(lines[1]!, /\.000001 lb1 → lb2 encap NEW_FLOW primary=lb2 backup=lb3 backend=#0\(10\.99\.3\.21\) inner 10\.99\.1\.2:40000→10\.99\.0\.10:80 tcp \[S\]$/);
  t.regex(lines[2]!, /\.000002 10\.99\.1\.2:40000 → 10\.99\.0\.10:80 tcp \[S\] len=0$/);
  t.true(notes.some((n) => n.includes(`key: ${join(dir, 'lab.yaml')}`)), notes.join('\n'));
  // --count limits, --key-file overrides the config's key (another key: BAD MAC)
  writeFileSync(join(dir, 'other.key'), OTHER_KEY.toString('hex'), { mode: 0o600 });
  const l2: string[] = [];
  await runCapture({ read: file, count: 1, config: join(dir, 'lab.yaml'), keyFile: join(dir, 'other.key'), print: (l) => l2.push(l), note: () => undefined });
  t.is(l2.length, 1);
  t.regex(l2[0]!, /BAD MAC/);
  // config whose key file is missing: names still work, lines unverified
  rmSync(join(dir, 'cluster.key'));
  const l3: string[] = [];
  const n3: string[] = [];
  await runCapture({ read: file, count: 1, config: join(dir, 'lab.yaml'), print: (l) => l3.push(l), note: (l) => n3.push(l) });
  t.regex(l3[0]!, /lb1 → group records seq=12 .* \(unverified\) \[other cluster\]$/);
  t.true(n3.some((n) => /decoding without it/.test(n)), n3.join('\n'));
});
