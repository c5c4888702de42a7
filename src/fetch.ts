// createIdempotentFetch: the fetch-shaped face over the engine.
import { type CallOptions, createEngine, type Face, type ForgetOptions, type Stats } from "./engine.ts";
import { KEY_HEADER, validateKey } from "./key.ts";
import { callTtlMs, type IdempotencyOptions, KNOWN, type NormalizedOptions, normalizeOptions } from "./options.ts";
import { DECODED_BODY_HEADERS } from "./record.ts";
import { normalizeRetry, type RetryOptions, retrying } from "./retry.ts";
import type { ForgetResult } from "./store.ts";
import { strictOptions } from "./strict.ts";
import { clientCall, lazyClientCall, type WebSend, webResult } from "./web.ts";

/** Per-call settings, passed as `init.idempotency`; `false` sends the call untouched. */
export interface IdempotencyCallOptions {
  /** An explicit key (wins over the header and the body field). */
  key?: string;
  /** TTL of this call's record, in seconds. */
  ttlSeconds?: number;
  /**
   * Gets the promise of this call's store writes (Workers: `(p) => ctx.waitUntil(p)`). workerd cancels a
   * request's work when its client hangs up, and a duplicate joined in another request of the isolate as hung.
   */
  waitUntil?: (promise: Promise<unknown>) => void;
  /** This call's retries, over the constructor's `retry` (a number sets the limit; `false` turns them off). */
  retry?: number | RetryOptions | false;
}

export type IdempotentRequestInit = RequestInit & { idempotency?: IdempotencyCallOptions | false };

/** A function with fetch's signature, plus the counters of what it saved. */
export interface IdempotentFetch {
  (input: Request | string | URL, init?: IdempotentRequestInit): Promise<Response>;
  stats(): Stats;
  /** Removes a stored key so the next call with it runs again; a live lease is refused unless `force`. */
  forget(key: string, options?: ForgetOptions): Promise<ForgetResult>;
  /** Resolves once every store write started so far has settled: await it before a short-lived process exits. */
  close(): Promise<void>;
}

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);
const encoder = new TextEncoder();

/** The client's policy: auto keys, the whole URL fingerprinted, decoded bodies, the key header same-origin. */
export function clientFace(o: NormalizedOptions): Face {
  return {
    autoKey: o.autoKey,
    target: (url) => url,
    sendKeyHeader: (url) =>
      o.sendKeyHeader === "always" ||
      (o.sendKeyHeader === "same-origin" &&
        // A new header on a cross-origin request triggers a CORS preflight the server may refuse.
        (typeof location === "undefined" || !location.origin || location.origin === new URL(url).origin)),
    dropHeaders: DECODED_BODY_HEADERS,
    keylessBodies: "in-memory",
  };
}

/** Returns fetch made idempotent: keyed duplicates coalesce, replay, or answer 409 on conflict. */
export function createIdempotentFetch(options: IdempotencyOptions = {}): IdempotentFetch {
  strictOptions(options, KNOWN.client, "createIdempotentFetch()");
  const o = normalizeOptions(options, "client");
  const engine = createEngine(o, clientFace(o));
  // The runtime's fetch takes (request, init) as they are; a fetch of the user's gets one fresh Request it
  // can clone and read (a signing fetch does), not one whose body the engine already read.
  const direct: WebSend =
    options.fetch === undefined
      ? (request, init) => o.getFetch()(request, init)
      : (request, init) => o.getFetch()(init ? new Request(request, init) : request);
  const send = retrying(direct, o.retry);
  const handle = (request: Request, call: CallOptions, sendThis: WebSend, bytes?: Uint8Array): Promise<Response> =>
    engine
      .handle(clientCall(request, call, bytes, sendThis))
      .then((result) => webResult(result, request.url, call.signal));

  const idempotentFetch = (input: Request | string | URL, init?: IdempotentRequestInit): Promise<Response> => {
    const perCall = init?.idempotency;
    if (perCall === false) return o.getFetch()(input, stripOwn(init));
    try {
      // Nonsense is refused even on a call that turns out unkeyed, so it cannot hide until one is.
      strictOptions(perCall, KNOWN.call, "init.idempotency");
      if (perCall?.key !== undefined) validateKey(perCall.key, "idempotency.key");
      callTtlMs(perCall?.ttlSeconds, "idempotency.ttlSeconds");
      if (perCall?.waitUntil !== undefined && typeof perCall.waitUntil !== "function") {
        throw new TypeError(`idemfetch: "idempotency.waitUntil" must be a function, got ${typeof perCall.waitUntil}`);
      }
      const sendThis =
        perCall?.retry === undefined
          ? send
          : retrying(direct, normalizeRetry(perCall.retry, "idempotency.retry", o.retry));
      // The cheap exit: a call that cannot carry a key skips the engine and the Request copy.
      if (perCall?.key === undefined && !mayCarryKey(input, init, o.autoKey === false ? null : o.autoKey.methods)) {
        return o.getFetch()(input, stripOwn(init));
      }
      const isRequest = typeof Request !== "undefined" && input instanceof Request;
      const own = stripOwn(init);
      const same = sameAs(input, own, perCall?.key);
      const call: CallOptions = {
        streamedBody: isStream(init?.body),
        // Only a caller with a signal can abort (a Request input carries one).
        signal: init?.signal ?? (isRequest ? input.signal : undefined),
      };
      if (perCall?.key !== undefined) call.key = perCall.key;
      if (perCall?.ttlSeconds !== undefined) call.ttlSeconds = perCall.ttlSeconds;
      if (perCall?.waitUntil !== undefined) call.waitUntil = perCall.waitUntil;
      if (!same) return handle(new Request(input, own), call, sendThis);
      call.sameAs = same.id;
      // Taken now: `handle` may run after the caller changed its init or URL object, and must see what `id` saw.
      const snapshot: RequestInit = { ...own, headers: same.headers };
      const bytes = typeof snapshot.body === "string" ? encoder.encode(snapshot.body) : undefined;
      // An identical call in flight is joined before building a Request, reading a body or hashing.
      return engine
        .join<Response>(same.id, call, () => {
          try {
            return engine.handle(lazyClientCall(same.url, snapshot, bytes, call, sendThis));
          } catch (error) {
            return Promise.reject(error);
          }
        })
        .then((result) => webResult(result, same.url, call.signal));
    } catch (error) {
      return Promise.reject(error);
    }
  };
  return Object.assign(idempotentFetch, { stats: engine.stats, forget: engine.forget, close: engine.close });
}

/**
 * What makes two calls one request to the engine (key, scope, fingerprint), when it is cheap and exact to
 * tell: an absolute URL, string headers and a string body or none. `headers` is the snapshot the id was made
 * from, and the Request must be built from it (a getter could answer differently twice).
 */
function sameAs(
  input: RequestInfo | URL,
  init: RequestInit | undefined,
  key: string | undefined,
): { id: string; url: string; headers: [string, string][] } | undefined {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : undefined;
  if (url === undefined || !/^https?:\/\//i.test(url) || init === undefined) return undefined;
  const body = init.body ?? null;
  if (body !== null && typeof body !== "string") return undefined;
  const given = init.headers ?? [];
  const headers: [string, string][] = [];
  const entries: Iterable<unknown> =
    given instanceof Headers ? given : Array.isArray(given) ? given : Object.entries(given);
  for (const pair of entries) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string") {
      return undefined;
    }
    headers.push([pair[0], pair[1]]);
  }
  return { id: JSON.stringify([init.method ?? "GET", url, headers, body, key ?? null]), url, headers };
}

function stripOwn(init: IdempotentRequestInit | undefined): RequestInit | undefined {
  if (init === undefined || !("idempotency" in init)) return init;
  const { idempotency: _own, ...rest } = init;
  return rest;
}

/** False only when the call has no key header, no body that could hold `idempotency_key`, and no auto key. */
export function mayCarryKey(
  input: Request | string | URL,
  init: RequestInit | undefined,
  autoMethods: ReadonlySet<string> | null,
): boolean {
  const isRequest = typeof Request !== "undefined" && input instanceof Request;
  if (init?.headers !== undefined) {
    if (headerIn(init.headers)) return true;
  } else if (isRequest && input.headers.has(KEY_HEADER)) {
    return true;
  }
  const method = (init?.method ?? (isRequest ? input.method : "GET")).toUpperCase();
  if (SAFE.has(method)) return false;
  if (autoMethods?.has(method)) return true;
  const body = init?.body;
  if (body === undefined || body === null) return isRequest && input.body !== null;
  return typeof body === "string" ? body.includes("idempotency_key") : !(body instanceof URLSearchParams);
}

export function headerIn(headers: NonNullable<RequestInit["headers"]>): boolean {
  if (headers instanceof Headers) return headers.has(KEY_HEADER);
  if (Array.isArray(headers)) return headers.some(([name]) => name?.toLowerCase() === KEY_HEADER);
  for (const name in headers) if (name.toLowerCase() === KEY_HEADER) return true;
  return false;
}

export function isStream(body: unknown): boolean {
  return typeof ReadableStream !== "undefined" && body instanceof ReadableStream;
}
