// Unit tests: pure logic, no root, no network. Run with `npm run test:unit`.
module.exports = {
  files: ['test/**/*.test.ts'],
  extensions: { ts: 'commonjs' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  timeout: '60s',
};
