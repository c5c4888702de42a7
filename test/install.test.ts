// install() in Node: fetch and http.request to a real counting server, the store's own traffic, patches and their removal.
import { once } from "node:events";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import net from "node:net";
import { gzipSync } from "node:zlib";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { upstashStore } from "../adapters/upstash.ts";
import { type IdempotencyStore, isIdempotencyKeyError, memoryStore, newToken } from "../src/index.ts";
import { PASS_HEADER } from "../src/install.ts";
import { install, type Uninstall } from "../src/install-node.ts";
import { startUpstashFixture } from "./fixtures/upstash-server.ts";
import { startUpstream, type Upstream } from "./fixtures/upstream.ts";
import { deletePrefix, sleep, until } from "./fixtures/util.ts";

let up: Upstream;
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(() => up.close());
beforeEach(() => up.reset());

const installed: Uninstall[] = [];
const track = (uninstall: Uninstall): Uninstall => {
  installed.push(uninstall);
  return uninstall;
};
afterEach(() => {
  for (const uninstall of installed.splice(0)) uninstall();
});

const CONFLICT =
  '{"success":false,"error":{"type":"client_error","code":"IDEMPOTENCY_CONFLICT","message":"Request body differs from previous request with same key"}}';

const post = (path: string, body: unknown, key?: string): Promise<Response> =>
  fetch(`${up.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key === undefined ? {} : { "Idempotency-Key": key }) },
    body: JSON.stringify(body),
  });

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** http.request, the way older clients and SDKs call: resolves with status, headers and text. */
function request(url: string, options: http.RequestOptions, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, options, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

const postHttp = (path: string, body: unknown, key?: string): Promise<Reply> =>
  request(
    `${up.url}${path}`,
    {
      method: "POST",
      headers: { "content-type": "application/json", ...(key === undefined ? {} : { "idempotency-key": key }) },
    },
    JSON.stringify(body),
  );

describe("install() coalesces", () => {
  it("concurrent fetch and http.request calls with one key make 1 upstream call and get the same body", async () => {
    track(install());
    const order = { item: "book", qty: 1 };
    const [a, b, c, d] = await Promise.all([
      post("/echo?ms=150", order, "order-1"),
      post("/echo?ms=150", order, "order-1"),
      postHttp("/echo?ms=150", order, "order-1"),
      postHttp("/echo?ms=150", order, "order-1"),
    ]);
    const bodies = [await a!.text(), await b!.text(), c!.body, d!.body];
    expect(up.count("/echo")).toBe(1);
    expect(new Set(bodies).size).toBe(1);
    expect(JSON.parse(bodies[0]!)).toMatchObject({ n: 1, key: "order-1", body: JSON.stringify(order) });
    expect([a!.status, b!.status, c!.status, d!.status]).toEqual([200, 200, 200, 200]);
    const replayed = [a!.headers.get("idempotent-replayed"), b!.headers.get("idempotent-replayed")];
    replayed.push(c!.headers["idempotent-replayed"] as string, d!.headers["idempotent-replayed"] as string);
    expect(replayed.filter((v) => v === "true")).toHaveLength(3);
  });

  it("a later call replays from the store with Idempotent-Replayed: true", async () => {
    const uninstall = track(install());
    const first = await (await post("/echo", { a: 1 }, "replay-1")).text();
    const again = await post("/echo", { a: 1 }, "replay-1");
    const viaHttp = await postHttp("/echo", { a: 1 }, "replay-1");
    expect(await again.text()).toBe(first);
    expect(viaHttp.body).toBe(first);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(viaHttp.headers["idempotent-replayed"]).toBe("true");
    expect(up.count()).toBe(1);
    expect(uninstall.stats()).toMatchObject({ upstreamCalls: 1, replayed: 2, saved: 2 });
  });

  it("the upstream gets the key but never the internal pass mark", async () => {
    track(install());
    await post("/echo", { a: 1 }, "mark-1");
    await postHttp("/echo", { a: 2 }, "mark-2");
    expect(up.keys).toEqual(["mark-1", "mark-2"]);
    const seen = await fetch(`${up.url}/echo`).then((r) => r.json());
    expect(seen.key).toBeNull();
    // The fixture echoes no headers: ask a server that does.
    const headers = await withServer(
      (req, res) => res.end(JSON.stringify(req.headers)),
      async (url) => {
        const viaFetch = await fetch(url, { method: "POST", headers: { "idempotency-key": "h-1" }, body: "x" });
        const viaHttp = await request(url, { method: "POST", headers: { "idempotency-key": "h-2" } }, "x");
        return [await viaFetch.json(), JSON.parse(viaHttp.body)];
      },
    );
    for (const h of headers) expect(Object.keys(h)).not.toContain(PASS_HEADER);
  });

  it("a body field idempotency_key is a key for http.request too", async () => {
    track(install());
    const body = { idempotency_key: "field-1", amount: 5 };
    const replies = await Promise.all([postHttp("/echo?ms=100", body), postHttp("/echo?ms=100", body)]);
    expect(up.count()).toBe(1);
    expect(replies[0]!.body).toBe(replies[1]!.body);
    expect(up.keys).toEqual(["field-1"]);
  });

  it("a different body under the same key answers 409 IDEMPOTENCY_CONFLICT, to fetch and to http.request", async () => {
    track(install());
    expect((await post("/echo", { amount: 1 }, "pay-1")).status).toBe(200);
    const viaFetch = await post("/echo", { amount: 2 }, "pay-1");
    const viaHttp = await postHttp("/echo", { amount: 3 }, "pay-1");
    expect(viaFetch.status).toBe(409);
    expect(viaFetch.headers.get("content-type")).toBe("application/json");
    expect(await viaFetch.text()).toBe(CONFLICT);
    expect(viaHttp.status).toBe(409);
    expect(viaHttp.body).toBe(CONFLICT);
    expect(up.count()).toBe(1);
  });

  it("autoKey: true coalesces identical keyless POSTs while in flight", async () => {
    track(install({ autoKey: true }));
    const [a, b] = await Promise.all([post("/echo?ms=100", { click: 1 }), post("/echo?ms=100", { click: 1 })]);
    expect(await a!.text()).toBe(await b!.text());
    expect(up.count()).toBe(1);
  });

  it("a streamed answer reaches the caller as it arrives, not after the body is stored", async () => {
    track(install());
    const started = Date.now();
    const response = await fetch(`${up.url}/sse?chunks=5&gap=150`, {
      method: "POST",
      headers: { "idempotency-key": "s-1" },
    });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    const firstAt = Date.now() - started;
    let rest = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    expect(new TextDecoder().decode(first.value)).toContain("data: 1-0");
    expect(rest).toContain("data: 1-4");
    expect(firstAt).toBeLessThan(400); // the whole stream takes 750 ms
  });

  it("a gzip answer is decoded once: the caller reads the plain body", async () => {
    track(install());
    const text = await withServer(
      (_req, res) => {
        res.setHeader("content-encoding", "gzip");
        res.setHeader("content-type", "text/plain");
        res.end(gzipSync("hello, compressed"));
      },
      async (url) => {
        const viaFetch = await fetch(url, { method: "POST", headers: { "idempotency-key": "gz-1" }, body: "x" });
        const viaHttp = await request(url, { method: "POST", headers: { "idempotency-key": "gz-1" } }, "x");
        return [await viaFetch.text(), viaHttp.body];
      },
    );
    expect(text).toEqual(["hello, compressed", "hello, compressed"]);
  });
});

describe("install() leaves other requests alone", () => {
  it("keyless fetch calls never enter the engine", async () => {
    const uninstall = track(install());
    const get = await fetch(`${up.url}/echo`);
    const postNoKey = await fetch(`${up.url}/echo`, { method: "POST", body: "plain" });
    expect((await get.json()).n).toBe(1);
    expect((await postNoKey.json()).body).toBe("plain");
    expect(uninstall.stats()).toMatchObject({ requests: 0, passedThrough: 0 });
  });

  it("keyless http.request calls reach the upstream as sent, twice when sent twice", async () => {
    const uninstall = track(install());
    const body = JSON.stringify({ event: "click" });
    const a = await request(
      `${up.url}/echo`,
      { method: "POST", headers: { "content-type": "application/json" } },
      body,
    );
    const b = await request(
      `${up.url}/echo`,
      { method: "POST", headers: { "content-type": "application/json" } },
      body,
    );
    expect(JSON.parse(a.body)).toMatchObject({ n: 1, body });
    expect(JSON.parse(b.body)).toMatchObject({ n: 2, body });
    expect(uninstall.stats().requests).toBe(0);
  });

  it("an invalid key rejects before any network call", async () => {
    track(install());
    const error = await post("/echo", { a: 1 }, "x".repeat(300)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TypeError);
    expect(isIdempotencyKeyError((error as TypeError).cause)).toBe(true);
    await expect(postHttp("/echo", { a: 1 }, "x".repeat(300))).rejects.toSatisfy(isIdempotencyKeyError);
    expect(up.count()).toBe(0);
  });

  it("a network error fails the call like it would without install()", async () => {
    track(install());
    await expect(post("/reset", {}, "net-1")).rejects.toThrow(TypeError);
    await expect(postHttp("/reset", {}, "net-2")).rejects.toThrow();
  });

  it("an aborted keyed fetch rejects with the abort reason", async () => {
    track(install());
    const controller = new AbortController();
    const pending = fetch(`${up.url}/echo?ms=500`, {
      method: "POST",
      headers: { "idempotency-key": "abort-1" },
      body: "x",
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toThrow(/abort/i);
  });

  it("rejects the fetch option: an install sends with the runtime's own fetch", () => {
    expect(() => install({ fetch: globalThis.fetch } as never)).toThrow(TypeError);
  });
});

describe("the store's own traffic", () => {
  it("a store that calls fetch with keys of its own is never intercepted (no loop, no join)", async () => {
    const inner = memoryStore();
    const storeCalls: string[] = [];
    // The worst case: every store call is a keyed POST, which install() would otherwise coalesce into a deadlock.
    const chatty: IdempotencyStore = Object.fromEntries(
      (["acquire", "commit", "release", "renew", "forget"] as const).map((op) => [
        op,
        async (...args: unknown[]) => {
          const r = await fetch(`${up.url}/echo`, {
            method: "POST",
            headers: { "idempotency-key": "store" },
            body: op,
          });
          storeCalls.push((await r.json()).body);
          return (inner[op] as (...a: unknown[]) => Promise<unknown>)(...args);
        },
      ]),
    ) as unknown as IdempotencyStore;
    const uninstall = track(install({ store: chatty, autoKey: true }));
    const [a, b] = await Promise.all([post("/echo?ms=100", { q: 1 }, "k-1"), post("/echo?ms=100", { q: 1 }, "k-1")]);
    expect(await a!.text()).toBe(await b!.text());
    await until(() => storeCalls.length === 2); // the commit follows the body
    expect(storeCalls).toEqual(["acquire", "commit"]);
    expect(up.count("/echo")).toBe(3); // 2 store calls + 1 upstream call
    expect(uninstall.stats()).toMatchObject({ upstreamCalls: 1, joined: 1 });
  });

  it("upstashStore over REST (a POST per command) with autoKey on: its calls pass, the user's coalesce", async () => {
    const fixture = await startUpstashFixture();
    const namespace = `idemfetch-install-${newToken().slice(0, 8)}`;
    const admin = new Redis({ host: "127.0.0.1", port: 6379, lazyConnect: true });
    try {
      const uninstall = track(
        install({ store: upstashStore({ url: fixture.url, token: fixture.token }), autoKey: true, namespace }),
      );
      const bodies = await Promise.all([1, 2, 3].map(() => post("/echo?ms=150", { order: 7 }).then((r) => r.text())));
      expect(new Set(bodies).size).toBe(1);
      expect(up.count()).toBe(1);
      await until(() => fixture.requests >= 2); // acquire, then commit once the body ended, went to the REST API
      expect(uninstall.stats()).toMatchObject({ upstreamCalls: 1, storeErrors: 0 });
    } finally {
      await fixture.close();
      await deletePrefix(admin, `${namespace}:`);
      admin.disconnect();
    }
  });
});

describe("patching", () => {
  it("uninstall() restores fetch, http, https and sockets exactly", () => {
    const before = [globalThis.fetch, http.request, http.get, https.request, https.get, net.Socket.prototype.connect];
    const uninstall = install();
    expect(globalThis.fetch).not.toBe(before[0]);
    expect(net.Socket.prototype.connect).not.toBe(before[5]);
    uninstall();
    expect([globalThis.fetch, http.request, http.get, https.request, https.get, net.Socket.prototype.connect]).toEqual(
      before,
    );
    uninstall(); // twice is harmless
    expect(globalThis.fetch).toBe(before[0]);
  });

  it("a second install() patches nothing again; the latest one handles; globals return after the last uninstall", async () => {
    const original = globalThis.fetch;
    const first = track(install());
    const patched = globalThis.fetch;
    const second = track(install({ namespace: "second" }));
    expect(globalThis.fetch).toBe(patched);
    await post("/echo", { a: 1 }, "two-1");
    expect([first.stats().requests, second.stats().requests]).toEqual([0, 1]);
    second();
    await post("/echo", { a: 1 }, "two-2");
    expect([first.stats().requests, second.stats().requests]).toEqual([1, 1]);
    first();
    expect(globalThis.fetch).toBe(original);
  });

  it("two copies of the library share one set of patches (a Symbol.for registry)", async () => {
    const original = globalThis.fetch;
    const mine = track(install());
    vi.resetModules();
    const copy = (await import("../src/install-node.ts")) as typeof import("../src/install-node.ts");
    expect(copy.install).not.toBe(install);
    const theirs = track(copy.install());
    expect(globalThis.fetch).not.toBe(original);
    const [a, b] = await Promise.all([
      post("/echo?ms=100", { a: 1 }, "copy-1"),
      post("/echo?ms=100", { a: 1 }, "copy-1"),
    ]);
    expect(await a!.text()).toBe(await b!.text());
    expect(up.count()).toBe(1);
    expect(theirs.stats().upstreamCalls).toBe(1);
    mine();
    theirs();
    expect(globalThis.fetch).toBe(original);
  });

  it("works where Promise.withResolvers is missing (Node 20)", async () => {
    const saved = Object.getOwnPropertyDescriptor(Promise, "withResolvers");
    Reflect.deleteProperty(Promise, "withResolvers");
    try {
      track(install());
      const [a, b] = await Promise.all([
        post("/echo?ms=50", { a: 1 }, "n20"),
        postHttp("/echo?ms=50", { a: 1 }, "n20"),
      ]);
      expect(await a!.text()).toBe(b!.body);
      expect(up.count()).toBe(1);
    } finally {
      if (saved) Object.defineProperty(Promise, "withResolvers", saved);
    }
  });
});

/** A one-off local server for answers the shared fixture does not give. */
async function withServer<T>(
  handler: (req: http.IncomingMessage, res: http.ServerResponse) => void,
  run: (url: string) => Promise<T>,
): Promise<T> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => handler(req, res));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    return await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  } finally {
    server.closeAllConnections();
    server.close();
    await sleep(0);
  }
}
