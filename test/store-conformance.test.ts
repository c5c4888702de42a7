// The shipped conformance suite checks itself: a store without subscribe fails the wake-up tests unless it
// declares { subscribe: false }, and then those are reported as skipped, never passed. And the store kit
// (idemfetch/store) is enough to write a store that passes it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { liveMemoryStore } from "../src/memory-live.ts";
import { memoryStore } from "../src/memory-store.ts";
import type { IdempotencyStore } from "../src/store.ts";
import {
  decide,
  decodeRecord,
  type Entry,
  encodeRecord,
  keyedListeners,
  newToken,
  type Operation,
  type Replies,
} from "../src/store-kit.ts";
import { StoreContractError, type TestApi, type TestStoreOptions, testStore } from "../src/testing.ts";

/**
 * A store written only from idemfetch/store, over a backend that holds text (a Map of strings standing in
 * for a key-value service): entries as JSON, records through the record codec.
 */
function kitStore(backend: Map<string, string>): IdempotencyStore {
  const listeners = keyedListeners();
  const read = (text: string | undefined): unknown => {
    if (text === undefined) return undefined;
    try {
      const value = JSON.parse(text) as { kind?: unknown; record?: unknown };
      // An undecodable record stays undecoded: decide() finds it corrupt.
      return value.kind === "record" && typeof value.record === "string"
        ? { ...value, record: decodeRecord(value.record) }
        : value;
    } catch {
      return text;
    }
  };
  const write = (entry: Entry): string =>
    JSON.stringify(entry.kind === "record" ? { ...entry, record: encodeRecord(entry.record) } : entry);
  const run = async <O extends Operation>(key: string, operation: O): Promise<Replies[O["op"]]> => {
    const step = decide(read(backend.get(key)), operation, Date.now(), newToken);
    if (step.write === null) backend.delete(key);
    else if (step.write !== undefined) backend.set(key, write(step.write));
    if (step.changed) listeners.notify(key);
    return step.reply;
  };
  return {
    acquire: (key, fingerprint, leaseMs) => run(key, { op: "acquire", fingerprint, leaseMs }),
    commit: (key, token, record, ttlMs) => run(key, { op: "commit", token, record, ttlMs }),
    release: (key, token) => run(key, { op: "release", token }),
    renew: (key, token, leaseMs) => run(key, { op: "renew", token, leaseMs }),
    forget: (key, force) => run(key, { op: "forget", force }),
    subscribe: (key, onChange) => listeners.add(key, onChange),
  };
}

const backend = new Map<string, string>();
testStore("a store built from idemfetch/store alone", () => kitStore(backend), {
  describe,
  it,
  beforeAll,
  afterAll,
  writeRaw: async (key, value) => {
    backend.set(key, value);
  },
});

/** Registers the suite into plain arrays instead of a runner, so a test can run any of its tests by name. */
function registered(makeStore: () => IdempotencyStore, options: TestStoreOptions = {}) {
  const tests = new Map<string, () => Promise<void>>();
  const skipped: string[] = [];
  const before: (() => Promise<void>)[] = [];
  const api: TestApi = {
    describe: (_name, body) => body(),
    it: (name, fn) => tests.set(name, fn),
    skip: (name) => skipped.push(name),
    beforeAll: (fn) => before.push(fn),
    afterAll: () => {},
  };
  testStore("self-check", makeStore, { ...api, ...options });
  return {
    tests,
    skipped,
    run: async (name: string) => {
      for (const fn of before.splice(0)) await fn();
      const fn = tests.get(name);
      if (!fn) throw new Error(`no test named ${name}`);
      await fn();
    },
  };
}

/** memoryStore without its subscribe: what a polling store (Upstash, Postgres without LISTEN) looks like. */
const polling = (): IdempotencyStore => {
  const { subscribe: _, ...rest } = memoryStore();
  return rest;
};

describe("testStore and stores without subscribe", () => {
  it("undeclared, a store without subscribe fails the wake-up tests instead of passing them", async () => {
    const suite = registered(polling);
    expect(suite.skipped.filter((name) => !name.startsWith("live stream:"))).toEqual([]);
    await expect(suite.run("subscribe wakes on commit and on release")).rejects.toThrow(StoreContractError);
    await expect(suite.run("a throwing listener does not keep the others from waking")).rejects.toThrow(
      /pass \{ subscribe: false \}/,
    );
  });

  it("declared { subscribe: false }: the 8 wake-up tests are reported as skipped, and the polling path is tested", async () => {
    const suite = registered(polling, { subscribe: false });
    const skipped = suite.skipped.filter((name) => !name.startsWith("live stream:"));
    expect(skipped).toHaveLength(8);
    for (const name of skipped) expect(name).toMatch(/\(skipped: the store has no subscribe\)$/);
    expect([...suite.tests.keys()].some((name) => name.startsWith("subscribe"))).toBe(false);
    await suite.run("has no subscribe, as declared (its waiters poll)");
    await suite.run("without subscribe, a polling waiter sees a commit, a release and a forget on its next acquire");
  });

  it("declared { subscribe: false } on a store that has subscribe fails", async () => {
    const suite = registered(() => memoryStore(), { subscribe: false });
    await expect(suite.run("has no subscribe, as declared (its waiters poll)")).rejects.toThrow(StoreContractError);
  });
});

describe("testStore and the optional live-stream capability", () => {
  it("undeclared, the live-stream tests are reported as skipped, and a store that has the methods fails", async () => {
    const suite = registered(() => liveMemoryStore());
    const live = suite.skipped.filter((name) => name.startsWith("live stream:"));
    expect(live.length).toBeGreaterThanOrEqual(10);
    for (const name of live) expect(name).toMatch(/\(skipped: not declared\)$/);
    await expect(suite.run("has no live-stream methods, as not declared")).rejects.toThrow(StoreContractError);
    await registered(polling).run("has no live-stream methods, as not declared");
    await registered(() => memoryStore()).run("has no live-stream methods, as not declared");
  });

  it("declared { live: true } on a store without the methods fails its tests", async () => {
    const suite = registered(polling, { live: true });
    expect(suite.skipped.filter((name) => name.startsWith("live stream:"))).toEqual([]);
    await expect(
      suite.run(
        "live stream: the head and body parts read back in order, from byte 0 or from an offset of the same stream",
      ),
    ).rejects.toThrow(/publishLive/);
  });
});
