// idemfetch/express over a real Express 5 server on 127.0.0.1: the shared face suite in every body-parser order.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import express, { type Express } from "express";
import { afterEach, describe, expect, it } from "vitest";
import { idempotency, keepRawBody } from "../src/express.ts";
import type { ServerIdempotencyOptions } from "../src/server.ts";
import { expectOuterHeaderPerCaller, faceSuite, Routes, type Started } from "./fixtures/node-face-suite.ts";
import { sleep } from "./fixtures/util.ts";

/** Where the body parser sits relative to the middleware. */
type Order = "parser first" | "parser first, raw bytes kept" | "idempotency first";

async function listen(app: Express, face: { stats: Started["stats"]; close: Started["close"] }): Promise<Started> {
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stats: face.stats,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await face.close();
    },
  };
}

function build(order: Order, routes: Routes, options: ServerIdempotencyOptions = {}) {
  const app = express();
  const face = idempotency(options);
  const json = order === "parser first, raw bytes kept" ? express.json({ verify: keepRawBody }) : express.json();
  // An outer middleware's header: it goes on every response and is never stored.
  app.use((req, res, next) => {
    res.setHeader("x-outer", String(req.headers["x-caller"] ?? "none"));
    next();
  });
  if (order === "idempotency first") app.use(face, json);
  else app.use(json, face);

  app.post("/orders", async (req, res) => {
    const { json: answer, cookie } = await routes.order(req.body, req.headers.authorization, req.query.cookie === "1");
    if (cookie) res.setHeader("set-cookie", cookie);
    res.json(answer);
  });
  app.post("/stream", async (_req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    await routes.stream((chunk) => res.write(chunk));
    res.end();
  });
  app.post("/big", (_req, res) => {
    res.setHeader("content-type", "application/octet-stream");
    Readable.from(routes.big()).pipe(res);
  });
  app.post("/upload", async (req, res) => {
    res.json(await routes.upload(req));
  });
  return { app, face };
}

for (const order of ["parser first", "parser first, raw bytes kept", "idempotency first"] as const) {
  faceSuite(`express (${order})`, async (routes, options) => {
    const { app, face } = build(order, routes, options);
    return listen(app, face);
  });
}

describe("express face specifics", () => {
  let running: Started[] = [];
  afterEach(async () => {
    await Promise.all(running.map((s) => s.close()));
    running = [];
  });
  const start = async (order: Order) => {
    const routes = new Routes();
    const { app, face } = build(order, routes);
    const started = await listen(app, face);
    running.push(started);
    return { routes, ...started };
  };

  it.each(["parser first", "idempotency first"] as const)(
    "%s: the route's req.body is the parsed JSON; an outer middleware's header is the caller's own on a replay",
    async (order) => {
      const { routes, url } = await start(order);
      await expectOuterHeaderPerCaller(url, routes);
    },
  );

  it("the raw bytes and a re-serialized parsed body are the same request: either order replays the other", async () => {
    // Two apps over one store: one with the parser first (re-serialized body), one with the middleware first (raw bytes).
    const { memoryStore } = await import("../src/memory-store.ts");
    const store = memoryStore();
    const routes = new Routes();
    const a = build("parser first", routes, { store });
    const b = build("idempotency first", routes, { store });
    const [sa, sb] = [await listen(a.app, a.face), await listen(b.app, b.face)];
    running.push(sa, sb);
    const send = (url: string) =>
      fetch(`${url}/orders`, {
        method: "POST",
        headers: { "content-type": "application/json", "Idempotency-Key": "either" },
        body: '{ "b": 2,  "a": 1 }',
      });
    const first = await send(sa.url);
    const second = await send(sb.url);
    expect(second.headers.get("idempotent-replayed")).toBe("true");
    expect(await second.text()).toBe(await first.text());
    expect(routes.orders).toBe(1);
  });

  it("a route that throws reaches Express's error handler; the 500 is not stored and the next call runs again", async () => {
    const app = express();
    app.set("env", "test"); // finalhandler logs a route's error outside the test env
    const face = idempotency();
    let calls = 0;
    app.post("/boom", face, (_req, res) => {
      if (++calls === 1) throw new Error("boom");
      res.send("ok");
    });
    const started = await listen(app, face);
    running.push(started);
    const send = () => fetch(`${started.url}/boom`, { method: "POST", headers: { "Idempotency-Key": "b" }, body: "x" });
    expect((await send()).status).toBe(500);
    const again = await send();
    expect(await again.text()).toBe("ok");
    expect(calls).toBe(2);
    expect(face.stats()).toMatchObject({ upstreamCalls: 2, notStored: 1 });
  });

  it("16.1: a route that writes, then fails, ends its answer badly: the key is released and a retry runs again", async () => {
    const app = express();
    const face = idempotency();
    let calls = 0;
    app.post("/late", face, (_req, res, next) => {
      calls++;
      res.write("partial");
      next(new Error("late failure"));
    });
    // An error handler that ends a half-sent answer the way Express's own does: by destroying the socket.
    app.use((_error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.destroy();
    });
    const started = await listen(app, face);
    running.push(started);
    const send = () =>
      fetch(`${started.url}/late`, {
        method: "POST",
        headers: { "Idempotency-Key": "late" },
        body: "x",
        signal: AbortSignal.timeout(3000),
      }).then((r) => r.text());
    await expect(send()).rejects.toMatchObject({ name: "TypeError" });
    await expect(send()).rejects.toMatchObject({ name: "TypeError" });
    expect(calls).toBe(2);
  });

  it("16.2: an SSE route that stops on 'close' without end(): its client leaving releases the key", async () => {
    const app = express();
    const face = idempotency();
    let runs = 0;
    let closed!: () => void;
    const routeClosed = new Promise<void>((resolve) => {
      closed = resolve;
    });
    app.post("/sse", face, (_req, res) => {
      runs++;
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: 0\n\n");
      const timer = setInterval(() => res.write("data: more\n\n"), 50);
      res.on("close", () => {
        clearInterval(timer);
        closed();
      });
    });
    const started = await listen(app, face);
    running.push(started);
    const ctrl = new AbortController();
    const send = (signal: AbortSignal) =>
      fetch(`${started.url}/sse`, { method: "POST", headers: { "Idempotency-Key": "sse" }, body: "x", signal });
    const first = await send(ctrl.signal);
    await (first.body as ReadableStream<Uint8Array>).getReader().read();
    ctrl.abort();
    await routeClosed;
    await sleep(20);
    const second = await send(AbortSignal.timeout(3000));
    expect(second.headers.get("idempotent-replayed")).toBeNull();
    expect(runs).toBe(2);
    await second.body?.cancel();
  });

  it("16.3: behind express.json(), two amounts that differ only past 2^53 are never one request (a conflict, not a replay)", async () => {
    for (const order of ["parser first", "parser first, raw bytes kept"] as const) {
      const { routes, url } = await start(order);
      const send = (amount: string) =>
        fetch(`${url}/orders`, {
          method: "POST",
          headers: { "content-type": "application/json", "Idempotency-Key": `amount-${order}` },
          body: `{"amount":${amount}}`,
        });
      const first = await send("9007199254740993");
      expect(first.status).toBe(200);
      await first.text();
      const second = await send("9007199254740992");
      expect(second.headers.get("idempotent-replayed")).toBeNull();
      expect(second.status).toBe(409);
      expect(routes.orders).toBe(1);
    }
  });

  it("a route that never answers holds its key at most leaseMs + waitTimeoutMs after its client left; then a retry runs again", async () => {
    const app = express();
    const face = idempotency({ leaseMs: 300, waitTimeoutMs: 300 });
    let runs = 0;
    app.post("/never", face, () => {
      runs++;
    });
    const started = await listen(app, face);
    running.push(started);
    const send = () =>
      fetch(`${started.url}/never`, {
        method: "POST",
        headers: { "Idempotency-Key": "never" },
        body: "x",
        signal: AbortSignal.timeout(150),
      });
    await expect(send()).rejects.toMatchObject({ name: "TimeoutError" });
    await sleep(900);
    await expect(send()).rejects.toMatchObject({ name: "TimeoutError" });
    expect(runs).toBe(2);
  });
});
