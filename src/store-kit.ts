// idemfetch/store: what an adapter author needs to build an IdempotencyStore (docs/writing-an-adapter.md).
export type { KeyedListeners, KeyedListenersHooks } from "./listeners.ts";
export { keyedListeners } from "./listeners.ts";
export type {
  FollowLiveOptions,
  LiveEvent,
  LiveWriter,
  LiveWriterOptions,
} from "./live.ts";
export { followLive, isLiveStreamLostError, LiveStreamLostError, liveWriter } from "./live.ts";
export { liveMemoryStore } from "./memory-live.ts";
export { base64ToBytes, bytesToBase64, decodeRecord, encodeRecord, isStoredRecord } from "./record.ts";
export type {
  AcquireResult,
  ForgetResult,
  IdempotencyStore,
  LiveHead,
  LivePart,
  LiveRead,
  LiveStore,
  StoredRecord,
} from "./store.ts";
export { hasLive, newToken } from "./store.ts";
export type { Entry, Operation, Replies, Step } from "./store-state.ts";
export { compactBytes, decide, parseEntry } from "./store-state.ts";
