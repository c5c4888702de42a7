// The Worker the Durable Object tests run in workerd: IdempotencyObject exported, idempotency() over durableObjectStore, forwarding to a counting upstream.
import {
  type DurableObjectNamespaceLike,
  durableObjectStore,
  IdempotencyObject,
} from "../../../adapters/durable-object.ts";
import { idempotency } from "../../../src/server.ts";

export { IdempotencyObject };

/** The bindings: the object's namespace (wrangler.toml's `[[durable_objects.bindings]]`), the upstream, a lease length. */
interface Env {
  IDEMPOTENCY: DurableObjectNamespaceLike;
  UPSTREAM: string;
  LEASE_MS?: string;
}

type Handler = (request: Request, env: Env, ctx: { waitUntil(promise: Promise<unknown>): void }) => Promise<Response>;
let handler: Handler | undefined;

export default {
  fetch: ((request, env, ctx) => {
    // The binding arrives with the first request; one middleware (one store) per isolate.
    handler ??= idempotency(
      async (req: Request) => {
        const url = new URL(req.url);
        // x-upstream picks another upstream path without changing the request's fingerprint (e.g. /hang).
        const path = req.headers.get("x-upstream") ?? url.pathname + url.search;
        return fetch(env.UPSTREAM + path, { method: req.method, body: await req.arrayBuffer() });
      },
      { store: durableObjectStore(env.IDEMPOTENCY), ...(env.LEASE_MS ? { leaseMs: Number(env.LEASE_MS) } : {}) },
    );
    return handler(request, env, ctx);
  }) satisfies Handler,
};
