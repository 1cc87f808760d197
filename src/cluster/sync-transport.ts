/**
 * TCP for the bulk sync stream (src/cluster/sync-stream.ts): the listener every balancer of a
 * cluster runs on its own address and control port number (TCP; the UDP socket of that number
 * carries probes and records), and the requester's connect.
 *
 * Contracts:
 * - The listener accepts a connection only from a configured balancer's address (not its
 *   own); any other source is closed at once and reported through `onReject` (counted as
 *   not_a_peer). Authentication is the stream's own (HMAC with the cluster key, per frame);
 *   the address check only keeps strangers from costing a handshake.
 * - Connections get TCP_NODELAY (frames are written whole; the last one must not wait) and
 *   keep the kernel's buffer autotuning: flow control is TCP's (the stream pauses reading when
 *   its apply queue is long, the window closes, the sender's writes queue, it waits).
 * - The requester binds its side to its own configured address, so the responder sees the
 *   address it checks. Errors arrive as the socket's 'error' then 'close' events (the session
 *   reads ECONNREFUSED from them).
 * - close() stops listening and destroys accepted connections that are still open. Idempotent.
 */
import net from 'node:net';
import type { Logger } from '../logger';
import { ErrorCodes, TunlbError } from '../errors';

export interface SyncListenerOptions {
  /** This balancer's address (its configured `address`). */
  address: string;
  /** TCP port (the balancer's control port number). */
  port: number;
  /** Configured balancer addresses by index (text form, as in the config). */
  peers: readonly string[];
  selfIndex: number;
  /** A connection from balancer `peer`. */
  onConnection: (socket: net.Socket, peer: number) => void;
  /** A connection from an address that is no peer's (already closed). */
  onReject?: (address: string) => void;
  log?: Logger;
}

/** "::ffff:10.0.0.1" -> "10.0.0.1" (dual-stack sockets report IPv4 peers mapped). */
function normalise(a: string | undefined): string {
  if (a === undefined) return '';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

export class SyncListener {
  readonly #server: net.Server;
  readonly #open = new Set<net.Socket>();
  #closed = false;

  private constructor(server: net.Server) {
    this.#server = server;
  }

  /** Listens on address:port; throws TunlbError SOCKET (with the fix) when it cannot. */
  static async open(opts: SyncListenerOptions): Promise<SyncListener> {
    const byAddr = new Map<string, number>();
    opts.peers.forEach((a, i) => {
      if (i !== opts.selfIndex) byAddr.set(normalise(a), i);
    });
    const server = net.createServer({ noDelay: true });
    const l = new SyncListener(server);
    server.maxConnections = Math.max(4, 2 * opts.peers.length);
    server.on('connection', (sock) => {
      const from = normalise(sock.remoteAddress);
      const peer = byAddr.get(from);
      if (peer === undefined || l.#closed) {
        sock.destroy();
        opts.onReject?.(from);
        return;
      }
      l.#open.add(sock);
      sock.once('close', () => l.#open.delete(sock));
      opts.onConnection(sock, peer);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new TunlbError(
            ErrorCodes.SOCKET,
            `cannot listen for bulk sync on tcp ${opts.address}:${opts.port}: ${e.code ?? e.message} (another balancer on this host/namespace? set balancers[${opts.selfIndex}].control_port)`,
          ),
        ),
      );
      server.listen({ host: opts.address, port: opts.port, exclusive: true }, () => resolve());
    });
    server.removeAllListeners('error');
    server.on('error', (e) => opts.log?.warn({ event: 'sync_listener_error', err: e.message }, 'bulk sync listener error'));
    return l;
  }

  /** The bound port (useful with port 0 in tests). */
  get port(): number {
    const a = this.#server.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const s of this.#open) s.destroy();
    this.#open.clear();
  }
}

/** Opens the requester's connection to a peer's sync listener, from `localAddress`. */
export function connectSync(address: string, port: number, localAddress?: string): net.Socket {
  const sock = net.connect({ host: address, port, noDelay: true, ...(localAddress !== undefined ? { localAddress } : {}) });
  return sock;
}
