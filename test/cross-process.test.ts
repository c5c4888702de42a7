// Several Node processes sharing one real Redis (directly, and through the Upstash REST protocol): coalescing, crash, outage, fuzz.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ioredisStore } from "../adapters/ioredis.ts";
import { upstashStore } from "../adapters/upstash.ts";
import { createIdempotentFetch, type IdempotencyStore } from "../src/index.ts";
import { type PrivateRedis, spawnWorker, startPrivateRedis, type Worker } from "./fixtures/processes.ts";
import { startUpstashFixture } from "./fixtures/upstash-server.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";
import { sleep } from "./fixtures/util.ts";
import type { Outcome } from "./fixtures/worker.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
let up: Upstream;
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(() => up.close());
beforeEach(() => up.reset());

const exec = promisify(execFile);
const EXIT_AFTER_READ = new URL("./fixtures/exit-after-read.ts", import.meta.url).pathname;

const decode = (o: Outcome) => Buffer.from(o.body, "base64").toString("utf8");

type Backend = "ioredis" | "upstash";

/** Env for a worker talking to `redisUrl` through `backend`, plus whatever must be closed after. */
async function backendFor(backend: Backend, redisUrl: string) {
  if (backend === "ioredis") return { env: { STORE: "ioredis", REDIS_URL: redisUrl }, close: async () => {} };
  const fixture = await startUpstashFixture({ redisUrl });
  return { env: { STORE: "upstash", UPSTASH_URL: fixture.url, UPSTASH_TOKEN: fixture.token }, close: fixture.close };
}

describe.each(["ioredis", "upstash"] as const)("across processes via %s", (backend) => {
  let workers: Worker[] = [];
  let closeBackend: () => Promise<void> = async () => {};
  const spawnAll = async (k: number, extra: Record<string, string> = {}, redisUrl = REDIS_URL) => {
    const b = await backendFor(backend, redisUrl);
    closeBackend = b.close;
    workers = await Promise.all(Array.from({ length: k }, () => spawnWorker({ ...b.env, ...extra })));
    return workers;
  };
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.exit()));
    await closeBackend();
  });

  it("4 processes × 25 concurrent calls with one key make 1 upstream call and get identical bytes; another body gets 409", async () => {
    const ws = await spawnAll(4);
    const key = `${run}-${backend}-same`;
    const call = { url: `${up.url}/echo?ms=200`, key, body: '{"prompt":"hi"}' };
    const results = (await Promise.all(ws.map((w) => w.fire(Array.from({ length: 25 }, () => call))))).flat();
    expect(results).toHaveLength(100);
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(new Set(results.map((r) => r.body)).size).toBe(1);
    expect(up.count()).toBe(1);
    const [other] = await (ws[1] as Worker).fire([{ ...call, body: '{"prompt":"other"}' }]);
    expect(other?.status).toBe(409);
    expect(JSON.parse(decode(other as Outcome)).error.code).toBe("IDEMPOTENCY_CONFLICT");
    expect(up.count()).toBe(1);
    await Promise.all(ws.map((w) => w.exit()));
  });

  it("kill -9 of the leader mid-request: nothing runs twice while its lease lives; a waiter takes over after it", async () => {
    const [leader, waiter] = await spawnAll(2, { LEASE_MS: "600" });
    const call = { url: `${up.url}/echo?ms=3000`, key: `${run}-${backend}-crash`, body: "{}" };
    void (leader as Worker).fire([call]);
    await (leader as Worker).waitForEvent("execute");
    const waiting = (waiter as Worker).fire([call]);
    await (waiter as Worker).waitForEvent("wait");
    await sleep(1500); // 2.5 leases: the leader's heartbeat keeps its lease alive
    expect(up.count()).toBe(1);
    const killedAt = Date.now();
    (leader as Worker).child.kill("SIGKILL");
    const [outcome] = await waiting;
    expect(outcome?.status).toBe(200);
    expect(JSON.parse(decode(outcome as Outcome)).n).toBe(2);
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(3000); // the takeover ran the 3 s call itself
    expect((waiter as Worker).events).toContain("takeover");
    expect(up.count()).toBe(2);
    await Promise.all(workers.map((w) => w.exit()));
  });

  it("race fuzz: 3 processes × 150 calls over random keys and bodies keep every invariant", async () => {
    const ws = await spawnAll(3);
    const keys = Array.from({ length: 15 }, (_, i) => `${run}-${backend}-fuzz-${i}`);
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const plans = ws.map(() =>
      Array.from({ length: 150 }, () => {
        const key = keys[rand(keys.length)] as string;
        return { url: `${up.url}/echo?ms=20`, key, body: `{"v":${rand(2)}}` };
      }),
    );
    const outcomes = await Promise.all(ws.map((w, i) => w.fire(plans[i] as never)));
    const byKey = new Map<string, { body: string; outcome: Outcome }[]>();
    outcomes.forEach((list, i) => {
      list.forEach((outcome, j) => {
        const call = (plans[i] as { key: string; body: string }[])[j] as { key: string; body: string };
        const entry = byKey.get(call.key) ?? [];
        entry.push({ body: call.body, outcome });
        byKey.set(call.key, entry);
      });
    });
    for (const key of keys) {
      const executions = up.keys.filter((k) => k === key).length;
      const entries = byKey.get(key) ?? [];
      if (entries.length === 0) continue;
      expect(executions, key).toBe(1);
      const ok = entries.filter((e) => e.outcome.status === 200);
      const winner = JSON.parse(decode(ok[0]?.outcome as Outcome)).body as string;
      expect(new Set(ok.map((e) => e.outcome.body)).size, key).toBe(1);
      for (const e of entries) {
        expect(e.outcome.error, key).toBeUndefined();
        expect(e.outcome.status, `${key} ${e.body}`).toBe(e.body === winner ? 200 : 409);
      }
    }
    await Promise.all(ws.map((w) => w.exit()));
  });

  it("processes that exit the moment they have read the body lose nothing: 1 execution, the later ones replay", async () => {
    const b = await backendFor(backend, REDIS_URL);
    try {
      const key = `${run}-${backend}-exit`;
      const outcomes: { status: number; body: string; replayed: boolean }[] = [];
      for (let i = 0; i < 4; i++) {
        const { stdout } = await exec(process.execPath, ["--import", "tsx", EXIT_AFTER_READ], {
          env: { ...process.env, ...b.env, TARGET: `${up.url}/echo?ms=50`, KEY: key },
        });
        outcomes.push(JSON.parse(stdout.trim().split("\n").at(-1) as string));
      }
      expect(up.count("/echo")).toBe(1);
      expect(outcomes.map((o) => o.status)).toEqual([200, 200, 200, 200]);
      expect(outcomes.map((o) => o.replayed)).toEqual([false, true, true, true]);
      expect(new Set(outcomes.map((o) => o.body)).size).toBe(1);
    } finally {
      await b.close();
    }
  });
});

describe.each(["ioredis", "upstash"] as const)("a Redis outage under %s", (backend) => {
  let redis: PrivateRedis;
  let client: Redis | undefined;
  let closeFixture: () => Promise<void> = async () => {};
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);

  beforeAll(async () => {
    redis = await startPrivateRedis();
    process.on("unhandledRejection", onUnhandled);
  });
  afterAll(async () => {
    process.off("unhandledRejection", onUnhandled);
    client?.disconnect();
    await closeFixture();
    await redis.stop();
  });

  const makeStore = async (): Promise<IdempotencyStore> => {
    if (backend === "ioredis") {
      client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 500 });
      client.on("error", () => {});
      await new Promise((r) => client?.once("ready", r));
      return ioredisStore({ redis: client });
    }
    const fixture = await startUpstashFixture({ redisUrl: redis.url });
    closeFixture = fixture.close;
    return upstashStore({ url: fixture.url, token: fixture.token });
  };

  it("fail-open proceeds, fail-closed answers 503, nothing hangs; protection resumes when Redis is back", async () => {
    const store = await makeStore();
    const events: string[] = [];
    const open = createIdempotentFetch({ store, storeTimeoutMs: 500, onEvent: (e) => events.push(e.type) });
    const closed = createIdempotentFetch({ store, storeTimeoutMs: 500, onStoreError: "closed" });
    const call = (f: typeof open, key: string) =>
      f(`${up.url}/echo?ms=20`, { method: "POST", headers: { "idempotency-key": key }, body: "{}" });

    await Promise.all([call(open, "before"), call(open, "before")]);
    await call(closed, "before");
    expect(up.count()).toBe(1);

    // Under load: calls in flight while Redis dies.
    const load = Array.from({ length: 30 }, (_, i) => call(open, `load-${i}`));
    await redis.stop();
    const started = Date.now();
    const during = await Promise.all([...load, ...Array.from({ length: 20 }, (_, i) => call(open, `down-${i}`))]);
    expect(during.every((r) => r.status === 200)).toBe(true);
    const refused = await Promise.all(Array.from({ length: 5 }, (_, i) => call(closed, `closed-${i}`)));
    expect(refused.map((r) => r.status)).toEqual([503, 503, 503, 503, 503]);
    expect(JSON.parse(await (refused[0] as Response).text()).error.code).toBe("IDEMPOTENCY_STORE_UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(4000);
    expect(events).toContain("store-error");

    await redis.start();
    if (client) await new Promise((r) => (client?.status === "ready" ? r(null) : client?.once("ready", r)));
    const countBefore = up.count();
    let resumed = false;
    for (let i = 0; i < 40 && !resumed; i++) {
      const a = await call(closed, `after-${i}`);
      const b = await call(closed, `after-${i}`);
      resumed = a.status === 200 && b.headers.get("idempotent-replayed") === "true";
      if (!resumed) await sleep(250);
    }
    expect(resumed).toBe(true);
    expect(up.count()).toBeGreaterThan(countBefore);
    expect(unhandled).toEqual([]);
  });
});
