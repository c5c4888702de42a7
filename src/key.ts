// Idempotency keys: read from the header (bare token or RFC 8941 sf-string) or the JSON body, and validated.
import { IdempotencyKeyError } from "./errors.ts";

export const KEY_HEADER = "idempotency-key";
export const BODY_KEY_FIELD = "idempotency_key";
const MAX_KEY_LENGTH = 255;

/**
 * The key carried by an `Idempotency-Key` header value; throws `IdempotencyKeyError` when it is not valid.
 * A value starting with `"` must be exactly one RFC 8941 sf-string (printable ASCII, only `\"` and `\\`
 * escaped, nothing after the closing quote: no parameters); the quotes are not part of the key. Any other
 * value is taken as a bare token, which cannot contain `"` (an sf-string is the only item that may).
 */
export function keyFromHeader(value: string): string {
  const key = value.trim();
  if (!key.startsWith('"')) {
    if (key.includes('"')) throw new IdempotencyKeyError("Idempotency-Key has a '\"' outside an sf-string");
    return validateKey(key);
  }
  let out = "";
  let i = 1;
  for (;;) {
    const c = key.charCodeAt(i);
    if (Number.isNaN(c)) throw new IdempotencyKeyError("Idempotency-Key has no closing '\"'");
    if (c === 0x22) break;
    if (c === 0x5c) {
      const next = key[i + 1];
      if (next !== '"' && next !== "\\") {
        throw new IdempotencyKeyError("Idempotency-Key escapes something other than '\"' or '\\' (RFC 8941)");
      }
      out += next;
      i += 2;
    } else if (c < 0x20 || c > 0x7e) {
      throw new IdempotencyKeyError("Idempotency-Key has a character other than printable ASCII inside its quotes");
    } else {
      out += key[i];
      i++;
    }
  }
  if (i !== key.length - 1) {
    throw new IdempotencyKeyError("Idempotency-Key has characters after its closing '\"' (no parameters allowed)");
  }
  return validateKey(out);
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

/**
 * The top-level string `idempotency_key` of a JSON body, validated; undefined when there is none. Takes
 * a parsed JSON value or what `parseJsonBody` returns (which holds that field under the same name).
 */
export function keyFromJson(json: unknown): string | undefined {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return undefined;
  const value = (json as Record<string, unknown>)[BODY_KEY_FIELD];
  return typeof value === "string" ? validateKey(value) : undefined;
}
