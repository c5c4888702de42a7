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
export type { IdempotencyCallOptions, IdempotentFetch, IdempotentRequestInit } from "./fetch.ts";
export { createIdempotentFetch } from "./fetch.ts";
export { canonicalJson, sha256 } from "./fingerprint.ts";
export type { AutoKeyOptions, IdempotencyEvent, IdempotencyOptions, RetryOptions } from "./options.ts";
export { defaultShouldStore } from "./options.ts";
export { decodeRecord, encodeRecord } from "./record.ts";
export type { AcquireResult, IdempotencyStore, MemoryStoreOptions, StoredRecord } from "./store.ts";
export { memoryStore, newToken } from "./store.ts";
export type { WebLocksOptions } from "./web-locks.ts";
export { withWebLocks } from "./web-locks.ts";
