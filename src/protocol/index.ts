/**
 * Public API of the balancer-to-balancer protocol (protocol/tunlb.proto). Code outside
 * src/protocol/ imports from here, not from ./generated.
 */
export * from './result';
export * from './flow-record';
export * from './codec';
export * from './replay-window';
export * from './receiver';
export * from './record-batcher';
export { tunlb } from './generated/tunlb';
export * from './sync-frame';
