// `npx tsx test/bench/postgres.ts`: postgresStore figures for its docs (statements per call, per-op latency,
// wake-up latency LISTEN vs polling, bytes per record) against the shared PostgreSQL (PG_URL overrides).
import pg from "pg";
import postgres from "postgres";
import { migrate, type PostgresClient, pgListen, postgresStore } from "../../adapters/postgres.ts";
import { createIdempotentFetch } from "../../src/index.ts";
import { newToken, type StoredRecord } from "../../src/store.ts";
import { startUpstream } from "../fixtures/upstream.ts";

const URL = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const table = `idemfetch_bench_${newToken().slice(0, 8)}`;
const client = new pg.Client({ connectionString: URL });
const sql = postgres(URL, { max: 1, onnotice: () => {} });
const viaPostgresJs: PostgresClient = {
  query: async (text, params) => ({ rows: await sql.unsafe(text, params as never) }),
};
const up = await startUpstream();
await client.connect();
await migrate(client, { table });

const record: StoredRecord = {
  status: 200,
  statusText: "OK",
  headers: [
    ["content-type", "application/json"],
    ["x-request-id", "req_0123456789abcdef"],
  ],
  // 1 KiB of JSON that does not compress much (hex text), like a short LLM answer.
  body: new TextEncoder().encode(
    JSON.stringify({ id: "chatcmpl-123", text: Array.from({ length: 30 }, () => newToken()).join(" ") }),
  ),
  createdAt: Date.now(),
  fingerprint: "a".repeat(64),
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)] as number;
const us = (ms: number) => `${Math.round(ms * 1000)} µs`;

try {
  // Statements per call through createIdempotentFetch (a counting wrapper around the client).
  let statements = 0;
  const counted: PostgresClient = {
    query: (text, params) => {
      statements++;
      return client.query(text, params);
    },
  };
  // A fresh wrapper per call, as another process would be: no in-process memory of earlier calls.
  const post = (key: string) =>
    createIdempotentFetch({ store: postgresStore({ client: counted, table }) })(`${up.url}/echo`, {
      method: "POST",
      headers: { "idempotency-key": key },
      body: "{}",
    }).then((r) => r.text());
  await post("warm");
  statements = 0;
  await post("miss");
  const miss = statements;
  statements = 0;
  await post("miss");
  console.log(`statements: miss ${miss}, replay ${statements}`);

  // Per-op latency, sequential, on loopback.
  for (const [name, c] of [
    ["pg Client", client],
    ["postgres.js", viaPostgresJs],
  ] as const) {
    const store = postgresStore({ client: c, table });
    const t: Record<string, number[]> = { acquire: [], commit: [], replay: [], renew: [], release: [] };
    for (let i = 0; i < 400; i++) {
      const k = `lat:${name}:${i}`;
      let s = performance.now();
      const a = await store.acquire(k, "fp", 30_000);
      t.acquire?.push(performance.now() - s);
      if (a.state !== "acquired") throw new Error("expected a lease");
      s = performance.now();
      await store.renew(k, a.token, 30_000);
      t.renew?.push(performance.now() - s);
      s = performance.now();
      await store.commit(k, a.token, record, 60_000);
      t.commit?.push(performance.now() - s);
      s = performance.now();
      await store.acquire(k, "fp", 30_000);
      t.replay?.push(performance.now() - s);
      const b = await store.acquire(`rel:${name}:${i}`, "fp", 30_000);
      if (b.state !== "acquired") throw new Error("expected a lease");
      s = performance.now();
      await store.release(`rel:${name}:${i}`, b.token);
      t.release?.push(performance.now() - s);
    }
    console.log(
      `${name}: ${Object.entries(t)
        .map(([op, xs]) => `${op} p50 ${us(median(xs))} p99 ${us(p99(xs))}`)
        .join("; ")}`,
    );
  }

  // Wake-up: a waiter joins a 300 ms call of another store; its delay after the leader's answer.
  for (const listen of [true, false]) {
    const mk = () =>
      createIdempotentFetch({
        store: postgresStore({
          client,
          table,
          ...(listen ? { listen: pgListen(() => new pg.Client({ connectionString: URL })) } : {}),
        }),
      });
    const leader = mk();
    const waiter = mk();
    const delays: number[] = [];
    for (let i = 0; i < 15; i++) {
      const key = `wake:${listen}:${i}`;
      const init = { method: "POST", headers: { "idempotency-key": key }, body: "{}" };
      let leaderDone = 0;
      const a = leader(`${up.url}/echo?ms=300`, init).then(async (r) => {
        await r.text();
        leaderDone = performance.now();
      });
      await new Promise((r) => setTimeout(r, 50));
      const b = waiter(`${up.url}/echo?ms=300`, init).then(async (r) => {
        await r.text();
        return performance.now();
      });
      const [, waiterDone] = await Promise.all([a, b]);
      delays.push(waiterDone - leaderDone);
    }
    console.log(
      `wake-up after the leader's answer, ${listen ? "LISTEN" : "polling"}: p50 ${median(delays).toFixed(1)} ms, max ${Math.max(...delays).toFixed(1)} ms`,
    );
  }

  // Bytes per record: the row as stored, and table + index size per row for 5,000 such records.
  await client.query(`TRUNCATE ${table}`);
  const store = postgresStore({ client, table });
  for (let i = 0; i < 5000; i++) {
    const a = await store.acquire(`size:${i}`, "fp", 30_000);
    if (a.state === "acquired") await store.commit(`size:${i}`, a.token, record, 60_000);
  }
  const { rows } = await client.query(
    `SELECT avg(pg_column_size(t.*))::int AS row, pg_total_relation_size('${table}') AS total, count(*)::int AS n
     FROM ${table} t WHERE token IS NULL`,
  );
  const r = rows[0];
  console.log(
    `bytes per record (${record.body.length} B body): row ${r.row}, table+indexes ${Math.round(Number(r.total) / r.n)} per row`,
  );
} finally {
  await client.query(`DROP TABLE IF EXISTS ${table}, ${table}_live`);
  await client.end();
  await sql.end();
  await up.close();
}
