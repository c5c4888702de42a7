// The retry option: re-sends with the same key against a real scripted HTTP server on 127.0.0.1, counted.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createIdempotentFetch, errorResponse, type IdempotencyEvent, memoryStore } from "../src/index.ts";
import { install, type Uninstall } from "../src/install-node.ts";
import { openTelemetry } from "../src/otel.ts";
import { normalizeRetry, retryAfterMs } from "../src/retry.ts";
import { idempotency } from "../src/server.ts";
import { sleep, until } from "./fixtures/util.ts";

/** One answer of the scripted server: a status with headers and body, or a dropped connection. */
type Step = { status: number; headers?: Record<string, string>; body?: string } | "drop";

interface Sent {
  method: string;
  key: string | undefined;
  body: string;
  at: number;
}

let servers: http.Server[] = [];
let base: string;
let script: Step[] = [];
let sent: Sent[] = [];
/** Held requests answer only when released (a slow upstream). */
let hold: Promise<void> | undefined;

/** A server on its own port: install() sees only connections opened after it (install-node.ts). */
async function listen(): Promise<string> {
  return serve(async (req, res, body) => {
    const key = req.headers["idempotency-key"];
    sent.push({ method: req.method ?? "", key: typeof key === "string" ? key : undefined, body, at: Date.now() });
    if (hold) await hold;
    const step = script.shift() ?? { status: 200, body: `{"ok":true,"n":${sent.length}}` };
    if (step === "drop") {
      req.socket.destroy();
      return;
    }
    res.writeHead(step.status, { "content-type": "application/json", ...step.headers });
    res.end(step.body ?? `{"n":${sent.length}}`);
  });
}

/**
 * A Web handler (the server face) over node:http. Not @hono/node-server: it replaces the global Response,
 * after which install()'s engine no longer knows fetch's responses as Responses.
 */
function serveWeb(handler: (request: Request) => Promise<Response>): Promise<string> {
  return serve(async (req, res, body) => {
    const headers = Object.entries(req.headers).filter((e): e is [string, string] => typeof e[1] === "string");
    const init: RequestInit = { method: req.method ?? "GET", headers };
    if (body !== "") init.body = body;
    const response = await handler(new Request(`http://127.0.0.1${req.url}`, init));
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });
}

async function serve(
  answer: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => Promise<void>,
): Promise<string> {
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
    });
    req.on("end", () => void answer(req, res, body));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  base = await listen();
});
afterAll(async () => {
  for (const server of servers) server.closeAllConnections();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  servers = [];
});
beforeEach(() => {
  script = [];
  sent = [];
  hold = undefined;
});

const keyed = (key: string | undefined, body: unknown = { amount: 5 }, method = "POST"): RequestInit => ({
  method,
  headers: { "content-type": "application/json", ...(key === undefined ? {} : { "Idempotency-Key": key }) },
  body: JSON.stringify(body),
});
const fast = { limit: 3, backoff: () => 10 };
const failing = (status: number, times: number): Step[] => Array.from({ length: times }, () => ({ status }));
const wire = async (response: Response): Promise<Step> => ({
  status: response.status,
  headers: Object.fromEntries(response.headers),
  body: await response.text(),
});
const retries = (events: IdempotencyEvent[]) =>
  events.filter((e) => e.type === "retry").map((e) => (e.type === "retry" ? [e.attempt, e.reason] : []));

describe("re-sends with the same key", () => {
  it("a server that fails twice then answers: 3 sends, the same key on each, one stored answer, the caller gets the answer", async () => {
    const events: IdempotencyEvent[] = [];
    const store = memoryStore();
    const f = createIdempotentFetch({ store, retry: fast, onEvent: (e) => events.push(e) });
    script = [...failing(503, 2), { status: 201, body: '{"charged":5}' }];
    const response = await f(`${base}/charge`, keyed("order-1"));
    expect(response.status).toBe(201);
    expect(await response.text()).toBe('{"charged":5}');
    expect(sent.map((s) => s.key)).toEqual(["order-1", "order-1", "order-1"]);
    expect(new Set(sent.map((s) => s.body)).size).toBe(1);
    expect(retries(events)).toEqual([
      [2, "status 503"],
      [3, "status 503"],
    ]);
    expect(events.filter((e) => e.type === "stored")).toHaveLength(1);
    // The one stored answer: the next call with the key replays it and sends nothing.
    const again = await f(`${base}/charge`, keyed("order-1"));
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(await again.text()).toBe('{"charged":5}');
    expect(sent).toHaveLength(3);
  });

  it("a network error is re-sent; a key from the body goes upstream as the header on every try", async () => {
    const events: IdempotencyEvent[] = [];
    const f = createIdempotentFetch({ retry: fast, onEvent: (e) => events.push(e) });
    script = ["drop", "drop"];
    const response = await f(`${base}/charge`, keyed(undefined, { idempotency_key: "body-1", amount: 5 }));
    expect(response.status).toBe(200);
    expect(sent.map((s) => s.key)).toEqual(["body-1", "body-1", "body-1"]);
    expect(retries(events).map(([, reason]) => String(reason).startsWith("network error"))).toEqual([true, true]);
  });

  it("408, 429 and 5xx are re-sent by default; other 4xx are final", async () => {
    const f = createIdempotentFetch({ retry: { limit: 5, backoff: () => 1 } });
    script = [{ status: 408 }, { status: 429 }, { status: 500 }, { status: 599 }, { status: 404, body: "{}" }];
    expect((await f(`${base}/x`, keyed("k-statuses"))).status).toBe(404);
    expect(sent).toHaveLength(5);
  });

  it("409 IDEMPOTENCY_IN_PROGRESS with Retry-After: 1 waits about 1 s, then the same key gets the answer", async () => {
    const f = createIdempotentFetch({ retry: 2 });
    const inProgress = await wire(errorResponse("IDEMPOTENCY_IN_PROGRESS", 409, undefined, { "retry-after": "1" }));
    script = [inProgress, { status: 200, body: '{"done":1}' }];
    const response = await f(`${base}/slow`, keyed("k-busy"));
    expect(await response.text()).toBe('{"done":1}');
    expect(sent).toHaveLength(2);
    expect((sent[1] as Sent).at - (sent[0] as Sent).at).toBeGreaterThanOrEqual(950);
  });

  it("a 409 IN_PROGRESS in the RFC 9457 problem format is recognised too; Retry-After is capped by maxDelayMs", async () => {
    const f = createIdempotentFetch({ retry: { limit: 1, maxDelayMs: 20 } });
    const busy = await wire(
      errorResponse("IDEMPOTENCY_IN_PROGRESS", 409, undefined, { "retry-after": "3600" }, "problem"),
    );
    script = [busy];
    const started = Date.now();
    expect((await f(`${base}/slow`, keyed("k-problem"))).status).toBe(200);
    expect(sent).toHaveLength(2);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("after the last try the caller gets the last answer, unstored: the next call sends again", async () => {
    const f = createIdempotentFetch({ retry: { limit: 2, backoff: () => 1 } });
    script = failing(503, 3);
    const response = await f(`${base}/x`, keyed("k-exhausted"));
    expect(response.status).toBe(503);
    expect(sent).toHaveLength(3);
    expect((await f(`${base}/x`, keyed("k-exhausted"))).status).toBe(200);
    expect(sent).toHaveLength(4);
  });

  it("a 409 IN_PROGRESS left after the last try is not stored: the key's real answer is fetched next time", async () => {
    const f = createIdempotentFetch({ retry: { limit: 1, maxDelayMs: 0 } });
    const busy = await wire(errorResponse("IDEMPOTENCY_IN_PROGRESS", 409, undefined, { "retry-after": "1" }));
    script = [busy, busy];
    expect((await f(`${base}/x`, keyed("k-busy-twice"))).status).toBe(409);
    const next = await f(`${base}/x`, keyed("k-busy-twice"));
    expect(next.status).toBe(200);
    expect(next.headers.get("idempotent-replayed")).toBeNull();
    expect(sent).toHaveLength(3);
  });

  it("N local duplicates share one retry loop: 3 sends for 5 callers, one answer for all", async () => {
    const events: IdempotencyEvent[] = [];
    const f = createIdempotentFetch({ retry: fast, onEvent: (e) => events.push(e) });
    script = failing(502, 2);
    const responses = await Promise.all(Array.from({ length: 5 }, () => f(`${base}/x`, keyed("k-dupes"))));
    const bodies = await Promise.all(responses.map((r) => r.text()));
    expect(sent).toHaveLength(3);
    expect(new Set(bodies)).toEqual(new Set(['{"ok":true,"n":3}']));
    expect(retries(events)).toHaveLength(2);
  });

  it("a custom fetch gets a fresh Request on every try, with the key and the same body", async () => {
    const seen: { key: string | null; body: string }[] = [];
    const f = createIdempotentFetch({
      retry: fast,
      fetch: async (input, init) => {
        const request = new Request(input, init);
        seen.push({ key: request.headers.get("idempotency-key"), body: await request.clone().text() });
        return fetch(request);
      },
    });
    script = failing(500, 1);
    expect((await f(`${base}/x`, keyed(undefined, { idempotency_key: "custom", n: 1 }))).status).toBe(200);
    expect(seen).toEqual([
      { key: "custom", body: '{"idempotency_key":"custom","n":1}' },
      { key: "custom", body: '{"idempotency_key":"custom","n":1}' },
    ]);
  });

  it("a duplicate arriving during the backoff joins the loop instead of sending", async () => {
    const f = createIdempotentFetch({ retry: { limit: 1, backoff: () => 300 } });
    script = failing(503, 1);
    const first = f(`${base}/x`, keyed("k-late"));
    await until(() => sent.length === 1);
    const late = f(`${base}/x`, keyed("k-late"));
    expect(await (await first).text()).toBe(await (await late).text());
    expect(sent).toHaveLength(2);
  });
});

describe("with the library on both ends, and across processes", () => {
  it("the idemfetch server answers 409 IN_PROGRESS with Retry-After: 1; the client waits, re-sends, and gets the replay", async () => {
    let runs = 0;
    const handler = idempotency(
      async () => {
        runs++;
        await sleep(600);
        return Response.json({ charged: runs });
      },
      { waitTimeoutMs: 0 },
    );
    const api = await serveWeb(handler);
    const plain = createIdempotentFetch();
    const events: IdempotencyEvent[] = [];
    const retried = createIdempotentFetch({ retry: 2, onEvent: (e) => events.push(e) });
    const first = plain(`${api}/charge`, keyed("e2e-1"));
    await until(() => runs === 1);
    const started = Date.now();
    const second = await retried(`${api}/charge`, keyed("e2e-1"));
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(retries(events)).toEqual([[2, "409 IDEMPOTENCY_IN_PROGRESS"]]);
    expect(second.status).toBe(200);
    expect(second.headers.get("idempotent-replayed")).toBe("true");
    expect(await second.text()).toBe(await (await first).text());
    expect(runs).toBe(1);
  });

  it("the heartbeat holds the lease through a pause longer than leaseMs: a duplicate in another process waits and replays", async () => {
    const store = memoryStore();
    const events: IdempotencyEvent[] = [];
    const leader = createIdempotentFetch({
      store,
      leaseMs: 150,
      retry: { limit: 1, backoff: () => 500 },
      onEvent: (e) => events.push(e),
    });
    const other = createIdempotentFetch({ store, leaseMs: 150 });
    script = failing(503, 1);
    const first = leader(`${base}/x`, keyed("k-lease"));
    await until(() => events.some((e) => e.type === "retry"));
    await sleep(300); // two lease lengths into the pause
    const duplicate = await other(`${base}/x`, keyed("k-lease"));
    expect(duplicate.headers.get("idempotent-replayed")).toBe("true");
    expect(await duplicate.text()).toBe(await (await first).text());
    expect(sent).toHaveLength(2);
  });
});

describe("never re-sent", () => {
  it("a conflict (409 IDEMPOTENCY_CONFLICT) is final", async () => {
    const f = createIdempotentFetch({ retry: fast });
    script = [await wire(errorResponse("IDEMPOTENCY_CONFLICT", 409))];
    const response = await f(`${base}/x`, keyed("k-conflict"));
    expect(response.status).toBe(409);
    expect(await response.text()).toContain("IDEMPOTENCY_CONFLICT");
    expect(sent).toHaveLength(1);
  });

  it("a keyless POST and PATCH, and an auto-keyed POST (its key never leaves the process), are sent once", async () => {
    const f = createIdempotentFetch({ retry: fast });
    script = failing(503, 3);
    expect((await f(`${base}/x`, keyed(undefined))).status).toBe(503);
    expect((await f(`${base}/x`, keyed(undefined, {}, "PATCH"))).status).toBe(503);
    const auto = createIdempotentFetch({ retry: fast, autoKey: true });
    expect((await auto(`${base}/x`, keyed(undefined))).status).toBe(503);
    expect(sent.map((s) => s.method)).toEqual(["POST", "PATCH", "POST"]);
  });

  it("a POST whose key never reaches the upstream (per-call key, sendKeyHeader never) is sent once; such a PUT is re-sent", async () => {
    const f = createIdempotentFetch({ retry: fast, sendKeyHeader: "never" });
    script = failing(503, 2);
    const init = { method: "POST", body: "{}", idempotency: { key: "local-only" } };
    expect((await f(`${base}/x`, init)).status).toBe(503);
    expect(sent).toHaveLength(1);
    expect((await f(`${base}/x`, { ...init, method: "PUT" })).status).toBe(200);
    expect(sent.map((s) => s.key)).toEqual([undefined, undefined, undefined]);
  });

  it("a key in the body reaches the upstream even when the header is not sent, so that POST is re-sent", async () => {
    const f = createIdempotentFetch({ retry: fast, sendKeyHeader: "never" });
    script = failing(503, 1);
    const init = { method: "POST", body: JSON.stringify({ idempotency_key: "in-body" }) };
    expect((await f(`${base}/x`, init)).status).toBe(200);
    expect(sent).toHaveLength(2);
  });

  it("a method left out of `methods` is sent once", async () => {
    const f = createIdempotentFetch({ retry: { ...fast, methods: ["put"] } });
    script = failing(503, 1);
    expect((await f(`${base}/x`, keyed("k-methods"))).status).toBe(503);
    expect(sent).toHaveLength(1);
  });

  it("an aborted call is not re-sent: it rejects with the reason", async () => {
    const f = createIdempotentFetch({ retry: fast });
    let release!: () => void;
    hold = new Promise((resolve) => {
      release = resolve;
    });
    const controller = new AbortController();
    const call = f(`${base}/x`, { ...keyed("k-abort"), signal: controller.signal });
    await until(() => sent.length === 1);
    const reason = new Error("user left");
    controller.abort(reason);
    await expect(call).rejects.toBe(reason);
    release();
    await f.close();
    expect(sent).toHaveLength(1);
  });

  it("an abort during the backoff rejects promptly with its reason, and no further try is sent", async () => {
    const controller = new AbortController();
    const reason = new Error("gave up");
    const f = createIdempotentFetch({
      retry: { limit: 3, backoff: () => 10_000 },
      onEvent: (e) => {
        if (e.type === "retry") controller.abort(reason);
      },
    });
    script = failing(503, 1);
    const started = Date.now();
    await expect(f(`${base}/x`, { ...keyed("k-backoff"), signal: controller.signal })).rejects.toBe(reason);
    await f.close();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(sent).toHaveLength(1);
    // The lease was released, not held through the backoff: the key runs again at once.
    expect((await f(`${base}/x`, keyed("k-backoff"))).status).toBe(200);
  });

  it("off by default: a 503 is sent once", async () => {
    const f = createIdempotentFetch();
    script = failing(503, 1);
    expect((await f(`${base}/x`, keyed("k-off"))).status).toBe(503);
    expect(sent).toHaveLength(1);
  });
});

describe("per call", () => {
  it("overrides the constructor's policy: a number sets the limit, false turns retries off", async () => {
    const f = createIdempotentFetch({ retry: { limit: 1, backoff: () => 1 } });
    script = failing(503, 3);
    expect((await f(`${base}/x`, { ...keyed("k-pc1"), idempotency: { retry: 3 } })).status).toBe(200);
    expect(sent).toHaveLength(4);
    script = failing(503, 1);
    expect((await f(`${base}/x`, { ...keyed("k-pc2"), idempotency: { retry: false } })).status).toBe(503);
    expect(sent).toHaveLength(5);
  });

  it("a bad per-call retry is a TypeError before any send", async () => {
    const f = createIdempotentFetch();
    await expect(f(`${base}/x`, { ...keyed("k-bad"), idempotency: { retry: -1 } })).rejects.toThrow(TypeError);
    await expect(f(`${base}/x`, { idempotency: { retry: { statuses: [409] } } })).rejects.toThrow(/409/);
    expect(sent).toHaveLength(0);
  });
});

describe("validation", () => {
  it.each([
    ["a negative limit", -1],
    ["a fractional limit", 1.5],
    ["a string", "3"],
    ["a non-integer limit", { limit: Number.NaN }],
    ["409 among statuses (conflicts would be re-sent)", { statuses: [409] }],
    ["a 2xx status", { statuses: [200] }],
    ["a bad method", { methods: ["GET POST"] }],
    ["a backoff that is no function", { backoff: 100 }],
    ["a negative maxDelayMs", { maxDelayMs: -1 }],
    ["null", null],
  ])("%s is a TypeError at construction, on every face", (_, retry) => {
    expect(() => createIdempotentFetch({ retry: retry as never })).toThrow(TypeError);
    expect(() => install({ retry: retry as never })).toThrow(TypeError);
  });

  it("a number is the limit, with the defaults; 0 and false turn retries off", () => {
    const policy = normalizeRetry(4);
    expect(policy?.limit).toBe(4);
    expect([...(policy?.methods ?? [])]).toContain("POST");
    expect(policy?.statuses.has(503)).toBe(true);
    expect(policy?.statuses.has(409)).toBe(false);
    expect(normalizeRetry(0)).toBeUndefined();
    expect(normalizeRetry(false)).toBeUndefined();
    expect(normalizeRetry({})?.limit).toBe(2);
  });

  it("Retry-After is read as seconds or an HTTP date", () => {
    expect(retryAfterMs("2")).toBe(2000);
    expect(retryAfterMs(null)).toBeUndefined();
    expect(retryAfterMs("soon")).toBeUndefined();
    const inFive = retryAfterMs(new Date(Date.now() + 5000).toUTCString()) as number;
    expect(inFive).toBeGreaterThan(3000);
    expect(inFive).toBeLessThanOrEqual(5000);
    expect(retryAfterMs(new Date(0).toUTCString())).toBe(0);
  });
});

describe("install()", () => {
  let uninstall: Uninstall | undefined;
  let fresh: string;
  beforeAll(async () => {
    fresh = await listen();
  });
  afterEach(() => uninstall?.());

  it("re-sends a keyed fetch with the same key; duplicates share the loop", async () => {
    const events: IdempotencyEvent[] = [];
    uninstall = install({ retry: fast, onEvent: (e) => events.push(e) });
    script = [{ status: 503 }, "drop"];
    const responses = await Promise.all([1, 2, 3].map(() => fetch(`${fresh}/x`, keyed("k-install"))));
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(sent.map((s) => s.key)).toEqual(["k-install", "k-install", "k-install"]);
    expect(retries(events).map(([attempt]) => attempt)).toEqual([2, 3]);
  });

  it("a keyless POST through install() is sent once", async () => {
    uninstall = install({ retry: fast });
    script = failing(503, 1);
    expect((await fetch(`${fresh}/x`, keyed(undefined))).status).toBe(503);
    expect(sent).toHaveLength(1);
  });
});

describe("telemetry", () => {
  it("each re-send is a span event and counts toward idemfetch.retries", async () => {
    const counts: Record<string, number> = {};
    const spanEvents: { name: string; attributes: Record<string, unknown> }[] = [];
    const tracer = {
      startSpan: () => ({
        setAttribute: () => {},
        addEvent: (name: string, attributes: Record<string, unknown> = {}) =>
          void spanEvents.push({ name, attributes }),
        setStatus: () => {},
        recordException: () => {},
        end: () => {},
      }),
    };
    const meter = {
      createCounter: (name: string) => ({ add: (n: number) => void (counts[name] = (counts[name] ?? 0) + n) }),
    };
    const f = createIdempotentFetch({
      retry: fast,
      onEvent: openTelemetry({ tracer: tracer as never, meter: meter as never }),
    });
    script = failing(500, 2);
    expect((await f(`${base}/x`, keyed("k-otel"))).status).toBe(200);
    expect(counts["idemfetch.retries"]).toBe(2);
    const resent = spanEvents.filter((e) => e.name === "retry");
    expect(resent.map((e) => e.attributes["http.request.resend_count"])).toEqual([1, 2]);
    expect(resent[0]?.attributes["idemfetch.reason"]).toBe("status 500");
  });
});
