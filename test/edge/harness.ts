// Node side of the edge tests: bundles test/edge/app.ts for an isolate, starts the Upstash fixture and the
// upstream on loopback, and defines the checks every runtime passes (edgeSuite).
import { createHash, randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startUpstashFixture, type UpstashFixture } from "../fixtures/upstash-server.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import type { EdgeEnv } from "./app.ts";

/**
 * Bundles an entry of test/edge for an isolate: browser/worker conditions, every dependency inlined
 * (hono, @upstash/redis), and no Node built-in allowed in (esbuild fails on one). `cloudflare:workers` is
 * workerd's own module, left for it to provide.
 */
export async function bundle(entry: string, format: "esm" | "iife"): Promise<string> {
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [new URL(entry, import.meta.url).pathname],
    bundle: true,
    write: false,
    platform: "browser",
    conditions: ["workerd", "worker", "browser"],
    format,
    target: "es2022",
    external: ["cloudflare:workers"],
    logLevel: "silent",
  });
  return (result.outputFiles[0] as { text: string }).text;
}

/** What a quick start's Worker is given: its `bindings` (env) and Durable Object classes, as wrangler.toml would. */
export interface QuickstartConfig {
  bindings?: Record<string, string>;
  durableObjects?: Record<string, { className: string; useSQLite?: boolean }>;
}

/** A README quick start (a Worker module under test/edge/quickstart) running in workerd through Miniflare. */
export async function startQuickstart(entry: string, config: QuickstartConfig): Promise<Miniflare> {
  const script = await bundle(entry, "esm");
  return new Miniflare({ modules: true, script, compatibilityDate: "2025-09-01", ...config });
}

/** The quick starts' call: POST /orders for one book under `key`. */
export const order = (worker: Miniflare, key: string) =>
  worker.dispatchFetch("http://worker/orders", {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key },
    body: JSON.stringify({ item: "book" }),
  });

type Answer = Awaited<ReturnType<typeof order>>;

/**
 * Answers to duplicates of one order, read to the end, then a retry sent: one order created, every answer its
 * bytes, the retry a replay.
 */
export async function expectOneOrder(duplicates: Answer[], sendRetry: () => Promise<Answer>): Promise<void> {
  const bodies = await Promise.all(duplicates.map((r) => r.text()));
  expect(duplicates.map((r) => r.status)).toEqual(duplicates.map(() => 201));
  expect(new Set(bodies).size).toBe(1);
  const retry = await sendRetry();
  expect(retry.headers.get("idempotent-replayed")).toBe("true");
  expect(await retry.text()).toBe(bodies[0]);
  expect(JSON.parse(bodies[0] as string)).toMatchObject({ item: "book" });
}

/** One runtime's two isolates, each answering a request path of the app. */
export interface Isolates {
  a(path: string, init?: RequestInit): Promise<Response>;
  b(path: string, init?: RequestInit): Promise<Response>;
  /** Waits until every promise isolate A's faces handed to waitUntil has settled, and returns the counts. */
  settled(): Promise<{ handed: number; settled: number }>;
  close(): Promise<void>;
}

export interface Backends {
  env: EdgeEnv;
  upstream: Upstream;
  upstash: UpstashFixture;
  /** The value Redis holds for `key` (anonymous scope): "R..." a record, "L..." a lease, null none. */
  stored(key: string): Promise<string | null>;
  close(): Promise<void>;
}

export async function startBackends(runtime: string): Promise<Backends> {
  const upstash = await startUpstashFixture();
  const upstream = await startUpstream();
  const redis = new Redis({ host: "127.0.0.1", port: 6379, lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  const namespace = `edge-${runtime}-${randomBytes(6).toString("hex")}`;
  return {
    env: { UPSTASH_URL: upstash.url, UPSTASH_TOKEN: upstash.token, UPSTREAM: upstream.url, NAMESPACE: namespace },
    upstream,
    upstash,
    stored: (key) => redis.get(`${namespace}:anonymous:${createHash("sha256").update(key).digest("hex")}`),
    async close() {
      const keys = await redis.keys(`${namespace}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await Promise.all([upstash.close(), upstream.close()]);
    },
  };
}

const post = (key: string, body: unknown): RequestInit => ({
  method: "POST",
  headers: { "idempotency-key": key, "content-type": "application/json" },
  body: JSON.stringify(body),
});

const bytes = async (response: Response): Promise<Buffer> => Buffer.from(await response.arrayBuffer());

/** Polls `check` every 25 ms until it returns a value other than undefined, for at most `ms`. */
export async function eventually<T>(check: () => Promise<T | undefined>, ms = 5_000): Promise<T | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined || Date.now() > end) return value;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A face under test: its name, its route prefix in app.ts, whether it hands store writes to waitUntil. */
export type Face = readonly [name: string, route: string, usesWaitUntil: boolean];

/** What differs per runtime: faces only it runs, and what it is known not to do, with the reason. */
export interface SuiteOptions {
  /** Faces only this runtime runs, besides the common ones. */
  faces?: readonly Face[];
  /**
   * A store write nobody handed to waitUntil is dropped when the caller hangs up mid-body (the runtime's
   * doing: no library can run code the runtime cancels). The test then checks the gap is what it says.
   */
  commitsWithoutWaitUntil?: string;
}

/** The checks each runtime passes, for each face running inside it. */
export function edgeSuite(runtime: string, start: (env: EdgeEnv) => Promise<Isolates>, gaps: SuiteOptions = {}): void {
  describe(`${runtime}: idemfetch inside the isolate over upstashStore`, () => {
    let backends: Backends;
    let isolates: Isolates;
    beforeAll(async () => {
      backends = await startBackends(runtime);
      isolates = await start(backends.env);
    });
    afterAll(async () => {
      await isolates?.close();
      await backends?.close();
    });

    it("reaches the loopback upstream from inside the isolate", async () => {
      const before = backends.upstream.count("/echo");
      const response = await isolates.a("/mw/echo", { method: "POST", body: "no key" });
      expect(response.status).toBe(200);
      expect(JSON.parse((await bytes(response)).toString()).body).toBe("no key");
      expect(backends.upstream.count("/echo")).toBe(before + 1);
    });

    const faces: Face[] = [
      ["idempotency(handler)", "mw", true],
      ["Hono middleware", "hono", true],
      ["idempotency(handler) called without ctx", "mw-bare", false],
      ["createIdempotentFetch", "fetch", false],
      ["createIdempotentFetch with idempotency.waitUntil", "fetch-wu", true],
      ...(gaps.faces ?? []),
    ];
    describe.each(faces)("%s", (_name, face, usesWaitUntil) => {
      const key = `${face}-${randomBytes(4).toString("hex")}`;
      const order = { item: "book", qty: 1 };
      let first: Buffer | undefined;

      it("runs 3 concurrent duplicates once, the record in Redis once their bodies are read", async () => {
        const { upstream, stored } = backends;
        const before = upstream.count("/echo");
        const waitsBefore = await isolates.settled();
        const responses = await Promise.all([1, 2, 3].map(() => isolates.a(`/${face}/echo?ms=200`, post(key, order))));
        const bodies = await Promise.all(responses.map(bytes));
        // Durable before delivered: the last byte came after the commit landed.
        expect((await stored(key))?.[0]).toBe("R");
        expect(upstream.count("/echo")).toBe(before + 1);
        expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
        first = bodies[0];
        for (const body of bodies) expect(body.equals(first as Buffer)).toBe(true);
        const waits = await isolates.settled();
        // Each of the three calls handed its store-write promise (the joiners share the leader's).
        expect(waits.handed - waitsBefore.handed).toBe(usesWaitUntil ? 3 : 0);
        expect(waits.settled).toBe(waits.handed);
      });

      it("shares one event stream live with 3 concurrent duplicates", async () => {
        const before = backends.upstream.count("/sse");
        const streamKey = `${key}-sse`;
        const responses = await Promise.all(
          [1, 2, 3].map(() => isolates.a(`/${face}/sse?chunks=4&gap=80`, post(streamKey, order))),
        );
        const texts = await Promise.all(responses.map((r) => r.text()));
        expect(backends.upstream.count("/sse")).toBe(before + 1);
        expect(texts[0]).toMatch(/^(data: \d+-[0-3]\n\n){4}$/);
        expect(texts).toEqual([texts[0], texts[0], texts[0]]);
      });

      const lost = usesWaitUntil ? undefined : gaps.commitsWithoutWaitUntil;
      it(`commits the record after the caller hangs up mid-body${lost ? ` (known gap: ${lost})` : ""}`, async () => {
        const hangup = `${key}-hangup`;
        // An event stream of 4 events 100 ms apart: the caller reads the first, then goes away.
        const response = await isolates.a(`/${face}/sse?chunks=4&gap=100`, post(hangup, order));
        expect(response.status).toBe(200);
        const reader = (response.body as ReadableStream<Uint8Array>).getReader();
        expect((await reader.read()).done).toBe(false);
        await reader.cancel();
        const landed = await eventually(async () => ((await backends.stored(hangup))?.[0] === "R" ? true : undefined));
        if (lost) {
          // The gap as stated: the record does not come in the whole time the faces without it get theirs
          // (not "not yet" after a short sleep), and the key still holds the lease the call took.
          expect(landed).toBeUndefined();
          expect((await backends.stored(hangup))?.[0]).toBe("L");
        } else {
          expect(landed).toBe(true);
        }
      });

      it("replays from a second isolate with identical bytes", async () => {
        const before = backends.upstream.count("/echo");
        const replay = await isolates.b(`/${face}/echo?ms=200`, post(key, order));
        expect(replay.status).toBe(200);
        expect(replay.headers.get("idempotent-replayed")).toBe("true");
        expect(first).toBeDefined();
        expect((await bytes(replay)).equals(first as Buffer)).toBe(true);
        expect(backends.upstream.count("/echo")).toBe(before);
      });

      it("answers 409 from a second isolate for another body under the key", async () => {
        const before = backends.upstream.count("/echo");
        const conflict = await isolates.b(`/${face}/echo?ms=200`, post(key, { ...order, qty: 2 }));
        expect(conflict.status).toBe(409);
        expect(JSON.parse((await bytes(conflict)).toString()).error.code).toBe("IDEMPOTENCY_CONFLICT");
        expect(backends.upstream.count("/echo")).toBe(before);
      });
    });
  });
}
