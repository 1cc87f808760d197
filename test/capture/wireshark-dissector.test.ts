/**
 * The Wireshark dissector (tools/wireshark/tunlb.lua) on crafted frames, read by tshark: every
 * body of the control protocol and every flag of the encapsulation header, the flow key's
 * forms, proto3 defaults, fields a newer protocol adds (skipped, never Malformed), damaged
 * input (expert items), configurable ports and IPv6 between balancers, and the bulk sync stream
 * (TCP, frames reassembled across segments). The frames are made by
 * the project's own encoders (encodeSigned, writeEncapHeader) and written by its PcapWriter, so
 * a change of the wire format that the dissector misses fails here. The lab capture is in
 * native-tests/wireshark.test.ts.
 *
 * Needs tshark (scripts/install-deps.sh installs it); skips with a message otherwise, except in CI
 * (CI=true), where a missing tshark fails. No root.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ENCAP_F_FAILOVER, ENCAP_F_NEW_FLOW, ENCAP_F_REPLY, ENCAP_F_SECOND_CHANCE, ENCAP_F_VNET, ENCAP_HEADER_LEN, writeEncapHeader } from '../../src/packet/encap';
import { keyFromParts } from '../../src/packet/flow-key';
import { compactV4Key, encodeSigned, signEnvelopeBytes, type EnvelopeFields } from '../../src/protocol';
import { tunlb } from '../../src/protocol/generated/tunlb';
import { LINKTYPE, PcapWriter } from '../../src/capture/capture-pcap';
import { CaptureDecoder } from '../../src/capture/capture-decode';
import { SyncDirection, SyncFrameWriter } from '../../src/protocol/sync-frame';
import * as P from '../helpers/packets';

const TSHARK = '/usr/bin/tshark';
const LUA = resolve(__dirname, '..', '..', 'tools', 'wireshark', 'tunlb.lua');
const KEY = Buffer.alloc(32, 0x5c);
const LB1 = '10.99.2.11';
const LB2 = '10.99.2.12';
const GROUP = '239.99.0.1';

// Outside CI a missing tshark skips these tests with a line saying why; in CI (CI=true) they run
// and fail: tshark missing there means an install step is missing (as test/helpers/promtool.ts).
const missing = existsSync(TSHARK) ? undefined : `${TSHARK} is missing (apt-get install tshark, or bash scripts/install-deps.sh)`;
const skip = missing !== undefined && process.env['CI'] !== 'true' ? `skipped: ${missing}` : undefined;
if (skip !== undefined) console.log(`test/capture/wireshark-dissector.test.ts: ${skip}`);
const tt = (title: string, impl: (t: ExecutionContext) => void): void => {
  if (skip) test.skip(`${title} (${skip})`, () => undefined);
  else if (missing !== undefined) test(title, (t) => t.fail(`in CI: ${missing}`));
  else test(title, impl);
};

// ---- frames ----

function eth(ipPkt: Uint8Array, type = 0x0800): Uint8Array {
  const f = new Uint8Array(14 + ipPkt.length);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(ipPkt, 14);
  return f;
}

function header(seq: number, sender = 0): EnvelopeFields {
  return { clusterId: 77, sender, incarnation: 1_700_000_000_000 * 2048 + 5, seq, sentAtMs: 1_700_000_000_123 };
}

function v4Compact(src: string, dst: string, sport: number, dport: number, proto: number): Uint8Array {
  const c = new Uint8Array(13);
  compactV4Key(keyFromParts(src, dst, sport, dport, proto), 0, c, 0);
  return c;
}

const rec = (over: Partial<tunlb.v1.FlowRecord.$Properties> = {}): tunlb.v1.FlowRecord.$Properties => ({
  op: 1,
  key: v4Compact('10.99.1.2', '10.99.0.10', 40000, 80, 6),
  primary: 1,
  backup: 2,
  vip: 0,
  backend: 1,
  state: 2,
  tableGeneration: 3,
  ...over,
});

function encap(inner: Uint8Array, flags: number, primary: number, backup: number, backend: number, vip = 0, vnet?: Uint8Array): Uint8Array {
  const extra = vnet ? vnet.length : 0;
  const b = new Uint8Array(ENCAP_HEADER_LEN + extra + inner.length);
  writeEncapHeader(b, 0, flags | (vnet ? ENCAP_F_VNET : 0), primary, backup, backend, vip, 9);
  if (vnet) b.set(vnet, ENCAP_HEADER_LEN);
  b.set(inner, ENCAP_HEADER_LEN + extra);
  return b;
}

/** virtio_net_hdr (little-endian): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset. */
function vnetHdr(flags: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number, csumOffset: number): Uint8Array {
  const b = Buffer.alloc(10);
  b[0] = flags;
  b[1] = gsoType;
  b.writeUInt16LE(hdrLen, 2);
  b.writeUInt16LE(gsoSize, 4);
  b.writeUInt16LE(csumStart, 6);
  b.writeUInt16LE(csumOffset, 8);
  return b;
}

/** An Envelope with `extra` appended (fields a newer protocol adds), signed. */
function signedWithExtra(env: EnvelopeFields, extra: (w: ReturnType<typeof tunlb.v1.Envelope.encode>) => void): Uint8Array {
  const w = tunlb.v1.Envelope.encode({ ...env, version: 1 });
  extra(w);
  return signEnvelopeBytes(w.finish(), KEY);
}

/** Writes frames (UDP payloads between addresses and ports) to a pcap file; returns its path. */
function pcapOf(t: ExecutionContext, dgrams: Array<{ src?: string; dst?: string; sport?: number; dport?: number; payload: Uint8Array }>): string {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-ws-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'x.pcap');
  const w = new PcapWriter(file, LINKTYPE.ETHERNET, 65535);
  let ts = 1_700_000_000_000_000;
  for (const d of dgrams) {
    const src = d.src ?? LB1;
    const dst = d.dst ?? LB2;
    const v6 = src.includes(':');
    const ipPkt = v6 ? P.udp6(src, dst, d.sport ?? 7946, d.dport ?? 7946, d.payload) : P.udp4(src, dst, d.sport ?? 7946, d.dport ?? 7946, d.payload);
    const f = eth(ipPkt, v6 ? 0x86dd : 0x0800);
    w.write(f, f.length, (ts += 1000));
  }
  w.close();
  return file;
}

type Layers = Record<string, string[] | undefined>;

/** tshark -T json -e FIELDS with the dissector: one layers object per frame. */
function shark(file: string, fields: string[], extra: string[] = []): Layers[] {
  const out = execFileSync(TSHARK, ['-n', '-r', file, '-X', `lua_script:${LUA}`, '-o', 'tunlb.balancers:lb1,lb2,lb3', ...extra, '-T', 'json', ...fields.flatMap((f) => ['-e', f])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 1 << 26,
  }).toString();
  return (JSON.parse(out) as Array<{ _source: { layers: Layers } }>).map((d) => d._source.layers);
}

/** tshark's one-line summaries (what an operator sees first). */
function sharkLines(file: string, extra: string[] = []): string[] {
  return execFileSync(TSHARK, ['-n', '-r', file, '-X', `lua_script:${LUA}`, '-o', 'tunlb.balancers:lb1,lb2,lb3', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
    .toString()
    .split('\n')
    .filter(Boolean);
}

/** tshark -V text of every frame (the detail pane). */
function sharkVerbose(file: string): string {
  return execFileSync(TSHARK, ['-n', '-r', file, '-X', `lua_script:${LUA}`, '-o', 'tunlb.balancers:lb1,lb2,lb3', '-V'], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 }).toString();
}

// ---- data port ----

tt('data port: flags, indexes, generation and the inner packet (TCP/IPv4, UDP/IPv6, ICMP) in tshark', (t) => {
  const file = pcapOf(t, [
    { sport: 7947, dport: 7947, payload: encap(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_SYN), ENCAP_F_NEW_FLOW, 1, 2, 0) },
    { sport: 7947, dport: 7947, payload: encap(P.udp6('fd99:1::2', 'fd99::10', 5000, 7, new Uint8Array(4)), ENCAP_F_FAILOVER, 1, 2, 65535, 1) },
    { sport: 7947, dport: 7947, payload: encap(P.icmp4Echo('10.99.1.2', '10.99.0.10', 8, 7, 1), ENCAP_F_SECOND_CHANCE, 255, 255, 2) },
    { sport: 7947, dport: 7947, payload: encap(P.tcp4('10.99.3.21', '10.99.1.2', 80, 40000, P.TCP_SYN | P.TCP_ACK), ENCAP_F_REPLY, 0, 1, 0) },
  ]);
  const f = shark(file, [
    'frame.protocols', 'tunlb_encap.version', 'tunlb_encap.type', 'tunlb_encap.flags', 'tunlb_encap.flags.names', 'tunlb_encap.flags.new_flow',
    'tunlb_encap.flags.failover', 'tunlb_encap.primary', 'tunlb_encap.backup', 'tunlb_encap.backend', 'tunlb_encap.vip', 'tunlb_encap.generation',
    'tunlb_encap.tag', 'ip.src', 'ipv6.dst', 'udp.dstport', 'tcp.flags', 'icmp.ident', '_ws.col.Info', '_ws.malformed',
  ]);
  t.is(f.length, 4);
  t.deepEqual(f[0]!['frame.protocols'], ['eth:ethertype:ip:udp:tunlb_encap:ip:tcp']);
  t.deepEqual(f[0]!['tunlb_encap.version'], ['2']);
  t.deepEqual(f[0]!['tunlb_encap.tag'], ['0000000000000000'], 'the data-port tag (bytes 12..19; zeros: this test does not tag)');
  t.deepEqual(f[0]!['tunlb_encap.type'], ['0']);
  t.deepEqual(f[0]!['tunlb_encap.flags'], ['0x01']);
  t.deepEqual(f[0]!['tunlb_encap.flags.names'], ['NEW_FLOW']);
  t.deepEqual(f[0]!['tunlb_encap.flags.new_flow'], ['1']);
  t.deepEqual([f[0]!['tunlb_encap.primary'], f[0]!['tunlb_encap.backup'], f[0]!['tunlb_encap.backend'], f[0]!['tunlb_encap.generation']], [['1'], ['2'], ['0'], ['9']]);
  t.deepEqual(f[0]!['ip.src'], [LB1, '10.99.1.2'], 'outer, then inner IPv4');
  t.deepEqual(f[0]!['tcp.flags'], ['0x0002']);
  t.regex(f[0]!['_ws.col.Info']![0]!, /^tunlb encap NEW_FLOW primary=lb2 backup=lb3 backend=#0 │ 40000 → 80 \[SYN\]/);

  t.deepEqual(f[1]!['frame.protocols'], ['eth:ethertype:ip:udp:tunlb_encap:ipv6:udp:echo']);
  t.deepEqual(f[1]!['tunlb_encap.flags.names'], ['FAILOVER']);
  t.deepEqual(f[1]!['tunlb_encap.flags.failover'], ['1']);
  t.deepEqual(f[1]!['tunlb_encap.backend'], ['65535']);
  t.deepEqual(f[1]!['tunlb_encap.vip'], ['1']);
  t.deepEqual(f[1]!['ipv6.dst'], ['fd99::10']);
  t.deepEqual(f[1]!['udp.dstport'], ['7947', '7'], 'outer, then inner UDP');
  t.regex(f[1]!['_ws.col.Info']![0]!, /^tunlb encap FAILOVER primary=lb2 backup=lb3 backend=none │ /);

  t.deepEqual(f[2]!['frame.protocols'], ['eth:ethertype:ip:udp:tunlb_encap:ip:icmp']);
  t.deepEqual(f[2]!['tunlb_encap.flags.names'], ['SECOND_CHANCE']);
  t.deepEqual([f[2]!['tunlb_encap.primary'], f[2]!['tunlb_encap.backup']], [['255'], ['255']]);
  t.deepEqual(f[2]!['icmp.ident'], ['7']);
  t.regex(f[2]!['_ws.col.Info']![0]!, /^tunlb encap SECOND_CHANCE primary=none backup=none backend=#2 │ Echo \(ping\) request/);

  t.deepEqual(f[3]!['tunlb_encap.flags.names'], ['REPLY']);
  t.regex(f[3]!['_ws.col.Info']![0]!, /^tunlb encap REPLY primary=lb1 backup=lb2 backend=#0 │ 80 → 40000 \[SYN, ACK\]/);
  for (const l of f) t.is(l['_ws.malformed'], undefined);
});

tt('data port: the virtio_net_hdr (GSO TCPv4 super-packet, partial checksum) before the inner packet', (t) => {
  const inner = P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_ACK, new Uint8Array(3000));
  const file = pcapOf(t, [
    { sport: 7947, dport: 7947, payload: encap(inner, 0, 1, 2, 0, 0, vnetHdr(1, 1, 54, 1448, 20, 16)) },
    { sport: 7947, dport: 7947, payload: encap(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_ACK), 0, 1, 2, 0, 0, vnetHdr(1, 0, 0, 0, 20, 16)) },
  ]);
  const f = shark(file, ['tunlb_encap.flags.names', 'tunlb_encap.vnet.needs_csum', 'tunlb_encap.vnet.gso_type', 'tunlb_encap.vnet.hdr_len', 'tunlb_encap.vnet.gso_size', 'tunlb_encap.vnet.csum_start', 'tunlb_encap.vnet.csum_offset', 'tunlb_encap.inner_len', 'tcp.len', '_ws.col.Info']);
  t.deepEqual(f[0]!['tunlb_encap.flags.names'], ['VNET']);
  t.deepEqual(
    ['needs_csum', 'gso_type', 'hdr_len', 'gso_size', 'csum_start', 'csum_offset'].map((k) => f[0]![`tunlb_encap.vnet.${k}`]![0]),
    ['1', '1', '54', '1448', '20', '16'],
  );
  t.deepEqual(f[0]!['tunlb_encap.inner_len'], [String(inner.length)]);
  t.deepEqual(f[0]!['tcp.len'], ['3000']);
  t.regex(f[0]!['_ws.col.Info']![0]!, /^tunlb encap VNET primary=lb2 backup=lb3 backend=#0 gso=tcpv4\/1448 │ /);
  t.regex(f[1]!['_ws.col.Info']![0]!, /^tunlb encap VNET primary=lb2 backup=lb3 backend=#0 csum=partial │ /);
});

tt('data port: what receivers drop is flagged (reserved flags, unknown version or type, version 1, truncated), never a Lua error', (t) => {
  const good = encap(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80), 0, 1, 2, 0);
  const reserved = Uint8Array.from(good);
  reserved[1] = 0x41;
  const v3 = Uint8Array.from(good);
  v3[0] = 0x30;
  // An older release's version-1 header: the same fields in 12 bytes, no tag.
  const v1 = new Uint8Array(good.length - 8);
  v1.set(good.subarray(0, 12));
  v1.set(good.subarray(ENCAP_HEADER_LEN), 12);
  v1[0] = 0x10;
  const type3 = Uint8Array.from(good);
  type3[0] = 0x13;
  const file = pcapOf(t, [
    { sport: 7947, dport: 7947, payload: reserved },
    { sport: 7947, dport: 7947, payload: v3 },
    { sport: 7947, dport: 7947, payload: type3 },
    { sport: 7947, dport: 7947, payload: good.subarray(0, 8) },
    { sport: 7947, dport: 7947, payload: encap(new Uint8Array([0x00, 1, 2, 3]), 0, 1, 2, 0) },
    { sport: 7947, dport: 7947, payload: v1 },
  ]);
  const f = shark(file, ['_ws.expert.message', '_ws.col.Info', 'tunlb_encap.flags.reserved', 'tunlb_encap.tag', 'tcp.dstport', '_ws.malformed']);
  t.true(f[0]!['_ws.expert.message']!.some((m) => /Reserved flag set/.test(m)));
  t.deepEqual(f[0]!['tunlb_encap.flags.reserved'], ['0x02']);
  t.true(f[1]!['_ws.expert.message']!.some((m) => /Unknown encapsulation version/.test(m)));
  t.regex(f[1]!['_ws.col.Info']![0]!, /^tunlb encap: version 3 \(not decoded\)/);
  t.true(f[2]!['_ws.expert.message']!.some((m) => /Unknown encapsulation type/.test(m)));
  t.true(f[3]!['_ws.expert.message']!.some((m) => /Encapsulated datagram of 8 bytes/.test(m)));
  t.regex(f[3]!['_ws.col.Info']![0]!, /truncated \(8 bytes\)/);
  t.true(f[4]!['_ws.expert.message']!.some((m) => /IP version nibble 0/.test(m)));
  t.true(f[5]!['_ws.expert.message']!.some((m) => /older release's untagged header/.test(m)), 'version 1 is flagged as what receivers drop');
  t.is(f[5]!['tunlb_encap.tag'], undefined, 'version 1 has no tag');
  t.deepEqual(f[5]!['tcp.dstport'], ['80'], 'and its inner packet is still decoded after 12 bytes');
  t.false(sharkVerbose(file).includes('Lua Error'));
});

// ---- control port ----

tt('control port: envelope header and record batches (compact IPv4, 40-byte IPv6 and ICMP keys), in the words of tunlb capture --decode', (t) => {
  const v6key = keyFromParts('fd99:1::2', 'fd99::10', 50000, 443, 6);
  const icmpKey = v4Compact('10.99.1.2', '10.99.0.10', 7, 7, 1);
  const v4Full = keyFromParts('10.99.1.2', '10.99.0.10', 40001, 80, 17);
  const records = encodeSigned(
    {
      ...header(12),
      records: {
        records: [
          rec(),
          rec({ op: 3, key: v6key, primary: 2, backup: 2, vip: 1, backend: 0xffff }),
          rec({ op: 2, key: icmpKey, primary: 0, backup: 1, backend: 2, ageS: 30, idleS: 4 }),
          rec({ key: v4Full, primary: 0, backup: 2, backend: 0 }),
        ],
      },
    },
    KEY,
  );
  const file = pcapOf(t, [{ dst: GROUP, payload: records }]);
  const f = shark(file, [
    'frame.protocols', 'tunlb.version', 'tunlb.cluster_id', 'tunlb.sender', 'tunlb.incarnation', 'tunlb.incarnation_time', 'tunlb.seq', 'tunlb.sent_at',
    'tunlb.body', 'tunlb.mac', 'tunlb.record.op', 'tunlb.record.primary', 'tunlb.record.backup', 'tunlb.record.vip', 'tunlb.record.backend',
    'tunlb.record.age_s', 'tunlb.record.idle_s', 'tunlb.record.table_generation', 'tunlb.key.form', 'tunlb.key.src', 'tunlb.key.dst6', 'tunlb.key.sport',
    'tunlb.key.dport', 'tunlb.key.proto', 'tunlb.key.text', 'tunlb.record.text', '_ws.col.Info', '_ws.expert.message',
  ])[0]!;
  t.deepEqual(f['frame.protocols'], ['eth:ethertype:ip:udp:tunlb']);
  t.deepEqual(f['tunlb.version'], ['1']);
  t.deepEqual(f['tunlb.cluster_id'], ['0x000000000000004d']);
  t.deepEqual(f['tunlb.sender'], ['0'], 'sender 0 is absent on the wire (proto3) and shown as its default');
  t.deepEqual(f['tunlb.incarnation'], [String(1_700_000_000_000 * 2048 + 5)]);
  t.deepEqual(f['tunlb.incarnation_time'], ['Nov 14, 2023 22:13:20.000000000 UTC']);
  t.deepEqual(f['tunlb.seq'], ['12']);
  t.deepEqual(f['tunlb.sent_at'], ['Nov 14, 2023 22:13:20.123000000 UTC']);
  t.deepEqual(f['tunlb.body'], ['records']);
  t.is(f['tunlb.mac']![0]!.replace(/:/g, '').length, 64);
  t.deepEqual(f['tunlb.record.op'], ['1', '3', '2', '1']);
  t.deepEqual(f['tunlb.record.primary'], ['1', '2', '0', '0']);
  t.deepEqual(f['tunlb.record.backend'], ['1', '65535', '2', '0']);
  t.deepEqual(f['tunlb.key.form'], ['compact IPv4 (13 bytes)', '40 bytes', 'compact IPv4 (13 bytes)', '40 bytes, IPv4 (IPv4-mapped addresses)']);
  t.deepEqual(f['tunlb.key.src'], ['10.99.1.2', '10.99.1.2', '10.99.1.2']);
  t.deepEqual(f['tunlb.key.dst6'], ['fd99::10']);
  t.deepEqual(f['tunlb.key.proto'], ['6', '6', '1', '17']);
  t.deepEqual(f['tunlb.key.text'], ['10.99.1.2:40000→10.99.0.10:80/tcp', '[fd99:1::2]:50000→[fd99::10]:443/tcp', '10.99.1.2→10.99.0.10/icmp id=7', '10.99.1.2:40001→10.99.0.10:80/udp']);
  t.deepEqual(f['tunlb.record.age_s'], ['0', '0', '30', '0']);
  t.deepEqual(f['_ws.col.Info'], ['lb1 records seq=12 [1/4] create 10.99.1.2:40000→10.99.0.10:80/tcp primary=lb2 backup=lb3 backend=#1 (+3 more)']);
  t.is(f['_ws.expert.message'], undefined);
  // tunlb's own decoder says the same about each record
  const dec = new CaptureDecoder({ key: KEY, names: { balancers: ['lb1', 'lb2', 'lb3'], byAddress: new Map([[LB1, 'lb1']]), vips: [] } });
  const lines = dec.decodeControl(LB1, GROUP, records).map((l) => l.replace(/^lb1 → group records seq=12 \[\d\/4\] /, ''));
  t.deepEqual(f['tunlb.record.text'], lines);
});

tt('control port: probe, probe ack, bulk sync request and chunk, health report', (t) => {
  const file = pcapOf(t, [
    { payload: encodeSigned({ ...header(40, 1), probe: { nonce: 0x1234, sentAtMs: 5000, target: 0, status: 2 } }, KEY) },
    { payload: encodeSigned({ ...header(41, 0), probeAck: { nonce: 0x1234, probeSentAtMs: 5000, proberIncarnation: 99, status: 1 } }, KEY) },
    { payload: encodeSigned({ ...header(42, 2), syncRequest: { requestId: 0x5f3a, fromCursor: 812 } }, KEY) },
    { payload: encodeSigned({ ...header(43, 0), syncChunk: { requestId: 0x5f3a, chunkIndex: 3, nextCursor: 900, done: true, totalRecords: 2, records: [rec(), rec({ primary: 2 })] } }, KEY) },
    {
      dst: GROUP,
      payload: encodeSigned(
        {
          ...header(44, 2),
          health: {
            epoch: 77,
            sequence: 5,
            periodic: false,
            periodMs: 1000,
            backends: [
              { vip: 0, backend: 1, idHash: 0xdeadbeef, state: 2, reason: '3 consecutive failures: connect ECONNREFUSED' },
              { vip: 1, backend: 0, drainStamp: 1_700_000_000_000 * 32 + 2, drained: true },
            ],
          },
        },
        KEY,
      ),
    },
    {
      dst: GROUP,
      // Runtime overrides (tunlb weight / tunlb maintenance), BackendHealth fields 13..17.
      payload: encodeSigned({ ...header(45, 0), health: { epoch: 77, sequence: 6, backends: [{ vip: 0, backend: 2, weightStamp: 1_700_000_000_000 * 32, weight: 6, weightSet: true, maintStamp: 1_700_000_000_001 * 32, maintenance: true }] } }, KEY),
    },
  ]);
  const f = shark(file, [
    'tunlb.backend_health.weight', 'tunlb.backend_health.weight_set', 'tunlb.backend_health.maintenance',
    'tunlb.body', 'tunlb.sender', 'tunlb.probe.nonce', 'tunlb.probe.sent_at_ms', 'tunlb.probe.target', 'tunlb.probe.status', 'tunlb.probe_ack.status',
    'tunlb.probe_ack.prober_incarnation', 'tunlb.sync_request.request_id', 'tunlb.sync_request.from_cursor', 'tunlb.sync_chunk.chunk_index',
    'tunlb.sync_chunk.next_cursor', 'tunlb.sync_chunk.done', 'tunlb.sync_chunk.total_records', 'tunlb.record.text', 'tunlb.health.epoch',
    'tunlb.health.periodic', 'tunlb.backend_health.backend', 'tunlb.backend_health.id_hash', 'tunlb.backend_health.state',
    'tunlb.backend_health.reason', 'tunlb.backend_health.drained', 'tunlb.backend_health.drain_by', 'tunlb.backend_health.drain_time', '_ws.col.Info',
  ]);
  t.deepEqual(f.map((l) => l['tunlb.body']![0]), ['probe', 'probe-ack', 'sync-request', 'sync-chunk', 'health', 'health']);
  t.deepEqual(f[0]!['tunlb.probe.nonce'], ['0x0000000000001234']);
  t.deepEqual(f[0]!['tunlb.probe.target'], ['0']);
  t.deepEqual(f[0]!['_ws.col.Info'], ['lb2 probe seq=40 target=lb1 status=serving']);
  t.deepEqual(f[1]!['tunlb.probe_ack.prober_incarnation'], ['99']);
  t.deepEqual(f[1]!['_ws.col.Info'], ['lb1 probe-ack seq=41 status=syncing']);
  t.deepEqual(f[2]!['_ws.col.Info'], ['lb3 sync-request seq=42 id=5f3a from=812']);
  t.deepEqual(f[3]!['tunlb.sync_chunk.done'], ['1']);
  t.deepEqual(f[3]!['tunlb.record.text'], ['create 10.99.1.2:40000→10.99.0.10:80/tcp primary=lb2 backup=lb3 backend=#1', 'create 10.99.1.2:40000→10.99.0.10:80/tcp primary=lb3 backup=none backend=#1']);
  t.deepEqual(f[3]!['_ws.col.Info'], ['lb1 sync-chunk seq=43 id=5f3a chunk=3 records=2 total=2 next=900 done']);
  t.deepEqual(f[4]!['tunlb.backend_health.id_hash'], ['0xdeadbeef', '0x00000000'], 'the second entry has none (proto3 default)');
  t.deepEqual(f[4]!['tunlb.backend_health.state'], ['2', '0']);
  t.deepEqual(f[4]!['tunlb.backend_health.reason'], ['3 consecutive failures: connect ECONNREFUSED']);
  t.deepEqual(f[4]!['tunlb.backend_health.drained'], ['0', '1']);
  t.deepEqual(f[4]!['tunlb.backend_health.drain_by'], ['2']);
  t.deepEqual(f[4]!['tunlb.backend_health.drain_time'], ['Nov 14, 2023 22:13:20.000000000 UTC']);
  t.deepEqual(f[4]!['_ws.col.Info'], ['lb3 health seq=44 backends=2']);
  const v = sharkVerbose(file);
  t.regex(v, /Backend health: vip#0 #1 unhealthy "3 consecutive failures: connect ECONNREFUSED"/);
  t.regex(v, /Backend health: vip#1 #0 drained/);
  t.deepEqual([f[5]!['tunlb.backend_health.weight'], f[5]!['tunlb.backend_health.weight_set'], f[5]!['tunlb.backend_health.maintenance']], [['6'], ['1'], ['1']]);
  t.regex(v, /Backend health: vip#0 #2 weight=6 maint/);
  t.regex(v, /Target: 0 \(lb1\) \(absent: proto3 default\)/);
});

tt('control port: config hash in probes, balancer summary, reload request and answer (the cluster view)', (t) => {
  const file = pcapOf(t, [
    { payload: encodeSigned({ ...header(60, 1), probe: { nonce: 7, sentAtMs: 1, target: 0, status: 2, configHash: 0x0123456789ab } }, KEY) },
    {
      dst: GROUP,
      payload: encodeSigned(
        {
          ...header(61, 2),
          summary: {
            status: 2, configHash: 0xa77b04c913e2, flowsHeld: 116, flowsPrimary: 40, flowsBackup: 38, packetsInPerS: 1200, packetsOutPerS: 1180,
            bytesInPerS: 90000, bytesOutPerS: 80000, uptimeS: 3600, generation: 3, peerRttUs: [180, 210, 0], liveMask: 7,
          },
        },
        KEY,
      ),
    },
    { payload: encodeSigned({ ...header(62, 0), reloadRequest: { requestId: 0x5eed } }, KEY) },
    { payload: encodeSigned({ ...header(63, 1), reloadAnswer: { requestId: 0x5eed, ok: false, configHash: 0x0123456789ab, detail: 'reload refused: the cluster key changed' } }, KEY) },
  ]);
  const f = shark(file, ['tunlb.body', 'tunlb.probe.config_hash', 'tunlb.summary.flows_held', 'tunlb.summary.config_hash', 'tunlb.summary.live_mask', 'tunlb.reload_answer.ok', 'tunlb.reload_answer.detail', '_ws.col.Info', '_ws.malformed']);
  t.deepEqual(f.map((l) => l['tunlb.body']![0]), ['probe', 'summary', 'reload-request', 'reload-answer']);
  t.deepEqual(f[0]!['tunlb.probe.config_hash'], ['0x00000123456789ab']);
  t.deepEqual(f[1]!['tunlb.summary.flows_held'], ['116']);
  t.deepEqual(f[1]!['_ws.col.Info'], ['lb3 summary seq=61 status=serving config=a77b04c913e2 flows=116 primary=40 pps-in=1200 pps-out=1180']);
  t.deepEqual(f[2]!['_ws.col.Info'], ['lb1 reload-request seq=62 id=5eed']);
  t.deepEqual(f[3]!['tunlb.reload_answer.ok'], ['0']);
  t.deepEqual(f[3]!['_ws.col.Info'], ['lb2 reload-answer seq=63 id=5eed refused config=123456789ab "reload refused: the cluster key changed"']);
  t.true(f.every((l) => l['_ws.malformed'] === undefined), 'nothing malformed');
  t.false(sharkVerbose(file).includes('Lua Error'));
});

tt('control port: fields of a newer protocol are shown as unknown and skipped; damaged datagrams are flagged', (t) => {
  // Field numbers no release uses (100, 101): a header field before a known body, a body, a field in a record.
  const futureHeader = signedWithExtra({ ...header(50, 1), probe: { nonce: 1, target: 2, status: 2 } }, (w) => w.uint32((100 << 3) | 0).uint32(2));
  const futureBody = signedWithExtra(header(51, 1), (w) => w.uint32((101 << 3) | 2).fork().uint32((1 << 3) | 0).uint32(3).ldelim());
  const recWithExtra = tunlb.v1.FlowRecord.encode(rec()).uint32((100 << 3) | 0).uint32(9).finish();
  const futureRecord = signedWithExtra(header(52, 1), (w) => w.uint32((10 << 3) | 2).fork().uint32((1 << 3) | 2).bytes(recWithExtra).ldelim());
  const badMac = Uint8Array.from(futureHeader);
  const garbage = new TextEncoder().encode('hello, not protobuf at all');
  const cut = futureHeader.subarray(0, 30);
  const file = pcapOf(t, [{ payload: futureHeader }, { payload: futureBody }, { payload: futureRecord }, { payload: garbage }, { payload: cut }, { payload: badMac }]);
  const f = shark(file, ['tunlb.body', 'tunlb.probe.target', 'tunlb.unknown_field', 'tunlb.record.text', '_ws.col.Info', '_ws.expert.message', '_ws.malformed']);
  t.deepEqual(f[0]!['tunlb.body'], ['probe']);
  t.deepEqual(f[0]!['tunlb.probe.target'], ['2']);
  t.is(f[0]!['tunlb.unknown_field']!.length, 1);
  t.deepEqual(f[0]!['_ws.col.Info'], ['lb2 probe seq=50 target=lb3 status=serving']);
  t.true(f[0]!['_ws.expert.message']!.every((m) => /unknown to this dissector/.test(m)), f[0]!['_ws.expert.message']!.join('; '));
  t.deepEqual(f[1]!['_ws.col.Info'], ['lb2 control seq=51 (unknown field 101)']);
  t.deepEqual(f[2]!['tunlb.record.text'], ['create 10.99.1.2:40000→10.99.0.10:80/tcp primary=lb2 backup=lb3 backend=#1']);
  for (const i of [0, 1, 2]) t.is(f[i]!['_ws.malformed'], undefined);
  t.deepEqual(f[3]!['_ws.col.Info'], [`tunlb control: not a tunlb envelope (${garbage.length} bytes)`]);
  t.true(f[3]!['_ws.expert.message']!.some((m) => /^SignedEnvelope: /.test(m)), f[3]!['_ws.expert.message']!.join('; '));
  t.true(f[4]!['_ws.expert.message']!.some((m) => /runs past the end/.test(m)), f[4]!['_ws.expert.message']!.join('; '));
  t.false(sharkVerbose(file).includes('Lua Error'));
});

tt('ports are preferences (tunlb.ports, tunlb_encap.ports); IPv6 between balancers', (t) => {
  const probe = encodeSigned({ ...header(60, 1), probe: { nonce: 1, target: 0, status: 2 } }, KEY);
  const data = encap(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80), ENCAP_F_NEW_FLOW, 1, 2, 0);
  const file = pcapOf(t, [
    { sport: 9946, dport: 9946, payload: probe },
    { sport: 9947, dport: 9947, payload: data },
    { src: 'fd99:2::12', dst: 'fd99:2::11', sport: 7946, dport: 7946, payload: probe },
    { src: 'fd99:2::11', dst: 'fd99:2::12', sport: 7947, dport: 7947, payload: data },
  ]);
  const defaults = shark(file, ['frame.protocols']).map((l) => l['frame.protocols']![0]);
  t.false(/tunlb/.test(defaults[0]!) || /tunlb/.test(defaults[1]!), 'ports 9946/9947 are not tunlb by default');
  t.deepEqual(defaults.slice(2), ['eth:ethertype:ipv6:udp:tunlb', 'eth:ethertype:ipv6:udp:tunlb_encap:ip:tcp']);
  const moved = shark(file, ['frame.protocols'], ['-o', 'tunlb.ports:9946', '-o', 'tunlb_encap.ports:9947']).map((l) => l['frame.protocols']![0]);
  t.deepEqual(moved, ['eth:ethertype:ip:udp:tunlb', 'eth:ethertype:ip:udp:tunlb_encap:ip:tcp', 'eth:ethertype:ipv6:udp:data', 'eth:ethertype:ipv6:udp:data']);
  const lines = sharkLines(file, ['-o', 'tunlb.ports:9946,7946', '-o', 'tunlb_encap.ports:9947,7947']);
  t.regex(lines[0]!, /tunlb .* lb2 probe seq=60 target=lb1 status=serving$/);
  t.regex(lines[3]!, /10\.99\.1\.2 → 10\.99\.0\.10 +TCP .* tunlb encap NEW_FLOW primary=lb2 backup=lb3 backend=#0 │ 40000 → 80 \[SYN\]/);
});

tt('the probe port (7948) is decoded by default; a unicast envelope shows its recipients', (t) => {
  const probe = encodeSigned({ ...header(80, 1), recipients: 1 << 0, probe: { nonce: 1, target: 0, status: 2 } }, KEY);
  const records = encodeSigned({ ...header(81, 1), records: { records: [rec()] } }, KEY);
  const file = pcapOf(t, [
    { sport: 7948, dport: 7948, payload: probe },
    { sport: 7946, dport: 7946, payload: records },
  ]);
  const f = shark(file, ['frame.protocols', 'tunlb.recipients']);
  t.deepEqual(f.map((l) => l['frame.protocols']![0]), ['eth:ethertype:ip:udp:tunlb', 'eth:ethertype:ip:udp:tunlb']);
  t.is(Number(f[0]!['tunlb.recipients']![0]), 1, 'the probe names lb1 (bit 0)');
  t.is(Number(f[1]!['tunlb.recipients']![0]), 0, 'records name no one: every balancer (absent, shown as 0)');
});

tt('damaged datagrams of every kind (600 mutations, fixed seed) never make a Lua error', (t) => {
  const seeds: Array<{ dport: number; payload: Uint8Array }> = [
    { dport: 7946, payload: encodeSigned({ ...header(70, 1), records: { records: [rec(), rec({ key: keyFromParts('fd99:1::2', 'fd99::10', 1, 2, 6) })] } }, KEY) },
    { dport: 7946, payload: encodeSigned({ ...header(71, 2), probe: { nonce: 5, sentAtMs: 9, target: 1, status: 2 } }, KEY) },
    { dport: 7946, payload: encodeSigned({ ...header(72, 0), syncChunk: { requestId: 3, chunkIndex: 1, records: [rec()] } }, KEY) },
    { dport: 7946, payload: encodeSigned({ ...header(73, 0), health: { epoch: 1, sequence: 2, backends: [{ vip: 0, backend: 1, state: 2, reason: 'x' }] } }, KEY) },
    { dport: 7947, payload: encap(P.tcp4('10.99.1.2', '10.99.0.10', 40000, 80, P.TCP_ACK, new Uint8Array(40)), 0, 1, 2, 0, 0, vnetHdr(1, 0, 0, 0, 20, 16)) },
    { dport: 7947, payload: encap(P.tcp6('fd99:1::2', 'fd99::10', 40000, 80, P.TCP_SYN), ENCAP_F_NEW_FLOW, 1, 2, 0) },
    { dport: 7947, payload: encap(P.icmp4Echo('10.99.1.2', '10.99.0.10', 8, 7, 1), 0, 1, 2, 0) },
  ];
  // xorshift32: the same mutations on every run
  let x = 0x2545f491;
  const rnd = (n: number): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const dgrams: Array<{ sport: number; dport: number; payload: Uint8Array }> = [];
  for (let i = 0; i < 600; i++) {
    const s = seeds[rnd(seeds.length)]!;
    let p = Uint8Array.from(s.payload);
    const how = rnd(4);
    if (how === 0) p = p.subarray(0, 1 + rnd(p.length - 1));
    else if (how === 1) for (let k = 1 + rnd(5); k > 0; k--) p[rnd(p.length)] = rnd(256);
    else if (how === 2) p[rnd(p.length)]! ^= 1 << rnd(8);
    else p = Uint8Array.from({ length: 1 + rnd(120) }, () => rnd(256));
    dgrams.push({ sport: s.dport, dport: s.dport, payload: p });
  }
  const v = sharkVerbose(pcapOf(t, dgrams));
  t.is((v.match(/^Frame \d+:/gm) ?? []).length, 600);
  const errors = v.split('\n').filter((l) => l.includes('Lua Error'));
  t.deepEqual(errors.slice(0, 5), [], `${errors.length} Lua errors`);
});

// ---- the bulk sync stream (TCP) ----

/** TCP segments of one connection (SYN handshake, then `segments` each way in order), as Ethernet frames. */
function tcpPcap(t: ExecutionContext, conns: Array<{ cport: number; segs: Array<{ fromClient: boolean; data: Uint8Array }> }>, req = LB2, rsp = LB1, port = 7946): string {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-ws-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'sync.pcap');
  const w = new PcapWriter(file, LINKTYPE.ETHERNET, 65535);
  let ts = 1_700_000_000_000_000;
  const put = (ipPkt: Uint8Array): void => {
    const f = eth(ipPkt);
    w.write(f, f.length, (ts += 1000));
  };
  for (const c of conns) {
    let cseq = 1000;
    let sseq = 5000;
    put(P.tcp4(req, rsp, c.cport, port, P.TCP_SYN, new Uint8Array(0), { seq: cseq - 1 }));
    put(P.tcp4(rsp, req, port, c.cport, P.TCP_SYN | P.TCP_ACK, new Uint8Array(0), { seq: sseq - 1, ack: cseq }));
    for (const s of c.segs) {
      if (s.fromClient) {
        put(P.tcp4(req, rsp, c.cport, port, P.TCP_ACK | P.TCP_PSH, s.data, { seq: cseq, ack: sseq }));
        cseq += s.data.length;
      } else {
        put(P.tcp4(rsp, req, port, c.cport, P.TCP_ACK | P.TCP_PSH, s.data, { seq: sseq, ack: cseq }));
        sseq += s.data.length;
      }
    }
  }
  w.close();
  return file;
}

tt('sync stream (TCP): hello, welcome, request, chunks reassembled across segments with their records, refusal', (t) => {
  const C = new SyncFrameWriter(SyncDirection.REQUESTER);
  const S = new SyncFrameWriter(SyncDirection.RESPONDER);
  const nonce = new Uint8Array(16).fill(7);
  const hello = C.seal({ hello: { streamVersion: 1, clusterId: 77, sender: 1, incarnation: 12345, nonce } }, KEY);
  const request = C.seal({ request: { requestId: 0x63, fromCursor: 0 } }, KEY);
  const welcome = S.seal({ welcome: { streamVersion: 1, clusterId: 77, sender: 0, incarnation: 555, nonce } }, KEY, nonce);
  const first = S.seal({ chunk: { requestId: 0x63, chunkIndex: 0, snapshotRecords: 400 } }, KEY);
  const records = Array.from({ length: 400 }, (_, i) => rec({ key: v4Compact('10.99.1.2', '10.99.0.10', 10000 + i, 80, 6), primary: i % 3, backup: (i + 1) % 3 }));
  const big = S.seal({ chunk: { requestId: 0x63, chunkIndex: 1, nextCursor: 65536, done: true, totalRecords: 400, snapshotRecords: 400, records } }, KEY);
  const refusal = new SyncFrameWriter(SyncDirection.RESPONDER).seal({ refusal: { reason: 1, detail: 'busy: 2 answers running' } }, KEY);
  const bigSegs: Array<{ fromClient: boolean; data: Uint8Array }> = [];
  for (let o = 0; o < big.length; o += 1400) bigSegs.push({ fromClient: false, data: big.subarray(o, Math.min(big.length, o + 1400)) });
  const file = tcpPcap(t, [
    {
      cport: 45000,
      segs: [{ fromClient: true, data: Buffer.concat([hello, request]) }, { fromClient: false, data: Buffer.concat([welcome, first]) }, ...bigSegs],
    },
    { cport: 45001, segs: [{ fromClient: false, data: refusal }] },
  ]);
  const lines = sharkLines(file).filter((l) => / tunlb /.test(l));
  t.is(lines.length, 4, lines.join('\n'));
  t.regex(lines[0]!, /10\.99\.2\.12 → 10\.99\.2\.11 +tunlb \d+ sync hello sender=lb2 incarnation=12345 stream_version=1; sync request id=63 from=0$/);
  t.regex(lines[1]!, /sync welcome sender=lb1 incarnation=555 stream_version=1; sync chunk id=63 chunk=0 records=0 total=0 next=0 snapshot=400$/);
  t.regex(lines[2]!, /sync chunk id=63 chunk=1 records=400 total=400 next=65536 snapshot=400 done$/);
  t.regex(lines[3]!, /sync refusal busy "busy: 2 answers running"$/);
  const f = shark(file, ['tunlb_sync.frame', 'tunlb_sync.direction', 'tunlb_sync.length', 'tunlb_sync.mac', 'tunlb.sync_hello.sender', 'tunlb.sync_hello.nonce', 'tunlb.record.text', 'tunlb.key.sport', 'tunlb.sync_refusal.reason', '_ws.malformed', '_ws.expert.message'], ['-Y', 'tunlb_sync']);
  t.is(f.length, 4);
  t.deepEqual(f[0]!['tunlb_sync.frame'], ['hello', 'request']);
  t.deepEqual(f[0]!['tunlb_sync.direction'], ['requester → responder', 'requester → responder']);
  t.deepEqual(f[0]!['tunlb_sync.length'], [String(hello.length - 4), String(request.length - 4)]);
  t.deepEqual(f[0]!['tunlb_sync.mac'], [Buffer.from(hello.subarray(hello.length - 32)).toString('hex'), Buffer.from(request.subarray(request.length - 32)).toString('hex')]);
  t.deepEqual(f[0]!['tunlb.sync_hello.sender'], ['1']);
  t.deepEqual(f[0]!['tunlb.sync_hello.nonce'], ['07070707070707070707070707070707']);
  t.deepEqual(f[1]!['tunlb_sync.frame'], ['welcome', 'chunk']);
  t.deepEqual(f[1]!['tunlb_sync.direction'], ['responder → requester', 'responder → requester']);
  t.deepEqual(f[2]!['tunlb_sync.frame'], ['chunk']);
  t.is(f[2]!['tunlb.record.text']!.length, 400);
  t.is(f[2]!['tunlb.record.text']![399], 'create 10.99.1.2:10399→10.99.0.10:80/tcp primary=lb1 backup=lb2 backend=#1');
  t.deepEqual(f[2]!['tunlb.key.sport']!.slice(0, 2), ['10000', '10001']);
  t.deepEqual(f[3]!['tunlb.sync_refusal.reason'], ['1']);
  for (const l of f) {
    t.is(l['_ws.malformed'], undefined);
    t.is(l['_ws.expert.message'], undefined);
  }
});

/** A requester's hello frame. */
const helloFrame = (): Buffer => new SyncFrameWriter(SyncDirection.REQUESTER).seal({ hello: { streamVersion: 1, clusterId: 77, sender: 1, incarnation: 1, nonce: new Uint8Array(16) } }, KEY);

tt('sync stream: a frame length no reader accepts is flagged; other TCP ports are not the stream', (t) => {
  const bad = Buffer.alloc(40);
  bad.writeUInt32BE(5, 0); // shorter than the MAC
  const file = tcpPcap(t, [{ cport: 45002, segs: [{ fromClient: true, data: bad }] }]);
  const f = shark(file, ['tunlb_sync.length', '_ws.expert.message', '_ws.col.Info'], ['-Y', 'tunlb_sync']);
  t.is(f.length, 1);
  t.true(f[0]!['_ws.expert.message']!.some((m) => /Frame length 5/.test(m)), f[0]!['_ws.expert.message']!.join('; '));
  t.deepEqual(f[0]!['_ws.col.Info'], ['sync stream: bad frame length 5']);
  const other = tcpPcap(t, [{ cport: 45003, segs: [{ fromClient: true, data: helloFrame() }] }], LB2, LB1, 8000);
  t.is(shark(other, ['frame.number'], ['-Y', 'tunlb_sync']).length, 0);
  t.is(shark(other, ['frame.number'], ['-Y', 'tunlb_sync', '-o', 'tunlb_sync.ports:8000']).length, 1);
});
