// Every adapter names itself, so the engine's store warnings and circuit events say which store failed.
import "fake-indexeddb/auto";
import { Redis } from "ioredis";
import { Miniflare } from "miniflare";
import pg from "pg";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type D1Like, d1Store } from "../../adapters/d1.ts";
import { denoKvStore } from "../../adapters/deno-kv.ts";
import { durableObjectStore } from "../../adapters/durable-object.ts";
import { indexedDBStore } from "../../adapters/indexeddb.ts";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { postgresStore } from "../../adapters/postgres.ts";
import { sqliteStore } from "../../adapters/sqlite.ts";
import { upstashStore } from "../../adapters/upstash.ts";
import { createIdempotentFetch, type IdempotencyEvent, type IdempotencyStore, withWebLocks } from "../../src/index.ts";
import { freePort } from "../fixtures/processes.ts";
import { openSqlite } from "../fixtures/sqlite.ts";

/**
 * One keyed call through `store` with a circuit that opens on the first failure: resolves the warnings and the
 * circuit event. The upstream is a local function: only the store is under test.
 */
async function failThrough(store: IdempotencyStore): Promise<{ lines: string[]; events: IdempotencyEvent[] }> {
  const lines: string[] = [];
  const events: IdempotencyEvent[] = [];
  const f = createIdempotentFetch({
    store,
    fetch: async () => new Response("ok"),
    storeTimeoutMs: 1500,
    circuitBreaker: { failures: 1, cooldownMs: 60_000 },
    logger: { warn: (line) => lines.push(line) },
    onEvent: (event) => events.push(event),
  });
  const response = await f("http://api.test/charge", { method: "POST", headers: { "idempotency-key": "k" } });
  expect(response.status).toBe(200); // fail-open: the call ran unprotected
  await response.arrayBuffer();
  return { lines, events };
}

const expectNamed = ({ lines, events }: { lines: string[]; events: IdempotencyEvent[] }, name: string) => {
  expect(lines.length).toBeGreaterThan(0);
  for (const line of lines) expect(line).toContain(`store "${name}"`);
  expect(events).toContainEqual(expect.objectContaining({ type: "circuit-open", store: name }));
};

describe("a store that fails is named in the warning and the circuit event", () => {
  it("ioredis: a client whose Redis refuses the connection", async () => {
    const redis = new Redis({
      port: await freePort(),
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    redis.on("error", () => {});
    expectNamed(await failThrough(ioredisStore({ redis })), "ioredis");
    redis.disconnect();
  });

  it("postgres: a pool whose server refuses the connection", async () => {
    const pool = new pg.Pool({ host: "127.0.0.1", port: await freePort(), user: "postgres", database: "test" });
    expectNamed(await failThrough(postgresStore({ client: pool })), "postgres");
    await pool.end();
  });

  it("sqlite: a database closed under the store", async () => {
    const { db, close } = openSqlite(":memory:");
    const store = sqliteStore({ db });
    close();
    expectNamed(await failThrough(store), "sqlite");
  });

  it("upstash: a REST URL nobody answers", async () => {
    const store = upstashStore({ url: `http://127.0.0.1:${await freePort()}`, token: "t" });
    expectNamed(await failThrough(store), "upstash");
  });

  it("d1: the binding of a Miniflare that is gone", async () => {
    const mf = new Miniflare({
      modules: true,
      script: "export default { fetch: () => new Response('') }",
      compatibilityDate: "2025-09-01",
      d1Databases: ["DB"],
    });
    const store = d1Store({ db: (await mf.getD1Database("DB")) as unknown as D1Like });
    await mf.dispose();
    expectNamed(await failThrough(store), "d1");
  });
});

describe("every adapter has its name", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it("the ones not failed above", () => {
    const kv = { get: async () => ({}), list: async function* () {}, atomic: () => ({}) };
    const namespace = { idFromName: () => ({}), get: () => ({ fetch: async () => new Response() }) };
    expect((denoKvStore({ kv: kv as never }) as { name?: string }).name).toBe("deno-kv");
    expect((durableObjectStore(namespace) as { name?: string }).name).toBe("durable-object");
    expect((indexedDBStore({ dbName: "names" }) as { name?: string }).name).toBe("indexeddb");
  });

  it("withWebLocks keeps the name of the store it wraps", () => {
    // Only the wrapper is built: no lock is requested.
    vi.stubGlobal("navigator", { locks: { request: async () => {}, query: async () => ({}) } });
    expect((withWebLocks(indexedDBStore({ dbName: "names-locks" })) as { name?: string }).name).toBe("indexeddb");
  });
});
