// Public exports of idemfetch's core.
// Engine internals (createEngine, normalizeOptions, DEFAULTS) stay behind ./engine.js and ./options.js.
export type { Stats } from "./engine.js";
export type { IdempotencyErrorCode } from "./errors.js";
export {
  errorResponse,
  IdempotencyError,
  IdempotencyKeyError,
  isIdempotencyError,
  isIdempotencyKeyError,
} from "./errors.js";
export type { IdempotencyCallOptions, IdempotentFetch, IdempotentRequestInit } from "./fetch.js";
export { createIdempotentFetch } from "./fetch.js";
export { canonicalJson, sha256 } from "./fingerprint.js";
export type { AutoKeyOptions, IdempotencyEvent, IdempotencyOptions } from "./options.js";
export { defaultShouldStore } from "./options.js";
export { decodeRecord, encodeRecord } from "./record.js";
export type { AcquireResult, IdempotencyStore, MemoryStoreOptions, StoredRecord } from "./store.js";
export { memoryStore, newToken } from "./store.js";
export type { WebLocksOptions } from "./web-locks.js";
export { withWebLocks } from "./web-locks.js";
