// The fault harness over memoryStore: each SPEC invariant as its own property (time-boxed for CI).
import { afterAll, describe, it } from "vitest";
import { memoryEnv } from "./envs.js";
import { assertInvariants, INVARIANTS, type Invariant, listenForUnhandled } from "./harness.js";

const stop = listenForUnhandled();
afterAll(stop);

describe("invariants over memoryStore", () => {
  for (const inv of Object.keys(INVARIANTS) as Invariant[]) {
    it(`(${inv}) ${INVARIANTS[inv]}`, async () => {
      await assertInvariants(memoryEnv, [inv], {
        numRuns: 200,
        interruptAfterTimeLimit: 4000,
        chaos: inv !== "durable",
      });
    }, 60_000);
  }
});
