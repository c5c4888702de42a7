// The README's Cloudflare Workers quick start, run as written in workerd (Miniflare) over the Upstash fixture.
import { createHash, randomBytes } from "node:crypto";
import { build } from "esbuild";
import { Redis } from "ioredis";
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startUpstashFixture, type UpstashFixture } from "../fixtures/upstash-server.ts";

describe("README quick start: Cloudflare Workers", () => {
  let upstash: UpstashFixture;
  let worker: Miniflare;
  const key = `quickstart-${randomBytes(6).toString("hex")}`;
  // The quick start keeps the default namespace; this test removes the one key it writes.
  const storeKey = `idemfetch:anonymous:${createHash("sha256").update(key).digest("hex")}`;

  beforeAll(async () => {
    upstash = await startUpstashFixture();
    const bundled = await build({
      entryPoints: [new URL("./quickstart/worker.ts", import.meta.url).pathname],
      bundle: true,
      write: false,
      platform: "browser",
      conditions: ["workerd", "worker", "browser"],
      format: "esm",
      external: ["cloudflare:workers"],
      logLevel: "silent",
    });
    worker = new Miniflare({
      modules: true,
      script: (bundled.outputFiles[0] as { text: string }).text,
      compatibilityDate: "2025-09-01",
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
    const order = () =>
      worker.dispatchFetch("http://worker/orders", {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": key },
        body: JSON.stringify({ item: "book" }),
      });
    const first = await Promise.all([order(), order(), order()]);
    const bodies = await Promise.all(first.map((r) => r.text()));
    expect(first.map((r) => r.status)).toEqual([201, 201, 201]);
    expect(new Set(bodies).size).toBe(1);
    const retry = await order();
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    expect(await retry.text()).toBe(bodies[0]);
    expect(JSON.parse(bodies[0] as string)).toMatchObject({ item: "book" });
  });
});
