// A flight: one upstream call (or wait, or replay) per store key in this process, and the callers attached to it.
import { Broadcast } from "./broadcast.ts";
import type { Reply, Tap } from "./call.ts";
import { NULL_BODY, replayPairs, storablePairs } from "./record.ts";
import type { StoredRecord } from "./store.ts";

/** What a flight ends with; every caller turns it into a reply of its own. */
export type Outcome =
  /**
   * The leader's answer, its body shared live, or whole (already committed) when it was all in memory.
   * `remote`: the live stream of a leader in another process (docs/protocol.md "The live-stream capability"),
   * so every caller here gets it as a duplicate does.
   */
  | { kind: "live"; head: Head; body: Broadcast | Uint8Array | null; remote?: true }
  /** An answer no copy can be made of (opaque, status 0): the face's own object. */
  | { kind: "raw"; native: unknown }
  /** A stored record, already checked to make a reply. */
  | { kind: "record"; record: StoredRecord }
  /** An answer of the library's own (conflict, in progress, unavailable). */
  | { kind: "answer"; reply: () => Reply }
  | { kind: "fail"; error: unknown };

/** The head of the leader's answer. */
export interface Head {
  status: number;
  statusText: string;
  headers: [string, string][];
  url?: string | undefined;
}

/** How this flight's answers look to callers who did not lead it. */
export interface View {
  /** Set-Cookie never reaches another caller unless the scope proves it is the same client. */
  dropSetCookie: boolean;
  /** Headers a shared answer never carries. */
  dropHeaders: ReadonlySet<string>;
  /** Counts the first caller's replay of an answer with `status` (joiners were counted when they joined). */
  replayed(status: number): void;
}

interface Caller {
  resolve: (reply: Reply) => void;
  reject: (error: unknown) => void;
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
  /** Headers every caller but the first gets, made once. */
  private shared: [string, string][] | undefined;

  constructor(
    readonly fingerprint: string,
    private readonly view: View,
    abortable: boolean,
    private readonly onClose: () => void,
  ) {
    this.abort = abortable ? new AbortController() : undefined;
  }

  /** How many callers have attached so far (aborted ones included). */
  get attached(): number {
    return this.callers;
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

  attach(signal: AbortSignal | undefined, first: boolean): Promise<Reply> {
    this.callers++;
    return new Promise<Reply>((resolve, reject) => {
      const caller: Caller = { resolve, reject, first };
      if (this.outcome) {
        this.deliver(caller, this.outcome);
        return;
      }
      this.waiting.push(caller);
      if (!signal) return;
      const aborted = (): void => {
        const at = this.waiting.indexOf(caller);
        if (at < 0) return;
        this.waiting.splice(at, 1);
        reject(signal.reason);
        this.abortOne();
      };
      // Aborted between the caller's check and here (the same tick): no event will come.
      if (signal.aborted) aborted();
      else signal.addEventListener("abort", aborted, { once: true });
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

  /** One caller's live body was given up; the last one stops the upstream call. */
  readonly abortOne = (): void => {
    if (++this.aborted < this.callers) return;
    this.close();
    this.abort?.abort(new DOMException("Every caller of this request aborted", "AbortError"));
  };

  private tap(body: Broadcast): Tap {
    const tap = body.tap();
    return {
      pull: tap.pull,
      cancel: tap.cancel,
      abandon: () => {
        tap.cancel();
        // A body still kept for its record is read to its end and stored: the next retry wants it.
        if (!body.keeping) this.abortOne();
      },
    };
  }

  private deliver(caller: Caller, outcome: Outcome): void {
    if (outcome.kind === "fail") caller.reject(outcome.error);
    else caller.resolve(this.replyFor(caller, outcome));
  }

  private replyFor(caller: Caller, outcome: Exclude<Outcome, { kind: "fail" }>): Reply {
    const { view } = this;
    switch (outcome.kind) {
      case "answer":
        return outcome.reply();
      case "raw":
        return { native: outcome.native, first: caller.first };
      case "record": {
        const { record } = outcome;
        if (caller.first) view.replayed(record.status);
        this.shared ??= replayPairs(record.headers, view.dropSetCookie);
        const body = NULL_BODY.has(record.status) ? null : record.body;
        return { status: record.status, statusText: record.statusText, headers: this.shared, body, own: false };
      }
      case "live": {
        const { head, body } = outcome;
        const own = caller.first && !outcome.remote;
        if (caller.first && outcome.remote) view.replayed(head.status);
        const content = NULL_BODY.has(head.status) ? null : body instanceof Broadcast ? this.tap(body) : body;
        const headers = own
          ? head.headers
          : (this.shared ??= replayPairs(storablePairs(head.headers, view.dropHeaders), view.dropSetCookie));
        const reply: Reply = {
          status: head.status,
          statusText: head.statusText,
          headers,
          body: content,
          own,
        };
        if (head.url) reply.url = head.url;
        return reply;
      }
    }
  }
}
