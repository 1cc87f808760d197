/**
 * Client source ports for bench/dataplane/run.sh's 3-balancer DSR test (tunlb-dsr3): prints the
 * first port >= FROM whose TCP flow CLIENT:port -> VIP:DPORT has balancer PRIMARY (index in
 * `balancers`, 0 = lb1, the entry) as its primary when all balancers are live, by the documented
 * hash (the same computation as native-tests/dsr.test.ts). iperf3 --cport then pins the data
 * connection to that port, so the data flow is served by the entry itself or by a peer (lb1
 * encapsulates it to the peer on lbnet first). The backend does not matter here: the bench's
 * config sends every flow to srv1 (bench/dataplane/lab-config.ts).
 *
 * It loads the *built* tunlb that the bench runs (ROOT/dist), not the work tree's src/ (which
 * may hold others' unfinished edits), and the lab's config (with its cluster key file).
 *
 * Usage: node --import tsx bench/dataplane/dsr-ports.ts ROOT CONFIG CLIENT VIP DPORT PRIMARY FROM
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [root, configPath, client, vip, dport, primary, from] = process.argv.slice(2);
if (from === undefined) {
  console.error('usage: dsr-ports.ts ROOT CONFIG CLIENT VIP DPORT PRIMARY FROM');
  process.exit(2);
}
const req = createRequire(join(root!, 'package.json'));
/** The first of `paths` (under ROOT/dist/src) that the build has: builds before the decision layer (src/decision/) had these modules in cluster/ and dataplane/. */
const load = (...paths: string[]): Record<string, unknown> => {
  for (const m of paths.slice(0, -1)) {
    try {
      return req(join(root!, 'dist', 'src', m)) as Record<string, unknown>;
    } catch {
      /* an older build: try the next path */
    }
  }
  return req(join(root!, 'dist', 'src', paths[paths.length - 1]!)) as Record<string, unknown>;
};
const { loadConfig } = load('config/index.js') as any;
const { deriveHashKey } = load('decision/hash-key.js', 'cluster/hash-key.js') as any;
const { hashFlowKey } = load('decision/halfsiphash.js', 'cluster/halfsiphash.js') as any;
const { buildForwardingTable } = load('decision/forwarding-table.js', 'dataplane/forwarding-table.js') as any;
const { keyFromParts } = load('packet/flow-key.js') as any;

const config = loadConfig(configPath);
const hk = deriveHashKey(config.cluster.key.reveal());
const ft = buildForwardingTable(config, hk, 1);
const n = (config.balancers as unknown[]).length;
const live = new Uint8Array(n).fill(1);
const pick = new Int32Array(2);
const want = Number(primary);
for (let p = Number(from); p < 65536; p++) {
  const h = hashFlowKey(hk, keyFromParts(client!, vip!, p, Number(dport), 6)) as number;
  ft.ranking.pickLive(h & 0xffff, live, pick);
  if (pick[0] === want) {
    console.log(p);
    process.exit(0);
  }
}
console.error(`dsr-ports: no port >= ${from} with primary ${want}`);
process.exit(1);
