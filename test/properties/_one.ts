import { memoryEnv, redisEnv } from "./envs.js";
import { listenForUnhandled, runScenario } from "./harness.js";
import { KNOWN } from "./known.js";

listenForUnhandled();
const r = redisEnv();
for (const [inv, list] of Object.entries(KNOWN))
  for (const [i, s] of list!.entries()) {
    const m = await runScenario(s, memoryEnv);
    const d = await runScenario(s, r);
    console.log(inv, i, "memory:", m.map((v) => v.inv).join(","), "| redis:", d.map((v) => v.inv).join(","));
  }
await r.close();
process.exit(0);
