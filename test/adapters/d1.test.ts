// d1Store against Miniflare's local D1 (workerd's SQLite), from Node through getD1Database(): the shared contract and D1's own cases.
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type D1Like, d1Store, migrate, schemaSql, sweep } from "../../adapters/d1.ts";
import { newToken } from "../../src/store.ts";
import { testStore } from "../conformance.ts";
import { sampleRecord } from "../fixtures/records.ts";

const mf = new Miniflare({
  modules: true,
  script: "export default { fetch: () => new Response('') }",
  compatibilityDate: "2025-09-01",
  d1Databases: ["DB"],
});
let db: D1Like;
beforeAll(async () => {
  db = (await mf.getD1Database("DB")) as unknown as D1Like;
});
afterAll(() => mf.dispose());

const exec = async (sql: string, ...params: unknown[]) =>
  (
    await db
      .prepare(sql)
      .bind(...params)
      .all()
  ).results;

/** A live record row whose headers are `value`: it does not decode (not a JSON array of string pairs). */
const writeRaw = async (storeKey: string, value: string): Promise<void> => {
  await exec(
    `INSERT INTO idemfetch (key, token, fingerprint, status, status_text, headers, body, created_at, expires_at)
     VALUES (?, NULL, 'fp-x', 200, 'OK', ?, X'', 0, 9e15)
     ON CONFLICT (key) DO UPDATE SET token = NULL, headers = excluded.headers, expires_at = excluded.expires_at
     RETURNING 1`,
    storeKey,
    value,
  );
};

testStore("d1Store (Miniflare D1)", () => d1Store({ db }), { writeRaw });

const record = sampleRecord();

describe("d1Store on Miniflare's D1", () => {
  it("acquire is one round trip (one batch) for a miss and for a replay; commit one statement", async () => {
    let calls = 0;
    const counted: D1Like = {
      prepare: (sql) => db.prepare(sql),
      batch: (s) => {
        calls++;
        return db.batch(s);
      },
    };
    const store = d1Store({ db: counted, migrate: false });
    const k = `count:${newToken()}`;
    const first = await store.acquire(k, "fp-a", 30_000);
    expect(first.state).toBe("acquired");
    expect(calls).toBe(1);
    expect(await store.commit(k, (first as { token: string }).token, record, 30_000)).toBe(true);
    expect(await store.acquire(k, "fp-a", 30_000)).toEqual({ state: "done", record });
    expect(calls).toBe(2);
  });

  it("a body over 1 MB goes in parts: its replay is 2 round trips, and parts of records that are gone are dropped", async () => {
    let calls = 0;
    // Counts round trips: each batch, and each statement run on its own.
    type Counted = ReturnType<D1Like["prepare"]> & { real: ReturnType<D1Like["prepare"]> };
    const wrap = (real: ReturnType<D1Like["prepare"]>): Counted => ({
      real,
      bind: (...values) => wrap(real.bind(...values)),
      all: () => {
        calls++;
        return real.all();
      },
    });
    const counted: D1Like = {
      prepare: (sql) => wrap(db.prepare(sql)),
      batch: (statements) => {
        calls++;
        return db.batch(statements.map((st) => (st as Counted).real));
      },
    };
    const store = d1Store({ db: counted, migrate: false });
    const partsOf = async (k: string) =>
      (await exec("SELECT count(*) AS n FROM idemfetch_parts WHERE key = ?", k))[0] as { n: number };
    const k = `parts:${newToken()}`;
    const body = new Uint8Array(2_500_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) % 251;
    const big = sampleRecord({ body });
    const first = (await store.acquire(k, "fp-a", 30_000)) as { token: string };
    expect(await store.commit(k, first.token, big, 30_000)).toBe(true);
    expect(await partsOf(k)).toEqual({ n: 2 });
    calls = 0;
    expect(await store.acquire(k, "fp-a", 30_000)).toEqual({ state: "done", record: big });
    expect(calls).toBe(2);
    // The record expires (on the database's clock; no sleep, which a loaded machine would stretch).
    await exec("UPDATE idemfetch SET expires_at = expires_at - 60000 WHERE key = ? RETURNING 1", k);
    const second = (await store.acquire(k, "fp-a", 30_000)) as { token: string };
    expect(await store.commit(k, second.token, sampleRecord({ body: body.subarray(0, 1_500_000) }), 30_000)).toBe(true);
    expect(await partsOf(k)).toEqual({ n: 1 }); // the expired record's two parts went, the new one's one came
    expect(await store.forget(k, false)).toBe("forgotten");
    expect(await partsOf(k)).toEqual({ n: 0 });
  }, 120_000); // 2.5 MB through workerd's D1: about 25 s on a loaded 2-core machine

  it("expiry follows the database's clock: moving expires_at into its past frees the key", async () => {
    const store = d1Store({ db });
    const k = `clock:${newToken()}`;
    expect((await store.acquire(k, "fp-a", 60_000)).state).toBe("acquired");
    await exec("UPDATE idemfetch SET expires_at = expires_at - 61000 WHERE key = ? RETURNING 1", k);
    expect((await store.acquire(k, "fp-b", 60_000)).state).toBe("acquired");
  });

  it("migrate is idempotent; schemaSql is the same table; migrate: false skips it", async () => {
    const t = `d1_schema_${newToken().slice(0, 8)}`;
    await migrate(db, { table: t });
    await migrate(db, { table: t });
    const store = d1Store({ db, table: t, migrate: false });
    expect((await store.acquire(`k:${newToken()}`, "fp", 1000)).state).toBe("acquired");
    const missing = d1Store({ db, table: `d1_none_${newToken().slice(0, 8)}`, migrate: false });
    await expect(missing.acquire("k", "fp", 1000)).rejects.toThrow(/no such table/);
    expect(schemaSql({ table: t })).toContain(`CREATE TABLE IF NOT EXISTS ${t} (`);
  });

  it("sweep deletes only expired rows, at most `limit` per call, and body parts whose record is gone", async () => {
    const t = `d1_sweep_${newToken().slice(0, 8)}`;
    await migrate(db, { table: t });
    await exec(`INSERT INTO ${t}_parts (key, body_id, n, data) VALUES ('gone', 'x', 1, X'00')`);
    const insert = `INSERT INTO ${t} (key, token, fingerprint, expires_at) VALUES (?, 't', 'fp', ?)`;
    await db.batch([
      ...Array.from({ length: 120 }, (_, i) => db.prepare(insert).bind(`exp:${i}`, Date.now() - 1000)),
      ...Array.from({ length: 10 }, (_, i) => db.prepare(insert).bind(`live:${i}`, Date.now() + 3_600_000)),
    ]);
    expect(await sweep(db, { table: t, limit: 100 })).toBe(100);
    expect(await sweep(db, { table: t })).toBe(20);
    expect(await sweep(db, { table: t })).toBe(0);
    expect(await exec(`SELECT count(*) AS n FROM ${t}`)).toEqual([{ n: 10 }]);
    expect(await exec(`SELECT count(*) AS n FROM ${t}_parts`)).toEqual([{ n: 0 }]);
  });

  it("invalid options throw TypeError at construction", async () => {
    expect(() => d1Store({ db: {} as never })).toThrow(TypeError);
    expect(() => d1Store({ db, table: "a-b" })).toThrow(TypeError);
    expect(() => d1Store({ db, migrate: "yes" as never })).toThrow(TypeError);
    await expect(sweep(db, { limit: 0 })).rejects.toThrow(TypeError);
  });
});
