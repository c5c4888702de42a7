// postgresStore across processes on the shared PostgreSQL, and on a private one restarted (and crashed) under load.
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { migrate, pgListen, postgresStore } from "../../adapters/postgres.ts";
import { createIdempotentFetch } from "../../src/index.ts";
import { newToken } from "../../src/store.ts";
import { type PrivatePostgres, startPrivatePostgres } from "../fixtures/postgres.ts";
import { spawnWorker, type Worker } from "../fixtures/processes.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { sleep } from "../fixtures/util.ts";
import { processCases } from "./process-cases.ts";

const SHARED = "postgres://postgres@127.0.0.1:5432/test";
const table = `idemfetch_proc_${newToken().slice(0, 10)}`;
let up: Upstream;
const admin = new pg.Client({ connectionString: SHARED });
beforeAll(async () => {
  up = await startUpstream();
  await admin.connect();
  await migrate(admin, { table });
});
afterAll(async () => {
  await up.close();
  await admin.query(`DROP TABLE IF EXISTS ${table}, ${table}_live`);
  await admin.end();
});
beforeEach(() => up.reset());

describe("across processes via postgresStore", () => {
  let workers: Worker[] = [];
  const spawnAll = async (k: number, extra: Record<string, string> = {}) => {
    workers = await Promise.all(
      Array.from({ length: k }, () => spawnWorker({ STORE: "postgres", PG_URL: SHARED, PG_TABLE: table, ...extra })),
    );
    return workers;
  };
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.exit()));
  });

  processCases({ upstream: () => up, spawn: spawnAll });
});

describe("a PostgreSQL restart under load", () => {
  let server: PrivatePostgres;
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  beforeAll(async () => {
    server = await startPrivatePostgres();
    process.on("unhandledRejection", onUnhandled);
  });
  afterAll(async () => {
    process.off("unhandledRejection", onUnhandled);
    await server?.destroy();
  });

  it("calls settle (fail-open 200, fail-closed 200 or 503), nothing crashes, committed records survive a crash, protection resumes", async () => {
    const pool = new pg.Pool({ ...server.config, max: 4, connectionTimeoutMillis: 1000, query_timeout: 1000 });
    pool.on("error", () => {}); // idle connections die with the server
    await migrate(pool);
    const store = postgresStore({
      client: pool,
      listen: pgListen(() => new pg.Client({ ...server.config, connectionTimeoutMillis: 1000 }), { retryMs: 200 }),
    });
    const events: string[] = [];
    const open = createIdempotentFetch({ store, storeTimeoutMs: 1500, onEvent: (e) => events.push(e.type) });
    const closed = createIdempotentFetch({ store, storeTimeoutMs: 1500, onStoreError: "closed" });
    const call = (f: typeof open, key: string) =>
      f(`${up.url}/echo?ms=20`, { method: "POST", headers: { "idempotency-key": key }, body: "{}" });

    const before = await call(closed, "before");
    expect(before.status).toBe(200);
    const beforeBody = await before.text();

    // Four loops of calls (half on shared keys, so some wait on others) for as long as the restarts take.
    let running = true;
    const statuses: { open: number[]; closed: number[] } = { open: [], closed: [] };
    // A duplicate reading another call's stream through the store has its body errored by a read that fails
    // mid-stream (docs/protocol.md): with one of these two, never another.
    const bodyErrors: string[] = [];
    const loop = async (i: number) => {
      for (let n = 0; running; n++) {
        const f = i % 2 === 0 ? open : closed;
        const key = n % 2 === 0 ? `load-${i}-${n}` : `shared-${n % 10}`;
        const res = await call(f, key).catch(() => undefined);
        (f === open ? statuses.open : statuses.closed).push(res?.status ?? 0);
        await res?.arrayBuffer().catch((error: Error) => bodyErrors.push(error.name));
        if (res?.status !== 200) await sleep(20); // the store is down: no busy loop
      }
    };
    const loops = [0, 1, 2, 3].map(loop);
    await sleep(300);
    await server.stop("fast"); // a clean restart
    // While it is down, whatever the loops happened to hit: fail-closed answers 503, fail-open runs (200).
    const down = await call(closed, "during-outage");
    expect(down.status).toBe(503);
    await down.arrayBuffer();
    const unprotected = await call(open, "during-outage");
    expect(unprotected.status).toBe(200);
    await unprotected.arrayBuffer();
    await sleep(300);
    await server.start();
    await sleep(300);
    await server.stop("immediate"); // a crash: no shutdown checkpoint
    await sleep(300);
    await server.start();
    await sleep(300);
    running = false;
    await Promise.all(loops);

    expect(statuses.open.length + statuses.closed.length).toBeGreaterThan(20);
    expect(statuses.open.every((s) => s === 200)).toBe(true);
    expect(statuses.closed.every((s) => s === 200 || s === 503)).toBe(true);
    expect(events).toContain("store-error");
    expect(bodyErrors.filter((name) => name !== "LiveStreamLostError" && name !== "StoreUnavailableError")).toEqual([]);

    // Protection resumes, and the record committed before the crash is still there.
    let resumed = false;
    for (let i = 0; i < 40 && !resumed; i++) {
      const a = await call(closed, `after-${i}`);
      const b = await call(closed, `after-${i}`);
      resumed = a.status === 200 && b.headers.get("idempotent-replayed") === "true";
      await a.arrayBuffer();
      await b.arrayBuffer();
      if (!resumed) await sleep(250);
    }
    expect(resumed).toBe(true);
    const replay = await call(closed, "before");
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.text()).toBe(beforeBody);
    expect(unhandled).toEqual([]);
    await store.close?.();
    await pool.end();
  });
});
