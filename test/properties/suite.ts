// The invariant suite for one store: known counterexamples, known defects, fixed seeds, and a floor of random examples.
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { FACE_NAMES, type FaceName } from "./faces.ts";
import { INVARIANTS, invariantProperty, listenForUnhandled, runScenario, type StoreEnv, stats } from "./harness.ts";
import { KNOWN, KNOWN_DEFECTS } from "./known.ts";

/**
 * Random examples per property and store in CI (each a batch of 1-3 scenarios side by side); `npm run fuzz` runs
 * more. PROPERTY_RUNS raises it; the floor of 25 is lowered only by PROPERTY_RUNS_FLOOR (the Node matrix re-runs).
 */
const FLOOR = Number(process.env.PROPERTY_RUNS_FLOOR ?? 25);
const RUNS = Math.max(FLOOR, Number(process.env.PROPERTY_RUNS ?? FLOOR));
/** Seeds that run on every CI run, besides the random ones (each for SEED_RUNS examples). */
const SEEDS = [20261203, 16, 424242, 7, 1_000_003];
const SEED_RUNS = 3;
/**
 * Time budgets, in ms, well under the test's timeout: a property whose examples outrun theirs fails, naming how
 * many ran (never a timeout, never a quiet green), and shrinking a failure gets its own. A scenario itself never hangs (the
 * harness's watchdog), so a check always ends with a result, its seed and its counterexample.
 */
const BUDGET_MS = Number(process.env.PROPERTY_BUDGET_S ?? 150) * 1000;
const SHRINK_MS = Number(process.env.PROPERTY_SHRINK_S ?? 60) * 1000;
const SEED_BUDGET_MS = 30_000;
const SEED_SHRINK_MS = 15_000;
/** The replayed known scenarios: a few each, and one that hangs is stopped by the watchdog well before this. */
const KNOWN_TIMEOUT_MS = 120_000;
const TIMEOUT_MS = Math.max(
  600_000,
  BUDGET_MS + SHRINK_MS + 120_000,
  SEEDS.length * (SEED_BUDGET_MS + SEED_SHRINK_MS) + 120_000,
);

export function invariantSuite(title: string, env: StoreEnv & { close?: () => Promise<void> }): void {
  const stop = listenForUnhandled();
  afterAll(async () => {
    stop();
    await env.close?.();
  });

  /**
   * Runs one property within `budget` ms (and `shrink` ms more to shrink a failure) and logs how many scenarios
   * ran, per face, and how long it took (the CI cost); a budget that runs out before every example ran fails.
   */
  const check = async (
    name: string,
    chaos: boolean,
    params: { seed?: number; numRuns: number },
    budget: number,
    shrink: number,
  ) => {
    const counter: { runs: number; failed: number; perFace: Partial<Record<FaceName, number>> } = {
      runs: 0,
      failed: 0,
      perFace: {},
    };
    const before = { ...stats };
    const started = performance.now();
    const property = invariantProperty(env, { chaos, counter });
    let result = await fc.check(property, { ...params, interruptAfterTimeLimit: budget });
    const examples = result.numRuns;
    let note = "";
    if (result.failed && result.interrupted && result.counterexamplePath !== null) {
      // The budget cut shrinking short: shrink on from where it stopped, for `shrink` ms more.
      const more = await fc.check(property, {
        seed: result.seed,
        path: result.counterexamplePath,
        interruptAfterTimeLimit: shrink,
      });
      if (more.failed) result = more;
      note = `; shrinking ${more.interrupted ? "cut short by its budget too" : "finished"} (${shrink / 1000} s budget)`;
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const faces = FACE_NAMES.map((f) => `${f} ${counter.perFace[f] ?? 0}`).join(", ");
    const failed = result.failed
      ? `, FAILED (path ${result.counterexamplePath}; ${counter.failed} failing batches while shrinking)`
      : "";
    const hung = stats.hung - before.hung;
    const excused = stats.durableExcused - before.durableExcused;
    const notes = `${hung > 0 ? `; ${hung} scenario(s) stopped by the watchdog` : ""}${excused > 0 ? `; ${excused} durable check(s) skipped: a store call answered after storeTimeoutMs or a heartbeat ran late` : ""}`;
    console.log(
      `[properties] ${env.name} / ${name}: ${examples} examples, ${counter.runs} scenarios (${faces}) in ${seconds} s, seed ${result.seed}${failed}${note}${notes}`,
    );
    if (!result.failed && result.interrupted) {
      // A property cut short proved less than it claims: a loud failure, never a quiet green with fewer examples.
      throw new Error(
        `[properties] ${env.name} / ${name}: the time budget (${budget / 1000} s) ran out after ${result.numRuns} of ${params.numRuns} examples; raise PROPERTY_BUDGET_S or find what made the examples slow`,
      );
    }
    if (result.failed) {
      const cause = result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance);
      // `npm run fuzz` runs the same property: it replays this failure and shrinks it further, for as long as asked.
      const replay = `FUZZ_STORE=${env.name} FUZZ_DURABLE=${chaos ? 0 : 1} FUZZ_SEED=${result.seed} FUZZ_PATH=${result.counterexamplePath} FUZZ_SECONDS=600 FUZZ_SHRINK_SECONDS=600 npm run fuzz`;
      throw new Error(
        `${fc.defaultReportMessage(result) ?? "property failed"}\nreplay and shrink on: ${replay}\nviolations:\n${cause}`,
      );
    }
  };

  describe(title, () => {
    for (const [inv, scenarios] of Object.entries(KNOWN)) {
      it(
        `(${inv}) known counterexamples, every invariant checked: ${scenarios.length}`,
        async () => {
          const found: string[] = [];
          for (const [i, s] of scenarios.entries()) {
            for (const x of await runScenario(s, env)) found.push(`known ${inv}/${i}: (${x.inv}) ${x.msg}`);
          }
          expect(found).toEqual([]);
        },
        KNOWN_TIMEOUT_MS,
      );
    }

    for (const d of KNOWN_DEFECTS) {
      // Recorded, not hidden: the scenario must still break what the defect breaks; when it stops, drop the entry.
      it(
        `known defect ${d.defect}, expected to fail until fixed: ${d.title}`,
        async () => {
          const found = await runScenario(d.scenario, env);
          const hits = found.filter((x) => d.breaks.includes(x.inv));
          expect(
            hits.length,
            `defect ${d.defect} no longer reproduces on ${env.name}: remove it from KNOWN_DEFECTS (test/properties/known.ts)`,
          ).toBeGreaterThan(0);
        },
        KNOWN_TIMEOUT_MS,
      );
    }

    const all = Object.keys(INVARIANTS).join(", ");
    it(
      `every invariant (${all}) on fixed seeds ${SEEDS.join(", ")}`,
      async () => {
        for (const seed of SEEDS) {
          await check(`seed ${seed}`, true, { seed, numRuns: SEED_RUNS }, SEED_BUDGET_MS, SEED_SHRINK_MS);
        }
      },
      TIMEOUT_MS,
    );
    it(
      `every invariant, under store faults at any call, through every face: ${RUNS} random examples`,
      async () => {
        await check("faults", true, { numRuns: RUNS }, BUDGET_MS, SHRINK_MS);
      },
      TIMEOUT_MS,
    );
    it(
      `every invariant, store calls slow but answering (durable before delivered): ${RUNS} random examples`,
      async () => {
        await check("slow commits", false, { numRuns: RUNS }, BUDGET_MS, SHRINK_MS);
      },
      TIMEOUT_MS,
    );
  });
}
