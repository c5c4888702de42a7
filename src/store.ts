// The store contract every adapter keeps (docs/protocol.md "The store contract"), and the owner tokens of leases.

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
  /**
   * Optional live stream (docs/protocol.md "The live-stream capability"), with `readLive`: publishes the next
   * `part` of the response `token`'s lease is producing. Chunk data lapses with the lease (renew extends it,
   * commit replaces it with the record, release drops it). Resolves false, storing nothing, when `token` does
   * not own a live lease; rejects on a gap (`part.offset` is not the bytes stored so far) or a body part before
   * the head. A resend of the part last stored resolves true and stores nothing twice.
   */
  publishLive?(storeKey: string, token: string, part: LivePart): Promise<boolean>;
  /**
   * Optional live stream, with `publishLive`: what a duplicate reads. The current lease's stream: its head and
   * body bytes from `offset` when `stream` names it, else from byte 0. Or how the key stands otherwise.
   */
  readLive?(storeKey: string, stream: string | undefined, offset: number): Promise<LiveRead>;
  /**
   * Optional, with `readLive`: calls `onChange` after each `publishLive` to `storeKey` and after the commit or
   * release that ends its stream; returns the unsubscribe function. Without it, readers poll.
   */
  subscribeLive?(storeKey: string, onChange: () => void): () => void;
}

/** A response's status line and headers, published before its body (live streams). */
export interface LiveHead {
  /** HTTP status, 200-599. */
  status: number;
  statusText: string;
  /** Header pairs in response order; names lower-case. */
  headers: [string, string][];
}

/** One `publishLive` call: the head (the first part only) and the next body bytes. */
export interface LivePart {
  /** On the first part only: starts this lease's stream, replacing whatever an earlier lease left. */
  head?: LiveHead;
  /** Body bytes published before this part, in bytes (0 on the first part). */
  offset: number;
  /** The next body bytes; may be empty. */
  body: Uint8Array;
}

/** What `readLive` found. */
export type LiveRead =
  /** Nothing holds the key: no lease, no record (released, lapsed or forgotten). */
  | { state: "absent" }
  /** A live lease holds the key and has published no head yet (it may never: a body already whole is not streamed). */
  | { state: "pending" }
  /**
   * The live lease's stream: `stream` names its execution (opaque; never the lease token). `body` holds its
   * bytes from the `offset` asked for when `stream` is the one asked for, else from byte 0.
   */
  | { state: "live"; stream: string; head: LiveHead; body: Uint8Array }
  /** A record holds the key. `stream`: the `stream` asked for, when that execution committed this record. */
  | { state: "done"; record: StoredRecord; stream?: string };

/** The store with the live-stream capability: what the engine checks for, by the presence of the methods. */
export type LiveStore = IdempotencyStore & Required<Pick<IdempotencyStore, "publishLive" | "readLive">>;

/** Whether `store` has the live-stream capability (`publishLive` and `readLive`). */
export function hasLive(store: IdempotencyStore): store is LiveStore {
  return typeof store.publishLive === "function" && typeof store.readLive === "function";
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
