// idemfetch/node over a real node:http server on 127.0.0.1: the shared face suite, then what only a plain handler shows.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { idempotency, type NodeHandler } from "../src/node.ts";
import type { ServerIdempotencyOptions } from "../src/server.ts";
import { faceSuite, type Routes, type Started } from "./fixtures/node-face-suite.ts";

async function listen(handler: NodeHandler, options: ServerIdempotencyOptions = {}): Promise<Started> {
  const face = idempotency(handler, options);
  const server: Server = createServer(face);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
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

async function text(req: IncomingMessage): Promise<string> {
  let body = "";
  for await (const chunk of req) body += chunk;
  return body;
}

/** The suite's routes as one plain handler. */
const handlerFor =
  (routes: Routes): NodeHandler =>
  async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/orders") {
      const body = JSON.parse(await text(req));
      const { json, cookie } = await routes.order(
        body,
        req.headers.authorization,
        url.searchParams.get("cookie") === "1",
      );
      if (cookie) res.setHeader("set-cookie", cookie);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(json));
    } else if (url.pathname === "/stream") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      await routes.stream((chunk) => res.write(chunk));
      res.end();
    } else if (url.pathname === "/big") {
      res.setHeader("content-type", "application/octet-stream");
      Readable.from(routes.big()).pipe(res);
    } else if (url.pathname === "/upload") {
      const answer = await routes.upload(req);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
    } else {
      res.writeHead(404).end();
    }
  };

faceSuite("node:http", (routes, options) => listen(handlerFor(routes), options));

describe("node:http face specifics", () => {
  let running: Started[] = [];
  afterEach(async () => {
    await Promise.all(running.map((s) => s.close()));
    running = [];
  });
  const start = async (handler: NodeHandler) => {
    const started = await listen(handler);
    running.push(started);
    return started;
  };

  it("a handler that throws before answering gets a 500 that is not stored; the next call runs again", async () => {
    let calls = 0;
    const { url, stats } = await start((_req, res) => {
      if (++calls === 1) throw new Error("boom");
      res.end("ok");
    });
    const send = () => fetch(`${url}/x`, { method: "POST", headers: { "Idempotency-Key": "t" }, body: "x" });
    expect((await send()).status).toBe(500);
    expect(await (await send()).text()).toBe("ok");
    expect(calls).toBe(2);
    expect(stats()).toMatchObject({ upstreamCalls: 2 });
  });

  it("a replay is written with writeHead + end(bytes): a Content-Length, no chunked encoding", async () => {
    const { url } = await start((_req, res) => {
      res.setHeader("content-type", "text/plain");
      res.write("a");
      res.end("b");
    });
    const send = () => fetch(`${url}/x`, { method: "POST", headers: { "Idempotency-Key": "r" }, body: "x" });
    expect(await (await send()).text()).toBe("ab");
    const replay = await send();
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(replay.headers.get("content-length")).toBe("2");
    expect(replay.headers.get("transfer-encoding")).toBeNull();
    expect(await replay.text()).toBe("ab");
  });
});
