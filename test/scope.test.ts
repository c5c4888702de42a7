// Scopes (issue 16.7): blank credentials are anonymous, and `credentialHeaders` names the headers that scope
// a key, with the Set-Cookie rules of a credential scope; forget() derives the scope the same way.
import { afterEach, describe, expect, it } from "vitest";
import { createIdempotentFetch } from "../src/index.ts";
import { idempotency, type ServerIdempotencyOptions } from "../src/server.ts";
import { listen, type Served } from "./fixtures/serve.ts";

let served: Served[] = [];
afterEach(async () => {
  await Promise.all(served.map((s) => s.close()));
  served = [];
});

/** A real HTTP server running idempotency(): every execution answers with its number and a session cookie. */
async function serve(options: ServerIdempotencyOptions = {}) {
  let runs = 0;
  const handler = idempotency(async () => {
    runs++;
    return new Response(`run ${runs}`, { status: 201, headers: { "set-cookie": `session=${runs}` } });
  }, options);
  const s = await listen(handler);
  served.push(s);
  const call = (headers: Record<string, string>, key = "k1") =>
    fetch(`${s.url}/orders`, { method: "POST", headers: { "idempotency-key": key, ...headers }, body: "{}" });
  return { call, handler, runs: () => runs };
}

describe("blank credentials are no credentials", () => {
  it.each([
    ["empty", ""],
    ["whitespace only", " \t "],
  ])(
    "two clients with an %s Authorization are anonymous: the second never gets the first's Set-Cookie",
    async (_n, value) => {
      const s = await serve();
      const first = await s.call({ authorization: value });
      expect(first.headers.get("set-cookie")).toBe("session=1");
      const second = await s.call({ authorization: value });
      expect(await second.text()).toBe("run 1");
      expect(second.headers.get("idempotent-replayed")).toBe("true");
      expect(second.headers.get("set-cookie")).toBeNull();
      // Same scope as no header at all: anonymous.
      expect(await s.handler.forget("k1")).toBe("forgotten");
    },
  );

  it("an empty Authorization falls through to the Cookie, as a missing one does", async () => {
    const s = await serve();
    await (await s.call({ authorization: "", cookie: "sid=a" })).arrayBuffer();
    const other = await s.call({ authorization: "", cookie: "sid=b" });
    expect(await other.text()).toBe("run 2");
    const same = await s.call({ cookie: "sid=a" });
    expect(same.headers.get("set-cookie")).toBe("session=1");
  });
});

describe("credentialHeaders", () => {
  it("by default an X-API-Key is no credential: two API keys share the anonymous scope", async () => {
    const s = await serve();
    await (await s.call({ "x-api-key": "a" })).arrayBuffer();
    const b = await s.call({ "x-api-key": "b" });
    expect(await b.text()).toBe("run 1");
    expect(b.headers.get("set-cookie")).toBeNull();
  });

  it('["x-api-key"]: each API key has its own scope, and its replays carry Set-Cookie', async () => {
    const s = await serve({ credentialHeaders: ["X-API-Key"] });
    await (await s.call({ "x-api-key": "a" })).arrayBuffer();
    const b = await s.call({ "x-api-key": "b" });
    expect(await b.text()).toBe("run 2");
    const a = await s.call({ "x-api-key": "a" });
    expect(await a.text()).toBe("run 1");
    expect(a.headers.get("idempotent-replayed")).toBe("true");
    expect(a.headers.get("set-cookie")).toBe("session=1");
    // Authorization no longer scopes (it is not in the list): it replays in the anonymous scope, without cookies.
    await (await s.call({ authorization: "Bearer x" }, "k2")).arrayBuffer();
    const anon = await s.call({}, "k2");
    expect(anon.headers.get("set-cookie")).toBeNull();
    expect(s.runs()).toBe(3);
  });

  it("forget() derives the scope from the same headers", async () => {
    const s = await serve({ credentialHeaders: ["x-api-key"] });
    await (await s.call({ "x-api-key": "a" })).arrayBuffer();
    expect(await s.handler.forget("k1", { headers: { authorization: "a" } })).toBe("absent");
    expect(await s.handler.forget("k1", { headers: { "x-api-key": " " } })).toBe("absent");
    expect(await s.handler.forget("k1", { headers: { "x-api-key": "a" } })).toBe("forgotten");
    expect(await (await s.call({ "x-api-key": "a" })).text()).toBe("run 2");
  });

  it("the client wrapper scopes by them too: two API keys, one body key, two upstream calls", async () => {
    let upstream = 0;
    const f = createIdempotentFetch({
      credentialHeaders: ["x-api-key"],
      fetch: async () => new Response(`up ${++upstream}`),
    });
    const call = (apiKey: string) =>
      f("http://api.test/x", { method: "POST", headers: { "x-api-key": apiKey }, body: '{"idempotency_key":"k"}' });
    expect(await (await call("a")).text()).toBe("up 1");
    expect(await (await call("b")).text()).toBe("up 2");
    expect(await (await call("a")).text()).toBe("up 1");
  });

  it.each([
    [{ credentialHeaders: "x-api-key" }, /credentialHeaders.*an array of header names/],
    [{ credentialHeaders: ["x api key"] }, /credentialHeaders/],
    [{ credentialHeaders: [42] }, /credentialHeaders/],
    [{ credentialHeaders: ["x-api-key"], scope: () => "s" }, /credentialHeaders.*custom scope/],
  ])("refuses %j with a TypeError at construction", (options, message) => {
    expect(() => createIdempotentFetch(options as never)).toThrow(TypeError);
    expect(() => createIdempotentFetch(options as never)).toThrow(message);
    expect(() => idempotency(async () => new Response(), options as never)).toThrow(message);
  });
});
