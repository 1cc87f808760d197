/**
 * The `tunlb` command line (commander). Each subcommand has --help; `tunlb --version` prints
 * the version. Errors are one clear line on stderr and a non-zero exit (below); a usage error
 * (unknown command or option, missing argument, unusable value) is that line and a hint naming
 * the --help to read, never the whole help.
 *
 *   tunlb run --config FILE --id ID      run one balancer (in the namespace/host that owns ID's address)
 *   tunlb check-config --config FILE     validate a config file and print what it describes
 *   tunlb stats [--admin HOST:PORT]      a balancer's counters from its admin endpoint
 *   tunlb flows [--admin HOST:PORT] [--vip V] [--backend A] [--client A] [--proto P] [--primary ID]
 *               [--backup ID] [--state S] [--min-age S] [--max-idle S] [--limit N] [--json]
 *                                        flows held by a balancer, filtered (src/control/flow-listing.ts)
 *   tunlb backends [--admin HOST:PORT] [--stats [--rate]] [--json]   backends' health and drain marks;
 *                                        --stats: their counters and health-check detail (src/cli/vips-text.ts)
 *   tunlb vips [--admin HOST:PORT] [--stats] [--rate] [--json]   per VIP and backend: connections, packets,
 *                                        bytes, rates (as ipvsadm -Ln --stats --rate; GET /api/v1/vips)
 *   tunlb status [--admin HOST:PORT] [--cluster] [--json]   membership as one balancer sees it; --cluster:
 *                                        every balancer at once (src/cli/cluster-text.ts; GET /api/v1/cluster)
 *   tunlb drain VIP ADDRESS / tunlb undrain VIP ADDRESS [--admin HOST:PORT]   drain marks (cluster-wide)
 *   tunlb weight VIP ADDRESS[:PORT] N|file [--admin HOST:PORT]   a backend's weight, cluster-wide, until the
 *                                        next reload (0..65535; 0: no new flows; file: back to the file's)
 *   tunlb maintenance VIP ADDRESS[:PORT] on|off [--admin HOST:PORT]   maintenance, cluster-wide, until the next
 *                                        reload: no new flows, flows continue, health checks go on
 *   tunlb reload [--admin HOST:PORT] [--cluster [--timeout S]]   reload the config file (as SIGHUP; exit 2 when
 *                                        refused); every runtime weight and maintenance returns to the
 *                                        file's, cluster-wide; --cluster: every balancer its own file, one
 *                                        line each (exit 2 one refused, 1 one did not answer)
 *   tunlb drain-self / undrain-self [--admin HOST:PORT]   withdraw this balancer's VIP announcement and
 *                                        hand its flows to their backups (maintenance), or undo it
 *   tunlb ready [--admin HOST:PORT] [--allow-down IDS] [--wait S]   exit 0 when serving with every peer
 *                                        serving and every checked backend healthy, else 3 (src/cli/readiness.ts)
 *   tunlb capture --iface IF [--filter BPF] [--count N] [--out F.pcap] [--decode]   packet capture
 *   tunlb logs [FILE...] [--event E] [--level L] [--balancer ID] [--brief]   JSON log lines for people (src/cli/logs.ts)
 *
 * Exit codes (docs/operations.md "Exit codes"): 0 done (`run`: stopped by SIGTERM/SIGINT);
 * 1 error (admin endpoint unreachable or refusing, a balancer that fails at start or at run
 * time); 2 usage or configuration problem (also a refused `reload`); 3 `ready`: not ready.
 *
 * `tunlb run` writes its log (JSON lines, src/logger.ts) on stderr. When that is not a terminal
 * (a log file, journald, a pipe), its last words are JSON lines too: a start-up failure is one
 * `start_failed` line (code, msg, errors[] for a config file), an uncaught exception one
 * `crashed` line; on a terminal they are plain sentences.
 *
 * The admin subcommands (stats, flows, status, backends, vips, drain, undrain, weight, maintenance,
 * drain-self, undrain-self, ready, reload) send the bearer
 * token of --token-file FILE (or $TUNLB_ADMIN_TOKEN_FILE) when the endpoint has admin.token_file.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadTokenFile } from '../config/secret';
import { Command, CommanderError, Option } from 'commander';
import { Balancer } from '../control/balancer';
import { loadConfig, formatConfigErrors } from '../config';
import { isTunlbError, ErrorCodes, TunlbError } from '../errors';
import { FLOW_STATE_NAMES, MAX_FLOW_LIMIT, parseFlowLimit, type FlowListing, type FlowRow } from '../control/flow-listing';
import { formatStats, formatSync, type SyncProgressText } from './stats-text';
import { readiness, type Readiness, type ReadinessBackend, type ReadinessStatus } from './readiness';
import { LOG_LEVELS } from '../config/schema';
import { writeFatal } from '../logger';
import { LOGS_LEVELS, printLogs } from './logs';
import { formatBackendStats, formatVips } from './vips-text';
import { maintenanceArg, overrideMessage, weightArg, weightCell, stateCell, overrideNote } from './runtime-text';
import type { ServicesBody } from '../control/service-view';
import type { ClusterBody } from '../control/cluster-status';
import type { ClusterReloadRow } from '../cluster/cluster-reload';
import { clusterReloadExit, formatCluster, formatClusterReload } from './cluster-text';

const DEFAULT_ADMIN = '127.0.0.1:9180';

/** The version of the package (package.json beside src/ or dist/src/). */
export function packageVersion(): string {
  for (const up of [['..', '..'], ['..', '..', '..']]) {
    try {
      const pkg = JSON.parse(readFileSync(join(__dirname, ...up, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'tunlb' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      /* not at this depth */
    }
  }
  return 'unknown';
}

/**
 * A commander usage error as one line and a hint: "tunlb: unknown option '--bogus'" and
 * "run 'tunlb flows --help' for its usage" (commander's own message, its "Did you mean"
 * suggestion folded into the line).
 */
export function usageErrorLines(e: CommanderError, argv: readonly string[], commands: readonly string[]): [string, string] {
  const msg = e.message.replace(/^error: /, '').replace(/\n\(Did you mean/g, ' (did you mean').replace(/\s*\n\s*/g, ' ').trim();
  const sub = argv.slice(2).find((a) => !a.startsWith('-'));
  const hint = sub !== undefined && commands.includes(sub) && e.code !== 'commander.unknownCommand'
    ? `run 'tunlb ${sub} --help' for its usage`
    : "run 'tunlb --help' for the commands";
  return [`tunlb: ${msg}`, hint];
}

export function main(argv: string[]): void {
  const program = new Command();
  /** Set once `tunlb run` starts its balancer: its failures are log events (header). */
  let running: { id: string } | undefined;
  program
    .name('tunlb')
    .description('Userspace L4 load balancer cluster over TUN: flows ranked by rendezvous, records replicated to every balancer')
    .version(`tunlb ${packageVersion()}`, '-V, --version', 'print the version')
    // Errors come back as CommanderError (exit codes and the one-line form are ours, below);
    // subcommands inherit both settings.
    .exitOverride()
    .configureOutput({ outputError: () => undefined });

  program
    .command('run')
    .description('run one balancer: read its TUN device, balance VIP flows to backends, write packets back')
    .requiredOption('-c, --config <file>', 'cluster configuration (YAML or JSON)')
    .requiredOption('-i, --id <id>', "this balancer's id in the config's balancers list")
    .addOption(new Option('--log-level <level>', 'override log.level').choices([...LOG_LEVELS]))
    .option('--admin <host:port>', 'override admin.listen ("off" to disable)')
    .action(async (opts: { config: string; id: string; logLevel?: string; admin?: string }) => {
      // Signals are handled from the start: one that arrives while the balancer is still
      // starting (bulk sync) stops it as soon as start returns; repeats are ignored.
      let balancer: Balancer | undefined;
      let stopping: string | undefined;
      const shutdown = (sig: string): void => {
        if (stopping !== undefined) return;
        stopping = sig;
        // A planned stop: withdraw, tell the peers, serve until they took over, then exit.
        if (balancer !== undefined) void balancer.leave(sig).then(() => process.exit(0));
      };
      process.on('SIGTERM', () => shutdown('SIGTERM'));
      process.on('SIGINT', () => shutdown('SIGINT'));
      // SIGHUP: reload the config file (refusals are logged by the balancer; it keeps running).
      process.on('SIGHUP', () => {
        balancer?.reload('signal SIGHUP').catch(() => {
          /* logged as config_reload_refused */
        });
      });
      running = { id: opts.id };
      if (!process.stderr.isTTY) {
        // The log stays JSON lines to the end (the header); on a terminal Node prints the stack.
        process.on('uncaughtException', (e: Error) => {
          writeFatal({ balancer: opts.id, event: 'crashed', err: { message: e.message, stack: e.stack } }, `balancer ${opts.id} crashed: ${e.message}`);
          process.exit(1);
        });
      }
      balancer = await Balancer.start({ configPath: opts.config, id: opts.id, logLevel: opts.logLevel, adminListen: opts.admin });
      if (stopping !== undefined) await balancer.leave(stopping).then(() => process.exit(0));
    });

  program
    .command('check-config')
    .description('validate a configuration file; print a summary, or every error with its field path')
    .requiredOption('-c, --config <file>', 'cluster configuration (YAML or JSON)')
    .option('--json', 'print the parsed configuration as JSON (the cluster key is redacted)')
    .action((opts: { config: string; json?: boolean }) => {
      const c = loadConfig(opts.config);
      if (opts.json) {
        console.log(JSON.stringify(c, null, 2));
        return;
      }
      console.log(`${c.source}: cluster "${c.cluster.id}", ${c.balancers.length} balancer(s), ${c.vips.length} VIP(s): valid`);
      for (const v of c.vips) {
        console.log(`  ${v.name} ${v.address.text} ${v.method} ${v.protocols.join('/')} → ${v.backends.map((b) => `${b.address.text}(w${b.weight})`).join(' ')}`);
      }
      for (const w of c.warnings) console.log(`  warning: ${w}`);
    });

  program
    .command('stats')
    .description("a balancer's counters, flow-table figures and device features")
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--json', 'machine-readable output (one line)')
    .action(async (opts: { admin: string; json?: boolean }) => {
      const body = await adminCall(opts, 'GET', '/api/v1/stats');
      console.log(opts.json ? JSON.stringify(body) : formatStats(body));
    });

  program
    .command('flows')
    .description('flows held by a balancer (VIP, primary, backup, backend, state, age), filtered; filters AND together, a comma list inside one is an OR')
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--vip <name>', 'flows of this VIP (name or address)')
    .option('--backend <addr>', 'flows to this backend (address in any spelling, IPv4 or IPv6)')
    .option('--client <addr>', 'flows from this client: ADDR, ADDR/PREFIX, ADDR:PORT or [IPv6]:PORT')
    .option('--proto <proto>', 'tcp, udp, icmp (ICMP and ICMPv6 echo), icmpv6, or a protocol number')
    .option('--primary <id>', "flows whose record's primary is this balancer id")
    .option('--backup <id>', "flows whose record's backup is this balancer id")
    .option('--state <state>', `flow state: ${Object.keys(FLOW_STATE_NAMES).join(', ')} ("tcp_" may be left out)`)
    .option('--min-age <s>', 'flows created at least S seconds ago')
    .option('--max-idle <s>', 'flows that saw a packet in the last S seconds')
    .option('--limit <n>', `list at most N matching flows (1..${MAX_FLOW_LIMIT})`, '100')
    .option('--json', 'machine-readable output (one line: total, scanned, matched, truncated, filters, flows)')
    .action(async (opts: FlowsOpts) => {
      const params = new URLSearchParams({ limit: String(parseFlowLimit(opts.limit)) });
      for (const [flag, param] of FLOW_FLAGS) {
        const v = opts[flag];
        if (v === undefined) continue;
        if (v.trim() === '') throw new TunlbError(ErrorCodes.USAGE, `flows --${param}: empty value`);
        params.set(param, v);
      }
      const body = (await adminCall(opts, 'GET', `/api/v1/flows?${params.toString()}`)) as FlowListing;
      if (opts.json) {
        console.log(JSON.stringify(body));
        return;
      }
      const f = Object.entries(body.filters ?? {}).map(([k, v]) => `--${k} ${v}`).join(' ');
      console.log(
        `${body.total} flow(s) in the table of ${opts.admin}; scanned ${body.scanned}, ${body.truncated ? `more than ${body.flows.length}` : body.matched} match${f ? ` (${f})` : ''}`,
      );
      if (body.flows.length > 0) console.log(flowTable(body.flows));
      if (body.truncated) console.log(`truncated: listing stopped at --limit ${body.limit}; more flows match (raise --limit or narrow the filters)`);
    });

  program
    .command('status')
    .description('cluster membership as one balancer sees it: peers, their state, probe RTT, flows by primary; recent events')
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--json', 'machine-readable output')
    .option('--cluster', 'every balancer of the cluster at once: status, config hash, flows, packet rates, RTT (from the summaries peers send over the control channel)')
    .action(async (opts: { admin: string; json?: boolean; cluster?: boolean }) => {
      if (opts.cluster) {
        const cb = (await adminCall(opts, 'GET', '/api/v1/cluster')) as ClusterBody;
        console.log(opts.json ? JSON.stringify(cb) : formatCluster(cb));
        return;
      }
      const body = (await adminCall(opts, 'GET', '/api/v1/status')) as StatusBody;
      if (opts.json) {
        console.log(JSON.stringify(body));
        return;
      }
      const s = body.self;
      console.log(`cluster ${body.cluster}: seen from ${s.id} (${s.status}, up ${s.uptimeS} s${s.syncedFrom ? `, synced from ${s.syncedFrom}` : ''}, config ${s.configHash ?? '-'})`);
      if (s.sync !== undefined) console.log(`  bulk sync: ${formatSync(s.sync)}`);
      console.log('  balancer  address          state    status    rtt ms   last ack   flows as primary / backup   config');
      for (const x of body.balancers) {
        const rtt = x.rttMs === null ? '-' : x.rttMs.toFixed(2);
        const ack = x.self ? 'self' : x.lastAckAgoMs === null ? '-' : `${Math.round(x.lastAckAgoMs)} ms`;
        const flows = `${x.flowsAsPrimary} / ${x.flowsAsBackup}`;
        const cfg = x.configHash ? `${x.configHash}${x.configMismatch ? ' (mismatch)' : ''}` : '-';
        console.log(
          `  ${x.id.padEnd(9)} ${x.address.padEnd(16)} ${String(x.state).padEnd(8)} ${shownStatus(x).padEnd(9)} ${rtt.padStart(6)}   ${ack.padStart(8)}   ${flows.padEnd(25)}   ${cfg}`,
        );
      }
      for (const x of body.balancers) if (x.configMismatch) console.log(`  config mismatch: ${x.id} runs ${x.configHash}, ${s.id} runs ${s.configHash ?? '-'}`);
      console.log(`  flows held here: ${body.flows.total ?? body.flows.active} of ${body.flows.capacity}`);
      const an = body.announce;
      if (an) {
        const holds = Object.entries(an.holds).map(([k, v]) => `${k}: ${v}`).join('; ');
        console.log(`  announcement: ${an.table === null ? 'off (no announce.table)' : `table ${an.table}`}${holds ? ` (held: ${holds})` : ''}`);
        for (const v of body.vips) {
          if (v.announced === null || v.announced === undefined) continue;
          console.log(`    ${v.name.padEnd(10)} ${v.address.padEnd(16)} ${v.announced.announced ? 'announced' : 'withdrawn'} since ${v.announced.since} (${v.announced.reason})`);
        }
      }
      const ev = body.events.slice(-8);
      if (ev.length > 0) {
        console.log('  recent events:');
        for (const e of ev) {
          const origin = typeof e['origin'] === 'string' ? ` [${e['origin']}]` : '';
          console.log(`    ${String(e['at'] ?? '')} ${String(e['type'] ?? '')} ${String(e['balancer'] ?? e['id'] ?? '')}${origin} ${String(e['reason'] ?? '')}`);
        }
      }
    });

  program
    .command('backends')
    .description("every backend's health, drain mark and eligibility (cluster-wide view of one balancer)")
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--stats', "each backend's connections, packets and bytes, and its health-check detail (last check, latency, failures, last change, time down)")
    .option('--rate', 'with --stats: per-second rates too')
    .option('--json', 'machine-readable output')
    .action(async (opts: { admin: string; json?: boolean; stats?: boolean; rate?: boolean }) => {
      if (opts.stats) {
        const vips = (await adminCall(opts, 'GET', '/api/v1/vips')) as ServicesBody;
        console.log(opts.json ? JSON.stringify(vips) : formatBackendStats(vips, { rate: opts.rate }));
        return;
      }
      const body = (await adminCall(opts, 'GET', '/api/v1/backends')) as { backends: BackendRow[] };
      if (opts.json) {
        console.log(JSON.stringify(body));
        return;
      }
      console.log(backendTable(body.backends, Date.now()));
    });

  program
    .command('vips')
    .description('every VIP and its backends with connections (total, active); --stats: packets and bytes in/out; --rate: per second (as ipvsadm -Ln --stats --rate)')
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--stats', 'packets and bytes in and out')
    .option('--rate', 'connections, packets and bytes per second (over the last 5 s)')
    .option('--json', 'machine-readable output (GET /api/v1/vips)')
    .action(async (opts: { admin: string; json?: boolean; stats?: boolean; rate?: boolean }) => {
      const body = (await adminCall(opts, 'GET', '/api/v1/vips')) as ServicesBody;
      console.log(opts.json ? JSON.stringify(body) : formatVips(body, { stats: opts.stats, rate: opts.rate }));
    });

  for (const [name, desc] of [
    ['drain', "drain a backend cluster-wide: no new flows; existing flows stay until they end or the VIP's drain_timeout_s passes (then they are cut)"],
    ['undrain', 'end the drain of a backend (cluster-wide)'],
  ] as const) {
    program
      .command(`${name} <vip> <address>`)
      .description(desc)
      .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
      .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
      .option('--json', 'machine-readable output')
      .action(async (vip: string, address: string, opts: { admin: string; json?: boolean }) => {
        const body = (await adminCall(opts, 'POST', `/api/v1/backends/${name}`, { vip, address })) as { changed: boolean; event?: { vipIndex?: number; backendIndex?: number } | null };
        if (opts.json) {
          console.log(JSON.stringify(body));
          return;
        }
        // What the backend does now, from the balancer's view after the command.
        const rows = ((await adminCall(opts, 'GET', '/api/v1/backends')) as { backends: BackendRow[] }).backends;
        const ev = body.event;
        const row =
          ev?.vipIndex !== undefined
            ? rows.find((x) => x.vipIndex === ev.vipIndex && x.backendIndex === ev.backendIndex)
            : rows.find((x) => x.vip === vip && sameBackend(x, address));
        console.log(drainMessage(name, vip, address, body.changed, row, Date.now()));
      });
  }

  program
    .command('weight <vip> <address> <weight>')
    .description("set a backend's weight on every balancer without editing the file, until the next reload: 0..65535 (0: no new flows, its flows stay), or \"file\" for the file's weight; ADDRESS may carry the backend's port (10.99.3.21:80)")
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--json', 'machine-readable output')
    .action(async (vip: string, address: string, weight: string, opts: { admin: string; json?: boolean }) => {
      const w = weightArg(weight);
      const body = (await adminCall(opts, 'POST', '/api/v1/backends/weight', { vip, address, weight: w ?? 'file' })) as OverrideAnswer;
      if (opts.json) return console.log(JSON.stringify(body));
      console.log(overrideMessage('weight', vip, address, body.changed, await backendRowOf(opts, vip, address)));
    });

  program
    .command('maintenance <vip> <address> <on|off>')
    .description('put a backend in maintenance on every balancer, until `off` or the next reload: no new flows, its flows continue (no timeout, unlike drain), its health checks go on')
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--json', 'machine-readable output')
    .action(async (vip: string, address: string, onOff: string, opts: { admin: string; json?: boolean }) => {
      const on = maintenanceArg(onOff);
      const body = (await adminCall(opts, 'POST', '/api/v1/backends/maintenance', { vip, address, maintenance: on })) as OverrideAnswer;
      if (opts.json) return console.log(JSON.stringify(body));
      console.log(overrideMessage('maintenance', vip, address, body.changed, await backendRowOf(opts, vip, address)));
    });

  for (const [name, desc] of [
    ['drain-self', "maintenance: withdraw this balancer's VIP announcement (routers stop sending it traffic) and hand its flows to their backups; it keeps serving what still reaches it"],
    ['undrain-self', 'end drain-self: serve and announce the VIPs again'],
  ] as const) {
    program
      .command(name)
      .description(desc)
      .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
      .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
      .option('--json', 'machine-readable output')
      .action(async (opts: { admin: string; json?: boolean }) => {
        const body = (await adminCall(opts, 'POST', `/api/v1/self/${name === 'drain-self' ? 'drain' : 'undrain'}`)) as { status: string; announce: Array<{ name: string; announced: boolean }> };
        if (opts.json) console.log(JSON.stringify(body));
        else console.log(`${name === 'drain-self' ? 'drained' : 'undrained'}: status ${body.status}; ${body.announce.map((v) => `${v.name} ${v.announced ? 'announced' : 'withdrawn'}`).join(', ') || 'no VIPs'}`);
      });
  }

  program
    .command('ready')
    .description('exit 0 when this balancer is serving, every peer is up and serving, and every health-checked backend is healthy; else exit 3 and say what is missing')
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--allow-down <ids>', 'comma list of balancers not required to be up (e.g. one stopped on purpose)', '')
    .option('--wait <seconds>', 'poll every 200 ms until ready, at most this long (0: ask once)', '0')
    .option('--json', 'machine-readable output')
    .action(async (opts: { admin: string; allowDown: string; wait: string; json?: boolean }) => {
      const waitS = Number(opts.wait);
      if (!Number.isFinite(waitS) || waitS < 0) throw new TunlbError(ErrorCodes.USAGE, `--wait must be a number of seconds >= 0, got ${JSON.stringify(opts.wait)}`);
      const allow = opts.allowDown.split(',').map((x) => x.trim()).filter(Boolean);
      const deadline = Date.now() + waitS * 1000;
      let r: Readiness;
      for (;;) {
        try {
          const status = (await adminCall(opts, 'GET', '/api/v1/status')) as ReadinessStatus;
          const backends = ((await adminCall(opts, 'GET', '/api/v1/backends')) as { backends: ReadinessBackend[] }).backends;
          r = readiness(status, backends, allow);
        } catch (e) {
          // Not reachable yet (the balancer is starting): not ready, and say why.
          if (!isTunlbError(e, ErrorCodes.ADMIN)) throw e;
          r = { ready: false, text: `not ready: ${e.message}`, missing: [e.message] };
        }
        if (r.ready || Date.now() >= deadline) break;
        await new Promise((res) => setTimeout(res, 200));
      }
      console.log(opts.json ? JSON.stringify(r) : r.text);
      if (!r.ready) process.exitCode = 3;
    });

  program
    .command('reload')
    .description('reload the config file of a running balancer (as SIGHUP): VIPs and backends change, established flows stay; an invalid config is refused')
    .option('-a, --admin <host:port>', 'admin endpoint of the balancer', DEFAULT_ADMIN)
    .option('--token-file <file>', 'bearer token of the admin endpoint (its admin.token_file); default: $TUNLB_ADMIN_TOKEN_FILE')
    .option('--json', 'machine-readable output')
    .option('--cluster', 'reload every balancer: this one, and each peer (asked over the control channel) its own file; one line per balancer; exit 2 if one refused, 1 if one did not answer')
    .option('--timeout <seconds>', 'with --cluster: how long peers get to answer (1-60)', '10')
    .action(async (opts: { admin: string; json?: boolean; cluster?: boolean; timeout: string }) => {
      if (opts.cluster) {
        const t = Number(opts.timeout);
        if (!(Number.isFinite(t) && t >= 1 && t <= 60)) throw new TunlbError(ErrorCodes.USAGE, `--timeout ${opts.timeout}: expected seconds, 1..60`);
        const r = (await adminCall(opts, 'POST', '/api/v1/reload/cluster', { timeoutMs: Math.round(t * 1000) })) as { ok: boolean; balancers: ClusterReloadRow[] };
        console.log(opts.json ? JSON.stringify(r) : formatClusterReload(r.balancers));
        process.exitCode = clusterReloadExit(r.balancers);
        return;
      }
      let body: { error?: string; errors?: string[] } & Record<string, unknown>;
      try {
        body = (await adminCall(opts, 'POST', '/api/v1/reload')) as typeof body;
      } catch (e) {
        const b = isTunlbError(e) ? (e.details?.['body'] as typeof body | undefined) : undefined;
        if (b?.errors === undefined) throw e;
        console.error(`tunlb: reload refused, the running config stays: ${b.error ?? ''}`);
        for (const line of b.errors) console.error(line);
        process.exit(2);
      }
      if (opts.json) {
        console.log(JSON.stringify(body));
        return;
      }
      const r = body as unknown as { generation: number; vips: { added: string[]; removed: string[] }; backends: { added: string[]; removed: string[]; reweighted: string[] }; flows: { remapped: number; removed: number; cut: number }; restartNeeded: string[]; overridesCleared?: string[] };
      console.log(`reloaded: forwarding table generation ${r.generation}`);
      console.log(`  VIPs added: ${r.vips.added.join(', ') || '-'}; removed: ${r.vips.removed.join(', ') || '-'}`);
      console.log(`  backends added: ${r.backends.added.join(', ') || '-'}; removed: ${r.backends.removed.join(', ') || '-'}; reweighted: ${r.backends.reweighted.join(', ') || '-'}`);
      console.log(`  flows remapped ${r.flows.remapped}, removed ${r.flows.removed}, on removed backends ${r.flows.cut} (TCP reset, others moved at their next packet)`);
      if (r.restartNeeded.length > 0) console.log(`  changed but applied only after a restart: ${r.restartNeeded.join(', ')}`);
      if ((r.overridesCleared?.length ?? 0) > 0) console.log(`  runtime overrides back to the file's values, on every balancer: ${r.overridesCleared!.join(', ')}`);
    });

  // tunlb capture (src/capture/capture.ts; recipes in docs/operations.md)
  const ints = (v: string, prev: number[] = []): number[] => [...prev, ...v.split(',').map(Number)];
  program
    .command('capture')
    .description('capture packets with libpcap into a pcap file (tcpdump -r reads it) and/or decode tunlb traffic (records, probes, encap) into lines')
    .option('-i, --iface <if>', 'interface to capture on (run inside its namespace: ip netns exec tunlb-lb1 tunlb capture ...)')
    .option('-f, --filter <bpf>', "BPF filter, pcap-filter(7) syntax, e.g. 'udp port 7946'")
    .option('-n, --count <n>', 'stop after N packets (0: no limit)', '0')
    .option('--duration-s <s>', 'stop after S seconds (0: no limit); SIGINT also stops', '0')
    .option('-o, --out <file.pcap>', 'write a pcap file')
    .option('-d, --decode', 'print one line per packet: flow records, probes, sync, encapsulated packets')
    .option('-k, --key-file <file>', 'cluster key to verify control datagrams (default: the --config key; else "unverified")')
    .option('-c, --config <file>', 'tunlb config: balancer ids, backend addresses, ports, cluster key')
    .option('-r, --read <file.pcap>', 'decode an existing pcap file instead of capturing (no root needed)')
    .option('--control-port <ports>', 'control and probe ports to decode (comma list; default 7946,7948 or the config\'s)', ints)
    .option('--data-port <ports>', 'data (encapsulation) ports to decode (default 7947 or the config\'s)', ints)
    .action(async (o: { iface?: string; filter?: string; count: string; durationS: string; out?: string; decode?: boolean; keyFile?: string; config?: string; read?: string; controlPort?: number[]; dataPort?: number[] }) => {
      const { runCapture } = await import('../capture/capture');
      await runCapture({ ...o, count: Number(o.count), durationS: Number(o.durationS), controlPorts: o.controlPort, dataPorts: o.dataPort });
    });

  program
    .command('logs [files...]')
    .description('print JSON log lines (a balancer\'s stderr, /run/tunlb-lab/logs/lbN.log) for people, one line per event; reads stdin without files')
    .option('-e, --event <names>', 'only these events (comma list; docs/logs.md lists them)')
    .addOption(new Option('-l, --level <level>', 'only this level and above').choices([...LOGS_LEVELS]))
    .option('-b, --balancer <id>', "only this balancer's lines")
    .option('--brief', "leave out the events' fields (time, level, balancer, event and message only)")
    .option('--color', 'colours (default: when the output is a terminal)')
    .option('--no-color', 'no colours')
    .action(async (files: string[], o: { event?: string; level?: string; balancer?: string; brief?: boolean; color?: boolean }) => {
      await printLogs(files, { ...o, color: o.color ?? process.stdout.isTTY === true });
    });

  program.parseAsync(argv).catch((e: unknown) => {
    if (e instanceof CommanderError) {
      // --help and --version: printed, exit 0; `tunlb` alone: the help on stderr, exit 2.
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') process.exit(0);
      if (e.code === 'commander.help' || e.code === 'commander.executeSubCommandAsync') process.exit(2);
      const [line, hint] = usageErrorLines(e, argv, program.commands.map((c) => c.name()));
      console.error(line);
      console.error(hint);
      process.exit(2);
    }
    const code = isTunlbError(e) ? (e.code === ErrorCodes.USAGE || e.code.startsWith('TUNLB_CONFIG') ? 2 : 1) : 1;
    if (running !== undefined && !process.stderr.isTTY) {
      // `tunlb run` into a log file: its last word is a log line too (header).
      const errors = isTunlbError(e, ErrorCodes.CONFIG_INVALID) ? formatConfigErrors(e).split('\n') : undefined;
      const message = isTunlbError(e) ? e.message : `unexpected error: ${(e as Error)?.message ?? String(e)}`;
      writeFatal(
        { balancer: running.id, event: 'start_failed', code: isTunlbError(e) ? e.code : 'unexpected', exitCode: code, ...(errors ? { errors } : {}), ...(isTunlbError(e) ? {} : { stack: (e as Error)?.stack }) },
        message,
      );
      process.exit(code);
    }
    if (isTunlbError(e, ErrorCodes.CONFIG_INVALID)) {
      console.error(`tunlb: ${e.message}`);
      console.error(formatConfigErrors(e));
      process.exit(2);
    }
    if (isTunlbError(e)) {
      console.error(`tunlb: ${e.message} [${e.code}]`);
      if (e.code === ErrorCodes.USAGE) {
        const sub = argv.slice(2).find((a) => !a.startsWith('-'));
        if (sub !== undefined && program.commands.some((c) => c.name() === sub)) console.error(`run 'tunlb ${sub} --help' for its usage`);
      }
      process.exit(code);
    }
    console.error(`tunlb: unexpected error: ${(e as Error)?.stack ?? String(e)}`);
    process.exit(1);
  });
}

interface BackendRow {
  vip: string;
  vipIndex?: number;
  backendIndex?: number;
  backend: string;
  port: number | null;
  weight: number;
  /** The file's weight and the runtime override (older balancers: absent). */
  fileWeight?: number;
  weightOverride?: number | null;
  maintenance?: boolean;
  overrideBy?: string | null;
  overrideAtMs?: number | null;
  state: string;
  health: string;
  drained: boolean;
  /** Wall ms; null when not drained or without a drain timeout (older balancers: absent). */
  drainDeadlineMs?: number | null;
  eligible: boolean;
  reason: string;
  /** Flows held on it (older balancers: absent). */
  flows?: number;
}

/** " until 12:04:31Z (in 4m10s)" for a draining backend with a drain timeout, else "". */
function drainNote(x: BackendRow, nowMs: number): string {
  if (x.state !== 'draining' || typeof x.drainDeadlineMs !== 'number') return '';
  const left = Math.max(0, Math.round((x.drainDeadlineMs - nowMs) / 1000));
  const at = new Date(x.drainDeadlineMs).toISOString().slice(11, 19);
  return ` until ${at}Z (in ${left >= 60 ? `${Math.floor(left / 60)}m` : ''}${left % 60}s)`;
}

/** A peer's status as shown: "-" while it is not up (a dead peer's status is not known). */
function shownStatus(x: { self: boolean; state: string; status: string }): string {
  return x.self || x.state === 'up' || x.state === 'suspect' ? String(x.status) : '-';
}

/** `tunlb backends` as an aligned table with a header row. */
export function backendTable(rows: readonly BackendRow[], nowMs: number): string {
  const head = ['VIP', 'BACKEND', 'WEIGHT', 'FLOWS', 'STATE', 'HEALTH', 'NEW FLOWS', 'WHY'];
  const cells = rows.map((x) => [
    x.vip,
    `${x.backend}${x.port !== null ? `:${x.port}` : ''}`,
    weightCell(x),
    x.flows !== undefined ? String(x.flows) : '-',
    stateCell(x),
    x.health,
    x.eligible ? 'yes' : 'no',
    `${overrideNote(x)}${x.reason}${drainNote(x, nowMs)}`,
  ]);
  if (cells.length === 0) return 'no backends';
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => c.map((v, i) => (i === 2 || i === 3 ? v.padStart(w[i]!) : v.padEnd(w[i]!))).join('  ').trimEnd();
  return [line(head), ...cells.map(line)].join('\n');
}

/** Whether a backends row is the backend the operator named ("10.99.3.22", "10.99.3.22:80", any IPv6 spelling). */
function sameBackend(x: BackendRow, address: string): boolean {
  const norm = (a: string): string => a.replace(/^\[|\]$/g, '').toLowerCase();
  const m = /^\[([^\]]+)\](?::(\d+))?$|^([^:]+):(\d+)$/.exec(address);
  const host = m ? (m[1] ?? m[3]!) : address;
  const port = m ? Number(m[2] ?? m[4]) : null;
  if (port !== null && x.port !== port) return false;
  if (norm(x.backend) === norm(host)) return true;
  try {
    return new URL(`http://[${norm(x.backend)}]/`).host === new URL(`http://[${norm(host)}]/`).host;
  } catch {
    return false;
  }
}

/**
 * What `tunlb drain` / `undrain` says: what the backend does now ("draining until 12:04:31Z
 * (in 5m0s): no new flows; its 12 flows stay until they end, then the deadline cuts the rest"),
 * never just "drained" (a drain takes drain_timeout_s to finish).
 */
export function drainMessage(cmd: 'drain' | 'undrain', vip: string, address: string, changed: boolean, row: BackendRow | undefined, nowMs: number): string {
  const who = `${vip} ${address}`;
  if (cmd === 'undrain') {
    const now = row ? `: ${row.state}${row.eligible ? ', takes new flows again' : ' (no new flows until it is healthy)'}` : '';
    return changed ? `${who}: drain ended${now}` : `${who}: was not drained${now}`;
  }
  const flows = row?.flows !== undefined ? `its ${row.flows} flow(s)` : 'its flows';
  const already = changed ? '' : ' (already drained)';
  if (row === undefined) return `${who}: draining${already}: no new flows`;
  if (row.state === 'drained') return `${who}: drained${already}: the drain timeout has passed; no new flows, and ${flows} are cut`;
  if (typeof row.drainDeadlineMs === 'number') {
    return `${who}: draining${already}${drainNote(row, nowMs)}: no new flows; ${flows} stay until they end, and the deadline cuts the rest`;
  }
  return `${who}: draining${already}: no new flows; ${flows} stay until they end (no drain_timeout_s: no deadline)`;
}

/**
 * One admin API call; returns the JSON body of a 2xx answer. Throws TunlbError(ADMIN) when the
 * endpoint cannot be reached, or with the server's `error` message on a 4xx/5xx answer.
 */
async function adminCall(opts: AdminOpts, method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
  const admin = opts.admin;
  const headers: Record<string, string> = {};
  // The endpoint takes POST bodies as application/json only (src/control/admin-guard.ts).
  const payload = method === 'POST' ? JSON.stringify(body ?? {}) : undefined;
  if (payload !== undefined) headers['content-type'] = 'application/json';
  const token = adminToken(opts);
  if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
  let res: Response;
  let json: { error?: string } & Record<string, unknown>;
  try {
    res = await fetch(`http://${admin}${path}`, {
      method,
      headers,
      body: payload,
    });
    json = (await res.json()) as typeof json;
  } catch (e) {
    throw new TunlbError(ErrorCodes.ADMIN, `cannot reach the admin endpoint ${admin}: ${(e as Error).message} (is the balancer running? in which namespace?)`);
  }
  if (!res.ok) {
    // A request the endpoint refuses as unusable (a bad filter value): a usage error, its message as is.
    if (res.status === 400 && json['code'] === ErrorCodes.USAGE && typeof json.error === 'string') {
      throw new TunlbError(ErrorCodes.USAGE, json.error, { status: res.status, body: json });
    }
    const hint = res.status === 401 ? ' (pass --token-file FILE or set TUNLB_ADMIN_TOKEN_FILE)' : '';
    throw new TunlbError(ErrorCodes.ADMIN, `${admin}${path}: ${json.error ?? `HTTP ${res.status}`}${hint}`, { status: res.status, body: json });
  }
  return json;
}

/** The backends row of VIP `vip` (name) and backend `address` (any spelling, optional port) after a command. */
async function backendRowOf(opts: AdminOpts, vip: string, address: string): Promise<BackendRow | undefined> {
  const rows = ((await adminCall(opts, 'GET', '/api/v1/backends')) as { backends: BackendRow[] }).backends;
  return rows.find((x) => (x.vip === vip || String(x.vipIndex) === vip) && sameBackend(x, address));
}

/** The answer of POST /api/v1/backends/weight and /maintenance. */
interface OverrideAnswer {
  changed: boolean;
  event: { weight: number; fileWeight: number; maintenance: boolean; by: string } | null;
  backend: BackendRow | null;
}

interface AdminOpts {
  admin: string;
  tokenFile?: string;
}

/** The bearer token from --token-file or $TUNLB_ADMIN_TOKEN_FILE (trimmed), or undefined. */
function adminToken(opts: AdminOpts): string | undefined {
  const file = opts.tokenFile ?? process.env['TUNLB_ADMIN_TOKEN_FILE'];
  if (file === undefined || file === '') return undefined;
  // The same rules as the balancer's admin.token_file (src/config/secret.ts): a file group or
  // others may access is refused, as ssh refuses such a private key.
  const r = loadTokenFile(file);
  if (!r.ok) throw new TunlbError(ErrorCodes.USAGE, `admin ${r.message} (fix: ${r.fix})`);
  return r.token;
}

interface FlowsOpts {
  admin: string;
  tokenFile?: string;
  limit: string;
  json?: boolean;
  vip?: string;
  backend?: string;
  client?: string;
  proto?: string;
  primary?: string;
  backup?: string;
  state?: string;
  minAge?: string;
  maxIdle?: string;
}

/** `tunlb flows` options and the GET /api/v1/flows parameters they become. */
const FLOW_FLAGS: ReadonlyArray<readonly [Exclude<keyof FlowsOpts, 'admin' | 'tokenFile' | 'limit' | 'json'>, string]> = [
  ['vip', 'vip'],
  ['backend', 'backend'],
  ['client', 'client'],
  ['proto', 'proto'],
  ['primary', 'primary'],
  ['backup', 'backup'],
  ['state', 'state'],
  ['minAge', 'min-age'],
  ['maxIdle', 'max-idle'],
];

/** Flow rows as an aligned text table. */
function flowTable(rows: FlowRow[]): string {
  const head = ['KEY', 'VIP', 'PRIMARY', 'BACKUP', 'BACKEND', 'STATE', 'PACKETS', 'AGE_S', 'IDLE_S'];
  const cells = rows.map((r) => [r.key, r.vip, r.primary, r.backup, r.backend, r.stateName ?? String(r.state), String(r.packets), String(r.ageS), String(r.idleS)]);
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => c.map((x, i) => (i >= 6 ? x.padStart(w[i]!) : x.padEnd(w[i]!))).join('  ').trimEnd();
  return [line(head), ...cells.map(line)].join('\n');
}

interface StatusBody {
  cluster: string;
  self: { id: string; status: string; uptimeS: number; syncedFrom: string | null; sync?: SyncProgressText | null; configHash?: string };
  balancers: Array<{
    id: string;
    address: string;
    self: boolean;
    state: string;
    status: string;
    rttMs: number | null;
    lastAckAgoMs: number | null;
    flowsAsPrimary: number;
    flowsAsBackup: number;
    configHash?: string;
    configMismatch?: boolean;
  }>;
  flows: { active: number; capacity: number; total?: number };
  announce?: { table: number | null; ready: boolean; holds: Record<string, string> } | null;
  vips: Array<{ name: string; address: string; announced?: { announced: boolean; reason: string; since: string } | null }>;
  events: Array<Record<string, unknown>>;
}
