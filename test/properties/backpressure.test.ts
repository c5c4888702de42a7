// Backpressure (SPEC "durable before delivered"): a slow reader never makes the library buffer a stream it will not store.
import fc from "fast-check";
import { describe, it } from "vitest";
import { createIdempotentFetch } from "../../src/fetch.ts";
import { memoryStore } from "../../src/memory-store.ts";
import { idempotency } from "../../src/server.ts";

const CHUNK = 32 * 1024;
const MAX_BODY = 64 * 1024;

/**
 * Waits until the library stops pulling: 20 event-loop turns in a row with no new pull. A pump that kept
 * pulling would go on through those turns on any machine, where a fixed sleep passes when it is merely slow.
 */
async function quiet(pulls: () => number): Promise<void> {
  let last = pulls();
  for (let still = 0; still < 20; ) {
    await new Promise((resolve) => setImmediate(resolve));
    const now = pulls();
    still = now === last ? still + 1 : 0;
    last = now;
  }
}

describe("backpressure", () => {
  it("a caller that stops reading a body over maxBodyBytes stops the upstream after a few chunks", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          face: fc.constantFrom("fetch" as const, "server" as const),
          chunks: fc.integer({ min: 12, max: 40 }),
          readFirst: fc.integer({ min: 0, max: 3 }),
        }),
        async ({ face, chunks, readFirst }) => {
          let pulled = 0;
          const upstream = async (): Promise<Response> =>
            new Response(
              new ReadableStream<Uint8Array>(
                {
                  pull(controller) {
                    pulled++;
                    controller.enqueue(new Uint8Array(CHUNK).fill(pulled & 0xff));
                    if (pulled >= chunks) controller.close();
                  },
                },
                { highWaterMark: 1 },
              ),
              { headers: { "content-type": "application/octet-stream" } },
            );
          const options = { store: memoryStore(), maxBodyBytes: MAX_BODY, storeTimeoutMs: 100, leaseMs: 500 };
          const init = { method: "POST", headers: { "idempotency-key": "bp" }, body: "x" };
          const res =
            face === "fetch"
              ? await createIdempotentFetch({ ...options, fetch: upstream as unknown as typeof fetch })(
                  "http://upstream.test/bp",
                  init,
                )
              : await idempotency(upstream, options)(new Request("http://upstream.test/bp", init));
          const reader = (res.body as ReadableStream<Uint8Array>).getReader();
          for (let i = 0; i < readFirst; i++) await reader.read();
          await quiet(() => pulled);
          const buffered = pulled - readFirst;
          await reader.cancel();
          // A small bound: the reader's queue and the tee's, a handful of chunks, never the whole stream.
          if (buffered > 6) {
            throw new Error(`${face}: the caller read ${readFirst} chunks, the library pulled ${pulled} of ${chunks}`);
          }
        },
      ),
      { numRuns: 12 },
    );
  });
});
