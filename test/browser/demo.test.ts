// The browser demo in Chromium, served by the one demo server (demo/main.ts): real clicks, counters, a screenshot.
import { mkdirSync } from "node:fs";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type Demo, startDemo } from "../../demo/main.ts";
import { launchChromium } from "./harness.ts";

let browser: Browser;
let demo: Demo;
const contexts: BrowserContext[] = [];
const ARTIFACTS = new URL("../../test-results/", import.meta.url);

beforeAll(async () => {
  [demo, browser] = await Promise.all([startDemo({ port: 0, env: {}, log: () => {} }), launchChromium()]);
});
afterAll(async () => {
  await browser?.close();
  await demo?.close();
});
beforeEach(async () => {
  await fetch(`${demo.url}/api/counters/reset`, { method: "POST" });
});
afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
});

/** The demo page in a fresh profile (an empty IndexedDB), once install() has run. */
async function openDemo(viewport = { width: 960, height: 900 }): Promise<Page> {
  const context = await browser.newContext({ viewport });
  contexts.push(context);
  const page = await context.newPage();
  await page.goto(demo.url);
  await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("install()"));
  return page;
}

const executions = async (): Promise<number> =>
  ((await (await fetch(`${demo.url}/api/counters`)).json()) as { executions: number }).executions;

interface Logged {
  kind: string;
  status: number;
  replayed: boolean;
  body: string;
}
const logged = (page: Page): Promise<Logged[]> =>
  page.$$eval("#log li", (items) =>
    items.map((li) => ({
      kind: (li as HTMLElement).dataset.kind ?? "",
      status: Number((li as HTMLElement).dataset.status),
      replayed: (li as HTMLElement).dataset.replayed === "true",
      body: li.querySelector("code")?.textContent ?? "",
    })),
  );
const waitForLog = (page: Page, n: number) =>
  page.waitForFunction((count) => document.querySelectorAll("#log li").length >= count, n);
const counter = async (page: Page, id: string): Promise<number> => Number(await page.textContent(`#${id}`));

describe("the browser demo", () => {
  for (const [button, kind] of [
    ["#order-fetch", "fetch"],
    ["#order-axios", "axios"],
  ] as const) {
    it(`a real double-click on ${button} is one upstream call, and both click handlers get the same body`, async () => {
      const page = await openDemo();
      await page.dblclick(button);
      await waitForLog(page, 2);
      const entries = await logged(page);
      expect(entries.map((e) => e.kind)).toEqual([kind, kind]);
      expect(entries[0]!.body).toBe(entries[1]!.body);
      expect(JSON.parse(entries[0]!.body)).toMatchObject({
        execution: 1,
        order: { item: "Coffee beans", qty: 1, via: kind },
      });
      expect(entries.map((e) => e.replayed).sort()).toEqual([false, true]);
      expect(await executions()).toBe(1);
    });
  }

  it("an axios double-click after a fetch order of the same item is its own order, not the fetch one replayed", async () => {
    const page = await openDemo();
    await page.click("#order-fetch");
    await waitForLog(page, 1);
    await page.dblclick("#order-axios");
    await waitForLog(page, 3);
    const axios = (await logged(page)).filter((e) => e.kind === "axios");
    expect(axios.map((e) => e.replayed).sort()).toEqual([false, true]);
    expect(JSON.parse(axios[0]!.body)).toMatchObject({ execution: 2, order: { via: "axios" } });
    expect(await executions()).toBe(2);
  });

  it("toggling protection resets neither saved nor replayed: both count since the page loaded", async () => {
    const page = await openDemo();
    await page.click("#burst");
    await waitForLog(page, 10);
    await page.waitForFunction(() => document.getElementById("c-replays")?.textContent === "9");
    const counters = async () => ({ replays: await counter(page, "c-replays"), saved: await counter(page, "c-saved") });
    expect(await counters()).toEqual({ replays: 9, saved: 9 });
    await page.uncheck("#protect");
    await page.check("#protect");
    await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("install()"));
    await page.dblclick("#order-fetch");
    await waitForLog(page, 12);
    await page.waitForFunction(() => document.getElementById("c-replays")?.textContent === "10");
    expect(await counters()).toEqual({ replays: 10, saved: 10 });
  });

  it("with protection off the same double-click is two orders", async () => {
    const page = await openDemo();
    await page.uncheck("#protect");
    await page.dblclick("#order-fetch");
    await waitForLog(page, 2);
    const bodies = (await logged(page)).map((e) => JSON.parse(e.body).execution).sort();
    expect(bodies).toEqual([1, 2]);
    expect(await executions()).toBe(2);
  });

  it("the same invoice key with another amount shows the 409 JSON in the page", async () => {
    const page = await openDemo();
    await page.click("#pay");
    await waitForLog(page, 1);
    await page.fill("#pay-amount", "4200.00");
    await page.click("#pay");
    await waitForLog(page, 2);
    const [conflict] = await logged(page);
    expect(conflict!.status).toBe(409);
    expect(JSON.parse(conflict!.body)).toEqual({
      success: false,
      error: {
        type: "client_error",
        code: "IDEMPOTENCY_CONFLICT",
        message: "Request body differs from previous request with same key",
      },
    });
    expect(await page.isVisible('#log li[data-status="409"]')).toBe(true);
    expect(await executions()).toBe(1);
  });

  it("two tabs pay the same invoice: one execution; a reload replays it from IndexedDB", async () => {
    const first = await openDemo();
    const second = await first.context().newPage();
    await second.goto(demo.url);
    await second.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("install()"));
    await Promise.all([first.click("#pay"), second.click("#pay")]);
    await Promise.all([waitForLog(first, 1), waitForLog(second, 1)]);
    const [a] = await logged(first);
    const [b] = await logged(second);
    expect(a!.body).toBe(b!.body);
    expect(await executions()).toBe(1);

    await first.reload();
    await first.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("install()"));
    await first.click("#pay");
    await waitForLog(first, 1);
    const [again] = await logged(first);
    expect(again).toMatchObject({ replayed: true, body: a!.body });
    expect(await executions()).toBe(1);
  });

  it("after an order and a burst of 10 the counters and the labelled chart columns (the screenshot's page) agree", async () => {
    const page = await openDemo();
    await page.click("#order-fetch");
    await waitForLog(page, 1);
    await page.click("#burst");
    await waitForLog(page, 11);
    await page.waitForFunction(() => document.getElementById("c-exec")?.textContent === "2");
    mkdirSync(ARTIFACTS, { recursive: true });
    const path = new URL("demo-burst.png", ARTIFACTS).pathname;
    await page.screenshot({ path, fullPage: true });
    expect({
      sent: await counter(page, "c-sent"),
      executed: await counter(page, "c-exec"),
      replays: await counter(page, "c-replays"),
      saved: await counter(page, "c-saved"),
    }).toEqual({ sent: 11, executed: 2, replays: 9, saved: 9 });
    const columns = await page.$$eval("#chart g", (groups) =>
      groups.map((g) => [...g.querySelectorAll("text")].map((t) => t.textContent)),
    );
    expect(columns).toEqual([
      ["fetch", "1→1"],
      ["burst", "10→1"],
    ]);
    const bursts = (await logged(page)).filter((e) => e.kind === "burst");
    expect(new Set(bursts.map((e) => e.body)).size).toBe(1);
    expect(await executions()).toBe(2);
  });

  it("the LLM panel: one click streams one answer into both panes at once, and the totals come from /stats", async () => {
    const before = (await (await fetch(`${demo.url}/stats`)).json()) as ProxyStats;
    const page = await openDemo();
    await page.fill("#llm-prompt", "Is a retry safe?");
    await page.click("#llm-ask");
    // Both panes part-written at one moment: the duplicate is fed live, not replayed after the first finished.
    await page.waitForFunction(() => {
      const [a, b] = [document.getElementById("llm-a")!, document.getElementById("llm-b")!];
      return a.textContent !== "" && b.textContent !== "" && !a.dataset.done && !b.dataset.done;
    });
    await page.waitForFunction(
      () => document.getElementById("llm-a")?.dataset.done && document.getElementById("llm-b")?.dataset.done,
    );
    const [a, b] = [await page.textContent("#llm-a"), await page.textContent("#llm-b")];
    expect(a).toContain('You said "Is a retry safe?"');
    expect(b).toBe(a);
    const ran = await page.$$eval("[id$=-status]", (spans) => spans.map((s) => (s as HTMLElement).dataset.replayed));
    expect(ran.filter((r) => r !== undefined).sort()).toEqual(["false", "true"]);

    const after = (await (await fetch(`${demo.url}/stats`)).json()) as ProxyStats;
    expect(after.requests - before.requests).toBe(2);
    expect(after.upstream_calls - before.upstream_calls).toBe(1);
    expect(after.saved_calls - before.saved_calls).toBe(1);
    expect(after.saved_usd).toBeGreaterThan(before.saved_usd);
    await page.waitForFunction(
      (n) => document.getElementById("s-upstream")?.textContent === n,
      String(after.upstream_calls),
    );
    expect(await page.textContent("#s-saved-calls")).toBe(String(after.saved_calls));
    expect(await page.textContent("#s-saved-usd")).toBe(`$${after.saved_usd.toFixed(6)}`);
  });

  for (const [name, viewport] of [
    ["desktop", { width: 1280, height: 900 }],
    ["phone", { width: 390, height: 844 }],
  ] as const) {
    it(`at ${viewport.width} px (${name}) every counter says what it counts and nothing scrolls sideways`, async () => {
      const page = await openDemo(viewport);
      await page.click("#order-fetch");
      await waitForLog(page, 1);
      await page.click("#llm-ask");
      await page.waitForFunction(() => document.getElementById("llm-b")?.dataset.done);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: new URL(`demo-${name}.png`, ARTIFACTS).pathname, fullPage: true });

      const text = (selector: string) => page.$$eval(selector, (els) => els.map((e) => e.textContent?.trim()));
      expect(await text("main > h2, #llm h2, #llm h3")).toEqual([
        "This page since it loaded",
        "Server since it started, all tabs and clients",
        "LLM proxy POST /proxy/llm, streaming",
        "Proxy totals from GET /stats: the server since it started, all clients",
      ]);
      expect(await text(".counter span")).toEqual([
        "requests this page sent",
        "responses replayed to this page",
        "calls this page saved",
        "orders the server executed",
        "proxy requests",
        "model calls made",
        "model calls saved",
        "dollars saved",
      ]);
      const width = await page.evaluate(() => ({
        scroll: document.documentElement.scrollWidth,
        client: document.documentElement.clientWidth,
        // Every box's right edge, so a card clipped by an overflow:hidden parent still fails.
        widest: Math.max(...[...document.querySelectorAll("main *")].map((e) => e.getBoundingClientRect().right)),
      }));
      expect(width.client).toBe(viewport.width);
      expect(width.scroll).toBeLessThanOrEqual(width.client);
      expect(width.widest).toBeLessThanOrEqual(width.client);
    });
  }
});

interface ProxyStats {
  requests: number;
  upstream_calls: number;
  saved_calls: number;
  saved_usd: number;
}
