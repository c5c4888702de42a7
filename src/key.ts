// Idempotency keys: read from the header (bare token or RFC 8941 sf-string) or the JSON body, and validated.
import { IdempotencyKeyError } from "./errors.js";

export const KEY_HEADER = "idempotency-key";
export const BODY_KEY_FIELD = "idempotency_key";
const MAX_KEY_LENGTH = 255;

/** The key carried by an `Idempotency-Key` header value; throws `IdempotencyKeyError` when it is not valid. */
export function keyFromHeader(value: string): string {
  let key = value.trim();
  if (key.length >= 2 && key.startsWith('"') && key.endsWith('"')) {
    key = key.slice(1, -1);
    if (/(^|[^\\])"/.test(key))
      throw new IdempotencyKeyError("Idempotency-Key has an unescaped '\"' inside its quotes");
    key = key.replace(/\\(["\\])/g, "$1");
  }
  return validateKey(key);
}

/** Returns the key when it is 1-255 characters without control characters, else throws `IdempotencyKeyError`. */
export function validateKey(key: string): string {
  if (key.length === 0) throw new IdempotencyKeyError("Idempotency key is empty");
  if (key.length > MAX_KEY_LENGTH) {
    throw new IdempotencyKeyError(
      `Idempotency key is ${key.length} characters long; at most ${MAX_KEY_LENGTH} allowed`,
    );
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
  if (/[\u0000-\u001f\u007f]/.test(key)) throw new IdempotencyKeyError("Idempotency key contains control characters");
  return key;
}

/** The top-level string `idempotency_key` of a parsed JSON body, validated; undefined when there is none. */
export function keyFromJson(json: unknown): string | undefined {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return undefined;
  const value = (json as Record<string, unknown>)[BODY_KEY_FIELD];
  return typeof value === "string" ? validateKey(value) : undefined;
}
