// Identical client calls join the first one's flight by what they passed (fetch.ts sameAs): same outcome as the slow path.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createIdempotentFetch, type IdempotencyEvent } from "../src/index.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";

let up: Upstream;
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(() => up.close());
beforeEach(() => up.reset());

const init = (body: string, key = "k-1"): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", "idempotency-key": key },
  body,
});

describe("joining early", () => {
  it("200 identical calls in one tick: 1 upstream call, 199 joins, each caller its own bytes", async () => {
    const events: IdempotencyEvent[] = [];
    const f = createIdempotentFetch({ onEvent: (e) => events.push(e) });
    const responses = await Promise.all(Array.from({ length: 200 }, () => f(`${up.url}/echo?ms=30`, init('{"a":1}'))));
    const bodies = await Promise.all(responses.map((r) => r.arrayBuffer()));
    expect(up.count("/echo")).toBe(1);
    expect(events.filter((e) => e.type === "join")).toHaveLength(199);
    expect(f.stats()).toMatchObject({ requests: 200, joined: 199, upstreamCalls: 1 });
    const first = new Uint8Array(bodies[0] as ArrayBuffer);
    first[0] = 0; // one caller changing its bytes changes nobody else's
    expect(new Set(bodies.slice(1).map((b) => new TextDecoder().decode(b))).size).toBe(1);
    expect(new TextDecoder().decode(bodies[1])).toContain('"n":1');
  });

  it("another body under the same key is not joined early: the store decides (409)", async () => {
    const f = createIdempotentFetch();
    const [a, b] = await Promise.all([
      f(`${up.url}/echo?ms=30`, init('{"a":1}')),
      f(`${up.url}/echo?ms=30`, init('{"a":2}')),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 409]);
    expect(up.count("/echo")).toBe(1);
  });

  it("an init or URL changed after the call does not change what the call was", async () => {
    const f = createIdempotentFetch();
    const url = new URL(`${up.url}/echo?ms=20`);
    const shared = init('{"a":1}', "k-mut");
    const first = f(url, shared);
    shared.body = '{"a":2}';
    url.pathname = "/other";
    const second = f(new URL(`${up.url}/echo?ms=20`), init('{"a":1}', "k-mut"));
    const [r1, r2] = await Promise.all([first, second]);
    expect(await r1.text()).toBe(await r2.text());
    const replay = await f(`${up.url}/echo?ms=20`, init('{"a":1}', "k-mut"));
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(JSON.parse(await replay.text()).body).toBe('{"a":1}');
    expect(up.count("/echo")).toBe(1);
  });

  it("a keyless call is never held back by an identical one (pass-through exits release the claim)", async () => {
    const f = createIdempotentFetch();
    const keyless: RequestInit = { method: "POST", headers: { "content-type": "text/plain" }, body: "hello" };
    const rs = await Promise.all([1, 2, 3].map(() => f(`${up.url}/echo?ms=10`, keyless)));
    expect(rs.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(up.count("/echo")).toBe(3);
  });

  it("an aborted joiner rejects alone; the others get the answer", async () => {
    const f = createIdempotentFetch();
    const controller = new AbortController();
    const a = f(`${up.url}/echo?ms=50`, init('{"a":1}', "k-abort"));
    const b = f(`${up.url}/echo?ms=50`, { ...init('{"a":1}', "k-abort"), signal: controller.signal });
    controller.abort(new Error("gone"));
    await expect(b).rejects.toThrow("gone");
    expect((await a).status).toBe(200);
    expect(up.count("/echo")).toBe(1);
  });
});
