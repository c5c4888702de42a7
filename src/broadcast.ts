// The leader's response body handed live to every caller of a flight, with each caller's own bytes and bounded buffering.
import { concat } from "./body.ts";

/** Past the record limit, how far the fastest reader may run ahead of the slowest, in bytes. */
const AHEAD_BYTES = 64 * 1024;

export interface BroadcastHooks {
  /**
   * The source ended: `body` holds every byte when they fit the limit, else null. Readers end only once
   * the returned promise settles (the commit or release): durable before delivered.
   */
  end(body: Uint8Array | null): Promise<void>;
  /** The body passed the limit: it will not be kept for a record. */
  overflow(): void;
  /** The source failed; readers fail once the returned promise settles (the release). */
  error(error: unknown): Promise<void>;
}

interface Reader {
  /** Index (from the start of the body) of the next chunk this reader gets. */
  cursor: number;
  /** Set while the reader waits for a chunk. */
  wake: (() => void) | undefined;
}

/**
 * Reads the source once. While the body fits `limit` every chunk is kept (the record needs them) and the
 * source is read as fast as it comes, whoever reads; past the limit chunks are dropped as soon as every
 * reader has had them, and the source is read only as fast as the slowest reader (backpressure).
 */
export class Broadcast {
  /** Chunks from index `base` on; while keeping, base is 0 and this is the whole body so far. */
  private window: Uint8Array[] = [];
  private base = 0;
  private windowBytes = 0;
  private size = 0;
  private keeping = true;
  private state: "open" | "ending" | "ended" | "failing" | "failed" = "open";
  private failure: unknown;
  private readonly readers = new Set<Reader>();
  private reading = false;
  /** A read started before this broadcast took the source (by `readReady`), consumed first. */
  private next: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;

  /** Chunks read before this broadcast took the source; pushed once readers exist, so none is trimmed unseen. */
  private primed: Uint8Array[] = [];

  constructor(
    private readonly source: ReadableStreamDefaultReader<Uint8Array>,
    private readonly limit: number,
    private readonly hooks: BroadcastHooks,
  ) {}

  /** Goes on from what `readReady` took of the source: its chunks, then its pending read (if any). */
  resume(read: { chunks: Uint8Array[]; next: Promise<ReadableStreamReadResult<Uint8Array>> | undefined }): void {
    this.primed = read.chunks;
    this.next = read.next;
  }

  /** Starts reading; call once the first callers have their readers, so no chunk is dropped before them. */
  start(): void {
    for (const chunk of this.primed) this.push(chunk);
    this.primed = [];
    void this.pump();
  }

  /** Whether a new reader still gets the whole body. */
  get whole(): boolean {
    return this.base === 0 && this.state !== "failed" && this.state !== "failing";
  }

  /** A stream of the whole body for one caller; its signal aborting errors only this stream. */
  reader(signal: AbortSignal | undefined, onAbort: () => void): ReadableStream<Uint8Array> {
    const r: Reader = { cursor: 0, wake: undefined };
    this.readers.add(r);
    let stopListening = (): void => {};
    return new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          if (!signal) return;
          const aborted = (): void => {
            if (!this.readers.has(r)) return;
            this.detach(r);
            controller.error(signal.reason);
            onAbort();
          };
          if (signal.aborted) return aborted();
          signal.addEventListener("abort", aborted, { once: true });
          stopListening = () => signal.removeEventListener("abort", aborted);
        },
        pull: (controller) => this.feed(r, controller, stopListening),
        cancel: () => {
          stopListening();
          this.detach(r);
        },
      },
      { highWaterMark: 0 },
    );
  }

  private feed(
    r: Reader,
    controller: ReadableStreamDefaultController<Uint8Array>,
    done: () => void,
  ): Promise<void> | undefined {
    if (!this.readers.has(r)) return;
    const i = r.cursor - this.base;
    if (i < 0) {
      this.detach(r);
      done();
      controller.error(new Error("idemfetch: this response body is no longer available"));
      return;
    }
    const chunk = this.window[i];
    if (chunk !== undefined) {
      r.cursor++;
      // A copy: Buffer#slice is a view, and no caller may change another's bytes or the record.
      controller.enqueue(new Uint8Array(chunk));
      if (!this.keeping) {
        this.trim();
        void this.pump();
      }
      return;
    }
    if (this.state === "ended" || this.state === "failed") {
      this.detach(r);
      done();
      if (this.state === "ended") controller.close();
      else controller.error(this.failure);
      return;
    }
    const waited = new Promise<void>((resolve) => {
      r.wake = () => {
        r.wake = undefined;
        resolve();
      };
    });
    void this.pump();
    return waited.then(() => this.feed(r, controller, done));
  }

  private async pump(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      while (this.state === "open" && this.wanted()) {
        const pending = this.next ?? this.source.read();
        this.next = undefined;
        const { done, value } = await pending;
        if (done) return this.finish();
        this.push(value);
      }
    } catch (error) {
      this.fail(error);
    } finally {
      this.reading = false;
    }
  }

  /** Keeping reads ahead (the record needs every byte); past the limit only a waiting reader pulls, within bounds. */
  private wanted(): boolean {
    if (this.keeping) return true;
    if (this.readers.size === 0) {
      // Nobody will read what is not kept: stop the source.
      this.state = "ended";
      this.source.cancel().catch(() => {});
      return false;
    }
    if (this.windowBytes >= AHEAD_BYTES) return false;
    for (const r of this.readers) if (r.wake) return true;
    return false;
  }

  private push(value: Uint8Array): void {
    if (value.length === 0) return;
    this.size += value.length;
    this.window.push(value);
    this.windowBytes += value.length;
    if (this.keeping && this.size > this.limit) {
      this.keeping = false;
      this.hooks.overflow();
      this.trim();
    }
    this.wakeAll();
  }

  private finish(): void {
    this.state = "ending";
    const body = this.keeping ? concat(this.window, this.size) : null;
    this.hooks.end(body).then(() => {
      this.state = "ended";
      this.wakeAll();
    });
  }

  private fail(error: unknown): void {
    this.state = "failing";
    this.failure = error;
    this.hooks.error(error).then(() => {
      this.state = "failed";
      this.wakeAll();
    });
  }

  private detach(r: Reader): void {
    if (!this.readers.delete(r)) return;
    r.wake = undefined;
    if (this.keeping) return;
    this.trim();
    void this.pump();
  }

  /** Drops chunks every reader has had (only once nothing is kept for a record). */
  private trim(): void {
    let min = this.base + this.window.length;
    for (const r of this.readers) min = Math.min(min, r.cursor);
    while (this.base < min) {
      const chunk = this.window.shift() as Uint8Array;
      this.windowBytes -= chunk.length;
      this.base++;
    }
  }

  private wakeAll(): void {
    for (const r of this.readers) r.wake?.();
  }
}
