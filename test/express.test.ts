// idemfetch/express over a real Express 5 server on 127.0.0.1: the shared face suite in every body-parser order.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import express, { type Express } from "express";
import { afterEach, describe, expect, it } from "vitest";
import { idempotency, keepRawBody } from "../src/express.ts";
import type { ServerIdempotencyOptions } from "../src/server.ts";
import { expectOuterHeaderPerCaller, faceSuite, Routes, type Started } from "./fixtures/node-face-suite.ts";

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
});
