// `npm run demo`: the one demo server — the ReliAPI-compatible LLM proxy, /stats, and the browser demo when present.
import { existsSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath, pathToFileURL } from "node:url";
import { serve } from "@hono/node-server";
import { type IdempotencyStore, memoryStore } from "../src/index.ts";
import { createLlmProxy } from "./llm.ts";
import { loadTargets } from "./targets.ts";

export interface DemoOptions {
  /** Default: PORT, else 8000; 0 picks a free port. */
  port?: number;
  hostname?: string;
  env?: Record<string, string | undefined>;
  log?: (line: string) => void;
}

export interface Demo {
  url: string;
  /** Which store holds the keys, e.g. "memory" or "redis (redis://127.0.0.1:6379)". */
  store: string;
  close(): Promise<void>;
}

interface StoreChoice {
  store: IdempotencyStore;
  name: string;
  close: () => Promise<void>;
}

/** The memory store, unless REDIS_URL or UPSTASH_REDIS_REST_URL/_TOKEN name a shared one. */
async function storeFromEnv(env: Record<string, string | undefined>): Promise<StoreChoice> {
  if (env.REDIS_URL) {
    // Imported lazily: the memory demo needs no Redis client.
    const [{ Redis }, { ioredisStore }] = await Promise.all([import("ioredis"), import("../adapters/ioredis.ts")]);
    const redis = new Redis(env.REDIS_URL, {
      // Fail fast while Redis is down (the engine then proceeds unprotected and says so) instead of queueing.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: 1500,
    });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no answer in 5 s")), 5000);
        redis.once("ready", () => resolve(clearTimeout(timer)));
      });
    } catch (error) {
      redis.disconnect();
      throw new Error(`REDIS_URL is set but ${redact(env.REDIS_URL)} is unreachable: ${(error as Error).message}`);
    }
    const store = ioredisStore({ redis });
    return {
      store,
      name: `redis (${redact(env.REDIS_URL)})`,
      close: async () => {
        await store.close?.();
        await redis.quit();
      },
    };
  }
  if (env.UPSTASH_REDIS_REST_URL || env.UPSTASH_REDIS_REST_TOKEN) {
    if (!env.UPSTASH_REDIS_REST_URL || !env.UPSTASH_REDIS_REST_TOKEN) {
      throw new Error("Set both UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN");
    }
    const { upstashStore } = await import("../adapters/upstash.ts");
    const store = upstashStore({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });
    return { store, name: `upstash (${redact(env.UPSTASH_REDIS_REST_URL)})`, close: async () => store.close?.() };
  }
  return { store: memoryStore(), name: "memory", close: async () => {} };
}

/** A URL without its password, for logs. */
const redact = (url: string): string => url.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@");

/** The browser demo page (demo/web.ts), when it exists. */
async function loadWebDemo(): Promise<{ handle(request: Request): Promise<Response | undefined> } | undefined> {
  const url = new URL("./web.ts", import.meta.url);
  if (!existsSync(fileURLToPath(url))) return undefined;
  const mod = (await import(url.href)) as {
    webDemo?: () => { handle(request: Request): Promise<Response | undefined> };
  };
  return mod.webDemo?.();
}

const INDEX = `idemfetch demo

POST /proxy/llm   {"target": "mock" | "openai", "messages": [...], "stream"?: true}
                  with an Idempotency-Key header or an "idempotency_key" field
GET  /stats       requests, upstream_calls, saved_calls, saved_usd
`;

export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  const env = options.env ?? process.env;
  const log = options.log ?? ((line: string) => console.log(line));
  const targets = loadTargets(env.RELIAPI_CONFIG, env);
  const store = await storeFromEnv(env);
  const proxy = createLlmProxy({ targets, store: store.store, env, log: (line) => log(`  ${line}`) });
  const web = await loadWebDemo();

  const fetchHandler = async (request: Request): Promise<Response> => {
    const web_ = await web?.handle(request);
    if (web_) return web_;
    const { pathname } = new URL(request.url);
    if (pathname === "/proxy/llm" && request.method === "POST") return proxy.handle(request);
    if (pathname === "/stats" && request.method === "GET")
      return Response.json({ ...proxy.stats(), store: store.name });
    if (pathname === "/healthz") return Response.json({ status: "ok" });
    if (pathname === "/" && request.method === "GET")
      return new Response(INDEX, { headers: { "content-type": "text/plain" } });
    return Response.json(
      { success: false, error: { type: "client_error", code: "NOT_FOUND", message: `${request.method} ${pathname}` } },
      { status: 404 },
    );
  };

  const port = options.port ?? Number(env.PORT ?? 8000);
  const hostname = options.hostname ?? "127.0.0.1";
  const server = serve({ fetch: fetchHandler, port, hostname }) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const url = `http://${hostname}:${(server.address() as AddressInfo).port}`;
  const curl = `curl -X POST ${url}/proxy/llm -H "Idempotency-Key: chat-123"`;
  log(
    [
      `idemfetch demo on ${url}  (store: ${store.name})`,
      ...proxy.describe().map((line) => `  target ${line}`),
      "try:",
      `  ${curl} -d '{"target": "openai", "messages": [{"role": "user", "content": "Hello"}]}'`,
      `  curl -N -X POST ${url}/proxy/llm -H "Idempotency-Key: stream-1" -d '{"target": "mock", "stream": true, "messages": [{"role": "user", "content": "Count to 5"}]}'`,
      `  curl ${url}/stats`,
      web ? `  open ${url}/ for the browser demo` : "",
    ]
      .filter(Boolean)
      .join("\n"),
  );

  return {
    url,
    store: store.name,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await store.close();
    },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  startDemo().then(
    (demo) => {
      const stop = () => void demo.close().then(() => process.exit(0));
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    },
    (error: unknown) => {
      console.error(`demo: ${(error as Error).message}`);
      process.exit(1);
    },
  );
}
