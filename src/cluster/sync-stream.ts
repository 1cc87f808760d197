/**
 * The bulk sync stream (protocol/tunlb.proto "bulk sync stream"): what its two ends share. The
 * responder, which answers sync requests over one connection each, is SyncStreamServer
 * (src/cluster/sync-responder.ts); one requester's session over one connection is SyncSession
 * (src/cluster/sync-session.ts). Pure logic over a SyncConnection (a net.Socket in production,
 * src/cluster/sync-transport.ts; an in-memory pipe in tests): no socket, no timer of its own
 * except the session's watchdog and the responder's handshake deadline (both unref'd).
 * src/cluster/sync-runner.ts resumes and retries sessions across peers; the wire format and
 * its MACs are src/protocol/sync-frame.ts.
 */
import { tunlb } from '../protocol';
import type { MacKey } from '../protocol';
import type { SyncHost } from './bulk-sync';

/** What the stream needs of a connection; net.Socket has it. */
export interface SyncConnection {
  /** Queues bytes; the return value is ignored (writableLength is the flow-control signal). */
  write(data: Uint8Array): boolean;
  /** Bytes queued and not yet handed to the kernel. */
  readonly writableLength: number;
  pause(): unknown;
  resume(): unknown;
  /** Half-closes after the queued bytes. */
  end(): unknown;
  destroy(): unknown;
  on(event: 'data', fn: (b: Buffer) => void): unknown;
  on(event: 'drain' | 'close', fn: () => void): unknown;
  on(event: 'error', fn: (e: Error & { code?: string }) => void): unknown;
}

/** Who this balancer is on the stream. */
export interface SyncStreamIdentity {
  /** The cluster key (macKey of it). */
  key: MacKey;
  clusterId: number;
  selfIndex: number;
  incarnation: number;
  balancerCount: number;
}

const Reason = tunlb.v1.SyncRefusal.Reason;
/** SyncRefusal.Reason as log/counter names. */
export function refusalName(r: number): string {
  switch (r) {
    case Reason.BUSY:
      return 'busy';
    case Reason.NOT_SERVING:
      return 'not_serving';
    case Reason.BAD_REQUEST:
      return 'bad_request';
    case Reason.BAD_VERSION:
      return 'bad_version';
    case Reason.SHUTTING_DOWN:
      return 'shutting_down';
    default:
      return 'unspecified';
  }
}

/** "lb2" (the host's peerName) or "balancer 1", for log lines. */
export function peerLabel(host: SyncHost, index: number): string {
  return host.peerName?.(index) ?? `balancer ${index}`;
}

