// idempotency(): the Request -> Response face of the engine, for any Web-standard handler (Deno.serve, Bun, Hono, workers).
import { type Call, createEngine, type ForgetOptions, type Stats } from "./engine.ts";
import { errorResponse, isIdempotencyKeyError } from "./errors.ts";
import { type ClientOnlyOption, callTtlMs, type IdempotencyOptions, KNOWN, normalizeOptions } from "./options.ts";
import { DEFAULT_METHODS, methodSet, SERVER_FACE, serverOptions } from "./server-policy.ts";
import type { ForgetResult } from "./store.ts";
import { strictOptions } from "./strict.ts";
import { webAnswer, webPlan, webResponse } from "./web.ts";

/** Options of the server middleware: the shared ones (no client-only settings) plus the server's own. */
export interface ServerIdempotencyOptions extends Omit<IdempotencyOptions, ClientOnlyOption> {
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

export { DEFAULT_METHODS } from "./server-policy.ts";

/** Marks an error thrown by the handler, so only the client's bad key becomes a 400. */
class HandlerFailure {
  constructor(readonly cause: unknown) {}
}

/** Validates `options` once and returns the per-request form of the middleware. */
export function idempotencyLayer(options: ServerIdempotencyOptions = {}): IdempotencyLayer {
  const { shared, methods, required, waitUntil } = serverOptions(options);
  const handled = methodSet("methods", methods, DEFAULT_METHODS);
  const normalized = normalizeOptions(shared, "server");
  const engine = createEngine(normalized, SERVER_FACE);

  return {
    async handle(request, handler, call = {}) {
      // A per-call TTL comes from code: nonsense is a programming error, thrown before anything runs.
      strictOptions(call, KNOWN.serverCall, "the per-request options");
      callTtlMs(call.ttlSeconds, "call.ttlSeconds");
      const method = request.method.toUpperCase();
      if (!handled.has(method)) return handler(request);
      const run = async (body: BodyInit | null | undefined): Promise<Response> => {
        try {
          // A fresh Request from parts: copying `request` would first turn a lightweight server request
          // (@hono/node-server) into a full one, only to replace its body.
          return await handler(
            body === undefined
              ? request
              : new Request(request.url, {
                  method: request.method,
                  headers: request.headers,
                  body,
                  // A body the engine read past its limit goes on as the stream of every byte.
                  ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
                } as RequestInit),
          );
        } catch (error) {
          throw new HandlerFailure(error);
        }
      };
      const { plan, passInit } = webPlan(request, undefined, false);
      const engineCall: Call<Response> = {
        plan,
        requireKey: required.has(method),
        send: async (upstream) => webAnswer(await run(upstream.body as BodyInit | null)),
        pass: () => run(passInit()?.body),
      };
      if (call.ttlSeconds !== undefined) engineCall.ttlSeconds = call.ttlSeconds;
      const hook = call.waitUntil ?? waitUntil;
      if (hook) engineCall.waitUntil = hook;
      try {
        const result = await engine.handle(engineCall);
        return "passed" in result ? result.passed : webResponse(result, request.url);
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
