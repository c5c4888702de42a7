// Identical client calls resolve their key, fingerprint and scope once: a replay or the next burst skips the hashing.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";

const hashed = vi.hoisted(() => ({ count: 0 }));
vi.mock("../src/fingerprint.ts", async (importOriginal) => {
  const original = await importOriginal<typeof import("../src/fingerprint.ts")>();
  return {
    ...original,
    fingerprintOf: (...args: Parameters<typeof original.fingerprintOf>) => {
      hashed.count++;
      return original.fingerprintOf(...args);
    },
  };
});

const { createIdempotentFetch } = await import("../src/index.ts");

let up: Upstream;
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(() => up.close());

describe("known inputs", () => {
  it("a replay of an identical call is answered without building a Request or fingerprinting the body again", async () => {
    const f = createIdempotentFetch();
    const call = () =>
      f(`${up.url}/echo`, {
        method: "POST",
        headers: { "content-type": "application/json", "Idempotency-Key": "known-1" },
        body: '{"a":1}',
      });
    const first = await (await call()).text();
    expect(hashed.count).toBe(1);
    // Counts the Requests built from here on: a replay of known inputs needs none.
    const Original = globalThis.Request;
    let built = 0;
    globalThis.Request = class extends Original {
      constructor(...args: ConstructorParameters<typeof Request>) {
        super(...args);
        built++;
      }
    };
    let replay: Response;
    try {
      replay = await call();
    } finally {
      globalThis.Request = Original;
    }
    expect(built).toBe(0);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.text()).toBe(first);
    expect(hashed.count).toBe(1);
    // Another body is another call: fingerprinted (and a conflict).
    const other = await f(`${up.url}/echo`, {
      method: "POST",
      headers: { "content-type": "application/json", "Idempotency-Key": "known-1" },
      body: '{"a":2}',
    });
    expect(other.status).toBe(409);
    expect(hashed.count).toBe(2);
    expect(up.count()).toBe(1);
  });
});
