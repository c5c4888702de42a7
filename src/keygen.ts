// Keys made for the caller: stableKey() for an operation named by its parts, newKey() for a one-off operation.
import { canonicalJson } from "./fingerprint.ts";
import { sha256Sync } from "./sha256.ts";

/** What `stableKey` hashes: JSON values, with plain objects only (their key order never matters). */
export type StableKeyPart =
  | string
  | number
  | boolean
  | null
  | readonly StableKeyPart[]
  | { [key: string]: StableKeyPart };

const encoder = new TextEncoder();

/**
 * A key that is the same for the same parts, in every runtime and process: the hex SHA-256 of the
 * canonical JSON of `[...parts]` (object keys sorted, no spacing), so `stableKey(userId, { prompt })` names
 * one operation however often it is retried, and a different prompt is a different key. 64 characters of
 * `0-9a-f`: it fits the key alphabet and travels as a bare header. Throws `TypeError` for a part that is
 * not a JSON value (undefined, a function, NaN, a Date, a Map, a class instance).
 */
export function stableKey(...parts: StableKeyPart[]): string {
  if (parts.length === 0) throw new TypeError("idemfetch: stableKey() needs at least one part");
  for (const [i, part] of parts.entries()) check(part, `part ${i + 1}`, new Set());
  return sha256Sync(encoder.encode(canonicalJson(parts)));
}

/**
 * A fresh random key for a one-off operation: a UUID v4 (122 random bits from `crypto.getRandomValues`,
 * which, unlike `crypto.randomUUID`, pages served over plain HTTP have too). Make it once per operation
 * and keep it for every retry of that operation: a new key per try is a new operation.
 */
export function newKey(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const hex = Array.from(b, (byte) => (byte | 256).toString(16).slice(1)).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function check(value: unknown, path: string, open: Set<object>): void {
  const fail = (what: string): never => {
    throw new TypeError(
      `idemfetch: stableKey() ${path} is ${what}; parts are strings, numbers, booleans, null, arrays and plain objects`,
    );
  };
  if (value === null || typeof value === "string" || typeof value === "boolean") return;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) fail(String(value));
    return;
  }
  if (typeof value !== "object") fail(typeof value === "undefined" ? "undefined" : `a ${typeof value}`);
  const object = value as object;
  const array = Array.isArray(object);
  const proto = Object.getPrototypeOf(object);
  if (!array && proto !== Object.prototype && proto !== null)
    fail(`a ${object.constructor?.name ?? "non-plain object"}`);
  if (open.has(object)) fail("a cycle");
  open.add(object);
  for (const [k, v] of Object.entries(object)) check(v, array ? `${path}[${k}]` : `${path}.${k}`, open);
  open.delete(object);
}
