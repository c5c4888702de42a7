// Cases both Redis adapters share beyond the conformance suite: forget, leases without expiry, both record layouts.
import { describe, expect, it } from "vitest";
import { encodeBinary } from "../../adapters/redis-scripts.ts";
import { encodeRecord } from "../../src/record.ts";
import { type IdempotencyStore, newToken, type StoredRecord } from "../../src/store.ts";
import { sampleRecord } from "../fixtures/records.ts";
import { sleep, until } from "../fixtures/util.ts";

export interface RedisCasesOptions {
  /** Puts raw bytes at the store key, with an expiry in ms or none at all. */
  writeRaw(storeKey: string, value: string | Uint8Array, pxMs?: number): Promise<void>;
  /** The key's PTTL as Redis reports it (-2 absent, -1 no expiry). */
  pttl(storeKey: string): Promise<number>;
  /** Every store key starts with this. */
  keyPrefix: string;
}

const record = sampleRecord({
  status: 201,
  statusText: "Created",
  headers: [["content-type", "application/octet-stream"]],
  body: new Uint8Array([0, 1, 2, 0xff, 0xfe, 0x80]),
});
const utf8Record: StoredRecord = { ...record, body: new TextEncoder().encode("héllo ✓") };

export function redisCases(name: string, makeStore: () => IdempotencyStore, options: RedisCasesOptions): void {
  const key = () => `${options.keyPrefix}case:${newToken()}`;
  const acquired = async (store: IdempotencyStore, k: string, leaseMs = 30_000): Promise<string> => {
    const result = await store.acquire(k, "fp-a", leaseMs);
    if (result.state !== "acquired") throw new Error(`expected a lease, got ${result.state}`);
    return result.token;
  };

  describe(`${name}: Redis layout`, () => {
    it("a lease without an expiry (written without PX) is corrupt: acquire takes it over", async () => {
      const store = makeStore();
      for (const value of [`L${newToken()}:fp-stuck`, "Lxx:yy"]) {
        const k = key();
        await options.writeRaw(k, value);
        expect(await options.pttl(k)).toBe(-1);
        expect(await store.acquire(k, "fp-a", 30_000)).toMatchObject({ state: "acquired", replacedCorrupt: true });
        expect(await options.pttl(k)).toBeGreaterThan(0);
      }
      // A lease with an expiry is still honoured.
      const live = key();
      await options.writeRaw(live, `L${newToken()}:fp-live`, 30_000);
      expect(await store.acquire(live, "fp-a", 30_000)).toEqual({ state: "pending", fingerprint: "fp-live" });
    });

    it("forget: a record is forgotten, an empty key is absent", async () => {
      const store = makeStore();
      const k = key();
      expect(await store.forget(k, false)).toBe("absent");
      expect(await store.commit(k, await acquired(store, k), record, 30_000)).toBe(true);
      expect(await store.forget(k, false)).toBe("forgotten");
      expect(await options.pttl(k)).toBe(-2);
      expect(await store.forget(k, false)).toBe("absent");
      await acquired(store, k); // runs again
    });

    it("forget: a live lease stays unless forced; the forced owner's commit then changes nothing", async () => {
      const store = makeStore();
      const k = key();
      const token = await acquired(store, k);
      expect(await store.forget(k, false)).toBe("in-progress");
      expect(await store.acquire(k, "fp-b", 30_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
      expect(await store.forget(k, true)).toBe("forgotten");
      expect(await store.commit(k, token, record, 30_000)).toBe(false);
      expect(await options.pttl(k)).toBe(-2);
    });

    it("forget: a corrupt value and a lease without an expiry are forgotten without force", async () => {
      const store = makeStore();
      for (const [value, pxMs] of [
        ["garbage", 30_000],
        [`L${newToken()}:fp`, undefined],
      ] as const) {
        const k = key();
        await options.writeRaw(k, value, pxMs);
        expect(await store.forget(k, false)).toBe("forgotten");
        expect(await options.pttl(k)).toBe(-2);
      }
    });

    it("forget wakes subscribers when it removed something, and only then", async (ctx) => {
      const store = makeStore();
      if (!store.subscribe) return ctx.skip();
      const k = key();
      let woken = 0;
      const off = store.subscribe(k, () => woken++);
      await sleep(150);
      expect(await store.forget(k, true)).toBe("absent");
      await sleep(150);
      expect(woken).toBe(0);
      await acquired(store, k);
      expect(await store.forget(k, true)).toBe("forgotten");
      await until(() => woken === 1);
      off();
      await store.close?.();
    });

    it("reads records of both layouts: text (R + JSON, base64 body) and binary (B + header + bytes)", async () => {
      const store = makeStore();
      const text = key();
      await options.writeRaw(text, `R${encodeRecord(record)}`, 30_000);
      expect(await store.acquire(text, "fp-x", 30_000)).toEqual({ state: "done", record });
      const binary = key();
      await options.writeRaw(binary, encodeBinary(utf8Record), 30_000);
      expect(await store.acquire(binary, "fp-x", 30_000)).toEqual({ state: "done", record: utf8Record });
    });

    it("a binary record with a truncated header is corrupt", async () => {
      const store = makeStore();
      const k = key();
      await options.writeRaw(k, encodeBinary(record).subarray(0, 20), 30_000);
      expect(await store.acquire(k, "fp-a", 30_000)).toMatchObject({ state: "acquired", replacedCorrupt: true });
    });
  });
}
