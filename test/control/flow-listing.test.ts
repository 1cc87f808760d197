/**
 * `tunlb flows` filters (src/control/flow-listing.ts), table-driven, without a device: a real
 * FlowTable holding six flows with chosen VIPs, backends, primaries, backups, states and times,
 * behind a parsed configuration (the FlowSource a Balancer provides). Each filter must keep the
 * flows it names and drop the others; an unusable value is refused with TUNLB_USAGE and one line.
 * The HTTP side (query parameters, 400) and the CLI's output run against a Balancer in
 * test/control/flow-listing-admin.test.ts.
 */
import test from 'ava';
import { parseConfig } from '../../src/config';
import { isTunlbError, ErrorCodes } from '../../src/errors';
import { FlowState, FlowTable } from '../../src/flow';
import { keyFromParts } from '../../src/packet/flow-key';
import {
  compileFlowQuery,
  flowQueryFromParams,
  listFlows,
  FlowScan,
  parseFlowLimit,
  type FlowFilterText,
  type FlowSource,
} from '../../src/control/flow-listing';
import * as P from '../helpers/packets';
import { CLIENT, CLIENT6, VIP, VIP6 } from '../helpers/fixtures';

const YAML = `
cluster: { id: flows-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
  - { id: lb2, address: 10.99.2.12 }
  - { id: lb3, address: 10.99.2.13 }
vips:
  - name: web4
    address: ${VIP}
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }, { address: 10.99.3.23 }]
  - name: web6
    address: "${VIP6}"
    backends: [{ address: "fd99:3::21" }, { address: "fd99:3::22", port: 8080 }]
`;

const NOW = 100;
const CLIENT_B = '10.99.1.3';
const CLIENT6_B = 'fd99:1::3';

interface FlowSpec {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: number;
  vip: number;
  backend: number;
  primary: number;
  backup: number;
  state: number;
  created: number;
  lastSeen: number;
}

/** The six flows (name → spec). Balancers: 0 lb1, 1 lb2, 2 lb3. */
const FLOWS: Record<string, FlowSpec> = {
  A: { src: CLIENT, dst: VIP, sport: 40000, dport: 80, proto: P.PROTO_TCP, vip: 0, backend: 0, primary: 0, backup: 1, state: FlowState.TCP_ESTABLISHED, created: 0, lastSeen: 95 },
  B: { src: CLIENT, dst: VIP, sport: 40001, dport: 80, proto: P.PROTO_TCP, vip: 0, backend: 1, primary: 1, backup: 2, state: FlowState.TCP_SYN_SEEN, created: 90, lastSeen: 90 },
  C: { src: CLIENT_B, dst: VIP, sport: 5353, dport: 53, proto: P.PROTO_UDP, vip: 0, backend: 2, primary: 2, backup: 0, state: FlowState.UDP, created: 50, lastSeen: 99 },
  D: { src: CLIENT, dst: VIP, sport: 77, dport: 77, proto: P.PROTO_ICMP, vip: 0, backend: 0, primary: 0, backup: 2, state: FlowState.ICMP, created: 98, lastSeen: 98 },
  E: { src: CLIENT6, dst: VIP6, sport: 40000, dport: 80, proto: P.PROTO_TCP, vip: 1, backend: 0, primary: 1, backup: 0, state: FlowState.TCP_CLOSING, created: 10, lastSeen: 60 },
  F: { src: CLIENT6_B, dst: VIP6, sport: 5, dport: 5, proto: P.PROTO_ICMPV6, vip: 1, backend: 1, primary: 2, backup: 1, state: FlowState.ICMP, created: 99, lastSeen: 100 },
};
const ALL = Object.keys(FLOWS).join('');

function source(names = ALL): { src: FlowSource; keyOf: Map<string, string> } {
  const config = parseConfig(YAML, 'flows.yaml', { readKeyFile: () => Buffer.alloc(32, 7) });
  const table = new FlowTable({ capacity: 64, seed: 1, timeouts: { tcpEstablished: 1000, tcpSynSeen: 1000, tcpClosing: 1000, udp: 1000, icmp: 1000 } });
  const keyOf = new Map<string, string>();
  for (const name of names) {
    const f = FLOWS[name]!;
    const backends = config.vips[f.vip]!.backends;
    const fwd = keyFromParts(f.src, f.dst, f.sport, f.dport, f.proto);
    const rev = keyFromParts(backends[f.backend]!.address.text, f.src, f.dport, f.sport, f.proto);
    const id = table.insert(new Uint32Array(fwd.buffer), new Uint32Array(rev.buffer), f.primary, f.backup, f.vip, f.backend, f.created);
    if (id < 0) throw new Error(`insert ${name}: ${id}`);
    table.setState(id, f.state);
    table.setLastSeen(id, f.lastSeen);
  }
  const src: FlowSource = { table, forwarder: { forwarding: { config } }, config, nowSec: () => NOW };
  const listed = listFlows(src, 100);
  for (const row of listed.flows) {
    const name = Object.keys(FLOWS).find((n) => FLOWS[n]!.sport === Number(/:(\d+) ->/.exec(row.key)![1]) && row.key.includes(FLOWS[n]!.src));
    keyOf.set(row.key, name!);
  }
  return { src, keyOf };
}

/** The names of the flows `filters` lists (sorted). */
function names(filters: FlowFilterText, limit = 100): string {
  const { src, keyOf } = source();
  const r = listFlows(src, compileFlowQuery(src, filters, limit));
  return r.flows
    .map((row) => keyOf.get(row.key) ?? `?${row.key}`)
    .sort()
    .join('');
}

test('flow-listing: fixture rows carry key, VIP, balancers, backend, state name, age and idle time', (t) => {
  const { src } = source();
  const r = listFlows(src, 100);
  t.is(r.total, 6);
  t.is(r.scanned, 6);
  t.is(r.matched, 6);
  t.false(r.truncated);
  t.deepEqual(r.filters, {});
  const a = r.flows.find((x) => x.key === `tcp ${CLIENT}:40000 -> ${VIP}:80`);
  t.deepEqual(a, { key: `tcp ${CLIENT}:40000 -> ${VIP}:80`, vip: 'web4', primary: 'lb1', backup: 'lb2', backend: '10.99.3.21', state: FlowState.TCP_ESTABLISHED, stateName: 'tcp_established', packets: 0, ageS: 100, idleS: 5, confirmed: false });
  const f = r.flows.find((x) => x.key.startsWith('icmpv6'));
  t.like(f, { vip: 'web6', primary: 'lb3', backup: 'lb2', backend: 'fd99:3::22', stateName: 'icmp', ageS: 1, idleS: 0 });
});

const MATCHES: Array<[string, FlowFilterText, string]> = [
  ['no filter', {}, ALL],
  // VIP: name, address in another spelling, a list
  ['vip web4', { vip: 'web4' }, 'ABCD'],
  ['vip web6', { vip: 'web6' }, 'EF'],
  ['vip by address, other spelling', { vip: 'FD99:0:0::10' }, 'EF'],
  ['vip by IPv4 address', { vip: VIP }, 'ABCD'],
  ['vip list', { vip: 'web6,web4' }, ALL],
  // backend: any spelling of the address
  ['backend IPv4', { backend: '10.99.3.21' }, 'AD'],
  ['backend IPv4-mapped spelling', { backend: '::ffff:10.99.3.21' }, 'AD'],
  ['backend IPv6 uncompressed, upper case', { backend: 'FD99:3:0:0:0:0:0:21' }, 'E'],
  ['backend IPv6 with a port in the config', { backend: 'fd99:3::22' }, 'F'],
  ['backend list, both families', { backend: 'fd99:3::22, 10.99.3.23' }, 'CF'],
  // client: address, address:port, prefix, [v6]:port
  ['client address', { client: CLIENT }, 'ABD'],
  ['client address:port', { client: `${CLIENT}:40001` }, 'B'],
  ['client /24', { client: '10.99.1.0/24' }, 'ABCD'],
  ['client /31 (two addresses)', { client: '10.99.1.2/31' }, 'ABCD'],
  ['client /32', { client: `${CLIENT_B}/32` }, 'C'],
  ['client /30 elsewhere', { client: '10.99.7.0/30' }, ''],
  ['client [v6]:port', { client: `[${CLIENT6}]:40000` }, 'E'],
  ['client [v6] without port', { client: `[${CLIENT6}]` }, 'E'],
  ['client v6 /64', { client: 'fd99:1::/64' }, 'EF'],
  ['client v6 /127 (partial byte)', { client: 'fd99:1::2/127' }, 'EF'],
  ['client v6 other spelling', { client: 'FD99:1:0:0::3' }, 'F'],
  ['client port not used', { client: `${CLIENT}:1` }, ''],
  // protocol
  ['proto tcp', { proto: 'tcp' }, 'ABE'],
  ['proto UDP (any case)', { proto: 'UDP' }, 'C'],
  ['proto icmp: ICMP and ICMPv6', { proto: 'icmp' }, 'DF'],
  ['proto icmpv6', { proto: 'icmpv6' }, 'F'],
  ['proto number 17', { proto: '17' }, 'C'],
  ['proto list', { proto: 'udp,icmp' }, 'CDF'],
  // balancers
  ['primary lb1', { primary: 'lb1' }, 'AD'],
  ['primary list', { primary: 'lb2,lb3' }, 'BCEF'],
  ['backup lb1', { backup: 'lb1' }, 'CE'],
  ['backup lb3', { backup: 'lb3' }, 'BD'],
  // flow states
  ['state tcp_established', { state: 'tcp_established' }, 'A'],
  ['state established (tcp_ left out)', { state: 'established' }, 'A'],
  ['state SYN-SEEN (case, dash)', { state: 'SYN-SEEN' }, 'B'],
  ['state closing', { state: 'closing' }, 'E'],
  ['state closed (none)', { state: 'tcp_closed' }, ''],
  ['state udp', { state: 'udp' }, 'C'],
  ['state icmp (v4 and v6)', { state: 'icmp' }, 'DF'],
  ['state list', { state: 'established,syn_seen' }, 'AB'],
  // times (now = 100)
  ['min-age 0', { 'min-age': '0' }, ALL],
  ['min-age 50', { 'min-age': '50' }, 'ACE'],
  ['min-age 90.5', { 'min-age': '90.5' }, 'A'],
  ['max-idle 0', { 'max-idle': '0' }, 'F'],
  ['max-idle 2', { 'max-idle': '2' }, 'CDF'],
  ['max-idle 5', { 'max-idle': '5' }, 'ACDF'],
  // combinations AND together
  ['vip + primary + state', { vip: 'web4', primary: 'lb1', state: 'icmp' }, 'D'],
  ['proto + client', { proto: 'tcp', client: CLIENT }, 'AB'],
  ['backend + backup', { backend: '10.99.3.21', backup: 'lb2' }, 'A'],
  ['vip web6 + backend of web4: nothing', { vip: 'web6', backend: '10.99.3.21' }, ''],
  ['min-age + max-idle', { 'min-age': '40', 'max-idle': '10' }, 'AC'],
];

for (const [title, filters, want] of MATCHES) {
  test(`flow-listing: ${title} → ${want || 'none'}`, (t) => {
    t.is(names(filters), want);
  });
}

test('flow-listing: filters are echoed normalised', (t) => {
  const { src } = source();
  const q = compileFlowQuery(src, { vip: 'FD99::10', backend: '::ffff:10.99.3.21', client: '[FD99:1::2]:40000', proto: 'TCP', state: 'established', primary: 'lb1', 'min-age': '5' });
  t.deepEqual(q.text, { vip: 'web6', backend: '10.99.3.21', client: '[fd99:1::2]:40000', proto: 'tcp', primary: 'lb1', state: 'tcp_established', 'min-age': '5' });
  t.deepEqual(listFlows(src, q).filters, q.text);
});

test('flow-listing: matching rows count toward the limit; truncated only when more flows match', (t) => {
  const { src } = source();
  const cases: Array<[FlowFilterText, number, { rows: number; matched: number; truncated: boolean; scannedAll: boolean }]> = [
    [{}, 2, { rows: 2, matched: 3, truncated: true, scannedAll: false }],
    [{}, 6, { rows: 6, matched: 6, truncated: false, scannedAll: true }],
    [{ vip: 'web4' }, 3, { rows: 3, matched: 4, truncated: true, scannedAll: false }],
    [{ vip: 'web4' }, 4, { rows: 4, matched: 4, truncated: false, scannedAll: true }],
    [{ vip: 'web6' }, 2, { rows: 2, matched: 2, truncated: false, scannedAll: true }],
    [{ proto: 'icmp' }, 1, { rows: 1, matched: 2, truncated: true, scannedAll: true }],
    [{ state: 'tcp_closed' }, 1, { rows: 0, matched: 0, truncated: false, scannedAll: true }],
  ];
  for (const [filters, limit, want] of cases) {
    const r = listFlows(src, compileFlowQuery(src, filters, limit));
    const label = `${JSON.stringify(filters)} limit ${limit}`;
    t.is(r.flows.length, want.rows, label);
    t.is(r.matched, want.matched, label);
    t.is(r.truncated, want.truncated, label);
    t.is(r.total, 6, label);
    t.is(r.limit, limit, label);
    if (want.scannedAll) t.is(r.scanned, 6, label);
    else t.true(r.scanned < 6, `${label}: scan stopped early (${r.scanned})`);
    for (const row of r.flows) if (filters.vip) t.is(row.vip, filters.vip, label);
  }
});

const REFUSED: Array<[string, FlowFilterText, RegExp]> = [
  ['unknown VIP', { vip: 'web9' }, /^flows filter vip: no VIP "web9" \(VIPs: web4 10\.99\.0\.10, web6 fd99::10\)$/],
  ['VIP address not configured', { vip: '10.99.0.11' }, /no VIP "10\.99\.0\.11"/],
  ['backend not an address', { backend: 'srv1' }, /^flows filter backend: "srv1" is not an IPv4 or IPv6 address$/],
  ['backend not configured', { backend: '10.99.3.99' }, /^flows filter backend: 10\.99\.3\.99 is not a backend of any VIP \(backends: 10\.99\.3\.21, /],
  ['backend with leading zero', { backend: '10.99.3.021' }, /not an IPv4 or IPv6 address/],
  ['client not an address', { client: 'client1' }, /^flows filter client: "client1" is not ADDRESS/],
  ['client port too large', { client: `${CLIENT}:70000` }, /port 70000 is not in 0\.\.65535/],
  ['client v4 prefix too long', { client: '10.99.1.0/33' }, /prefix \/33 is longer than 32 bits/],
  ['client v6 prefix too long', { client: 'fd99:1::/129' }, /prefix \/129 is longer than 128 bits/],
  ['client v6 with port, no brackets', { client: 'fd99:1::2:40000:1' }, /is not ADDRESS/],
  ['proto unknown', { proto: 'sctp' }, /^flows filter proto: "sctp" is not tcp, udp, icmp, icmpv6 or a protocol number 0\.\.255$/],
  ['proto number too large', { proto: '300' }, /"300" is not tcp/],
  ['primary unknown', { primary: 'lb9' }, /^flows filter primary: no balancer "lb9" \(balancers: lb1, lb2, lb3\)$/],
  ['backup unknown', { backup: 'LB1' }, /^flows filter backup: no balancer "LB1"/],
  ['state unknown', { state: 'listen' }, /^flows filter state: "listen" is not a flow state \(tcp_syn_seen, tcp_established, tcp_closing, tcp_closed, udp, icmp, other\)$/],
  ['state free is not a flow state', { state: 'free' }, /"free" is not a flow state/],
  ['empty item in a list', { vip: 'web4,' }, /^flows filter vip: empty value in "web4,"$/],
  ['min-age negative', { 'min-age': '-1' }, /^flows filter min-age: "-1" is not a number of seconds >= 0$/],
  ['min-age empty', { 'min-age': '' }, /min-age: "" is not a number/],
  ['max-idle not a number', { 'max-idle': '5s' }, /^flows filter max-idle: "5s" is not a number of seconds >= 0$/],
];

for (const [title, filters, message] of REFUSED) {
  test(`flow-listing: refused: ${title}`, (t) => {
    const { src } = source();
    const e = t.throws(() => compileFlowQuery(src, filters));
    t.true(isTunlbError(e, ErrorCodes.USAGE), String(e));
    t.regex(e!.message, message);
    t.false(e!.message.includes('\n'), 'one line');
  });
}

test('flow-listing: limits: whole numbers 1..100000 (CLI); the API falls back to the default', (t) => {
  for (const ok of ['1', '100', '100000']) t.is(parseFlowLimit(ok), Number(ok));
  for (const bad of ['0', '-3', '1.5', 'abc', '', '100001', '1e3']) {
    const e = t.throws(() => parseFlowLimit(bad), undefined, bad);
    t.true(isTunlbError(e, ErrorCodes.USAGE), bad);
    t.regex(e!.message, /^flows limit: ".*" is not a whole number in 1\.\.100000$/);
  }
  const { src } = source();
  t.is(flowQueryFromParams(src, new URLSearchParams('limit=abc')).limit, 1000);
  t.is(flowQueryFromParams(src, new URLSearchParams('limit=999999')).limit, 100000);
  t.is(flowQueryFromParams(src, new URLSearchParams('')).limit, 1000);
});

test('flow-listing: query parameters mirror the flags; repeats are a list; unknown parameters refused', (t) => {
  const { src, keyOf } = source();
  const q = flowQueryFromParams(src, new URLSearchParams('vip=web4&state=established&state=icmp&min-age=1&limit=7'));
  t.is(q.limit, 7);
  t.deepEqual(q.text, { vip: 'web4', state: 'tcp_established,icmp', 'min-age': '1' });
  t.deepEqual(listFlows(src, q).flows.map((r) => keyOf.get(r.key)).sort(), ['A', 'D']);
  const q2 = flowQueryFromParams(src, new URLSearchParams({ client: `[${CLIENT6}]:40000`, 'max-idle': '100', backup: 'lb1' }));
  t.deepEqual(listFlows(src, q2).flows.map((r) => keyOf.get(r.key)), ['E']);
  const e = t.throws(() => flowQueryFromParams(src, new URLSearchParams('vips=web4')));
  t.true(isTunlbError(e, ErrorCodes.USAGE));
  t.is(e!.message, 'flows: unknown parameter "vips" (parameters: limit, vip, backend, client, proto, primary, backup, state, min-age, max-idle)');
});

test('flow-listing: an empty table lists nothing, scans nothing', (t) => {
  const { src } = source('');
  t.deepEqual(listFlows(src, compileFlowQuery(src, { vip: 'web4' }, 10)), { total: 0, scanned: 0, matched: 0, truncated: false, limit: 10, filters: { vip: 'web4' }, flows: [] });
});

test('FlowScan: a listing in steps of one entry equals the listing in one call; a reload during it ends it (interrupted)', (t) => {
  const { src } = source();
  const whole = listFlows(src, 4);
  const scan = new FlowScan(src, 4);
  const rows = [];
  let steps = 0;
  while (!scan.step(1)) {
    rows.push(...scan.takeRows());
    steps++;
  }
  rows.push(...scan.takeRows());
  t.true(steps >= 4);
  t.deepEqual({ ...scan.summary(), flows: rows }, whole);
  t.true(whole.truncated);

  // The forwarding table's config replaced (a reload) between two steps: the listing stops.
  const holder = { forwarding: src.forwarder.forwarding };
  const live: FlowSource = { ...src, forwarder: holder };
  const s2 = new FlowScan(live, 100);
  t.false(s2.step(1));
  holder.forwarding = { config: parseConfig(YAML, 'flows.yaml', { readKeyFile: () => Buffer.alloc(32, 7) }) };
  t.true(s2.step(1));
  t.true(s2.summary().truncated);
  t.regex(s2.summary().interrupted ?? '', /reloaded during the listing/);
});
