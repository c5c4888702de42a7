// idemfetch/fastify over a real Fastify 5 server on 127.0.0.1: the shared face suite, then Fastify's own hooks and parsers.
import { PassThrough, Readable } from "node:stream";
import Fastify, { type FastifyInstance } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { type IdempotencyPlugin, idempotency } from "../src/fastify.ts";
import type { ServerIdempotencyOptions } from "../src/server.ts";
import { expectOuterHeaderPerCaller, faceSuite, Routes, type Started } from "./fixtures/node-face-suite.ts";

async function listen(app: FastifyInstance, face: IdempotencyPlugin): Promise<Started> {
  const url = await app.listen({ port: 0, host: "127.0.0.1" });
  return { url, stats: face.stats, close: () => app.close() };
}

async function build(routes: Routes, options: ServerIdempotencyOptions = {}) {
  const app = Fastify({ forceCloseConnections: true });
  // An outer hook's header: it goes on every response and is never stored.
  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-outer", String(request.headers["x-caller"] ?? "none"));
  });
  const face = idempotency(options);
  await app.register(face);
  app.addContentTypeParser("application/octet-stream", (_request, payload, done) => done(null, payload));

  app.post<{ Querystring: { cookie?: string } }>("/orders", async (request, reply) => {
    const { json, cookie } = await routes.order(
      request.body,
      request.headers.authorization,
      request.query.cookie === "1",
    );
    if (cookie) reply.header("set-cookie", cookie);
    return json;
  });
  app.post("/stream", async (_request, reply) => {
    const out = new PassThrough();
    void routes.stream((chunk) => out.write(chunk)).then(() => out.end());
    return reply.type("text/event-stream").header("cache-control", "no-cache").send(out);
  });
  app.post("/big", async (_request, reply) => reply.type("application/octet-stream").send(Readable.from(routes.big())));
  app.post("/upload", async (request) => routes.upload(request.body as AsyncIterable<Uint8Array>));
  return { app, face };
}

faceSuite("fastify", async (routes, options) => {
  const { app, face } = await build(routes, options);
  return listen(app, face);
});

describe("fastify face specifics", () => {
  let running: Started[] = [];
  afterEach(async () => {
    await Promise.all(running.map((s) => s.close()));
    running = [];
  });
  const start = async (app: FastifyInstance, face: IdempotencyPlugin) => {
    const started = await listen(app, face);
    running.push(started);
    return started;
  };

  it("an outer hook's header is the caller's own on a replay; the route's request.body is the parsed JSON", async () => {
    const routes = new Routes();
    const { app, face } = await build(routes);
    const { url } = await start(app, face);
    await expectOuterHeaderPerCaller(url, routes);
  });

  it("replays go out through reply: onSend and onResponse hooks of the app still run for them", async () => {
    const routes = new Routes();
    const { app, face } = await build(routes);
    const seen: string[] = [];
    app.addHook("onSend", async (_request, reply, payload) => {
      reply.header("x-on-send", "yes");
      return payload;
    });
    app.addHook("onResponse", async (_request, reply) => {
      seen.push(String(reply.statusCode));
    });
    const { url } = await start(app, face);
    const send = () =>
      fetch(`${url}/orders`, {
        method: "POST",
        headers: { "content-type": "application/json", "Idempotency-Key": "hooks" },
        body: "{}",
      });
    await (await send()).text();
    const replay = await send();
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(replay.headers.get("x-on-send")).toBe("yes");
    await replay.text();
    expect(seen).toEqual(["200", "200"]);
    expect(routes.orders).toBe(1);
  });

  it("a route that throws gets Fastify's error reply; the 500 is not stored and the next call runs again", async () => {
    const app = Fastify({ forceCloseConnections: true, logger: false });
    const face = idempotency();
    await app.register(face);
    let calls = 0;
    app.post("/boom", async () => {
      if (++calls === 1) throw new Error("boom");
      return { ok: true };
    });
    const { url } = await start(app, face);
    const send = () =>
      fetch(`${url}/boom`, {
        method: "POST",
        headers: { "content-type": "application/json", "Idempotency-Key": "b" },
        body: "{}",
      });
    const failed = await send();
    expect(failed.status).toBe(500);
    expect(await failed.json()).toMatchObject({ message: "boom" });
    expect(await (await send()).json()).toEqual({ ok: true });
    expect(calls).toBe(2);
    expect(face.stats()).toMatchObject({ upstreamCalls: 2, notStored: 1 });
  });

  it("GET routes and bodyless requests are untouched", async () => {
    const app = Fastify({ forceCloseConnections: true });
    const face = idempotency();
    await app.register(face);
    let calls = 0;
    app.get("/items", async () => ({ n: ++calls }));
    const { url } = await start(app, face);
    const a = await fetch(`${url}/items`, { headers: { "Idempotency-Key": "g" } });
    const b = await fetch(`${url}/items`, { headers: { "Idempotency-Key": "g" } });
    expect(await a.json()).toEqual({ n: 1 });
    expect(await b.json()).toEqual({ n: 2 });
    expect(b.headers.get("content-length")).toBe("7");
  });

  it("a hijacked reply is never stored and holds nothing: the next duplicate runs the route again", async () => {
    const app = Fastify({ forceCloseConnections: true });
    const face = idempotency();
    await app.register(face);
    let calls = 0;
    app.post("/raw", async (_request, reply) => {
      calls++;
      reply.hijack();
      reply.raw.end("raw");
    });
    const { url } = await start(app, face);
    const send = () => fetch(`${url}/raw`, { method: "POST", headers: { "Idempotency-Key": "h" }, body: "x" });
    expect(await (await send()).text()).toBe("raw");
    expect(await (await send()).text()).toBe("raw");
    expect(calls).toBe(2);
  });

  it("a streamed reply that fails after its first bytes ends badly: the key is released and a retry runs again", async () => {
    const app = Fastify({ forceCloseConnections: true, logger: false });
    const face = idempotency();
    await app.register(face);
    let calls = 0;
    app.post("/late", async (_request, reply) => {
      calls++;
      const body = new PassThrough();
      body.write("partial");
      setTimeout(() => body.destroy(new Error("late failure")), 20);
      return reply.type("text/plain").send(body);
    });
    const { url } = await start(app, face);
    const send = () =>
      fetch(`${url}/late`, {
        method: "POST",
        headers: { "Idempotency-Key": "late" },
        body: "x",
        signal: AbortSignal.timeout(3000),
      }).then((r) => r.text());
    await expect(send()).rejects.toMatchObject({ name: "TypeError" });
    await expect(send()).rejects.toMatchObject({ name: "TypeError" });
    expect(calls).toBe(2);
  });
});
