// `npm run fuzz`: the fault harness for as long as you like; prints the seed and path of a failure, and replays one.
// FUZZ_SECONDS (default 120) or FUZZ_RUNS, FUZZ_STORE=memory|redis|both (default both), FUZZ_FACES=fetch,express,... (default all);
// every invariant is checked on every scenario;
// FUZZ_AVOID=nonResponse,big,late,subscribe,setCookie,waiterFail,abortBefore leaves out behaviours whose failures are known;
// FUZZ_SEED + FUZZ_PATH replay a failure (and shrink it further, FUZZ_SHRINK_SECONDS, default 90).
import fc from "fast-check";
import { memoryEnv, redisEnv } from "./envs.ts";
import { FACE_NAMES, type FaceName } from "./faces.ts";
import { type Avoid, invariantProperty, listenForUnhandled, type Scenario, type StoreEnv, stats } from "./harness.ts";

const env = process.env;
const faces = (env.FUZZ_FACES ? env.FUZZ_FACES.split(",") : FACE_NAMES) as FaceName[];
// FUZZ_DURABLE=1: store calls only slow down (never fail), so durable-before-delivered is checked on every scenario.
const chaos = env.FUZZ_DURABLE !== "1";
const stores = (env.FUZZ_STORE ?? "both") === "both" ? ["memory", "redis"] : [env.FUZZ_STORE as string];
const stop = listenForUnhandled();
let failed = false;
for (const name of stores) {
  const redis = name === "redis" ? redisEnv() : undefined;
  const store: StoreEnv = redis ?? memoryEnv;
  const counter = { runs: 0 };
  const params: fc.Parameters<[Scenario[]]> = {};
  if (env.FUZZ_SEED) params.seed = Number(env.FUZZ_SEED);
  if (env.FUZZ_PATH) params.path = env.FUZZ_PATH;
  if (env.FUZZ_RUNS) params.numRuns = Number(env.FUZZ_RUNS);
  else {
    params.numRuns = 1_000_000;
    params.interruptAfterTimeLimit = Number(env.FUZZ_SECONDS ?? 120) * 1000;
  }
  const started = Date.now();
  const avoid = env.FUZZ_AVOID ? (env.FUZZ_AVOID.split(",") as Avoid[]) : undefined;
  const property = invariantProperty(store, {
    counter,
    chaos,
    faces,
    ...(avoid ? { avoid } : {}),
  });
  let result = await fc.check(property, params);
  if (result.failed && result.interrupted) {
    // The time limit cut shrinking short: go on shrinking from where it stopped, for FUZZ_SHRINK_SECONDS more.
    const more = await fc.check(property, {
      seed: result.seed,
      path: result.counterexamplePath ?? "",
      interruptAfterTimeLimit: Number(env.FUZZ_SHRINK_SECONDS ?? 90) * 1000,
    });
    if (more.failed) result = more;
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(
    `[${name}] so far in this process: ${stats.hung} scenario(s) stopped by the watchdog, ${stats.durableExcused} durable check(s) skipped (a store call past storeTimeoutMs or a late heartbeat)`,
  );
  if (result.failed) {
    failed = true;
    console.log(`\n[${name}] FAILED after ${counter.runs} scenarios in ${seconds} s`);
    console.log(
      `replay: FUZZ_STORE=${name} FUZZ_FACES=${faces.join(",")} FUZZ_DURABLE=${chaos ? 0 : 1} FUZZ_SEED=${result.seed} FUZZ_PATH=${result.counterexamplePath}`,
    );
    console.log(`counterexample: ${fc.stringify(result.counterexample)}`);
    console.log(
      `violations:\n${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}`,
    );
  } else {
    console.log(`[${name}] ${counter.runs} scenarios in ${seconds} s, no violation of any invariant`);
  }
  await redis?.close();
}
stop();
process.exit(failed ? 1 : 0);
