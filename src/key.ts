// Idempotency keys: one alphabet for every face, read from the header or the JSON body, and written as a header.
import { IdempotencyKeyError } from "./errors.ts";

export const KEY_HEADER = "idempotency-key";
export const BODY_KEY_FIELD = "idempotency_key";
const MAX_KEY_LENGTH = 255;

// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters (Unicode Cc) is the point.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
/** A surrogate without its pair: such a string has no UTF-8 form, so no header or body could carry it. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
/** Keys sent bare: RFC 9110 token characters plus sf-token's ':' and '/' (UUIDs, ULIDs, hex, `order:42`). */
const BARE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z:/]+$/;
/** Printable ASCII: what an RFC 8941 sf-string holds. */
const PRINTABLE = /^[\x20-\x7e]*$/;

const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Returns `key` when it is in the key alphabet, the same for every face (header, body field, per-call
 * `key`, `forget`): a string of 1-255 UTF-16 code units with no control characters (U+0000-U+001F,
 * U+007F-U+009F) and no unpaired surrogate. Else throws `IdempotencyKeyError` saying what it got; `where`
 * names the place the key came from.
 */
export function validateKey(key: unknown, where?: string): string {
  const subject = where === undefined ? "Idempotency key" : `Idempotency key (${where})`;
  if (typeof key !== "string") throw new IdempotencyKeyError(`${subject} must be a string, got ${describe(key)}`);
  if (key.length === 0) throw new IdempotencyKeyError(`${subject} is empty`);
  if (key.length > MAX_KEY_LENGTH) {
    throw new IdempotencyKeyError(`${subject} is ${key.length} characters long; at most ${MAX_KEY_LENGTH} allowed`);
  }
  if (CONTROL.test(key)) throw new IdempotencyKeyError(`${subject} contains control characters`);
  if (LONE_SURROGATE.test(key)) {
    throw new IdempotencyKeyError(`${subject} contains an unpaired surrogate, which has no UTF-8 form`);
  }
  return key;
}

/**
 * The `Idempotency-Key` header value that carries `key` so that `keyFromHeader` reads back exactly `key`:
 * bare when it is made of token characters (what most servers expect of a UUID), an RFC 8941 sf-string
 * when it is other printable ASCII (spaces kept, `"` and `\` escaped), and an RFC 9651 Display String
 * (`%"` + percent-encoded UTF-8 + `"`) when it holds anything else, which no header could carry as it is.
 */
export function keyHeaderValue(key: string): string {
  if (BARE.test(key)) return key;
  if (PRINTABLE.test(key)) return `"${key.replace(/[\\"]/g, "\\$&")}"`;
  let out = '%"';
  for (const byte of encoder.encode(key)) {
    out +=
      byte === 0x25 || byte === 0x22 || byte < 0x20 || byte > 0x7e
        ? `%${byte.toString(16).padStart(2, "0")}`
        : String.fromCharCode(byte);
  }
  return `${out}"`;
}

/**
 * The key carried by an `Idempotency-Key` header value; throws `IdempotencyKeyError` when it is not valid.
 * - `"..."` must be exactly one RFC 8941 sf-string (printable ASCII, only `\"` and `\\` escaped, nothing
 *   after the closing quote: no parameters); the quotes are not part of the key.
 * - `%"..."` must be exactly one RFC 9651 Display String (percent-encoded UTF-8, lowercase hex).
 * - Any other value is a bare token, which cannot contain `"` (only the two forms above may).
 */
export function keyFromHeader(value: string): string {
  const key = value.trim();
  if (key.startsWith('%"')) return validateKey(displayString(key));
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

/** The text of an RFC 9651 Display String (`%"` ... `"`, trimmed); throws `IdempotencyKeyError` when malformed. */
function displayString(value: string): string {
  const bytes: number[] = [];
  let i = 2;
  for (;;) {
    const c = value.charCodeAt(i);
    if (Number.isNaN(c)) throw new IdempotencyKeyError("Idempotency-Key has no closing '\"'");
    if (c === 0x22) break;
    if (c === 0x25) {
      const hex = value.slice(i + 1, i + 3);
      if (!/^[0-9a-f]{2}$/.test(hex)) {
        throw new IdempotencyKeyError("Idempotency-Key has a '%' not followed by two lowercase hex digits (RFC 9651)");
      }
      bytes.push(Number.parseInt(hex, 16));
      i += 3;
    } else if (c < 0x20 || c > 0x7e) {
      throw new IdempotencyKeyError("Idempotency-Key has a character other than printable ASCII inside its quotes");
    } else {
      bytes.push(c);
      i++;
    }
  }
  if (i !== value.length - 1) {
    throw new IdempotencyKeyError("Idempotency-Key has characters after its closing '\"' (no parameters allowed)");
  }
  try {
    return utf8.decode(new Uint8Array(bytes));
  } catch {
    throw new IdempotencyKeyError("Idempotency-Key's Display String is not valid UTF-8");
  }
}

/**
 * The key a call names itself: the per-call `key` (validated), else the `Idempotency-Key` header's; undefined
 * when neither. Both given must name the same key, since the header is what a server downstream reads.
 */
export function explicitKey(callKey: unknown, headerValue: string | null): string | undefined {
  const fromHeader = headerValue === null ? undefined : keyFromHeader(headerValue);
  if (callKey === undefined) return fromHeader;
  const key = validateKey(callKey, "idempotency.key");
  if (fromHeader !== undefined && fromHeader !== key) {
    throw new IdempotencyKeyError(
      "Idempotency key (idempotency.key) differs from the Idempotency-Key header the request carries",
    );
  }
  return key;
}

/**
 * The top-level string `idempotency_key` of a JSON body, validated; undefined when there is none (a
 * non-string value is not a key). Takes a parsed JSON value or what `parseJsonBody` returns.
 */
export function keyFromJson(json: unknown): string | undefined {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return undefined;
  const value = (json as Record<string, unknown>)[BODY_KEY_FIELD];
  return typeof value === "string" ? validateKey(value, `body field "${BODY_KEY_FIELD}"`) : undefined;
}

/** What a value is, for an error message: its type and, when short, its JSON. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "function") return "a function";
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch {
    json = undefined;
  }
  const shown = json !== undefined && json.length <= 40 ? ` ${json}` : "";
  return `${Array.isArray(value) ? "array" : typeof value}${shown}`;
}
