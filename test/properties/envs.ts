// The stores the properties run against: a fresh memoryStore per example, or real Redis under a unique prefix.
import { Redis } from "ioredis";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { memoryStore } from "../../src/memory-store.ts";
import { newToken } from "../../src/store.ts";
import { deletePrefix } from "../fixtures/util.ts";
import type { StoreEnv } from "./harness.ts";

export const memoryEnv: StoreEnv = {
  name: "memory",
  make() {
    const store = memoryStore();
    return { store, other: store, namespace: "props", cleanup: async () => {} };
  },
};

/** Real Redis on 127.0.0.1:6379; every key of this run lives under one prefix, deleted by `close()`. */
export function redisEnv(): StoreEnv & { close(): Promise<void> } {
  const prefix = `idemfetch-test:props:${newToken().slice(0, 10)}:`;
  const redis = new Redis({ host: "127.0.0.1", port: 6379, keyPrefix: prefix });
  // Another process' connection: commands on one connection run in order, which would hide a late commit.
  const second = new Redis({ host: "127.0.0.1", port: 6379, keyPrefix: prefix });
  const admin = new Redis({ host: "127.0.0.1", port: 6379 });
  let n = 0;
  return {
    name: "redis",
    make() {
      const store = ioredisStore({ redis });
      const other = ioredisStore({ redis: second });
      return {
        store,
        other,
        namespace: `p${n++}`,
        cleanup: async () => {
          await store.close?.();
          await other.close?.();
        },
      };
    },
    async close() {
      await deletePrefix(admin, prefix);
      redis.disconnect();
      second.disconnect();
      admin.disconnect();
    },
  };
}
