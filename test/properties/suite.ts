// The invariant suite for one store: known counterexamples, known defects, fixed seeds, and a floor of random examples.
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { FACE_NAMES, type FaceName } from "./faces.ts";
import { INVARIANTS, invariantProperty, listenForUnhandled, runScenario, type StoreEnv } from "./harness.ts";
import { KNOWN, KNOWN_DEFECTS } from "./known.ts";

/** Random examples per property and store in CI (each a batch of 1-3 scenarios side by side); `npm run fuzz` runs more. */
const RUNS = Math.max(25, Number(process.env.PROPERTY_RUNS ?? 25));
/** Seeds that run on every CI run, besides the random ones (each for SEED_RUNS examples). */
const SEEDS = [20261203, 16, 424242, 7, 1_000_003];
const SEED_RUNS = 3;

export function invariantSuite(title: string, env: StoreEnv & { close?: () => Promise<void> }): void {
  const stop = listenForUnhandled();
  afterAll(async () => {
    stop();
    await env.close?.();
  });

  /** Runs one property and logs how many scenarios ran, per face, and how long it took (the CI cost). */
  const check = async (name: string, chaos: boolean, params: { seed?: number; numRuns: number }) => {
    const counter: { runs: number; perFace: Partial<Record<FaceName, number>> } = { runs: 0, perFace: {} };
    const started = performance.now();
    const result = await fc.check(invariantProperty(env, { chaos, counter }), params);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const faces = FACE_NAMES.map((f) => `${f} ${counter.perFace[f] ?? 0}`).join(", ");
    console.log(
      `[properties] ${env.name} / ${name}: ${result.numRuns} examples, ${counter.runs} scenarios (${faces}) in ${seconds} s, seed ${result.seed}`,
    );
    if (result.failed) {
      const cause = result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance);
      throw new Error(`${fc.defaultReportMessage(result) ?? "property failed"}\nviolations:\n${cause}`);
    }
  };

  describe(title, () => {
    for (const [inv, scenarios] of Object.entries(KNOWN)) {
      it(`(${inv}) known counterexamples, every invariant checked: ${scenarios.length}`, async () => {
        const found: string[] = [];
        for (const [i, s] of scenarios.entries()) {
          for (const x of await runScenario(s, env)) found.push(`known ${inv}/${i}: (${x.inv}) ${x.msg}`);
        }
        expect(found).toEqual([]);
      }, 60_000);
    }

    for (const d of KNOWN_DEFECTS) {
      // Recorded, not hidden: the scenario must still break what the defect breaks; when it stops, drop the entry.
      it(`known defect ${d.defect}, expected to fail until fixed: ${d.title}`, async () => {
        const found = await runScenario(d.scenario, env);
        const hits = found.filter((x) => d.breaks.includes(x.inv));
        expect(
          hits.length,
          `defect ${d.defect} no longer reproduces on ${env.name}: remove it from KNOWN_DEFECTS (test/properties/known.ts)`,
        ).toBeGreaterThan(0);
      }, 60_000);
    }

    const all = Object.keys(INVARIANTS).join(", ");
    it(`every invariant (${all}) on fixed seeds ${SEEDS.join(", ")}`, async () => {
      for (const seed of SEEDS) await check(`seed ${seed}`, true, { seed, numRuns: SEED_RUNS });
    }, 600_000);
    it(`every invariant, under store faults at any call, through every face: ${RUNS} random examples`, async () => {
      await check("faults", true, { numRuns: RUNS });
    }, 600_000);
    it(`every invariant, store calls slow but answering (durable before delivered): ${RUNS} random examples`, async () => {
      await check("slow commits", false, { numRuns: RUNS });
    }, 600_000);
  });
}
