/**
 * The control channel between balancers: two UDP sockets per balancer, carrying signed
 * envelopes (protocol/tunlb.proto):
 *   - the PROBE socket (`probe_port`, default 7948, bound to this balancer's address): liveness
 *     probes and acks only, unicast;
 *   - the CONTROL socket (`control_port`, default 7946, any address, joined to the multicast
 *     group): flow records (multicast, or unicast fan-out with `replication.mode: unicast`),
 *     health reports, datagram bulk sync; and probes and acks of peers of the first release,
 *     which know no probe port.
 *
 * Probes are kept apart from bulk traffic so that junk on the control port cannot starve
 * them (issue 12): they have their own socket, hence their own kernel receive queue that a
 * flood of the control port cannot fill, and they are read first: every read of the control
 * socket first drains the probe socket. Both sockets are read in batches (recvmmsg, native
 * UdpBatchSocket) into preallocated buffers, at most CONTROL_READ_BUDGET datagrams per
 * readiness callback (then libuv runs timers and other I/O, and calls again: level-triggered),
 * so junk costs no allocation and never holds the event loop. Under a flood (a read found a
 * full batch waiting), a socket is not polled again for COALESCE_MS: the datagrams that arrive
 * meanwhile wait in its kernel queue and are read 64 per system call, instead of one wake-up
 * (three system calls and a callback) for every few datagrams. A genuine datagram waits at
 * most that long more, and only while its socket is flooded.
 *
 * Contracts:
 * - Every datagram is sealed by the process's one EnvelopeSigner (sequence numbers shared by
 *   all kinds; unicast envelopes name their recipient) and goes through the EnvelopeReceiver
 *   before anything reads it, in the order of src/protocol/receiver.ts: size and UDP source
 *   (address and port of a configured balancer's control or probe endpoint) before any
 *   decoding, then the strict outer frame, the envelope's first bytes, the MAC, and the
 *   stateful checks. Every drop is counted by reason (`receiver.counts`).
 * - Where probes go: to a peer's probe port, unless the last probe or ack accepted from it
 *   came in on the control socket (a peer of the first release): then to its control port,
 *   from the control socket (`viaControl`). Acks follow the same rule.
 * - Multicast: joined on the interface that holds this balancer's address, TTL from the
 *   config (1 keeps records on the local segment), loopback off.
 * - onEnvelope(env, confirmed, via) is called synchronously for each accepted envelope; env and
 *   every bytes field in it are views into the receive buffer, valid only during the call
 *   (copy what you keep).
 * - close() is idempotent; after it nothing is sent and nothing is delivered.
 * The data plane never waits on these sockets: sends are fire-and-forget datagrams.
 */
import type { Config } from '../config';
import { UdpBatchSocket, ipToBytes16 } from '../dataplane/udp-batch-socket';
import { PacketBatch, MIN_HEADROOM } from '../dataplane/packet-batch';
import {
  EnvelopeReceiver,
  EnvelopeSigner,
  DecodeResult,
  MAX_CONTROL_DATAGRAM,
  ProtocolResult,
  SOURCE_NOT_A_PEER,
  Via,
  macKey,
  protocolResultName,
  type ReceivedEnvelope,
} from '../protocol';
import type { Logger } from '../logger';
import { TunlbError, ErrorCodes } from '../errors';

export interface ControlChannelOptions {
  config: Config;
  selfIndex: number;
  incarnation: number;
  /**
   * Called for every accepted envelope, with the sender's index in env.sender; `confirmed`:
   * from the sender's confirmed incarnation (false only for probes and acks, see
   * src/protocol/receiver.ts); `via`: the socket it came in on.
   */
  onEnvelope: (env: ReceivedEnvelope, confirmed: boolean, via: Via) => void;
  log: Logger;
}

/** Datagrams per recvmmsg call. */
const RECV_BATCH = 64;
/** Datagrams read per readiness callback of one socket, at most (then the loop moves on). */
export const CONTROL_READ_BUDGET = 512;
/** Kernel receive buffers: the control socket absorbs bursts of records and junk; probes are few. */
const CONTROL_RCVBUF = 4 << 20;
const PROBE_RCVBUF = 1 << 20;
const SNDBUF = 4 << 20;
/** Pause of a flooded socket's polling, ms (header); far below a probe interval. */
export const COALESCE_MS = 1;

/** The 64-bit cluster wire id as the safe integer the protocol carries (low 53 bits). */
export function clusterIdNumber(config: Config): number {
  return (config.cluster.wireId.high & 0x1fffff) * 4294967296 + config.cluster.wireId.low;
}

export interface ControlChannelStats {
  /** Datagrams handed to the kernel / refused by it. */
  sent: number;
  sendErrors: number;
  /** Datagrams read, both sockets. */
  received: number;
  /** Of those, on the probe socket. */
  receivedProbe: number;
  /** Authentic datagrams whose source address is not their sender's (source_mismatch). */
  addressMismatch: number;
  /** Readiness callbacks that stopped at CONTROL_READ_BUDGET with more to read. */
  readBudgetHits: number;
  /** Coalescing pauses (a flooded socket not polled for COALESCE_MS). */
  coalescePauses: number;
}

/** One receiving socket and its preallocated buffers. */
class Reader {
  readonly batch = new PacketBatch({ count: RECV_BATCH, maxPacket: MAX_CONTROL_DATAGRAM + 1, headroom: MIN_HEADROOM });
  readonly addrs = new Uint8Array(RECV_BATCH * 16);
  readonly ports = new Uint16Array(RECV_BATCH);
  /** The readiness callback, and the timer that resumes polling after a coalescing pause. */
  onReadable: () => void = () => undefined;
  resume: NodeJS.Timeout | undefined;
  constructor(
    readonly socket: UdpBatchSocket,
    readonly via: Via,
  ) {}
}

export class ControlChannel {
  readonly signer: EnvelopeSigner;
  readonly receiver: EnvelopeReceiver;
  readonly stats: ControlChannelStats = { sent: 0, sendErrors: 0, received: 0, receivedProbe: 0, addressMismatch: 0, readBudgetHits: 0, coalescePauses: 0 };
  /** viaControl[i] = 1: balancer i speaks probes on its control port (a first-release peer). */
  readonly viaControl: Uint8Array;
  readonly #control: Reader;
  readonly #probe: Reader;
  readonly #n: number;
  /** 16-byte addresses of the balancers (index i at 16 i) and of the group. */
  readonly #addr16: Uint8Array;
  readonly #group16: Uint8Array | null;
  readonly #controlPort: Uint16Array;
  readonly #probePort: Uint16Array;
  readonly #groupPort: number;
  readonly #selfIndex: number;
  readonly #onEnvelope: ControlChannelOptions['onEnvelope'];
  readonly #log: Logger;
  readonly #out = new DecodeResult();
  /** Send side: one slot (the datagram), up to N destinations sharing it. */
  readonly #sendBatch: PacketBatch;
  readonly #sendAddrs: Uint8Array;
  readonly #sendPorts: Uint16Array;
  #recvErrors = 0;
  #closed = false;

  private constructor(opts: ControlChannelOptions, control: UdpBatchSocket, probe: UdpBatchSocket) {
    const c = opts.config;
    const key = macKey(c.cluster.key.reveal());
    const clusterId = clusterIdNumber(c);
    const n = c.balancers.length;
    this.#n = n;
    this.signer = new EnvelopeSigner({ key, clusterId, sender: opts.selfIndex, incarnation: opts.incarnation });
    this.receiver = new EnvelopeReceiver({ key, clusterId, self: opts.selfIndex, balancerCount: n });
    this.#control = new Reader(control, Via.CONTROL);
    this.#probe = new Reader(probe, Via.PROBE);
    this.#addr16 = new Uint8Array(n * 16);
    this.#controlPort = new Uint16Array(n);
    this.#probePort = new Uint16Array(n);
    c.balancers.forEach((b, i) => {
      ipToBytes16(b.address.text, this.#addr16, i * 16);
      this.#controlPort[i] = b.controlPort;
      this.#probePort[i] = b.probePort;
    });
    this.viaControl = new Uint8Array(n);
    if (c.cluster.replication.mode === 'multicast') {
      this.#group16 = new Uint8Array(16);
      ipToBytes16(c.cluster.replication.group.text, this.#group16);
    } else {
      this.#group16 = null;
    }
    this.#groupPort = c.cluster.replication.controlPort;
    this.#selfIndex = opts.selfIndex;
    this.#onEnvelope = opts.onEnvelope;
    this.#log = opts.log;
    this.#sendBatch = new PacketBatch({ count: Math.max(1, n), maxPacket: MAX_CONTROL_DATAGRAM * 2, headroom: MIN_HEADROOM });
    this.#sendAddrs = new Uint8Array(Math.max(1, n) * 16);
    this.#sendPorts = new Uint16Array(Math.max(1, n));
    this.#probe.onReadable = () => this.#coalesce(this.#probe, this.#read(this.#probe));
    this.#control.onReadable = () => {
      // Probes first (header): whatever waits on the probe socket is read before the control batch.
      this.#read(this.#probe);
      this.#coalesce(this.#control, this.#read(this.#control));
    };
    probe.onReadable(this.#probe.onReadable);
    control.onReadable(this.#control.onReadable);
  }

  /** Opens and binds both sockets (and joins the multicast group). */
  static async open(opts: ControlChannelOptions): Promise<ControlChannel> {
    const c = opts.config;
    const self = c.balancers[opts.selfIndex]!;
    const v6 = self.address.family === 6;
    const rep = c.cluster.replication;
    let control: UdpBatchSocket;
    try {
      control = UdpBatchSocket.open({
        address: v6 ? '::' : '0.0.0.0',
        port: self.controlPort,
        rcvBuf: CONTROL_RCVBUF,
        sndBuf: SNDBUF,
        ...(rep.mode === 'multicast' ? { multicast: { group: rep.group.text, interfaceAddress: self.address.text, ttl: rep.ttl, loop: false } } : {}),
      });
    } catch (e) {
      const msg = (e as Error).message;
      throw new TunlbError(
        ErrorCodes.SOCKET,
        rep.mode === 'multicast' && /MEMBERSHIP|JOIN_GROUP|MULTICAST/.test(msg)
          ? `cannot join multicast group ${rep.group.text} on ${self.address.text}: ${msg} (no multicast route? set cluster.replication.mode: unicast)`
          : `cannot bind the control socket on port ${self.controlPort}: ${msg} (another balancer on this host/namespace? set balancers[${opts.selfIndex}].control_port)`,
        { port: self.controlPort },
        { cause: e },
      );
    }
    let probe: UdpBatchSocket;
    try {
      probe = UdpBatchSocket.open({ address: self.address.text, port: self.probePort, rcvBuf: PROBE_RCVBUF, sndBuf: SNDBUF });
    } catch (e) {
      control.close();
      throw new TunlbError(
        ErrorCodes.SOCKET,
        `cannot bind the probe socket on ${self.address.text} port ${self.probePort}: ${(e as Error).message} (another balancer on this host/namespace? set balancers[${opts.selfIndex}].probe_port)`,
        { port: self.probePort },
        { cause: e },
      );
    }
    return new ControlChannel(opts, control, probe);
  }

  /** Unicast to one balancer's control port (records fan-out, sync). */
  sendTo(peer: number, dgramBytes: Uint8Array): void {
    if (this.#closed || peer === this.#selfIndex || !(peer >= 0 && peer < this.#n)) return;
    this.#sendOne(this.#control.socket, dgramBytes, this.#addr16, peer * 16, this.#controlPort[peer]!);
  }

  /** A probe or an ack to one balancer: its probe port, or its control port for a first-release peer (header). */
  sendProbe(peer: number, dgramBytes: Uint8Array): void {
    if (this.#closed || peer === this.#selfIndex || !(peer >= 0 && peer < this.#n)) return;
    if (this.viaControl[peer] === 1) this.#sendOne(this.#control.socket, dgramBytes, this.#addr16, peer * 16, this.#controlPort[peer]!);
    else this.#sendOne(this.#probe.socket, dgramBytes, this.#addr16, peer * 16, this.#probePort[peer]!);
  }

  /** To every peer: the multicast group, or each peer by unicast (the same bytes). */
  broadcast(dgramBytes: Uint8Array): void {
    if (this.#closed) return;
    if (this.#group16 !== null) {
      this.#sendOne(this.#control.socket, dgramBytes, this.#group16, 0, this.#groupPort);
      return;
    }
    const b = this.#sendBatch;
    if (!this.#stage(dgramBytes)) return;
    let k = 0;
    for (let i = 0; i < this.#n; i++) {
      if (i === this.#selfIndex) continue;
      b.offsets[k] = b.offsets[0]!;
      b.sizes[k] = dgramBytes.length;
      this.#sendAddrs.set(this.#addr16.subarray(i * 16, i * 16 + 16), k * 16);
      this.#sendPorts[k] = this.#controlPort[i]!;
      k++;
    }
    this.#sendStaged(this.#control.socket, k);
  }

  /**
   * Reads what waits on the probe socket now (up to CONTROL_READ_BUDGET datagrams, through the
   * receiver as any read). The owner calls it right before Membership.tick(): a tick must not
   * judge a peer silent while its ack sits unread in our own socket (the loop was busy, or the
   * socket is in a coalescing pause), since then the silence is ours, not the peer's. One
   * recvmmsg per tick when nothing waits. Never throws.
   */
  readProbes(): void {
    if (!this.#closed) this.#read(this.#probe);
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
    for (const r of [this.#probe, this.#control]) if (r.resume !== undefined) clearTimeout(r.resume);
    this.#probe.socket.close();
    this.#control.socket.close();
  }

  /** Copies a datagram into the send slot (slot 0); false (counted) if it cannot be sent. */
  #stage(bytes: Uint8Array): boolean {
    const b = this.#sendBatch;
    if (bytes.length > b.slotSize - b.headroom) {
      this.stats.sendErrors++;
      return false;
    }
    const off = b.headroom;
    b.buf.set(bytes, off);
    b.offsets[0] = off;
    b.sizes[0] = bytes.length;
    return true;
  }

  #sendOne(socket: UdpBatchSocket, bytes: Uint8Array, addr16: Uint8Array, addrOff: number, port: number): void {
    if (!this.#stage(bytes)) return;
    this.#sendAddrs.set(addr16.subarray(addrOff, addrOff + 16), 0);
    this.#sendPorts[0] = port;
    this.#sendStaged(socket, 1);
  }

  #sendStaged(socket: UdpBatchSocket, count: number): void {
    let sent = 0;
    try {
      sent = socket.send(this.#sendBatch, count, this.#sendAddrs, this.#sendPorts);
    } catch (e) {
      this.#log.warn({ event: 'control_socket_error', err: (e as Error).message }, 'control socket send failed');
    }
    this.stats.sent += sent;
    this.stats.sendErrors += count - sent;
  }

  /** After a read that found a full batch (a flood), pauses the socket's polling for COALESCE_MS (header). */
  #coalesce(r: Reader, flooded: boolean): void {
    if (!flooded || this.#closed || r.resume !== undefined) return;
    this.stats.coalescePauses++;
    r.socket.stop();
    r.resume = setTimeout(() => {
      r.resume = undefined;
      if (!this.#closed) r.socket.onReadable(r.onReadable);
    }, COALESCE_MS);
  }

  /**
   * Reads up to CONTROL_READ_BUDGET datagrams from one socket and passes each through the
   * receiver (header). Returns true when a receive call filled a whole batch (more were
   * waiting: a flood, or a burst). Never throws.
   */
  #read(r: Reader): boolean {
    const b = r.batch;
    const addrs = r.addrs;
    const ports = r.ports;
    const rcv = this.receiver;
    const out = this.#out;
    let total = 0;
    while (!this.#closed && total < CONTROL_READ_BUDGET) {
      let n: number;
      const truncatedBefore = r.socket.stats.recvTruncated;
      try {
        n = r.socket.recv(b, RECV_BATCH, addrs, ports);
      } catch (e) {
        if (this.#recvErrors++ === 0) this.#log.warn({ event: 'control_socket_error', err: (e as Error).message }, 'control socket receive failed');
        return false;
      }
      if (n === 0) return total > 0; // an earlier call of this read filled a batch
      total += n;
      this.stats.received += n;
      if (r.via === Via.PROBE) this.stats.receivedProbe += n;
      // Datagrams longer than the slot come with size 0: oversize (anything else of size 0 is
      // an empty datagram: malformed).
      let truncated = r.socket.stats.recvTruncated - truncatedBefore;
      for (let i = 0; i < n && !this.#closed; i++) {
        const len = b.sizes[i]!;
        if (len === 0) {
          if (truncated > 0) {
            truncated--;
            rcv.count(ProtocolResult.OVERSIZE);
          } else {
            rcv.count(ProtocolResult.MALFORMED_OUTER);
          }
          continue;
        }
        const source = this.#sourceOf(addrs, i * 16, ports[i]!);
        rcv.receive(b.buf, b.offsets[i]!, len, out, source, r.via);
        if (out.result === ProtocolResult.SOURCE_MISMATCH) this.stats.addressMismatch++;
        if (out.result !== ProtocolResult.OK || out.envelope === null) continue;
        const env = out.envelope;
        if (env.body === 'probe' || env.body === 'probeAck') this.viaControl[env.sender] = r.via === Via.CONTROL ? 1 : 0;
        try {
          this.#onEnvelope(env, out.confirmed, r.via);
        } catch (e) {
          this.#log.warn({ event: 'control_dispatch_error', err: (e as Error).message, body: env.body }, 'control message handler threw');
        }
      }
      if (n < RECV_BATCH) return total > n;
    }
    if (total >= CONTROL_READ_BUDGET) this.stats.readBudgetHits++;
    return total > 0;
  }

  #sourceOf(addrs: Uint8Array, off: number, port: number): number {
    return peerEndpointIndex(this.#addr16, this.#controlPort, this.#probePort, addrs, off, port);
  }
}

/**
 * Index of the balancer whose control or probe endpoint is the UDP source (16-byte address at
 * addrs[off..off+16), IPv4 mapped, and `port`), or SOURCE_NOT_A_PEER. `addr16` holds the
 * balancers' addresses (balancer i at 16 i), `controlPorts` / `probePorts` their ports.
 * Allocates nothing.
 */
export function peerEndpointIndex(
  addr16: Uint8Array,
  controlPorts: Uint16Array,
  probePorts: Uint16Array,
  addrs: Uint8Array,
  off: number,
  port: number,
): number {
  const n = controlPorts.length;
  for (let i = 0; i < n; i++) {
    const p = i * 16;
    // Compare from the end: IPv4-mapped addresses share their first 12 bytes.
    let j = 15;
    while (j >= 0 && addr16[p + j] === addrs[off + j]) j--;
    if (j >= 0) continue;
    // Several balancers may share an address (different ports): the port tells them apart.
    if (port === controlPorts[i] || port === probePorts[i]) return i;
  }
  return SOURCE_NOT_A_PEER;
}
