/**
 * A flow decided while no other balancer was live (a peer still starting: the CI failure
 * "primary lb1, backup lb1") gets another balancer as backup at once, flagged BACKUP_PENDING,
 * and a live backup once one is up (src/cluster/backup-repair.ts), replicated again.
 *
 * Setup as src/control/balancer.ts wires it: a 3-balancer config, this balancer lb1 (index 0),
 * its forwarder deciding UDP flows to the VIP; the replication sink is a recorder.
 */
import test from 'ava';
import { parseConfig } from '../../src/config';
import { deriveHashKey } from '../../src/decision/hash-key';
import { hashFlowKey } from '../../src/decision/halfsiphash';
import { BackupRepair } from '../../src/cluster/backup-repair';
import { FlowFlags, FlowTable } from '../../src/flow';
import { Forwarder, Action } from '../../src/dataplane/forwarder';
import { buildForwardingTable } from '../../src/decision/forwarding-table';
import { CSUM_FULL } from '../../src/packet/nat';
import * as P from '../helpers/packets';
import { CLIENT, VIP } from '../helpers/fixtures';

const KEY = Buffer.alloc(32, 0x5c);
const KEY_PATH = '/keys/backup-test.key';
const readKeyFile = (p: string): Buffer => {
  if (p === KEY_PATH) return Buffer.from(KEY);
  throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
};

function setup(balancers = 3) {
  const lbs = ['lb1', 'lb2', 'lb3'].slice(0, balancers).map((id, i) => `  - { id: ${id}, address: 10.99.2.${11 + i} }`).join('\n');
  const yaml = `
cluster: { id: backup-test, key_file: ${KEY_PATH} }
balancers:
${lbs}
vips:
  - name: web4
    address: ${VIP}
    protocols: [udp]
    ports: "*"
    backends:
      - { address: 10.99.3.21 }
      - { address: 10.99.3.22 }
`;
  const config = parseConfig(yaml, 'backup-test.yaml', { readKeyFile, env: {}, baseDir: '/' });
  const hashKey = deriveHashKey(config.cluster.key.reveal());
  const ft = buildForwardingTable(config, hashKey, 1);
  const table = new FlowTable({ capacity: 8192, seed: 3, timeouts: { udp: 300 } });
  const live = new Uint8Array(balancers);
  live[0] = 1; // only this balancer: its peers are still starting
  const ready: number[] = [];
  const sink = { flowReady: (id: number) => ready.push(id) };
  const fwd = new Forwarder({ table, forwarding: ft, hashKey, selfIndex: 0, live, sink });
  const repair = new BackupRepair({ table, hashKey, selfIndex: 0, live, ranking: () => ft.ranking, sink, budget: 100 });
  const buf = new Uint8Array(2048);
  const send = (sport: number): number => {
    const p = P.udp4(CLIENT, VIP, sport, 53, new Uint8Array(8));
    buf.set(p, 0);
    return fwd.processPacket(buf, 0, p.length, CSUM_FULL, 1);
  };
  const ids = (): number[] => {
    const out: number[] = [];
    let c = 0;
    do c = table.scan(c, 1 << 20, (id) => out.push(id));
    while (c !== 0);
    return out;
  };
  return { config, hashKey, ft, table, live, fwd, repair, ready, send, ids };
}

test('decided with no live peer: the backup is the next configured balancer in rank, never the primary; counted and flagged', (t) => {
  const h = setup();
  for (let p = 0; p < 500; p++) t.is(h.send(20000 + p), Action.EMIT);
  const ids = h.ids();
  t.is(ids.length, 500);
  const backups = new Set<number>();
  const key = new Uint32Array(10);
  for (const id of ids) {
    t.is(h.table.primary(id), 0, 'the only live balancer is every new flow\'s primary');
    const b = h.table.backup(id);
    t.not(b, 0, 'backup is another balancer');
    t.true(b === 1 || b === 2);
    backups.add(b);
    t.not(h.table.flags(id) & FlowFlags.BACKUP_PENDING, 0);
    // the same choice every balancer computes: the first of the row's ranking other than the primary
    h.table.copyKey(id, 0, key, 0);
    const row = hashFlowKey(h.hashKey, new Uint8Array(key.buffer)) & 0xffff;
    const rank = [0, 1, 2].map((i) => h.ft.ranking.rankAt(row, i)).filter((m) => m !== 0);
    t.is(b, rank[0]);
  }
  t.deepEqual([...backups].sort(), [1, 2], 'both peers are someone\'s backup');
  t.is(h.fwd.stats.flowsNoLiveBackup, 500);
});

test('with live peers: backup is the second live balancer and nothing is pending', (t) => {
  const h = setup();
  h.live.fill(1);
  for (let p = 0; p < 300; p++) h.send(30000 + p);
  for (const id of h.ids()) {
    t.not(h.table.primary(id), h.table.backup(id));
    t.is(h.table.flags(id) & FlowFlags.BACKUP_PENDING, 0);
  }
  t.is(h.fwd.stats.flowsNoLiveBackup, 0);
});

test('a single balancer: backup = primary (nobody else), not pending, not counted', (t) => {
  const h = setup(1);
  h.send(40000);
  const [id] = h.ids();
  t.is(h.table.primary(id!), 0);
  t.is(h.table.backup(id!), 0);
  t.is(h.table.flags(id!) & FlowFlags.BACKUP_PENDING, 0);
  t.is(h.fwd.stats.flowsNoLiveBackup, 0);
});

test('repair: a peer comes up → its flows are confirmed, the others get it as live backup and are replicated again', (t) => {
  const h = setup();
  for (let p = 0; p < 600; p++) h.send(20000 + p);
  const before = new Map(h.ids().map((id) => [id, h.table.backup(id)]));
  // Mark them replicated, as the replicator would have (their records reached nobody live).
  for (const id of before.keys()) h.table.updateFlags(id, FlowFlags.REPLICATED, 0);
  h.ready.length = 0;

  // Nothing live yet: a walk changes nothing.
  h.repair.request();
  h.repair.runToEnd();
  t.is(h.repair.stats.assigned + h.repair.stats.confirmed, 0);

  h.live[2] = 1; // lb3 comes up
  h.repair.request();
  t.true(h.repair.busy);
  h.repair.runToEnd();
  t.false(h.repair.busy);
  let confirmed = 0;
  let assigned = 0;
  for (const [id, was] of before) {
    t.is(h.table.backup(id), 2, 'every flow now has the live lb3 as backup');
    t.is(h.table.primary(id), 0);
    t.is(h.table.flags(id) & FlowFlags.BACKUP_PENDING, 0);
    if (was === 2) {
      confirmed++;
      t.not(h.table.flags(id) & FlowFlags.REPLICATED, 0, 'a confirmed flow is not re-sent');
    } else {
      assigned++;
      t.is(h.table.flags(id) & FlowFlags.REPLICATED, 0, 'a reassigned flow is sent again');
      t.true(h.ready.includes(id));
    }
  }
  t.true(confirmed > 0 && assigned > 0);
  t.is(h.repair.stats.confirmed, confirmed);
  t.is(h.repair.stats.assigned, assigned);
  t.is(h.ready.length, assigned);

  // Later liveness changes leave settled flows alone.
  h.live[1] = 1;
  h.repair.request();
  h.repair.runToEnd();
  t.is(h.repair.stats.assigned, assigned);
  t.is(h.repair.stats.walks, 3);
});

test('repair: flows whose primary is another balancer are left to it; a request during a walk walks again', async (t) => {
  const h = setup();
  for (let p = 0; p < 400; p++) h.send(50000 + p);
  const ids = h.ids();
  // One flow is (as if) learnt with lb2 as primary.
  h.table.setDecision(ids[0]!, 1, 2, h.table.backend(ids[0]!));
  h.live[1] = 1;
  h.repair.request();
  h.repair.request(); // while busy: queued once more
  await new Promise<void>((resolve) => {
    const poll = (): void => (h.repair.busy ? void setImmediate(poll) : resolve());
    poll();
  });
  t.is(h.repair.stats.walks, 2);
  t.not(h.table.flags(ids[0]!) & FlowFlags.BACKUP_PENDING, 0, 'not ours to repair');
  for (const id of ids.slice(1)) t.is(h.table.backup(id), 1);
  h.repair.close();
  h.repair.request();
  t.false(h.repair.busy);
});
