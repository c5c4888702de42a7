// install(): global interception on @mswjs/interceptors; the runtime entry points (install-*.ts) pick the interceptors.
import { createEngine, type ForgetOptions, type Stats } from "./engine.ts";
import { clientFace, headerIn, isStream, mayCarryKey } from "./fetch.ts";
import { BODY_KEY_FIELD, KEY_HEADER } from "./key.ts";
import { type IdempotencyOptions, KNOWN, normalizeOptions } from "./options.ts";
import { retrying } from "./retry.ts";
import { type ForgetResult, type IdempotencyStore, newToken } from "./store.ts";
import { strictOptions } from "./strict.ts";
import { clientCall, webResult } from "./web.ts";

/** The options of `createIdempotentFetch` except `fetch`: an install sends upstream with the runtime's own fetch. */
export type InstallOptions = Omit<IdempotencyOptions, "fetch">;

export interface Uninstall {
  /** Removes this install; the patched globals are restored when no install is left. Calling it again does nothing. */
  (): void;
  /** What this install has seen and saved. */
  stats(): Stats;
  /** Removes a stored key so the next request with it runs again; a live lease is refused unless `force`. */
  forget(key: string, options?: ForgetOptions): Promise<ForgetResult>;
  /** Resolves once every store write started so far has settled: await it before a short-lived process exits. */
  close(): Promise<void>;
}

/** What idemfetch uses of an @mswjs/interceptors request controller (structural: browser and Node builds declare their own). */
export interface Controller {
  /** 0 while nobody has answered the request. */
  readonly readyState: number;
  respondWith(response: Response): void;
  errorWith(reason?: Error): void;
}

/** What idemfetch uses of an @mswjs/interceptors interceptor. */
export interface RequestInterceptor {
  apply(): void;
  dispose(): void;
  on(
    type: "request",
    listener: (event: { request: Request; controller: Controller }) => Promise<void> | undefined,
  ): unknown;
}

/** How one runtime intercepts. */
export interface Runtime {
  /** Fresh interceptors for this runtime's HTTP clients. */
  interceptors(): RequestInterceptor[];
  /**
   * Interception sits below fetch (Node's sockets), so even the real fetch is intercepted: requests
   * idemfetch sends itself carry PASS_HEADER, which the interceptor removes before they leave.
   */
  belowFetch: boolean;
  /** An async context (AsyncLocalStorage) that follows a store call into the fetch calls it makes. */
  storeScope?: { run<T>(fn: () => T): T; active(): boolean };
}

/** Marks idemfetch's own requests where interception sits below fetch; never reaches the network. */
export const PASS_HEADER = "x-idemfetch-pass";

/** One registry per realm, shared by every copy of the library: the globals are patched once. */
const REGISTRY = Symbol.for("idemfetch.install");
const VERSION = 1;

interface Installation {
  /** Before a Request exists: could this fetch call carry a key? */
  wants(input: Request | string | URL, init: RequestInit | undefined): boolean;
  /** True inside a call of this install's store: its traffic is never intercepted. */
  inStore(): boolean;
  handle(request: Request, controller: Controller): Promise<void>;
}

interface Registry {
  version: number;
  /** Most recent last; the last one handles requests. */
  stack: Installation[];
  /** Sends to the network past every interceptor. */
  send(request: Request, init?: RequestInit): Promise<Response>;
  restore(): void;
}

type Fetch = typeof fetch;

// Headers of one hop: a request parsed off a socket carries them, and fetch refuses some of them.
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"];

/** Returns `install` for a runtime. */
export function createInstall(runtime: Runtime): (options?: InstallOptions) => Uninstall {
  return function install(options: InstallOptions = {}): Uninstall {
    strictOptions(options, KNOWN.client, "install()");
    if (typeof options === "object" && options !== null && (options as IdempotencyOptions).fetch !== undefined) {
      throw new TypeError(
        "idemfetch: install() sends upstream with the runtime's own fetch; the fetch option is not used",
      );
    }
    const normalized = normalizeOptions(options, "client");
    const scope = runtime.storeScope;
    const o = scope ? { ...normalized, store: scoped(normalized.store, scope.run) } : normalized;
    const engine = createEngine(o, clientFace(o));
    const autoMethods = o.autoKey === false ? null : o.autoKey.methods;
    const registry = registryFor(runtime);
    const send = retrying(registry.send, o.retry);

    const installation: Installation = {
      wants(input, init) {
        // A streamed body never gets an auto key (docs/protocol.md), so only a key header makes it ours.
        if (isStream(init?.body)) {
          return init?.headers !== undefined
            ? headerIn(init.headers)
            : input instanceof Request && input.headers.has(KEY_HEADER);
        }
        return mayCarryKey(input, init, autoMethods);
      },
      inStore: () => scope?.active() ?? false,
      async handle(request, controller) {
        let upstream: Request;
        try {
          if (!mayCarryKey(request, undefined, autoMethods)) return;
          const keyed = request.headers.has(KEY_HEADER) || autoMethods?.has(request.method.toUpperCase());
          if (!keyed && !(await bodyMayHoldKey(request, o.maxBodyBytes))) return;
          upstream = withoutHopHeaders(request);
        } catch {
          return; // a request we cannot look into is sent untouched
        }
        let response: Response;
        try {
          const call = clientCall(upstream, { signal: upstream.signal }, undefined, send);
          response = webResult(await engine.handle(call), upstream.url, upstream.signal);
        } catch (error) {
          answer(controller, () => controller.errorWith(error instanceof Error ? error : new Error(String(error))));
          return;
        }
        answer(controller, () => controller.respondWith(forCaller(response)));
      },
    };
    registry.stack.push(installation);

    let removed = false;
    const uninstall = (): void => {
      if (removed) return;
      removed = true;
      const at = registry.stack.indexOf(installation);
      if (at >= 0) registry.stack.splice(at, 1);
      if (registry.stack.length === 0) registry.restore();
    };
    return Object.assign(uninstall, { stats: engine.stats, forget: engine.forget, close: engine.close });
  };
}

function registryFor(runtime: Runtime): Registry {
  const holder = globalThis as { [REGISTRY]?: Registry };
  const existing = holder[REGISTRY];
  if (existing) {
    if (existing.version !== VERSION) {
      throw new Error(
        `idemfetch: another idemfetch (install v${existing.version}) already intercepts; uninstall it first`,
      );
    }
    return existing;
  }
  const registry = patch(runtime, () => delete holder[REGISTRY]);
  holder[REGISTRY] = registry;
  return registry;
}

/** Applies the interceptors and puts a thin fetch in front of them; undone by `restore()`. */
function patch(runtime: Runtime, forget: () => void): Registry {
  ensureWithResolvers();
  const token = newToken();
  const saved = Object.getOwnPropertyDescriptor(globalThis, "fetch");
  const original = globalThis.fetch;
  const real: Fetch = (input, init) => original.call(globalThis, input, init);
  // Below fetch, the real fetch is intercepted too: our own requests carry the mark the listener removes.
  const own: Fetch = runtime.belowFetch
    ? (input, init) => {
        if (input instanceof Request) {
          const request = new Request(input, init);
          request.headers.set(PASS_HEADER, token);
          // fetch sets the length of the body it sends; a copied one (Node 24 may see it twice, "n, n") is refused.
          request.headers.delete("content-length");
          return real(request);
        }
        // Only the headers change: the rest of init (a dispatcher, keepalive) goes to fetch as given.
        const headers = new Headers(init?.headers);
        headers.set(PASS_HEADER, token);
        headers.delete("content-length");
        return real(input, { ...init, headers });
      }
    : real;

  const stack: Installation[] = [];
  const interceptors = runtime.interceptors();
  const applied: typeof interceptors = [];
  try {
    for (const interceptor of interceptors) {
      interceptor.apply();
      applied.push(interceptor);
      interceptor.on("request", ({ request, controller }) => {
        if (request.headers.get(PASS_HEADER) === token) {
          request.headers.delete(PASS_HEADER);
          return;
        }
        // Best effort for a store's non-fetch traffic: below fetch the context of a socket write may be another's.
        if (stack.some((installation) => installation.inStore())) return;
        return stack.at(-1)?.handle(request, controller);
      });
    }
  } catch (error) {
    for (const interceptor of applied) interceptor.dispose();
    throw new Error(`idemfetch: install() could not intercept: ${(error as Error).message}`, { cause: error });
  }

  // What the interceptors left in place of fetch (on the web, their patch; in Node, fetch itself).
  const inner = globalThis.fetch;
  const front = function fetch(input: Request | string | URL, init?: RequestInit): Promise<Response> {
    const top = stack.at(-1);
    if (top === undefined) return real(input, init);
    if (stack.some((installation) => installation.inStore())) return own(input, init);
    // The fast path: a call that cannot carry a key never builds a Request nor meets the interceptor.
    return top.wants(input, init) ? inner.call(globalThis, input, init) : real(input, init);
  };
  Object.defineProperty(globalThis, "fetch", {
    value: front,
    writable: true,
    configurable: true,
    enumerable: saved?.enumerable ?? true,
  });

  return {
    version: VERSION,
    stack,
    send: (request, init) => own(request, init),
    restore() {
      for (const interceptor of applied) interceptor.dispose();
      if (saved) Object.defineProperty(globalThis, "fetch", saved);
      else Reflect.deleteProperty(globalThis, "fetch");
      forget();
    },
  };
}

/** A store whose every call runs in `run`'s async context, so the fetch calls it makes are known as its own. */
function scoped(store: IdempotencyStore, run: <T>(fn: () => T) => T): IdempotencyStore {
  const wrapped: IdempotencyStore = {
    acquire: (...args) => run(() => store.acquire(...args)),
    commit: (...args) => run(() => store.commit(...args)),
    release: (...args) => run(() => store.release(...args)),
    renew: (...args) => run(() => store.renew(...args)),
    forget: (...args) => run(() => store.forget(...args)),
  };
  const { subscribe, close } = store;
  if (subscribe) wrapped.subscribe = (...args) => run(() => subscribe.apply(store, args));
  if (close) wrapped.close = () => close.call(store);
  return wrapped;
}

/** Reads a copy of the body, up to `limit` bytes: can it hold a top-level `idempotency_key`? */
async function bodyMayHoldKey(request: Request, limit: number): Promise<boolean> {
  if (request.body === null) return false;
  const reader = (request.clone().body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = "";
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return text.includes(BODY_KEY_FIELD);
      size += value.length;
      // Past the limit the engine would not look for a body key either.
      if (size > limit) return false;
      const start = text.trimStart() === "";
      text += decoder.decode(value, { stream: true });
      // Only a JSON object can hold the field: an upload of anything else is let go after its first bytes.
      if (start && text.trimStart() !== "" && !text.trimStart().startsWith("{")) return false;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function withoutHopHeaders(request: Request): Request {
  if (!HOP_BY_HOP.some((name) => request.headers.has(name))) return request;
  const headers = new Headers(request.headers);
  for (const name of HOP_BY_HOP) headers.delete(name);
  return new Request(request, { headers });
}

/**
 * The caller's copy, rebuilt: the interceptor sets its url (the engine's own url property would make
 * that throw), and its body is already decoded, so the encoding headers go (an interceptor that
 * decodes again would corrupt it). Opaque responses cannot be rebuilt and go as they are.
 */
function forCaller(response: Response): Response {
  if (response.status === 0) return response;
  const headers = new Headers(response.headers);
  if (headers.has("content-encoding")) {
    headers.delete("content-encoding");
    headers.delete("content-length");
  }
  headers.delete("transfer-encoding");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

/** Answers once: the interceptor may have settled the request already (an abort), and a second answer throws. */
function answer(controller: Controller, settle: () => void): void {
  if (controller.readyState !== 0) return;
  try {
    settle();
  } catch {
    // Settled in between; the caller has its answer.
  }
}

/** @mswjs/interceptors 0.45 calls Promise.withResolvers on every request; Node 20 lacks it. */
function ensureWithResolvers(): void {
  if (typeof (Promise as { withResolvers?: unknown }).withResolvers === "function") return;
  Object.defineProperty(Promise, "withResolvers", {
    configurable: true,
    writable: true,
    value: function withResolvers<T>(this: PromiseConstructor) {
      let resolve!: (value: T | PromiseLike<T>) => void;
      let reject!: (reason?: unknown) => void;
      const promise = new this<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}
