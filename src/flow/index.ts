/** The flow table (src/flow/table.ts) and its timeouts (src/flow/timeouts.ts). */
export { FlowTable, InsertResult, FlowFlags, TcpFlags, ExpireReason, TouchResult, VIP_REMOVED, MAX_VIPS } from './table';
export type { FlowTableOptions, ExpireCallback, RemapCounts } from './table';
export { FlowState, FLOW_STATE_COUNT, DEFAULT_FLOW_TIMEOUTS, buildTimeoutTable, initialStateForProtocol } from './timeouts';
export type { FlowTimeouts, FlowStateValue } from './timeouts';
export { hashKeyWords } from './hash';
