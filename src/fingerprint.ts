// Request fingerprints: canonical JSON (sorted keys, no idempotency_key) or raw bytes, hashed with SHA-256.
import { BODY_KEY_FIELD } from "./key.js";
import { sha256Sync } from "./sha256.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Up to this size JavaScript hashes faster than a Web Crypto round trip (measured in Node 20). */
const SYNC_MAX_BYTES = 2048;

/** Hex SHA-256 of text or bytes: in JavaScript when short, else with Web Crypto (every runtime). */
export async function sha256(data: string | Uint8Array): Promise<string> {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  if (bytes.length <= SYNC_MAX_BYTES) return sha256Sync(bytes);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => (b | 256).toString(16).slice(1)).join("");
}

/** Serialises JSON with object keys sorted, so key order and spacing never change a fingerprint. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

/** The body parsed as JSON when it looks like a JSON object or array, else undefined. */
export function parseJsonBody(bytes: Uint8Array | null): unknown {
  if (bytes === null || bytes.length === 0) return undefined;
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09)) i++;
  if (bytes[i] !== 0x7b && bytes[i] !== 0x5b) return undefined; // "{" or "["
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch {
    return undefined;
  }
}

/**
 * SHA-256 over method, target and body. A JSON body is canonicalised with its top-level
 * `idempotency_key` removed; any other body is hashed as bytes.
 */
export function fingerprintOf(
  method: string,
  target: string,
  bytes: Uint8Array | null,
  json: unknown,
  contentType: string | null = null,
): Promise<string> {
  const head = `${method}\n${target}\n`;
  if (json !== undefined) {
    let body = json;
    if (typeof json === "object" && json !== null && !Array.isArray(json) && BODY_KEY_FIELD in json) {
      const { [BODY_KEY_FIELD]: _omitted, ...rest } = json as Record<string, unknown>;
      body = rest;
    }
    return sha256(`${head}json\n${canonicalJson(body)}`);
  }
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
