// Child process: one framework face (plain or behind idemfetch, memory store) around a trivial JSON handler (POST /work).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { memoryStore } from "../../src/memory-store.ts";
import { serveHost } from "./lib.ts";

export type FaceContender = `${"node" | "express" | "fastify" | "hono"}-${"plain" | "idemfetch"}`;

const contender = process.env.CONTENDER as FaceContender;
const [framework, flavour] = contender.split("-") as [string, string];
const wrapped = flavour === "idemfetch";
let executions = 0;
const work = (body: unknown) => ({ n: ++executions, pid: process.pid, echo: body });

async function nodeServer(): Promise<Server> {
  const plain = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = JSON.stringify(work(JSON.parse(Buffer.concat(chunks).toString())));
      res.writeHead(200, { "content-type": "application/json" }).end(text);
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
    res.json(work(req.body));
  });
  return app.listen(0, "127.0.0.1");
}

async function fastifyServer(): Promise<Server> {
  const { default: fastify } = await import("fastify");
  const app = fastify();
  if (wrapped) await app.register((await import("../../src/fastify.ts")).idempotency({ store: memoryStore() }));
  app.post("/work", async (request) => work(request.body));
  await app.listen({ port: 0, host: "127.0.0.1" });
  return app.server;
}

function honoServer(): Server {
  const app = new Hono();
  if (wrapped) {
    const load = import("../../src/hono.ts").then((m) => m.idempotency({ store: memoryStore() }));
    app.use("*", async (c, next) => (await load)(c, next));
  }
  app.post("/work", async (c) => c.json(work(await c.req.json())));
  return serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
}

const server =
  framework === "node"
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
