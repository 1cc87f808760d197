/**
 * Structured logs (pino): one JSON event per line on stderr, with levels. Every state change
 * is one event with an `event` name and a `reason`; docs/logs.md lists every event name with its
 * fields (test/logs.test.ts keeps the two in step). The cluster key never appears in logs:
 * the config object hides it (see src/config), and `redact` below is a second guard for any
 * field that might carry it.
 *
 * A log file holds JSON lines only: what `tunlb run` says when it cannot start, or when it
 * dies of an uncaught exception, is one more line in the same shape (`fatalLine`) when its
 * stderr is not a terminal; on a terminal it is a plain sentence (src/cli/main.ts).
 */
import { writeSync } from 'node:fs';
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(opts: { level?: string; name?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: opts.name ? { balancer: opts.name } : {},
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['key', '*.key', 'clusterKey', '*.clusterKey', 'token', '*.token'], censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    (opts.destination as pino.DestinationStream | undefined) ?? pino.destination({ fd: 2, sync: false }),
  );
}

/**
 * One log line in the logger's shape (level label, ISO time, balancer, event, fields, msg),
 * built and written synchronously: for the last words of a process whose logger may not exist
 * yet (start-up failures) or may not get to flush (an uncaught exception). Fields named like
 * the logger's redact paths are not expected here (callers pass codes, messages, lists).
 */
export function fatalLine(fields: { balancer?: string; event: string } & Record<string, unknown>, msg: string): string {
  const { balancer, event, ...rest } = fields;
  return `${JSON.stringify({ level: 'fatal', time: new Date().toISOString(), ...(balancer !== undefined ? { balancer } : {}), event, ...rest, msg })}\n`;
}

/** Writes `fatalLine(...)` to stderr at once (fd 2, synchronous). */
export function writeFatal(fields: { balancer?: string; event: string } & Record<string, unknown>, msg: string): void {
  writeSync(2, fatalLine(fields, msg));
}
