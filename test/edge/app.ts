// The app the edge tests bundle and run inside workerd and edge-runtime: each face over upstashStore, calling a counting upstream.
import { Hono } from "hono";
import { upstashStore } from "../../adapters/upstash.ts";
import { createIdempotentFetch } from "../../src/fetch.ts";
import { idempotency as honoIdempotency } from "../../src/hono.ts";
import { idempotency } from "../../src/server.ts";

/** What the isolate is told: where the Upstash fixture and the upstream listen, and its key namespace. */
export interface EdgeEnv {
  UPSTASH_URL: string;
  UPSTASH_TOKEN: string;
  /** The counting upstream (test/fixtures/upstream.ts), `http://127.0.0.1:<port>`. */
  UPSTREAM: string;
  NAMESPACE: string;
}

/** A Workers ExecutionContext or a FetchEvent: what keeps the isolate alive after the response. */
export interface WaitUntil {
  waitUntil(promise: Promise<unknown>): void;
}

/** The global @vercel/functions reads the current request's context from. */
export const VERCEL_REQUEST_CONTEXT = Symbol.for("@vercel/request-context");

type App = (request: Request, env: EdgeEnv, ctx: WaitUntil) => Promise<Response>;

/**
 * Routes, all POST, each forwarding `/<face>/<rest>?<query>` to the upstream's `/<rest>?<query>`:
 *   /mw/...      idempotency(handler, { store }) called as a worker's fetch(request, env, ctx)
 *   /mw-bare/... the same handler called without ctx, so no store write is handed to waitUntil
 *   /hono/...    the Hono middleware, app.fetch(request, env, ctx) (c.executionCtx.waitUntil)
 *   /fetch/...   createIdempotentFetch({ store }) towards the upstream, with the caller's key header
 *   /fetch-wu/...  the same, its store writes handed to ctx.waitUntil (`init.idempotency.waitUntil`)
 *   /mw-vercel/... idempotency(handler, { store, waitUntil }) with Vercel's waitUntil, called without ctx
 *   /waits       GET: {handed, settled}, the store-write promises the faces gave ctx.waitUntil so far
 */
export function createApp(): App {
  let faces: ReturnType<typeof build> | undefined;
  let handed = 0;
  let settled = 0;
  // Counts what the faces hand to waitUntil, and passes it on to the runtime's own.
  const tracked = (ctx: WaitUntil): WaitUntil => ({
    waitUntil(promise) {
      handed++;
      ctx.waitUntil(promise.finally(() => settled++));
    },
  });

  // What `waitUntil` from @vercel/functions does: call the waitUntil of the request context Vercel's runtime
  // keeps behind a global symbol (an AsyncLocalStorage store), and do nothing where there is none.
  const vercelWaitUntil = (promise: Promise<unknown>): void => {
    const context = (globalThis as Record<symbol, { get?(): Partial<WaitUntil> | undefined } | undefined>)[
      VERCEL_REQUEST_CONTEXT
    ]?.get?.();
    if (context?.waitUntil) tracked(context as WaitUntil).waitUntil(promise);
  };

  const build = (env: EdgeEnv) => {
    const store = upstashStore({ url: env.UPSTASH_URL, token: env.UPSTASH_TOKEN });
    const options = { store, namespace: env.NAMESPACE };
    const upstreamUrl = (request: Request, prefix: string): string => {
      const url = new URL(request.url);
      return env.UPSTREAM + url.pathname.slice(prefix.length) + url.search;
    };
    const forward = async (request: Request, prefix: string): Promise<Response> =>
      fetch(upstreamUrl(request, prefix), {
        method: request.method,
        headers: { "content-type": request.headers.get("content-type") ?? "text/plain" },
        body: await request.arrayBuffer(),
      });
    const vercel = idempotency((request: Request) => forward(request, "/mw-vercel"), {
      ...options,
      waitUntil: vercelWaitUntil,
    });
    const mw = idempotency((request: Request, _env: EdgeEnv, _ctx?: WaitUntil) => forward(request, "/mw"), options);
    const hono = new Hono<{ Bindings: EdgeEnv }>();
    hono.use("/hono/*", honoIdempotency(options));
    hono.post("/hono/*", (c) => forward(c.req.raw, "/hono"));
    const client = createIdempotentFetch(options);
    return { mw, vercel, hono, client, upstreamUrl };
  };

  return async (request, env, ctx) => {
    faces ??= build(env);
    const { pathname } = new URL(request.url);
    const face = pathname.split("/")[1];
    if (face === "waits") return Response.json({ handed, settled });
    if (face === "mw") return faces.mw(request, env, tracked(ctx));
    if (face === "mw-bare") return faces.mw(new Request(request.url.replace("/mw-bare/", "/mw/"), request), env);
    if (face === "mw-vercel") return faces.vercel(request);
    if (face === "hono") return faces.hono.fetch(request, env, tracked(ctx) as ExecutionContextLike);
    if (face === "fetch" || face === "fetch-wu") {
      const key = request.headers.get("idempotency-key");
      const hook = tracked(ctx);
      return faces.client(faces.upstreamUrl(request, `/${face}`), {
        method: "POST",
        headers: { "content-type": "application/json", ...(key === null ? {} : { "idempotency-key": key }) },
        body: await request.text(),
        ...(face === "fetch-wu" ? { idempotency: { waitUntil: (promise) => hook.waitUntil(promise) } } : {}),
      });
    }
    return new Response("no such route", { status: 404 });
  };
}

/** Hono's ExecutionContext type asks for more than the middleware uses. */
type ExecutionContextLike = Parameters<Hono["fetch"]>[2];
