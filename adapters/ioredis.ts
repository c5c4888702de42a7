// An IdempotencyStore on Redis through the user's ioredis client (standalone or Cluster), woken by pub/sub.
import { keyedListeners } from "../src/listeners.js";
import type { IdempotencyStore } from "../src/store.js";
import { evalWithFallback, scriptStore, timeoutOption } from "./redis-scripts.js";

/** What this store needs from the subscriber connection made by `duplicate()`. */
export interface IoredisSubscriber {
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  on(event: "message", listener: (channel: string, message: string) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  /** "ready" once connected; a double without it is taken as ready. */
  readonly status?: string;
  once?(event: "ready", listener: () => void): unknown;
  disconnect(): void;
}

/**
 * The commands this store uses, so any compatible client fits: an ioredis `Redis` or `Cluster`
 * (RESP2 or RESP3), or a test double. Without `duplicate` the store has no `subscribe` and the engine polls.
 */
export interface IoredisClient {
  evalsha(sha1: string, numkeys: number, ...args: string[]): Promise<unknown>;
  eval(script: string, numkeys: number, ...args: string[]): Promise<unknown>;
  duplicate?(): IoredisSubscriber;
  /** ioredis prefixes KEYS of EVAL/EVALSHA with `keyPrefix` itself, but not pub/sub channels. */
  readonly options?: { readonly keyPrefix?: string | undefined };
}

export interface IoredisStoreOptions {
  /**
   * Your client; the store never closes it. For store calls to fail fast while Redis is down, create it
   * with `enableOfflineQueue: false`, `maxRetriesPerRequest: 1` and `commandTimeout` (ms) below the
   * engine's `storeTimeoutMs`: with ioredis' defaults a command waits in a queue for about a minute, and
   * may still run after this store gave up on it (a lease taken that way just expires). Without the
   * offline queue, commands sent before the client is ready fail: wait for its "ready" event first.
   */
  redis: IoredisClient;
  /** Bound on each store call in ms, whatever the client does (0: none). Default 2000. */
  timeoutMs?: number;
}

/** An IdempotencyStore on Redis: one key per store key, one script call per operation. */
export function ioredisStore(options: IoredisStoreOptions): IdempotencyStore {
  const { redis } = options;
  if (typeof redis?.evalsha !== "function" || typeof redis.eval !== "function") {
    throw new TypeError("ioredisStore: `redis` must be an ioredis client (Redis or Cluster)");
  }
  const timeoutMs = timeoutOption("ioredisStore", options.timeoutMs, 2000);
  const ops = scriptStore(
    "ioredisStore",
    (script, key, args) =>
      evalWithFallback(
        script,
        (sha1) => redis.evalsha(sha1, 1, key, ...args),
        (lua) => redis.eval(lua, 1, key, ...args),
      ),
    timeoutMs,
  );

  // The scripts publish on the key's full name; SUBSCRIBE is not prefixed by ioredis, so prefix here.
  const channelOf = (storeKey: string): string => `${redis.options?.keyPrefix ?? ""}${storeKey}`;
  const duplicate = redis.duplicate?.bind(redis);
  const listeners = keyedListeners({
    onFirst(channel) {
      if (!duplicate) return;
      const sub = subscriberConnection(duplicate);
      subscriberReady.then(() => sub.subscribe(channel)).catch(() => {});
    },
    onLast(channel) {
      subscriber?.unsubscribe(channel).catch(() => {});
    },
  });
  let subscriber: IoredisSubscriber | undefined;
  let subscriberReady: Promise<void> = Promise.resolve();
  const subscriberConnection = (duplicate: () => IoredisSubscriber): IoredisSubscriber => {
    if (subscriber) return subscriber;
    // A connection in subscriber mode cannot run scripts (RESP2), and the user's client must stay usable.
    const sub = duplicate();
    // It inherits `enableOfflineQueue: false` (recommended above): a SUBSCRIBE sent before it is connected
    // fails at once, and that waiter would poll instead of waking on the commit. So subscribe once ready.
    if (sub.status !== undefined && sub.status !== "ready" && sub.once) {
      const once = sub.once.bind(sub);
      subscriberReady = new Promise((resolve) => once("ready", () => resolve()));
    }
    sub.on("message", (channel) => listeners.notify(channel));
    // Waiters also poll, so a lost subscription only slows wake-ups; it must not crash the process.
    sub.on("error", () => {});
    subscriber = sub;
    return sub;
  };

  const store: IdempotencyStore = {
    ...ops,
    async close() {
      listeners.clear();
      subscriber?.disconnect();
      subscriber = undefined;
    },
  };
  if (duplicate) store.subscribe = (storeKey, onChange) => listeners.add(channelOf(storeKey), onChange);
  return store;
}
