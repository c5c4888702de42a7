// Every store call passes here: one deadline, a late acquire released, failures classified, a circuit breaker, a voice.
import { IdempotencyError } from "./errors.ts";
import type { CircuitChange, StoreFailure } from "./events.ts";
import type { AcquireResult, IdempotencyStore } from "./store.ts";

export type { CircuitChange, StoreFailure } from "./events.ts";

/** A store call that failed or was skipped; `reason` is the category, `cause` the store's own error. */
export class StoreUnavailableError extends IdempotencyError {
  override name = "StoreUnavailableError" as const;
  constructor(
    readonly reason: StoreFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super("IDEMPOTENCY_STORE_UNAVAILABLE", message, options);
  }
}

export const isStoreUnavailableError = (error: unknown): error is StoreUnavailableError =>
  error instanceof StoreUnavailableError ||
  (typeof error === "object" && error !== null && (error as { name?: unknown }).name === "StoreUnavailableError");

/** Where warnings go: `console` by default; anything with a `warn` method fits (pino, winston, a test array). */
export interface Logger {
  warn(message: string): void;
}

export interface CircuitBreakerOptions {
  /** Consecutive failed store calls that open the circuit. Default 5. */
  failures?: number;
  /** How long an open circuit skips the store before one probe call is let through, in ms. Default 5000. */
  cooldownMs?: number;
}

export interface GuardOptions {
  /** Bound on each store call, in ms: the one timeout layer. */
  timeoutMs: number;
  /** false: never skip the store. */
  breaker: Required<CircuitBreakerOptions> | false;
  /** Warnings once per state change; undefined is silent. */
  logger: Logger | undefined;
  /** What the engine does while the store fails, named in warnings. */
  onStoreError: "open" | "closed";
  /** Told when the circuit opens or closes. Never throws into the guard. */
  onChange?: ((change: CircuitChange) => void) | undefined;
  /** Clock in ms (tests). */
  now?: () => number;
}

export const BREAKER_DEFAULTS: Required<CircuitBreakerOptions> = { failures: 5, cooldownMs: 5000 };

/** Error codes and messages that mean nobody is listening (or the connection is gone), by client. */
const REFUSED_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH"]);
const REFUSED_TEXT =
  /ECONNREFUSED|ECONNRESET|connection (is )?closed|connection refused|stream isn't writeable|enableOfflineQueue|fetch failed|socket hang up|other side closed/i;

/** The category of a store failure, from the error a client threw. */
export function classify(error: unknown): StoreFailure {
  if (error instanceof StoreUnavailableError) return error.reason;
  for (let e: unknown = error, depth = 0; e && depth < 4; depth++) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === "string" && REFUSED_CODES.has(code)) return "refused";
    if (typeof message === "string" && REFUSED_TEXT.test(message)) return "refused";
    if (typeof message === "string" && /timed? ?out/i.test(message)) return "timeout";
    e = (e as { cause?: unknown }).cause;
  }
  return "error";
}

const WHAT: Record<StoreFailure, string> = {
  timeout: "timed out",
  refused: "refused the connection",
  error: "failed",
  "circuit-open": "is skipped (circuit open)",
};

/** The 503 body's message: which category made the store unavailable. */
export const unavailableMessage = (error: unknown): string => {
  const reason = error === undefined ? "error" : classify(error);
  return `Idempotency store is unavailable (${reason === "circuit-open" ? "circuit open" : reason})`;
};

const POLICY = {
  open: "requests run without cross-process protection",
  closed: "requests are answered 503 IDEMPOTENCY_STORE_UNAVAILABLE",
} as const;

/** A store's name for messages: its `name` when it has one. */
const nameOf = (store: IdempotencyStore): string => {
  const name = (store as { name?: unknown }).name;
  return typeof name === "string" && name !== "" ? name : "store";
};

/**
 * `store` behind one deadline per call and a circuit breaker. While the circuit is open every call fails at
 * once with reason "circuit-open" (so the engine applies `onStoreError` without waiting); after `cooldownMs`
 * one probe goes through, and its success closes the circuit. A `false` answer (a stale token) is an answer:
 * only rejections and timeouts count as failures.
 */
export function guardStore(store: IdempotencyStore, options: GuardOptions): IdempotencyStore {
  const { timeoutMs, breaker, logger, onStoreError, onChange } = options;
  const now = options.now ?? Date.now;
  const name = nameOf(store);
  let state: "closed" | "open" | "half-open" = "closed";
  /** Set from the first failure after the store last answered, until it answers again (for the voice). */
  let failing = false;
  let consecutive = 0;
  let openedAt = 0;
  let probeAt = 0;

  const warn = (message: string): void => {
    try {
      logger?.warn(`idemfetch: ${message}`);
    } catch {
      // A logger's failure must never fail a request.
    }
  };
  const tell = (change: CircuitChange): void => {
    try {
      onChange?.(change);
    } catch {
      // As above.
    }
  };

  const succeeded = (): void => {
    consecutive = 0;
    if (state !== "closed") {
      state = "closed";
      tell({ type: "circuit-close", store: name, openMs: now() - openedAt });
      warn(`store "${name}" answers again; circuit closed after ${now() - openedAt} ms.`);
    } else if (failing) {
      warn(`store "${name}" answers again.`);
    }
    failing = false;
  };

  const failed = (op: string, reason: StoreFailure, error: unknown): void => {
    consecutive++;
    if (!failing) {
      failing = true;
      if (state === "closed" && (!breaker || consecutive < breaker.failures)) {
        const detail = error instanceof Error ? `: ${error.message}` : "";
        warn(`store "${name}" ${WHAT[reason]} on ${op}${detail}; ${POLICY[onStoreError]} while it fails.`);
      }
    }
    if (!breaker) return;
    if (state === "half-open" || (state === "closed" && consecutive >= breaker.failures)) {
      const reopened = state === "half-open";
      state = "open";
      probeAt = now() + breaker.cooldownMs;
      if (reopened) return;
      openedAt = now();
      tell({ type: "circuit-open", store: name, reason, failures: consecutive, cooldownMs: breaker.cooldownMs });
      warn(
        `store "${name}" failed ${consecutive} times in a row (last: ${reason}); circuit open: store calls are ` +
          `skipped for ${breaker.cooldownMs} ms at a time and ${POLICY[onStoreError]}.`,
      );
    }
  };

  /** Whether this call may reach the store now; the first call after the cool-down is the probe. */
  const admit = (): boolean => {
    if (state === "closed") return true;
    if (state === "open" && now() >= probeAt) {
      state = "half-open";
      return true;
    }
    return false;
  };

  function guarded<T>(op: string, run: () => Promise<T>, onLate?: (value: T) => void): Promise<T> {
    if (!admit()) {
      return Promise.reject(
        new StoreUnavailableError("circuit-open", `idemfetch: store ${op} skipped: the circuit is open`),
      );
    }
    return new Promise<T>((resolve, reject) => {
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        const error = new StoreUnavailableError("timeout", `idemfetch: store ${op} timed out after ${timeoutMs} ms`);
        failed(op, "timeout", error);
        reject(error);
      }, timeoutMs);
      let pending: Promise<T>;
      try {
        pending = run();
      } catch (error) {
        pending = Promise.reject(error);
      }
      pending.then(
        (value) => {
          clearTimeout(timer);
          if (late) return onLate?.(value);
          succeeded();
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          if (late) return;
          const reason = classify(error);
          failed(op, reason, error);
          reject(new StoreUnavailableError(reason, `idemfetch: store ${op} ${WHAT[reason]}`, { cause: error }));
        },
      );
    });
  }

  const guardedStore: IdempotencyStore = {
    acquire: (storeKey, fingerprint, leaseMs) =>
      guarded<AcquireResult>(
        "acquire",
        () => store.acquire(storeKey, fingerprint, leaseMs),
        // Landed after the caller gave up: nobody will use that lease, so let it go at once.
        (late) => {
          if (late.state === "acquired") store.release(storeKey, late.token).catch(() => {});
        },
      ),
    commit: (storeKey, token, record, ttlMs) => guarded("commit", () => store.commit(storeKey, token, record, ttlMs)),
    release: (storeKey, token) => guarded("release", () => store.release(storeKey, token)),
    renew: (storeKey, token, leaseMs) => guarded("renew", () => store.renew(storeKey, token, leaseMs)),
    forget: (storeKey, force) => guarded("forget", () => store.forget(storeKey, force)),
  };
  if (store.subscribe) guardedStore.subscribe = store.subscribe.bind(store);
  if (store.close) guardedStore.close = store.close.bind(store);
  Object.defineProperty(guardedStore, "name", { value: name });
  return guardedStore;
}
