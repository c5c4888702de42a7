// idempotency(): the Request -> Response face of the engine, for any Web-standard handler (Deno.serve, Bun, Hono, workers).
import { type CallOptions, createEngine, type Face, type ForgetOptions, type Stats } from "./engine.ts";
import { errorResponse, isIdempotencyKeyError } from "./errors.ts";
import { callTtlMs, type IdempotencyOptions, normalizeOptions } from "./options.ts";
import { FRAMING_HEADERS } from "./record.ts";
import type { ForgetResult } from "./store.ts";

/** Options of the server middleware: the shared ones (no client-only settings) plus the server's own. */
export interface ServerIdempotencyOptions
  extends Omit<IdempotencyOptions, "fetch" | "autoKey" | "sendKeyHeader" | "retry"> {
  /**
   * Answer 400 IDEMPOTENCY_KEY_MISSING when a request carries no key: `true` for POST and PATCH (the
   * IETF draft's non-idempotent methods), or a list of methods. Default false: keyless requests pass through.
   */
  requireKey?: boolean | string[];
  /** Methods the middleware handles; any other passes through untouched. Default POST, PUT, PATCH, DELETE. */
  methods?: string[];
  /**
   * The IETF draft's answers: 422 on a payload mismatch, 409 IDEMPOTENCY_IN_PROGRESS at once while the key
   * is in flight (instead of waiting for it), and RFC 9457 problem+json bodies. `conflictStatus`,
   * `waitTimeoutMs` and `errorFormat`, when given, still win.
   */
  ietf?: boolean;
  /**
   * Keeps the runtime alive until a response's store write has settled, for runtimes that end an isolate
   * with the response (Vercel's `waitUntil` from `@vercel/functions`). A Workers-style `ctx` argument with
   * `waitUntil` is found and used without this.
   */
  waitUntil?: (promise: Promise<unknown>) => void;
}

/** Per-request settings a framework adapter or a route can pass. */
export interface ServerCallOptions {
  /** TTL of this request's record, in seconds. */
  ttlSeconds?: number;
  /** Keeps the runtime alive until this request's store write has settled (Hono's `c.executionCtx.waitUntil`). */
  waitUntil?: (promise: Promise<unknown>) => void;
}

/** What the wrapped handler and the layer offer besides handling requests. */
export interface Controls {
  stats(): Stats;
  /** Removes a stored key so the next request with it runs again; a live lease is refused unless `force`. */
  forget(key: string, options?: ForgetOptions): Promise<ForgetResult>;
  /** Resolves once every store write started so far has settled (graceful shutdown). */
  close(): Promise<void>;
}

/** A Web handler; extra arguments (Deno's `info`, a worker's `env`, `ctx`) are passed through. */
export type Handler<A extends unknown[] = []> = (request: Request, ...args: A) => Response | Promise<Response>;

/** The wrapped handler, plus the counters of what it saved. */
export interface IdempotentHandler<A extends unknown[] = []> extends Controls {
  (request: Request, ...args: A): Promise<Response>;
}

/** The per-request form, for frameworks whose downstream handler differs per call (Hono's `next`). */
export interface IdempotencyLayer extends Controls {
  handle(
    request: Request,
    handler: (request: Request) => Response | Promise<Response>,
    call?: ServerCallOptions,
  ): Promise<Response>;
}

/**
 * The server's policy: no auto keys (two identical requests to a server are often meant), path and query
 * fingerprinted (hosts differ behind a load balancer), bodies stored as sent (their encoding with them),
 * keyless uploads read only when they are JSON objects.
 */
const SERVER_FACE: Face = {
  autoKey: false,
  target: (url) => url.pathname + url.search,
  sendKeyHeader: () => false,
  dropHeaders: FRAMING_HEADERS,
  keylessBodies: "sniff",
};

/** Marks an error thrown by the handler, so only the client's bad key becomes a 400. */
class HandlerFailure {
  constructor(readonly cause: unknown) {}
}

export const DEFAULT_METHODS = ["POST", "PUT", "PATCH", "DELETE"] as const;

const methodSet = (name: string, value: unknown, fallback: readonly string[]): ReadonlySet<string> => {
  const list = value ?? fallback;
  if (!Array.isArray(list) || list.some((m) => typeof m !== "string" || m.length === 0)) {
    throw new TypeError(`idemfetch: option "${name}" must be an array of method names, got ${JSON.stringify(value)}`);
  }
  return new Set(list.map((m: string) => m.toUpperCase()));
};

/** Validates `options` once and returns the per-request form of the middleware. */
export function idempotencyLayer(options: ServerIdempotencyOptions = {}): IdempotencyLayer {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`idemfetch: options must be an object, got ${String(options)}`);
  }
  const { requireKey = false, methods, ietf = false, waitUntil, ...shared } = options;
  if (waitUntil !== undefined && typeof waitUntil !== "function") {
    throw new TypeError(`idemfetch: option "waitUntil" must be a function, got ${typeof waitUntil}`);
  }
  if (typeof ietf !== "boolean") throw new TypeError(`idemfetch: option "ietf" must be a boolean, got ${String(ietf)}`);
  const handled = methodSet("methods", methods, DEFAULT_METHODS);
  const required =
    requireKey === false
      ? new Set<string>()
      : methodSet("requireKey", requireKey === true ? undefined : requireKey, ["POST", "PATCH"]);
  if (ietf) {
    shared.conflictStatus ??= 422;
    shared.waitTimeoutMs ??= 0;
    shared.errorFormat ??= "problem";
  }
  const normalized = normalizeOptions(shared, "server");
  const engine = createEngine(normalized, SERVER_FACE);

  return {
    async handle(request, handler, call = {}) {
      // A per-call TTL comes from code: nonsense is a programming error, thrown before anything runs.
      callTtlMs(call.ttlSeconds, "call.ttlSeconds");
      const method = request.method.toUpperCase();
      if (!handled.has(method)) return handler(request);
      const send = async (upstream: Request, init?: RequestInit): Promise<Response> => {
        try {
          // A fresh Request from parts: copying `upstream` would first turn a lightweight server request
          // (@hono/node-server) into a full one, only to replace its body.
          return await handler(
            init
              ? new Request(upstream.url, {
                  method: upstream.method,
                  headers: init.headers ?? upstream.headers,
                  body: init.body ?? null,
                  signal: init.signal ?? null,
                  // A body the engine read past its limit goes on as the stream of every byte.
                  ...(init.body instanceof ReadableStream ? { duplex: "half" } : {}),
                } as RequestInit)
              : upstream,
          );
        } catch (error) {
          throw new HandlerFailure(error);
        }
      };
      const engineCall: CallOptions = { requireKey: required.has(method) };
      if (call.ttlSeconds !== undefined) engineCall.ttlSeconds = call.ttlSeconds;
      const hook = call.waitUntil ?? waitUntil;
      if (hook) engineCall.waitUntil = hook;
      try {
        return await engine.handle(request, send, engineCall);
      } catch (error) {
        // The handler's own failures (joined duplicates get the same one) go on as they were thrown.
        if (error instanceof HandlerFailure) throw error.cause;
        if (isIdempotencyKeyError(error))
          return errorResponse("IDEMPOTENCY_KEY_INVALID", 400, error.message, {}, normalized.errorFormat);
        throw error;
      }
    },
    stats: engine.stats,
    forget: engine.forget,
    close: engine.close,
  };
}

/**
 * Wraps a Web handler so duplicate requests (same `Idempotency-Key` header or `idempotency_key` body
 * field, same client) execute it once: concurrent ones share the response live, later ones get it replayed.
 */
export const idempotency = <A extends unknown[] = []>(
  handler: Handler<A>,
  options: ServerIdempotencyOptions = {},
): IdempotentHandler<A> => {
  if (typeof handler !== "function") {
    throw new TypeError(`idemfetch: idempotency() needs a handler function, got ${typeof handler}`);
  }
  const layer = idempotencyLayer(options);
  return Object.assign(
    function idempotency(request: Request, ...args: A): Promise<Response> {
      const ctx = args.find(hasWaitUntil);
      return layer.handle(
        request,
        (upstream) => handler(upstream, ...args),
        ctx ? { waitUntil: (promise) => ctx.waitUntil(promise) } : {},
      );
    },
    { stats: layer.stats, forget: layer.forget, close: layer.close },
  );
};

/** A Workers-style execution context among a handler's arguments. */
function hasWaitUntil(value: unknown): value is { waitUntil(promise: Promise<unknown>): void } {
  return (
    typeof value === "object" && value !== null && typeof (value as { waitUntil?: unknown }).waitUntil === "function"
  );
}
