// Idempotency-Key header parsing and writing: bare tokens, RFC 8941 sf-strings, RFC 9651 Display Strings
// (defect 17, issue 16.4/16.5), and the one key alphabet.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IdempotencyKeyError } from "../src/errors.ts";
import { explicitKey, keyFromHeader, keyFromJson, keyHeaderValue, validateKey } from "../src/key.ts";

describe("keyFromHeader", () => {
  it.each([
    ["abc", "abc"],
    ['"abc"', "abc"],
    ['  "abc"  ', "abc"],
    ['"a\\"b"', 'a"b'],
    ['"a\\\\b"', "a\\b"],
    ['"a b ~!#$%&()*+,-./:;<=>?@[]^_`{|}"', "a b ~!#$%&()*+,-./:;<=>?@[]^_`{|}"],
    ["tok;en=1", "tok;en=1"],
    ["é-bare", "é-bare"],
  ])("accepts %s as the key %s", (header, key) => {
    expect(keyFromHeader(header)).toBe(key);
  });

  it.each([
    ["no closing quote", '"abc'],
    ["an escaped closing quote and nothing after", '"abc\\"'],
    ['an escape other than \\" or \\\\', '"a\\x"'],
    ["a backslash at the very end", '"abc\\'],
    ["parameters after the sf-string", '"abc";p=1'],
    ["a token after the sf-string", '"abc" x'],
    ["an unescaped quote inside", '"a"b"'],
    ["non-ASCII inside the quotes", '"caf\u00e9"'],
    ["a tab inside the quotes", '"a\tb"'],
    ["DEL inside the quotes", '"a\u007fb"'],
    ["an empty sf-string", '""'],
    ["a bare token ending in a quote", 'abc"'],
    ["a bare token with a quote inside", 'a"b'],
    ["an sf-string over 255 characters once unescaped", `"${"x".repeat(256)}"`],
  ])("defect 17: refuses %s (%s) with IdempotencyKeyError", (_name, header) => {
    expect(() => keyFromHeader(header)).toThrow(IdempotencyKeyError);
  });

  it("counts the length after unescaping: 255 escaped quotes are a 255-character key", () => {
    expect(keyFromHeader(`"${'\\"'.repeat(255)}"`)).toBe('"'.repeat(255));
  });
});

describe("validateKey and keyFromJson", () => {
  it("body keys keep their rules: 1-255 characters, no control characters, any other Unicode", () => {
    expect(validateKey("caf\u00e9")).toBe("caf\u00e9");
    expect(() => validateKey("")).toThrow(IdempotencyKeyError);
    expect(() => validateKey("a\u0000")).toThrow(IdempotencyKeyError);
    expect(keyFromJson({ idempotency_key: "k" })).toBe("k");
    expect(keyFromJson({ idempotency_key: 5 })).toBeUndefined();
    expect(keyFromJson(["k"])).toBeUndefined();
  });
});

describe("the key alphabet (issue 16.4, 16.5, 16.8)", () => {
  it.each([
    ["C1 control", "a\u0085b"],
    ["a lone high surrogate", "a\ud800"],
    ["a lone low surrogate", "\udc00b"],
    ["DEL", "a\u007f"],
  ])("refuses %s in every place a key comes from", (_name, key) => {
    expect(() => validateKey(key)).toThrow(IdempotencyKeyError);
    expect(() => keyFromJson({ idempotency_key: key })).toThrow(IdempotencyKeyError);
    expect(() => explicitKey(key, null)).toThrow(IdempotencyKeyError);
  });

  it.each([
    [123, /\(idempotency\.key\) must be a string, got number 123/],
    [{}, /got object \{\}/],
    [null, /got null/],
    [() => "k", /got a function/],
  ])("a per-call key of %s is an IdempotencyKeyError naming idempotency.key and what it got", (key, message) => {
    expect(() => explicitKey(key, null)).toThrow(IdempotencyKeyError);
    expect(() => explicitKey(key, null)).toThrow(message);
  });

  it("a per-call key must name the header's key when both are given", () => {
    expect(explicitKey("a b", '"a b"')).toBe("a b");
    expect(explicitKey(undefined, "x")).toBe("x");
    expect(() => explicitKey("a", "b")).toThrow(/differs from the Idempotency-Key header/);
  });
});

describe("keyHeaderValue: the header the client sends for a key", () => {
  it.each([
    ["0b6f4c1e-7a2d-4d4b-9a53-6f0c2b9d8e11", "0b6f4c1e-7a2d-4d4b-9a53-6f0c2b9d8e11"],
    ["order:42/a", "order:42/a"],
    ['order "42"', '"order \\"42\\""'],
    [" k ", '" k "'],
    ["a\\b", '"a\\\\b"'],
    ["заказ-42", '%"%d0%b7%d0%b0%d0%ba%d0%b0%d0%b7-42"'],
    ['é%"', '%"%c3%a9%25%22"'],
  ])("%j is sent as %s", (key, header) => {
    expect(keyHeaderValue(key)).toBe(header);
    expect(keyFromHeader(header)).toBe(key);
  });

  it("property: every valid key is sent as a Latin-1 header value that reads back as the same key", () => {
    const valid = fc.string({ unit: "binary", minLength: 1, maxLength: 255 }).filter((key) => {
      try {
        validateKey(key);
        return true;
      } catch {
        return false;
      }
    });
    fc.assert(
      fc.property(valid, (key) => {
        const header = keyHeaderValue(key);
        // What fetch's Headers accepts: a ByteString without leading or trailing whitespace.
        expect(header).toMatch(/^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/);
        expect(new Headers({ "idempotency-key": header }).get("idempotency-key")).toBe(header);
        expect(keyFromHeader(header)).toBe(key);
      }),
      { numRuns: 2000 },
    );
  });

  it.each([
    ["no closing quote", '%"abc'],
    ["uppercase hex", '%"%C3%A9"'],
    ["a lone %", '%"a%"'],
    ["bytes that are not UTF-8", '%"%ff"'],
    ["parameters after it", '%"a";p=1'],
    ["non-ASCII inside", '%"é"'],
    ["an encoded control character", '%"%00"'],
  ])("refuses a Display String with %s (%s)", (_name, header) => {
    expect(() => keyFromHeader(header)).toThrow(IdempotencyKeyError);
  });
});
