// An IdempotencyStore on Upstash Redis over its REST API (@upstash/redis): edge and serverless runtimes.
import { Redis } from "@upstash/redis";
import type { IdempotencyStore } from "../src/store.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";
import { evalWithFallback, scriptStore, timeoutOption } from "./redis-scripts.ts";

/**
 * The commands this store uses, so any compatible client fits. Its replies are prefixed strings and
 * integers, which `automaticDeserialization` leaves alone, so a client made either way works.
 */
export type UpstashClient = Pick<Redis, "evalsha" | "eval">;

interface Common {
  /** Bound on each store call in ms (0: none). Default 2000. */
  timeoutMs?: number;
}

export type UpstashStoreOptions =
  /** Your client; its own retry and `signal` settings apply under `timeoutMs`. */
  | (Common & { redis: UpstashClient })
  /** The REST URL and token (UPSTASH_REDIS_REST_URL / _TOKEN): the store makes its own client. */
  | (Common & { url: string; token: string });

/**
 * An IdempotencyStore on Upstash: the same scripts and value layout as `ioredisStore`, so both can
 * share one database. No `subscribe`: REST has no cheap pub/sub, and the engine polls instead.
 */
export function upstashStore(options: UpstashStoreOptions): IdempotencyStore {
  strictOptions(
    options,
    { redis: true, url: true, token: true, timeoutMs: true } satisfies OptionNames<
      Common & { redis: UpstashClient; url: string; token: string }
    >,
    "upstashStore()",
  );
  const timeoutMs = timeoutOption("upstashStore", options.timeoutMs, 2000);
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
      // The function form: a fresh signal per request. A static signal, once aborted, makes every
      // later command "succeed" with an empty result.
      ...(timeoutMs > 0 && Number.isFinite(timeoutMs) ? { signal: () => AbortSignal.timeout(timeoutMs) } : {}),
    });
  }
  return scriptStore(
    "upstashStore",
    (script, key, args) =>
      evalWithFallback(
        script,
        (sha1) => redis.evalsha(sha1, [key], args),
        (lua) => redis.eval(lua, [key], args),
      ),
    timeoutMs,
  );
}
