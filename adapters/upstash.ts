// An IdempotencyStore on Upstash Redis over its REST API (@upstash/redis): edge and serverless runtimes.
import { Redis } from "@upstash/redis";
import type { LiveStore } from "../src/store.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";
import { evalWithFallback, liveScriptStore, refuseTimeoutOption, scriptStore } from "./redis-scripts.ts";

/**
 * The commands this store uses, so any compatible client fits. Its replies are prefixed strings and
 * integers, which `automaticDeserialization` leaves alone, so a client made either way works.
 */
export type UpstashClient = Pick<Redis, "evalsha" | "eval">;

export type UpstashStoreOptions =
  /**
   * Your client. Give it no `signal` timeout shorter than the engine's `storeTimeoutMs`: a request aborted
   * on this side may still run on Redis, and a lease taken that way would block its key until it expires.
   */
  | { redis: UpstashClient }
  /** The REST URL and token (UPSTASH_REDIS_REST_URL / _TOKEN): the store makes its own client. */
  | { url: string; token: string };

/**
 * An IdempotencyStore on Upstash: the same scripts and value layout as `ioredisStore`, so both can
 * share one database, with the live-stream capability (`publishLive`, `readLive`; body parts travel as hex).
 * No `subscribe` nor `subscribeLive`: REST has no cheap pub/sub, and waiters and live readers poll instead.
 */
export function upstashStore(options: UpstashStoreOptions): LiveStore {
  refuseTimeoutOption("upstashStore", options);
  strictOptions(
    options,
    { redis: true, url: true, token: true } satisfies OptionNames<{ redis: UpstashClient; url: string; token: string }>,
    "upstashStore()",
  );
  let redis: UpstashClient;
  if ("redis" in options) {
    redis = options.redis;
    if (typeof redis?.evalsha !== "function" || typeof redis.eval !== "function") {
      throw new TypeError("upstashStore: `redis` must be an @upstash/redis client");
    }
  } else {
    if (typeof options.url !== "string" || typeof options.token !== "string") {
      throw new TypeError("upstashStore: pass `redis`, or both `url` and `token`");
    }
    redis = new Redis({
      url: options.url,
      token: options.token,
      // "123" stays a string; the records are JSON text we decode ourselves.
      automaticDeserialization: false,
      // No retries: a refused or dropped connection fails the call at once, so the engine applies its
      // onStoreError policy (and its circuit breaker learns) instead of waiting seconds of backoff.
      retry: false,
      // No signal: the engine's deadline bounds each call and releases an acquire that lands late, which
      // an abort here would hide from it (the command may still run on Redis).
    });
  }
  const ops = scriptStore("upstashStore", (script, key, args) =>
    evalWithFallback(
      script,
      (sha1) => redis.evalsha(sha1, [key], args),
      (lua) => redis.eval(lua, [key], args),
    ),
  );
  const live = liveScriptStore(
    "upstashStore",
    (script, keys, args) =>
      evalWithFallback(
        script,
        (sha1) => redis.evalsha(sha1, keys, args as string[]),
        (lua) => redis.eval(lua, keys, args as string[]),
      ),
    ops,
    { binary: false, keyPrefix: "", hex: true },
  );
  const store: LiveStore & { readonly name: string } = { name: "upstash", ...ops, ...live };
  return store;
}
