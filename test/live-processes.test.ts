// Issue 17 across real processes: Node workers with createIdempotentFetch on one real Redis (ioredisStore, and
// upstashStore through the REST fixture) and an SSE upstream.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { spawnWorker, type Worker } from "./fixtures/processes.ts";
import { type LocalCluster, startCluster } from "./fixtures/redis-cluster.ts";
import { startUpstashFixture, type UpstashFixture } from "./fixtures/upstash-server.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";
import { sleep } from "./fixtures/util.ts";
import type { Outcome } from "./fixtures/worker.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const decode = (base64: string) => Buffer.from(base64, "base64").toString("utf8");

let up: Upstream;
const workers: Worker[] = [];
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(async () => {
  await Promise.all(workers.map((w) => w.exit().catch(() => {})));
  await up.close();
});
beforeEach(() => up.reset());

const spawnAll = async (k: number, extra: Record<string, string> = {}): Promise<Worker[]> => {
  const ws = await Promise.all(Array.from({ length: k }, () => spawnWorker({ STORE: "ioredis", REDIS_URL, ...extra })));
  workers.push(...ws);
  return ws;
};

describe("live streams across processes via ioredis", () => {
  it("a duplicate in another process gets its first chunk before the leader's stream ends, and the same bytes", async () => {
    const [leader, other] = (await spawnAll(2)) as [Worker, Worker];
    const call = { url: `${up.url}/sse?chunks=5&gap=150`, key: `${run}-live`, body: '{"prompt":"hi"}' };
    const leading = leader.fire([call]);
    await leader.waitForEvent("execute");
    await sleep(100);
    const [dup] = (await other.fire([call])) as [Outcome];
    const [first] = (await leading) as [Outcome];
    expect(first.error).toBeUndefined();
    expect(dup.error).toBeUndefined();
    expect(dup.replayed).toBe(true);
    expect(decode(dup.body)).toBe(decode(first.body));
    expect(decode(first.body)).toBe("data: 1-0\n\ndata: 1-1\n\ndata: 1-2\n\ndata: 1-3\n\ndata: 1-4\n\n");
    expect(dup.firstAt).toBeGreaterThan(0);
    expect(dup.firstAt).toBeLessThan(first.endAt);
    expect(up.count()).toBe(1);
    await Promise.all([leader.exit(), other.exit()]);
  });

  it("kill -9 of the leader mid-stream: the reader holding a prefix gets an error, the next retry executes once", async () => {
    const [leader, other, retrier] = (await spawnAll(3, { LEASE_MS: "600" })) as [Worker, Worker, Worker];
    const call = { url: `${up.url}/sse?chunks=20&gap=150`, key: `${run}-kill`, body: '{"prompt":"hi"}' };
    void leader.fire([call]);
    await leader.waitForEvent("execute");
    await sleep(100);
    const reading = other.fire([call]);
    await sleep(400);
    leader.child.kill("SIGKILL");
    const [dup] = (await reading) as [Outcome];
    expect(dup.error).toBeDefined();
    const prefix = decode(dup.prefix ?? "");
    expect(prefix.length).toBeGreaterThan(0);
    // A prefix of the dead execution's bytes only.
    expect(prefix.startsWith("data: 1-0\n\n")).toBe(true);
    expect(prefix).not.toContain("2-");
    expect(up.count()).toBe(1);

    const [again] = (await retrier.fire([{ ...call, url: `${up.url}/sse?chunks=3&gap=20` }])) as [Outcome];
    expect(again.error).toBeUndefined();
    expect(decode(again.body)).toBe("data: 2-0\n\ndata: 2-1\n\ndata: 2-2\n\n");
    expect(up.count()).toBe(2);
    await Promise.all([other.exit(), retrier.exit()]);
  });
});

describe("live streams across processes via ioredis on a Redis Cluster", () => {
  let cluster: LocalCluster | undefined;
  beforeAll(async () => {
    // A cluster of this file's own (its own directory and free ports): never one another run is using.
    cluster = await startCluster(`live-processes-${process.pid}`);
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it("a duplicate in another process gets its first chunk before the leader's stream ends, and the same bytes", async () => {
    const env = { REDIS_CLUSTER: (cluster as LocalCluster).ports.join(",") };
    const [leader, other] = (await spawnAll(2, env)) as [Worker, Worker];
    const call = { url: `${up.url}/sse?chunks=5&gap=150`, key: `${run}-cluster-live`, body: '{"prompt":"hi"}' };
    const leading = leader.fire([call]);
    await leader.waitForEvent("execute");
    await sleep(100);
    const [dup] = (await other.fire([call])) as [Outcome];
    const [first] = (await leading) as [Outcome];
    expect(dup.error).toBeUndefined();
    expect(dup.replayed).toBe(true);
    expect(decode(dup.body)).toBe(decode(first.body));
    expect(dup.firstAt).toBeGreaterThan(0);
    expect(dup.firstAt).toBeLessThan(first.endAt);
    expect(up.count()).toBe(1);
    await Promise.all([leader.exit(), other.exit()]);
  });
});

describe("live streams across processes via upstash (REST, readers poll)", () => {
  let fixture: UpstashFixture | undefined;
  beforeAll(async () => {
    fixture = await startUpstashFixture({ redisUrl: REDIS_URL });
  });
  afterAll(async () => {
    await fixture?.close();
  });

  it("a duplicate in another process gets its first chunk before the leader's stream ends, and the same bytes", async () => {
    const { url, token } = fixture as UpstashFixture;
    const [leader, other] = (await spawnAll(2, { STORE: "upstash", UPSTASH_URL: url, UPSTASH_TOKEN: token })) as [
      Worker,
      Worker,
    ];
    const call = { url: `${up.url}/sse?chunks=5&gap=150`, key: `${run}-upstash-live`, body: '{"prompt":"hi"}' };
    const leading = leader.fire([call]);
    await leader.waitForEvent("execute");
    await sleep(100);
    const [dup] = (await other.fire([call])) as [Outcome];
    const [first] = (await leading) as [Outcome];
    expect(first.error).toBeUndefined();
    expect(dup.error).toBeUndefined();
    expect(dup.replayed).toBe(true);
    expect(decode(dup.body)).toBe(decode(first.body));
    expect(dup.firstAt).toBeGreaterThan(0);
    expect(dup.firstAt).toBeLessThan(first.endAt);
    expect(up.count()).toBe(1);
    await Promise.all([leader.exit(), other.exit()]);
  });
});
