/**
 * promtool (Prometheus's checker; Debian package `prometheus`, installed by
 * scripts/install-deps.sh, whose server is never started) for the tests of the /metrics text,
 * the alert rules and the Grafana dashboard's queries. `promtoolTest` is AVA's `test` when
 * promtool is on the PATH; otherwise, outside CI, the test is skipped with a line saying why,
 * and in CI (CI=true) it runs and fails (an install step is missing).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';

export function havePromtool(): boolean {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return r.status === 0;
}

export const promtoolTest: typeof test = (() => {
  if (havePromtool() || process.env['CI'] === 'true') return test;
  console.log('promtool tests skipped: promtool not found (bash scripts/install-deps.sh installs it: Debian package prometheus)');
  return test.skip as unknown as typeof test;
})();

export interface PromtoolResult {
  status: number | null;
  /** stdout and stderr together (promtool reports problems on either). */
  output: string;
}

/** Runs promtool with `args`, `input` on its standard input; bounded to 30 s. */
export function promtool(args: string[], input?: string): PromtoolResult {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 30_000 });
  if (r.error) return { status: null, output: `promtool: ${r.error.message}` };
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}
