/**
 * The cluster key: loaded once, held in a wrapper that never prints it.
 *
 * `SecretKey` keeps the bytes in an ES private field (invisible to Object.keys, JSON.stringify,
 * structuredClone, spread and util.inspect) and redacts itself in toJSON, toString and
 * util.inspect. Code that needs the bytes (HMAC, the rendezvous hash key derivation in
 * src/cluster/) calls `reveal()`; never log or serialise what it returns.
 */
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';

/** Minimum key length in bytes (HMAC-SHA256 key of full strength, RFC 2104 §3). */
export const MIN_KEY_BYTES = 32;

export class SecretKey {
  readonly #bytes: Buffer;

  constructor(bytes: Buffer) {
    // Private copy: the caller's buffer may be reused or zeroed.
    this.#bytes = Buffer.from(bytes);
  }

  /** Key length in bytes (not secret). */
  get length(): number {
    return this.#bytes.length;
  }

  /** The key bytes. The Buffer is this object's own: do not mutate, log or serialise it. */
  reveal(): Buffer {
    return this.#bytes;
  }

  toJSON(): string {
    return '<redacted>';
  }

  toString(): string {
    return '<redacted>';
  }

  [inspect.custom](): string {
    return `SecretKey(<redacted>, ${this.#bytes.length} bytes)`;
  }
}

/** Where a key comes from, for messages (never the key itself). */
export type KeySource = { readonly kind: 'file'; readonly path: string } | { readonly kind: 'env'; readonly name: string };

export type KeyResult = { ok: true; key: SecretKey } | { ok: false; message: string; fix: string };

const HEX_RE = /^[0-9a-fA-F]+$/;
const GEN_FILE = (p: string) => `generate one: (umask 077; head -c 32 /dev/urandom > ${p})`;
const GEN_ENV = (n: string) => `export ${n}=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')`;

/**
 * Decode key file contents: if the file holds only hex digits (surrounding whitespace allowed)
 * and an even number of them, it is hex; otherwise the raw bytes are the key.
 */
export function decodeKeyFile(contents: Buffer): Buffer {
  const text = contents.toString('latin1').trim();
  if (text.length > 0 && text.length % 2 === 0 && HEX_RE.test(text)) return Buffer.from(text, 'hex');
  return contents;
}

export function loadKeyFile(path: string, readFile: (p: string) => Buffer = readFileSync): KeyResult {
  let contents: Buffer;
  try {
    contents = readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { ok: false, message: `key file ${path} does not exist`, fix: GEN_FILE(path) };
    if (code === 'EACCES' || code === 'EPERM') {
      return { ok: false, message: `key file ${path} is not readable by this user (${code})`, fix: `run as a user that can read it, or chmod/chown ${path}` };
    }
    if (code === 'EISDIR') return { ok: false, message: `key file ${path} is a directory`, fix: GEN_FILE(path) };
    return { ok: false, message: `key file ${path} cannot be read (${code ?? 'error'})`, fix: `check the path; or ${GEN_FILE(path)}` };
  }
  const key = decodeKeyFile(contents);
  // Zero only buffers we allocated (the hex decode); `contents` belongs to readFile.
  const scrub = () => {
    if (key !== contents) key.fill(0);
  };
  if (key.length < MIN_KEY_BYTES) {
    const n = key.length;
    scrub();
    return { ok: false, message: `key file ${path} holds ${n} bytes of key; at least ${MIN_KEY_BYTES} are required`, fix: GEN_FILE(path) };
  }
  const k = new SecretKey(key);
  scrub();
  return { ok: true, key: k };
}

export function loadKeyEnv(name: string, env: NodeJS.ProcessEnv): KeyResult {
  const v = env[name];
  if (v === undefined || v.trim() === '') {
    return { ok: false, message: `environment variable ${name} is not set or empty`, fix: GEN_ENV(name) };
  }
  const text = v.trim();
  if (!HEX_RE.test(text) || text.length % 2 !== 0) {
    // Never echo the value: it may be the key, just mistyped.
    return { ok: false, message: `environment variable ${name} is not an even-length hex string`, fix: GEN_ENV(name) };
  }
  const key = Buffer.from(text, 'hex');
  if (key.length < MIN_KEY_BYTES) {
    const n = key.length;
    key.fill(0);
    return { ok: false, message: `environment variable ${name} holds ${n} bytes of key; at least ${MIN_KEY_BYTES} are required`, fix: GEN_ENV(name) };
  }
  const k = new SecretKey(key);
  key.fill(0);
  return { ok: true, key: k };
}
