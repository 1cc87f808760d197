/**
 * The admin HTTP endpoint of one balancer: JSON views of its state for the CLI, tests and
 * operators. Bound to localhost by default (config `admin.listen`); never on the packet path.
 *
 *   GET /api/v1/stats    counters, flow-table figures, device features (BalancerSnapshot)
 *   GET /api/v1/flows    flows held by this balancer: ?limit=N (default 1000, max 100000)
 *   GET /healthz         200 "ok" while serving
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TunlbError, ErrorCodes } from '../errors';
import type { Balancer } from './balancer';
import { listFlows } from './flow-listing';

export class AdminServer {
  readonly #server: Server;
  private constructor(server: Server) {
    this.#server = server;
  }

  get address(): string {
    const a = this.#server.address() as AddressInfo | null;
    return a ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : 'closed';
  }

  static listen(hostPort: string, b: Balancer): Promise<AdminServer> {
    const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(hostPort);
    if (!m) throw new TunlbError(ErrorCodes.USAGE, `admin listen address "${hostPort}" is not host:port`);
    const server = createServer((req, res) => handle(req, res, b));
    return new Promise((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new TunlbError(
            ErrorCodes.ADMIN,
            `admin endpoint cannot listen on ${hostPort}: ${e.code ?? e.message} (is another balancer using it? set admin.listen)`,
          ),
        ),
      );
      server.listen(Number(m[2]), m[1], () => resolve(new AdminServer(server)));
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}

function handle(req: IncomingMessage, res: ServerResponse, b: Balancer): void {
  const url = new URL(req.url ?? '/', 'http://admin');
  const send = (code: number, body: unknown): void => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body) + '\n');
  };
  if (req.method !== 'GET') return send(405, { error: 'method not allowed' });
  switch (url.pathname) {
    case '/healthz':
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    case '/api/v1/stats':
      return send(200, b.snapshot());
    case '/api/v1/flows': {
      const limit = Math.min(100000, Math.max(1, Number(url.searchParams.get('limit') ?? 1000) || 1000));
      return send(200, listFlows(b, limit));
    }
    default:
      return send(404, { error: `no such endpoint: ${url.pathname}` });
  }
}
