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

/** Exactly one RFC 8941 sf-string: printable ASCII in quotes, only `\"` and `\\` escaped, no parameters. */
const SF_STRING = /^"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"$/;
/** Exactly one RFC 9651 Display String: `%"`, printable ASCII with `%`+two lowercase hex digits for `%`, `"` and other bytes, `"`. */
const DISPLAY_STRING = /^%"((?:[\x20\x21\x23\x24\x26-\x7e]|%[0-9a-f]{2})*)"$/;

const malformed = (what: string): IdempotencyKeyError => new IdempotencyKeyError(`Idempotency-Key is not ${what}`);

/**
 * The key carried by an `Idempotency-Key` header value; throws `IdempotencyKeyError` when it is not valid.
 * A value starting with `"` must be one sf-string (the quotes are not part of the key), one starting with
 * `%"` one Display String (percent-encoded UTF-8); any other value is a bare key, which cannot hold `"`.
 */
export function keyFromHeader(value: string): string {
  const key = value.trim();
  if (key.startsWith('%"')) {
    const match = DISPLAY_STRING.exec(key);
    if (!match) throw malformed('an RFC 9651 Display String: %"..." with %xx (lowercase hex) escapes, no parameters');
    const bytes = (match[1] as string).replace(/%([0-9a-f]{2})/g, (_, hex: string) =>
      String.fromCharCode(Number.parseInt(hex, 16)),
    );
    try {
      return validateKey(utf8.decode(Uint8Array.from(bytes, (c) => c.charCodeAt(0))));
    } catch (error) {
      if (error instanceof IdempotencyKeyError) throw error;
      throw malformed("a Display String of valid UTF-8");
    }
  }
  if (key.startsWith('"')) {
    const match = SF_STRING.exec(key);
    if (!match)
      throw malformed('an RFC 8941 sf-string: printable ASCII in quotes, only \\" and \\\\ escaped, no parameters');
    return validateKey((match[1] as string).replace(/\\(.)/g, "$1"));
  }
  if (key.includes('"')) throw malformed("a bare key, which holds no '\"' (only an sf-string may)");
  return validateKey(key);
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
