// Request fingerprints: canonical JSON from its source text (sorted keys, exact numbers, no idempotency_key)
// or raw bytes, hashed with SHA-256.
import { BODY_KEY_FIELD } from "./key.ts";
import { sha256Sync } from "./sha256.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Up to this size JavaScript hashes faster than a Web Crypto round trip (measured in Node 20). */
const SYNC_MAX_BYTES = 2048;

type Hash = (data: string | Uint8Array) => string;

/**
 * node:crypto's SHA-256 where the runtime has one (Node, Deno, Bun): about 1 µs against 5-10 µs in
 * JavaScript, and synchronous at any size. Found at run time, so no bundle imports node:crypto.
 */
const nativeSha256: Hash | undefined = (() => {
  try {
    type NodeCrypto = {
      hash?: (algorithm: string, data: string | Uint8Array, encoding: "hex") => string;
      createHash?: (algorithm: string) => { update(data: string | Uint8Array): { digest(encoding: "hex"): string } };
    };
    const host = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
    const c = host?.getBuiltinModule?.("node:crypto") as NodeCrypto | undefined;
    if (c?.hash) {
      const hash = c.hash;
      return (data) => hash("sha256", data, "hex");
    }
    const createHash = c?.createHash;
    return createHash && ((data) => createHash("sha256").update(data).digest("hex"));
  } catch {
    return undefined;
  }
})();

/** Hex SHA-256 of text or bytes (text as UTF-8): node:crypto, else JavaScript when short, else Web Crypto. */
export async function sha256(data: string | Uint8Array): Promise<string> {
  if (nativeSha256) return nativeSha256(data);
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  if (bytes.length <= SYNC_MAX_BYTES) return sha256Sync(bytes);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => (b | 256).toString(16).slice(1)).join("");
}

/**
 * Containers nested deeper than this are not canonicalised: the body is hashed as its raw bytes. The
 * canonicaliser recurses two small frames per level, which at 128 levels fits every engine's stack (small
 * worker and browser stacks included) many times over, while real API payloads stay far below it (a few
 * dozen levels at most); and past it, a retry still sends the same bytes.
 */
export const MAX_CANONICAL_DEPTH = 128;

/**
 * A JSON body reduced to what a fingerprint and a key need. `idempotency_key` is named like the body
 * field, so `keyFromJson` reads it the same way from this or from a parsed value.
 */
export class JsonBody {
  constructor(
    /** The canonical text without the top-level `idempotency_key`; undefined past `MAX_CANONICAL_DEPTH` (raw bytes are hashed). */
    readonly canonical: string | undefined,
    /** The top-level `idempotency_key` (the last one, as `JSON.parse` keeps) when it is a string. */
    readonly idempotency_key: string | undefined,
  ) {}
}

// Thrown inside the canonicaliser only; preallocated, so a failed parse costs no stack trace.
const SYNTAX = { stop: "syntax" };
const DEEP = { stop: "depth" };

// The canonicaliser's state: one synchronous pass over `src`, never re-entered.
let src = "";
let pos = 0;
let stripKey = false;
/** Where the string read last starts and ends (its quotes included), and whether it has escapes. */
let strStart = 0;
let strEnd = 0;
let strEscaped = false;
/** The last top-level `idempotency_key` seen while stripping it, when it is a string. */
let bodyKey: string | undefined;

// A string without escapes or control characters, matched natively; its source text is already canonical.
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters must be escaped in JSON.
const PLAIN_STRING = /"[^"\\\u0000-\u001f]*"/y;
// A run of characters that need no look.
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters must be escaped in JSON.
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;
/** Escapes `JSON.stringify` writes as they are (after the backslash). */
const VERBATIM_ESCAPES = '"\\bfnrt';

/**
 * Canonical JSON from source text, in one pass: object keys sorted (JavaScript string order of the decoded
 * keys, duplicates resolved as `JSON.parse` does: the last wins), no insignificant whitespace, strings as
 * `JSON.stringify` writes them, numbers in an exact canonical decimal form. Throws SYNTAX or DEEP.
 */
function canonicalText(text: string, strip: boolean): string {
  src = text;
  pos = 0;
  stripKey = strip;
  bodyKey = undefined;
  try {
    const out = value(0);
    skipSpace();
    if (pos !== src.length) throw SYNTAX;
    return out;
  } finally {
    src = "";
  }
}

function skipSpace(): void {
  let c = src.charCodeAt(pos);
  while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = src.charCodeAt(++pos);
}

const LITERALS = ["true", "false", "null"] as const;

function value(depth: number): string {
  skipSpace();
  const c = src.charCodeAt(pos);
  if (c === 0x22) return string();
  if (c === 0x7b || c === 0x5b) {
    if (depth >= MAX_CANONICAL_DEPTH) throw DEEP;
    return c === 0x7b ? object(depth + 1) : array(depth + 1);
  }
  if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return number();
  for (const literal of LITERALS) {
    if (src.startsWith(literal, pos)) {
      pos += literal.length;
      return literal;
    }
  }
  throw SYNTAX;
}

/** Reads the string at `pos` (its opening quote) and returns its canonical text (`JSON.stringify`'s). */
function string(): string {
  const start = pos;
  PLAIN_STRING.lastIndex = start;
  if (PLAIN_STRING.test(src)) {
    pos = PLAIN_STRING.lastIndex;
    strStart = start;
    strEnd = pos;
    strEscaped = false;
    return src.slice(start, pos);
  }
  // Escapes JSON.stringify writes the same way keep their source text; \u and \/ are decoded and re-escaped.
  let i = start + 1;
  let verbatim = true;
  for (;;) {
    PLAIN_RUN.lastIndex = i;
    PLAIN_RUN.test(src);
    i = PLAIN_RUN.lastIndex;
    const c = src.charCodeAt(i);
    if (c === 0x22) break;
    if (c !== 0x5c) throw SYNTAX; // a control character, or the end of the text
    const e = src[i + 1];
    if (e === "u" || e === "/")
      verbatim = false; // \u's hex digits are checked by JSON.parse below
    else if (e === undefined || !VERBATIM_ESCAPES.includes(e)) throw SYNTAX;
    i += 2;
  }
  pos = i + 1;
  strStart = start;
  strEnd = pos;
  strEscaped = true;
  return verbatim ? src.slice(start, pos) : JSON.stringify(decoded());
}

/** The value of the string read last. */
function decoded(): string {
  if (!strEscaped) return src.slice(strStart + 1, strEnd - 1);
  try {
    return JSON.parse(src.slice(strStart, strEnd)) as string;
  } catch {
    throw SYNTAX;
  }
}

function object(depth: number): string {
  pos++;
  skipSpace();
  if (src.charCodeAt(pos) === 0x7d) {
    pos++;
    return "{}";
  }
  const keys: string[] = [];
  const members: string[] = [];
  for (;;) {
    skipSpace();
    if (src.charCodeAt(pos) !== 0x22) throw SYNTAX;
    const keyText = string();
    const key = decoded();
    skipSpace();
    if (src.charCodeAt(pos) !== 0x3a) throw SYNTAX;
    pos++;
    skipSpace();
    const isString = src.charCodeAt(pos) === 0x22;
    const member = value(depth);
    if (depth === 1 && stripKey && key === BODY_KEY_FIELD) {
      bodyKey = isString ? decoded() : undefined;
    } else {
      keys.push(key);
      members.push(`${keyText}:${member}`);
    }
    skipSpace();
    const c = src.charCodeAt(pos++);
    if (c === 0x7d) break;
    if (c !== 0x2c) throw SYNTAX;
  }
  const n = keys.length;
  if (n < 2) return `{${members.join(",")}}`;
  const order = sortedIndices(keys);
  let out = "{";
  for (let k = 0; k < n; k++) {
    const i = order[k] as number;
    const next = order[k + 1];
    // Equal keys sit together in source order: the last of a run is the one JSON.parse keeps.
    if (next !== undefined && keys[next] === keys[i]) continue;
    out += out.length === 1 ? members[i] : `,${members[i]}`;
  }
  return `${out}}`;
}

/** Indices of `keys` in a stable ascending order (Array.prototype.sort is stable). */
function sortedIndices(keys: string[]): number[] {
  return keys
    .map((_, i) => i)
    .sort((a, b) => {
      const x = keys[a] as string;
      const y = keys[b] as string;
      return x < y ? -1 : x > y ? 1 : a - b;
    });
}

function array(depth: number): string {
  pos++;
  skipSpace();
  if (src.charCodeAt(pos) === 0x5d) {
    pos++;
    return "[]";
  }
  let out = "[";
  for (;;) {
    out += value(depth);
    skipSpace();
    const c = src.charCodeAt(pos++);
    if (c === 0x5d) break;
    if (c !== 0x2c) throw SYNTAX;
    out += ",";
  }
  return `${out}]`;
}

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;

/** Reads the number at `pos`; returns its exact canonical form (never rounded to a double). */
function number(): string {
  const start = pos;
  let c = src.charCodeAt(pos);
  if (c === 0x2d) c = src.charCodeAt(++pos);
  const intStart = pos;
  if (c === 0x30) c = src.charCodeAt(++pos);
  else if (isDigit(c)) while (isDigit(c)) c = src.charCodeAt(++pos);
  else throw SYNTAX;
  const intEnd = pos;
  if (c === 0x2e) {
    c = src.charCodeAt(++pos);
    if (!isDigit(c)) throw SYNTAX;
    while (isDigit(c)) c = src.charCodeAt(++pos);
  }
  const fracEnd = pos;
  if (c === 0x65 || c === 0x45) {
    c = src.charCodeAt(++pos);
    if (c === 0x2b || c === 0x2d) c = src.charCodeAt(++pos);
    if (!isDigit(c)) throw SYNTAX;
    while (isDigit(c)) c = src.charCodeAt(++pos);
  }
  // The common case, a plain integer of at most 21 digits, is its own canonical form (-0 aside).
  if (pos === intEnd && intEnd - intStart <= 21) {
    return intStart !== start && src.charCodeAt(intStart) === 0x30 ? "0" : src.slice(start, pos);
  }
  return exactDecimal(
    start !== intStart,
    src.slice(intStart, intEnd) + src.slice(intEnd + 1, fracEnd),
    intEnd - intStart,
    fracEnd < pos ? src.slice(fracEnd + 1, pos) : "0",
  );
}

/**
 * The canonical text of the value 0.`digits` x 10^(`point` + `exponent`), written the way
 * `Number.prototype.toString` writes a double (plain from 1e-6 to 1e21, else `d.ddde±n`), so a number a
 * double holds exactly keeps the text `JSON.stringify` gives it, while longer ones keep every digit.
 */
function exactDecimal(negative: boolean, digits: string, point: number, exponent: string): string {
  let first = 0;
  while (digits.charCodeAt(first) === 0x30) first++;
  let last = digits.length;
  while (last > first && digits.charCodeAt(last - 1) === 0x30) last--;
  if (first === last) return "0";
  const d = digits.slice(first, last);
  const sign = negative ? "-" : "";
  // An exponent of more than 15 digits would lose precision as a double; such a number is always written
  // with an exponent, so only that branch needs BigInt.
  const expDigits = exponent.replace(/^[+-]?0*/, "");
  const scientific = (e: number | bigint): string =>
    `${sign}${d[0]}${d.length > 1 ? `.${d.slice(1)}` : ""}e${e >= 0 ? "+" : "-"}${e < 0 ? -e : e}`;
  if (expDigits.length > 15) return scientific(BigInt(point - first) + BigInt(exponent) - 1n);
  const n = point - first + Number(exponent);
  if (n > 21 || n <= -6) return scientific(n - 1);
  if (n <= 0) return `${sign}0.${"0".repeat(-n)}${d}`;
  if (n >= d.length) return sign + d + "0".repeat(n - d.length);
  return `${sign}${d.slice(0, n)}.${d.slice(n)}`;
}

/**
 * Serialises a JSON value with object keys sorted, so key order and spacing never change a fingerprint.
 * Throws `RangeError` for a value nested deeper than `MAX_CANONICAL_DEPTH`.
 */
export function canonicalJson(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) return text;
  try {
    return canonicalText(text, false);
  } catch (stop) {
    if (stop === DEEP) throw new RangeError(`canonicalJson: nested deeper than ${MAX_CANONICAL_DEPTH}`);
    throw stop;
  }
}

/** The body read from JSON text: canonical, or past the depth limit only its key; undefined when not JSON. */
function jsonBody(text: string): JsonBody | undefined {
  try {
    const canonical = canonicalText(text, true);
    return new JsonBody(canonical, bodyKey);
  } catch (stop) {
    if (stop === SYNTAX) return undefined;
  }
  // Too deep (or an engine limit): the native parser still finds out whether it is JSON, and its key.
  try {
    const parsed: unknown = JSON.parse(text);
    const key =
      typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)
        ? (parsed as Record<string, unknown>)[BODY_KEY_FIELD]
        : undefined;
    return new JsonBody(undefined, typeof key === "string" ? key : undefined);
  } catch {
    return undefined;
  }
}

/** The body as a `JsonBody` when it is a JSON object or array, else undefined. Never throws. */
export function parseJsonBody(bytes: Uint8Array | null): JsonBody | undefined {
  if (bytes === null || bytes.length === 0) return undefined;
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09)) i++;
  if (bytes[i] !== 0x7b && bytes[i] !== 0x5b) return undefined; // "{" or "["
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return undefined;
  }
  return jsonBody(text);
}

/**
 * SHA-256 over method, target and body. A JSON body (a `JsonBody`, or a value parsed elsewhere) is
 * canonicalised with its top-level `idempotency_key` removed; any other body, and JSON nested too deep
 * to canonicalise, is hashed as bytes.
 */
export function fingerprintOf(
  method: string,
  target: string,
  bytes: Uint8Array | null,
  json: unknown,
  contentType: string | null = null,
): Promise<string> {
  const head = `${method}\n${target}\n`;
  const body = json === undefined || json instanceof JsonBody ? json : fromValue(json);
  if (body?.canonical !== undefined) return sha256(`${head}json\n${body.canonical}`);
  if (bytes === null || bytes.length === 0) return sha256(`${head}empty\n`);
  // FormData gets a random multipart boundary per request: two identical form posts must still match.
  const boundary = contentType && /^multipart\/[^;]*;.*boundary="?([^";]+)"?/i.exec(contentType)?.[1];
  if (boundary) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000) as unknown as number[]);
    }
    return sha256(`${head}multipart\n${binary.replaceAll(boundary, "boundary")}`);
  }
  const prefix = encoder.encode(`${head}bytes\n`);
  const all = new Uint8Array(prefix.length + bytes.length);
  all.set(prefix);
  all.set(bytes, prefix.length);
  return sha256(all);
}

/** A JSON value parsed elsewhere, as a `JsonBody`; undefined (hash the bytes) when it cannot be serialised. */
function fromValue(value: unknown): JsonBody | undefined {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? undefined : jsonBody(text);
  } catch {
    return undefined;
  }
}
