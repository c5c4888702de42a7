// The SQL of sqliteStore and d1Store (both SQLite): one table, one statement per step, expiry on SQLite's clock.
//
// One row per store key. A lease is a row with an owner `token`; a record is a row without one. The clock rule:
// every `expires_at` is written and compared as NOW below, the clock of the SQLite engine running the statement,
// never the caller's. For a local file that is the OS clock of the one machine all processes share; for D1 it is
// the clock of the database's own server, shared by every isolate. Parameters are anonymous `?`, in order (the
// one placeholder better-sqlite3, node:sqlite, bun:sqlite and D1 all accept); no statement reads a boolean.

import type { KeyedListeners } from "../src/listeners.ts";
import {
  type AcquireResult,
  type ForgetResult,
  type IdempotencyStore,
  newToken,
  type StoredRecord,
} from "../src/store.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";

export const DEFAULT_TABLE = "idemfetch";
const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;

/** The table option, validated: lower-case letters, digits and "_", at most 48 characters. */
export function tableName(caller: string, table: string | undefined): string {
  const t = table ?? DEFAULT_TABLE;
  if (typeof t !== "string" || t.length > 48 || !IDENTIFIER.test(t)) {
    throw new TypeError(
      `${caller}: table must be a lower-case identifier of at most 48 characters, got ${String(table)}`,
    );
  }
  return t;
}

/** SQLite's clock in Unix ms; 'now' is fixed for the whole of one statement. */
const NOW = "CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)";

/**
 * SQL: whether row `r` decodes (a lease, or a complete record whose headers are a JSON array of string pairs).
 * Rows this store did not write (by hand, another version) may not: they count as absent and acquire replaces them.
 * CASE, not AND: SQLite's AND does not short-circuit, and the JSON functions raise an error on text that is not JSON.
 */
const valid = (r: string): string => `(${r}.token IS NOT NULL OR CASE WHEN json_valid(${r}.headers) THEN COALESCE(
  ${r}.status BETWEEN 200 AND 599 AND ${r}.status_text IS NOT NULL AND ${r}.body IS NOT NULL
  AND ${r}.created_at IS NOT NULL AND json_type(${r}.headers) = 'array'
  AND NOT EXISTS (SELECT 1 FROM json_each(${r}.headers) h WHERE h.type <> 'array' OR json_array_length(h.value) <> 2
    OR json_type(h.value, '$[0]') <> 'text' OR json_type(h.value, '$[1]') <> 'text'), 0) ELSE 0 END)`;

/**
 * The CREATE statements for one table, each on its own (D1's batch takes one statement per entry). With `parts`
 * (D1, whose rows hold at most 2 MB), also the table of body parts beyond a record row's first.
 */
export function schemaStatements(table: string, parts = false): string[] {
  const statements = [
    // STRICT: SQLite keeps each column's declared type, so a value of another type cannot slip in.
    `CREATE TABLE IF NOT EXISTS ${table} (
  key         TEXT PRIMARY KEY,
  token       TEXT,             -- owner token while a lease; NULL once a record
  fingerprint TEXT NOT NULL,    -- of the request that took the lease / produced the record
  status      INTEGER,
  status_text TEXT,
  headers     TEXT,             -- JSON [[name, value], ...] in response order
  body        BLOB,
  created_at  REAL,             -- record: createdAt, Unix ms
  expires_at  INTEGER NOT NULL, -- Unix ms, on SQLite's clock
  body_id     TEXT,             -- record: the token that committed it, which its parts (D1) are filed under
  body_parts  INTEGER           -- record: how many parts of the body follow body in <table>_parts (D1); else 0
) STRICT`,
    `CREATE INDEX IF NOT EXISTS ${table}_expires_at ON ${table} (expires_at)`,
  ];
  if (parts) {
    statements.push(`CREATE TABLE IF NOT EXISTS ${table}_parts (
  key     TEXT NOT NULL,
  body_id TEXT NOT NULL,
  n       INTEGER NOT NULL,  -- 1, 2, …: the order after the record row's own body
  data    BLOB NOT NULL,
  PRIMARY KEY (key, body_id, n)
) STRICT`);
  }
  return statements;
}

export interface SqliteTableOptions {
  /** Table name: lower-case letters, digits and "_", at most 48 characters. Default "idemfetch". */
  table?: string;
}

export interface SqliteSweepOptions extends SqliteTableOptions {
  /** Expired rows deleted at most by this call (one statement). Default 1000. */
  limit?: number;
}

/** The CREATE statements for `table` (default "idemfetch"), idempotent: for a migration file (wrangler d1 migrations). */
export function schemaSql(options: SqliteTableOptions = {}, parts = false): string {
  return `${schemaStatements(tableOption("schemaSql", options), parts).join(";\n")};`;
}

/** The table of `options` ({ table } and nothing else), validated; `caller` names the function in errors. */
export function tableOption(caller: string, options: SqliteTableOptions): string {
  strictOptions(options, { table: true } satisfies OptionNames<SqliteTableOptions>, `${caller}()`);
  return tableName(caller, options.table);
}

/** sweep's options, validated: the table and the most rows one call deletes. */
export function sweepOptions(options: SqliteSweepOptions): { table: string; limit: number } {
  strictOptions(options, { table: true, limit: true } satisfies OptionNames<SqliteSweepOptions>, "sweep()");
  const limit = options.limit ?? 1000;
  if (!Number.isInteger(limit) || limit < 1) {
    throw new TypeError(`sweep: limit must be a positive integer, got ${String(options.limit)}`);
  }
  return { table: tableName("sweep", options.table), limit };
}

/** The statements of one table, each with its parameters in order. */
export function statements(t: string) {
  return {
    /** key. The row as it is, with whether it is live and whether it decodes: acquire decides on it. */
    read: `SELECT token, fingerprint, status, status_text, headers, body, created_at, body_id, body_parts,
  expires_at > ${NOW} AS live, ${valid(t)} AS ok
FROM ${t} WHERE key = ?`,
    /**
     * key, token, fingerprint, lease ms. Takes the key when it is free, expired or does not decode, in one
     * statement: a row back means this token holds the lease; none means a live row was (still) there.
     */
    claim: `INSERT INTO ${t} AS r (key, token, fingerprint, expires_at) VALUES (?, ?, ?, ${NOW} + ?)
ON CONFLICT (key) DO UPDATE SET token = excluded.token, fingerprint = excluded.fingerprint, status = NULL,
  status_text = NULL, headers = NULL, body = NULL, created_at = NULL, body_id = NULL, body_parts = NULL,
  expires_at = excluded.expires_at
WHERE r.expires_at <= ${NOW} OR NOT ${valid("r")}
RETURNING 1 AS claimed`,
    /**
     * fingerprint, status, status text, headers JSON, body, created-at ms, parts, ttl ms, key, token. SET reads
     * the row as it was: `body_id = token` files the record under the committing token.
     */
    commit: `UPDATE ${t} SET token = NULL, fingerprint = ?, status = ?, status_text = ?, headers = ?, body = ?,
  created_at = ?, body_id = token, body_parts = ?, expires_at = ${NOW} + ?
WHERE key = ? AND token = ? AND expires_at > ${NOW}
RETURNING 1 AS done`,
    /** key, token. */
    release: `DELETE FROM ${t} WHERE key = ? AND token = ? AND expires_at > ${NOW} RETURNING 1 AS done`,
    /** lease ms, key, token. */
    renew: `UPDATE ${t} SET expires_at = ${NOW} + ? WHERE key = ? AND token = ? AND expires_at > ${NOW}
RETURNING 1 AS done`,
    /**
     * key, force (1 or 0). Deletes a record, an expired or undecodable row, and a live lease only when forced.
     * Run with `forgetLeft` in one transaction: that tells a live lease left in place from nothing there.
     */
    forget: `DELETE FROM ${t} WHERE key = ? AND (? = 1 OR token IS NULL OR expires_at <= ${NOW} OR NOT ${valid(t)})
RETURNING expires_at > ${NOW} AS live`,
    /** key. */
    forgetLeft: `SELECT 1 AS held FROM ${t} WHERE key = ? AND expires_at > ${NOW}`,
    /** limit. Deletes at most `limit` expired rows, in one statement (so never a row an acquire took over). */
    sweep: `DELETE FROM ${t} WHERE key IN (SELECT key FROM ${t} WHERE expires_at <= ${NOW} LIMIT ?)
RETURNING 1 AS gone`,
  };
}

/**
 * D1's statements for bodies larger than one row may hold: the record row keeps the first part, <table>_parts the
 * rest, filed under the committing token. Parts of a record that is gone are deleted by the next large commit of
 * the key, by forget and by sweep; until then nothing reads them (reads go by the record's body_id).
 */
export function partStatements(t: string) {
  return {
    /** key, token, n, data, key, token. Writes part n of the body, only while `token` holds a live lease on key. */
    write: `INSERT OR REPLACE INTO ${t}_parts (key, body_id, n, data)
SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM ${t} WHERE key = ? AND token = ? AND expires_at > ${NOW})`,
    /** key, body id. The parts of the record `read` returned, in order. */
    read: `SELECT data FROM ${t}_parts WHERE key = ? AND body_id = ? ORDER BY n`,
    /** key, key. Drops the key's parts that belong to no current record (replaced, forgotten, expired, a lease). */
    drop: `DELETE FROM ${t}_parts WHERE key = ? AND body_id IS NOT (SELECT body_id FROM ${t} WHERE key = ? AND token IS NULL)`,
    /** limit. Deletes at most `limit` parts whose record is gone (swept, say). */
    sweep: `DELETE FROM ${t}_parts WHERE rowid IN (SELECT p.rowid FROM ${t}_parts p
  WHERE NOT EXISTS (SELECT 1 FROM ${t} r WHERE r.key = p.key AND r.body_id = p.body_id) LIMIT ?)
RETURNING 1 AS gone`,
  };
}

/**
 * sqliteStore's live streams (docs/protocol.md "The live-stream capability"), on `<table>_live`: a stream row
 * (upto 0) holds a lease's head, and each body part is a row keyed by the offset it ends at, all under the
 * stream's id (a hash of the lease's token, so never the token). A record names the stream that committed it by
 * its `body_id` (the committing token): no marker row. Rows of an ended stream are dropped by its own commit or
 * release, by the key's next head, and by sweep.
 */
export function liveSchemaStatements(t: string): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${t}_live (
  key         TEXT NOT NULL,
  stream      TEXT NOT NULL,
  upto        INTEGER NOT NULL, -- 0: the stream's row (the head); else a part, ending after this many body bytes
  status      INTEGER,
  status_text TEXT,
  headers     TEXT,             -- JSON [[name, value], ...] in response order
  body        BLOB,             -- a part's bytes
  PRIMARY KEY (key, stream, upto)
) STRICT`,
  ];
}

/**
 * The statements of `<t>_live`; the store runs the ones that write inside one BEGIN IMMEDIATE transaction. Each
 * write returns a row per row it wrote, as every statement here does: the drivers' one common call is all().
 */
export function liveStatements(t: string) {
  return {
    /** key, token. A row back: `token` holds a live lease on key. */
    owner: `SELECT 1 AS held FROM ${t} WHERE key = ? AND token = ? AND expires_at > ${NOW}`,
    /** key, stream. The stream's head, if published. */
    head: `SELECT status, status_text, headers FROM ${t}_live WHERE key = ? AND stream = ? AND upto = 0`,
    /** key, stream. Body bytes the stream holds (0 without parts). */
    length: `SELECT COALESCE(max(upto), 0) AS length FROM ${t}_live WHERE key = ? AND stream = ?`,
    /** key, stream, offset. The parts that end after `offset`, in order. */
    parts: `SELECT upto, body FROM ${t}_live WHERE key = ? AND stream = ? AND upto > ? ORDER BY upto`,
    /** key, stream, status, status text, headers JSON. */
    writeHead: `INSERT INTO ${t}_live (key, stream, upto, status, status_text, headers) VALUES (?, ?, 0, ?, ?, ?)
RETURNING 1 AS done`,
    /** key, stream, upto, body. */
    writePart: `INSERT INTO ${t}_live (key, stream, upto, body) VALUES (?, ?, ?, ?) RETURNING 1 AS done`,
    /** key, stream. Drops the key's streams but this one: what earlier leases left, when this one's head comes. */
    others: `DELETE FROM ${t}_live WHERE key = ? AND stream <> ? RETURNING 1 AS gone`,
    /** key, stream. Drops one stream (its lease committed or released). */
    drop: `DELETE FROM ${t}_live WHERE key = ? AND stream = ? RETURNING 1 AS gone`,
    /** key. Whether `key` holds a live lease or record with stream rows: what the conformance suite checks gone. */
    held: `SELECT 1 AS held FROM ${t}_live l JOIN ${t} r ON r.key = l.key WHERE l.key = ? AND r.expires_at > ${NOW} LIMIT 1`,
    /** limit. Deletes at most `limit` rows of streams whose key holds no live lease (ended, lapsed, swept). */
    sweep: `DELETE FROM ${t}_live WHERE rowid IN (SELECT l.rowid FROM ${t}_live l WHERE NOT EXISTS (
  SELECT 1 FROM ${t} r WHERE r.key = l.key AND r.token IS NOT NULL AND r.expires_at > ${NOW}) LIMIT ?)
RETURNING 1 AS gone`,
  };
}

/** A lease or ttl in ms, as the statements take it: a whole number (the column is INTEGER). */
export function wholeMs(caller: string, ms: number): number {
  if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`${caller}: expected a positive number of ms, got ${ms}`);
  return Math.ceil(ms);
}

/** What `read` returns. */
export interface ReadRow {
  token: string | null;
  fingerprint: string;
  status: number | null;
  status_text: string | null;
  headers: string | null;
  body: unknown;
  created_at: number | null;
  body_id: string | null;
  body_parts: number | null;
  live: number;
  ok: number;
}

/**
 * What acquire resolves, from the key's row as `read` saw it and whether `claim` then took the key for `token`
 * (and, on D1, the rows `partStatements().read` found). Undefined means neither: the row changed between the two
 * statements, and the caller reads again.
 */
export function acquireResult(
  row: ReadRow | undefined,
  claimed: boolean,
  token: string,
  parts: unknown[] = [],
): AcquireResult | undefined {
  if (claimed) {
    const corrupt = row !== undefined && Number(row.live) === 1 && Number(row.ok) !== 1;
    return corrupt ? { state: "acquired", token, replacedCorrupt: true } : { state: "acquired", token };
  }
  if (row === undefined || Number(row.live) !== 1 || Number(row.ok) !== 1) return undefined;
  if (row.token !== null) return { state: "pending", fingerprint: row.fingerprint };
  const record: StoredRecord = {
    status: Number(row.status),
    statusText: String(row.status_text),
    headers: JSON.parse(String(row.headers)) as [string, string][],
    body: joinParts(bytesOf(row.body), Number(row.body_parts ?? 0), parts),
    createdAt: Number(row.created_at),
    fingerprint: row.fingerprint,
  };
  return { state: "done", record };
}

/** The body and the parts that follow it, as one array. */
function joinParts(first: Uint8Array, count: number, parts: unknown[]): Uint8Array {
  if (count === 0) return first;
  // Only a hand-edited table gets here (parts are written in the commit's own transaction).
  if (parts.length !== count) throw new Error(`SQLite store: a record has ${parts.length} of its ${count} body parts`);
  const chunks = [first, ...parts.map((p) => bytesOf((p as { data: unknown }).data))];
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** commit's parameters, in order, before the key and token; the body's first `partBytes` only when it has parts. */
export function commitParams(
  record: StoredRecord,
  ttlMs: number,
  caller: string,
  parts = 0,
  partBytes = 0,
): (string | number | Uint8Array)[] {
  return [
    record.fingerprint,
    record.status,
    record.statusText,
    JSON.stringify(record.headers),
    parts === 0 ? record.body : record.body.subarray(0, partBytes),
    record.createdAt,
    parts,
    wholeMs(caller, ttlMs),
  ];
}

/** forget's answer from the rows `forget` deleted and the rows `forgetLeft` then found. */
function forgetResult(deleted: unknown[], left: unknown[]): ForgetResult {
  if (deleted.some((row) => Number((row as { live: unknown }).live) === 1)) return "forgotten";
  return left.length > 0 ? "in-progress" : "absent";
}

/** A BLOB as the driver hands it back (Buffer, Uint8Array, ArrayBuffer, or D1's array of numbers outside workerd): always a copy. */
export function bytesOf(value: unknown): Uint8Array {
  // new Uint8Array(), not .slice(): Buffer#slice is a view on the same memory.
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value.slice(0));
  if (Array.isArray(value)) return Uint8Array.from(value as number[]);
  throw new Error(`SQLite store: unexpected BLOB value from the driver (${typeof value})`);
}

type Awaitable<T> = T | Promise<T>;

/** What one driver does per operation: it runs the statements above and hands back their rows. */
export interface SqlSteps {
  /**
   * `read`, then `claim` for `token` (lease in whole ms): acquire's answer (see acquireResult), or undefined when
   * the row changed between the two, and the store reads again.
   */
  acquire(storeKey: string, token: string, fingerprint: string, leaseMs: number): Awaitable<AcquireResult | undefined>;
  /** The rows `commit` returned: one when the record took the lease's place. */
  commit(storeKey: string, token: string, record: StoredRecord, ttlMs: number): Awaitable<unknown[]>;
  /** The rows `release` returned. */
  release(storeKey: string, token: string): Awaitable<unknown[]>;
  /** The rows `renew` returned (lease in whole ms). */
  renew(storeKey: string, token: string, leaseMs: number): Awaitable<unknown[]>;
  /** The rows of `forget` and then `forgetLeft`, run in one transaction. */
  forget(storeKey: string, force: 0 | 1): Awaitable<[deleted: unknown[], left: unknown[]]>;
}

/**
 * The store both SQLite adapters are, over their driver's `steps`: the rows decide each answer, and a commit,
 * release or forget that took effect wakes `listeners` (this process's or isolate's waiters; others poll).
 * `name` names the store in the engine's warnings ("sqlite", "d1").
 */
export function sqlStore(name: string, caller: string, steps: SqlSteps, listeners: KeyedListeners): IdempotencyStore {
  const took = (rows: unknown[], storeKey: string): boolean => {
    if (rows.length === 0) return false;
    listeners.notify(storeKey);
    return true;
  };
  const store: IdempotencyStore & { readonly name: string } = {
    name,
    async acquire(storeKey, fingerprint, leaseMs) {
      const ms = wholeMs(caller, leaseMs);
      // An unused token is never written: one serves every round.
      const token = newToken();
      for (let attempt = 0; attempt < 3; attempt++) {
        const result = await steps.acquire(storeKey, token, fingerprint, ms);
        if (result) return result;
      }
      throw new Error(`${caller}: acquire found the key neither free nor held three times in a row`);
    },
    async commit(storeKey, token, record, ttlMs) {
      return took(await steps.commit(storeKey, token, record, ttlMs), storeKey);
    },
    async release(storeKey, token) {
      return took(await steps.release(storeKey, token), storeKey);
    },
    async renew(storeKey, token, leaseMs) {
      return (await steps.renew(storeKey, token, wholeMs(caller, leaseMs))).length > 0;
    },
    async forget(storeKey, force) {
      const [deleted, left] = await steps.forget(storeKey, force === true ? 1 : 0);
      const result = forgetResult(deleted, left);
      if (result === "forgotten") listeners.notify(storeKey);
      return result;
    },
    subscribe: (storeKey, onChange) => listeners.add(storeKey, onChange),
  };
  return store;
}
