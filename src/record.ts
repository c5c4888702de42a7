// Records as text for backends that hold strings, and records back into replayed Responses.
import type { StoredRecord } from "./store.ts";

/** Format tag of encoded records; a value without it is foreign or older and treated as absent. */
const FORMAT = 1;

/** Encodes a record as JSON with the body in base64 (for Redis, Upstash and other text backends). */
export function encodeRecord(record: StoredRecord): string {
  return JSON.stringify({
    v: FORMAT,
    s: record.status,
    t: record.statusText,
    h: record.headers,
    b: bytesToBase64(record.body),
    c: record.createdAt,
    f: record.fingerprint,
  });
}

/** Parses an encoded record; `undefined` when the text is truncated, foreign or of another format. */
export function decodeRecord(text: string): StoredRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (o.v !== FORMAT || typeof o.b !== "string") return undefined;
  const body = base64ToBytes(o.b);
  if (body === undefined) return undefined;
  const record = { status: o.s, statusText: o.t, headers: o.h, body, createdAt: o.c, fingerprint: o.f };
  return isStoredRecord(record) ? record : undefined;
}

export function bytesToBase64(bytes: Uint8Array): string {
  let binary = "";
  // Chunked: String.fromCharCode with millions of arguments overflows the stack.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000) as unknown as number[]);
  }
  return btoa(binary);
}

export function base64ToBytes(text: string): Uint8Array | undefined {
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    return undefined;
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Framing headers a shared or replayed body never carries: its length is its own. */
export const FRAMING_HEADERS: ReadonlySet<string> = new Set(["content-length", "transfer-encoding"]);

/** What a client drops too: fetch hands the body over decoded, so its encoding no longer applies. */
export const DECODED_BODY_HEADERS: ReadonlySet<string> = new Set([...FRAMING_HEADERS, "content-encoding"]);

/** Statuses whose Response must have a null body. */
export const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** Header pairs as stored: without the `dropped` ones. */
export function storablePairs(pairs: [string, string][], dropped: ReadonlySet<string>): [string, string][] {
  return pairs.filter(([name]) => !dropped.has(name));
}

/** Header pairs of an answer a caller did not cause: stored pairs plus `Idempotent-Replayed: true`. */
export function replayPairs(pairs: [string, string][], dropSetCookie: boolean): [string, string][] {
  const out: [string, string][] = [];
  for (const pair of pairs) {
    if (pair[0] === "idempotent-replayed" || (dropSetCookie && pair[0] === "set-cookie")) continue;
    out.push(pair);
  }
  out.push(["idempotent-replayed", "true"]);
  return out;
}

/** An HTTP token (a header name), and a field value or reason phrase: what every face can write. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]+$/i;
const FIELD = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Whether `value` has every field of a StoredRecord with its type, and holds what every face can answer with
 * (status 200-599, header pairs of a lower-case token and a field value, bytes as Uint8Array). The one record
 * validator: a stored value is untrusted (another version, another library, a store bug), and a record that
 * fails this is absent, never replayed.
 */
export function isStoredRecord(value: unknown): value is StoredRecord {
  if (typeof value !== "object" || value === null) return false;
  const r = value as Record<string, unknown>;
  return (
    Number.isInteger(r.status) &&
    (r.status as number) >= 200 &&
    (r.status as number) <= 599 &&
    typeof r.statusText === "string" &&
    FIELD.test(r.statusText) &&
    r.body instanceof Uint8Array &&
    typeof r.createdAt === "number" &&
    typeof r.fingerprint === "string" &&
    Array.isArray(r.headers) &&
    r.headers.every(
      (p) =>
        Array.isArray(p) &&
        p.length === 2 &&
        typeof p[0] === "string" &&
        typeof p[1] === "string" &&
        TOKEN.test(p[0]) &&
        FIELD.test(p[1]) &&
        p[0] === p[0].toLowerCase(),
    )
  );
}
