// upstashStore through the local Upstash REST fixture on real Redis: the shared contract, round trips, outages.
import { Redis as UpstashRedis } from "@upstash/redis";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { encodeBinary, liveKeyOf, SCRIPTS } from "../../adapters/redis-scripts.ts";
import { type UpstashClient, upstashStore } from "../../adapters/upstash.ts";
import { type LiveStore, newToken } from "../../src/store.ts";
import { testStore } from "../conformance.ts";
import { startPrivateRedis } from "../fixtures/processes.ts";
import { sampleRecord } from "../fixtures/records.ts";
import { startUpstashFixture, type UpstashFixture } from "../fixtures/upstash-server.ts";
import { deletePrefix } from "../fixtures/util.ts";
import { redisCases } from "./redis-cases.ts";

// Shared Redis (never flushed): REST has no keyPrefix, so every key of this run starts with this one.
const prefix = `idemfetch-test:upstash:${newToken().slice(0, 10)}:`;
const admin = new Redis({ host: "127.0.0.1", port: 6379, lazyConnect: true });
let fixture: UpstashFixture;

beforeAll(async () => {
  fixture = await startUpstashFixture();
});
afterAll(async () => {
  await fixture?.close();
  await deletePrefix(admin, prefix);
  admin.disconnect();
});

const writeRaw = async (storeKey: string, value: string): Promise<void> => {
  await admin.set(storeKey, value, "PX", 60_000);
};
// The stream's key holds a stream ("S"), not nothing nor the tombstone a commit leaves ("D").
const liveChunks = async (storeKey: string): Promise<boolean> =>
  (await admin.getrange(liveKeyOf(storeKey), 0, 0)) === "S";

testStore("upstashStore", () => upstashStore({ url: fixture.url, token: fixture.token }), {
  writeRaw,
  keyPrefix: `${prefix}own:`,
  subscribe: false,
  live: true,
  liveChunks,
});
// A client the user made with @upstash/redis defaults: automatic deserialization on, which our replies survive.
testStore(
  "upstashStore (user's client, automatic deserialization on)",
  () => upstashStore({ redis: new UpstashRedis({ url: fixture.url, token: fixture.token }) }),
  { writeRaw, keyPrefix: `${prefix}user:`, subscribe: false, live: true, liveChunks },
);

redisCases("upstashStore", () => upstashStore({ url: fixture.url, token: fixture.token }), {
  keyPrefix: `${prefix}cases:`,
  writeRaw: async (storeKey, value, pxMs) => {
    const bytes = typeof value === "string" ? value : Buffer.from(value);
    await (pxMs === undefined ? admin.set(storeKey, bytes) : admin.set(storeKey, bytes, "PX", pxMs));
  },
  pttl: (storeKey) => admin.pttl(storeKey),
});

// JSON-looking body and fingerprint: they must stay bytes and text, not become numbers.
const record = sampleRecord({ body: new TextEncoder().encode("123"), fingerprint: "123" });

describe("upstashStore through the REST fixture", () => {
  it("a miss (acquire + commit) costs 2 commands and a replay 1, one HTTP request each", async () => {
    const store = upstashStore({ url: fixture.url, token: fixture.token });
    const k = `${prefix}count:${newToken()}`;
    const warm = await store.acquire(`${prefix}warm:${newToken()}`, "fp", 30_000); // scripts cached
    expect(warm.state).toBe("acquired");

    let [commands, requests] = [fixture.commands, fixture.requests];
    const lease = await store.acquire(k, "fp-a", 30_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    expect(await store.commit(k, lease.token, record, 30_000)).toBe(true);
    expect([fixture.commands - commands, fixture.requests - requests]).toEqual([2, 2]);

    [commands, requests] = [fixture.commands, fixture.requests];
    const replay = await store.acquire(k, "fp-a", 30_000);
    expect(replay).toMatchObject({ state: "done", record: { fingerprint: "123" } });
    expect([fixture.commands - commands, fixture.requests - requests]).toEqual([1, 1]);
  });

  it("values JSON would turn into numbers stay strings and bytes", async () => {
    const store = upstashStore({ redis: new UpstashRedis({ url: fixture.url, token: fixture.token }) });
    const k = `${prefix}numeric:${newToken()}`;
    const lease = await store.acquire(k, "123", 30_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    expect(await store.acquire(k, "456", 30_000)).toEqual({ state: "pending", fingerprint: "123" });
    expect(await store.commit(k, lease.token, record, 30_000)).toBe(true);
    const replay = await store.acquire(k, "123", 30_000);
    if (replay.state !== "done") throw new Error("expected a record");
    expect(replay.record.fingerprint).toBe("123");
    expect(new TextDecoder().decode(replay.record.body)).toBe("123");
  });

  it("an undecodable record whose bytes are not UTF-8 is still replaced, exactly that value", async () => {
    const store = upstashStore({ url: fixture.url, token: fixture.token });
    const k = `${prefix}notutf8:${newToken()}`;
    await admin.set(k, Buffer.from([0x52, 0x7b, 0xff, 0xfe, 0x7d]), "PX", 60_000); // R{\xff\xfe}
    const before = fixture.commands;
    expect(await store.acquire(k, "fp-a", 30_000)).toMatchObject({ state: "acquired", replacedCorrupt: true });
    // Read it; our SHA1 of the altered text misses; the server's own SHA1 then replaces it.
    expect(fixture.commands - before).toBe(3);
    expect(await store.acquire(k, "fp-b", 30_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
  });

  it("a binary record whose body is not UTF-8 cannot be read over REST: it is replaced (runs again), never garbled", async () => {
    const store = upstashStore({ url: fixture.url, token: fixture.token });
    const k = `${prefix}binary:${newToken()}`;
    const bytes = { ...record, body: new Uint8Array([0xff, 0xfe, 0x00, 0x80]) };
    await admin.set(k, Buffer.from(encodeBinary(bytes)), "PX", 60_000);
    expect(await store.acquire(k, "fp-a", 30_000)).toMatchObject({ state: "acquired", replacedCorrupt: true });
  });

  it("shares the value layout with ioredisStore: one database, either client", async () => {
    const redis = new Redis({ host: "127.0.0.1", port: 6379 });
    try {
      const viaIoredis = ioredisStore({ redis });
      const viaUpstash = upstashStore({ url: fixture.url, token: fixture.token });
      const k = `${prefix}shared:${newToken()}`;
      const lease = await viaIoredis.acquire(k, "fp-a", 30_000);
      if (lease.state !== "acquired") throw new Error("expected a lease");
      expect(await viaUpstash.acquire(k, "fp-b", 30_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
      expect(await viaUpstash.commit(k, lease.token, record, 30_000)).toBe(true);
      expect(await viaIoredis.acquire(k, "fp-a", 30_000)).toMatchObject({ state: "done", record: { status: 200 } });
    } finally {
      redis.disconnect();
    }
  });

  it("live: a part costs one command in one HTTP request, and so does a read", async () => {
    const store = upstashStore({ url: fixture.url, token: fixture.token });
    const k = `${prefix}live-count:${newToken()}`;
    const lease = await store.acquire(k, "fp-a", 30_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    const head = { status: 200, statusText: "OK", headers: [] as [string, string][] };
    await store.publishLive(k, lease.token, { head, offset: 0, body: new Uint8Array(0) }); // scripts cached
    await store.readLive(k, undefined, 0);
    const [commands, requests] = [fixture.commands, fixture.requests];
    expect(await store.publishLive(k, lease.token, { offset: 0, body: new TextEncoder().encode("data: 1\n\n") })).toBe(
      true,
    );
    expect(await store.readLive(k, undefined, 0)).toMatchObject({ state: "live" });
    expect([fixture.commands - commands, fixture.requests - requests]).toEqual([2, 2]);
    expect(await store.commit(k, lease.token, record, 30_000)).toBe(true);
  });

  it("live: streams are shared with ioredisStore both ways, byte-exact (parts split inside a UTF-8 character)", async () => {
    const redis = new Redis({ host: "127.0.0.1", port: 6379 });
    try {
      const viaIoredis = ioredisStore({ redis }) as LiveStore;
      const viaUpstash = upstashStore({ url: fixture.url, token: fixture.token });
      const head = { status: 200, statusText: "OK", headers: [["x-title", "naïve ✓"]] as [string, string][] };
      const sse = new TextEncoder().encode("data: ✓\n\n");
      // "✓" is 3 bytes: the first part ends after its first one; the second ends with bytes that are not UTF-8.
      const first = sse.subarray(0, 7);
      const second = new Uint8Array([...sse.subarray(7), 0xff, 0x00]);
      const pairs = [
        [viaIoredis, viaUpstash],
        [viaUpstash, viaIoredis],
      ] as const;
      for (const [leader, reader] of pairs) {
        const k = `${prefix}live-shared:${newToken()}`;
        const lease = await leader.acquire(k, "fp-a", 30_000);
        if (lease.state !== "acquired") throw new Error("expected a lease");
        expect(await leader.publishLive(k, lease.token, { head, offset: 0, body: first })).toBe(true);
        expect(await leader.publishLive(k, lease.token, { offset: 7, body: second })).toBe(true);
        const whole = await reader.readLive(k, undefined, 0);
        if (whole.state !== "live") throw new Error(`expected a live stream, got ${whole.state}`);
        expect(whole.head).toEqual(head);
        expect(Buffer.from(whole.body)).toEqual(Buffer.concat([first, second]));
        const rest = await reader.readLive(k, whole.stream, 7);
        expect(rest).toMatchObject({ state: "live", stream: whole.stream });
        expect(Buffer.from((rest as { body: Uint8Array }).body)).toEqual(Buffer.from(second));
        expect(await leader.release(k, lease.token)).toBe(true);
      }
    } finally {
      redis.disconnect();
    }
  });

  it("falls back from EVALSHA to EVAL after SCRIPT FLUSH", async () => {
    const server = await startPrivateRedis();
    const own = await startUpstashFixture({ redisUrl: `redis://127.0.0.1:${server.port}` });
    const redis = new Redis({ port: server.port });
    try {
      const store = upstashStore({ url: own.url, token: own.token });
      await redis.script("FLUSH");
      const k = `flush:${newToken()}`;
      const before = own.commands;
      expect((await store.acquire(k, "fp-a", 30_000)).state).toBe("acquired");
      expect(own.commands - before).toBe(2); // EVALSHA answered NOSCRIPT, then EVAL
      expect(await redis.script("EXISTS", SCRIPTS.acquire.sha1)).toEqual([1]);
      const again = own.commands;
      expect((await store.acquire(k, "fp-b", 30_000)).state).toBe("pending");
      expect(own.commands - again).toBe(1);
    } finally {
      redis.disconnect();
      await own.close();
      await server.stop();
    }
  });

  it("store calls reject fast when Redis behind the REST API is down", async () => {
    const server = await startPrivateRedis();
    const own = await startUpstashFixture({ redisUrl: `redis://127.0.0.1:${server.port}` });
    try {
      const store = upstashStore({ url: own.url, token: own.token });
      await store.acquire(`up:${newToken()}`, "fp", 30_000);
      await server.stop();
      const started = Date.now();
      await expect(store.acquire(`down:${newToken()}`, "fp", 30_000)).rejects.toThrow();
      await expect(store.commit(`down:${newToken()}`, newToken(), record, 30_000)).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await own.close();
      await server.stop();
    }
  });

  it("store calls reject fast when the REST endpoint is unreachable", async () => {
    const own = await startUpstashFixture();
    const store = upstashStore({ url: own.url, token: own.token });
    await own.close();
    const started = Date.now();
    const settled = await Promise.allSettled([
      store.acquire(`${prefix}gone:${newToken()}`, "fp", 30_000),
      store.release(`${prefix}gone:${newToken()}`, newToken()),
      store.renew(`${prefix}gone:${newToken()}`, newToken(), 30_000),
    ]);
    expect(settled.map((s) => s.status)).toEqual(["rejected", "rejected", "rejected"]);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("rejects a wrong token instead of reporting success", async () => {
    const store = upstashStore({ url: fixture.url, token: "wrong" });
    await expect(store.acquire(`${prefix}auth:${newToken()}`, "fp", 30_000)).rejects.toThrow(/Unauthorized/);
  });

  it("invalid options throw TypeError at construction", () => {
    expect(() => upstashStore({ redis: {} as UpstashClient })).toThrow(TypeError);
    expect(() => upstashStore({ url: 1 as unknown as string, token: "t" })).toThrow(TypeError);
    expect(() => upstashStore({ url: fixture.url, token: "t", timeoutMs: 500 } as never)).toThrow(/storeTimeoutMs/);
  });
});
