/**
 * The one errors module (undici-style): every error tunlb raises *off* the hot path is a
 * TunlbError with a stable `code` that scripts and tests may match on. Messages say what
 * went wrong and how to fix it, in one line. The hot path never throws: it returns result
 * codes and counts drops (see src/packet/result.ts).
 *
 * Codes are stable: never rename one; add new ones at the end of their group.
 */
export const ErrorCodes = {
  // configuration
  CONFIG_INVALID: 'TUNLB_CONFIG_INVALID',
  CONFIG_NOT_FOUND: 'TUNLB_CONFIG_NOT_FOUND',
  CONFIG_KEY_MISSING: 'TUNLB_CONFIG_KEY_MISSING',
  // privileges and kernel devices
  NO_PERMISSION: 'TUNLB_NO_PERMISSION',
  NO_TUN_DEVICE: 'TUNLB_NO_TUN_DEVICE',
  DEVICE_BUSY: 'TUNLB_DEVICE_BUSY',
  DEVICE_CLOSED: 'TUNLB_DEVICE_CLOSED',
  DEVICE_IO: 'TUNLB_DEVICE_IO',
  NATIVE_ADDON_MISSING: 'TUNLB_NATIVE_ADDON_MISSING',
  ADDRESS_NOT_PRESENT: 'TUNLB_ADDRESS_NOT_PRESENT',
  SOCKET: 'TUNLB_SOCKET',
  // cluster and protocol
  PROTOCOL: 'TUNLB_PROTOCOL',
  SYNC_FAILED: 'TUNLB_SYNC_FAILED',
  // tables and capacity
  TABLE_BUILD: 'TUNLB_TABLE_BUILD',
  CAPACITY: 'TUNLB_CAPACITY',
  // admin / CLI
  ADMIN: 'TUNLB_ADMIN',
  USAGE: 'TUNLB_USAGE',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class TunlbError extends Error {
  readonly code: ErrorCode;
  /** Optional details for logs and --json output (never secrets). */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TunlbError';
    this.code = code;
    this.details = details;
  }
}

export function isTunlbError(e: unknown, code?: ErrorCode): e is TunlbError {
  return e instanceof TunlbError && (code === undefined || e.code === code);
}
