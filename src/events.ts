// The events `onEvent` receives: one shape per type, each naming the call without its key or credentials.
import type { RetryEvent } from "./retry.ts";

/** What every event carries. Hashes, never the raw key or credential. */
export interface EventBase {
  /** Tells this call's events from other calls' (unique within this JavaScript realm). */
  callId: number;
  /** SHA-256 (hex) of the idempotency key; for an auto key, the request fingerprint. */
  keyHash: string;
  /** "anonymous", or the SHA-256 of the caller's credentials (or of the custom scope). */
  scopeHash: string;
  /** Request method, upper-case. */
  method: string;
  /** The request URL on the client; path and query on the server. */
  target: string;
  /** Milliseconds since the call entered the engine. */
  durationMs: number;
}

/** A store operation, as named in events. */
export type StoreOp = "acquire" | "commit" | "release" | "renew" | "forget" | "subscribe" | "publishLive" | "readLive";

/** Why a store call failed: it timed out, nobody listened (refused, connection gone), it answered an error, or it was skipped. */
export type StoreFailure = "timeout" | "refused" | "error" | "circuit-open";

/**
 * The store's circuit opened (after `failures` failed calls in a row: store calls are skipped for
 * `cooldownMs` at a time and `onStoreError` applies at once) or closed again (a probe call succeeded).
 * These name no call: they carry no `callId`, `keyHash` or timing.
 */
export type CircuitChange =
  | { type: "circuit-open"; store: string; reason: StoreFailure; failures: number; cooldownMs: number }
  | { type: "circuit-close"; store: string; openMs: number };

/** Every event `onEvent` receives: one call's events, and the store's circuit changes. */
export type IdempotencyEvent = CallEvent | CircuitChange;

/** The events of one call. */
export type CallEvent =
  /** This call is sent upstream (it leads, or runs unprotected). */
  | (EventBase & { type: "execute" })
  /** This call joined one in flight in this process. */
  | (EventBase & { type: "join" })
  /** Another process holds the key: this call waits for its outcome. */
  | (EventBase & { type: "wait" })
  /** A waiter took the key over after the holder released it or its lease expired. */
  | (EventBase & { type: "takeover" })
  /** A waiter gave up after `waitTimeoutMs`: 409 IDEMPOTENCY_IN_PROGRESS (or 503 when closed). */
  | (EventBase & { type: "timeout" })
  /** Same key, other fingerprint. */
  | (EventBase & { type: "conflict" })
  /** Answered from a stored record. */
  | (EventBase & { type: "replay"; status: number })
  /** The leader's response was committed to the store. */
  | (EventBase & { type: "stored"; status: number; bytes: number })
  /** The leader's response was not stored, and why. */
  | (EventBase & { type: "not-stored"; status: number; reason: string })
  /** A store call failed or timed out, or a stored value could not be used. */
  | (EventBase & { type: "store-error"; op: StoreOp; reason: string; error?: unknown })
  /** A commit, release or renew found the lease held by someone else (it had expired and was taken over). */
  | (EventBase & { type: "stale-token"; op: "commit" | "release" | "renew"; reason: string })
  /**
   * The leader re-sends its call with the same key (the `retry` option): `attempt` is the try about to be
   * sent (2 for the first re-send), after a pause of `delayMs`; `status` is the failed try's, if it answered.
   */
  | (EventBase & RetryEvent)
  /**
   * The last event of every call: its caller has the answer (the status it got, or the error it was
   * rejected with) and the store writes the call made have settled. Sent only while a listener is set.
   */
  | (EventBase & { type: "settled"; status?: number; error?: unknown });

export type IdempotencyEventType = IdempotencyEvent["type"];
