/**
 * The README's "before `vagrant up`" figures are the Vagrantfile's: the memory and vCPUs it
 * asks for (its defaults times the nodes of the NIC plan, `scripts/vagrant-provision.sh
 * --plan`), the environment variables that change them, the provider, and how code reaches the
 * VMs (an rsync copy that leaves build outputs out, then `vagrant rsync` / `vagrant provision`).
 * A change to the Vagrantfile's sizes fails here until the README says the new ones.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const REPO = join(__dirname, '..');
const vagrantfile = readFileSync(join(REPO, 'Vagrantfile'), 'utf8');
const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
const section = readme.slice(readme.indexOf('## The Vagrant lab'), readme.indexOf('\n## ', readme.indexOf('## The Vagrant lab') + 5));

function nodes(): string[] {
  const plan = execFileSync('bash', [join(REPO, 'scripts', 'vagrant-provision.sh'), '--plan'], { encoding: 'utf8' });
  return [...new Set(plan.split('\n').filter(Boolean).map((l) => l.split(/\s+/)[0]!))];
}

function num(re: RegExp, what: string): number {
  const m = re.exec(vagrantfile);
  if (!m) throw new Error(`Vagrantfile: ${what} not found`);
  return Number(m[1]);
}

test('vagrant README: memory, vCPUs and their knobs are what the Vagrantfile asks for', (t) => {
  const all = nodes();
  const lbs = all.filter((n) => n.startsWith('lb')).length;
  const others = all.length - lbs;
  t.is(all.length, 8);
  const lbMem = num(/TUNLB_LB_MEMORY", "(\d+)"/, 'TUNLB_LB_MEMORY default');
  const vmMem = num(/TUNLB_VM_MEMORY", "(\d+)"/, 'TUNLB_VM_MEMORY default');
  const lbCpu = num(/lv\.cpus = balancer \? (\d+)/, 'libvirt cpus of a balancer');
  const vmCpu = num(/lv\.cpus = balancer \? \d+ : (\d+)/, 'libvirt cpus of the others');
  const memGiB = (lbs * lbMem + others * vmMem) / 1024;
  t.true(section.includes(`${lbs} balancers × ${lbMem} MB and ${others} other VMs × ${vmMem} MB`), `README names ${lbs} × ${lbMem} MB and ${others} × ${vmMem} MB`);
  t.true(section.includes(`about ${(Math.round(memGiB * 2) / 2).toString()} GiB`), `README: about ${memGiB.toFixed(1)} GiB`);
  t.true(section.includes(`${lbs * lbCpu + others * vmCpu} virtual CPUs (balancers ${lbCpu} each, the others ${vmCpu})`), 'README: the vCPU count');
  for (const knob of ['TUNLB_LB_MEMORY', 'TUNLB_VM_MEMORY']) t.true(section.includes(knob), knob);
  t.regex(section, /libvirt/);
  t.regex(section, /network access from the VMs/);
});

test('vagrant README: code reaches the VMs by an rsync copy (the Vagrantfile\'s synced folder), refreshed by vagrant rsync / provision', (t) => {
  t.regex(vagrantfile, /synced_folder "\.", "\/vagrant", type: "rsync"/);
  for (const excluded of ['node_modules/', 'dist/']) t.true(vagrantfile.includes(`"${excluded}"`), `the Vagrantfile leaves ${excluded} out`);
  t.regex(section, /\*\*copied\*\* into each VM's `\/vagrant` by rsync/);
  t.regex(section, /^vagrant rsync /m);
  t.regex(section, /^vagrant provision lb1 lb2 lb3 /m);
  t.regex(section, /systemctl restart tunlb-lab/);
});
