/**
 * The control channel between balancers: one UDP socket per balancer on its control port,
 * carrying signed envelopes (protocol/tunlb.proto): liveness probes and acks (unicast), flow
 * records (multicast group by default, or unicast fan-out when `replication.mode: unicast`),
 * bulk-sync requests and chunks (unicast).
 *
 * Contracts:
 * - Every datagram is sealed by the process's one EnvelopeSigner (sequence numbers shared by
 *   all kinds) and verified by the EnvelopeReceiver (HMAC first, then cluster, sender,
 *   replay window) before anything reads it; rejected datagrams are counted by reason
 *   (`receiver.counts`) and dropped. A verified envelope whose UDP source address is not the
 *   configured address of its sender is dropped too (source_mismatch), and that check comes
 *   before the replay window so a spoofed-source datagram cannot advance it.
 * - Multicast: joined on the interface that holds this balancer's address, TTL from the
 *   config (1 keeps records on the local segment), loopback off (our own records are not
 *   delivered back; the receiver would drop them as from_self anyway).
 * - close() is idempotent; after it nothing is sent and nothing is delivered.
 * The data plane never waits on this socket: sends are fire-and-forget datagrams.
 */
import dgram from 'node:dgram';
import type { Config } from '../config';
import { EnvelopeReceiver, EnvelopeSigner, DecodeResult, ProtocolResult, macKey, protocolResultName, type ReceivedEnvelope } from '../protocol';
import type { Logger } from '../logger';
import { TunlbError, ErrorCodes } from '../errors';

export interface ControlChannelOptions {
  config: Config;
  selfIndex: number;
  incarnation: number;
  /** Called for every verified envelope, with the sender's index in env.sender. */
  onEnvelope: (env: ReceivedEnvelope) => void;
  log: Logger;
}

/** The 64-bit cluster wire id as the safe integer the protocol carries (low 53 bits). */
export function clusterIdNumber(config: Config): number {
  return (config.cluster.wireId.high & 0x1fffff) * 4294967296 + config.cluster.wireId.low;
}

export class ControlChannel {
  readonly signer: EnvelopeSigner;
  readonly receiver: EnvelopeReceiver;
  readonly stats = { sent: 0, sendErrors: 0, received: 0, addressMismatch: 0 };
  readonly #socket: dgram.Socket;
  readonly #peerAddr: string[];
  readonly #peerPort: number[];
  readonly #group: string | null;
  readonly #groupPort: number;
  readonly #selfIndex: number;
  readonly #log: Logger;
  #closed = false;

  private constructor(opts: ControlChannelOptions, socket: dgram.Socket) {
    const c = opts.config;
    const key = macKey(c.cluster.key.reveal());
    const clusterId = clusterIdNumber(c);
    this.signer = new EnvelopeSigner({ key, clusterId, sender: opts.selfIndex, incarnation: opts.incarnation });
    this.receiver = new EnvelopeReceiver({ key, clusterId, self: opts.selfIndex, balancerCount: c.balancers.length });
    this.#socket = socket;
    this.#peerAddr = c.balancers.map((b) => b.address.text);
    this.#peerPort = c.balancers.map((b) => b.controlPort);
    this.#group = c.cluster.replication.mode === 'multicast' ? c.cluster.replication.group.text : null;
    this.#groupPort = c.cluster.replication.controlPort;
    this.#selfIndex = opts.selfIndex;
    this.#log = opts.log;
    const out = new DecodeResult();
    let source = '';
    const sourceOk = (sender: number): boolean => source === this.#peerAddr[sender];
    socket.on('message', (msg, rinfo) => {
      if (this.#closed) return;
      this.stats.received++;
      source = normalise(rinfo.address);
      const r = this.receiver.receive(msg, 0, msg.length, out, sourceOk);
      if (r.result === ProtocolResult.SOURCE_MISMATCH) this.stats.addressMismatch++;
      if (r.result !== ProtocolResult.OK || r.envelope === null) return;
      opts.onEnvelope(r.envelope);
    });
    socket.on('error', (e) => this.#log.warn({ event: 'control_socket_error', err: e.message }, 'control socket error'));
  }

  /** Opens and binds the control socket (and joins the multicast group). */
  static async open(opts: ControlChannelOptions): Promise<ControlChannel> {
    const c = opts.config;
    const self = c.balancers[opts.selfIndex]!;
    const v6 = self.address.family === 6;
    const socket = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', reuseAddr: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new TunlbError(
            ErrorCodes.SOCKET,
            `cannot bind the control socket on port ${self.controlPort}: ${e.code ?? e.message} (another balancer on this host/namespace? set balancers[${opts.selfIndex}].control_port)`,
          ),
        ),
      );
      socket.bind({ port: self.controlPort, address: v6 ? '::' : '0.0.0.0', exclusive: true }, () => resolve());
    });
    socket.removeAllListeners('error');
    const ch = new ControlChannel(opts, socket);
    const rep = c.cluster.replication;
    if (rep.mode === 'multicast') {
      try {
        socket.addMembership(rep.group.text, self.address.text);
        socket.setMulticastInterface(self.address.text);
        socket.setMulticastTTL(rep.ttl);
        socket.setMulticastLoopback(false);
      } catch (e) {
        socket.close();
        throw new TunlbError(
          ErrorCodes.SOCKET,
          `cannot join multicast group ${rep.group.text} on ${self.address.text}: ${(e as Error).message} (no multicast route? set cluster.replication.mode: unicast)`,
        );
      }
    }
    return ch;
  }

  /** Unicast to one balancer's control port. */
  sendTo(peer: number, dgramBytes: Uint8Array): void {
    if (this.#closed || peer === this.#selfIndex) return;
    this.#send(dgramBytes, this.#peerPort[peer]!, this.#peerAddr[peer]!);
  }

  /** To every peer: the multicast group, or each peer by unicast. */
  broadcast(dgramBytes: Uint8Array): void {
    if (this.#closed) return;
    if (this.#group !== null) {
      this.#send(dgramBytes, this.#groupPort, this.#group);
      return;
    }
    for (let i = 0; i < this.#peerAddr.length; i++) if (i !== this.#selfIndex) this.#send(dgramBytes, this.#peerPort[i]!, this.#peerAddr[i]!);
  }

  #send(bytes: Uint8Array, port: number, addr: string): void {
    this.stats.sent++;
    this.#socket.send(bytes, port, addr, (err) => {
      if (err) this.stats.sendErrors++;
    });
  }

  /** Verification outcomes by protocol result name (for stats/metrics). */
  rejectCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    this.receiver.counts.forEach((v, i) => {
      if (i !== ProtocolResult.OK && v > 0) out[protocolResultName(i)] = v;
    });
    return out;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
  }
}

/** "::ffff:10.0.0.1" → "10.0.0.1" (dual-stack sockets report IPv4 peers mapped). */
function normalise(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}
