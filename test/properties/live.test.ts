// The live-stream invariant (issue 17, docs/protocol.md "The live-stream capability"), over random interleavings:
// two engines on one store, liveMemoryStore and sqliteStore (so duplicates on the second are remote readers), SSE handlers that stream,
// fail mid-stream or are forced out by an operator's forget, publishes that fail, callers that join late or stop
// reading. A reader's bytes are always a prefix of exactly one execution's bytes; a complete read equals one
// execution's whole stream, and whatever record the store keeps equals the whole stream of an execution that ended.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { sqliteStore } from "../../adapters/sqlite.ts";
import { liveMemoryStore } from "../../src/memory-live.ts";
import { type Handler, idempotency } from "../../src/server.ts";
import type { IdempotencyStore, LiveStore } from "../../src/store.ts";
import { openSqlite } from "../fixtures/sqlite.ts";
import { sleep } from "../fixtures/util.ts";

/** Four times the harness's floor of examples (one example is one short scenario, about 0.2 s). */
const FLOOR = Number(process.env.PROPERTY_RUNS_FLOOR ?? 25);
const RUNS = 4 * Math.max(FLOOR, Number(process.env.PROPERTY_RUNS ?? FLOOR));
const BUDGET_MS = Number(process.env.PROPERTY_BUDGET_S ?? 150) * 1000;
/** A scenario that has not settled by then is a hang: a violation of its own. */
const WATCHDOG_MS = 15_000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** What the random scenarios reached, so a green run says it exercised remote readers and takeovers. */
const coverage = { liveReads: 0, lost: 0, executions: 0, scenarios: 0 };

/** `value` `weight` times in `weight + otherwise`, else undefined. */
const sometimes = <T>(value: fc.Arbitrary<T>, weight: number, otherwise: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: value, weight }, { arbitrary: fc.constant(undefined), weight: otherwise });

/** How one execution of the handler streams: its chunks, their gaps, and whether it errors after `failAfter` chunks. */
const executionPlan = fc.record({
  chunks: fc.integer({ min: 1, max: 8 }),
  gapMs: fc.oneof(fc.constant(0), fc.integer({ min: 3, max: 30 }), fc.integer({ min: 3, max: 30 })),
  failAfter: sometimes(fc.integer({ min: 0, max: 6 }), 1, 2),
});

const scenario = fc.record({
  executions: fc.array(executionPlan, { minLength: 1, maxLength: 3 }),
  callers: fc.array(
    fc.record({
      engine: fc.constantFrom(0, 1),
      startMs: fc.integer({ min: 0, max: 200 }),
      /** Stops reading after this many reads (the body is cancelled), else reads to the end. */
      stopAfter: sometimes(fc.integer({ min: 0, max: 4 }), 1, 3),
    }),
    { minLength: 2, maxLength: 6 },
  ),
  /** An operator forgets the key with force at this time, forcing out whatever lease holds it. */
  forgetAtMs: sometimes(fc.integer({ min: 0, max: 200 }), 1, 2),
  /** This publish (counted over the scenario) fails: the writer stops and readers wait for the commit. */
  failPublish: sometimes(fc.integer({ min: 1, max: 6 }), 1, 3),
  /** Both engines' own tunable: a short wait bound makes 409 IN_PROGRESS answers part of the mix. */
  waitTimeoutMs: fc.constantFrom(300, 5000),
});
type Scenario = typeof scenario extends fc.Arbitrary<infer T> ? T : never;

interface Read {
  caller: number;
  status: number;
  bytes: string;
  /** The body errored (a lost stream, or the execution failed mid-stream). */
  errored: boolean;
  /** The body was read to its end. */
  complete: boolean;
}

/** Runs one scenario; resolves the violations found (empty when every invariant held). */
async function run(s: Scenario, inner: LiveStore): Promise<string[]> {
  const storeKeys = new Set<string>();
  let publishes = 0;
  const store: LiveStore = {
    ...inner,
    readLive: async (storeKey, stream, offset) => {
      const read = await inner.readLive(storeKey, stream, offset);
      if (read.state === "live" && read.body.length > 0) coverage.liveReads++;
      return read;
    },
    acquire: (storeKey, fingerprint, leaseMs) => {
      storeKeys.add(storeKey);
      return inner.acquire(storeKey, fingerprint, leaseMs);
    },
    publishLive: async (storeKey, token, part) => {
      if (++publishes === s.failPublish) throw new Error("injected publishLive failure");
      return inner.publishLive(storeKey, token, part);
    },
  };
  /** What each execution streamed, in order, by execution number (1-based); whether it ended normally. */
  const streamed: string[] = [];
  const ended: boolean[] = [];
  const handler: Handler = async (request) => {
    await request.text();
    const n = streamed.length;
    streamed.push("");
    ended.push(false);
    const plan = s.executions[n % s.executions.length] as Scenario["executions"][number];
    let i = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (i > 0 && plan.gapMs > 0) await sleep(plan.gapMs);
        if (plan.failAfter !== undefined && i >= plan.failAfter) {
          controller.error(new Error(`execution ${n + 1} failed mid-stream`));
          return;
        }
        if (i === plan.chunks) {
          ended[n] = true;
          controller.close();
          return;
        }
        const chunk = `data: e${n + 1}c${i}\n\n`;
        streamed[n] += chunk;
        controller.enqueue(encoder.encode(chunk));
        i++;
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  };
  const options = {
    store: store as IdempotencyStore,
    waitTimeoutMs: s.waitTimeoutMs,
    leaseMs: 2000,
    logger: false as const,
  };
  const engines = [idempotency(handler, options), idempotency(handler, options)];

  const call = async (index: number): Promise<Read> => {
    const c = s.callers[index] as Scenario["callers"][number];
    await sleep(c.startMs);
    const response = await (engines[c.engine] as (r: Request) => Promise<Response>)(
      new Request("http://test/chat", {
        method: "POST",
        headers: { "idempotency-key": "live-key", "content-type": "application/json" },
        body: '{"prompt":"hi"}',
      }),
    );
    const read: Read = { caller: index, status: response.status, bytes: "", errored: false, complete: false };
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    try {
      for (let reads = 0; ; reads++) {
        if (c.stopAfter !== undefined && reads >= c.stopAfter) {
          await reader.cancel();
          break;
        }
        const { done, value } = await reader.read();
        if (done) {
          read.complete = true;
          break;
        }
        read.bytes += decoder.decode(value, { stream: true });
      }
    } catch {
      read.errored = true;
      coverage.lost++;
    }
    return read;
  };

  const operator = async () => {
    if (s.forgetAtMs === undefined) return;
    await sleep(s.forgetAtMs);
    for (const storeKey of storeKeys) await inner.forget(storeKey, true);
  };

  let watchdog: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<"hung">((resolve) => {
    watchdog = setTimeout(() => resolve("hung"), WATCHDOG_MS);
  });
  const settled = Promise.all([Promise.all(s.callers.map((_, i) => call(i))), operator()]);
  const outcome = await Promise.race([settled, hung]);
  clearTimeout(watchdog);
  if (outcome === "hung") return [`a caller had not settled after ${WATCHDOG_MS} ms`];
  const [reads] = outcome;
  coverage.scenarios++;
  coverage.executions += streamed.length;
  await Promise.all(engines.map((engine) => engine.close()));

  const violations: string[] = [];
  for (const read of reads) {
    const who = `caller ${read.caller} (status ${read.status})`;
    if (read.status !== 200) {
      if (read.status !== 409 && read.status !== 500 && read.status !== 503)
        violations.push(`${who}: unexpected status`);
      continue;
    }
    if (read.bytes === "") continue;
    const sources = streamed.filter((bytes) => bytes.startsWith(read.bytes));
    if (sources.length !== 1)
      violations.push(`${who}: ${JSON.stringify(read.bytes)} is a prefix of ${sources.length} executions' bytes`);
    if (read.complete) {
      const whole = streamed.findIndex((bytes, n) => bytes === read.bytes && ended[n]);
      if (whole === -1)
        violations.push(`${who}: a complete read ${JSON.stringify(read.bytes)} is no execution's whole stream`);
    }
  }
  for (const storeKey of storeKeys) {
    const live = await inner.readLive(storeKey, undefined, 0);
    if (live.state !== "done") continue;
    const body = decoder.decode(live.record.body);
    if (!streamed.some((bytes, n) => bytes === body && ended[n]))
      violations.push(`the stored record ${JSON.stringify(body)} is no ended execution's whole stream`);
  }
  return violations;
}

/** The stores the property runs on, each new per scenario: in memory, and SQLite's statements on a :memory: file. */
const STORES: [string, () => LiveStore][] = [
  ["liveMemoryStore", () => liveMemoryStore()],
  ["sqliteStore", () => sqliteStore({ db: openSqlite(":memory:").db })],
];

describe.each(STORES)("live streams across engines (%s)", (name, makeStore) => {
  it(
    "a reader's bytes are a prefix of exactly one execution's; a complete read, and the record, equal one whole stream",
    async () => {
      const started = performance.now();
      Object.assign(coverage, { liveReads: 0, lost: 0, executions: 0, scenarios: 0 });
      const result = await fc.check(
        fc.asyncProperty(scenario, async (s) => {
          const violations = await run(s, makeStore());
          if (violations.length > 0) throw new Error(violations.join("\n"));
        }),
        { numRuns: RUNS, interruptAfterTimeLimit: BUDGET_MS },
      );
      console.log(
        `[properties] live (${name}) / prefix of one execution: ${result.numRuns} examples in ${((performance.now() - started) / 1000).toFixed(1)} s, seed ${result.seed}; ${coverage.executions} executions, ${coverage.liveReads} remote reads of live bytes, ${coverage.lost} bodies that errored`,
      );
      if (!result.failed && result.interrupted)
        throw new Error(`the time budget ran out after ${result.numRuns} of ${RUNS} examples`);
      expect(result.failed, fc.defaultReportMessage(result) ?? "").toBe(false);
    },
    BUDGET_MS + 120_000,
  );
});
