// The faces the fault harness drives, one entry each: in-process (fetch wrapper, Web handler) or a framework over real HTTP.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import type { ReadableStream as NodeWebStream } from "node:stream/web";
import { serve } from "@hono/node-server";
import express from "express";
import Fastify from "fastify";
import { Hono } from "hono";
import type { ForgetOptions } from "../../src/engine.ts";
import { idempotency as expressIdempotency } from "../../src/express.ts";
import { idempotency as fastifyIdempotency } from "../../src/fastify.ts";
import { createIdempotentFetch } from "../../src/fetch.ts";
import { idempotency as honoIdempotency } from "../../src/hono.ts";
import { idempotency as nodeIdempotency } from "../../src/node.ts";
import type { IdempotencyEvent } from "../../src/options.ts";
import { idempotency } from "../../src/server.ts";
import type { ForgetResult, IdempotencyStore } from "../../src/store.ts";

/**
 * What the route (the upstream) does on one execution. `throws`: before answering. `midError`: a write,
 * then a throw (a body stream that fails midway). `destroy`: a write, then `res.destroy()`. `noEnd`: writes
 * every chunk and never ends; it stops when its client goes away. `nonResponse`/`undefined`: a Web handler
 * that returns something else than a Response (no such thing on a Node route).
 */
export type RouteKind = "ok" | "throws" | "nonResponse" | "undefined" | "midError" | "destroy" | "noEnd";

/** What every face is built from: the store, the engine's options, and the upstream to protect. */
export interface FaceContext {
  store: IdempotencyStore;
  options: {
    namespace: string;
    leaseMs: number;
    storeTimeoutMs: number;
    waitTimeoutMs: number;
    maxBodyBytes: number;
    onStoreError: "open" | "closed";
    scope?: (r: Request) => string;
    onEvent?: (e: IdempotencyEvent) => void;
    /** The store guard's warnings: off in the harness, whose chaos store fails on purpose. */
    logger: false;
  };
  /** The route as a Web function; a Response carries its `RouteKind` in `x-kind` for the Node routes to act on. */
  upstream: (req: Request) => Promise<Response>;
}

/**
 * One running face: a call as a client makes it (`path` like "/orders/k0"), forget, and `close`, which stops
 * its server (not the engine: its close() waits for store calls, and a hung one never settles).
 */
export interface Face {
  call(path: string, init: RequestInit): Promise<Response>;
  forget(key: string, options: ForgetOptions): Promise<ForgetResult>;
  close(): Promise<void>;
}

const nothingToClose = async (): Promise<void> => {};

/** A Web body as a Node stream (what a Fastify route sends). */
const nodeStream = (body: ReadableStream<Uint8Array>): Readable => Readable.fromWeb(body as NodeWebStream);

export interface FaceEntry {
  /** The route behaviours this face can show. */
  kinds: readonly RouteKind[];
  /** Over HTTP: a failed route shows as the framework's 500 or a cut connection. */
  http: boolean;
  /** A caller whose signal aborted before the call still reaches the route (the Web handler follows no client signal). */
  sendsAborted: boolean;
  start(ctx: FaceContext): Promise<Face>;
}

const WEB_KINDS = ["ok", "throws", "nonResponse", "undefined", "midError"] as const;
/**
 * A route that never calls `end()` is Express's (a handler on `res`); a Fastify or Hono route answers with a
 * stream, and one that never ends rightly keeps its lease alive, so it is not among their behaviours.
 */
const NODE_KINDS = ["ok", "throws", "midError", "destroy", "noEnd"] as const;
const STREAM_KINDS = ["ok", "throws", "midError", "destroy"] as const;

/** Every face the harness drives. A new face joins with one entry here (and gets every invariant and scenario). */
export const FACES = {
  fetch: {
    kinds: WEB_KINDS,
    http: false,
    sendsAborted: false,
    async start({ store, options, upstream }) {
      const f = createIdempotentFetch({
        ...options,
        store,
        fetch: ((input: RequestInfo | URL, init?: RequestInit) => upstream(new Request(input, init))) as typeof fetch,
      });
      return {
        call: (path, init) => f(`http://upstream.test${path}`, init),
        forget: forgetWith(f),
        close: nothingToClose,
      };
    },
  },
  server: {
    kinds: WEB_KINDS,
    http: false,
    sendsAborted: true,
    async start({ store, options, upstream }) {
      const h = idempotency((req) => upstream(req), { ...options, store });
      return {
        call: (path, init) => h(new Request(`http://upstream.test${path}`, init)),
        forget: forgetWith(h),
        close: nothingToClose,
      };
    },
  },
  node: {
    kinds: NODE_KINDS,
    http: true,
    sendsAborted: false,
    async start({ store, options, upstream }) {
      const handler = nodeIdempotency(
        async (req, res) => {
          const response = await upstream(webRequest(req.url ?? "/", req.headers, await nodeBody(req)));
          res.writeHead(response.status, Object.fromEntries(response.headers));
          // A plain node:http route that fails after its first write has nobody to tell: it destroys its socket.
          if ((await pump(response, res)) === "error") res.destroy(new Error("the route failed after its first write"));
        },
        { ...options, store },
      );
      return overHttp(createServer(handler).listen(0, "127.0.0.1"), handler);
    },
  },
  express: {
    kinds: NODE_KINDS,
    http: true,
    sendsAborted: false,
    async start({ store, options, upstream }) {
      const mw = expressIdempotency({ ...options, store });
      const app = express();
      app.post("/orders/:k", mw, async (req, res, next) => {
        let response: Response;
        try {
          response = await upstream(webRequest(req.url, req.headers, await nodeBody(req)));
        } catch (error) {
          next(error);
          return;
        }
        res.writeHead(response.status, Object.fromEntries(response.headers));
        const failure = await pump(response, res);
        if (failure === "error") next(new Error("the route failed after its first write"));
      });
      // As Express's own handler does once headers went out: the socket is destroyed (quietly, no stack on stderr).
      app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        if (res.headersSent) res.destroy();
        else res.status(500).json({ route: "failed", message: String(error) });
      });
      return overHttp(app.listen(0, "127.0.0.1"), mw);
    },
  },
  fastify: {
    kinds: STREAM_KINDS,
    http: true,
    sendsAborted: false,
    async start({ store, options, upstream }) {
      const plugin = fastifyIdempotency({ ...options, store });
      const app = Fastify({ logger: false });
      app.removeAllContentTypeParsers();
      app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
      await app.register(async (scope) => {
        await scope.register(plugin);
        scope.post("/orders/:k", async (request, reply) => {
          const body = request.body instanceof Uint8Array ? request.body : null;
          const response = await upstream(webRequest(request.url, request.headers, body));
          reply.code(response.status).headers(Object.fromEntries(response.headers));
          const kind = response.headers.get("x-kind");
          if (kind === "destroy" && response.body) {
            // Writes on the raw socket, then destroys it: a route that leaves Fastify's reply behind.
            reply.hijack();
            reply.raw.writeHead(response.status, Object.fromEntries(response.headers));
            await pump(response, reply.raw);
            return reply;
          }
          return reply.send(response.body ? nodeStream(response.body) : null);
        });
      });
      await app.listen({ port: 0, host: "127.0.0.1" });
      const face = overHttp(app.server, plugin);
      return face;
    },
  },
  hono: {
    kinds: STREAM_KINDS,
    http: true,
    sendsAborted: false,
    async start({ store, options, upstream }) {
      const mw = honoIdempotency({ ...options, store });
      const app = new Hono<{ Bindings: { outgoing: import("node:http").ServerResponse } }>();
      app.onError((error, c) => c.json({ route: "failed", message: String(error) }, 500));
      app.post("/orders/:k", mw, async (c) => {
        const response = await upstream(c.req.raw);
        if (response.headers.get("x-kind") !== "destroy" || !response.body) return response;
        // Node's ServerResponse under @hono/node-server, destroyed once the route's body fails midway.
        const outgoing = c.env.outgoing;
        const reader = response.body.getReader();
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            try {
              const { done, value } = await reader.read();
              if (done) controller.close();
              else controller.enqueue(value);
            } catch (error) {
              outgoing.destroy();
              controller.error(error);
            }
          },
          cancel: (reason) => reader.cancel(reason),
        });
        return new Response(body, response);
      });
      const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
      return overHttp(server, mw);
    },
  },
} satisfies Record<string, FaceEntry>;

export type FaceName = keyof typeof FACES;
export const FACE_NAMES = Object.keys(FACES) as FaceName[];

const forgetWith = (face: Pick<Face, "forget">) => (key: string, options: ForgetOptions) => face.forget(key, options);

type NodeHeaders = Record<string, string | string[] | undefined>;

function webRequest(url: string, headers: NodeHeaders, body: Uint8Array | null): Request {
  const h = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name === "content-length" || name === "transfer-encoding") continue;
    for (const v of Array.isArray(value) ? value : [value]) h.append(name, v);
  }
  const init = { method: "POST", headers: h, body: body as BodyInit | null, duplex: "half" };
  return new Request(`http://route.test${url}`, init as RequestInit);
}

/**
 * The body an Express route reads from `req` (no body parser in front). Like body parsers, it fails when the
 * request can no longer be read (its client went away, or it closed before this route ran), never hangs.
 */
async function nodeBody(req: import("node:http").IncomingMessage): Promise<Uint8Array> {
  if (!req.readable) throw new Error("the request is not readable (its client went away)");
  return new Uint8Array(await buffer(req));
}

/**
 * Writes a route's Web body on a Node response as a route written by hand would: chunk by chunk, `end()` at
 * the end. `destroy`: the socket is destroyed when the body fails; `noEnd`: stops (no `end()`) once the client
 * is gone. Returns "error" when the body failed and the route is to throw.
 */
async function pump(response: Response, res: import("node:http").ServerResponse): Promise<"ok" | "error" | "gone"> {
  const kind = response.headers.get("x-kind");
  if (!response.body) {
    res.end();
    return "ok";
  }
  const reader = response.body.getReader();
  // Only the route that never ends watches for its client leaving; any other writes on and ends.
  const gone = new Promise<"gone">((resolve) => {
    if (kind === "noEnd") res.once("close", () => resolve("gone"));
  });
  for (;;) {
    let step: ReadableStreamReadResult<Uint8Array> | "gone";
    try {
      step = await Promise.race([reader.read(), gone]);
    } catch {
      if (kind === "destroy") {
        res.destroy();
        return "gone";
      }
      return "error";
    }
    if (step === "gone") {
      await reader.cancel("the client went away").catch(() => {});
      return "gone";
    }
    if (step.done) break;
    res.write(step.value);
  }
  res.end();
  return "ok";
}

/** A started HTTP server as a Face: calls are real fetches to 127.0.0.1. */
function overHttp(server: Server, controls: Pick<Face, "forget">): Face {
  const ready = server.listening ? Promise.resolve() : new Promise((resolve) => server.once("listening", resolve));
  const base = ready.then(() => `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  return {
    call: async (path, init) => fetch(`${await base}${path}`, init),
    forget: forgetWith(controls),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
