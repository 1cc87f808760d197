/**
 * The lab's backend server: one per tunlb-srvN namespace, started by scripts/lab.sh as
 * `node --import tsx scripts/lab-server.ts --name srv1`. Plain Node (http, dgram, net), no
 * dependencies. Every service listens on IPv4 (0.0.0.0) and IPv6 (::) separately, so it does not
 * depend on net.ipv6.bindv6only.
 *
 *   HTTP  tcp/80    any path       -> 200 "<name>\n"
 *                   /bytes?n=N     -> 200, N bytes of 'x' (0 <= N <= 2^34), streamed with backpressure
 *   UDP   udp/5353  echo: each datagram comes back as "<name> " + datagram
 *   TCP   tcp/7     echo (RFC 862), for long-lived connection tests; no greeting
 *
 * Options: --name NAME (default: $LAB_SERVER_NAME or the host name), --http-port, --udp-port,
 * --echo-port (for running outside the lab without root). SIGTERM/SIGINT close everything.
 */
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';

interface Options {
  name: string;
  httpPort: number;
  udpPort: number;
  echoPort: number;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = {
    name: process.env['LAB_SERVER_NAME'] ?? os.hostname(),
    httpPort: 80,
    udpPort: 5353,
    echoPort: 7,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`lab-server: ${arg} needs a value`);
    i++;
    switch (arg) {
      case '--name':
        opts.name = value;
        break;
      case '--http-port':
        opts.httpPort = Number(value);
        break;
      case '--udp-port':
        opts.udpPort = Number(value);
        break;
      case '--echo-port':
        opts.echoPort = Number(value);
        break;
      default:
        throw new Error(`lab-server: unknown option ${arg}`);
    }
  }
  return opts;
}

const MAX_BYTES = 2 ** 34;
const CHUNK = Buffer.alloc(64 * 1024, 'x');

/** Writes n bytes of 'x' to res, respecting backpressure. */
function sendBytes(res: http.ServerResponse, n: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(n) });
  let left = n;
  const pump = (): void => {
    while (left > 0) {
      const len = Math.min(left, CHUNK.length);
      left -= len;
      const more = res.write(len === CHUNK.length ? CHUNK : CHUNK.subarray(0, len));
      if (!more) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

function httpHandler(name: string): http.RequestListener {
  const body = `${name}\n`;
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://lab');
    if (url.pathname === '/bytes') {
      const n = Number(url.searchParams.get('n') ?? '0');
      if (!Number.isInteger(n) || n < 0 || n > MAX_BYTES) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`${name}: n must be an integer in 0..${MAX_BYTES}\n`);
        return;
      }
      sendBytes(res, n);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  };
}

function main(): void {
  const opts = parseArgs(process.argv.slice(2));
  const closers: Array<() => void> = [];
  const hosts: Array<{ host: string; udp: dgram.SocketType }> = [
    { host: '0.0.0.0', udp: 'udp4' },
    { host: '::', udp: 'udp6' },
  ];
  const prefix = Buffer.from(`${opts.name} `);

  for (const { host, udp } of hosts) {
    const ipv6Only = host === '::';

    const web = http.createServer(httpHandler(opts.name));
    web.keepAliveTimeout = 5000;
    web.listen({ host, port: opts.httpPort, ipv6Only });
    closers.push(() => {
      web.close();
      web.closeAllConnections();
    });

    const sock = dgram.createSocket({ type: udp, ipv6Only });
    sock.on('message', (msg, rinfo) => {
      sock.send(Buffer.concat([prefix, msg]), rinfo.port, rinfo.address);
    });
    sock.bind({ address: host, port: opts.udpPort });
    closers.push(() => sock.close());

    const sockets = new Set<net.Socket>();
    const echo = net.createServer((conn) => {
      sockets.add(conn);
      conn.setNoDelay(true);
      conn.on('error', () => conn.destroy());
      conn.on('close', () => sockets.delete(conn));
      conn.pipe(conn);
    });
    echo.listen({ host, port: opts.echoPort, ipv6Only });
    closers.push(() => {
      echo.close();
      for (const s of sockets) s.destroy();
    });

    for (const emitter of [web, sock, echo] as NodeJS.EventEmitter[]) {
      emitter.on('error', (err: Error) => {
        console.error(`lab-server ${opts.name}: ${host}: ${err.message}`);
        process.exit(1);
      });
    }
  }

  console.log(
    `lab-server ${opts.name} pid ${process.pid}: http :${opts.httpPort}, udp echo :${opts.udpPort}, tcp echo :${opts.echoPort} (IPv4 and IPv6)`,
  );
  const stop = (sig: string): void => {
    console.log(`lab-server ${opts.name}: ${sig}, closing`);
    for (const close of closers) close();
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

main();
