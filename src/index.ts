// Public exports of idemfetch's core.
// Engine internals (createEngine, normalizeOptions, DEFAULTS) stay behind ./engine.js and ./options.js.
export type { Stats } from "./engine.ts";
export type { IdempotencyErrorCode } from "./errors.ts";
export {
  errorResponse,
  IdempotencyError,
  IdempotencyKeyError,
  isIdempotencyError,
  isIdempotencyKeyError,
} from "./errors.ts";
export type { CallEvent, CircuitChange, StoreFailure } from "./events.ts";
export type { IdempotencyCallOptions, IdempotentFetch, IdempotentRequestInit } from "./fetch.ts";
export { createIdempotentFetch } from "./fetch.ts";
export { canonicalJson, sha256 } from "./fingerprint.ts";
export type { StableKeyPart } from "./keygen.ts";
export { newKey, stableKey } from "./keygen.ts";
export type { MemoryStoreOptions } from "./memory-store.ts";
export { memoryStore } from "./memory-store.ts";
export type { AutoKeyOptions, IdempotencyEvent, IdempotencyOptions, RetryOptions } from "./options.ts";
export { defaultShouldStore } from "./options.ts";
export { decodeRecord, encodeRecord } from "./record.ts";
export type { AcquireResult, IdempotencyStore, StoredRecord } from "./store.ts";
export { newToken } from "./store.ts";
export type { CircuitBreakerOptions, Logger } from "./store-guard.ts";
export { isStoreUnavailableError, StoreUnavailableError } from "./store-guard.ts";
export type { WebLocksOptions } from "./web-locks.ts";
export { withWebLocks } from "./web-locks.ts";
