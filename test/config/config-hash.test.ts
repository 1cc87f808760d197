/**
 * The config version (src/config/config-hash.ts): the same config gives the same hash whatever
 * the file looks like (key order, YAML or JSON, comments, defaults spelled out, its path), and
 * every change a validated config can show changes it.
 */
import test from 'ava';
import { parseConfig } from '../../src/config';
import { configHash, canonicalConfigText } from '../../src/config/config-hash';
import { KEY_PATH, OPTS, minimal, parseObj } from './helpers';

const YAML = `# the minimal config, in YAML, keys in another order, with comments
vips:
  - backends: [{ address: 10.0.2.21 }]   # one backend
    address: 10.0.1.10
    name: v4
balancers: [{ address: 10.0.0.11, id: lb1 }]
cluster: { key_file: ${KEY_PATH}, id: test }
`;

test('config hash: 12 hex digits, a non-zero safe integer, stable across calls', (t) => {
  const h = configHash(parseObj(minimal()));
  t.regex(h.hex, /^[0-9a-f]{12}$/);
  t.true(Number.isSafeInteger(h.value) && h.value > 0 && h.value < 2 ** 48);
  t.is(h.value.toString(16).padStart(12, '0'), h.hex);
  t.deepEqual(configHash(parseObj(minimal())), h, 'same config parsed twice');
});

test('config hash: formatting, key order, comments, file name and spelled-out defaults do not change it', (t) => {
  const base = configHash(parseObj(minimal())).hex;
  t.is(configHash(parseConfig(YAML, '/etc/tunlb/other-name.yaml', OPTS)).hex, base, 'YAML, other key order, comments, other path');
  const explicit = minimal();
  explicit.vips[0].backends[0].weight = 1; // the default, written out
  t.is(configHash(parseObj(explicit)).hex, base, 'a default written out');
  t.false(canonicalConfigText(parseObj(minimal())).includes('test.json'), 'the source path is not part of it');
});

// [what, mutation of the minimal config]
const CHANGES: Array<[string, (c: any) => void]> = [
  ['a backend weight', (c) => (c.vips[0].backends[0].weight = 2)],
  ['a backend added', (c) => c.vips[0].backends.push({ address: '10.0.2.22' })],
  ['a VIP port set', (c) => (c.vips[0].ports = [80, 443])],
  ['a VIP renamed', (c) => (c.vips[0].name = 'v4b')],
  ['the probe interval', (c) => (c.cluster.probe = { interval_ms: 250 })],
  ['the log level', (c) => (c.log = { level: 'debug' })],
  ['a balancer added', (c) => c.balancers.push({ id: 'lb2', address: '10.0.0.12' })],
  ['the cluster id', (c) => (c.cluster.id = 'test2')],
];

for (const [what, mutate] of CHANGES) {
  test(`config hash changes with ${what}`, (t) => {
    const a = configHash(parseObj(minimal())).hex;
    const c = minimal();
    mutate(c);
    t.not(configHash(parseObj(c)).hex, a);
  });
}

test('config hash changes with the cluster key bytes (same key_file path)', (t) => {
  const other = { ...OPTS, readKeyFile: () => Buffer.alloc(32, 7) };
  t.not(configHash(parseObj(minimal(), other)).hex, configHash(parseObj(minimal())).hex);
});

test('config hash: the key enters as a keyed digest, never as its bytes', (t) => {
  const text = canonicalConfigText(parseObj(minimal()));
  t.false(text.includes('5ec2e75e'), 'no key bytes in hex');
  t.false(text.includes(Buffer.from('5ec2e75ec2e75ec2e75ec2e75ec2e75e', 'hex').toString('base64').slice(0, 16)), 'no key bytes in base64');
  t.regex(text, /"key":"hmac:[0-9a-f]{64}"/);
});
