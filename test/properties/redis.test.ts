// The fault harness over ioredisStore on the shared Redis (127.0.0.1:6379, unique prefix, keys deleted after).
import { redisEnv } from "./envs.ts";
import { invariantSuite } from "./suite.ts";

invariantSuite("invariants over ioredisStore (real Redis)", redisEnv());
