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
  live: true,
  liveChunks: (storeKey) => liveChunks(kv, prefix, storeKey),
});

/**
 * Whether chunk data of `storeKey` still counts: a stream whose lease is the key's live entry, or parts left after
 * the stream ended (a commit or release deletes them). KV deletes expired keys lazily, so a stream whose lease
 * lapsed is judged by the lease's expiry, as the store reads it, not by whether KV has removed it yet.
 */
async function liveChunks(kv: Deno.Kv, prefix: Deno.KvKey, storeKey: string): Promise<boolean> {
  const [entry, live] = await kv.getMany<
    [{ kind?: string; token?: string; expiresAt?: number }, { kind?: string; owner?: string }]
  >([
    [...prefix, "entry", storeKey],
    [...prefix, "live", storeKey],
  ]);
  if (live.value?.kind === "stream") {
    return (
      entry.value?.kind === "lease" &&
      entry.value.token === live.value.owner &&
      (entry.value.expiresAt ?? 0) > Date.now()
    );
  }
  for await (const _ of kv.list({ prefix: [...prefix, "livepart", storeKey] })) return true;
  return false;
}

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

Deno.test({
  name: "two Deno processes on one KV file: a duplicate gets the leader's stream live (first bytes before it ends), the same bytes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    let executions = 0;
    let started: () => void = () => {};
    const executing = new Promise<void>((resolve) => (started = resolve));
    const encoder = new TextEncoder();
    // An SSE answer of 8 events, 300 ms apart.
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
      const n = ++executions;
      await request.text();
      started();
      let i = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (i > 0) await new Promise((resolve) => setTimeout(resolve, 300));
          if (i === 8) return controller.close();
          controller.enqueue(encoder.encode(`data: ${n}-${i++}\n\n`));
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    });
    try {
      const worker = new URL("./kv-worker.ts", import.meta.url).pathname;
      const url = `http://127.0.0.1:${server.addr.port}/chat`;
      const key = `live-two-processes-${newToken()}`;
      const errors: string[] = [];
      const spawn = async () => {
        const child = new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", "--unstable-kv", worker, path, JSON.stringify(prefix), url, key],
          stdout: "piped",
          stderr: "piped",
        });
        const { code, stdout, stderr } = await child.output();
        errors.push(new TextDecoder().decode(stderr));
        assert.equal(code, 0, errors.at(-1));
        return JSON.parse(new TextDecoder().decode(stdout)) as { replayed: string | null; body: string } & Record<
          "status" | "firstAt" | "endAt",
          number
        >;
      };
      const leading = spawn();
      await executing;
      const duplicate = await spawn();
      const leader = await leading;
      assert.equal(executions, 1, errors.join("\n"));
      assert.equal(leader.body, Array.from({ length: 8 }, (_, i) => `data: 1-${i}\n\n`).join(""));
      assert.equal(duplicate.body, leader.body);
      assert.deepEqual([leader.replayed, duplicate.replayed], [null, "true"]);
      assert.ok(
        // At least one event gap before the end: read live, not a replay of the record just committed.
        duplicate.firstAt > 0 && duplicate.firstAt < leader.endAt - 300,
        `first bytes at ${duplicate.firstAt}, leader's end at ${leader.endAt}`,
      );
    } finally {
      await server.shutdown();
    }
  },
});

Deno.test("live: a part larger than one atomic operation round-trips; a renew past the parts' expiry rewrites them, same bytes", async () => {
  const store = denoKvStore({ kv, prefix });
  const k = `live-big-${newToken()}`;
  const lease = await store.acquire(k, "fp", 1_000);
  if (lease.state !== "acquired") throw new Error("expected a lease");
  const big = new Uint8Array(2_000_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 9)) % 251;
  const head = { status: 200, statusText: "OK", headers: [] as [string, string][] };
  assert.equal(await store.publishLive(k, lease.token, { head, offset: 0, body: big.subarray(0, 1_500_000) }), true);
  // Then many small parts: the rewrite makes whole chunks of them.
  for (let at = 1_500_000; at < big.length; at += 5_000)
    assert.equal(await store.publishLive(k, lease.token, { offset: at, body: big.subarray(at, at + 5_000) }), true);
  const parts = async () => {
    let n = 0;
    for await (const _ of kv.list({ prefix: [...prefix, "livepart", k] })) n++;
    return n;
  };
  const before = await parts();
  // Past the parts' own KV expiry (the first lease + 30 s): the renew rewrites them.
  assert.equal(await store.renew(k, lease.token, 120_000), true);
  const after = await parts();
  assert.ok(after < before && after === Math.ceil(big.length / 60_000), `parts before ${before}, after ${after}`);
  for (const offset of [0, 1_234_567, 1_500_000, 1_999_999]) {
    const read = await store.readLive(k, undefined, 0);
    if (read.state !== "live") throw new Error(`expected a live stream, got ${read.state}`);
    const from = await store.readLive(k, read.stream, offset);
    assert.equal(read.body.length, big.length);
    assert.ok(
      read.body.every((b, i) => b === big[i]),
      "the whole body",
    );
    assert.ok(
      (from as { body: Uint8Array }).body.every((b, i) => b === big[offset + i]),
      `from ${offset}`,
    );
  }
  assert.equal(await store.release(k, lease.token), true);
  assert.equal(await parts(), 0);
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
