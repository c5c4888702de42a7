// The fault harness over memoryStore: each SPEC invariant as its own property (time-boxed for CI).
import { memoryEnv } from "./envs.js";
import { invariantSuite } from "./suite.js";

invariantSuite("invariants over memoryStore", memoryEnv);
