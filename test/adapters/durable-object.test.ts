// durableObjectStore against IdempotencyObject in workerd (Miniflare), driven from Node through Miniflare's namespace: the shared contract on both storage backends, plus what only this store does.
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DurableObjectNamespaceLike, durableObjectStore } from "../../adapters/durable-object.ts";
import { newToken } from "../../src/store.ts";
import { testStore } from "../conformance.ts";
import { bundle } from "../edge/harness.ts";
import { sampleRecord } from "../fixtures/records.ts";
import { sleep, until } from "../fixtures/util.ts";

/**
 * The class on either storage backend wrangler.toml offers: `new_sqlite_classes` (the default for new classes)
 * or the older key-value one. InspectableObject is IdempotencyObject plus two test routes (GET /keys, POST /raw)
 * that the store never calls; the middleware tests in test/edge run IdempotencyObject itself.
 */
async function start(useSQLite: boolean): Promise<{ mf: Miniflare; namespace: DurableObjectNamespaceLike }> {
  const mf = new Miniflare({
    modules: true,
    script: await bundle("./durable-object/worker.ts", "esm"),
    compatibilityDate: "2025-09-01",
    bindings: { UPSTREAM: "http://127.0.0.1:9" },
    durableObjects: { IDEMPOTENCY: { className: "InspectableObject", useSQLite } },
  });
  // Miniflare's Node-side namespace has the binding's idFromName/get; its stubs' fetch reach the object.
  return {
    mf,
    namespace: (await mf.getDurableObjectNamespace("IDEMPOTENCY")) as unknown as DurableObjectNamespaceLike,
  };
}

for (const useSQLite of [true, false]) {
  const backend = useSQLite ? "SQLite backend" : "key-value backend";
  let mf: Miniflare | undefined;
  let namespace: DurableObjectNamespaceLike | undefined;
  testStore(
    `durableObjectStore (${backend})`,
    async () => {
      ({ mf, namespace } = await start(useSQLite));
      return durableObjectStore(namespace, { waitMs: 2_000 });
    },
    {
      // Puts the text as the object's stored entry and resets the object, whose next instance loads it.
      writeRaw: async (storeKey, value) => {
        const stub = (namespace as DurableObjectNamespaceLike).get(namespace?.idFromName(storeKey));
        await stub.fetch("https://idemfetch.object/raw", { method: "POST", body: value }).catch(() => {});
      },
      cleanup: async () => {
        await mf?.dispose();
      },
    },
  );
}

describe("IdempotencyObject expiry: the object's alarm deletes what expired", () => {
  let mf: Miniflare;
  let namespace: DurableObjectNamespaceLike;
  beforeAll(async () => {
    mf = new Miniflare({
      modules: true,
      script: await bundle("./durable-object/worker.ts", "esm"),
      compatibilityDate: "2025-09-01",
      bindings: { UPSTREAM: "http://127.0.0.1:9" },
      // The same class with GET /keys, which lists the object's storage keys and its alarm.
      durableObjects: { IDEMPOTENCY: { className: "InspectableObject", useSQLite: true } },
    });
    namespace = (await mf.getDurableObjectNamespace("IDEMPOTENCY")) as unknown as DurableObjectNamespaceLike;
  });
  afterAll(async () => {
    await mf?.dispose();
  });
  const inspect = async (storeKey: string): Promise<{ keys: string[]; alarm: number | null }> =>
    (await namespace.get(namespace.idFromName(storeKey)).fetch("https://idemfetch.object/keys")).json() as never;

  it("an expired lease and an expired chunked record leave no key and no alarm behind", async () => {
    const store = durableObjectStore(namespace);
    const leaseKey = `alarm-lease-${newToken()}`;
    const before = Date.now();
    const lease = await store.acquire(leaseKey, "fp-a", 300);
    expect(lease.state).toBe("acquired");
    const leased = await inspect(leaseKey);
    expect(leased.keys).toEqual(["entry"]);
    expect(leased.alarm).toBeGreaterThanOrEqual(before + 300);
    expect(leased.alarm).toBeLessThanOrEqual(Date.now() + 300);

    const recordKey = `alarm-record-${newToken()}`;
    const { token } = (await store.acquire(recordKey, "fp-a", 30_000)) as { token: string };
    const body = new Uint8Array(300_000).map((_, i) => i % 251);
    expect(await store.commit(recordKey, token, sampleRecord({ body }), 400)).toBe(true);
    expect((await inspect(recordKey)).keys.sort()).toEqual(["body:0", "body:1", "body:2", "entry"]);

    await until(async () => (await inspect(leaseKey)).keys.length === 0, 3_000);
    await until(async () => (await inspect(recordKey)).keys.length === 0, 3_000);
    expect(await inspect(leaseKey)).toEqual({ keys: [], alarm: null });
    expect(await inspect(recordKey)).toEqual({ keys: [], alarm: null });
    expect((await store.acquire(recordKey, "fp-b", 30_000)).state).toBe("acquired");
    await store.close?.();
  });

  // Cloudflare's limit; local workerd does not enforce it, so the layout is checked instead.
  it("no stored value passes 128 KiB: a body that fits only without its headers goes in chunks", async () => {
    const store = durableObjectStore(namespace);
    const headers: [string, string][] = Array.from({ length: 8 }, (_, i) => [`x-h${i}`, "v".repeat(1024)]);
    for (const [size, keys] of [
      [100 * 1024, ["entry"]],
      [125 * 1024, ["body:0", "entry"]],
      [300_000, ["body:0", "body:1", "body:2", "entry"]],
    ] as const) {
      const key = `limits-${size}-${newToken()}`;
      const body = new Uint8Array(size).map((_, i) => (i * 7) % 256);
      const { token } = (await store.acquire(key, "fp-a", 30_000)) as { token: string };
      expect(await store.commit(key, token, sampleRecord({ body, headers }), 30_000)).toBe(true);
      expect((await inspect(key)).keys.sort()).toEqual(keys);
      const done = (await store.acquire(key, "fp-a", 30_000)) as { record: { body: Uint8Array } };
      expect(Buffer.from(done.record.body).equals(Buffer.from(body))).toBe(true);
    }
    await store.close?.();
  });

  it("a stored value of another type or shape is corrupt: absent, and replaced by acquire", async () => {
    const store = durableObjectStore(namespace);
    for (const value of ["null", "42", "[]", '{"kind":"record","expiresAt":1e300,"chunks":3,"record":{}}']) {
      const key = `foreign-${newToken()}`;
      await namespace
        .get(namespace.idFromName(key))
        .fetch("https://idemfetch.object/raw", { method: "POST", headers: { "x-json": "1" }, body: value })
        .catch(() => {});
      const result = await store.acquire(key, "fp-a", 30_000);
      expect({ value, result }).toMatchObject({ value, result: { state: "acquired", replacedCorrupt: true } });
    }
    await store.close?.();
  });

  it("renew moves the alarm; a lease renewed past its first expiry is kept", async () => {
    const store = durableObjectStore(namespace);
    const key = `alarm-renew-${newToken()}`;
    const { token } = (await store.acquire(key, "fp-a", 300)) as { token: string };
    expect(await store.renew(key, token, 30_000)).toBe(true);
    expect((await inspect(key)).alarm).toBeGreaterThan(Date.now() + 20_000);
    await sleep(600);
    expect((await inspect(key)).keys).toEqual(["entry"]);
    expect(await store.acquire(key, "fp-b", 30_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
    await store.close?.();
  });
});
