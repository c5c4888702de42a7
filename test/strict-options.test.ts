// Strict options (issue 18.3): an unknown option key throws a TypeError naming the closest known option, on
// every face, every store factory and per call, before anything is opened, installed or sent.
import express from "express";
import Fastify from "fastify";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { migrate as d1Migrate, schemaSql as d1SchemaSql, d1Store, sweep as d1Sweep } from "../adapters/d1.ts";
import { denoKvStore } from "../adapters/deno-kv.ts";
import { durableObjectStore } from "../adapters/durable-object.ts";
import { indexedDBStore } from "../adapters/indexeddb.ts";
import { ioredisStore } from "../adapters/ioredis.ts";
import { migrate, pgListen, postgresStore, schemaSql, sweep } from "../adapters/postgres.ts";
import { schemaSql as sqliteSchemaSql, sqliteStore, sweep as sqliteSweep } from "../adapters/sqlite.ts";
import { upstashStore } from "../adapters/upstash.ts";
import { idempotency as expressIdempotency } from "../src/express.ts";
import { idempotency as fastifyIdempotency } from "../src/fastify.ts";
import { idempotency as honoIdempotency } from "../src/hono.ts";
import { createIdempotentFetch, memoryStore, withWebLocks } from "../src/index.ts";
import { install } from "../src/install-node.ts";
import { OPTIONS } from "../src/options.ts";
import { openTelemetry } from "../src/otel.ts";
import { idempotency, idempotencyLayer } from "../src/server.ts";

const handler = async () => new Response("ok");
const noClient = { query: async () => ({ rows: [] }) };
/** Shapes that pass the client checks: the option check comes first, so nothing is ever called on them. */
const noDb = { prepare: () => ({}), exec: () => {}, batch: async () => [] };
const noNamespace = { idFromName: () => ({}), get: () => ({ fetch: async () => new Response() }) };

/** Every factory with one typo'd option, the option it meant, and what it is called in the message. */
const factories: [string, () => unknown, string][] = [
  ["createIdempotentFetch()", () => createIdempotentFetch({ ttl: 60 } as never), "ttlSeconds"],
  ["createIdempotentFetch()", () => createIdempotentFetch({ waitTimeoutMS: 10 } as never), "waitTimeoutMs"],
  ["install()", () => install({ storeTimeoutMS: 5 } as never), "storeTimeoutMs"],
  ["idempotency()", () => idempotency(handler, { requireKy: true } as never), "requireKey"],
  ["idempotency()", () => idempotencyLayer({ namespce: "x" } as never), "namespace"],
  ["idempotency()", () => honoIdempotency({ leaseMS: 5 } as never), "leaseMs"],
  ["idempotency()", () => expressIdempotency({ maxBodyByte: 5 } as never), "maxBodyBytes"],
  ["idempotency()", () => fastifyIdempotency({ ieft: true } as never), "ietf"],
  ["autoKey", () => createIdempotentFetch({ autoKey: { window: 5 } } as never), "windowMs"],
  ["circuitBreaker", () => createIdempotentFetch({ circuitBreaker: { failure: 3 } } as never), "failures"],
  ["createIdempotentFetch()", () => createIdempotentFetch({ loger: false } as never), "logger"],
  ["memoryStore()", () => memoryStore({ maxEntry: 5 } as never), "maxEntries"],
  ["indexedDBStore()", () => indexedDBStore({ dbname: "x" } as never), "dbName"],
  ["ioredisStore()", () => ioredisStore({ redis: {}, replicaAk: { timeoutMs: 5 } } as never), "replicaAck"],
  ["upstashStore()", () => upstashStore({ url: "http://x", token: "t", tokn: "t" } as never), "token"],
  ["postgresStore()", () => postgresStore({ client: noClient, tabel: "t" } as never), "table"],
  ["schemaSql()", () => schemaSql({ tabel: "t" } as never), "table"],
  ["pgListen()", () => pgListen(() => ({}) as never, { retry: 5 } as never), "retryMs"],
  ["denoKvStore()", () => denoKvStore({ kv: {}, prefx: ["a"] } as never), "prefix"],
  ["sqliteStore()", () => sqliteStore({ db: noDb, busyTimeout: 5 } as never), "busyTimeoutMs"],
  ["schemaSql()", () => sqliteSchemaSql({ tabl: "t" } as never), "table"],
  ["sweep()", () => sqliteSweep(noDb as never, { limits: 5 } as never), "limit"],
  ["d1Store()", () => d1Store({ db: noDb, migrat: false } as never), "migrate"],
  ["schemaSql()", () => d1SchemaSql({ Table: "t" } as never), "table"],
  ["durableObjectStore()", () => durableObjectStore(noNamespace, { waitMS: 5 } as never), "waitMs"],
  ["withWebLocks()", () => withWebLocks(memoryStore(), { nam: "x" } as never), "name"],
  ["openTelemetry()", () => openTelemetry({ tracr: {} } as never), "tracer"],
];

describe("every factory refuses an unknown option, naming the closest known one", () => {
  it.each(factories)("%s: %s", (where, make, meant) => {
    let thrown: unknown;
    try {
      make();
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(TypeError);
    expect((thrown as Error).message).toContain(`${where} has no option`);
    expect((thrown as Error).message).toContain(`did you mean "${meant}"?`);
  });

  it.each([
    ["migrate()", () => migrate(noClient as never, { tabel: "t" } as never), "table"],
    ["sweep()", () => sweep(noClient as never, { limt: 5 } as never), "limit"],
    ["migrate()", () => d1Migrate(noDb as never, { tabel: "t" } as never), "table"],
    ["sweep()", () => d1Sweep(noDb as never, { limt: 5 } as never), "limit"],
  ])("%s rejects before it queries", async (where, make, meant) => {
    await expect(make()).rejects.toThrow(new RegExp(`${where.replace(/[()]/g, "\\$&")} has no option .*"${meant}"`));
  });

  it("install() with a typo installs nothing: a later install still works and uninstalls", () => {
    expect(() => install({ ttl: 5 } as never)).toThrow(TypeError);
    const uninstall = install();
    uninstall();
  });

  it("the server faces refuse the client's own options (they would be ignored there)", () => {
    for (const name of ["fetch", "autoKey", "sendKeyHeader"]) {
      expect(() => idempotency(handler, { [name]: undefined } as never)).toThrow(`has no option "${name}"`);
    }
  });

  it("a name far from every option lists the known ones instead of guessing", () => {
    expect(() => memoryStore({ zzzzzzzz: 1 } as never)).toThrow(
      'memoryStore() has no option "zzzzzzzz"; its options are "maxEntries", "now"',
    );
  });

  it("options that are not an object are a TypeError too", () => {
    expect(() => createIdempotentFetch("fast" as never)).toThrow(/createIdempotentFetch\(\) options must be an object/);
    expect(() => idempotency(handler, null as never)).toThrow(/idempotency\(\) options must be an object/);
  });

  it("every option the interface names is accepted by the faces that take it", () => {
    for (const [name, face] of Object.entries(OPTIONS)) {
      if (face === "both") expect(() => idempotencyLayer({ [name]: undefined } as never)).not.toThrow();
      expect(() => createIdempotentFetch({ [name]: undefined } as never)).not.toThrow();
    }
  });
});

describe("per call", () => {
  it("init.idempotency with a typo rejects before the call is sent", async () => {
    let sent = 0;
    const f = createIdempotentFetch({ fetch: async () => new Response(String(++sent)) });
    const call = f("http://api.test/x", { method: "POST", body: "{}", idempotency: { ttl: 5 } as never });
    await expect(call).rejects.toThrow(/init\.idempotency has no option "ttl"; did you mean "ttlSeconds"\?/);
    expect(sent).toBe(0);
  });

  it("the server's per-request options with a typo reject before the handler runs", async () => {
    let runs = 0;
    const layer = idempotencyLayer();
    const request = new Request("http://s.test/x", { method: "POST", body: "{}" });
    const call = layer.handle(request, async () => new Response(String(++runs)), { waitUntill: () => {} } as never);
    await expect(call).rejects.toThrow(/did you mean "waitUntil"\?/);
    expect(runs).toBe(0);
  });

  it("forget() with a typo rejects naming the option", async () => {
    const f = createIdempotentFetch();
    await expect(f.forget("k", { headrs: {} } as never)).rejects.toThrow(
      /forget\(\) has no option "headrs"; did you mean "headers"\?/,
    );
  });
});

describe("the faces still mount with their real options", () => {
  it("hono, express and fastify take a full set of server options", async () => {
    const options = { requireKey: true, methods: ["POST"], ietf: true, ttlSeconds: 5, credentialHeaders: ["x"] };
    new Hono().use(honoIdempotency(options));
    express().use(expressIdempotency(options));
    const app = Fastify();
    app.register(fastifyIdempotency(options));
    await app.ready();
    await app.close();
  });
});
