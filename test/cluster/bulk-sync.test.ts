/**
 * Bulk sync (src/cluster/bulk-sync.ts via Replicator.requestSync / onSyncRequest /
 * onSyncChunk) over the in-memory network in async mode (each datagram delivered in its own
 * setImmediate, like socket events), through real EnvelopeReceivers.
 */
import { availableParallelism, loadavg } from 'node:os';
import test from 'ava';
import { LoopbackCluster, LOOPBACK_CLUSTER_ID, type LoopbackMember } from '../helpers/replication-loopback';
import { isTunlbError, ErrorCodes } from '../../src/errors';
import { EnvelopeSigner } from '../../src/protocol';

const TCP = 6;
const UDP = 17;

function fill(c: LoopbackCluster, m: LoopbackMember, n: number, from = 0): Uint8Array[] {
  const keys: Uint8Array[] = [];
  for (let i = from; i < from + n; i++) {
    const vip = i % 5 === 4 ? 1 : i % 5 === 3 ? 2 : 0; // mostly IPv4 NAT, some IPv6 and DSR
    const k = new Uint8Array(new ArrayBuffer(40));
    c.flowKey(i, vip, i % 7 === 0 ? UDP : TCP, k);
    const nb = vip === 0 ? 3 : 2;
    const id = c.openFlow(m, k, i % 3, (i + 1) % 3, vip, (i >>> 2) % nb, 3);
    if (id < 0) throw new Error(`insert ${i} failed: ${id}`);
    keys.push(k);
  }
  return keys;
}
function find(m: LoopbackMember, k: Uint8Array): number {
  const ref = m.table.lookup(new Uint32Array(k.buffer, 0, 10), m.now);
  return ref >= 0 && (ref & 1) === 0 ? ref >>> 1 : -1;
}
function sameDecisions(a: LoopbackMember, b: LoopbackMember, keys: Uint8Array[]): number {
  let bad = 0;
  for (const k of keys) {
    const ia = find(a, k);
    const ib = find(b, k);
    if (ib < 0) {
      bad++;
      continue;
    }
    const ta = a.table;
    const tb = b.table;
    if (ta.primary(ia) !== tb.primary(ib) || ta.backup(ia) !== tb.backup(ib) || ta.vip(ia) !== tb.vip(ib) || ta.backend(ia) !== tb.backend(ib) || ta.state(ia) !== tb.state(ib)) bad++;
  }
  return bad;
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
    const value = await p;
    return { value, maxGapMs: maxGap };
  } finally {
    clearInterval(iv);
  }
}

test.serial('bulk sync of 50,000 flows from A to a fresh D: count verified, decisions equal, the loop never blocked', async (t) => {
  const c = new LoopbackCluster({ balancers: 4, capacity: 65536, mode: 'async' });
  const a = c.join(0);
  const keys = fill(c, a, 50_000);
  a.replicator.flush(); // (nobody else listens yet; D joins after)
  const d = c.join(3);
  let chunkBytes = 0;
  let chunks = 0;
  let maxDgram = 0;
  c.net.tap = (x) => {
    if (x.from === 0 && x.to === 3) {
      chunks++;
      chunkBytes += x.dgram.length;
      maxDgram = Math.max(maxDgram, x.dgram.length);
    }
  };
  const t0 = performance.now();
  const { value: r, maxGapMs } = await maxLoopGap(d.replicator.requestSync(0, 20_000));
  const ms = performance.now() - t0;
  t.is(r.records, 50_000);
  t.is(d.table.size, 50_000);
  t.is(d.replicator.stats.applied, 50_000);
  t.is(sameDecisions(a, d, keys), 0);
  t.is(r.chunks, chunks);
  t.true(maxDgram <= 1400, `largest chunk ${maxDgram} B`);
  const st = a.replicator.stats;
  t.log(
    `50,000 records in ${r.chunks} chunks (${(50_000 / r.chunks).toFixed(1)} records/datagram, ${(chunkBytes / chunks).toFixed(0)} B avg, max ${maxDgram} B), ` +
      `${ms.toFixed(0)} ms (${((50_000 / ms) * 1000).toFixed(0)} records/s)`,
  );
  t.log(
    `server: ${st.syncSteps} steps, by duration <=0.5/1/2/5/10/more ms: ${st.syncStepHistogram.join('/')}, longest ${st.syncMaxStepMs.toFixed(2)} ms; ` +
      `max setInterval(1) gap ${maxGapMs.toFixed(1)} ms (load average ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} CPUs)`,
  );
  // Steps are bounded by design (0.5 ms of work, then setImmediate); wall-clock outliers come
  // from GC and preemption on a shared host, so the check is on the distribution plus a loose cap.
  // Timing is logged above, not asserted tightly (a loaded 2-core CI machine stretches every
  // step); what must hold whatever the load: the work was split into many short steps that
  // yield to the event loop, so the loop kept running during the sync.
  t.true(st.syncSteps >= 50, `only ${st.syncSteps} steps: the sync was not split`);
  t.true(maxGapMs < 1000, `event loop gap ${maxGapMs.toFixed(1)} ms`);
  t.is(a.replicator.syncJobs, 0);
});

test.serial('concurrent syncs from two peers each get the whole table (one cursor per request)', async (t) => {
  const c = new LoopbackCluster({ balancers: 4, capacity: 8192, mode: 'async' });
  const a = c.join(0);
  const keys = fill(c, a, 3000);
  const d = c.join(2);
  const e = c.join(3);
  const [rd, re] = await Promise.all([d.replicator.requestSync(0, 10_000), e.replicator.requestSync(0, 10_000)]);
  t.is(rd.records, 3000);
  t.is(re.records, 3000);
  t.is(sameDecisions(a, d, keys), 0);
  t.is(sameDecisions(a, e, keys), 0);
  t.is(a.replicator.stats.syncJobsCompleted, 2);
});

test.serial('an empty table answers with one empty done chunk', async (t) => {
  const c = new LoopbackCluster({ balancers: 2, capacity: 256, mode: 'async' });
  c.join(0);
  const d = c.join(1);
  const r = await d.replicator.requestSync(0, 5000);
  t.deepEqual([r.records, r.chunks], [0, 1]);
});

test.serial('a lost chunk makes the client time out (SYNC_FAILED); the retry with another peer succeeds', async (t) => {
  const c = new LoopbackCluster({ balancers: 4, capacity: 8192, mode: 'async' });
  const a = c.join(0);
  const b = c.join(1);
  const keys = fill(c, a, 2000);
  a.replicator.flush();
  // B learns A's flows by replication (one setImmediate per datagram): wait on that, bounded. A
  // fixed sleep lost the race on a loaded machine (the timer phase ran before the deliveries).
  for (let i = 0; i < 200 && b.table.size < 2000; i++) await new Promise((r) => setTimeout(r, 10));
  t.is(b.table.size, 2000, 'B learnt every flow by replication within 2 s');
  const d = c.join(3);
  let n = 0;
  c.net.filter = (x) => !(x.from === 0 && x.to === 3 && n++ === 5); // lose A's 6th chunk to D
  const err = await t.throwsAsync(d.replicator.requestSync(0, 300));
  t.true(isTunlbError(err, ErrorCodes.SYNC_FAILED), String(err));
  t.regex(err!.message, /timed out/);
  const r = await d.replicator.requestSync(1, 5000);
  t.is(r.records, 2000);
  t.is(sameDecisions(a, d, keys), 0);
  t.is(d.replicator.stats.syncsFailed, 1);
  t.is(d.replicator.stats.syncsCompleted, 1);
});

test.serial('a done chunk whose total does not match the records received rejects (count verification)', async (t) => {
  const c = new LoopbackCluster({ balancers: 3, capacity: 256, mode: 'async' });
  // Balancer 0 is played by hand: it records request ids and answers with a lying done chunk.
  const reqIds: number[] = [];
  c.net.attach(0, { onEnvelope: (env: { syncRequest: { requestId: number } | null }) => env.syncRequest && reqIds.push(env.syncRequest.requestId) } as never);
  const d = c.join(2);
  const s0 = new EnvelopeSigner({ key: c.key, clusterId: LOOPBACK_CLUSTER_ID, sender: 0, incarnation: Date.now() * 2048 });
  const p = d.replicator.requestSync(0, 2000);
  for (let i = 0; i < 200 && reqIds.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.is(reqIds.length, 1);
  const chunk = s0.seal('syncChunk', { requestId: reqIds[0]!, chunkIndex: 0, nextCursor: 0, done: true, totalRecords: 5, records: [] });
  c.net.deliver({ from: 0, to: 2, dgram: chunk, n: -1 });
  const err = await t.throwsAsync(p);
  t.true(isTunlbError(err, ErrorCodes.SYNC_FAILED));
  t.regex(err!.message, /received 0 records, the peer sent 5/);
  // A late chunk for a finished request is ignored and counted.
  c.net.deliver({ from: 0, to: 2, dgram: s0.seal('syncChunk', { requestId: reqIds[0]!, chunkIndex: 1, done: true, records: [] }), n: -1 });
  t.is(d.replicator.stats.syncChunksIgnored, 1);
});

test.serial('sync under churn: every flow live during the whole sync arrives exactly once', async (t) => {
  const c = new LoopbackCluster({ balancers: 3, capacity: 16384, mode: 'async' });
  const a = c.join(0);
  const stable = fill(c, a, 6000);
  const churn = fill(c, a, 2000, 100_000);
  const d = c.join(2);
  let added = 0;
  const iv = setInterval(() => {
    // remove some churn flows, add new ones, while the answer is being built
    for (let i = 0; i < 50 && added < 2000; i++, added++) {
      const id = find(a, churn[added]!);
      if (id >= 0) a.table.remove(id);
      fill(c, a, 1, 200_000 + added);
    }
  }, 1);
  const r = await d.replicator.requestSync(0, 10_000);
  clearInterval(iv);
  t.is(sameDecisions(a, d, stable), 0);
  t.is(r.records, d.replicator.stats.syncRecordsReceived);
  t.is(d.replicator.stats.applied + d.replicator.stats.updated, r.records, 'no record sent twice');
});
