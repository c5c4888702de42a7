// denoKvStore in real Deno on a real KV file: the shipped conformance suite (idemfetch/testing), and two processes on one file.
/// <reference lib="deno.unstable" />
import assert from "node:assert/strict";
import { denoKvStore } from "../../adapters/deno-kv.ts";
import { newToken } from "../../src/store.ts";
import { denoTestApi, testStore } from "../../src/testing.ts";

const dir = await Deno.makeTempDir({ prefix: "idemfetch-kv-" });
const path = `${dir}/store.db`;
const kv = await Deno.openKv(path);
const prefix = ["idemfetch-test", newToken().slice(0, 8)];

testStore("denoKvStore", () => denoKvStore({ kv, prefix }), {
  ...denoTestApi(Deno.test),
  writeRaw: async (storeKey, value) => {
    await kv.set([...prefix, "entry", storeKey], value);
  },
});

Deno.test({
  name: "denoKvStore: a value without an expiry or of another shape is corrupt, and the store has no watch without kv.watch",
  async fn() {
    const k = `shape:${newToken()}`;
    await kv.set([...prefix, "entry", k], { kind: "lease", token: "t", fingerprint: "fp" });
    const result = await denoKvStore({ kv, prefix }).acquire(k, "fp-a", 30_000);
    assert.equal(result.state, "acquired");
    assert.equal((result as { replacedCorrupt?: boolean }).replacedCorrupt, true);
    const noWatch = { get: kv.get.bind(kv), list: kv.list.bind(kv), atomic: kv.atomic.bind(kv) };
    assert.equal(denoKvStore({ kv: noWatch }).subscribe, undefined);
    assert.throws(() => denoKvStore({ kv: {} as never }), TypeError);
  },
});

Deno.test({
  name: "two Deno processes on one KV file: one upstream execution, the other replays",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    let executions = 0;
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
      const n = ++executions;
      const body = await request.text();
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return Response.json({ n, body });
    });
    try {
      const worker = new URL("./kv-worker.ts", import.meta.url).pathname;
      const url = `http://127.0.0.1:${server.addr.port}/charge`;
      const key = `two-processes-${newToken()}`;
      const events: string[] = [];
      const runs = await Promise.all(
        [1, 2].map(async () => {
          const child = new Deno.Command(Deno.execPath(), {
            args: ["run", "-A", "--unstable-kv", worker, path, JSON.stringify(prefix), url, key],
            stdout: "piped",
            stderr: "piped",
          });
          const { code, stdout, stderr } = await child.output();
          events.push(new TextDecoder().decode(stderr));
          assert.equal(code, 0, events.at(-1));
          return JSON.parse(new TextDecoder().decode(stdout)) as {
            status: number;
            replayed: string | null;
            body: string;
          };
        }),
      );
      assert.equal(executions, 1, events.join("\n"));
      assert.deepEqual(
        runs.map((r) => r.status),
        [200, 200],
      );
      assert.equal(runs[0]!.body, runs[1]!.body);
      assert.deepEqual(runs.map((r) => r.replayed === "true").sort(), [false, true]);
    } finally {
      await server.shutdown();
    }
  },
});

// Runs last (Deno runs a file's tests in order): the suite's own Deno test has closed its store by now.
Deno.test({
  name: "close the KV file",
  sanitizeResources: false,
  async fn() {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test("a 'database is locked' answer (another process writing the SQLite file) is retried, not a store error", async () => {
  let failures = 2;
  const real = await Deno.openKv(await Deno.makeTempFile({ suffix: ".sqlite3" }));
  // The real KV, with its first two reads answering as SQLite does while another process holds the write lock.
  const flaky = {
    get: (key: Deno.KvKey) => (failures-- > 0 ? Promise.reject(new TypeError("database is locked")) : real.get(key)),
    list: (selector: { prefix: Deno.KvKey }) => real.list(selector),
    atomic: () => real.atomic(),
  };
  const store = denoKvStore({ kv: flaky, prefix: ["locked"] });
  const result = await store.acquire("k", "fp", 10_000);
  assert.equal(result.state, "acquired");
  assert.equal(failures, -1);
  await store.close?.();
  real.close();
});
