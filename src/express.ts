// idemfetch/express: the server middleware as an Express (or Connect) middleware, on the Node face (src/node-http.ts).
import type { IncomingMessage, ServerResponse } from "node:http";
import { headersOf, type NodeFace, nodeLayer, unreadBody } from "./node-http.ts";
import type { ServerIdempotencyOptions } from "./server.ts";

export type { ServerIdempotencyOptions } from "./server.ts";

/** Express's `next`. */
type Next = (error?: unknown) => void;

/** What Express adds to Node's request that the face reads. */
type ExpressRequest = IncomingMessage & { originalUrl?: string; body?: unknown; rawBody?: unknown };

/** An Express middleware, plus the counters of what it saved and its shutdown. */
export type IdempotencyMiddleware = ((req: IncomingMessage, res: ServerResponse, next: Next) => void) & NodeFace;

/**
 * A body parser's `verify` that keeps the raw bytes (`req.rawBody`), so a middleware behind
 * `express.json({ verify: keepRawBody })` fingerprints exactly what the client sent.
 */
export const keepRawBody = (req: IncomingMessage, _res: ServerResponse, buf: Buffer): void => {
  (req as ExpressRequest).rawBody = buf;
};

/**
 * `app.post("/orders", idempotency(options), handler)`: duplicate requests run the routes behind it once.
 * Put it before the body parser (or give the parser `verify: keepRawBody`): it then fingerprints the raw
 * bytes. Options are those of `idemfetch/server`.
 */
export const idempotency = (options: ServerIdempotencyOptions = {}): IdempotencyMiddleware => {
  const layer = nodeLayer(options);
  let warned = false;
  const middleware = function idempotency(req: ExpressRequest, res: ServerResponse, next: Next): void {
    if (!layer.handles(req.method)) {
      next();
      return;
    }
    const body = bodyOf(req);
    if (body.incomparable && !warned) {
      warned = true;
      console.warn(
        "idemfetch/express: a body parser ran before idempotency() and kept no raw bytes; a JSON body whose numbers " +
          "are not all safe integers cannot be compared, so a retry of it answers 409, never a replay. Put " +
          "idempotency() first, or give the parser `verify: keepRawBody`.",
      );
    }
    layer
      .serve(req, res, {
        path: req.originalUrl ?? req.url ?? "/",
        ...body,
        before: headersOf(res),
        route: () => next(),
      })
      .catch(next);
  };
  return Object.assign(middleware, { stats: layer.stats, forget: layer.forget, close: layer.close });
};

const encoder = new TextEncoder();

/**
 * The request body as the engine needs it, leaving `req` as the routes behind expect it: still on the
 * socket (read on demand and put back), or, behind a body parser, its raw bytes when its `verify` kept them.
 * Without them the parsed value is all there is: re-serialized when it is exact, else not comparable.
 */
function bodyOf(req: ExpressRequest): { body: Uint8Array | null | ReturnType<typeof unreadBody>; incomparable?: true } {
  if (!req.readableEnded) return { body: unreadBody(req) };
  const { rawBody, body } = req;
  if (rawBody instanceof Uint8Array) return { body: rawBody };
  if (body instanceof Uint8Array) return { body };
  if (typeof body === "string") return { body: encoder.encode(body) };
  if (
    body === undefined ||
    (typeof body === "object" && body !== null && Object.keys(body).length === 0 && !hasBody(req))
  ) {
    return { body: null };
  }
  const text = JSON.stringify(body);
  // A parser rounds numbers past 2^53 and decimals: two different amounts would look alike.
  return exact(body) ? { body: encoder.encode(text) } : { body: encoder.encode(text), incomparable: true };
}

/** Whether the request declared a body at all (a parser sets `req.body = {}` for none). */
const hasBody = (req: IncomingMessage): boolean =>
  req.headers["transfer-encoding"] !== undefined || (req.headers["content-length"] ?? "0") !== "0";

/** Whether a parsed JSON value holds only what survives parsing unchanged: no number but safe integers. */
function exact(value: unknown, depth = 0): boolean {
  if (typeof value === "number") return Number.isSafeInteger(value);
  if (typeof value !== "object" || value === null) return true;
  if (depth > 128) return false;
  for (const item of Array.isArray(value) ? value : Object.values(value)) if (!exact(item, depth + 1)) return false;
  return true;
}
