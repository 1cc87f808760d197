/**
 * The classic pcap file format (what `tcpdump -w` writes and `tcpdump -r` / Wireshark read),
 * written by tunlb itself: https://www.tcpdump.org/manpages/pcap-savefile.5.html and
 * draft-ietf-opsawg-pcap (IETF "PCAP Capture File Format").
 *
 *   global header (24 bytes, once):
 *     magic 0xa1b2c3d4 (u32; microsecond timestamps) | version major 2 (u16) | minor 4 (u16) |
 *     thiszone 0 (i32) | sigfigs 0 (u32) | snaplen (u32) | LINKTYPE (u32)
 *   per packet: record header (16 bytes) then incl_len bytes of the frame:
 *     ts_sec (u32) | ts_usec (u32) | incl_len (u32, bytes saved) | orig_len (u32, bytes on the wire)
 *
 * Byte order: the writer's (little-endian here); readers recognise it by the magic number,
 * so the reader below accepts both orders, and nanosecond files (magic 0xa1b23c4d) too.
 *
 * LINKTYPE values (https://www.tcpdump.org/linktypes.html) are NOT always the DLT_ values of
 * the C headers: DLT_RAW is 12 or 14 depending on the platform, but LINKTYPE_RAW in a file is
 * always 101. `cap` reports the link type as a name; linkTypeFromCap maps it.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { ErrorCodes, TunlbError } from '../errors';

/** LINKTYPE_* values for the link types `cap` can report (pcap-linktype(7)). */
export const LINKTYPE = {
  /** BSD loopback: 4-byte address family in host byte order, then the IP packet. */
  NULL: 0,
  /** Ethernet II (veth, bridges, VM NICs). */
  ETHERNET: 1,
  /** Raw IP, no link header (TUN devices such as tunlb0). */
  RAW: 101,
  /** 802.11 with radiotap header (not used by tunlb; written through unchanged). */
  IEEE802_11_RADIO: 127,
  /** Linux "cooked" capture v1 (the `any` pseudo-device): 16-byte header, protocol at 14. */
  LINUX_SLL: 113,
} as const;

export const PCAP_MAGIC_USEC = 0xa1b2c3d4;
export const PCAP_MAGIC_NSEC = 0xa1b23c4d;
export const PCAP_GLOBAL_HEADER_LEN = 24;
export const PCAP_RECORD_HEADER_LEN = 16;
/** cap opens every device with this snapshot length (src/binding.cc: pcap_set_snaplen(65535)). */
export const CAP_SNAPLEN = 65535;

/** The LINKTYPE for the link type name `cap`'s open() returned; throws for names it does not know. */
export function linkTypeFromCap(name: string): number {
  switch (name) {
    case 'NULL':
      return LINKTYPE.NULL;
    case 'ETHERNET':
      return LINKTYPE.ETHERNET;
    case 'RAW':
      return LINKTYPE.RAW;
    case 'IEEE802_11_RADIO':
      return LINKTYPE.IEEE802_11_RADIO;
    case 'LINKTYPE_LINUX_SLL':
    case 'LINUX_SLL':
      return LINKTYPE.LINUX_SLL;
    default:
      // cap returns "Unknown linktype N" (N = the DLT) for anything else.
      throw new TunlbError(ErrorCodes.USAGE, `the device's link type is not supported by tunlb capture: ${name} (use tcpdump -w for it)`);
  }
}

/** Name of a LINKTYPE value, for messages. */
export function linkTypeName(linktype: number): string {
  for (const [k, v] of Object.entries(LINKTYPE)) if (v === linktype) return k;
  return `LINKTYPE_${linktype}`;
}

/** The 24-byte global header (little-endian, microsecond timestamps). */
export function pcapGlobalHeader(linktype: number, snaplen: number = CAP_SNAPLEN): Buffer {
  const b = Buffer.alloc(PCAP_GLOBAL_HEADER_LEN);
  b.writeUInt32LE(PCAP_MAGIC_USEC, 0);
  b.writeUInt16LE(2, 4);
  b.writeUInt16LE(4, 6);
  b.writeInt32LE(0, 8); // thiszone: timestamps are UTC
  b.writeUInt32LE(0, 12); // sigfigs
  b.writeUInt32LE(snaplen >>> 0, 16);
  b.writeUInt32LE(linktype >>> 0, 20);
  return b;
}

/**
 * Writes the 16-byte record header for a packet captured at `tsUs` (µs since the Unix epoch)
 * with `inclLen` bytes saved of `origLen` on the wire, into out[off..off+16).
 */
export function writeRecordHeader(out: Buffer, off: number, tsUs: number, inclLen: number, origLen: number): void {
  const sec = Math.floor(tsUs / 1e6);
  const usec = Math.floor(tsUs - sec * 1e6);
  out.writeUInt32LE(sec >>> 0, off);
  out.writeUInt32LE(usec >>> 0, off + 4);
  out.writeUInt32LE(inclLen >>> 0, off + 8);
  out.writeUInt32LE(Math.max(origLen, inclLen) >>> 0, off + 12);
}

/** The record header as a new buffer (tests, small tools). */
export function pcapRecordHeader(tsUs: number, inclLen: number, origLen: number): Buffer {
  const b = Buffer.alloc(PCAP_RECORD_HEADER_LEN);
  writeRecordHeader(b, 0, tsUs, inclLen, origLen);
  return b;
}

/**
 * A pcap file being written. Packets are copied into a buffer that is written out when it
 * fills, on flush() (the capture loop calls it about every 200 ms, so a reader following the
 * file sees packets quickly) and on close(). Writes are synchronous (a capture tool, not the
 * data plane). Not safe for two writers on one file.
 */
export class PcapWriter {
  readonly linktype: number;
  readonly snaplen: number;
  /** Packets written (buffered included). */
  packets = 0;
  /** Bytes of packet data written (incl_len sum). */
  bytes = 0;
  #fd: number;
  #buf: Buffer;
  #used = 0;

  /** Creates (truncates) `path` and writes the global header. */
  constructor(path: string, linktype: number, snaplen: number = CAP_SNAPLEN, bufferBytes = 1 << 20) {
    this.linktype = linktype;
    this.snaplen = snaplen;
    try {
      this.#fd = openSync(path, 'w', 0o644);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'error';
      throw new TunlbError(ErrorCodes.USAGE, `cannot create the capture file ${path} (${code})`, { path, errno: code }, { cause: e });
    }
    this.#buf = Buffer.alloc(Math.max(bufferBytes, PCAP_RECORD_HEADER_LEN + snaplen));
    const h = pcapGlobalHeader(linktype, snaplen);
    h.copy(this.#buf, 0);
    this.#used = h.length;
    this.flush();
  }

  /**
   * Appends one packet: the first min(len, snaplen) bytes of pkt, timestamp `tsUs` (µs since
   * the epoch), `origLen` the length on the wire when known (>= the saved length).
   */
  write(pkt: Uint8Array, len: number, tsUs: number, origLen: number = len): void {
    if (this.#fd < 0) throw new TunlbError(ErrorCodes.USAGE, 'pcap writer is closed');
    const incl = Math.min(len, this.snaplen, pkt.length);
    if (this.#used + PCAP_RECORD_HEADER_LEN + incl > this.#buf.length) this.flush();
    writeRecordHeader(this.#buf, this.#used, tsUs, incl, Math.max(origLen, len));
    this.#used += PCAP_RECORD_HEADER_LEN;
    this.#buf.set(pkt.subarray(0, incl), this.#used);
    this.#used += incl;
    this.packets++;
    this.bytes += incl;
  }

  /** Writes buffered records to the file. */
  flush(): void {
    let off = 0;
    while (off < this.#used) off += writeSync(this.#fd, this.#buf, off, this.#used - off);
    this.#used = 0;
  }

  /** Flushes and closes the file; idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    try {
      this.flush();
    } finally {
      closeSync(this.#fd);
      this.#fd = -1;
    }
  }
}

export interface PcapRecord {
  /** Timestamp, µs since the Unix epoch (nanosecond files are rounded down to µs). */
  tsUs: number;
  origLen: number;
  /** The saved bytes (a view into the file's buffer). */
  data: Buffer;
}

export interface PcapFile {
  linktype: number;
  snaplen: number;
  records: PcapRecord[];
  /** True when the file ends inside a record (a capture still being written, or cut short). */
  truncated: boolean;
}

/**
 * Parses a classic pcap file (either byte order, µs or ns timestamps). Throws TUNLB_USAGE for
 * a file that is not one (pcapng, which `tcpdump` does not write by default, is refused with
 * a hint). For `tunlb capture --read` and the tests.
 */
export function readPcap(b: Buffer, source = 'file'): PcapFile {
  if (b.length < PCAP_GLOBAL_HEADER_LEN) throw new TunlbError(ErrorCodes.USAGE, `${source}: too short for a pcap file (${b.length} bytes)`);
  const m = b.readUInt32LE(0);
  let le: boolean;
  let nsec: boolean;
  if (m === PCAP_MAGIC_USEC || m === PCAP_MAGIC_NSEC) {
    le = true;
    nsec = m === PCAP_MAGIC_NSEC;
  } else {
    const mb = b.readUInt32BE(0);
    if (mb !== PCAP_MAGIC_USEC && mb !== PCAP_MAGIC_NSEC) {
      const hint = m === 0x0a0d0d0a ? ' (this is pcapng: convert it with `editcap -F pcap IN OUT` or capture with `tcpdump -w`)' : '';
      throw new TunlbError(ErrorCodes.USAGE, `${source}: not a pcap file (magic 0x${m.toString(16)})${hint}`);
    }
    le = false;
    nsec = mb === PCAP_MAGIC_NSEC;
  }
  const u32 = (o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const out: PcapFile = { linktype: u32(20) & 0x0fffffff, snaplen: u32(16), records: [], truncated: false };
  let off = PCAP_GLOBAL_HEADER_LEN;
  while (off < b.length) {
    if (off + PCAP_RECORD_HEADER_LEN > b.length) {
      out.truncated = true;
      break;
    }
    const sec = u32(off);
    const frac = u32(off + 4);
    const incl = u32(off + 8);
    const orig = u32(off + 12);
    if (off + PCAP_RECORD_HEADER_LEN + incl > b.length) {
      out.truncated = true;
      break;
    }
    const data = b.subarray(off + PCAP_RECORD_HEADER_LEN, off + PCAP_RECORD_HEADER_LEN + incl);
    out.records.push({ tsUs: sec * 1e6 + (nsec ? Math.floor(frac / 1000) : frac), origLen: orig, data });
    off += PCAP_RECORD_HEADER_LEN + incl;
  }
  return out;
}
