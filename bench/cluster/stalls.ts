/**
 * Per-connection stall recorder for the failover test of bench/cluster/run.sh (a measuring
 * tool, not part of tunlb). Same traffic as `scripts/traffic.ts longlived` (N TCP connections
 * to the lab's echo server through the VIP, one small message in flight per connection, sent on
 * the first tick after the previous echo came back), but stalls are measured only after a
 * warm-up, so connection set-up and JIT warm-up do not count as stalls (traffic.ts counts the
 * first gap from the moment each connection was established, i.e. the time it waits for all
 * N to connect, up to ~0.5 s with 300 connections on a loaded machine).
 *
 *   node --import tsx bench/cluster/stalls.ts --conns 300 --interval-ms 20 --warmup-s 2 \
 *        --duration-s 12 [--target 10.99.0.10:7]
 *
 * Prints "measuring <epochMs>" when the warm-up ends (the measurement window starts; the
 * caller times the kill from it), then one JSON line: totals like traffic.ts (survived, resets,
 * otherErrors, connectFailures) and per connection its local port, how it ended, and every gap
 * between two successive echoes (or between the window start / the last echo and the end) that
 * is longer than 3 intervals, as [startEpochMs, endEpochMs]; `maxStallMs` is the longest gap in
 * the window (at least the longest regular gap). Exit status 0 whatever happened to the traffic;
 * a hard timer ends the process duration + 10 s after the start.
 */
import * as net from 'node:net';
import { checkEcho } from '../../scripts/echo-check';

interface Opts { conns: number; intervalMs: number; warmupS: number; durationS: number; host: string; port: number }

function parse(argv: string[]): Opts {
  const o: Opts = { conns: 300, intervalMs: 20, warmupS: 2, durationS: 12, host: '10.99.0.10', port: 7 };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    const v = argv[i + 1] ?? '';
    if (k === '--conns') o.conns = Number(v);
    else if (k === '--interval-ms') o.intervalMs = Number(v);
    else if (k === '--warmup-s') o.warmupS = Number(v);
    else if (k === '--duration-s') o.durationS = Number(v);
    else if (k === '--target') {
      const m = /^(.*):(\d+)$/.exec(v);
      if (!m) throw new Error(`bad --target ${v}`);
      o.host = m[1]!.replace(/^\[|\]$/g, '');
      o.port = Number(m[2]);
    } else throw new Error(`unknown option ${k}`);
  }
  if (!(o.conns >= 1 && o.intervalMs >= 1 && o.warmupS >= 0 && o.durationS > o.warmupS)) throw new Error('bad options');
  return o;
}

interface Conn {
  id: number;
  sock: net.Socket;
  localPort: number;
  alive: boolean;
  ended: string | null;
  endedAtMs: number | null;
  pending: Buffer | null;
  got: number;
  seq: number;
  ok: number;
  /** Epoch ms of the last echo (or of the window start, once measuring). */
  last: number;
  maxStall: number;
  gaps: Array<[number, number]>;
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const t0 = Date.now();
  setTimeout(() => process.exit(0), (o.durationS + 10) * 1000).unref();
  const conns: Conn[] = [];
  let connectFailures = 0;
  let measuring = false;
  let windowStart = 0;
  const minGap = 3 * o.intervalMs;

  const gap = (c: Conn, t: number): void => {
    if (!measuring) {
      c.last = t;
      return;
    }
    const g = t - c.last;
    if (g > c.maxStall) c.maxStall = g;
    if (g > minGap && c.gaps.length < 100) c.gaps.push([c.last, t]);
    c.last = t;
  };
  const end = (c: Conn, why: string): void => {
    if (!c.alive) return;
    c.alive = false;
    c.ended = why;
    c.endedAtMs = Date.now();
    c.sock.destroy();
  };

  const open = (id: number): Promise<void> =>
    new Promise((resolve) => {
      const sock = net.connect({ host: o.host, port: o.port });
      sock.setNoDelay(true);
      const timer = setTimeout(() => sock.destroy(new Error('connect timeout')), 3000);
      sock.once('error', () => {
        clearTimeout(timer);
        connectFailures++;
        resolve();
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        const c: Conn = { id, sock, localPort: sock.localPort ?? 0, alive: true, ended: null, endedAtMs: null, pending: null, got: 0, seq: 0, ok: 0, last: Date.now(), maxStall: 0, gaps: [] };
        conns.push(c);
        sock.on('data', (d: Buffer) =>
          checkEcho(c, d, () => {
            c.ok++;
            gap(c, Date.now());
          }, (reason) => end(c, reason)),
        );
        sock.on('error', (e: NodeJS.ErrnoException) => end(c, e.code ?? e.message));
        sock.on('end', () => end(c, 'closed by peer (FIN)'));
        sock.on('close', () => end(c, 'closed'));
        resolve();
      });
    });

  const opening: Array<Promise<void>> = [];
  for (let i = 0; i < o.conns; i++) {
    opening.push(open(i));
    if (i % 20 === 19) await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all(opening);
  conns.sort((a, b) => a.id - b.id);
  process.stdout.write(`${conns.length}/${o.conns} connected after ${Date.now() - t0} ms\n`);

  const tick = setInterval(() => {
    for (const c of conns) {
      if (!c.alive || c.pending !== null) continue;
      c.seq++;
      c.pending = Buffer.from(`c${c.id} s${c.seq} ................\n`);
      c.got = 0;
      c.sock.write(c.pending);
    }
  }, o.intervalMs);

  await new Promise((r) => setTimeout(r, o.warmupS * 1000));
  windowStart = Date.now();
  for (const c of conns) c.last = windowStart;
  measuring = true;
  process.stdout.write(`measuring ${windowStart}\n`);
  const endAt = t0 + o.durationS * 1000;
  await new Promise((r) => setTimeout(r, Math.max(0, endAt - Date.now())));
  clearInterval(tick);
  const tEnd = Date.now();
  for (const c of conns) {
    // a gap still open counts up to the end (for a connection that died: from its last echo)
    gap(c, tEnd);
    c.alive = false;
    c.sock.destroy();
  }
  const ended = conns.filter((c) => c.ended !== null);
  const resets = ended.filter((c) => /ECONNRESET|EPIPE/.test(c.ended ?? '')).length;
  process.stdout.write(
    JSON.stringify({
      mode: 'stalls',
      target: `${o.host}:${o.port}`,
      conns: o.conns,
      intervalMs: o.intervalMs,
      warmupS: o.warmupS,
      durationS: o.durationS,
      startedAtEpochMs: t0,
      windowStartMs: windowStart,
      windowEndMs: tEnd,
      connected: conns.length,
      connectFailures,
      survived: conns.length - ended.length,
      resets,
      otherErrors: ended.length - resets,
      echoes: conns.reduce((s, c) => s + c.ok, 0),
      perConn: conns.map((c) => ({ id: c.id, localPort: c.localPort, ok: c.ok, maxStallMs: c.maxStall, ended: c.ended, endedAtMs: c.endedAtMs, gaps: c.gaps })),
    }) + '\n',
  );
  setTimeout(() => process.exit(0), 50);
}

main().catch((e: unknown) => {
  process.stderr.write(`stalls.ts: ${String(e)}\n`);
  process.exit(2);
});
