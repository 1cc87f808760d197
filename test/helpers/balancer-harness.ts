/**
 * One Balancer (a cluster of one) for unit tests without root: its config in a temporary
 * directory with a cluster key (and an admin token when asked), a FakeTunDevice in place of
 * the TUN device, the admin endpoint on an ephemeral localhost port, logs kept as JSON lines.
 * The balancer is stopped and the directory removed in the test's teardown.
 */
import type { ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Balancer } from '../../src/control/balancer';
import { createLogger } from '../../src/logger';
import { FakeTunDevice, type FakeWritten } from './fake-tun';
import { formatIp } from '../../src/packet/addr';
import * as P from './packets';
import { CLIENT, VIP } from './fixtures';

export interface StartedBalancer {
  b: Balancer;
  dev: FakeTunDevice;
  /** host:port of the admin endpoint (from the balancer_started event). */
  admin: string;
  /** Log lines (pino JSON), in order. */
  logs: string[];
  /** The temporary directory and the config file in it (rewrite it to test reloads). */
  dir: string;
  path: string;
}

export interface StartOptions {
  /** The config text (YAML); its key_file must be `cluster.key`, its token_file `admin.token`. */
  config: string;
  /** Name of the fake TUN device (the config's tun.name). */
  tunName: string;
  /** Cluster key bytes (32). */
  key: Buffer;
  /** Writes `admin.token` with this token. */
  token?: string;
  /** FakeTunDevice queue limit. Default 10000. */
  queueLimit?: number;
  /** Logger level. Default 'debug'. */
  logLevel?: string;
}

/** A temporary directory with `cluster.key` and `tunlb.yaml` (`text`); the caller removes it. */
export function tempConfig(text: string, key: Buffer, token?: string): { dir: string; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tunlb-test-'));
  writeFileSync(join(dir, 'cluster.key'), key, { mode: 0o600 });
  if (token !== undefined) writeFileSync(join(dir, 'admin.token'), `${token}\n`, { mode: 0o600 });
  const path = join(dir, 'tunlb.yaml');
  writeFileSync(path, text);
  return { dir, path };
}

/** A Writable that collects log lines. */
export function logSink(): { logs: string[]; stream: Writable } {
  const logs: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) logs.push(l);
      cb();
    },
  });
  return { logs, stream };
}

export async function startBalancer(t: ExecutionContext, o: StartOptions): Promise<StartedBalancer> {
  const { dir, path } = tempConfig(o.config, o.key, o.token);
  const dev = new FakeTunDevice({ name: o.tunName, queueLimit: o.queueLimit ?? 10000 });
  const { logs, stream } = logSink();
  const b = await Balancer.start({
    configPath: path,
    id: 'lb1',
    device: dev,
    adminListen: '127.0.0.1:0',
    logger: createLogger({ level: o.logLevel ?? 'debug', name: 'lb1', destination: stream }),
  });
  t.teardown(async () => {
    await b.stop('teardown');
    rmSync(dir, { recursive: true, force: true });
  });
  const admin = logs.map((l) => JSON.parse(l) as { event?: string; admin?: string }).find((e) => e.event === 'balancer_started')?.admin ?? '';
  return { b, dev, admin, logs, dir, path };
}

/** Polls `cond` every 5 ms until it holds (true) or `ms` pass (false). */
export async function until(cond: () => boolean, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

/** Destination address of a packet the balancer wrote (the backend a forwarded packet went to). */
export function dstOf(w: FakeWritten): string {
  const L = P.layout(w.packet);
  return formatIp(w.packet, L.dstOff, L.alen);
}

/** Source port of a packet the balancer wrote. */
export function sportOf(w: FakeWritten): number {
  const L = P.layout(w.packet);
  return (w.packet[L.l4Off]! << 8) | w.packet[L.l4Off + 1]!;
}

/**
 * Sends one UDP packet per client port (fixtures CLIENT -> VIP:53) into the balancer's device
 * and returns port -> backend address; every one must be forwarded within 5 s (asserted).
 */
export async function udpFlows(t: ExecutionContext, s: StartedBalancer, ports: number[]): Promise<Map<number, string>> {
  s.dev.takeWritten();
  for (const p of ports) s.dev.inject(P.udp4(CLIENT, VIP, p, 53, new Uint8Array(4)));
  t.true(await until(() => s.dev.written.length >= ports.length, 5000), `forwarded ${s.dev.written.length}/${ports.length}`);
  const m = new Map<number, string>();
  for (const w of s.dev.takeWritten()) m.set(sportOf(w), dstOf(w));
  return m;
}
