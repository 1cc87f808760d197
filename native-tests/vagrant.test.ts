/**
 * The Vagrant lab (Vagrantfile, scripts/vagrant-provision.sh). VMs cannot boot here, so:
 *  - `vagrant validate` (Debian's vagrant; skipped with a message when it is not installed);
 *  - the NIC plan the Vagrantfile reads (--plan) against scripts/lab-topology.sh;
 *  - `--dry-run NODE` for every node: the addresses and routes it would configure, checked
 *    against the namespace lab's nodes (`scripts/lab.sh up`, root), and the systemd units it
 *    would install checked with `systemd-analyze verify`;
 *  - the VM network steps for real, in namespaces that stand in for the eight VMs
 *    (tunlb-vm-*: one per node, NICs with the plan's MACs on three bridges in tunlb-vm-sw),
 *    provisioned with `--netns NS --network NODE`, three balancers started with the lab config
 *    and `--tun-routes`, the lab servers, then HTTP through the VIP from the client (root).
 *
 * Not covered (needs VMs): the box, package installation (node 20, npm ci), the rsync synced
 * folder, systemd actually starting the units at boot, NIC renaming by udev .link files.
 *
 * All traffic stays inside the lab namespaces and the tunlb-vm-* namespaces this file creates
 * and deletes; processes are ended by their PIDs. The namespace lab is shared: the root tests
 * hold the lab session lock from `up` to the end.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { hasRoot, nativeSuite } from './helpers/root';
import { REPO, VIP4, VIP6, holdLabSession, lab, labLogTail, poll, run, type LabSession } from './helpers/lab';

const PROVISION = path.join(REPO, 'scripts', 'vagrant-provision.sh');
const TUNLB = path.join(REPO, 'bin', 'tunlb');
const VM = 'tunlb-vm-';
const SW = `${VM}sw`;
const rootTest = nativeSuite('vagrant provisioning in namespaces');

interface Nic {
  node: string;
  net: string;
  ifname: string;
  addr4: string;
  addr6: string;
  mac: string;
}

async function plan(): Promise<Nic[]> {
  const r = await run('bash', [PROVISION, '--plan'], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`--plan: exit ${r.code}: ${r.stderr}`);
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => {
      const [node, net, ifname, addr4, addr6, mac] = l.split(' ') as [string, string, string, string, string, string];
      return { node, net, ifname, addr4, addr6, mac };
    });
}

/** Values from scripts/lab-topology.sh. */
async function topology(expr: string): Promise<string> {
  const r = await run('bash', ['-c', `source ${JSON.stringify(path.join(REPO, 'scripts', 'lab-topology.sh'))}; ${expr}`], { timeoutMs: 10_000 });
  return r.stdout.trim();
}

async function dryRun(node: string, env: NodeJS.ProcessEnv = process.env) {
  return run('bash', [PROVISION, '--dry-run', node], { timeoutMs: 20_000, env });
}

/** The "+ ip addr replace A/P dev D" addresses of a dry run (both families), sorted. */
function dryAddresses(out: string): string[] {
  return [...out.matchAll(/^\+ ip (?:-6 )?addr replace (\S+) dev \S+/gm)].map((m) => m[1]!).sort();
}

// ---- vagrant validate ----

test.serial('vagrant validate passes (Debian vagrant; with and without provider checks)', async (t) => {
  const which = await run('bash', ['-c', 'command -v vagrant'], { timeoutMs: 5000 });
  if (which.code !== 0) {
    const msg = 'vagrant is not installed: `vagrant validate` skipped (apt-get install vagrant)';
    console.log(`native-tests/vagrant.test.ts: ${msg}`);
    t.log(msg);
    t.pass();
    return;
  }
  const dot = mkdtempSync(path.join(tmpdir(), 'tunlb-vagrant-'));
  t.teardown(() => rmSync(dot, { recursive: true, force: true }));
  // Vagrant's state (and the lab's generated cluster key) go to a temporary directory.
  const env = { ...process.env, VAGRANT_DOTFILE_PATH: dot, VAGRANT_CHECKPOINT_DISABLE: '1', VAGRANT_NO_COLOR: '1' };
  for (const args of [['validate'], ['validate', '--ignore-provider']]) {
    const r = await run('vagrant', args, { timeoutMs: 120_000, env });
    t.is(r.code, 0, `vagrant ${args.join(' ')}: ${r.stdout}\n${r.stderr}`);
    t.regex(r.stdout, /Vagrantfile validated successfully/);
  }
  const key = readFileSync(path.join(dot, 'tunlb-cluster.key'), 'utf8');
  t.regex(key, /^[0-9a-f]{64}$/);
  // the VMs, by role, from the plan
  const st = await run('vagrant', ['status', '--machine-readable'], { timeoutMs: 120_000, env });
  const names = [...new Set([...st.stdout.matchAll(/^\d+,([^,]+),metadata,provider,/gm)].map((m) => m[1]))];
  t.deepEqual(names, ['client', 'router', 'lb1', 'lb2', 'lb3', 'srv1', 'srv2', 'srv3'], st.stdout + st.stderr);
});

// ---- the plan and the dry runs (no root) ----

test.serial('--plan: every node of the topology, its addresses, one MAC per NIC', async (t) => {
  const p = await plan();
  const nodes = (await topology('echo "$LAB_CLIENT" "$LAB_ROUTER" "${LAB_BALANCERS[@]}" "${LAB_SERVERS[@]}"')).split(' ');
  t.deepEqual([...new Set(p.map((n) => n.node))], nodes);
  t.is(new Set(p.map((n) => n.mac)).size, p.length, 'MACs are unique');
  t.is(new Set(p.map((n) => n.addr4)).size, p.length, 'addresses are unique');
  for (const n of p) {
    t.regex(n.mac, /^52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$/);
    const [, b, c, d] = n.addr4.split('/')[0]!.split('.').map(Number);
    t.is(n.mac, `52:54:00:${[b, c, d].map((x) => x!.toString(16).padStart(2, '0')).join(':')}`);
  }
  const lb1 = p.filter((n) => n.node === 'lb1');
  t.deepEqual(lb1.map((n) => [n.net, n.ifname, n.addr4, n.addr6]), [
    ['lbnet', 'lbnet0', `${await topology('echo ${LAB_LBNET4[lb1]}')}/24`, `${await topology('echo ${LAB_LBNET6[lb1]}')}/64`],
    ['back', 'back0', `${await topology('echo ${LAB_BACK4[lb1]}')}/24`, `${await topology('echo ${LAB_BACK6[lb1]}')}/64`],
  ]);
});

test.serial('--dry-run NODE: every node configures its plan addresses; balancers get the key, the unit and lab-lib routes', async (t) => {
  const p = await plan();
  for (const node of [...new Set(p.map((n) => n.node))]) {
    const r = await dryRun(node, { ...process.env, TUNLB_CLUSTER_KEY_HEX: 'ab'.repeat(32) });
    t.is(r.code, 0, `${node}: ${r.stderr}`);
    const want = p.filter((n) => n.node === node).flatMap((n) => [n.addr4, n.addr6]).sort();
    t.deepEqual(dryAddresses(r.stdout), want, node);
    for (const n of p.filter((x) => x.node === node)) t.true(r.stdout.includes(`+ ip link set dev <nic with MAC ${n.mac}> name ${n.ifname}`), `${node} ${n.ifname}`);
    t.true(r.stdout.includes('/etc/systemd/system/tunlb-lab-net.service'), node);
    if (node.startsWith('lb')) {
      t.true(r.stdout.includes(`ExecStart=/usr/bin/env node ${REPO}/bin/tunlb run --config ${REPO}/config/lab.yaml --id ${node}`), node);
      t.true(r.stdout.includes('+ write /etc/tunlb/cluster.key (mode 0600)'), node);
      t.true(r.stdout.includes('+ ip route replace 224.0.0.0/4 dev lbnet0'), node);
      t.regex(r.stdout, /\+ ip rule add pref 100 iif back0 from 10\.99\.3\.0\/24 lookup 100/);
      t.false(r.stdout.includes('ab'.repeat(32)), 'the key is not printed');
    }
  }
  const bad = await run('bash', [PROVISION, '--dry-run', 'lb9'], { timeoutMs: 10_000 });
  t.is(bad.code, 1);
  t.regex(bad.stderr, /unknown node 'lb9'/);
  const badKey = await dryRun('lb1', { ...process.env, TUNLB_CLUSTER_KEY_HEX: 'abc' });
  t.is(badKey.code, 1);
  t.regex(badKey.stderr, /at least 32 bytes of hex/);
  const tun = await run('bash', [PROVISION, '--dry-run', '--tun-routes', 'lb2', '1234'], { timeoutMs: 10_000 });
  t.is(tun.code, 0, tun.stderr);
  t.regex(tun.stdout, /\+ ip route replace 10\.99\.0\.0\/24 dev tunlb0[\s\S]*\+ ip route replace default dev tunlb0 table 100/);
});

test.serial('the systemd units the provisioning installs pass systemd-analyze verify', async (t) => {
  const have = await run('bash', ['-c', 'command -v systemd-analyze'], { timeoutMs: 5000 });
  if (have.code !== 0) {
    t.log('systemd-analyze not installed: units not verified');
    t.pass();
    return;
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'tunlb-units-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const files = new Set<string>();
  for (const node of ['lb1', 'srv1', 'client', 'router']) {
    const r = await dryRun(node);
    t.is(r.code, 0, r.stderr);
    // "+ write PATH (mode M):" then the file's lines, each prefixed "|  "
    let cur: string[] | null = null;
    let name = '';
    const flush = (): void => {
      if (cur) {
        writeFileSync(path.join(dir, name), cur.join('\n') + '\n');
        files.add(name);
      }
      cur = null;
    };
    for (const line of r.stdout.split('\n')) {
      const m = /^\+ write \S+\/([^/\s]+\.service) /.exec(line);
      if (m) {
        flush();
        name = m[1]!;
        cur = [];
      } else if (cur && line.startsWith('|  ')) {
        cur.push(line.slice(3));
      } else {
        flush();
      }
    }
    flush();
  }
  t.deepEqual([...files].sort(), ['tunlb-lab-bird.service', 'tunlb-lab-iperf3.service', 'tunlb-lab-keepalived.service', 'tunlb-lab-net.service', 'tunlb-lab-server.service', 'tunlb-lab.service']);
  const v = await run('bash', ['-c', `cd ${JSON.stringify(dir)} && systemd-analyze verify ./*.service`], { timeoutMs: 60_000 });
  t.is(v.code, 0, v.stdout + v.stderr);
});

// ---- root: against the namespace lab, and the VM steps in namespaces ----

let session: LabSession | undefined;
const procs = new Set<ChildProcess>();
let work = '';

test.before(async () => {
  if (!hasRoot()) return;
  work = mkdtempSync(path.join(tmpdir(), 'tunlb-vmns-'));
});

async function deleteVmNamespaces(): Promise<void> {
  const list = await run('ip', ['netns', 'list'], { timeoutMs: 5000 });
  for (const ns of list.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith(VM))) {
    const pids = await run('ip', ['netns', 'pids', ns], { timeoutMs: 5000 });
    for (const pid of pids.stdout.split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await run('ip', ['netns', 'del', ns], { timeoutMs: 5000 });
  }
}

test.after.always('stop our processes, delete tunlb-vm-* namespaces, lab down, release the lab', async () => {
  if (!hasRoot()) return;
  for (const p of procs) if (p.pid && p.exitCode === null) p.kill('SIGKILL');
  await deleteVmNamespaces();
  try {
    if (session) await lab(['down']);
  } finally {
    session?.release();
    if (work) rmSync(work, { recursive: true, force: true });
  }
});

rootTest('the dry runs configure what the namespace lab has: addresses, VIP route, multicast route, NAT return rule', async (t) => {
  session ??= await holdLabSession();
  const up = await lab(['up'], 180_000);
  t.is(up.code, 0, `lab up: ${up.stderr.slice(-2000)}\n${labLogTail('lb1')}`);
  if (up.code !== 0) return;
  for (const node of ['client', 'router', 'lb1', 'lb2', 'lb3', 'srv1', 'srv2', 'srv3']) {
    const d = await dryRun(node);
    const addrs = await run('ip', ['-n', `tunlb-${node}`, '-o', 'addr', 'show', 'scope', 'global'], { timeoutMs: 5000 });
    // The servers' VRRP gateway (10.99.3.10, fd99:3::10) is keepalived's, on whichever balancer is master: not a provisioning step.
    const have = [...addrs.stdout.matchAll(/\binet6? (\S+)/g)].map((m) => m[1]!).filter((a) => a !== '10.99.3.10/24' && a !== 'fd99:3::10/64').sort();
    t.deepEqual(dryAddresses(d.stdout), have, `${node}: dry run vs namespace lab`);
    const routes = (await run('ip', ['-n', `tunlb-${node}`, 'route', 'show'], { timeoutMs: 5000 })).stdout;
    if (node === 'router') {
      // The ECMP entry: the VIP routes are BIRD's, in the lab and on the router VM (tunlb-lab-bird.service).
      t.regex(routes, /^10\.99\.0\.10 proto bird/m);
      t.regex(d.stdout, /^\+ sysctl -qw net\.ipv4\.fib_multipath_hash_policy=3 /m);
      t.regex(d.stdout, /^\+ write \/etc\/systemd\/system\/tunlb-lab-bird\.service/m);
      t.notRegex(d.stdout, /^\+ ip route replace 10\.99\.0\.10\/32/m);
    }
    if (node.startsWith('srv')) {
      t.regex(routes, /^default via 10\.99\.3\.10 /m, 'the namespace lab: the VRRP gateway');
      t.regex(d.stdout, /^\+ ip route replace 10\.99\.0\.0\/16 via 10\.99\.3\.10$/m);
    }
    if (node.startsWith('lb')) {
      t.regex(routes, /^224\.0\.0\.0\/4 dev lbnet0/m);
      t.regex(d.stdout, /^\+ ip route replace 224\.0\.0\.0\/4 dev lbnet0$/m);
      const rules = (await run('ip', ['-n', `tunlb-${node}`, 'rule', 'show', 'pref', '100'], { timeoutMs: 5000 })).stdout;
      t.regex(rules, /from 10\.99\.3\.0\/24 iif back0 lookup 100/);
    }
  }
  const down = await lab(['down']);
  t.is(down.code, 0, down.stderr);
});

/** Spawns argv in namespace ns with output to a log file; remembered for cleanup. */
function spawnIn(ns: string, argv: string[], log: string): ChildProcess {
  const fd = openSync(path.join(work, log), 'a');
  const p = spawn('ip', ['netns', 'exec', ns, ...argv], { cwd: REPO, stdio: ['ignore', fd, fd] });
  procs.add(p);
  p.once('exit', () => procs.delete(p));
  return p;
}

rootTest('the VM network steps in namespaces: eight "VMs", provisioned by --network, serve the VIP through three balancers', async (t) => {
  session ??= await holdLabSession();
  await deleteVmNamespaces();
  const p = await plan();
  const nodes = [...new Set(p.map((n) => n.node))];
  const sh = async (cmd: string) => {
    const r = await run('bash', ['-c', cmd], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  // The "virtual networks": three bridges in one switch namespace (no snooping: peer multicast floods).
  await sh(`ip netns add ${SW} && ip -n ${SW} link set lo up`);
  for (const net of ['front', 'lbnet', 'back']) {
    await sh(`ip -n ${SW} link add br-${net} type bridge forward_delay 0 stp_state 0 mcast_snooping 0 && ip -n ${SW} link set br-${net} up`);
  }
  // The "VMs": a namespace each, with NICs that have the plan's MACs and arbitrary names (as a VM's ens5...).
  for (const node of nodes) await sh(`ip netns add ${VM}${node} && ip -n ${VM}${node} link set lo up`);
  let i = 0;
  for (const n of p) {
    const port = `${n.node}-${n.net}`;
    await sh(`ip -n ${VM}${n.node} link add ens${5 + i++} address ${n.mac} type veth peer name ${port} netns ${SW}`);
    await sh(`ip -n ${SW} link set ${port} master br-${n.net} up`);
  }
  // Provision every node's network exactly as the VM's boot unit does.
  for (const node of nodes) {
    // --entry single: this test runs no BIRD/keepalived in the "VMs" (the units do that on real VMs).
    const r = await run('bash', [PROVISION, '--entry', 'single', '--netns', `${VM}${node}`, '--network', node], { timeoutMs: 60_000 });
    t.is(r.code, 0, `${node}: ${r.stderr}`);
    // idempotent: a second boot gives the same result
    const again = await run('bash', [PROVISION, '--entry', 'single', '--netns', `${VM}${node}`, '--network', node], { timeoutMs: 60_000 });
    t.is(again.code, 0, `${node} (again): ${again.stderr}`);
    const links = await sh(`ip -n ${VM}${node} -o link show`);
    for (const n of p.filter((x) => x.node === node)) t.regex(links, new RegExp(`: ${n.ifname}@\\S+: .*link/ether ${n.mac} `), `${node} ${n.ifname}`);
  }
  // Balancers: the lab config, with the key in our own directory (the namespace lab's key path is not ours).
  const key = path.join(work, 'cluster.key');
  writeFileSync(key, Buffer.from(Array.from({ length: 32 }, (_, k) => (k * 37 + 11) & 0xff)), { mode: 0o600 });
  const cfgText = readFileSync(path.join(REPO, 'config', 'lab.yaml'), 'utf8');
  t.true(cfgText.includes('/run/tunlb-lab/cluster.key'));
  const cfg = path.join(work, 'lab.yaml');
  writeFileSync(cfg, cfgText.replace('/run/tunlb-lab/cluster.key', key));
  const lbs = nodes.filter((n) => n.startsWith('lb'));
  const balancers = lbs.map((lb) => ({ lb, proc: spawnIn(`${VM}${lb}`, [process.execPath, TUNLB, 'run', '--config', cfg, '--id', lb], `${lb}.log`) }));
  for (const { lb, proc } of balancers) {
    // what tunlb-lab.service's ExecStartPost does, with the process's PID
    const r = await run('bash', [PROVISION, '--netns', `${VM}${lb}`, '--tun-routes', lb, String(proc.pid)], { timeoutMs: 60_000 });
    t.is(r.code, 0, `${lb} --tun-routes: ${r.stderr}\n${readFileSync(path.join(work, `${lb}.log`), 'utf8').slice(-2000)}`);
  }
  // Servers: what tunlb-lab-server.service runs.
  for (const srv of nodes.filter((n) => n.startsWith('srv'))) {
    spawnIn(`${VM}${srv}`, [process.execPath, '--import', 'tsx', path.join(REPO, 'scripts', 'lab-server.ts'), '--name', srv], `${srv}.log`);
  }
  for (const srv of nodes.filter((n) => n.startsWith('srv'))) {
    const ok = await poll(async () => (await run('ip', ['netns', 'exec', `${VM}${srv}`, 'curl', '-s', '-m', '1', 'http://127.0.0.1/'], { timeoutMs: 3000 })).stdout.trim() === srv, 20_000, 200);
    t.true(ok, `${srv} answers locally`);
  }
  // Ready before any request: every balancer serving, seeing both peers serving, and every backend
  // healthy in its view. (Requests sent as soon as the VIP first answered once all went to srv2:
  // the balancers had started before the servers, so the other backends were still failing their
  // first checks and waiting for `rise` successes.)
  for (const lb of lbs) {
    const r = await run('ip', ['netns', 'exec', `${VM}${lb}`, process.execPath, TUNLB, 'ready', '--wait', '90'], { timeoutMs: 100_000 });
    t.is(r.code, 0, `${lb}: ${r.stdout}${r.stderr}\n${readFileSync(path.join(work, `${lb}.log`), 'utf8').slice(-1500)}`);
  }
  // The client, through the router, the entry balancer and (encapsulated) its peers, to the servers.
  const client = `${VM}client`;
  const up = await poll(async () => (await run('ip', ['netns', 'exec', client, 'curl', '-s', '-m', '2', `http://${VIP4}/`], { timeoutMs: 4000 })).stdout.startsWith('srv'), 30_000, 300);
  t.true(up, `the VIP answers the client\n${balancers.map(({ lb }) => `${lb}: ${readFileSync(path.join(work, `${lb}.log`), 'utf8').slice(-1500)}`).join('\n')}`);
  const seen: Record<string, number> = {};
  let errors = 0;
  for (let k = 0; k < 30; k++) {
    const r = await run('ip', ['netns', 'exec', client, 'curl', '-s', '-m', '2', `http://${VIP4}/`], { timeoutMs: 4000 });
    const name = r.stdout.trim();
    if (/^srv\d$/.test(name)) seen[name] = (seen[name] ?? 0) + 1;
    else errors++;
  }
  t.is(errors, 0, JSON.stringify(seen));
  t.deepEqual(Object.keys(seen).sort(), ['srv1', 'srv2', 'srv3']);
  const v6 = await run('ip', ['netns', 'exec', client, 'curl', '-s', '-m', '2', `http://[${VIP6}]/`], { timeoutMs: 4000 });
  t.regex(v6.stdout.trim(), /^srv\d$/);
  // every balancer sees its two peers (probes over the "lbnet" network)
  for (const lb of lbs) {
    const st = await run('ip', ['netns', 'exec', `${VM}${lb}`, 'curl', '-s', '-m', '2', 'http://127.0.0.1:9180/api/v1/stats'], { timeoutMs: 4000 });
    t.is(st.code, 0, `${lb} admin: ${st.stderr}`);
  }
  t.log(`30 requests through the VM-network namespaces: ${JSON.stringify(seen)}`);
  for (const { proc } of balancers) proc.kill('SIGTERM');
});
