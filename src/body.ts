// Reading bodies: request bodies for a fingerprint (whole when bounded, never past a limit, nothing lost) and answers as far as in memory.
import type { Source } from "./call.ts";

/** The Content-Length a request declares, when it is a valid one. */
export function declaredLength(headers: Headers): number | null {
  const value = headers.get("content-length");
  return value !== null && /^\d{1,15}$/.test(value) ? Number(value) : null;
}

/** Whether a content type is JSON (`application/json`, `…+json`). */
export function isJsonType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const type = contentType.split(";", 1)[0]?.trim().toLowerCase() ?? "";
  return type === "application/json" || type.endsWith("+json");
}

/** What reading a body up to a limit gave: every byte, or (past the limit) a stream of every byte. */
export type LimitedBody = { bytes: Uint8Array } | { rest: ReadableStream<Uint8Array> };

/**
 * Reads a body up to `limit` bytes; past it, hands back a stream of everything (nothing is lost). With
 * `onlyObjects`, also stops at the first byte that is not whitespace unless it opens a JSON object: only
 * an object can carry `idempotency_key`, and an upload of anything else must not wait for its end.
 */
export async function readLimited(
  body: ReadableStream<Uint8Array>,
  limit: number,
  onlyObjects = false,
): Promise<LimitedBody> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let sniffing = onlyObjects;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { bytes: concat(chunks, size) };
    chunks.push(value);
    size += value.length;
    let stop = size > limit;
    if (sniffing) {
      const first = firstNonSpace(value);
      if (first !== undefined) {
        sniffing = false;
        stop ||= first !== 0x7b; // "{"
      }
    }
    if (stop) {
      return {
        rest: new ReadableStream<Uint8Array>({
          start(controller) {
            for (const chunk of chunks) controller.enqueue(chunk);
          },
          async pull(controller) {
            const next = await reader.read();
            if (next.done) controller.close();
            else controller.enqueue(next.value);
          },
          cancel: (reason) => reader.cancel(reason),
        }),
      };
    }
  }
}

function firstNonSpace(bytes: Uint8Array): number | undefined {
  for (const b of bytes) if (b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09) return b;
  return undefined;
}

/** The chunks as one array (the chunk itself when there is one). */
export function concat(chunks: Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** What `readReady` found: the whole body, or the chunks read so far and the read still pending (if any). */
export type ReadyBody = { whole: Uint8Array } | { chunks: Uint8Array[]; next: ReturnType<Source["read"]> | undefined };

/** Settles once `promise` does, or with `undefined` after a few microtasks: a read that is not in memory yet. */
const soon = <T>(promise: Promise<T>): Promise<{ value: T } | { error: unknown } | undefined> =>
  Promise.race([
    promise.then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
    Promise.resolve()
      .then(() => undefined)
      .then(() => undefined)
      .then(() => undefined),
  ]);

/**
 * Reads a body as far as it is already in memory, never waiting for I/O: a handler's `Response.json()` or a
 * small upstream answer comes back whole, so it can be answered as bytes (one write, no stream per caller).
 * Stops past `limit` bytes, at a read that would wait (a live stream: SSE), or at an error, and hands back
 * what it read with that pending read so nothing is lost or read twice.
 */
export async function readReady(source: Source, limit: number): Promise<ReadyBody> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size <= limit) {
    const next = source.read();
    const got = await soon(next);
    if (got === undefined || "error" in got) return { chunks, next };
    if (got.value.done) return { whole: concat(chunks, size) };
    const chunk = got.value.value as Uint8Array;
    chunks.push(chunk);
    size += chunk.length;
  }
  return { chunks, next: undefined };
}
