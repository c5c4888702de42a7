// ioredisStore against real Redis: the shared contract (RESP3 and RESP2), scripts, keyPrefix, round trips, outages.
import { spawn } from "node:child_process";
import { Cluster, Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { type IoredisClient, ioredisStore } from "../../adapters/ioredis.ts";
import { liveKeyOf, SCRIPTS } from "../../adapters/redis-scripts.ts";
import { encodeRecord } from "../../src/record.ts";
import { idempotency } from "../../src/server.ts";
import { type IdempotencyStore, newToken } from "../../src/store.ts";
import { testStore } from "../conformance.ts";
import { freePort, startPrivateRedis } from "../fixtures/processes.ts";
import { sampleRecord } from "../fixtures/records.ts";
import { deletePrefix, sleep, until } from "../fixtures/util.ts";
import { redisCases } from "./redis-cases.ts";

// Shared Redis (never flushed): every key of this run lives under one unique prefix, deleted at the end.
const SHARED = { host: "127.0.0.1", port: 6379 };
const prefix = `idemfetch-test:ioredis:${newToken().slice(0, 10)}:`;
const admin = new Redis({ ...SHARED, lazyConnect: true });
const opened: Redis[] = [];
const client = (options: { protocol?: 2 | 3; connectionName?: string } = {}): Redis => {
  const redis = new Redis({ ...SHARED, keyPrefix: prefix, ...options });
  opened.push(redis);
  return redis;
};
const writeRaw = async (storeKey: string, value: string): Promise<void> => {
  await admin.set(prefix + storeKey, value, "PX", 60_000);
};
/** Whether Redis still holds chunk data (a stream, not the commit's small tombstone) beside `storeKey`. */
const liveChunks = async (storeKey: string): Promise<boolean> =>
  (await admin.getrange(prefix + liveKeyOf(storeKey, prefix), 0, 0)) === "S";

afterAll(async () => {
  await deletePrefix(admin, prefix);
  for (const redis of opened) redis.disconnect();
  admin.disconnect();
});

testStore("ioredisStore (RESP3)", () => ioredisStore({ redis: client() }), { writeRaw, live: true, liveChunks });
testStore("ioredisStore (RESP2)", () => ioredisStore({ redis: client({ protocol: 2 }) }), {
  writeRaw,
  live: true,
  liveChunks,
});
testStore("ioredisStore (text records)", () => ioredisStore({ redis: client(), binary: false }), {
  writeRaw,
  live: true,
  liveChunks,
});
redisCases("ioredisStore", () => ioredisStore({ redis: client() }), {
  keyPrefix: "",
  writeRaw: async (storeKey, value, pxMs) => {
    const bytes = typeof value === "string" ? value : Buffer.from(value);
    await (pxMs === undefined ? admin.set(prefix + storeKey, bytes) : admin.set(prefix + storeKey, bytes, "PX", pxMs));
  },
  pttl: (storeKey) => admin.pttl(prefix + storeKey),
});

const record = sampleRecord();

/** Calls per command since the last CONFIG RESETSTAT, without the measuring commands themselves. */
async function commandStats(redis: Redis): Promise<Record<string, number>> {
  const info = await redis.info("commandstats");
  const out: Record<string, number> = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const [, name, calls] = match;
    if (name && calls && name !== "info" && !name.startsWith("config")) out[name] = Number(calls);
  }
  return out;
}

describe("ioredisStore on real Redis", () => {
  it("an acquire sent twice with one token (a client resending it after a reconnect) is acquired both times", async () => {
    const k = `${prefix}resend:${newToken()}`;
    const token = newToken();
    const acquire = () => admin.eval(SCRIPTS.acquire.lua, 1, k, token, "fp-a", "30000", "");
    expect(await acquire()).toBe("A0");
    // Its own lease, not another owner's: "pending" here would make the caller wait for itself.
    expect(await acquire()).toBe("A0");
    expect(await admin.eval(SCRIPTS.acquire.lua, 1, k, newToken(), "fp-b", "30000", "")).toBe("Lfp-a");
  });

  it("each script's SHA1 equals SCRIPT LOAD of its text", async () => {
    for (const [name, script] of Object.entries(SCRIPTS)) {
      expect({ name, sha1: await admin.script("LOAD", script.lua) }).toEqual({ name, sha1: script.sha1 });
    }
  });

  it("respects the client's keyPrefix for keys and for the pub/sub channel", async () => {
    const store = ioredisStore({ redis: client() });
    const k = `keyprefix:${newToken()}`;
    const woken: string[] = [];
    const off = store.subscribe?.(k, () => woken.push("woken"));
    await sleep(150);
    const lease = await store.acquire(k, "fp-a", 30_000);
    expect(await admin.exists(k)).toBe(0);
    expect(await admin.get(prefix + k)).toMatch(/^L[0-9a-f]{32}:fp-a$/);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    expect(await store.commit(k, lease.token, record, 30_000)).toBe(true);
    const header = encodeRecord({ ...record, body: new Uint8Array(0) });
    expect(await admin.get(prefix + k)).toBe(`B${header.length}:${header}hello`); // the binary layout
    const ttl = await admin.pttl(prefix + k);
    expect(ttl).toBeGreaterThan(25_000);
    expect(ttl).toBeLessThanOrEqual(30_000);
    await until(() => woken.length > 0);
    off?.();
    await store.close?.();
  });

  it("a value of another Redis type is corrupt: acquire replaces it", async () => {
    const store = ioredisStore({ redis: client() });
    const k = `wrongtype:${newToken()}`;
    await admin.hset(prefix + k, "field", "value");
    await admin.pexpire(prefix + k, 60_000);
    expect(await store.commit(k, newToken(), record, 1000)).toBe(false);
    expect(await store.acquire(k, "fp-a", 30_000)).toMatchObject({ state: "acquired", replacedCorrupt: true });
    expect(await admin.type(prefix + k)).toBe("string");
  });

  it("an undecodable record whose bytes are not UTF-8 is still replaced, exactly that value", async () => {
    const store = ioredisStore({ redis: client() });
    const k = `notutf8:${newToken()}`;
    await admin.set(prefix + k, Buffer.from([0x52, 0x7b, 0xff, 0xfe, 0x7d]), "PX", 60_000); // R{\xff\xfe}
    expect(await store.acquire(k, "fp-a", 30_000)).toMatchObject({ state: "acquired", replacedCorrupt: true });
    expect(await store.acquire(k, "fp-b", 30_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
  });

  it("of 50 concurrent acquires over 5 connections exactly one is acquired", async () => {
    const stores = Array.from({ length: 5 }, () => ioredisStore({ redis: client() }));
    const k = `race:${newToken()}`;
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => stores[i % 5]!.acquire(k, `fp-${i}`, 30_000)),
    );
    expect(results.filter((r) => r.state === "acquired")).toHaveLength(1);
  });

  it("a commit through one connection wakes a subscriber of another store", async () => {
    const waiter = ioredisStore({ redis: client() });
    const leader = ioredisStore({ redis: client({ protocol: 2 }) });
    const k = `wake:${newToken()}`;
    let woken = 0;
    const off = waiter.subscribe?.(k, () => woken++);
    await sleep(150);
    const lease = await leader.acquire(k, "fp-a", 30_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    expect(await leader.commit(k, lease.token, record, 30_000)).toBe(true);
    await until(() => woken > 0);
    off?.();
    await waiter.close?.();
  });

  it("uses SSUBSCRIBE on Redis 7, and classic SUBSCRIBE/PUBLISH where sharded pub/sub is unknown (Redis < 7)", async () => {
    // Redis 6 has no SPUBLISH/SSUBSCRIBE: a Redis 7 with both renamed away answers them the same way.
    const port = await freePort();
    const old = spawn("redis-server", [
      ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      ...["--rename-command", "SPUBLISH", "", "--rename-command", "SSUBSCRIBE", ""],
    ]);
    try {
      await new Promise<void>((resolve) => {
        let out = "";
        old.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes("Ready to accept connections")) resolve();
        });
      });
      const older = new Redis({ port });
      const modern = client();
      for (const [redis, channels] of [
        [modern, "SHARDCHANNELS"],
        [older, "CHANNELS"],
      ] as const) {
        const store = ioredisStore({ redis });
        const k = `fallback:${newToken()}`;
        let woken = 0;
        const off = store.subscribe?.(k, () => woken++);
        const probe = redis === modern ? admin : older;
        await until(async () => ((await probe.call("PUBSUB", channels)) as string[]).some((c) => c.endsWith(k)));
        const lease = await store.acquire(k, "fp", 30_000);
        if (lease.state !== "acquired") throw new Error("expected a lease");
        expect(await store.commit(k, lease.token, record, 30_000)).toBe(true);
        await until(() => woken === 1);
        off?.();
        await store.close?.();
      }
      older.disconnect();
    } finally {
      old.kill("SIGKILL");
    }
  });

  it("close() closes the subscriber connection it opened, never the user's client", async () => {
    const connectionName = `idemfetch-close-${newToken().slice(0, 8)}`;
    const named = async () =>
      String(await admin.client("LIST"))
        .split("\n")
        .filter((line) => line.includes(`name=${connectionName} `)).length;
    const redis = client({ connectionName });
    const store = ioredisStore({ redis });
    const off = store.subscribe?.(`close:${newToken()}`, () => {});
    await until(async () => (await named()) === 2); // the client and its duplicate
    await store.close?.();
    off?.();
    await until(async () => (await named()) === 1);
    expect(await redis.ping()).toBe("PONG");
  });

  it("a subscription made and dropped while the subscriber connection is still connecting leaves no channel subscribed", async () => {
    const server = await startPrivateRedis();
    const redis = new Redis({ port: server.port, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    redis.on("error", () => {});
    const probe = new Redis({ port: server.port });
    try {
      await new Promise((resolve) => redis.once("ready", resolve));
      const store = ioredisStore({ redis });
      // Cold start: waiters subscribe before the subscriber connection is ready, and finish by polling.
      const keys = Array.from({ length: 8 }, (_, i) => `cold:${i}:${newToken()}`);
      for (const k of keys) store.subscribe?.(k, () => {})();
      // One that stays: its SSUBSCRIBE having landed orders every earlier (un)subscribe before it.
      const kept = `cold:kept:${newToken()}`;
      const off = store.subscribe?.(kept, () => {});
      await until(async () => ((await probe.call("PUBSUB", "SHARDCHANNELS")) as string[]).includes(kept), 3000);
      await sleep(100);
      expect(await probe.call("PUBSUB", "SHARDCHANNELS")).toEqual([kept]);
      expect(await probe.call("PUBSUB", "CHANNELS")).toEqual([]);
      off?.();
      await until(async () => ((await probe.call("PUBSUB", "SHARDCHANNELS")) as string[]).length === 0, 3000);
      await store.close?.();
    } finally {
      probe.disconnect();
      redis.disconnect();
      await server.stop();
    }
  });

  it("falls back from EVALSHA to EVAL after SCRIPT FLUSH", async () => {
    const server = await startPrivateRedis();
    const redis = new Redis({ port: server.port });
    try {
      const store = ioredisStore({ redis });
      await redis.script("FLUSH");
      await redis.config("RESETSTAT");
      const k = `flush:${newToken()}`;
      expect((await store.acquire(k, "fp-a", 30_000)).state).toBe("acquired");
      expect((await store.acquire(k, "fp-b", 30_000)).state).toBe("pending");
      const stats = await commandStats(redis);
      expect(stats.evalsha).toBe(2); // the first one answered NOSCRIPT
      expect(stats.eval).toBe(1); // which loaded the script for the second
      const [cached] = (await redis.script("EXISTS", SCRIPTS.acquire.sha1)) as number[];
      expect(cached).toBe(1);
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });

  it("a miss (acquire + commit) costs 2 script calls and a replay 1", async () => {
    const server = await startPrivateRedis();
    const redis = new Redis({ port: server.port });
    try {
      const store = ioredisStore({ redis });
      const warm = `warm:${newToken()}`;
      const lease0 = await store.acquire(warm, "fp", 30_000); // loads the scripts
      if (lease0.state !== "acquired") throw new Error("expected a lease");
      await store.commit(warm, lease0.token, record, 30_000);
      const k = `count:${newToken()}`;

      await redis.config("RESETSTAT");
      const lease = await store.acquire(k, "fp-a", 30_000);
      if (lease.state !== "acquired") throw new Error("expected a lease");
      expect(await store.commit(k, lease.token, record, 30_000)).toBe(true);
      // Top level: 2 EVALSHA; the rest run inside them (Redis counts a script's own calls too).
      expect(await commandStats(redis)).toEqual({ evalsha: 2, get: 2, set: 2, spublish: 1 });

      await redis.config("RESETSTAT");
      expect((await store.acquire(k, "fp-a", 30_000)).state).toBe("done");
      expect(await commandStats(redis)).toEqual({ evalsha: 1, get: 1 });
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });

  it("replicaAck sends WAIT after the commit script, in the same round trip; the commit holds without a replica", async () => {
    const server = await startPrivateRedis();
    const redis = new Redis({ port: server.port });
    try {
      const bound = 400;
      const store = ioredisStore({ redis, replicaAck: { timeoutMs: bound } });
      await redis.script("FLUSH"); // the pipeline's EVALSHA answers NOSCRIPT first
      const k = `ack:${newToken()}`;
      const lease = await store.acquire(k, "fp-a", 30_000);
      if (lease.state !== "acquired") throw new Error("expected a lease");
      await redis.config("RESETSTAT");
      const started = performance.now();
      expect(await store.commit(k, lease.token, record, 30_000)).toBe(true); // no replica: WAIT times out, 0
      const ms = performance.now() - started;
      // One WAIT for the one commit (never a NOSCRIPT retry with a second), so it settles within one bound.
      const stats = await commandStats(redis);
      expect(stats).toMatchObject({ eval: 1, wait: 1, spublish: 1 });
      expect(stats.evalsha).toBeUndefined();
      expect(ms).toBeGreaterThanOrEqual(bound - 5);
      expect(ms).toBeLessThan(bound + 250);
      expect((await store.acquire(k, "fp-a", 30_000)).state).toBe("done");
    } finally {
      redis.disconnect();
      await server.stop();
    }
    expect(() => ioredisStore({ redis: admin, replicaAck: { timeoutMs: 0 } })).toThrow(TypeError);
    expect(() => ioredisStore({ redis: admin, replicaAck: { replicas: 0, timeoutMs: 10 } })).toThrow(TypeError);
  });

  describe("when Redis is down, store calls reject fast instead of hanging", () => {
    const ops = (store: IdempotencyStore, k: string) => [
      store.acquire(k, "fp", 30_000),
      store.commit(k, newToken(), record, 30_000),
      store.release(k, newToken()),
      store.renew(k, newToken(), 30_000),
    ];

    it("with the recommended client options", async () => {
      const server = await startPrivateRedis();
      const redis = new Redis({ port: server.port, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
      redis.on("error", () => {});
      try {
        await new Promise((resolve) => redis.once("ready", resolve)); // without the queue, nothing waits for it
        const store = ioredisStore({ redis }); // the store has no timer: the client alone fails fast
        await store.acquire(`up:${newToken()}`, "fp", 30_000);
        await server.stop();
        const started = Date.now();
        const settled = await Promise.allSettled(ops(store, `down:${newToken()}`));
        expect(settled.map((s) => s.status)).toEqual(["rejected", "rejected", "rejected", "rejected"]);
        expect(Date.now() - started).toBeLessThan(2000);
      } finally {
        redis.disconnect();
        await server.stop();
      }
    });

    it("with ioredis' defaults, by the engine's storeTimeoutMs; the queued acquire is released when Redis returns", async () => {
      const server = await startPrivateRedis();
      const redis = new Redis({ port: server.port });
      redis.on("error", () => {});
      let runs = 0;
      const handler = idempotency(() => Response.json({ run: ++runs }), {
        store: ioredisStore({ redis }),
        storeTimeoutMs: 500,
        leaseMs: 30_000,
        circuitBreaker: false,
        logger: false,
      });
      const call = () =>
        handler(new Request("http://app.test/", { method: "POST", headers: { "idempotency-key": "k" }, body: "{}" }));
      try {
        expect((await call()).status).toBe(200);
        await server.stop();
        const started = Date.now();
        expect((await call()).status).toBe(200); // unprotected (fail-open), after the engine's deadline
        expect(Date.now() - started).toBeLessThan(1500);
        // ioredis kept the acquire queued; it runs once Redis is back, lands late, and is released.
        await server.start();
        await until(async () => (await redis.ping().catch(() => "")) === "PONG", 5000);
        await sleep(300);
        const retry = await Promise.race([call(), sleep(3000).then(() => undefined)]);
        expect(retry?.status).toBe(200);
        expect(runs).toBe(3);
      } finally {
        redis.disconnect();
        await server.stop();
      }
    });
  });

  it("invalid options throw TypeError at construction", () => {
    expect(() => ioredisStore({ redis: {} as unknown as IoredisClient })).toThrow(TypeError);
    // The engine's storeTimeoutMs is the one timeout layer: the store's own option is refused, not ignored.
    expect(() => ioredisStore({ redis: admin, timeoutMs: 500 } as never)).toThrow(/storeTimeoutMs/);
  });

  it("accepts Redis and Cluster clients by type", () => {
    // Compile-time: both fit IoredisClient without casts.
    const fits = (_: IoredisClient) => true;
    expect(fits(admin)).toBe(true);
    const cluster = new Cluster([SHARED], { lazyConnect: true });
    expect(fits(cluster)).toBe(true);
    cluster.disconnect();
  });
});
