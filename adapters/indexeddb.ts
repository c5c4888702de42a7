// An IdempotencyStore in the browser's IndexedDB (idb-keyval), shared by every tab of an origin.
import { createStore, promisifyRequest, type UseStore } from "idb-keyval";
import { keyedListeners } from "../src/listeners.ts";
import { type IdempotencyStore, type LiveHead, type LiveRead, type LiveStore, newToken } from "../src/store.ts";
import { compactBytes, decide, type Entry, type Operation, parseEntry, type Replies } from "../src/store-state.ts";
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

/** A lease's live stream, kept in its entry beside what decide() reads; the body bytes are values of their own. */
interface LiveMeta {
  /** What readers see: not the token, which would let them commit. */
  stream: string;
  head: LiveHead;
  /** Body bytes published, in bytes. */
  length: number;
}

/**
 * A stream's chunks ending past byte `after`: each chunk is stored at [storeKey, stream, its end offset].
 * Array keys sort after every string, so they never meet a store key.
 */
const chunks = (storeKey: string, stream: string, after = 0): IDBKeyRange =>
  IDBKeyRange.bound([storeKey, stream, after], [storeKey, stream, Number.POSITIVE_INFINITY], true);

/** The live stream of a stored value (a lease's), if it has a well-formed one. */
const liveOf = (value: unknown): LiveMeta | undefined => {
  const live = (value as { live?: LiveMeta } | null)?.live;
  return typeof live?.stream === "string" && typeof live.length === "number" && typeof live.head === "object"
    ? live
    : undefined;
};

/**
 * The browser store: atomic across tabs (each operation is one readwrite transaction, and IndexedDB
 * runs those one at a time per object store), expiring on read, woken across tabs by BroadcastChannel.
 * Expiry uses this device's clock, shared by all its tabs. It has the live-stream capability: a duplicate
 * in another tab reads a streamed answer while the leader's tab produces it.
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
              const found: unknown = request.result;
              const step = decide(found, operation, Date.now(), newToken);
              const { reply, changed } = step;
              let write: (Entry & { stream?: string }) | null | undefined = step.write;
              const ended = write === undefined ? undefined : liveOf(found);
              // A write that does not keep the lease's stream (only a renew does) ends it: its chunks go in this
              // transaction, and a commit names it beside the record, so a reader holding a prefix finishes there.
              if (ended !== undefined && liveOf(write) !== ended) {
                os.delete(chunks(storeKey, ended.stream));
                if (write?.kind === "record") write = { ...write, stream: ended.stream };
              }
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
  const liveListeners = keyedListeners();
  let channel: BroadcastChannel | undefined;
  const broadcast = (): BroadcastChannel | undefined => {
    if (channel || typeof BroadcastChannel === "undefined") return channel;
    channel = new BroadcastChannel(`idemfetch:${dbName}`);
    // Node and Deno keep the process alive while a channel is open; waiters have timers of their own.
    (channel as { unref?: () => void }).unref?.();
    // A string: the key's lease ended (which ends its stream too); { live }: a part of the key's stream landed.
    channel.onmessage = ({ data }: MessageEvent) => {
      if (typeof data === "string") {
        listeners.notify(data);
        liveListeners.notify(data);
      } else if (typeof data?.live === "string") liveListeners.notify(data.live);
    };
    return channel;
  };
  const changedKey = (storeKey: string): void => {
    // A channel never delivers to itself: this tab's own waiters.
    listeners.notify(storeKey);
    liveListeners.notify(storeKey);
    broadcast()?.postMessage(storeKey);
  };

  let lastSweep = Number.NEGATIVE_INFINITY;
  const sweep = (): void => {
    if (Date.now() - lastSweep < sweepIntervalMs) return;
    lastSweep = Date.now();
    // Corrupt values are left for acquire to replace (and report); only expired entries go.
    // Chunks (array keys, visited after every string key) go unless their key's live lease owns their stream.
    db("readwrite", (os) => {
      const streams = new Map<unknown, string>();
      const request = os.openCursor();
      request.onsuccess = () => {
        const cursor = request.result;
        if (!cursor) return;
        const { key, value } = cursor;
        if (Array.isArray(key)) {
          if (streams.get(key[0]) !== key[1]) cursor.delete();
        } else {
          const entry = parseEntry(value);
          const live = liveOf(value);
          if (entry && entry.expiresAt <= Date.now()) cursor.delete();
          else if (live) streams.set(key, live.stream);
        }
        cursor.continue();
      };
      return promisifyRequest(os.transaction);
    }).catch(() => {});
  };

  // Inside a transaction only IndexedDB requests are awaited: their continuations run while it is still active.
  const publishLive: LiveStore["publishLive"] = (storeKey, token, { head, offset, body }) =>
    db("readwrite", async (os) => {
      const found: unknown = await promisifyRequest(os.get(storeKey));
      const entry = parseEntry(found);
      if (entry?.kind !== "lease" || entry.token !== token || entry.expiresAt <= Date.now()) return false;
      let live = liveOf(found);
      const end = offset + body.length;
      // The part stored last, sent again after a lost reply: the same bytes are stored once.
      if (live !== undefined && end === live.length && (head === undefined || offset === 0)) {
        const stored = await promisifyRequest(os.getAll(chunks(storeKey, live.stream, offset)));
        // indexedDB.cmp compares binary keys byte by byte.
        if (indexedDB.cmp(bytesFrom(stored, end, offset), body) === 0) return true;
      }
      // A head starts the lease's stream at 0; every body part continues it where it ends.
      if (head ? offset !== 0 || live !== undefined : offset !== live?.length) {
        const stored = live ? `${live.length} bytes stored` : "no head stored";
        throw new RangeError(
          `indexedDBStore: live part out of order: ${head ? "a head" : "a body"} at ${offset}, ${stored}`,
        );
      }
      live ??= { stream: newToken(), head: head as LiveHead, length: 0 };
      if (body.length > 0) os.put(compactBytes(body), [storeKey, live.stream, end]);
      os.put({ ...entry, live: { ...live, length: end } }, storeKey);
      await promisifyRequest(os.transaction);
      liveListeners.notify(storeKey);
      broadcast()?.postMessage({ live: storeKey });
      return true;
    });

  const readLive: LiveStore["readLive"] = async (storeKey, stream, offset) => {
    const read = await db("readonly", async (os): Promise<LiveRead | "lapsed"> => {
      const found: unknown = await promisifyRequest(os.get(storeKey));
      const entry = parseEntry(found);
      if (entry === undefined || entry.expiresAt <= Date.now()) return liveOf(found) ? "lapsed" : { state: "absent" };
      if (entry.kind === "record") {
        const marker = (found as { stream?: unknown }).stream;
        return stream !== undefined && marker === stream
          ? { state: "done", record: entry.record, stream }
          : { state: "done", record: entry.record };
      }
      const live = liveOf(found);
      if (live === undefined) return { state: "pending" };
      const from = live.stream === stream ? Math.min(offset, live.length) : 0;
      const stored = from < live.length ? await promisifyRequest(os.getAll(chunks(storeKey, live.stream, from))) : [];
      return { state: "live", stream: live.stream, head: live.head, body: bytesFrom(stored, live.length, from) };
    });
    if (read !== "lapsed") return read;
    // A stream whose lease lapsed: any operation deletes an expired entry with its chunks; a token never owns "".
    await run(storeKey, { op: "release", token: "" });
    return { state: "absent" };
  };

  const store: LiveStore & { readonly name: string } = {
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
    publishLive,
    readLive,
    subscribeLive(storeKey, onChange) {
      broadcast();
      return liveListeners.add(storeKey, onChange);
    },
    async close() {
      listeners.clear();
      liveListeners.clear();
      channel?.close();
      channel = undefined;
    },
  };
  return store;
}

/** Bytes [from, end) of a stream, from its chunks ending past `from`, in key order. */
function bytesFrom(stored: unknown[], end: number, from: number): Uint8Array {
  const out = new Uint8Array(end - from);
  let at = end;
  for (let i = stored.length - 1; i >= 0 && at > from; i--) {
    const chunk = stored[i] as Uint8Array;
    const start = at - chunk.length;
    out.set(start < from ? chunk.subarray(from - start) : chunk, Math.max(start, from) - from);
    at = start;
  }
  if (at > from) throw new Error("indexedDBStore: a live stream's chunks are missing");
  return out;
}
