// Both ends of a live stream over a store's live-stream capability: the leader's batching writer and a duplicate's reader.

import { concat } from "./body.ts";
import type { LiveHead, LiveStore, StoredRecord } from "./store.ts";

/** A live stream a reader held a prefix of ended without its record: the lease was released, lapsed or taken over. */
export class LiveStreamLostError extends Error {
  override name = "LiveStreamLostError" as const;
  /** "ended": no lease and no record; "replaced": another execution holds the key, or committed the record. */
  readonly reason: "ended" | "replaced";
  constructor(reason: "ended" | "replaced", message: string) {
    super(message);
    this.reason = reason;
  }
}

export const isLiveStreamLostError = (error: unknown): error is LiveStreamLostError =>
  error instanceof LiveStreamLostError || (error as { name?: unknown } | null)?.name === "LiveStreamLostError";

export interface LiveWriterOptions {
  /** Publish as soon as this many body bytes are queued. Default 16 384. */
  maxBytes?: number;
  /**
   * At most one part per this many ms: a write goes at once when no part went within it, else with the next
   * part, `maxDelayMs` after the last one. With no write, the head goes alone after it. Default 10.
   */
  maxDelayMs?: number;
  /** Called once when publishing stops on its own: the store refused (`refused`: the lease is gone) or failed. */
  onStop?: (reason: "refused" | "failed", error?: unknown) => void;
}

/** The leader's side: paces body bytes into `publishLive` parts, one in flight at a time. */
export interface LiveWriter {
  /** Queues body bytes (copied); they are published at once, or within `maxDelayMs`, or at once past `maxBytes`. */
  write(bytes: Uint8Array): void;
  /** Publishes what is queued now (the head too, if not yet); resolves whether the stream is still published. */
  flush(): Promise<boolean>;
  /**
   * Stops publishing and drops what is queued: the commit that follows carries every byte. Resolves once the
   * part in flight (if any) has settled, so a commit or release sent after it reaches a store that saw it.
   */
  close(): Promise<void>;
  /** Body bytes the store has accepted. */
  readonly published: number;
  /** Whether publishing stopped: refused, failed or closed. */
  readonly stopped: boolean;
}

/**
 * Starts the live stream of `token`'s lease with `head`. A write goes to the store at once when no part went
 * within `maxDelayMs`, so a token stream (tokens further apart than that) adds no latency; faster writes, and
 * writes made while a part is in flight, go together as the next part. The head goes with the first part, or
 * alone after `maxDelayMs`: a response that ends sooner (close() before then, no write) costs no store operation.
 */
export function liveWriter(
  store: LiveStore,
  storeKey: string,
  token: string,
  head: LiveHead,
  options: LiveWriterOptions = {},
): LiveWriter {
  const maxBytes = options.maxBytes ?? 16_384;
  const maxDelayMs = options.maxDelayMs ?? 10;
  let queue: Uint8Array[] = [];
  let queued = 0;
  let published = 0;
  let headSent = false;
  let stopped = false;
  // When the last part was sent (performance.now()), and the parts sent or waiting to be sent behind it.
  let lastSentAt = Number.NEGATIVE_INFINITY;
  let pending = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // The publish in flight: parts go one after another, so offsets stay exact.
  let inFlight: Promise<boolean> = Promise.resolve(true);

  const clearTimer = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  const stop = (reason?: "refused" | "failed", error?: unknown) => {
    if (stopped) return;
    stopped = true;
    clearTimer();
    queue = [];
    queued = 0;
    if (reason) options.onStop?.(reason, error);
  };
  const send = async (): Promise<boolean> => {
    if (stopped) return false;
    if (headSent && queued === 0) return true;
    const body = concat(queue, queued);
    queue = [];
    queued = 0;
    const part = headSent ? { offset: published, body } : { head, offset: published, body };
    lastSentAt = performance.now();
    try {
      if (!(await store.publishLive(storeKey, token, part))) {
        stop("refused");
        return false;
      }
    } catch (error) {
      // A part that may or may not have landed: a later one would be a gap. Readers then wait for the commit.
      stop("failed", error);
      return false;
    }
    headSent = true;
    published += body.length;
    return !stopped;
  };
  const flush = (): Promise<boolean> => {
    clearTimer();
    pending++;
    inFlight = inFlight.then(send).finally(() => {
      // Bytes written while this part was in flight go next, paced like any write.
      if (--pending === 0 && queued > 0) schedule();
    });
    return inFlight;
  };
  const flushLater = (ms: number) => {
    clearTimer();
    timer = setTimeout(() => {
      timer = undefined;
      flush().catch(() => {});
    }, ms);
  };
  /** Sends the queue at once when no part went within maxDelayMs and none is in flight, else when that holds. */
  const schedule = () => {
    // A timer set before the head went is the head's own: a write replaces it.
    if (stopped || pending > 0 || (timer !== undefined && headSent)) return;
    const wait = lastSentAt + maxDelayMs - performance.now();
    if (wait > 0) flushLater(wait);
    else flush().catch(() => {});
  };
  flushLater(maxDelayMs); // the head alone, if no byte comes within maxDelayMs

  return {
    write(bytes) {
      if (stopped || bytes.length === 0) return;
      queue.push(new Uint8Array(bytes));
      queued += bytes.length;
      if (queued >= maxBytes) flush().catch(() => {});
      else schedule();
    },
    flush,
    close: () => {
      stop();
      return inFlight.then(
        () => {},
        () => {},
      );
    },
    get published() {
      return published;
    },
    get stopped() {
      return stopped;
    },
  };
}

/** What a reader gets, in order: a head, body bytes, then (unless it ends with "absent") the record. */
export type LiveEvent =
  /** The stream's head: `stream` names the execution whose bytes follow. */
  | { type: "head"; stream: string; head: LiveHead }
  /** The next body bytes. */
  | { type: "body"; bytes: Uint8Array }
  /** The record. After a head: its body equals the bytes yielded (the rest came as a last "body"). */
  | { type: "done"; record: StoredRecord }
  /** Before any head only: nothing holds the key (released or lapsed): the caller acquires again. */
  | { type: "absent" };

export interface FollowLiveOptions {
  /** Aborts the wait (e.g. `waitTimeoutMs` for the first byte): the generator then throws the signal's reason. */
  signal?: AbortSignal;
  /** First poll interval when no wake-up comes, in ms; doubles up to `maxPollMs` while nothing changes. Default 25. */
  minPollMs?: number;
  /** Longest poll interval, in ms. Default 1000. */
  maxPollMs?: number;
}

/**
 * A duplicate's read of the live stream at `storeKey`, from byte 0, then live, then the end. Woken by
 * `subscribeLive` and `subscribe` where the store has them, polling with backoff otherwise (and as a safety
 * net: a lapsed lease wakes no one). Reads at the consumer's pace. Holding nothing, it follows whichever
 * execution streams; once it yielded a head, it throws LiveStreamLostError rather than yield bytes of another.
 */
export async function* followLive(
  store: LiveStore,
  storeKey: string,
  options: FollowLiveOptions = {},
): AsyncGenerator<LiveEvent, void, undefined> {
  const minPoll = options.minPollMs ?? 25;
  const maxPoll = options.maxPollMs ?? 1000;
  const { signal } = options;
  let woken = false;
  let wake: (() => void) | undefined;
  const onChange = () => {
    woken = true;
    wake?.();
  };
  const offs = [store.subscribeLive?.(storeKey, onChange), store.subscribe?.(storeKey, onChange)];
  let stream: string | undefined;
  let offset = 0;
  let poll = minPoll;
  try {
    for (;;) {
      signal?.throwIfAborted();
      woken = false;
      const read = await store.readLive(storeKey, stream, offset);
      let progressed = false;
      if (read.state === "done") {
        if (stream === undefined) {
          yield { type: "done", record: read.record };
          return;
        }
        if (read.stream !== stream || read.record.body.length < offset) {
          throw new LiveStreamLostError("replaced", "idemfetch: another execution committed the stream being read");
        }
        if (read.record.body.length > offset) yield { type: "body", bytes: read.record.body.subarray(offset) };
        yield { type: "done", record: read.record };
        return;
      }
      if (read.state === "absent") {
        if (stream !== undefined) throw new LiveStreamLostError("ended", "idemfetch: the live stream ended unfinished");
        yield { type: "absent" };
        return;
      }
      if (read.state === "live") {
        if (stream === undefined) {
          stream = read.stream;
          yield { type: "head", stream, head: read.head };
          progressed = true;
        } else if (read.stream !== stream) {
          throw new LiveStreamLostError("replaced", "idemfetch: another execution took over the stream being read");
        }
        if (read.body.length > 0) {
          offset += read.body.length;
          progressed = true;
          yield { type: "body", bytes: read.body };
        }
      } else if (stream !== undefined) {
        // "pending" after a head: the lease changed hands and the new one has not streamed yet.
        throw new LiveStreamLostError("replaced", "idemfetch: another execution took over the stream being read");
      }
      // After progress, too, wait for the next wake-up (one read per publish, not two): a wake-up that came
      // during the read is not lost (`woken`), and the poll covers a store without notifications.
      if (progressed) poll = minPoll;
      if (!woken) {
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            signal?.removeEventListener("abort", done);
            wake = undefined;
            resolve();
          };
          const timer = setTimeout(done, poll);
          wake = done;
          signal?.addEventListener("abort", done, { once: true });
        });
        if (!progressed) poll = Math.min(poll * 2, maxPoll);
      }
    }
  } finally {
    for (const off of offs) off?.();
  }
}
