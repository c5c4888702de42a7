// The lease/record state machine every store shares: read one key's value, decide here, write what this returns.
import { isStoredRecord } from "./record.ts";
import type { AcquireResult, ForgetResult, LivePart, StoredRecord } from "./store.ts";

/** What one store key holds. Expiry is kept in the value, so stores with lazy or no TTL enforce it on read. */
export type Entry =
  | {
      kind: "lease";
      /** The owner's token. */
      token: string;
      /** Fingerprint of the request the owner executes. */
      fingerprint: string;
      /** When the lease lapses, Unix ms. */
      expiresAt: number;
    }
  | {
      kind: "record";
      record: StoredRecord;
      /** When the record lapses, Unix ms. */
      expiresAt: number;
    };

/** One store operation, as the IdempotencyStore method of the same name receives it. */
export type Operation =
  | { op: "acquire"; fingerprint: string; leaseMs: number }
  | { op: "commit"; token: string; record: StoredRecord; ttlMs: number }
  | { op: "release"; token: string }
  | { op: "renew"; token: string; leaseMs: number }
  | { op: "forget"; force: boolean };

/** The reply type of each operation. */
export interface Replies {
  acquire: AcquireResult;
  commit: boolean;
  release: boolean;
  renew: boolean;
  forget: ForgetResult;
}

/** What the store must do, all in the same atomic step as its read. */
export interface Step<R> {
  /** What the operation resolves. */
  reply: R;
  /** The new value for the key: an entry to put, null to delete, undefined to leave what is there. */
  write: Entry | null | undefined;
  /** Whether subscribers of the key must be woken (a commit, a release or a forget took effect). */
  changed: boolean;
}

/**
 * Decides `operation` on `found`, the key's stored value as read (undefined when the key is empty).
 * Pure: `now` is the clock in Unix ms and `token()` makes the token of a new lease.
 * A value that is not an entry is corrupt: absent to every operation, replaced (and reported) by acquire.
 * An expired entry is absent too, and deleted when the operation writes nothing else.
 */
export function decide<O extends Operation>(
  found: unknown,
  operation: O,
  now: number,
  token: () => string,
): Step<Replies[O["op"]]> {
  const entry = found === undefined ? undefined : parseEntry(found);
  const corrupt = found !== undefined && entry === undefined;
  const live = entry !== undefined && entry.expiresAt > now ? entry : undefined;
  // Expired entries go when nothing else is written; corrupt ones stay for acquire to replace and report.
  const keep = entry !== undefined && live === undefined ? null : undefined;
  const owned = (t: string): boolean => live?.kind === "lease" && live.token === t;
  const step = (reply: unknown, write: Entry | null | undefined, changed = false) =>
    ({ reply, write, changed }) as Step<Replies[O["op"]]>;

  switch (operation.op) {
    case "acquire": {
      if (live?.kind === "record") return step({ state: "done", record: live.record }, keep);
      if (live?.kind === "lease") return step({ state: "pending", fingerprint: live.fingerprint }, keep);
      const t = token();
      const lease: Entry = {
        kind: "lease",
        token: t,
        fingerprint: operation.fingerprint,
        expiresAt: now + operation.leaseMs,
      };
      return step(
        corrupt ? { state: "acquired", token: t, replacedCorrupt: true } : { state: "acquired", token: t },
        lease,
      );
    }
    case "commit":
      if (!owned(operation.token)) return step(false, keep);
      return step(true, { kind: "record", record: operation.record, expiresAt: now + operation.ttlMs }, true);
    case "release":
      return owned(operation.token) ? step(true, null, true) : step(false, keep);
    case "renew":
      if (!owned(operation.token) || live?.kind !== "lease") return step(false, keep);
      return step(true, { ...live, expiresAt: now + operation.leaseMs });
    case "forget":
      if (live === undefined) return step("absent", keep);
      if (live.kind === "lease" && !operation.force) return step("in-progress", undefined);
      return step("forgotten", null, true);
  }
}

/** A stored value is untrusted (another version, another library, a user's devtools): checks its shape. */
export function parseEntry(value: unknown): Entry | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  // A lease without a finite expiry would block its key forever.
  if (typeof v.expiresAt !== "number" || !Number.isFinite(v.expiresAt)) return undefined;
  if (v.kind === "lease") {
    return typeof v.token === "string" && typeof v.fingerprint === "string" ? (v as Entry) : undefined;
  }
  return v.kind === "record" && isStoredRecord(v.record) ? (v as Entry) : undefined;
}

/**
 * Structured clone (IndexedDB, Deno KV) copies a view's whole buffer (a subarray, a pooled Node Buffer):
 * the bytes alone, as a plain Uint8Array. new Uint8Array(), not .slice(): Buffer#slice is a view on the same memory.
 */
export function compactBytes(body: Uint8Array): Uint8Array {
  const whole = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength;
  return whole && body.constructor === Uint8Array ? body : new Uint8Array(body);
}

/**
 * Whether `part` has the shape of the part last stored on a lease's stream of `length` body bytes (undefined:
 * no head yet), sent again: when its bytes are those stored, publishLive stores nothing and resolves true.
 */
export function resendShaped(length: number | undefined, { head, offset, body }: LivePart): boolean {
  return length !== undefined && length === offset + body.length && (head === undefined || offset === 0);
}

/**
 * Throws what `caller`'s publishLive rejects with when `part` cannot follow the lease's stream as stored, of
 * `length` body bytes after its head (undefined: no head yet): a head not at offset 0, a second head, a body
 * part before the head, or a gap.
 */
export function checkLivePart(caller: string, length: number | undefined, { head, offset }: LivePart): void {
  if (head !== undefined) {
    if (offset !== 0) throw new RangeError(`${caller}: a head part must have offset 0, got ${offset}`);
    if (length !== undefined) throw new RangeError(`${caller}: this lease's stream already has its head`);
  } else if (length === undefined) throw new RangeError(`${caller}: a body part before this lease's head`);
  else if (offset !== length) {
    throw new RangeError(`${caller}: a gap in the live stream: offset ${offset}, stored ${length}`);
  }
}

/** Whether two byte arrays hold the same bytes. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
