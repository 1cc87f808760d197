/**
 * Root gate for kernel-facing tests. Every native test file registers its tests through
 * `rootTest` (or `nativeSuite`): as root they run serially (they share the kernel); otherwise
 * each is registered as skipped with the reason in its title, and the reason is printed once,
 * so `npm run test:native` as a user passes and says why nothing ran.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';

export const NEEDS_ROOT = 'skipped: needs root (TUN devices and network namespaces)';

/** True when this process may create TUN devices and network namespaces. */
export function hasRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0 && existsSync('/dev/net/tun');
}

export type NativeImpl = (t: ExecutionContext) => Promise<void> | void;

let announced = false;

/** Registers a serial test that needs root, or a skipped one (with NEEDS_ROOT) otherwise. */
export function rootTest(title: string, impl: NativeImpl): void {
  if (hasRoot()) {
    test.serial(title, async (t) => {
      await impl(t);
    });
    return;
  }
  if (!announced) {
    announced = true;
    console.log(`tunlb native tests: ${NEEDS_ROOT}`);
  }
  test.skip(`${title} (${NEEDS_ROOT})`, () => undefined);
}

/** rootTest with every title prefixed by `suite: ` (one per subject in a file). */
export function nativeSuite(suite: string): (title: string, impl: NativeImpl) => void {
  return (title, impl) => rootTest(`${suite}: ${title}`, impl);
}
