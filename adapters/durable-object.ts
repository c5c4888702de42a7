// An IdempotencyStore on Cloudflare Durable Objects: IdempotencyObject holds one store key, durableObjectStore routes to it.
import { keyedListeners } from "../src/listeners.ts";
import { type IdempotencyStore, newToken, type StoredRecord } from "../src/store.ts";
import { decide, type Entry, type Operation, parseEntry, type Replies } from "../src/store-state.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";

/** The part of DurableObjectStorage the object uses (both the SQLite and the key-value backend have it). */
export interface DurableObjectStorageLike {
  get(keys: string[]): Promise<Map<string, unknown>>;
  /** At most 128 keys per call. */
  put(entries: Record<string, unknown>): Promise<void>;
  /** At most 128 keys per call. */
  delete(keys: string[]): Promise<number>;
  /** `scheduledTime` in Unix ms. */
  setAlarm(scheduledTime: number): Promise<void>;
  deleteAlarm(): Promise<void>;
}

/** The part of DurableObjectState the object uses. */
export interface DurableObjectStateLike {
  storage: DurableObjectStorageLike;
  blockConcurrencyWhile<T>(callback: () => Promise<T>): Promise<T>;
}

/** A Durable Object stub: only `fetch` is used, so the class needs no RPC and no `cloudflare:workers` import. */
export interface DurableObjectStubLike {
  fetch(input: string, init?: RequestInit): Promise<Response>;
}

/** The part of DurableObjectNamespace the store uses (a Worker's binding, or Miniflare's from Node). */
export interface DurableObjectNamespaceLike {
  idFromName(name: string): unknown;
  // biome-ignore lint/suspicious/noExplicitAny: the id type is the runtime's own (DurableObjectId)
  get(id: any): DurableObjectStubLike;
}

export interface DurableObjectStoreOptions {
  /** How long one wake-up request waits at the object before it is renewed, ms. Default 20 000, at most 60 000. */
  waitMs?: number;
}

/** Storage values are limited to 128 KiB: a record that would pass this keeps its body in chunks of this size. */
const CHUNK_BYTES = 128 * 1024 - 1024;
/** DurableObjectStorage takes at most 128 keys per put() and delete(). */
const KEYS_PER_CALL = 128;
/** Wake-up requests one object holds at once; more are answered at once with `busy` and those waiters poll. */
const MAX_WAITERS = 1_000;
const MAX_WAIT_MS = 60_000;
/** After a failed wake-up request, the next one waits this long (the waiter polls meanwhile). */
const RETRY_MS = 1_000;
const ENTRY = "entry";
const chunkKey = (i: number): string => `body:${i}`;

/** The entry as stored: a record's body, when over CHUNK_BYTES, lives in `chunks` keys beside it. */
type StoredEntry = Entry & { chunks?: number };

/** What one wake-up request is answered with. */
interface WaitReply {
  /** The object's change counter (per instance); the next request sends it back. */
  version: string;
  /** A commit, release or forget took effect since `seen` (or, without one, while the request waited). */
  changed: boolean;
  /** The object holds MAX_WAITERS requests: stop asking, poll. */
  busy?: boolean;
}

/**
 * The Durable Object class users export from their Worker and bind in wrangler.toml. One object per store
 * key: every request to it runs one at a time against its in-memory copy of the key, so the state machine's
 * read-decide-write is atomic, and the reply leaves only once the write is durable (the output gate). Expiry:
 * an alarm at the entry's expiry deletes it, and reads treat an expired entry as absent before the alarm runs.
 */
export class IdempotencyObject {
  readonly #storage: DurableObjectStorageLike;
  /** The key's value as stored, body reassembled; undefined when empty. Loaded once, before any request. */
  #found: unknown;
  /** Body chunks the stored entry points at, so a rewrite or delete removes them. */
  #chunks = 0;
  readonly #epoch = newToken().slice(0, 8);
  #changes = 0;
  readonly #waiters = new Set<(reply: WaitReply) => void>();

  constructor(state: DurableObjectStateLike, _env?: unknown) {
    this.#storage = state.storage;
    void state.blockConcurrencyWhile(() => this.#load());
  }

  async fetch(request: Request): Promise<Response> {
    const op = new URL(request.url).pathname.slice(1);
    if (op !== "wait" && !OPERATIONS.has(op))
      return new Response(`idemfetch: unknown operation ${op}`, { status: 400 });
    const { meta, bytes } = unpack(new Uint8Array(await request.arrayBuffer()));
    if (op === "wait") return pack(await this.#wait(meta as { seen?: string; waitMs?: number }));
    const operation = toOperation(op, meta, bytes);
    const reply = await this.#run(operation);
    if (typeof reply === "object" && reply.state === "done") {
      const { body, ...rest } = reply.record;
      return pack({ ...reply, record: rest }, body);
    }
    return pack(reply);
  }

  /** The entry's expiry came: delete it unless it was renewed or replaced since the alarm was set. */
  async alarm(): Promise<void> {
    const entry = parseEntry(this.#found);
    if (entry && entry.expiresAt > Date.now()) return this.#storage.setAlarm(entry.expiresAt);
    if (this.#found === undefined) return;
    // Expiry wakes no one (the store contract: only a commit, release or forget does); waiters re-check the lease.
    await this.#write(null);
  }

  async #load(): Promise<void> {
    const value: unknown = (await this.#storage.get([ENTRY])).get(ENTRY);
    this.#found = value;
    // Anything else (another version's value, null, a number) is left for decide() to treat as corrupt.
    const stored = parseEntry(value) as StoredEntry | undefined;
    const chunks = stored?.kind === "record" && Number.isInteger(stored.chunks) ? (stored.chunks as number) : 0;
    this.#chunks = chunks;
    if (!stored || chunks === 0) return;
    const parts: Uint8Array[] = [];
    for (let first = 0; first < chunks; first += KEYS_PER_CALL) {
      const keys = range(first, Math.min(first + KEYS_PER_CALL, chunks)).map(chunkKey);
      const got = await this.#storage.get(keys);
      for (const key of keys) {
        const part = got.get(key);
        // A missing chunk makes the record corrupt: absent to every operation, replaced by acquire.
        if (!(part instanceof Uint8Array)) return void (this.#found = { corrupt: "body chunks" });
        parts.push(part);
      }
    }
    const body = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const part of parts) {
      body.set(part, offset);
      offset += part.length;
    }
    const { chunks: _, ...entry } = stored;
    this.#found = { ...entry, record: { ...(entry as Extract<Entry, { kind: "record" }>).record, body } };
  }

  /** Read, decide and write with no await before the memory update: nothing else runs in between. */
  async #run<O extends Operation>(operation: O): Promise<Replies[O["op"]]> {
    const { reply, write, changed } = decide(this.#found, operation, Date.now(), newToken);
    if (write !== undefined) await this.#write(write);
    if (changed) this.#wake();
    return reply;
  }

  /** Puts `entry` (null deletes) in memory at once, and in storage as one coalesced write with its alarm. */
  #write(entry: Entry | null): Promise<unknown> {
    const writes: Promise<unknown>[] = [];
    const oldChunks = this.#chunks;
    this.#found = entry ?? undefined;
    let stored: StoredEntry | undefined = entry ?? undefined;
    const puts: Record<string, unknown> = {};
    let chunks = 0;
    if (entry?.kind === "record" && entry.record.body.length + fieldBytes(entry.record) > CHUNK_BYTES) {
      const body = entry.record.body;
      chunks = Math.ceil(body.length / CHUNK_BYTES);
      for (let i = 0; i < chunks; i++) puts[chunkKey(i)] = body.slice(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES);
      stored = { ...entry, record: { ...entry.record, body: new Uint8Array(0) }, chunks };
    }
    this.#chunks = chunks;
    // Calls with no await between them are committed together (write coalescing): never half a record.
    const stale = range(chunks, oldChunks).map(chunkKey);
    if (!stored) stale.push(ENTRY);
    else puts[ENTRY] = stored;
    for (let i = 0; i < stale.length; i += KEYS_PER_CALL) {
      writes.push(this.#storage.delete(stale.slice(i, i + KEYS_PER_CALL)));
    }
    const keys = Object.keys(puts);
    for (let i = 0; i < keys.length; i += KEYS_PER_CALL) {
      writes.push(this.#storage.put(Object.fromEntries(keys.slice(i, i + KEYS_PER_CALL).map((k) => [k, puts[k]]))));
    }
    writes.push(stored ? this.#storage.setAlarm(stored.expiresAt) : this.#storage.deleteAlarm());
    return Promise.all(writes);
  }

  #version(): string {
    return `${this.#epoch}:${this.#changes}`;
  }

  #wake(): void {
    this.#changes++;
    const reply: WaitReply = { version: this.#version(), changed: true };
    for (const answer of this.#waiters) answer(reply);
    this.#waiters.clear();
  }

  /** Answers at the next change, after `waitMs`, or at once when the caller missed a change since `seen`. */
  #wait({ seen, waitMs }: { seen?: string; waitMs?: number }): Promise<WaitReply> | WaitReply {
    const version = this.#version();
    if (seen !== undefined && seen !== version) return { version, changed: true };
    if (this.#waiters.size >= MAX_WAITERS) return { version, changed: false, busy: true };
    const ms = Math.min(Math.max(Number(waitMs) || 0, 0), MAX_WAIT_MS);
    return new Promise((resolve) => {
      const answer = (reply: WaitReply): void => {
        clearTimeout(timer);
        this.#waiters.delete(answer);
        resolve(reply);
      };
      const timer = setTimeout(() => answer({ version: this.#version(), changed: false }), ms);
      this.#waiters.add(answer);
    });
  }
}

const OPERATIONS = new Set<string>(["acquire", "commit", "release", "renew", "forget"]);

/** Turns a request to the object back into the state machine's operation (`op` is one of OPERATIONS). */
function toOperation(op: string, meta: unknown, bytes: Uint8Array): Operation {
  const m = meta as Record<string, unknown>;
  // Only commit carries bytes: the record's body, sent after the JSON rather than inside it.
  return (op === "commit" ? { ...m, op, record: { ...(m.record as object), body: bytes } } : { ...m, op }) as Operation;
}

/**
 * The store: each operation is one request to the key's object (`namespace.idFromName(storeKey)`).
 * `subscribe` holds one request per key at the object, which answers it on the key's next commit, release
 * or forget (and renews it every `waitMs`), so waiters wake without polling the key.
 */
export function durableObjectStore(
  namespace: DurableObjectNamespaceLike,
  options: DurableObjectStoreOptions = {},
): IdempotencyStore {
  if (typeof namespace?.idFromName !== "function" || typeof namespace.get !== "function") {
    throw new TypeError("durableObjectStore: pass the Durable Object namespace binding of IdempotencyObject");
  }
  strictOptions(options, { waitMs: true } satisfies OptionNames<DurableObjectStoreOptions>, "durableObjectStore()");
  const waitMs = options.waitMs ?? 20_000;
  if (!Number.isFinite(waitMs) || waitMs <= 0 || waitMs > MAX_WAIT_MS) {
    throw new TypeError(`durableObjectStore: waitMs must be in (0, ${MAX_WAIT_MS}], got ${String(waitMs)}`);
  }
  const stub = (storeKey: string): DurableObjectStubLike => namespace.get(namespace.idFromName(storeKey));

  const call = async (storeKey: string, op: string, meta: unknown, body?: Uint8Array, signal?: AbortSignal) => {
    // The host is never resolved: a stub's fetch goes to the object whatever the URL says.
    const response = await stub(storeKey).fetch(`https://idemfetch.object/${op}`, {
      method: "POST",
      body: packBytes(meta, body),
      signal: signal ?? null,
    });
    if (!response.ok)
      throw new Error(`durableObjectStore: ${op} answered ${response.status}: ${await response.text()}`);
    return unpack(new Uint8Array(await response.arrayBuffer()));
  };
  const run = async <O extends Operation>(storeKey: string, { op, ...meta }: O): Promise<Replies[O["op"]]> =>
    (await call(storeKey, op, meta)).meta as Replies[O["op"]];

  const waits = new Map<string, AbortController>();
  const listeners = keyedListeners({
    onFirst(storeKey) {
      const controller = new AbortController();
      waits.set(storeKey, controller);
      void (async () => {
        let seen: string | undefined;
        while (!controller.signal.aborted) {
          try {
            const reply = (await call(storeKey, "wait", { seen, waitMs }, undefined, controller.signal))
              .meta as WaitReply;
            if (controller.signal.aborted) return;
            if (reply.changed) listeners.notify(storeKey);
            if (reply.busy) return; // the object holds enough requests: this key's waiters poll
            seen = reply.version;
          } catch {
            // A failed wake-up request only slows wake-ups: waiters also poll.
            await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
          }
        }
      })();
    },
    onLast(storeKey) {
      waits.get(storeKey)?.abort();
      waits.delete(storeKey);
    },
  });

  const store: IdempotencyStore & { readonly name: string } = {
    name: "durable-object",
    async acquire(storeKey, fingerprint, leaseMs) {
      const { meta, bytes } = await call(storeKey, "acquire", { fingerprint, leaseMs });
      const result = meta as Replies["acquire"];
      if (result.state !== "done") return result;
      return { state: "done", record: { ...(result.record as Omit<StoredRecord, "body">), body: bytes } };
    },
    async commit(storeKey, token, record, ttlMs) {
      const { body, ...rest } = record;
      // packBytes copies the view's bytes alone, so a pooled or shared buffer never travels whole.
      return (await call(storeKey, "commit", { token, record: rest, ttlMs }, body)).meta as boolean;
    },
    release: (storeKey, token) => run(storeKey, { op: "release", token }),
    renew: (storeKey, token, leaseMs) => run(storeKey, { op: "renew", token, leaseMs }),
    forget: (storeKey, force) => run(storeKey, { op: "forget", force }),
    subscribe: (storeKey, onChange) => listeners.add(storeKey, onChange),
    async close() {
      listeners.clear();
      for (const controller of waits.values()) controller.abort();
      waits.clear();
    },
  };
  return store;
}

/** One message between store and object: a 4-byte length, that many bytes of JSON, then raw body bytes. */
function packBytes(meta: unknown, body: Uint8Array = new Uint8Array(0)): Uint8Array<ArrayBuffer> {
  const json = new TextEncoder().encode(JSON.stringify(meta));
  const out = new Uint8Array(4 + json.length + body.length);
  new DataView(out.buffer).setUint32(0, json.length);
  out.set(json, 4);
  out.set(body, 4 + json.length);
  return out;
}

function pack(meta: unknown, body?: Uint8Array): Response {
  return new Response(packBytes(meta, body));
}

function unpack(message: Uint8Array): { meta: unknown; bytes: Uint8Array } {
  const length = new DataView(message.buffer, message.byteOffset, message.byteLength).getUint32(0);
  const meta: unknown = JSON.parse(new TextDecoder().decode(message.subarray(4, 4 + length)));
  return { meta, bytes: message.slice(4 + length) };
}

/** An upper bound on a record's stored size without its body: V8 serialises a string in at most 2 bytes per unit. */
function fieldBytes(record: StoredRecord): number {
  let units = record.statusText.length + record.fingerprint.length;
  for (const [name, value] of record.headers) units += name.length + value.length + 8;
  return 256 + 2 * units;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}
