// The defects of issue 9, each pinned: lease and flight lifecycles, durable before delivered, store faults, odd inputs.
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  createIdempotentFetch,
  type IdempotencyEvent,
  type IdempotencyStore,
  memoryStore,
  type StoredRecord,
  sha256,
} from "../src/index.ts";
import { idempotency } from "../src/server.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";
import { sleep } from "./fixtures/util.ts";

let up: Upstream;
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(() => up.close());
beforeEach(() => up.reset());

const post = (key: string, body = "{}", headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", "idempotency-key": key, ...headers },
  body,
});
const serverRequest = (key: string | null, body: BodyInit = "{}", headers: Record<string, string> = {}): Request =>
  new Request("http://app.test/orders", {
    method: "POST",
    headers: { "content-type": "application/json", ...(key === null ? {} : { "idempotency-key": key }), ...headers },
    body,
    ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
  } as RequestInit);

/** A store that counts every call and lets a test delay or fail operations. */
function instrumented(inner: IdempotencyStore = memoryStore()) {
  const calls: string[] = [];
  const faults: Partial<Record<"acquire" | "commit" | "release" | "renew", (n: number) => number | "fail" | null>> = {};
  const seen: Record<string, number> = {};
  const wrap =
    <A extends unknown[], R>(op: "acquire" | "commit" | "release" | "renew", fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      calls.push(op);
      const n = (seen[op] = (seen[op] ?? 0) + 1);
      const fault = faults[op]?.(n) ?? null;
      if (fault === "fail") throw new Error(`injected ${op} failure`);
      if (typeof fault === "number") await sleep(fault);
      return fn(...args);
    };
  const store: IdempotencyStore = {
    acquire: wrap("acquire", inner.acquire.bind(inner)),
    commit: wrap("commit", inner.commit.bind(inner)),
    release: wrap("release", inner.release.bind(inner)),
    renew: wrap("renew", inner.renew.bind(inner)),
    forget: (k, f) => inner.forget.bind(inner)(k, f),
  };
  if (inner.subscribe) store.subscribe = inner.subscribe.bind(inner);
  return { store, calls, faults, inner };
}

const storeKeyOf = async (key: string, scope = "anonymous"): Promise<string> =>
  `idemfetch:${scope}:${await sha256(key)}`;

describe("1: a response larger than maxBodyBytes", () => {
  it("already in memory (a handler's new Response(6 MiB)) reaches every caller whole and is not stored", async () => {
    const big = new Uint8Array(6 * 1024 * 1024).map((_, i) => i % 251);
    let runs = 0;
    const events: IdempotencyEvent[] = [];
    const h = idempotency(
      async () => {
        runs++;
        await sleep(50);
        return new Response(big);
      },
      { onEvent: (e) => events.push(e) },
    );
    const responses = await Promise.all([1, 2, 3].map(() => h(serverRequest("big"))));
    const bodies = await Promise.all(responses.map(async (r) => new Uint8Array(await r.arrayBuffer())));
    for (const body of bodies) {
      expect(body.length).toBe(big.length);
      expect(Buffer.compare(Buffer.from(body), Buffer.from(big))).toBe(0);
    }
    expect(runs).toBe(1);
    expect(events.some((e) => e.type === "not-stored")).toBe(true);
    await (await h(serverRequest("big"))).arrayBuffer();
    expect(runs).toBe(2);
  });

  it("from a custom fetch: 2000 bytes against a 1024 limit reach the caller and a joiner whole", async () => {
    const body = "x".repeat(2000);
    let runs = 0;
    const f = createIdempotentFetch({
      maxBodyBytes: 1024,
      fetch: async () => {
        runs++;
        await sleep(20);
        return new Response(body);
      },
    });
    const [a, b] = await Promise.all([f("http://up.test/x", post("k")), f("http://up.test/x", post("k"))]);
    expect(await a.text()).toBe(body);
    expect(await b.text()).toBe(body);
    expect(runs).toBe(1);
  });
});

describe("2: a stored record no Response can be made of", () => {
  for (const [what, record] of [
    ["an invalid header name", { headers: [["bad header", "x"]] }],
    ["an invalid header value", { headers: [["x-a", "line\nbreak"]] }],
    ["an invalid status text", { statusText: "bad\r\ntext" }],
  ] as const) {
    it(`${what} is treated as absent: a store-error event, and the call executes`, async () => {
      const store = memoryStore();
      const storeKey = await storeKeyOf("rec");
      const lease = await store.acquire(storeKey, "fp", 10_000);
      const bad = Object.assign(
        {
          status: 200,
          statusText: "OK",
          headers: [],
          body: new Uint8Array([1]),
          createdAt: 0,
          fingerprint: "whatever",
        },
        record,
      ) as unknown as StoredRecord;
      await store.commit(storeKey, (lease as { token: string }).token, bad, 60_000);
      const events: string[] = [];
      const f = createIdempotentFetch({ store, onEvent: (e) => events.push(e.type) });
      const r = await f(`${up.url}/echo`, post("rec"));
      expect(r.status).toBe(200);
      expect(up.count("/echo")).toBe(1);
      expect(events).toContain("store-error");
      // The bad record was replaced by the good one: the next call replays.
      const again = await f(`${up.url}/echo`, post("rec"));
      expect(again.headers.get("idempotent-replayed")).toBe("true");
      expect(up.count("/echo")).toBe(1);
    });
  }
});

describe("3: an upstream that answers no usable Response releases the lease", () => {
  for (const [what, answer] of [
    ["undefined", () => undefined],
    ["a plain object", () => ({ status: 200 })],
    [
      "a Response whose body was already read",
      async () => {
        const r = new Response("used");
        await r.text();
        return r;
      },
    ],
  ] as const) {
    it(`${what}: that caller gets a TypeError and the next call executes`, async () => {
      const store = memoryStore();
      let runs = 0;
      const bad = idempotency(
        (async () => {
          runs++;
          return answer();
        }) as unknown as () => Promise<Response>,
        { store, waitTimeoutMs: 500 },
      );
      await expect(bad(serverRequest("stuck"))).rejects.toThrow(TypeError);
      const good = idempotency(async () => new Response("fine"), { store, waitTimeoutMs: 500 });
      const r = await good(serverRequest("stuck"));
      expect(r.status).toBe(200);
      expect(await r.text()).toBe("fine");
      expect(runs).toBe(1);
    });
  }
});

describe("4, 5: Set-Cookie never crosses to a caller the scope does not prove is the same client", () => {
  const cookieHandler = () => {
    let n = 0;
    return async () => {
      n++;
      await sleep(50);
      return new Response(`n=${n}`, { headers: { "set-cookie": `sid=visitor-${n}` } });
    };
  };

  it("a custom scope: replays and joiners drop Set-Cookie", async () => {
    const h = idempotency(cookieHandler(), { scope: (r) => r.headers.get("x-tenant") ?? "none" });
    const [a, b] = await Promise.all([
      h(serverRequest("c", "{}", { "x-tenant": "t1" })),
      h(serverRequest("c", "{}", { "x-tenant": "t1" })),
    ]);
    expect(a.headers.get("set-cookie")).toBe("sid=visitor-1");
    expect(b.headers.get("set-cookie")).toBeNull();
    const c = await h(serverRequest("c", "{}", { "x-tenant": "t1" }));
    expect(c.headers.get("idempotent-replayed")).toBe("true");
    expect(c.headers.get("set-cookie")).toBeNull();
  });

  it("the anonymous scope: a concurrent joiner does not get the leader's Set-Cookie", async () => {
    const h = idempotency(cookieHandler());
    const [a, b] = await Promise.all([h(serverRequest("anon")), h(serverRequest("anon"))]);
    expect(a.headers.get("set-cookie")).toBe("sid=visitor-1");
    expect(b.headers.get("idempotent-replayed")).toBe("true");
    expect(b.headers.get("set-cookie")).toBeNull();
  });

  it("a credential scope: the same client's joiner and replay keep it", async () => {
    const h = idempotency(cookieHandler());
    const auth = { authorization: "Bearer same" };
    const [, b] = await Promise.all([h(serverRequest("cred", "{}", auth)), h(serverRequest("cred", "{}", auth))]);
    expect(b.headers.get("set-cookie")).toBe("sid=visitor-1");
    const c = await h(serverRequest("cred", "{}", auth));
    expect(c.headers.get("set-cookie")).toBe("sid=visitor-1");
  });
});

describe("6: the server keeps content-encoding with the bytes it belongs to", () => {
  it("joiners and replays of a gzip body get content-encoding: gzip", async () => {
    const gz = gzipSync(Buffer.from("hello compressed world"));
    const h = idempotency(async () => {
      await sleep(30);
      return new Response(gz, { headers: { "content-encoding": "gzip", "content-type": "text/plain" } });
    });
    const [a, b] = await Promise.all([h(serverRequest("gz")), h(serverRequest("gz"))]);
    const c = await h(serverRequest("gz"));
    for (const r of [a, b, c]) {
      expect(r.headers.get("content-encoding")).toBe("gzip");
      expect(Buffer.compare(Buffer.from(await r.arrayBuffer()), gz)).toBe(0);
    }
    expect(c.headers.get("idempotent-replayed")).toBe("true");
  });
});

describe("7: backpressure", () => {
  it("a response too large to store is read from upstream only as fast as its caller reads", async () => {
    let pulled = 0;
    const chunk = new Uint8Array(64 * 1024);
    const h = idempotency(
      async () =>
        new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              pulled += chunk.length;
              if (pulled > 300 * 1024 * 1024) controller.close();
              else controller.enqueue(chunk);
            },
          }),
        ),
      { maxBodyBytes: 1024 * 1024 },
    );
    const r = await h(serverRequest("huge"));
    await sleep(300);
    // Kept up to the record limit, then only a small window ahead of a reader that reads nothing.
    expect(pulled).toBeLessThan(4 * 1024 * 1024);
    const reader = (r.body as ReadableStream<Uint8Array>).getReader();
    let got = 0;
    while (got < 8 * 1024 * 1024) got += ((await reader.read()).value as Uint8Array).length;
    await sleep(100);
    expect(pulled - got).toBeLessThan(4 * 1024 * 1024);
    await reader.cancel();
  });
});

describe("8: a waiter never executes because of a store blip", () => {
  it("acquire failing while another holds a live lease: the waiter keeps waiting and replays", async () => {
    const { store, faults } = instrumented();
    let runs = 0;
    const handler = async () => {
      runs++;
      await sleep(600);
      return new Response(`run ${runs}`);
    };
    const a = idempotency(handler, { store, storeTimeoutMs: 100 });
    const b = idempotency(handler, { store, storeTimeoutMs: 100 });
    const first = a(serverRequest("blip"));
    await sleep(50);
    // Acquire #1 was the leader's; #2 sees its lease; #3..#6 fail, then the store is back.
    faults.acquire = (n) => (n >= 3 && n <= 6 ? "fail" : null);
    const second = b(serverRequest("blip"));
    const [ra, rb] = await Promise.all([first, second]);
    expect(await rb.text()).toBe(await ra.text());
    expect(runs).toBe(1);
  });
});

describe("9: an acquire that lands after its deadline", () => {
  it("is released when it lands, so the retry does not wait out an orphan lease", async () => {
    const { store, faults, inner } = instrumented();
    faults.acquire = (n) => (n === 1 ? 300 : null);
    const f = createIdempotentFetch({ store, storeTimeoutMs: 100, leaseMs: 10_000 });
    const first = await f(`${up.url}/echo`, post("late"));
    expect(first.status).toBe(200); // fail-open: ran unprotected
    await sleep(400);
    // The late lease was let go: the key is free at once.
    const probe = await inner.acquire(await storeKeyOf("late"), "probe", 1000);
    expect(probe.state).toBe("acquired");
  });
});

describe("10: per-call options are validated before any store call", () => {
  for (const ttl of [0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
    it(`ttlSeconds ${ttl}: TypeError, no store call, nothing sent`, async () => {
      const { store, calls } = instrumented();
      const f = createIdempotentFetch({ store });
      await expect(f(`${up.url}/echo`, { ...post("ttl"), idempotency: { ttlSeconds: ttl } })).rejects.toThrow(
        TypeError,
      );
      expect(calls).toEqual([]);
      expect(up.count()).toBe(0);
    });
  }
});

describe("12: keyless uploads on the server", () => {
  it("a keyless non-JSON stream reaches the handler at once, untouched", async () => {
    let firstChunkAt = 0;
    const started = Date.now();
    const h = idempotency(async (request) => {
      const reader = (request.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      firstChunkAt = Date.now() - started;
      let rest = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        rest += value.length;
      }
      return new Response(String(rest));
    });
    const encoder = new TextEncoder();
    let i = 0;
    const upload = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (i > 0) await sleep(200);
        if (i++ === 5) controller.close();
        else controller.enqueue(encoder.encode("chunk"));
      },
    });
    const r = await h(serverRequest(null, upload, { "content-type": "application/octet-stream" }));
    expect(await r.text()).toBe("20");
    expect(firstChunkAt).toBeLessThan(150);
  });
});

describe("15: a custom fetch gets a Request it can use", () => {
  it("a signing fetch that clones and reads its input works on keyed calls", async () => {
    const seen: string[] = [];
    const f = createIdempotentFetch({
      fetch: async (input, init) => {
        // Signing fetches read a copy of the Request they are handed, and send the original.
        if (init !== undefined) throw new Error("expected one Request");
        const request = input as Request;
        seen.push(await request.clone().text());
        return fetch(request);
      },
    });
    const r = await f(`${up.url}/echo`, post("sign", '{"a":1}'));
    expect(r.status).toBe(200);
    expect(seen).toEqual(['{"a":1}']);
    expect(JSON.parse(await r.text()).body).toBe('{"a":1}');
  });
});

describe("18: every caller gets its own bytes", () => {
  it("one caller mutating its Buffer chunk changes neither another caller's bytes nor the record", async () => {
    const f = createIdempotentFetch({
      fetch: async () => {
        await sleep(20);
        return new Response(
          new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(Buffer.from("abcdef"));
              controller.close();
            },
          }),
        );
      },
    });
    const [a, b] = await Promise.all([f("http://up.test/x", post("mem")), f("http://up.test/x", post("mem"))]);
    const chunkA = (await (a.body as ReadableStream<Uint8Array>).getReader().read()).value as Uint8Array;
    chunkA.fill(0x7a);
    expect(await b.text()).toBe("abcdef");
    expect(await (await f("http://up.test/x", post("mem"))).text()).toBe("abcdef");
  });
});

describe("19: an already-aborted call", () => {
  it("rejects with the abort reason at once and touches nothing", async () => {
    const { store, calls } = instrumented();
    const f = createIdempotentFetch({ store });
    const reason = new Error("gone");
    const controller = new AbortController();
    controller.abort(reason);
    await expect(f(`${up.url}/echo`, { ...post("ab"), signal: controller.signal })).rejects.toBe(reason);
    expect(calls).toEqual([]);
    expect(f.stats().upstreamCalls).toBe(0);
    expect(up.count()).toBe(0);
  });
});

describe("20: auto keys stay on the client", () => {
  it("an auto-keyed request goes upstream without Idempotency-Key; body and per-call keys go up as the header", async () => {
    const f = createIdempotentFetch({ autoKey: true });
    await f(`${up.url}/echo`, { method: "POST", body: '{"order":1}' });
    await f(`${up.url}/echo`, { method: "POST", body: '{"order":2,"idempotency_key":"body-k"}' });
    await f(`${up.url}/echo`, { method: "POST", body: '{"order":3}', idempotency: { key: "call-k" } });
    expect(up.keys).toEqual([undefined, "body-k", "call-k"]);
  });
});

describe("21: durable before delivered", () => {
  it("a caller's body ends only after the commit settled: a second instance then replays", async () => {
    const { store, faults, inner } = instrumented();
    faults.commit = () => 200;
    const f = createIdempotentFetch({ store });
    const r = await f(`${up.url}/echo`, post("durable"));
    await r.text();
    expect((await inner.acquire(await storeKeyOf("durable"), "probe", 1000)).state).toBe("done");
    const other = createIdempotentFetch({ store });
    const again = await other(`${up.url}/echo`, post("durable"));
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(up.count("/echo")).toBe(1);
  });

  it("a body-less response is handed over only after its commit", async () => {
    const { store, faults, inner } = instrumented();
    faults.commit = () => 200;
    const h = idempotency(async () => new Response(null, { status: 204 }), { store });
    await h(serverRequest("nobody"));
    expect((await inner.acquire(await storeKeyOf("nobody"), "probe", 1000)).state).toBe("done");
    const other = idempotency(async () => new Response("ran again"), { store });
    const again = await other(serverRequest("nobody"));
    expect(again.status).toBe(204);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
  });

  it("close() waits for writes still pending; waitUntil receives them", async () => {
    const { store, faults } = instrumented();
    faults.commit = () => 200;
    const waited: Promise<unknown>[] = [];
    const h = idempotency<[{ waitUntil(p: Promise<unknown>): void }]>(async () => new Response("x"), { store });
    const r = await h(serverRequest("ctx"), { waitUntil: (p) => waited.push(p) });
    expect(waited).toHaveLength(1);
    // A client that goes away mid-stream does not cut the commit short.
    await r.body?.cancel();
    await h.close();
    const probe = await store.acquire(await storeKeyOf("ctx"), "probe", 1000);
    expect(probe.state).toBe("done");
  });
});

describe("issue 16.9: 'stored' only when the commit took effect", () => {
  it.each([
    ["a commit that fails", () => Promise.reject(new Error("store down"))],
    ["a commit with a stale token", () => Promise.resolve(false)],
  ])("%s emits no 'stored'", async (_name, commit) => {
    const store = memoryStore();
    const events: string[] = [];
    const f = createIdempotentFetch({
      store: { ...store, commit },
      onEvent: (event) => events.push(event.type),
      fetch: async () => new Response("ok"),
    });
    const res = await f("http://stored.test/a", { method: "POST", headers: { "Idempotency-Key": "k" }, body: "x" });
    expect(await res.text()).toBe("ok");
    await f.close();
    expect(events).toContain("execute");
    expect(events).not.toContain("stored");
  });
});
