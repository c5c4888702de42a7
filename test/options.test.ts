// Option validation: timers within setTimeout's range, TTLs finite, per-call TTLs checked (defects 10, 11).
import { describe, expect, it } from "vitest";
import { callTtlMs, MAX_TIMER_MS, normalizeOptions } from "../src/options.ts";

describe("callTtlMs", () => {
  it("defect 10: undefined in, undefined out; seconds in, ms out", () => {
    expect(callTtlMs(undefined)).toBeUndefined();
    expect(callTtlMs(1.5)).toBe(1500);
    expect(callTtlMs(30 * 86_400)).toBe(2_592_000_000); // 30 days: past 2^31-1 ms, fine for a TTL
  });

  it.each([[0], [-5], [Number.NaN], [Number.POSITIVE_INFINITY], ["60"], [null], [1e300]])(
    "defect 10: refuses a per-call ttlSeconds of %s with a TypeError naming it",
    (ttl) => {
      expect(() => callTtlMs(ttl)).toThrow(TypeError);
      expect(() => callTtlMs(ttl)).toThrow(/option "ttlSeconds" must be a positive number/);
      expect(() => callTtlMs(ttl, "idempotency.ttlSeconds")).toThrow(/"idempotency\.ttlSeconds"/);
    },
  );
});

describe("normalizeOptions", () => {
  it.each(["storeTimeoutMs", "waitTimeoutMs", "leaseMs"])(
    "defect 11: %s above 2^31-1 ms is refused at construction, naming the maximum",
    (name) => {
      for (const value of [2 ** 31, 1e10, 1e300]) {
        expect(() => normalizeOptions({ [name]: value })).toThrow(TypeError);
        expect(() => normalizeOptions({ [name]: value })).toThrow(
          new RegExp(`option "${name}" must be a .* at most 2147483647 ms`),
        );
      }
      expect(normalizeOptions({ [name]: MAX_TIMER_MS })[name as "leaseMs"]).toBe(MAX_TIMER_MS);
    },
  );

  it("defect 11: TTLs are not timers: large ones pass, infinite or absurd ones do not", () => {
    expect(normalizeOptions({ ttlSeconds: 365 * 86_400 }).ttlMs).toBe(31_536_000_000);
    const auto = normalizeOptions({ autoKey: { windowMs: 1e10 } }).autoKey;
    expect(auto ? auto.windowMs : undefined).toBe(1e10);
    for (const ttlSeconds of [Number.POSITIVE_INFINITY, 1e300, 0]) {
      expect(() => normalizeOptions({ ttlSeconds })).toThrow(/option "ttlSeconds"/);
    }
    expect(() => normalizeOptions({ autoKey: { windowMs: Number.POSITIVE_INFINITY } })).toThrow(/autoKey\.windowMs/);
  });

  it("waitTimeoutMs 0 still means answer at once; negative does not", () => {
    expect(normalizeOptions({ waitTimeoutMs: 0 }).waitTimeoutMs).toBe(0);
    expect(() => normalizeOptions({ waitTimeoutMs: -1 })).toThrow(/non-negative/);
  });

  it.each([
    [{ maxBodyBytes: 2 ** 31 }, /maxBodyBytes.*at most 1073741824 bytes/],
    [{ maxBodyBytes: 1.5 }, /maxBodyBytes/],
    [{ namespace: "my app" }, /namespace/],
    [{ namespace: "caf\u00e9" }, /namespace/],
    [{ namespace: "a\nb" }, /namespace/],
    [{ namespace: "" }, /namespace/],
    [{ namespace: "x".repeat(65) }, /namespace/],
    [{ autoKey: { methods: ["PO ST"] } }, /autoKey\.methods/],
    [{ autoKey: { methods: [""] } }, /autoKey\.methods/],
  ])("refuses other nonsense: %j", (options, message) => {
    expect(() => normalizeOptions(options as never)).toThrow(TypeError);
    expect(() => normalizeOptions(options as never)).toThrow(message);
  });

  it("accepts sensible values at the edges", () => {
    const o = normalizeOptions({
      namespace: "my-app/v2@eu",
      maxBodyBytes: 2 ** 30,
      autoKey: { methods: ["post", "M-SEARCH"] },
    });
    expect(o.namespace).toBe("my-app/v2@eu");
    expect(o.maxBodyBytes).toBe(2 ** 30);
  });
});

describe("credentialHeaders (issue 16.7)", () => {
  it("defaults to authorization, then cookie, and lower-cases what it is given", () => {
    expect(normalizeOptions({}).credentialHeaders).toEqual(["authorization", "cookie"]);
    expect(normalizeOptions({ credentialHeaders: ["X-API-Key", "Authorization"] }).credentialHeaders).toEqual([
      "x-api-key",
      "authorization",
    ]);
    expect(normalizeOptions({ credentialHeaders: [] }).credentialHeaders).toEqual([]);
  });
});
