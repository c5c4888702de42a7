// An IdempotencyStore on PostgreSQL through the user's client (pg, Neon, postgres.js), woken by LISTEN/NOTIFY.
//
// One row per store key in one table. A lease is a row with an owner `token`; a record is a row without one,
// with status, status text, headers (jsonb), body (bytea), fingerprint and created-at. `expires_at` is always
// computed and compared by the database clock (clock_timestamp()), never the caller's. A row that does not
// decode (foreign, half written by hand, of another format) is treated as absent: `acquire` takes it over.
// Every operation is ONE statement, so it is atomic without an explicit transaction; commit, release and
// forget NOTIFY in that same statement, which PostgreSQL delivers only once it is committed.

import { keyedListeners } from "../src/listeners.ts";
import { sha256Sync } from "../src/sha256.ts";
import { type IdempotencyStore, newToken, type StoredRecord } from "../src/store.ts";
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

/** The CREATE statements for `table` (default "idemfetch"), idempotent; `migrate()` runs them. */
export function schemaSql(options: PostgresTableOptions = {}): string {
  strictOptions(options, { table: true } satisfies OptionNames<PostgresTableOptions>, "schemaSql()");
  const t = tableName("schemaSql", options.table);
  const index = `${t.split(".").pop()}_expires_at`;
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
CREATE INDEX IF NOT EXISTS ${index} ON ${t} (expires_at);`;
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
 * Deletes at most `limit` expired rows and resolves how many. Safe from any number of instances at once
 * (SKIP LOCKED: each takes rows no other is deleting, and never a row an acquire is taking over).
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
  return Number((rows[0] as { n: unknown } | undefined)?.n ?? 0);
}

/** The payload NOTIFY carries for `storeKey`: the key itself, or a digest when too long for NOTIFY (8000 bytes). */
function payloadOf(storeKey: string): string {
  const bytes = new TextEncoder().encode(storeKey);
  return bytes.length <= 1000 ? storeKey : `#${sha256Sync(bytes)}`;
}

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
  const rowsOf = async (text: string, params: unknown[]): Promise<unknown[]> => (await client.query(text, params)).rows;

  const store: IdempotencyStore & { readonly name: string } = {
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
      const rows = await rowsOf(sql.commit, [
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
      ]);
      return rows.length > 0;
    },
    async release(storeKey, token) {
      return (await rowsOf(sql.release, [storeKey, token, payloadOf(storeKey)])).length > 0;
    },
    async renew(storeKey, token, leaseMs) {
      return (await rowsOf(sql.renew, [storeKey, token, positiveMs(leaseMs)])).length > 0;
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
  store.subscribe = (storeKey, onChange) => {
    // A failed LISTEN only costs wake-up latency: waiters poll as well.
    stop ??= Promise.resolve()
      .then(() => listen(`idemfetch:${table}`, deliver))
      .catch(() => undefined);
    return listeners.add(payloadOf(storeKey), onChange);
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
