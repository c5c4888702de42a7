// sqliteStore on a real SQLite file: the shared contract, the clock rule, corruption, sweep, and same-process wake-ups.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { schemaSql, sqliteStore, sweep } from "../../adapters/sqlite.ts";
import { liveStatements, schemaStatements } from "../../adapters/sqlite-sql.ts";
import { newToken } from "../../src/store.ts";
import { testStore } from "../conformance.ts";
import { sampleRecord } from "../fixtures/records.ts";
import { openSqlite } from "../fixtures/sqlite.ts";
import { sleep, until } from "../fixtures/util.ts";

const dir = mkdtempSync(join(tmpdir(), "idemfetch-sqlite-"));
const file = join(dir, "store.db");
const main = openSqlite(file);
/** A second connection to the same file, as another process would have. */
const other = openSqlite(file);
afterAll(() => {
  main.close();
  other.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A live record row whose headers are `value`: it does not decode (not a JSON array of string pairs). */
const writeRaw = async (storeKey: string, value: string): Promise<void> => {
  other.db
    .prepare(
      `INSERT INTO idemfetch (key, token, fingerprint, status, status_text, headers, body, created_at, expires_at)
       VALUES (?, NULL, 'fp-x', 200, 'OK', ?, X'', 0, 9e15)
       ON CONFLICT (key) DO UPDATE SET token = NULL, headers = excluded.headers, expires_at = excluded.expires_at
       RETURNING 1`,
    )
    .all(storeKey, value);
};

/** Whether a stream row of `storeKey` is still there while its key holds a live lease or record (sqlite-sql.ts). */
const liveChunks = async (storeKey: string): Promise<boolean> =>
  other.db.prepare(liveStatements("idemfetch").held).all(storeKey).length > 0;

testStore(`sqliteStore (${main.driver}, file)`, () => sqliteStore({ db: main.db }), {
  writeRaw,
  live: true,
  liveChunks,
});
testStore(`sqliteStore (${main.driver}, :memory:)`, () => sqliteStore({ db: openSqlite(":memory:").db }), {
  live: true,
});

const record = sampleRecord();
const lease = async (store: ReturnType<typeof sqliteStore>, k: string, fp = "fp-a", ms = 30_000) => {
  const r = await store.acquire(k, fp, ms);
  if (r.state !== "acquired") throw new Error(`expected a lease, got ${r.state}`);
  return r.token;
};
const rowOf = (k: string) =>
  main.db.prepare("SELECT token, typeof(body) AS body_type, expires_at FROM idemfetch WHERE key = ?").all(k)[0] as
    | { token: string | null; body_type: string; expires_at: number }
    | undefined;

describe(`sqliteStore on a real file (${main.driver})`, () => {
  it("switches the file to WAL and sets the busy timeout", () => {
    sqliteStore({ db: main.db, busyTimeoutMs: 1234 });
    expect(main.db.prepare("PRAGMA journal_mode").all()).toEqual([{ journal_mode: "wal" }]);
    expect(main.db.prepare("PRAGMA busy_timeout").all()).toEqual([{ timeout: 1234 }]);
    sqliteStore({ db: main.db }); // back to the default for the rest of the file
  });

  it("a commit through one connection is a record for another, stored as a BLOB", async () => {
    const a = sqliteStore({ db: main.db });
    const b = sqliteStore({ db: other.db });
    const k = `conn:${newToken()}`;
    const token = await lease(a, k);
    expect(await b.acquire(k, "fp-b", 30_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
    expect(await b.commit(k, token, record, 30_000)).toBe(true); // the token, not the connection, owns the lease
    const found = await a.acquire(k, "fp-a", 30_000);
    expect(found).toEqual({ state: "done", record });
    expect(rowOf(k)?.body_type).toBe("blob");
  });

  it("expiry follows SQLite's clock: the row's expires_at, not Date.now()", async () => {
    const store = sqliteStore({ db: main.db });
    const k = `clock:${newToken()}`;
    const before = Date.now();
    await lease(store, k, "fp-a", 60_000);
    const expiresAt = rowOf(k)?.expires_at as number;
    expect(expiresAt).toBeGreaterThanOrEqual(before + 60_000 - 5);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 60_000 + 5);
    other.db.prepare("UPDATE idemfetch SET expires_at = expires_at - 61000 WHERE key = ? RETURNING 1").all(k);
    await lease(store, k, "fp-b");
  });

  it("rows that do not decode column by column are replaced (replacedCorrupt)", async () => {
    const store = sqliteStore({ db: main.db });
    const broken = [
      "status = NULL",
      "status = 99",
      "status = 600",
      "status_text = NULL",
      "body = NULL",
      "created_at = NULL",
      `headers = '[["a"]]'`,
      `headers = '[["a", 1]]'`,
      `headers = '[["a", "b"], 1]'`,
      `headers = '{"a": "b"}'`,
      "headers = 'not json'",
      "headers = NULL",
    ];
    for (const change of broken) {
      const k = `corrupt:${newToken()}`;
      expect(await store.commit(k, await lease(store, k), record, 30_000)).toBe(true);
      other.db.prepare(`UPDATE idemfetch SET ${change} WHERE key = ? RETURNING 1`).all(k);
      expect({ change, result: await store.acquire(k, "fp-b", 30_000) }).toMatchObject({
        change,
        result: { state: "acquired", replacedCorrupt: true },
      });
      expect(await store.forget(k, true)).toBe("forgotten");
    }
  });

  it("forget: an expired row is absent; a corrupt one is forgotten", async () => {
    const store = sqliteStore({ db: main.db });
    const expired = `forget-exp:${newToken()}`;
    await lease(store, expired, "fp-a", 50);
    await sleep(120);
    expect(await store.forget(expired, false)).toBe("absent");
    const corrupt = `forget-bad:${newToken()}`;
    await writeRaw(corrupt, "garbage");
    expect(await store.forget(corrupt, false)).toBe("forgotten");
    expect(await store.forget(corrupt, false)).toBe("absent");
  });

  it("a replay writes nothing: the database's change counter stays put", async () => {
    const store = sqliteStore({ db: main.db });
    const k = `replay:${newToken()}`;
    expect(await store.commit(k, await lease(store, k), record, 30_000)).toBe(true);
    const changes = () => (main.db.prepare("SELECT total_changes() AS n").all()[0] as { n: number }).n;
    const before = changes();
    for (let i = 0; i < 5; i++) expect((await store.acquire(k, "fp-a", 30_000)).state).toBe("done");
    expect(changes()).toBe(before);
  });

  it("subscribe is this process's: stores on the same database object wake each other's waiters", async () => {
    const waiter = sqliteStore({ db: main.db });
    const leader = sqliteStore({ db: main.db });
    const elsewhere = sqliteStore({ db: other.db }); // another connection: like another process, it does not wake
    const k = `wake:${newToken()}`;
    let woken = 0;
    const off = waiter.subscribe?.(k, () => woken++);
    const stale = await lease(elsewhere, k, "fp-a", 50);
    await sleep(100);
    expect(await elsewhere.release(k, stale)).toBe(false);
    const token = await lease(elsewhere, k);
    expect(await elsewhere.commit(k, token, record, 30_000)).toBe(true);
    await sleep(50);
    expect(woken).toBe(0);
    expect(await leader.forget(k, false)).toBe("forgotten");
    await until(() => woken === 1);
    expect(await leader.commit(k, await lease(leader, k), record, 30_000)).toBe(true);
    await until(() => woken === 2);
    off?.();
  });

  it("sweep deletes only expired rows, at most `limit` per call", async () => {
    const t = `sweep_${newToken().slice(0, 8)}`;
    sqliteStore({ db: main.db, table: t });
    const insert = main.db.prepare(
      `INSERT INTO ${t} (key, token, fingerprint, expires_at) VALUES (?, 't', 'fp', ?) RETURNING 1`,
    );
    main.db.exec("BEGIN");
    for (let i = 0; i < 250; i++) insert.all(`exp:${i}`, Date.now() - 1000);
    for (let i = 0; i < 20; i++) insert.all(`live:${i}`, Date.now() + 3_600_000);
    main.db.exec("COMMIT");
    expect(sweep(main.db, { table: t, limit: 100 })).toBe(100);
    expect(sweep(other.db, { table: t, limit: 100 })).toBe(100);
    expect(sweep(main.db, { table: t })).toBe(50);
    expect(sweep(main.db, { table: t })).toBe(0);
    expect(main.db.prepare(`SELECT count(*) AS n FROM ${t}`).all()).toEqual([{ n: 20 }]);
  });

  it("sweep deletes the live-stream rows a crashed leader left, never a streaming lease's; a file without <table>_live sweeps", async () => {
    const t = `sweep_live_${newToken().slice(0, 8)}`;
    const store = sqliteStore({ db: main.db, table: t });
    const head = {
      status: 200,
      statusText: "OK",
      headers: [["content-type", "text/event-stream"]] as [string, string][],
    };
    const crashed = await lease(store, "crashed", "fp", 150);
    expect(await store.publishLive("crashed", crashed, { head, offset: 0, body: new TextEncoder().encode("a") })).toBe(
      true,
    );
    expect(await store.publishLive("crashed", crashed, { offset: 1, body: new TextEncoder().encode("b") })).toBe(true);
    const streaming = await lease(store, "streaming");
    expect(await store.publishLive("streaming", streaming, { head, offset: 0, body: new Uint8Array([1]) })).toBe(true);
    const rows = () => main.db.prepare(`SELECT key, count(*) AS n FROM ${t}_live GROUP BY key ORDER BY key`).all();
    expect(rows()).toEqual([
      { key: "crashed", n: 3 },
      { key: "streaming", n: 2 },
    ]);
    await sleep(200); // the crashed leader's lease lapses: nobody commits or releases it
    expect(sweep(main.db, { table: t })).toBe(4); // its lease row, its head and its two parts
    expect(rows()).toEqual([{ key: "streaming", n: 2 }]);
    expect(sweep(main.db, { table: t })).toBe(0);

    const older = `sweep_old_${newToken().slice(0, 8)}`;
    for (const sql of schemaStatements(older)) main.db.exec(sql); // the table as an earlier version made it
    expect(sweep(main.db, { table: older })).toBe(0);
  });

  it("a commit whose stream clean-up fails still commits: true, and the record replays", async () => {
    const t = `dropfail_${newToken().slice(0, 8)}`;
    const store = sqliteStore({ db: main.db, table: t });
    const token = await lease(store, "k");
    const head = { status: 200, statusText: "OK", headers: [] as [string, string][] };
    expect(await store.publishLive("k", token, { head, offset: 0, body: new Uint8Array([1, 2]) })).toBe(true);
    other.db.exec(`DROP TABLE ${t}_live`); // the clean-up statement now fails
    expect(await store.commit("k", token, record, 60_000)).toBe(true);
    expect(await store.acquire("k", "fp-a", 1000)).toMatchObject({ state: "done" });
  });

  it("schemaSql is the table the store creates", () => {
    const t = `schema_${newToken().slice(0, 8)}`;
    main.db.exec(schemaSql({ table: t }));
    const store = sqliteStore({ db: main.db, table: t }); // IF NOT EXISTS: no error
    expect(store).toBeDefined();
    expect(schemaSql()).toContain("CREATE TABLE IF NOT EXISTS idemfetch (");
  });

  it("invalid options throw TypeError at construction", () => {
    expect(() => sqliteStore({ db: {} as never })).toThrow(TypeError);
    for (const bad of ["", "Idem", "a-b", "a.b", 'x"; drop table y; --', "1abc", "a".repeat(49)]) {
      expect(() => sqliteStore({ db: main.db, table: bad }), bad).toThrow(TypeError);
    }
    for (const bad of [-1, 1.5, Number.NaN])
      expect(() => sqliteStore({ db: main.db, busyTimeoutMs: bad })).toThrow(TypeError);
    expect(() => sweep(main.db, { limit: 0 })).toThrow(TypeError);
  });
});
