// The `retry` option: its policy (validated once) and the one loop that re-sends a led call with the same key.

import { concat } from "./body.ts";
import { parseJsonBody } from "./fingerprint.ts";
import { KEY_HEADER, keyFromJson } from "./key.ts";
import type { WebSend } from "./web.ts";

/** How a keyed call is re-sent after a transient failure. A number is `{ limit }`. */
export interface RetryOptions {
  /** Re-sends after the first try. Default 2 (with a number, that number); 0 turns retries off. */
  limit?: number;
  /**
   * Methods that may be re-sent. Default POST, PUT, PATCH, DELETE, GET, HEAD, OPTIONS. A POST or PATCH is
   * re-sent only when its key reaches the upstream (the header or the body field), whatever this list says.
   */
  methods?: string[];
  /** Statuses that are re-sent. Default 408, 429 and every 5xx. 409 is never listed: see docs/protocol.md "Client retries". */
  statuses?: number[];
  /** The pause before re-send `retry` (1 for the first), in ms, when the answer has no `Retry-After`. Default: exponential with jitter. */
  backoff?: (retry: number) => number;
  /** The longest pause, in ms, also for `Retry-After`. Default 30 000. */
  maxDelayMs?: number;
}

/** A validated policy: every field set. */
export interface RetryPolicy {
  limit: number;
  methods: ReadonlySet<string>;
  statuses: ReadonlySet<number>;
  backoff: (retry: number) => number;
  maxDelayMs: number;
}

/** What the engine is told of each re-send (it adds what every event carries). */
export interface RetryEvent {
  type: "retry";
  /** The try about to be sent: 2 for the first re-send. */
  attempt: number;
  /** Why: "network error: <message>", "status 503", or "409 IDEMPOTENCY_IN_PROGRESS". */
  reason: string;
  /** The pause before this try, in ms. */
  delayMs: number;
  /** The status of the failed try; absent after a network error. */
  status?: number;
}

type Send = WebSend;

const DEFAULT_LIMIT = 2;
const DEFAULT_METHODS = ["POST", "PUT", "PATCH", "DELETE", "GET", "HEAD", "OPTIONS"];
const DEFAULT_STATUSES = [408, 429, ...Array.from({ length: 100 }, (_, i) => 500 + i)];
const DEFAULT_MAX_DELAY_MS = 30_000;
const FIRST_DELAY_MS = 300;
/** `setTimeout`'s longest delay, in ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Without a key, a re-sent POST or PATCH may run twice upstream (RFC 9110 9.2.2: the others are idempotent). */
const NEEDS_KEY = new Set(["POST", "PATCH"]);
/** The code the library's own 409 carries while the key is still running (errors.ts), in either error format. */
const IN_PROGRESS = "IDEMPOTENCY_IN_PROGRESS";
/** The most of a 409 body read to find its code: the library's own error bodies are far smaller. */
const MAX_409_BYTES = 16 * 1024;

/** Exponential from 300 ms, doubling, with equal jitter: half fixed, half random, so clients spread out. */
const defaultBackoff = (retry: number): number => {
  const base = FIRST_DELAY_MS * 2 ** (retry - 1);
  return base / 2 + (Math.random() * base) / 2;
};

const fail = (name: string, expected: string, got: unknown): never => {
  throw new TypeError(`idemfetch: option "${name}" must be ${expected}, got ${JSON.stringify(got) ?? String(got)}`);
};

/**
 * Validates a `retry` option (a number, an object, `false` or undefined); throws `TypeError` on nonsense.
 * Fields not given come from `base` (the constructor's policy, for a per-call override), else the defaults.
 * Undefined means off.
 */
export function normalizeRetry(value: unknown, name = "retry", base?: RetryPolicy): RetryPolicy | undefined {
  if (value === undefined) return base;
  if (value === false) return undefined;
  const given: RetryOptions = typeof value === "number" ? { limit: value } : (value as RetryOptions);
  if (typeof given !== "object" || given === null || Array.isArray(given)) {
    return fail(name, "a number, an object or false", value);
  }
  const limit = given.limit ?? base?.limit ?? DEFAULT_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 0) fail(`${name}.limit`, "a non-negative integer", limit);
  if (limit === 0) return undefined;

  let methods = base?.methods ?? new Set(DEFAULT_METHODS);
  if (given.methods !== undefined) {
    const list: unknown = given.methods;
    if (!Array.isArray(list) || list.some((m) => typeof m !== "string" || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(m))) {
      return fail(`${name}.methods`, "an array of method names", list);
    }
    methods = new Set((list as string[]).map((m) => m.toUpperCase()));
  }
  let statuses = base?.statuses ?? new Set(DEFAULT_STATUSES);
  if (given.statuses !== undefined) {
    const list: unknown = given.statuses;
    // A 409 is re-sent only when it says IDEMPOTENCY_IN_PROGRESS: listing it would re-send conflicts.
    if (!Array.isArray(list) || list.some((s) => !Number.isInteger(s) || s < 400 || s > 599 || s === 409)) {
      return fail(`${name}.statuses`, "an array of 4xx and 5xx statuses other than 409", list);
    }
    statuses = new Set(list as number[]);
  }
  const backoff = given.backoff ?? base?.backoff ?? defaultBackoff;
  if (typeof backoff !== "function") fail(`${name}.backoff`, "a function", backoff);
  const maxDelayMs = given.maxDelayMs ?? base?.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
  if (typeof maxDelayMs !== "number" || !(maxDelayMs >= 0) || maxDelayMs > MAX_TIMER_MS) {
    fail(`${name}.maxDelayMs`, `a number of ms from 0 to ${MAX_TIMER_MS}`, maxDelayMs);
  }
  return { limit, methods, statuses, backoff, maxDelayMs };
}

/**
 * `send` that re-sends under `policy`. Only a call the engine leads is re-sent (it passes `emit`; a
 * pass-through does not): it holds the lease, whose heartbeat runs on through the pauses, so local joiners
 * and waiters elsewhere share this one loop, and only the last try's answer is stored and delivered.
 */
export function retrying(send: Send, policy: RetryPolicy | undefined): Send {
  if (policy === undefined) return send;
  return (request, init, emit) => (emit === undefined ? send(request, init) : loop(send, policy, request, init, emit));
}

async function loop(
  send: Send,
  policy: RetryPolicy,
  request: Request,
  init: RequestInit | undefined,
  emit: (event: RetryEvent) => void,
): Promise<Response> {
  const signal = init?.signal ?? undefined;
  let eligible: boolean | undefined;
  for (let attempt = 1; ; attempt++) {
    let response: Response | undefined;
    let failure: { error: unknown } | undefined;
    try {
      response = await send(request, init);
    } catch (error) {
      failure = { error };
    }
    const reason = attempt > policy.limit ? undefined : await why(policy, response, failure, signal);
    // Asked only after a failure: it may parse the body.
    eligible ??= reason !== undefined && mayResend(policy, request, init);
    if (reason === undefined || !eligible) {
      if (failure) throw failure.error;
      return response as Response;
    }
    const delayMs = pause(policy, attempt, response);
    emit(
      response
        ? { type: "retry", attempt: attempt + 1, reason, delayMs, status: response.status }
        : { type: "retry", attempt: attempt + 1, reason, delayMs },
    );
    // A failed try's body is never read by anyone: free its connection.
    response?.body?.cancel().catch(() => {});
    await sleep(delayMs, signal);
  }
}

/** Why this try should be sent again, or undefined when its answer is final. */
async function why(
  policy: RetryPolicy,
  response: Response | undefined,
  failure: { error: unknown } | undefined,
  signal: AbortSignal | undefined,
): Promise<string | undefined> {
  // An aborted call is final: every caller gave up.
  if (signal?.aborted) return undefined;
  if (failure) {
    // fetch reports a network failure as a TypeError in every runtime; anything else is the upstream's own verdict.
    const error = failure.error as { name?: unknown; message?: unknown } | null;
    return error instanceof TypeError || error?.name === "TypeError"
      ? `network error: ${String(error?.message)}`
      : undefined;
  }
  const status = (response as Response).status;
  if (status === 409) return (await codeOf(response as Response)) === IN_PROGRESS ? `409 ${IN_PROGRESS}` : undefined;
  return policy.statuses.has(status) ? `status ${status}` : undefined;
}

/** The method is allowed, and a POST or PATCH carries its key upstream (else the upstream cannot tell a re-send). */
function mayResend(policy: RetryPolicy, request: Request, init: RequestInit | undefined): boolean {
  const method = request.method.toUpperCase();
  if (!policy.methods.has(method)) return false;
  if (!NEEDS_KEY.has(method)) return true;
  const headers = init?.headers !== undefined ? new Headers(init.headers) : request.headers;
  if (headers.has(KEY_HEADER)) return true;
  const body = init?.body;
  try {
    return body instanceof Uint8Array && keyFromJson(parseJsonBody(body)) !== undefined;
  } catch {
    return false;
  }
}

/** The code of a JSON error body (`error.code` in the ReliAPI shape, `code` in RFC 9457), from a copy, bounded. */
async function codeOf(response: Response): Promise<string | undefined> {
  if (!/json/i.test(response.headers.get("content-type") ?? "") || response.body === null) return undefined;
  const reader = (response.clone().body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > MAX_409_BYTES) return undefined;
      chunks.push(value);
    }
    const parsed = JSON.parse(new TextDecoder().decode(concat(chunks, size))) as {
      code?: unknown;
      error?: { code?: unknown };
    };
    const code = parsed?.error?.code ?? parsed?.code;
    return typeof code === "string" ? code : undefined;
  } catch {
    return undefined;
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** `Retry-After` (seconds or an HTTP date) when the answer has it, else the backoff; at most `maxDelayMs`. */
function pause(policy: RetryPolicy, attempt: number, response: Response | undefined): number {
  const after = retryAfterMs(response?.headers.get("retry-after") ?? null);
  const wanted = after ?? Number(policy.backoff(attempt));
  return Math.min(policy.maxDelayMs, Number.isFinite(wanted) && wanted > 0 ? wanted : 0);
}

/** A `Retry-After` value in ms (RFC 9110 10.2.3), or undefined when absent or unreadable. */
export function retryAfterMs(value: string | null): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Waits `ms`; the flight's signal (every caller aborted) ends the wait with its reason. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
