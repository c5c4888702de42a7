// Issue 17 across real processes: Node workers with createIdempotentFetch on one real store (Redis, a Redis Cluster,
// PostgreSQL, Upstash through the REST fixture, one SQLite file) and an SSE upstream.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { migrate } from "../adapters/postgres.ts";
import { newToken } from "../src/store.ts";
import { spawnWorker, type Worker } from "./fixtures/processes.ts";
import { type LocalCluster, startCluster } from "./fixtures/redis-cluster.ts";
import { startUpstashFixture, type UpstashFixture } from "./fixtures/upstash-server.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";
import { sleep } from "./fixtures/util.ts";
import type { Outcome } from "./fixtures/worker.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const PG_URL = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";
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

/** Starts `k` workers on one store: `env` names it (STORE and its settings); `extra` adds settings per case. */
type Spawn = (k: number, extra?: Record<string, string>) => Promise<Worker[]>;

const spawner =
  (env: () => Record<string, string>): Spawn =>
  async (k, extra = {}) => {
    const ws = await Promise.all(Array.from({ length: k }, () => spawnWorker({ ...env(), ...extra })));
    workers.push(...ws);
    return ws;
  };

/** A duplicate in another process reads the leader's stream live: its first chunk comes before the stream ends. */
const firstChunkBeforeTheEnd =
  (spawn: Spawn, label: string, k = 2) =>
  async () => {
    const [leader, ...others] = (await spawn(k)) as [Worker, ...Worker[]];
    const call = { url: `${up.url}/sse?chunks=5&gap=150`, key: `${run}-${label}-live`, body: '{"prompt":"hi"}' };
    const leading = leader.fire([call]);
    await leader.waitForEvent("execute");
    await sleep(100);
    const dups = (await Promise.all(others.map((other) => other.fire([call])))).flat();
    const [first] = (await leading) as [Outcome];
    expect(first.error).toBeUndefined();
    expect(decode(first.body)).toBe("data: 1-0\n\ndata: 1-1\n\ndata: 1-2\n\ndata: 1-3\n\ndata: 1-4\n\n");
    for (const dup of dups) {
      expect(dup.error).toBeUndefined();
      expect(dup.replayed).toBe(true);
      expect(decode(dup.body)).toBe(decode(first.body));
      expect(dup.firstAt).toBeGreaterThan(0);
      expect(dup.firstAt).toBeLessThan(first.endAt);
    }
    expect(up.count()).toBe(1);
    await Promise.all([leader, ...others].map((w) => w.exit()));
  };

/** kill -9 of the leader mid-stream: the reader holding a prefix gets an error, and the next retry executes once. */
const leaderKilledMidStream = (spawn: Spawn, label: string) => async () => {
  const [leader, other, retrier] = (await spawn(3, { LEASE_MS: "600" })) as [Worker, Worker, Worker];
  const call = { url: `${up.url}/sse?chunks=20&gap=150`, key: `${run}-${label}-kill`, body: '{"prompt":"hi"}' };
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
};

/**
 * A PostgreSQL table of this describe's own on the shared server (made by `migrate`, dropped at the end), and a
 * spawner of workers on it.
 */
function postgresTable(name: string): Spawn {
  const table = `idemfetch_${name}_${newToken().slice(0, 10)}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  beforeAll(async () => {
    await admin.connect();
    await migrate(admin, { table });
  });
  afterAll(async () => {
    await admin.query(`DROP TABLE IF EXISTS ${table}, ${table}_live`);
    await admin.end();
  });
  return spawner(() => ({ STORE: "postgres", PG_URL, PG_TABLE: table }));
}

describe("live streams across processes via ioredis", () => {
  const spawn = spawner(() => ({ STORE: "ioredis", REDIS_URL }));
  it(
    "a duplicate in another process gets its first chunk before the leader's stream ends, and the same bytes",
    firstChunkBeforeTheEnd(spawn, "redis"),
  );
  it(
    "kill -9 of the leader mid-stream: the reader holding a prefix gets an error, the next retry executes once",
    leaderKilledMidStream(spawn, "redis"),
  );
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
  const spawn = spawner(() => ({ STORE: "ioredis", REDIS_CLUSTER: (cluster as LocalCluster).ports.join(",") }));
  it(
    "a duplicate in another process gets its first chunk before the leader's stream ends, and the same bytes",
    firstChunkBeforeTheEnd(spawn, "cluster"),
  );
});

describe("live streams across processes via postgresStore (LISTEN/NOTIFY)", () => {
  const spawn = postgresTable("live");
  it(
    "a duplicate in another process gets its first chunk before the leader's stream ends, and the same bytes",
    firstChunkBeforeTheEnd(spawn, "postgres"),
  );
  it(
    "kill -9 of the leader mid-stream: the reader holding a prefix gets an error, the next retry executes once",
    leaderKilledMidStream(spawn, "postgres"),
  );
});

describe("live streams across processes via upstashStore (REST, readers poll)", () => {
  let fixture: UpstashFixture | undefined;
  beforeAll(async () => {
    fixture = await startUpstashFixture({ redisUrl: REDIS_URL });
  });
  afterAll(async () => {
    await fixture?.close();
  });
  const spawn = spawner(() => {
    const { url, token } = fixture as UpstashFixture;
    return { STORE: "upstash", UPSTASH_URL: url, UPSTASH_TOKEN: token };
  });
  it(
    "a duplicate in another process gets its first chunk before the leader's stream ends, and the same bytes",
    firstChunkBeforeTheEnd(spawn, "upstash"),
  );
});

describe("live streams across processes via sqliteStore (one file; readers in other processes poll)", () => {
  const dir = mkdtempSync(join(tmpdir(), "idemfetch-live-sqlite-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const spawn = spawner(() => ({ STORE: "sqlite", SQLITE_FILE: join(dir, "store.db") }));
  it(
    "a duplicate in another process gets its first chunk before the leader's stream ends, and the same bytes",
    firstChunkBeforeTheEnd(spawn, "sqlite", 3),
  );
  it(
    "kill -9 of the leader mid-stream: the reader holding a prefix gets an error, the next retry executes once",
    leaderKilledMidStream(spawn, "sqlite"),
  );
  it(
    "hono on SQLite: a duplicate sent to the second server gets its first chunk before the stream ends, the same bytes",
    firstChunkBeforeTheEnd((k, extra) => spawn(k, { FACE: "hono", ...extra }), "hono-sqlite"),
  );
});

describe("live streams across processes behind real HTTP servers (the Express and Hono faces)", () => {
  let cluster: LocalCluster | undefined;
  beforeAll(async () => {
    cluster = await startCluster(`live-faces-${process.pid}`);
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  });
  const redis = spawner(() => ({ STORE: "ioredis", REDIS_URL }));
  const onCluster = spawner(() => ({ STORE: "ioredis", REDIS_CLUSTER: (cluster as LocalCluster).ports.join(",") }));
  const postgres = postgresTable("live_faces");
  for (const face of ["express", "hono"]) {
    const on =
      (spawn: Spawn): Spawn =>
      (k, extra) =>
        spawn(k, { FACE: face, ...extra });
    it(
      `${face} on Redis: a duplicate sent to the second server gets its first chunk before the stream ends, the same bytes`,
      firstChunkBeforeTheEnd(on(redis), `${face}-redis`),
    );
    it(
      `${face} on a Redis Cluster: the same, with 4 servers`,
      firstChunkBeforeTheEnd(on(onCluster), `${face}-cluster`, 4),
    );
    it(`${face} on PostgreSQL: the same`, firstChunkBeforeTheEnd(on(postgres), `${face}-postgres`));
    it(
      `${face} on Redis: kill -9 of the leading server mid-stream: the reader holding a prefix gets an error, the retry executes once`,
      leaderKilledMidStream(on(redis), `${face}-redis`),
    );
  }
});
