// The lease's life in one object: taken → heartbeat → committed or released, exactly once (docs/protocol.md "Lifecycles").
import type { IdempotencyStore, StoredRecord } from "./store.ts";

/** Reports a store problem or a lost lease; never throws. */
export type LeaseReport = (type: "store-error" | "stale-token", op: string, error?: unknown) => void;

/**
 * The leader's hold on a store key. `commit` and `release` are the only ways out; whichever runs first
 * wins, the other returns the same settlement: whether the store took it (false: the store failed, the
 * token was stale, or the call ran without a lease). `ended` resolves once the store has answered (or the
 * deadline passed), never rejects: it is what "durable before delivered" waits on.
 */
export class Lease {
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private outcome: Promise<boolean> | undefined;
  private finish!: () => void;
  /** Settles when the lease is committed or released (successfully or not). */
  readonly ended: Promise<void> = new Promise<void>((resolve) => {
    this.finish = resolve;
  });

  constructor(
    private readonly store: IdempotencyStore,
    private readonly storeKey: string,
    /** The owner token; null when the call runs unprotected (store down, fail-open). */
    readonly token: string | null,
    private readonly leaseMs: number,
    private readonly report: LeaseReport,
  ) {
    if (token === null) return;
    this.heartbeat = setInterval(() => this.renew(token), Math.max(1, Math.floor(leaseMs / 3)));
    (this.heartbeat as { unref?: () => void }).unref?.();
  }

  /** Stores `record` for `ttlMs` and drops the lease, once; true when the record was stored. */
  commit(record: StoredRecord, ttlMs: number): Promise<boolean> {
    return this.end("commit", (token) => this.store.commit(this.storeKey, token, record, ttlMs));
  }

  /** Drops the lease without storing anything, once. */
  release(): Promise<boolean> {
    return this.end("release", (token) => this.store.release(this.storeKey, token));
  }

  private end(op: "commit" | "release", run: (token: string) => Promise<boolean>): Promise<boolean> {
    if (this.outcome) return this.outcome;
    clearInterval(this.heartbeat);
    const token = this.token;
    this.outcome =
      token === null
        ? Promise.resolve(false)
        : run(token).then(
            (ok) => {
              if (!ok) this.report("stale-token", op);
              return ok === true;
            },
            (error: unknown) => {
              this.report("store-error", op, error);
              return false;
            },
          );
    this.outcome.then(this.finish);
    return this.outcome;
  }

  private renew(token: string): void {
    this.store.renew(this.storeKey, token, this.leaseMs).then(
      (ok) => {
        if (ok || this.outcome) return;
        // Someone else owns the key now; renewing again would only repeat the report.
        clearInterval(this.heartbeat);
        this.report("stale-token", "renew");
      },
      (error: unknown) => {
        if (!this.outcome) this.report("store-error", "renew", error);
      },
    );
  }
}
