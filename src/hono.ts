// idemfetch/hono: the server middleware as a Hono middleware, a thin layer over server.ts.
import type { MiddlewareHandler } from "hono";
import { cloneRawRequest } from "hono/request";
import { type Controls, idempotencyLayer, type ServerCallOptions, type ServerIdempotencyOptions } from "./server.ts";

export type { ServerIdempotencyOptions } from "./server.ts";

/** A Hono middleware, plus the counters of what it saved. */
export type IdempotencyMiddleware = MiddlewareHandler & Controls;

/**
 * `app.use("/api/*", idempotency(options))`: duplicate requests run the downstream handlers once.
 * Options are those of `idemfetch/server`.
 */
export const idempotency = (options: ServerIdempotencyOptions = {}): IdempotencyMiddleware => {
  const layer = idempotencyLayer(options);
  let hasContext = true;
  const middleware: MiddlewareHandler = async function idempotency(c, next) {
    // A body an earlier middleware read through c.req is cached by Hono; rebuild the Request from that cache.
    const raw = c.req.raw.bodyUsed ? await cloneRawRequest(c.req) : c.req.raw;
    const call: ServerCallOptions = {};
    if (hasContext) {
      try {
        // Workers and other edge runtimes: the store write outlives the response. Elsewhere the getter throws.
        const ctx = c.executionCtx;
        call.waitUntil = (promise) => ctx.waitUntil(promise);
      } catch {
        // No execution context (Node, Deno, Bun): the process outlives the response anyway, and the
        // runtime does not change, so the getter (which builds an Error) is not asked again.
        hasContext = false;
      }
    }
    const response = await layer.handle(
      raw,
      async (request) => {
        // Downstream handlers read the body from the request the engine hands on.
        c.req.raw = request;
        await next();
        return c.res;
      },
      call,
    );
    // Hono's setter keeps headers outer middleware put on c.res (CORS, for one), replays included.
    c.res = response;
  };
  return Object.assign(middleware, { stats: layer.stats, forget: layer.forget, close: layer.close });
};
