// sqliteStore across real processes on one file: coalescing, kill -9 of a leader, exit right after reading, a file locked by another process.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { sqliteStore } from "../../adapters/sqlite.ts";
import { createIdempotentFetch, type IdempotencyEvent } from "../../src/index.ts";
import { newToken } from "../../src/store.ts";
import { spawnWorker, type Worker } from "../fixtures/processes.ts";
import { openSqlite } from "../fixtures/sqlite.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";
import { processCases } from "./process-cases.ts";

const dir = mkdtempSync(join(tmpdir(), "idemfetch-sqlite-proc-"));
const file = join(dir, "store.db");
const exec = promisify(execFile);
const EXIT_AFTER_READ = new URL("../fixtures/exit-after-read.ts", import.meta.url).pathname;
const LOCKER = new URL("../fixtures/sqlite-locker.ts", import.meta.url).pathname;
let up: Upstream;
let workers: Worker[] = [];
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(async () => {
  await Promise.all(workers.map((w) => w.exit()));
  await up.close();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => up.reset());

const spawnAll = async (k: number, extra: Record<string, string> = {}) => {
  workers = await Promise.all(
    Array.from({ length: k }, () => spawnWorker({ STORE: "sqlite", SQLITE_FILE: file, ...extra })),
  );
  return workers;
};

describe("across processes on one SQLite file", () => {
  processCases({ upstream: () => up, spawn: spawnAll }, 3);

  it("processes that exit the moment they have read the body lose nothing: 1 execution, the later ones replay", async () => {
    const key = `exit-${newToken()}`;
    const outcomes: { status: number; body: string; replayed: boolean }[] = [];
    for (let i = 0; i < 4; i++) {
      const { stdout } = await exec(process.execPath, ["--import", "tsx", EXIT_AFTER_READ], {
        env: { ...process.env, STORE: "sqlite", SQLITE_FILE: file, TARGET: `${up.url}/echo?ms=50`, KEY: key },
      });
      outcomes.push(JSON.parse(stdout.trim().split("\n").at(-1) as string));
    }
    expect(up.count("/echo")).toBe(1);
    expect(outcomes.map((o) => o.status)).toEqual([200, 200, 200, 200]);
    expect(outcomes.map((o) => o.replayed)).toEqual([false, true, true, true]);
    expect(new Set(outcomes.map((o) => o.body)).size).toBe(1);
  });
});

describe("a file another process holds locked (BEGIN EXCLUSIVE)", () => {
  let locker: ChildProcess | undefined;
  afterAll(() => {
    locker?.kill("SIGKILL");
  });
  /** Starts the locker process and resolves once it holds the write lock. */
  const lock = async (holdMs?: number, on = file, mode = "EXCLUSIVE"): Promise<ChildProcess> => {
    const child = spawn(process.execPath, ["--import", "tsx", LOCKER], {
      env: { ...process.env, SQLITE_FILE: on, LOCK: mode, ...(holdMs ? { HOLD_MS: String(holdMs) } : {}) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    locker = child;
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on("data", (d: Buffer) => {
        if (d.toString().includes("locked")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`locker exited with ${code}`)));
    });
    return child;
  };

  it("writes fail as store errors after busyTimeoutMs (fail-open runs, fail-closed 503), replays still read; kill -9 of the holder frees the file and leaves none of its writes", async () => {
    const { db, close } = openSqlite(file);
    const store = sqliteStore({ db, busyTimeoutMs: 300 });
    const events: IdempotencyEvent[] = [];
    const open = createIdempotentFetch({ store, onEvent: (e) => events.push(e) });
    const closed = createIdempotentFetch({ store, onStoreError: "closed" });
    const call = (f: typeof open, key: string) =>
      f(`${up.url}/echo`, { method: "POST", headers: { "idempotency-key": key }, body: "{}" });
    const stored = `stored-${newToken()}`;
    const first = await call(closed, stored);
    const firstBody = await first.text();

    const holder = await lock();
    const started = Date.now();
    const refused = await call(closed, `locked-${newToken()}`);
    expect(refused.status).toBe(503);
    expect(JSON.parse(await refused.text()).error.code).toBe("IDEMPOTENCY_STORE_UNAVAILABLE");
    const unprotected = await call(open, `locked-${newToken()}`);
    expect(unprotected.status).toBe(200);
    await unprotected.arrayBuffer();
    expect(Date.now() - started).toBeLessThan(3000); // bounded by the busy timeout, no hang
    expect(events.some((e) => e.type === "store-error")).toBe(true);
    // WAL: a reader is never blocked by a writer, so a stored answer still replays.
    const replay = await call(closed, stored);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.text()).toBe(firstBody);

    const gone = new Promise((r) => holder.once("exit", r));
    holder.kill("SIGKILL");
    await gone;
    // The holder's uncommitted lease is gone with it: the key is free.
    expect(await store.acquire("locker-uncommitted", "fp", 10_000)).toMatchObject({ state: "acquired" });
    const after = `after-${newToken()}`;
    expect((await call(closed, after)).status).toBe(200);
    expect((await call(closed, after)).headers.get("idempotent-replayed")).toBe("true");
    close();
  });

  it("a lock released within busyTimeoutMs only delays the call: it succeeds", async () => {
    const { db, close } = openSqlite(file);
    const store = sqliteStore({ db, busyTimeoutMs: 3000 });
    await lock(300);
    const started = Date.now();
    const result = await store.acquire(`waited-${newToken()}`, "fp", 10_000);
    expect(result.state).toBe("acquired");
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    close();
  });

  it("a new file whose write lock another starting process holds: the store waits for it instead of failing at once", async () => {
    // Workers started together (node:cluster, PM2) all set up a new file. SQLite answers SQLITE_BUSY at once, without
    // the busy handler, to one that has read the file's header and then finds the write lock taken (it would deadlock).
    const fresh = join(dir, `fresh-${newToken()}.db`);
    await lock(300, fresh, "IMMEDIATE");
    const { db, close } = openSqlite(fresh);
    const started = Date.now();
    const store = sqliteStore({ db, busyTimeoutMs: 3000 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    expect(db.prepare("PRAGMA journal_mode").all()).toEqual([{ journal_mode: "wal" }]);
    expect((await store.acquire(`fresh-${newToken()}`, "fp", 10_000)).state).toBe("acquired");
    close();
  });
});
