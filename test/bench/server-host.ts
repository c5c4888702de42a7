// Child process: one server-side contender on 127.0.0.1 around the same counting handler (POST /work?ms=N).
// Each peer is set up the way its own README shows, on the bench's private Redis where it has a Redis store.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Redis } from "ioredis";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { memoryStore } from "../../src/memory-store.ts";
import { idempotency } from "../../src/server.ts";
import { serveHost, sleep } from "./lib.ts";

export type ServerContender =
  | "plain"
  | "idemfetch-memory"
  | "idemfetch-redis"
  | "idemfetch-redis-poll"
  | "powertools-redis"
  | "node-idempotency-redis"
  | "node-idempotency-redis-wait"
  | "express-plain"
  | "express-idempotency";

const contender = process.env.CONTENDER as ServerContender;
const redisUrl = process.env.REDIS_URL ?? "";
const closers: (() => unknown)[] = [];

let executions = 0;
/** The business logic every contender wraps: counts itself, then "works" for `ms` milliseconds. */
async function work(body: unknown, ms: number): Promise<{ n: number; pid: number; echo: unknown }> {
  const n = ++executions;
  if (ms > 0) await sleep(ms);
  return { n, pid: process.pid, echo: body };
}

const workMs = (url: string): number => Number(new URL(url, "http://x").searchParams.get("ms") ?? 0);

/** The plain Web handler: the baseline, and what idemfetch's `idempotency()` wraps. */
async function handler(request: Request): Promise<Response> {
  return Response.json(await work(await request.json(), workMs(request.url)));
}

const errorReply = (status: number, error: unknown): Response =>
  Response.json(
    { error: String((error as Error)?.name ?? error), message: String((error as Error)?.message) },
    { status },
  );

async function ioredisClient(): Promise<Redis> {
  // The options ioredisStore's docs ask for, so a Redis outage fails fast instead of queueing.
  const redis = new Redis(redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 1000 });
  await new Promise((resolve) => redis.once("ready", resolve));
  closers.push(() => redis.disconnect());
  return redis;
}

async function webHandler(): Promise<(request: Request) => Promise<Response>> {
  switch (contender) {
    case "plain":
      return handler;
    case "idemfetch-memory":
      return idempotency(handler, { store: memoryStore() });
    case "idemfetch-redis":
    case "idemfetch-redis-poll": {
      const store = ioredisStore({ redis: await ioredisClient() });
      closers.push(() => store.close?.());
      // Without `subscribe` the engine falls back to polling (25 ms x1.5, capped at 500 ms).
      if (contender === "idemfetch-redis-poll") delete store.subscribe;
      return idempotency(handler, { store });
    }
    case "powertools-redis": {
      const { IdempotencyConfig, makeIdempotent } = await import("@aws-lambda-powertools/idempotency");
      const { CachePersistenceLayer } = await import("@aws-lambda-powertools/idempotency/cache");
      // Its docs connect a node-redis client (`createClient(...).connect()`) and pass it in.
      const { createClient } = await import("redis");
      const client = await createClient({ url: redisUrl }).connect();
      closers.push(() => client.disconnect());
      // No payloadValidationJmesPath: with it, 2.35's CachePersistenceLayer drops the payload hash when it
      // completes a record (_updateRecord), so every replay fails with IdempotencyValidationError.
      const config = new IdempotencyConfig({
        eventKeyJmesPath: 'headers."idempotency-key"',
        expiresAfterSeconds: 3600,
      });
      const persistenceStore = new CachePersistenceLayer({ client: client as never });
      const idempotent = makeIdempotent(
        async (event: { headers: Record<string, string>; body: unknown; ms: number }) => work(event.body, event.ms),
        { persistenceStore, config },
      );
      // Outside Lambda there is no remaining time; its docs say to register a context, else an in-progress
      // record never expires and every call logs a warning. A 30 s request deadline stands in for it.
      const context = { getRemainingTimeInMillis: () => 30_000 };
      return async (request) => {
        const key = request.headers.get("idempotency-key");
        const event = { headers: key === null ? {} : { "idempotency-key": key }, body: await request.json(), ms: 0 };
        event.ms = workMs(request.url);
        config.registerLambdaContext(context as never);
        try {
          return Response.json(await idempotent(event));
        } catch (error) {
          const name = (error as Error)?.name;
          if (name === "IdempotencyAlreadyInProgressError") return errorReply(409, error);
          if (name === "IdempotencyValidationError") return errorReply(422, error);
          return errorReply(500, error);
        }
      };
    }
    case "node-idempotency-redis":
    case "node-idempotency-redis-wait": {
      const { Idempotency, IdempotencyError, IdempotencyErrorCodes } = await import("@node-idempotency/core");
      const { RedisStorageAdapter } = await import("@node-idempotency/storage-adapter-redis");
      const storage = new RedisStorageAdapter({ url: redisUrl });
      await storage.connect();
      closers.push(() => storage.disconnect());
      // Default options as in its README; the "-wait" variant turns on its documented in-progress polling.
      const idem = new Idempotency(
        storage,
        contender === "node-idempotency-redis-wait" ? { inProgressStrategy: { wait: true } } : {},
      );
      return async (request) => {
        const url = new URL(request.url);
        const params = {
          method: request.method,
          headers: Object.fromEntries(request.headers),
          body: (await request.json()) as Record<string, unknown>,
          path: url.pathname,
        };
        try {
          const cached = await idem.onRequest(params);
          if (cached) {
            const status = Number(cached.additional?.status ?? 200);
            return Response.json(cached.body, { status, headers: { "x-replayed": "true" } });
          }
        } catch (error) {
          if (error instanceof IdempotencyError) {
            if (error.code === IdempotencyErrorCodes.REQUEST_IN_PROGRESS) return errorReply(409, error);
            if (error.code === IdempotencyErrorCodes.IDEMPOTENCY_FINGERPRINT_MISSMATCH) return errorReply(422, error);
          }
          return errorReply(500, error);
        }
        const result = await work(params.body, workMs(request.url));
        await idem.onResponse(params, { body: result, additional: { status: 200 } });
        return Response.json(result);
      };
    }
    default:
      throw new Error(`not a Web-handler contender: ${contender}`);
  }
}

/** The part of express 5 used here (the project has no @types/express). */
interface ExpressReq {
  body: unknown;
  url: string;
}
interface ExpressRes {
  statusCode: number;
  status(code: number): ExpressRes;
  json(body: unknown): void;
}
interface ExpressApp {
  use(...handlers: unknown[]): void;
  post(path: string, handler: (req: ExpressReq, res: ExpressRes) => Promise<void>): void;
  listen(port: number, host: string, ready: () => void): Server;
}
type Express = { (): ExpressApp; json(): unknown };

/** express 5 with express.json(); express-idempotency as its README shows (route checks `isHit`). */
async function expressServer(withIdempotency: boolean): Promise<Server> {
  const express = ((await import("express" as string)) as { default: Express }).default;
  const app = express();
  app.use(express.json());
  let isHit: (req: unknown) => boolean = () => false;
  let adapterName = "memory";
  if (withIdempotency) {
    const lib = await import("express-idempotency");
    const options: Record<string, unknown> = {};
    // Its Redis adapter is a separate package (express-idempotency-redis-adapter, not a devDependency here):
    // used as its README shows when installed, else the built-in memory adapter, and the tables say which.
    type RedisAdapter = new (options: {
      connectionConfig: { url: string };
    }) => {
      connect(): Promise<void>;
      disconnect(): Promise<void>;
    };
    let Adapter: RedisAdapter | undefined;
    try {
      const specifier = "express-idempotency-redis-adapter";
      const mod = (await import(specifier)) as { default?: RedisAdapter | { default?: RedisAdapter } };
      Adapter = typeof mod.default === "function" ? mod.default : mod.default?.default;
    } catch {
      // not installed
    }
    if (Adapter) {
      const adapter = new Adapter({ connectionConfig: { url: redisUrl } });
      await adapter.connect();
      closers.push(() => adapter.disconnect());
      options.dataAdapter = adapter;
      adapterName = "redis";
    }
    app.use(lib.idempotency(options));
    const service = lib.getSharedIdempotencyService();
    isHit = (req) => service.isHit(req as never);
  }
  process.env.BENCH_EXPRESS_ADAPTER = adapterName;
  app.post("/work", async (req, res) => {
    if (isHit(req)) return;
    res.json(await work(req.body, workMs(req.url)));
  });
  // Errors the middleware passes on (409 in progress, 417 misuse) answer with the status it set.
  app.use((error: Error, _req: ExpressReq, res: ExpressRes, _next: unknown) => {
    res.status(res.statusCode >= 400 ? res.statusCode : 500).json({ error: error.message });
  });
  return new Promise((resolve) => {
    const server = app.listen(0, "127.0.0.1", () => resolve(server));
  });
}

let server: Server;
if (contender === "express-plain" || contender === "express-idempotency") {
  server = await expressServer(contender === "express-idempotency");
} else {
  const fetchHandler = await webHandler();
  server = serve({ fetch: fetchHandler, port: 0, hostname: "127.0.0.1" }) as Server;
  if (!server.listening) await new Promise((resolve) => server.once("listening", resolve));
}
server.keepAliveTimeout = 60_000;
const { port } = server.address() as AddressInfo;

serveHost(
  { url: `http://127.0.0.1:${port}`, adapter: process.env.BENCH_EXPRESS_ADAPTER ?? "" },
  {
    count: () => executions,
    rss: () => process.memoryUsage().rss,
    /** CPU time this process used so far (user + system), in µs: cost per request whatever the machine's load. */
    cpu: () => {
      const { user, system } = process.cpuUsage();
      return user + system;
    },
    exit: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      for (const close of closers) await close();
    },
  },
);
