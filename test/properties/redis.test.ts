// The fault harness over ioredisStore on the shared Redis (127.0.0.1:6379, unique prefix, keys deleted after).
import { afterAll, describe, it } from "vitest";
import { redisEnv } from "./envs.js";
import { assertInvariants, INVARIANTS, type Invariant, listenForUnhandled } from "./harness.js";

const stop = listenForUnhandled();
const env = redisEnv();
afterAll(async () => {
  stop();
  await env.close();
});

describe("invariants over ioredisStore (real Redis)", () => {
  for (const inv of Object.keys(INVARIANTS) as Invariant[]) {
    it(`(${inv}) ${INVARIANTS[inv]}`, async () => {
      await assertInvariants(env, [inv], { numRuns: 200, interruptAfterTimeLimit: 4000, chaos: inv !== "durable" });
    }, 60_000);
  }
});
