// Input handling end to end: createIdempotentFetch (and the server middleware) against a real upstream on
// 127.0.0.1, for malformed keys, deep and big-number JSON bodies, and nonsense timers and TTLs.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createIdempotentFetch, IdempotencyKeyError, type IdempotencyStore, memoryStore } from "../src/index.ts";
import { idempotency, idempotencyLayer } from "../src/server.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";

let up: Upstream;
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(() => up.close());
beforeEach(() => up.reset());

const post = (body: string, key?: string): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...(key === undefined ? {} : { "Idempotency-Key": key }) },
  body,
});

/** A memory store that counts the calls made to it. */
const countingStore = () => {
  const inner = memoryStore();
  const calls = { n: 0 };
  const store = new Proxy(inner, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      return typeof value === "function"
        ? (...args: unknown[]) => {
            calls.n++;
            return value.apply(target, args);
          }
        : value;
    },
  }) as IdempotencyStore;
  return { store, calls };
};

describe("defect 17: malformed sf-string keys", () => {
  it.each(['"abc', 'abc"', '"a\\x"', '"abc";p=1', '"caf\u00e9"'])(
    "the header %s rejects with IdempotencyKeyError before any store or upstream call",
    async (header) => {
      const { store, calls } = countingStore();
      const f = createIdempotentFetch({ store });
      const error = await f(`${up.url}/echo`, post("{}", header)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IdempotencyKeyError);
      expect(up.count()).toBe(0);
      expect(calls.n).toBe(0);
    },
  );

  it("the server answers 400 IDEMPOTENCY_KEY_INVALID and does not run the handler", async () => {
    let runs = 0;
    const handler = idempotency(() => {
      runs++;
      return new Response("ran");
    });
    // Node's Headers refuse non-Latin-1 values, so the non-ASCII case is a Latin-1 byte.
    for (const header of ['"abc', '"abc";p=1', '"a\\x"', 'a"b', '"caf\u00e9"']) {
      const res = await handler(new Request("http://x/pay", post("{}", header)));
      expect(res.status, header).toBe(400);
      expect((await res.json()).error.code).toBe("IDEMPOTENCY_KEY_INVALID");
    }
    expect(runs).toBe(0);
  });
});

describe("issue 16.4, 16.5, 16.8: keys beyond ASCII and keys that are not strings, on the server", () => {
  it("a Display String header is decoded to its key: the same key in the body replays, another conflicts", async () => {
    let runs = 0;
    const handler = idempotency(() => new Response(`run ${++runs}`));
    const call = (init: RequestInit) => handler(new Request("http://x/pay", init));
    const first = await call(post("{}", '%"%d0%b7%d0%b0%d0%ba%d0%b0%d0%b7-42"'));
    expect(await first.text()).toBe("run 1");
    const again = await call(post('{"idempotency_key":"заказ-42"}'));
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(await handler.forget("заказ-42")).toBe("forgotten");
  });

  it("a malformed Display String, or a body key with an unpaired surrogate, is 400 and the handler never runs", async () => {
    let runs = 0;
    const handler = idempotency(() => new Response(`run ${++runs}`));
    for (const init of [
      post("{}", '%"%D0%B7"'),
      post("{}", '%"%ff"'),
      post("{}", '%"a";p=1'),
      post('{"idempotency_key":"a\\ud800"}'),
      post('{"idempotency_key":"a\\u0085"}'),
    ]) {
      const res = await handler(new Request("http://x/pay", init));
      expect(res.status, String(init.body)).toBe(400);
      expect((await res.json()).error.code).toBe("IDEMPOTENCY_KEY_INVALID");
    }
    expect(runs).toBe(0);
  });

  it("a body key that is not a string is no key: the call passes through (server) as before", async () => {
    let runs = 0;
    const handler = idempotency(() => new Response(`run ${++runs}`));
    for (let i = 0; i < 2; i++) await handler(new Request("http://x/pay", post('{"idempotency_key":42}')));
    expect(runs).toBe(2);
  });
});

describe("defect 13: deeply nested JSON", () => {
  const deep = (leaf: string) => `{"a":${"[".repeat(5000)}${leaf}${"]".repeat(5000)}}`;

  it("a keyed body nested 5000 deep executes once, replays, and conflicts with a different deep body", async () => {
    const f = createIdempotentFetch();
    const first = await f(`${up.url}/echo`, post(deep("1"), "deep-1"));
    expect(first.status).toBe(200);
    const again = await f(`${up.url}/echo`, post(deep("1"), "deep-1"));
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(await again.text()).toBe(await first.text());
    expect((await f(`${up.url}/echo`, post(deep("2"), "deep-1"))).status).toBe(409);
    expect(up.count()).toBe(1);
  });

  it("the idempotency_key field of a deep body is still its key", async () => {
    const f = createIdempotentFetch();
    const body = `{"idempotency_key":"deep-body",${deep("1").slice(1)}`;
    await f(`${up.url}/echo`, post(body));
    const again = await f(`${up.url}/echo`, post(body));
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(up.count()).toBe(1);
    expect(up.keys).toEqual(["deep-body"]);
  });
});

describe("defect 14: numbers compared exactly", () => {
  it.each([
    ['{"account_id": 9007199254740993}', '{"account_id": 9007199254740992}'],
    ['{"limit": 1e400}', '{"limit": null}'],
    ['{"amount": 10.000000000000000001}', '{"amount": 10}'],
  ])("%s then %s under one key: the second is a 409 conflict, not a replay", async (a, b) => {
    const f = createIdempotentFetch();
    expect((await f(`${up.url}/echo`, post(a, "n-1"))).status).toBe(200);
    const second = await f(`${up.url}/echo`, post(b, "n-1"));
    expect(second.status).toBe(409);
    expect((await second.json()).error.code).toBe("IDEMPOTENCY_CONFLICT");
    expect(up.count()).toBe(1);
  });

  it("equal values spelled differently replay", async () => {
    const f = createIdempotentFetch();
    await f(`${up.url}/echo`, post('{"amount": 1.0, "note": "\\u0041", "id": 12345678901234567890}', "n-2"));
    const again = await f(`${up.url}/echo`, post('{"id":1234567890123456789e1,"note":"A","amount":10e-1}', "n-2"));
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(up.count()).toBe(1);
  });
});

describe("defects 10 and 11: timers and TTLs", () => {
  it.each([0, -5, Number.NaN])(
    "a per-call ttlSeconds of %s rejects with TypeError before any store or upstream call",
    async (ttlSeconds) => {
      const { store, calls } = countingStore();
      const f = createIdempotentFetch({ store });
      const error = await f(`${up.url}/echo`, { ...post("{}", "ttl-1"), idempotency: { ttlSeconds } }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(TypeError);
      expect(String(error)).toMatch(/idempotency\.ttlSeconds/);
      expect(calls.n).toBe(0);
      expect(up.count()).toBe(0);
    },
  );

  it("the server's per-call ttlSeconds of 0 rejects with TypeError and the handler does not run", async () => {
    let runs = 0;
    const layer = idempotencyLayer();
    const request = new Request("http://x/pay", post("{}", "ttl-2"));
    await expect(layer.handle(request, () => new Response(String(++runs)), { ttlSeconds: 0 })).rejects.toBeInstanceOf(
      TypeError,
    );
    expect(runs).toBe(0);
  });

  it.each([{ leaseMs: 2 ** 31 }, { waitTimeoutMs: 3e9 }, { storeTimeoutMs: 1e12 }])(
    "%j is refused at construction with a TypeError naming the 2147483647 ms maximum",
    (options) => {
      expect(() => createIdempotentFetch(options)).toThrow(/at most 2147483647 ms/);
      expect(() => idempotency(() => new Response(), options)).toThrow(TypeError);
    },
  );

  it("a TTL longer than any timer (30 days, per wrapper and per call) still stores and replays", async () => {
    const f = createIdempotentFetch({ ttlSeconds: 30 * 86_400 });
    await f(`${up.url}/echo`, post("{}", "long-1"));
    expect((await f(`${up.url}/echo`, post("{}", "long-1"))).headers.get("idempotent-replayed")).toBe("true");
    const perCall = { ...post("{}", "long-2"), idempotency: { ttlSeconds: 365 * 86_400 } };
    await f(`${up.url}/echo`, perCall);
    expect((await f(`${up.url}/echo`, perCall)).headers.get("idempotent-replayed")).toBe("true");
    expect(up.count()).toBe(2);
  });
});
