/** Shared fixtures for test/config: a minimal valid config and a fake key reader. */
import { parseConfig, type Config, type ParseOptions } from '../../src/config';

/** A recognisable 32-byte key: tests look for it (hex, base64, latin1) in every output. */
export const KEY = Buffer.from('5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2', 'hex');
export const KEY_HEX = KEY.toString('hex');

export const KEY_PATH = '/keys/cluster.key';

/** Fake key files: KEY_PATH holds KEY; /keys/short.key holds 16 bytes; anything else is ENOENT. */
export function readKeyFile(path: string): Buffer {
  if (path === KEY_PATH) return Buffer.from(KEY);
  if (path === '/keys/short.key') return Buffer.alloc(16, 1);
  if (path === '/keys/hex.key') return Buffer.from(`${KEY_HEX}\n`);
  const e = new Error(`ENOENT: ${path}`) as NodeJS.ErrnoException;
  e.code = 'ENOENT';
  throw e;
}

export const OPTS: ParseOptions = { readKeyFile, env: {}, baseDir: '/etc/tunlb' };

/** Smallest valid config (every optional field left out). */
export function minimal(): any {
  return {
    cluster: { id: 'test', key_file: KEY_PATH },
    balancers: [{ id: 'lb1', address: '10.0.0.11' }],
    vips: [{ name: 'v4', address: '10.0.1.10', backends: [{ address: '10.0.2.21' }] }],
  };
}

export function parseObj(obj: unknown, opts: ParseOptions = OPTS): Config {
  return parseConfig(JSON.stringify(obj, null, 2), 'test.json', opts);
}
