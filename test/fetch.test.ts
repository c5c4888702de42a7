// createIdempotentFetch against a real counting HTTP server on 127.0.0.1.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type CallEvent,
  createIdempotentFetch,
  type IdempotencyEvent,
  IdempotencyKeyError,
  type IdempotencyStore,
  isIdempotencyKeyError,
  memoryStore,
  sha256,
} from "../src/index.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";
import { sleep, until } from "./fixtures/util.ts";

let up: Upstream;
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(() => up.close());
beforeEach(() => up.reset());

const json = (body: unknown, key?: string): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...(key === undefined ? {} : { "Idempotency-Key": key }) },
  body: JSON.stringify(body),
});
const CONFLICT =
  '{"success":false,"error":{"type":"client_error","code":"IDEMPOTENCY_CONFLICT","message":"Request body differs from previous request with same key"}}';

describe("coalescing", () => {
  it("the seed example: 3 concurrent calls with Idempotency-Key chat-123 make 1 upstream call and get 3 identical bodies", async () => {
    const f = createIdempotentFetch();
    const init = json({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }, "chat-123");
    const responses = await Promise.all([1, 2, 3].map(() => f(`${up.url}/echo?ms=100`, init)));
    const bodies = await Promise.all(responses.map((r) => r.text()));
    expect(up.count("/echo")).toBe(1);
    expect(new Set(bodies).size).toBe(1);
    expect(JSON.parse(bodies[0] as string).n).toBe(1);
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(responses.filter((r) => r.headers.get("idempotent-replayed") === "true")).toHaveLength(2);
  });

  it("1,000 concurrent identical calls make 1 upstream call", async () => {
    const f = createIdempotentFetch();
    const responses = await Promise.all(
      Array.from({ length: 1000 }, () => f(`${up.url}/echo?ms=50`, json({ q: 1 }, "burst"))),
    );
    const bodies = await Promise.all(responses.map((r) => r.text()));
    expect(up.count()).toBe(1);
    expect(new Set(bodies).size).toBe(1);
    expect(f.stats()).toMatchObject({ upstreamCalls: 1, joined: 999, saved: 999 });
  });

  it("a quoted sf-string header and the bare token are the same key", async () => {
    const f = createIdempotentFetch();
    const a = await f(`${up.url}/echo`, json({ x: 1 }, "abc"));
    const b = await f(`${up.url}/echo`, json({ x: 1 }, '"abc"'));
    expect(await b.text()).toBe(await a.text());
    expect(b.headers.get("idempotent-replayed")).toBe("true");
    expect(up.count()).toBe(1);
  });

  it("an idempotency_key body field is a key, and is sent upstream as the Idempotency-Key header", async () => {
    const f = createIdempotentFetch();
    const init = { method: "POST", body: JSON.stringify({ idempotency_key: "body-key", amount: 5 }) };
    const [a, b] = await Promise.all([f(`${up.url}/echo?ms=50`, init), f(`${up.url}/echo?ms=50`, init)]);
    expect(await a.text()).toBe(await (b as Response).text());
    expect(up.count()).toBe(1);
    expect(up.keys).toEqual(["body-key"]);
  });

  it("a header the caller set is sent upstream as is", async () => {
    const f = createIdempotentFetch();
    await f(`${up.url}/echo`, json({}, '"quoted"'));
    expect(up.keys).toEqual(['"quoted"']);
  });

  it("JSON key order and whitespace do not cause a conflict; the idempotency_key field is not part of the fingerprint", async () => {
    const f = createIdempotentFetch();
    const a = await f(`${up.url}/echo`, {
      method: "POST",
      headers: { "idempotency-key": "k" },
      body: '{"a":1,"b":[1,2]}',
    });
    const b = await f(`${up.url}/echo`, {
      method: "POST",
      headers: { "idempotency-key": "k" },
      body: ' { "b" : [ 1, 2 ],\n "a": 1 } ',
    });
    expect(b.status).toBe(200);
    expect(await b.text()).toBe(await a.text());
    const c = await f(`${up.url}/echo`, { method: "POST", body: '{"idempotency_key":"k2","a":1}' });
    const d = await f(`${up.url}/echo`, { method: "POST", body: '{"a":1, "idempotency_key":"k2"}' });
    expect(await d.text()).toBe(await c.text());
    expect(up.count()).toBe(2);
  });

  it("every caller gets its own body: reading or mutating one never affects another", async () => {
    const f = createIdempotentFetch();
    const init = json({ z: 1 }, "own-bodies");
    const [a, b] = await Promise.all([f(`${up.url}/bytes?size=4096`, init), f(`${up.url}/bytes?size=4096`, init)]);
    const bytesA = new Uint8Array(await (a as Response).arrayBuffer());
    const copy = bytesA.slice();
    bytesA.fill(0);
    const bytesB = new Uint8Array(await (b as Response).arrayBuffer());
    expect(bytesB).toEqual(copy);
    const c = await f(`${up.url}/bytes?size=4096`, init);
    expect(new Uint8Array(await c.arrayBuffer())).toEqual(copy);
    expect(c.headers.get("idempotent-replayed")).toBe("true");
    expect(c.headers.get("content-length")).toBeNull();
    expect(up.count()).toBe(1);
  });

  it("an SSE stream reaches the leader and a concurrent duplicate live, before it ends", async () => {
    const f = createIdempotentFetch();
    const init = json({ stream: true }, "sse");
    const url = `${up.url}/sse?chunks=4&gap=150`;
    const [a, b] = await Promise.all([f(url, init), f(url, init)]);
    const firstChunk = async (r: Response) => {
      const reader = (r.body as ReadableStream<Uint8Array>).getReader();
      const { value } = await reader.read();
      return { text: new TextDecoder().decode(value), reader };
    };
    const started = Date.now();
    const [ca, cb] = await Promise.all([firstChunk(a as Response), firstChunk(b as Response)]);
    expect(Date.now() - started).toBeLessThan(400); // the whole stream takes 600 ms
    expect(ca.text).toBe("data: 1-0\n\n");
    expect(cb.text).toBe("data: 1-0\n\n");
    const rest = async (reader: ReadableStreamDefaultReader<Uint8Array>, first: string) => {
      let text = first;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text;
        text += new TextDecoder().decode(value);
      }
    };
    const [ta, tb] = await Promise.all([rest(ca.reader, ca.text), rest(cb.reader, cb.text)]);
    expect(ta).toBe("data: 1-0\n\ndata: 1-1\n\ndata: 1-2\n\ndata: 1-3\n\n");
    expect(tb).toBe(ta);
    await sleep(20);
    const replay = await f(url, init);
    expect(await replay.text()).toBe(ta);
    expect(up.count()).toBe(1);
  });
});

describe("conflicts", () => {
  it("the same key with another body answers 409 with the exact JSON, while the first is in flight and after", async () => {
    const f = createIdempotentFetch();
    const first = f(`${up.url}/echo?ms=150`, json({ amount: 1 }, "pay-1"));
    await sleep(20);
    const during = await f(`${up.url}/echo?ms=150`, json({ amount: 2 }, "pay-1"));
    expect(during.status).toBe(409);
    expect(during.headers.get("content-type")).toBe("application/json");
    expect(await during.text()).toBe(CONFLICT);
    expect((await first).status).toBe(200);
    const after = await f(`${up.url}/echo`, json({ amount: 2 }, "pay-1"));
    expect(after.status).toBe(409);
    expect(await after.text()).toBe(CONFLICT);
    expect(up.count()).toBe(1);
  });

  it("conflictStatus changes the status (422 for the IETF draft)", async () => {
    const f = createIdempotentFetch({ conflictStatus: 422 });
    await f(`${up.url}/echo`, json({ a: 1 }, "c"));
    expect((await f(`${up.url}/echo`, json({ a: 2 }, "c"))).status).toBe(422);
  });

  it("the same key on another URL is a conflict", async () => {
    const f = createIdempotentFetch();
    await f(`${up.url}/echo?a`, json({ a: 1 }, "url"));
    expect((await f(`${up.url}/echo?b`, json({ a: 1 }, "url"))).status).toBe(409);
  });
});

describe("keys", () => {
  it.each([
    ["empty quoted", { "Idempotency-Key": '""' }],
    ["256 characters", { "Idempotency-Key": "x".repeat(256) }],
    ["unescaped quote in sf-string", { "Idempotency-Key": '"a"b"' }],
  ])("a bad header key (%s) throws IdempotencyKeyError before any network call", async (_name, headers) => {
    const f = createIdempotentFetch();
    const error = await f(`${up.url}/echo`, { method: "POST", headers, body: "{}" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdempotencyKeyError);
    expect(isIdempotencyKeyError(error)).toBe(true);
    expect((error as IdempotencyKeyError).code).toBe("IDEMPOTENCY_KEY_INVALID");
    expect(up.count()).toBe(0);
  });

  it("a body key with control characters throws before any network call", async () => {
    const f = createIdempotentFetch();
    await expect(f(`${up.url}/echo`, { method: "POST", body: '{"idempotency_key":"a\\u0001b"}' })).rejects.toThrow(
      /control characters/,
    );
    await expect(f(`${up.url}/echo`, { method: "POST", body: '{"idempotency_key":""}' })).rejects.toThrow(/empty/);
    expect(up.count()).toBe(0);
  });

  it("a 255-character key is accepted", async () => {
    const f = createIdempotentFetch();
    expect((await f(`${up.url}/echo`, json({}, "k".repeat(255)))).status).toBe(200);
  });

  it("the guard recognises an error from another realm by its name", () => {
    const foreign = Object.assign(new Error("x"), { name: "IdempotencyKeyError", code: "IDEMPOTENCY_KEY_INVALID" });
    expect(isIdempotencyKeyError(foreign)).toBe(true);
    expect(isIdempotencyKeyError(new Error("x"))).toBe(false);
  });

  it("requests without a key pass through untouched, every time", async () => {
    const f = createIdempotentFetch();
    await f(`${up.url}/echo`);
    await f(`${up.url}/echo`);
    await f(`${up.url}/echo`, { method: "POST", body: '{"a":1}' });
    await f(`${up.url}/echo`, { method: "POST", body: '{"a":1}' });
    expect(up.count()).toBe(4);
    expect(up.keys).toEqual([undefined, undefined, undefined, undefined]);
    expect(f.stats()).toMatchObject({ requests: 0, upstreamCalls: 0 });
  });

  it("a Request object input with a key header is handled like init", async () => {
    const f = createIdempotentFetch();
    const make = () => new Request(`${up.url}/echo?ms=30`, json({ r: 1 }, "req-obj"));
    const [a, b] = await Promise.all([f(make()), f(make())]);
    expect(await a.text()).toBe(await (b as Response).text());
    expect(up.count()).toBe(1);
  });

  it("init.idempotency.key sets a key and init.idempotency false skips the library", async () => {
    const f = createIdempotentFetch();
    await Promise.all([1, 2].map(() => f(`${up.url}/echo?ms=30`, { method: "POST", idempotency: { key: "given" } })));
    expect(up.count()).toBe(1);
    await f(`${up.url}/echo`, { ...json({}, "given"), idempotency: false });
    expect(up.count()).toBe(2);
  });

  it("the same key from two Authorization scopes never merges", async () => {
    const f = createIdempotentFetch();
    const call = (auth: string) =>
      f(`${up.url}/echo?ms=30`, {
        method: "POST",
        headers: { authorization: auth, "idempotency-key": "shared" },
        body: "{}",
      });
    const [a, b] = await Promise.all([call("Bearer alice"), call("Bearer bob")]);
    expect(JSON.parse(await a.text()).n).not.toBe(JSON.parse(await (b as Response).text()).n);
    expect(up.count()).toBe(2);
  });
});

describe("auto key (double-clicks)", () => {
  it("a double-click coalesces; the same submit after the window executes again", async () => {
    const f = createIdempotentFetch({ autoKey: { windowMs: 150 } });
    const submit = () => f(`${up.url}/echo?ms=40`, { method: "POST", body: "name=Ada" });
    const [a, b] = await Promise.all([submit(), submit()]);
    expect(await a.text()).toBe(await (b as Response).text());
    expect(up.count()).toBe(1);
    await submit();
    expect(up.count()).toBe(1); // inside the window: replayed
    await sleep(200);
    await submit();
    expect(up.count()).toBe(2);
  });

  it("a body-less DELETE double-click coalesces too", async () => {
    const f = createIdempotentFetch({ autoKey: true });
    await Promise.all([1, 2].map(() => f(`${up.url}/echo?ms=30`, { method: "DELETE" })));
    expect(up.count()).toBe(1);
  });

  it("two identical FormData posts coalesce although each gets its own random multipart boundary", async () => {
    const f = createIdempotentFetch({ autoKey: true });
    const form = () => {
      const data = new FormData();
      data.set("name", "Ada");
      data.set("file", new Blob([new Uint8Array([0, 255, 10])]), "a.bin");
      return data;
    };
    await Promise.all([1, 2].map(() => f(`${up.url}/echo?ms=40`, { method: "POST", body: form() })));
    expect(up.count()).toBe(1);
    const other = form();
    other.set("name", "Grace");
    await f(`${up.url}/echo?ms=40`, { method: "POST", body: other });
    expect(up.count()).toBe(2);
  });

  it("is off by default outside pages: two identical un-keyed POSTs both run", async () => {
    const f = createIdempotentFetch();
    await Promise.all([1, 2].map(() => f(`${up.url}/echo?ms=20`, { method: "POST", body: "count" })));
    expect(up.count()).toBe(2);
  });

  it("a streamed body never gets an auto key", async () => {
    const f = createIdempotentFetch({ autoKey: true });
    const stream = () =>
      new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode("chunk"));
          c.close();
        },
      });
    await Promise.all(
      [1, 2].map(() => f(`${up.url}/echo?ms=20`, { method: "POST", body: stream(), duplex: "half" } as RequestInit)),
    );
    expect(up.count()).toBe(2);
  });
});

describe("what is stored", () => {
  it.each([500, 503, 408, 429])("status %i is not stored: the retry runs again", async (status) => {
    const f = createIdempotentFetch();
    const a = await f(`${up.url}/status/${status}`, json({}, `s${status}`));
    const b = await f(`${up.url}/status/${status}`, json({}, `s${status}`));
    expect([a.status, b.status]).toEqual([status, status]);
    expect(b.headers.get("idempotent-replayed")).toBeNull();
    expect(up.count()).toBe(2);
  });

  it.each([400, 404, 422])("status %i is stored and replayed", async (status) => {
    const f = createIdempotentFetch();
    await f(`${up.url}/status/${status}`, json({}, `s${status}`));
    const b = await f(`${up.url}/status/${status}`, json({}, `s${status}`));
    expect(b.status).toBe(status);
    expect(b.headers.get("idempotent-replayed")).toBe("true");
    expect(up.count()).toBe(1);
  });

  it("shouldStore replaces the rule", async () => {
    const f = createIdempotentFetch({ shouldStore: (r) => r.status === 500 });
    await f(`${up.url}/status/500`, json({}, "a"));
    await f(`${up.url}/status/500`, json({}, "a"));
    await f(`${up.url}/status/200`, json({}, "b"));
    await f(`${up.url}/status/200`, json({}, "b"));
    expect(up.count("/status/500")).toBe(1);
    expect(up.count("/status/200")).toBe(2);
  });

  it("a record expires after ttlSeconds (per wrapper and per call)", async () => {
    const f = createIdempotentFetch({ ttlSeconds: 0.15 });
    await f(`${up.url}/echo`, json({}, "ttl"));
    await f(`${up.url}/echo`, json({}, "ttl"));
    expect(up.count()).toBe(1);
    await sleep(200);
    await f(`${up.url}/echo`, json({}, "ttl"));
    expect(up.count()).toBe(2);
    await f(`${up.url}/echo`, { ...json({}, "ttl2"), idempotency: { ttlSeconds: 0.1 } });
    await sleep(150);
    await f(`${up.url}/echo`, json({}, "ttl2"));
    expect(up.count()).toBe(4);
  });

  it("a body over maxBodyBytes reaches the caller whole but is not stored", async () => {
    const events: IdempotencyEvent[] = [];
    const f = createIdempotentFetch({ maxBodyBytes: 1000, onEvent: (e) => events.push(e) });
    const a = await f(`${up.url}/bytes?size=300000`, json({}, "big"));
    expect((await a.arrayBuffer()).byteLength).toBe(300000);
    const b = await f(`${up.url}/bytes?size=300000`, json({}, "big"));
    expect((await b.arrayBuffer()).byteLength).toBe(300000);
    expect(up.count()).toBe(2);
    expect(events.filter((e) => e.type === "not-stored").map((e) => e.reason)).toEqual([
      "body larger than maxBodyBytes (1000)",
      "body larger than maxBodyBytes (1000)",
    ]);
  });

  it("binary request and response bodies are byte-exact, live and replayed", async () => {
    const f = createIdempotentFetch();
    const sent = new Uint8Array(256).map((_, i) => i);
    const init = { method: "POST", headers: { "idempotency-key": "bin" }, body: sent };
    const a = new Uint8Array(await (await f(`${up.url}/bytes?size=70000`, init)).arrayBuffer());
    const b = new Uint8Array(await (await f(`${up.url}/bytes?size=70000`, init)).arrayBuffer());
    expect(b).toEqual(a);
    expect(new Uint8Array(up.bodies[0] as Buffer)).toEqual(sent);
    const other = await f(`${up.url}/bytes?size=70000`, { ...init, body: sent.map((x) => 255 - x) });
    expect(other.status).toBe(409);
    expect(up.count()).toBe(1);
  });

  it("a request body over maxBodyBytes with a key is refused with 413 before any network call", async () => {
    const f = createIdempotentFetch({ maxBodyBytes: 100 });
    const r = await f(`${up.url}/echo`, { method: "POST", headers: { "idempotency-key": "k" }, body: "x".repeat(101) });
    expect(r.status).toBe(413);
    expect(JSON.parse(await r.text()).error.code).toBe("IDEMPOTENCY_BODY_TOO_LARGE");
    expect(up.count()).toBe(0);
    const plain = await f(`${up.url}/echo`, { method: "POST", body: "y".repeat(5000) });
    expect(JSON.parse(await plain.text()).body).toBe("y".repeat(5000));
  });
});

describe("failures and aborts", () => {
  it("a network error rejects every caller, stores nothing, and the next call runs again", async () => {
    const f = createIdempotentFetch();
    const results = await Promise.allSettled([1, 2].map(() => f(`${up.url}/reset`, json({}, "net"))));
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(up.count()).toBe(1);
    await f(`${up.url}/reset`, json({}, "net")).catch(() => undefined);
    expect(up.count()).toBe(2);
  });

  it("one caller aborting rejects only that caller; the upstream call goes on for the others", async () => {
    const f = createIdempotentFetch();
    const ctrl = new AbortController();
    const a = f(`${up.url}/echo?ms=150`, { ...json({}, "ab"), signal: ctrl.signal });
    const b = f(`${up.url}/echo?ms=150`, json({}, "ab"));
    await sleep(30);
    ctrl.abort();
    await expect(a).rejects.toMatchObject({ name: "AbortError" });
    const rb = await b;
    expect(rb.status).toBe(200);
    expect(JSON.parse(await rb.text()).n).toBe(1);
    expect(up.count()).toBe(1);
  });

  it("the upstream call is aborted only when every caller has aborted, and the key is free again", async () => {
    const f = createIdempotentFetch();
    const c1 = new AbortController();
    const c2 = new AbortController();
    const a = f(`${up.url}/hang`, { ...json({}, "all"), signal: c1.signal });
    const b = f(`${up.url}/hang`, { ...json({}, "all"), signal: c2.signal });
    await sleep(50);
    c1.abort();
    await expect(a).rejects.toMatchObject({ name: "AbortError" });
    await sleep(50);
    expect(up.aborted()).toBe(0);
    c2.abort();
    await expect(b).rejects.toMatchObject({ name: "AbortError" });
    await sleep(50);
    expect(up.aborted()).toBe(1);
    const c = await f(`${up.url}/echo`, json({}, "all-other"));
    expect(c.status).toBe(200);
  });

  it("an already aborted signal rejects at once without a network call", async () => {
    const f = createIdempotentFetch();
    await expect(f(`${up.url}/echo`, { ...json({}, "pre"), signal: AbortSignal.abort() })).rejects.toMatchObject({
      name: "AbortError",
    });
    expect(up.count()).toBe(0);
  });
});

describe("two processes sharing a store", () => {
  it("a duplicate waits for the other process's call and replays its result", async () => {
    const store = memoryStore();
    const events: string[] = [];
    const p1 = createIdempotentFetch({ store });
    const p2 = createIdempotentFetch({ store, onEvent: (e) => events.push(e.type) });
    const a = p1(`${up.url}/echo?ms=150`, json({}, "xp"));
    await sleep(30);
    const b = await p2(`${up.url}/echo?ms=150`, json({}, "xp"));
    expect(await b.text()).toBe(await (await a).text());
    expect(b.headers.get("idempotent-replayed")).toBe("true");
    expect(events).toEqual(["wait", "replay", "settled"]);
    expect(up.count()).toBe(1);
  });

  it("a doomed conflicting request in flight locally never turns away a correct duplicate", async () => {
    const inner = memoryStore();
    // A remote store: acquire takes a while, so the doomed request is still asking when the correct one arrives.
    const store: IdempotencyStore = { ...inner, acquire: (...args) => sleep(50).then(() => inner.acquire(...args)) };
    const p1 = createIdempotentFetch({ store });
    const p2 = createIdempotentFetch({ store });
    const a = p1(`${up.url}/echo?ms=150`, json({ v: "A" }, "doomed"));
    await sleep(30);
    const doomed = p2(`${up.url}/echo?ms=150`, json({ v: "B" }, "doomed"));
    await sleep(10);
    const c = await p2(`${up.url}/echo?ms=150`, json({ v: "A" }, "doomed"));
    expect((await doomed).status).toBe(409);
    expect(c.status).toBe(200);
    expect(await c.text()).toBe(await (await a).text());
    expect(up.count()).toBe(1);
  });

  it("a wait that times out answers 409 IDEMPOTENCY_IN_PROGRESS with Retry-After", async () => {
    const store = memoryStore();
    const p1 = createIdempotentFetch({ store });
    const p2 = createIdempotentFetch({ store, waitTimeoutMs: 100 });
    const a = p1(`${up.url}/echo?ms=400`, json({}, "slow"));
    await sleep(30);
    const b = await p2(`${up.url}/echo?ms=400`, json({}, "slow"));
    expect(b.status).toBe(409);
    expect(b.headers.get("retry-after")).toBe("1");
    expect(JSON.parse(await b.text())).toEqual({
      success: false,
      error: {
        type: "client_error",
        code: "IDEMPOTENCY_IN_PROGRESS",
        message: "A request with the same key is still in progress",
      },
    });
    await a;
    expect(up.count()).toBe(1);
  });

  it("a waiter takes over when the leader's lease is released after a failure", async () => {
    const store = memoryStore();
    const events: string[] = [];
    const p1 = createIdempotentFetch({ store });
    const p2 = createIdempotentFetch({ store, onEvent: (e) => events.push(e.type) });
    const a = p1(`${up.url}/status/503?ms=100`, json({}, "take"));
    await sleep(30);
    const b = await p2(`${up.url}/status/503?ms=100`, json({}, "take"));
    expect((await a).status).toBe(503);
    expect(b.status).toBe(503);
    await b.text();
    await until(() => events.includes("settled"));
    expect(events).toEqual(["wait", "takeover", "execute", "not-stored", "settled"]);
    expect(up.count()).toBe(2);
  });

  it("a lease that is not renewed expires and a waiter takes over", async () => {
    const store = memoryStore();
    // A crashed leader's lease: nobody renews it. It expires no earlier than `leaseFrom + 100` (the store's clock).
    const leaseFrom = Date.now();
    await store.acquire(`idemfetch:anonymous:${await sha256("dead")}`, "fp", 100);
    const events: string[] = [];
    let takeoverAt = 0;
    const g = createIdempotentFetch({
      store,
      fingerprint: () => "fp",
      onEvent: (e) => {
        events.push(e.type);
        if (e.type === "takeover") takeoverAt = Date.now();
      },
    });
    const r = await g(`${up.url}/echo`, { method: "POST", idempotency: { key: "dead" } });
    expect(r.status).toBe(200);
    expect(events.slice(0, 2)).toEqual(["wait", "takeover"]);
    // Measured from the lease's own start, with no slack: a takeover before the expiry is a bug, however fast the machine.
    expect(takeoverAt).toBeGreaterThanOrEqual(leaseFrom + 100);
  });
});

describe("store failure", () => {
  const broken = (failure: "throw" | "hang"): IdempotencyStore => {
    const fail = () => (failure === "throw" ? Promise.reject(new Error("store down")) : new Promise<never>(() => {}));
    return { acquire: fail, commit: fail, release: fail, renew: fail, forget: fail };
  };

  it.each(["throw", "hang"] as const)(
    "fail-open: a store that fails (%s) lets calls proceed, still coalesced locally",
    async (failure) => {
      const events: IdempotencyEvent[] = [];
      const f = createIdempotentFetch({ store: broken(failure), storeTimeoutMs: 100, onEvent: (e) => events.push(e) });
      const started = Date.now();
      const [a, b] = await Promise.all([1, 2].map(() => f(`${up.url}/echo`, json({}, "open"))));
      expect((a as Response).status).toBe(200);
      expect(await (a as Response).text()).toBe(await (b as Response).text());
      expect(Date.now() - started).toBeLessThan(1000);
      expect(up.count()).toBe(1);
      expect(events.find((e) => e.type === "store-error")?.reason).toBe("acquire failed");
    },
  );

  it("fail-closed: a store that fails answers 503 IDEMPOTENCY_STORE_UNAVAILABLE without a network call", async () => {
    const f = createIdempotentFetch({ store: broken("hang"), storeTimeoutMs: 100, onStoreError: "closed" });
    const r = await f(`${up.url}/echo`, json({}, "closed"));
    expect(r.status).toBe(503);
    expect(JSON.parse(await r.text()).error).toMatchObject({
      type: "server_error",
      code: "IDEMPOTENCY_STORE_UNAVAILABLE",
    });
    expect(up.count()).toBe(0);
  });

  it("a record that does not parse is treated as absent: the call executes and an event says so", async () => {
    const events: IdempotencyEvent[] = [];
    const inner = memoryStore();
    const store: IdempotencyStore = {
      ...inner,
      acquire: async () => ({ state: "done", record: { status: "oops" } as never }),
    };
    const f = createIdempotentFetch({ store, onEvent: (e) => events.push(e) });
    const r = await f(`${up.url}/echo`, json({}, "corrupt"));
    expect(r.status).toBe(200);
    expect(up.count()).toBe(1);
    expect(events.find((e) => e.type === "store-error")?.reason).toBe("stored record did not parse");
  });
});

describe("options and events", () => {
  it.each([
    [{ ttlSeconds: -1 }],
    [{ ttlSeconds: "1" }],
    [{ waitTimeoutMs: Number.NaN }],
    [{ autoKey: "yes" }],
    [{ onStoreError: "maybe" }],
    [{ conflictStatus: 200 }],
    [{ namespace: "a:b" }],
    [{ store: {} }],
    [{ fetch: 1 }],
    [{ sendKeyHeader: "sometimes" }],
  ])("nonsense options throw TypeError at construction: %j", (options) => {
    expect(() => createIdempotentFetch(options as never)).toThrow(TypeError);
  });

  it("globalThis.fetch is looked up at call time", async () => {
    const f = createIdempotentFetch();
    const original = globalThis.fetch;
    let seen = 0;
    globalThis.fetch = (input, init) => {
      seen++;
      return original(input, init);
    };
    try {
      await f(`${up.url}/echo`, json({}, "late"));
    } finally {
      globalThis.fetch = original;
    }
    expect(seen).toBe(1);
  });

  it("events carry the key's hash, never the key", async () => {
    const events: IdempotencyEvent[] = [];
    const f = createIdempotentFetch({ onEvent: (e) => events.push(e) });
    await f(`${up.url}/echo`, json({}, "secret-user-data"));
    expect(events[0]?.type).toBe("execute");
    expect((events[0] as CallEvent | undefined)?.keyHash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(events)).not.toContain("secret-user-data");
  });

  it("a throwing event listener never fails a request", async () => {
    const f = createIdempotentFetch({
      onEvent: () => {
        throw new Error("listener bug");
      },
    });
    expect((await f(`${up.url}/echo`, json({}, "l"))).status).toBe(200);
  });
});

describe("issue 16", () => {
  it("16.6: an abort in the same tick as the call (during the engine's set-up) rejects with the reason and sends nothing", async () => {
    const f = createIdempotentFetch();
    const ctrl = new AbortController();
    const call = f(`${up.url}/echo`, { ...json({ a: 1 }, "setup-abort"), signal: ctrl.signal });
    ctrl.abort();
    await expect(call).rejects.toMatchObject({ name: "AbortError" });
    await f.close();
    expect(up.count()).toBe(0);
  });
});
