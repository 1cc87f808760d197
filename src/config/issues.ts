/**
 * Configuration problems: turning zod issues into `ConfigIssue`s (path, what was expected, how
 * to fix it), "did you mean" hints for unknown keys, and the one-line-per-error formatter.
 */
import type { z } from 'zod';
import { ErrorCodes, isTunlbError } from '../errors';
import { FIELDS } from './schema';
import type { ConfigIssue } from './types';

export type PathKey = string | number;

/** `["vips", 0, "backends", 2, "weight"]` → `vips[0].backends[2].weight`. */
export function pathToString(path: readonly PropertyKey[]): string {
  let s = '';
  for (const k of path) {
    if (typeof k === 'number') s += `[${k}]`;
    else s += s === '' ? String(k) : `.${String(k)}`;
  }
  return s;
}

/** `vips[0].backends[2].weight` → `vips[].backends[].weight` (the FIELDS key). */
export function genericPath(path: string): string {
  return path.replace(/\[\d+\]/g, '[]');
}

export function fieldDoc(path: string) {
  return FIELDS[genericPath(path)];
}

/** Short, bounded description of a value for messages. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return `a list of ${v.length} item${v.length === 1 ? '' : 's'}`;
  if (typeof v === 'object') return 'a mapping';
  let j = JSON.stringify(v);
  if (j.length > 60) j = `${j.slice(0, 57)}...`;
  return `${typeof v} ${j}`;
}

// ---------------------------------------------------------------------------------------
// Walking the schema (for unknown-key hints and the docs test)

interface ZodInternals {
  _zod: { def: { type: string; shape?: Record<string, unknown>; innerType?: unknown; element?: unknown; in?: unknown } };
}

function unwrap(s: unknown): ZodInternals {
  let cur = s as ZodInternals;
  for (;;) {
    const d = cur._zod.def;
    if ((d.type === 'default' || d.type === 'prefault' || d.type === 'optional' || d.type === 'nullable') && d.innerType) cur = d.innerType as ZodInternals;
    else if (d.type === 'pipe' && d.in) cur = d.in as ZodInternals;
    else return cur;
  }
}

/** The object keys allowed at `path` (numbers step into list elements), or undefined. */
export function knownKeysAt(root: z.ZodType, path: readonly PropertyKey[]): string[] | undefined {
  let cur = unwrap(root);
  for (const k of path) {
    const d = cur._zod.def;
    if (typeof k === 'number') {
      if (d.type !== 'array' || !d.element) return undefined;
      cur = unwrap(d.element);
    } else {
      if (d.type !== 'object' || !d.shape || !(String(k) in d.shape)) return undefined;
      cur = unwrap(d.shape[String(k)]);
    }
  }
  const d = cur._zod.def;
  return d.type === 'object' && d.shape ? Object.keys(d.shape) : undefined;
}

/** Every field path of the schema, lists written `[]` (sections included). */
export function schemaFieldPaths(root: z.ZodType): string[] {
  const out: string[] = [];
  const walk = (s: unknown, prefix: string) => {
    const u = unwrap(s);
    const d = u._zod.def;
    if (d.type === 'object' && d.shape) {
      for (const [k, v] of Object.entries(d.shape)) {
        const p = prefix === '' ? k : `${prefix}.${k}`;
        out.push(p);
        walk(v, p);
      }
    } else if (d.type === 'array' && d.element) {
      walk(d.element, `${prefix}[]`);
    }
  };
  walk(root, '');
  return out;
}

/** Optimal-string-alignment distance: edits, with a swap of two adjacent letters counting 1. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The known key the user most likely meant (camelCase → snake_case, case, small typos). */
export function didYouMean(key: string, known: readonly string[]): string | undefined {
  const snake = key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/-/g, '_').toLowerCase();
  const exact = known.find((k) => k === snake);
  if (exact) return exact;
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(snake, k);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}

// ---------------------------------------------------------------------------------------
// zod issue → ConfigIssue

type AnyIssue = z.core.$ZodIssue & { input?: unknown; params?: Record<string, unknown> };

export function fromZodIssue(iss: AnyIssue, root: z.ZodType): ConfigIssue[] {
  const path = pathToString(iss.path);
  const doc = fieldDoc(path);
  const expect = doc?.expect;
  const last = iss.path[iss.path.length - 1];
  const name = typeof last === 'string' ? last : path;
  const setTo = (what = expect) => (what ? `set ${path || 'the file'} to ${what}` : `correct ${path}`);
  switch (iss.code) {
    case 'unrecognized_keys': {
      const known = knownKeysAt(root, iss.path) ?? [];
      return iss.keys.map((key) => {
        const hint = didYouMean(key, known);
        const p = pathToString([...iss.path, key]);
        return {
          path: p,
          message: `unknown field "${key}"`,
          fix: hint ? `did you mean "${hint}"? fields here: ${known.join(', ')}` : `remove it; fields allowed here: ${known.join(', ')}`,
        };
      });
    }
    case 'invalid_type': {
      if (iss.input === undefined) {
        return [{ path, message: `missing required field${expect ? `: expected ${expect}` : ''}`, fix: `add ${name}: <${expect ?? iss.expected}>` }];
      }
      return [{ path, message: `expected ${expect ?? iss.expected}, got ${describeValue(iss.input)}`, fix: setTo() }];
    }
    case 'too_small':
    case 'too_big': {
      const bound = iss.code === 'too_small' ? `at least ${String(iss.minimum)}` : `at most ${String(iss.maximum)}`;
      if (iss.origin === 'array') {
        const n = Array.isArray(iss.input) ? iss.input.length : '?';
        return [{ path, message: `has ${n} item${n === 1 ? '' : 's'}; expected ${bound}${expect ? ` (${expect})` : ''}`, fix: `give ${path} ${bound} item(s)` }];
      }
      if (iss.origin === 'string') {
        return [{ path, message: `must not be empty (expected ${expect ?? `length ${bound}`})`, fix: setTo() }];
      }
      return [{ path, message: `${describeValue(iss.input)} is out of range: expected ${expect ?? bound}`, fix: setTo() }];
    }
    case 'invalid_value': {
      const values = iss.values.map((v) => String(v));
      const hint = typeof iss.input === 'string' ? didYouMean(iss.input, values) : undefined;
      return [
        {
          path,
          message: `${describeValue(iss.input)} is not one of ${values.join(', ')}`,
          fix: hint ? `did you mean "${hint}"?` : `use one of ${values.join(', ')}`,
        },
      ];
    }
    case 'invalid_format':
      return [{ path, message: `${describeValue(iss.input)} is not ${expect ?? `a valid ${iss.format}`}`, fix: setTo() }];
    case 'custom': {
      const fix = typeof iss.params?.['fix'] === 'string' ? (iss.params['fix'] as string) : setTo();
      return [{ path, message: iss.message, fix }];
    }
    default:
      return [{ path, message: `${iss.message}${expect ? ` (expected ${expect})` : ''}`, fix: setTo() }];
  }
}

// ---------------------------------------------------------------------------------------
// Formatting

/** `path: message (fix: …)`, with `source:line:col` in front when known. */
export function formatIssue(i: ConfigIssue, source?: string): string {
  const where = source ? `${source}${i.line ? `:${i.line}:${i.column ?? 1}` : ''}: ` : '';
  return `${where}${i.path || '(file)'}: ${i.message} (fix: ${i.fix})`;
}

/**
 * One line per configuration error, for the CLI. Accepts anything thrown: config errors are
 * expanded from `details.errors`; other TunlbErrors and errors give their message.
 */
export function formatConfigErrors(err: unknown): string {
  if (isTunlbError(err) && (err.code === ErrorCodes.CONFIG_INVALID || err.code === ErrorCodes.CONFIG_KEY_MISSING)) {
    const issues = err.details?.['errors'];
    const source = typeof err.details?.['source'] === 'string' ? (err.details['source'] as string) : undefined;
    if (Array.isArray(issues) && issues.length > 0) return (issues as ConfigIssue[]).map((i) => formatIssue(i, source)).join('\n');
  }
  if (err instanceof Error) return `${isTunlbError(err) ? `${err.code}: ` : ''}${err.message}`;
  return String(err);
}
