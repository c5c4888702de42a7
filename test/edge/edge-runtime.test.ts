// The faces over upstashStore inside Vercel's Edge Runtime (the edge-runtime package): two isolates, one Upstash.
import { AsyncLocalStorage } from "node:async_hooks";
import { EdgeRuntime } from "edge-runtime";
import { bundle, edgeSuite } from "./harness.ts";

edgeSuite(
  "edge-runtime",
  async (env) => {
    const script = await bundle("./entry-edge-runtime.ts", "iife");
    // Two runtimes are two VM contexts with their own globals and module state: nothing shared but Upstash.
    const start = () =>
      new EdgeRuntime({
        initialCode: `globalThis.EDGE_ENV = ${JSON.stringify(env)};\n${script}`,
        extend: (context) => Object.assign(context, { AsyncLocalStorage }),
      });
    const [a, b] = [start(), start()];
    const pending: Promise<unknown>[] = [];
    const dispatch = (runtime: EdgeRuntime) => async (path: string, init?: RequestInit) => {
      const response = await runtime.dispatchFetch(`http://edge${path}`, init);
      // Resolves once every promise the request handed to event.waitUntil has settled.
      pending.push(response.waitUntil());
      return response as unknown as Response;
    };
    return {
      a: dispatch(a),
      b: dispatch(b),
      settled: async () => {
        await Promise.all(pending.splice(0));
        return (await (await dispatch(a)("/waits")).json()) as { handed: number; settled: number };
      },
      close: async () => {
        await Promise.all(pending.splice(0));
      },
    };
  },
  {
    // Vercel's waitUntil (the `waitUntil` option) needs Vercel's request context, which this test sets up.
    faces: [["idempotency(handler, { waitUntil }) with Vercel's waitUntil", "mw-vercel", true]],
  },
);
