// The store contract every adapter keeps (docs/protocol.md "The store contract"), and memoryStore, the reference store.
import { keyedListeners } from "./listeners.ts";
import { decide, type Entry, type Operation, type Replies } from "./store-state.ts";
import { type OptionNames, strictOptions } from "./strict.ts";

/** A stored response. Bodies are already decoded (no content-encoding applies to them). */
export interface StoredRecord {
  /** HTTP status, 200-599. */
  status: number;
  statusText: string;
  /** Header pairs in response order; names lower-case. */
  headers: [string, string][];
  /** The body bytes exactly as the first caller received them. */
  body: Uint8Array;
  /** When the response was stored, Unix ms (informational; expiry is the store's job). */
  createdAt: number;
  /** Fingerprint of the request that produced it. */
  fingerprint: string;
}

/** What `acquire` found. */
export type AcquireResult =
  /** This caller holds the lease and must execute, then commit or release with `token`. */
  | {
      state: "acquired";
      token: string;
      /** True when the key held a value that did not parse, which this acquire overwrote. */
      replacedCorrupt?: boolean;
    }
  /** Another caller holds a live lease for a request with `fingerprint`. */
  | { state: "pending"; fingerprint: string }
  /** A live record exists. */
  | { state: "done"; record: StoredRecord };

/** What `forget` did: removed a record (or a forced lease), found nothing, or left a live lease in place. */
export type ForgetResult = "forgotten" | "absent" | "in-progress";

/**
 * A place that holds leases and records. One store key per operation (Redis Cluster safe).
 * Every method may reject; the engine applies timeouts and the `onStoreError` policy.
 */
export interface IdempotencyStore {
  /** Atomically: a live record → done; a live lease → pending; else take a lease of `leaseMs` ms. */
  acquire(storeKey: string, fingerprint: string, leaseMs: number): Promise<AcquireResult>;
  /** Stores `record` for `ttlMs` ms and drops the lease, only if `token` owns it. Resolves whether it took effect. */
  commit(storeKey: string, token: string, record: StoredRecord, ttlMs: number): Promise<boolean>;
  /** Drops the lease without storing, only if `token` owns it. Resolves whether it took effect. */
  release(storeKey: string, token: string): Promise<boolean>;
  /** Extends a live lease to `leaseMs` ms from now, only for its owner. Resolves whether it took effect. */
  renew(storeKey: string, token: string, leaseMs: number): Promise<boolean>;
  /**
   * Removes what `storeKey` holds, for an operator who must let a key run again. A live lease is left alone
   * ("in-progress") unless `force`, which deletes it too (its owner's commit then finds it gone and changes
   * nothing). Wakes subscribers when something was removed. Resolves "forgotten", "absent" or "in-progress".
   */
  forget(storeKey: string, force: boolean): Promise<ForgetResult>;
  /** Optional: calls `onChange` after a commit or release of `storeKey`; returns the unsubscribe function. */
  subscribe?(storeKey: string, onChange: () => void): () => void;
  /** Optional: frees what the store itself opened (never the client the user passed in). */
  close?(): Promise<void>;
}

// Random bytes come from a pool: one getRandomValues call per 256 tokens instead of one each.
let pool = new Uint8Array(0);
let poolOffset = 0;

/** An unguessable owner token (128 random bits, hex). */
export function newToken(): string {
  if (poolOffset + 16 > pool.length) {
    pool = crypto.getRandomValues(new Uint8Array(4096));
    poolOffset = 0;
  }
  let out = "";
  for (let i = poolOffset; i < poolOffset + 16; i++) {
    const b = pool[i] as number;
    out += (b < 16 ? "0" : "") + b.toString(16);
  }
  poolOffset += 16;
  return out;
}

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
