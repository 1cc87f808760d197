// Kernel-facing tests (TUN, namespaces, raw sockets): need root; each file skips with a
// clear message otherwise. Files run one at a time: they share the kernel's namespaces.
module.exports = {
  files: ['native-tests/**/*.test.ts'],
  extensions: { ts: 'commonjs' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  concurrency: 1,
  timeout: '5m',
};
