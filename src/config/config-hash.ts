/**
 * The config version a balancer announces to its peers (Probe.config_hash, protocol/tunlb.proto):
 * the first 48 bits of SHA-256 over the canonical form of the validated config, shown as 12
 * lower-case hex digits. Two balancers whose files say the same thing get the same hash,
 * whatever the files' formatting, comments, key order or spelled-out defaults (the hash is
 * over the validated config, defaults applied); any change a validated config can show
 * (a backend's weight, a VIP, a timer, the log level, the cluster key) changes it.
 *
 * Canonical form: JSON of the Config with object keys sorted at every level, addresses and
 * port sets in their text form (their toJSON), byte arrays as arrays of numbers, without
 * `source` (the file's path: the same config in /etc/a.yaml and /etc/b.yaml is the same
 * config) and `warnings` (derived). The cluster key enters as a keyed digest
 * (HMAC-SHA256(key, "tunlb config hash v1")), never as its bytes, so the hash says nothing
 * about the key but still differs when the keys differ.
 *
 * Pure, deterministic, no I/O; milliseconds for a large config (called at start and on each
 * reload, never per packet). The result is a safe integer (< 2^48) for the wire and the
 * 12-digit text for people.
 */
import { createHash, createHmac } from 'node:crypto';
import type { Config } from './types';
import { SecretKey } from './secret';

export interface ConfigHash {
  /** The first 48 bits of the digest, big-endian, as a safe integer; never 0 (0 means "not reported" on the wire). */
  readonly value: number;
  /** The same 48 bits as 12 lower-case hex digits. */
  readonly hex: string;
}

const OMIT = new Set(['source', 'warnings']);

/** Canonical JSON value of `v` (header). */
function canonical(v: unknown, top: boolean): unknown {
  if (v === null || typeof v !== 'object') return v;
  if (v instanceof SecretKey) return `hmac:${createHmac('sha256', v.reveal()).update('tunlb config hash v1').digest('hex')}`;
  if (ArrayBuffer.isView(v)) return Array.from(v as Uint8Array);
  const withJson = v as { toJSON?: () => unknown };
  if (typeof withJson.toJSON === 'function') return canonical(withJson.toJSON(), false);
  if (Array.isArray(v)) return v.map((x) => canonical(x, false));
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) {
    if (top && OMIT.has(k)) continue;
    const x = (v as Record<string, unknown>)[k];
    if (x === undefined || typeof x === 'function') continue;
    out[k] = canonical(x, false);
  }
  return out;
}

/** The canonical text the hash is computed over (exported for tests and for `--explain`-style debugging). */
export function canonicalConfigText(config: Config): string {
  return JSON.stringify(canonical(config, true));
}

/** The config version of `config` (header). */
export function configHash(config: Config): ConfigHash {
  const d = createHash('sha256').update(canonicalConfigText(config)).digest();
  let value = d.readUIntBE(0, 6);
  // 0 is "not reported" on the wire: remap the one digest prefix that reads as 0.
  if (value === 0) value = 1;
  return { value, hex: hexOf(value) };
}

/** A wire config hash (Probe.config_hash) as 12 hex digits; '' for 0 (not reported). */
export function hexOf(value: number): string {
  return value > 0 ? value.toString(16).padStart(12, '0') : '';
}
