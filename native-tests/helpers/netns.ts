/**
 * Network namespaces for kernel-facing tests. Nothing is ever created in the root namespace:
 * tests make their own `tunlb-t-*` namespaces and put devices, addresses and routes there.
 * Every namespace created here is removed by its test's teardown, and, as a trap, on process
 * exit, SIGINT and SIGTERM (AVA's timeout) too. Every command is bounded in time.
 */
import type { ExecutionContext } from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';

const created = new Set<string>();
let counter = 0;
let trapped = false;

function trap(): void {
  if (trapped) return;
  trapped = true;
  const cleanup = () => {
    for (const ns of created) spawnSync('ip', ['netns', 'del', ns], { timeout: 5000 });
    created.clear();
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      cleanup();
      process.exit(130);
    });
  }
}

/** A fresh namespace name for this process: tunlb-t-<tag>-<pid>-<n>. */
export function uniqueNetnsName(tag: string): string {
  return `tunlb-t-${tag}-${process.pid}-${counter++}`;
}

export interface NetnsOptions {
  /** Keep IPv6 on (off by default: no router solicitations/MLD reports on new devices). */
  ipv6?: boolean;
}

/** `ip netns add NAME`, loopback up, IPv6 off unless asked. Removed at exit at the latest. */
export function createNetns(name: string, opts: NetnsOptions = {}): void {
  if (!name.startsWith('tunlb-t-')) throw new Error(`test namespaces are named tunlb-t-*: ${name}`);
  trap();
  execFileSync('ip', ['netns', 'add', name], { timeout: 5000 });
  created.add(name);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { timeout: 5000 });
  if (!opts.ipv6) {
    runIn(name, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  }
}

/** `ip netns del NAME` (no error if it is already gone). */
export function removeNetns(name: string): void {
  spawnSync('ip', ['netns', 'del', name], { timeout: 5000 });
  created.delete(name);
}

/** Runs a command inside the namespace (argv array, or a string split on spaces); returns stdout. */
export function runIn(ns: string, cmd: string[] | string, timeoutMs = 10000): string {
  const argv = typeof cmd === 'string' ? cmd.split(' ').filter((s) => s !== '') : cmd;
  return execFileSync('ip', ['netns', 'exec', ns, ...argv], { timeout: timeoutMs, encoding: 'utf8' });
}

/** `ip -n NS ...args` (addresses, routes, links inside the namespace). */
export function ipIn(ns: string, args: string[] | string): string {
  const argv = typeof args === 'string' ? args.split(' ').filter((s) => s !== '') : args;
  return execFileSync('ip', ['-n', ns, ...argv], { timeout: 5000, encoding: 'utf8' });
}

/** Creates a namespace that the test's teardown removes; returns its name. */
export function testNetns(t: ExecutionContext, tag: string, opts?: NetnsOptions): string {
  const ns = uniqueNetnsName(tag);
  createNetns(ns, opts);
  t.teardown(() => removeNetns(ns));
  return ns;
}
