/**
 * The cluster view (src/cluster/cluster-view.ts) and `tunlb reload --cluster`
 * (src/cluster/cluster-reload.ts) over an in-memory transport: every datagram is sealed by the
 * sender's real EnvelopeSigner and checked by the recipient's real EnvelopeReceiver (MAC,
 * cluster, recipient, replay window) before it reaches the code under test, as on the wire.
 */
import test from 'ava';
import { DecodeResult, EnvelopeReceiver, EnvelopeSigner, macKey, ProtocolResult, protocolResultName, type BodyFields, type BodyKind, type ReceivedEnvelope } from '../../src/protocol';
import { tunlb } from '../../src/protocol/generated/tunlb';
import { ClusterView, checkSummary, type SummaryFields } from '../../src/cluster/cluster-view';
import { ClusterReload, cutDetail, MAX_DETAIL, type ReloadOutcome } from '../../src/cluster/cluster-reload';

const KEY = macKey(Buffer.alloc(32, 0x42));
const CLUSTER = 1234;
const IDS = ['lb1', 'lb2', 'lb3'];

/** N nodes: seal → (filter) → receiver → onEnvelope, delivered on setImmediate (as a socket). */
class Net {
  readonly signers: EnvelopeSigner[];
  readonly receivers: EnvelopeReceiver[];
  readonly handlers: Array<(env: ReceivedEnvelope) => void> = [];
  /** Return false to lose the datagram. */
  filter: (from: number, to: number, kind: BodyKind) => boolean = () => true;
  /** Every datagram sent: for replays. */
  readonly sent: Array<{ from: number; to: number; kind: BodyKind; dgram: Uint8Array }> = [];
  readonly results: string[] = [];
  constructor(n: number) {
    this.signers = Array.from({ length: n }, (_, i) => new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender: i, incarnation: 100 + i }));
    this.receivers = Array.from({ length: n }, (_, i) => new EnvelopeReceiver({ key: KEY, clusterId: CLUSTER, self: i, balancerCount: n, confirmBy: 'first-envelope' }));
  }
  send<K extends BodyKind>(from: number, to: number, kind: K, body: BodyFields[K]): void {
    const dgram = this.signers[from]!.seal(kind, body, to);
    this.sent.push({ from, to, kind, dgram });
    if (!this.filter(from, to, kind)) return;
    this.deliver(to, dgram);
  }
  deliver(to: number, dgram: Uint8Array): void {
    setImmediate(() => {
      const out = this.receivers[to]!.receive(dgram, 0, dgram.length, new DecodeResult());
      this.results.push(protocolResultName(out.result));
      if (out.result === ProtocolResult.OK) this.handlers[to]?.(out.envelope!);
    });
  }
}

const SUMMARY: SummaryFields = {
  status: 2,
  configHash: 0x0123456789ab,
  flowsHeld: 1000,
  flowsPrimary: 333,
  flowsBackup: 330,
  packetsInPerS: 12_000,
  packetsOutPerS: 11_500,
  bytesInPerS: 9_000_000,
  bytesOutPerS: 8_000_000,
  uptimeS: 3600,
  generation: 4,
  peerRttUs: [180, 0, 220],
  liveMask: 7,
};

test('summary: sent by lb2, kept by lb1 as lb2 reported it, with its age', async (t) => {
  const net = new Net(3);
  const clock = { now: 1000 };
  const view = new ClusterView({ balancerCount: 3, selfIndex: 0, nowMs: () => clock.now });
  net.handlers[0] = (env) => {
    if (env.body === 'summary') view.onSummary(env.sender, env.summary!);
  };
  t.is(view.last(1), null, 'nothing before the first summary');
  net.send(1, 0, 'summary', SUMMARY);
  await new Promise((r) => setImmediate(r));
  clock.now = 1750;
  const got = view.last(1)!;
  t.is(got.ageMs, 750);
  t.like(got.summary, {
    status: 'serving', configHash: '0123456789ab', flowsHeld: 1000, flowsPrimary: 333, flowsBackup: 330,
    packetsInPerS: 12_000, packetsOutPerS: 11_500, bytesInPerS: 9_000_000, bytesOutPerS: 8_000_000, uptimeS: 3600, generation: 4, liveMask: 7,
  });
  t.deepEqual(got.summary.peerRttUs, [180, 0, 220]);
  t.is(view.stats.accepted, 1);
});

test('summary: bounded size (32 balancers, every figure at its largest) fits a control datagram many times over', (t) => {
  const s = new EnvelopeSigner({ key: KEY, clusterId: CLUSTER, sender: 31, incarnation: 2 ** 53 - 1 });
  const big: SummaryFields = {
    status: 3, configHash: 2 ** 48 - 1, flowsHeld: 2 ** 32 - 1, flowsPrimary: 2 ** 32 - 1, flowsBackup: 2 ** 32 - 1,
    packetsInPerS: 2 ** 32 - 1, packetsOutPerS: 2 ** 32 - 1, bytesInPerS: 2 ** 53 - 1, bytesOutPerS: 2 ** 53 - 1,
    uptimeS: 2 ** 32 - 1, generation: 2 ** 32 - 1, peerRttUs: new Array(32).fill(2 ** 32 - 1), liveMask: 0xffffffff,
  };
  const d = s.seal('summary', big);
  t.true(d.length <= 400, `${d.length} bytes`);
  const typical = s.seal('summary', SUMMARY);
  t.true(typical.length <= 160, `${typical.length} bytes`);
});

// [what, the summary's fields, the reason it is dropped]
const MALFORMED: Array<[string, SummaryFields, string]> = [
  ['a status outside PeerStatus', { ...SUMMARY, status: 9 as tunlb.v1.PeerStatus }, 'bad_status'],
  ['more RTTs than balancers', { ...SUMMARY, peerRttUs: [1, 2, 3, 4] }, 'bad_rtts'],
  ['a configHash beyond 2^53', { ...SUMMARY, configHash: 2 ** 60 }, 'bad_value'],
];

for (const [what, fields, reason] of MALFORMED) {
  test(`summary with ${what}: authentic, but dropped whole and counted as ${reason}; never throws`, async (t) => {
    const net = new Net(3);
    const view = new ClusterView({ balancerCount: 3, selfIndex: 0, nowMs: () => 0 });
    net.handlers[0] = (env) => {
      if (env.body === 'summary') view.onSummary(env.sender, env.summary!);
    };
    // Encoded by hand: the signer's typed fields would not take some of these.
    const env = tunlb.v1.Envelope.encode({ version: 1, clusterId: CLUSTER, sender: 1, incarnation: 101, seq: 1000, sentAtMs: 1, recipients: 1, summary: fields }).finish();
    const { signEnvelopeBytes } = await import('../../src/protocol');
    net.deliver(0, signEnvelopeBytes(env, KEY));
    net.send(1, 0, 'summary', SUMMARY); // a good one after it is still taken
    await new Promise((r) => setTimeout(r, 5));
    t.deepEqual(net.results, ['ok', 'ok'], 'both authentic');
    t.is((view.stats.drops as Record<string, number>)[reason], 1);
    t.is(view.stats.accepted, 1);
    t.is(view.last(1)!.summary.flowsHeld, 1000, 'the good one, not a half-applied bad one');
  });
}

test('checkSummary: a summary from ourselves or an unknown index is dropped', (t) => {
  const view = new ClusterView({ balancerCount: 3, selfIndex: 0, nowMs: () => 0 });
  t.false(view.onSummary(0, SUMMARY));
  t.false(view.onSummary(7, SUMMARY));
  t.is(view.stats.drops.bad_value, 2);
  t.is(checkSummary(SUMMARY, 3), null);
  t.is(checkSummary({ ...SUMMARY, flowsHeld: -1 }, 3), 'bad_value');
});

/** Three ClusterReload nodes on a Net; reloadSelf results per node. */
function reloadCluster(outcomes: Array<(origin: string) => Promise<ReloadOutcome>>, opts: { resendMs?: number } = {}) {
  const net = new Net(3);
  const calls: string[][] = [[], [], []];
  const nodes = outcomes.map(
    (o, i) =>
      new ClusterReload({
        selfIndex: i,
        ids: IDS,
        sendRequest: (peer, body) => net.send(i, peer, 'reloadRequest', body),
        sendAnswer: (peer, body) => net.send(i, peer, 'reloadAnswer', body),
        reloadSelf: (origin) => {
          calls[i]!.push(origin);
          return o(origin);
        },
        resendMs: opts.resendMs ?? 30,
      }),
  );
  nodes.forEach((n, i) => {
    net.handlers[i] = (env) => {
      if (env.body === 'reloadRequest') n.onRequest(env.sender, env.reloadRequest!);
      if (env.body === 'reloadAnswer') n.onAnswer(env.sender, env.reloadAnswer!);
    };
  });
  return { net, nodes, calls };
}

const ok = (hash: number, detail: string) => (): Promise<ReloadOutcome> => Promise.resolve({ ok: true, configHash: hash, detail });

test('reload --cluster: each peer reloads its own file once and answers; refusals come back with their error', async (t) => {
  const { nodes, calls } = reloadCluster([
    ok(1, 'self'),
    ok(0xabc, 'generation 3: VIPs +0/-0, backends +0/-0/~1'),
    () => Promise.reject(new Error('reload refused: the balancer list changed (lb1, lb2, lb3 → lb1, lb2)')),
  ]);
  const r = await nodes[0]!.requestAll(2000);
  t.deepEqual(
    r.map((x) => [x.id, x.ok, x.configHash, x.detail]),
    [
      ['lb2', true, 0xabc, 'generation 3: VIPs +0/-0, backends +0/-0/~1'],
      ['lb3', false, 0, 'reload refused: the balancer list changed (lb1, lb2, lb3 → lb1, lb2)'],
    ],
  );
  t.deepEqual(calls, [[], ['peer lb1'], ['peer lb1']], 'each peer reloaded once, with the origin "peer lb1"');
  t.is(nodes[1]!.stats.answersSent, 1);
});

test('reload --cluster: a lost request is resent; a resent request is answered again without a second reload', async (t) => {
  const { net, nodes, calls } = reloadCluster([ok(1, 'self'), ok(2, 'lb2 done'), ok(3, 'lb3 done')], { resendMs: 20 });
  let lostRequests = 0;
  let lostAnswers = 0;
  net.filter = (from, to, kind) => {
    if (kind === 'reloadRequest' && to === 1 && lostRequests < 2) return (lostRequests++, false);
    if (kind === 'reloadAnswer' && from === 2 && lostAnswers < 1) return (lostAnswers++, false);
    return true;
  };
  const r = await nodes[0]!.requestAll(3000);
  t.deepEqual(r.map((x) => [x.id, x.ok, x.detail]), [['lb2', true, 'lb2 done'], ['lb3', true, 'lb3 done']]);
  t.deepEqual(calls, [[], ['peer lb1'], ['peer lb1']], 'one reload each, whatever the resends');
  t.true(nodes[2]!.stats.requestsRepeated >= 1, 'lb3 saw the resend of a request it had answered');
  t.true(nodes[0]!.stats.requestsSent >= 4);
});

test('reload --cluster: a peer that does not answer within the time is reported as such (bounded)', async (t) => {
  const { net, nodes } = reloadCluster([ok(1, 'self'), ok(2, 'lb2 done'), ok(3, 'lb3 done')]);
  net.filter = (_from, to) => to !== 2; // lb3 is unreachable
  const t0 = Date.now();
  const r = await nodes[0]!.requestAll(300);
  const took = Date.now() - t0;
  t.true(took >= 290 && took < 2000, `${took} ms`);
  t.deepEqual(r.map((x) => [x.id, x.ok]), [['lb2', true], ['lb3', null]]);
  t.is(r[1]!.detail, 'no answer within 0.3 s');
});

test('reload --cluster: a replayed request datagram is refused by the replay window; answers not asked for are ignored', async (t) => {
  const { net, nodes, calls } = reloadCluster([ok(1, 'self'), ok(2, 'lb2 done'), ok(3, 'lb3 done')]);
  await nodes[0]!.requestAll(1000);
  const req = net.sent.find((d) => d.kind === 'reloadRequest' && d.to === 1)!;
  net.results.length = 0;
  net.deliver(1, req.dgram);
  // The same request, captured on its way to lb2, replayed to lb3 (another recipient).
  net.deliver(2, req.dgram);
  await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(net.results, ['replayed', 'wrong_recipient']);
  t.deepEqual(calls[1], ['peer lb1'], 'no second reload');
  nodes[0]!.onAnswer(1, { requestId: 12345, ok: true, configHash: 1, detail: 'forged id' });
  t.is(nodes[0]!.stats.answersUnexpected, 1);
});

test('reload answer detail is cut to MAX_DETAIL bytes', (t) => {
  const long = 'é'.repeat(400);
  const cut = cutDetail(long);
  t.true(Buffer.byteLength(cut) <= MAX_DETAIL);
  t.true(cut.endsWith('…'));
  t.is(cutDetail('short'), 'short');
});
