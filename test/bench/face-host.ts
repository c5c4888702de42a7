// Child process: one framework face (plain or behind idemfetch, memory store) around a trivial JSON handler
// (POST /work?ms=N: N ms of simulated work, 0 when absent).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { memoryStore } from "../../src/memory-store.ts";
import { serveHost, sleep } from "./lib.ts";

export type FaceContender = `${"node" | "express" | "fastify" | "hono" | "web"}-${"plain" | "idemfetch"}`;

const contender = process.env.CONTENDER as FaceContender;
const [framework, flavour] = contender.split("-") as [string, string];
const wrapped = flavour === "idemfetch";
let executions = 0;
const msOf = (url: string | undefined): number => {
  const at = url?.indexOf("ms=") ?? -1;
  return at < 0 ? 0 : Number.parseInt((url as string).slice(at + 3), 10) || 0;
};
type Result = { n: number; pid: number; echo: unknown };
/** Counts itself; with `ms` it answers after that long (the burst's 50 ms handler), else synchronously. */
const work = (body: unknown, url: string | undefined): Result | Promise<Result> => {
  const result = { n: ++executions, pid: process.pid, echo: body };
  const ms = msOf(url);
  return ms > 0 ? sleep(ms).then(() => result) : result;
};
/** Calls `send` with the result, without a microtask when there is no work to wait for. */
const then = (r: Result | Promise<Result>, send: (r: Result) => void): void => {
  if (r instanceof Promise) void r.then(send);
  else send(r);
};

async function nodeServer(): Promise<Server> {
  const plain = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      then(work(JSON.parse(Buffer.concat(chunks).toString()), req.url), (r) => {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(r));
      });
    });
  };
  if (!wrapped) return createServer(plain).listen(0, "127.0.0.1");
  // The node face is imported by path at run time: the "before" tree has none.
  const spec = "../../src/node.ts";
  const { idempotency } = (await import(spec)) as {
    idempotency: (h: typeof plain, o: unknown) => typeof plain;
  };
  return createServer(idempotency(plain, { store: memoryStore() })).listen(0, "127.0.0.1");
}

async function expressServer(): Promise<Server> {
  const { default: express } = await import("express");
  const app = express();
  app.use(express.json());
  if (wrapped) app.use((await import("../../src/express.ts")).idempotency({ store: memoryStore() }));
  app.post("/work", (req, res) => {
    then(work(req.body, req.url), (r) => res.json(r));
  });
  return app.listen(0, "127.0.0.1");
}

async function fastifyServer(): Promise<Server> {
  const { default: fastify } = await import("fastify");
  const app = fastify();
  if (wrapped) await app.register((await import("../../src/fastify.ts")).idempotency({ store: memoryStore() }));
  app.post("/work", async (request) => work(request.body, request.url));
  await app.listen({ port: 0, host: "127.0.0.1" });
  return app.server;
}

function honoServer(): Server {
  const app = new Hono();
  if (wrapped) {
    const load = import("../../src/hono.ts").then((m) => m.idempotency({ store: memoryStore() }));
    app.use("*", async (c, next) => (await load)(c, next));
  }
  app.post("/work", async (c) => c.json(await work(await c.req.json(), c.req.url)));
  return serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
}

/** The Web face: a `(Request) => Response` handler, plain or behind `idempotency()`, on @hono/node-server. */
async function webServer(): Promise<Server> {
  const plain = async (request: Request): Promise<Response> =>
    Response.json(await work(await request.json(), request.url));
  const handler = wrapped ? (await import("../../src/server.ts")).idempotency(plain, { store: memoryStore() }) : plain;
  return serve({ fetch: handler, port: 0, hostname: "127.0.0.1" }) as Server;
}

const server =
  framework === "web"
    ? await webServer()
    : framework === "node"
      ? await nodeServer()
      : framework === "express"
        ? await expressServer()
        : framework === "fastify"
          ? await fastifyServer()
          : honoServer();
if (!server.listening) await new Promise((resolve) => server.once("listening", resolve));
server.keepAliveTimeout = 60_000;
const { port } = server.address() as AddressInfo;

serveHost(
  { url: `http://127.0.0.1:${port}` },
  {
    count: () => executions,
    cpu: () => {
      const { user, system } = process.cpuUsage();
      return user + system;
    },
    exit: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  },
);
