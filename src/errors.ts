// Error classes, cross-realm guards, and the one builder of the JSON error bodies on the wire.

export type IdempotencyErrorCode =
  | "IDEMPOTENCY_CONFLICT"
  | "IDEMPOTENCY_IN_PROGRESS"
  | "IDEMPOTENCY_KEY_INVALID"
  | "IDEMPOTENCY_KEY_MISSING"
  | "IDEMPOTENCY_STORE_UNAVAILABLE"
  | "IDEMPOTENCY_BODY_TOO_LARGE";

/** Base class of every error idemfetch throws. */
export class IdempotencyError extends Error {
  override name: string = "IdempotencyError";
  readonly code: IdempotencyErrorCode;
  constructor(code: IdempotencyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** A key that is empty, longer than 255 characters or holds control characters; thrown before any network call. */
export class IdempotencyKeyError extends IdempotencyError {
  override name = "IdempotencyKeyError" as const;
  constructor(message: string) {
    super("IDEMPOTENCY_KEY_INVALID", message);
  }
}

// Guards match on `name` too: errors cross realms (iframes, workers) and duplicated bundles.
export const isIdempotencyError = (error: unknown): error is IdempotencyError =>
  error instanceof IdempotencyError ||
  (typeof error === "object" &&
    error !== null &&
    typeof (error as { name?: unknown }).name === "string" &&
    (error as { name: string }).name.startsWith("Idempotency") &&
    typeof (error as { code?: unknown }).code === "string");

export const isIdempotencyKeyError = (error: unknown): error is IdempotencyKeyError =>
  error instanceof IdempotencyKeyError ||
  (isIdempotencyError(error) && (error as { name: string }).name === "IdempotencyKeyError");

const MESSAGES: Record<IdempotencyErrorCode, string> = {
  IDEMPOTENCY_CONFLICT: "Request body differs from previous request with same key",
  IDEMPOTENCY_IN_PROGRESS: "A request with the same key is still in progress",
  IDEMPOTENCY_KEY_INVALID: "Idempotency key is invalid",
  IDEMPOTENCY_KEY_MISSING: "Idempotency-Key header is required for this request",
  IDEMPOTENCY_STORE_UNAVAILABLE: "Idempotency store is unavailable",
  IDEMPOTENCY_BODY_TOO_LARGE: "Request body is too large to fingerprint for an idempotency key",
};

/** The ReliAPI-shaped JSON error response every surface answers with. */
export function errorResponse(
  code: IdempotencyErrorCode,
  status: number,
  message: string = MESSAGES[code],
  headers: Record<string, string> = {},
): Response {
  const body = JSON.stringify({
    success: false,
    error: { type: status >= 500 ? "server_error" : "client_error", code, message },
  });
  return new Response(body, { status, headers: { "content-type": "application/json", ...headers } });
}
