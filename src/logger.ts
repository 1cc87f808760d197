/**
 * Structured logs (pino): one JSON event per line on stderr, with levels. Every state change
 * is one event with an `event` name and a `reason`. The cluster key never appears in logs:
 * the config object hides it (see src/config), and `redact` below is a second guard for any
 * field that might carry it.
 */
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
