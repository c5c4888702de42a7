// A flight: one upstream call (or wait, or replay) per store key in this process, and the callers attached to it.
import { Broadcast } from "./broadcast.ts";
import { NULL_BODY, replayHeaders, replayResponse, storableHeaders } from "./record.ts";
import type { StoredRecord } from "./store.ts";

/** What a flight ends with; every caller turns it into a Response of its own. */
export type Outcome =
  /** The leader's response, its body shared live, or whole (already committed) when it was all in memory. */
  | { kind: "live"; head: Response; body: Broadcast | Uint8Array | null }
  /** A response no copy can be made of (opaque, status 0): clones. */
  | { kind: "raw"; response: Response }
  /** A stored record, already proven to make a Response. */
  | { kind: "record"; record: StoredRecord }
  /** An answer of the library's own (conflict, in progress, unavailable). */
  | { kind: "answer"; make: () => Response }
  | { kind: "fail"; error: unknown };

/** How this flight's responses look to callers who did not lead it. */
export interface View {
  /** Set-Cookie never reaches another caller unless the scope proves it is the same client. */
  dropSetCookie: boolean;
  /** Headers a shared response never carries. */
  dropHeaders: ReadonlySet<string>;
  /** The request URL, for `Response.url` of replays. */
  url: string;
  /** Counts the first caller's replay (joiners were counted when they joined). */
  replayed(record: StoredRecord): void;
}

interface Caller {
  resolve: (response: Response) => void;
  reject: (error: unknown) => void;
  signal: AbortSignal | undefined;
  first: boolean;
}

/**
 * Joinable from creation until `close()`, which runs once; settled with one outcome, once. A caller's
 * abort rejects only that caller; the upstream call is aborted once every caller has aborted.
 */
export class Flight {
  /** Aborts the upstream call; only made when the first caller can abort (else no caller ever all-aborts). */
  readonly abort: AbortController | undefined;
  /** Holds the lease or runs unprotected: its fingerprint is the key's now. */
  leading = false;
  /** Settles once this flight's store writes have (the commit or release): what `waitUntil` hooks get. */
  durable: Promise<void> = Promise.resolve();
  private open = true;
  private outcome: Outcome | undefined;
  private waiting: Caller[] = [];
  private callers = 0;
  private aborted = 0;
  /** The first caller's replay, made by `prepare` while checking the record. */
  private prepared: Response | undefined;
  /** Headers every caller but the first gets, made once: a Response copies the Headers it is given. */
  private shared: Headers | undefined;

  constructor(
    readonly fingerprint: string,
    private readonly view: View,
    abortable: boolean,
    private readonly onClose: () => void,
  ) {
    this.abort = abortable ? new AbortController() : undefined;
  }

  get joinable(): boolean {
    return this.open;
  }

  /** No new caller joins after this: the next one goes to the store. Runs once. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.onClose();
  }

  attach(signal: AbortSignal | undefined, first: boolean): Promise<Response> {
    this.callers++;
    return new Promise<Response>((resolve, reject) => {
      const caller: Caller = { resolve, reject, signal, first };
      if (this.outcome) {
        this.deliver(caller, this.outcome);
        return;
      }
      this.waiting.push(caller);
      signal?.addEventListener(
        "abort",
        () => {
          const at = this.waiting.indexOf(caller);
          if (at < 0) return;
          this.waiting.splice(at, 1);
          reject(signal.reason);
          this.abortOne();
        },
        { once: true },
      );
    });
  }

  /** Hands the outcome to every caller waiting, and to every later joiner. Runs once. */
  settle(outcome: Outcome): void {
    if (this.outcome) return;
    this.outcome = outcome;
    if (outcome.kind !== "live") this.close();
    const waiting = this.waiting;
    this.waiting = [];
    for (const caller of waiting) this.deliver(caller, outcome);
    if (outcome.kind === "live" && outcome.body instanceof Broadcast) outcome.body.start();
  }

  /** Makes the first caller's replay of `record` now; false when no Response can be made of it (a foreign record). */
  prepare(record: StoredRecord): boolean {
    // Headers made from an earlier record (one that failed, or another the store returned since) never carry over.
    this.shared = undefined;
    try {
      this.prepared = this.replay(record);
      return true;
    } catch {
      return false;
    }
  }

  private replay(record: StoredRecord): Response {
    const { view } = this;
    this.shared ??= replayHeaders(record.headers, view.dropSetCookie);
    return withUrl(replayResponse(record, view.dropSetCookie, this.shared), view.url);
  }

  /** One caller gave up; the last one stops the upstream call. */
  private abortOne(): void {
    if (++this.aborted < this.callers) return;
    this.close();
    this.abort?.abort(new DOMException("Every caller of this request aborted", "AbortError"));
  }

  private deliver(caller: Caller, outcome: Outcome): void {
    if (outcome.kind === "fail") {
      caller.reject(outcome.error);
      return;
    }
    try {
      caller.resolve(this.responseFor(caller, outcome));
    } catch (error) {
      // Building a Response can throw (a header of a foreign record); that caller gets the error, nobody hangs.
      caller.reject(error);
    }
  }

  private responseFor(caller: Caller, outcome: Exclude<Outcome, { kind: "fail" }>): Response {
    const { view } = this;
    switch (outcome.kind) {
      case "answer":
        return outcome.make();
      case "raw":
        return caller.first ? outcome.response : outcome.response.clone();
      case "record": {
        if (!caller.first) return this.replay(outcome.record);
        view.replayed(outcome.record);
        const prepared = this.prepared;
        this.prepared = undefined;
        return prepared ?? this.replay(outcome.record);
      }
      case "live": {
        const { head, body } = outcome;
        // Bytes need no copy: a Response copies the BufferSource it is given, so every caller owns its own.
        const content =
          body instanceof Broadcast ? body.reader(caller.signal, () => this.abortOne()) : (body as BodyInit | null);
        const response = new Response(NULL_BODY.has(head.status) ? null : content, {
          status: head.status,
          statusText: head.statusText,
          headers: caller.first
            ? head.headers
            : (this.shared ??= replayHeaders(storableHeaders(head.headers, view.dropHeaders), view.dropSetCookie)),
        });
        return withUrl(response, head.url || view.url);
      }
    }
  }
}

/** Sets `url` on a Response made here (so its own is ""); never reads it: on @hono/node-server that builds a full Response. */
function withUrl(response: Response, url: string): Response {
  if (url) Object.defineProperty(response, "url", { value: url });
  return response;
}
