// memoryStore: the reference store, atomic within one process, on the shared state machine (store-state.ts).
import { keyedListeners } from "./listeners.ts";
import type { IdempotencyStore, StoredRecord } from "./store.ts";
import { newToken } from "./store.ts";
import { decide, type Entry, type Operation, type Replies } from "./store-state.ts";
import { type OptionNames, strictOptions } from "./strict.ts";

export interface MemoryStoreOptions {
  /** Entries (leases + records) kept at most; the least recently used is evicted first. Default 10 000. */
  maxEntries?: number;
  /** Clock in Unix ms; for tests. Default `Date.now`. */
  now?: () => number;
}

/**
 * The embedded default: atomic within one process (every operation is synchronous inside),
 * expiring, and bounded by `maxEntries` with least-recently-used eviction.
 */
export function memoryStore(options: MemoryStoreOptions = {}): IdempotencyStore {
  strictOptions(options, { maxEntries: true, now: true } satisfies OptionNames<MemoryStoreOptions>, "memoryStore()");
  const maxEntries = options.maxEntries ?? 10_000;
  if (!Number.isInteger(maxEntries) || maxEntries < 1) {
    throw new TypeError(`memoryStore: maxEntries must be a positive integer, got ${String(maxEntries)}`);
  }
  const now = options.now ?? Date.now;
  // A Map iterates in insertion order: re-inserting on use keeps the least recently used first.
  const entries = new Map<string, Entry>();
  const listeners = keyedListeners();

  /** Read, decide and write with nothing in between: the whole store's atomicity. */
  const run = <O extends Operation>(storeKey: string, operation: O): Replies[O["op"]] => {
    const found = entries.get(storeKey);
    const { reply, write, changed } = decide(found, operation, now(), newToken);
    if (write !== undefined || found !== undefined) entries.delete(storeKey);
    const kept = write === undefined ? found : write;
    if (kept) {
      entries.set(storeKey, kept);
      while (entries.size > maxEntries) entries.delete(entries.keys().next().value as string);
    }
    if (changed) listeners.notify(storeKey);
    return reply;
  };

  return {
    async acquire(storeKey, fingerprint, leaseMs) {
      const result = run(storeKey, { op: "acquire", fingerprint, leaseMs });
      return result.state === "done" ? { state: "done", record: copyRecord(result.record) } : result;
    },
    async commit(storeKey, token, record, ttlMs) {
      return run(storeKey, { op: "commit", token, record: copyRecord(record), ttlMs });
    },
    async release(storeKey, token) {
      return run(storeKey, { op: "release", token });
    },
    async renew(storeKey, token, leaseMs) {
      return run(storeKey, { op: "renew", token, leaseMs });
    },
    async forget(storeKey, force) {
      return run(storeKey, { op: "forget", force });
    },
    subscribe: (storeKey, onChange) => listeners.add(storeKey, onChange),
  };
}

/** Callers must never share mutable bytes with the store. */
function copyRecord(record: StoredRecord): StoredRecord {
  // new Uint8Array(), not .slice(): Buffer#slice is a view on the same memory.
  return { ...record, headers: record.headers.map(([k, v]) => [k, v]), body: new Uint8Array(record.body) };
}
