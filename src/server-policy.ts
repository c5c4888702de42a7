// The server faces' shared policy: which calls they handle, their options validated once, what they fingerprint and store.
import type { Face } from "./engine.ts";
import { KNOWN } from "./options.ts";
import { FRAMING_HEADERS } from "./record.ts";
import type { ServerIdempotencyOptions } from "./server.ts";
import { strictOptions } from "./strict.ts";

/**
 * The server's policy: no auto keys (two identical requests to a server are often meant), path and query
 * fingerprinted (hosts differ behind a load balancer), bodies stored as sent (their encoding with them),
 * keyless uploads read only when they are JSON objects.
 */
export const SERVER_FACE: Face = {
  autoKey: false,
  target: pathAndQuery,
  sendKeyHeader: () => false,
  dropHeaders: FRAMING_HEADERS,
  keylessBodies: "sniff",
};

/** The path and query of an absolute URL (a server's request URL has no fragment). */
function pathAndQuery(url: string): string {
  const path = url.indexOf("/", url.indexOf("//") + 2);
  return path < 0 ? "/" : url.slice(path);
}

export const DEFAULT_METHODS = ["POST", "PUT", "PATCH", "DELETE"] as const;

export const methodSet = (name: string, value: unknown, fallback: readonly string[]): ReadonlySet<string> => {
  const list = value ?? fallback;
  if (!Array.isArray(list) || list.some((m) => typeof m !== "string" || m.length === 0)) {
    throw new TypeError(`idemfetch: option "${name}" must be an array of method names, got ${JSON.stringify(value)}`);
  }
  return new Set(list.map((m: string) => m.toUpperCase()));
};

/** The server's own options, validated once, and the shared ones with the `ietf` defaults applied. */
export function serverOptions(options: ServerIdempotencyOptions) {
  strictOptions(options, KNOWN.server, "idempotency()");
  const { requireKey = false, methods, ietf = false, waitUntil, ...shared } = options;
  if (waitUntil !== undefined && typeof waitUntil !== "function") {
    throw new TypeError(`idemfetch: option "waitUntil" must be a function, got ${typeof waitUntil}`);
  }
  if (typeof ietf !== "boolean") throw new TypeError(`idemfetch: option "ietf" must be a boolean, got ${String(ietf)}`);
  const required =
    requireKey === false
      ? new Set<string>()
      : methodSet("requireKey", requireKey === true ? undefined : requireKey, ["POST", "PATCH"]);
  if (ietf) {
    shared.conflictStatus ??= 422;
    shared.waitTimeoutMs ??= 0;
    shared.errorFormat ??= "problem";
  }
  return { shared, methods, required, waitUntil };
}
