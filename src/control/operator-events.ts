/**
 * Operator actions in the event history (/api/v1/events, `tunlb status`, the status page), each
 * with where it came from:
 *   origin `api <remote address>`  a call to this balancer's admin API (the CLI, the page, a
 *                                  script): drain, undrain, reload, reload --cluster,
 *                                  drain-self, undrain-self
 *   origin `peer <id>`             propagated over the control channel: a drain mark another
 *                                  balancer's operator set (the id is the balancer that took the
 *                                  command), a reload a peer asked for (`tunlb reload --cluster`)
 *   origin `signal SIGHUP`         a reload by signal
 *
 * The one entry point is `record(type, reason, origin)` (AdminServer exposes it as
 * `operatorEvent(type, reason, origin)`): a new operator command (e.g. a runtime weight or a
 * maintenance mark) calls it with its own type and the origin of its request, and appears in
 * every view at once. Types in use: backend_drain, backend_undrain, reload, reload_refused,
 * reload_cluster, drain_self, undrain_self.
 *
 * Bounded: the last OPERATOR_EVENTS entries are kept. Control plane only.
 */

/** Entries kept. */
export const OPERATOR_EVENTS = 200;

export interface OperatorEvent {
  /** ISO time. */
  at: string;
  type: string;
  /** Balancer id the event is about (this balancer's, unless said otherwise). */
  balancer: string;
  reason: string;
  severity: 'info' | 'warn' | 'error';
  /** Where the action came from (header): `api 127.0.0.1`, `peer lb2`, `signal SIGHUP`. */
  origin: string;
}

export class OperatorEvents {
  readonly events: OperatorEvent[] = [];

  constructor(readonly selfId: string) {}

  /** Records one operator action (header). `severity` defaults to info ('warn' for a refusal). */
  record(type: string, reason: string, origin: string, severity: OperatorEvent['severity'] = 'info', balancer = this.selfId): OperatorEvent {
    const e: OperatorEvent = { at: new Date().toISOString(), type, balancer, reason, severity, origin };
    this.events.push(e);
    if (this.events.length > OPERATOR_EVENTS) this.events.shift();
    return e;
  }
}

/** The origin of an admin API request from `remoteAddress` (IPv4-mapped IPv6 shown as IPv4). */
export function apiOrigin(remoteAddress: string | undefined): string {
  const a = remoteAddress ?? 'unknown';
  return `api ${a.startsWith('::ffff:') ? a.slice(7) : a}`;
}
