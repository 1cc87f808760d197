/**
 * `npm run bench:micro`: runs every bench/*.bench.ts (one file per hot function) and prints
 * one table. Not part of the tests: figures drift on shared machines, so read them as
 * ratios and against the targets printed beside them.
 *
 * Each bench file exports `run(): Promise<BenchRow[]>`.
 *   npm run bench:micro                 all of them
 *   npm run bench:micro -- flow ranking only files whose name contains one of the words
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  target?: string;
}

async function main(): Promise<void> {
  const filters = process.argv.slice(2);
  const dir = __dirname;
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.bench.ts'))
    .filter((f) => filters.length === 0 || filters.some((w) => f.includes(w)))
    .sort();
  const rows: Array<BenchRow & { file: string }> = [];
  for (const f of files) {
    process.stderr.write(`running ${f} ...\n`);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(join(dir, f)) as { run?: () => Promise<BenchRow[]> };
    if (typeof mod.run !== 'function') {
      process.stderr.write(`  ${f}: no run() export, skipped\n`);
      continue;
    }
    for (const r of await mod.run()) rows.push({ ...r, file: f });
  }
  const w0 = Math.max(9, ...rows.map((r) => r.name.length));
  const fmt = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const line = (a: string, b: string, c: string, d: string): string =>
    `| ${a.padEnd(w0)} | ${b.padStart(12)} | ${c.padEnd(10)} | ${d.padEnd(14)} |`;
  console.log(`node ${process.version}, ${new Date().toISOString()}`);
  console.log(line('benchmark', 'value', 'unit', 'target'));
  console.log(line('-'.repeat(w0), '-'.repeat(12), '-'.repeat(10), '-'.repeat(14)));
  for (const r of rows) console.log(line(r.name, fmt(r.value), r.unit, r.target ?? ''));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
