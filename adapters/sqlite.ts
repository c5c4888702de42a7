// An IdempotencyStore on a local SQLite file (better-sqlite3, node:sqlite, bun:sqlite): durable and shared by every process on one machine.
//
// The SQL and the clock rule are in sqlite-sql.ts (shared with d1Store). The drivers are synchronous: each call
// runs to its end before any other JavaScript of this process, and each statement is atomic across processes.
// Waiters in this process are woken by this process's own commits and releases; waiters in other processes poll.

import { concat } from "../src/body.ts";
import { type KeyedListeners, keyedListeners } from "../src/listeners.ts";
import { sha256Sync } from "../src/sha256.ts";
import type { IdempotencyStore, LivePart, LiveRead, LiveStore, StoredRecord } from "../src/store.ts";
import { checkLivePart, resendShaped, sameBytes } from "../src/store-state.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";
import {
  acquireResult,
  bytesOf,
  commitParams,
  liveSchemaStatements,
  liveStatements,
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

/** The CREATE statements of the store's table (default "idemfetch") and its `<table>_live`, which `sqliteStore` runs itself. */
export function schemaSql(options: SqliteTableOptions = {}): string {
  return `${schemaSqlOf(options)}\n${liveSchemaStatements(tableOption("schemaSql", options)).join(";\n")};`;
}

/** A value bound to a `?` placeholder. */
export type SqliteValue = string | number | Uint8Array;

/** A prepared statement: better-sqlite3's Statement, node:sqlite's StatementSync and bun:sqlite's Statement fit. */
export interface SqliteStatement {
  /** Runs the statement with `params` bound to its `?` in order and returns every row it yields. */
  all(...params: SqliteValue[]): unknown[];
}

/** The calls this store makes on your database: `new Database(file)` of better-sqlite3 or bun:sqlite, `new DatabaseSync(file)` of node:sqlite. */
export interface SqliteDatabase {
  /** Compiles one statement. */
  prepare(sql: string): SqliteStatement;
  /** Runs statements that return nothing (PRAGMA, CREATE, BEGIN, COMMIT). */
  exec(sql: string): unknown;
}

export interface SqliteStoreOptions extends SqliteTableOptions {
  /** Your open database; the store never closes it. It is switched to WAL and given `busyTimeoutMs`. */
  db: SqliteDatabase;
  /**
   * How long a statement waits for another connection's write lock before failing, in ms. Default 1000. The
   * drivers wait synchronously: this blocks the process's thread, so keep it below the engine's `storeTimeoutMs`.
   */
  busyTimeoutMs?: number;
}

// Stores on the same database object (and table) in one process share their listeners: a commit through one wakes
// the waiters of the others.
const shared = new WeakMap<SqliteDatabase, Map<string, KeyedListeners>>();

function listenersOf(db: SqliteDatabase, table: string): KeyedListeners {
  let byTable = shared.get(db);
  if (!byTable) shared.set(db, (byTable = new Map()));
  let listeners = byTable.get(table);
  if (!listeners) byTable.set(table, (listeners = keyedListeners()));
  return listeners;
}

function checkDatabase(caller: string, db: SqliteDatabase): void {
  if (typeof db?.prepare !== "function" || typeof db.exec !== "function") {
    throw new TypeError(
      `${caller}: \`db\` must be an open database with prepare() and exec() (better-sqlite3, node:sqlite, bun:sqlite)`,
    );
  }
}

/** Runs `body` in one write transaction: BEGIN IMMEDIATE takes the write lock first, so nothing can come between. */
function transaction<T>(db: SqliteDatabase, body: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  try {
    const result = body();
    db.exec("COMMIT");
    return result;
  } catch (error) {
    db.exec("ROLLBACK");
    throw error;
  }
}

/** SQLITE_BUSY from any driver: better-sqlite3 and bun:sqlite name it in `code`, node:sqlite numbers it in `errcode`. */
function isBusy(error: unknown): boolean {
  const { code, errcode } = (error ?? {}) as { code?: unknown; errcode?: unknown };
  return (
    (typeof code === "string" && code.startsWith("SQLITE_BUSY")) ||
    (typeof errcode === "number" && (errcode & 0xff) === 5) ||
    /database is locked/i.test(String((error as Error)?.message))
  );
}

/**
 * Runs the set-up statements, again while they meet SQLITE_BUSY, for up to `busyTimeoutMs`. Workers started together
 * all set up a new file, and SQLite answers one that has read the header and then finds the write lock taken with
 * SQLITE_BUSY at once, without the busy handler (waiting could deadlock): so the store waits here itself.
 */
function setUp(db: SqliteDatabase, busyTimeoutMs: number, statements: string[]): void {
  const deadline = Date.now() + busyTimeoutMs;
  for (let pause = 1; ; pause = Math.min(pause * 2, 50)) {
    try {
      for (const sql of statements) db.exec(sql);
      return;
    } catch (error) {
      if (!isBusy(error) || Date.now() >= deadline) throw error;
      // The store is made synchronously, so this wait blocks the thread, as SQLite's own busy handler does.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.min(pause, deadline - Date.now()));
    }
  }
}

/**
 * An IdempotencyStore on one table of a local SQLite database, created if missing. Put the file on a local disk
 * (WAL needs shared memory: not a network file system) and give each process its own connection.
 */
export function sqliteStore(options: SqliteStoreOptions): LiveStore {
  strictOptions(
    options,
    { db: true, table: true, busyTimeoutMs: true } satisfies OptionNames<SqliteStoreOptions>,
    "sqliteStore()",
  );
  const { db } = options;
  checkDatabase("sqliteStore", db);
  const table = tableName("sqliteStore", options.table);
  const busyTimeoutMs = options.busyTimeoutMs ?? 1000;
  if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new TypeError(`sqliteStore: busyTimeoutMs must be a whole number of ms >= 0, got ${String(busyTimeoutMs)}`);
  }
  // busy_timeout first: switching to WAL and creating the table may themselves wait for another process.
  db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
  setUp(db, busyTimeoutMs, ["PRAGMA journal_mode = WAL", ...schemaStatements(table), ...liveSchemaStatements(table)]);

  const prepared = prepare(db, statements(table));
  const store = sqlStore(
    "sqlite",
    "sqliteStore",
    {
      acquire(storeKey, token, fingerprint, leaseMs) {
        // Read first: a replay or a wait round only reads, which WAL never blocks. Another process may take the key
        // between the read and the claim: the store reads again then.
        const row = prepared.read.all(storeKey)[0] as ReadRow | undefined;
        return (
          acquireResult(row, false, token) ??
          acquireResult(row, prepared.claim.all(storeKey, token, fingerprint, leaseMs).length > 0, token)
        );
      },
      commit: (storeKey, token, record, ttlMs) =>
        prepared.commit.all(...commitParams(record, ttlMs, "sqliteStore"), storeKey, token),
      release: (storeKey, token) => prepared.release.all(storeKey, token),
      renew: (storeKey, token, leaseMs) => prepared.renew.all(leaseMs, storeKey, token),
      forget: (storeKey, force) =>
        transaction(db, () => [prepared.forget.all(storeKey, force), prepared.forgetLeft.all(storeKey)]),
    },
    listenersOf(db, table),
  );
  return withLive(db, table, store, (storeKey) => prepared.read.all(storeKey)[0] as ReadRow | undefined);
}

/** Each statement of `sql`, prepared once. */
function prepare<T extends Record<string, string>>(db: SqliteDatabase, sql: T): Record<keyof T, SqliteStatement> {
  return Object.fromEntries(Object.entries(sql).map(([name, text]) => [name, db.prepare(text)])) as Record<
    keyof T,
    SqliteStatement
  >;
}

/** Runs `body` in one read transaction: every statement in it sees the same snapshot of the file (WAL). */
function snapshot<T>(db: SqliteDatabase, body: () => T): T {
  db.exec("BEGIN");
  try {
    return body();
  } finally {
    db.exec("COMMIT");
  }
}

/** A stream's head row. */
interface LiveHeadRow {
  status: number;
  status_text: string;
  headers: string;
}

const encoder = new TextEncoder();
/** The id of the stream a lease's token produces: readers see it, and it never reveals the token. */
const streamOf = (token: string): string => sha256Sync(encoder.encode(`idemfetch-stream:${token}`)).slice(0, 32);

/**
 * `store` with the live-stream capability, on `<table>_live` (sqlite-sql.ts). A part is checked against the lease
 * and the stream and written in one BEGIN IMMEDIATE transaction; a read is one snapshot. Readers in this process
 * are woken by its publishes; readers in other processes poll (a read is a local query: microseconds).
 */
function withLive(
  db: SqliteDatabase,
  table: string,
  store: IdempotencyStore,
  readRow: (storeKey: string) => ReadRow | undefined,
): LiveStore {
  const live = prepare(db, liveStatements(table));
  const listeners = listenersOf(db, `${table} live`);
  /** "key\ntoken" of the streams this store started and has not dropped yet: its commit or release drops them. */
  const streaming = new Set<string>();
  const drop = (storeKey: string, token: string) => {
    if (!streaming.delete(`${storeKey}\n${token}`)) return;
    try {
      live.drop.all(storeKey, streamOf(token));
    } catch {
      // The commit or release took effect: its answer stands. Rows left here (the file busy past busyTimeoutMs)
      // are read by no one (a record or a new lease names another stream) and go with sweep().
    }
    listeners.notify(storeKey);
  };
  const { commit, release } = store;
  return Object.assign(store, {
    async commit(storeKey: string, token: string, record: StoredRecord, ttlMs: number) {
      const done = await commit(storeKey, token, record, ttlMs);
      // After the record is in place: a reader between the two reads the record, never a gap.
      drop(storeKey, token);
      return done;
    },
    async release(storeKey: string, token: string) {
      const done = await release(storeKey, token);
      drop(storeKey, token);
      return done;
    },
    async publishLive(storeKey: string, token: string, part: LivePart) {
      const { head, offset, body } = part;
      if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`sqliteStore: bad live offset ${offset}`);
      const stream = streamOf(token);
      const stored = transaction(db, () => {
        if (live.owner.all(storeKey, token).length === 0) return false;
        const hasHead = live.head.all(storeKey, stream).length > 0;
        const length = hasHead
          ? Number((live.length.all(storeKey, stream)[0] as { length: number }).length)
          : undefined;
        if (resendShaped(length, part)) {
          const [last] = live.parts.all(storeKey, stream, offset) as { body: unknown }[];
          if (body.length === 0 || (last !== undefined && sameBytes(bytesOf(last.body), body))) return true;
        }
        checkLivePart("sqliteStore", length, part);
        if (head !== undefined) {
          live.others.all(storeKey, stream);
          live.writeHead.all(storeKey, stream, head.status, head.statusText, JSON.stringify(head.headers));
          streaming.add(`${storeKey}\n${token}`);
        }
        if (body.length > 0) live.writePart.all(storeKey, stream, offset + body.length, body);
        return true;
      });
      if (stored) listeners.notify(storeKey);
      return stored;
    },
    async readLive(storeKey: string, asked: string | undefined, offset: number): Promise<LiveRead> {
      return snapshot(db, (): LiveRead => {
        const row = readRow(storeKey);
        const found = acquireResult(row, false, "");
        if (row === undefined || found === undefined) return { state: "absent" };
        if (found.state === "done") {
          // The record names the stream that committed it by its token: no marker to keep in step.
          const own = asked !== undefined && row.body_id !== null && streamOf(row.body_id) === asked;
          return own ? { state: "done", record: found.record, stream: asked } : { state: "done", record: found.record };
        }
        const stream = streamOf(row.token as string);
        const [head] = live.head.all(storeKey, stream) as LiveHeadRow[];
        if (head === undefined) return { state: "pending" };
        const from = asked === stream && Number.isSafeInteger(offset) ? Math.max(0, offset) : 0;
        let size = 0;
        const parts = (live.parts.all(storeKey, stream, from) as { upto: number; body: unknown }[]).map((p) => {
          const bytes = bytesOf(p.body);
          const start = Number(p.upto) - bytes.length;
          const part = start < from ? bytes.subarray(from - start) : bytes;
          size += part.length;
          return part;
        });
        return {
          state: "live",
          stream,
          head: {
            status: Number(head.status),
            statusText: String(head.status_text),
            headers: JSON.parse(String(head.headers)) as [string, string][],
          },
          body: parts.length === 0 ? new Uint8Array(0) : concat(parts, size),
        };
      });
    },
    subscribeLive: (storeKey: string, onChange: () => void) => listeners.add(storeKey, onChange),
  });
}

/**
 * Deletes at most `limit` expired rows (one statement) and returns how many. Expired rows are already absent to
 * every operation; this only reclaims their space. Safe from any number of processes at once.
 */
export function sweep(db: SqliteDatabase, options: SqliteSweepOptions = {}): number {
  checkDatabase("sweep", db);
  const { table, limit } = sweepOptions(options);
  const rows = db.prepare(statements(table).sweep).all(limit).length;
  if (rows === limit) return rows;
  try {
    return rows + db.prepare(liveStatements(table).sweep).all(limit - rows).length;
  } catch (error) {
    // A file no sqliteStore of this version has opened yet has no <table>_live: nothing of it to sweep.
    if (/no such table/i.test(String((error as Error)?.message))) return rows;
    throw error;
  }
}
