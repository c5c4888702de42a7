// One vitest `it` per invariant against a store environment, time-boxed so the whole suite stays near a minute.
import { afterAll, describe, expect, it } from "vitest";
import {
  assertInvariants,
  INVARIANTS,
  type Invariant,
  listenForUnhandled,
  runScenario,
  type StoreEnv,
} from "./harness.ts";
import { KNOWN } from "./known.ts";

/** Milliseconds of random examples per invariant (after the known counterexamples). */
const BUDGET_MS = Number(process.env.PROPERTY_MS ?? 3500);

export function invariantSuite(title: string, env: StoreEnv & { close?: () => Promise<void> }): void {
  const stop = listenForUnhandled();
  afterAll(async () => {
    stop();
    await env.close?.();
  });
  describe(title, () => {
    for (const inv of Object.keys(INVARIANTS) as Invariant[]) {
      const known = KNOWN[inv] ?? [];
      if (known.length > 0) {
        it(`(${inv}) known counterexamples: ${known.length}`, async () => {
          const found: string[] = [];
          for (const [i, s] of known.entries()) {
            for (const x of await runScenario(s, env)) if (x.inv === inv) found.push(`known ${i}: ${x.msg}`);
          }
          expect(found).toEqual([]);
        }, 30_000);
      }
      it(`(${inv}) random: ${INVARIANTS[inv]}`, async () => {
        // The durability check needs every store call to answer in time: its scenarios only slow commits down.
        await assertInvariants(env, [inv], {
          numRuns: 10_000,
          interruptAfterTimeLimit: BUDGET_MS,
          chaos: inv !== "durable",
        });
      }, 60_000);
    }
  });
}
