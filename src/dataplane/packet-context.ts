/**
 * The one per-packet state of the forwarding pipeline (src/dataplane/forwarder.ts), allocated
 * once per Forwarder and refilled for every packet, so no stage passes state through hidden
 * fields or long argument lists: the batch loop fills the input half (`beginBatch` once per
 * batch, `begin` per packet), the stages fill the decision half, the emitters
 * (src/dataplane/peer-output.ts, dsr-output.ts) read both, and a stage that changes the
 * packet's length sets `outLen`.
 *
 * Ownership: `buf` and `vnetBuf` are the batch's; valid only while that batch is processed.
 * Every field is initialised here, so the object keeps one hidden class (monomorphic access
 * on the hot path).
 */
import { PacketInfo } from '../packet/packet-info';
import { EncapInfo } from '../packet/encap';

const EMPTY = new Uint8Array(0);

export class PacketContext {
  // ---- input: the batch's (beginBatch)
  /** The buffer holding the batch's packets; this packet is buf[off .. off+len). */
  buf: Uint8Array = EMPTY;
  /** The batch's clock, seconds since process start. */
  nowSec = 0;
  /** Where the packets' virtio_net_hdr are (null: none); this packet's is vnetBuf[vnetOff .. +10). */
  vnetBuf: Uint8Array | null = null;
  /** Received encapsulated from a peer (its header parsed into `encap`): never forwarded again. */
  fromPeer = false;
  // ---- input: the packet's (begin)
  off = 0;
  len = 0;
  /** CSUM_FULL or CSUM_PARTIAL (src/packet/nat.ts): the device's NEEDS_CSUM for this packet. */
  csumMode = 0;
  /** This packet's virtio header offset in vnetBuf; -1 = none. */
  vnetOff = -1;
  /** The parse step's output. */
  readonly info = new PacketInfo();
  /** The peer's encapsulation header (packets from peers). */
  readonly encap = new EncapInfo();

  // ---- decision (flow and serve steps)
  /**
   * A flow entry id a step's out-of-line branch hands back to the step (the flow it decided or
   * adopted on a miss; the flow's new entry when it moved off a down backend). The
   * established-flow path keeps the id in a local and does not write it here.
   */
  id = -1;
  // For a packet handed to a peer (PeerEmitter.emit), set by the step that hands it over:
  /** Encapsulation flags (ENCAP_F_*). */
  encapFlags = 0;
  /** The balancer that transmits to the server (serve step); the decision the header carries. */
  serving = -1;
  primary = 0;
  backup = 0;
  backend = 0;
  vip = 0;

  // ---- output
  /** The length to emit when it differs from `len` (a reset in the packet's place), else -1. */
  outLen = -1;

  /**
   * Starts a batch: the buffer its packets are in, its clock, where their virtio headers are
   * (null: none) and whether they come from peers. Once per batch, so a packet writes only
   * what differs between packets (measured: docs/performance.md "One method per direction").
   */
  beginBatch(buf: Uint8Array, nowSec: number, vnetBuf: Uint8Array | null, fromPeer: boolean): void {
    this.buf = buf;
    this.nowSec = nowSec;
    this.vnetBuf = vnetBuf;
    this.fromPeer = fromPeer;
  }

  /** Starts a packet of the batch: its input half set, the output cleared (the decision half is set by the steps that decide). */
  begin(off: number, len: number, csumMode: number, vnetOff: number): void {
    this.off = off;
    this.len = len;
    this.csumMode = csumMode;
    this.vnetOff = vnetOff;
    // The decision half is written by the steps before any read of it.
    this.outLen = -1;
  }

  /** The packet's virtio header carries offload state (a partial checksum or a GSO super-packet). */
  hasOffload(): boolean {
    const vb = this.vnetBuf;
    const vo = this.vnetOff;
    return vb !== null && vo >= 0 && (vb[vo] !== 0 || vb[vo + 1] !== 0);
  }
}
