// forget(key, { headers | scope, force }) on every face: the key is hashed and scoped as for a call, and runs again after.
import express from "express";
import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { idempotency as expressIdempotency } from "../src/express.ts";
import { idempotency as fastifyIdempotency } from "../src/fastify.ts";
import { createIdempotentFetch, memoryStore } from "../src/index.ts";
import { idempotency } from "../src/server.ts";

const req = (key: string, headers: Record<string, string> = {}) =>
  new Request("http://app.test/orders", {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key, ...headers },
    body: "{}",
  });

describe("forget()", () => {
  it("the wrapper: a forgotten key runs again; an unknown one is absent; a bad key throws", async () => {
    let runs = 0;
    const f = createIdempotentFetch({ fetch: async () => new Response(`run ${++runs}`) });
    const call = () => f("http://up.test/x", { method: "POST", headers: { "idempotency-key": "k" }, body: "{}" });
    expect(await (await call()).text()).toBe("run 1");
    expect(await (await call()).text()).toBe("run 1");
    expect(await f.forget("k")).toBe("forgotten");
    expect(await (await call()).text()).toBe("run 2");
    expect(await f.forget("never-used")).toBe("absent");
    await expect(f.forget("")).rejects.toThrow(/empty/);
  });

  it("the server: scoped by the client's credentials; a live lease is refused unless forced", async () => {
    let runs = 0;
    let release!: () => void;
    const h = idempotency(async () => {
      runs++;
      if (runs === 2) await new Promise<void>((r) => (release = r));
      return new Response(`run ${runs}`);
    });
    const alice = { authorization: "Bearer alice" };
    await (await h(req("order", alice))).text();
    // Another client's scope holds nothing under that key.
    expect(await h.forget("order", { headers: { authorization: "Bearer bob" } })).toBe("absent");
    expect(await h.forget("order", { headers: alice })).toBe("forgotten");
    const running = h(req("order", alice));
    await new Promise((r) => setTimeout(r, 20));
    expect(await h.forget("order", { headers: alice })).toBe("in-progress");
    expect(await h.forget("order", { headers: alice, force: true })).toBe("forgotten");
    release();
    expect(await (await running).text()).toBe("run 2");
  });

  it("a custom scope needs its value: forget({ scope }) hashes it like the option's result", async () => {
    const h = idempotency(async () => new Response("x"), {
      store: memoryStore(),
      scope: (r) => r.headers.get("x-tenant") ?? "none",
    });
    await (await h(req("t", { "x-tenant": "acme" }))).text();
    await expect(h.forget("t")).rejects.toThrow(TypeError);
    expect(await h.forget("t", { scope: "other" })).toBe("absent");
    expect(await h.forget("t", { scope: "acme" })).toBe("forgotten");
  });

  it("Express and Fastify faces expose the same forget()", async () => {
    const e = expressIdempotency();
    const app = express();
    app.post("/o", e, (_req, res) => void res.send("ok"));
    expect(await e.forget("nothing")).toBe("absent");
    const f = fastifyIdempotency();
    const fastify = Fastify();
    await fastify.register(f);
    expect(await f.forget("nothing")).toBe("absent");
    await fastify.close();
  });
});
