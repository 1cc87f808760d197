/**
 * This balancer's incarnation (Envelope.incarnation): chosen once per process start and
 * larger than every incarnation an earlier process of the same balancer used, even when the
 * wall clock went back between the two starts (NTP step, a VM restored from a snapshot, a
 * machine with a dead RTC battery).
 *
 *   incarnation = max(wall-clock ms * 2048 + random(0..2047), last + 1)
 *
 * where `last` is the incarnation the previous start used, kept in a small state file
 * (`<cluster.state_dir>/<balancer id>.incarnation`, default /var/lib/tunlb/). The new value
 * is written to the file (a temporary file, fsync, rename over the old one, fsync of the
 * directory: atomic, and durable before it is used) BEFORE any datagram carries it, so a crash
 * right after the start cannot lead the next start to reuse it.
 *
 * When the state is lost (file deleted, a fresh disk) the incarnation is the clock's. If the
 * clock is also behind the previous start's, the incarnation goes back: peers that remember
 * the previous one ignore the new process until they see it answer one of their probes while
 * the previous incarnation is silent (DEAD or never heard), and then take the smaller one
 * (src/cluster/membership.ts "Incarnations"): the cluster heals by itself within about
 * misses × interval. A file that cannot be parsed counts as lost (logged at warn); a
 * directory that cannot be created or written is a start-up error (TUNLB_CONFIG_INVALID,
 * naming cluster.state_dir), so an incarnation is never used without being persisted.
 *
 * File format: one line, the decimal incarnation (a safe integer), e.g. "3679591062630735\n".
 * Not on any hot path: called once per start.
 */
import { randomInt } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, TunlbError } from '../errors';

/** Largest incarnation: the wire value is a safe integer (tunlb.proto). */
const MAX_INCARNATION = Number.MAX_SAFE_INTEGER;

/** The clock's incarnation for `wallMs`: wall-clock ms * 2048 + random(0..2047). */
export function clockIncarnation(wallMs: number = Date.now()): number {
  return Math.floor(wallMs) * 2048 + randomInt(2048);
}

export interface IncarnationChoice {
  /** The incarnation this process uses (already persisted). */
  incarnation: number;
  /** The previous start's incarnation from the state file, or null (no file, or unreadable). */
  previous: number | null;
  /** Why this value: the clock's was larger ('clock'), or the persisted one + 1 was ('state'). */
  source: 'clock' | 'state';
  /** Set when the file existed but could not be used (the reason), for a warning. */
  stateProblem: string | null;
  /** The state file. */
  file: string;
}

/** The state file of balancer `id` in `stateDir`. */
export function incarnationFile(stateDir: string, id: string): string {
  return path.join(stateDir, `${id}.incarnation`);
}

function readPrevious(file: string): { previous: number | null; problem: string | null } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { previous: null, problem: null };
    return { previous: null, problem: `cannot read ${file} (${code ?? String(e)})` };
  }
  const t = text.trim();
  const v = Number(t);
  if (!/^\d{1,16}$/.test(t) || !Number.isSafeInteger(v) || v < 1 || v >= MAX_INCARNATION) {
    return { previous: null, problem: `${file} does not hold an incarnation (${JSON.stringify(t.slice(0, 40))})` };
  }
  return { previous: v, problem: null };
}

/** Writes `text` to `file` atomically and durably (temporary file, fsync, rename, fsync of the directory). */
function writeAtomic(file: string, text: string): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * Chooses, persists and returns this start's incarnation (module header). `wallMs` is for
 * tests. Throws TunlbError CONFIG_INVALID when the state directory cannot be
 * created or written.
 */
export function nextIncarnation(stateDir: string, id: string, wallMs: number = Date.now()): IncarnationChoice {
  const file = incarnationFile(stateDir, id);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw stateDirError(stateDir, e);
  }
  const { previous, problem } = readPrevious(file);
  const fromClock = clockIncarnation(wallMs);
  const fromState = previous === null ? 0 : previous + 1;
  const incarnation = Math.min(MAX_INCARNATION - 1, Math.max(fromClock, fromState));
  try {
    writeAtomic(file, `${incarnation}\n`);
  } catch (e) {
    throw stateDirError(stateDir, e);
  }
  return { incarnation, previous, source: fromState > fromClock ? 'state' : 'clock', stateProblem: problem, file };
}

function stateDirError(stateDir: string, e: unknown): TunlbError {
  const code = (e as NodeJS.ErrnoException).code ?? String(e);
  return new TunlbError(
    ErrorCodes.CONFIG_INVALID,
    `cluster.state_dir ${stateDir}: cannot keep this balancer's incarnation there (${code}); create the directory writable by tunlb, or set cluster.state_dir to one that is`,
    { field: 'cluster.state_dir', path: stateDir, errno: code },
    { cause: e },
  );
}
