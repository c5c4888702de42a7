// The server middleware (idemfetch/server and idemfetch/hono) over real HTTP on 127.0.0.1.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { Hono } from "hono";
import { cors } from "hono/cors";
import { afterEach, describe, expect, it } from "vitest";
import { idempotency as honoIdempotency } from "../src/hono.ts";
import { IdempotencyKeyError, type IdempotencyStore, memoryStore } from "../src/index.ts";
import { type Handler, idempotency } from "../src/server.ts";
import { listen, type Served } from "./fixtures/serve.ts";
import { sleep, until } from "./fixtures/util.ts";

const CONFLICT =
  '{"success":false,"error":{"type":"client_error","code":"IDEMPOTENCY_CONFLICT","message":"Request body differs from previous request with same key"}}';
const MISSING =
  '{"success":false,"error":{"type":"client_error","code":"IDEMPOTENCY_KEY_MISSING","message":"Idempotency-Key header is required for this request"}}';

const decoder = new TextDecoder();

let served: Served[] = [];
afterEach(async () => {
  await Promise.all(served.map((s) => s.close()));
  served = [];
});
const serveIt = async (fetch: (r: Request) => Response | Promise<Response>): Promise<string> => {
  const s = await listen(fetch);
  served.push(s);
  return s.url;
};

/** A handler that counts executions and answers JSON {n, body} after `ms`. */
const counting = (ms = 0, extra: Record<string, string> = {}) => {
  const h = {
    count: 0,
    handler: (async (request: Request) => {
      const n = ++h.count;
      const body = await request.text();
      if (ms > 0) await sleep(ms);
      return new Response(JSON.stringify({ n, body, method: request.method }), {
        headers: { "content-type": "application/json", ...extra },
      });
    }) as Handler,
  };
  return h;
};

const post = (url: string, body: unknown, headers: Record<string, string> = {}, method = "POST"): Promise<Response> =>
  fetch(url, { method, headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

describe("idempotency(handler) over HTTP", () => {
  it("3 concurrent duplicates run the handler once and get identical bytes; later ones are replayed", async () => {
    const h = counting(100);
    const wrapped = idempotency(h.handler);
    const url = await serveIt(wrapped);
    const responses = await Promise.all([1, 2, 3].map(() => post(url, { q: "hi" }, { "Idempotency-Key": "chat-123" })));
    const bodies = await Promise.all(responses.map((r) => r.text()));
    expect(h.count).toBe(1);
    expect(new Set(bodies).size).toBe(1);
    expect(responses.filter((r) => r.headers.get("idempotent-replayed") === "true")).toHaveLength(2);

    const later = await post(url, { q: "hi" }, { "Idempotency-Key": "chat-123" });
    expect(later.headers.get("idempotent-replayed")).toBe("true");
    expect(later.headers.get("content-type")).toBe("application/json");
    expect(await later.text()).toBe(bodies[0]);
    expect(h.count).toBe(1);
    expect(wrapped.stats()).toMatchObject({ requests: 4, upstreamCalls: 1, saved: 3 });
  });

  it("the idempotency_key body field is a key; JSON key order does not matter", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler));
    const a = await fetch(url, { method: "POST", body: '{"idempotency_key":"k1","a":1,"b":2}' });
    const b = await fetch(url, { method: "POST", body: '{ "b": 2, "a": 1, "idempotency_key": "k1" }' });
    expect(await b.text()).toBe(await a.text());
    expect(b.headers.get("idempotent-replayed")).toBe("true");
    expect(h.count).toBe(1);
  });

  it("the handler reads the body the engine fingerprinted", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler));
    const res = await post(url, { amount: 5 }, { "Idempotency-Key": "body" });
    expect(await res.json()).toEqual({ n: 1, body: '{"amount":5}', method: "POST" });
  });

  it("same key, another body: 409 IDEMPOTENCY_CONFLICT with the exact JSON bytes", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler));
    await post(url, { amount: 1 }, { "Idempotency-Key": "pay-1" });
    const res = await post(url, { amount: 2 }, { "Idempotency-Key": "pay-1" });
    expect(res.status).toBe(409);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.text()).toBe(CONFLICT);
    expect(h.count).toBe(1);
  });

  it("a bad key is 400 IDEMPOTENCY_KEY_INVALID before the handler runs", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler));
    for (const res of [
      await post(url, {}, { "Idempotency-Key": "x".repeat(256) }),
      await post(url, {}, { "Idempotency-Key": '""' }),
      await post(url, { idempotency_key: "" }),
    ]) {
      expect(res.status).toBe(400);
      expect(res.headers.get("content-type")).toBe("application/json");
      const body = await res.json();
      expect(body).toMatchObject({ success: false, error: { type: "client_error", code: "IDEMPOTENCY_KEY_INVALID" } });
      expect(body.error.message).toMatch(/Idempotency key/);
    }
    expect(h.count).toBe(0);
  });

  it("requireKey: POST and PATCH without a key are 400 IDEMPOTENCY_KEY_MISSING; PUT, GET and keyed calls run", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler, { requireKey: true }));
    for (const method of ["POST", "PATCH"]) {
      const res = await post(url, { a: 1 }, {}, method);
      expect(res.status).toBe(400);
      expect(await res.text()).toBe(MISSING);
    }
    expect(h.count).toBe(0);
    expect((await post(url, { a: 1 }, {}, "PUT")).status).toBe(200);
    expect((await fetch(url)).status).toBe(200);
    expect((await post(url, { a: 1 }, { "Idempotency-Key": "k" })).status).toBe(200);
    expect((await post(url, { a: 1, idempotency_key: "k2" })).status).toBe(200);
    expect(h.count).toBe(4);
  });

  it("requireKey as a method list", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler, { requireKey: ["PUT"] }));
    expect((await post(url, {}, {}, "PUT")).status).toBe(400);
    expect((await post(url, {}, {}, "POST")).status).toBe(200);
  });

  it("methods not handled pass through untouched, even with a key", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler, { methods: ["POST"] }));
    await post(url, {}, { "Idempotency-Key": "m" }, "PUT");
    const second = await post(url, {}, { "Idempotency-Key": "m" }, "PUT");
    await fetch(url, { headers: { "Idempotency-Key": "m" } });
    expect(second.headers.get("idempotent-replayed")).toBeNull();
    expect(h.count).toBe(3);
  });

  it("a keyless request passes through and runs every time", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler));
    await post(url, { a: 1 });
    await post(url, { a: 1 });
    expect(h.count).toBe(2);
  });

  it("a handler that throws stores nothing: the next call runs again", async () => {
    let count = 0;
    const url = await serveIt(
      idempotency(async () => {
        if (++count === 1) throw new Error("boom");
        return new Response("ok");
      }),
    );
    expect((await post(url, {}, { "Idempotency-Key": "t" })).status).toBe(500);
    const res = await post(url, {}, { "Idempotency-Key": "t" });
    expect(await res.text()).toBe("ok");
    expect(count).toBe(2);
  });

  it("a key error thrown by the handler itself is not the client's 400: it reaches the caller and every duplicate", async () => {
    let count = 0;
    const wrapped = idempotency(async () => {
      count++;
      await sleep(30);
      // e.g. the handler calling an API through createIdempotentFetch with a bad key of its own
      throw new IdempotencyKeyError("Idempotency key is empty");
    });
    const req = () => new Request("http://x/", { method: "POST", body: "{}", headers: { "Idempotency-Key": "h" } });
    const results = await Promise.allSettled([wrapped(req()), wrapped(req())]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    for (const r of results) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(IdempotencyKeyError);
    expect(count).toBe(1);
  });

  it("5xx responses are not stored; 4xx are", async () => {
    let count = 0;
    const url = await serveIt(
      idempotency(async (r) => new Response(String(++count), { status: Number(new URL(r.url).searchParams.get("s")) })),
    );
    await post(`${url}/?s=503`, {}, { "Idempotency-Key": "a" });
    expect(await (await post(`${url}/?s=503`, {}, { "Idempotency-Key": "a" })).text()).toBe("2");
    await post(`${url}/?s=404`, {}, { "Idempotency-Key": "b" });
    expect(await (await post(`${url}/?s=404`, {}, { "Idempotency-Key": "b" })).text()).toBe("3");
  });

  it("two server instances sharing a store: a duplicate waits for the other's call and replays it", async () => {
    const store = memoryStore();
    const h = counting(200);
    const a = await serveIt(idempotency(h.handler, { store }));
    const b = await serveIt(idempotency(h.handler, { store }));
    const first = post(a, { x: 1 }, { "Idempotency-Key": "shared" });
    await sleep(50);
    const second = await post(b, { x: 1 }, { "Idempotency-Key": "shared" });
    expect(await second.text()).toBe(await (await first).text());
    expect(second.headers.get("idempotent-replayed")).toBe("true");
    expect(h.count).toBe(1);
  });

  it("factory-time validation: bad handler or options throw TypeError before any request", () => {
    expect(() => idempotency(undefined as unknown as Handler)).toThrow(TypeError);
    expect(() => idempotency(() => new Response(), { methods: "POST" as unknown as string[] })).toThrow(TypeError);
    expect(() => idempotency(() => new Response(), { ttlSeconds: -1 })).toThrow(TypeError);
    expect(() => idempotency(() => new Response(), { ietf: "yes" as unknown as boolean })).toThrow(TypeError);
  });

  it("extra handler arguments (Deno's info, a worker's env) are passed through", async () => {
    const seen: unknown[] = [];
    const wrapped = idempotency((_request: Request, info: { remote: string }) => {
      seen.push(info.remote);
      return new Response("ok");
    });
    await wrapped(new Request("http://x/", { method: "POST", body: "{}" }), { remote: "1.2.3.4" });
    await wrapped(new Request("http://x/", { method: "POST", body: "{}", headers: { "Idempotency-Key": "e" } }), {
      remote: "5.6.7.8",
    });
    expect(seen).toEqual(["1.2.3.4", "5.6.7.8"]);
  });
});

describe("Node's own http server through @hono/node-server's request listener (the README recipe)", () => {
  it("createServer(getRequestListener(idempotency(handler))) coalesces and replays", async () => {
    const h = counting(50);
    const server = createServer(getRequestListener(idempotency(h.handler)));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const [a, b] = await Promise.all([1, 2].map(() => post(url, { n: 1 }, { "Idempotency-Key": "node-http" })));
      const c = await post(url, { n: 1 }, { "Idempotency-Key": "node-http" });
      expect(new Set([await a!.text(), await b!.text(), await c.text()]).size).toBe(1);
      expect(c.headers.get("idempotent-replayed")).toBe("true");
      expect(h.count).toBe(1);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("IETF draft mode", () => {
  it("a payload mismatch is 422 problem+json", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler, { ietf: true }));
    await post(url, { a: 1 }, { "Idempotency-Key": "i1" });
    const res = await post(url, { a: 2 }, { "Idempotency-Key": "i1" });
    expect(res.status).toBe(422);
    expect((await res.json()).code).toBe("IDEMPOTENCY_CONFLICT");
  });

  it("a duplicate while the first is in flight is 409 IDEMPOTENCY_IN_PROGRESS at once, in this process and via the store", async () => {
    const store = memoryStore();
    const h = counting(400);
    const a = await serveIt(idempotency(h.handler, { ietf: true, store }));
    const b = await serveIt(idempotency(h.handler, { ietf: true, store }));
    let firstDone = false;
    const first = post(a, { a: 1 }, { "Idempotency-Key": "i2" }).finally(() => {
      firstDone = true;
    });
    // Ordered by the handler starting (the lease is held), not by a sleep.
    await until(() => h.count === 1);
    for (const url of [a, b]) {
      const res = await post(url, { a: 1 }, { "Idempotency-Key": "i2" });
      // "At once": answered while the first call is still running, not after waiting for it.
      expect(firstDone).toBe(false);
      expect(res.status).toBe(409);
      expect(res.headers.get("retry-after")).toBe("1");
      expect((await res.json()).code).toBe("IDEMPOTENCY_IN_PROGRESS");
    }
    expect((await first).status).toBe(200);
    const replay = await post(b, { a: 1 }, { "Idempotency-Key": "i2" });
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(h.count).toBe(1);
  });
});

describe("scoping", () => {
  it("the same key from two Authorization headers runs twice and never returns the other's body", async () => {
    const h = counting(50);
    const url = await serveIt(idempotency(h.handler));
    const [alice, bob] = await Promise.all(
      ["Bearer alice", "Bearer bob"].map((auth) =>
        post(url, { q: 1 }, { "Idempotency-Key": "same", Authorization: auth }),
      ),
    );
    const [a, b] = [await alice!.json(), await bob!.json()];
    expect(h.count).toBe(2);
    expect(a.n).not.toBe(b.n);
    const aliceAgain = await post(url, { q: 1 }, { "Idempotency-Key": "same", Authorization: "Bearer alice" });
    const bobAgain = await post(url, { q: 1 }, { "Idempotency-Key": "same", Authorization: "Bearer bob" });
    expect((await aliceAgain.json()).n).toBe(a.n);
    expect((await bobAgain.json()).n).toBe(b.n);
    expect(h.count).toBe(2);
  });

  it("keys are hashed in the store: store keys hold neither the raw key nor the credential", async () => {
    const seen: string[] = [];
    const inner = memoryStore();
    const store: IdempotencyStore = {
      ...inner,
      acquire: (storeKey, fingerprint, leaseMs) => {
        seen.push(storeKey);
        return inner.acquire(storeKey, fingerprint, leaseMs);
      },
    };
    const url = await serveIt(idempotency(counting().handler, { store }));
    await post(url, {}, { "Idempotency-Key": "user-secret-key", Authorization: "Bearer token-xyz" });
    await post(url, {}, { "Idempotency-Key": "user-secret-key" });
    expect(seen).toHaveLength(2);
    for (const key of seen) {
      expect(key).not.toContain("user-secret-key");
      expect(key).not.toContain("token-xyz");
    }
    expect(seen[0]).toMatch(/^idemfetch:[0-9a-f]{64}:[0-9a-f]{64}$/);
    expect(seen[1]).toMatch(/^idemfetch:anonymous:[0-9a-f]{64}$/);
  });

  it("the Cookie header scopes a key when there is no Authorization", async () => {
    const h = counting();
    const url = await serveIt(idempotency(h.handler));
    const a1 = await post(url, {}, { "Idempotency-Key": "c", Cookie: "sid=a" });
    const b1 = await post(url, {}, { "Idempotency-Key": "c", Cookie: "sid=b" });
    const a2 = await post(url, {}, { "Idempotency-Key": "c", Cookie: "sid=a" });
    expect(h.count).toBe(2);
    expect((await a2.json()).n).toBe((await a1.json()).n);
    expect((await b1.json()).n).toBe(2);
  });

  it("a scope() option replaces it: the cookie-session recipe", async () => {
    const h = counting();
    const session = (request: Request) => /(?:^|;\s*)sid=([^;]+)/.exec(request.headers.get("cookie") ?? "")?.[1] ?? "";
    const url = await serveIt(idempotency(h.handler, { scope: session }));
    const first = await post(url, {}, { "Idempotency-Key": "s", Cookie: "sid=42; theme=dark" });
    // Same session, other cookies: the same owner.
    const same = await post(url, {}, { "Idempotency-Key": "s", Cookie: "theme=light; sid=42" });
    const other = await post(url, {}, { "Idempotency-Key": "s", Cookie: "sid=43; theme=dark" });
    expect(await same.text()).toBe(await first.text());
    expect(same.headers.get("idempotent-replayed")).toBe("true");
    expect(other.headers.get("idempotent-replayed")).toBeNull();
    expect(h.count).toBe(2);
  });

  it("anonymous replays drop Set-Cookie; a credentialed replay keeps it", async () => {
    const h = counting(0, { "set-cookie": "session=abc; HttpOnly" });
    const url = await serveIt(idempotency(h.handler));
    const first = await post(url, {}, { "Idempotency-Key": "anon" });
    expect(first.headers.get("set-cookie")).toBe("session=abc; HttpOnly");
    const replay = await post(url, {}, { "Idempotency-Key": "anon" });
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(replay.headers.get("set-cookie")).toBeNull();

    await post(url, {}, { "Idempotency-Key": "auth", Authorization: "Bearer x" });
    const authReplay = await post(url, {}, { "Idempotency-Key": "auth", Authorization: "Bearer x" });
    expect(authReplay.headers.get("idempotent-replayed")).toBe("true");
    expect(authReplay.headers.get("set-cookie")).toBe("session=abc; HttpOnly");
  });
});

describe("streaming", () => {
  /** An SSE handler that sends one event, then waits for `release()` before the rest. */
  const gatedSse = () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    const s = {
      count: 0,
      finished: false,
      release: () => open(),
      handler: (async () => {
        const n = ++s.count;
        const encoder = new TextEncoder();
        const body = new ReadableStream<Uint8Array>({
          async start(controller) {
            controller.enqueue(encoder.encode(`event: chunk\ndata: ${n}-first\n\n`));
            await gate;
            for (const part of ["second", "third"])
              controller.enqueue(encoder.encode(`event: chunk\ndata: ${n}-${part}\n\n`));
            controller.close();
            s.finished = true;
          },
        });
        return new Response(body, { headers: { "content-type": "text/event-stream" } });
      }) as Handler,
    };
    return s;
  };

  const readAll = async (reader: ReadableStreamDefaultReader<Uint8Array>, start: string): Promise<string> => {
    let text = start;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return text;
      text += decoder.decode(value, { stream: true });
    }
  };

  it("chunks reach the leader and a concurrent duplicate live; later replays return the same bytes", async () => {
    const s = gatedSse();
    const url = await serveIt(idempotency(s.handler));
    const headers = { "Idempotency-Key": "stream-1" };
    const leader = await post(url, { stream: true }, headers);
    const leaderReader = leader.body!.getReader();
    const leaderFirst = decoder.decode((await leaderReader.read()).value);
    expect(leaderFirst).toContain("1-first");

    const dup = await post(url, { stream: true }, headers);
    expect(dup.headers.get("idempotent-replayed")).toBe("true");
    expect(dup.headers.get("content-type")).toBe("text/event-stream");
    const dupReader = dup.body!.getReader();
    const dupFirst = decoder.decode((await dupReader.read()).value);
    expect(dupFirst).toContain("1-first");
    // Both callers have a chunk while the handler is still running.
    expect(s.finished).toBe(false);

    s.release();
    const [a, b] = await Promise.all([readAll(leaderReader, leaderFirst), readAll(dupReader, dupFirst)]);
    expect(a).toBe("event: chunk\ndata: 1-first\n\nevent: chunk\ndata: 1-second\n\nevent: chunk\ndata: 1-third\n\n");
    expect(b).toBe(a);

    await sleep(20);
    const replay = await post(url, { stream: true }, headers);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.text()).toBe(a);
    expect(s.count).toBe(1);
  });

  it("a stream that fails midway stores nothing: the next call runs again", async () => {
    let count = 0;
    const url = await serveIt(
      idempotency(async () => {
        const n = ++count;
        const body = new ReadableStream<Uint8Array>({
          async start(controller) {
            controller.enqueue(new TextEncoder().encode(`data: ${n}\n\n`));
            if (n > 1) return controller.close();
            await sleep(30);
            controller.error(new Error("upstream went away"));
          },
        });
        return new Response(body, { headers: { "content-type": "text/event-stream" } });
      }),
    );
    const first = await post(url, {}, { "Idempotency-Key": "broken" });
    await expect(first.text()).rejects.toThrow();
    await sleep(20);
    const second = await post(url, {}, { "Idempotency-Key": "broken" });
    expect(second.headers.get("idempotent-replayed")).toBeNull();
    expect(await second.text()).toBe("data: 2\n\n");
    expect(count).toBe(2);
  });
});

describe("idemfetch/hono", () => {
  const makeApp = () => {
    const state = { count: 0 };
    const app = new Hono();
    const mw = honoIdempotency();
    app.use("/api/*", mw);
    app.post("/api/charge", async (c) => {
      const body = await c.req.json();
      state.count++;
      await sleep(50);
      return c.json({ n: state.count, amount: body.amount }, 201, { "x-charge": String(state.count) });
    });
    app.get("/api/charge", (c) => c.text(`get ${++state.count}`));
    return { app, state, mw };
  };

  it("coalesces, replays and conflicts; downstream handlers read the body", async () => {
    const { app, state, mw } = makeApp();
    const url = await serveIt(app.fetch);
    const calls = await Promise.all(
      [1, 2, 3].map(() => post(`${url}/api/charge`, { amount: 5 }, { "Idempotency-Key": "h1" })),
    );
    const bodies = await Promise.all(calls.map((r) => r.text()));
    expect(state.count).toBe(1);
    expect(new Set(bodies).size).toBe(1);
    expect(JSON.parse(bodies[0]!)).toEqual({ n: 1, amount: 5 });
    expect(calls.map((r) => r.status)).toEqual([201, 201, 201]);

    const replay = await post(`${url}/api/charge`, { amount: 5 }, { "Idempotency-Key": "h1" });
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(replay.headers.get("x-charge")).toBe("1");
    expect(await replay.text()).toBe(bodies[0]);

    const conflict = await post(`${url}/api/charge`, { amount: 6 }, { "Idempotency-Key": "h1" });
    expect(conflict.status).toBe(409);
    expect(await conflict.text()).toBe(CONFLICT);
    expect(mw.stats()).toMatchObject({ upstreamCalls: 1, saved: 3, conflicts: 1 });

    await fetch(`${url}/api/charge`, { headers: { "Idempotency-Key": "h1" } });
    await fetch(`${url}/api/charge`, { headers: { "Idempotency-Key": "h1" } });
    expect(state.count).toBe(3);
  });

  it("works after an earlier middleware read the body through c.req", async () => {
    let count = 0;
    const app = new Hono();
    app.use("*", async (c, next) => {
      await c.req.json();
      await next();
    });
    app.use("*", honoIdempotency());
    app.post("/", async (c) => c.json({ n: ++count, body: await c.req.json() }));
    const url = await serveIt(app.fetch);
    const a = await post(url, { x: 1 }, { "Idempotency-Key": "pre" });
    const b = await post(url, { x: 1 }, { "Idempotency-Key": "pre" });
    expect(await a.json()).toEqual({ n: 1, body: { x: 1 } });
    expect(await b.json()).toEqual({ n: 1, body: { x: 1 } });
    expect(count).toBe(1);
  });

  it("headers from outer middleware (cors) are this request's own, on joined duplicates and replays too", async () => {
    let count = 0;
    const app = new Hono();
    app.use("*", cors({ origin: ["https://a.example", "https://b.example"] }));
    app.use("*", honoIdempotency());
    app.post("/", async (c) => {
      await sleep(50);
      return c.text(String(++count));
    });
    const url = await serveIt(app.fetch);
    const from = (origin: string) => post(url, {}, { "Idempotency-Key": "cors", Origin: origin });
    const [a, b] = await Promise.all([from("https://a.example"), from("https://b.example")]);
    const c = await from("https://b.example");
    expect(a.headers.get("access-control-allow-origin")).toBe("https://a.example");
    expect(b.headers.get("access-control-allow-origin")).toBe("https://b.example");
    expect(c.headers.get("access-control-allow-origin")).toBe("https://b.example");
    expect(c.headers.get("idempotent-replayed")).toBe("true");
    expect([await a.text(), await b.text(), await c.text()]).toEqual(["1", "1", "1"]);
  });

  it("a bad key is 400 JSON from the middleware", async () => {
    const { app, state } = makeApp();
    const url = await serveIt(app.fetch);
    const res = await post(`${url}/api/charge`, { amount: 1 }, { "Idempotency-Key": "y".repeat(300) });
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe("IDEMPOTENCY_KEY_INVALID");
    expect(state.count).toBe(0);
  });
});

describe("issue 16.12: one abandoned reader of a large answer", () => {
  it("stalls the other callers past maxBodyBytes for at most STALL_MS, then they go on", async () => {
    const { STALL_MS = 1000 } = (await import("../src/broadcast.ts")) as { STALL_MS?: number };
    const chunk = new Uint8Array(64 * 1024).fill(7);
    const total = 2 * 1024 * 1024;
    const handler = idempotency(
      async () => {
        let sent = 0;
        return new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              if (sent >= total) return controller.close();
              sent += chunk.length;
              controller.enqueue(chunk);
            },
          }),
        );
      },
      { maxBodyBytes: 64 * 1024 },
    );
    const request = () => new Request("http://x.test/big", { method: "POST", headers: { "Idempotency-Key": "stall" } });
    const [abandoned, reader] = await Promise.all([handler(request()), handler(request())]);
    const started = performance.now();
    const bytes = await reader.arrayBuffer();
    expect(bytes.byteLength).toBe(total);
    expect(performance.now() - started).toBeLessThan(STALL_MS + 2000);
    // The abandoned caller's body was errored, not held: reading it now fails.
    await expect(abandoned.arrayBuffer()).rejects.toThrow();
  });
});
