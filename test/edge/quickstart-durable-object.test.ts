// The README's Durable Object quick start (wrangler.toml binding + Worker), run as written in workerd (Miniflare).
import { randomBytes } from "node:crypto";
import type { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectOneOrder, order, startQuickstart } from "./harness.ts";

describe("README quick start: Cloudflare Workers with durableObjectStore", () => {
  let worker: Miniflare;

  beforeAll(async () => {
    worker = await startQuickstart("./quickstart/durable-object-worker.js", {
      // wrangler.toml's [[durable_objects.bindings]] and its new_sqlite_classes migration.
      durableObjects: { IDEMPOTENCY: { className: "IdempotencyObject", useSQLite: true } },
    });
  });
  afterAll(async () => {
    await worker?.dispose();
  });

  it("creates one order for three concurrent duplicates, and a retry replays it", async () => {
    const key = `quickstart-do-${randomBytes(6).toString("hex")}`;
    const first = await Promise.all([order(worker, key), order(worker, key), order(worker, key)]);
    expect(first.map((r) => r.status)).toEqual([201, 201, 201]);
    expect(first.filter((r) => r.headers.get("idempotent-replayed") === "true")).toHaveLength(2);
    await expectOneOrder(first, () => order(worker, key));
  });
});
