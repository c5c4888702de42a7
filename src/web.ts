// The Web faces' side of the engine: a Request as a call plan, a Response as an answer, a reply as a Response.
import { declaredLength, readLimited } from "./body.ts";
import type { Answer, Plan, Reply, Tap } from "./call.ts";
import type { Call, CallOptions, Result } from "./engine.ts";
import { KEY_HEADER } from "./key.ts";
import type { RetryEvent } from "./retry.ts";

/**
 * Sends a Request on, as `fetch(request, init)` does (the client's fetch, the interceptor's). `emit` is given
 * only when the engine leads the call: a send that re-sends (src/retry.ts) reports each try through it.
 */
export type WebSend = (request: Request, init?: RequestInit, emit?: (event: RetryEvent) => void) => Promise<Response>;

/**
 * One client call over `request` for the engine: sent with the body the engine read, every caller's abort
 * and the key header; passed through as it came. `bytes`: its body when the face has it already.
 */
export function clientCall(
  request: Request,
  call: CallOptions,
  bytes: Uint8Array | undefined,
  send: WebSend,
): Call<Response> {
  const { plan, passInit } = webPlan(request, bytes, !call.streamedBody);
  return {
    ...call,
    plan,
    send: async (upstream, emit) => {
      // `signal: null`, not none: a copy of a Request otherwise follows that Request's own signal.
      const init: RequestInit = { signal: upstream.signal ?? null };
      if (upstream.body !== null) init.body = upstream.body as BodyInit;
      if (upstream.keyHeader !== undefined) {
        const headers = new Headers(request.headers);
        headers.set(KEY_HEADER, upstream.keyHeader);
        init.headers = headers;
      }
      return webAnswer(await send(request, init, emit));
    },
    pass: () => {
      const init = passInit();
      return init ? send(request, init) : send(request);
    },
  };
}

/**
 * A client call from what the caller passed (an absolute URL, a snapshot of its init, its string body as
 * bytes), whose Request is built only when something needs it: a call whose inputs the engine knows already
 * (a replay, a later burst) is answered without one.
 */
export function lazyClientCall(
  url: string,
  init: RequestInit,
  bytes: Uint8Array | undefined,
  call: CallOptions,
  send: WebSend,
): Call<Response> {
  let built: Call<Response> | undefined;
  const real = (): Call<Response> => {
    built ??= clientCall(new Request(url, init), call, bytes, send);
    return built;
  };
  const plan: Plan = {
    method: (init.method ?? "GET").toUpperCase(),
    get url() {
      return real().plan.url;
    },
    header: (name) => real().plan.header(name),
    get body() {
      return bytes ?? real().plan.body;
    },
    request: (body) => real().plan.request(body),
  };
  return { ...call, plan, send: (upstream, emit) => real().send(upstream, emit), pass: () => real().pass() };
}

/** What the engine gave a Web caller, as its Response. */
export const webResult = (result: Result<Response>, url: string, signal?: AbortSignal | null): Response =>
  "passed" in result ? result.passed : webResponse(result, url, signal ?? undefined);

/** A call plan over a Web Request, and how to send that Request on untouched after the engine read some of it. */
export interface WebPlan {
  plan: Plan;
  /** What `fetch(request, init)` needs to send the request on as it came: the body the engine took, if any. */
  passInit(): RequestInit | undefined;
}

/**
 * The plan of `request`. `bytes`: its body when the face has it already (a string body). `whole`: read a
 * body whole whatever its size (a client's body is in memory already).
 */
export function webPlan(request: Request, bytes: Uint8Array | undefined, whole: boolean): WebPlan {
  let init: RequestInit | undefined;
  const headers = request.headers;
  const length = bytes ? bytes.length : declaredLength(headers);
  // A declared length spares `request.body`: on some servers (@hono/node-server) that getter turns a
  // lightweight request into a full one with a web stream over the socket, which costs more than the rest.
  const bodyless = length === null ? request.body === null : length === 0;
  const unread = {
    length,
    async read(limit: number, onlyObjects: boolean): Promise<Uint8Array | null> {
      if (!onlyObjects && (whole || (length !== null && length <= limit))) {
        const read = new Uint8Array(await request.arrayBuffer());
        init = { body: read as BodyInit };
        return read;
      }
      const read = await readLimited(request.body as ReadableStream<Uint8Array>, limit, onlyObjects);
      if ("rest" in read) {
        init = { body: read.rest, duplex: "half" } as RequestInit;
        return null;
      }
      init = { body: read.bytes as BodyInit };
      return read.bytes;
    },
  };
  const plan: Plan = {
    method: request.method.toUpperCase(),
    url: request.url,
    header: (name) => headers.get(name),
    body: bytes ?? (bodyless ? null : unread),
    request: (body) => new Request(request.url, { method: request.method, headers, body: body as BodyInit | null }),
  };
  return { plan, passInit: () => init };
}

/** What a Web handler or fetch answered, as an answer; throws a TypeError when it is not a usable Response. */
export function webAnswer(response: unknown): Answer {
  if (!(response instanceof Response) || response.bodyUsed) {
    const what = response instanceof Response ? "a Response whose body was already used" : describe(response);
    throw new TypeError(`idemfetch: the upstream answered ${what}, not a Response`);
  }
  // Opaque responses (status 0) cannot be copied into a new Response: handed out as they are, stored never.
  if (response.status < 200 || response.status > 599)
    return { status: response.status, statusText: "", headers: [], body: null, native: response };
  const headers: [string, string][] = [];
  response.headers.forEach((value, name) => {
    headers.push([name, value]);
  });
  const answer: Answer = {
    status: response.status,
    statusText: response.statusText,
    headers,
    body: response.body === null ? null : response.body.getReader(),
  };
  if (response.url) answer.url = response.url;
  return answer;
}

/** A reply as a Response of its caller's own; `signal` aborting errors only this caller's body. */
export function webResponse(reply: Reply, url: string, signal?: AbortSignal): Response {
  if ("native" in reply) {
    const native = reply.native as Response;
    return reply.first ? native : native.clone();
  }
  const { body } = reply;
  // Bytes need no copy: a Response copies the BufferSource it is given, so every caller owns its own.
  const content = body === null || body instanceof Uint8Array ? (body as BodyInit | null) : tapStream(body, signal);
  const response = new Response(content, {
    status: reply.status,
    statusText: reply.statusText,
    headers: reply.headers,
  });
  // Set, never read: on @hono/node-server reading `url` of a Response builds a full one.
  const final = reply.url || url;
  if (final) Object.defineProperty(response, "url", { value: final });
  return response;
}

/** A live body as a Web stream, one copy per chunk (Buffer#slice is a view: no caller may change another's bytes). */
function tapStream(tap: Tap, signal: AbortSignal | undefined): ReadableStream<Uint8Array> {
  let stopListening = (): void => {};
  return new ReadableStream<Uint8Array>(
    {
      start: (controller) => {
        if (!signal) return;
        const aborted = (): void => {
          tap.abandon();
          controller.error(signal.reason);
        };
        if (signal.aborted) return aborted();
        signal.addEventListener("abort", aborted, { once: true });
        stopListening = () => signal.removeEventListener("abort", aborted);
      },
      pull: async (controller) => {
        try {
          const chunk = await tap.pull();
          if (chunk === null) {
            stopListening();
            controller.close();
          } else {
            controller.enqueue(new Uint8Array(chunk));
          }
        } catch (error) {
          stopListening();
          controller.error(error);
        }
      },
      cancel: () => {
        stopListening();
        tap.cancel();
      },
    },
    { highWaterMark: 0 },
  );
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  return `an object (${Object.prototype.toString.call(value)})`;
}
