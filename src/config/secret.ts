/**
 * The cluster key: loaded once, held in a wrapper that never prints it.
 *
 * `SecretKey` keeps the bytes in an ES private field (invisible to Object.keys, JSON.stringify,
 * structuredClone, spread and util.inspect) and redacts itself in toJSON, toString and
 * util.inspect. Code that needs the bytes (HMAC, the rendezvous hash key derivation in
 * src/cluster/) calls `reveal()`; never log or serialise what it returns.
 */
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
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

/**
 * Permission bits a secret file (cluster key, admin token) must not have: any access by group or
 * others. Refused like ssh refuses a private key "accessible by others" (sshd(8), ssh-keygen).
 */
export const SECRET_MODE_MASK = 0o077;

/** Thrown by readSecretFile for a file group or others can access; `code` is 'TUNLB_SECRET_MODE'. */
export class SecretModeError extends Error {
  readonly code = 'TUNLB_SECRET_MODE';
  constructor(
    readonly path: string,
    /** The file's permission bits (mode & 0o7777). */
    readonly mode: number,
  ) {
    super(`${path} has mode ${formatMode(mode)}: ${mode & 0o044 ? 'readable' : 'accessible'} by ${whom(mode)}`);
  }
}

export function formatMode(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;
}

function whom(mode: number): string {
  const g = (mode & 0o070) !== 0;
  const o = (mode & 0o007) !== 0;
  return g && o ? 'group and others' : g ? 'group' : 'others';
}

/** The fix for a SecretModeError, for messages. */
export function secretModeFix(path: string): string {
  return `chmod 600 ${path} (a secret must be readable by its owner only, as ssh requires of private keys)`;
}

/**
 * Reads a secret file: refuses (SecretModeError) a file whose permissions let group or others
 * access it, checked on the opened file (fstat: no window between the check and the read; a
 * symlink is judged by its target). Other failures throw the fs error (ENOENT, EACCES, EISDIR).
 */
export function readSecretFile(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    if (st.isFile() && (st.mode & SECRET_MODE_MASK) !== 0) throw new SecretModeError(path, st.mode & 0o7777);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function loadKeyFile(path: string, readFile: (p: string) => Buffer = readSecretFile): KeyResult {
  let contents: Buffer;
  try {
    contents = readFile(path);
  } catch (e) {
    if (e instanceof SecretModeError) return { ok: false, message: `key file ${e.message}`, fix: secretModeFix(path) };
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

export type TokenResult = { ok: true; token: string } | { ok: false; message: string; fix: string };

const GEN_TOKEN = (p: string) => `create it: (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > ${p})`;

/**
 * The admin API bearer token in `path` (admin.token_file): one token on one line (surrounding
 * whitespace trimmed), in a file only its owner may read (readSecretFile). Never echoes the file.
 */
export function loadTokenFile(path: string, readFile: (p: string) => Buffer = readSecretFile): TokenResult {
  let text: string;
  try {
    text = readFile(path).toString('utf8');
  } catch (e) {
    if (e instanceof SecretModeError) return { ok: false, message: `token file ${e.message}`, fix: secretModeFix(path) };
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { ok: false, message: `token file ${path} does not exist`, fix: GEN_TOKEN(path) };
    if (code === 'EACCES' || code === 'EPERM') return { ok: false, message: `token file ${path} is not readable by this user (${code})`, fix: `run as the user that owns it, or chown ${path}` };
    return { ok: false, message: `token file ${path} cannot be read (${code ?? 'error'})`, fix: `check the path; or ${GEN_TOKEN(path)}` };
  }
  const token = text.trim();
  if (token === '') return { ok: false, message: `token file ${path} is empty`, fix: `put the bearer token in it: ${GEN_TOKEN(path)}` };
  if (/\s/.test(token)) return { ok: false, message: `token file ${path} holds whitespace inside the token`, fix: 'write one token on one line' };
  return { ok: true, token };
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
