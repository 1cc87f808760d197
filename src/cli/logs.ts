/**
 * `tunlb logs [FILE...]`: a balancer's JSON log lines (src/logger.ts; the lab's
 * /run/tunlb-lab/logs/lbN.log, journald's output, or `tunlb run ... 2>&1 |`) printed for people,
 * one line per event, by pino-pretty:
 *
 *   [2026-12-07 20:33:14.138] WARN: lb1 peer_down: lb3: down (no answer for 187 ms) {"peer":"lb3",...}
 *
 * time (local), level, balancer, event name, message, then the event's other fields as JSON
 * (`--brief` leaves them out). Filters: `--event NAME[,NAME]` (docs/logs.md lists every name),
 * `--level LEVEL` (that level and above), `--balancer ID`. A line that is not JSON is printed as
 * it is (a filter drops it). Reads stdin when no file is given (or `-`), so
 * `tail -f /run/tunlb-lab/logs/lb1.log | tunlb logs` follows a log.
 */
import { createReadStream, openSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { prettyFactory } from 'pino-pretty';
import { TunlbError, ErrorCodes } from '../errors';
import { LOG_LEVELS } from '../config/schema';

export interface LogsOptions {
  event?: string;
  level?: string;
  balancer?: string;
  brief?: boolean;
  /** Colours (default: when stdout is a terminal). */
  color?: boolean;
}

/** pino's level numbers by label (pino.levels.values). */
const LEVEL_VALUE: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** A function from one log line to its printed form (with the newline), or null to drop it. */
export function logLineFormatter(o: LogsOptions): (line: string) => string | null {
  const events = o.event === undefined ? null : new Set(o.event.split(',').map((x) => x.trim()).filter(Boolean));
  if (o.level !== undefined && LEVEL_VALUE[o.level] === undefined) {
    throw new TunlbError(ErrorCodes.USAGE, `logs --level: "${o.level}" is not a level (${Object.keys(LEVEL_VALUE).join(', ')})`);
  }
  const minLevel = o.level === undefined ? 0 : LEVEL_VALUE[o.level]!;
  const filtering = events !== null || minLevel > 0 || o.balancer !== undefined;
  const pretty = prettyFactory({
    colorize: o.color ?? false,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    singleLine: true,
    hideObject: o.brief === true,
    ignore: 'pid,hostname,balancer,event',
    messageFormat: '{if balancer}{balancer} {end}{if event}{event}: {end}{msg}',
  });
  return (line: string): string | null => {
    if (line.trim() === '') return null;
    let rec: Record<string, unknown> | null = null;
    if (line.startsWith('{')) {
      try {
        const v: unknown = JSON.parse(line);
        if (v !== null && typeof v === 'object' && !Array.isArray(v)) rec = v as Record<string, unknown>;
      } catch {
        rec = null;
      }
    }
    if (rec === null) return filtering ? null : `${line}\n`;
    if (events !== null && !events.has(String(rec['event']))) return null;
    if (o.balancer !== undefined && rec['balancer'] !== o.balancer) return null;
    const lv = typeof rec['level'] === 'number' ? rec['level'] : (LEVEL_VALUE[String(rec['level'])] ?? 0);
    if (lv < minLevel) return null;
    const text = pretty(rec);
    return text.endsWith('\n') ? text : `${text}\n`;
  };
}

/** Prints the files (or stdin) through the formatter; resolves when every input is read. */
export async function printLogs(files: readonly string[], o: LogsOptions, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const format = logLineFormatter(o);
  const inputs = files.length === 0 ? ['-'] : files;
  for (const f of inputs) {
    let stream: NodeJS.ReadableStream = process.stdin;
    if (f !== '-') {
      let fd: number;
      try {
        fd = openSync(f, 'r');
      } catch (e) {
        throw new TunlbError(ErrorCodes.USAGE, `logs: cannot read ${f}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      stream = createReadStream('', { fd });
    }
    for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
      const s = format(line);
      if (s !== null && !out.write(s)) await new Promise((r) => out.once('drain', r));
    }
  }
}

/** The level names `--level` takes (the config's log levels less `silent`). */
export const LOGS_LEVELS = LOG_LEVELS.filter((l) => l !== 'silent');
