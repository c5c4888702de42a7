// A flight's way through the store: acquire, then lead, wait, replay or conflict (docs/protocol.md "The flow for one key").
import type { Source } from "./call.ts";
import type { IdempotencyErrorCode } from "./errors.ts";
import type { StoreOp } from "./events.ts";
import type { Head, Outcome } from "./flight.ts";
import { followLive } from "./live.ts";
import { isReplayable, isStoredRecord } from "./record.ts";
import { type AcquireResult, hasLive, type IdempotencyStore, type LiveStore } from "./store.ts";
import { unavailableMessage } from "./store-guard.ts";

enum Poll {
  FirstMs = 25,
  MaxMs = 500,
}

export const now = (): number => (typeof performance !== "undefined" ? performance.now() : Date.now());
const resolved = Promise.resolve();

/** What deciding a flight's way needs, given explicitly. */
export interface DecideDeps {
  store: IdempotencyStore;
  storeKey: string;
  fingerprint: string;
  leaseMs: number;
  waitTimeoutMs: number;
  onStoreError: "open" | "closed";
  conflictStatus: number;
  /** Aborts the wait once every caller aborted. */
  signal: AbortSignal | undefined;
  report(event: DecideEvent): void;
  /** Leads the flight: with a token under the lease, with null unprotected. */
  lead(token: string | null): Promise<Outcome>;
  /** An answer of the library's own. */
  answer(code: IdempotencyErrorCode, status: number, message?: string): Outcome;
  /** What callers get of the live stream of a leader elsewhere: its head, then its body read from `source`. */
  remote(head: Head, source: Source): Outcome;
}

export type DecideEvent =
  | { type: "wait" }
  | { type: "takeover" }
  | { type: "timeout" }
  | { type: "conflict" }
  | { type: "store-error"; op: StoreOp; reason: string; error?: unknown };

/**
 * Acquires the key, then leads, waits for its owner, replays its record or answers a conflict. Once a
 * live lease of this fingerprint was seen, a store blip costs another round of waiting, never a run.
 */
export async function decide(d: DecideDeps): Promise<Outcome> {
  const deadline = now() + d.waitTimeoutMs;
  let delay: number = Poll.FirstMs;
  let forgotCorrupt = false;
  /** Set once this flight saw a live lease of its own fingerprint: from then on it never runs unprotected. */
  let knowsOwner = false;
  /** The last store failure: a wait that then times out answers 503 naming it when closed. */
  let storeFailure: { error: unknown } | undefined;
  const storeError = (op: StoreOp, reason: string, error?: unknown): void => {
    storeFailure = { error };
    d.report(error === undefined ? { type: "store-error", op, reason } : { type: "store-error", op, reason, error });
  };
  /** 503 naming what made the store unavailable (timeout, refused, circuit open), when the policy is closed. */
  const unavailable = (): Outcome | undefined =>
    d.onStoreError === "closed"
      ? d.answer("IDEMPOTENCY_STORE_UNAVAILABLE", 503, unavailableMessage(storeFailure?.error))
      : undefined;
  const conflict = (): Outcome => {
    d.report({ type: "conflict" });
    return d.answer("IDEMPOTENCY_CONFLICT", d.conflictStatus);
  };
  const waker = new Waker(d.store);
  /** Whether a pending lease is followed through the store's live stream (else: wait for the record). */
  let live = hasLive(d.store);
  let agains = 0;
  try {
    for (;;) {
      let found: AcquireResult | undefined;
      try {
        // The store is guarded (options.ts): its deadline releases an acquire that lands after it.
        found = await d.store.acquire(d.storeKey, d.fingerprint, d.leaseMs);
      } catch (error) {
        storeError("acquire", "acquire failed", error);
        if (!knowsOwner) return unavailable() ?? d.lead(null);
      }

      if (found?.state === "acquired") {
        if (found.replacedCorrupt) storeError("acquire", "a stored value did not parse; replaced");
        if (knowsOwner) d.report({ type: "takeover" });
        return d.lead(found.token);
      }
      if (found?.state === "done") {
        const { record } = found;
        if (!isStoredRecord(record) || !isReplayable(record)) {
          // A foreign or damaged record is treated as absent: removed once, then the key is acquired again.
          storeError("acquire", "stored record did not parse");
          if (!forgotCorrupt) {
            forgotCorrupt = true;
            try {
              await d.store.forget(d.storeKey, false);
              continue;
            } catch (error) {
              storeError("forget", "could not remove a record that did not parse", error);
            }
          }
          return unavailable() ?? d.lead(null);
        }
        if (record.fingerprint !== d.fingerprint) return conflict();
        return { kind: "record", record };
      }
      if (found?.state === "pending") {
        if (found.fingerprint !== d.fingerprint) return conflict();
        if (!knowsOwner) {
          knowsOwner = true;
          d.report({ type: "wait" });
          const failed = waker.subscribe(d.storeKey);
          if (failed !== undefined) storeError("subscribe", "subscribe failed; polling instead", failed);
        }
      }

      if (found?.state === "pending" && live) {
        const followed = await follow(d, d.store as LiveStore, deadline);
        // A record or a free key: acquire again at once; only a store whose two views disagree comes back here
        // again and again, and then waits its rounds like a store without the capability.
        if (followed === "again" && ++agains <= 3) continue;
        if (typeof followed === "object" && "failed" in followed) {
          // The store could not be read live: wait for the record as a store without the capability does.
          live = false;
          storeError("readLive", "readLive failed; waiting for the record instead", followed.failed);
        } else if (typeof followed === "object" && "source" in followed) {
          // readLive names no fingerprint: the lease seen pending may have ended and another request's taken the
          // key before the read. One acquire tells (and takes the key when it is free).
          let check: AcquireResult | undefined;
          try {
            check = await d.store.acquire(d.storeKey, d.fingerprint, d.leaseMs);
          } catch {
            // A blip: the owner and fingerprint seen a moment ago stand.
          }
          if (check === undefined || (check.state === "pending" && check.fingerprint === d.fingerprint)) {
            return d.remote(followed.head, followed.source);
          }
          void followed.source.cancel();
          if (check.state === "acquired") {
            d.report({ type: "takeover" });
            return d.lead(check.token);
          }
          continue;
        } else if (typeof followed === "object") {
          return followed;
        }
      }

      // Another owner holds a live lease (or the store blipped while we waited for it): one round of waiting.
      if (now() >= deadline) {
        d.report({ type: "timeout" });
        return (storeFailure ? unavailable() : undefined) ?? d.answer("IDEMPOTENCY_IN_PROGRESS", 409);
      }
      await waker.sleep(Math.min(delay, deadline - now()), d.signal);
      if (d.signal?.aborted) return { kind: "fail", error: d.signal.reason };
      delay = Math.min(delay * 1.5, Poll.MaxMs);
    }
  } finally {
    waker.close();
  }
}

/**
 * Follows the live stream of the lease another process holds until its first event, within the wait's
 * deadline: a head gives callers the stream (the deadline then no longer applies); a record or a free key
 * sends the flight back to acquire ("again"), which replays, reports a conflict or takes over.
 */
async function follow(
  d: DecideDeps,
  store: LiveStore,
  deadline: number,
): Promise<Outcome | "again" | "timeout" | { failed: unknown } | { head: Head; source: Source }> {
  const stop = new AbortController();
  const timedOut = new Error("idemfetch: waitTimeoutMs passed before the live stream's first event");
  const timer = setTimeout(() => stop.abort(timedOut), Math.max(0, deadline - now()));
  const aborted = (): void => stop.abort(d.signal?.reason);
  d.signal?.addEventListener("abort", aborted, { once: true });
  const events = followLive(store, d.storeKey, { signal: stop.signal });
  let first: Awaited<ReturnType<typeof events.next>>;
  try {
    first = await events.next();
  } catch (error) {
    if (!stop.signal.aborted) return { failed: error };
    return stop.signal.reason === timedOut ? "timeout" : { kind: "fail", error: d.signal?.reason };
  } finally {
    clearTimeout(timer);
    d.signal?.removeEventListener("abort", aborted);
  }
  const event = first.done ? undefined : first.value;
  if (event?.type !== "head") {
    void events.return(undefined);
    return "again";
  }
  // From the head on, the body is read at the callers' pace; a lost stream errors it (LiveStreamLostError).
  const source: Source = {
    read: async () => {
      for (;;) {
        const next = await events.next();
        if (next.done || next.value.type === "done") return { done: true, value: undefined };
        if (next.value.type === "body") return { done: false, value: next.value.bytes };
      }
    },
    cancel: (reason) => {
      stop.abort(reason);
      events.return(undefined).catch(() => {});
    },
  };
  const { status, statusText, headers } = event.head;
  return { head: { status, statusText, headers }, source };
}

/** Wakes a waiter early: on the store's notification, or when every caller aborted. */
class Waker {
  private notified = false;
  private wake: (() => void) | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly store: IdempotencyStore) {}

  /**
   * From now on a commit or release of `storeKey` cuts the current (or next) sleep short. A store whose
   * subscribe throws only costs wake-up latency: the waiter polls. Returns the error, if any.
   */
  subscribe(storeKey: string): unknown {
    try {
      this.unsubscribe ??= this.store.subscribe?.(storeKey, () => {
        if (this.wake) this.wake();
        else this.notified = true;
      });
    } catch (error) {
      return error;
    }
    return undefined;
  }

  /** Sleeps `ms`, or less when woken; a notification that landed while not sleeping skips the sleep. */
  sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.notified) {
      this.notified = false;
      return resolved;
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.wake?.(), ms);
      const onAbort = (): void => this.wake?.();
      this.wake = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.wake = undefined;
        resolve();
      };
      signal?.addEventListener("abort", onAbort);
    });
  }

  close(): void {
    this.unsubscribe?.();
  }
}
