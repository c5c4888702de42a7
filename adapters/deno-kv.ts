// An IdempotencyStore on Deno KV (Deno.openKv(): a local SQLite file or Deno Deploy), woken by kv.watch().
import { keyedListeners } from "../src/listeners.ts";
import { type LiveHead, type LivePart, type LiveRead, type LiveStore, newToken } from "../src/store.ts";
import {
  checkLivePart,
  compactBytes,
  decide,
  type Entry,
  type Operation,
  parseEntry,
  type Replies,
  resendShaped,
  sameBytes,
} from "../src/store-state.ts";
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
  /** Optional: one round trip for a live read's two keys (else two gets). */
  getMany?(keys: readonly DenoKvKey[]): Promise<readonly DenoKvEntryMaybe[]>;
  list(
    selector: { prefix: DenoKvKey; end?: DenoKvKey } | { start: DenoKvKey; end: DenoKvKey },
    options?: { reverse?: boolean; limit?: number },
  ): AsyncIterable<{ readonly key: DenoKvKey; readonly value: unknown }>;
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
/**
 * Live parts outlive the lease by at least this much (ms) in KV's own expiry, so a renew rewrites them only about
 * every 25 s instead of on each heartbeat. Whether they count is decided on read, by the lease.
 */
const LIVE_MARGIN_MS = 30_000;
/** A renew rewrites the parts when they would expire sooner than this (ms) after the renewed lease. */
const LIVE_SAFETY_MS = 5_000;
/** Mutations and bytes per atomic operation when parts are rewritten (KV: 1000 mutations, 800 KiB). */
const MAX_MUTATIONS = 900;
const MAX_BATCH_BYTES = 600_000;

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
export function denoKvStore(options: DenoKvStoreOptions): LiveStore {
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

  /**
   * One operation on the entry. `live`: also reads the key's live stream and, when the operation writes, adds its
   * changes to the same atomic write (checked on the stream's versionstamp too); `took`: the operation took effect.
   */
  const run = async <O extends Operation>(
    storeKey: string,
    operation: O,
    live?: (atomic: DenoKvAtomic, stream: DenoKvEntryMaybe, took: boolean) => void,
  ): Promise<Replies[O["op"]]> => {
    const key = entryKey(storeKey);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      try {
        const [{ value, versionstamp }, stream] = live
          ? await getTwo(key, liveKey(storeKey))
          : [await kv.get(key), undefined];
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
        if (live && stream) {
          atomic.check({ key: liveKey(storeKey), versionstamp: stream.versionstamp });
          live(atomic, stream, reply === true);
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

  // Live streams (docs/protocol.md "The live-stream capability"). Beside the entry, at liveKey, the stream of the
  // lease whose token is its `owner` (it counts only while that lease is the key's live entry), or after that
  // lease's commit the marker naming it, written in the commit's own atomic operation: it names the record only
  // while both keys carry that operation's versionstamp. The body is in parts at partKey(id, byte offset), each at
  // most CHUNK_BYTES, written in the same atomic operation as the stream's new length (a larger part: its first
  // pieces before, unseen until the length covers them).
  const liveKey = (storeKey: string): DenoKvKey => [...prefix, "live", storeKey];
  const partsOf = (storeKey: string, id: string): DenoKvKey => [...prefix, "livepart", storeKey, id];
  // storeKey -> the token that published under it here: its commit, release and renew also end or extend the
  // stream. Bounded: a lease abandoned without commit or release.
  const streaming = new Map<string, string>();

  const getTwo = async (a: DenoKvKey, b: DenoKvKey): Promise<readonly [DenoKvEntryMaybe, DenoKvEntryMaybe]> => {
    const [x, y] = kv.getMany ? await kv.getMany([a, b]) : await Promise.all([kv.get(a), kv.get(b)]);
    return [x as DenoKvEntryMaybe, y as DenoKvEntryMaybe];
  };

  /** The bytes [from, to) of a stream's parts; fewer (a prefix) when parts vanished meanwhile (a commit or release). */
  const readParts = async (storeKey: string, id: string, from: number, to: number): Promise<Uint8Array> => {
    const out = new Uint8Array(Math.max(0, to - from));
    if (out.length === 0) return out;
    const parts = partsOf(storeKey, id);
    let pos = from;
    const take = (start: number, value: unknown): boolean => {
      if (!(value instanceof Uint8Array) || start > pos) return false; // a gap: stop here
      const bytes = value.subarray(Math.max(0, pos - start), Math.max(0, to - start));
      out.set(bytes, pos - from);
      pos += bytes.length;
      return true;
    };
    // The part holding `from` starts at it (a reader's offset is one the store answered) or before it.
    for await (const { key, value } of kv.list(
      { prefix: parts, end: [...parts, from + 1] },
      { reverse: true, limit: 1 },
    ))
      take(key[key.length - 1] as number, value);
    if (pos < to) {
      for await (const { key, value } of kv.list({ start: [...parts, pos], end: [...parts, to] })) {
        const start = key[key.length - 1] as number;
        if (start + ((value as Uint8Array)?.length ?? 0) <= pos) continue; // left over from a rewrite
        if (!take(start, value) || pos >= to) break;
      }
    }
    return out.subarray(0, pos - from);
  };

  /** Deletes every part of a stream; best effort (they expire on their own). */
  const dropParts = async (storeKey: string, id: string): Promise<void> => {
    try {
      let batch = kv.atomic();
      let n = 0;
      for await (const { key } of kv.list({ prefix: partsOf(storeKey, id) })) {
        batch.delete(key);
        if (++n % MAX_MUTATIONS === 0) {
          await batch.commit();
          batch = kv.atomic();
        }
      }
      if (n % MAX_MUTATIONS !== 0) await batch.commit();
    } catch {
      // Left for KV's expiry.
    }
  };

  /**
   * Rewrites a stream's parts as whole CHUNK_BYTES pieces with a later expiry (KV cannot extend one), dropping the
   * small ones they replace, then the stream's `gcAt`. Runs outside the lease's atomic operation: a part rewritten
   * after a commit or release is under an id no reader will ask for, and expires.
   */
  const refreshParts = async (storeKey: string, stream: LiveStream, expireIn: number): Promise<void> => {
    const body = await readParts(storeKey, stream.id, 0, stream.length);
    if (body.length !== stream.length) return;
    const parts = partsOf(storeKey, stream.id);
    const old: number[] = [];
    for await (const { key } of kv.list({ prefix: parts, end: [...parts, stream.length] }))
      old.push(key[key.length - 1] as number);
    let batch = kv.atomic();
    let mutations = 0;
    let bytes = 0;
    for (let at = 0, i = 0; at < body.length; at += CHUNK_BYTES) {
      const piece = body.slice(at, at + CHUNK_BYTES);
      if (bytes + piece.length > MAX_BATCH_BYTES || mutations >= MAX_MUTATIONS) {
        if (!(await batch.commit()).ok) return;
        batch = kv.atomic();
        mutations = bytes = 0;
      }
      batch.set([...parts, at], piece, { expireIn });
      mutations++;
      bytes += piece.length;
      // The small parts this piece covers go in the same operation, so a reader sees one or the other.
      for (; i < old.length && (old[i] as number) < at + CHUNK_BYTES; i++) {
        if (old[i] === at) continue;
        batch.delete([...parts, old[i] as number]);
        mutations++;
      }
    }
    await batch.commit();
  };

  /** The stream at liveKey when it is `owner`'s (any owner when undefined). */
  const streamOf = (entry: DenoKvEntryMaybe, owner?: string): LiveStream | undefined => {
    const stream = parseLive(entry.value);
    return stream?.kind === "stream" && (owner === undefined || stream.owner === owner) ? stream : undefined;
  };

  const publishLive = async (storeKey: string, token: string, { head, offset, body }: LivePart): Promise<boolean> => {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`denoKvStore: bad live offset ${offset}`);
    const bytes = compactBytes(body);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      try {
        const [entry, current] = await getTwo(entryKey(storeKey), liveKey(storeKey));
        const lease = parseEntry(entry.value);
        const now = Date.now();
        if (lease?.kind !== "lease" || lease.token !== token || lease.expiresAt <= now) return false;
        const own = streamOf(current, token);
        const part: LivePart = head === undefined ? { offset, body: bytes } : { head, offset, body: bytes };
        const resent =
          own !== undefined &&
          resendShaped(own.length, part) &&
          sameBytes(await readParts(storeKey, own.id, offset, own.length), bytes);
        if (resent) return true;
        checkLivePart("denoKvStore", own?.length, part);
        const expireIn = lease.expiresAt - now + LIVE_MARGIN_MS;
        const id = own?.id ?? newToken();
        const next: LiveStream = {
          kind: "stream",
          id,
          owner: token,
          head: own?.head ?? copyHead(head as LiveHead),
          length: offset + bytes.length,
          gcAt: Math.min(own?.gcAt ?? Number.POSITIVE_INFINITY, now + expireIn),
        };
        const parts = partsOf(storeKey, id);
        // Pieces past those that fit in the checked operation go first; unseen until the length covers them.
        const pieces: number[] = [];
        for (let at = 0; at < bytes.length; at += CHUNK_BYTES) pieces.push(at);
        const last = Math.max(0, pieces.length - (CHUNKS_PER_BATCH - 2));
        for (let first = 0; first < last; first += CHUNKS_PER_BATCH) {
          const batch = kv.atomic();
          for (const at of pieces.slice(first, Math.min(first + CHUNKS_PER_BATCH, last)))
            batch.set([...parts, offset + at], bytes.slice(at, at + CHUNK_BYTES), { expireIn });
          if (!(await batch.commit()).ok) throw new Error("denoKvStore: writing a live part failed");
        }
        const atomic = kv
          .atomic()
          .check({ key: entryKey(storeKey), versionstamp: entry.versionstamp })
          .check({ key: liveKey(storeKey), versionstamp: current.versionstamp });
        for (const at of pieces.slice(last))
          atomic.set([...parts, offset + at], bytes.slice(at, at + CHUNK_BYTES), { expireIn });
        atomic.set(liveKey(storeKey), next, { expireIn });
        if (!(await atomic.commit()).ok) continue; // the lease or the stream changed meanwhile: read again
        if (!streaming.has(storeKey) && streaming.size >= 10_000)
          streaming.delete(streaming.keys().next().value as string);
        streaming.set(storeKey, token);
        // An earlier lease's stream, replaced: its parts go (they would expire anyway).
        const replaced = streamOf(current);
        if (head !== undefined && replaced && replaced.id !== id) await dropParts(storeKey, replaced.id);
        return true;
      } catch (error) {
        if (!isLocked(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(2 + attempt * 2, 50)));
      }
    }
    throw new Error(`denoKvStore: publishLive lost ${MAX_ATTEMPTS} races in a row for one key`);
  };

  const readLive = async (storeKey: string, asked: string | undefined, offset: number): Promise<LiveRead> => {
    const [entry, current] = await getTwo(entryKey(storeKey), liveKey(storeKey));
    const now = Date.now();
    const found = parseEntry(entry.value) as (Entry & { chunked?: Chunked }) | undefined;
    if (found === undefined || found.expiresAt <= now) return { state: "absent" };
    if (found.kind === "record") {
      let { record } = found;
      if (found.chunked) {
        const body = await readBody(storeKey, found.chunked);
        // A body that does not add up: the record is corrupt, which the next acquire replaces.
        if (!body) return { state: "absent" };
        record = { ...record, body };
      }
      const ended = parseLive(current.value);
      // The marker names this record only when the commit that wrote both wrote this very entry.
      return ended?.kind === "ended" && ended.id === asked && current.versionstamp === entry.versionstamp
        ? { state: "done", record, stream: ended.id }
        : { state: "done", record };
    }
    const stream = streamOf(current, found.token);
    if (!stream) return { state: "pending" };
    const from = stream.id === asked ? Math.min(Math.max(0, offset), stream.length) : 0;
    return {
      state: "live",
      stream: stream.id,
      head: copyHead(stream.head),
      body: await readParts(storeKey, stream.id, from, stream.length),
    };
  };

  /** After a commit or release of a lease that streamed here: its parts go. */
  const ended = async (storeKey: string, stream: LiveStream | undefined): Promise<void> => {
    if (stream) await dropParts(storeKey, stream.id);
  };

  const mine = (storeKey: string, token: string): boolean => {
    if (streaming.get(storeKey) !== token) return false;
    streaming.delete(storeKey);
    return true;
  };

  const watches = new Set<ReadableStreamDefaultReader<readonly DenoKvEntryMaybe[]>>();
  const watch = kv.watch?.bind(kv);
  /** Listeners per store key woken through one kv.watch() of `keysOf(storeKey)`, when `wakes` says so. */
  const watched = (
    keysOf: (storeKey: string) => DenoKvKey[],
    wakes: (values: readonly DenoKvEntryMaybe[]) => boolean,
  ) => {
    const readers = new Map<string, ReadableStreamDefaultReader<readonly DenoKvEntryMaybe[]>>();
    const listeners = keyedListeners({
      onFirst(storeKey) {
        if (!watch) return;
        const reader = watch(keysOf(storeKey)).getReader();
        readers.set(storeKey, reader);
        watches.add(reader);
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
            if (wakes(value)) listeners.notify(storeKey);
          }
        })().catch(() => {
          // A failed watch only slows wake-ups: waiters also poll.
        });
      },
      onLast(storeKey) {
        const reader = readers.get(storeKey);
        reader?.cancel().catch(() => {});
        if (reader) watches.delete(reader);
        readers.delete(storeKey);
      },
    });
    return listeners;
  };
  // A lease taken or renewed wakes no one; a record, a deletion or anything else does.
  const listeners = watched(
    (storeKey) => [entryKey(storeKey)],
    ([entry]) => {
      const found = parseEntry(entry?.value);
      return !(found?.kind === "lease" && found.expiresAt > Date.now());
    },
  );
  // Every part (the stream's length changes), and the commit or release that ends it.
  const liveListeners = watched(
    (storeKey) => [liveKey(storeKey), entryKey(storeKey)],
    () => true,
  );

  const store: LiveStore & { readonly name: string } = {
    name: "deno-kv",
    acquire: (storeKey, fingerprint, leaseMs) => run(storeKey, { op: "acquire", fingerprint, leaseMs }),
    async commit(storeKey, token, record, ttlMs) {
      const operation = { op: "commit", token, record: { ...record, body: compactBytes(record.body) }, ttlMs } as const;
      if (!mine(storeKey, token)) return run(storeKey, operation);
      let stream: LiveStream | undefined;
      const ok = await run(storeKey, operation, (atomic, current, took) => {
        stream = took ? streamOf(current, token) : undefined;
        // The marker, in the record's own operation: the same versionstamp names this record.
        if (stream) atomic.set(liveKey(storeKey), { kind: "ended", id: stream.id }, { expireIn: ttlMs });
      });
      await ended(storeKey, stream);
      return ok;
    },
    async release(storeKey, token) {
      if (!mine(storeKey, token)) return run(storeKey, { op: "release", token });
      let stream: LiveStream | undefined;
      const ok = await run(storeKey, { op: "release", token }, (atomic, current, took) => {
        stream = took ? streamOf(current, token) : undefined;
        if (stream) atomic.delete(liveKey(storeKey));
      });
      await ended(storeKey, stream);
      return ok;
    },
    async renew(storeKey, token, leaseMs) {
      if (streaming.get(storeKey) !== token) return run(storeKey, { op: "renew", token, leaseMs });
      // The stream's parts must outlive the renewed lease: rewritten when they would not (about every 25 s).
      let stale: LiveStream | undefined;
      const ok = await run(storeKey, { op: "renew", token, leaseMs }, (atomic, current, took) => {
        const stream = took ? streamOf(current, token) : undefined;
        const until = Date.now() + leaseMs;
        if (!stream || stream.gcAt >= until + LIVE_SAFETY_MS) return;
        stale = { ...stream, gcAt: until + LIVE_MARGIN_MS };
        atomic.set(liveKey(storeKey), stale, { expireIn: leaseMs + LIVE_MARGIN_MS });
      });
      if (!ok) streaming.delete(storeKey);
      else if (stale) await refreshParts(storeKey, stale, leaseMs + LIVE_MARGIN_MS);
      return ok;
    },
    forget: (storeKey, force) => run(storeKey, { op: "forget", force }),
    publishLive,
    readLive,
    async close() {
      listeners.clear();
      liveListeners.clear();
      for (const reader of watches) reader.cancel().catch(() => {});
      watches.clear();
    },
  };
  if (watch) {
    store.subscribe = (storeKey, onChange) => listeners.add(storeKey, onChange);
    store.subscribeLive = (storeKey, onChange) => liveListeners.add(storeKey, onChange);
  }
  return store;
}

/** A key's live stream, or the marker its commit left. */
type Live = LiveStream | { kind: "ended"; id: string };

interface LiveStream {
  kind: "stream";
  /** What readers see: not the token, which would let them commit. */
  id: string;
  /** The token of the lease producing it: it counts only while that lease is the key's live entry. */
  owner: string;
  head: LiveHead;
  /** Body bytes stored, in parts. */
  length: number;
  /** Unix ms: the earliest KV expiry among its parts (a renew rewrites them before it). */
  gcAt: number;
}

/** A stored live value is untrusted too: checks its shape. */
function parseLive(value: unknown): Live | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (v.kind === "ended") return typeof v.id === "string" ? (v as Live) : undefined;
  const head = v.head as Record<string, unknown> | undefined;
  const ok =
    v.kind === "stream" &&
    typeof v.id === "string" &&
    typeof v.owner === "string" &&
    Number.isSafeInteger(v.length) &&
    typeof v.gcAt === "number" &&
    typeof head?.status === "number" &&
    typeof head.statusText === "string" &&
    Array.isArray(head.headers);
  return ok ? (v as Live) : undefined;
}

function copyHead(head: LiveHead): LiveHead {
  return { status: head.status, statusText: head.statusText, headers: head.headers.map(([k, v]) => [k, v]) };
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
