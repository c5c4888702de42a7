// Deno: the server middleware (idemfetch/server and idemfetch/hono) under Deno.serve.
import assert from "node:assert/strict";
import { Hono } from "hono";
import { idempotency as honoIdempotency } from "../../src/hono.ts";
import { idempotency } from "../../src/server.ts";

const CONFLICT =
  '{"success":false,"error":{"type":"client_error","code":"IDEMPOTENCY_CONFLICT","message":"Request body differs from previous request with same key"}}';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function serving(
  handler: (request: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>,
  run: (url: string) => Promise<void>,
): Promise<void> {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  try {
    await run(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });

Deno.test("Deno.serve(idempotency(handler)): coalescing, replay, conflict, bad key, Deno's info passed through", async () => {
  let runs = 0;
  const remotes: string[] = [];
  const handler = idempotency(async (request: Request, info: Deno.ServeHandlerInfo) => {
    remotes.push((info.remoteAddr as Deno.NetAddr).hostname);
    const n = ++runs;
    const body = await request.text();
    await sleep(100);
    return Response.json({ n, body });
  });
  await serving(handler, async (url) => {
    const responses = await Promise.all([1, 2, 3].map(() => post(url, { a: 1 }, { "Idempotency-Key": "d1" })));
    const bodies = await Promise.all(responses.map((r) => r.text()));
    assert.equal(runs, 1);
    assert.equal(new Set(bodies).size, 1);
    assert.deepEqual(JSON.parse(bodies[0] as string), { n: 1, body: '{"a":1}' });
    assert.deepEqual(remotes, ["127.0.0.1"]);

    const replay = await post(url, { a: 1 }, { "Idempotency-Key": "d1" });
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    assert.equal(await replay.text(), bodies[0]);

    const conflict = await post(url, { a: 2 }, { "Idempotency-Key": "d1" });
    assert.equal(conflict.status, 409);
    assert.equal(await conflict.text(), CONFLICT);

    const bad = await post(url, {}, { "Idempotency-Key": "x".repeat(256) });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, "IDEMPOTENCY_KEY_INVALID");
    assert.equal(runs, 1);
    assert.deepEqual(
      { upstreamCalls: handler.stats().upstreamCalls, saved: handler.stats().saved },
      { upstreamCalls: 1, saved: 3 },
    );
  });
});

Deno.test("Deno.serve: the same key from two Authorization headers runs twice", async () => {
  let runs = 0;
  await serving(
    idempotency(() => new Response(String(++runs))),
    async (url) => {
      const a = await post(url, {}, { "Idempotency-Key": "same", Authorization: "Bearer a" });
      const b = await post(url, {}, { "Idempotency-Key": "same", Authorization: "Bearer b" });
      assert.equal(await a.text(), "1");
      assert.equal(await b.text(), "2");
    },
  );
});

Deno.test("Deno.serve: an SSE stream reaches a concurrent duplicate live, then replays byte for byte", async () => {
  let runs = 0;
  let finished = false;
  let open!: () => void;
  const gate = new Promise<void>((r) => {
    open = r;
  });
  const encoder = new TextEncoder();
  const handler = idempotency(() => {
    runs++;
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(encoder.encode("data: first\n\n"));
        await gate;
        controller.enqueue(encoder.encode("data: second\n\n"));
        controller.close();
        finished = true;
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  await serving(handler, async (url) => {
    const decoder = new TextDecoder();
    const leader = await post(url, {}, { "Idempotency-Key": "sse" });
    const leaderReader = leader.body!.getReader();
    const leaderFirst = decoder.decode((await leaderReader.read()).value);
    const dup = await post(url, {}, { "Idempotency-Key": "sse" });
    const dupReader = dup.body!.getReader();
    const dupFirst = decoder.decode((await dupReader.read()).value);
    assert.equal(leaderFirst, "data: first\n\n");
    assert.equal(dupFirst, "data: first\n\n");
    assert.equal(finished, false);
    open();
    const rest = async (reader: ReadableStreamDefaultReader<Uint8Array>, text: string) => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text;
        text += decoder.decode(value);
      }
    };
    const [a, b] = await Promise.all([rest(leaderReader, leaderFirst), rest(dupReader, dupFirst)]);
    assert.equal(a, "data: first\n\ndata: second\n\n");
    assert.equal(b, a);
    await sleep(20);
    const replay = await post(url, {}, { "Idempotency-Key": "sse" });
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    assert.equal(await replay.text(), a);
    assert.equal(runs, 1);
  });
});

Deno.test("Deno.serve(app.fetch) with the idemfetch/hono middleware", async () => {
  let runs = 0;
  const app = new Hono();
  app.use("/api/*", honoIdempotency());
  app.post("/api/orders", async (c) => {
    const body = await c.req.json();
    runs++;
    await sleep(50);
    return c.json({ order: runs, item: body.item }, 201);
  });
  await serving(app.fetch, async (url) => {
    const responses = await Promise.all(
      [1, 2, 3].map(() => post(`${url}/api/orders`, { item: "tea" }, { "Idempotency-Key": "o1" })),
    );
    const bodies = await Promise.all(responses.map((r) => r.text()));
    assert.equal(runs, 1);
    assert.deepEqual(
      responses.map((r) => r.status),
      [201, 201, 201],
    );
    assert.deepEqual(JSON.parse(bodies[0] as string), { order: 1, item: "tea" });
    assert.equal(new Set(bodies).size, 1);
    const conflict = await post(`${url}/api/orders`, { item: "coffee" }, { "Idempotency-Key": "o1" });
    assert.equal(await conflict.text(), CONFLICT);
  });
});

Deno.test("the middleware never reads request.signal: Deno.serve prints no legacy-abort warning", async () => {
  const probe = new URL("./signal-probe.ts", import.meta.url).pathname;
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", probe],
    stderr: "piped",
  }).output();
  assert.equal(code, 0);
  assert.doesNotMatch(new TextDecoder().decode(stderr), /legacy/);
});
