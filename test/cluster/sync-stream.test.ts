/**
 * The bulk sync stream end to end (src/cluster/sync-stream.ts, sync-runner.ts, sync-order.ts)
 * between Replicators of a LoopbackCluster, over in-memory connections that behave like TCP
 * (test/helpers/sync-pipe.ts: bounded buffers, pause/resume, drain), plus one run over real
 * TCP on 127.0.0.1 (src/cluster/sync-transport.ts).
 *
 * What must hold: every flow the responder holds arrives exactly, also when frames are lost,
 * repeated or reordered (each such fault breaks the session's MAC chain; the next session
 * resumes from the cursor), when the responder dies mid-sync (resume on another peer), when
 * the receiver is slow (the responder waits instead of queueing without bound); bad peers and
 * forged or replayed handshakes get nothing and are counted.
 */
import { availableParallelism, loadavg } from 'node:os';
import { EventEmitter } from 'node:events';
import test from 'ava';
import { LoopbackCluster, LOOPBACK_CLUSTER_ID, type LoopbackMember } from '../helpers/replication-loopback';
import { SyncStreamServer } from '../../src/cluster/sync-responder';
import { SyncSession } from '../../src/cluster/sync-session';
import type { SyncConnection, SyncStreamIdentity } from '../../src/cluster/sync-stream';
import { SyncRunner, type SyncEvent, type SyncRunnerOptions } from '../../src/cluster/sync-runner';
import { SYNC_ROWS } from '../../src/cluster/sync-order';
import { connectSync, SyncListener } from '../../src/cluster/sync-transport';
import { macKey } from '../../src/protocol';
import { pipePair, type PipeEnd, type PipeFault, type PipeOptions } from '../helpers/sync-pipe';

const TCP = 6;
const UDP = 17;

/** A loopback cluster whose members name each other lb0, lb1, ... in logs and events. */
function cluster(opts: ConstructorParameters<typeof LoopbackCluster>[0]): LoopbackCluster {
  const ids = Array.from({ length: opts.balancers }, (_, i) => `lb${i}`);
  return new LoopbackCluster({ ...opts, replicator: { balancerIds: ids, ...(opts.replicator ?? {}) } });
}

/** Opens `n` flows on each of `members` with the same decisions (as replication would leave them). */
function fill(c: LoopbackCluster, members: LoopbackMember[], n: number, from = 0): void {
  const k = new Uint8Array(new ArrayBuffer(40));
  for (let i = from; i < from + n; i++) {
    const vip = i % 5 === 4 ? 1 : i % 5 === 3 ? 2 : 0; // mostly IPv4 NAT, some IPv6 and DSR
    c.flowKey(i, vip, i % 7 === 0 ? UDP : TCP, k);
    const nb = vip === 0 ? 3 : 2;
    for (const m of members) {
      const id = c.openFlow(m, k, i % 3, (i + 1) % 3, vip, (i >>> 2) % nb, 3);
      if (id < 0) throw new Error(`insert ${i} on ${m.index} failed: ${id}`);
    }
  }
}

/** Flows of `a` that `b` lacks or holds with another decision or state (one lookup per flow). */
function differences(a: LoopbackMember, b: LoopbackMember): { missing: number; different: number } {
  const w = new Uint32Array(10);
  let missing = 0;
  let different = 0;
  const ta = a.table;
  const tb = b.table;
  ta.scan(0, ta.capacity, (ia) => {
    ta.copyKey(ia, 0, w, 0);
    const ref = tb.lookup(w, b.now);
    if (ref < 0 || (ref & 1) !== 0) {
      missing++;
      return;
    }
    const ib = ref >>> 1;
    if (ta.primary(ia) !== tb.primary(ib) || ta.backup(ia) !== tb.backup(ib) || ta.vip(ia) !== tb.vip(ib) || ta.backend(ia) !== tb.backend(ib) || ta.state(ia) !== tb.state(ib)) different++;
  });
  return { missing, different };
}

function identity(c: LoopbackCluster, m: LoopbackMember, key = c.key): SyncStreamIdentity {
  return { key, clusterId: LOOPBACK_CLUSTER_ID, selfIndex: m.index, incarnation: m.signer.incarnation, balancerCount: c.config.balancers.length };
}

/** Stream responders for some members, and connections to them. */
class StreamNet {
  readonly servers = new Map<number, SyncStreamServer>();
  readonly serving = new Set<number>();
  /** Pipes opened, by responder index. */
  readonly pipes: Array<{ to: number; a: PipeEnd; b: PipeEnd }> = [];
  pipeOptions: PipeOptions = {};

  constructor(readonly c: LoopbackCluster) {}

  serve(m: LoopbackMember, opts: Partial<ConstructorParameters<typeof SyncStreamServer>[0]> = {}): SyncStreamServer {
    const s = new SyncStreamServer({ ...identity(this.c, m), host: m.replicator.syncHost, stats: m.replicator.stats, isServing: () => this.serving.has(m.index), ...opts });
    this.servers.set(m.index, s);
    this.serving.add(m.index);
    return s;
  }

  connect(from: number, to: number): SyncConnection {
    const p = pipePair(this.pipeOptions);
    this.pipes.push({ to, ...p });
    const s = this.servers.get(to);
    if (s !== undefined) s.accept(p.b, from);
    return p.a;
  }

  runner(d: LoopbackMember, opts: Partial<SyncRunnerOptions> = {}): SyncRunner {
    return new SyncRunner({
      ...identity(this.c, d),
      host: d.replicator.syncHost,
      stats: d.replicator.stats,
      connect: (peer) => this.connect(d.index, peer),
      candidates: () => [...this.serving].filter((i) => i !== d.index).sort(),
      ...opts,
    });
  }
}

/** Max gap between setInterval(1) callbacks while `p` runs. */
async function maxLoopGap<T>(p: Promise<T>): Promise<{ value: T; maxGapMs: number }> {
  let last = performance.now();
  let maxGap = 0;
  const iv = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
  }, 1);
  try {
    return { value: await p, maxGapMs: maxGap };
  } finally {
    clearInterval(iv);
  }
}

/** A deterministic PRNG (LCG), so a failure replays. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
}

test.serial('1M flows synced exactly over a stream that loses, repeats and reorders 1% of its frames each; the loop keeps running', async (t) => {
  const N = 1_000_000;
  const c = cluster({ balancers: 3, capacity: 1 << 20, mode: 'async' });
  const a = c.join(0);
  fill(c, [a], N);
  const d = c.join(2);
  const net = new StreamNet(c);
  net.serve(a);
  const rnd = lcg(15);
  const faults: Record<string, number> = { drop: 0, dup: 0, swap: 0 };
  net.pipeOptions = {
    // The responder's chunk frames (its write 0 is the welcome). A lost hello or welcome is a
    // stalled handshake, which costs the handshake timeout: tested apart, not at 1%.
    faults: (from, n): PipeFault => {
      if (from !== 'b' || n === 0) return null;
      const r = rnd();
      const f: PipeFault = r < 0.01 ? 'drop' : r < 0.02 ? 'dup' : r < 0.03 ? 'swap' : null;
      if (f !== null) faults[f]!++;
      return f;
    },
  };
  const events: SyncEvent[] = [];
  const runner = net.runner(d, { onEvent: (e) => events.push(e) });
  const t0 = performance.now();
  const { value: r, maxGapMs } = await maxLoopGap(runner.run());
  const ms = performance.now() - t0;
  const ds = d.replicator.stats;
  const as = a.replicator.stats;
  t.log(
    `${N} flows in ${ms.toFixed(0)} ms (${((N / ms) * 1000).toFixed(0)} records/s, both ends in this process); faults injected: ${JSON.stringify(faults)}; ` +
      `${ds.syncSessions} sessions (${ds.syncResumes} resumed), ends: ${JSON.stringify(ds.syncSessionFailures)}; responder: ${as.syncRecordsSent} records sent, ` +
      `snapshots built ${as.syncSnapshotsBuilt} reused ${as.syncSnapshotsReused}; max setInterval(1) gap ${maxGapMs.toFixed(1)} ms (load ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} CPUs)`,
  );
  t.true(r.ok, r.reason);
  t.is(d.table.size, N);
  t.deepEqual(differences(a, d), { missing: 0, different: 0 });
  t.is(ds.applied, N, 'each flow installed once; the rest were refreshes of rows re-sent by resumes');
  t.is(ds.ignored, 0);
  t.true(faults.drop! + faults.dup! + faults.swap! >= 10, 'faults were injected');
  t.true(ds.syncResumes >= 5, `only ${ds.syncResumes} resumes: the faults were not caught`);
  t.true((ds.syncStreamDrops['bad_mac'] ?? 0) >= 5, `bad frames counted: ${JSON.stringify(ds.syncStreamDrops)}`);
  t.true(as.syncSnapshotsReused >= 1, 'a resume reuses the responder snapshot');
  t.deepEqual(events[0]?.type, 'sync_started');
  t.is(events.at(-1)?.type, 'sync_done');
  t.true(events.some((e) => e.type === 'sync_resumed' && e.cursor > 0));
  const p = runner.snapshot();
  t.is(p.state, 'done');
  t.is(p.received, ds.syncRecordsReceived);
  // Loose: timing is logged above; on a loaded 2-core machine single gaps stretch.
  t.true(maxGapMs < 1000, `event loop gap ${maxGapMs.toFixed(1)} ms`);
});

test.serial('the receiver sets the pace: a slow applier pauses the stream and the responder waits for drain', async (t) => {
  const N = 150_000; // ~5.5 MB of frames: more than the requester's 2 MiB high-water mark
  const c = cluster({ balancers: 3, capacity: 1 << 18, mode: 'async' });
  const a = c.join(0);
  fill(c, [a], N);
  const d = c.join(2);
  const net = new StreamNet(c);
  const HW = 128 * 1024;
  net.serve(a, { writeHighWater: HW });
  net.pipeOptions = { rcvBuf: 256 * 1024 };
  let maxQueued = 0;
  let pauses = 0;
  // Only the requester applies slowly (a busy balancer): each of its steps waits 1 ms.
  const runner = net.runner(d, {
    host: { ...d.replicator.syncHost, defer: (fn) => setTimeout(fn, 1) },
    session: { stepMs: 0.2, highWaterBytes: 1 << 20, lowWaterBytes: 256 * 1024 },
  });
  const origConnect = net.connect.bind(net);
  net.connect = (from, to) => {
    const end = origConnect(from, to) as PipeEnd;
    const p = net.pipes.at(-1)!;
    const w = p.b.write.bind(p.b);
    p.b.write = (data: Uint8Array) => {
      const ok = w(data);
      maxQueued = Math.max(maxQueued, p.b.writableLength);
      return ok;
    };
    const pause = end.pause.bind(end);
    end.pause = () => {
      pauses++;
      return pause();
    };
    return end;
  };
  const r = await runner.run();
  t.true(r.ok, r.reason);
  t.is(d.table.size, N);
  t.true(pauses > 0, 'the requester paused its connection');
  // The responder stops producing at its high-water mark: at most one more frame queued.
  t.true(maxQueued <= HW + 64 * 1024, `responder queued up to ${maxQueued} bytes`);
  t.log(`${pauses} pauses, responder queue at most ${maxQueued} bytes (high water ${HW})`);
});

test.serial('a responder that dies mid-sync: the sync resumes on another peer from its cursor', async (t) => {
  const N = 200_000;
  const c = cluster({ balancers: 4, capacity: 1 << 18, mode: 'async' });
  const a = c.join(0);
  const b = c.join(1);
  fill(c, [a, b], N); // both hold the same table, as replication leaves them
  const d = c.join(3);
  const net = new StreamNet(c);
  net.serve(a);
  net.serve(b);
  const dead = new Set<number>();
  let chunksFromA = 0;
  net.pipeOptions = {
    faults: (from, _n, bytes) => {
      // "kill -9" lb0 after its 60th chunk frame: it stops answering (probes say so soon after).
      if (from === 'b' && net.pipes.at(-1)?.to === 0 && bytes.length > 1000 && ++chunksFromA === 60) {
        dead.add(0);
        net.serving.delete(0);
        setImmediate(() => net.pipes.filter((p) => p.to === 0).forEach((p) => p.b.destroy()));
      }
      return dead.has(0) && net.pipes.at(-1)?.to === 0 ? 'drop' : null;
    },
  };
  const events: SyncEvent[] = [];
  const runner = net.runner(d, { peerAlive: (p) => !dead.has(p), onEvent: (e) => events.push(e) });
  const r = await runner.run();
  t.true(r.ok, r.reason);
  t.is(r.peer, 1);
  t.deepEqual(differences(a, d), { missing: 0, different: 0 });
  const ds = d.replicator.stats;
  t.is(ds.applied, N);
  const resumed = events.find((e) => e.type === 'sync_resumed');
  t.truthy(resumed, JSON.stringify(events));
  t.is(resumed!.id, 'lb1');
  t.true(resumed!.cursor > 0 && resumed!.cursor < SYNC_ROWS);
  const failed = events.find((e) => e.type === 'sync_failed');
  t.regex(failed!.reason, /records applied, position \d+ of 65536/);
  // lb1 only sent what lay beyond the cursor (plus the rest of the row at the cursor).
  const bs = b.replicator.stats;
  t.true(resumed!.records > 10_000, `${resumed!.records} records applied from lb0`);
  t.true(bs.syncRecordsSent <= N - resumed!.records + 100, `lb1 sent ${bs.syncRecordsSent}, lb0's ${resumed!.records} were applied`);
  t.true(ds.updated < 100, `${ds.updated} records re-sent (the row at the cursor)`);
  t.log(`lb0 sent ${a.replicator.stats.syncRecordsSent}, lb1 sent ${bs.syncRecordsSent} from position ${resumed!.cursor}; re-applied ${ds.updated}`);
});

test.serial('probes are believed only with silence: a flowing stream survives a false "dead", a silent one ends at once and resumes elsewhere', async (t) => {
  const N = 60_000;
  const c = cluster({ balancers: 4, capacity: 1 << 17, mode: 'async' });
  const a = c.join(0);
  const b = c.join(1);
  fill(c, [a, b], N);
  // (a) lb0 streams, but the requester's membership calls it dead all along (late probe answers).
  const d = c.join(3);
  const net = new StreamNet(c);
  net.serve(a);
  const slow = { ...d.replicator.syncHost, defer: (fn: () => void) => setTimeout(fn, 1) }; // long enough for many checks
  const r1 = await net.runner(d, { host: slow, peerAlive: () => false, session: { watchMs: 20, deadQuietMs: 300 } }).run();
  t.true(r1.ok, r1.reason);
  t.is(d.replicator.stats.syncSessions, 1, 'no session was broken by the false verdict');
  // (b) lb0 goes silent mid-stream without closing (its host died): the probes' verdict ends the
  // session after deadQuietMs of silence, well before the idle timeout, and lb1 finishes it.
  const e = c.join(2);
  const net2 = new StreamNet(c);
  net2.serve(a);
  net2.serve(b);
  const dead = new Set<number>();
  let frames = 0;
  net2.pipeOptions = {
    faults: (from) => {
      if (from !== 'b' || net2.pipes.at(-1)?.to !== 0) return null;
      if (++frames === 20) {
        // the host is gone: nothing more arrives, not even a FIN or a RST
        dead.add(0);
        const end = net2.pipes.at(-1)!.b;
        end.end = end.destroy = () => end;
      }
      return dead.has(0) ? 'drop' : null;
    },
  };
  const events: SyncEvent[] = [];
  const t0 = performance.now();
  const keep = setInterval(() => undefined, 50); // the session's watchdog is unref'd, as in the daemon
  t.teardown(() => clearInterval(keep));
  const r2 = await net2.runner(e, { peerAlive: (p) => !dead.has(p), onEvent: (x) => events.push(x), session: { watchMs: 20, deadQuietMs: 300, idleTimeoutMs: 20_000 } }).run();
  t.true(r2.ok, r2.reason);
  t.is(r2.peer, 1);
  t.deepEqual(differences(a, e), { missing: 0, different: 0 });
  t.regex(events.find((x) => x.type === 'sync_failed')?.reason ?? '', /lb0 is down \(probes; no data for \d+ ms\)/);
  t.true(performance.now() - t0 < 10_000, 'ended by the probes, not by the 20 s idle timeout');
});

test.serial('refusals: a responder that is not serving, or busy, says so and the runner asks another peer', async (t) => {
  const c = cluster({ balancers: 4, capacity: 8192, mode: 'async' });
  const a = c.join(0);
  const b = c.join(1);
  fill(c, [a, b], 3000);
  const d = c.join(3);
  const net = new StreamNet(c);
  net.serve(a);
  net.serve(b, { maxSessions: 0 }); // busy for anyone
  net.serving.delete(0); // lb0 is still syncing itself (a race with the candidates list)
  const events: SyncEvent[] = [];
  let rounds = 0;
  const runner = net.runner(d, {
    candidates: () => (++rounds <= 2 ? [0, 1] : [0, 1]),
    onEvent: (e) => events.push(e),
    backoffMs: 1,
  });
  setTimeout(() => net.serving.add(0), 30); // lb0 serves after a while
  const r = await runner.run();
  t.true(r.ok, r.reason);
  t.is(r.peer, 0);
  const fails = events.filter((e) => e.type === 'sync_failed').map((e) => e.reason);
  t.true(fails.some((x) => /lb0 refused: not_serving/.test(x)), fails.join('\n'));
  t.true(fails.some((x) => /lb1 refused: busy/.test(x)), fails.join('\n'));
  t.true((a.replicator.stats.syncStreamsRefused['not_serving'] ?? 0) >= 1);
  t.true((b.replicator.stats.syncStreamsRefused['busy'] ?? 0) >= 1);
  t.is(d.table.size, 3000);
});

test.serial('a requester without the cluster key, or speaking for another balancer, gets nothing; both ends count it', async (t) => {
  const c = cluster({ balancers: 3, capacity: 4096, mode: 'async' });
  const a = c.join(0);
  fill(c, [a], 500);
  const d = c.join(2);
  const net = new StreamNet(c);
  net.serve(a);
  const session = (key = c.key, claim = 2, accepted = 2): SyncSession => {
    const p = pipePair();
    net.servers.get(0)!.accept(p.b, accepted);
    return new SyncSession(p.a, { ...identity(c, d, key), selfIndex: claim, host: d.replicator.syncHost, stats: d.replicator.stats, peer: 0, fromCursor: 0 });
  };
  const wrongKey = await session(macKey(Buffer.alloc(32, 0x99))).ended;
  t.false(wrongKey.done);
  t.is(wrongKey.cause, 'closed');
  t.is(a.replicator.stats.syncStreamDrops['bad_mac'], 1);
  const wrongSender = await session(c.key, 1, 2).ended; // claims lb1 from lb2's address
  t.false(wrongSender.done);
  t.is(a.replicator.stats.syncStreamDrops['wrong_sender'], 1);
  t.is(a.replicator.stats.syncChunksSent, 0, 'no record left the responder');
  t.is(d.table.size, 0);
  // And a requester that gets a welcome under another key drops it (bad_mac) before reading it.
  const e = new StreamNet(c);
  e.serve(a, { key: macKey(Buffer.alloc(32, 0x77)) });
  const p = pipePair();
  e.servers.get(0)!.accept(p.b, 2);
  const end = await new SyncSession(p.a, { ...identity(c, d), host: d.replicator.syncHost, stats: d.replicator.stats, peer: 0, fromCursor: 0 }).ended;
  t.is(end.cause, 'closed'); // the responder dropped our hello first (its key differs)
});

test.serial('a replayed handshake (hello and request recorded from a real session) earns a welcome, never a record', async (t) => {
  const c = cluster({ balancers: 3, capacity: 4096, mode: 'async' });
  const a = c.join(0);
  fill(c, [a], 500);
  const d = c.join(2);
  const net = new StreamNet(c);
  net.serve(a);
  const sent: Buffer[] = [];
  net.pipeOptions = {
    faults: (from, _n, bytes) => {
      if (from === 'a') sent.push(Buffer.from(bytes));
      return null;
    },
  };
  const r = await net.runner(d).run();
  t.true(r.ok);
  t.is(sent.length, 2, 'the requester wrote its hello and its request');
  const chunksBefore = a.replicator.stats.syncChunksSent;
  // The attacker replays both frames on a new connection from lb2's address.
  const p = pipePair();
  const got: Buffer[] = [];
  p.a.on('data', (b: Buffer) => got.push(b));
  const closed = new Promise((res) => p.a.on('close', res));
  net.servers.get(0)!.accept(p.b, 2);
  p.a.write(sent[0]!);
  p.a.write(sent[1]!);
  await closed;
  t.is(a.replicator.stats.syncChunksSent, chunksBefore, 'no chunk for a replayed request');
  t.is(a.replicator.stats.syncStreamDrops['bad_mac'], 1, 'the request failed its MAC under the new session key');
  t.is(got.length, 1, 'only the welcome came back');
});

test.serial('no serving peer: run() gives up after noPeerWaitMs, says why, keeps what it applied', async (t) => {
  const c = cluster({ balancers: 2, capacity: 256, mode: 'async' });
  const d = c.join(1);
  const net = new StreamNet(c);
  const events: SyncEvent[] = [];
  const r = await net.runner(d, { noPeerWaitMs: 100, onEvent: (e) => events.push(e) }).run();
  t.false(r.ok);
  t.regex(r.reason, /no serving peer for \d+ ms \(0 records applied, position 0 of 65536\)/);
  t.deepEqual(events.map((e) => e.type), ['sync_gave_up']);
  t.is(d.replicator.stats.syncsFailed, 1);
});

test.serial('a peer that refuses the connection (first release, no sync stream) is synced by datagrams', async (t) => {
  const c = cluster({ balancers: 3, capacity: 8192, mode: 'async' });
  const a = c.join(0);
  fill(c, [a], 2000);
  const d = c.join(2);
  const net = new StreamNet(c);
  net.serving.add(0); // serving, but no stream listener
  const refused = (): SyncConnection => {
    const e = new EventEmitter() as EventEmitter & SyncConnection;
    Object.assign(e, { writableLength: 0, write: () => true, pause: () => e, resume: () => e, end: () => e, destroy: () => e });
    setImmediate(() => {
      e.emit('error', Object.assign(new Error('connect ECONNREFUSED 10.0.0.11:7946'), { code: 'ECONNREFUSED' }));
      e.emit('close');
    });
    return e;
  };
  let legacyCalls = 0;
  const r = await net
    .runner(d, {
      connect: refused,
      legacy: (peer) => {
        legacyCalls++;
        return d.replicator.requestSync(peer, 5000);
      },
    })
    .run();
  t.true(r.ok, r.reason);
  t.is(legacyCalls, 1);
  t.is(d.table.size, 2000);
  t.is(d.replicator.stats.syncSessionFailures['connect_refused'], 1);
});

test.serial('progress: records received of the total, rate and peer while it runs', async (t) => {
  const N = 100_000;
  const c = cluster({ balancers: 3, capacity: 1 << 17, mode: 'async' });
  const a = c.join(0);
  fill(c, [a], N);
  const d = c.join(2);
  const net = new StreamNet(c);
  net.serve(a);
  const runner = net.runner(d);
  const seen: Array<{ received: number; total: number | null }> = [];
  const iv = setInterval(() => {
    const p = runner.snapshot();
    if (p.state === 'syncing') seen.push({ received: p.received, total: p.total });
  }, 5);
  const r = await runner.run();
  clearInterval(iv);
  t.true(r.ok);
  const mid = seen.filter((s) => s.received > 0 && s.received < N);
  t.true(mid.length > 0, `progress samples: ${JSON.stringify(seen.slice(0, 5))}`);
  t.true(mid.every((s) => s.total === N), 'the total is known from the first chunk');
  const p = runner.snapshot();
  t.like(p, { state: 'done', peer: 'lb0', received: N, total: N, sessions: 1, resumes: 0, lastError: null, cursor: SYNC_ROWS });
  t.true(p.ratePerS > 0);
  t.is(d.replicator.stats.syncLastRecords, N);
});

test.serial('unconfirmed flows (a SYN flood) stay out of the sync; the final total is what arrived', async (t) => {
  const c = cluster({ balancers: 3, capacity: 1 << 14, mode: 'async' });
  const a = c.join(0);
  const k = new Uint8Array(new ArrayBuffer(40));
  for (let i = 0; i < 4000; i++) {
    c.flowKey(i, 0, TCP, k);
    // even i: a completed handshake (3 packets: confirmed); odd i: a SYN only (unconfirmed)
    if (c.openFlow(a, k, i % 3, (i + 1) % 3, 0, i % 3, i % 2 === 0 ? 3 : 1) < 0) throw new Error(`insert ${i}`);
  }
  const d = c.join(2);
  const net = new StreamNet(c);
  net.serve(a);
  const runner = net.runner(d);
  const r = await runner.run();
  t.true(r.ok, r.reason);
  t.is(r.records, 2000);
  t.is(d.table.size, 2000);
  t.like(runner.snapshot(), { received: 2000, total: 2000 });
});

test.serial('over real TCP on 127.0.0.1: the listener takes configured peers only, the sync completes', async (t) => {
  const c = cluster({ balancers: 3, capacity: 1 << 15, mode: 'async' });
  const a = c.join(0);
  fill(c, [a], 20_000);
  const d = c.join(2);
  const server = new SyncStreamServer({ ...identity(c, a), host: a.replicator.syncHost, stats: a.replicator.stats });
  const rejected: string[] = [];
  const listener = await SyncListener.open({
    address: '127.0.0.1',
    port: 0,
    peers: ['127.0.0.1', '127.0.0.3', '127.0.0.2'], // lb0 (us), lb1, lb2 (the requester)
    selfIndex: 0,
    onConnection: (sock, peer) => server.accept(sock, peer),
    onReject: (addr) => rejected.push(addr),
  });
  t.teardown(() => listener.close());
  const r = await new SyncRunner({
    ...identity(c, d),
    host: d.replicator.syncHost,
    stats: d.replicator.stats,
    connect: () => connectSync('127.0.0.1', listener.port, '127.0.0.2'),
    candidates: () => [0],
  }).run();
  t.true(r.ok, r.reason);
  t.deepEqual(differences(a, d), { missing: 0, different: 0 });
  // From an address that is no balancer's: closed at once.
  const stranger = connectSync('127.0.0.1', listener.port, '127.0.0.4');
  await new Promise((res) => stranger.on('close', res).on('error', () => undefined));
  t.deepEqual(rejected, ['127.0.0.4']);
  // The port is taken: a clear error that names the fix.
  const e = await t.throwsAsync(SyncListener.open({ address: '127.0.0.1', port: listener.port, peers: [], selfIndex: 0, onConnection: () => undefined }));
  t.regex(e!.message, /cannot listen for bulk sync on tcp 127\.0\.0\.1:\d+: EADDRINUSE .*control_port/);
});
