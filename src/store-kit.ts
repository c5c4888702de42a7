// idemfetch/store: what an adapter author needs to build an IdempotencyStore (docs/writing-an-adapter.md).
export type { KeyedListeners, KeyedListenersHooks } from "./listeners.ts";
export { keyedListeners } from "./listeners.ts";
export { base64ToBytes, bytesToBase64, decodeRecord, encodeRecord, isStoredRecord } from "./record.ts";
export type { AcquireResult, ForgetResult, IdempotencyStore, StoredRecord } from "./store.ts";
export { newToken } from "./store.ts";
export type { Entry, Operation, Replies, Step } from "./store-state.ts";
export { compactBytes, decide, parseEntry } from "./store-state.ts";
