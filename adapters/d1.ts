// An IdempotencyStore on Cloudflare D1 through the Worker's binding: the SQL of sqliteStore, one round trip per operation.
//
// The statements and the clock rule are in sqlite-sql.ts: expiry is measured by the D1 database's clock, one for
// every isolate. A D1 batch is one transaction, so acquire (read + claim: 2 queries) and forget (delete + check)
// are each one round trip and atomic. Waiters in this isolate are woken by its own commits and releases; others poll.

import { keyedListeners } from "../src/listeners.ts";
import type { IdempotencyStore } from "../src/store.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";
import {
  acquireResult,
  commitParams,
  partStatements,
  type ReadRow,
  type SqliteSweepOptions,
  type SqliteTableOptions,
  schemaSql as schemaSqlOf,
  schemaStatements,
  sqlStore,
  statements,
  sweepOptions,
  tableName,
  tableOption,
} from "./sqlite-sql.ts";

export type { SqliteSweepOptions, SqliteTableOptions } from "./sqlite-sql.ts";

/** The part of D1's D1PreparedStatement this store uses. */
export interface D1Statement {
  /** Binds `values` to the statement's `?` in order. */
  bind(...values: unknown[]): D1Statement;
  /** Runs it and resolves every row. */
  all(): Promise<{ results: unknown[] }>;
}

/** The part of the D1 binding (`env.DB`, a D1Database) this store uses. */
export interface D1Like {
  prepare(sql: string): D1Statement;
  /** Runs the statements as one transaction and resolves their results in order. */
  batch(statements: D1Statement[]): Promise<{ results: unknown[] }[]>;
}

export interface D1StoreOptions extends SqliteTableOptions {
  /** Your D1 binding (`env.DB`). */
  db: D1Like;
  /**
   * Creates the table (if missing) before the first operation: one extra round trip per store instance.
   * Default true; false when a migration (`schemaSql()` in `wrangler d1 migrations`) made it.
   */
  migrate?: boolean;
}

/** D1 holds at most 2 000 000 bytes in a row: a body goes in parts of this many bytes, the first in the record row. */
const PART_BYTES = 1_000_000;

/** The CREATE statements of the store's tables (default "idemfetch" and "idemfetch_parts"), for `wrangler d1 migrations`. */
export function schemaSql(options: SqliteTableOptions = {}): string {
  return schemaSqlOf(options, true);
}

function checkDatabase(caller: string, db: D1Like): void {
  if (typeof db?.prepare !== "function" || typeof db.batch !== "function") {
    throw new TypeError(`${caller}: \`db\` must be a D1 binding (env.DB) with prepare() and batch()`);
  }
}

/** Creates the table and its index if missing (idempotent): one batch, one round trip. */
export async function migrate(db: D1Like, options: SqliteTableOptions = {}): Promise<void> {
  checkDatabase("migrate", db);
  const table = tableOption("migrate", options);
  await db.batch(schemaStatements(table, true).map((sql) => db.prepare(sql)));
}

/**
 * Deletes at most `limit` expired rows, and as many body parts whose record is gone, in one batch; resolves how
 * many rows: e.g. from a Cron Trigger.
 */
export async function sweep(db: D1Like, options: SqliteSweepOptions = {}): Promise<number> {
  checkDatabase("sweep", db);
  const { table, limit } = sweepOptions(options);
  const [rows] = await db.batch([
    db.prepare(statements(table).sweep).bind(limit),
    db.prepare(partStatements(table).sweep).bind(limit),
  ]);
  return rows?.results.length ?? 0;
}

/** An IdempotencyStore on one D1 table. */
export function d1Store(options: D1StoreOptions): IdempotencyStore {
  strictOptions(options, { db: true, table: true, migrate: true } satisfies OptionNames<D1StoreOptions>, "d1Store()");
  const { db } = options;
  checkDatabase("d1Store", db);
  const table = tableName("d1Store", options.table);
  if (options.migrate !== undefined && typeof options.migrate !== "boolean") {
    throw new TypeError(`d1Store: migrate must be a boolean, got ${String(options.migrate)}`);
  }
  const sql = statements(table);
  const parts = partStatements(table);
  let ready: Promise<void> | undefined = options.migrate === false ? Promise.resolve() : undefined;
  // A failed migration is tried again by the next operation.
  const prepared = (): Promise<void> =>
    (ready ??= migrate(db, { table }).catch((error) => {
      ready = undefined;
      throw error;
    }));
  const rows = async (text: string, ...params: unknown[]): Promise<unknown[]> => {
    await prepared();
    return (
      await db
        .prepare(text)
        .bind(...params)
        .all()
    ).results;
  };

  return sqlStore(
    "d1",
    "d1Store",
    {
      async acquire(storeKey, token, fingerprint, leaseMs) {
        await prepared();
        // One transaction: the claim sees exactly the row the read returned.
        const [read, claim] = await db.batch([
          db.prepare(sql.read).bind(storeKey),
          db.prepare(sql.claim).bind(storeKey, token, fingerprint, leaseMs),
        ]);
        const row = read?.results[0] as ReadRow | undefined;
        const claimed = (claim?.results.length ?? 0) > 0;
        let body: unknown[] = [];
        const count = Number(row?.body_parts ?? 0);
        if (!claimed && count > 0 && Number(row?.live) === 1) {
          // A body over one part: a second round trip, for large replays only.
          body = (await db.prepare(parts.read).bind(storeKey, row?.body_id).all()).results;
          if (body.length !== count) return undefined; // replaced since the read: read again
        }
        return acquireResult(row, claimed, token, body);
      },
      async commit(storeKey, token, record, ttlMs) {
        const count = Math.ceil(record.body.length / PART_BYTES) - 1;
        if (count <= 0) return rows(sql.commit, ...commitParams(record, ttlMs, "d1Store"), storeKey, token);
        await prepared();
        // One transaction: the key's parts of records that are gone go, the new ones are written only while the
        // lease is ours, and the record with them.
        const part = (n: number) => record.body.subarray(n * PART_BYTES, (n + 1) * PART_BYTES);
        const writes = Array.from({ length: count }, (_, i) =>
          db.prepare(parts.write).bind(storeKey, token, i + 1, part(i + 1), storeKey, token),
        );
        const params = commitParams(record, ttlMs, "d1Store", count, PART_BYTES);
        const results = await db.batch([
          db.prepare(parts.drop).bind(storeKey, storeKey),
          ...writes,
          db.prepare(sql.commit).bind(...params, storeKey, token),
        ]);
        return results.at(-1)?.results ?? [];
      },
      release: (storeKey, token) => rows(sql.release, storeKey, token),
      renew: (storeKey, token, leaseMs) => rows(sql.renew, leaseMs, storeKey, token),
      async forget(storeKey, force) {
        await prepared();
        const [deleted, left] = await db.batch([
          db.prepare(sql.forget).bind(storeKey, force),
          db.prepare(sql.forgetLeft).bind(storeKey),
          db.prepare(parts.drop).bind(storeKey, storeKey),
        ]);
        return [deleted?.results ?? [], left?.results ?? []];
      },
    },
    keyedListeners(),
  );
}
