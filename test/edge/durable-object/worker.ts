// The Worker the Durable Object tests run in workerd: IdempotencyObject exported, idempotency() over durableObjectStore, forwarding to a counting upstream.
import {
  type DurableObjectNamespaceLike,
  durableObjectStore,
  IdempotencyObject,
} from "../../../adapters/durable-object.ts";
import { idempotency } from "../../../src/server.ts";

export { IdempotencyObject };

/** The storage calls the inspection uses beyond the object's own. */
interface Inspectable {
  list(): Promise<Map<string, unknown>>;
  getAlarm(): Promise<number | null>;
  put(key: string, value: unknown): Promise<void>;
  sync(): Promise<void>;
}

/**
 * IdempotencyObject plus GET /keys (what its storage holds and when its alarm is due, for the expiry tests)
 * and POST /raw (puts the body text as the stored entry, then resets the object so it loads it: the
 * conformance suite's corruption tests).
 */
export class InspectableObject extends IdempotencyObject {
  readonly #storage: Inspectable;
  readonly #abort: (reason: string) => void;

  constructor(state: ConstructorParameters<typeof IdempotencyObject>[0], env?: unknown) {
    super(state, env);
    this.#storage = state.storage as unknown as Inspectable;
    this.#abort = (reason) => (state as unknown as { abort(reason: string): void }).abort(reason);
  }

  override async fetch(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    if (path === "/raw") {
      const text = await request.text();
      // x-json: the parsed value (null, a number, an object) rather than the text.
      await this.#storage.put("entry", request.headers.has("x-json") ? JSON.parse(text) : text);
      await this.#storage.sync(); // on disk before the reset, which drops what is not
      this.#abort("reload the raw entry"); // the next request meets a fresh instance, which loads it
    }
    if (path !== "/keys") return super.fetch(request);
    return Response.json({ keys: [...(await this.#storage.list()).keys()], alarm: await this.#storage.getAlarm() });
  }
}

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
