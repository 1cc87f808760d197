/**
 * Flow records as JSON rows (admin endpoint, CLI): key, primary, backup, backend, state, age.
 * Walks the flow table with its chunked scan; allocates per row (control plane only).
 */
import { keyToString } from '../packet/flow-key';
import type { Balancer } from './balancer';

export interface FlowRow {
  key: string;
  vip: string;
  primary: string;
  backup: string;
  backend: string;
  state: number;
  packets: number;
  ageS: number;
  idleS: number;
}

export function listFlows(b: Balancer, limit: number): { total: number; flows: FlowRow[] } {
  const t = b.table;
  const ft = b.forwarder.forwarding;
  const ids = b.config.balancers;
  const words = new Uint32Array(10);
  const bytes = new Uint8Array(words.buffer);
  const now = b.nowSec();
  const flows: FlowRow[] = [];
  let cursor = 0;
  do {
    cursor = t.scan(cursor, 4096, (id) => {
      if (flows.length >= limit || !t.copyKey(id, 0, words, 0)) return;
      const vip = ft.config.vips[t.vip(id)];
      flows.push({
        key: keyToString(bytes),
        vip: vip?.name ?? `#${t.vip(id)}`,
        primary: ids[t.primary(id)]?.id ?? `#${t.primary(id)}`,
        backup: ids[t.backup(id)]?.id ?? `#${t.backup(id)}`,
        backend: vip?.backends[t.backend(id)]?.address.text ?? `#${t.backend(id)}`,
        state: t.state(id),
        packets: t.packets(id),
        ageS: now - t.created(id),
        idleS: now - t.lastSeen(id),
      });
    });
  } while (cursor !== 0 && flows.length < limit);
  return { total: t.size, flows };
}
