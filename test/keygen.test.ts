// stableKey() and newKey() (issue 18.2): deterministic and random keys that fit the key alphabet, and the
// seed's three examples (retry with one key, a stable key from user and prompt, a key with request context).
import { createHash } from "node:crypto";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdempotentFetch, newKey, stableKey } from "../src/index.ts";
import { keyHeaderValue, validateKey } from "../src/key.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";

describe("stableKey", () => {
  it("is the hex SHA-256 of the canonical JSON of its parts (reproducible in any language)", () => {
    const expected = createHash("sha256").update('["user-7",{"a":1,"b":[true,null]}]').digest("hex");
    expect(stableKey("user-7", { b: [true, null], a: 1 })).toBe(expected);
  });

  it("ignores object key order and spacing, but not the order, type or value of parts", () => {
    expect(stableKey({ a: 1, b: 2 })).toBe(stableKey({ b: 2, a: 1 }));
    expect(stableKey("a", "b")).not.toBe(stableKey("b", "a"));
    expect(stableKey("1")).not.toBe(stableKey(1));
    expect(stableKey("ab")).not.toBe(stableKey("a", "b"));
    expect(stableKey(1.0)).toBe(stableKey(1));
  });

  it("property: every result is 64 hex characters, a valid key sent bare", () => {
    const part = fc.oneof(
      fc.string(),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.jsonValue(),
    );
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 4 }), (parts) => {
        const key = stableKey(...(parts as never[]));
        expect(key).toMatch(/^[0-9a-f]{64}$/);
        expect(validateKey(key)).toBe(key);
        expect(keyHeaderValue(key)).toBe(key);
        expect(stableKey(...(structuredClone(parts) as never[]))).toBe(key);
      }),
    );
  });

  it.each([
    ["no parts", [], /needs at least one part/],
    ["undefined", [undefined], /part 1 is undefined/],
    ["NaN", ["a", Number.NaN], /part 2 is NaN/],
    ["a Date", [new Date(0)], /part 1 is a Date/],
    ["a Map", [new Map()], /part 1 is a Map/],
    ["a function deep inside", [{ a: [1, () => 1] }], /part 1\.a\[1\] is a function/],
    ["a bigint", [1n], /part 1 is a bigint/],
  ])("refuses %s with a TypeError naming the part", (_name, parts, message) => {
    expect(() => stableKey(...(parts as never[]))).toThrow(TypeError);
    expect(() => stableKey(...(parts as never[]))).toThrow(message);
  });

  it("refuses a cycle instead of recursing forever", () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    expect(() => stableKey(a as never)).toThrow(/cycle/);
  });
});

describe("newKey", () => {
  it("is a UUID v4, different every time", () => {
    const keys = new Set(Array.from({ length: 10_000 }, newKey));
    expect(keys.size).toBe(10_000);
    for (const key of [...keys].slice(0, 100)) {
      expect(key).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(keyHeaderValue(key)).toBe(key);
    }
  });
});

describe("the seed's examples, rewritten (docs/keys-and-bodies.md)", () => {
  let up: Upstream;
  beforeAll(async () => {
    up = await startUpstream();
  });
  afterAll(() => up.close());

  it("Retry Logic: one newKey() for every try; a try that failed after the server ran replays its answer", async () => {
    up.reset();
    const f = createIdempotentFetch();
    const key = newKey();
    const bodies: string[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await f(`${up.url}/echo`, { method: "POST", body: '{"amount":5}', idempotency: { key } });
      bodies.push(await r.text());
    }
    expect(up.count("/echo")).toBe(1);
    expect(new Set(bodies).size).toBe(1);
    expect(up.keys).toEqual([key]);
  });

  it("Generate Stable Keys: stableKey(userId, prompt) joins the same question, not another one", async () => {
    up.reset();
    const f = createIdempotentFetch();
    const ask = (userId: string, prompt: string) =>
      f(`${up.url}/echo`, {
        method: "POST",
        body: JSON.stringify({ prompt }),
        idempotency: { key: stableKey(userId, prompt) },
      }).then((r) => r.text());
    const [a, b] = await Promise.all([ask("u1", "hello"), ask("u1", "hello")]);
    expect(a).toBe(b);
    await ask("u1", "bye");
    await ask("u2", "hello");
    expect(up.count("/echo")).toBe(3);
  });

  it("Include Request Context: stableKey(user, session, { prompt, model }) scopes a key to its context", async () => {
    up.reset();
    const f = createIdempotentFetch();
    const key = (session: string) => stableKey("user-7", session, { prompt: "hi", model: "m1" });
    for (const session of ["s1", "s1", "s2"]) {
      const body = JSON.stringify({ idempotency_key: key(session), prompt: "hi" });
      await (await f(`${up.url}/echo`, { method: "POST", body })).arrayBuffer();
    }
    expect(up.count("/echo")).toBe(2);
    expect(up.keys).toEqual([key("s1"), key("s2")]);
  });
});
