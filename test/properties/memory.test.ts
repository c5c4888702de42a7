// The fault harness over memoryStore: each SPEC invariant as its own property (time-boxed for CI).
import { memoryEnv } from "./envs.ts";
import { invariantSuite } from "./suite.ts";

invariantSuite("invariants over memoryStore", memoryEnv);
