// indexedDBStore in Node on fake-indexeddb: the shared contract, and two stores on one database as two tabs.
import "fake-indexeddb/auto";
import { createStore, get, promisifyRequest, set } from "idb-keyval";
import { describe, expect, it } from "vitest";
import { indexedDBStore } from "../../adapters/indexeddb.ts";
import { newToken } from "../../src/store.ts";
import { testStore } from "../conformance.ts";
import { sampleRecord } from "../fixtures/records.ts";
import { sleep, until } from "../fixtures/util.ts";

const suiteDb = `idemfetch-test-${newToken().slice(0, 8)}`;
const raw = createStore(suiteDb, "records");

/** Whether the database still holds a head (in the lease's entry) or body chunks ([storeKey, stream, end]) for `storeKey`. */
const liveChunks = async (storeKey: string): Promise<boolean> => {
  const entry = (await get(storeKey, raw)) as { live?: unknown } | undefined;
  const chunkKeys = await raw("readonly", (os) =>
    promisifyRequest(os.getAllKeys(IDBKeyRange.bound([storeKey], [storeKey, []]))),
  );
  return entry?.live !== undefined || chunkKeys.length > 0;
};

testStore("indexedDBStore", () => indexedDBStore({ dbName: suiteDb }), {
  writeRaw: (storeKey, value) => set(storeKey, value, raw),
  live: true,
  liveChunks,
});

const record = sampleRecord();

describe("indexedDBStore across tabs", () => {
  const dbName = `idemfetch-tabs-${newToken().slice(0, 8)}`;

  it("of 50 concurrent acquires from two tabs exactly one is acquired", async () => {
    const tabs = [indexedDBStore({ dbName }), indexedDBStore({ dbName })];
    const k = `race:${newToken()}`;
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => tabs[i % 2]!.acquire(k, `fp-${i}`, 30_000)));
    expect(results.filter((r) => r.state === "acquired")).toHaveLength(1);
    for (const tab of tabs) await tab.close?.();
  });

  it("a commit in one tab wakes a subscriber in the other via BroadcastChannel", async () => {
    const [leader, waiter] = [indexedDBStore({ dbName }), indexedDBStore({ dbName })];
    const k = `wake:${newToken()}`;
    const other = `other:${newToken()}`;
    let woken = 0;
    let wokenOther = 0;
    const off = waiter.subscribe?.(k, () => woken++);
    const offOther = waiter.subscribe?.(other, () => wokenOther++);
    const lease = await leader.acquire(k, "fp-a", 30_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    expect(await waiter.acquire(k, "fp-a", 30_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
    expect(await leader.commit(k, lease.token, record, 30_000)).toBe(true);
    await until(() => woken === 1);
    expect(wokenOther).toBe(0);
    expect((await waiter.acquire(k, "fp-a", 30_000)).state).toBe("done");
    off?.();
    offOther?.();
    await leader.close?.();
    await waiter.close?.();
  });

  it("a release in one tab wakes a subscriber in the other", async () => {
    const [leader, waiter] = [indexedDBStore({ dbName }), indexedDBStore({ dbName })];
    const k = `release:${newToken()}`;
    let woken = 0;
    const off = waiter.subscribe?.(k, () => woken++);
    const lease = await leader.acquire(k, "fp-a", 30_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    expect(await leader.release(k, lease.token)).toBe(true);
    await until(() => woken === 1);
    off?.();
    await leader.close?.();
    await waiter.close?.();
  });

  it("a live part published in one tab wakes a live subscriber in the other, and no plain subscriber", async () => {
    const [leader, reader] = [indexedDBStore({ dbName }), indexedDBStore({ dbName })];
    const k = `live:${newToken()}`;
    let live = 0;
    let plain = 0;
    const offLive = reader.subscribeLive?.(k, () => live++);
    const offPlain = reader.subscribe?.(k, () => plain++);
    const lease = await leader.acquire(k, "fp-a", 30_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    const head = { status: 200, statusText: "OK", headers: [] as [string, string][] };
    expect(await leader.publishLive?.(k, lease.token, { head, offset: 0, body: new Uint8Array([1, 2]) })).toBe(true);
    await until(() => live === 1);
    expect(await reader.readLive?.(k, undefined, 0)).toMatchObject({ state: "live", body: new Uint8Array([1, 2]) });
    expect(plain).toBe(0);
    expect(await leader.release(k, lease.token)).toBe(true);
    await until(() => live === 2 && plain === 1); // the release ends the stream: both kinds wake
    offLive?.();
    offPlain?.();
    await leader.close?.();
    await reader.close?.();
  });

  it("the sweep deletes the chunks of a stream whose lease lapsed and keeps a live stream's", async () => {
    const db = `idemfetch-sweep-live-${newToken().slice(0, 8)}`;
    const store = indexedDBStore({ dbName: db, sweepIntervalMs: 0 });
    const rawStore = createStore(db, "records");
    const head = { status: 200, statusText: "OK", headers: [] as [string, string][] };
    const streamed = async (k: string, leaseMs: number) => {
      const lease = await store.acquire(k, "fp", leaseMs);
      if (lease.state !== "acquired") throw new Error("expected a lease");
      expect(await store.publishLive?.(k, lease.token, { head, offset: 0, body: new Uint8Array([1]) })).toBe(true);
      expect(await store.publishLive?.(k, lease.token, { offset: 1, body: new Uint8Array([2]) })).toBe(true);
    };
    await streamed("lapsing", 100);
    await streamed("streaming", 60_000);
    await sleep(200);
    await store.acquire("trigger", "fp", 60_000);
    const chunkKeys = () => rawStore("readonly", (os) => promisifyRequest(os.getAllKeys(IDBKeyRange.lowerBound([]))));
    await until(async () => (await chunkKeys()).length === 2);
    expect((await chunkKeys()).map((key) => (key as string[])[0])).toEqual(["streaming", "streaming"]);
    await store.close?.();
  });

  it("values of our shape with wrong fields are corrupt: acquire replaces them", async () => {
    const db = `idemfetch-shape-${newToken().slice(0, 8)}`;
    const store = indexedDBStore({ dbName: db });
    const rawStore = createStore(db, "records");
    const bad: unknown[] = [
      { kind: "lease", token: 1, fingerprint: "fp", expiresAt: Date.now() + 60_000 },
      { kind: "lease", token: "t", fingerprint: "fp" },
      { kind: "record", record: { ...record, body: "aGVsbG8=" }, expiresAt: Date.now() + 60_000 },
      { kind: "record", record: { ...record, status: 42 }, expiresAt: Date.now() + 60_000 },
      { kind: "record", record: { ...record, headers: [["a"]] }, expiresAt: Date.now() + 60_000 },
      { kind: "other", expiresAt: Date.now() + 60_000 },
      null,
      42,
    ];
    for (const [i, value] of bad.entries()) {
      await set(`bad:${i}`, value, rawStore);
      expect({ i, result: await store.acquire(`bad:${i}`, "fp-a", 30_000) }).toMatchObject({
        i,
        result: { state: "acquired", replacedCorrupt: true },
      });
    }
    await store.close?.();
  });

  it("entries written by the previous version (the same shape) are read as they are", async () => {
    const db = `idemfetch-previous-${newToken().slice(0, 8)}`;
    const store = indexedDBStore({ dbName: db });
    const rawStore = createStore(db, "records");
    const expiresAt = Date.now() + 60_000;
    await set("old-lease", { kind: "lease", token: "t-old", fingerprint: "fp-old", expiresAt }, rawStore);
    await set("old-record", { kind: "record", record, expiresAt }, rawStore);
    expect(await store.acquire("old-lease", "fp-a", 30_000)).toEqual({ state: "pending", fingerprint: "fp-old" });
    expect(await store.commit("old-lease", "t-old", record, 30_000)).toBe(true); // its owner still commits
    const replay = await store.acquire("old-record", "fp-a", 30_000);
    expect(replay).toMatchObject({ state: "done", record: { statusText: "OK", fingerprint: "fp-a" } });
    await store.close?.();
  });

  it("a lazy sweep deletes expired entries and leaves live ones", async () => {
    const db = `idemfetch-sweep-${newToken().slice(0, 8)}`;
    const store = indexedDBStore({ dbName: db, sweepIntervalMs: 0 });
    const keysOf = () =>
      new Promise<IDBValidKey[]>((resolve, reject) => {
        const request = indexedDB.open(db);
        request.onsuccess = () => {
          const all = request.result.transaction("records").objectStore("records").getAllKeys();
          all.onsuccess = () => {
            request.result.close();
            resolve(all.result);
          };
          all.onerror = () => reject(all.error);
        };
      });
    await store.acquire("short", "fp", 100);
    await store.acquire("long", "fp", 60_000);
    await sleep(200);
    await store.acquire("trigger", "fp", 60_000); // sweeps after its own claim
    await until(async () => !(await keysOf()).includes("short"));
    expect((await keysOf()).sort()).toEqual(["long", "trigger"]);
    await store.close?.();
  });

  it("throws a TypeError at construction where indexedDB does not exist", () => {
    const saved = globalThis.indexedDB;
    try {
      Reflect.deleteProperty(globalThis, "indexedDB");
      expect(() => indexedDBStore()).toThrow(TypeError);
    } finally {
      globalThis.indexedDB = saved;
    }
    expect(() => indexedDBStore({ sweepIntervalMs: -1 })).toThrow(TypeError);
    expect(() => indexedDBStore({ dbName: "" })).toThrow(TypeError);
  });
});
