// idemfetch/otel: OpenTelemetry traces and metrics from the engine's events (a span per idempotent call, counters per outcome).
import {
  type Attributes,
  type Counter,
  type Meter,
  metrics,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import type { CallEvent, IdempotencyEvent } from "./events.ts";
import { type OptionNames, strictOptions } from "./strict.ts";

export interface OpenTelemetryOptions {
  /** Where spans go. Default: `trace.getTracer("idemfetch")` from the registered global provider. */
  tracer?: Tracer;
  /** Where counters go. Default: `metrics.getMeter("idemfetch")` from the registered global provider. */
  meter?: Meter;
  /** Also receives every event, after telemetry has seen it (your own `onEvent`). */
  onEvent?: (event: IdempotencyEvent) => void;
}

/** What a call ended as, from the first event that decided it. */
const OUTCOMES: Partial<Record<IdempotencyEvent["type"], string>> = {
  execute: "executed",
  join: "joined",
  replay: "replayed",
  conflict: "conflict",
  timeout: "timeout",
};

/** Counters, by the event that increments them. */
const COUNTERS = {
  execute: ["idemfetch.executions", "Calls sent upstream"],
  join: ["idemfetch.joins", "Calls that joined one in flight in this process"],
  replay: ["idemfetch.replays", "Calls answered from a stored record"],
  conflict: ["idemfetch.conflicts", "Calls refused: same key, another request"],
  "store-error": ["idemfetch.store_errors", "Store calls that failed or timed out, and unusable stored values"],
  retry: ["idemfetch.retries", "Upstream re-sends of a keyed call (the retry option)"],
} as const;

/** Events recorded on the call's span as span events (they happen during it, they do not decide it). */
const SPAN_EVENTS = new Set<IdempotencyEvent["type"]>([
  "wait",
  "takeover",
  "stored",
  "not-stored",
  "store-error",
  "stale-token",
  "retry",
]);

/**
 * An `onEvent` listener that records one span per idempotent call (from its first event to the moment its
 * caller got an answer) and counts executions, joins, replays, conflicts and store errors. Attributes carry
 * the method, target, outcome, status and the key's and scope's hashes; never a raw key or credential.
 *
 * ```ts
 * createIdempotentFetch({ onEvent: openTelemetry() });
 * ```
 */
export function openTelemetry(options: OpenTelemetryOptions = {}): (event: IdempotencyEvent) => void {
  strictOptions(
    options,
    { tracer: true, meter: true, onEvent: true } satisfies OptionNames<OpenTelemetryOptions>,
    "openTelemetry()",
  );
  const tracer = options.tracer ?? trace.getTracer("idemfetch");
  const meter = options.meter ?? metrics.getMeter("idemfetch");
  const counters = {} as Record<keyof typeof COUNTERS, Counter>;
  for (const [type, [name, description]] of Object.entries(COUNTERS)) {
    counters[type as keyof typeof COUNTERS] = meter.createCounter(name, { description, unit: "{call}" });
  }
  const spans = new Map<number, { span: Span; decided: boolean }>();
  const then = options.onEvent;

  return function onEvent(event: IdempotencyEvent): void {
    // The store's circuit changes belong to no call: no span, only the user's own listener.
    if (!("callId" in event)) {
      then?.(event);
      return;
    }
    let entry = spans.get(event.callId);
    if (!entry) {
      const attributes: Attributes = {
        "http.request.method": event.method,
        "idemfetch.target": event.target,
        "idemfetch.key_hash": event.keyHash,
        "idemfetch.scope_hash": event.scopeHash,
      };
      const span = tracer.startSpan(`idempotency ${event.method}`, {
        kind: SpanKind.INTERNAL,
        startTime: new Date(Date.now() - event.durationMs),
        attributes,
      });
      entry = { span, decided: false };
      spans.set(event.callId, entry);
    }
    const { span } = entry;
    const counter = counters[event.type as keyof typeof COUNTERS];
    counter?.add(1, { "http.request.method": event.method });
    const outcome = OUTCOMES[event.type];
    if (outcome && !entry.decided) {
      entry.decided = true;
      span.setAttribute("idemfetch.outcome", outcome);
    }
    if (SPAN_EVENTS.has(event.type)) span.addEvent(event.type, eventAttributes(event));
    if (event.type === "settled") {
      spans.delete(event.callId);
      if (event.status !== undefined) span.setAttribute("http.response.status_code", event.status);
      if (event.error !== undefined) {
        span.recordException(event.error instanceof Error ? event.error : String(event.error));
        span.setStatus({ code: SpanStatusCode.ERROR, message: String((event.error as Error)?.message ?? event.error) });
      }
      span.end();
    }
    then?.(event);
  };
}

/** The event's own fields as span-event attributes (reason, op, status, bytes), never the error object. */
function eventAttributes(event: CallEvent): Attributes {
  const out: Attributes = {};
  if ("reason" in event) out["idemfetch.reason"] = event.reason;
  if ("op" in event) out["idemfetch.store_op"] = event.op;
  if ("status" in event && event.status !== undefined) out["http.response.status_code"] = event.status;
  if ("bytes" in event) out["idemfetch.bytes"] = event.bytes;
  if ("attempt" in event) {
    out["http.request.resend_count"] = event.attempt - 1;
    out["idemfetch.retry_delay_ms"] = event.delayMs;
  }
  return out;
}
