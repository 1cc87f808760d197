/**
 * `tunlb reload --cluster` over the control channel: the balancer the operator asked reloads
 * its own file and asks every peer to reload theirs (ReloadRequest, protocol/tunlb.proto);
 * each peer answers with its result (ReloadAnswer: ok, the config hash running after it, one
 * line of what changed or of the refusal).
 *
 * Requester (requestAll): one random request id per call; a ReloadRequest to each target at
 * once and again every `resendMs` to those that have not answered (a lost request or answer
 * costs a resend, not the result), until all answered or `timeoutMs` passed: the result
 * then says, per peer, ok / refused / no answer. Answers with an unknown id, from a balancer
 * not asked, or a second answer, are ignored and counted (answersUnexpected).
 *
 * Responder (onRequest): runs `reloadSelf('peer <id>')` at most once per (sender, request id)
 * and sends the answer; a resent request whose reload is done gets the same answer again, one
 * whose reload still runs gets it when it ends. One entry per sender is kept (the latest id),
 * so memory is bounded by the number of balancers.
 *
 * Security: both messages are control envelopes, so they are authenticated by the cluster key,
 * accepted only from a confirmed incarnation and replay-protected by the sequence window
 * (src/protocol/receiver.ts); a request is unicast and names its recipient, so a captured one
 * cannot be replayed to another balancer. What a peer can make another do is what an operator
 * with a shell on it could: reload its own file (never a file of the requester's).
 *
 * Pure logic: sending and reloading are injected; timers are setInterval / setTimeout, bounded by the call's timeoutMs. Never throws
 * from onRequest / onAnswer; a reloadSelf that throws is answered as refused with its message.
 */

/** The outcome of one balancer's reload, as the wire carries it. */
export interface ReloadOutcome {
  ok: boolean;
  /** Config hash running after the attempt (Probe.config_hash), 0 = unknown. */
  configHash: number;
  /** One line: what changed, or why it was refused (cut to MAX_DETAIL bytes). */
  detail: string;
}

/** A peer's part of a cluster reload. */
export interface PeerReloadResult {
  index: number;
  id: string;
  /** true reloaded, false refused, null no answer within the time. */
  ok: boolean | null;
  configHash: number;
  detail: string;
  /** Time from the first request to its answer (or to the deadline), ms. */
  ms: number;
}

export interface ClusterReloadStats {
  requestsSent: number;
  requestsReceived: number;
  /** Requests whose id was already seen from that sender (resends): answered again, not rerun. */
  requestsRepeated: number;
  answersSent: number;
  answersReceived: number;
  answersUnexpected: number;
}

export interface ClusterReloadOptions {
  selfIndex: number;
  ids: readonly string[];
  /** Seal and unicast a body to balancer `peer` (control port, recipient set). */
  sendRequest: (peer: number, body: { requestId: number }) => void;
  sendAnswer: (peer: number, body: { requestId: number; ok: boolean; configHash: number; detail: string }) => void;
  /** Reload this balancer's own file; `origin` is e.g. "peer lb1" (for its event). */
  reloadSelf: (origin: string) => Promise<ReloadOutcome>;
  /** Resend interval of unanswered requests, ms (default 1000). */
  resendMs?: number;
  /** Request ids (tests); default random in [1, 2^48). */
  newId?: () => number;
  /** Monotonic clock, ms (default performance.now). */
  nowMs?: () => number;
}

/** ReloadAnswer.detail is at most this many bytes (UTF-8); longer text is cut with '…'. */
export const MAX_DETAIL = 300;

/** `s` cut to at most MAX_DETAIL UTF-8 bytes. */
export function cutDetail(s: string): string {
  if (Buffer.byteLength(s) <= MAX_DETAIL) return s;
  let out = s.slice(0, MAX_DETAIL);
  while (Buffer.byteLength(out) > MAX_DETAIL - 3) out = out.slice(0, -1);
  return `${out}…`;
}

interface Pending {
  readonly startMs: number;
  readonly waiting: Map<number, (r: PeerReloadResult) => void>;
}

export class ClusterReload {
  readonly stats: ClusterReloadStats = { requestsSent: 0, requestsReceived: 0, requestsRepeated: 0, answersSent: 0, answersReceived: 0, answersUnexpected: 0 };
  readonly #o: ClusterReloadOptions;
  readonly #pending = new Map<number, Pending>();
  /** Responder side: per sender, the last request id and its answer once known. */
  readonly #served: ({ id: number; answer: ReloadOutcome | null } | undefined)[];
  readonly #now: () => number;
  #closed = false;

  constructor(opts: ClusterReloadOptions) {
    this.#o = opts;
    this.#served = new Array(opts.ids.length).fill(undefined);
    this.#now = opts.nowMs ?? (() => performance.now());
  }

  /**
   * Asks each of `targets` (balancer indexes, default every peer) to reload; resolves, after
   * at most `timeoutMs`, with one result per target in index order (header). Never rejects.
   */
  requestAll(timeoutMs: number, targets?: readonly number[]): Promise<PeerReloadResult[]> {
    const peers = (targets ?? this.#o.ids.map((_, i) => i)).filter((i) => i !== this.#o.selfIndex && i >= 0 && i < this.#o.ids.length);
    if (peers.length === 0 || this.#closed) return Promise.resolve([]);
    let id = this.#o.newId?.() ?? Math.floor(Math.random() * (2 ** 48 - 1)) + 1;
    while (this.#pending.has(id) || !(Number.isSafeInteger(id) && id > 0)) id = Math.floor(Math.random() * (2 ** 48 - 1)) + 1;
    const p: Pending = { startMs: this.#now(), waiting: new Map() };
    this.#pending.set(id, p);
    const results = new Map<number, PeerReloadResult>();
    return new Promise((resolve) => {
      const finish = (): void => {
        clearInterval(resend);
        clearTimeout(deadline);
        this.#pending.delete(id);
        const ms = this.#now() - p.startMs;
        resolve(
          peers.map(
            (i) =>
              results.get(i) ?? { index: i, id: this.#o.ids[i]!, ok: null, configHash: 0, detail: `no answer within ${formatS(timeoutMs)}`, ms },
          ),
        );
      };
      for (const i of peers) {
        p.waiting.set(i, (r) => {
          results.set(i, r);
          if (results.size === peers.length) finish();
        });
      }
      const send = (): void => {
        for (const i of peers) {
          if (results.has(i)) continue;
          this.stats.requestsSent++;
          this.#o.sendRequest(i, { requestId: id });
        }
      };
      const resend = setInterval(send, this.#o.resendMs ?? 1000);
      const deadline = setTimeout(finish, Math.max(0, timeoutMs));
      send();
    });
  }

  /** A verified ReloadRequest from `sender` (header). */
  onRequest(sender: number, body: { requestId?: number | null }): void {
    const id = Number(body.requestId ?? 0);
    if (this.#closed || !(Number.isInteger(sender) && sender >= 0 && sender < this.#o.ids.length) || sender === this.#o.selfIndex || !(id > 0)) return;
    this.stats.requestsReceived++;
    const seen = this.#served[sender];
    if (seen !== undefined && seen.id === id) {
      this.stats.requestsRepeated++;
      if (seen.answer !== null) this.#answer(sender, id, seen.answer);
      return;
    }
    const entry: { id: number; answer: ReloadOutcome | null } = { id, answer: null };
    this.#served[sender] = entry;
    let run: Promise<ReloadOutcome>;
    try {
      run = this.#o.reloadSelf(`peer ${this.#o.ids[sender]}`);
    } catch (e) {
      run = Promise.reject(e);
    }
    void run
      .catch((e: unknown): ReloadOutcome => ({ ok: false, configHash: 0, detail: (e as Error)?.message ?? String(e) }))
      .then((out) => {
        const answer = { ...out, detail: cutDetail(out.detail) };
        entry.answer = answer;
        if (this.#served[sender] === entry) this.#answer(sender, id, answer);
      });
  }

  /** A verified ReloadAnswer from `sender` (header). */
  onAnswer(sender: number, body: { requestId?: number | null; ok?: boolean | null; configHash?: number | null; detail?: string | null }): void {
    const p = this.#pending.get(Number(body.requestId ?? 0));
    const done = p?.waiting.get(sender);
    if (p === undefined || done === undefined) {
      this.stats.answersUnexpected++;
      return;
    }
    this.stats.answersReceived++;
    p.waiting.delete(sender);
    done({
      index: sender,
      id: this.#o.ids[sender]!,
      ok: body.ok === true,
      configHash: Number(body.configHash ?? 0),
      detail: cutDetail(String(body.detail ?? '')),
      ms: this.#now() - p.startMs,
    });
  }

  /** Stops answering; pending requestAll calls end at their deadline. */
  close(): void {
    this.#closed = true;
  }

  #answer(peer: number, requestId: number, a: ReloadOutcome): void {
    if (this.#closed) return;
    this.stats.answersSent++;
    this.#o.sendAnswer(peer, { requestId, ok: a.ok, configHash: a.configHash, detail: a.detail });
  }
}

function formatS(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** One balancer's line of `tunlb reload --cluster` (POST /api/v1/reload/cluster). */
export interface ClusterReloadRow {
  id: string;
  self: boolean;
  /** true reloaded, false refused, null no answer in time. */
  ok: boolean | null;
  /** Config hash running after it (12 hex; '' when unknown). */
  configHash: string;
  /** What changed, the refusal, or "no answer within N s". */
  detail: string;
  /** Peers: time to the answer, ms. */
  ms: number;
}
