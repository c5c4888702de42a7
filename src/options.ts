// Options: the one defaults table, and normalizeOptions() which validates once, at construction.

import type { ErrorFormat } from "./errors.ts";
import type { IdempotencyEvent } from "./events.ts";
import type { IdempotencyCallOptions } from "./fetch.ts";
import { memoryStore } from "./memory-store.ts";
import { normalizeRetry, type RetryOptions, type RetryPolicy } from "./retry.ts";
import type { ServerCallOptions, ServerIdempotencyOptions } from "./server.ts";
import type { IdempotencyStore } from "./store.ts";
import { BREAKER_DEFAULTS, type CircuitBreakerOptions, guardStore, type Logger } from "./store-guard.ts";
import { type OptionNames, strictOptions } from "./strict.ts";

export type { IdempotencyEvent } from "./events.ts";
export type { RetryOptions } from "./retry.ts";

export interface AutoKeyOptions {
  /** Methods that get an auto key. Default POST, PUT, PATCH, DELETE. */
  methods?: string[];
  /** How long a completed auto-keyed call is replayed, in ms. Default 2000. */
  windowMs?: number;
}

export interface IdempotencyOptions {
  /** Where leases and records live. Default: a `memoryStore()` per wrapper. */
  store?: IdempotencyStore;
  /** The fetch to call upstream. Default: `globalThis.fetch`, looked up at call time. */
  fetch?: typeof fetch;
  /** How long a response is replayed, in seconds. Default 3600. */
  ttlSeconds?: number;
  /** How long a duplicate waits for a call in flight before 409 IDEMPOTENCY_IN_PROGRESS, in ms; 0 answers at once. Default 30 000. */
  waitTimeoutMs?: number;
  /** Lease length in ms; the leader renews it every third of it while the call runs. Default 10 000. */
  leaseMs?: number;
  /** Auto keys for double-clicks: on by default where a `document` exists, off in servers and scripts. */
  autoKey?: boolean | AutoKeyOptions;
  /** Which responses are stored. Default: status < 500 except 408, 429 and a 409 with Retry-After. */
  shouldStore?: (response: Response) => boolean;
  /** Largest request body fingerprinted and response body stored, in bytes. Default 5 MiB. */
  maxBodyBytes?: number;
  /** Status of the conflict response. Default 409 (422 for the IETF draft). */
  conflictStatus?: number;
  /** First part of every store key. Default "idemfetch". */
  namespace?: string;
  /** Store down or slow: "open" proceeds unprotected (default), "closed" answers 503. */
  onStoreError?: "open" | "closed";
  /** Longest a single store call may take, in ms. Default 2000. */
  storeTimeoutMs?: number;
  /**
   * After `failures` store calls fail in a row (default 5), skip the store for `cooldownMs` (default 5000)
   * at a time, applying `onStoreError` at once instead of waiting on a dead store; one probe call then
   * closes the circuit again. `false` turns it off. Default on.
   */
  circuitBreaker?: boolean | CircuitBreakerOptions;
  /** Where the store's state changes are told (failing, circuit open, answering again), once each. Default `console`; `false` is silent. */
  logger?: Logger | false;
  /** Receives every event; a throwing listener is ignored. */
  onEvent?: (event: IdempotencyEvent) => void;
  /** Replaces the default request fingerprint. */
  fingerprint?: (request: Request) => string | Promise<string>;
  /** Replaces the default scope (hash of the first credential header with a value, else "anonymous"). */
  scope?: (request: Request) => string | Promise<string>;
  /**
   * Headers whose value is the caller's credential, in order: the first with a non-blank value scopes the
   * key (and lets joiners and replays carry `Set-Cookie`). Default `["authorization", "cookie"]`.
   */
  credentialHeaders?: string[];
  /** Shape of the error bodies the library answers with: "reliapi" JSON (default) or RFC 9457 "problem" JSON. */
  errorFormat?: ErrorFormat;
  /** When the client adds `Idempotency-Key` upstream for a key from the body or an auto key. Default "same-origin". */
  sendKeyHeader?: "same-origin" | "always" | "never";
  /** Client: re-send a keyed call with the same key on a network error, 408, 429, 5xx or 409 IN_PROGRESS. Default off. */
  retry?: number | RetryOptions | false;
}

export interface NormalizedOptions {
  store: IdempotencyStore;
  /** The upstream fetch, resolved per call. */
  getFetch: () => typeof fetch;
  ttlMs: number;
  waitTimeoutMs: number;
  leaseMs: number;
  autoKey: { methods: ReadonlySet<string>; windowMs: number } | false;
  shouldStore: (response: Response) => boolean;
  maxBodyBytes: number;
  conflictStatus: number;
  namespace: string;
  onStoreError: "open" | "closed";
  storeTimeoutMs: number;
  circuitBreaker: Required<CircuitBreakerOptions> | false;
  logger: Logger | undefined;
  onEvent: ((event: IdempotencyEvent) => void) | undefined;
  fingerprint: ((request: Request) => string | Promise<string>) | undefined;
  scope: ((request: Request) => string | Promise<string>) | undefined;
  /** Lower-case header names, in order. */
  credentialHeaders: readonly string[];
  sendKeyHeader: "same-origin" | "always" | "never";
  errorFormat: ErrorFormat;
  /** Undefined when off. */
  retry: RetryPolicy | undefined;
}

/** A 409 with `Retry-After` (IDEMPOTENCY_IN_PROGRESS) says "come back later": transient, like 408 and 429. */
export const defaultShouldStore = (response: Response): boolean =>
  response.status < 500 &&
  response.status !== 408 &&
  response.status !== 429 &&
  !(response.status === 409 && response.headers.has("retry-after"));

export const DEFAULTS = {
  ttlSeconds: 3600,
  waitTimeoutMs: 30_000,
  leaseMs: 10_000,
  autoKeyMethods: ["POST", "PUT", "PATCH", "DELETE"],
  autoKeyWindowMs: 2000,
  maxBodyBytes: 5 * 1024 * 1024,
  conflictStatus: 409,
  namespace: "idemfetch",
  onStoreError: "open",
  storeTimeoutMs: 2000,
  sendKeyHeader: "same-origin",
  errorFormat: "reliapi",
  credentialHeaders: ["authorization", "cookie"],
} as const;

/**
 * Every option of `IdempotencyOptions` and which faces take it: "both", or "client" only
 * (`createIdempotentFetch` and `install()`). The compiler holds this to the interface, so a new option is
 * one line here, and the strict checks of every face know it.
 */
export const OPTIONS = {
  store: "both",
  fetch: "client",
  ttlSeconds: "both",
  waitTimeoutMs: "both",
  leaseMs: "both",
  autoKey: "client",
  shouldStore: "both",
  maxBodyBytes: "both",
  conflictStatus: "both",
  namespace: "both",
  onStoreError: "both",
  storeTimeoutMs: "both",
  circuitBreaker: "both",
  logger: "both",
  onEvent: "both",
  fingerprint: "both",
  scope: "both",
  credentialHeaders: "both",
  errorFormat: "both",
  sendKeyHeader: "client",
  retry: "client",
} as const satisfies { readonly [K in keyof IdempotencyOptions]-?: "both" | "client" };

/** The options only the client faces take: the server's options type leaves them out. */
export type ClientOnlyOption = {
  [K in keyof typeof OPTIONS]: (typeof OPTIONS)[K] extends "client" ? K : never;
}[keyof typeof OPTIONS];

const names = (faces: readonly string[]): Record<string, true> =>
  Object.fromEntries(
    Object.entries(OPTIONS)
      .filter(([, face]) => faces.includes(face))
      .map(([name]) => [name, true]),
  );

/** The option names each factory and per-call object knows, for `strictOptions` (src/strict.ts). */
export const KNOWN = {
  client: names(["both", "client"]),
  server: {
    ...names(["both"]),
    ...({ requireKey: true, methods: true, ietf: true, waitUntil: true } satisfies OptionNames<
      Omit<ServerIdempotencyOptions, keyof IdempotencyOptions>
    >),
  },
  autoKey: { methods: true, windowMs: true } satisfies OptionNames<AutoKeyOptions>,
  circuitBreaker: { failures: true, cooldownMs: true } satisfies OptionNames<CircuitBreakerOptions>,
  call: { key: true, ttlSeconds: true, waitUntil: true, retry: true } satisfies OptionNames<IdempotencyCallOptions>,
  serverCall: { ttlSeconds: true, waitUntil: true } satisfies OptionNames<ServerCallOptions>,
};

/** The longest delay `setTimeout` honours, in ms: beyond it Node, browsers and Deno fire after about 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The longest TTL, in ms: an exact integer (about 285 000 years) that every store can write as Redis PX. */
export const MAX_TTL_MS = Number.MAX_SAFE_INTEGER;
/** The largest `maxBodyBytes`, in bytes (1 GiB): bodies are held whole in memory and in the store. */
export const MAX_BODY_BYTES = 2 ** 30;

const fail = (name: string, expected: string, got: unknown): never => {
  throw new TypeError(`idemfetch: option "${name}" must be ${expected}, got ${JSON.stringify(got) ?? String(got)}`);
};

/** A finite number in (0, max] (or 0 itself when `zero`); `unit` follows the limit in the message. */
const positive = (
  name: string,
  value: unknown,
  fallback: number,
  max: number,
  unit: string,
  { integer = false, zero = false } = {},
): number => {
  if (value === undefined) return fallback;
  if (
    typeof value !== "number" ||
    !Number.isFinite(value) ||
    value < 0 ||
    (value === 0 && !zero) ||
    value > max ||
    (integer && !Number.isInteger(value))
  ) {
    const kind = integer ? "integer" : "number";
    return fail(name, `a ${zero ? "non-negative" : "positive"} ${kind} at most ${max} ${unit}`, value);
  }
  return value;
};

const timer = (name: string, value: unknown, fallback: number, zero = false): number =>
  positive(name, value, fallback, MAX_TIMER_MS, "ms (the longest timer delay)", { zero });

const MAX_TTL_SECONDS = Math.floor(MAX_TTL_MS / 1000);

/**
 * A per-call `ttlSeconds`, validated like the option (a positive number of seconds, at most about 285 000
 * years), in ms; undefined when not given. Throws `TypeError` naming `name`.
 */
export function callTtlMs(ttlSeconds: unknown, name = "ttlSeconds"): number | undefined {
  if (ttlSeconds === undefined) return undefined;
  return positive(name, ttlSeconds, 0, MAX_TTL_SECONDS, "seconds") * 1000;
}

// A method is an HTTP token (RFC 9110).
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Visible ASCII without ':', the store key separator: no spaces, control or non-ASCII characters, which
// would make store keys ambiguous across encodings or unreadable in store tools.
const NAMESPACE = /^[\x21-\x39\x3b-\x7e]{1,64}$/;

const oneOf = <T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T => {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) return fail(name, allowed.map((a) => `"${a}"`).join(" or "), value);
  return value as T;
};

const fn = <F>(name: string, value: unknown): F | undefined => {
  if (value !== undefined && typeof value !== "function") fail(name, "a function", value);
  return value as F | undefined;
};

// A header name is an HTTP token (RFC 9110).
const HEADER_NAME = METHOD;

function credentialHeadersOf(value: unknown, custom: boolean): readonly string[] {
  if (value === undefined) return DEFAULTS.credentialHeaders;
  if (custom) fail("credentialHeaders", "left out when a custom scope option is given (it decides the scope)", value);
  if (!Array.isArray(value) || value.some((h) => typeof h !== "string" || !HEADER_NAME.test(h))) {
    return fail("credentialHeaders", "an array of header names", value);
  }
  return value.map((h: string) => h.toLowerCase());
}

function breakerOf(value: unknown): Required<CircuitBreakerOptions> | false {
  if (value === undefined || value === true) return BREAKER_DEFAULTS;
  if (value === false) return false;
  if (typeof value !== "object" || value === null) return fail("circuitBreaker", "a boolean or an object", value);
  strictOptions(value, KNOWN.circuitBreaker, "circuitBreaker");
  const { failures, cooldownMs } = value as CircuitBreakerOptions;
  return {
    failures: positive("circuitBreaker.failures", failures, BREAKER_DEFAULTS.failures, 1_000_000, "calls", {
      integer: true,
    }),
    cooldownMs: timer("circuitBreaker.cooldownMs", cooldownMs, BREAKER_DEFAULTS.cooldownMs),
  };
}

function loggerOf(value: unknown): Logger | undefined {
  if (value === false) return undefined;
  if (value === undefined) return typeof console === "undefined" ? undefined : console;
  if (typeof value !== "object" || value === null || typeof (value as Logger).warn !== "function") {
    return fail("logger", "an object with a warn() method, or false", value);
  }
  return value as Logger;
}

/** Validates options once and fills in every default; throws `TypeError` on nonsense. */
export function normalizeOptions(
  options: IdempotencyOptions = {},
  side: "client" | "server" = "client",
): NormalizedOptions {
  if (typeof options !== "object" || options === null) fail("options", "an object", options);
  const given = options.store;
  for (const method of ["acquire", "commit", "release", "renew", "forget"] as const) {
    if (given !== undefined && typeof given?.[method] !== "function")
      fail("store", `a store with ${method}()`, typeof given);
  }

  let autoKey: NormalizedOptions["autoKey"] = false;
  const auto = options.autoKey ?? (side === "client" && typeof document !== "undefined");
  if (auto !== false) {
    if (auto !== true && (typeof auto !== "object" || auto === null)) fail("autoKey", "a boolean or an object", auto);
    const o: AutoKeyOptions = auto === true ? {} : auto;
    strictOptions(o, KNOWN.autoKey, "autoKey");
    const methods = o.methods ?? DEFAULTS.autoKeyMethods;
    if (!Array.isArray(methods) || methods.some((m) => typeof m !== "string" || !METHOD.test(m))) {
      fail("autoKey.methods", "an array of method names", methods);
    }
    autoKey = {
      methods: new Set(methods.map((m) => m.toUpperCase())),
      // A TTL (the record's expiry), not a timer.
      windowMs: positive("autoKey.windowMs", o.windowMs, DEFAULTS.autoKeyWindowMs, MAX_TTL_MS, "ms"),
    };
  }

  const conflictStatus = options.conflictStatus ?? DEFAULTS.conflictStatus;
  if (!Number.isInteger(conflictStatus) || conflictStatus < 400 || conflictStatus > 499) {
    fail("conflictStatus", "a 4xx status", conflictStatus);
  }
  const namespace = options.namespace ?? DEFAULTS.namespace;
  if (typeof namespace !== "string" || !NAMESPACE.test(namespace)) {
    fail("namespace", "1-64 visible ASCII characters other than ':'", namespace);
  }
  const userFetch = fn<typeof fetch>("fetch", options.fetch);
  const onStoreError = oneOf("onStoreError", options.onStoreError, ["open", "closed"], DEFAULTS.onStoreError);
  const storeTimeoutMs = timer("storeTimeoutMs", options.storeTimeoutMs, DEFAULTS.storeTimeoutMs);
  const onEvent = fn<(event: IdempotencyEvent) => void>("onEvent", options.onEvent);
  const circuitBreaker = breakerOf(options.circuitBreaker);
  const logger = loggerOf(options.logger);

  return {
    // The default memory store cannot fail: nothing to guard. Any other store gets the one deadline layer.
    store:
      given === undefined
        ? memoryStore()
        : guardStore(given, {
            timeoutMs: storeTimeoutMs,
            breaker: circuitBreaker,
            logger,
            onStoreError,
            onChange: onEvent,
          }),
    // Looked up at call time by default, so a later patch of globalThis.fetch is respected.
    getFetch: userFetch ? () => userFetch : () => globalThis.fetch,
    ttlMs: callTtlMs(options.ttlSeconds) ?? DEFAULTS.ttlSeconds * 1000,
    waitTimeoutMs: timer("waitTimeoutMs", options.waitTimeoutMs, DEFAULTS.waitTimeoutMs, true),
    leaseMs: timer("leaseMs", options.leaseMs, DEFAULTS.leaseMs),
    autoKey,
    shouldStore: fn("shouldStore", options.shouldStore) ?? defaultShouldStore,
    maxBodyBytes: positive("maxBodyBytes", options.maxBodyBytes, DEFAULTS.maxBodyBytes, MAX_BODY_BYTES, "bytes", {
      integer: true,
    }),
    conflictStatus,
    namespace,
    onStoreError,
    storeTimeoutMs,
    circuitBreaker,
    logger,
    onEvent,
    fingerprint: fn("fingerprint", options.fingerprint),
    scope: fn("scope", options.scope),
    credentialHeaders: credentialHeadersOf(options.credentialHeaders, options.scope !== undefined),
    sendKeyHeader: oneOf(
      "sendKeyHeader",
      options.sendKeyHeader,
      ["same-origin", "always", "never"],
      DEFAULTS.sendKeyHeader,
    ),
    errorFormat: oneOf("errorFormat", options.errorFormat, ["reliapi", "problem"], DEFAULTS.errorFormat),
    retry: normalizeRetry(options.retry),
  };
}
