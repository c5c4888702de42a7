// The README's Cloudflare Workers quick start, run as written in workerd (Miniflare) over the Upstash fixture.
import { createHash, randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import type { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, it } from "vitest";
import { startUpstashFixture, type UpstashFixture } from "../fixtures/upstash-server.ts";
import { expectOneOrder, order, startQuickstart } from "./harness.ts";

describe("README quick start: Cloudflare Workers", () => {
  let upstash: UpstashFixture;
  let worker: Miniflare;
  const key = `quickstart-${randomBytes(6).toString("hex")}`;
  // The quick start keeps the default namespace; this test removes the one key it writes.
  const storeKey = `idemfetch:anonymous:${createHash("sha256").update(key).digest("hex")}`;

  beforeAll(async () => {
    upstash = await startUpstashFixture();
    worker = await startQuickstart("./quickstart/worker.ts", {
      bindings: { UPSTASH_REDIS_REST_URL: upstash.url, UPSTASH_REDIS_REST_TOKEN: upstash.token },
    });
  });
  afterAll(async () => {
    await worker?.dispose();
    const redis = new Redis({ lazyConnect: true });
    await redis.connect();
    await redis.del(storeKey);
    redis.disconnect();
    await upstash?.close();
  });

  it("creates one order for three concurrent duplicates and a retry", async () => {
    const first = await Promise.all([order(worker, key), order(worker, key), order(worker, key)]);
    await expectOneOrder(first, () => order(worker, key));
  });
});
