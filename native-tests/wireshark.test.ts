/**
 * The Wireshark dissector (tools/wireshark/tunlb.lua) over a capture of the three-balancer lab,
 * read by `tshark -X lua_script:tools/wireshark/tunlb.lua`, the way an operator would.
 *
 * One lab session (single entry: lb1 receives the client's packets): `tunlb capture` on the router's lbnet bridge (br-lb: every balancer's
 * control and data traffic) while the client opens new connections through the VIP (HTTP over
 * IPv4 and IPv6, ICMP echo) and 20 long-lived TCP echo connections, a balancer that is the
 * primary of some of them is killed (kill -9: lb1 sends their packets to the backup, flag
 * FAILOVER) and started again (bulk sync). Then, on the one pcap file:
 *  - every frame on the control and data ports is tunlb: none is Malformed, none is DNS
 *    (plain tshark mis-decodes encapsulated frames as DNS: the count is logged);
 *  - every encapsulated frame shows its flags, primary/backup/backend, and an inner IP packet
 *    of a client flow to the VIP; it went to its primary's address (to the backup's with
 *    FAILOVER); its decision is the one the flow's replicated record carries;
 *  - every control frame shows version, sender (whose address sent it), incarnation (the
 *    restarted balancer has two, the second larger), sequence and body; records show their
 *    keys;
 *  - the bulk sync stream (TCP on the control port's number) is decoded frame by frame: the
 *    restarted balancer's hello, the welcome, the request, chunks of records up to `done`;
 *  - tshark and `tunlb capture --read FILE --decode` (the project's decoder, with the lab's
 *    config and key) say the same thing about every frame.
 *
 * TUNLB_WIRESHARK_PCAP=FILE keeps a copy of the capture (to look at it in Wireshark).
 *
 * Needs root (namespaces) and tshark (scripts/install-deps.sh); skips with a message otherwise
 * (in CI, CI=true, a missing tshark is a failure, not a skip).
 * bin/tunlb runs dist/: build first (`npm run build`). The file holds the lab session lock from
 * before `up` to after `down`; every process is bounded in time and killed by its PID.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { formatTime, tcpFlagsText } from '../src/capture/capture-decode';
import { hasRoot, NEEDS_ROOT } from './helpers/root';
import { LAB_DIR, REPO, VIP4, VIP6, execIn, holdLabSession, lab, labLogTail, poll, run, staleBuild, type LabSession } from './helpers/lab';
import { flows, startTraffic, stats, type TrafficRun } from './helpers/traffic';

const TSHARK = '/usr/bin/tshark';
const LUA = path.join(REPO, 'tools', 'wireshark', 'tunlb.lua');
const TUNLB = path.join(REPO, 'bin', 'tunlb');
const LAB_CONFIG = path.join(LAB_DIR, 'lab.yaml');
const SUITE = 'wireshark dissector (lab, 3 balancers, tshark)';
const BALANCERS = ['lb1', 'lb2', 'lb3'];
const LBNET4: Record<string, string> = { lb1: '10.99.2.11', lb2: '10.99.2.12', lb3: '10.99.2.13' };
const CLIENT4 = '10.99.1.2';
const CLIENT6 = 'fd99:1::2';
const CONTROL_PORT = 7946;
const DATA_PORT = 7947;
/** Probes and acks travel on a port of their own (cluster.replication.probe_port). */
const PROBE_PORT = 7948;
const CAPTURE_FILTER = `udp port ${CONTROL_PORT} or udp port ${DATA_PORT} or udp port ${PROBE_PORT} or tcp port ${CONTROL_PORT}`;

const skipReason = !hasRoot()
  ? NEEDS_ROOT
  : !existsSync(TSHARK) && process.env['CI'] !== 'true' // in CI a missing tshark fails (an install step is missing)
    ? `skipped: ${TSHARK} is missing (apt-get install tshark, or bash scripts/install-deps.sh)`
    : undefined;
if (skipReason !== undefined) console.log(`native-tests/wireshark.test.ts: ${skipReason}`);

function labTest(title: string, impl: (t: ExecutionContext) => Promise<void> | void): void {
  if (skipReason !== undefined) test.skip(`${SUITE}: ${title} (${skipReason})`, () => undefined);
  else test.serial(`${SUITE}: ${title}`, impl);
}

// ------------------------------------------------------------------------- the tshark view --

/** The fields every test reads (tshark -T json -e ...): a field's occurrences, in tree order. */
const FIELDS = [
  'frame.number', 'frame.time_epoch', 'frame.protocols', '_ws.col.Info', '_ws.malformed', '_ws.expert.message',
  'ip.src', 'ip.dst', 'ipv6.src', 'ipv6.dst', 'udp.srcport', 'udp.dstport', 'tcp.srcport', 'tcp.dstport', 'tcp.flags',
  'icmp.type', 'icmp.ident', 'icmp.seq', 'icmpv6.type', 'icmpv6.echo.identifier', 'icmpv6.echo.sequence_number',
  'tunlb_encap.version', 'tunlb_encap.flags', 'tunlb_encap.flags.names', 'tunlb_encap.primary', 'tunlb_encap.backup',
  'tunlb_encap.backend', 'tunlb_encap.vip', 'tunlb_encap.generation', 'tunlb_encap.tag', 'tunlb_encap.vnet.needs_csum',
  'tunlb_encap.vnet.gso_type', 'tunlb_encap.vnet.gso_size',
  'tunlb.version', 'tunlb.cluster_id', 'tunlb.sender', 'tunlb.incarnation', 'tunlb.seq', 'tunlb.body', 'tunlb.mac',
  'tunlb.record', 'tunlb.record.op', 'tunlb.record.text', 'tunlb.key.text', 'tunlb.record.primary', 'tunlb.record.backup',
  'tunlb.record.backend', 'tunlb.probe.target', 'tunlb.probe.status', 'tunlb.probe_ack.status',
  'tunlb.sync_request.request_id', 'tunlb.sync_request.from_cursor', 'tunlb.sync_chunk.request_id',
  'tunlb.sync_chunk.chunk_index', 'tunlb.sync_chunk.next_cursor', 'tunlb.sync_chunk.done', 'tunlb.sync_chunk.total_records',
  'tcp.len', 'tunlb_sync.frame', 'tunlb_sync.direction', 'tunlb_sync.mac', 'tunlb.sync_hello.sender', 'tunlb.sync_hello.incarnation',
  'tunlb.summary.status', 'tunlb.summary.config_hash', 'tunlb.summary.flows_held', 'tunlb.summary.flows_primary',
  'tunlb.summary.packets_in_per_s', 'tunlb.summary.packets_out_per_s',
];

interface Frame {
  n: number;
  /** Capture time, µs since the epoch. */
  tsUs: number;
  protocols: string;
  info: string;
  f: Record<string, string[]>;
}

const one = (fr: Frame, k: string): string | undefined => fr.f[k]?.[0];
const num = (fr: Frame, k: string, i = 0): number => Number(fr.f[k]?.[i]);
const all = (fr: Frame, k: string): string[] => fr.f[k] ?? [];

/** tshark -T json with FIELDS over `file`, with the dissector and the lab's balancer ids. */
async function tsharkFrames(file: string): Promise<Frame[]> {
  const r = await run(TSHARK, ['-n', '-r', file, '-X', `lua_script:${LUA}`, '-o', `tunlb.balancers:${BALANCERS.join(',')}`, '-T', 'json', ...FIELDS.flatMap((f) => ['-e', f])], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`tshark -T json: exit ${r.code}: ${r.stderr}`);
  if (/Lua Error|lua_script/i.test(r.stderr)) throw new Error(`tshark: the Lua script failed: ${r.stderr}`);
  const docs = JSON.parse(r.stdout) as Array<{ _source: { layers: Record<string, string[]> } }>;
  return docs.map((d) => {
    const f = d._source.layers;
    const [s, frac = '0'] = (f['frame.time_epoch']?.[0] ?? '0').split('.');
    return {
      n: Number(f['frame.number']?.[0]),
      tsUs: Number(s) * 1e6 + Number(frac.padEnd(6, '0').slice(0, 6)),
      protocols: f['frame.protocols']?.[0] ?? '',
      info: f['_ws.col.Info']?.[0] ?? '',
      f,
    };
  });
}

// ----------------------------------------------------------------------------- lab session --

let session: LabSession | undefined;
let up = false;
let setupError = '';
let dir = '';
let pcap = '';
let frames: Frame[] = [];
let victim = '';
let failoverBefore = 0;
let failoverAfter = 0;
const children = new Set<ChildProcess>();

/** `tunlb capture ARGS` in namespace tunlb-NS; resolves `listening` when it prints so. */
function startCapture(ns: string, args: string[]) {
  const child = spawn('ip', ['netns', 'exec', `tunlb-${ns}`, process.execPath, TUNLB, 'capture', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stderr = '';
  let onListen: (ok: boolean) => void = () => undefined;
  const listening = new Promise<boolean>((resolve) => (onListen = resolve));
  child.stderr!.on('data', (d) => {
    stderr += String(d);
    if (stderr.includes('capture: listening')) onListen(true);
  });
  child.stdout!.resume();
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => {
    child.once('exit', (code) => {
      children.delete(child);
      onListen(false);
      setTimeout(() => resolve({ code, stderr }), 100);
    });
  });
  return { child, listening, done, stderr: () => stderr };
}

/** `count` HTTP GETs of url from the client, each a new connection (a new flow). */
function curls(url: string, count: number) {
  return execIn('client', ['sh', '-c', `i=0; ok=0; while [ $i -lt ${count} ]; do i=$((i+1)); curl -g -s -m 2 -o /dev/null '${url}' && ok=$((ok+1)); done; echo ok=$ok`], { timeoutMs: 60_000 });
}

async function setup(): Promise<void> {
  if (!existsSync(TSHARK)) throw new Error(`in CI: ${TSHARK} is missing (apt-get install tshark, or bash scripts/install-deps.sh)`);
  const stale = staleBuild(['src/capture/capture.ts', 'src/capture/capture-decode.ts', 'src/dataplane/forwarder.ts', 'src/control/balancer.ts']);
  if (stale) throw new Error(stale);
  dir = mkdtempSync(path.join(tmpdir(), 'tunlb-wireshark-'));
  pcap = path.join(dir, 'lbnet.pcap');
  session = await holdLabSession();
  await lab(['down']);
  // The single entry: lb1 receives every client packet, so every packet it forwards crosses lbnet
  // encapsulated, and a killed primary's flows go to their backups through lb1 (FAILOVER).
  const u = await lab(['up', '--entry', 'single'], 180_000);
  if (u.code !== 0) throw new Error(`lab up failed (exit ${u.code}):\n${u.stderr.slice(-3000)}\n${labLogTail('lb1')}`);
  up = true;

  // Every balancer's lbnet traffic crosses the router's bridge.
  const cap = startCapture('router', ['--iface', 'br-lb', '--filter', CAPTURE_FILTER, '--duration-s', '120', '--out', pcap]);
  if (!(await cap.listening)) throw new Error(`tunlb capture did not start: ${cap.stderr()}`);
  let gen: TrafficRun | undefined;
  try {
    // New connections: IPv4 and IPv6 HTTP, ICMP echo.
    const c4 = await curls(`http://${VIP4}/`, 10);
    const c6 = await curls(`http://[${VIP6}]/`, 10);
    await execIn('client', ['ping', '-c', '3', '-i', '0.2', '-W', '1', VIP4], { timeoutMs: 10_000 });
    await execIn('client', ['ping', '-6', '-c', '3', '-i', '0.2', '-W', '1', VIP6], { timeoutMs: 10_000 });
    if (!/ok=([1-9]\d*)/.test(c4.stdout) || !/ok=([1-9]\d*)/.test(c6.stdout)) throw new Error(`no HTTP answer through the VIP: v4 ${c4.stdout.trim()} v6 ${c6.stdout.trim()}`);

    // Long-lived connections; kill a balancer that is the primary of some of them (backup
    // not lb1, so lb1 forwards their packets to the backup: FAILOVER), then start it again.
    gen = startTraffic(['longlived', '--conns', '20', '--interval-ms', '100', '--duration-s', '20', '--target', `${VIP4}:7`, '--json'], 60_000);
    const echo = (): Promise<Array<{ primary: string; backup: string }>> =>
      flows('lb1').then((l) => l.flows.filter((f) => f.key.startsWith(`tcp ${CLIENT4}:`) && f.key.endsWith(`-> ${VIP4}:7`)));
    let ours: Array<{ primary: string; backup: string }> = [];
    const connected = await poll(async () => (ours = await echo()).length >= 20, 20_000, 200);
    if (!connected) throw new Error(`lb1 never held the 20 echo flows (has ${ours.length})`);
    const score = (lb: string): number => ours.filter((f) => f.primary === lb && f.backup !== 'lb1').length;
    victim = score('lb2') >= score('lb3') ? 'lb2' : 'lb3';
    if (score(victim) === 0) throw new Error(`no echo flow has lb2 or lb3 as primary with a backup other than lb1: ${JSON.stringify(ours)}`);
    failoverBefore = (await stats('lb1')).counters.failoverPackets;
    const k = await lab(['kill', victim], 20_000);
    if (k.code !== 0) throw new Error(`lab.sh kill ${victim}: ${k.stderr}`);
    const failedOver = await poll(async () => (failoverAfter = (await stats('lb1')).counters.failoverPackets) > failoverBefore + 20, 15_000, 200);
    if (!failedOver) throw new Error(`lb1 sent no packets via a backup after ${victim} was killed (failover counter ${failoverBefore} -> ${failoverAfter})`);
    const s = await lab(['start', victim], 120_000);
    if (s.code !== 0) throw new Error(`lab.sh start ${victim}: exit ${s.code}\n${s.stderr.slice(-2000)}\n${labLogTail(victim)}`);
    // `start` returns once the victim is ready (its sync done): every frame the checks look for
    // (failover, the restarted incarnation, the sync stream) is on the wire; the traffic ends here.
    gen.stop();
    const d = await gen.done;
    if (d.code !== 0) throw new Error(`traffic longlived: exit ${d.code}\n${d.stderr}`);
  } finally {
    gen?.kill();
    if (cap.child.pid && cap.child.exitCode === null) process.kill(cap.child.pid, 'SIGINT');
    const killer = setTimeout(() => cap.child.pid && cap.child.exitCode === null && process.kill(cap.child.pid, 'SIGKILL'), 10_000);
    const r = await cap.done;
    clearTimeout(killer);
    if (r.code !== 0) setupError = `tunlb capture: exit ${r.code}: ${r.stderr}`;
  }
  const keep = process.env['TUNLB_WIRESHARK_PCAP'];
  if (keep) copyFileSync(pcap, keep);
  frames = await tsharkFrames(pcap);
}

test.before(async () => {
  if (skipReason !== undefined) return;
  try {
    await setup();
  } catch (e) {
    setupError = (e as Error).message;
  }
});

test.after.always('lab down, release the lab', async (t) => {
  if (skipReason !== undefined) return;
  for (const c of children) if (c.pid && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
  try {
    if (up) {
      const r = await lab(['down']);
      t.log(`lab down: exit ${r.code} in ${r.seconds.toFixed(1)} s`);
    }
  } finally {
    session?.release();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

function ready(t: ExecutionContext): boolean {
  if (setupError) {
    t.fail(setupError);
    return false;
  }
  if (frames.length === 0) {
    t.fail('the capture holds no frame');
    return false;
  }
  return true;
}

const onPort = (fr: Frame, port: number): boolean => num(fr, 'udp.srcport') === port || num(fr, 'udp.dstport') === port;
const dataFrames = (): Frame[] => frames.filter((fr) => onPort(fr, DATA_PORT));
const controlFrames = (): Frame[] => frames.filter((fr) => onPort(fr, CONTROL_PORT) || onPort(fr, PROBE_PORT));
const bname = (i: number): string => (i === 255 ? 'none' : (BALANCERS[i] ?? `#${i}`));
const ep = (a: string, p: number): string => (a.includes(':') ? `[${a}]:${p}` : `${a}:${p}`);

/** The inner packet of an encapsulated frame (outer IPv4 in the lab): addresses, protocol, ports. */
function inner(fr: Frame): { src: string; dst: string; proto: 'tcp' | 'icmp' | 'icmp6' | 'other'; sport: number; dport: number; text: string } {
  const v6 = /:tunlb_encap:ipv6:/.test(fr.protocols);
  const src = v6 ? all(fr, 'ipv6.src')[0]! : all(fr, 'ip.src')[1]!;
  const dst = v6 ? all(fr, 'ipv6.dst')[0]! : all(fr, 'ip.dst')[1]!;
  if (one(fr, 'tcp.srcport') !== undefined) {
    const sport = num(fr, 'tcp.srcport');
    const dport = num(fr, 'tcp.dstport');
    const flags = parseInt(one(fr, 'tcp.flags') ?? '0', 16) & 0xff;
    return { src, dst, proto: 'tcp', sport, dport, text: `${ep(src, sport)}→${ep(dst, dport)} tcp [${tcpFlagsText(flags)}]` };
  }
  if (one(fr, 'icmp.type') !== undefined) {
    const type = num(fr, 'icmp.type');
    const id = num(fr, 'icmp.ident');
    const name = type === 8 ? 'echo-request' : type === 0 ? 'echo-reply' : `type=${type}`;
    return { src, dst, proto: 'icmp', sport: id, dport: id, text: `${src}→${dst} icmp ${name} id=${id} seq=${num(fr, 'icmp.seq')}` };
  }
  if (one(fr, 'icmpv6.type') !== undefined) {
    const type = num(fr, 'icmpv6.type');
    const id = num(fr, 'icmpv6.echo.identifier');
    const name = type === 128 ? 'echo-request' : type === 129 ? 'echo-reply' : `type=${type}`;
    return { src, dst, proto: 'icmp6', sport: id, dport: id, text: `${src}→${dst} icmp6 ${name} id=${id} seq=${num(fr, 'icmpv6.echo.sequence_number')}` };
  }
  return { src, dst, proto: 'other', sport: 0, dport: 0, text: `${src}→${dst} other` };
}

/** A record's key text for the inner packet's flow, as the dissector and tunlb print keys. */
function keyTextOf(i: ReturnType<typeof inner>): string {
  if (i.proto === 'icmp' || i.proto === 'icmp6') return `${i.src}→${i.dst}/${i.proto} id=${i.sport}`;
  return `${ep(i.src, i.sport)}→${ep(i.dst, i.dport)}/${i.proto}`;
}

// ------------------------------------------------------------------------------------ tests --

labTest('every frame on ports 7946/7947/7948 is tunlb: no Malformed, no DNS (tshark shows what plain tshark mis-decodes)', async (t) => {
  if (!ready(t)) return;
  const ours = frames.filter((fr) => onPort(fr, CONTROL_PORT) || onPort(fr, PROBE_PORT) || onPort(fr, DATA_PORT));
  t.true(ours.length > 200, `only ${ours.length} tunlb frames captured`);
  const bad = ours.filter(
    (fr) =>
      !/^eth:ethertype:ip:udp:(tunlb|tunlb_encap:(ip|ipv6):.+)$/.test(fr.protocols) ||
      /\bdns\b|\bmdns\b|_ws\.malformed/.test(fr.protocols) ||
      fr.f['_ws.malformed'] !== undefined ||
      all(fr, '_ws.expert.message').some((m) => /malformed|tunlb|lua/i.test(m)),
  );
  t.deepEqual(
    bad.slice(0, 10).map((fr) => `${fr.n} ${fr.protocols} ${fr.info} ${all(fr, '_ws.expert.message').join('; ')}`),
    [],
    `${bad.length} of ${ours.length} frames on the tunlb ports are not cleanly decoded as tunlb`,
  );
  t.true(dataFrames().length > 50, `${dataFrames().length} data-port frames`);
  t.true(controlFrames().length > 100, `${controlFrames().length} control-port frames`);

  // What an operator sees: tshark's one-line summary, with and without the dissector.
  const withLua = await run(TSHARK, ['-n', '-r', pcap, '-X', `lua_script:${LUA}`, '-o', `tunlb.balancers:${BALANCERS.join(',')}`], { timeoutMs: 60_000 });
  t.is(withLua.code, 0, withLua.stderr);
  const lines = withLua.stdout.split('\n').filter(Boolean);
  t.is(lines.length, frames.length);
  t.false(/Malformed|DNS|Lua Error/.test(withLua.stdout), 'tshark with the dissector printed Malformed, DNS or a Lua error');
  const plain = await run(TSHARK, ['-n', '-r', pcap, '-T', 'fields', '-e', 'frame.protocols'], { timeoutMs: 60_000 });
  const plainDns = plain.stdout.split('\n').filter((l) => /:dns/.test(l)).length;
  t.log(`plain tshark: ${plainDns} of ${frames.length} frames decoded as DNS; with tools/wireshark/tunlb.lua: 0`);
  const sample = (re: RegExp): string => lines.find((l) => re.test(l)) ?? `(no line matching ${re})`;
  t.log(
    [
      sample(/tunlb encap NEW_FLOW/),
      sample(/tunlb encap FAILOVER/),
      sample(/tunlb encap \S+ .*│ .*icmp|tunlb encap .*Echo \(ping\)/i),
      sample(/ records seq=\d+ (\[1\/\d+\] )?create /),
      sample(/ probe seq=/),
      sample(/ probe-ack seq=/),
      sample(/ sync (hello|chunk) /),
      sample(/ health seq=/),
    ].join('\n'),
  );
});

labTest('data port: flags, primary/backup/backend, an inner IP packet of a client flow to the VIP, sent to its primary (FAILOVER: its backup)', (t) => {
  if (!ready(t)) return;
  const data = dataFrames();
  const problems: string[] = [];
  const flagCount: Record<string, number> = {};
  const protos: Record<string, number> = {};
  for (const fr of data) {
    const names = one(fr, 'tunlb_encap.flags.names');
    const flags = parseInt(one(fr, 'tunlb_encap.flags') ?? 'NaN', 16);
    const primary = num(fr, 'tunlb_encap.primary');
    const backup = num(fr, 'tunlb_encap.backup');
    const backend = num(fr, 'tunlb_encap.backend');
    const why: string[] = [];
    if (num(fr, 'tunlb_encap.version') !== 2) why.push('version');
    if (!/^[0-9a-f]{16}$/.test(one(fr, 'tunlb_encap.tag') ?? '')) why.push('no data-port tag');
    if (names === undefined || Number.isNaN(flags)) why.push('no flags');
    // A steered reply (REPLY) names its candidate primary and no backend (0xffff); a
    // SECOND_CHANCE packet names nobody (0xff/0xff/0xffff: the ranked primary decides).
    const steered = (flags & 0x02) !== 0;
    const second = (flags & 0x04) !== 0;
    if (second) {
      if (primary !== 0xff || backup !== 0xff || backend !== 0xffff) why.push(`second chance names ${primary}/${backup}/${backend}`);
    } else if (!(primary >= 0 && primary < 3) || !(backup >= 0 && backup < 3) || !(steered ? backend === 0xffff : backend >= 0 && backend < 3)) {
      why.push(`indexes ${primary}/${backup}/${backend}`);
    }
    const i = inner(fr);
    // client → VIP; with REPLY (reply steering), a server's answer: server → client
    const fromClient = i.src === CLIENT4 || i.src === CLIENT6;
    const toVip = i.dst === VIP4 || i.dst === VIP6;
    const serverReply = (flags & 0x02) !== 0 && /^(10\.99\.3\.|fd99:3::)/.test(i.src) && (i.dst === CLIENT4 || i.dst === CLIENT6);
    if (!(fromClient && toVip) && !serverReply) why.push(`inner ${i.src} → ${i.dst}`);
    const vipPort = serverReply ? i.sport : i.dport;
    if (i.proto === 'tcp' ? vipPort !== 80 && vipPort !== 7 : i.proto === 'other') why.push(`inner ${i.text}`);
    // The outer destination is the balancer the header names: primary, or backup with FAILOVER.
    const to = (flags & 0x08) !== 0 ? backup : primary;
    if (!second && all(fr, 'ip.dst')[0] !== LBNET4[BALANCERS[to]!]) why.push(`sent to ${all(fr, 'ip.dst')[0]}, header names ${bname(to)}`);
    if (all(fr, 'ip.src')[0] === all(fr, 'ip.dst')[0]) why.push('sent to itself');
    if (why.length) problems.push(`${fr.n}: ${why.join(', ')}: ${fr.info}`);
    for (const n of (names ?? '').split('|')) flagCount[n] = (flagCount[n] ?? 0) + 1;
    const kind = `${i.proto}/ipv${i.src.includes(':') ? 6 : 4}`;
    protos[kind] = (protos[kind] ?? 0) + 1;
  }
  t.deepEqual(problems.slice(0, 10), [], `${problems.length} of ${data.length} encapsulated frames`);
  t.log(`${data.length} encapsulated frames; flags ${JSON.stringify(flagCount)}; inner ${JSON.stringify(protos)}; lb1's failover counter +${failoverAfter - failoverBefore} after killing ${victim}`);
  t.true((flagCount['NEW_FLOW'] ?? 0) > 0, 'no NEW_FLOW frame');
  t.true((flagCount['FAILOVER'] ?? 0) > 0, `no FAILOVER frame after killing ${victim}`);
  t.true((protos['tcp/ipv4'] ?? 0) > 0 && (protos['tcp/ipv6'] ?? 0) > 0, `inner TCP over IPv4 and IPv6: ${JSON.stringify(protos)}`);

  // The decision in the header is the flow's replicated record's (same key, same backend;
  // primary and backup as a record of that flow says). One exception, bounded: until the
  // primary's record reaches it, the receiver (lb1) sends the flow's packets with its own
  // decision, and the primary re-decides when that backend takes no new flows in its own view
  // (a health change seen by one balancer first: src/dataplane/peer-decision.ts, DECIDE). Such
  // frames name the record's primary and backup and come before the first record of their
  // key in the capture; the key has one decision in its records.
  const records = new Map<string, Set<string>>();
  const firstRecordFrame = new Map<string, number>();
  for (const fr of controlFrames()) {
    all(fr, 'tunlb.key.text').forEach((k, j) => {
      const d = `${all(fr, 'tunlb.record.primary')[j]}/${all(fr, 'tunlb.record.backup')[j]}/${all(fr, 'tunlb.record.backend')[j]}`;
      (records.get(k) ?? records.set(k, new Set()).get(k)!).add(d);
      if (!firstRecordFrame.has(k)) firstRecordFrame.set(k, fr.n);
    });
  }
  let matched = 0;
  const mismatched: string[] = [];
  const redecided = new Map<string, number>();
  for (const fr of data) {
    const k = keyTextOf(inner(fr));
    const decisions = records.get(k);
    if (decisions === undefined) continue;
    const roles = `${num(fr, 'tunlb_encap.primary')}/${num(fr, 'tunlb_encap.backup')}`;
    const d = `${roles}/${num(fr, 'tunlb_encap.backend')}`;
    if (decisions.has(d)) matched++;
    else if (decisions.size === 1 && [...decisions][0]!.startsWith(`${roles}/`) && fr.n < firstRecordFrame.get(k)!) redecided.set(k, (redecided.get(k) ?? 0) + 1);
    else mismatched.push(`${fr.n} ${k}: header ${d}, records ${[...decisions].join(' ')}`);
  }
  t.deepEqual(mismatched.slice(0, 10), [], `${mismatched.length} encapsulated frames disagree with their flow's records`);
  if (redecided.size > 0) t.log(`re-decided by their primary before its record came (frames): ${JSON.stringify(Object.fromEntries(redecided))}`);
  t.true(redecided.size <= Math.max(2, records.size / 4), `${redecided.size} of ${records.size} flows re-decided by their primary (a health difference between balancers lasts about a check interval, not the whole run): ${JSON.stringify(Object.fromEntries(redecided))}`);
  t.true(matched > data.length / 2, `only ${matched} of ${data.length} encapsulated frames have a record in the capture`);
});

labTest('control port: sender (from its own address), incarnation, sequence and body of every frame; records with their keys', (t) => {
  if (!ready(t)) return;
  const ctl = controlFrames();
  const bodies: Record<string, number> = {};
  const incarnations = new Map<string, number[]>();
  const problems: string[] = [];
  for (const fr of ctl) {
    const sender = num(fr, 'tunlb.sender');
    const inc = num(fr, 'tunlb.incarnation');
    const body = one(fr, 'tunlb.body') ?? '';
    const why: string[] = [];
    if (num(fr, 'tunlb.version') !== 1) why.push('version');
    if (LBNET4[BALANCERS[sender] ?? ''] !== all(fr, 'ip.src')[0]) why.push(`sender ${sender} sent from ${all(fr, 'ip.src')[0]}`);
    if (!(inc > 0) || !(num(fr, 'tunlb.seq') > 0)) why.push('incarnation/seq');
    if (!['records', 'probe', 'probe-ack', 'sync-request', 'sync-chunk', 'health', 'summary', 'reload-request', 'reload-answer'].includes(body)) why.push(`body '${body}'`);
    if ((one(fr, 'tunlb.mac') ?? '').replace(/:/g, '').length !== 64) why.push('mac');
    if (body === 'records' || body === 'sync-chunk') {
      const n = all(fr, 'tunlb.record').length;
      const keys = all(fr, 'tunlb.key.text');
      if (body === 'records' && n === 0) why.push('records body without records');
      if (keys.length !== n) why.push(`${n} records, ${keys.length} keys`);
      for (const r of all(fr, 'tunlb.record.text')) {
        if (!/^(create|refresh|delete) (10\.99\.1\.2:\d+→10\.99\.0\.10:(80|7)\/tcp|\[fd99:1::2\]:\d+→\[fd99::10\]:80\/tcp|10\.99\.1\.2→10\.99\.0\.10\/icmp id=\d+|fd99:1::2→fd99::10\/icmp6 id=\d+) primary=lb\d backup=(lb\d|none) backend=#\d$/.test(r)) {
          why.push(`record '${r}'`);
        }
      }
    }
    if (why.length) problems.push(`${fr.n}: ${why.join(', ')}: ${fr.info}`);
    bodies[body] = (bodies[body] ?? 0) + 1;
    const name = BALANCERS[sender] ?? String(sender);
    const list = incarnations.get(name) ?? incarnations.set(name, []).get(name)!;
    if (!list.includes(inc)) list.push(inc);
  }
  t.deepEqual(problems.slice(0, 10), [], `${problems.length} of ${ctl.length} control frames`);
  t.log(`${ctl.length} control frames: ${JSON.stringify(bodies)}; incarnations ${JSON.stringify(Object.fromEntries(incarnations))}`);
  for (const b of ['records', 'probe', 'probe-ack', 'health']) t.true((bodies[b] ?? 0) > 0, `no ${b} frame`);
  // One incarnation per balancer, two for the one restarted (the second larger).
  for (const lb of BALANCERS) {
    const incs = incarnations.get(lb) ?? [];
    if (lb === victim) {
      t.is(incs.length, 2, `${lb} (restarted): incarnations ${incs.join(', ')}`);
      t.true(incs[1]! > incs[0]!, `${lb}: the restarted incarnation is larger`);
    } else {
      t.is(incs.length, 1, `${lb}: incarnations ${incs.join(', ')}`);
    }
  }
  const records = ctl.filter((fr) => one(fr, 'tunlb.body') === 'records');
  t.true(records.some((fr) => all(fr, 'tunlb.record.op').includes('1')), 'no create record');
  t.true(records.some((fr) => all(fr, 'tunlb.key.text').some((k) => k.startsWith('[fd99:1::2]'))), 'no record with an IPv6 key');
});

/** One line per frame (per record for record batches) in words both decoders use. */
function canonicalTshark(fr: Frame): string[] {
  if (onPort(fr, DATA_PORT)) {
    let vnet = '';
    if (one(fr, 'tunlb_encap.vnet.gso_type') !== undefined) {
      const gt = num(fr, 'tunlb_encap.vnet.gso_type');
      const names: Record<number, string> = { 1: 'tcpv4', 3: 'udp', 4: 'tcpv6', 5: 'udp_l4' };
      if (gt !== 0) vnet = ` gso=${names[gt] ?? gt}/${num(fr, 'tunlb_encap.vnet.gso_size')}`;
      else if (one(fr, 'tunlb_encap.vnet.needs_csum') === '1') vnet = ' csum=partial';
    }
    const be = num(fr, 'tunlb_encap.backend');
    return [
      `encap ${one(fr, 'tunlb_encap.flags.names')} primary=${bname(num(fr, 'tunlb_encap.primary'))} backup=${bname(num(fr, 'tunlb_encap.backup'))} ` +
        `backend=${be === 0xffff ? 'none' : `#${be}`}${vnet} inner ${inner(fr).text}`,
    ];
  }
  const head = `${bname(num(fr, 'tunlb.sender'))} ${one(fr, 'tunlb.body')} seq=${one(fr, 'tunlb.seq')}`;
  const status = (s: string | undefined): string => ['unspecified', 'syncing', 'serving', 'draining'][Number(s ?? 0)] ?? String(s);
  const hex = (s: string | undefined): string => BigInt(s ?? 0).toString(16);
  switch (one(fr, 'tunlb.body')) {
    case 'records':
      return all(fr, 'tunlb.record.text').map((r) => `${head} ${r}`);
    case 'probe':
      return [`${head} target=${bname(num(fr, 'tunlb.probe.target'))} status=${status(one(fr, 'tunlb.probe.status'))}`];
    case 'probe-ack':
      return [`${head} status=${status(one(fr, 'tunlb.probe_ack.status'))}`];
    case 'sync-request':
      return [`${head} id=${hex(one(fr, 'tunlb.sync_request.request_id'))} from=${one(fr, 'tunlb.sync_request.from_cursor')}`];
    case 'sync-chunk':
      return [
        `${head} id=${hex(one(fr, 'tunlb.sync_chunk.request_id'))} chunk=${one(fr, 'tunlb.sync_chunk.chunk_index')} records=${all(fr, 'tunlb.record').length} ` +
          `total=${one(fr, 'tunlb.sync_chunk.total_records')} next=${one(fr, 'tunlb.sync_chunk.next_cursor')}${one(fr, 'tunlb.sync_chunk.done') === '1' ? ' done' : ''}`,
      ];
    case 'health':
      return [head];
    case 'summary':
      return [
        `${head} status=${status(one(fr, 'tunlb.summary.status'))} config=${BigInt(one(fr, 'tunlb.summary.config_hash') ?? 0).toString(16).padStart(12, '0')} ` +
          `flows=${one(fr, 'tunlb.summary.flows_held')} primary=${one(fr, 'tunlb.summary.flows_primary')} pps-in=${one(fr, 'tunlb.summary.packets_in_per_s')} pps-out=${one(fr, 'tunlb.summary.packets_out_per_s')}`,
      ];
    default:
      return [`${head} ?`];
  }
}

/** A `tunlb capture --decode` line in the same words: sender named by its address, no destination, backend addresses, round trips or [i/n]. */
function canonicalTunlb(line: string): string | undefined {
  const m = /^(\d\d:\d\d:\d\d\.\d{6}) (\S+) → (\S+) (.*)$/.exec(line);
  if (!m) return undefined;
  let rest = m[4]!.replace(/ backend=(#\d+)\([^)]*\)/, ' backend=$1').replace(/ rtt=\S+ms/, '').replace(/ seq=(\d+) \[\d+\/\d+\]/, ' seq=$1');
  if (rest.startsWith('encap ')) return rest;
  if (rest.startsWith('health ')) rest = /^health seq=\d+/.exec(rest)![0];
  return `${m[2]} ${rest}`;
}

labTest('sync stream (TCP 7946): the restarted balancer says hello, its peer welcomes it, one request, chunks of records up to done', (t) => {
  if (!ready(t)) return;
  const tcp = frames.filter((fr) => num(fr, 'tcp.srcport') === CONTROL_PORT || num(fr, 'tcp.dstport') === CONTROL_PORT);
  const sync = tcp.filter((fr) => all(fr, 'tunlb_sync.frame').length > 0);
  // Every TCP segment with data is a sync frame, or part of one (reassembled in a later frame).
  const undecoded = tcp.filter((fr) => num(fr, 'tcp.len') > 0 && !/:tunlb_sync$/.test(fr.protocols) && !/tcp segment of a reassembled PDU/i.test(fr.info));
  t.deepEqual(undecoded.slice(0, 5).map((fr) => `${fr.n} ${fr.protocols} ${fr.info}`), [], `${undecoded.length} TCP segments on port ${CONTROL_PORT} neither a sync frame nor part of one`);
  t.true(tcp.every((fr) => fr.f['_ws.malformed'] === undefined), 'a Malformed TCP frame on the sync port');
  const kinds = sync.flatMap((fr) => all(fr, 'tunlb_sync.frame').map((k, j) => ({ fr, k, dir: all(fr, 'tunlb_sync.direction')[j]! })));
  const by = (k: string) => kinds.filter((x) => x.k === k);
  t.log(`${tcp.length} TCP frames on port ${CONTROL_PORT}, ${sync.length} with sync frames: ${kinds.map((x) => x.k).join(' ')}`);
  t.log(sync.map((fr) => `${fr.n} ${all(fr, 'ip.src')[0]} → ${all(fr, 'ip.dst')[0]} ${fr.info}`).slice(0, 8).join('\n'));
  const hellos = by('hello');
  t.true(hellos.length >= 1, 'no hello');
  for (const h of hellos) {
    t.is(h.dir, 'requester → responder');
    // the requester is the restarted balancer, and says so (its index, its new incarnation)
    t.is(all(h.fr, 'ip.src')[0], LBNET4[victim], `hello from ${all(h.fr, 'ip.src')[0]}`);
    t.is(BALANCERS[Number(all(h.fr, 'tunlb.sync_hello.sender')[0])], victim);
  }
  t.true(by('welcome').length >= 1 && by('welcome').every((x) => x.dir === 'responder → requester'), 'no welcome from the responder');
  t.true(by('request').length >= 1, 'no request');
  const chunks = by('chunk');
  t.true(chunks.length >= 1, 'no chunk');
  t.true(chunks.every((x) => x.dir === 'responder → requester'));
  t.true(sync.some((fr) => all(fr, 'tunlb.sync_chunk.done').includes('1')), 'no chunk with done');
  t.true(by('refusal').length === 0, 'a refusal');
  const recs = sync.flatMap((fr) => all(fr, 'tunlb.record.text'));
  t.true(recs.length > 0, 'no records in the chunks');
  t.deepEqual(recs.filter((r) => !/^create .+ primary=lb\d backup=(lb\d|none) backend=#\d$/.test(r)).slice(0, 5), []);
  t.true(sync.every((fr) => all(fr, 'tunlb_sync.mac').every((m) => m.replace(/:/g, '').length === 64)), 'a frame without a 32-byte MAC');
});

labTest('tshark and `tunlb capture --read FILE --decode` agree on every frame', async (t) => {
  if (!ready(t)) return;
  const r = await run(process.execPath, [TUNLB, 'capture', '--read', pcap, '--config', LAB_CONFIG], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.stderr);
  t.false(/unverified|BAD MAC|other cluster|not a tunlb envelope|bad header/.test(r.stdout), 'tunlb verified every control datagram with the cluster key');
  // Group by capture time (µs, as both print it); within a time, compare the lines as sets.
  const byTime = (pairs: Array<[string, string]>): Map<string, string[]> => {
    const m = new Map<string, string[]>();
    for (const [ts, l] of pairs) (m.get(ts) ?? m.set(ts, []).get(ts)!).push(l);
    for (const v of m.values()) v.sort();
    return m;
  };
  const ours = frames.filter((fr) => onPort(fr, CONTROL_PORT) || onPort(fr, PROBE_PORT) || onPort(fr, DATA_PORT));
  const shark = byTime(ours.flatMap((fr) => canonicalTshark(fr).map((l): [string, string] => [formatTime(fr.tsUs), l])));
  const tunlbLines = r.stdout.split('\n').filter(Boolean);
  const mine = byTime(
    tunlbLines.flatMap((l): Array<[string, string]> => {
      const c = canonicalTunlb(l);
      // the sync stream (TCP): tunlb prints segments, not frames; the stream has its own test
      return c === undefined || / tcp \[/.test(c.replace(/^encap .*/, '')) ? [] : [[l.slice(0, 15), c]];
    }),
  );
  // health: tunlb prints one line per changed backend; the frame is one line here
  for (const v of mine.values()) v.splice(0, v.length, ...[...new Set(v)].sort());
  for (const v of shark.values()) v.splice(0, v.length, ...[...new Set(v)].sort());
  const diffs: string[] = [];
  let same = 0;
  for (const [ts, lines] of shark) {
    const other = mine.get(ts) ?? [];
    if (JSON.stringify(lines) === JSON.stringify(other)) same++;
    else diffs.push(`${ts}\n  tshark: ${lines.join('\n          ')}\n  tunlb:  ${other.join('\n          ')}`);
  }
  t.is(mine.size, shark.size, 'both decoders see the same capture times');
  t.deepEqual(diffs.slice(0, 5), [], `${diffs.length} of ${shark.size} frames differ`);
  t.true(same > 200, `${same} frames compared`);
  const sampleTime = [...shark.keys()].find((ts) => shark.get(ts)!.some((l) => l.startsWith('encap FAILOVER')));
  if (sampleTime) t.log(`both at ${sampleTime}: ${shark.get(sampleTime)!.join(' | ')}`);
  t.log(`${same} frames agree (${tunlbLines.length} tunlb lines)`);
});
