/**
 * One balancer (tunlb, NAT) end to end in the namespace lab: `scripts/lab.sh up --balancers 1`,
 * then from tunlb-client through the VIP to the three lab servers and back: HTTP spread (v4,
 * v6), bulk TCP (iperf3, a 20 MB download), UDP, ping, a long-lived TCP connection pinned to
 * one backend, malformed packets dropped and counted by reason while forwarding goes on, and
 * the balancer's SIGTERM shutdown. `lab.sh down` always runs at the end.
 *
 * Needs root (namespaces, TUN); skips with a message otherwise. bin/tunlb runs dist/: build
 * first (`npm run build`). The lab is shared: the file holds the lab session lock from before
 * `up` to after `down` (native-tests/helpers/lab.ts). Every traffic generator is bounded in time
 * and all traffic stays between the lab's namespaces.
 */
import test from 'ava';
import { loadConfig } from '../src/config';
import { deriveHashKey } from '../src/decision/hash-key';
import { hashFlowKey } from '../src/decision/halfsiphash';
import { buildForwardingTable } from '../src/decision/forwarding-table';
import { keyFromParts } from '../src/packet/flow-key';
import { hasRoot, nativeSuite } from './helpers/root';
import {
  ADMIN, CLIENT_NS, LAB_DIR, REPO, SERVERS, VIP4, VIP6, adminFlows, adminStats, alive, execIn, existingNamespaces,
  holdLabSession, lab, labLogTail, labNamespaces, labPid, linkExists, poll, run, spawnIn, staleBuild, type LabSession,
} from './helpers/lab';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

const rootTest = nativeSuite('dataplane e2e (1 balancer, NAT)');
const CLIENT4 = '10.99.1.2';
const CLIENT6 = 'fd99:1::2';

let session: LabSession | undefined;
let up = false;
const t0 = Date.now();

test.before(async () => {
  if (!hasRoot()) return;
  const stale = staleBuild();
  if (stale) console.log(`dataplane-e2e: WARNING: ${stale}`);
  session = await holdLabSession();
});

test.after.always('lab down, release the lab', async (t) => {
  if (!hasRoot()) return;
  try {
    const r = await lab(['down']);
    t.log(`lab down (after.always): exit ${r.code} in ${r.seconds.toFixed(1)} s; file total ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    session?.release();
  }
});

/** Fails the test at once when the lab did not come up (instead of N timeouts). */
function needLab(t: { fail(m: string): void }): boolean {
  if (!up) t.fail('the lab is not up (see the first test)');
  return up;
}

// ---- client-side programs (node -e in tunlb-client) ----

/**
 * N HTTP GETs, each on a new connection from source port base+i; prints
 * {"seq": [server name or null per request], "errors": n}.
 */
const HTTP_SPREAD = `
const http = require('node:http');
const [host, count, base] = process.argv.slice(1);
const seq = []; let errors = 0;
const one = (i) => new Promise((resolve) => {
  const opts = { host, port: 80, path: '/', agent: false, timeout: 2000 };
  if (Number(base) > 0) opts.localPort = Number(base) + i;
  const req = http.get(opts, (res) => {
    let body = ''; res.setEncoding('utf8'); res.on('data', (c) => (body += c));
    res.on('end', () => { seq.push(body.trim()); resolve(); });
    res.on('error', () => { seq.push(null); errors++; resolve(); });
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', () => { seq.push(null); errors++; resolve(); });
});
(async () => { for (let i = 0; i < Number(count); i++) await one(i); console.log(JSON.stringify({ seq, errors })); })();
`;

/**
 * UDP echo through the VIP: each datagram from a new socket (a new flow), 2 s timeout each.
 * Prints {"names": {...}, "errors": n, "bad": [..]}; a reply must come from VIP:5353 and be
 * "<server> " + the datagram.
 */
const UDP_ECHO = `
const dgram = require('node:dgram');
const [host, count, size] = process.argv.slice(1);
const names = {}; let errors = 0; const bad = [];
const one = (i) => new Promise((resolve) => {
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  const msg = Buffer.alloc(Number(size), 0x61); msg.write('hello-' + i);
  const timer = setTimeout(() => { errors++; s.close(); resolve(); }, 2000);
  s.on('message', (m, rinfo) => {
    clearTimeout(timer); s.close();
    const sp = m.indexOf(0x20), name = m.subarray(0, sp).toString();
    if (rinfo.address !== host || rinfo.port !== 5353 || !m.subarray(sp + 1).equals(msg)) bad.push({ from: rinfo.address + ':' + rinfo.port, len: m.length });
    else names[name] = (names[name] || 0) + 1;
    resolve();
  });
  s.on('error', () => { clearTimeout(timer); errors++; s.close(); resolve(); });
  s.send(msg, 5353, host);
});
(async () => { for (let i = 0; i < Number(count); i++) await one(i); console.log(JSON.stringify({ names, errors, bad })); })();
`;

/**
 * One TCP connection to VIP:7 (echo) for durationMs: a message every 50 ms, each echo checked.
 * Prints "port N" once connected, then {"sent": n, "echoed": n, "ok": bool}.
 */
const LONG_ECHO = `
const net = require('node:net');
const [host, durationMs] = process.argv.slice(1);
const c = net.connect({ host, port: 7 });
let sent = 0, got = '', expect = '', timer;
c.setNoDelay(true);
c.on('connect', () => {
  console.log('port ' + c.localPort);
  timer = setInterval(() => { const m = 'message ' + sent++ + ' ' + 'x'.repeat(sent % 300) + '\\n'; expect += m; c.write(m); }, 50);
  setTimeout(() => { clearInterval(timer); setTimeout(() => { c.end(); }, 500); }, Number(durationMs));
});
c.on('data', (d) => (got += d));
c.on('close', () => console.log(JSON.stringify({ sent, echoed: got.split('\\n').length - 1, ok: got === expect && sent > 0 })));
c.on('error', (e) => { console.log(JSON.stringify({ sent, error: e.message })); process.exit(1); });
`;

/**
 * Malformed packets to the VIP from the client with raw sockets (python3, which node-gyp
 * needs anyway). Only what the kernels on the path let through: the client kernel fixes
 * IPv4 total length and header checksum, and the router drops bad IHL / lying lengths
 * (ip_rcv), so those are covered by the unit tests only. Each kind is sent K times.
 */
const INJECT = String.raw`
import socket, struct, sys, json
K = int(sys.argv[1]); V4 = '10.99.0.10'; V6 = 'fd99::10'; C4 = '10.99.1.2'
def tcp(doff, extra=b''):
    return struct.pack('!HHIIBBHHH', 40000, 80, 1, 0, doff << 4, 0x02, 65535, 0, 0) + extra
def s4(proto): return socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
def s6(proto): return socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
def dstopts(nxt): return bytes([nxt, 0, 1, 4, 0, 0, 0, 0])          # 8 bytes, PadN
def hbh(nxt): return bytes([nxt, 0, 1, 4, 0, 0, 0, 0])
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def tiny_first_fragment():
    # IPv4 header (kernel fills checksum and total length), MF set, offset 0, 8 bytes of TCP.
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 0, 0x7777, 0x2000, 64, 6, 0, socket.inet_aton(C4), socket.inet_aton(V4))
    return ip + tcp(5)[:8]
sends = [
    ('bad_tcp_offset',          lambda: s4(6).sendto(tcp(4), (V4, 0))),
    ('bad_tcp_offset',          lambda: s4(6).sendto(tcp(15, b'abcd'), (V4, 0))),
    ('bad_tcp_offset',          lambda: s6(6).sendto(tcp(3), (V6, 0))),
    ('l4_truncated',            lambda: s4(6).sendto(tcp(5)[:8], (V4, 0))),
    ('l4_truncated',            lambda: raw.sendto(tiny_first_fragment(), (V4, 0))),
    ('bad_udp_length',          lambda: s4(17).sendto(struct.pack('!HHHH', 40000, 5353, 200, 0) + b'abcd', (V4, 0))),
    ('unsupported_protocol',    lambda: s4(253).sendto(b'x' * 16, (V4, 0))),
    ('unsupported_protocol',    lambda: s6(253).sendto(b'x' * 16, (V6, 0))),
    ('icmp_unsupported_type',   lambda: s4(1).sendto(bytes([13, 0, 0xf2, 0xff]) + b'\0' * 16, (V4, 0))),
    ('icmp_inner_malformed',    lambda: s4(1).sendto(bytes([3, 4, 0, 0, 0, 0, 5, 0x78]) + bytes([0x45]) + b'\0' * 27, (V4, 0))),
    ('ipv6_ext_chain_too_long', lambda: s6(60).sendto(b''.join(dstopts(60) for _ in range(11)) + dstopts(59), (V6, 0))),
    ('ipv6_bad_ext',            lambda: s6(60).sendto(dstopts(0) + hbh(59), (V6, 0))),
]
counts = {}
for _ in range(K):
    for reason, send in sends:
        send()
        counts[reason] = counts.get(reason, 0) + 1
print(json.dumps(counts))
`;

function nodeIn(script: string, args: string[], timeoutMs: number) {
  return execIn(CLIENT_NS, [process.execPath, '-e', script, ...args], { timeoutMs });
}

async function httpSpread(host: string, count: number, basePort = 0): Promise<{ seq: Array<string | null>; names: Record<string, number>; errors: number }> {
  const r = await nodeIn(HTTP_SPREAD, [host, String(count), String(basePort)], 60_000);
  if (r.code !== 0) throw new Error(`http spread ${host}: exit ${r.code} ${r.stderr}`);
  const res = JSON.parse(r.stdout) as { seq: Array<string | null>; errors: number };
  const names: Record<string, number> = {};
  for (const n of res.seq) if (n !== null) names[n] = (names[n] ?? 0) + 1;
  return { ...res, names };
}

/**
 * The lab's cluster key, fixed by this file (written before `up`; lab.sh only makes one when
 * there is none). With it and fixed client source ports, which server each test connection
 * reaches is reproducible, and the test computes it with the documented hash
 * (docs/contracts.md) to check the balancer's every choice. A random key would turn "60
 * connections, each server within ±30% of its share" into a coin toss: for a perfect hash,
 * 60 multinomial draws leave that band 17% of the time.
 */
const LAB_KEY = Buffer.from('tunlb lab e2e fixed key, 32 B!!!');

/** The backend (address text) the balancer picks for a new flow, from the lab's config and key. */
function labPredictor(): (src: string, dst: string, sport: number, dport: number, proto: number) => string {
  const config = loadConfig(path.join(LAB_DIR, 'lab.yaml'));
  const hk = deriveHashKey(config.cluster.key.reveal());
  const ft = buildForwardingTable(config, hk, 1);
  return (src, dst, sport, dport, proto) => {
    const v = config.vips.findIndex((x) => x.address.text === dst);
    const be = ft.backendTables[v]!.lookup(hashFlowKey(hk, keyFromParts(src, dst, sport, dport, proto)));
    return config.vips[v]!.backends[be]!.address.text;
  };
}

/** Lab server name of a backend address (10.99.3.21 / fd99:3::21 → srv1). */
const serverOf = (addr: string): string => `srv${Number(addr.slice(-2)) - 20}`;

/** A drop reason's count in a stats snapshot. */
const drop = (s: { counters: { drops: Record<string, number> } }, k: string): number => s.counters.drops[k] ?? 0;

// ---------------------------------------------------------------------------------------------

rootTest('lab up --balancers 1 (tunlb) comes up and the VIP answers', async (t) => {
  t.log(`lab session lock: ${session?.how}`);
  await lab(['down']);
  mkdirSync(LAB_DIR, { recursive: true });
  writeFileSync(path.join(LAB_DIR, 'cluster.key'), LAB_KEY, { mode: 0o600 });
  const r = await lab(['up', '--balancers', '1'], 120_000);
  t.log(`up --balancers 1: exit ${r.code} in ${r.seconds.toFixed(1)} s`);
  if (r.code !== 0) t.log(labLogTail('lb1'));
  t.is(r.code, 0, r.stderr);
  const st = await adminStats();
  t.is(st.id, 'lb1');
  t.is(st.device.name, 'tunlb0');
  t.log(`tunlb0 features: ${JSON.stringify(st.device.features)}`);
  up = r.code === 0;
});

for (const [vip, client] of [[VIP4, CLIENT4], [VIP6, CLIENT6]] as const) {
  rootTest(`60 HTTP requests on new connections to ${vip} reach all three servers, each within ±30% of its share, each the predicted one`, async (t) => {
    if (!needLab(t)) return;
    const base = 41000;
    const { seq, names, errors } = await httpSpread(vip, 60, base);
    t.log(names);
    t.is(errors, 0);
    t.deepEqual(Object.keys(names).sort(), [...SERVERS]);
    for (const s of SERVERS) t.true(names[s]! >= 14 && names[s]! <= 26, `${s}: ${names[s]} of 60`);
    const predict = labPredictor();
    const wrong = seq.map((n, i) => [base + i, n, serverOf(predict(client, vip, base + i, 80, 6))]).filter(([, n, want]) => n !== want);
    t.deepEqual(wrong, [], 'connections answered by another server than the hash contract says ([port, got, expected])');
  });
}

/**
 * iperf3 opens a control connection and then a data connection, and both must reach the same
 * server. The test computes the balancer's choice itself (the cluster hash is a documented
 * contract: docs/contracts.md), from the lab's config and key: it pins the client's ephemeral
 * port range to one port P for the control connection (client namespace only, restored after)
 * and picks the data port Q (--cport) that the balancer sends to the same backend.
 */
rootTest('iperf3 bulk TCP through the VIP (3 s) completes; bytes received = bytes sent (up to what iperf3 leaves in flight)', async (t) => {
  if (!needLab(t)) return;
  const predict = labPredictor();
  const backendOf = (sport: number): string => predict(CLIENT4, VIP4, sport, 5201, 6);
  const P = 45011;
  let Q = 46001;
  while (backendOf(Q) !== backendOf(P)) Q++;
  const range = (await execIn(CLIENT_NS, ['sysctl', '-n', 'net.ipv4.ip_local_port_range'])).stdout.trim().split(/\s+/).join(' ');
  await execIn(CLIENT_NS, ['sysctl', '-qw', `net.ipv4.ip_local_port_range=${P} ${P}`]);
  let r;
  try {
    r = await execIn(CLIENT_NS, ['iperf3', '-c', VIP4, '-t', '3', '-J', '--cport', String(Q), '--connect-timeout', '3000'], { timeoutMs: 25_000 });
  } finally {
    await execIn(CLIENT_NS, ['sysctl', '-qw', `net.ipv4.ip_local_port_range=${range}`]);
  }
  t.is(r.code, 0, `iperf3 exit ${r.code} ${r.signal ?? ''}: ${r.stdout.slice(-800)} ${r.stderr}`);
  const j = JSON.parse(r.stdout) as {
    end: { sum_sent: { bytes: number; bits_per_second: number; retransmits?: number }; sum_received: { bytes: number; bits_per_second: number } };
    error?: string;
  };
  t.falsy(j.error);
  const { sum_sent: sent, sum_received: recv } = j.end;
  t.true(sent.bytes > 0);
  t.log(
    `iperf3 via the VIP to ${backendOf(P)}: ${(recv.bits_per_second / 1e9).toFixed(2)} Gbit/s, ` +
      `sent ${sent.bytes} B, received ${recv.bytes} B, ${sent.retransmits ?? '?'} retransmits (control port ${P}, data port ${Q})`,
  );
  // iperf3 (3.12) counts "sent" as bytes written into the client's socket and "received" as
  // bytes the server had read when the client's TEST_END arrived on the control connection:
  // what is still in socket buffers or in flight then is never counted, so for TCP received is
  // equal to sent or short by at most the buffered bytes (measured here: ~2.6 MB of ~2 GB).
  // TCP itself cannot lose bytes; exact end-to-end byte counts are checked by the 20 MB
  // download below and byte-exact content by the long-lived echo test.
  t.true(recv.bytes <= sent.bytes, 'received more than sent');
  t.true(sent.bytes - recv.bytes <= 16 * 2 ** 20, `received ${sent.bytes - recv.bytes} bytes short: more than the socket buffers hold`);
  // The balancer chose what the test computed (same hash in another process: the contract).
  const flows = await adminFlows();
  const rows = flows.flows.filter((f) => f.key.endsWith(`-> ${VIP4}:5201`));
  t.true(rows.length >= 2, JSON.stringify(rows));
  for (const f of rows) t.is(f.backend, backendOf(P), f.key);
});

rootTest('a 20 MB HTTP download through the VIP has the exact byte count (v4 and v6)', async (t) => {
  if (!needLab(t)) return;
  for (const url of [`http://${VIP4}/bytes?n=20000000`, `http://[${VIP6}]/bytes?n=20000000`]) {
    const r = await execIn(CLIENT_NS, ['curl', '-sS', '-o', '/dev/null', '-m', '30', '-w', '%{http_code} %{size_download} %{speed_download}', url], { timeoutMs: 35_000 });
    t.is(r.code, 0, r.stderr);
    const [code, size, speed] = r.stdout.trim().split(' ');
    t.is(code, '200');
    t.is(size, '20000000', url);
    t.log(`${url}: ${size} bytes at ${((Number(speed) * 8) / 1e9).toFixed(2)} Gbit/s`);
  }
});

rootTest('UDP request/response through the VIP (echo on 5353), v4 and v6, new flow per datagram, replies from VIP:5353', async (t) => {
  if (!needLab(t)) return;
  for (const host of [VIP4, VIP6]) {
    const r = await nodeIn(UDP_ECHO, [host, '30', '64'], 90_000);
    t.is(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { names: Record<string, number>; errors: number; bad: unknown[] };
    t.log(host, res.names);
    t.is(res.errors, 0);
    t.deepEqual(res.bad, []);
    t.true(Object.keys(res.names).length >= 2 && Object.keys(res.names).every((n) => (SERVERS as readonly string[]).includes(n)), JSON.stringify(res.names));
  }
});

rootTest('a UDP answer fragmented by the server (request not fragmented) comes back whole from the VIP, v4 and v6', async (t) => {
  if (!needLab(t)) return;
  // Runs before the fragmented-both-ways test: a 3-tuple fragment flow from this client to the
  // same backend would match the answer's fragments (reply key with ports 0) by itself.
  // The request fits in 1500 bytes (v4 28 + 1470 = 1498, v6 48 + 1450 = 1498); the echo
  // ("srvN " + payload) does not (1503): the server fragments it, and the balancer matches
  // the first fragment by its 5-tuple and the next by the fragment id (forwarder #replyFallback).
  for (const [host, size] of [[VIP4, '1470'], [VIP6, '1450']] as const) {
    const r = await nodeIn(UDP_ECHO, [host, '4', size], 20_000);
    const res = JSON.parse(r.stdout) as { names: Record<string, number>; errors: number; bad: unknown[] };
    t.log(host, res);
    t.is(res.errors, 0, JSON.stringify(res));
    t.deepEqual(res.bad, []);
  }
  const c = (await adminStats()).counters as unknown as { replyFirstFragments: number; replyLaterFragments: number };
  t.true(c.replyFirstFragments >= 8, `first fragments matched by 5-tuple: ${c.replyFirstFragments}`);
  t.true(c.replyLaterFragments >= 8, `later fragments matched by id: ${c.replyLaterFragments}`);
});

rootTest('UDP datagrams fragmented both ways (3000 bytes) go through the VIP and come back whole', async (t) => {
  if (!needLab(t)) return;
  for (const host of [VIP4, VIP6]) {
    const r = await nodeIn(UDP_ECHO, [host, '3', '3000'], 30_000);
    const res = JSON.parse(r.stdout) as { names: Record<string, number>; errors: number; bad: unknown[] };
    t.log(host, res);
    t.is(res.errors, 0);
    t.deepEqual(res.bad, []);
  }
});


rootTest('ping to the VIP is answered (v4 and v6)', async (t) => {
  if (!needLab(t)) return;
  const v4 = await execIn(CLIENT_NS, ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '2', '-w', '6', VIP4], { timeoutMs: 15_000 });
  t.is(v4.code, 0, v4.stdout + v4.stderr);
  t.regex(v4.stdout, / 0% packet loss/);
  const v6 = await execIn(CLIENT_NS, ['ping', '-6', '-n', '-c', '3', '-i', '0.2', '-W', '2', '-w', '6', VIP6], { timeoutMs: 15_000 });
  t.is(v6.code, 0, v6.stdout + v6.stderr);
  t.regex(v6.stdout, / 0% packet loss/);
});

rootTest('a long-lived TCP connection (echo, ~5 s) stays on one backend for its whole life', async (t) => {
  if (!needLab(t)) return;
  const child = spawnIn(CLIENT_NS, [process.execPath, '-e', LONG_ECHO, VIP4, '5000']);
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  let out = '';
  child.stdout!.on('data', (d) => (out += String(d)));
  const done = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    t.true(await poll(() => /^port \d+/m.test(out), 5000), `no connection: ${out}`);
    const port = Number(/^port (\d+)/m.exec(out)![1]);
    const key = `tcp ${CLIENT4}:${port} -> ${VIP4}:7`;
    const seen: string[] = [];
    let exited = false;
    void done.then(() => (exited = true));
    while (!exited) {
      const row = (await adminFlows()).flows.find((f) => f.key === key);
      if (row) seen.push(row.backend);
      await new Promise((r) => setTimeout(r, 250));
    }
    const code = await done;
    t.is(code, 0, out);
    const res = JSON.parse(out.trim().split('\n').pop()!) as { sent: number; echoed: number; ok: boolean };
    t.log(`${key}: ${res.sent} messages echoed by ${[...new Set(seen)].join(', ')} (${seen.length} flow-table checks)`);
    t.true(res.ok, JSON.stringify(res));
    t.true(res.sent >= 80);
    t.true(seen.length >= 10, `flow seen ${seen.length} times`);
    t.is(new Set(seen).size, 1, `backend changed: ${seen.join(' ')}`);
  } finally {
    clearTimeout(killer);
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

rootTest('malformed packets into the TUN path are dropped and counted by reason; the balancer keeps forwarding', async (t) => {
  if (!needLab(t)) return;
  const pid = labPid('lb1');
  t.truthy(pid);
  const before = await adminStats();
  const K = 3;
  const r = await execIn(CLIENT_NS, ['python3', '-c', INJECT, String(K)], { timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  const sent = JSON.parse(r.stdout) as Record<string, number>;
  t.log('sent', sent);
  let after = before;
  const counted = await poll(async () => {
    after = await adminStats();
    return Object.entries(sent).every(([k, n]) => drop(after, k) - drop(before, k) >= n);
  }, 5000, 100);
  const delta = Object.fromEntries(Object.keys(sent).map((k) => [k, drop(after, k) - drop(before, k)]));
  t.log('counted', delta);
  t.true(counted, `not all counted: sent ${JSON.stringify(sent)}, counted ${JSON.stringify(delta)}`);
  t.deepEqual(delta, sent, 'each malformed packet counted exactly once under its reason');
  // Still alive and forwarding.
  t.true(alive(pid!), 'balancer process alive');
  const { names, errors } = await httpSpread(VIP4, 6);
  t.is(errors, 0);
  t.true(Object.keys(names).length >= 1);
  const cli = await execIn('lb1', [process.execPath, path.join(REPO, 'bin', 'tunlb'), 'stats', '--json', '--admin', ADMIN], { timeoutMs: 10_000 });
  t.is(cli.code, 0, cli.stderr);
  t.is((JSON.parse(cli.stdout) as { id: string }).id, 'lb1', '`tunlb stats --json` works in the namespace');
});

rootTest('SIGTERM: the balancer exits 0 and tunlb0 disappears', async (t) => {
  if (!needLab(t)) return;
  // The lab's balancer (not our child: its exit code is in its log's final event).
  const pid = labPid('lb1')!;
  t.true(alive(pid));
  process.kill(pid, 'SIGTERM');
  t.true(await poll(() => !alive(pid), 5000), 'lab balancer still running 5 s after SIGTERM');
  t.true(await poll(async () => !(await linkExists('lb1', 'tunlb0')), 3000), 'tunlb0 still there');
  t.regex(labLogTail('lb1', 5), /"event":"balancer_stopped".*"reason":"SIGTERM"/);

  // A balancer of our own (a child, so its exit code is ours to see), same config and namespace.
  // `tunlb run` installs its SIGTERM handler once start-up is complete (after the bulk sync of a
  // multi-balancer config), right after logging balancer_started: wait for that event (see
  // KNOWN BUG below for a SIGTERM before it). (/proc SigCgt cannot tell: node 20 always has
  // SIGTERM caught at the OS level.)
  const own = startOwnBalancer();
  try {
    t.true(await poll(() => linkExists('lb1', 'tunlb0'), 15_000), `no tunlb0: ${own.err()}`);
    t.true(await poll(() => own.err().includes('"event":"balancer_started"'), 15_000), `never started: ${own.err()}`);
    t.true(await poll(async () => (await run('ip', ['netns', 'exec', 'tunlb-lb1', 'curl', '-s', '-m', '1', `http://${ADMIN}/healthz`])).stdout === 'ok\n', 10_000));
    own.child.kill('SIGTERM');
    t.deepEqual(await own.exited, { code: 0, signal: null }, own.err());
    t.false(await linkExists('lb1', 'tunlb0'), 'tunlb0 gone with the process');
  } finally {
    own.cleanup();
  }
});

/** `tunlb run --id lb1` with the lab's config in tunlb-lb1, as our child (bounded: 30 s). */
function startOwnBalancer() {
  const child = spawn('ip', ['netns', 'exec', 'tunlb-lb1', process.execPath, path.join(REPO, 'bin', 'tunlb'), 'run', '--config', path.join(LAB_DIR, 'lab.yaml'), '--id', 'lb1', '--log-level', 'info'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += String(d)));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return {
    child,
    exited,
    err: () => err,
    cleanup: () => {
      clearTimeout(killer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

if (hasRoot()) {
  test.serial('SIGTERM during start-up (TUN open, bulk sync running) stops the balancer cleanly: exit 0, tunlb0 gone', async (t) => {
    if (!needLab(t)) return;
    const own = startOwnBalancer();
    try {
      // tunlb0 exists from start-up step 6, before the bulk sync (step 8, ~1 s with no peer):
      // the signal handler is installed before start, so this SIGTERM stops it cleanly.
      t.true(await poll(() => linkExists('lb1', 'tunlb0'), 15_000), own.err());
      own.child.kill('SIGTERM');
      const end = await own.exited;
      t.true(await poll(async () => !(await linkExists('lb1', 'tunlb0')), 3000));
      t.deepEqual(end, { code: 0, signal: null }, own.err());
    } finally {
      own.cleanup();
    }
  });
}

rootTest('lab down leaves no tunlb-* lab namespace', async (t) => {
  const r = await lab(['down']);
  t.log(`down: ${r.seconds.toFixed(1)} s`);
  t.is(r.code, 0, r.stderr);
  const left = await existingNamespaces();
  for (const n of await labNamespaces()) t.false(left.includes(n), `namespace ${n} still there`);
});
