// idemfetch/node: the server middleware around a plain `node:http` handler, on Node's own objects (no Web Request or Response per call).
import type { IncomingMessage, ServerResponse } from "node:http";
import { headersOf, type NodeFace, nodeLayer, unreadBody } from "./node-http.ts";
import type { ServerIdempotencyOptions } from "./server.ts";

export type { NodeFace } from "./node-http.ts";
export type { ServerIdempotencyOptions } from "./server.ts";

/** A `node:http` request handler. */
export type NodeHandler = (req: IncomingMessage, res: ServerResponse) => unknown;

/** The wrapped handler, plus the counters of what it saved and its shutdown. */
export type IdempotentNodeHandler = ((req: IncomingMessage, res: ServerResponse) => void) & NodeFace;

/**
 * `http.createServer(idempotency(handler, options))`: duplicate requests (same `Idempotency-Key` header or
 * `idempotency_key` body field, same client) run `handler` once; concurrent ones share its answer live,
 * later ones get it replayed. The handler reads the body from `req` as usual. Options are those of
 * `idemfetch/server`.
 */
export const idempotency = (handler: NodeHandler, options: ServerIdempotencyOptions = {}): IdempotentNodeHandler => {
  if (typeof handler !== "function") {
    throw new TypeError(`idemfetch: idempotency() needs a handler function, got ${typeof handler}`);
  }
  const layer = nodeLayer(options);
  /** Runs the handler; a throw (or a rejection) fails its answer. */
  const route = (req: IncomingMessage, res: ServerResponse, fail: (error: unknown) => void): void => {
    try {
      const ran = handler(req, res);
      if (ran instanceof Promise) ran.catch(fail);
    } catch (error) {
      fail(error);
    }
  };
  const wrapped = function idempotency(req: IncomingMessage, res: ServerResponse): void {
    if (!layer.handles(req.method)) {
      route(req, res, (error) => res.destroy(error as Error));
      return;
    }
    const call = { path: req.url ?? "/", body: unreadBody(req), before: headersOf(res) };
    layer
      .serve(req, res, { ...call, route: (fail) => route(req, res, fail) })
      .catch((error: unknown) => res.destroy(error as Error));
  };
  return Object.assign(wrapped, { stats: layer.stats, forget: layer.forget, close: layer.close });
};
