// Idempotency-Key header parsing: bare tokens and RFC 8941 sf-strings (defect 17).
import { describe, expect, it } from "vitest";
import { IdempotencyKeyError } from "../src/errors.ts";
import { keyFromHeader, keyFromJson, validateKey } from "../src/key.ts";

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
