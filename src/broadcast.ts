// The leader's answer body handed live to every caller of a flight, with each caller's own bytes and bounded buffering.
import { concat } from "./body.ts";
import type { Source, Tap } from "./call.ts";

/** Past the record limit, how far the fastest reader may run ahead of the slowest, in bytes. */
const AHEAD_BYTES = 64 * 1024;
/**
 * Past the record limit, how long a reader may hold the others back (they wait, it does not pull) before its
 * body is errored and the others go on, in ms (docs/protocol.md "Sharing a live answer").
 */
export const STALL_MS = 1000;

export interface BroadcastHooks {
  /**
   * The source ended: `body` holds every byte when they fit the limit, else null. Readers end only once
   * the returned promise settles (the leader's end: store write, flight closed): durable before delivered.
   */
  end(body: Uint8Array | null): Promise<void>;
  /** The body passed the limit: it will not be kept for a record. */
  overflow(): void;
  /** The source failed; readers fail once the returned promise settles. */
  error(error: unknown): Promise<void>;
}

interface Reader {
  /** Index (from the start of the body) of the next chunk this reader gets. */
  cursor: number;
  /** Set while the reader waits for a chunk. */
  wake: (() => void) | undefined;
  /** Set once this reader was stopped: by its caller, or for holding the others back. */
  failure: unknown;
}

/**
 * Reads the source once. While the body fits `limit` every chunk is kept (the record needs them) and the
 * source is read as fast as it comes, whoever reads; past the limit chunks are dropped as soon as every
 * reader has had them, and the source is read only as fast as the slowest reader (backpressure), unless that
 * reader stalls the others for STALL_MS.
 */
export class Broadcast {
  /** Chunks from index `base` on; while keeping, base is 0 and this is the whole body so far. */
  private window: Uint8Array[] = [];
  private base = 0;
  private windowBytes = 0;
  private size = 0;
  private keep = true;
  private state: "open" | "ending" | "ended" | "failing" | "failed" = "open";
  private failure: unknown;
  private readonly readers = new Set<Reader>();
  private reading = false;
  private stallTimer: ReturnType<typeof setTimeout> | undefined;
  /** Chunks read before this broadcast took the source; pushed once readers exist, so none is trimmed unseen. */
  private primed: Uint8Array[] = [];

  constructor(
    private readonly source: Source,
    private readonly limit: number,
    private readonly hooks: BroadcastHooks,
  ) {}

  /** A read started before this broadcast took the source (by `readReady`), consumed first. */
  private next: ReturnType<Source["read"]> | undefined;

  /** Goes on from what `readReady` took of the source: its chunks, then its pending read (if any). */
  resume(read: { chunks: Uint8Array[]; next: ReturnType<Source["read"]> | undefined }): void {
    this.primed = read.chunks;
    this.next = read.next;
  }

  /** Starts reading; call once the first callers have their taps, so no chunk is dropped before them. */
  start(): void {
    for (const chunk of this.primed) this.push(chunk);
    this.primed = [];
    void this.pump();
  }

  /** Whether every byte is still kept for a record (the body has not passed the limit). */
  get keeping(): boolean {
    return this.keep;
  }

  /** Whether a new reader still gets the whole body. */
  get whole(): boolean {
    return this.base === 0 && this.state !== "failed" && this.state !== "failing";
  }

  /** The whole body for one caller, from the first byte. */
  tap(): Tap {
    const r: Reader = { cursor: 0, wake: undefined, failure: undefined };
    this.readers.add(r);
    const cancel = (): void => this.detach(r, new Error("idemfetch: this body was cancelled"));
    return { pull: () => this.pull(r), cancel, abandon: cancel };
  }

  private async pull(r: Reader): Promise<Uint8Array | null> {
    for (;;) {
      if (r.failure !== undefined) throw r.failure;
      const i = r.cursor - this.base;
      if (i < 0) {
        this.detach(r, new Error("idemfetch: this response body is no longer available"));
        continue;
      }
      const chunk = this.window[i];
      if (chunk !== undefined) {
        r.cursor++;
        if (!this.keep) {
          this.trim();
          void this.pump();
        }
        return chunk;
      }
      if (this.state === "ended") {
        this.readers.delete(r);
        return null;
      }
      if (this.state === "failed") {
        this.readers.delete(r);
        throw this.failure;
      }
      const waited = new Promise<void>((resolve) => {
        r.wake = () => {
          r.wake = undefined;
          resolve();
        };
      });
      void this.pump();
      await waited;
    }
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
        this.push(value as Uint8Array);
      }
    } catch (error) {
      this.fail(error);
    } finally {
      this.reading = false;
    }
  }

  /** Keeping reads ahead (the record needs every byte); past the limit only a waiting reader pulls, within bounds. */
  private wanted(): boolean {
    if (this.keep) return true;
    if (this.readers.size === 0) {
      // Nobody will read what is not kept: stop the source.
      this.state = "ended";
      Promise.resolve(this.source.cancel()).catch(() => {});
      return false;
    }
    const waiting = [...this.readers].some((r) => r.wake);
    if (this.windowBytes >= AHEAD_BYTES) {
      if (waiting) this.watchStall();
      return false;
    }
    return waiting;
  }

  /** The window is full and someone waits: the readers at its start get STALL_MS to pull, else they are dropped. */
  private watchStall(): void {
    if (this.stallTimer) return;
    const slowest = this.base;
    const timer = setTimeout(() => {
      this.stallTimer = undefined;
      if (this.base !== slowest || this.state !== "open") return;
      for (const r of this.readers) {
        if (r.cursor === slowest && !r.wake) {
          this.detach(r, new Error(`idemfetch: this body fell behind the other callers for ${STALL_MS} ms`));
        }
      }
    }, STALL_MS);
    (timer as { unref?: () => void }).unref?.();
    this.stallTimer = timer;
  }

  private push(value: Uint8Array): void {
    if (value.length === 0) return;
    this.size += value.length;
    this.window.push(value);
    this.windowBytes += value.length;
    if (this.keep && this.size > this.limit) {
      this.keep = false;
      this.hooks.overflow();
      this.trim();
    }
    this.wakeAll();
  }

  private finish(): void {
    this.state = "ending";
    const body = this.keep ? concat(this.window, this.size) : null;
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

  private detach(r: Reader, failure: unknown): void {
    if (!this.readers.delete(r)) return;
    r.failure = failure;
    r.wake?.();
    if (this.keep) return;
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
    if (this.stallTimer && this.windowBytes < AHEAD_BYTES) {
      clearTimeout(this.stallTimer);
      this.stallTimer = undefined;
    }
  }

  private wakeAll(): void {
    for (const r of this.readers) r.wake?.();
  }
}
