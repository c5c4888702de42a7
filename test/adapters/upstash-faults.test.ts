// upstashStore + the engine when the REST service fails (the fixture's fault mode): slow answers, 429/5xx,
// connections dropped before or after the command ran. Each call answers in bounded time with a store-error
// event that names the failure, a retry after the fault runs at once, and a waiter never executes.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { upstashStore } from "../../adapters/upstash.ts";
import type { IdempotencyEvent } from "../../src/index.ts";
import { idempotency } from "../../src/server.ts";
import { isStoreUnavailableError } from "../../src/store-guard.ts";
import { startUpstashFixture, type UpstashFault, type UpstashFixture } from "../fixtures/upstash-server.ts";
import { sleep, until } from "../fixtures/util.ts";

const STORE_TIMEOUT_MS = 300;
const SLOW_MS = 800;

let fixture: UpstashFixture;
beforeAll(async () => {
  fixture = await startUpstashFixture();
});
afterAll(async () => {
  await fixture?.close();
});

const FAULTS: [string, UpstashFault, "timeout" | "error" | "refused"][] = [
  ["slow answers", { kind: "slow", delayMs: SLOW_MS }, "timeout"],
  ["429", { kind: "status", status: 429 }, "error"],
  ["500", { kind: "status", status: 500 }, "error"],
  ["503", { kind: "status", status: 503 }, "error"],
  ["a connection dropped before the command ran", { kind: "drop", when: "before" }, "refused"],
  ["a connection dropped after the command ran", { kind: "drop", when: "after" }, "refused"],
];

let keys = 0;
const newKey = () => `upstash-fault-${process.pid}-${Date.now()}-${++keys}`;
/**
 * One process's server face over upstashStore (its own engine: calls in another face meet only through the
 * store). The handler's first run waits for `gate` when one is given.
 */
function face(key = newKey(), gate?: Promise<void>) {
  const events: IdempotencyEvent[] = [];
  let runs = 0;
  const handler = idempotency(
    async () => {
      const run = ++runs;
      if (run === 1 && gate) await gate;
      return Response.json({ run });
    },
    {
      store: upstashStore({ url: fixture.url, token: fixture.token }),
      storeTimeoutMs: STORE_TIMEOUT_MS,
      leaseMs: 30_000,
      circuitBreaker: false,
      logger: false,
      onEvent: (event) => events.push(event),
    },
  );
  const call = () =>
    handler(
      new Request("http://app.test/charge", {
        method: "POST",
        headers: { "idempotency-key": key, "content-type": "application/json" },
        body: "{}",
      }),
    );
  return { call, events, runs: () => runs };
}

const storeErrors = (events: IdempotencyEvent[]) =>
  events.filter((e): e is Extract<IdempotencyEvent, { type: "store-error" }> => e.type === "store-error");

describe.each(FAULTS)("upstashStore + engine, REST fault: %s", (_name, fault, reason) => {
  it("the call answers within the store timeout, with a store-error naming the failure; a retry after it runs at once", async () => {
    const { call, events, runs } = face();
    fixture.fault(fault);
    const started = performance.now();
    const during = await call();
    const ms = performance.now() - started;
    fixture.fault(undefined);
    expect(during.status).toBe(200); // fail-open: ran unprotected
    expect(ms).toBeLessThan(STORE_TIMEOUT_MS + 400);
    const [error] = storeErrors(events);
    expect(error).toMatchObject({ op: "acquire" });
    expect(isStoreUnavailableError(error?.error)).toBe(true);
    expect((error?.error as { reason?: unknown } | undefined)?.reason).toBe(reason);
    // A slow request still runs; its lease lands late and is released.
    if (fault.kind === "slow") await sleep(SLOW_MS);
    const retryStarted = performance.now();
    const retry = await Promise.race([call(), sleep(3000).then(() => undefined)]);
    expect(retry?.status).toBe(200);
    expect(performance.now() - retryStarted).toBeLessThan(1000);
    expect(runs()).toBe(2);
  });

  it("a waiter that has seen the live lease never executes while the store fails, and replays the commit", async () => {
    let open!: () => void;
    const key = newKey();
    const first = face(key, new Promise<void>((resolve) => (open = resolve)));
    const other = face(key);
    const leader = first.call();
    await until(() => first.runs() === 1);
    const { call, events, runs } = other;
    const waiter = call();
    await until(() => events.some((e) => e.type === "wait"));
    fixture.fault(fault);
    const before = storeErrors(events).length;
    await until(() => storeErrors(events).length >= before + 2, 5000); // its polls fail, it keeps waiting
    fixture.fault(undefined);
    if (fault.kind === "slow") await sleep(SLOW_MS);
    open();
    const [led, waited] = await Promise.all([leader, waiter]);
    expect(first.runs() + runs()).toBe(1);
    expect(waited.headers.get("idempotent-replayed")).toBe("true");
    expect(await waited.json()).toEqual(await led.json());
  });
});
