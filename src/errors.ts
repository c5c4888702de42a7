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

/** How error bodies look: the ReliAPI JSON shape, or RFC 9457 `application/problem+json`. */
export type ErrorFormat = "reliapi" | "problem";

/** RFC 9457 titles: short, the same for every occurrence of a code. */
const TITLES: Record<IdempotencyErrorCode, string> = {
  IDEMPOTENCY_CONFLICT: "Idempotency-Key is already used with another request",
  IDEMPOTENCY_IN_PROGRESS: "A request with this Idempotency-Key is being processed",
  IDEMPOTENCY_KEY_INVALID: "Idempotency-Key is invalid",
  IDEMPOTENCY_KEY_MISSING: "Idempotency-Key is missing",
  IDEMPOTENCY_STORE_UNAVAILABLE: "Idempotency store is unavailable",
  IDEMPOTENCY_BODY_TOO_LARGE: "Request body is too large for an Idempotency-Key",
};

/** Where each problem type is described (RFC 9457 `type`). */
export const PROBLEM_TYPE_BASE = "https://github.com/idemfetch/idemfetch/blob/main/docs/protocol.md#";

/** The parts of an error answer: its content type and its body text. Built in this one place. */
export function errorBody(
  code: IdempotencyErrorCode,
  status: number,
  message: string = MESSAGES[code],
  format: ErrorFormat = "reliapi",
): { contentType: string; text: string } {
  if (format === "problem") {
    const text = JSON.stringify({
      type: `${PROBLEM_TYPE_BASE}${code.toLowerCase()}`,
      title: TITLES[code],
      status,
      detail: message,
      code,
    });
    return { contentType: "application/problem+json", text };
  }
  const text = JSON.stringify({
    success: false,
    error: { type: status >= 500 ? "server_error" : "client_error", code, message },
  });
  return { contentType: "application/json", text };
}

/**
 * The error response every surface answers with. ReliAPI JSON by default; `format: "problem"` gives
 * RFC 9457 with `type`, `title`, `status`, `detail` and the same `code`.
 */
export function errorResponse(
  code: IdempotencyErrorCode,
  status: number,
  message: string = MESSAGES[code],
  headers: Record<string, string> = {},
  format: ErrorFormat = "reliapi",
): Response {
  const { contentType, text } = errorBody(code, status, message, format);
  return new Response(text, { status, headers: { "content-type": contentType, ...headers } });
}
