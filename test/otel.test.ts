// idemfetch/otel: one span per idempotent call and counters per outcome, recorded by a small tracer and meter of our own.
import { metrics, trace } from "@opentelemetry/api";
import { describe, expect, it } from "vitest";
import { createIdempotentFetch } from "../src/index.ts";
import { openTelemetry } from "../src/otel.ts";
import { idempotency } from "../src/server.ts";

interface Recorded {
  name: string;
  attributes: Record<string, unknown>;
  events: { name: string; attributes: Record<string, unknown> }[];
  status?: { code: number; message?: string };
  ended: boolean;
  start: Date;
}

function recorder() {
  const spans: Recorded[] = [];
  const counts: Record<string, number> = {};
  const tracer = {
    startSpan(name: string, options: { attributes?: Record<string, unknown>; startTime: Date }) {
      const span: Recorded = {
        name,
        attributes: { ...options.attributes },
        events: [],
        ended: false,
        start: options.startTime,
      };
      spans.push(span);
      return {
        setAttribute: (k: string, v: unknown) => void (span.attributes[k] = v),
        addEvent: (n: string, a: Record<string, unknown> = {}) => void span.events.push({ name: n, attributes: a }),
        setStatus: (s: { code: number; message?: string }) => void (span.status = s),
        recordException: () => {},
        end: () => void (span.ended = true),
      };
    },
  };
  const meter = {
    createCounter: (name: string) => ({ add: (n: number) => void (counts[name] = (counts[name] ?? 0) + n) }),
  };
  return { spans, counts, tracer: tracer as never, meter: meter as never };
}

const call = (key: string, body = "{}") =>
  new Request("http://app.test/orders", {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key },
    body,
  });

describe("openTelemetry()", () => {
  it("three duplicates and a replay: four spans with outcomes, counters for one execution, two joins, one replay", async () => {
    const r = recorder();
    const h = idempotency(
      async () => {
        await new Promise((res) => setTimeout(res, 30));
        return new Response("ok", { status: 201 });
      },
      { onEvent: openTelemetry({ tracer: r.tracer, meter: r.meter }) },
    );
    await Promise.all([1, 2, 3].map(async () => (await h(call("otel-1"))).text()));
    await (await h(call("otel-1"))).text();
    await (await h(call("otel-1", '{"other":1}'))).text();
    expect(r.spans).toHaveLength(5);
    expect(r.spans.every((s) => s.ended)).toBe(true);
    expect(r.spans.map((s) => s.attributes["idemfetch.outcome"]).sort()).toEqual([
      "conflict",
      "executed",
      "joined",
      "joined",
      "replayed",
    ]);
    const executed = r.spans.find((s) => s.attributes["idemfetch.outcome"] === "executed") as Recorded;
    expect(executed.name).toBe("idempotency POST");
    expect(executed.attributes).toMatchObject({
      "http.request.method": "POST",
      "idemfetch.target": "/orders",
      "idemfetch.scope_hash": "anonymous",
      "http.response.status_code": 201,
    });
    expect(executed.attributes["idemfetch.key_hash"]).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(r.spans)).not.toContain("otel-1");
    expect(executed.events.map((e) => e.name)).toContain("stored");
    expect(r.counts).toEqual({
      "idemfetch.executions": 1,
      "idemfetch.joins": 2,
      "idemfetch.replays": 1,
      "idemfetch.conflicts": 1,
    });
  });

  it("an upstream error ends the span with an error status; the user's own onEvent still receives every event", async () => {
    const r = recorder();
    const seen: string[] = [];
    const f = createIdempotentFetch({
      fetch: async () => {
        throw new TypeError("network down");
      },
      onEvent: openTelemetry({ tracer: r.tracer, meter: r.meter, onEvent: (e) => seen.push(e.type) }),
    });
    await expect(
      f("http://up.test/x", { method: "POST", headers: { "idempotency-key": "e" }, body: "{}" }),
    ).rejects.toThrow("network down");
    expect(r.spans).toHaveLength(1);
    expect(r.spans[0]?.status).toEqual({ code: 2, message: "network down" });
    expect(seen).toEqual(["execute", "settled"]);
  });

  it("without a tracer or meter it uses the globally registered providers", async () => {
    const r = recorder();
    trace.setGlobalTracerProvider({ getTracer: () => r.tracer });
    metrics.setGlobalMeterProvider({ getMeter: () => r.meter });
    try {
      const h = idempotency(async () => new Response("ok"), { onEvent: openTelemetry() });
      await (await h(call("global"))).text();
      expect(r.spans).toHaveLength(1);
      expect(r.counts["idemfetch.executions"]).toBe(1);
    } finally {
      trace.disable();
      metrics.disable();
    }
  });
});
