// install() in Chromium: fetch and XHR coalesced, uninstall, two tabs on one IndexedDB, reloads, conflicts, Web Locks leases.
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Uninstall } from "../../src/install.ts";
import { until } from "../fixtures/util.ts";
import { launchChromium, openPage, type Sent, type Site, startSite } from "./harness.ts";

declare global {
  interface Window {
    uninstall?: Uninstall;
  }
}

let browser: Browser;
let site: Site;
const contexts: BrowserContext[] = [];
beforeAll(async () => {
  [site, browser] = await Promise.all([startSite(), launchChromium()]);
});
afterAll(async () => {
  await browser?.close();
  await site?.close();
});
beforeEach(() => site.reset());
afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
});

/** A fresh profile (its own IndexedDB and locks) with `n` tabs of the site. */
async function tabs(n: number): Promise<Page[]> {
  const context = await browser.newContext();
  contexts.push(context);
  return Promise.all(Array.from({ length: n }, () => openPage(context, site.url)));
}

const DB = "idemfetch-tabs";
type Setup = { locks: boolean; leaseMs?: number; throttled?: boolean };

/** install() over the shared IndexedDB store, as an app would; `throttled` stands in for a background tab whose heartbeat never runs. */
const installShared = (page: Page, setup: Setup): Promise<void> =>
  page.evaluate(
    ([db, { locks, leaseMs, throttled }]) => {
      const { install, indexedDBStore, withWebLocks } = window.idemfetch;
      let store = indexedDBStore({ dbName: db });
      if (throttled) store = { ...store, renew: async () => true };
      if (locks) store = withWebLocks(store, { name: db });
      window.uninstall = install(leaseMs === undefined ? { store } : { store, leaseMs });
    },
    [DB, setup] as const,
  );

const keyed = (key: string, body: unknown): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", "idempotency-key": key },
  body: JSON.stringify(body),
});
const fire = (page: Page, path: string, init: RequestInit): Promise<Sent> =>
  page.evaluate(([url, options]) => window.send(url, options), [path, init] as const);

describe("install() in Chromium", () => {
  it("fetch and XMLHttpRequest (axios) calls with one key make one upstream call and get the same body", async () => {
    const [page] = await tabs(1);
    const result = await page!.evaluate(async () => {
      const uninstall = window.idemfetch.install();
      const order = { item: "tea", qty: 2 };
      const init = {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": "order-1" },
        body: JSON.stringify(order),
      };
      const viaAxios = () =>
        window.axios.post("/echo?ms=300", order, { headers: { "idempotency-key": "order-1" } }).then((r) => ({
          status: r.status,
          replayed: r.headers["idempotent-replayed"] ?? null,
          body: r.request.responseText,
        }));
      const sent = await Promise.all([
        window.send("/echo?ms=300", init),
        viaAxios(),
        window.send("/echo?ms=300", init),
        viaAxios(),
      ]);
      return { sent, stats: uninstall.stats() };
    });
    expect(site.count()).toBe(1);
    expect(new Set(result.sent.map((s) => s.body)).size).toBe(1);
    expect(JSON.parse(result.sent[0]!.body)).toMatchObject({ n: 1, key: "order-1" });
    expect(result.sent.map((s) => s.status)).toEqual([201, 201, 201, 201]);
    expect(result.sent.filter((s) => s.replayed === "true")).toHaveLength(3);
    expect(result.stats).toMatchObject({ upstreamCalls: 1, joined: 3, saved: 3 });
  });

  it("a page's double submit without any key is one call (auto key); the same submit after the 2 s window is a new one", async () => {
    const [page] = await tabs(1);
    const [a, b] = await page!.evaluate(async () => {
      window.idemfetch.install();
      const init = { method: "POST", body: JSON.stringify({ form: "signup" }) };
      return Promise.all([window.send("/echo?ms=200", init), window.send("/echo?ms=200", init)]);
    });
    expect(a!.body).toBe(b!.body);
    expect(site.count()).toBe(1);
    await page!.waitForTimeout(2300);
    const later = await fire(page!, "/echo", { method: "POST", body: JSON.stringify({ form: "signup" }) });
    expect(JSON.parse(later.body).n).toBe(2);
  });

  it("requests without a key (autoKey off) pass untouched: the engine never sees them", async () => {
    const [page] = await tabs(1);
    const stats = await page!.evaluate(async () => {
      const uninstall = window.idemfetch.install({ autoKey: false });
      await fetch("/echo");
      await fetch("/echo", { method: "POST", body: new URLSearchParams({ q: "1" }) });
      await fetch("/echo", { method: "POST", body: JSON.stringify({ q: 1 }) });
      await window.axios.get("/echo");
      await window.axios.post("/echo", { q: 1 });
      return uninstall.stats();
    });
    expect(site.count()).toBe(5);
    // The JSON bodies were read (they could hold idempotency_key), found keyless and sent as they were.
    expect(stats).toMatchObject({ requests: 0, upstreamCalls: 0 });
  });

  it("uninstall() restores fetch and XMLHttpRequest: the same calls then reach the upstream each time", async () => {
    const [page] = await tabs(1);
    const result = await page!.evaluate(async () => {
      const before = [window.fetch, window.XMLHttpRequest];
      const uninstall = window.idemfetch.install();
      const patched = window.fetch !== before[0] && window.XMLHttpRequest !== before[1];
      uninstall();
      const restored = window.fetch === before[0] && window.XMLHttpRequest === before[1];
      const init = { method: "POST", headers: { "idempotency-key": "after" }, body: "x" };
      await Promise.all([
        window.send("/echo?ms=100", init),
        window.send("/echo?ms=100", init),
        window.axios.post("/echo?ms=100", "x", { headers: { "idempotency-key": "after" } }),
      ]);
      return { patched, restored };
    });
    expect(result).toEqual({ patched: true, restored: true });
    expect(site.count()).toBe(3);
  });

  it("a different body under the same key is a 409 IDEMPOTENCY_CONFLICT JSON response in the page", async () => {
    const [page] = await tabs(1);
    await page!.evaluate(() => {
      window.idemfetch.install();
    });
    expect((await fire(page!, "/echo", keyed("pay-7", { amount: 7 }))).status).toBe(201);
    const conflict = await fire(page!, "/echo", keyed("pay-7", { amount: 700 }));
    expect(conflict.status).toBe(409);
    expect(JSON.parse(conflict.body)).toEqual({
      success: false,
      error: {
        type: "client_error",
        code: "IDEMPOTENCY_CONFLICT",
        message: "Request body differs from previous request with same key",
      },
    });
    expect(site.count()).toBe(1);
  });
});

describe("across tabs (indexedDBStore + BroadcastChannel)", () => {
  for (const locks of [false, true]) {
    it(`two tabs fire one keyed request at once: one upstream call; a reload replays it from IndexedDB${locks ? " (Web Locks)" : ""}`, async () => {
      const [a, b] = await tabs(2);
      await Promise.all([installShared(a!, { locks }), installShared(b!, { locks })]);
      const init = keyed("invoice-42", { invoice: 42, amount: "42.00" });
      const [fromA, fromB] = await Promise.all([fire(a!, "/echo?ms=400", init), fire(b!, "/echo?ms=400", init)]);
      expect(site.count()).toBe(1);
      expect(fromA.body).toBe(fromB.body);
      expect([fromA.replayed, fromB.replayed].sort()).toEqual(["true", null].sort());

      await a!.reload();
      await a!.waitForFunction(() => window.ready === true);
      await installShared(a!, { locks });
      const replay = await fire(a!, "/echo?ms=400", init);
      expect(replay).toEqual({ status: 201, replayed: "true", body: fromA.body });
      expect(site.count()).toBe(1);
    });
  }
});

describe("Web Locks leases (withWebLocks)", () => {
  it("a tab waiting on a leader whose tab closes mid-call takes over at once, not after the lease time", async () => {
    const [a, b] = await tabs(2);
    await Promise.all([installShared(a!, { locks: true }), installShared(b!, { locks: true })]); // leaseMs 10 000
    const init = keyed("charge-9", { amount: 9 });
    void fire(a!, "/echo?ms=1500", init).catch(() => {}); // its tab is closed under it
    await until(() => site.count() === 1);
    const started = Date.now();
    const waiting = fire(b!, "/echo?ms=1500", init);
    await b!.waitForTimeout(300);
    await a!.close();
    const sent = await waiting;
    expect(Date.now() - started).toBeLessThan(4000); // 300 ms + its own 1.5 s call; the lease alone would hold it 10 s
    expect(JSON.parse(sent.body).n).toBe(2);
    expect(site.count()).toBe(2);
  });

  it("a leader whose store lease lapsed (a background tab's throttled heartbeat) keeps its call: one execution, its record lands", async () => {
    const init = keyed("slow-1", { amount: 1 });
    const run = async (locks: boolean): Promise<[Sent, Sent]> => {
      const [a, b] = await tabs(2);
      const setup = { locks, leaseMs: 200, throttled: true };
      await Promise.all([installShared(a!, setup), installShared(b!, setup)]);
      const first = fire(a!, "/echo?ms=1200", init);
      await a!.waitForTimeout(500); // the 200 ms lease has lapsed in IndexedDB by now
      return Promise.all([first, fire(b!, "/echo?ms=1200", init)]);
    };
    const [leader, waiter] = await run(true);
    expect(site.count()).toBe(1);
    expect(waiter).toEqual({ status: 201, replayed: "true", body: leader.body });

    // Without the locks the second tab takes the lapsed lease over: the call runs twice.
    site.reset();
    await run(false);
    expect(site.count()).toBe(2);
  });
});
