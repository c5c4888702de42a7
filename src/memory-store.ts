// memoryStore: the reference store, atomic within one process, on the shared state machine (store-state.ts).
import { keyedListeners } from "./listeners.ts";
import type { IdempotencyStore, LiveHead, LiveRead, StoredRecord } from "./store.ts";
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
  const liveListeners = keyedListeners();
  // Live streams beside the entries: a stream counts only while its owner's lease is the key's live entry.
  const live = new Map<string, Live>();
  let sweepAt = 64;

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
  /** The stream of `storeKey` owned by its live lease, if any; a stream left by a lapsed lease is dropped. */
  const ownStream = (storeKey: string): Stream | undefined => {
    const stream = live.get(storeKey);
    if (stream === undefined || stream.kind !== "stream") return undefined;
    const entry = current(storeKey);
    if (entry?.kind === "lease" && entry.token === stream.owner) return stream;
    live.delete(storeKey);
    return undefined;
  };
  /** Streams whose lease lapsed without a commit or release (a crashed or stuck leader) go once the map doubles. */
  const sweep = () => {
    if (live.size < sweepAt) return;
    for (const [storeKey, stream] of live) {
      if (stream.kind === "stream") ownStream(storeKey);
      else if (stream.expiresAt <= now()) live.delete(storeKey);
    }
    sweepAt = Math.max(64, live.size * 2);
  };
  /** After a commit or release took effect: the key's stream ends (a commit leaves which stream it was). */
  const endStream = (storeKey: string, token: string, ttlMs?: number) => {
    const stream = live.get(storeKey);
    if (stream === undefined) return;
    if (stream.kind === "stream" && stream.owner === token && ttlMs !== undefined) {
      live.set(storeKey, { kind: "ended", stream: stream.id, expiresAt: now() + ttlMs });
    } else live.delete(storeKey);
    liveListeners.notify(storeKey);
  };

  return {
    async acquire(storeKey, fingerprint, leaseMs) {
      const result = run(storeKey, { op: "acquire", fingerprint, leaseMs });
      return result.state === "done" ? { state: "done", record: copyRecord(result.record) } : result;
    },
    async commit(storeKey, token, record, ttlMs) {
      const stored = run(storeKey, { op: "commit", token, record: copyRecord(record), ttlMs });
      if (stored) endStream(storeKey, token, ttlMs);
      return stored;
    },
    async release(storeKey, token) {
      const released = run(storeKey, { op: "release", token });
      if (released) endStream(storeKey, token);
      return released;
    },
    async renew(storeKey, token, leaseMs) {
      return run(storeKey, { op: "renew", token, leaseMs });
    },
    async forget(storeKey, force) {
      const result = run(storeKey, { op: "forget", force });
      if (result === "forgotten" && live.delete(storeKey)) liveListeners.notify(storeKey);
      return result;
    },
    subscribe: (storeKey, onChange) => listeners.add(storeKey, onChange),
    async publishLive(storeKey, token, part) {
      const entry = current(storeKey);
      if (entry?.kind !== "lease" || entry.token !== token) return false;
      const stream = ownStream(storeKey);
      const { head, offset, body } = part;
      if (stream !== undefined && resent(stream, part)) return true; // the part last stored, sent again
      if (head !== undefined) {
        if (offset !== 0) throw new RangeError(`memoryStore: a head part must have offset 0, got ${offset}`);
        if (stream !== undefined) throw new RangeError("memoryStore: this lease's stream already has its head");
        const bytes = new Uint8Array(Math.max(1024, body.length));
        bytes.set(body);
        live.set(storeKey, {
          kind: "stream",
          id: newToken(),
          owner: token,
          head: copyHead(head),
          bytes,
          length: body.length,
        });
        sweep();
      } else {
        if (stream === undefined) throw new RangeError("memoryStore: a body part before this lease's head");
        if (offset !== stream.length) {
          throw new RangeError(`memoryStore: a gap in the live stream: offset ${offset}, stored ${stream.length}`);
        }
        if (stream.length + body.length > stream.bytes.length) {
          const grown = new Uint8Array(Math.max(stream.bytes.length * 2, stream.length + body.length));
          grown.set(stream.bytes.subarray(0, stream.length));
          stream.bytes = grown;
        }
        stream.bytes.set(body, stream.length);
        stream.length += body.length;
      }
      liveListeners.notify(storeKey);
      return true;
    },
    async readLive(storeKey, streamId, offset): Promise<LiveRead> {
      const entry = current(storeKey);
      if (entry === undefined) return { state: "absent" };
      if (entry.kind === "record") {
        const ended = live.get(storeKey);
        const record = copyRecord(entry.record);
        return ended?.kind === "ended" && ended.expiresAt > now()
          ? { state: "done", record, stream: ended.stream }
          : { state: "done", record };
      }
      const stream = ownStream(storeKey);
      if (stream === undefined) return { state: "pending" };
      const from = stream.id === streamId ? Math.min(offset, stream.length) : 0;
      return {
        state: "live",
        stream: stream.id,
        head: copyHead(stream.head),
        body: stream.bytes.slice(from, stream.length),
      };
    },
    subscribeLive: (storeKey, onChange) => liveListeners.add(storeKey, onChange),
  };
}

/** A key's live stream, or which stream a commit ended (kept as long as the record). */
type Live =
  | Stream
  | {
      kind: "ended";
      stream: string;
      /** Unix ms, the record's expiry. */
      expiresAt: number;
    };

interface Stream {
  kind: "stream";
  /** What readers see: not the token, which would let them commit. */
  id: string;
  owner: string;
  head: LiveHead;
  /** The body so far in `bytes[0, length)`; capacity doubles as it grows. */
  bytes: Uint8Array;
  length: number;
}

/** Whether `part` ends where the stream does and holds the same bytes: a resend after a lost reply. */
function resent(
  stream: Stream,
  { head, offset, body }: { head?: LiveHead; offset: number; body: Uint8Array },
): boolean {
  if (stream.length !== offset + body.length || (head !== undefined && offset !== 0)) return false;
  for (let i = 0; i < body.length; i++) if (stream.bytes[offset + i] !== body[i]) return false;
  return true;
}

function copyHead(head: LiveHead): LiveHead {
  return { status: head.status, statusText: head.statusText, headers: head.headers.map(([k, v]) => [k, v]) };
}

/** Callers must never share mutable bytes with the store. */
function copyRecord(record: StoredRecord): StoredRecord {
  // new Uint8Array(), not .slice(): Buffer#slice is a view on the same memory.
  return { ...record, headers: record.headers.map(([k, v]) => [k, v]), body: new Uint8Array(record.body) };
}
