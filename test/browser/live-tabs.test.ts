// Issue 17 across tabs: the engine in tab A streams an SSE answer; its duplicate in tab B (one origin, one IndexedDB)
// gets it live through indexedDBStore's live stream, and the chunk latency between the tabs is printed.
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium, openPage, type Site, startSite } from "./harness.ts";

/** What a tab read: the body, and when (ms since the epoch, sub-ms) each event `data: <id>` arrived. */
interface Read {
  status: number;
  replayed: string | null;
  text: string;
  arrivals: Record<string, number>;
  sentAt: number;
  endedAt: number;
}

declare global {
  interface Window {
    readStream(key: string, path: string): Promise<Read>;
    events: number;
  }
}

const EVENTS = 100;
const GAP_MS = 20;
const PATH = `/sse?events=${EVENTS}&gap=${GAP_MS}`;

let browser: Browser;
let site: Site;
beforeAll(async () => {
  [site, browser] = await Promise.all([startSite(), launchChromium()]);
});
afterAll(async () => {
  await browser?.close();
  await site?.close();
});

/** Two tabs of the site in one fresh profile, each with its own engine over the one IndexedDB database. */
async function twoTabs(locks: boolean): Promise<[Page, Page]> {
  const context = await browser.newContext();
  const tabs = await Promise.all([openPage(context, site.url), openPage(context, site.url)]);
  for (const tab of tabs) {
    await tab.evaluate((withLocks) => {
      const { createIdempotentFetch, indexedDBStore, withWebLocks } = window.idemfetch;
      const shared = indexedDBStore({ dbName: "idemfetch-live-tabs" });
      const store = withLocks ? withWebLocks(shared, { name: "idemfetch-live-tabs" }) : shared;
      const idempotentFetch = createIdempotentFetch({ store });
      const now = () => performance.timeOrigin + performance.now();
      window.events = 0;
      window.readStream = async (key, path): Promise<Read> => {
        const sentAt = now();
        const response = await idempotentFetch(path, {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": key },
          body: JSON.stringify({ prompt: "count to a hundred" }),
        });
        const reader = (response.body as ReadableStream<Uint8Array>).getReader();
        const decoder = new TextDecoder();
        const arrivals: Record<string, number> = {};
        let text = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const at = now();
          text += decoder.decode(value, { stream: true });
          for (const match of text.matchAll(/data: (\S+)\n\n/g)) arrivals[match[1] as string] ??= at;
          window.events = Object.keys(arrivals).length;
        }
        const replayed = response.headers.get("idempotent-replayed");
        return { status: response.status, replayed, text, arrivals, sentAt, endedAt: now() };
      };
    }, locks);
  }
  return tabs as [Page, Page];
}

const percentile = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;

describe.each([
  { name: "indexedDBStore", locks: false },
  { name: "withWebLocks(indexedDBStore)", locks: true },
])("a streamed answer across tabs: $name", ({ name, locks }) => {
  it("the duplicate in tab B gets tab A's stream live, byte for byte, from one upstream call", async () => {
    site.reset();
    const [a, b] = await twoTabs(locks);
    const key = `chat-${name}`;
    const leading = a.evaluate(([k, path]) => window.readStream(k, path), [key, PATH] as const);
    await a.waitForFunction(() => window.events >= 5); // tab A is mid-stream
    const dup = await b.evaluate(([k, path]) => window.readStream(k, path), [key, PATH] as const);
    const lead = await leading;

    expect(site.count()).toBe(1);
    expect(Object.keys(lead.arrivals)).toHaveLength(EVENTS);
    expect(dup.text).toBe(lead.text);
    expect([lead.status, lead.replayed, dup.status, dup.replayed]).toEqual([200, null, 200, "true"]);
    const firstInB = Math.min(...Object.values(dup.arrivals));
    expect(firstInB).toBeLessThan(lead.endedAt - 10 * GAP_MS); // live: B had its first token long before A's end

    // Events tab A got after tab B had caught up: how far B's arrival lagged behind A's, per event.
    const lags = Object.entries(lead.arrivals)
      .filter(([, at]) => at > firstInB)
      .map(([id, at]) => (dup.arrivals[id] as number) - at)
      .sort((x, y) => x - y);
    expect(lags.length).toBeGreaterThan(EVENTS / 2);
    const [p50, p90, p99, max] = [50, 90, 99, 100].map((p) => percentile(lags, p).toFixed(1));
    console.log(
      `live across tabs (${name}, Chromium): ${lags.length} events ${GAP_MS} ms apart; tab B behind tab A p50 ${p50} ms, p90 ${p90} ms, p99 ${p99} ms, max ${max} ms; B's first event ${(firstInB - dup.sentAt).toFixed(1)} ms after it sent`,
    );
    // Loose on a shared 2-core machine; the printed figures are the measurement (issue 17's target: p50 <= 20 ms).
    expect(percentile(lags, 50)).toBeLessThan(100);
    await a.context().close();
  });
});

it("withWebLocks: when the leader's tab closes mid-stream, the duplicate's body errors at once, not after the lease time", async () => {
  site.reset();
  const [a, b] = await twoTabs(true);
  const key = "chat-closed";
  void a.evaluate(([k, path]) => window.readStream(k, path), [key, PATH] as const).catch(() => {});
  await a.waitForFunction(() => window.events >= 5);
  const reading = b.evaluate(
    ([k, path]) =>
      window.readStream(k, path).then(
        (read) => ({ events: Object.keys(read.arrivals).length, error: null }),
        (error: Error) => ({ events: window.events, error: error.name }),
      ),
    [key, PATH] as const,
  );
  await b.waitForFunction(() => window.events >= 1); // tab B holds a prefix
  const closedAt = Date.now();
  await a.close();
  const result = await reading;
  expect(Date.now() - closedAt).toBeLessThan(3000); // the 10 s lease alone would hold it until it lapsed
  expect(result.error).toBe("LiveStreamLostError");
  expect(result.events).toBeLessThan(EVENTS);
  await b.context().close();
});
