/**
 * The lab's traffic generator (demo, cluster tests, by hand). Plain Node (net, dgram), no
 * dependencies; run it inside the client namespace:
 *
 *   ip netns exec tunlb-client node --import tsx scripts/traffic.ts MODE [options]
 *
 * Modes
 *   longlived  --conns 60 --interval-ms 20 --duration-s 10 --target 10.99.0.10:7 [--json]
 *       N TCP connections to an echo server (lab-server.ts, tcp/7) through the VIP. Each sends a
 *       small message every interval (one outstanding at a time: the next is sent on the first
 *       tick after the echo came back) and checks the echo byte for byte. Per connection: echoes
 *       ok, how it ended (ECONNRESET, EPIPE, a close, a bad echo, ...) and its LONGEST STALL: the
 *       largest gap between two successive echo receipts (the first gap counts from the moment
 *       the connection was established; a gap still open at the end counts up to the end).
 *       Prints a timeline, one line a second (time, connections alive, echoes in that second,
 *       worst stall seen in that second), events as they happen, and a summary.
 *   newconns   --count 100 --target 10.99.0.10:80 [--concurrency 10] [--hold-s S] [--json]
 *       COUNT HTTP GETs, each on a new TCP connection (so each is a new flow); counts answers by
 *       server name. --hold-s keeps every connection open (HTTP keep-alive, one GET every 2 s,
 *       each answer must come from the same server) for S seconds after all answered; with
 *       --json a line {"phase":"holding",...} (the connections' source ports) is printed when
 *       the hold starts.
 *   udpqueries --count 100 --target 10.99.0.10:5353 [--concurrency 4] [--json]
 *       COUNT UDP queries, each from a new socket (so each is a new flow, as DNS clients do),
 *       each waiting for its echo (lab-server.ts udp/5353) for --connect-timeout-ms (default
 *       3000); counts answers by server name and queries left unanswered.
 *   udpflood   --duration-s 20 --target 10.99.0.10:5353 [--senders 4] [--size 64] [--json]
 *       As many UDP datagrams as the sockets take (each sender a socket with its own source
 *       port, sending in bursts, yielding to the event loop between bursts) for the duration;
 *       counts datagrams sent and echoes received.
 *   udpflows   --count 50000 --target 10.99.0.10:5353 [--concurrency 200] [--json]
 *       COUNT UDP flows from each source port 1024, 1025, ... (a socket bound to it): a
 *       datagram, its echo (--connect-timeout-ms), a second datagram, so each flow is confirmed
 *       and replicated to every balancer; --concurrency sockets at a time; up to 64,512 flows
 *       per client address (run it once per family for more). Fills the balancers' flow tables.
 *
 * Common options: --duration-s bounds every mode (longlived: the run, which a SIGINT ends
 * earlier with the same summary; newconns, udpflood: a hard limit), --json adds one JSON object
 * line at the end (the summary; longlived also per connection and per second), --quiet drops
 * the human-readable lines (with --json: JSON only).
 *
 * Results are data: the exit status is 0 whatever happened to the traffic, 2 on a usage error.
 * Every mode ends by itself: a hard timer exits duration + 10 s after the start at the latest.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { checkEcho } from './echo-check';

// ---------------------------------------------------------------------------------- options --

interface Options {
  mode: 'longlived' | 'newconns' | 'udpqueries' | 'udpflood' | 'udpflows';
  host: string;
  port: number;
  conns: number;
  intervalMs: number;
  durationS: number;
  count: number;
  concurrency: number;
  holdS: number;
  senders: number;
  size: number;
  connectTimeoutMs: number;
  json: boolean;
  quiet: boolean;
}

const USAGE = `usage: traffic.ts longlived [--conns 60] [--interval-ms 20] [--duration-s 10] [--target 10.99.0.10:7] [--json] [--quiet]
       traffic.ts newconns  [--count 100] [--concurrency 10] [--hold-s 0] [--duration-s 60] [--target 10.99.0.10:80] [--json] [--quiet]
       traffic.ts udpqueries [--count 100] [--concurrency 4] [--duration-s 60] [--target 10.99.0.10:5353] [--json] [--quiet]
       traffic.ts udpflood  [--duration-s 20] [--senders 4] [--size 64] [--target 10.99.0.10:5353] [--json] [--quiet]
       traffic.ts udpflows  [--count 50000] [--concurrency 200] [--duration-s 60] [--target 10.99.0.10:5353] [--json] [--quiet]`;

class UsageError extends Error {}

function parseTarget(s: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m || net.isIP(m[1]!) === 0) throw new UsageError(`--target must be ADDRESS:PORT or [IPV6]:PORT, got "${s}"`);
  const port = Number(m[2]);
  if (!(port >= 1 && port <= 65535)) throw new UsageError(`--target port must be 1..65535, got ${m[2]}`);
  return { host: m[1]!, port };
}

function parseArgs(argv: string[]): Options {
  const mode = argv[0];
  if (mode !== 'longlived' && mode !== 'newconns' && mode !== 'udpqueries' && mode !== 'udpflood' && mode !== 'udpflows') throw new UsageError(`unknown mode "${mode ?? ''}"`);
  const defaults: Record<Options['mode'], { target: string; durationS: number }> = {
    longlived: { target: '10.99.0.10:7', durationS: 10 },
    newconns: { target: '10.99.0.10:80', durationS: 60 },
    udpqueries: { target: '10.99.0.10:5353', durationS: 60 },
    udpflood: { target: '10.99.0.10:5353', durationS: 20 },
    udpflows: { target: '10.99.0.10:5353', durationS: 60 },
  };
  const o: Options = {
    mode,
    ...parseTarget(defaults[mode].target),
    conns: 60,
    intervalMs: 20,
    durationS: defaults[mode].durationS,
    count: 100,
    concurrency: 10,
    holdS: 0,
    senders: 4,
    size: 64,
    connectTimeoutMs: 3000,
    json: false,
    quiet: false,
  };
  const num = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || v === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`${name} must be a number in ${min}..${max}, got ${v ?? '(nothing)'}`);
    return n;
  };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--json': o.json = true; continue;
      case '--quiet': o.quiet = true; continue;
      case '--target': { if (v === undefined) throw new UsageError('--target needs a value'); Object.assign(o, parseTarget(v)); break; }
      case '--conns': o.conns = Math.floor(num(a, v, 1, 10000)); break;
      case '--interval-ms': o.intervalMs = num(a, v, 1, 60000); break;
      case '--duration-s': o.durationS = num(a, v, 0.1, 3600); break;
      case '--count': o.count = Math.floor(num(a, v, 1, 1000000)); break;
      case '--concurrency': o.concurrency = Math.floor(num(a, v, 1, 10000)); break;
      case '--hold-s': o.holdS = num(a, v, 0, 3600); break;
      case '--senders': o.senders = Math.floor(num(a, v, 1, 256)); break;
      case '--size': o.size = Math.floor(num(a, v, 1, 65000)); break;
      case '--connect-timeout-ms': o.connectTimeoutMs = num(a, v, 1, 60000); break;
      default: throw new UsageError(`unknown option "${a}"`);
    }
    i++;
  }
  return o;
}

// ---------------------------------------------------------------------------------- helpers --

const t0 = performance.now();
/** ms since the generator started (monotonic). */
const now = (): number => performance.now() - t0;
const startedAtEpochMs = Date.now();

let opts: Options;
function say(line: string): void {
  if (!opts.quiet) process.stdout.write(line + '\n');
}
function secs(ms: number): string {
  return (ms / 1000).toFixed(2).padStart(6);
}
/** Nearest-rank percentile of an ascending array (0 for an empty one). */
function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}
function errName(e: unknown): string {
  const err = e as NodeJS.ErrnoException | undefined;
  return err?.code ?? err?.message ?? String(e);
}
const round = (x: number): number => Math.round(x);

// ------------------------------------------------------------------------------- longlived --

interface Conn {
  id: number;
  sock: net.Socket;
  localPort: number;
  connectedAt: number;
  alive: boolean;
  /** How it ended: null while alive (or when we closed it at the end), else the reason. */
  ended: string | null;
  endedAt: number;
  ok: number;
  seq: number;
  /** The message in flight and how many of its bytes came back so far (null: none in flight). */
  pending: Buffer | null;
  got: number;
  sentAt: number;
  lastEcho: number;
  maxStall: number;
  /** When the longest stall ended (ms since start), and when it began. */
  maxStallEnd: number;
  /** Longest stall that ended within the current timeline second. */
  secStall: number;
}

async function longlived(o: Options): Promise<void> {
  /** End of the run (ms since start): the duration, or the moment a SIGINT came (see below). */
  let endAt = o.durationS * 1000;
  // SIGINT ends the run early, as if its duration ended then (the same summary; the timeline up
  // to the last whole second): a caller whose checks are done need not wait out --duration-s.
  let interrupted = false;
  let onInterrupt = (): void => undefined;
  process.once('SIGINT', () => {
    interrupted = true;
    onInterrupt();
  });
  const conns: Conn[] = [];
  const events: Array<{ tMs: number; conn: number; event: string }> = [];
  const timeline: Array<{ t: number; alive: number; echoes: number; worstStallMs: number }> = [];
  let echoesThisSecond = 0;
  let connectFailures = 0;
  let stopping = false;

  say(`longlived: ${o.conns} TCP connections to ${o.host}:${o.port}, one message every ${o.intervalMs} ms each, for ${o.durationS} s`);

  const event = (c: Conn, what: string): void => {
    events.push({ tMs: round(now()), conn: c.id, event: what });
    say(`${secs(now())} s  conn ${String(c.id).padStart(3)} (port ${c.localPort}): ${what}`);
  };

  const end = (c: Conn, reason: string): void => {
    if (!c.alive) return;
    c.alive = false;
    c.endedAt = now();
    if (!stopping) {
      c.ended = reason;
      event(c, `ended: ${reason}`);
    }
    c.sock.destroy();
  };

  const open = (id: number): Promise<void> =>
    new Promise((resolve) => {
      const sock = net.connect({ host: o.host, port: o.port });
      sock.setNoDelay(true);
      const timer = setTimeout(() => sock.destroy(new Error('connect timeout')), o.connectTimeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        const t = now();
        const c: Conn = {
          id, sock, localPort: sock.localPort ?? 0, connectedAt: t, alive: true, ended: null, endedAt: 0, ok: 0, seq: 0,
          pending: null, got: 0, sentAt: 0, lastEcho: t, maxStall: 0, maxStallEnd: t, secStall: 0,
        };
        conns.push(c);
        sock.removeAllListeners('error');
        sock.on('data', (d: Buffer) =>
          checkEcho(c, d, () => {
            const t2 = now();
            const gap = t2 - c.lastEcho;
            if (gap > c.maxStall) {
              c.maxStall = gap;
              c.maxStallEnd = t2;
            }
            if (gap > c.secStall) c.secStall = gap;
            c.lastEcho = t2;
            c.ok++;
            echoesThisSecond++;
          }, (reason) => end(c, reason)),
        );
        sock.on('error', (e) => end(c, errName(e)));
        sock.on('end', () => end(c, 'closed by peer (FIN)'));
        sock.on('close', () => end(c, 'closed'));
        resolve();
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        connectFailures++;
        events.push({ tMs: round(now()), conn: id, event: `connect failed: ${errName(e)}` });
        say(`${secs(now())} s  conn ${String(id).padStart(3)}: connect failed: ${errName(e)}`);
        sock.destroy();
        resolve();
      });
    });

  // Connect in waves so that a large N does not become a SYN burst.
  const opening: Array<Promise<void>> = [];
  for (let i = 0; i < o.conns; i++) {
    opening.push(open(i));
    if (i % 20 === 19) await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all(opening);
  conns.sort((a, b) => a.id - b.id);
  say(`${secs(now())} s  ${conns.length}/${o.conns} connected${connectFailures ? `, ${connectFailures} failed` : ''}`);
  say('');
  say('     t  alive  echoes/s  worst stall (ms)');

  // Sending: one tick for all connections; a connection sends when nothing is in flight.
  const tick = setInterval(() => {
    const t = now();
    for (const c of conns) {
      if (!c.alive || c.pending !== null) continue;
      c.seq++;
      const msg = Buffer.from(`c${c.id} s${c.seq} ${'.'.repeat(16)}\n`);
      c.pending = msg;
      c.got = 0;
      c.sentAt = t;
      c.sock.write(msg, (err) => {
        if (err) end(c, errName(err));
      });
    }
  }, o.intervalMs);

  // Timeline: one line a second.
  let nextSecond = 1;
  const second = (): void => {
    const t = now();
    let alive = 0;
    let worst = 0;
    for (const c of conns) {
      if (c.alive) {
        alive++;
        worst = Math.max(worst, c.secStall, t - c.lastEcho);
      }
      c.secStall = 0;
    }
    timeline.push({ t: nextSecond, alive, echoes: echoesThisSecond, worstStallMs: round(worst) });
    say(`${String(nextSecond).padStart(6)}  ${String(alive).padStart(5)}  ${String(echoesThisSecond).padStart(8)}  ${String(round(worst)).padStart(16)}`);
    echoesThisSecond = 0;
    nextSecond++;
  };
  const secondTimer = setInterval(() => {
    while (now() >= nextSecond * 1000 && nextSecond * 1000 <= endAt) second();
  }, 50);

  if (!interrupted) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, endAt - now()));
      onInterrupt = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  if (interrupted) endAt = Math.min(endAt, now());
  clearInterval(tick);
  clearInterval(secondTimer);
  while (nextSecond * 1000 <= endAt) second();

  // The end: a gap still open counts up to now; then close everything.
  const tEnd = now();
  stopping = true;
  for (const c of conns) {
    if (!c.alive) continue;
    const open = tEnd - c.lastEcho;
    if (open > c.maxStall) {
      c.maxStall = open;
      c.maxStallEnd = tEnd;
    }
    c.alive = false;
    c.endedAt = tEnd;
    c.sock.destroy();
  }

  const survived = conns.filter((c) => c.ended === null);
  const resets = conns.filter((c) => c.ended !== null && /ECONNRESET|EPIPE/.test(c.ended)).length;
  const otherEnds = conns.filter((c) => c.ended !== null).length - resets;
  const stalls = conns.map((c) => c.maxStall).sort((a, b) => a - b);
  const worst = conns.reduce<Conn | null>((w, c) => (w === null || c.maxStall > w.maxStall ? c : w), null);
  const echoes = conns.reduce((s, c) => s + c.ok, 0);
  const summary = {
    mode: 'longlived',
    target: `${o.host}:${o.port}`,
    conns: o.conns,
    intervalMs: o.intervalMs,
    durationS: o.durationS,
    startedAtEpochMs,
    connected: conns.length,
    connectFailures,
    survived: survived.length,
    resets,
    otherErrors: otherEnds,
    echoes,
    maxStallMs: round(worst?.maxStall ?? 0),
    maxStallConn: worst?.id ?? null,
    maxStallEndedAtMs: round(worst?.maxStallEnd ?? 0),
    p50StallMs: round(percentile(stalls, 50)),
    p99StallMs: round(percentile(stalls, 99)),
    perConn: conns.map((c) => ({
      id: c.id,
      localPort: c.localPort,
      ok: c.ok,
      maxStallMs: round(c.maxStall),
      maxStallEndedAtMs: round(c.maxStallEnd),
      ended: c.ended,
      endedAtMs: c.ended === null ? null : round(c.endedAt),
    })),
    events,
    timeline,
  };
  say('');
  say(`summary: ${survived.length}/${o.conns} connections survived, ${resets} resets, ${otherEnds} other errors, ${connectFailures} connect failures, ${echoes} echoes`);
  say(
    `         longest stall ${summary.maxStallMs} ms (conn ${summary.maxStallConn ?? '-'}, ended at ${(summary.maxStallEndedAtMs / 1000).toFixed(2)} s); ` +
      `per-connection longest stall p50 ${summary.p50StallMs} ms, p99 ${summary.p99StallMs} ms`,
  );
  if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
}

// -------------------------------------------------------------------------------- newconns --

interface HttpConn {
  sock: net.Socket;
  localPort: number;
  buf: string;
  onAnswer: ((name: string | null) => void) | null;
}

/** Sends one GET on c and resolves with the body (the server's name) or null (error/timeout). */
function httpGet(c: HttpConn, host: string, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish(null), timeoutMs);
    const finish = (v: string | null): void => {
      clearTimeout(timer);
      c.onAnswer = null;
      resolve(v);
    };
    c.onAnswer = finish;
    c.buf = '';
    c.sock.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n`);
  });
}

/** Parses one complete HTTP/1.1 response with Content-Length from c.buf, or returns undefined. */
function parseResponse(buf: string): string | null | undefined {
  const h = buf.indexOf('\r\n\r\n');
  if (h < 0) return undefined;
  const m = /content-length:\s*(\d+)/i.exec(buf.slice(0, h));
  if (!m) return null;
  const len = Number(m[1]);
  if (buf.length < h + 4 + len) return undefined;
  if (!/^HTTP\/1\.[01] 200 /.test(buf)) return null;
  return buf.slice(h + 4, h + 4 + len).trim();
}

async function newconns(o: Options): Promise<void> {
  const hardEnd = o.durationS * 1000;
  const answers: Record<string, number> = {};
  const rows: Array<{ localPort: number; server: string | null; error: string | null; ms: number }> = [];
  const open: HttpConn[] = [];
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  let errors = 0;
  let started = 0;
  say(`newconns: ${o.count} HTTP GETs to ${host}:${o.port}, each on a new connection, ${o.concurrency} at a time${o.holdS ? `, held open ${o.holdS} s` : ''}`);

  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const t = now();
      const sock = net.connect({ host: o.host, port: o.port });
      sock.setNoDelay(true);
      const c: HttpConn = { sock, localPort: 0, buf: '', onAnswer: null };
      let done = false;
      const fail = (why: string): void => {
        if (done) {
          c.onAnswer?.(null);
          return;
        }
        done = true;
        errors++;
        rows.push({ localPort: c.localPort, server: null, error: why, ms: round(now() - t) });
        sock.destroy();
        resolve();
      };
      const timer = setTimeout(() => fail('timeout'), o.connectTimeoutMs);
      sock.on('error', (e) => fail(errName(e)));
      sock.on('close', () => fail('closed'));
      sock.on('data', (d: Buffer) => {
        c.buf += d.toString('latin1');
        const r = parseResponse(c.buf);
        if (r !== undefined) c.onAnswer?.(r);
      });
      sock.once('connect', () => {
        c.localPort = sock.localPort ?? 0;
        c.onAnswer = (name) => {
          c.onAnswer = null;
          if (done) return;
          if (name === null) return fail('bad response');
          done = true;
          clearTimeout(timer);
          answers[name] = (answers[name] ?? 0) + 1;
          rows.push({ localPort: c.localPort, server: name, error: null, ms: round(now() - t) });
          if (o.holdS > 0) open.push(c);
          else sock.end();
          resolve();
        };
        sock.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: ${o.holdS > 0 ? 'keep-alive' : 'close'}\r\n\r\n`);
      });
    });

  const worker = async (): Promise<void> => {
    while (started < o.count && now() < hardEnd) {
      started++;
      await one();
    }
  };
  await Promise.race([
    Promise.all(Array.from({ length: Math.min(o.concurrency, o.count) }, worker)),
    new Promise((r) => setTimeout(r, hardEnd)),
  ]);
  const answeredAt = now();
  say(`${secs(answeredAt)} s  ${rows.length - errors}/${o.count} answered, ${errors} errors: ${JSON.stringify(answers)}`);

  let holdErrors = 0;
  let holdAnswers = 0;
  let holdMoved = 0;
  if (o.holdS > 0 && open.length > 0) {
    if (o.json) {
      process.stdout.write(JSON.stringify({ phase: 'holding', tMs: round(answeredAt), localPorts: open.map((c) => c.localPort), rows }) + '\n');
    }
    const holdEnd = Math.min(hardEnd, answeredAt + o.holdS * 1000);
    const byPort = new Map(rows.map((r) => [r.localPort, r.server]));
    while (now() + 2000 < holdEnd) {
      await new Promise((r) => setTimeout(r, 2000));
      const got = await Promise.all(open.map((c) => httpGet(c, host, 1500)));
      got.forEach((name, i) => {
        if (name === null) holdErrors++;
        else {
          holdAnswers++;
          if (name !== byPort.get(open[i]!.localPort)) holdMoved++;
        }
      });
    }
    await new Promise((r) => setTimeout(r, Math.max(0, holdEnd - now())));
    say(`${secs(now())} s  held ${open.length} connections: ${holdAnswers} keep-alive answers, ${holdMoved} from another server, ${holdErrors} errors`);
  }
  for (const c of open) c.sock.destroy();

  const summary = {
    mode: 'newconns',
    target: `${o.host}:${o.port}`,
    count: o.count,
    startedAtEpochMs,
    answered: rows.length - errors,
    errors,
    answers,
    holdAnswers,
    holdMoved,
    holdErrors,
    rows,
  };
  if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
}

// ------------------------------------------------------------------------------ udpqueries --

async function udpqueries(o: Options): Promise<void> {
  const family = net.isIPv6(o.host) ? 'udp6' : 'udp4';
  const hardEnd = o.durationS * 1000;
  const answers: Record<string, number> = {};
  const rows: Array<{ localPort: number; server: string | null; error: string | null; ms: number }> = [];
  let started = 0;
  say(`udpqueries: ${o.count} UDP queries to ${o.host}:${o.port}, each from a new socket, ${o.concurrency} at a time, ${o.connectTimeoutMs} ms for the answer`);
  const one = (n: number): Promise<void> =>
    new Promise((resolve) => {
      const t = now();
      const s = dgram.createSocket(family);
      const query = `query ${n} ${Math.random().toString(36).slice(2)}`;
      let localPort = 0;
      let done = false;
      const end = (server: string | null, error: string | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (server !== null) answers[server] = (answers[server] ?? 0) + 1;
        rows.push({ localPort, server, error, ms: round(now() - t) });
        s.close();
        resolve();
      };
      const timer = setTimeout(() => end(null, 'timeout'), o.connectTimeoutMs);
      s.on('error', (e) => end(null, errName(e)));
      s.on('message', (m: Buffer) => {
        // The echo: "<server name> " + the query.
        const text = m.toString('latin1');
        if (text.endsWith(` ${query}`)) end(text.slice(0, text.length - query.length - 1), null);
      });
      s.bind(0, () => {
        localPort = s.address().port;
        s.send(query, o.port, o.host, (e) => {
          if (e) end(null, errName(e));
        });
      });
    });
  const worker = async (): Promise<void> => {
    while (started < o.count && now() < hardEnd) await one(started++);
  };
  await Promise.race([
    Promise.all(Array.from({ length: Math.min(o.concurrency, o.count) }, worker)),
    new Promise((r) => setTimeout(r, hardEnd)),
  ]);
  const answered = rows.filter((r) => r.server !== null).length;
  say(`${secs(now())} s  ${answered}/${o.count} answered, ${rows.length - answered} unanswered: ${JSON.stringify(answers)}`);
  if (o.json) process.stdout.write(JSON.stringify({ mode: 'udpqueries', target: `${o.host}:${o.port}`, count: o.count, startedAtEpochMs, answered, errors: rows.length - answered, answers, rows }) + '\n');
}

// -------------------------------------------------------------------------------- udpflood --

async function udpflood(o: Options): Promise<void> {
  const family = net.isIPv6(o.host) ? 'udp6' : 'udp4';
  const endAt = o.durationS * 1000;
  const payload = Buffer.alloc(o.size, 'u');
  let sent = 0;
  let sendErrors = 0;
  let received = 0;
  const perSecond: Array<{ t: number; sent: number; received: number }> = [];
  let lastSent = 0;
  let lastReceived = 0;
  say(`udpflood: ${o.senders} senders of ${o.size}-byte UDP datagrams to ${o.host}:${o.port} for ${o.durationS} s`);
  say('     t     sent/s  echoes/s');

  const sockets = await Promise.all(
    Array.from({ length: o.senders }, () =>
      new Promise<dgram.Socket>((resolve) => {
        const s = dgram.createSocket({ type: family, sendBufferSize: 1 << 20, recvBufferSize: 1 << 20 });
        s.on('message', () => received++);
        s.on('error', () => sendErrors++);
        s.bind(0, () => resolve(s));
      }),
    ),
  );

  // Each sender keeps up to BURST datagrams in flight and refills as the kernel takes them.
  const BURST = 64;
  let running = true;
  const pump = (s: dgram.Socket): void => {
    let inFlight = 0;
    const refill = (): void => {
      while (running && inFlight < BURST) {
        inFlight++;
        s.send(payload, o.port, o.host, (err) => {
          inFlight--;
          if (err) sendErrors++;
          else sent++;
          if (inFlight === 0) setImmediate(refill);
        });
      }
    };
    refill();
  };
  for (const s of sockets) pump(s);

  let sec = 1;
  const second = (): void => {
    perSecond.push({ t: sec, sent: sent - lastSent, received: received - lastReceived });
    say(`${String(sec).padStart(6)}  ${String(sent - lastSent).padStart(9)}  ${String(received - lastReceived).padStart(8)}`);
    lastSent = sent;
    lastReceived = received;
    sec++;
  };
  const timer = setInterval(() => {
    while (now() >= sec * 1000 && sec * 1000 <= endAt) second();
  }, 50);
  await new Promise((r) => setTimeout(r, Math.max(0, endAt - now())));
  running = false;
  clearInterval(timer);
  while (sec * 1000 <= endAt) second();
  await new Promise((r) => setTimeout(r, 300)); // late echoes
  for (const s of sockets) s.close();
  say(`summary: ${sent} datagrams sent (${Math.round(sent / o.durationS)}/s), ${received} echoes, ${sendErrors} send errors`);
  if (o.json) {
    process.stdout.write(
      JSON.stringify({ mode: 'udpflood', target: `${o.host}:${o.port}`, durationS: o.durationS, startedAtEpochMs, senders: o.senders, size: o.size, sent, received, sendErrors, perSecond }) + '\n',
    );
  }
}

// -------------------------------------------------------------------------------- udpflows --

async function udpflows(o: Options): Promise<void> {
  const family = net.isIPv6(o.host) ? 'udp6' : 'udp4';
  const count = Math.min(o.count, 65536 - 1024);
  const payload = Buffer.from('udpflows');
  let sent = 0;
  let errors = 0;
  let confirmed = 0;
  let unanswered = 0;
  let next = 0;
  say(`udpflows: ${count} UDP flows to ${o.host}:${o.port}, from each source port 1024..${1023 + count} a datagram, its echo, a second datagram (the flow confirmed), ${o.concurrency} at a time`);
  // A flow is confirmed (replicated) by a client packet after the server's answer
  // (docs/flow-records.md): the second datagram follows the echo. No echo within
  // --connect-timeout-ms: the flow stays unconfirmed (counted unanswered).
  const one = (port: number): Promise<void> =>
    new Promise((resolve) => {
      const s = dgram.createSocket({ type: family });
      let timer: NodeJS.Timeout | undefined;
      let ended = false;
      const end = (): void => {
        if (ended) return;
        ended = true;
        if (timer !== undefined) clearTimeout(timer);
        s.close();
        resolve();
      };
      s.on('error', () => {
        errors++;
        end();
      });
      s.once('message', () => {
        if (timer !== undefined) clearTimeout(timer);
        s.send(payload, o.port, o.host, (err) => {
          if (err) errors++;
          else confirmed++;
          end();
        });
      });
      s.bind(port, () =>
        s.send(payload, o.port, o.host, (err) => {
          if (err) {
            errors++;
            end();
            return;
          }
          sent++;
          timer = setTimeout(() => {
            unanswered++;
            end();
          }, o.connectTimeoutMs);
        }),
      );
    });
  const worker = async (): Promise<void> => {
    while (next < count && now() < o.durationS * 1000) await one(1024 + next++);
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, count) }, worker));
  say(`summary: ${sent} flows sent, ${confirmed} confirmed (echo, second datagram), ${unanswered} unanswered, ${errors} errors, in ${(now() / 1000).toFixed(1)} s`);
  if (o.json) process.stdout.write(JSON.stringify({ mode: 'udpflows', target: `${o.host}:${o.port}`, startedAtEpochMs, count, sent, confirmed, unanswered, errors, seconds: Math.round(now() / 100) / 10 }) + '\n');
}

// ------------------------------------------------------------------------------------ main --

async function main(): Promise<void> {
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`traffic.ts: ${e.message}\n${USAGE}\n`);
      process.exit(2);
    }
    throw e;
  }
  // The hard bound: whatever happens to the traffic, this process ends.
  setTimeout(() => {
    process.stderr.write(`traffic.ts: hard time limit (${opts.durationS + 10} s) reached, exiting\n`);
    process.exit(0);
  }, (opts.durationS + 10) * 1000).unref();
  if (opts.mode === 'longlived') await longlived(opts);
  else if (opts.mode === 'newconns') await newconns(opts);
  else if (opts.mode === 'udpqueries') await udpqueries(opts);
  else if (opts.mode === 'udpflood') await udpflood(opts);
  else await udpflows(opts);
  // Sockets are destroyed; exit now rather than wait for lingering handles.
  setTimeout(() => process.exit(0), 50);
}

process.on('uncaughtException', (e) => {
  // A surprise from a socket is data too: report it and end normally.
  process.stderr.write(`traffic.ts: unexpected error: ${e.stack ?? String(e)}\n`);
  process.exit(0);
});

void main();
