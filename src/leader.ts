// The leader of a flight: holds the lease, sends upstream once, and ends everything through one `end`.
import { readReady } from "./body.ts";
import { Broadcast } from "./broadcast.ts";
import type { Answer, Source } from "./call.ts";
import type { StoreOp } from "./events.ts";
import type { Flight, Head, Outcome } from "./flight.ts";
import { Lease } from "./lease.ts";
import { type LiveWriter, liveWriter } from "./live.ts";
import { NULL_BODY, storablePairs } from "./record.ts";
import { hasLive, type IdempotencyStore, type StoredRecord } from "./store.ts";

/** How a leader's flight ends: its answer stored, not stored (and why), or failed. */
export type End =
  | { kind: "commit"; head: Head; body: Uint8Array }
  | { kind: "release"; head?: Head; reason?: string }
  | { kind: "fail"; error: unknown };

/** What a leader needs of its engine, given explicitly. */
export interface LeaderDeps {
  store: IdempotencyStore;
  storeKey: string;
  leaseMs: number;
  maxBodyBytes: number;
  /** How long the record lives, in ms. */
  ttlMs: number;
  /** Whether an answer with this head is stored (the `shouldStore` option). */
  storable(head: Head): boolean;
  /** Headers a record never holds. */
  dropHeaders: ReadonlySet<string>;
  flight: Flight;
  /** Reports the leader's events: execute, stored, not-stored, store-error, stale-token. */
  report(event: LeaderEvent): void;
}

export type LeaderEvent =
  | { type: "execute" }
  | { type: "stored"; status: number; bytes: number }
  | { type: "not-stored"; status: number; reason: string }
  | { type: "store-error"; op: StoreOp; reason: string; error?: unknown }
  | { type: "stale-token"; op: "commit" | "release" | "renew"; reason: string };

/**
 * Owns the lease, the fan-out and the flight's closing. Every way out goes through `end`, once: the store
 * write (commit or release), then the flight closes; readers of the answer are released only once `end`
 * has settled (durable before delivered). `ended` settles with it and never rejects.
 */
export class Leader {
  private readonly lease: Lease;
  private ending: Promise<void> | undefined;
  /** The live stream duplicates elsewhere read while the body streams (stores with the capability only). */
  private live: LiveWriter | undefined;

  constructor(
    private readonly deps: LeaderDeps,
    private readonly token: string | null,
  ) {
    deps.flight.leading = true;
    this.lease = new Lease(deps.store, deps.storeKey, token, deps.leaseMs, (type, op, error) => {
      if (type === "stale-token") {
        deps.report({ type, op: op as "commit", reason: `${op} found the lease held by someone else` });
      } else if (error === undefined) {
        deps.report({ type, op: op as StoreOp, reason: `${op} failed` });
      } else {
        deps.report({ type, op: op as StoreOp, reason: `${op} failed`, error });
      }
    });
    deps.report({ type: "execute" });
  }

  /** Settles once the lease has ended (committed or released). */
  get ended(): Promise<void> {
    return this.lease.ended;
  }

  /** The one way out, once; later calls get the first one's settlement. */
  end(how: End): Promise<void> {
    this.ending ??= this.finish(how);
    return this.ending;
  }

  private async finish(how: End): Promise<void> {
    const { flight } = this.deps;
    // The commit carries every byte (and ends the stream for its readers); a release ends it unfinished. Both go
    // after the part in flight has settled: a store knows a streamed lease by the parts it saw answered.
    await this.live?.close();
    if (how.kind === "commit") {
      const { head, body } = how;
      const record: StoredRecord = {
        status: head.status,
        statusText: head.statusText,
        headers: storablePairs(head.headers, this.deps.dropHeaders),
        body,
        createdAt: Date.now(),
        fingerprint: flight.fingerprint,
      };
      if (await this.lease.commit(record, this.deps.ttlMs)) {
        this.deps.report({ type: "stored", status: head.status, bytes: body.length });
      }
      flight.close();
      return;
    }
    if (how.kind === "release" && how.head && how.reason) {
      this.deps.report({ type: "not-stored", status: how.head.status, reason: how.reason });
    }
    // Nothing to make durable: the flight closes first, so a retry after this answer runs again.
    flight.close();
    await this.lease.release();
  }

  /** Sends upstream once and turns what it answered into the flight's outcome. */
  async run(send: () => Promise<Answer>): Promise<Outcome> {
    let answer: Answer;
    try {
      answer = await send();
    } catch (error) {
      await this.end({ kind: "fail", error });
      return { kind: "fail", error };
    }
    if (answer.native !== undefined) {
      // An answer no copy can be made of (opaque, status 0): handed out as it is, nothing stored.
      await this.end({ kind: "release" });
      return { kind: "raw", native: answer.native };
    }
    const head: Head = { status: answer.status, statusText: answer.statusText, headers: answer.headers };
    if (answer.url) head.url = answer.url;
    let storable: boolean;
    try {
      storable = answer.storable !== false && this.deps.storable(head) === true;
    } catch {
      storable = false;
    }
    const limit = this.deps.maxBodyBytes;
    if (!storable) void this.end({ kind: "release", head, reason: `status ${head.status} is not stored` });

    const source = answer.body;
    if (source === null || NULL_BODY.has(head.status) || source instanceof Uint8Array) {
      const body = source instanceof Uint8Array && !NULL_BODY.has(head.status) ? source : null;
      // No body to hold back: the answer itself waits for the end.
      if (body && body.length > limit) {
        await this.end({ kind: "release", head, reason: `body larger than maxBodyBytes (${limit})` });
      } else {
        await this.end({ kind: "commit", head, body: body ?? new Uint8Array(0) });
      }
      return { kind: "live", head, body };
    }
    const read = storable ? await readReady(source, limit) : undefined;
    if (read && "whole" in read) {
      // The whole body was in memory: commit, then answer bytes (one write, no stream per caller).
      await this.end({ kind: "commit", head, body: read.whole });
      return { kind: "live", head, body: read.whole };
    }
    const publish = storable ? this.publish(head) : undefined;
    const body = new Broadcast(publish ? publishing(source, publish) : source, storable ? limit : -1, {
      end: (bytes) => this.end(bytes ? { kind: "commit", head, body: bytes } : { kind: "release" }),
      overflow: () => {
        // Past the limit nothing is stored, so the release ends the live stream: its remote readers get an error.
        void this.live?.close();
        if (storable) void this.end({ kind: "release", head, reason: `body larger than maxBodyBytes (${limit})` });
      },
      error: (error) => this.end({ kind: "fail", error }),
    });
    if (read && publish) {
      for (const chunk of read.chunks) publish(chunk);
      const next = read.next?.then((r) => {
        if (!r.done) publish(r.value);
        return r;
      });
      body.resume({ chunks: read.chunks, next });
    } else if (read) {
      body.resume(read);
    }
    return { kind: "live", head, body };
  }

  /**
   * Starts the live stream of a streamed answer, for duplicates in other processes (docs/protocol.md "The
   * live-stream capability"): only under a lease, and only on a store that has the capability.
   */
  private publish(head: Head): ((chunk: Uint8Array) => void) | undefined {
    const { store, storeKey, dropHeaders } = this.deps;
    if (this.token === null || !hasLive(store)) return undefined;
    const stored = {
      status: head.status,
      statusText: head.statusText,
      headers: storablePairs(head.headers, dropHeaders),
    };
    const writer = liveWriter(store, storeKey, this.token, stored, {
      onStop: (reason, error) => {
        // Refused: the lease is gone, and the commit or release reports it. Failed: readers wait for the commit.
        if (reason === "failed")
          this.deps.report({ type: "store-error", op: "publishLive", reason: "publishLive failed", error });
      },
    });
    this.live = writer;
    return (chunk) => writer.write(chunk);
  }
}

/** The source, each chunk also handed to `publish` as the broadcast reads it. */
const publishing = (source: Source, publish: (chunk: Uint8Array) => void): Source => ({
  read: async () => {
    const r = await source.read();
    if (!r.done) publish(r.value);
    return r;
  },
  cancel: (reason) => source.cancel(reason),
});
