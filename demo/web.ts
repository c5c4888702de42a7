// The browser demo that demo/main.ts mounts: the page, its script (bundled by esbuild on first request), and a counting upstream.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

export interface WebDemoOptions {
  /** How long an order takes upstream, in ms: a slow API is what makes a double-click a double order. Default 300. */
  orderMs?: number;
}

export interface WebDemo {
  /** Answers the demo's own paths; `undefined` for every other request, which the caller then serves. */
  handle(request: Request): Promise<Response | undefined>;
}

const PUBLIC = new URL("./public/", import.meta.url);
const MAX_ORDER_MS = 10_000;

/** Bundles a browser entry into one ES module. Platform "browser": a Node built-in anywhere in it fails the build. */
export async function bundleForBrowser(entry: string): Promise<string> {
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    sourcemap: "inline",
    logLevel: "silent",
  });
  return (result.outputFiles[0] as { text: string }).text;
}

export function webDemo(options: WebDemoOptions = {}): WebDemo {
  const orderMs = options.orderMs ?? 300;
  let executions = 0;
  const byKey = new Map<string, number>();
  // Built once, on the first request for it: the demo server starts at once and tests that never load the page pay nothing.
  let script: Promise<string> | undefined;

  const file = async (name: string, type: string): Promise<Response> =>
    new Response(await readFile(new URL(name, PUBLIC)), {
      headers: { "content-type": type, "cache-control": "no-store" },
    });

  const order = async (request: Request): Promise<Response> => {
    const text = await request.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return Response.json({ error: "send the order as JSON" }, { status: 400 });
    }
    const execution = ++executions;
    const key = request.headers.get("idempotency-key");
    if (key !== null) byKey.set(key, (byKey.get(key) ?? 0) + 1);
    const ms = Number(new URL(request.url).searchParams.get("ms") ?? orderMs);
    await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(ms, 0) || 0, MAX_ORDER_MS)));
    return Response.json({ execution, order: body, key, at: new Date().toISOString() }, { status: 201 });
  };

  return {
    async handle(request) {
      const { pathname } = new URL(request.url);
      const method = request.method;
      if (pathname === "/" && method === "GET") return file("index.html", "text/html; charset=utf-8");
      if (pathname === "/app.js" && method === "GET") {
        script ??= bundleForBrowser(fileURLToPath(new URL("app.ts", PUBLIC)));
        try {
          return new Response(await script, {
            headers: { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-store" },
          });
        } catch (error) {
          script = undefined;
          return new Response(`demo: the page script did not build: ${(error as Error).message}`, { status: 500 });
        }
      }
      if (pathname === "/api/order" && method === "POST") return order(request);
      if (pathname === "/api/counters" && method === "GET") {
        return Response.json(
          { executions, byKey: Object.fromEntries(byKey) },
          { headers: { "cache-control": "no-store" } },
        );
      }
      if (pathname === "/api/counters/reset" && method === "POST") {
        executions = 0;
        byKey.clear();
        return Response.json({ executions });
      }
      return undefined;
    },
  };
}
