// Hashing and canonical JSON: the bytes every fingerprint and store key rest on (defects 13 and 14).
import { createHash, randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalJson, fingerprintOf, MAX_CANONICAL_DEPTH, parseJsonBody, sha256 } from "../src/fingerprint.ts";
import { keyFromJson } from "../src/key.ts";
import { sha256Sync } from "../src/sha256.ts";

const reference = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

describe("sha256", () => {
  it("the JavaScript SHA-256 equals node:crypto for every length 0-300 and at block edges", () => {
    for (let n = 0; n <= 300; n++) {
      const bytes = randomBytes(n);
      expect(sha256Sync(bytes), `length ${n}`).toBe(reference(bytes));
    }
    for (const n of [447, 448, 511, 512, 513, 2047, 2048, 2049, 100_000]) {
      const bytes = randomBytes(n);
      expect(sha256Sync(bytes), `length ${n}`).toBe(reference(bytes));
    }
  });

  it("sha256() gives the same hex for short texts (JavaScript) and long bytes (Web Crypto)", async () => {
    expect(await sha256("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const long = randomBytes(10_000);
    expect(await sha256(long)).toBe(reference(long));
    expect(await sha256("é".repeat(2000))).toBe(reference(Buffer.from("é".repeat(2000))));
  });
});

describe("canonicalJson", () => {
  it("sorts keys at every depth and drops insignificant whitespace", () => {
    expect(canonicalJson(JSON.parse(' { "b" : [ {"y":1,"x":2} ], "a": "s" } '))).toBe('{"a":"s","b":[{"x":2,"y":1}]}');
  });

  it("keeps array order, unicode and escapes", () => {
    expect(canonicalJson([3, 1, "\u2028", 'q"'])).toBe('[3,1,"\u2028","q\\""]');
  });
});

const enc = new TextEncoder();
const bodyOf = (text: string) => parseJsonBody(enc.encode(text));
const fp = (text: string, contentType: string | null = "application/json") => {
  const bytes = enc.encode(text);
  return fingerprintOf("POST", "https://x/y", bytes, parseJsonBody(bytes), contentType);
};
const canonical = (text: string) => bodyOf(text)?.canonical;
/** The canonical form before the rewrite: JSON.parse, then keys sorted, values as JSON.stringify writes them. */
const previousCanonical = (value: unknown): string => {
  if (Array.isArray(value)) return `[${value.map(previousCanonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${previousCanonical(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
};
const nest = (depth: number, inner = "1") => "[".repeat(depth) + inner + "]".repeat(depth);

describe("canonical JSON from source text", () => {
  it("defect 13: a keyed body nested 5000 deep fingerprints (raw bytes) instead of throwing RangeError", async () => {
    const text = `{"idempotency_key":"deep","a":${nest(5000)}}`;
    expect(text.length).toBeGreaterThan(10_000);
    const body = bodyOf(text);
    expect(body?.canonical).toBeUndefined();
    expect(keyFromJson(body)).toBe("deep");
    const a = await fp(text);
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(await fp(text)).toBe(a);
    expect(await fp(text.replace('"a"', '"b"'))).not.toBe(a);
    // Past the limit the bytes count: spacing now changes the fingerprint (the documented trade-off).
    expect(await fp(text.replace(":[", ": ["))).not.toBe(a);
  });

  it(`defect 13: nesting up to MAX_CANONICAL_DEPTH (${MAX_CANONICAL_DEPTH}) is canonical, one level more is hashed as bytes`, async () => {
    expect(canonical(` ${nest(MAX_CANONICAL_DEPTH, " 1 ")} `)).toBe(nest(MAX_CANONICAL_DEPTH));
    expect(canonical(nest(MAX_CANONICAL_DEPTH + 1))).toBeUndefined();
    expect(await fp(nest(MAX_CANONICAL_DEPTH))).toBe(await fp(` ${nest(MAX_CANONICAL_DEPTH)}`));
    expect(await fp(nest(MAX_CANONICAL_DEPTH + 1))).not.toBe(await fp(` ${nest(MAX_CANONICAL_DEPTH + 1)}`));
    // Invalid JSON past the limit is not JSON at all: no key, bytes hashed.
    expect(bodyOf(`{"idempotency_key":"k","a":${nest(500)}`)).toBeUndefined();
    const deepest = bodyOf(`{"idempotency_key":"k","a":${nest(200_000)}}`);
    expect(deepest?.canonical).toBeUndefined();
    expect(deepest?.idempotency_key).toBe("k");
    expect(() => canonicalJson(JSON.parse(nest(MAX_CANONICAL_DEPTH + 1)))).toThrow(RangeError);
  });

  it.each([
    ['{"account_id": 9007199254740993}', '{"account_id": 9007199254740992}'],
    ["[1e400]", "[null]"],
    ["[1e400]", "[1e401]"],
    ["[10.000000000000000001]", "[10]"],
    ["[0.1]", "[0.1000000000000000055511151231257827]"],
    ["[-1e-400]", "[0]"],
    ["[123456789012345678901234567890]", "[123456789012345678901234567891]"],
    ["[1e99999999999999999999]", "[1e99999999999999999998]"],
  ])("defect 14: %s and %s get different fingerprints", async (a, b) => {
    expect(await fp(a)).not.toBe(await fp(b));
  });

  it.each([
    ["[1]", "[1.0]", "[10e-1]", "[1e0]", "[0.1E+1]", "[1.00000000000000000000000]", "[100e-2]"],
    ["[0]", "[-0]", "[0.0]", "[0e400]", "[-0.000e-99999999999999999999]"],
    ["[1e400]", "[10e399]", "[0.1e401]", "[1E+400]"],
    ["[-2.5e-7]", "[-0.00000025]", "[-25e-8]"],
    ['{"a":1,"b":2}', ' { "b" : 2 ,\n\t"a" : 1 } '],
    ['["A"]', '["\\u0041"]'],
    ['["/"]', '["\\/"]'],
    ['["\\n"]', '["\\u000a"]', '["\\u000A"]'],
    ['["\u00e9"]', '["\\u00e9"]'],
    ['["\\ud83d\\ude00"]', '["\u{1f600}"]'],
    ['{"a":2}', '{"a":1,"a":2}', '{"a":{"x":1},"a":2}'],
    ['{"amount":5}', '{"idempotency_key":"k","amount":5}', '{"amount":5,"idempotency_key":1,"idempotency_key":"j"}'],
  ])("defect 14: mathematically equal spellings and equal JSON match: %s", async (...texts) => {
    const first = await fp(texts[0] as string);
    for (const text of texts.slice(1)) expect(await fp(text), text).toBe(first);
  });

  it("writes numbers exactly, in the form JSON.stringify gives a double", () => {
    expect(canonical("[1e400, 1e21, 1e20, 123e-9, 1e-6, 1e-7, -0, 12345678901234567890123]")).toBe(
      "[1e+400,1e+21,100000000000000000000,1.23e-7,0.000001,1e-7,0,1.2345678901234567890123e+22]",
    );
    expect(canonical("[9007199254740993, 10.000000000000000001, 0.30000000000000000000001]")).toBe(
      "[9007199254740993,10.000000000000000001,0.30000000000000000000001]",
    );
    expect(canonical("[1e-99999999999999999999, 5e+99999999999999999999]")).toBe(
      "[1e-99999999999999999999,5e+99999999999999999999]",
    );
  });

  it("keeps the nested idempotency_key and the last of duplicate keys, and finds the last top-level key", () => {
    expect(canonical('{"z":{"idempotency_key":"n"},"idempotency_key":"k"}')).toBe('{"z":{"idempotency_key":"n"}}');
    expect(canonical('{"a":1,"b":0,"a":3}')).toBe('{"a":3,"b":0}');
    expect(keyFromJson(bodyOf('{"idempotency_key":"x","idempotency_key":"y"}'))).toBe("y");
    expect(keyFromJson(bodyOf('{"idempotency_key":"x","idempotency_key":5}'))).toBeUndefined();
    expect(keyFromJson(bodyOf('{"idempotency_key":"\\u0078\\/y"}'))).toBe("x/y");
    expect(keyFromJson(bodyOf('[{"idempotency_key":"x"}]'))).toBeUndefined();
  });

  it("is not JSON (so hashed as bytes) exactly when JSON.parse refuses it", () => {
    for (const text of [
      '{"a":01}',
      '{"a":1.}',
      '{"a":.5}',
      '{"a":1e}',
      '{"a":-}',
      '["\\x"]',
      '["a\u0001"]',
      '["\\u12"]',
      "[1,]",
      '{"a" 1}',
      "[1] x",
      "[tru]",
      '{"a":1,}',
      "[+1]",
    ]) {
      expect(bodyOf(text), text).toBeUndefined();
    }
    expect(parseJsonBody(new Uint8Array([0x5b, 0x22, 0xff, 0x22, 0x5d]))).toBeUndefined(); // not UTF-8
  });

  it("agrees with JSON.parse on validity and with the previous canonical form on every JSON.stringify output", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer({ min: 0, max: 4 }), (value, indent) => {
        const text = JSON.stringify({ v: value }, null, indent);
        expect(canonical(text)).toBe(previousCanonical(JSON.parse(text)));
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(
        fc.json(),
        fc.nat(),
        fc.constantFrom("", "0", "-", ".", "e", '"', "\\", ",", "]", "}", " ", "\u0001"),
        (json, at, insert) => {
          const text = `[${json}]`;
          const i = at % (text.length + 1);
          const mutated = text.slice(0, i) + insert + text.slice(i + (insert === "" ? 1 : 0));
          let valid = true;
          try {
            JSON.parse(mutated);
          } catch {
            valid = false;
          }
          if (/^\s*[[{]/.test(mutated)) expect(bodyOf(mutated) !== undefined, mutated).toBe(valid);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("keeps fingerprints of ordinary bodies as they were, and of empty, byte and multipart bodies", async () => {
    const head = "POST\nhttps://x/y\n";
    expect(await fp('{"b":[1,2.5,"x"],"a":null,"idempotency_key":"k"}')).toBe(
      await sha256(`${head}json\n{"a":null,"b":[1,2.5,"x"]}`),
    );
    expect(await fingerprintOf("POST", "https://x/y", null, undefined)).toBe(await sha256(`${head}empty\n`));
    expect(await fp("not json", "text/plain")).toBe(await sha256(`${head}bytes\nnot json`));
    const form = (b: string) => `--${b}\r\ncontent-disposition: form-data; name="a"\r\n\r\n1\r\n--${b}--\r\n`;
    expect(await fp(form("B1"), "multipart/form-data; boundary=B1")).toBe(
      await fp(form("B2"), "multipart/form-data; boundary=B2"),
    );
    // A value parsed elsewhere still fingerprints like its text.
    expect(await fingerprintOf("POST", "https://x/y", null, { idempotency_key: "k", b: 1 })).toBe(await fp('{"b":1}'));
  });
});
