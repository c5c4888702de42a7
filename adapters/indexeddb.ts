// An IdempotencyStore in the browser's IndexedDB (idb-keyval), shared by every tab of an origin.
import { createStore, promisifyRequest, type UseStore } from "idb-keyval";
import { keyedListeners } from "../src/listeners.ts";
import { type IdempotencyStore, newToken } from "../src/store.ts";
import { compactBytes, decide, type Operation, parseEntry, type Replies } from "../src/store-state.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";

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

/**
 * The browser store: atomic across tabs (each operation is one readwrite transaction, and IndexedDB
 * runs those one at a time per object store), expiring on read, woken across tabs by BroadcastChannel.
 * Expiry uses this device's clock, shared by all its tabs.
 */
export function indexedDBStore(options: IndexedDBStoreOptions = {}): IdempotencyStore {
  strictOptions(
    options,
    { dbName: true, storeName: true, sweepIntervalMs: true } satisfies OptionNames<IndexedDBStoreOptions>,
    "indexedDBStore()",
  );
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
   * One readwrite transaction: reads the key, decides (synchronously, so the transaction stays open) and
   * writes what the state machine says. Like idb-keyval's update(), but a replay or a refused commit does not
   * rewrite a 5 MiB record. Wakes subscribers once the transaction has committed.
   */
  const run = <O extends Operation>(storeKey: string, operation: O): Promise<Replies[O["op"]]> =>
    db(
      "readwrite",
      (os) =>
        new Promise<Replies[O["op"]]>((resolve, reject) => {
          const request = os.get(storeKey);
          request.onsuccess = () => {
            try {
              const { reply, write, changed } = decide(request.result, operation, Date.now(), newToken);
              if (write === null) os.delete(storeKey);
              else if (write !== undefined) os.put(write, storeKey);
              promisifyRequest(os.transaction).then(() => {
                if (changed) changedKey(storeKey);
                resolve(reply);
              }, reject);
            } catch (error) {
              reject(error);
            }
          };
          request.onerror = () => reject(request.error);
        }),
    );

  const listeners = keyedListeners();
  let channel: BroadcastChannel | undefined;
  const broadcast = (): BroadcastChannel | undefined => {
    if (channel || typeof BroadcastChannel === "undefined") return channel;
    channel = new BroadcastChannel(`idemfetch:${dbName}`);
    // Node and Deno keep the process alive while a channel is open; waiters have timers of their own.
    (channel as { unref?: () => void }).unref?.();
    channel.onmessage = (event: MessageEvent) => {
      if (typeof event.data === "string") listeners.notify(event.data);
    };
    return channel;
  };
  const changedKey = (storeKey: string): void => {
    listeners.notify(storeKey); // a channel never delivers to itself: this tab's own waiters
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
        const entry = parseEntry(cursor.value);
        if (entry && entry.expiresAt <= Date.now()) cursor.delete();
        cursor.continue();
      };
      return promisifyRequest(os.transaction);
    }).catch(() => {});
  };

  const store: IdempotencyStore & { readonly name: string } = {
    name: "indexeddb",
    async acquire(storeKey, fingerprint, leaseMs) {
      const result = await run(storeKey, { op: "acquire", fingerprint, leaseMs });
      sweep();
      return result;
    },
    commit: (storeKey, token, record, ttlMs) =>
      run(storeKey, { op: "commit", token, record: { ...record, body: compactBytes(record.body) }, ttlMs }),
    release: (storeKey, token) => run(storeKey, { op: "release", token }),
    renew: (storeKey, token, leaseMs) => run(storeKey, { op: "renew", token, leaseMs }),
    forget: (storeKey, force) => run(storeKey, { op: "forget", force }),
    subscribe(storeKey, onChange) {
      broadcast();
      return listeners.add(storeKey, onChange);
    },
    async close() {
      listeners.clear();
      channel?.close();
      channel = undefined;
    },
  };
  return store;
}
