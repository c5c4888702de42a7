// idemfetch's middleware over durableObjectStore inside workerd (Miniflare): duplicates across two isolates, wake-ups, and an object restarted mid-lease.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare, type MiniflareOptions } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DurableObjectNamespaceLike, durableObjectStore } from "../../adapters/durable-object.ts";
import type { AcquireResult } from "../../src/store.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { sleep } from "../fixtures/util.ts";
import { bundle } from "./harness.ts";

const post = (key: string, body: unknown): RequestInit => ({
  method: "POST",
  headers: { "idempotency-key": key, "content-type": "application/json" },
  body: JSON.stringify(body),
});
const bytes = async (response: Response): Promise<Buffer> => Buffer.from(await response.arrayBuffer());
/** The store key the middleware uses for `key` (default namespace, anonymous scope). */
const storeKeyOf = (key: string): string => `idemfetch:anonymous:${createHash("sha256").update(key).digest("hex")}`;

/**
 * Three Workers in one workerd: "a" defines IdempotencyObject, "b" and "c" bind a's class. Each Worker is its
 * own isolate, so nothing is shared between them but the objects.
 */
async function workers(upstream: Upstream, persist?: string, leaseMs?: number): Promise<MiniflareOptions> {
  const script = await bundle("./durable-object/worker.ts", "esm");
  const bindings = { UPSTREAM: upstream.url, ...(leaseMs ? { LEASE_MS: String(leaseMs) } : {}) };
  const worker = (name: string) => ({
    modules: true,
    script,
    compatibilityDate: "2025-09-01",
    bindings,
    name,
    routes: [`${name}/*`],
    durableObjects: {
      IDEMPOTENCY: { className: "IdempotencyObject", useSQLite: true, ...(name === "a" ? {} : { scriptName: "a" }) },
    },
  });
  return { ...(persist ? { durableObjectsPersist: persist } : {}), workers: ["a", "b", "c"].map(worker) };
}

/** Worker `name`'s fetch, from Node (dispatchFetch routes by host). */
const isolate = (mf: Miniflare, name: "a" | "b" | "c") => (path: string, init?: RequestInit) =>
  mf.dispatchFetch(`http://${name}${path}`, init as never) as unknown as Promise<Response>;

describe("durableObjectStore in workerd: idempotency() in two isolates over one IdempotencyObject namespace", () => {
  let upstream: Upstream;
  let mf: Miniflare;
  beforeAll(async () => {
    upstream = await startUpstream();
    mf = new Miniflare(await workers(upstream));
  });
  afterAll(async () => {
    await mf?.dispose();
    await upstream?.close();
  });

  it("runs 3 concurrent duplicates from two isolates once, and replays from the other isolate with identical bytes", async () => {
    const key = `do-${randomBytes(4).toString("hex")}`;
    const before = upstream.count("/echo");
    const [a, b] = [isolate(mf, "a"), isolate(mf, "b")];
    const leader = a("/echo?ms=300", post(key, { item: "book" }));
    await sleep(50);
    // One joins the leader in its isolate; one waits in the other isolate for the object to say it committed.
    const joiners = [a, b].map((call) => call("/echo?ms=300", post(key, { item: "book" })));
    const responses = await Promise.all([leader, ...joiners]);
    const bodies = await Promise.all(responses.map(bytes));
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(upstream.count("/echo")).toBe(before + 1);
    for (const body of bodies) expect(body.equals(bodies[0] as Buffer)).toBe(true);

    const replay = await b("/echo?ms=300", post(key, { item: "book" }));
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect((await bytes(replay)).equals(bodies[0] as Buffer)).toBe(true);
    expect(upstream.count("/echo")).toBe(before + 1);
  });

  it("wakes a waiter in the other isolate at the commit, not at its next poll", async () => {
    // After about 1.7 s of waiting the engine polls every 500 ms, so a waiter that only polled finishes at a
    // phase of that period set by its own start; waiters started 150 ms apart do not all land within 100 ms of
    // their leader by polling (with the object's wake-ups switched off: 209-364 ms; with them: 3-16 ms).
    const [a, b] = [isolate(mf, "a"), isolate(mf, "b")];
    const gaps = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const key = `do-wake-${randomBytes(4).toString("hex")}`;
        const timed = async (response: Promise<Response>) => {
          await bytes(await response);
          return performance.now();
        };
        const leader = timed(a("/echo?ms=2500", post(key, {})));
        await sleep(50 + 150 * i);
        const waiter = timed(b("/echo?ms=2500", post(key, {})));
        return (await waiter) - (await leader);
      }),
    );
    console.log(`durable object wake-up, waiter after leader: ${gaps.map((g) => g.toFixed(1)).join(", ")} ms`);
    for (const gap of gaps) expect(gap).toBeLessThan(100);
  });

  it("two duplicates waiting in one isolate for a leader in another both get the leader's answer", async () => {
    // The engine's early join attaches the second to the first's waiting flight. It once failed in workerd
    // (500 "Cannot perform I/O on behalf of a different request": the replay was a stream made in the first's
    // request); engine v3 hands replays out as bytes, so each request writes its own.
    const key = `do-gap-${randomBytes(4).toString("hex")}`;
    const [a, b] = [isolate(mf, "a"), isolate(mf, "b")];
    const leader = a("/echo?ms=300", post(key, {}));
    await sleep(50);
    const waiters = [b("/echo?ms=300", post(key, {})), b("/echo?ms=300", post(key, {}))];
    const responses = await Promise.all([leader, ...waiters]);
    const texts = await Promise.all(responses.map((r) => r.text()));
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(new Set(texts).size).toBe(1);
    expect(responses.slice(1).map((r) => r.headers.get("idempotent-replayed"))).toEqual(["true", "true"]);
  });
});

describe("an IdempotencyObject evicted and restarted mid-lease (storage persisted on disk)", () => {
  const LEASE_MS = 4_000;
  let upstream: Upstream;
  let mf: Miniflare | undefined;
  let dir: string;
  beforeAll(async () => {
    upstream = await startUpstream();
    dir = mkdtempSync(join(tmpdir(), "idemfetch-do-"));
  });
  afterAll(async () => {
    await mf?.dispose();
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps the lease and the records; the lease still expires, then the next call executes once", async () => {
    const options = await workers(upstream, dir, LEASE_MS);
    mf = new Miniflare(options);
    const a = isolate(mf, "a");
    // A record with a body over one storage value (128 KiB): it must come back whole from disk.
    const big = `do-big-${randomBytes(4).toString("hex")}`;
    const stored = await bytes(await a("/bytes?size=300000", post(big, {})));
    expect(stored.length).toBe(300_000);

    // A leader whose upstream never answers: it holds the lease (renewing it) until workerd goes away.
    const key = `do-restart-${randomBytes(4).toString("hex")}`;
    const order = { item: "book" };
    const hanging = a("/echo", {
      ...post(key, order),
      headers: { ...post(key, order).headers, "x-upstream": "/hang" },
    });
    hanging.catch(() => {}); // it dies with the restart
    while (upstream.count("/hang") === 0) await sleep(10);
    await sleep(100); // the lease write has landed before the leader's call upstream
    // The restart: workerd exits (every object evicted from memory) and starts again on the same files.
    await mf.setOptions(options);
    const restartedAt = performance.now();

    const namespace = (await mf.getDurableObjectNamespace("IDEMPOTENCY", "a")) as unknown as DurableObjectNamespaceLike;
    const store = durableObjectStore(namespace);
    const probe: AcquireResult = await store.acquire(storeKeyOf(key), "fp-probe", 60_000);
    expect(probe.state).toBe("pending"); // the dead leader's lease survived the restart

    const before = upstream.count("/echo");
    const [b, c] = [isolate(mf, "b"), isolate(mf, "c")];
    const duplicates = await Promise.all([a, b, c].map((call) => call("/echo", post(key, order))));
    const bodies = await Promise.all(duplicates.map(bytes));
    // They waited for the dead lease to expire (LEASE_MS at most after its last renewal), then ran once.
    expect(performance.now() - restartedAt).toBeLessThan(LEASE_MS + 3_000);
    expect(duplicates.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(upstream.count("/echo")).toBe(before + 1);
    for (const body of bodies) expect(body.equals(bodies[0] as Buffer)).toBe(true);

    const replay = await b("/bytes?size=300000", post(big, {}));
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect((await bytes(replay)).equals(stored)).toBe(true);
    await store.close?.();
  });
});
