/**
 * `tunlb` from the TypeScript sources (no build needed), for unit tests of the command line:
 * `node --import tsx test/helpers/tunlb-cli.ts ARGS...` behaves as `bin/tunlb ARGS...`.
 */
import { main } from '../../src/cli/main';

main(['node', 'tunlb', ...process.argv.slice(2)]);
