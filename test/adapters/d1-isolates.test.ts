// d1Store inside workerd: three Workers (three isolates, no shared memory) on one D1 database, under idempotency(handler).
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newToken } from "../../src/store.ts";
import { bundle } from "../edge/harness.ts";
import { startUpstream, type Upstream } from "../fixtures/upstream.ts";

const NAMES = ["a", "b", "c"] as const;
let up: Upstream;
let mf: Miniflare;
beforeAll(async () => {
  up = await startUpstream();
  const script = await bundle("../fixtures/d1-worker.ts", "esm");
  mf = new Miniflare({
    workers: NAMES.map((name) => ({
      name,
      modules: true,
      script,
      compatibilityDate: "2025-09-01",
      // The same database id in every Worker: one D1 database.
      d1Databases: { DB: "idemfetch-d1-isolates" },
      bindings: { UPSTREAM: up.url },
    })),
  });
});
afterAll(async () => {
  await mf?.dispose();
  await up?.close();
});

const call = async (name: string, path: string, init?: RequestInit): Promise<Response> => {
  // Miniflare types its Fetcher with workers-types this project does not load.
  const worker = (await mf.getWorker(name)) as unknown as { fetch(url: string, init?: RequestInit): Promise<Response> };
  return worker.fetch(`http://worker${path}`, init);
};

describe("d1Store across isolates in workerd", () => {
  it("the three Workers are separate module instances", async () => {
    const ids = await Promise.all(NAMES.map(async (name) => (await call(name, "/isolate")).text()));
    expect(new Set(ids).size).toBe(3);
  });

  it("3 concurrent duplicates, one per isolate, run once and get identical bytes; the next one replays", async () => {
    const key = `dup-${newToken()}`;
    const init = { method: "POST", headers: { "idempotency-key": key }, body: '{"order":1}' };
    const responses = await Promise.all(NAMES.map((name) => call(name, "/orders", init)));
    const bodies = await Promise.all(responses.map((r) => r.text()));
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(new Set(bodies).size).toBe(1);
    expect(up.count("/echo")).toBe(1);
    expect(responses.filter((r) => r.headers.get("idempotent-replayed") === "true")).toHaveLength(2);
    const again = await call("b", "/orders", init);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(await again.text()).toBe(bodies[0]);
    const other = await call("c", "/orders", { ...init, body: '{"order":2}' });
    expect(other.status).toBe(409);
    await other.arrayBuffer();
    expect(up.count("/echo")).toBe(1);
  });
});
