// Debian's Chromium through playwright-core, and a 127.0.0.1 site serving the browser bundle, axios and counting upstreams.
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import { bundleForBrowser } from "../../demo/web.ts";
import { listen } from "../fixtures/serve.ts";

declare global {
  interface Window {
    /** dist/browser/idemfetch.js, built from src/browser.ts. */
    idemfetch: typeof import("../../src/browser.ts");
    axios: typeof import("axios").default;
    /** fetch, answered as {status, replayed, body} (what a test compares). */
    send(url: string, init?: RequestInit): Promise<Sent>;
    ready: boolean;
  }
}

export interface Sent {
  status: number;
  /** The Idempotent-Replayed header. */
  replayed: string | null;
  body: string;
}

const root = (path: string): string => fileURLToPath(new URL(`../../${path}`, import.meta.url));

/** Quiet on a closed network (FACTS.md); playwright adds --no-sandbox itself, which root needs. */
const FLAGS = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
  });
}

export interface Site {
  url: string;
  /** Executions of /echo and /sse since the last reset. */
  count(): number;
  reset(): void;
  close(): Promise<void>;
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>idemfetch test page</title>
<script type="module">
  import * as idemfetch from "/idemfetch.js";
  import axios from "/axios.js";
  const send = async (url, init) => {
    const response = await fetch(url, init);
    return { status: response.status, replayed: response.headers.get("idempotent-replayed"), body: await response.text() };
  };
  Object.assign(window, { idemfetch, axios, send, ready: true });
</script>`;

/**
 * `/` loads the library and axios onto `window`; `/echo?ms=` answers JSON {n, method, body, key}
 * after ms and counts executions; `/sse?events=&gap=` streams `events` SSE events `data: <n>.<i>` `gap` ms apart
 * (an LLM answer token by token), counted too. The page's IndexedDB and Web Locks need a secure context: 127.0.0.1 is one.
 */
export async function startSite(): Promise<Site> {
  let n = 0;
  const scripts = new Map<string, Promise<string>>();
  const script = (path: string, entry: string) => {
    let text = scripts.get(path);
    if (!text) scripts.set(path, (text = bundleForBrowser(entry)));
    return text;
  };
  const js = async (text: Promise<string>) =>
    new Response(await text, { headers: { "content-type": "text/javascript; charset=utf-8" } });

  const served = await listen(async (request) => {
    const url = new URL(request.url);
    switch (url.pathname) {
      case "/":
        return new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } });
      case "/idemfetch.js":
        return js(script(url.pathname, root("src/browser.ts")));
      case "/axios.js":
        return js(script(url.pathname, root("node_modules/axios/index.js")));
      case "/echo": {
        const body = await request.text();
        const mine = ++n;
        const ms = Number(url.searchParams.get("ms") ?? 0);
        if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
        const key = request.headers.get("idempotency-key");
        return Response.json({ n: mine, method: request.method, body, key }, { status: 201 });
      }
      case "/sse": {
        await request.text();
        const mine = ++n;
        const events = Number(url.searchParams.get("events") ?? 10);
        const gap = Number(url.searchParams.get("gap") ?? 20);
        let i = 0;
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (i > 0) await new Promise((resolve) => setTimeout(resolve, gap));
            if (i === events) return controller.close();
            controller.enqueue(new TextEncoder().encode(`data: ${mine}.${i++}\n\n`));
          },
        });
        return new Response(body, { headers: { "content-type": "text/event-stream", "cache-control": "no-store" } });
      }
      default:
        return new Response("not found", { status: 404 });
    }
  });
  return {
    url: served.url,
    count: () => n,
    reset: () => {
      n = 0;
    },
    close: served.close,
  };
}

/** Opens the site's page and waits for the library. */
export async function openPage(browserOrContext: { newPage(): Promise<Page> }, url: string): Promise<Page> {
  const page = await browserOrContext.newPage();
  await page.goto(url);
  await page.waitForFunction(() => window.ready === true);
  return page;
}
