// An IdempotencyStore on PostgreSQL through the user's client (pg, Neon, postgres.js), woken by LISTEN/NOTIFY.
//
// One row per store key in one table. A lease is a row with an owner `token`; a record is a row without one,
// with status, status text, headers (jsonb), body (bytea), fingerprint and created-at. `expires_at` is always
// computed and compared by the database clock (clock_timestamp()), never the caller's. A row that does not
// decode (foreign, half written by hand, of another format) is treated as absent: `acquire` takes it over.
// Every operation is ONE statement, so it is atomic without an explicit transaction; commit, release and
// forget NOTIFY in that same statement, which PostgreSQL delivers only once it is committed.
//
// Live streams (docs/protocol.md "The live-stream capability") keep their parts in a second table,
// `<table>_live`, touched only by a lease that streams: an answer never streamed runs the statements above.

import { keyedListeners } from "../src/listeners.ts";
import { sha256Sync } from "../src/sha256.ts";
import { type IdempotencyStore, type LiveRead, type LiveStore, newToken, type StoredRecord } from "../src/store.ts";
import { type OptionNames, strictOptions } from "../src/strict.ts";

/** The one call this store makes: pg `Client`/`Pool`, Neon's `Client`/`Pool` fit as they are. */
export interface PostgresClient {
  /** Runs one parameterised statement ($1, $2, …) and resolves its rows. */
  query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }>;
}

/**
 * Starts delivering NOTIFY payloads of `channel` on a dedicated connection and resolves a function that stops
 * (and closes that connection). `onPayload(undefined)` means "anything may have changed" (after a reconnect).
 * `pgListen()` makes one for pg; for postgres.js: `(channel, fn) => sql.listen(channel, fn).then((l) => l.unlisten)`.
 */
export type PostgresListen = (
  channel: string,
  onPayload: (payload: string | undefined) => void,
) => Promise<() => Promise<void>>;

export interface PostgresStoreOptions {
  /** Your client or pool; the store never opens, closes or reconfigures it. */
  client: PostgresClient;
  /** Table name, optionally schema-qualified: lower-case letters, digits and "_", at most 48 characters. Default "idemfetch". */
  table?: string;
  /** A dedicated connection for LISTEN (see `pgListen`). Without it the store has no `subscribe` and waiters poll. */
  listen?: PostgresListen;
}

export interface PostgresTableOptions {
  /** Table name, as given to `postgresStore`. Default "idemfetch". */
  table?: string;
}

export interface SweepOptions extends PostgresTableOptions {
  /** Expired rows deleted at most by this call (one statement). Default 1000. */
  limit?: number;
}

const DEFAULT_TABLE = "idemfetch";
const IDENTIFIER = /^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/;

/** Validates the table option; the channel (`idemfetch:<table>`) and index name must fit in 63 bytes. */
function tableName(name: string, table: string | undefined): string {
  const t = table ?? DEFAULT_TABLE;
  if (typeof t !== "string" || t.length > 48 || !IDENTIFIER.test(t)) {
    throw new TypeError(
      `${name}: table must be a lower-case identifier (optionally schema.table) of at most 48 characters, got ${String(table)}`,
    );
  }
  return t;
}

/** The table of `table`'s live streams: `<table>_live`, in the same schema. */
const liveTableOf = (t: string): string => `${t}_live`;

/**
 * The CREATE statements for `table` (default "idemfetch") and its live-stream table `<table>_live`, idempotent;
 * `migrate()` runs them. A table made by an earlier version gets the second one, and is left as it is.
 */
export function schemaSql(options: PostgresTableOptions = {}): string {
  strictOptions(options, { table: true } satisfies OptionNames<PostgresTableOptions>, "schemaSql()");
  const t = tableName("schemaSql", options.table);
  const name = t.split(".").pop();
  const live = liveTableOf(t);
  return `CREATE TABLE IF NOT EXISTS ${t} (
  key         text PRIMARY KEY,
  token       text,        -- owner token while a lease; NULL once a record
  fingerprint text,        -- of the request that took the lease / produced the record
  status      smallint,
  status_text text,
  headers     jsonb,       -- [[name, value], ...] in response order
  body        bytea,
  created_at  timestamptz, -- record: when the response was stored; lease: when it was taken
  expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ${name}_expires_at ON ${t} (expires_at);
CREATE TABLE IF NOT EXISTS ${live} (
  key         text NOT NULL,
  stream      text NOT NULL,   -- SHA-256 (hex) of the lease's owner token: names the execution, never the token
  upto        bigint NOT NULL, -- 0: the stream's row; else a part, ending after this many body bytes
  status      smallint,        -- stream row: the head; all three NULL once its lease committed (the marker)
  status_text text,
  headers     jsonb,
  body        bytea,           -- a part's bytes
  expires_at  timestamptz,     -- stream row: the lease's expiry, then the record's; NULL on parts
  PRIMARY KEY (key, stream, upto)
);
CREATE INDEX IF NOT EXISTS ${name}_live_expires ON ${live} (expires_at) WHERE upto = 0;`;
}

/**
 * Creates the table and its index if missing. Idempotent, and safe from many instances at once: one DO
 * statement (one transaction) under a transaction-scoped advisory lock per table.
 */
export async function migrate(client: PostgresClient, options: PostgresTableOptions = {}): Promise<void> {
  strictOptions(options, { table: true } satisfies OptionNames<PostgresTableOptions>, "migrate()");
  const t = tableName("migrate", options.table);
  await client.query(
    `DO $idemfetch$ BEGIN
PERFORM pg_advisory_xact_lock(hashtext('idemfetch:migrate:${t}'));
${schemaSql({ table: t })}
END $idemfetch$`,
  );
}

/**
 * Deletes at most `limit` expired rows and at most `limit` expired live streams (each with its parts), and
 * resolves how many rows. Safe from any number of instances at once (SKIP LOCKED: each takes rows no other is
 * deleting, and never a row an acquire is taking over).
 */
export async function sweep(client: PostgresClient, options: SweepOptions = {}): Promise<number> {
  strictOptions(options, { table: true, limit: true } satisfies OptionNames<SweepOptions>, "sweep()");
  const t = tableName("sweep", options.table);
  const limit = options.limit ?? 1000;
  if (!Number.isInteger(limit) || limit < 1) {
    throw new TypeError(`sweep: limit must be a positive integer, got ${String(options.limit)}`);
  }
  const { rows } = await client.query(
    `WITH d AS (
  DELETE FROM ${t} WHERE key IN (
    SELECT key FROM ${t} WHERE expires_at < now() LIMIT $1::int FOR UPDATE SKIP LOCKED
  ) AND expires_at < now()
  RETURNING 1
) SELECT count(*)::int AS n FROM d`,
    [limit],
  );
  const records = Number((rows[0] as { n: unknown } | undefined)?.n ?? 0);
  // A stream row lapses with its lease (renew extends it) or, as the marker, with its record; its parts go with it.
  const live = liveTableOf(t);
  const streams = await client
    .query(
      `WITH d AS (
  DELETE FROM ${live} WHERE (key, stream) IN (
    SELECT key, stream FROM ${live} WHERE upto = 0 AND expires_at < now() LIMIT $1::int FOR UPDATE SKIP LOCKED
  )
  RETURNING 1
) SELECT count(*)::int AS n FROM d`,
      [limit],
    )
    .catch((error: unknown) => {
      if (isUndefinedTable(error)) return { rows: [] }; // a table migrated before live streams: nothing to sweep
      throw error;
    });
  return records + Number((streams.rows[0] as { n: unknown } | undefined)?.n ?? 0);
}

/** Whether `error` is PostgreSQL's "relation does not exist" (SQLSTATE 42P01). */
function isUndefinedTable(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "42P01";
}

/** The payload NOTIFY carries for `storeKey`: the key itself, or a digest when too long for NOTIFY (8000 bytes). */
function payloadOf(storeKey: string): string {
  const bytes = new TextEncoder().encode(storeKey);
  return bytes.length <= 1000 ? storeKey : `#${sha256Sync(bytes)}`;
}

/**
 * The NOTIFY payload that wakes `subscribeLive` for `storeKey`: its plain payload behind U+001F, a character no
 * store key the engine makes contains, so a part never wakes a plain `subscribe` (its waiters would re-acquire).
 */
function livePayloadOf(storeKey: string): string {
  return `\u001f${payloadOf(storeKey)}`;
}

/** SQL: a lease token's stream id, SHA-256 hex (a reader may see it; only the token lets anyone commit). */
const streamOf = (token: string): string => `encode(sha256(convert_to(${token}, 'UTF8')), 'hex')`;

/** SQL: whether row `r` decodes (a lease with a fingerprint, or a complete record). Never NULL. */
const valid = (r: string): string => `COALESCE(
  (${r}.token IS NOT NULL AND ${r}.fingerprint IS NOT NULL) OR
  (${r}.token IS NULL AND ${r}.fingerprint IS NOT NULL AND ${r}.status BETWEEN 200 AND 599
   AND ${r}.status_text IS NOT NULL AND ${r}.body IS NOT NULL AND ${r}.created_at IS NOT NULL
   AND jsonb_typeof(${r}.headers) = 'array'
   AND NOT jsonb_path_exists(${r}.headers,
     'strict $[*] ? (@.type() != "array" || @.size() != 2 || @[0].type() != "string" || @[1].type() != "string")')),
  false)`;

const MS = "* interval '1 millisecond'";

/** The statements of one table. */
function statements(t: string) {
  const channel = `'idemfetch:${t}'`;
  return {
    /**
     * $1 key, $2 new token, $3 fingerprint, $4 lease ms. `cur` reads the row; the insert runs only when no live,
     * decodable row is there, and takes over an existing row only if it is expired or corrupt (checked again on
     * the latest version under its row lock). A replay therefore writes and locks nothing. No row back means a
     * concurrent transaction inserted the key after this statement's snapshot: the caller runs it again.
     * `corrupt` comes from that snapshot (RETURNING cannot see the old row before PostgreSQL 18): informational.
     */
    acquire: `WITH cur AS (
  SELECT token, fingerprint, status, status_text, headers, body, created_at,
         expires_at > clock_timestamp() AS live, ${valid("c")} AS ok
  FROM ${t} c WHERE key = $1::text
), ins AS (
  INSERT INTO ${t} AS r (key, token, fingerprint, created_at, expires_at)
  SELECT $1::text, $2::text, $3::text, clock_timestamp(), clock_timestamp() + $4::float8 ${MS}
  WHERE NOT EXISTS (SELECT 1 FROM cur WHERE live AND ok)
  ON CONFLICT (key) DO UPDATE SET token = excluded.token, fingerprint = excluded.fingerprint, status = NULL,
    status_text = NULL, headers = NULL, body = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
  WHERE r.expires_at <= clock_timestamp() OR NOT ${valid("r")}
  RETURNING 1
)
SELECT 'acquired' AS state, COALESCE((SELECT live AND NOT ok FROM cur), false) AS corrupt, NULL::text AS fingerprint,
  NULL::smallint AS status, NULL::text AS status_text, NULL::text AS headers, NULL::bytea AS body, NULL::float8 AS created_at
FROM ins
UNION ALL
SELECT CASE WHEN token IS NULL THEN 'done' ELSE 'pending' END, false, fingerprint, status, status_text, headers::text,
  body, round(extract(epoch FROM created_at) * 1000)::float8
FROM cur WHERE live AND ok`,
    /**
     * $1 key, $2 token, $3 fingerprint, $4 status, $5 status text, $6 headers JSON, $7 body, $8 created-at ms,
     * $9 ttl ms, $10 payload. $6 is typed text, then cast: postgres.js would JSON-encode a jsonb parameter again.
     */
    commit: `WITH c AS (
  UPDATE ${t} SET token = NULL, fingerprint = $3::text, status = $4::smallint, status_text = $5::text,
    headers = $6::text::jsonb, body = $7::bytea, created_at = timestamptz 'epoch' + $8::float8 ${MS},
    expires_at = clock_timestamp() + $9::float8 ${MS}
  WHERE key = $1::text AND token = $2::text AND expires_at > clock_timestamp()
  RETURNING 1
) SELECT pg_notify(${channel}, $10::text)::text AS notified FROM c`,
    /** $1 key, $2 token, $3 payload. */
    release: `WITH d AS (
  DELETE FROM ${t} WHERE key = $1::text AND token = $2::text AND expires_at > clock_timestamp() RETURNING 1
) SELECT pg_notify(${channel}, $3::text)::text AS notified FROM d`,
    /** $1 key, $2 token, $3 lease ms. */
    renew: `UPDATE ${t} SET expires_at = clock_timestamp() + $3::float8 ${MS}
WHERE key = $1::text AND token = $2::text AND expires_at > clock_timestamp() RETURNING 1 AS renewed`,
    /** $1 key, $2 force, $3 payload. Deletes records, corrupt and expired rows, and a live lease only when forced. */
    forget: `WITH d AS (
  DELETE FROM ${t} f WHERE key = $1::text
    AND ($2::boolean OR token IS NULL OR expires_at <= clock_timestamp() OR NOT ${valid("f")})
  RETURNING expires_at > clock_timestamp() AS live
)
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM d WHERE live) THEN 'forgotten'
    WHEN NOT EXISTS (SELECT 1 FROM d)
      AND EXISTS (SELECT 1 FROM ${t} WHERE key = $1::text AND expires_at > clock_timestamp()) THEN 'in-progress'
    ELSE 'absent' END AS result,
  (SELECT string_agg(pg_notify(${channel}, $3::text)::text, '') FROM d WHERE live) AS notified`,
  };
}

/**
 * The statements of `t`'s live streams, on `<t>_live`. A stream row (upto 0) holds a lease's head, under the id
 * of its token; each part is a row keyed by the body offset it ends at. Every statement that writes checks the
 * lease in `t` in the same statement, and a publish holds that row FOR SHARE until it commits, so a takeover,
 * commit or release waits for it: a part under a token that lost the lease is never stored.
 */
function liveStatements(t: string) {
  const channel = `'idemfetch:${t}'`;
  const live = liveTableOf(t);
  return {
    /**
     * $1 key, $2 token, $3 offset, $4 body, $5 status (NULL: a body part), $6 status text, $7 headers JSON,
     * $8 live payload. `code`: 1 stored (or the part last stored, sent again), 0 not the owner, -1 a head part not
     * at offset 0, -2 a second head, -3 a body part before the head, -4 a gap. A head deletes what earlier leases
     * left (their streams and markers).
     */
    publish: `WITH l AS (
  SELECT expires_at, ${streamOf("token")} AS stream FROM ${t}
  WHERE key = $1::text AND token = $2::text AND expires_at > clock_timestamp()
  FOR SHARE
), s AS (
  SELECT (SELECT COALESCE(max(p.upto), 0) FROM ${live} p WHERE p.key = $1::text AND p.stream = l.stream) AS length
  FROM l JOIN ${live} h ON h.key = $1::text AND h.stream = l.stream AND h.upto = 0 AND h.status IS NOT NULL
), v AS (
  SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM l) THEN 0
    WHEN (SELECT length FROM s) = $3::bigint + length($4::bytea) AND ($5::smallint IS NULL OR $3::bigint = 0)
      AND (length($4::bytea) = 0 OR EXISTS (SELECT 1 FROM ${live} p, l WHERE p.key = $1::text AND p.stream = l.stream
        AND p.upto = $3::bigint + length($4::bytea) AND p.body = $4::bytea)) THEN 1
    WHEN $5::smallint IS NOT NULL AND $3::bigint <> 0 THEN -1
    WHEN $5::smallint IS NOT NULL AND EXISTS (SELECT 1 FROM s) THEN -2
    WHEN $5::smallint IS NULL AND NOT EXISTS (SELECT 1 FROM s) THEN -3
    WHEN $5::smallint IS NULL AND (SELECT length FROM s) <> $3::bigint THEN -4
    ELSE 2 END AS code
), earlier AS (
  DELETE FROM ${live} o USING l, v
  WHERE v.code = 2 AND $5::smallint IS NOT NULL AND o.key = $1::text AND o.stream <> l.stream
), head AS (
  INSERT INTO ${live} (key, stream, upto, status, status_text, headers, expires_at)
  SELECT $1::text, l.stream, 0, $5::smallint, $6::text, $7::text::jsonb, l.expires_at
  FROM l, v WHERE v.code = 2 AND $5::smallint IS NOT NULL
), part AS (
  INSERT INTO ${live} (key, stream, upto, body)
  SELECT $1::text, l.stream, $3::bigint + length($4::bytea), $4::bytea
  FROM l, v WHERE v.code = 2 AND length($4::bytea) > 0
)
SELECT least(code, 1) AS code, CASE WHEN code = 2 THEN pg_notify(${channel}, $8::text)::text END AS notified FROM v`,
    /**
     * $1 key, $2 the stream id the reader holds (or ""), $3 its offset. No row: absent. A lease's row: its stream
     * when it has a head (body from $3 when $2 names it, else from 0), else pending. A record's: the record, and
     * its marker's stream when $2 names it and the marker was written with this very record (the same
     * transaction, hence the same xmin: a forget and another commit leave a marker that does not count).
     */
    read: `WITH r AS (
  SELECT token, fingerprint, status, status_text, headers, body, created_at, xmin AS x,
    CASE WHEN token IS NOT NULL THEN ${streamOf("token")} END AS own
  FROM ${t} c WHERE key = $1::text AND expires_at > clock_timestamp() AND ${valid("c")}
), s AS (
  SELECT h.stream, h.status, h.status_text, h.headers,
    CASE WHEN h.stream = $2::text THEN greatest($3::bigint, 0) ELSE 0 END AS start
  FROM r JOIN ${live} h ON h.key = $1::text AND h.upto = 0 AND (
    (r.token IS NOT NULL AND h.stream = r.own AND h.status IS NOT NULL) OR
    (r.token IS NULL AND h.stream = $2::text AND h.status IS NULL AND h.xmin = r.x))
)
SELECT CASE WHEN r.token IS NULL THEN 'done' WHEN s.stream IS NULL THEN 'pending' ELSE 'live' END AS state,
  s.stream, r.fingerprint, round(extract(epoch FROM r.created_at) * 1000)::float8 AS created_at,
  CASE WHEN r.token IS NULL THEN r.status ELSE s.status END AS status,
  CASE WHEN r.token IS NULL THEN r.status_text ELSE s.status_text END AS status_text,
  (CASE WHEN r.token IS NULL THEN r.headers ELSE s.headers END)::text AS headers,
  CASE WHEN r.token IS NULL THEN r.body WHEN s.stream IS NOT NULL THEN COALESCE((
    SELECT string_agg(CASE WHEN p.upto - length(p.body) >= s.start THEN p.body
      ELSE substring(p.body FROM (s.start - (p.upto - length(p.body)))::int + 1) END, ''::bytea ORDER BY p.upto)
    FROM ${live} p WHERE p.key = $1::text AND p.stream = s.stream AND p.upto > s.start
  ), ''::bytea) END AS body
FROM r LEFT JOIN s ON true`,
    /**
     * The commit of a lease that streamed: the commit's parameters and $11 the live payload. Its stream row
     * becomes the marker (no head; the record's expiry), and its parts and anything older go.
     */
    commit: `WITH c AS (
  UPDATE ${t} SET token = NULL, fingerprint = $3::text, status = $4::smallint, status_text = $5::text,
    headers = $6::text::jsonb, body = $7::bytea, created_at = timestamptz 'epoch' + $8::float8 ${MS},
    expires_at = clock_timestamp() + $9::float8 ${MS}
  WHERE key = $1::text AND token = $2::text AND expires_at > clock_timestamp()
  RETURNING expires_at
), marker AS (
  UPDATE ${live} h SET status = NULL, status_text = NULL, headers = NULL, expires_at = c.expires_at
  FROM c WHERE h.key = $1::text AND h.stream = ${streamOf("$2::text")} AND h.upto = 0
), rest AS (
  DELETE FROM ${live} o USING c WHERE o.key = $1::text AND (o.stream <> ${streamOf("$2::text")} OR o.upto <> 0)
)
SELECT pg_notify(${channel}, $10::text)::text || pg_notify(${channel}, $11::text)::text AS notified FROM c`,
    /** The release of a lease that streamed: $1 key, $2 token, $3 payload, $4 live payload; its chunks go. */
    release: `WITH d AS (
  DELETE FROM ${t} WHERE key = $1::text AND token = $2::text AND expires_at > clock_timestamp() RETURNING 1
), chunks AS (
  DELETE FROM ${live} WHERE key = $1::text AND EXISTS (SELECT 1 FROM d)
)
SELECT pg_notify(${channel}, $3::text)::text || pg_notify(${channel}, $4::text)::text AS notified FROM d`,
    /** The renew of a lease that streamed: $1 key, $2 token, $3 lease ms; its stream row lives as long. */
    renew: `WITH u AS (
  UPDATE ${t} SET expires_at = clock_timestamp() + $3::float8 ${MS}
  WHERE key = $1::text AND token = $2::text AND expires_at > clock_timestamp() RETURNING expires_at
), stream AS (
  UPDATE ${live} h SET expires_at = u.expires_at FROM u
  WHERE h.key = $1::text AND h.stream = ${streamOf("$2::text")} AND h.upto = 0
)
SELECT 1 AS renewed FROM u`,
  };
}

/** A lease or ttl in ms, as the statements take it. */
function positiveMs(ms: number): number {
  if (!Number.isFinite(ms) || ms <= 0)
    throw new RangeError(`postgresStore: expected a positive number of ms, got ${ms}`);
  return ms;
}

/** bytea as the driver hands it back: a Buffer/Uint8Array (pg, postgres.js) or "\x…" hex text. Always a copy. */
function bytesOf(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (typeof value === "string" && value.startsWith("\\x")) {
    const out = new Uint8Array((value.length - 2) / 2);
    for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(value.slice(2 + i * 2, 4 + i * 2), 16);
    return out;
  }
  throw new Error(`postgresStore: unexpected bytea value from the driver (${typeof value})`);
}

interface AcquireRow {
  state: "acquired" | "pending" | "done";
  corrupt: boolean;
  fingerprint: string;
  status: number;
  status_text: string;
  headers: string;
  body: unknown;
  created_at: number | string;
}

/** An IdempotencyStore on one PostgreSQL table: one statement per operation. Run `migrate()` once first. */
export function postgresStore(options: PostgresStoreOptions): IdempotencyStore {
  strictOptions(
    options,
    { client: true, table: true, listen: true } satisfies OptionNames<PostgresStoreOptions>,
    "postgresStore()",
  );
  const { client, listen } = options;
  if (typeof client?.query !== "function") {
    throw new TypeError("postgresStore: `client` must have query(text, params) (a pg Client or Pool, Neon, …)");
  }
  if (listen !== undefined && typeof listen !== "function") {
    throw new TypeError("postgresStore: `listen` must be a function (see pgListen)");
  }
  const table = tableName("postgresStore", options.table);
  const sql = statements(table);
  const liveSql = liveStatements(table);
  const rowsOf = async (text: string, params: unknown[]): Promise<unknown[]> => (await client.query(text, params)).rows;
  /** Runs a statement on `<table>_live`, naming the fix when a table migrated by an earlier version lacks it. */
  const liveRowsOf = (text: string, params: unknown[]): Promise<unknown[]> =>
    rowsOf(text, params).catch((error: unknown) => {
      if (!isUndefinedTable(error)) throw error;
      throw new Error(`postgresStore: table ${liveTableOf(table)} is missing: run migrate() again (it adds it)`, {
        cause: error,
      });
    });
  // storeKey -> the token that published under it through this object, and its last publish (settled or not).
  // Its commit, release and renew then run the live statements; any other lease's, the plain ones. Bounded: a
  // lease abandoned without commit or release stays here until 10 000 others came after it.
  const streaming = new Map<string, { token: string; last: Promise<unknown> }>();
  /** The stream `token` published under `storeKey` here, which its commit or release ends. */
  const ended = (storeKey: string, token: string) => {
    const entry = streaming.get(storeKey);
    if (entry?.token !== token) return undefined;
    streaming.delete(storeKey);
    return entry;
  };

  const store: LiveStore & { readonly name: string } = {
    name: "postgres",
    async acquire(storeKey, fingerprint, leaseMs) {
      const token = newToken();
      const params = [storeKey, token, fingerprint, positiveMs(leaseMs)];
      // Runs twice only when another transaction inserted the key after this statement's snapshot was taken.
      for (let attempt = 0; attempt < 3; attempt++) {
        const [row] = (await rowsOf(sql.acquire, params)) as AcquireRow[];
        if (row === undefined) continue;
        if (row.state === "acquired") {
          return row.corrupt ? { state: "acquired", token, replacedCorrupt: true } : { state: "acquired", token };
        }
        if (row.state === "pending") return { state: "pending", fingerprint: row.fingerprint };
        const record: StoredRecord = {
          status: Number(row.status),
          statusText: row.status_text,
          headers: JSON.parse(row.headers) as [string, string][],
          body: bytesOf(row.body),
          createdAt: Number(row.created_at),
          fingerprint: row.fingerprint,
        };
        return { state: "done", record };
      }
      throw new Error("postgresStore: acquire found the key neither free nor held three times in a row");
    },
    async commit(storeKey, token, record, ttlMs) {
      const params = [
        storeKey,
        token,
        record.fingerprint,
        record.status,
        record.statusText,
        JSON.stringify(record.headers),
        record.body,
        record.createdAt,
        positiveMs(ttlMs),
        payloadOf(storeKey),
      ];
      const stream = ended(storeKey, token);
      if (stream === undefined) return (await rowsOf(sql.commit, params)).length > 0;
      // A part still in flight would land after this statement's snapshot, and stay behind the record.
      await stream.last;
      return (await liveRowsOf(liveSql.commit, [...params, livePayloadOf(storeKey)])).length > 0;
    },
    async release(storeKey, token) {
      const stream = ended(storeKey, token);
      if (stream === undefined) return (await rowsOf(sql.release, [storeKey, token, payloadOf(storeKey)])).length > 0;
      await stream.last;
      const params = [storeKey, token, payloadOf(storeKey), livePayloadOf(storeKey)];
      return (await liveRowsOf(liveSql.release, params)).length > 0;
    },
    async renew(storeKey, token, leaseMs) {
      const params = [storeKey, token, positiveMs(leaseMs)];
      if (streaming.get(storeKey)?.token !== token) return (await rowsOf(sql.renew, params)).length > 0;
      const renewed = (await liveRowsOf(liveSql.renew, params)).length > 0;
      if (!renewed && streaming.get(storeKey)?.token === token) streaming.delete(storeKey);
      return renewed;
    },
    async publishLive(storeKey, token, { head, offset, body }) {
      if (!Number.isSafeInteger(offset) || offset < 0) {
        throw new RangeError(`postgresStore: a live part's offset must be an integer >= 0, got ${offset}`);
      }
      const running = liveRowsOf(liveSql.publish, [
        storeKey,
        token,
        offset,
        body,
        head?.status ?? null,
        head?.statusText ?? null,
        head ? JSON.stringify(head.headers) : null,
        livePayloadOf(storeKey),
      ]);
      // Known before it lands: a commit or release that comes meanwhile waits for it and ends the stream.
      if (!streaming.has(storeKey) && streaming.size >= 10_000) {
        streaming.delete(streaming.keys().next().value as string);
      }
      streaming.set(storeKey, { token, last: running.catch(() => {}) });
      const [row] = (await running) as { code: number | string }[];
      const code = Number(row?.code);
      if (code === 1) return true;
      if (code === 0) {
        if (streaming.get(storeKey)?.token === token) streaming.delete(storeKey); // the lease is gone
        return false;
      }
      throw new RangeError(
        `postgresStore: publishLive refused the part at offset ${offset}: ${PUBLISH_ERRORS[code] ?? code}`,
      );
    },
    async readLive(storeKey, stream, offset) {
      const from = Number.isSafeInteger(offset) ? Math.max(0, offset) : 0;
      const [row] = (await liveRowsOf(liveSql.read, [storeKey, stream ?? "", from])) as LiveRow[];
      return liveReadOf(row);
    },
    async forget(storeKey, force) {
      const [row] = (await rowsOf(sql.forget, [storeKey, force === true, payloadOf(storeKey)])) as {
        result: "forgotten" | "absent" | "in-progress";
      }[];
      if (row === undefined) throw new Error("postgresStore: forget returned no row");
      return row.result;
    },
  };
  if (!listen) return store;

  // One LISTEN per store, started on the first subscription; notifications carry the key's payload.
  const listeners = keyedListeners();
  let stop: Promise<(() => Promise<void>) | undefined> | undefined;
  const deliver = (payload: string | undefined): void => {
    // No payload: the connection was re-established and notifications may have been missed; wake everyone.
    for (const key of payload === undefined ? [...listeners.keys()] : [payload]) listeners.notify(key);
  };
  const listening = () => {
    // A failed LISTEN only costs wake-up latency: waiters poll as well.
    stop ??= Promise.resolve()
      .then(() => listen(`idemfetch:${table}`, deliver))
      .catch(() => undefined);
  };
  store.subscribe = (storeKey, onChange) => {
    listening();
    return listeners.add(payloadOf(storeKey), onChange);
  };
  // Parts and the end of a stream come on the same channel, under their own payload.
  store.subscribeLive = (storeKey, onChange) => {
    listening();
    return listeners.add(livePayloadOf(storeKey), onChange);
  };
  store.close = async () => {
    listeners.clear();
    const pending = stop;
    stop = undefined;
    const unlisten = await pending;
    await unlisten?.().catch(() => {});
  };
  return store;
}

const PUBLISH_ERRORS: Record<number, string> = {
  [-1]: "a head part must have offset 0",
  [-2]: "this lease's stream already has its head",
  [-3]: "a body part before this lease's head",
  [-4]: "a gap (the offset is not the bytes stored)",
};

interface LiveRow {
  state: "done" | "pending" | "live";
  stream: string | null;
  fingerprint: string;
  created_at: number | string;
  status: number;
  status_text: string;
  headers: string;
  body: unknown;
}

/** The read statement's row: no row is absent; the bytes are copies, shared with nobody. */
function liveReadOf(row: LiveRow | undefined): LiveRead {
  if (row === undefined) return { state: "absent" };
  if (row.state === "pending") return { state: "pending" };
  const status = Number(row.status);
  const headers = JSON.parse(row.headers) as [string, string][];
  const body = bytesOf(row.body);
  if (row.state === "live") {
    return {
      state: "live",
      stream: row.stream as string,
      head: { status, statusText: row.status_text, headers },
      body,
    };
  }
  const record: StoredRecord = {
    status,
    statusText: row.status_text,
    headers,
    body,
    createdAt: Number(row.created_at),
    fingerprint: row.fingerprint,
  };
  return row.stream === null ? { state: "done", record } : { state: "done", record, stream: row.stream };
}

/** What `pgListen` needs from a pg (or Neon) `Client` it creates: connect, LISTEN, notifications, end. */
export interface PgNotificationClient {
  connect(): Promise<unknown>;
  query(text: string): Promise<unknown>;
  on(event: "notification", listener: (message: { channel: string; payload?: string | undefined }) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "end", listener: () => void): unknown;
  end(): Promise<unknown>;
}

export interface PgListenOptions {
  /** Wait before reconnecting after the LISTEN connection dropped or failed, in ms. Default 1000. */
  retryMs?: number;
}

/**
 * A `listen` for pg: `pgListen(() => new pg.Client(config))`. Makes one dedicated connection from your factory
 * (a new, unconnected Client each call), reconnects after it drops (then wakes every waiter once, since
 * notifications may have been missed), and closes it when the store closes.
 */
export function pgListen(newClient: () => PgNotificationClient, options: PgListenOptions = {}): PostgresListen {
  strictOptions(options, { retryMs: true } satisfies OptionNames<PgListenOptions>, "pgListen()");
  if (typeof newClient !== "function")
    throw new TypeError("pgListen: expected a function that returns a new pg Client");
  const retryMs = options.retryMs ?? 1000;
  if (!Number.isFinite(retryMs) || retryMs < 0) {
    throw new TypeError(`pgListen: retryMs must be a number of ms >= 0, got ${String(options.retryMs)}`);
  }
  return async (channel, onPayload) => {
    let closed = false;
    let current: PgNotificationClient | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let attempts = 0;
    const connect = async (): Promise<void> => {
      timer = undefined;
      if (closed) return;
      attempts++;
      const c = newClient();
      current = c;
      let dropped = false;
      const drop = () => {
        if (dropped) return;
        dropped = true;
        if (current === c) current = undefined;
        c.end().catch(() => {});
        if (!closed) timer = setTimeout(() => void connect(), retryMs);
      };
      c.on("error", drop);
      c.on("end", drop);
      c.on("notification", (message) => {
        if (message.channel === channel) onPayload(message.payload ?? "");
      });
      try {
        await c.connect();
        await c.query(`LISTEN "${channel}"`);
      } catch {
        drop();
        return;
      }
      if (closed) {
        c.end().catch(() => {});
        return;
      }
      if (attempts > 1) onPayload(undefined); // back after a drop: anything may have changed meanwhile
    };
    await connect();
    return async () => {
      closed = true;
      if (timer) clearTimeout(timer);
      const c = current;
      current = undefined;
      await c?.end().catch(() => {});
    };
  };
}
