import test from 'ava';
import { inspect } from 'node:util';
import * as path from 'node:path';
import { ErrorCodes, isTunlbError, TunlbError } from '../../src/errors';
import { formatConfigErrors, loadConfig, parseConfig, selectSelf, type ConfigIssue } from '../../src/config';
import { KEY, KEY_HEX, minimal, OPTS, parseObj, readKeyFile } from './helpers';

function issuesOf(fn: () => unknown): { err: TunlbError; issues: ConfigIssue[] } {
  try {
    fn();
  } catch (e) {
    if (!isTunlbError(e)) throw e;
    return { err: e, issues: (e.details?.['errors'] ?? []) as ConfigIssue[] };
  }
  throw new Error('expected the config to be refused');
}

// ---------------------------------------------------------------------------------------
// The examples

test('config/lab.yaml loads and matches the lab addressing of docs/contracts.md', (t) => {
  const c = loadConfig('config/lab.yaml', { readKeyFile: (p) => (p === '/run/tunlb-lab/cluster.key' ? Buffer.from(KEY) : readKeyFile(p)) });
  t.is(c.cluster.id, 'lab');
  t.deepEqual(c.cluster.keySource, { kind: 'file', path: '/run/tunlb-lab/cluster.key' });
  t.deepEqual(c.balancers.map((b) => [b.index, b.id, b.address.text]), [[0, 'lb1', '10.99.2.11'], [1, 'lb2', '10.99.2.12'], [2, 'lb3', '10.99.2.13']]);
  t.is(c.cluster.replication.group.text, '239.99.0.1');
  t.is(c.cluster.replication.controlPort, 7946);
  t.is(c.cluster.replication.dataPort, 7947);
  const [web4, web6] = c.vips;
  t.is(web4!.name, 'web4');
  t.is(web4!.address.text, '10.99.0.10');
  t.true(web4!.ports.all);
  t.is(web4!.method, 'nat');
  t.deepEqual(web4!.backends.map((b) => [b.address.text, b.weight, b.health?.type, b.health?.port]), [
    ['10.99.3.21', 1, 'tcp', 80], ['10.99.3.22', 1, 'tcp', 80], ['10.99.3.23', 1, 'tcp', 80],
  ]);
  t.is(web6!.name, 'web6');
  t.is(web6!.address.text, 'fd99::10');
  t.deepEqual(web6!.backends.map((b) => b.address.text), ['fd99:3::21', 'fd99:3::22', 'fd99:3::23']);
  t.deepEqual([...web6!.protocols], ['tcp', 'udp', 'icmp']);
  t.is(web6!.protocolAllowed[58], 1, 'icmp on an IPv6 VIP means ICMPv6');
  t.is(web6!.protocolAllowed[1], 0);
  t.is(web4!.protocolAllowed[1], 1);
  t.deepEqual(c.warnings, []);
});

test('config/example.yaml loads; every field written there is accepted', (t) => {
  const c = loadConfig('config/example.yaml', { readKeyFile: () => Buffer.from(KEY) });
  t.is(c.vips.length, 2);
  t.is(c.vips[0]!.ports.toString(), '80,443,8000-8080');
  t.is(c.vips[0]!.backends[0]!.health?.path, '/healthz');
  t.is(c.vips[1]!.backends[0]!.health?.port, null);
});

test('loadConfig: missing file is CONFIG_NOT_FOUND', (t) => {
  const e = t.throws(() => loadConfig('/nonexistent/tunlb.yaml'));
  t.true(isTunlbError(e, ErrorCodes.CONFIG_NOT_FOUND));
  t.regex(e!.message, /\/nonexistent\/tunlb\.yaml/);
});

// ---------------------------------------------------------------------------------------
// Defaults

test('every default is applied', (t) => {
  const c = parseObj(minimal());
  t.deepEqual(JSON.parse(JSON.stringify(c)), {
    source: 'test.json',
    cluster: {
      id: 'test',
      wireId: c.cluster.wireId,
      key: '<redacted>',
      keySource: { kind: 'file', path: '/keys/cluster.key' },
      replication: { mode: 'multicast', group: '239.99.0.1', controlPort: 7946, dataPort: 7947, probePort: 7948, ttl: 1, flushMs: 1, refreshS: 30 },
      probe: { intervalMs: 100, misses: 3 },
      stateDir: '/var/lib/tunlb',
    },
    balancers: [{ index: 0, id: 'lb1', address: '10.0.0.11', controlPort: 7946, dataPort: 7947, probePort: 7948 }],
    tun: { name: 'tunlb0', mtu: 1500, queues: 1, offload: true, batch: 64 },
    vips: [
      {
        index: 0, name: 'v4', address: '10.0.1.10', protocols: ['tcp', 'udp', 'icmp'], ports: '*', method: 'nat', drainTimeoutS: 300, affinity: null,
        backends: [{ index: 0, address: '10.0.2.21', port: null, weight: 1, health: null }],
      },
    ],
    flowTable: {
      capacity: 1048576, requestedCapacity: 1048576,
      timeouts: { tcpEstablishedS: 300, tcpSynS: 30, tcpClosingS: 10, tcpResetS: 5, udpS: 30, icmpS: 10 },
    },
    admin: { listen: { host: '127.0.0.1', port: 9180, address: '127.0.0.1' }, tokenFile: null, allowedHosts: [] },
    announce: { table: null, readyFile: null, watchdogMs: 300, leaveTimeoutMs: 2000 },
    log: { level: 'info' },
    warnings: [],
  });
  t.is(c.cluster.wireId.hex.length, 16);
  t.is(c.cluster.key.length, 32);
  t.true(c.cluster.key.reveal().equals(KEY));
});

test('health check defaults (tcp, http, icmp) and port resolution', (t) => {
  const o = minimal();
  o.vips[0].ports = [8080, '9000-9010'];
  o.vips[0].backends = [
    { address: '10.0.2.21', health: { type: 'tcp' } },
    { address: '10.0.2.22', port: 81, health: { type: 'http' } },
    { address: '10.0.2.23', health: { type: 'icmp' } },
  ];
  const [a, b, c] = parseObj(o).vips[0]!.backends;
  t.deepEqual(a!.health, { type: 'tcp', port: 8080, path: null, expectStatus: null, intervalMs: 1000, timeoutMs: 500, rise: 2, fall: 3 });
  t.deepEqual(b!.health, { type: 'http', port: 81, path: '/', expectStatus: 200, intervalMs: 1000, timeoutMs: 500, rise: 2, fall: 3 });
  t.deepEqual(c!.health, { type: 'icmp', port: null, path: null, expectStatus: null, intervalMs: 1000, timeoutMs: 500, rise: 2, fall: 3 });
});

test('per-balancer port overrides; capacity rounded up with a warning', (t) => {
  const o = minimal();
  o.balancers.push({ id: 'lb2', address: '10.0.0.12', control_port: 8946, data_port: 8947, probe_port: 8948 });
  o.flow_table = { capacity: 1000 };
  o.cluster.state_dir = 'state';
  const c = parseObj(o);
  t.deepEqual(c.balancers.map((b) => [b.controlPort, b.dataPort, b.probePort]), [[7946, 7947, 7948], [8946, 8947, 8948]]);
  t.is(c.cluster.stateDir, path.resolve(OPTS.baseDir!, 'state'), 'a relative state_dir resolves against the config directory');
  t.is(c.flowTable.capacity, 1024);
  t.is(c.flowTable.requestedCapacity, 1000);
  t.true(c.warnings.some((w) => w.includes('rounded up to 1024')));
});

test('cluster.replication.sync_threshold (replaced by confirmation) still loads, with a warning that names it', (t) => {
  const o = minimal();
  o.cluster.replication = { sync_threshold: 3 };
  const c = parseObj(o);
  t.true(c.warnings.some((w) => w.startsWith('cluster.replication.sync_threshold is ignored') && w.includes('remove it')), c.warnings.join('; '));
  t.false('syncThreshold' in c.cluster.replication);
});

test('key_env (hex) and hex key files are accepted; relative key_file resolves against baseDir', (t) => {
  const o = minimal();
  delete o.cluster.key_file;
  o.cluster.key_env = 'TUNLB_KEY';
  const c = parseObj(o, { ...OPTS, env: { TUNLB_KEY: KEY_HEX } });
  t.true(c.cluster.key.reveal().equals(KEY));
  t.deepEqual(c.cluster.keySource, { kind: 'env', name: 'TUNLB_KEY' });

  const o2 = minimal();
  o2.cluster.key_file = '/keys/hex.key';
  t.true(parseObj(o2).cluster.key.reveal().equals(KEY));

  const o3 = minimal();
  o3.cluster.key_file = 'cluster.key';
  const seen: string[] = [];
  parseObj(o3, { ...OPTS, baseDir: '/keys', readKeyFile: (p) => (seen.push(p), readKeyFile('/keys/cluster.key')) });
  t.deepEqual(seen, ['/keys/cluster.key']);
});

test('YAML and JSON are both accepted; YAML by extension or content', (t) => {
  const yaml = 'cluster: { id: y, key_file: /keys/cluster.key, replication: { group: "ff15::99:1" } }\nbalancers: [{ id: a, address: "fd00::1" }]\n';
  t.is(parseConfig(yaml, 'x.yaml', OPTS).balancers[0]!.address.text, 'fd00::1');
  t.is(parseConfig(yaml, 'x.conf', OPTS).cluster.id, 'y');
  t.is(parseConfig(JSON.stringify(minimal()), 'x.conf', OPTS).cluster.id, 'test');
});

test('affinity: none (default), source (the whole address), source/<prefix> by family', (t) => {
  const o = minimal();
  o.vips = [
    { name: 'a', address: '10.0.1.10', backends: [{ address: '10.0.2.21' }] },
    { name: 'b', address: '10.0.1.11', affinity: 'source', backends: [{ address: '10.0.2.21' }] },
    { name: 'c', address: '10.0.1.12', affinity: 'source/24', backends: [{ address: '10.0.2.21' }] },
    { name: 'd', address: 'fd00::10', affinity: 'source', backends: [{ address: 'fd00::21' }] },
    { name: 'e', address: 'fd00::11', affinity: 'source/64', backends: [{ address: 'fd00::21' }] },
    { name: 'f', address: 'fd00::12', affinity: 'source/128', backends: [{ address: 'fd00::21' }] },
  ];
  t.deepEqual(parseObj(o).vips.map((v) => v.affinity), [
    null,
    { by: 'source', prefixLen: 32 },
    { by: 'source', prefixLen: 24 },
    { by: 'source', prefixLen: 128 },
    { by: 'source', prefixLen: 64 },
    { by: 'source', prefixLen: 128 },
  ]);
  // /33..128 fits IPv6 only
  o.vips = [{ name: 'g', address: 'fd00::10', affinity: 'source/120', backends: [{ address: 'fd00::21' }] }];
  t.is(parseObj(o).vips[0]!.affinity!.prefixLen, 120);
  o.vips = [{ name: 'g', address: 'fd00::10', affinity: 'source/129', backends: [{ address: 'fd00::21' }] }];
  const { issues } = issuesOf(() => parseObj(o));
  t.deepEqual(issues.map((i) => i.path), ['vips[0].affinity']);
  t.regex(issues[0]!.message, /prefix \/129 does not fit an IPv6 VIP \(fd00::10\): the client address has 128 bits/);
  t.regex(issues[0]!.fix, /source\/1 \.\. source\/128 \(e\.g\. source\/64\)/);
});

test('same VIP address twice is allowed when protocols/ports do not overlap', (t) => {
  const o = minimal();
  o.vips = [
    { name: 'web', address: '10.0.1.10', protocols: ['tcp'], ports: [80, 443], backends: [{ address: '10.0.2.21' }] },
    { name: 'dns', address: '10.0.1.10', protocols: ['udp', 'tcp'], ports: [53], backends: [{ address: '10.0.2.22' }] },
  ];
  t.is(parseObj(o).vips.length, 2);
});

// ---------------------------------------------------------------------------------------
// Invalid configs: each refused with exactly these field paths.

type Case = [title: string, mutate: (o: any) => void, paths: string[], fixHint?: RegExp];
const invalid: Case[] = [
  ['wrong type: weight is a string', (o) => (o.vips[0].backends[0].weight = 'heavy'), ['vips[0].backends[0].weight']],
  ['wrong type: tun.offload is a string', (o) => (o.tun = { offload: 'yes' }), ['tun.offload']],
  ['wrong type: balancers is a mapping', (o) => (o.balancers = { lb1: '10.0.0.11' }), ['balancers']],
  ['missing field: cluster.id', (o) => delete o.cluster.id, ['cluster.id'], /add id:/],
  ['missing field: cluster', (o) => delete o.cluster, ['cluster']],
  ['missing field: backend address', (o) => delete o.vips[0].backends[0].address, ['vips[0].backends[0].address']],
  ['missing field: backends', (o) => delete o.vips[0].backends, ['vips[0].backends']],
  ['unknown field with a typo hint', (o) => (o.cluster.replication = { contol_port: 1 }), ['cluster.replication.contol_port'], /did you mean "control_port"/],
  ['unknown field in camelCase', (o) => (o.tun = { mtu: 1500, Queues: 2 }), ['tun.Queues'], /did you mean "queues"/],
  ['unknown field: flowTable', (o) => (o.flowTable = {}), ['flowTable'], /did you mean "flow_table"/],
  ['unknown field far from any', (o) => (o.vips[0].backends[0].zzzzzz = 1), ['vips[0].backends[0].zzzzzz'], /remove it/],
  ['bad address', (o) => (o.balancers[0].address = '10.0.0.256'), ['balancers[0].address']],
  ['host name instead of address', (o) => (o.vips[0].address = 'www.example.com'), ['vips[0].address']],
  ['IPv4-mapped IPv6 text', (o) => (o.vips[0].backends[0].address = '::ffff:10.0.2.21'), ['vips[0].backends[0].address'], /write the IPv4 address 10\.0\.2\.21/],
  ['family mismatch backend/VIP', (o) => o.vips[0].backends.push({ address: 'fd00::21' }), ['vips[0].backends[1].address'], /IPv4 backend address/],
  ['family mismatch among balancers', (o) => o.balancers.push({ id: 'lb2', address: 'fd00::12' }), ['balancers[1].address']],
  ['multicast group of the wrong family', (o) => (o.balancers[0].address = 'fd00::11'), ['cluster.replication.group'], /ff15::/],
  ['group not multicast', (o) => (o.cluster.replication = { group: '10.1.1.1' }), ['cluster.replication.group']],
  ['duplicate balancer ids', (o) => o.balancers.push({ id: 'lb1', address: '10.0.0.12' }), ['balancers[1].id']],
  ['duplicate balancer addresses', (o) => o.balancers.push({ id: 'lb2', address: '10.0.0.11' }), ['balancers[1].address']],
  ['bad balancer id', (o) => (o.balancers[0].id = 'LB_1'), ['balancers[0].id']],
  ['too many balancers', (o) => (o.balancers = Array.from({ length: 33 }, (_, i) => ({ id: `lb${i}`, address: `10.0.0.${i + 1}` }))), ['balancers']],
  ['duplicate VIP names', (o) => o.vips.push({ ...o.vips[0], address: '10.0.1.11' }), ['vips[1].name']],
  ['overlapping VIPs on one address', (o) => o.vips.push({ ...o.vips[0], name: 'v4b', backends: [{ address: '10.0.2.22' }] }), ['vips[1].address']],
  ['duplicate backend in a VIP', (o) => o.vips[0].backends.push({ address: '10.0.2.21', weight: 3 }), ['vips[0].backends[1].address']],
  ['VIP equals a balancer address', (o) => (o.vips[0].address = '10.0.0.11'), ['vips[0].address']],
  ['VIP equals a backend address', (o) => (o.vips[0].address = '10.0.2.21'), ['vips[0].address']],
  ['backend equals a balancer address', (o) => (o.vips[0].backends[0].address = '10.0.0.11'), ['vips[0].backends[0].address']],
  ['both key_file and key_env', (o) => (o.cluster.key_env = 'K'), ['cluster'], /exactly one/],
  ['neither key_file nor key_env', (o) => delete o.cluster.key_file, ['cluster']],
  ['port out of range', (o) => (o.vips[0].backends[0].port = 70000), ['vips[0].backends[0].port']],
  ['port zero', (o) => (o.cluster.replication = { control_port: 0 }), ['cluster.replication.control_port']],
  ['non-integer weight', (o) => (o.vips[0].backends[0].weight = 1.5), ['vips[0].backends[0].weight']],
  ['weight out of range', (o) => (o.vips[0].backends[0].weight = 65536), ['vips[0].backends[0].weight']],
  ['bad range "90-80"', (o) => (o.vips[0].ports = [80, '90-80']), ['vips[0].ports[1]'], /"80-90"/],
  ['port list item out of range', (o) => (o.vips[0].ports = [80, 0, '1-70000']), ['vips[0].ports[1]', 'vips[0].ports[2]']],
  ['ports as a bare number', (o) => (o.vips[0].ports = 80), ['vips[0].ports'], /\[80\]/],
  ['empty port list', (o) => (o.vips[0].ports = []), ['vips[0].ports']],
  ['bad protocol', (o) => (o.vips[0].protocols = ['tcp', 'sctp']), ['vips[0].protocols[1]']],
  ['duplicate protocol', (o) => (o.vips[0].protocols = ['tcp', 'tcp']), ['vips[0].protocols[1]']],
  ['bad method', (o) => (o.vips[0].method = 'nta'), ['vips[0].method'], /did you mean "nat"/],
  ['affinity: not a known kind', (o) => (o.vips[0].affinity = 'sticky'), ['vips[0].affinity'], /source\/<prefix length>/],
  ['affinity: none with a prefix', (o) => (o.vips[0].affinity = 'none/24'), ['vips[0].affinity'], /write none, source/],
  ['affinity: IPv4 prefix over 32 bits', (o) => (o.vips[0].affinity = 'source/40'), ['vips[0].affinity'], /source\/1 \.\. source\/32/],
  ['affinity: prefix 0', (o) => (o.vips[0].affinity = 'source/0'), ['vips[0].affinity'], /source\/1 \.\. source\/32/],
  ['dsr with port rewrite', (o) => Object.assign(o.vips[0], { method: 'dsr', backends: [{ address: '10.0.2.21', port: 8080 }] }), ['vips[0].backends[0].port']],
  ['tun name too long', (o) => (o.tun = { name: 'a-very-long-tun-name' }), ['tun.name']],
  ['mtu too small', (o) => (o.tun = { mtu: 500 }), ['tun.mtu']],
  ['mtu below 1280 with IPv6', (o) => { o.tun = { mtu: 1000 }; o.vips.push({ name: 'v6', address: 'fd00::10', backends: [{ address: 'fd00:2::21' }] }); }, ['tun.mtu']],
  ['health: icmp with a port', (o) => (o.vips[0].backends[0].health = { type: 'icmp', port: 80 }), ['vips[0].backends[0].health.port']],
  ['health: tcp with path', (o) => (o.vips[0].backends[0].health = { type: 'tcp', port: 80, path: '/x' }), ['vips[0].backends[0].health.path']],
  ['health: tcp with no port to use', (o) => (o.vips[0].backends[0].health = { type: 'tcp' }), ['vips[0].backends[0].health.port']],
  ['health: timeout above interval', (o) => (o.vips[0].backends[0].health = { type: 'icmp', interval_ms: 100, timeout_ms: 200 }), ['vips[0].backends[0].health.timeout_ms']],
  ['health: missing type', (o) => (o.vips[0].backends[0].health = { port: 80 }), ['vips[0].backends[0].health.type']],
  ['capacity too large', (o) => (o.flow_table = { capacity: 2 ** 30 }), ['flow_table.capacity']],
  ['refresh not below tcp_established_s', (o) => { o.flow_table = { timeouts: { tcp_established_s: 20 } }; }, ['cluster.replication.refresh_s']],
  ['control port equals data port', (o) => (o.cluster.replication = { control_port: 7000, data_port: 7000 }), ['balancers[0].data_port', 'cluster.replication.data_port']],
  ['probe port equals control port', (o) => (o.cluster.replication = { probe_port: 7946 }), ['balancers[0].probe_port', 'cluster.replication.probe_port']],
  ['per-balancer probe port equals its data port', (o) => (o.balancers[0].probe_port = 7947), ['balancers[0].probe_port']],
  ['admin listen without port', (o) => (o.admin = { listen: '127.0.0.1' }), ['admin.listen']],
  ['bad log level', (o) => (o.log = { level: 'verbose' }), ['log.level']],
  ['several errors at once: every one listed', (o) => {
    o.vips[0].backends[0].weight = -1;
    o.balancers[0].address = 'nope';
    o.tun = { mtu: 'big', nmae: 'x' };
    o.vips[0].ports = ['90-80'];
    o.balancers.push({ id: 'lb1', address: '10.0.0.12' });
  }, ['balancers[0].address', 'balancers[1].id', 'tun.mtu', 'tun.nmae', 'vips[0].backends[0].weight', 'vips[0].ports[0]']],
];

for (const [title, mutate, paths, fixHint] of invalid) {
  test(`invalid: ${title}`, (t) => {
    const o = minimal();
    mutate(o);
    const { err, issues } = issuesOf(() => parseObj(o));
    t.is(err.code, ErrorCodes.CONFIG_INVALID, err.message);
    t.deepEqual(issues.map((i) => i.path).sort(), [...paths].sort(), formatConfigErrors(err));
    for (const i of issues) {
      t.true(i.message.length > 0 && i.fix.length > 0, 'each issue says what is wrong and how to fix it');
    }
    if (fixHint) t.regex(issues.map((i) => `${i.message} (fix: ${i.fix})`).join('\n'), fixHint);
    t.is(formatConfigErrors(err).split('\n').length, issues.length, 'one line per error');
    t.false(err.message.includes('\n'), 'the error message is one line');
  });
}

// Key problems: CONFIG_KEY_MISSING when they are the only problem.
const keyCases: [title: string, mutate: (o: any) => void, path: string, fix: RegExp][] = [
  ['key file missing', (o) => (o.cluster.key_file = '/keys/none.key'), 'cluster.key_file', /head -c 32 \/dev\/urandom > \/keys\/none\.key/],
  ['short key file', (o) => (o.cluster.key_file = '/keys/short.key'), 'cluster.key_file', /head -c 32/],
  ['key env unset', (o) => { delete o.cluster.key_file; o.cluster.key_env = 'NOPE'; }, 'cluster.key_env', /export NOPE=/],
];
for (const [title, mutate, path, fix] of keyCases) {
  test(`key: ${title} → CONFIG_KEY_MISSING`, (t) => {
    const o = minimal();
    mutate(o);
    const { err, issues } = issuesOf(() => parseObj(o));
    t.is(err.code, ErrorCodes.CONFIG_KEY_MISSING);
    t.deepEqual(issues.map((i) => i.path), [path]);
    t.regex(issues[0]!.fix, fix);
    t.regex(err.message, fix);
  });
}

test('key: short key in env (hex) is refused without echoing the value', (t) => {
  const o = minimal();
  delete o.cluster.key_file;
  o.cluster.key_env = 'K';
  const { err, issues } = issuesOf(() => parseObj(o, { ...OPTS, env: { K: KEY_HEX.slice(0, 40) } }));
  t.is(err.code, ErrorCodes.CONFIG_KEY_MISSING);
  t.deepEqual(issues.map((i) => i.path), ['cluster.key_env']);
  t.false(formatConfigErrors(err).includes(KEY_HEX.slice(0, 40)));
  const bad = issuesOf(() => parseObj(o, { ...OPTS, env: { K: `${KEY_HEX}zz` } }));
  t.false(formatConfigErrors(bad.err).includes(KEY_HEX));
  t.false(JSON.stringify(bad.err.details).includes(KEY_HEX));
});

test('key problems are listed with the other errors under CONFIG_INVALID', (t) => {
  const o = minimal();
  o.cluster.key_file = '/keys/short.key';
  o.tun = { mtu: 1 };
  const { err, issues } = issuesOf(() => parseObj(o));
  t.is(err.code, ErrorCodes.CONFIG_INVALID);
  t.deepEqual(issues.map((i) => i.path).sort(), ['cluster.key_file', 'tun.mtu']);
});

// ---------------------------------------------------------------------------------------
// Positions, syntax errors, selectSelf

test('YAML errors carry line and column; formatConfigErrors prints file:line:col', (t) => {
  const yaml = [
    'cluster:',
    '  id: t',
    '  key_file: /keys/cluster.key',
    'balancers:',
    '  - id: lb1',
    '    address: 10.0.0.300',
    'tun:',
    '  mtu: 9',
  ].join('\n');
  const { err, issues } = issuesOf(() => parseConfig(yaml, 'my.yaml', OPTS));
  t.deepEqual(issues.map((i) => [i.path, i.line]), [['balancers[0].address', 6], ['tun.mtu', 8]]);
  t.regex(formatConfigErrors(err), /^my\.yaml:6:14: balancers\[0\]\.address: /m);
});

test('YAML syntax error and duplicate keys are CONFIG_INVALID with a position', (t) => {
  for (const text of ['cluster: [unclosed\n', 'log: {}\nlog: {}\n']) {
    const { err, issues } = issuesOf(() => parseConfig(text, 'bad.yaml', OPTS));
    t.is(err.code, ErrorCodes.CONFIG_INVALID);
    t.true(issues.length >= 1);
    t.is(typeof issues[0]!.line, 'number');
  }
  const j = issuesOf(() => parseConfig('{"cluster": ', 'bad.json', OPTS));
  t.is(j.err.code, ErrorCodes.CONFIG_INVALID);
  const empty = issuesOf(() => parseConfig('', 'empty.yaml', OPTS));
  t.regex(empty.issues[0]!.message, /empty document/);
});

test('selectSelf finds the balancer or names the known ids', (t) => {
  const o = minimal();
  o.balancers.push({ id: 'lb2', address: '10.0.0.12' });
  const c = parseObj(o);
  const s = selectSelf(c, 'lb2');
  t.is(s.index, 1);
  t.is(s.balancer.address.text, '10.0.0.12');
  const e = t.throws(() => selectSelf(c, 'lb9'));
  t.true(isTunlbError(e, ErrorCodes.CONFIG_INVALID));
  t.regex(e!.message, /lb9.*known: lb1, lb2/);
});

// ---------------------------------------------------------------------------------------
// The key never shows

function leaks(s: string): boolean {
  return s.includes(KEY_HEX) || s.includes(KEY.toString('base64')) || s.includes(KEY.toString('latin1')) || /5ec2e7/i.test(s) || s.includes('94, 194, 231');
}

test('the key never appears in JSON.stringify, util.inspect or String() of the config', (t) => {
  const c = parseObj(minimal());
  t.false(leaks(JSON.stringify(c)));
  t.false(leaks(inspect(c, { depth: Infinity, showHidden: true, getters: true })));
  t.false(leaks(inspect(c.cluster.key, { showHidden: true })));
  t.false(leaks(String(c.cluster.key)));
  t.false(leaks(`${c.cluster.key}`));
  t.false(leaks(JSON.stringify({ ...c.cluster })));
  t.deepEqual(Object.keys(c.cluster.key), []);
  t.false(leaks(JSON.stringify(structuredClone({ k: c.cluster.key }))));
  t.is(JSON.stringify(c.cluster.key), '"<redacted>"');
});

test('the key never appears in error messages or details', (t) => {
  const o = minimal();
  o.tun = { mtu: 'x' };
  const { err } = issuesOf(() => parseObj(o));
  t.false(leaks(err.message));
  t.false(leaks(formatConfigErrors(err)));
  t.false(leaks(JSON.stringify(err.details)));
  t.false(leaks(inspect(err, { depth: Infinity })));
});

test('an optional section left empty in YAML (null) takes its defaults', (t) => {
  const yaml = 'cluster:\n  id: t\n  key_file: /keys/cluster.key\n  replication:\n  probe:\nbalancers: [{ id: a, address: 10.0.0.1 }]\ntun:\nadmin:\n  # token_file: x\nlog:\nflow_table:\n  timeouts:\n';
  const c = parseConfig(yaml, 'x.yaml', OPTS);
  t.is(c.tun.name, 'tunlb0');
  t.is(c.admin.listen.port, 9180);
  t.is(c.cluster.replication.controlPort, 7946);
  t.is(c.flowTable.timeouts.udpS, 30);
  const { issues } = issuesOf(() => parseConfig('cluster:\nbalancers: [{ id: a, address: 10.0.0.1 }]\n', 'x.yaml', OPTS));
  t.deepEqual(issues.map((i) => i.path), ['cluster']);
});
