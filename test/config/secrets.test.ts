/**
 * Secret files and the admin endpoint's exposure, refused at load time with the field and the fix
 * (issue 12 "Admin"): a key or token file that group or others may access (as ssh refuses such a
 * private key), a token file that is missing or unusable, and an admin.listen beyond loopback
 * without a token. Real files in a temporary directory, with real modes (the default readers).
 */
import test from 'ava';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, isTunlbError, type TunlbError } from '../../src/errors';
import { formatConfigErrors, loadConfig, type ConfigIssue } from '../../src/config';

const KEY = Buffer.alloc(32, 0x6b);

function dir(t: import('ava').ExecutionContext): string {
  const d = mkdtempSync(join(tmpdir(), 'tunlb-secrets-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function file(path: string, text: string | Buffer, mode: number): string {
  writeFileSync(path, text, { mode });
  chmodSync(path, mode); // the umask may have taken bits away at creation
  return path;
}

function config(d: string, admin: string): string {
  return file(
    join(d, 'tunlb.yaml'),
    `cluster: { id: t, key_file: cluster.key }\nbalancers: [{ id: lb1, address: 10.0.0.11 }]\nvips: [{ name: v4, address: 10.0.1.10, backends: [{ address: 10.0.2.21 }] }]\n${admin}\n`,
    0o644,
  );
}

function refused(t: import('ava').ExecutionContext, path: string): { err: TunlbError; issues: ConfigIssue[] } {
  try {
    loadConfig(path);
  } catch (e) {
    if (!isTunlbError(e)) throw e;
    return { err: e, issues: (e.details?.['errors'] ?? []) as ConfigIssue[] };
  }
  t.fail('expected the config to be refused');
  throw new Error('not refused');
}

const KEY_MODES: [mode: number, accepted: boolean, says?: RegExp][] = [
  [0o600, true],
  [0o400, true],
  [0o640, false, /mode 0640: readable by group\b/],
  [0o604, false, /mode 0604: readable by others/],
  [0o644, false, /mode 0644: readable by group and others/],
  [0o620, false, /mode 0620: accessible by group/],
  [0o602, false, /mode 0602: accessible by others/],
];
for (const [mode, accepted, says] of KEY_MODES) {
  test(`cluster.key_file with mode 0${mode.toString(8)} is ${accepted ? 'accepted' : 'refused: chmod 600'}`, (t) => {
    const d = dir(t);
    file(join(d, 'cluster.key'), KEY, mode);
    const path = config(d, '');
    if (accepted) {
      t.true(loadConfig(path).cluster.key.reveal().equals(KEY));
      return;
    }
    const { err, issues } = refused(t, path);
    t.is(err.code, ErrorCodes.CONFIG_KEY_MISSING);
    t.deepEqual(issues.map((i) => i.path), ['cluster.key_file']);
    t.regex(issues[0]!.message, says!);
    t.is(issues[0]!.fix.split(' (')[0], `chmod 600 ${join(d, 'cluster.key')}`);
    t.regex(formatConfigErrors(err), /cluster\.key_file: key file .* \(fix: chmod 600 /);
  });
}

test('a symlink to a world-readable key file is judged by its target', (t) => {
  const d = dir(t);
  file(join(d, 'real.key'), KEY, 0o644);
  symlinkSync(join(d, 'real.key'), join(d, 'cluster.key'));
  const { issues } = refused(t, config(d, ''));
  t.regex(issues[0]!.message, /mode 0644/);
});

const TOKEN_CASES: [title: string, token: string | null, mode: number, says: RegExp, fix: RegExp][] = [
  ['readable by group and others', 'secret-token', 0o644, /token file .* has mode 0644: readable by group and others/, /^chmod 600 /],
  ['readable by group', 'secret-token', 0o640, /mode 0640: readable by group/, /^chmod 600 /],
  ['missing', null, 0o600, /token file .* does not exist/, /umask 077; head -c 32 \/dev\/urandom/],
  ['empty', '\n', 0o600, /token file .* is empty/, /put the bearer token in it/],
  ['two words', 'one two\n', 0o600, /whitespace inside the token/, /one token on one line/],
];
for (const [title, token, mode, says, fix] of TOKEN_CASES) {
  test(`admin.token_file ${title}: refused, the field and the fix named`, (t) => {
    const d = dir(t);
    file(join(d, 'cluster.key'), KEY, 0o600);
    if (token !== null) file(join(d, 'admin.token'), token, mode);
    const { err, issues } = refused(t, config(d, 'admin: { token_file: admin.token }'));
    t.is(err.code, ErrorCodes.CONFIG_INVALID);
    t.deepEqual(issues.map((i) => i.path), ['admin.token_file']);
    t.regex(issues[0]!.message, says);
    t.regex(issues[0]!.fix, fix);
    t.false(formatConfigErrors(err).includes('secret-token'), 'the token is never echoed');
  });
}

const LISTEN_CASES: [listen: string, token: boolean, ok: boolean][] = [
  ['127.0.0.1:9180', false, true],
  ['127.0.0.53:9180', false, true],
  ['"[::1]:9180"', false, true],
  ['0.0.0.0:9180', false, false],
  ['"[::]:9180"', false, false],
  ['10.99.2.11:9180', false, false],
  ['"[fd99:2::11]:9180"', false, false],
  ['0.0.0.0:9180', true, true],
  ['10.99.2.11:9180', true, true],
];
for (const [listen, token, ok] of LISTEN_CASES) {
  test(`admin.listen ${listen} ${token ? 'with' : 'without'} a token: ${ok ? 'accepted' : 'refused'}`, (t) => {
    const d = dir(t);
    file(join(d, 'cluster.key'), KEY, 0o600);
    if (token) file(join(d, 'admin.token'), 'tok\n', 0o600);
    const path = config(d, `admin: { listen: ${listen}${token ? ', token_file: admin.token' : ''} }`);
    if (ok) {
      t.notThrows(() => loadConfig(path));
      return;
    }
    const { err, issues } = refused(t, path);
    t.is(err.code, ErrorCodes.CONFIG_INVALID);
    t.deepEqual(issues.map((i) => i.path), ['admin.listen']);
    t.regex(issues[0]!.message, /not a loopback address and admin\.token_file is not set/);
    t.regex(issues[0]!.fix, /set admin\.token_file .* or listen on 127\.0\.0\.1 or \[::1\]/);
  });
}

test('admin.allowed_hosts: host names, lower-cased; an IP literal or a port is refused', (t) => {
  const d = dir(t);
  file(join(d, 'cluster.key'), KEY, 0o600);
  t.deepEqual(loadConfig(config(d, 'admin: { allowed_hosts: [LB1-Admin.Example.NET., lb1] }')).admin.allowedHosts, ['lb1-admin.example.net', 'lb1']);
  for (const bad of ['10.0.0.1', 'lb1:9180', 'a b', '']) {
    const { issues } = refused(t, config(d, `admin: { allowed_hosts: ["${bad}"] }`));
    t.deepEqual(issues.map((i) => i.path), ['admin.allowed_hosts[0]'], bad);
  }
});
