// postgresStore against the real PostgreSQL: the shared contract (pg Client, pg Pool, postgres.js), forget, corruption, sweep.
import pg from "pg";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate, type PostgresClient, pgListen, postgresStore, schemaSql, sweep } from "../../adapters/postgres.ts";
import { newToken } from "../../src/store.ts";
import { testStore } from "../conformance.ts";
import { sampleRecord } from "../fixtures/records.ts";
import { sleep, until } from "../fixtures/util.ts";

const CONFIG = { host: "127.0.0.1", port: 5432, user: "postgres", database: "test" };
const table = `idemfetch_test_${newToken().slice(0, 10)}`;
const admin = new pg.Client(CONFIG);
const pool = new pg.Pool({ ...CONFIG, max: 4 });
const client = new pg.Client(CONFIG);
const sql = postgres({ ...CONFIG, max: 4, onnotice: () => {} });
/** The documented postgres.js one-liner. */
const viaPostgresJs: PostgresClient = {
  query: async (text, params) => ({ rows: await sql.unsafe(text, params as never) }),
};
const listenPg = pgListen(() => new pg.Client(CONFIG));

beforeAll(async () => {
  await admin.connect();
  await client.connect();
  await migrate(admin, { table });
});
afterAll(async () => {
  await admin.query(`DROP TABLE IF EXISTS ${table}, ${table}_live`);
  await admin.end();
  await client.end();
  await pool.end();
  await sql.end();
});

/** A live record row whose headers are `value` (as JSON when it parses, else as a JSON string): it does not decode. */
const writeRaw = async (storeKey: string, value: string): Promise<void> => {
  let json: string;
  try {
    JSON.parse(value);
    json = value;
  } catch {
    json = JSON.stringify(value);
  }
  await admin.query(
    `INSERT INTO ${table} (key, token, fingerprint, status, status_text, headers, body, created_at, expires_at)
     VALUES ($1, NULL, 'fp-x', 200, 'OK', $2::jsonb, '\\x', now(), now() + interval '60 seconds')
     ON CONFLICT (key) DO UPDATE SET token = NULL, headers = excluded.headers, expires_at = excluded.expires_at`,
    [storeKey, json],
  );
};

/**
 * Whether `<table>_live` holds chunk data for `storeKey`: a head whose lease has not lapsed, or a part of a stream
 * whose row (head or marker) has not. Rows of a lapsed lease count as gone, as expired rows do in the table.
 */
const liveChunks = async (storeKey: string): Promise<boolean> =>
  (
    await admin.query(
      `SELECT EXISTS (
         SELECT 1 FROM ${table}_live h WHERE h.key = $1 AND h.upto = 0 AND h.expires_at > clock_timestamp()
           AND (h.status IS NOT NULL OR EXISTS (
             SELECT 1 FROM ${table}_live p WHERE p.key = h.key AND p.stream = h.stream AND p.upto > 0))
       ) AS found`,
      [storeKey],
    )
  ).rows[0].found === true;

testStore("postgresStore (pg Client, LISTEN via pgListen)", () => postgresStore({ client, table, listen: listenPg }), {
  writeRaw,
  live: true,
  liveChunks,
});
testStore("postgresStore (pg Pool, polling)", () => postgresStore({ client: pool, table }), {
  writeRaw,
  subscribe: false,
  live: true,
  liveChunks,
});
testStore(
  "postgresStore (postgres.js one-liner, its own listen)",
  () =>
    postgresStore({
      client: viaPostgresJs,
      table,
      listen: (channel, onPayload) => sql.listen(channel, onPayload).then((l) => l.unlisten),
    }),
  { writeRaw, live: true, liveChunks },
);

const record = sampleRecord();

/** A client that counts the statements it runs. */
function counting(inner: PostgresClient): PostgresClient & { count: number } {
  const c = {
    count: 0,
    query(text: string, params?: unknown[]) {
      c.count++;
      return inner.query(text, params);
    },
  };
  return c;
}

const lease = async (store: ReturnType<typeof postgresStore>, k: string, fp = "fp-a", ms = 30_000) => {
  const r = await store.acquire(k, fp, ms);
  if (r.state !== "acquired") throw new Error(`expected a lease, got ${r.state}`);
  return r.token;
};

describe("postgresStore on real PostgreSQL", () => {
  it("forget: a record goes, a live lease stays unless forced, nothing is absent, and waiters wake", async () => {
    const store = postgresStore({ client: pool, table, listen: listenPg });
    const k = `forget:${newToken()}`;
    expect(await store.forget(k, false)).toBe("absent");
    const token = await lease(store, k);
    expect(await store.forget(k, false)).toBe("in-progress");
    expect(await store.commit(k, token, record, 30_000)).toBe(true);
    let woken = 0;
    const off = store.subscribe?.(k, () => woken++);
    await sleep(150);
    expect(await store.forget(k, false)).toBe("forgotten");
    await until(() => woken === 1);
    expect(await store.forget(k, false)).toBe("absent");
    const stale = await lease(store, k);
    expect(await store.forget(k, true)).toBe("forgotten");
    await until(() => woken === 2);
    expect(await store.commit(k, stale, record, 30_000)).toBe(false); // its owner finds it gone
    await lease(store, k);
    off?.();
    await store.close?.();
  });

  it("forget: an expired row is absent; a corrupt one is forgotten", async () => {
    const store = postgresStore({ client: pool, table });
    const expired = `forget-exp:${newToken()}`;
    await lease(store, expired, "fp-a", 50);
    await sleep(150);
    expect(await store.forget(expired, false)).toBe("absent");
    const corrupt = `forget-bad:${newToken()}`;
    await writeRaw(corrupt, "garbage");
    expect(await store.forget(corrupt, false)).toBe("forgotten");
    expect(await store.forget(corrupt, false)).toBe("absent");
  });

  it("rows that do not decode column by column are replaced (replacedCorrupt)", async () => {
    const store = postgresStore({ client: pool, table });
    const broken = [
      "status = NULL",
      "status = 99",
      "status = 600",
      "status_text = NULL",
      "body = NULL",
      "created_at = NULL",
      "fingerprint = NULL",
      `headers = '[["a"]]'`,
      `headers = '[["a", 1]]'`,
      `headers = '[["a", "b"], 1]'`,
      `headers = '{"a": "b"}'`,
      "headers = NULL",
    ];
    for (const change of broken) {
      const k = `corrupt:${newToken()}`;
      const token = await lease(store, k);
      expect(await store.commit(k, token, record, 30_000)).toBe(true);
      await admin.query(`UPDATE ${table} SET ${change} WHERE key = $1`, [k]);
      expect({ change, result: await store.acquire(k, "fp-b", 30_000) }).toMatchObject({
        change,
        result: { state: "acquired", replacedCorrupt: true },
      });
    }
    // A lease row without a fingerprint is corrupt too.
    const k = `corrupt-lease:${newToken()}`;
    await lease(store, k);
    await admin.query(`UPDATE ${table} SET fingerprint = NULL WHERE key = $1`, [k]);
    expect(await store.acquire(k, "fp-b", 30_000)).toMatchObject({ state: "acquired", replacedCorrupt: true });
  });

  it("expiry follows the database clock, not the caller's", async () => {
    const store = postgresStore({ client: pool, table });
    const k = `clock:${newToken()}`;
    await lease(store, k, "fp-a", 60_000);
    const { rows } = await admin.query(
      `SELECT extract(epoch FROM expires_at - clock_timestamp()) AS left FROM ${table} WHERE key = $1`,
      [k],
    );
    const left = Number(rows[0].left);
    expect(left).toBeGreaterThan(55);
    expect(left).toBeLessThanOrEqual(60);
    // Moving the row's expiry into the past (the database's past) frees the key, whatever Date.now() says.
    await admin.query(`UPDATE ${table} SET expires_at = clock_timestamp() - interval '1 second' WHERE key = $1`, [k]);
    await lease(store, k, "fp-b");
  });

  it("a miss (acquire + commit) is 2 statements, a replay 1, and a wait round 1", async () => {
    for (const c of [pool, viaPostgresJs]) {
      const counted = counting(c);
      const store = postgresStore({ client: counted, table });
      const k = `count:${newToken()}`;
      const token = await lease(store, k);
      expect(await store.acquire(k, "fp-a", 30_000)).toEqual({ state: "pending", fingerprint: "fp-a" });
      expect(await store.commit(k, token, record, 30_000)).toBe(true);
      expect(counted.count).toBe(3);
      counted.count = 0;
      expect((await store.acquire(k, "fp-a", 30_000)).state).toBe("done");
      expect(counted.count).toBe(1);
    }
  });

  it("a replay takes no row lock and writes no row version", async () => {
    const store = postgresStore({ client: pool, table });
    const k = `nolock:${newToken()}`;
    const token = await lease(store, k);
    expect(await store.commit(k, token, record, 30_000)).toBe(true);
    const version = async () =>
      (await admin.query(`SELECT ctid::text, xmax::text FROM ${table} WHERE key = $1`, [k])).rows[0];
    const before = await version();
    for (let i = 0; i < 5; i++) expect((await store.acquire(k, "fp-a", 30_000)).state).toBe("done");
    expect(await version()).toEqual(before);
  });

  it("of 60 concurrent acquires over a pool, a client and postgres.js exactly one is acquired", async () => {
    const stores = [pool, client, viaPostgresJs].map((c) => postgresStore({ client: c, table }));
    const k = `race:${newToken()}`;
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        (stores[i % 3] as ReturnType<typeof postgresStore>).acquire(k, `fp-${i}`, 30_000),
      ),
    );
    const winners = results.flatMap((r, i) => (r.state === "acquired" ? [i] : []));
    expect(winners).toHaveLength(1);
    for (const r of results) if (r.state === "pending") expect(r.fingerprint).toBe(`fp-${winners[0]}`);
  });

  it("a commit through one store wakes a LISTEN subscriber of another, and a long key wakes by digest", async () => {
    const waiter = postgresStore({ client: pool, table, listen: listenPg });
    const leader = postgresStore({ client: viaPostgresJs, table });
    for (const k of [`wake:${newToken()}`, `wake-long:${"x".repeat(3000)}:${newToken()}`]) {
      let woken = 0;
      const off = waiter.subscribe?.(k, () => woken++);
      await sleep(150);
      const token = await lease(leader, k);
      expect(await leader.commit(k, token, record, 30_000)).toBe(true);
      await until(() => woken === 1);
      off?.();
    }
    await waiter.close?.();
  });

  it("close() ends the LISTEN connection it opened, never the user's client; without listen nothing is opened", async () => {
    const appName = `idemfetch-close-${newToken().slice(0, 8)}`;
    const connections = async () =>
      Number(
        (await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1", [appName]))
          .rows[0].n,
      );
    const user = new pg.Client({ ...CONFIG, application_name: appName });
    await user.connect();
    const polling = postgresStore({ client: user, table });
    expect(polling.subscribe).toBeUndefined();
    const store = postgresStore({
      client: user,
      table,
      listen: pgListen(() => new pg.Client({ ...CONFIG, application_name: appName })),
    });
    expect(await connections()).toBe(1); // lazy: nothing before the first subscribe
    const off = store.subscribe?.(`close:${newToken()}`, () => {});
    await until(async () => (await connections()) === 2);
    off?.();
    await store.close?.();
    await until(async () => (await connections()) === 1);
    expect((await user.query("SELECT 1 AS one")).rows[0].one).toBe(1);
    await user.end();
  });

  it("pgListen reconnects after its connection is killed, wakes every waiter once, and delivers again", async () => {
    const appName = `idemfetch-relisten-${newToken().slice(0, 8)}`;
    const store = postgresStore({
      client: pool,
      table,
      listen: pgListen(() => new pg.Client({ ...CONFIG, application_name: appName }), { retryMs: 100 }),
    });
    const k = `relisten:${newToken()}`;
    let woken = 0;
    const off = store.subscribe?.(k, () => woken++);
    const backends = async () =>
      (await admin.query("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [appName])).rows;
    await until(async () => (await backends()).length === 1);
    const [{ pid }] = await backends();
    await admin.query("SELECT pg_terminate_backend($1)", [pid]);
    await until(() => woken === 1, 5000); // the wake-all after the new LISTEN
    const [again] = await backends();
    expect(again.pid).not.toBe(pid);
    const token = await lease(store, k);
    expect(await store.commit(k, token, record, 30_000)).toBe(true);
    await until(() => woken === 2);
    off?.();
    await store.close?.();
    await until(async () => (await backends()).length === 0);
  });

  it("migrate is idempotent and safe when many instances run it at once", async () => {
    const t = `idemfetch_mig_${newToken().slice(0, 8)}`;
    try {
      await Promise.all(Array.from({ length: 4 }, () => migrate(pool, { table: t })));
      await migrate(client, { table: t });
      const { rows } = await admin.query("SELECT indexname FROM pg_indexes WHERE tablename = $1 ORDER BY 1", [t]);
      expect(rows.map((r) => r.indexname)).toEqual([`${t}_expires_at`, `${t}_pkey`]);
      expect(schemaSql({ table: t })).toContain(`CREATE TABLE IF NOT EXISTS ${t} (`);
    } finally {
      await admin.query(`DROP TABLE IF EXISTS ${t}, ${t}_live`);
    }
  });

  it("sweep deletes only expired rows, bounded per call, and 4 concurrent sweepers delete each row once", async () => {
    const t = `idemfetch_sweep_${newToken().slice(0, 8)}`;
    try {
      await migrate(admin, { table: t });
      await admin.query(
        `INSERT INTO ${t} (key, token, fingerprint, created_at, expires_at)
         SELECT 'exp:' || i, 't', 'fp', now(), now() - interval '1 second' FROM generate_series(1, 1000) i`,
      );
      await admin.query(
        `INSERT INTO ${t} (key, token, fingerprint, created_at, expires_at)
         SELECT 'live:' || i, 't', 'fp', now(), now() + interval '1 hour' FROM generate_series(1, 50) i`,
      );
      expect(await sweep(admin, { table: t, limit: 100 })).toBe(100);
      // Four sweepers at once, each bounded to 50 per call, until none finds anything.
      const sweeper = async (c: PostgresClient) => {
        let total = 0;
        for (;;) {
          const n = await sweep(c, { table: t, limit: 50 });
          expect(n).toBeLessThanOrEqual(50);
          if (n === 0) return total;
          total += n;
        }
      };
      const totals = await Promise.all([sweeper(pool), sweeper(pool), sweeper(viaPostgresJs), sweeper(client)]);
      expect(totals.reduce((a, b) => a + b, 0)).toBe(900);
      const left = await admin.query(`SELECT count(*)::int AS n FROM ${t}`);
      expect(left.rows[0].n).toBe(50);
    } finally {
      await admin.query(`DROP TABLE IF EXISTS ${t}, ${t}_live`);
    }
  });

  it("sweep never deletes a row an acquire took over", async () => {
    const store = postgresStore({ client: pool, table });
    const k = `sweep-race:${newToken()}`;
    await lease(store, k, "fp-a", 50);
    await sleep(150);
    const [token] = await Promise.all([lease(store, k, "fp-b"), sweep(pool, { table, limit: 1000 })]);
    // Whichever ran first, the new lease is there and works.
    expect(await store.acquire(k, "fp-c", 30_000)).toEqual({ state: "pending", fingerprint: "fp-b" });
    expect(await store.commit(k, token, record, 30_000)).toBe(true);
  });

  it("live: a table migrated before live streams serves every call that does not stream, and migrate() adds the rest", async () => {
    const t = `idemfetch_old_${newToken().slice(0, 8)}`;
    try {
      // The schema as earlier versions made it: the records table and its index only.
      const [before] = schemaSql({ table: t }).split(`CREATE TABLE IF NOT EXISTS ${t}_live`);
      await admin.query(before as string);
      const store = postgresStore({ client: pool, table: t });
      const k = `old:${newToken()}`;
      const token = await lease(store, k);
      expect(await store.renew(k, token, 30_000)).toBe(true);
      expect(await store.commit(k, token, record, 30_000)).toBe(true);
      expect(await store.forget(k, false)).toBe("forgotten");
      expect(await store.release(k, await lease(store, k))).toBe(true);
      expect(await sweep(pool, { table: t })).toBe(0);
      const streamed = await lease(store, k);
      const head = { status: 200, statusText: "OK", headers: [] };
      await expect(store.publishLive?.(k, streamed, { head, offset: 0, body: new Uint8Array() })).rejects.toThrow(
        `table ${t}_live is missing: run migrate() again`,
      );
      await expect(store.readLive?.(k, undefined, 0)).rejects.toThrow("run migrate() again");
      await migrate(pool, { table: t });
      expect(await store.readLive?.(k, undefined, 0)).toEqual({ state: "pending" });
      expect(await store.publishLive?.(k, streamed, { head, offset: 0, body: new Uint8Array([1]) })).toBe(true);
      expect(await store.commit(k, streamed, record, 30_000)).toBe(true);
    } finally {
      await admin.query(`DROP TABLE IF EXISTS ${t}, ${t}_live`);
    }
  });

  it("live: a lease that never streamed costs no statement on <table>_live; one that did, none more", async () => {
    const counted = counting(pool);
    const texts: string[] = [];
    const store = postgresStore({
      client: {
        query(text, params) {
          texts.push(text);
          return counted.query(text, params);
        },
      },
      table,
    });
    const plain = `plain:${newToken()}`;
    const token = await lease(store, plain);
    expect(await store.renew(plain, token, 30_000)).toBe(true);
    expect(await store.commit(plain, token, record, 30_000)).toBe(true);
    expect(texts.filter((text) => text.includes(`${table}_live`))).toEqual([]);
    texts.length = 0;
    const k = `streamed:${newToken()}`;
    const streamed = await lease(store, k);
    const head = { status: 200, statusText: "OK", headers: [] as [string, string][] };
    expect(await store.publishLive?.(k, streamed, { head, offset: 0, body: new Uint8Array([1]) })).toBe(true);
    expect(await store.renew(k, streamed, 30_000)).toBe(true);
    expect(await store.commit(k, streamed, record, 30_000)).toBe(true);
    expect(texts).toHaveLength(4); // acquire, then publish, renew and commit: one statement each
  });

  it("live: a commit while a part is still in flight leaves no part behind, only the marker", async () => {
    const store = postgresStore({ client: pool, table });
    const k = `inflight:${newToken()}`;
    const token = await lease(store, k);
    const head = { status: 200, statusText: "OK", headers: [] as [string, string][] };
    expect(await store.publishLive?.(k, token, { head, offset: 0, body: new Uint8Array([1]) })).toBe(true);
    // One part after another, as liveWriter sends them; the commit goes while one is on its way.
    let landed = 0;
    let chain = Promise.resolve(true);
    for (let i = 0; i < 20; i++) {
      const part = { offset: 1 + i * 1000, body: new Uint8Array(1000).fill(i) };
      chain = chain.then(
        async (going) => going && (await store.publishLive?.(k, token, part)) === true && ++landed > 0,
      );
    }
    await until(() => landed >= 3);
    expect(await store.commit(k, token, record, 30_000)).toBe(true);
    expect(await chain).toBe(false); // refused once the commit took the lease
    const { rows } = await admin.query(`SELECT upto, status FROM ${table}_live WHERE key = $1`, [k]);
    expect(rows).toEqual([{ upto: "0", status: null }]);
  });

  it("live: sweep deletes a lapsed stream's rows, and only those", async () => {
    const t = `idemfetch_lsweep_${newToken().slice(0, 8)}`;
    try {
      await migrate(admin, { table: t });
      const store = postgresStore({ client: pool, table: t });
      const head = { status: 200, statusText: "OK", headers: [] as [string, string][] };
      const stream = async (k: string, ms: number) => {
        const token = await lease(store, k, "fp-a", ms);
        expect(await store.publishLive?.(k, token, { head, offset: 0, body: new Uint8Array([1, 2]) })).toBe(true);
        expect(await store.publishLive?.(k, token, { offset: 2, body: new Uint8Array([3]) })).toBe(true);
        return token;
      };
      await stream("lapsed", 50);
      await stream("live", 30_000);
      await sleep(150);
      expect(await sweep(pool, { table: t })).toBe(1 + 3); // the lapsed lease's row, then its stream row and 2 parts
      const { rows } = await admin.query(`SELECT key, count(*)::int AS n FROM ${t}_live GROUP BY key`);
      expect(rows).toEqual([{ key: "live", n: 3 }]);
    } finally {
      await admin.query(`DROP TABLE IF EXISTS ${t}, ${t}_live`);
    }
  });

  it("invalid options throw TypeError at construction", async () => {
    expect(() => postgresStore({ client: {} as PostgresClient })).toThrow(TypeError);
    for (const bad of ["", "Idem", "a-b", "a.b.c", 'x"; drop table y; --', "1abc", "a".repeat(49)]) {
      expect(() => postgresStore({ client: pool, table: bad }), bad).toThrow(TypeError);
    }
    expect(() => postgresStore({ client: pool, table: "public.idemfetch_ok" })).not.toThrow();
    expect(() => postgresStore({ client: pool, listen: {} as never })).toThrow(TypeError);
    expect(() => pgListen({} as never)).toThrow(TypeError);
    await expect(sweep(pool, { table, limit: 0 })).rejects.toThrow(TypeError);
  });

  it("accepts pg Client, Pool and PoolClient by type", async () => {
    const fits = (_: PostgresClient) => true;
    const pc = await pool.connect();
    expect(fits(client) && fits(pool) && fits(pc)).toBe(true);
    pc.release();
  });
});
