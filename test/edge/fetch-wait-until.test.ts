// createIdempotentFetch's per-call `idempotency.waitUntil` (for Workers), checked on Node against a real upstream.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdempotentFetch } from "../../src/fetch.ts";
import { memoryStore } from "../../src/memory-store.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";

describe("createIdempotentFetch: idempotency.waitUntil", () => {
  let upstream: Upstream;
  beforeAll(async () => {
    upstream = await startUpstream();
  });
  afterAll(() => upstream.close());

  it("refuses a non-function before any network call", async () => {
    const idemFetch = createIdempotentFetch({ store: memoryStore() });
    const init = { method: "POST", headers: { "idempotency-key": "k" }, idempotency: { waitUntil: "later" } };
    await expect(idemFetch(`${upstream.url}/echo`, init as never)).rejects.toThrow(/"idempotency\.waitUntil"/);
    expect(upstream.count()).toBe(0);
  });

  it("hands the leader and a joiner the promise of the commit", async () => {
    const idemFetch = createIdempotentFetch({ store: memoryStore() });
    const handed: Promise<unknown>[] = [];
    const call = () =>
      idemFetch(`${upstream.url}/echo?ms=100`, {
        method: "POST",
        headers: { "idempotency-key": "wait-until" },
        body: "{}",
        idempotency: { waitUntil: (promise) => handed.push(promise) },
      });
    const [a, b] = await Promise.all([call(), call()]);
    expect(handed).toHaveLength(2);
    await Promise.all(handed);
    // Settled means committed: a third call replays without reaching the upstream.
    const replay = await call();
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    const text = await replay.text();
    expect(await a.text()).toBe(text);
    expect(await b.text()).toBe(text);
    expect(upstream.count("/echo")).toBe(1);
  });
});
