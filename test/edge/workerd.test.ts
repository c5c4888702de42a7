// The faces over upstashStore inside workerd (Cloudflare's runtime) through Miniflare: two isolates, one Upstash.
import { Miniflare } from "miniflare";
import { bundle, edgeSuite, eventually } from "./harness.ts";

edgeSuite(
  "workerd",
  async (env) => {
    const script = await bundle("./entry-workerd.ts", "esm");
    // Two Miniflare instances are two workerd processes: nothing shared but the Upstash fixture.
    const start = () => new Miniflare({ modules: true, script, compatibilityDate: "2025-09-01", bindings: { ...env } });
    const [a, b] = [start(), start()];
    const dispatch = (mf: Miniflare) => (path: string, init?: RequestInit) =>
      mf.dispatchFetch(`http://worker${path}`, init as never) as unknown as Promise<Response>;
    const waits = async () => (await (await dispatch(a)("/waits")).json()) as { handed: number; settled: number };
    return {
      a: dispatch(a),
      b: dispatch(b),
      // workerd gives the caller no handle on waitUntil: ask the isolate until every handed promise settled.
      settled: async () =>
        (await eventually(async () => {
          const w = await waits();
          return w.settled === w.handed ? w : undefined;
        })) ?? (await waits()),
      close: async () => {
        await Promise.all([a.dispose(), b.dispose()]);
      },
    };
  },
  {
    // workerd cancels what a request still runs once its client disconnects, unless it is under waitUntil.
    commitsWithoutWaitUntil: "workerd cancels the request's remaining work when its client disconnects",
  },
);
