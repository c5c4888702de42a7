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
  return createMemoryStore(options);
}

/** What an extension of memoryStore (memory-live.ts) sees of its entries. */
export interface MemoryInternals {
  /** The key's entry while it is live. */
  current(storeKey: string): Entry | undefined;
  /** The store's clock, Unix ms. */
  now(): number;
}

/** Methods an extension adds, and what it hears of the lease ending. */
export interface MemoryExtension {
  /** After a commit (`ttlMs` given) or a release by `token`, or a forget (no token) took effect. */
  ended(storeKey: string, token?: string, ttlMs?: number): void;
  methods: Partial<IdempotencyStore>;
}

/** memoryStore, with the methods `extend` adds; extensions live in their own modules, so the core bundle has none. */
export function createMemoryStore(
  options: MemoryStoreOptions,
  extend?: (internals: MemoryInternals) => MemoryExtension,
): IdempotencyStore {
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

  /** The key's entry when it is live (without touching its recency). */
  const current = (storeKey: string): Entry | undefined => {
    const entry = entries.get(storeKey);
    return entry && entry.expiresAt > now() ? entry : undefined;
  };
  const ext = extend?.({ current, now });

  return {
    async acquire(storeKey, fingerprint, leaseMs) {
      const result = run(storeKey, { op: "acquire", fingerprint, leaseMs });
      return result.state === "done" ? { state: "done", record: copyRecord(result.record) } : result;
    },
    async commit(storeKey, token, record, ttlMs) {
      const stored = run(storeKey, { op: "commit", token, record: copyRecord(record), ttlMs });
      if (stored) ext?.ended(storeKey, token, ttlMs);
      return stored;
    },
    async release(storeKey, token) {
      const released = run(storeKey, { op: "release", token });
      if (released) ext?.ended(storeKey, token);
      return released;
    },
    async renew(storeKey, token, leaseMs) {
      return run(storeKey, { op: "renew", token, leaseMs });
    },
    async forget(storeKey, force) {
      const result = run(storeKey, { op: "forget", force });
      if (result === "forgotten") ext?.ended(storeKey);
      return result;
    },
    subscribe: (storeKey, onChange) => listeners.add(storeKey, onChange),
    ...ext?.methods,
  };
}

/** Callers must never share mutable bytes with the store. */
export function copyRecord(record: StoredRecord): StoredRecord {
  // new Uint8Array(), not .slice(): Buffer#slice is a view on the same memory.
  return { ...record, headers: record.headers.map(([k, v]) => [k, v]), body: new Uint8Array(record.body) };
}
