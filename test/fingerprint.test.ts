// Hashing and canonical JSON: the bytes every fingerprint and store key rest on.
import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { canonicalJson, sha256 } from "../src/fingerprint.js";
import { sha256Sync } from "../src/sha256.js";

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
