// The store guard: one deadline per store call, failures named, a circuit breaker that stops a dead store from
// costing every request its timeout, and one warning per state change. Faults on a real Redis: stopped, paused,
// blackholed.
import { createServer, type Server, type Socket } from "node:net";
import { Redis } from "ioredis";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { ioredisStore } from "../adapters/ioredis.ts";
import type { IdempotencyEvent, IdempotencyStore } from "../src/index.ts";
import { memoryStore } from "../src/index.ts";
import { liveMemoryStore } from "../src/memory-live.ts";
import { idempotency } from "../src/server.ts";
import { hasLive, newToken } from "../src/store.ts";
import { classify, guardStore, StoreUnavailableError } from "../src/store-guard.ts";
import { freePort, type PrivateRedis, startPrivateRedis } from "./fixtures/processes.ts";
import { sleep } from "./fixtures/util.ts";

/** A memory store whose calls can be made to reject or hang: the fault is the test's switch. */
function switchable(): IdempotencyStore & { mode: "ok" | "reject" | "hang"; calls: number } {
  const inner = memoryStore();
  const wrap =
    <A extends unknown[], T>(run: (...args: A) => Promise<T>) =>
    (...args: A): Promise<T> => {
      store.calls++;
      if (store.mode === "reject")
        return Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
      if (store.mode === "hang") return new Promise<T>(() => {});
      return run(...args);
    };
  const store = {
    mode: "ok" as "ok" | "reject" | "hang",
    calls: 0,
    acquire: wrap(inner.acquire.bind(inner)),
    commit: wrap(inner.commit.bind(inner)),
    release: wrap(inner.release.bind(inner)),
    renew: wrap(inner.renew.bind(inner)),
    forget: wrap(inner.forget.bind(inner)),
  };
  return store;
}

const warnings = (): { warn(message: string): void; lines: string[] } => {
  const lines: string[] = [];
  return { lines, warn: (message) => lines.push(message) };
};

const post = (key: string, body = "{}"): Request =>
  new Request("http://app.test/charge", {
    method: "POST",
    headers: { "idempotency-key": key, "content-type": "application/json" },
    body,
  });

/** Sends `request` and returns the response and how long it took, in ms. */
async function timed(run: () => Promise<Response>): Promise<{ response: Response; ms: number }> {
  const started = performance.now();
  const response = await run();
  await response.arrayBuffer();
  return { response, ms: performance.now() - started };
}

describe("guardStore", () => {
  it("classifies failures: refused by code or message, timeout, anything else an error", () => {
    expect(classify(Object.assign(new Error("boom"), { code: "ECONNREFUSED" }))).toBe("refused");
    expect(classify(new Error("Connection is closed."))).toBe("refused");
    expect(classify(new TypeError("fetch failed", { cause: { code: "ECONNRESET" } }))).toBe("refused");
    expect(classify(new Error("idemfetch: store acquire timed out after 5 ms"))).toBe("timeout");
    expect(classify(new StoreUnavailableError("circuit-open", "x"))).toBe("circuit-open");
    expect(classify(new Error("WRONGTYPE Operation against a key holding the wrong kind of value"))).toBe("error");
  });

  it("opens after `failures` failures in a row: calls then fail at once without touching the store", async () => {
    const inner = switchable();
    const log = warnings();
    const changes: IdempotencyEvent[] = [];
    const store = guardStore(inner, {
      timeoutMs: 1000,
      breaker: { failures: 3, cooldownMs: 60_000 },
      logger: log,
      onStoreError: "open",
      onChange: (c) => changes.push(c),
    });
    inner.mode = "reject";
    for (let i = 0; i < 3; i++)
      await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "refused" });
    expect(inner.calls).toBe(3);
    const started = performance.now();
    await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "circuit-open" });
    expect(performance.now() - started).toBeLessThan(20);
    expect(inner.calls).toBe(3);
    expect(changes).toEqual([
      { type: "circuit-open", store: "store", reason: "refused", failures: 3, cooldownMs: 60_000 },
    ]);
    // One warning when it started failing, one when the circuit opened: not one per call.
    expect(log.lines).toHaveLength(2);
    expect(log.lines[0]).toMatch(/refused the connection on acquire.*without cross-process protection/);
    expect(log.lines[1]).toMatch(/failed 3 times in a row \(last: refused\); circuit open/);
  });

  it("a success resets the run: failures must be consecutive", async () => {
    const inner = switchable();
    const store = guardStore(inner, {
      timeoutMs: 1000,
      breaker: { failures: 2, cooldownMs: 60_000 },
      logger: undefined,
      onStoreError: "open",
    });
    inner.mode = "reject";
    await expect(store.acquire("k", "f", 1000)).rejects.toThrow();
    inner.mode = "ok";
    await store.acquire("k2", "f", 1000);
    inner.mode = "reject";
    await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "refused" });
    await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "refused" });
    await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "circuit-open" });
  });

  it("after the cool-down one probe goes through; its success closes the circuit, its failure reopens it", async () => {
    let clock = 0;
    const inner = switchable();
    const log = warnings();
    const changes: IdempotencyEvent[] = [];
    const store = guardStore(inner, {
      timeoutMs: 1000,
      breaker: { failures: 1, cooldownMs: 100 },
      logger: log,
      onStoreError: "closed",
      onChange: (c) => changes.push(c),
      now: () => clock,
    });
    inner.mode = "reject";
    await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "refused" });
    clock = 50;
    await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "circuit-open" });
    clock = 100;
    // The probe fails: open again for another cool-down, and no new warning or event.
    await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "refused" });
    await expect(store.acquire("k", "f", 1000)).rejects.toMatchObject({ reason: "circuit-open" });
    expect(inner.calls).toBe(2);
    inner.mode = "ok";
    clock = 250;
    // While the probe is in flight the circuit is half-open: other calls are still skipped.
    const probe = store.acquire("k", "f", 1000);
    await expect(store.acquire("k3", "f", 1000)).rejects.toMatchObject({ reason: "circuit-open" });
    expect((await probe).state).toBe("acquired");
    expect((await store.acquire("k2", "f", 1000)).state).toBe("acquired");
    expect(changes.map((c) => c.type)).toEqual(["circuit-open", "circuit-close"]);
    expect(changes[1]).toMatchObject({ openMs: 250 });
    expect(log.lines).toHaveLength(2);
    expect(log.lines[0]).toMatch(/circuit open.*answered 503/);
    expect(log.lines[1]).toMatch(/answers again; circuit closed after 250 ms/);
  });

  it("a call that hangs times out once, and an acquire that lands after it is released", async () => {
    const inner = switchable();
    let landed: (() => void) | undefined;
    const real = inner.acquire;
    // Only the first acquire is late.
    inner.acquire = (...args) => {
      inner.acquire = real;
      return new Promise((resolve) => {
        landed = () => resolve(real(...args));
      });
    };
    const store = guardStore(inner, { timeoutMs: 30, breaker: false, logger: undefined, onStoreError: "open" });
    await expect(store.acquire("k", "f", 60_000)).rejects.toMatchObject({ reason: "timeout" });
    landed?.();
    await sleep(10);
    // Released: the key is free at once, not after the 60 s lease.
    expect((await store.acquire("k", "f", 60_000)).state).toBe("acquired");
  });

  it("a stale token (false) is an answer, not a failure", async () => {
    const inner = switchable();
    const store = guardStore(inner, {
      timeoutMs: 1000,
      breaker: { failures: 1, cooldownMs: 60_000 },
      logger: undefined,
      onStoreError: "open",
    });
    expect(await store.release("k", "not-the-owner")).toBe(false);
    expect((await store.acquire("k", "f", 1000)).state).toBe("acquired");
  });

  it("a waiter that saw a live lease never executes, even once the circuit opens", async () => {
    const shared = switchable();
    let runs = 0;
    let finish: (() => void) | undefined;
    const handler = async (): Promise<Response> => {
      runs++;
      await new Promise<void>((resolve) => {
        finish = resolve;
      });
      return Response.json({ ok: true });
    };
    const options = {
      store: shared,
      waitTimeoutMs: 600,
      storeTimeoutMs: 100,
      circuitBreaker: { failures: 1, cooldownMs: 60_000 },
      logger: false as const,
    };
    const a = idempotency(handler, options);
    const b = idempotency(handler, options);
    const first = a(post("w1"));
    while (runs === 0) await sleep(5);
    const events: string[] = [];
    const waiting = idempotency(handler, { ...options, onEvent: (e) => events.push(e.type) })(post("w1"));
    while (!events.includes("wait")) await sleep(5);
    shared.mode = "reject";
    const answer = await waiting;
    expect(answer.status).toBe(409);
    expect(((await answer.json()) as { error: { code: string } }).error.code).toBe("IDEMPOTENCY_IN_PROGRESS");
    expect(events).toContain("circuit-open");
    expect(runs).toBe(1);
    shared.mode = "ok";
    finish?.();
    expect((await first).status).toBe(200);
    await Promise.all([a.close(), b.close()]);
  });

  it("with onStoreError closed, the 503 names the cause: refused, then circuit open", async () => {
    const shared = switchable();
    shared.mode = "reject";
    const handler = idempotency(() => Response.json({ ran: true }), {
      store: shared,
      onStoreError: "closed",
      circuitBreaker: { failures: 1, cooldownMs: 60_000 },
      logger: false,
    });
    const first = await handler(post("c1"));
    expect(first.status).toBe(503);
    expect(((await first.json()) as { error: { message: string } }).error.message).toBe(
      "Idempotency store is unavailable (refused)",
    );
    const second = await handler(post("c2"));
    expect(((await second.json()) as { error: { message: string } }).error.message).toBe(
      "Idempotency store is unavailable (circuit open)",
    );
  });

  it("rejects nonsense options at construction", () => {
    expect(() => idempotency(() => new Response(), { circuitBreaker: { failures: 0 } })).toThrow(TypeError);
    expect(() => idempotency(() => new Response(), { circuitBreaker: "on" as never })).toThrow(TypeError);
    expect(() => idempotency(() => new Response(), { logger: { log() {} } as never })).toThrow(/warn/);
  });
});

/** A TCP server that accepts connections and never answers a byte: a blackholed store. */
async function blackhole(): Promise<{ url: string; close(): Promise<void> }> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `redis://127.0.0.1:${port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A new user's set-up: a default `new Redis(url)` and ioredisStore. Sends sequential requests with fresh keys
 * and returns each one's latency, so the cost before and after the circuit opens can be read off.
 */
async function latencies(
  handler: (request: Request) => Promise<Response>,
  count: number,
  prefix: string,
): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push((await timed(() => handler(post(`${prefix}-${i}`)))).ms);
  return out;
}

const fmt = (ms: number[]): string => ms.map((m) => m.toFixed(1)).join(", ");

describe("a dead Redis behind a default client", () => {
  const clients: Redis[] = [];
  let redis: PrivateRedis | undefined;
  afterEach(async () => {
    for (const client of clients.splice(0)) client.disconnect();
    await redis?.stop();
    redis = undefined;
  });
  afterAll(async () => {
    await redis?.stop();
  });

  const face = (url: string, log: { warn(m: string): void }, events: IdempotencyEvent[]) => {
    const client = new Redis(url, { lazyConnect: false });
    client.on("error", () => {});
    clients.push(client);
    let runs = 0;
    const handler = idempotency(
      () => {
        runs++;
        return Response.json({ ok: true });
      },
      {
        store: ioredisStore({ redis: client }),
        storeTimeoutMs: 300,
        circuitBreaker: { failures: 3, cooldownMs: 800 },
        logger: log,
        onEvent: (e) => events.push(e),
      },
    );
    return { handler, runs: () => runs };
  };

  /** What each fault measures: requests before the circuit opens cost the timeout, after it nearly nothing. */
  async function throughFault(name: string, fault: "stopped" | "paused", recover = true): Promise<void> {
    redis = await startPrivateRedis();
    const log = warnings();
    const events: IdempotencyEvent[] = [];
    const { handler, runs } = face(redis.url, log, events);
    const healthy = await latencies(handler, 3, `${name}-ok`);
    if (fault === "stopped") await redis.stop();
    else redis.signal("SIGSTOP");
    const before = await latencies(handler, 3, `${name}-down`);
    const after = await latencies(handler, 5, `${name}-open`);
    console.log(
      `[breaker] ${name}: healthy ${fmt(healthy)} ms; before the circuit opens ${fmt(before)} ms; after ${fmt(after)} ms`,
    );
    // Fail-open: every request still ran.
    expect(runs()).toBe(11);
    for (const ms of before) expect(ms).toBeGreaterThanOrEqual(290);
    for (const ms of after) expect(ms).toBeLessThan(100);
    expect(events.filter((e) => e.type === "circuit-open")).toHaveLength(1);
    expect(events.find((e) => e.type === "circuit-open")).toMatchObject({ reason: "timeout", failures: 3 });
    expect(log.lines).toHaveLength(2);
    if (!recover) return;
    if (fault === "stopped") await redis.start();
    else redis.signal("SIGCONT");
    // After the cool-down a probe closes the circuit, and duplicates are protected again.
    await sleep(900);
    const deadline = Date.now() + 5000;
    while (!events.some((e) => e.type === "circuit-close") && Date.now() < deadline) {
      await latencies(handler, 1, `${name}-probe-${Date.now()}`);
      await sleep(50);
    }
    expect(events.filter((e) => e.type === "circuit-close")).toHaveLength(1);
    const ran = runs();
    await (await handler(post(`${name}-again`))).arrayBuffer();
    const replay = await handler(post(`${name}-again`));
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(runs()).toBe(ran + 1);
    expect(log.lines.at(-1)).toMatch(/answers again; circuit closed/);
  }

  it("stopped (kill -9): the first requests cost the timeout, then the circuit opens and they cost nothing", async () => {
    await throughFault("stopped", "stopped");
  });

  it("paused (SIGSTOP): the same, and it closes again after SIGCONT", async () => {
    await throughFault("paused", "paused");
  });

  it("blackholed (accepts, never answers): the same", async () => {
    const hole = await blackhole();
    try {
      const log = warnings();
      const events: IdempotencyEvent[] = [];
      const { handler, runs } = face(hole.url, log, events);
      const before = await latencies(handler, 3, "hole-down");
      const after = await latencies(handler, 5, "hole-open");
      console.log(`[breaker] blackholed: before the circuit opens ${fmt(before)} ms; after ${fmt(after)} ms`);
      expect(runs()).toBe(8);
      for (const ms of before) expect(ms).toBeGreaterThanOrEqual(290);
      for (const ms of after) expect(ms).toBeLessThan(100);
      expect(events.find((e) => e.type === "circuit-open")).toMatchObject({ reason: "timeout" });
      expect(log.lines).toHaveLength(2);
    } finally {
      await hole.close();
    }
  });
});

describe("the live-stream capability through the guard", () => {
  it("stays visible and guarded: a live store is still live, a hung readLive times out, a plain store is not live", async () => {
    const options = { timeoutMs: 50, breaker: false as const, logger: undefined, onStoreError: "open" as const };
    const inner = liveMemoryStore();
    const store = guardStore(inner, options);
    expect(hasLive(store)).toBe(true);
    const acquired = await store.acquire("k", "f", 5000);
    const token = (acquired as { token: string }).token;
    const head = { status: 200, statusText: "", headers: [["content-type", "text/plain"]] as [string, string][] };
    expect(await store.publishLive?.("k", token, { head, offset: 0, body: new Uint8Array([1, 2]) })).toBe(true);
    expect(await store.publishLive?.("k", newToken(), { offset: 2, body: new Uint8Array([3]) })).toBe(false);
    expect(await store.readLive?.("k", undefined, 0)).toMatchObject({
      state: "live",
      head,
      body: new Uint8Array([1, 2]),
    });
    inner.readLive = () => new Promise(() => {});
    await expect(store.readLive?.("k", undefined, 0)).rejects.toMatchObject({ reason: "timeout" });
    expect(hasLive(guardStore(memoryStore(), options))).toBe(false);
  });
});
