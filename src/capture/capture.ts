/**
 * `tunlb capture`: packet capture on one interface with libpcap (the `cap` package), written
 * as a classic pcap file (src/capture/capture-pcap.ts) that `tcpdump -r` and Wireshark read,
 * and/or decoded into one line per packet (src/capture/capture-decode.ts: flow records,
 * probes, bulk sync on the control port; encapsulated packets on the data port).
 *
 *   tunlb capture --iface lbnet0 --filter 'udp port 7946' --count 50 --out records.pcap --decode
 *   tunlb capture --read records.pcap --config /run/tunlb-lab/lab.yaml     (decode a file, no root)
 *
 * Stops after --count packets, after --duration-s seconds, or on SIGINT/SIGTERM (whichever
 * comes first); the file is complete and closed in every case. Live capture needs root (or
 * CAP_NET_RAW) in the network namespace that owns the interface: in the lab,
 * `ip netns exec tunlb-lb1 tunlb capture --iface lbnet0 ...`.
 *
 * Timestamps: `cap` does not pass libpcap's timestamps to JavaScript, so a packet is stamped
 * when its event reaches the event loop (µs resolution, wall clock; typically within tens of
 * µs of the kernel's stamp on an idle capture process). Good for reading a sequence, not for
 * measuring sub-millisecond latencies: use tcpdump for that.
 *
 * Original lengths: libpcap's header is not passed on either; orig_len is the length the
 * frame's IP header announces (plus the link header), or the captured length when larger.
 */
import { deriveDataTagKey } from '../decision/hash-key';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { loadConfig, type Config } from '../config';
import { loadKeyFile } from '../config/secret';
import { ErrorCodes, isTunlbError, TunlbError } from '../errors';
import { macKey, type MacKey } from '../protocol';
import { CaptureDecoder, decoderOptionsFromConfig, formatTime, type DecoderOptions } from './capture-decode';
import { CAP_SNAPLEN, LINKTYPE, linkTypeFromCap, linkTypeName, PcapWriter, readPcap } from './capture-pcap';

export interface CaptureOptions {
  /** Interface to capture on (live mode). */
  iface?: string;
  /** BPF filter (pcap-filter(7)); empty: everything. */
  filter?: string;
  /** Stop after this many packets (0: no limit). */
  count?: number;
  /** Stop after this many seconds (0: no limit). */
  durationS?: number;
  /** pcap file to write. */
  out?: string;
  /** Print one line per packet. */
  decode?: boolean;
  /** Cluster key file (raw 32+ bytes or hex, like cluster.key_file) to verify control datagrams. */
  keyFile?: string;
  /** tunlb configuration: balancer/backends names, ports, cluster id; and its key unless --key-file. */
  config?: string;
  /** Decode an existing pcap file instead of capturing (implies decode). */
  read?: string;
  /** Override the control / data ports (default 7946 / 7947, or the config's). */
  controlPorts?: number[];
  dataPorts?: number[];
  /** Where decoded lines go (default: stdout). */
  print?: (line: string) => void;
  /** Where notes go (default: stderr). */
  note?: (line: string) => void;
  /** For tests: abort the capture from outside. */
  signal?: AbortSignal;
}

export interface CaptureSummary {
  packets: number;
  linktype: number;
  out: string | null;
  /** Why it stopped: count, duration, signal, abort, end-of-file. */
  reason: string;
}

/** The subset of `cap` used here (it ships no types). */
interface CapInstance {
  open(device: string, filter: string, bufSize: number, buffer: Buffer): string;
  close(): boolean;
  on(ev: 'packet', cb: (nbytes: number, truncated: boolean) => void): void;
  removeAllListeners(ev?: string): void;
}
interface CapModule {
  Cap: { new (): CapInstance; deviceList(): Array<{ name: string }> };
}

function loadCap(): CapModule {
  try {
    return require('cap') as CapModule;
  } catch (e) {
    throw new TunlbError(
      ErrorCodes.NATIVE_ADDON_MISSING,
      `the cap package (libpcap binding) cannot be loaded: ${(e as Error).message.split('\n')[0]} (install libpcap-dev and run npm ci)`,
      undefined,
      { cause: e },
    );
  }
}

/**
 * Length of the frame on the wire as far as its headers tell (link header + IP length), or
 * `caplen` when that is larger or unknown (Ethernet padding, non-IP frames).
 */
export function wireLength(linktype: number, frame: Uint8Array, caplen: number): number {
  let l2: number;
  let type: number;
  if (linktype === LINKTYPE.ETHERNET) {
    if (caplen < 14) return caplen;
    l2 = 14;
    type = (frame[12]! << 8) | frame[13]!;
    for (let i = 0; i < 2 && (type === 0x8100 || type === 0x88a8) && l2 + 4 <= caplen; i++) {
      type = (frame[l2 + 2]! << 8) | frame[l2 + 3]!;
      l2 += 4;
    }
  } else if (linktype === LINKTYPE.LINUX_SLL) {
    if (caplen < 16) return caplen;
    l2 = 16;
    type = (frame[14]! << 8) | frame[15]!;
  } else if (linktype === LINKTYPE.RAW) {
    l2 = 0;
    type = caplen > 0 && frame[0]! >>> 4 === 6 ? 0x86dd : 0x0800;
  } else {
    return caplen;
  }
  let ipLen = 0;
  if (type === 0x0800 && caplen >= l2 + 4 && frame[l2]! >>> 4 === 4) ipLen = (frame[l2 + 2]! << 8) | frame[l2 + 3]!;
  else if (type === 0x86dd && caplen >= l2 + 6 && frame[l2]! >>> 4 === 6) {
    const p = (frame[l2 + 4]! << 8) | frame[l2 + 5]!;
    ipLen = p === 0 ? 0 : 40 + p;
  }
  return ipLen === 0 ? caplen : Math.max(caplen, l2 + ipLen);
}

/** Loads --config: when its key is not readable here, the names and ports are still useful. */
function loadNames(path: string, note: (s: string) => void): { config: Config; keyUsable: boolean } {
  try {
    return { config: loadConfig(path), keyUsable: true };
  } catch (e) {
    if (!isTunlbError(e, ErrorCodes.CONFIG_KEY_MISSING)) throw e;
    note(`capture: ${e.message.split(' (fix:')[0]}; decoding without it`);
    return { config: loadConfig(path, { readKeyFile: () => Buffer.alloc(32) }), keyUsable: false };
  }
}

/** Decoder options from the command line: --config, --key-file, port overrides. */
export function buildDecoderOptions(opts: CaptureOptions, note: (s: string) => void): { options: DecoderOptions; keyFrom: string } {
  let options: DecoderOptions = {};
  let key: MacKey | null = null;
  let tagKey: Uint32Array | null = null;
  let keyFrom = 'none (control datagrams shown unverified)';
  if (opts.config) {
    const { config, keyUsable } = loadNames(opts.config, note);
    options = decoderOptionsFromConfig(config);
    if (keyUsable && !opts.keyFile) {
      key = macKey(config.cluster.key.reveal());
      tagKey = deriveDataTagKey(config.cluster.key.reveal());
      keyFrom = `${opts.config} (${config.cluster.keySource.kind === 'file' ? config.cluster.keySource.path : `$${config.cluster.keySource.name}`})`;
    }
  }
  if (opts.keyFile) {
    const r = loadKeyFile(opts.keyFile);
    if (!r.ok) throw new TunlbError(ErrorCodes.CONFIG_KEY_MISSING, `--key-file: ${r.message} (fix: ${r.fix})`);
    key = macKey(r.key.reveal());
    tagKey = deriveDataTagKey(r.key.reveal());
    keyFrom = opts.keyFile;
  }
  if (opts.controlPorts?.length) options.controlPorts = opts.controlPorts;
  if (opts.dataPorts?.length) options.dataPorts = opts.dataPorts;
  options.key = key;
  options.tagKey = tagKey;
  return { options, keyFrom };
}

function checkOptions(opts: CaptureOptions): void {
  const intOk = (v: number | undefined): boolean => v === undefined || (Number.isInteger(v) && v >= 0);
  if (!intOk(opts.count)) throw new TunlbError(ErrorCodes.USAGE, `--count must be a non-negative integer, got ${opts.count}`);
  if (opts.durationS !== undefined && !(Number.isFinite(opts.durationS) && opts.durationS >= 0)) {
    throw new TunlbError(ErrorCodes.USAGE, `--duration-s must be a non-negative number, got ${opts.durationS}`);
  }
  for (const p of [...(opts.controlPorts ?? []), ...(opts.dataPorts ?? [])]) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new TunlbError(ErrorCodes.USAGE, `ports must be 1..65535, got ${p}`);
  }
  if (opts.read) {
    if (opts.iface || opts.out || opts.filter) {
      throw new TunlbError(ErrorCodes.USAGE, '--read decodes an existing file: it does not take --iface, --filter or --out (filter with tcpdump -r IN -w OUT FILTER)');
    }
    return;
  }
  if (!opts.iface) throw new TunlbError(ErrorCodes.USAGE, 'capture needs --iface IF (or --read FILE to decode a pcap file)');
  if (!opts.out && !opts.decode) throw new TunlbError(ErrorCodes.USAGE, 'capture needs --out FILE, --decode, or both');
}

/** Decodes a pcap file (tcpdump's or ours) line by line. */
function readMode(opts: CaptureOptions, decoder: CaptureDecoder, print: (s: string) => void, note: (s: string) => void): CaptureSummary {
  const path = opts.read!;
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new TunlbError(ErrorCodes.USAGE, `cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const f = readPcap(buf, path);
  let n = 0;
  for (const r of f.records) {
    if (opts.count && n >= opts.count) break;
    n++;
    for (const line of decoder.decodeFrame(f.linktype, r.data, r.data.length, r.tsUs)) print(`${formatTime(r.tsUs)} ${line}`);
  }
  if (f.truncated) note(`capture: ${path} ends inside a packet record (still being written, or cut short)`);
  note(`capture: ${n} packet(s) decoded from ${path} (${linkTypeName(f.linktype)})`);
  return { packets: n, linktype: f.linktype, out: null, reason: 'end-of-file' };
}

function openError(e: unknown, iface: string, filter: string, cap: CapModule): TunlbError {
  const msg = (e as Error).message ?? String(e);
  if (/permission|not permitted/i.test(msg)) {
    return new TunlbError(ErrorCodes.NO_PERMISSION, `cannot capture on ${iface}: ${msg} (run as root, or give node CAP_NET_RAW)`);
  }
  if (/no such device|doesn't exist|does not exist/i.test(msg)) {
    let names = '';
    try {
      names = cap.Cap.deviceList().map((d) => d.name).join(', ');
    } catch {
      /* listing is only a hint */
    }
    return new TunlbError(ErrorCodes.USAGE, `no interface ${iface} here${names ? ` (interfaces: ${names})` : ''}; in the lab, run it inside the node's namespace: ip netns exec tunlb-lb1 tunlb capture ...`);
  }
  if (filter && /filter|syntax|parse|compile/i.test(msg)) {
    return new TunlbError(ErrorCodes.USAGE, `bad --filter '${filter}': ${msg} (syntax: man pcap-filter)`);
  }
  return new TunlbError(ErrorCodes.DEVICE_IO, `cannot capture on ${iface}: ${msg}`);
}

/**
 * Runs one capture (live, or --read) to its end. Resolves with what it did; rejects with a
 * TunlbError for usage errors (TUNLB_USAGE), permissions (TUNLB_NO_PERMISSION) and device
 * errors.
 */
export async function runCapture(opts: CaptureOptions): Promise<CaptureSummary> {
  const print = opts.print ?? ((s: string) => process.stdout.write(`${s}\n`));
  // A reader that went away (`tunlb capture --decode | head`) ends the capture (below), not the process.
  if (!opts.print) process.stdout.on('error', () => undefined);
  const note = opts.note ?? ((s: string) => process.stderr.write(`${s}\n`));
  checkOptions(opts);
  const wantDecode = Boolean(opts.decode || opts.read);
  const { options, keyFrom } = buildDecoderOptions(opts, note);
  const decoder = new CaptureDecoder(options);
  const decodingNote = (): void => {
    if (wantDecode) note(`capture: decoding control ports ${[...decoder.controlPorts].join(',')}, data ports ${[...decoder.dataPorts].join(',')}; key: ${keyFrom}`);
  };
  if (opts.read) {
    decodingNote();
    return readMode(opts, decoder, print, note);
  }

  const iface = opts.iface!;
  const filter = opts.filter ?? '';
  // A missing interface is found before libpcap (which would also print a warning of its own).
  if (iface !== 'any' && existsSync('/sys/class/net') && !existsSync(`/sys/class/net/${iface}`)) {
    throw new TunlbError(
      ErrorCodes.USAGE,
      `no interface ${iface} here (interfaces: ${readdirSync('/sys/class/net').join(', ')}); in the lab, run it inside the node's namespace: ip netns exec tunlb-lb1 tunlb capture ...`,
    );
  }
  const cap = loadCap();
  const c = new cap.Cap();
  const frame = Buffer.alloc(CAP_SNAPLEN);
  let linkName: string;
  try {
    linkName = c.open(iface, filter, 16 << 20, frame);
  } catch (e) {
    throw openError(e, iface, filter, cap);
  }
  let linktype: number;
  try {
    linktype = linkTypeFromCap(linkName);
  } catch (e) {
    c.close();
    throw e;
  }
  let writer: PcapWriter | null = null;
  try {
    if (opts.out) writer = new PcapWriter(opts.out, linktype, CAP_SNAPLEN);
  } catch (e) {
    c.close();
    throw e;
  }
  decodingNote();
  note(
    `capture: listening on ${iface} (${linkTypeName(linktype)})${filter ? `, filter '${filter}'` : ''}` +
      `${opts.count ? `, ${opts.count} packet(s)` : ''}${opts.durationS ? `, at most ${opts.durationS} s` : ''}${opts.out ? `, writing ${opts.out}` : ''}`,
  );

  // Wall clock in µs, monotonic between packets: one Date.now() at start plus hrtime deltas.
  const wall0Us = Date.now() * 1000;
  const hr0 = process.hrtime.bigint();
  const nowUs = (): number => wall0Us + Number((process.hrtime.bigint() - hr0) / 1000n);

  return new Promise<CaptureSummary>((resolve, reject) => {
    let packets = 0;
    let done = false;
    const timers: NodeJS.Timeout[] = [];
    const onSignal = (): void => finish('signal');
    const onAbort = (): void => finish('abort');
    // `tunlb capture --decode | head`: the reader went away (EPIPE); stop like on SIGINT.
    const onOutputError = (): void => finish('output closed');
    function finish(reason: string, err?: unknown): void {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      opts.signal?.removeEventListener('abort', onAbort);
      try {
        c.close();
      } catch {
        /* already closed */
      }
      c.removeAllListeners('packet');
      try {
        writer?.close();
      } catch (e) {
        err ??= e;
      }
      if (err) {
        reject(err);
        return;
      }
      note(`capture: ${packets} packet(s)${writer ? ` written to ${opts.out}` : ''} (stopped: ${reason})`);
      resolve({ packets, linktype, out: opts.out ?? null, reason });
    }
    c.on('packet', (nbytes: number) => {
      if (done) return;
      const ts = nowUs();
      try {
        writer?.write(frame, nbytes, ts, wireLength(linktype, frame, nbytes));
        if (wantDecode) for (const line of decoder.decodeFrame(linktype, frame, nbytes, ts)) print(`${formatTime(ts)} ${line}`);
      } catch (e) {
        finish('error', e);
        return;
      }
      packets++;
      if (opts.count && packets >= opts.count) finish('count');
    });
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    if (!opts.print) process.stdout.on('error', onOutputError);
    if (opts.signal) {
      if (opts.signal.aborted) return finish('abort');
      opts.signal.addEventListener('abort', onAbort);
    }
    if (opts.durationS) timers.push(setTimeout(() => finish('duration'), opts.durationS * 1000));
    if (writer) {
      const flush = setInterval(() => {
        try {
          writer!.flush();
        } catch (e) {
          finish('error', e);
        }
      }, 200);
      timers.push(flush);
    }
  });
}
