// An IdempotencyStore in the browser's IndexedDB (idb-keyval), shared by every tab of an origin.
import { createStore, promisifyRequest, type UseStore } from "idb-keyval";
import { type AcquireResult, type IdempotencyStore, newToken, type StoredRecord } from "../src/store.js";

export interface IndexedDBStoreOptions {
  /**
   * Database name; it also names the BroadcastChannel that wakes other tabs. Default "idemfetch".
   * Use a database of its own: idb-keyval cannot add an object store to an existing database.
   */
  dbName?: string;
  /** Object store name. Default "records". */
  storeName?: string;
  /** Expired entries are swept at most this often, in ms. Default 60 000. */
  sweepIntervalMs?: number;
}

/** What one store key holds. Expiry is kept in the value: IndexedDB has no TTL. */
type Entry =
  | { kind: "lease"; token: string; fingerprint: string; expiresAt: number }
  | { kind: "record"; record: StoredRecord; expiresAt: number };

/**
 * The browser store: atomic across tabs (each operation is one readwrite transaction, and IndexedDB
 * runs those one at a time per object store), expiring on read, woken across tabs by BroadcastChannel.
 * Expiry uses this device's clock, shared by all its tabs.
 */
export function indexedDBStore(options: IndexedDBStoreOptions = {}): IdempotencyStore {
  if (typeof indexedDB === "undefined") {
    throw new TypeError("indexedDBStore: this runtime has no indexedDB; use memoryStore or a Redis store");
  }
  const dbName = options.dbName ?? "idemfetch";
  const storeName = options.storeName ?? "records";
  const sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
  if (typeof dbName !== "string" || dbName === "" || typeof storeName !== "string" || storeName === "") {
    throw new TypeError("indexedDBStore: dbName and storeName must be non-empty strings");
  }
  if (typeof sweepIntervalMs !== "number" || !(sweepIntervalMs >= 0)) {
    throw new TypeError(`indexedDBStore: sweepIntervalMs must be a number of ms >= 0, got ${String(sweepIntervalMs)}`);
  }
  const db: UseStore = createStore(dbName, storeName);

  /**
   * One readwrite transaction: reads the key, then `decide` (synchronous, so the transaction stays
   * open) returns what to write: an entry, null to delete, or undefined to leave it as it is.
   * Like idb-keyval's update(), but a replay or a refused commit does not rewrite a 5 MiB record.
   */
  const transact = <T>(storeKey: string, decide: (found: unknown) => [T, Entry | null | undefined]): Promise<T> =>
    db(
      "readwrite",
      (os) =>
        new Promise<T>((resolve, reject) => {
          const request = os.get(storeKey);
          request.onsuccess = () => {
            try {
              const [result, write] = decide(request.result);
              if (write === null) os.delete(storeKey);
              else if (write !== undefined) os.put(write, storeKey);
              promisifyRequest(os.transaction).then(() => resolve(result), reject);
            } catch (error) {
              reject(error);
            }
          };
          request.onerror = () => reject(request.error);
        }),
    );

  const listeners = new Map<string, Set<() => void>>();
  const fire = (storeKey: string): void => {
    for (const fn of [...(listeners.get(storeKey) ?? [])]) queueMicrotask(fn);
  };
  let channel: BroadcastChannel | undefined;
  const broadcast = (): BroadcastChannel | undefined => {
    if (channel || typeof BroadcastChannel === "undefined") return channel;
    channel = new BroadcastChannel(`idemfetch:${dbName}`);
    // Node and Deno keep the process alive while a channel is open; waiters have timers of their own.
    (channel as { unref?: () => void }).unref?.();
    channel.onmessage = (event: MessageEvent) => {
      if (typeof event.data === "string") fire(event.data);
    };
    return channel;
  };
  const changed = (storeKey: string): void => {
    fire(storeKey); // a channel never delivers to itself: this tab's own waiters
    broadcast()?.postMessage(storeKey);
  };

  let lastSweep = Number.NEGATIVE_INFINITY;
  const sweep = (): void => {
    if (Date.now() - lastSweep < sweepIntervalMs) return;
    lastSweep = Date.now();
    // Corrupt values are left for acquire to replace (and report); only expired entries go.
    db("readwrite", (os) => {
      const request = os.openCursor();
      request.onsuccess = () => {
        const cursor = request.result;
        if (!cursor) return;
        const entry = parse(cursor.value);
        if (entry && entry.expiresAt <= Date.now()) cursor.delete();
        cursor.continue();
      };
      return promisifyRequest(os.transaction);
    }).catch(() => {});
  };

  /** The entry if it is live; "corrupt" when something we did not write is there. */
  const live = (found: unknown): Entry | "corrupt" | undefined => {
    if (found === undefined) return undefined;
    const entry = parse(found);
    if (!entry) return "corrupt";
    return entry.expiresAt > Date.now() ? entry : undefined;
  };
  const owns = (found: unknown, token: string): boolean => {
    const entry = live(found);
    return typeof entry === "object" && entry.kind === "lease" && entry.token === token;
  };

  return {
    async acquire(storeKey, fingerprint, leaseMs) {
      const token = newToken();
      const result = await transact<AcquireResult>(storeKey, (found) => {
        const entry = live(found);
        if (entry === undefined || entry === "corrupt") {
          const lease: Entry = { kind: "lease", token, fingerprint, expiresAt: Date.now() + leaseMs };
          return [entry ? { state: "acquired", token, replacedCorrupt: true } : { state: "acquired", token }, lease];
        }
        if (entry.kind === "record") return [{ state: "done", record: entry.record }, undefined];
        return [{ state: "pending", fingerprint: entry.fingerprint }, undefined];
      });
      sweep();
      return result;
    },
    async commit(storeKey, token, record, ttlMs) {
      const ok = await transact(storeKey, (found) =>
        owns(found, token)
          ? [true, { kind: "record", record: { ...record, body: compact(record.body) }, expiresAt: Date.now() + ttlMs }]
          : [false, undefined],
      );
      if (ok) changed(storeKey);
      return ok;
    },
    async release(storeKey, token) {
      const ok = await transact(storeKey, (found) => (owns(found, token) ? [true, null] : [false, undefined]));
      if (ok) changed(storeKey);
      return ok;
    },
    async renew(storeKey, token, leaseMs) {
      return transact(storeKey, (found) =>
        owns(found, token) ? [true, { ...(found as Entry), expiresAt: Date.now() + leaseMs }] : [false, undefined],
      );
    },
    subscribe(storeKey, onChange) {
      broadcast();
      let set = listeners.get(storeKey);
      if (!set) listeners.set(storeKey, (set = new Set()));
      const entry = () => onChange();
      set.add(entry);
      return () => {
        set.delete(entry);
        if (set.size === 0 && listeners.get(storeKey) === set) listeners.delete(storeKey);
      };
    },
    async close() {
      listeners.clear();
      channel?.close();
      channel = undefined;
    },
  };
}

/**
 * Structured clone copies a view's whole buffer (a subarray, a pooled Node Buffer): store just the bytes.
 * new Uint8Array(), not .slice(): Buffer#slice is a view on the same memory.
 */
function compact(body: Uint8Array): Uint8Array {
  const whole = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength;
  return whole && body.constructor === Uint8Array ? body : new Uint8Array(body);
}

/** A stored value is untrusted (another version, another library, a user's devtools): check its shape. */
function parse(value: unknown): Entry | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.expiresAt !== "number" || Number.isNaN(v.expiresAt)) return undefined;
  if (v.kind === "lease") {
    return typeof v.token === "string" && typeof v.fingerprint === "string" ? (v as Entry) : undefined;
  }
  if (v.kind !== "record" || typeof v.record !== "object" || v.record === null) return undefined;
  const r = v.record as Record<string, unknown>;
  const ok =
    Number.isInteger(r.status) &&
    (r.status as number) >= 200 &&
    (r.status as number) <= 599 &&
    typeof r.statusText === "string" &&
    r.body instanceof Uint8Array &&
    typeof r.createdAt === "number" &&
    typeof r.fingerprint === "string" &&
    Array.isArray(r.headers) &&
    r.headers.every((p) => Array.isArray(p) && p.length === 2 && typeof p[0] === "string" && typeof p[1] === "string");
  return ok ? (v as Entry) : undefined;
}
