// An IdempotencyStore on Redis through the user's ioredis client (standalone or Cluster), woken by pub/sub.
import { Buffer } from "node:buffer";
import { keyedListeners } from "../src/listeners.ts";
import type { IdempotencyStore } from "../src/store.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";
import {
  evalWithFallback,
  type RunScript,
  refuseTimeoutOption,
  SCRIPTS,
  type Script,
  scriptStore,
} from "./redis-scripts.ts";

/** What this store needs from the subscriber connection made by `duplicate()`. */
export interface IoredisSubscriber {
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  /** Sharded pub/sub (Redis >= 7), used when present and the server knows it. */
  ssubscribe?(channel: string): Promise<unknown>;
  sunsubscribe?(channel: string): Promise<unknown>;
  on(event: "message" | "smessage", listener: (channel: string, message: string) => void): unknown;
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
  /** EVALSHA / EVAL with byte arguments and replies (records are raw bytes). */
  callBuffer(command: string, args: (string | Buffer | number)[]): Promise<unknown>;
  /** For `replicaAck`: the commit script and WAIT in one pipeline, so both run on the key's node. */
  pipeline?(): IoredisPipeline;
  /** A Cluster's subscriber is made with `shardedSubscribers: true` (one connection per master). */
  /** Redis: `duplicate()`; Cluster: `duplicate([], { shardedSubscribers: true })` (either signature fits). */
  duplicate?(...args: never[]): IoredisSubscriber;
  /** True for an ioredis `Cluster`. */
  readonly isCluster?: boolean;
  /** ioredis prefixes KEYS of EVAL/EVALSHA with `keyPrefix` itself, but not pub/sub channels. */
  readonly options?: { readonly keyPrefix?: string | undefined };
}

export interface IoredisStoreOptions {
  /**
   * Your client; the store never closes it. For store calls to fail fast while Redis is down, create it
   * with `enableOfflineQueue: false` and `maxRetriesPerRequest: 1` (with ioredis' defaults a command waits
   * in a queue for about a minute; the engine's `storeTimeoutMs` still bounds each call). Leave
   * `commandTimeout` unset: it gives up on a command Redis may still run, and the engine then cannot
   * release a lease taken late. Without the offline queue, commands sent before the client is ready fail:
   * wait for its "ready" event first.
   */
  redis: IoredisClient;
  /**
   * Records as raw bytes (one value: a JSON header, then the body) instead of JSON with a base64 body:
   * a third smaller and no base64 work on replay. Default true. Both layouts are always read; set false
   * when an `upstashStore` shares the database and bodies may not be UTF-8 (REST replies are text).
   */
  binary?: boolean;
  /**
   * After each commit, WAIT until this many replicas have the record, at most `timeoutMs` ms, in the
   * same pipeline as the commit script (so on the key's node). Narrows what a failover can lose; the
   * commit still succeeds when fewer acknowledge in time. Default: no WAIT.
   */
  replicaAck?: ReplicaAck;
}

/** `replicaAck`: how many replicas must hold a commit, and how long to wait for them. */
export interface ReplicaAck {
  /** Replicas to wait for (integer >= 1). Default 1. */
  replicas?: number;
  /** Most ms to wait (> 0); WAIT gives up then and the commit resolves anyway. */
  timeoutMs: number;
}

/** The pipeline `replicaAck` uses. */
export interface IoredisPipeline {
  callBuffer(command: string, args: (string | Buffer | number)[]): unknown;
  call(command: string, args: (string | number)[]): unknown;
  exec(): Promise<[Error | null, unknown][] | null>;
}

/** An IdempotencyStore on Redis: one key per store key, one script call per operation. */
export function ioredisStore(options: IoredisStoreOptions): IdempotencyStore {
  refuseTimeoutOption("ioredisStore", options);
  strictOptions(
    options,
    { redis: true, binary: true, replicaAck: true } satisfies OptionNames<IoredisStoreOptions>,
    "ioredisStore()",
  );
  const { redis } = options;
  if (typeof redis?.callBuffer !== "function") {
    throw new TypeError("ioredisStore: `redis` must be an ioredis client (Redis or Cluster)");
  }
  const ack = options.replicaAck;
  if (ack !== undefined) {
    const replicas = ack.replicas ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1 || !(ack.timeoutMs > 0) || !Number.isFinite(ack.timeoutMs)) {
      throw new TypeError("ioredisStore: replicaAck wants replicas >= 1 (integer) and timeoutMs > 0 (ms)");
    }
    if (typeof redis.pipeline !== "function") throw new TypeError("ioredisStore: replicaAck needs `redis.pipeline()`");
  }
  const args = (key: string, rest: (string | Uint8Array)[]) => [1, key, ...rest.map(asArg)];
  // Command names in lower case: ioredis before 5.9 finds a command's keys (to add keyPrefix, and pick a
  // Cluster node) only by its lower-case name, so "EVALSHA" would run on the unprefixed key.
  const run: RunScript = (script, key, rest) =>
    ack && script === SCRIPTS.commit
      ? commitAndWait(redis, script, args(key, rest), ack.replicas ?? 1, Math.ceil(ack.timeoutMs))
      : evalWithFallback(
          script,
          (sha1) => redis.callBuffer("evalsha", [sha1, ...args(key, rest)]),
          (lua) => redis.callBuffer("eval", [lua, ...args(key, rest)]),
        );
  const ops = scriptStore("ioredisStore", run, options.binary ?? true);

  // The scripts publish on the key's full name; SUBSCRIBE is not prefixed by ioredis, so prefix here.
  const channelOf = (storeKey: string): string => `${redis.options?.keyPrefix ?? ""}${storeKey}`;
  const duplicate = redis.duplicate?.bind(redis) as ((...args: unknown[]) => IoredisSubscriber) | undefined;
  // Per channel, the last subscribe or unsubscribe queued: each runs after the one before, so an unsubscribe
  // made while the connection is still connecting goes after its subscribe, with the same mode (classic or
  // sharded), which only that subscribe's answer tells. Resolves the mode subscribed, or undefined.
  const queued = new Map<string, Promise<Mode | undefined>>();
  const enqueue = (channel: string, step: (mode: Mode | undefined) => Promise<Mode | undefined>) => {
    const next = (queued.get(channel) ?? Promise.resolve(undefined)).then(step).catch(() => undefined);
    queued.set(channel, next);
    return next;
  };
  const listeners = keyedListeners({
    onFirst(channel) {
      if (!duplicate) return;
      const sub = subscriberConnection(duplicate);
      enqueue(channel, () => subscriberReady.then(() => listen(sub, channel)));
    },
    onLast(channel) {
      const sub = subscriber;
      const done = enqueue(channel, async (mode) => {
        if (mode && sub) await unlisten(sub, channel, mode);
        return undefined;
      });
      // Nothing left to order after it: forget the channel (a new onFirst starts a new queue).
      done.then(() => {
        if (queued.get(channel) === done) queued.delete(channel);
      });
    },
  });
  let subscriber: IoredisSubscriber | undefined;
  let subscriberReady: Promise<void> = Promise.resolve();
  const subscriberConnection = (duplicate: (...args: unknown[]) => IoredisSubscriber): IoredisSubscriber => {
    if (subscriber) return subscriber;
    // A connection in subscriber mode cannot run scripts (RESP2), and the user's client must stay usable.
    // A Cluster delivers SPUBLISH only on the key's shard: one subscriber connection per master (the
    // option is ioredis >= 5.6; SSUBSCRIBE/"smessage" are >= 5.3, hence the peer range's floor).
    const sub = redis.isCluster ? duplicate([], { shardedSubscribers: true }) : duplicate();
    // It inherits `enableOfflineQueue: false` (recommended above): a SUBSCRIBE sent before it is connected
    // fails at once, and that waiter would poll instead of waking on the commit. So subscribe once ready.
    if (sub.status !== undefined && sub.status !== "ready" && sub.once) {
      const once = sub.once.bind(sub);
      subscriberReady = new Promise((resolve) => once("ready", () => resolve()));
    }
    const wake = (channel: string) => listeners.notify(channel);
    sub.on("message", wake);
    sub.on("smessage", wake);
    // Waiters also poll, so a lost subscription only slows wake-ups; it must not crash the process.
    sub.on("error", () => {});
    subscriber = sub;
    return sub;
  };

  // The scripts SPUBLISH where the server knows it (Redis >= 7) and PUBLISH elsewhere; SSUBSCRIBE tells
  // which: an error reply (not a connection error) means an older server, so classic pub/sub from then on.
  // ioredis prefixes SSUBSCRIBE's shard channels with keyPrefix (they are keys to it), not SUBSCRIBE's.
  let sharded: boolean | undefined;
  const unprefixed = (channel: string) => channel.slice(channelOf("").length);
  const listen = async (sub: IoredisSubscriber, channel: string): Promise<Mode> => {
    if (sharded !== false && sub.ssubscribe) {
      try {
        await sub.ssubscribe(unprefixed(channel));
        sharded = true;
        return "sharded";
      } catch (error) {
        if (sharded === true || !isReplyError(error)) throw error;
        sharded = false;
      }
    }
    await sub.subscribe(channel);
    return "classic";
  };
  const unlisten = (sub: IoredisSubscriber, channel: string, mode: Mode): Promise<unknown> =>
    mode === "sharded" && sub.sunsubscribe ? sub.sunsubscribe(unprefixed(channel)) : sub.unsubscribe(channel);

  const store: IdempotencyStore & { readonly name: string } = {
    name: "ioredis",
    ...ops,
    async close() {
      listeners.clear();
      queued.clear();
      subscriber?.disconnect();
      subscriber = undefined;
    },
  };
  if (duplicate) store.subscribe = (storeKey, onChange) => listeners.add(channelOf(storeKey), onChange);
  return store;
}

/** How a channel was subscribed: SSUBSCRIBE (Redis >= 7) or SUBSCRIBE; undone by the matching unsubscribe. */
type Mode = "sharded" | "classic";

/** Bytes go to ioredis as Buffers (a view, no copy). */
function asArg(arg: string | Uint8Array): string | Buffer {
  return typeof arg === "string" ? arg : Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength);
}

/** An error Redis replied with, as opposed to a connection that failed. */
function isReplyError(error: unknown): boolean {
  return (error as { name?: unknown } | null)?.name === "ReplyError";
}

/**
 * The commit script, then WAIT, in one pipeline: WAIT cannot run inside a script, and must reach the
 * connection that ran the write (a Cluster pipeline goes to the node of its one key). The script goes as
 * EVAL, its full text: an EVALSHA answered NOSCRIPT would already have run its WAIT for nothing, and the
 * retry a second one, doubling the commit's bound. Resolves the script's reply; how many replicas
 * acknowledged is not the caller's concern (the record is stored).
 */
async function commitAndWait(
  redis: IoredisClient,
  script: Script,
  args: (string | Buffer | number)[],
  replicas: number,
  timeoutMs: number,
): Promise<unknown> {
  const pipeline = (redis.pipeline as () => IoredisPipeline)();
  pipeline.callBuffer("eval", [script.lua, ...args]);
  pipeline.call("wait", [replicas, timeoutMs]);
  const [[error, reply] = [null, undefined]] = (await pipeline.exec()) ?? [];
  if (error) throw error;
  return reply;
}
