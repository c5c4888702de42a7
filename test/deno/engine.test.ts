// Deno: the engine and createIdempotentFetch on the memory store against a Deno.serve upstream; upstashStore on Deno's fetch.
import assert from "node:assert/strict";
import { upstashStore } from "../../adapters/upstash.ts";
import { createIdempotentFetch, type IdempotencyStore, memoryStore } from "../../src/index.ts";
import { idempotency } from "../../src/server.ts";

const CONFLICT =
  '{"success":false,"error":{"type":"client_error","code":"IDEMPOTENCY_CONFLICT","message":"Request body differs from previous request with same key"}}';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A counting upstream: JSON {n, body} after `?ms=`. */
async function withUpstream(run: (url: string, count: () => number) => Promise<void>): Promise<void> {
  let n = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const body = await request.text();
    const ms = Number(new URL(request.url).searchParams.get("ms") ?? 0);
    const mine = ++n;
    if (ms > 0) await sleep(ms);
    return Response.json({ n: mine, body, key: request.headers.get("idempotency-key") });
  });
  try {
    await run(`http://127.0.0.1:${server.addr.port}`, () => n);
  } finally {
    await server.shutdown();
  }
}

const post = (key: string, body: unknown): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", "Idempotency-Key": key },
  body: JSON.stringify(body),
});

/** The fetch face's contract, on any store. */
async function fetchContract(store: IdempotencyStore): Promise<void> {
  await withUpstream(async (url, count) => {
    const f = createIdempotentFetch({ store });
    const key = `deno-${crypto.randomUUID()}`;
    const responses = await Promise.all([1, 2, 3].map(() => f(`${url}/?ms=100`, post(key, { q: 1 }))));
    const bodies = await Promise.all(responses.map((r) => r.text()));
    assert.equal(count(), 1);
    assert.equal(new Set(bodies).size, 1);
    assert.equal(responses.filter((r) => r.headers.get("idempotent-replayed") === "true").length, 2);

    const replay = await f(`${url}/?ms=100`, post(key, { q: 1 }));
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    assert.equal(await replay.text(), bodies[0]);

    const conflict = await f(`${url}/?ms=100`, post(key, { q: 2 }));
    assert.equal(conflict.status, 409);
    assert.equal(await conflict.text(), CONFLICT);
    assert.equal(count(), 1);
    assert.equal(f.stats().upstreamCalls, 1);
  });
}

Deno.test("createIdempotentFetch on memoryStore: coalescing, replay, conflict against Deno.serve", async () => {
  await fetchContract(memoryStore());
});

Deno.test("the server face: a keyless call passes through; keyed ones run once; close() settles", async () => {
  let runs = 0;
  const engine = idempotency(async () => new Response(String(++runs)));
  const req = (key?: string) =>
    new Request("http://x/a", { method: "POST", body: "{}", headers: key ? { "Idempotency-Key": key } : {} });
  await (await engine(req())).text();
  await (await engine(req())).text();
  assert.equal(runs, 2);
  const a = await engine(req("k"));
  const b = await engine(req("k"));
  assert.equal(await a.text(), "3");
  assert.equal(await b.text(), "3");
  assert.equal(b.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(
    { passedThrough: engine.stats().passedThrough, upstreamCalls: engine.stats().upstreamCalls },
    { passedThrough: 2, upstreamCalls: 1 },
  );
  await engine.close();
});

/** The Upstash REST fixture (Node, backed by the Redis on 6379), started as a child process. Fails without Redis. */
async function startUpstashFixture(): Promise<{ url: string; token: string; stop: () => Promise<void> }> {
  try {
    const probe = await Deno.connect({ hostname: "127.0.0.1", port: 6379 });
    probe.close();
  } catch (error) {
    // A missing service is a failure, never a silent pass: CI starts it (.ci/ensure-services.sh).
    throw new Error("this test needs Redis on 127.0.0.1:6379: run `bash .ci/ensure-services.sh`", { cause: error });
  }
  const script =
    "import { startUpstashFixture } from './test/fixtures/upstash-server.ts';" +
    "const f = await startUpstashFixture(); console.log(JSON.stringify({ url: f.url, token: f.token }));" +
    "process.stdin.on('data', () => {}); process.stdin.on('end', () => f.close().then(() => process.exit(0)));";
  const child = new Deno.Command("node", {
    args: ["--import", "tsx", "--input-type=module", "-e", script],
    cwd: new URL("../..", import.meta.url).pathname,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`upstash fixture exited: ${out}`);
    out += value;
  }
  const { url, token } = JSON.parse(out.slice(0, out.indexOf("\n"))) as { url: string; token: string };
  return {
    url,
    token,
    stop: async () => {
      await reader.cancel();
      await child.stdin.close();
      await child.status;
    },
  };
}

Deno.test("upstashStore on Deno's fetch, against the Upstash REST fixture: the same contract", async (t) => {
  const fixture = await startUpstashFixture();
  try {
    await t.step("coalescing, replay, conflict", () =>
      fetchContract(upstashStore({ url: fixture.url, token: fixture.token })),
    );
  } finally {
    await fixture.stop();
  }
});
