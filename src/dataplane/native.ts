/**
 * Loader and typings of the project's N-API addon (native/*.cc, built by node-gyp from the
 * root binding.gyp into build/Release/tunlb_native.node). Only src/dataplane/ uses it, through
 * the wrappers tun-device.ts and udp-batch-socket.ts; nothing else should import it.
 *
 * The addon is loaded lazily, on first use, so code paths that never touch a device (unit tests
 * with FakeTunDevice, the CLI's --help) work without a build.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCodes, TunlbError } from '../errors';

/** Status words the batch calls update (Int32Array(4), one per device/socket). */
export const INFO_ERRORS = 0; // packets skipped because the kernel refused them (incremented)
export const INFO_LAST_ERRNO = 1; // errno of the last such error, or of a failed read
export const INFO_STOPPED_AGAIN = 2; // set to 1 when a write/send stopped at EAGAIN
export const INFO_TRUNCATED = 3; // packets/datagrams longer than their slot (size reported as 0)
export const INFO_LEN = 4;

/** uv_poll event bits (uv.h UV_READABLE, UV_WRITABLE). */
export const UV_READABLE = 1;
export const UV_WRITABLE = 2;

/** Bits of tunOpen's `want` argument and of its `features` result (native/tun.cc). */
export const WANT_MULTI_QUEUE = 1;
export const WANT_VNET_HDR = 2;
export const WANT_OFFLOAD = 4;
export const FEAT_MULTI_QUEUE = 1;
export const FEAT_VNET_HDR = 2;
export const FEAT_CSUM = 4;
export const FEAT_TSO4 = 8;
export const FEAT_TSO6 = 16;

export interface NativePoller {
  /** Starts (or changes) polling: events = UV_READABLE | UV_WRITABLE. */
  start(events: number): void;
  stop(): void;
  /** Stops polling and releases the uv handle; idempotent. Call before closing the fd. */
  close(): void;
  ref(): void;
  unref(): void;
}

export interface NativeAddon {
  readonly vnetHdrLen: number;
  closeFd(fd: number): void;
  tunOpen(name: string, mtu: number, want: number, netnsPath: string): { fd: number; name: string; features: number };
  tunRead(
    fd: number, buf: Uint8Array, offsets: Uint32Array, sizes: Uint32Array, slotSize: number, headroom: number,
    max: number, vnet: Uint8Array | null, info: Int32Array,
  ): number;
  tunWrite(
    fd: number, buf: Uint8Array, offsets: Uint32Array, sizes: Uint32Array, count: number, vnet: Uint8Array | null,
    info: Int32Array,
  ): number;
  udpOpen(
    family: 4 | 6, addr: Uint8Array, port: number, netnsPath: string,
    opts: [reuseAddr: number, rcvBuf: number, sndBuf: number, mcTtl: number, mcLoop: number],
    mcGroup: Uint8Array | null, mcIface: Uint8Array | null,
  ): { fd: number; port: number; gso: boolean };
  udpRecv(
    fd: number, buf: Uint8Array, offsets: Uint32Array, sizes: Uint32Array, slotSize: number, headroom: number,
    max: number, addrs: Uint8Array, ports: Uint16Array, info: Int32Array,
  ): number;
  udpSend(
    fd: number, family: 4 | 6, buf: Uint8Array, offsets: Uint32Array, sizes: Uint32Array, count: number,
    addrs: Uint8Array, ports: Uint16Array, info: Int32Array,
    chunk?: Uint16Array | null, hdrs?: Uint8Array, hdrOffs?: Uint32Array, hdrLens?: Uint16Array,
  ): number;
  /** rtnetlink RTM_GETNEIGH dump (native/neighbours.cc); state = NUD_* bits. */
  neighDump(netnsPath: string): Array<{ dst: string; dev: string; ifindex: number; family: 4 | 6; state: number; lladdr?: string }>;
  Poller: new (fd: number, callback: (status: number, events: number) => void) => NativePoller;
}

const ADDON_FILE = join('build', 'Release', 'tunlb_native.node');

/** Where the addon may be: the repo root seen from src/dataplane (tsx) or dist/src/dataplane (tsc). */
export function addonCandidates(): string[] {
  return [resolve(__dirname, '..', '..', ADDON_FILE), resolve(__dirname, '..', '..', '..', ADDON_FILE)];
}

let cached: NativeAddon | undefined;

/**
 * Loads the addon from the first existing candidate path (or `paths`, for tests). Throws
 * TunlbError(NATIVE_ADDON_MISSING) naming the fix when it is not built or does not load.
 */
export function loadNative(paths: string[] = addonCandidates()): NativeAddon {
  const found = paths.find((p) => existsSync(p));
  if (found === undefined) {
    throw new TunlbError(
      ErrorCodes.NATIVE_ADDON_MISSING,
      `native addon not built (looked for ${paths.join(', ')}): run \`npm ci\` or \`npx node-gyp rebuild\``,
      { paths },
    );
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require(found) as NativeAddon;
  } catch (cause) {
    throw new TunlbError(
      ErrorCodes.NATIVE_ADDON_MISSING,
      `native addon ${found} does not load (${(cause as Error).message}): rebuild it with \`npx node-gyp rebuild\``,
      { path: found },
      { cause },
    );
  }
}

/** The addon, loaded once. */
export function native(): NativeAddon {
  if (cached === undefined) cached = loadNative();
  return cached;
}

/**
 * Resolves a netns option: a name (`ip netns add NAME` creates /run/netns/NAME) or an absolute
 * path (e.g. /proc/PID/ns/net). Undefined/empty: the current namespace ('').
 */
export function netnsPath(netns: string | undefined): string {
  if (netns === undefined || netns === '') return '';
  return netns.startsWith('/') ? netns : `/run/netns/${netns}`;
}

/** The message for a netns option whose namespace does not exist (open netns / setns: ENOENT). */
export function netnsMissingMessage(netns: string | undefined): string {
  return `network namespace "${netns}" does not exist (${netnsPath(netns)}): create it with \`ip netns add ${netns}\``;
}

/** The errno name ("EPERM") of an Error thrown by the addon, or undefined. */
export function errnoCode(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** The failing syscall named by an Error thrown by the addon, or ''. */
export function errnoSyscall(e: unknown): string {
  const s = (e as { syscall?: unknown } | null)?.syscall;
  return typeof s === 'string' ? s : '';
}
