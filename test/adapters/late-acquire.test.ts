// One timeout layer (the engine's): an acquire that lands on Redis after the engine gave up on it is released,
// so a retry after a Redis pause never waits out an orphan lease. Real redis-servers of the test's own, paused.
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { upstashStore } from "../../adapters/upstash.ts";
import type { IdempotencyStore } from "../../src/index.ts";
import { idempotency } from "../../src/server.ts";
import { type PrivateRedis, startPrivateRedis } from "../fixtures/processes.ts";
import { startUpstashFixture, type UpstashFixture } from "../fixtures/upstash-server.ts";
import { sleep } from "../fixtures/util.ts";

const LEASE_MS = 30_000;
/** Longer than every default timeout (the engine's storeTimeoutMs, an adapter's own): the acquire lands late. */
const PAUSE_MS = 2_500;

let redis: PrivateRedis | undefined;
const closers: (() => unknown)[] = [];
afterEach(async () => {
  redis?.signal("SIGCONT");
  for (const close of closers.splice(0).reverse()) await close();
  await redis?.stop();
  redis = undefined;
});

const post = (key: string): Request =>
  new Request("http://app.test/charge", {
    method: "POST",
    headers: { "idempotency-key": key, "content-type": "application/json" },
    body: "{}",
  });

/**
 * A call made while Redis is paused runs unprotected (fail-open) once the engine's deadline passes; its acquire
 * then lands when Redis resumes. A retry 0.3 s later must run at once, not wait for that lease's 30 s.
 */
async function retryAfterPause(store: IdempotencyStore): Promise<void> {
  let runs = 0;
  const handler = idempotency(
    () => {
      runs++;
      return Response.json({ run: runs });
    },
    { store, leaseMs: LEASE_MS, onStoreError: "open", circuitBreaker: false, logger: false },
  );
  const key = `late-${Date.now()}`;
  // Scripts cached (as in production): the paused call's EVALSHA itself takes the lease.
  expect((await handler(post(`${key}-warm`))).status).toBe(200);
  redis?.signal("SIGSTOP");
  const during = await handler(post(key));
  expect(during.status).toBe(200);
  await sleep(PAUSE_MS - 2000);
  redis?.signal("SIGCONT");
  await sleep(300);
  const started = performance.now();
  const retry = await Promise.race([
    handler(post(key)),
    sleep(3000).then(() => new Error("the retry waited on an orphan lease")),
  ]);
  const ms = performance.now() - started;
  console.log(`[late-acquire] retry 0.3 s after the pause answered in ${ms.toFixed(0)} ms`);
  expect(retry).toBeInstanceOf(Response);
  expect((retry as Response).status).toBe(200);
  expect(ms).toBeLessThan(1000);
  expect(runs).toBe(3);
}

describe("an acquire that lands after the engine's deadline is released", () => {
  it("ioredisStore: paused Redis (SIGSTOP), a retry 0.3 s after SIGCONT runs at once", async () => {
    redis = await startPrivateRedis();
    const client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    client.on("error", () => {});
    closers.push(() => client.disconnect());
    await new Promise((resolve) => client.once("ready", resolve));
    const store = ioredisStore({ redis: client });
    closers.push(() => store.close?.());
    await retryAfterPause(store);
  }, 15_000);

  it("upstashStore: paused Redis behind the REST fixture, a retry 0.3 s after SIGCONT runs at once", async () => {
    redis = await startPrivateRedis();
    const fixture: UpstashFixture = await startUpstashFixture({ redisUrl: redis.url, commandTimeoutMs: 10_000 });
    closers.push(() => fixture.close());
    await retryAfterPause(upstashStore({ url: fixture.url, token: fixture.token }));
  }, 15_000);
});
