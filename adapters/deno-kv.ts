// An IdempotencyStore on Deno KV (Deno.openKv(): a local SQLite file or Deno Deploy), woken by kv.watch().
import { keyedListeners } from "../src/listeners.ts";
import { type IdempotencyStore, newToken } from "../src/store.ts";
import { compactBytes, decide, type Entry, type Operation, parseEntry, type Replies } from "../src/store-state.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";

/** A Deno KV key (Deno.KvKey), typed here so Node builds need no Deno types. */
export type DenoKvKey = readonly (string | number | bigint | boolean | symbol | Uint8Array)[];

/** What `get` and `watch` yield (Deno.KvEntryMaybe): `versionstamp` is null when the key is empty. */
export interface DenoKvEntryMaybe {
  readonly value: unknown;
  readonly versionstamp: string | null;
}

/** The part of Deno.AtomicOperation this store uses. */
export interface DenoKvAtomic {
  check(...checks: { key: DenoKvKey; versionstamp: string | null }[]): DenoKvAtomic;
  /** `expireIn` in ms; KV deletes the key some time after it (lazily), so expiry is also enforced on read. */
  set(key: DenoKvKey, value: unknown, options?: { expireIn?: number }): DenoKvAtomic;
  delete(key: DenoKvKey): DenoKvAtomic;
  commit(): Promise<{ ok: boolean }>;
}

/** The part of Deno.Kv this store uses, so a `Deno.Kv` (or a compatible client, or a test double) fits. */
export interface DenoKvLike {
  get(key: DenoKvKey): Promise<DenoKvEntryMaybe>;
  list(selector: { prefix: DenoKvKey }): AsyncIterable<{ readonly key: DenoKvKey; readonly value: unknown }>;
  atomic(): DenoKvAtomic;
  /** Optional: without it the store has no `subscribe` and the engine polls. */
  watch?(keys: readonly DenoKvKey[]): ReadableStream<readonly DenoKvEntryMaybe[]>;
}

export interface DenoKvStoreOptions {
  /** Your `Deno.Kv` (from `await Deno.openKv()`); the store never closes it. */
  kv: DenoKvLike;
  /** Every key the store writes starts with these parts. Default `["idemfetch"]`. */
  prefix?: DenoKvKey;
}

/** KV refuses values over 64 KiB and atomic operations over 800 KiB: bodies above this go in chunks. */
const CHUNK_BYTES = 60_000;
/** Chunks written per atomic operation (12 × 60 000 bytes stays under 800 KiB). */
const CHUNKS_PER_BATCH = 12;
/** Body chunks outlive their record by this much (ms), so a record is never read without its body. */
const CHUNK_MARGIN_MS = 60_000;
/** Lost races (another writer between our read and our write) retried before giving up. */
const MAX_ATTEMPTS = 64;

/** Where a large body lives: `count` chunks of `bytes` in all, under the body id. */
interface Chunked {
  id: string;
  count: number;
  bytes: number;
}

/**
 * The Deno store: each operation reads the key, decides (src/store-state.ts) and writes with a versionstamp
 * check, retrying when another writer got in between, so it is atomic across processes and Deploy isolates.
 * Expiry is checked on read (KV's own expiry is lazy). `subscribe` uses kv.watch(), which sees this process's
 * writes at once; a local SQLite file shared by several processes does not notify across them, and waiters
 * there poll.
 */
export function denoKvStore(options: DenoKvStoreOptions): IdempotencyStore {
  strictOptions(options, { kv: true, prefix: true } satisfies OptionNames<DenoKvStoreOptions>, "denoKvStore()");
  const { kv } = options;
  if (typeof kv?.get !== "function" || typeof kv.atomic !== "function" || typeof kv.list !== "function") {
    throw new TypeError("denoKvStore: `kv` must be a Deno.Kv (from Deno.openKv())");
  }
  const prefix = options.prefix ?? ["idemfetch"];
  if (!Array.isArray(prefix)) throw new TypeError("denoKvStore: `prefix` must be an array of key parts");
  const entryKey = (storeKey: string): DenoKvKey => [...prefix, "entry", storeKey];
  const bodyKey = (storeKey: string, id: string): DenoKvKey => [...prefix, "body", storeKey, id];

  const readBody = async (storeKey: string, chunked: Chunked): Promise<Uint8Array | undefined> => {
    const body = new Uint8Array(chunked.bytes);
    let offset = 0;
    let index = 0;
    // One range read (in batches) instead of one get per chunk; numeric key parts sort in order.
    for await (const { key, value } of kv.list({ prefix: bodyKey(storeKey, chunked.id) })) {
      if (key[key.length - 1] !== index++ || !(value instanceof Uint8Array)) return undefined;
      if (offset + value.length > body.length) return undefined;
      body.set(value, offset);
      offset += value.length;
    }
    return offset === body.length && index === chunked.count ? body : undefined;
  };

  const writeChunks = async (storeKey: string, body: Uint8Array, expireIn: number): Promise<Chunked> => {
    const chunked: Chunked = { id: newToken(), count: Math.ceil(body.length / CHUNK_BYTES), bytes: body.length };
    for (let first = 0; first < chunked.count; first += CHUNKS_PER_BATCH) {
      const batch = kv.atomic();
      for (let i = first; i < Math.min(first + CHUNKS_PER_BATCH, chunked.count); i++) {
        batch.set([...bodyKey(storeKey, chunked.id), i], body.slice(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES), {
          expireIn,
        });
      }
      if (!(await batch.commit()).ok) throw new Error("denoKvStore: writing a body chunk failed");
    }
    return chunked;
  };

  /** Best effort: chunks expire on their own anyway. */
  const dropChunks = async (storeKey: string, chunked: Chunked | undefined): Promise<void> => {
    if (!chunked) return;
    try {
      const batch = kv.atomic();
      for await (const { key } of kv.list({ prefix: bodyKey(storeKey, chunked.id) })) batch.delete(key);
      await batch.commit();
    } catch {
      // Left for KV's expiry.
    }
  };

  const run = async <O extends Operation>(storeKey: string, operation: O): Promise<Replies[O["op"]]> => {
    const key = entryKey(storeKey);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      try {
        const { value, versionstamp } = await kv.get(key);
        const stored = parseEntry(value) as (Entry & { chunked?: Chunked }) | undefined;
        const chunked = stored?.kind === "record" ? stored.chunked : undefined;
        const now = Date.now();
        let found: unknown = versionstamp === null ? undefined : value;
        // Only a replay needs the body: the other operations decide on the entry alone.
        if (chunked && operation.op === "acquire" && stored && stored.expiresAt > now && stored.kind === "record") {
          const body = await readBody(storeKey, chunked);
          // A body that vanished or does not add up makes the record corrupt, which acquire replaces.
          found = body ? { ...stored, record: { ...stored.record, body } } : { corrupt: "body chunks" };
        }
        const { reply, write } = decide(found, operation, now, newToken);
        if (write === undefined) return reply;
        const atomic = kv.atomic().check({ key, versionstamp });
        let written: Chunked | undefined;
        if (write === null) atomic.delete(key);
        else {
          const expireIn = Math.max(1, write.expiresAt - now);
          let value: Entry & { chunked?: Chunked } = write;
          if (write.kind === "record" && write.record.body.length + sizeEstimate(write) > CHUNK_BYTES) {
            written = await writeChunks(storeKey, write.record.body, expireIn + CHUNK_MARGIN_MS);
            value = { ...write, record: { ...write.record, body: new Uint8Array(0) }, chunked: written };
          }
          atomic.set(key, value, { expireIn });
        }
        if (!(await atomic.commit()).ok) {
          await dropChunks(storeKey, written);
          continue; // another writer got in between: read again
        }
        if (chunked) await dropChunks(storeKey, chunked); // the record it replaced or deleted
        // No wake-up here: the watch sees this write too, and waking from both would wake twice.
        return reply;
      } catch (error) {
        // A local SQLite file shared by processes answers "database is locked" while another one writes:
        // a transient state, retried like a lost race (the engine's storeTimeoutMs bounds the whole call).
        if (!isLocked(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(2 + attempt * 2, 50)));
      }
    }
    throw new Error(`denoKvStore: ${operation.op} lost ${MAX_ATTEMPTS} races in a row for one key`);
  };

  const watches = new Map<string, ReadableStreamDefaultReader<readonly DenoKvEntryMaybe[]>>();
  const watch = kv.watch?.bind(kv);
  const listeners = keyedListeners({
    onFirst(storeKey) {
      if (!watch) return;
      const reader = watch([entryKey(storeKey)]).getReader();
      watches.set(storeKey, reader);
      void (async () => {
        // The first value is the state at subscribe time: only the changes after it wake anyone.
        let first = true;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          if (first) {
            first = false;
            continue;
          }
          // A lease taken or renewed wakes no one; a record, a deletion or anything else does.
          const entry = parseEntry(value[0]?.value);
          if (entry?.kind === "lease" && entry.expiresAt > Date.now()) continue;
          listeners.notify(storeKey);
        }
      })().catch(() => {
        // A failed watch only slows wake-ups: waiters also poll.
      });
    },
    onLast(storeKey) {
      watches
        .get(storeKey)
        ?.cancel()
        .catch(() => {});
      watches.delete(storeKey);
    },
  });

  const store: IdempotencyStore & { readonly name: string } = {
    name: "deno-kv",
    acquire: (storeKey, fingerprint, leaseMs) => run(storeKey, { op: "acquire", fingerprint, leaseMs }),
    commit: (storeKey, token, record, ttlMs) =>
      run(storeKey, { op: "commit", token, record: { ...record, body: compactBytes(record.body) }, ttlMs }),
    release: (storeKey, token) => run(storeKey, { op: "release", token }),
    renew: (storeKey, token, leaseMs) => run(storeKey, { op: "renew", token, leaseMs }),
    forget: (storeKey, force) => run(storeKey, { op: "forget", force }),
    async close() {
      listeners.clear();
      for (const reader of watches.values()) reader.cancel().catch(() => {});
      watches.clear();
    },
  };
  if (watch) store.subscribe = (storeKey, onChange) => listeners.add(storeKey, onChange);
  return store;
}

/** An upper bound on the bytes of a record's fields other than its body, as KV serialises them. */
function sizeEstimate(entry: Entry): number {
  if (entry.kind !== "record") return 0;
  const { statusText, fingerprint, headers } = entry.record;
  let chars = statusText.length + fingerprint.length;
  for (const [name, value] of headers) chars += name.length + value.length + 8;
  return 512 + 3 * chars;
}

/** SQLite's SQLITE_BUSY, as Deno KV reports it for a database file another process is writing. */
function isLocked(error: unknown): boolean {
  return /database is locked/i.test(String((error as { message?: unknown } | null)?.message ?? error));
}
