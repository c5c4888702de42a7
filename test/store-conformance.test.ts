// The shipped conformance suite checks itself: a store without subscribe fails the wake-up tests unless it
// declares { subscribe: false }, and then those are reported as skipped, never passed.
import { describe, expect, it } from "vitest";
import { memoryStore } from "../src/memory-store.ts";
import type { IdempotencyStore } from "../src/store.ts";
import { StoreContractError, type TestApi, type TestStoreOptions, testStore } from "../src/testing.ts";

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
    expect(suite.skipped).toEqual([]);
    await expect(suite.run("subscribe wakes on commit and on release")).rejects.toThrow(StoreContractError);
    await expect(suite.run("a throwing listener does not keep the others from waking")).rejects.toThrow(
      /pass \{ subscribe: false \}/,
    );
  });

  it("declared { subscribe: false }: the 8 wake-up tests are reported as skipped, and the polling path is tested", async () => {
    const suite = registered(polling, { subscribe: false });
    expect(suite.skipped).toHaveLength(8);
    for (const name of suite.skipped) expect(name).toMatch(/\(skipped: the store has no subscribe\)$/);
    expect([...suite.tests.keys()].some((name) => name.startsWith("subscribe"))).toBe(false);
    await suite.run("has no subscribe, as declared (its waiters poll)");
    await suite.run("without subscribe, a polling waiter sees a commit, a release and a forget on its next acquire");
  });

  it("declared { subscribe: false } on a store that has subscribe fails", async () => {
    const suite = registered(() => memoryStore(), { subscribe: false });
    await expect(suite.run("has no subscribe, as declared (its waiters poll)")).rejects.toThrow(StoreContractError);
  });
});
