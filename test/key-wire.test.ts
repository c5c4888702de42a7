// Keys on the wire (issue 16.4, 16.5): whatever key the client wrapper accepts, a real HTTP server running
// idemfetch/server reads as the same key. The server's own forget(key) proves which store key it used.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdempotentFetch, IdempotencyKeyError, memoryStore } from "../src/index.ts";
import { install } from "../src/install-node.ts";
import { validateKey } from "../src/key.ts";
import { idempotency } from "../src/server.ts";
import { listen, type Served } from "./fixtures/serve.ts";

let served: Served;
let runs = 0;
const headers: (string | null)[] = [];
const server = idempotency(async (request) => {
  runs++;
  headers.push(request.headers.get("idempotency-key"));
  return new Response(await request.text(), { status: 201 });
});
beforeAll(async () => {
  served = await listen(server);
});
afterAll(() => served.close());

/** A client wrapper that sends every key it finds upstream as the header (and records what it sent). */
const client = () => {
  const sent: (string | null)[] = [];
  const f = createIdempotentFetch({
    sendKeyHeader: "always",
    fetch: async (input, init) => {
      const request = new Request(input, init);
      sent.push(request.headers.get("idempotency-key"));
      return fetch(request);
    },
  });
  return { f, sent };
};

/** Sends `key` the way `via` says and checks the server stored the answer under exactly that key. */
async function roundTrip(key: string, via: "body" | "call"): Promise<void> {
  const { f } = client();
  const body = via === "body" ? JSON.stringify({ idempotency_key: key, n: 1 }) : JSON.stringify({ n: 1 });
  const init = { method: "POST", headers: { "content-type": "application/json" }, body };
  const response = await f(`${served.url}/orders`, via === "call" ? { ...init, idempotency: { key } } : init);
  expect(response.status).toBe(201);
  await response.arrayBuffer();
  // The server's record is under the client's key, and under no other.
  expect(await server.forget(key)).toBe("forgotten");
  expect(await server.forget(key)).toBe("absent");
}

describe("issue 16.4: keys that are not Latin-1", () => {
  it("a body key 'заказ-42' reaches the server as 'заказ-42' (no ByteString error)", async () => {
    await roundTrip("заказ-42", "body");
  });

  it("a per-call key with an emoji and CJK reaches the server as itself", async () => {
    await roundTrip("订单 🧾 42", "call");
  });
});

describe("issue 16.5: keys that need quoting", () => {
  it.each([
    ['order "42"', "call"],
    ['"k"', "body"],
    [" k ", "body"],
    ["a\\b", "call"],
    ["%7e", "body"],
    ['%"x"', "body"],
  ] as const)("the key %j (%s) is the key the server reads", async (key, via) => {
    await roundTrip(key, via);
  });

  it("a plain key travels bare, as servers that do not parse sf-strings expect", async () => {
    const { f, sent } = client();
    const uuid = "0b6f4c1e-7a2d-4d4b-9a53-6f0c2b9d8e11";
    const r = await f(`${served.url}/orders`, { method: "POST", body: JSON.stringify({ idempotency_key: uuid }) });
    await r.arrayBuffer();
    expect(sent).toEqual([uuid]);
  });

  it("property: any key the client accepts, via the body or per call, is the key the server reads", async () => {
    const accepted = fc.string({ unit: "binary", minLength: 1, maxLength: 40 }).filter((key) => {
      try {
        validateKey(key);
        return true;
      } catch {
        return false;
      }
    });
    await fc.assert(
      fc.asyncProperty(accepted, fc.constantFrom("body" as const, "call" as const), (key, via) => roundTrip(key, via)),
      { numRuns: 60 },
    );
  });
});

describe("install(): the same header writing below fetch", () => {
  it("a body key beyond ASCII and one that needs quoting reach the server as themselves", async () => {
    const uninstall = install({ sendKeyHeader: "always" });
    try {
      for (const key of ["заказ-42", 'order "42"']) {
        const r = await fetch(`${served.url}/orders`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ idempotency_key: key }),
        });
        expect(r.status).toBe(201);
        await r.arrayBuffer();
        expect(await server.forget(key)).toBe("forgotten");
      }
    } finally {
      uninstall();
    }
  });
});

describe("issue 16.8: keys that are not strings", () => {
  it.each([
    ["a number", 123, /must be a string, got number 123/],
    ["an object", {}, /must be a string, got object \{\}/],
    ["null", null, /must be a string, got null/],
    ["an array", ["k"], /must be a string, got array \["k"\]/],
    ["a bigint", 1n, /must be a string, got bigint/],
  ])("per call, %s is an IdempotencyKeyError naming the key, and nothing is sent", async (_name, key, message) => {
    const { f, sent } = client();
    const before = runs;
    const call = f(`${served.url}/orders`, { method: "POST", body: "{}", idempotency: { key: key as never } });
    await expect(call).rejects.toThrow(IdempotencyKeyError);
    await expect(call).rejects.toThrow(/idempotency\.key/);
    await expect(call).rejects.toThrow(message);
    expect(sent).toEqual([]);
    expect(runs).toBe(before);
  });

  it.each([[42], [{}], [null], [undefined]])(
    "forget(%j) rejects with IdempotencyKeyError naming what it got, before any store call",
    async (key) => {
      let storeCalls = 0;
      const inner = memoryStore();
      const f = createIdempotentFetch({
        store: {
          ...inner,
          forget: (...args) => {
            storeCalls++;
            return inner.forget(...args);
          },
        },
      });
      await expect(f.forget(key as never)).rejects.toThrow(IdempotencyKeyError);
      await expect(f.forget(key as never)).rejects.toThrow(/must be a string, got/);
      expect(storeCalls).toBe(0);
    },
  );

  it("a per-call key and a header that name different keys are refused; the same key is fine", async () => {
    const { f, sent } = client();
    const url = `${served.url}/orders`;
    const init = (header: string) => ({ method: "POST", body: "{}", headers: { "idempotency-key": header } });
    await expect(f(url, { ...init("a"), idempotency: { key: "b" } })).rejects.toThrow(IdempotencyKeyError);
    expect(sent).toEqual([]);
    const r = await f(url, { ...init('"a"'), idempotency: { key: "a" } });
    expect(r.status).toBe(201);
  });
});
