// durableObjectStore against IdempotencyObject in workerd (Miniflare), driven from Node through Miniflare's namespace: the shared contract on both storage backends, plus what only this store does.
import { Miniflare } from "miniflare";
import { type DurableObjectNamespaceLike, durableObjectStore } from "../../adapters/durable-object.ts";
import { testStore } from "../conformance.ts";
import { bundle } from "../edge/harness.ts";

/** The class as wrangler.toml binds it: `new_sqlite_classes` (the default for new classes) or the older key-value backend. */
async function start(useSQLite: boolean): Promise<{ mf: Miniflare; namespace: DurableObjectNamespaceLike }> {
  const mf = new Miniflare({
    modules: true,
    script: await bundle("./durable-object/worker.ts", "esm"),
    compatibilityDate: "2025-09-01",
    bindings: { UPSTREAM: "http://127.0.0.1:9" },
    durableObjects: { IDEMPOTENCY: { className: "IdempotencyObject", useSQLite } },
  });
  // Miniflare's Node-side namespace has the binding's idFromName/get; its stubs' fetch reach the object.
  return {
    mf,
    namespace: (await mf.getDurableObjectNamespace("IDEMPOTENCY")) as unknown as DurableObjectNamespaceLike,
  };
}

for (const useSQLite of [true, false]) {
  const backend = useSQLite ? "SQLite backend" : "key-value backend";
  let mf: Miniflare | undefined;
  testStore(
    `durableObjectStore (${backend})`,
    async () => {
      const started = await start(useSQLite);
      mf = started.mf;
      return durableObjectStore(started.namespace, { waitMs: 2_000 });
    },
    {
      cleanup: async () => {
        await mf?.dispose();
      },
    },
  );
}
