// Deno: install() over the web fetch interceptor against Deno.serve; the store's own fetch calls are never intercepted.
import assert from "node:assert/strict";
import { type IdempotencyStore, memoryStore } from "../../src/index.ts";
import { install } from "../../src/install-deno.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withUpstream(run: (url: string, count: () => number) => Promise<void>): Promise<void> {
  let n = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const body = await request.text();
    const mine = ++n;
    await sleep(Number(new URL(request.url).searchParams.get("ms") ?? 0));
    return Response.json({ n: mine, body, key: request.headers.get("idempotency-key") });
  });
  try {
    await run(`http://127.0.0.1:${server.addr.port}`, () => n);
  } finally {
    await server.shutdown();
  }
}

const keyed = (key: string, body: string): RequestInit => ({
  method: "POST",
  headers: { "Idempotency-Key": key },
  body,
});

Deno.test("install(): keyed fetch calls coalesce and replay, keyless ones pass, uninstall restores fetch", async () => {
  await withUpstream(async (url, count) => {
    const original = globalThis.fetch;
    const uninstall = install();
    try {
      const texts = await Promise.all(
        [1, 2, 3].map(() => fetch(`${url}/?ms=100`, keyed("d-1", "x")).then((r) => r.text())),
      );
      assert.equal(new Set(texts).size, 1);
      assert.equal(count(), 1);
      const replay = await fetch(`${url}/?ms=100`, keyed("d-1", "x"));
      assert.equal(replay.headers.get("idempotent-replayed"), "true");
      assert.equal(await replay.text(), texts[0]);
      assert.equal((await fetch(`${url}/?ms=100`, keyed("d-1", "y"))).status, 409);
      await (await fetch(`${url}/`)).text();
      assert.equal(count(), 2);
      assert.equal(uninstall.stats().requests, 3 + 1 + 1);
    } finally {
      uninstall();
    }
    assert.equal(globalThis.fetch, original);
  });
});

Deno.test("install(): a store that calls fetch itself, with keys, is never intercepted", async () => {
  await withUpstream(async (url, count) => {
    const inner = memoryStore();
    const calls: string[] = [];
    const chatty = Object.fromEntries(
      (["acquire", "commit", "release", "renew", "forget"] as const).map((op) => [
        op,
        async (...args: unknown[]) => {
          calls.push((await (await fetch(`${url}/`, keyed("store", op))).json()).body);
          return (inner[op] as (...a: unknown[]) => Promise<unknown>)(...args);
        },
      ]),
    ) as unknown as IdempotencyStore;
    const uninstall = install({ store: chatty, autoKey: true });
    try {
      const texts = await Promise.all(
        [1, 2].map(() => fetch(`${url}/?ms=100`, keyed("d-2", "x")).then((r) => r.text())),
      );
      assert.equal(texts[0], texts[1]);
      for (let i = 0; i < 50 && calls.length < 2; i++) await sleep(10);
      assert.deepEqual(calls, ["acquire", "commit"]);
      assert.equal(count(), 3);
    } finally {
      uninstall();
    }
  });
});
