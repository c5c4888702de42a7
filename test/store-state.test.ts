// decide(): the pure lease/record state machine, with its clock and token source injected.
import { describe, expect, it } from "vitest";
import type { StoredRecord } from "../src/store.ts";
import { decide, type Entry } from "../src/store-state.ts";

const record: StoredRecord = {
  status: 200,
  statusText: "OK",
  headers: [],
  body: new Uint8Array([1]),
  createdAt: 0,
  fingerprint: "fp",
};
const lease: Entry = { kind: "lease", token: "t", fingerprint: "fp", expiresAt: 1_000 };
const token = () => "new";

describe("decide", () => {
  it("acquire: empty → a lease from now; live lease → pending; live record → done; nothing written but the lease", () => {
    expect(decide(undefined, { op: "acquire", fingerprint: "fp", leaseMs: 50 }, 100, token)).toEqual({
      reply: { state: "acquired", token: "new" },
      write: { kind: "lease", token: "new", fingerprint: "fp", expiresAt: 150 },
      changed: false,
    });
    expect(decide(lease, { op: "acquire", fingerprint: "x", leaseMs: 50 }, 999, token)).toEqual({
      reply: { state: "pending", fingerprint: "fp" },
      write: undefined,
      changed: false,
    });
    const stored: Entry = { kind: "record", record, expiresAt: 1_000 };
    expect(decide(stored, { op: "acquire", fingerprint: "x", leaseMs: 50 }, 999, token).reply).toEqual({
      state: "done",
      record,
    });
  });

  it("an expired entry is absent, and deleted when nothing else is written", () => {
    expect(decide(lease, { op: "acquire", fingerprint: "fp", leaseMs: 50 }, 1_000, token).reply.state).toBe("acquired");
    expect(decide(lease, { op: "commit", token: "t", record, ttlMs: 10 }, 1_000, token)).toEqual({
      reply: false,
      write: null,
      changed: false,
    });
    expect(decide(lease, { op: "forget", force: true }, 1_000, token)).toEqual({
      reply: "absent",
      write: null,
      changed: false,
    });
  });

  it("a corrupt value (not an entry, or a lease without an expiry) is absent, kept, and replaced by acquire", () => {
    for (const value of [
      null,
      "garbage",
      { kind: "lease", token: "t", fingerprint: "fp" },
      { ...lease, expiresAt: NaN },
    ]) {
      expect(decide(value, { op: "release", token: "t" }, 0, token)).toEqual({
        reply: false,
        write: undefined,
        changed: false,
      });
      expect(decide(value, { op: "acquire", fingerprint: "fp", leaseMs: 5 }, 0, token).reply).toEqual({
        state: "acquired",
        token: "new",
        replacedCorrupt: true,
      });
    }
  });

  it("only the owner's commit, release and renew take effect; commit, release and forget wake subscribers", () => {
    expect(decide(lease, { op: "commit", token: "other", record, ttlMs: 10 }, 0, token).reply).toBe(false);
    expect(decide(lease, { op: "commit", token: "t", record, ttlMs: 10 }, 0, token)).toEqual({
      reply: true,
      write: { kind: "record", record, expiresAt: 10 },
      changed: true,
    });
    expect(decide(lease, { op: "release", token: "t" }, 0, token)).toEqual({ reply: true, write: null, changed: true });
    expect(decide(lease, { op: "renew", token: "t", leaseMs: 5_000 }, 500, token)).toEqual({
      reply: true,
      write: { ...lease, expiresAt: 5_500 },
      changed: false,
    });
    expect(decide(lease, { op: "forget", force: false }, 0, token)).toEqual({
      reply: "in-progress",
      write: undefined,
      changed: false,
    });
    expect(decide(lease, { op: "forget", force: true }, 0, token)).toEqual({
      reply: "forgotten",
      write: null,
      changed: true,
    });
  });
});
