/**
 * Running a command as an unprivileged user from any clone location.
 *
 * Some tests run the project as `nobody` (uid/gid 65534, no groups, no capabilities) to check
 * what a non-root user is told. A clone can sit under a folder only root may enter (/root, a
 * root user's home, a `mktemp -d` folder): nobody cannot reach the repository there, and the
 * run failed with "Cannot find module …/bin/tunlb" instead of the message under test. So the
 * command runs in a private mount namespace (unshare --mount, its mounts invisible to the host)
 * where the repository is bind-mounted onto a world-traversable folder, STAGE (an empty folder
 * under the system temp dir, mode 0755); every argument that names a path in the repository is
 * rewritten to STAGE, and the working directory is STAGE. The repository's own files keep their
 * modes (a clone and npm ci make them world-readable).
 */
import { mkdtempSync, chmodSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { REPO } from './lab';

export const NOBODY = 65534;

let stage: string | undefined;

/** The empty mount point (created once per process, removed at exit). */
function stageDir(): string {
  if (stage === undefined) {
    const d = mkdtempSync(path.join(tmpdir(), 'tunlb-stage-'));
    chmodSync(d, 0o755);
    stage = d;
    process.once('exit', () => {
      try {
        rmdirSync(d);
      } catch {
        /* still mounted somewhere (it is not: the namespace died with its process) or gone */
      }
    });
  }
  return stage;
}

/**
 * The argv for `ip` that runs `argv` in network namespace `ns` as nobody without capabilities,
 * with the repository reachable (see the header). `argv[0]` is the program (e.g. process.execPath).
 */
export function nobodyInNetns(ns: string, argv: readonly string[]): string[] {
  const st = stageDir();
  const rewrite = (a: string): string => (a === REPO || a.startsWith(REPO + path.sep) ? st + a.slice(REPO.length) : a.split(REPO + path.sep).join(st + path.sep));
  const script = 'mount --bind "$0" "$1" && cd "$1" && shift && exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all -- "$@"';
  return ['netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, REPO, st, ...argv.map(rewrite)];
}
