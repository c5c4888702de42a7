// memoryStore: the shared store contract, plus its own bound (maxEntries, LRU) and injected clock.
import { describe, expect, it } from "vitest";
import { liveMemoryStore } from "../src/memory-live.ts";
import { memoryStore } from "../src/memory-store.ts";
import type { StoredRecord } from "../src/store.ts";
import { testStore } from "./conformance.ts";

testStore("memoryStore", () => memoryStore());
testStore("liveMemoryStore", () => liveMemoryStore(), { live: true });

const record: StoredRecord = {
  status: 200,
  statusText: "OK",
  headers: [],
  body: new Uint8Array([1, 2, 3]),
  createdAt: 0,
  fingerprint: "fp",
};

describe("memoryStore bound and clock", () => {
  it("keeps at most maxEntries and evicts the least recently used first", async () => {
    const store = memoryStore({ maxEntries: 3 });
    for (const k of ["a", "b", "c"]) expect((await store.acquire(k, `fp-${k}`, 60_000)).state).toBe("acquired");
    // Touch "a": "b" becomes the least recently used.
    expect(await store.acquire("a", "fp-x", 60_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
    expect((await store.acquire("d", "fp-d", 60_000)).state).toBe("acquired");
    expect(await store.acquire("a", "fp-x", 60_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
    expect(await store.acquire("c", "fp-x", 60_000)).toEqual({ state: "pending", fingerprint: "fp-c" });
    expect(await store.acquire("d", "fp-x", 60_000)).toEqual({ state: "pending", fingerprint: "fp-d" });
    expect((await store.acquire("b", "fp-x", 60_000)).state).toBe("acquired"); // evicted
  });

  it("counts records and leases together, and a replayed record counts as used", async () => {
    const store = memoryStore({ maxEntries: 2 });
    const lease = await store.acquire("r", "fp", 60_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    expect(await store.commit("r", lease.token, record, 60_000)).toBe(true);
    expect((await store.acquire("l", "fp-l", 60_000)).state).toBe("acquired");
    expect((await store.acquire("r", "fp", 60_000)).state).toBe("done"); // "l" is now the oldest
    expect((await store.acquire("n", "fp-n", 60_000)).state).toBe("acquired");
    expect((await store.acquire("r", "fp", 60_000)).state).toBe("done");
    expect((await store.acquire("l", "fp-x", 60_000)).state).toBe("acquired"); // evicted
  });

  it("invalid maxEntries throws TypeError at construction", () => {
    for (const maxEntries of [0, -1, 1.5, Number.NaN, "10" as unknown as number]) {
      expect(() => memoryStore({ maxEntries }), String(maxEntries)).toThrow(TypeError);
    }
    expect(() => memoryStore({ maxEntries: 1 })).not.toThrow();
  });

  it("measures expiry with the injected clock", async () => {
    let now = 1_000;
    const store = memoryStore({ now: () => now });
    const lease = await store.acquire("k", "fp", 100);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    now += 99;
    expect(await store.acquire("k", "fp-x", 100)).toEqual({ state: "pending", fingerprint: "fp" });
    expect(await store.commit("k", lease.token, record, 50)).toBe(true);
    now += 49;
    expect((await store.acquire("k", "fp", 100)).state).toBe("done");
    now += 1;
    expect((await store.acquire("k", "fp", 100)).state).toBe("acquired");
  });
});
