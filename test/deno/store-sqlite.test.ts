// sqliteStore on node:sqlite as Deno provides it: the shipped conformance suite, the node:sqlite path a Node 20 machine cannot run.
import { type SqliteDatabase, sqliteStore } from "../../adapters/sqlite.ts";
import { denoTestApi, testStore } from "../../src/testing.ts";

// The @types/node this repository pins (Node 20) has no node:sqlite: typed here by the calls the test makes.
const id = "node:sqlite";
const { DatabaseSync } = (await import(id)) as {
  DatabaseSync: new (path: string) => SqliteDatabase & { close(): void };
};

const dir = await Deno.makeTempDir({ prefix: "idemfetch-sqlite-" });
const db = new DatabaseSync(`${dir}/store.db`);
/** A second connection to the file, as another process would have. */
const other = new DatabaseSync(`${dir}/store.db`);

testStore("sqliteStore (Deno, node:sqlite)", () => sqliteStore({ db }), {
  live: true,
  ...denoTestApi(Deno.test),
  // A live record row whose headers are `value`: it does not decode (not a JSON array of string pairs).
  writeRaw: async (storeKey, value) => {
    other
      .prepare(
        `INSERT INTO idemfetch (key, token, fingerprint, status, status_text, headers, body, created_at, expires_at)
         VALUES (?, NULL, 'fp-x', 200, 'OK', ?, X'', 0, 9e15)
         ON CONFLICT (key) DO UPDATE SET token = NULL, headers = excluded.headers, expires_at = excluded.expires_at
         RETURNING 1`,
      )
      .all(storeKey, value);
  },
  cleanup: async () => {
    db.close();
    other.close();
    await Deno.remove(dir, { recursive: true });
  },
});
