// The fault harness: random scenarios (callers, bodies, aborts, upstream behaviour, store faults) and the invariants of SPEC.md.
import fc from "fast-check";
import type { ForgetOptions } from "../../src/engine.ts";
import type { IdempotencyEvent } from "../../src/options.ts";
import type { IdempotencyStore } from "../../src/store.ts";
import {
  type ChaosPlan,
  type ChaosStore,
  chaosStore,
  type Fault,
  type LogEntry,
  OPS,
} from "../fixtures/chaos-store.ts";
import { FACE_NAMES, FACES, type Face, type FaceName, type RouteKind } from "./faces.ts";
import { withoutKnownDefects } from "./known.ts";

/** Timings of every scenario, in ms: short so an example runs in about a second. */
export const T = { leaseMs: 300, storeTimeoutMs: 60, waitTimeoutMs: 1000, maxBodyBytes: 16_384, marginMs: 1500 };

/**
 * The watchdog's slack over a scenario's own bounds, for a loaded 2-core CI machine: each bound is multiplied by
 * PROPERTY_SLACK (default 2) and SLACK_MS is added. Past it the harness stops waiting and records (d).
 */
const SLACK = Math.max(1, Number(process.env.PROPERTY_SLACK ?? 2));
const SLACK_MS = 2000;
/** The harness's own bounded waits after the calls: delayed store calls landing, routes ending (see runScenario). */
const LAND_MS = 5000;
const ROUTE_END_MS = 3000;
/** Rounds of waiting for the routes to end and the leases to expire, while routes still start (see runScenario). */
const QUIET_ROUNDS = 3;

/** What one scenario may take, in ms, derived from its timings; past each bound the watchdog stops waiting. */
export function scenarioBounds(s: Scenario): { callMs: number; callsMs: number; stepMs: number; totalMs: number } {
  const maxUpstream = Math.max(...[...s.upstream, DEFAULT_UPSTREAM].map((p) => p.delayMs + p.chunks * p.chunkDelayMs));
  // Invariant (d)'s bound for one call.
  const callMs = T.waitTimeoutMs + 2 * T.storeTimeoutMs + maxUpstream + T.marginMs;
  const lastStart = Math.max(0, ...s.callers.map((c) => c.startMs), ...(s.forgets ?? []).map((f) => f.atMs));
  const callsMs = Math.round(SLACK * (lastStart + callMs) + SLACK_MS);
  // One of the harness's own calls after the callers settled (the durable check, a store-key probe, a close).
  const stepMs = Math.round(SLACK * callMs + SLACK_MS);
  // Calls, aborted callers settling, the durable check, store calls landing, routes ending, leases expiring,
  // the store-key probes and closing: a backstop for anything the bounded steps miss.
  const totalMs = callsMs + stepMs * 4 + LAND_MS + QUIET_ROUNDS * (ROUTE_END_MS + T.leaseMs + 250) + SLACK_MS;
  return { callMs, callsMs, stepMs, totalMs };
}

/** What the harness let pass or cut short in this process, for the suite's log line. */
export const stats = {
  /** Durable checks whose violation was dropped: a store call answered after storeTimeoutMs, or a heartbeat ran late. */
  durableExcused: 0,
  /** Scenarios the watchdog stopped. */
  hung: 0,
};

type Settled<X> = { ok: true; value: X } | { ok: false };
/** `p`, or `{ ok: false }` once `ms` passed first (the promise goes on, unwatched). */
function within<X>(p: Promise<X>, ms: number): Promise<Settled<X>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<Settled<X>>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false }), ms);
  });
  return Promise.race([p.then((value): Settled<X> => ({ ok: true, value })), late]).finally(() => clearTimeout(timer));
}

/**
 * What a running scenario still waits for (named, with its phase) and how to stop it: the watchdog's view. A
 * scenario that never settles is then a (d) violation naming what hung, with its seed and counterexample,
 * instead of a test runner's timeout.
 */
class Watch {
  readonly out: Violation[] = [];
  readonly t0 = performance.now();
  /** Where the scenario is, for a report made by the backstop. */
  stage = "starting its faces";
  private readonly pending = new Map<string, { what: string; since: number }>();
  private readonly teardown: { label: string; run: () => Promise<unknown> | unknown; last: boolean }[] = [];
  private stopping: Promise<string[]> | undefined;
  private end!: () => void;
  /** Resolves when the scenario is over (settled or stopped): waits of its routes that never end, end on it. */
  readonly over = new Promise<void>((resolve) => {
    this.end = resolve;
  });
  v = (inv: Invariant, msg: string): void => {
    this.out.push({ inv, msg });
  };
  set(label: string, what: string): void {
    const since = this.pending.get(label)?.since ?? performance.now();
    this.pending.set(label, { what, since });
  }
  done(label: string): void {
    this.pending.delete(label);
  }
  describe(): string {
    const now = performance.now();
    const list = [...this.pending].map(([label, p]) => `${label}: ${p.what} (for ${Math.round(now - p.since)} ms)`);
    return list.length === 0 ? "nothing the harness tracks" : list.join("; ");
  }
  /** Runs at the end, or when the backstop gives up on the scenario, once and bounded; `last` after the others. */
  onTeardown(label: string, run: () => Promise<unknown> | unknown, last = false): void {
    this.teardown.push({ label, run, last });
  }
  /** Runs every teardown (each bounded by `ms`); answers the labels of those that did not finish. */
  stop(ms: number): Promise<string[]> {
    this.stopping ??= (async () => {
      this.end();
      const run = async (list: typeof this.teardown) => {
        const late = await Promise.all(
          list.map(async (t) => {
            const r = await within(
              Promise.resolve()
                .then(t.run)
                .catch(() => {}),
              ms,
            );
            return r.ok ? undefined : t.label;
          }),
        );
        return late.filter((x): x is string => x !== undefined);
      };
      const first = await run(this.teardown.filter((t) => !t.last));
      return [...first, ...(await run(this.teardown.filter((t) => t.last)))];
    })();
    return this.stopping;
  }
}

export type Invariant = "a" | "b" | "c" | "d" | "e" | "f" | "lifecycle" | "durable";
export const INVARIANTS: Record<Invariant, string> = {
  a: "at most one upstream execution per key while a lease is live (unless fail-open)",
  b: "every caller gets the leader's exact bytes and status, or a documented error",
  c: "no unhandled rejection",
  d: "every call settles within waitTimeoutMs + 2×storeTimeoutMs + upstream time",
  e: "no lease outlives its flight by more than leaseMs",
  f: "no Set-Cookie crosses scopes; anonymous and custom-scope joiners/replays get none",
  lifecycle: "every lease taken is committed or released; no heartbeat outlives its call",
  durable: "durable before delivered: once a caller's body ended, another process replays it",
};

type Cred = "anon" | "alice" | "bob";
type BodyKind = "json" | "binary" | "stream" | "deep" | "oversize";
type Abort = { kind: "none" } | { kind: "before" } | { kind: "after"; ms: number } | { kind: "midStream" };
interface CallerPlan {
  proc: number;
  key: number;
  variant: number;
  cred: Cred;
  startMs: number;
  abort: Abort;
  /** Reads the whole body; or scribbles over each chunk after copying it; or cancels the body after one chunk. */
  read: "text" | "mutate" | "cancel";
}
interface UpstreamPlan {
  kind: RouteKind;
  status: number;
  delayMs: number;
  chunks: number;
  chunkDelayMs: number;
  setCookie: boolean;
  big: boolean;
  /** Answers as an event stream (text/event-stream). */
  sse?: boolean;
}
/** A `forget(key)` made by a process at `atMs` (scoped like the caller with that credential). */
interface ForgetPlan {
  proc: number;
  key: number;
  cred: Cred;
  atMs: number;
  force: boolean;
}
export interface Scenario {
  face: FaceName;
  onStoreError: "open" | "closed";
  scopeMode: "default" | "custom";
  /** Body kind per key and variant: bodies[key][variant]. */
  bodies: BodyKind[][];
  /** One chaos plan per process (each process is its own wrapper over the shared store). */
  plans: ChaosPlan[];
  callers: CallerPlan[];
  /** Behaviour of the upstream's successive executions; past the end: 200 with a Set-Cookie. */
  upstream: UpstreamPlan[];
  /** Optional forget() calls made while the callers run. */
  forgets?: ForgetPlan[];
}

const fault: fc.Arbitrary<Fault> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Fault>({ kind: "pass" }) },
  fc.record({ kind: fc.constant("delay" as const), ms: fc.integer({ min: 1, max: 40 }) }),
  fc.constant<Fault>({ kind: "fail" }),
  fc.constant<Fault>({ kind: "hang" }),
  fc.record({ kind: fc.constant("late" as const), ms: fc.integer({ min: 80, max: 250 }) }),
);
/** Faults at any call of a scenario (a renew at the 20th beat, the 9th acquire of a waiter), not only the first few. */
const faults = fc.sparseArray(fault, { maxLength: 24, maxNumElements: 4 });
const plan: fc.Arbitrary<ChaosPlan> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<ChaosPlan>({}) },
  fc.record(Object.fromEntries(OPS.map((op) => [op, faults])) as Record<(typeof OPS)[number], typeof faults>, {
    requiredKeys: [],
  }) as fc.Arbitrary<ChaosPlan>,
);
/** Only slow (never failing) commits: a commit that lands a little later must still land before the body ends. */
const slowCommits: fc.Arbitrary<ChaosPlan> = fc.record({
  commit: fc.array(
    fc.record({ kind: fc.constant("delay" as const), ms: fc.integer({ min: 1, max: T.storeTimeoutMs - 20 }) }),
    { minLength: 1, maxLength: 3 },
  ),
});
const abort: fc.Arbitrary<Abort> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<Abort>({ kind: "none" }) },
  fc.constant<Abort>({ kind: "before" }),
  fc.record({ kind: fc.constant("after" as const), ms: fc.integer({ min: 0, max: 300 }) }),
  fc.constant<Abort>({ kind: "midStream" }),
);
/** The route's behaviours on one execution, among those the face can show. */
const upstreamPlan = (kinds: readonly RouteKind[]): fc.Arbitrary<UpstreamPlan> =>
  fc.record({
    kind: fc.oneof(
      { weight: 6, arbitrary: fc.constant<RouteKind>("ok") },
      fc.constantFrom(...kinds.filter((k) => k !== "ok")),
    ),
    status: fc.constantFrom(200, 201, 404, 500, 429),
    // Sometimes longer than leaseMs: the heartbeat must keep the lease.
    delayMs: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 150 }) }, fc.integer({ min: 300, max: 700 })),
    chunks: fc.integer({ min: 1, max: 3 }),
    chunkDelayMs: fc.integer({ min: 0, max: 50 }),
    setCookie: fc.boolean(),
    big: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, fc.constant(true)),
    sse: fc.boolean(),
  });
const bodyKind = fc.constantFrom<BodyKind>("json", "binary", "stream", "deep", "oversize");

/** Whole scenarios; `options` narrows them for targeted properties. */
export function scenarioArb(
  options: { chaos?: boolean; maxCallers?: number; avoid?: Avoid[]; faces?: readonly FaceName[] } = {},
): fc.Arbitrary<Scenario> {
  const procs = fc.integer({ min: 1, max: 3 });
  const avoid = new Set(options.avoid ?? []);
  const faces = options.faces ?? FACE_NAMES;
  const arb = fc.tuple(procs, fc.constantFrom(...faces)).chain(([n, face]) =>
    fc.record({
      face: fc.constant(face),
      onStoreError: fc.constantFrom("open" as const, "closed" as const),
      scopeMode: fc.constantFrom("default" as const, "custom" as const),
      bodies: fc.array(fc.array(bodyKind, { minLength: 2, maxLength: 2 }), { minLength: 2, maxLength: 2 }),
      plans: fc.array(options.chaos === false ? slowCommits : plan, { minLength: n, maxLength: n }),
      callers: fc.array(
        fc.record({
          proc: fc.integer({ min: 0, max: n - 1 }),
          // Biased towards one key and one scope: contention (joins, waits, takeovers) is where bugs live.
          key: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.constant(1)),
          variant: fc.integer({ min: 0, max: 1 }),
          cred: fc.oneof(
            { weight: 3, arbitrary: fc.constant<Cred>("alice") },
            fc.constant<Cred>("anon"),
            fc.constant<Cred>("bob"),
          ),
          // Mostly together (joins, waits); sometimes after the first call ended (replays, takeovers).
          startMs: fc.oneof(
            { weight: 3, arbitrary: fc.integer({ min: 0, max: 120 }) },
            fc.integer({ min: 120, max: 600 }),
          ),
          abort,
          read: fc.constantFrom("text" as const, "mutate" as const, "cancel" as const),
        }),
        { minLength: 1, maxLength: options.maxCallers ?? 6 },
      ),
      upstream: fc.array(upstreamPlan(FACES[face].kinds), { maxLength: 5 }),
      forgets: fc.array(
        fc.record({
          proc: fc.integer({ min: 0, max: n - 1 }),
          key: fc.constant(0),
          cred: fc.constantFrom<Cred>("alice", "anon"),
          atMs: fc.integer({ min: 0, max: 700 }),
          // Never forced: a forced forget removes a live lease on purpose, and a second execution is then expected.
          force: fc.constant(false),
        }),
        { maxLength: 2 },
      ),
    }),
  );
  return avoid.size === 0 ? arb : arb.map((s) => neutralize(s, avoid));
}

/** Behaviours a hunt for new failures can leave out, once their failures are known. */
export type Avoid = "nonResponse" | "big" | "late" | "subscribe" | "setCookie" | "waiterFail" | "abortBefore";

function neutralize(s: Scenario, avoid: Set<Avoid>): Scenario {
  const faultOk = (f: Fault) =>
    !(avoid.has("late") && (f.kind === "late" || (f.kind === "delay" && f.ms >= T.storeTimeoutMs)));
  return {
    ...s,
    plans: s.plans.map((p) => {
      const out: ChaosPlan = {};
      for (const [op, list] of Object.entries(p) as [keyof ChaosPlan, Fault[]][]) {
        if (op === "subscribe" && avoid.has("subscribe")) continue;
        // A waiter's failing acquire executes (known): keep acquire faults only on the first acquire.
        const kept = op === "acquire" && avoid.has("waiterFail") ? list.slice(0, 1) : list;
        out[op] = kept.map((f) => (faultOk(f) ? f : { kind: "pass" }));
      }
      return out;
    }),
    callers: s.callers.map((c) =>
      avoid.has("abortBefore") && c.abort.kind === "before" ? { ...c, abort: { kind: "none" } } : c,
    ),
    upstream: s.upstream.map((u) => ({
      ...u,
      kind: avoid.has("nonResponse") && (u.kind === "nonResponse" || u.kind === "undefined") ? "ok" : u.kind,
      big: avoid.has("big") ? false : u.big,
      setCookie: avoid.has("setCookie") ? false : u.setCookie,
    })),
  };
}

const DEFAULT_UPSTREAM: UpstreamPlan = {
  kind: "ok",
  status: 200,
  delayMs: 20,
  chunks: 1,
  chunkDelayMs: 0,
  setCookie: true,
  big: false,
};

const enc = new TextEncoder();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const abortable = (ms: number, signal: AbortSignal | null | undefined): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });

/** A caller's body; odd callers write the same JSON with other key order and spacing (same fingerprint, SPEC). */
function bodyBytes(kind: BodyKind, key: number, variant: number, id = 0): Uint8Array {
  switch (kind) {
    case "json":
    case "stream":
      return enc.encode(
        id % 2 === 0
          ? JSON.stringify({ b: variant, key, text: "héllo" })
          : `{ "text" : "h\u00e9llo", "key": ${key},\n "b": ${variant} }`,
      );
    case "binary":
      return new Uint8Array([0xff, 0x00, 0xfe, variant, key, 0x80]);
    case "deep":
      return enc.encode(`${"[".repeat(3000)}${variant}${"]".repeat(3000)}`);
    case "oversize":
      return new Uint8Array(T.maxBodyBytes + 1000).fill(variant + 1);
  }
}

interface Exec {
  n: number;
  group: string;
  caller: number;
  plan: UpstreamPlan;
  start: number;
  /** When the upstream answered (or threw): the lease must be live from start to here. */
  headAt?: number;
  /** When its body ended, failed or was cancelled: the route is busy (and its lease renewed) until then. */
  endAt?: number;
  reqBody?: Uint8Array;
  body?: Uint8Array;
  setCookie?: string;
}
interface Outcome {
  caller: number;
  startedAt: number;
  settledAt?: number;
  response?: { status: number; headers: Headers; bytes: Uint8Array };
  error?: unknown;
  stage?: "call" | "body";
  aborted: boolean;
  /** The caller cancelled its body after one chunk: its bytes are a prefix. */
  cancelled?: boolean;
}
export interface Violation {
  inv: Invariant;
  msg: string;
}

/** Where each scenario's store lives: a fresh inner store per example, and a cleanup. */
export interface StoreEnv {
  name: string;
  make(): {
    store: IdempotencyStore;
    /** The same store seen from another process (its own connection), for the durability check. */
    other: IdempotencyStore;
    namespace: string;
    cleanup(): Promise<void>;
  };
}

const unhandled: unknown[] = [];
let listening = false;
/** Collects unhandled rejections and uncaught exceptions for invariant (c); call once per file. */
export function listenForUnhandled(): () => void {
  const onRejection = (reason: unknown) => unhandled.push(reason);
  const onException = (error: unknown) => unhandled.push(error);
  if (!listening) {
    process.on("unhandledRejection", onRejection);
    process.on("uncaughtException", onException);
    listening = true;
  }
  return () => {
    process.off("unhandledRejection", onRejection);
    process.off("uncaughtException", onException);
    listening = false;
  };
}

const describeError = (e: unknown): string =>
  e instanceof Error || e instanceof DOMException ? `${e.name}: ${e.message}` : String(e);
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);
const storable = (p: UpstreamPlan, size: number): boolean =>
  p.kind === "ok" && p.status < 500 && p.status !== 408 && p.status !== 429 && size <= T.maxBodyBytes;

/**
 * Runs one scenario and returns every invariant it broke. It never hangs: past its bounds (scenarioBounds) the
 * watchdog records (d) naming what is still pending, aborts the callers, closes the servers and returns.
 */
export async function runScenario(s: Scenario, env: StoreEnv): Promise<Violation[]> {
  const bounds = scenarioBounds(s);
  const watch = new Watch();
  const ran = await within(scenarioBody(s, env, watch, bounds), bounds.totalMs);
  if (ran.ok) return ran.value;
  stats.hung++;
  // The backstop: a wait the bounded steps below do not cover.
  watch.v(
    "d",
    `the scenario (${s.face}) still ran ${bounds.totalMs} ms after it started, while ${watch.stage}; still pending: ${watch.describe()}`,
  );
  const left = await watch.stop(bounds.stepMs);
  if (left.length > 0) watch.v("d", `teardown did not finish in ${bounds.stepMs} ms: ${left.join(", ")}`);
  // A copy: the abandoned run may still add to `out`.
  return [...watch.out];
}

async function scenarioBody(
  s: Scenario,
  env: StoreEnv,
  watch: Watch,
  bounds: ReturnType<typeof scenarioBounds>,
): Promise<Violation[]> {
  const { store: inner, other, namespace, cleanup } = env.make();
  watch.onTeardown("the store's cleanup", cleanup, true);
  const out = watch.out;
  const v = watch.v;
  const unhandledBefore = unhandled.length;
  const execs: Exec[] = [];
  const knownErrors = new Set<unknown>();
  const callerBody = (c: CallerPlan) =>
    bodyBytes(s.bodies[c.key]?.[c.variant] ?? "json", c.key, c.variant, s.callers.indexOf(c));

  const upstream = async (req: Request): Promise<Response> => {
    const n = execs.length;
    const caller = Number(req.headers.get("x-caller"));
    const plan = s.upstream[n] ?? DEFAULT_UPSTREAM;
    const exec: Exec = {
      n,
      group: req.headers.get("x-group") ?? "?",
      caller,
      plan,
      start: performance.now(),
    };
    execs.push(exec);
    exec.reqBody = new Uint8Array(await req.arrayBuffer());
    try {
      await abortable(plan.delayMs, req.signal);
    } finally {
      exec.headAt = performance.now();
    }
    if (plan.kind === "throws") {
      const error = new Error(`upstream execution ${n} threw`);
      knownErrors.add(error);
      throw error;
    }
    if (plan.kind === "nonResponse") return { status: 200, body: "not a Response" } as unknown as Response;
    if (plan.kind === "undefined") return undefined as unknown as Response;
    const text = `exec=${n};caller=${caller};${plan.big ? "x".repeat(T.maxBodyBytes + 100) : "payload"}`;
    const body = new Uint8Array([...enc.encode(text), 0x00, 0xff, n & 0xff]);
    exec.body = body;
    const headers = new Headers({
      "content-type": plan.sse ? "text/event-stream" : "application/octet-stream",
      "x-exec": String(n),
      "x-kind": plan.kind,
    });
    if (plan.setCookie) {
      exec.setCookie = `sid=exec${n}`;
      headers.set("set-cookie", exec.setCookie);
    }
    const size = Math.ceil(body.length / plan.chunks);
    let i = 0;
    const signal = req.signal;
    const ended = () => {
      exec.endAt ??= performance.now();
    };
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          if (i > 0) await abortable(plan.chunkDelayMs, signal);
        } catch (reason) {
          ended();
          controller.error(reason);
          return;
        }
        if (i === plan.chunks && plan.kind === "noEnd") {
          // Every chunk written, and no end: it stops only when its reader goes away (cancel), or the scenario ends.
          await watch.over;
          return;
        }
        if ((plan.kind === "midError" || plan.kind === "destroy") && i === plan.chunks - 1) {
          const error = new Error(`upstream execution ${n} body failed midway`);
          knownErrors.add(error);
          ended();
          controller.error(error);
          return;
        }
        controller.enqueue(body.slice(i * size, (i + 1) * size));
        if (++i >= plan.chunks && plan.kind !== "noEnd") {
          ended();
          controller.close();
        }
      },
      cancel: ended,
    });
    return new Response([204, 304].includes(plan.status) ? null : stream, { status: plan.status, headers });
  };

  const scope = s.scopeMode === "custom" ? (r: Request) => r.headers.get("authorization") ?? "nobody" : undefined;
  const logs: LogEntry[][] = [];
  const chaos: ChaosStore[] = [];
  const faces = await Promise.all(
    s.plans.map(async (p, proc) => {
      const log: LogEntry[] = [];
      logs.push(log);
      const store = chaosStore(inner, p, log);
      chaos.push(store);
      const face = await makeFace(s.face, s, store, namespace, scope, upstream);
      watch.onTeardown(`closing the ${s.face} face of proc ${proc}`, () => face.close());
      return face;
    }),
  );

  const outcomes: Outcome[] = [];
  let firstDurable: Promise<void> | undefined;
  /** What the durable check found: reported once the store calls are known to have answered in time (below). */
  const durable: Violation[] = [];
  // Only checked where every store call answers in time (a failed commit cannot be durable) and nothing is
  // forgotten (a forget removes the record on purpose).
  const chaosFree =
    (s.forgets ?? []).length === 0 &&
    s.plans.every((p) =>
      Object.values(p).every((list) =>
        list.every((f) => f.kind === "pass" || (f.kind === "delay" && f.ms < T.storeTimeoutMs - 15)),
      ),
    );
  const t0 = performance.now();

  /** Per caller still running: how the watchdog stops it (aborts its signal, cancels its body). */
  const stoppers = new Map<number, () => void>();
  /** Callers the watchdog gave up on: their (d) is recorded, their outcome is not checked further. */
  const hung = new Set<number>();
  const runCaller = async (c: CallerPlan, id: number): Promise<void> => {
    const label = `caller ${id} (${s.face}, proc ${c.proc}, ${c.cred}, k${c.key}, variant ${c.variant}, abort ${c.abort.kind}, read ${c.read})`;
    watch.set(label, `not started (starts at ${c.startMs} ms)`);
    await sleep(c.startMs);
    const o: Outcome = { caller: id, startedAt: performance.now(), aborted: false };
    outcomes.push(o);
    const ctrl = new AbortController();
    const reason = new DOMException(`caller ${id} aborted`, "AbortError");
    const abortNow = () => {
      o.aborted = true;
      ctrl.abort(reason);
    };
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    stoppers.set(id, () => {
      const stop = new DOMException(`caller ${id} stopped by the harness's watchdog`, "AbortError");
      ctrl.abort(stop);
      void reader?.cancel(stop).catch(() => {});
    });
    if (c.abort.kind === "before") abortNow();
    if (c.abort.kind === "after") setTimeout(abortNow, c.abort.ms);
    watch.set(label, "waiting for its response");
    let res: Response;
    try {
      res = await (faces[c.proc] as (typeof faces)[number]).send(c, id, ctrl.signal, callerBody(c));
    } catch (error) {
      o.error = error;
      o.stage = "call";
      o.settledAt = performance.now();
      watch.done(label);
      stoppers.delete(id);
      return;
    }
    const head = `status ${res.status}, execution ${res.headers.get("x-exec") ?? "none"} (route ${res.headers.get("x-kind") ?? "none"})`;
    try {
      const chunks: Uint8Array[] = [];
      watch.set(label, `reading its body (${head}): no chunk yet`);
      if (res.body) {
        const body = res.body.getReader();
        reader = body;
        // A route that never ends: its client reads every byte the route wrote, then goes away.
        const noEnd = res.headers.get("x-kind") === "noEnd" ? execs[Number(res.headers.get("x-exec"))] : undefined;
        let got = 0;
        // Node 20's fetch can leave a read pending for good once its signal aborts mid-body (undici, no idemfetch
        // involved): a client that aborts over HTTP drops the body itself, and its call ends as aborted.
        const http = FACES[s.face].http;
        if (http) ctrl.signal.addEventListener("abort", () => void body.cancel(reason).catch(() => {}));
        for (;;) {
          const { done, value } = await body.read();
          if (done && http && o.aborted) throw reason;
          if (done) break;
          chunks.push(new Uint8Array(value));
          got += value.length;
          watch.set(label, `reading its body (${head}): ${chunks.length} chunk(s), ${got} bytes so far`);
          // Another caller's bytes must not change when this one scribbles over its own chunk.
          if (c.read === "mutate") value.fill(0xee);
          if (c.abort.kind === "midStream" && !o.aborted) abortNow();
          if (c.read === "cancel" || (noEnd?.body && got >= noEnd.body.length)) {
            o.cancelled = true;
            await body.cancel("this caller stopped reading");
            break;
          }
        }
      }
      const bytes = new Uint8Array(chunks.reduce((n, ch) => n + ch.length, 0));
      let at = 0;
      for (const ch of chunks) {
        bytes.set(ch, at);
        at += ch.length;
      }
      o.response = { status: res.status, headers: res.headers, bytes };
    } catch (error) {
      o.error = error;
      o.stage = "body";
    }
    o.settledAt = performance.now();
    watch.done(label);
    stoppers.delete(id);
    const execHeader = res.headers.get("x-exec");
    const exec = execHeader === null ? undefined : execs[Number(execHeader)];
    if (
      chaosFree &&
      !o.cancelled &&
      firstDurable === undefined &&
      o.response &&
      exec &&
      storable(exec.plan, exec.body?.length ?? 0)
    ) {
      const note = (inv: Invariant, msg: string) => durable.push({ inv, msg });
      firstDurable = checkDurable(s, other, namespace, scope, c, callerBody(c), o.response.bytes, note, watch);
    }
  };

  const forgets = (s.forgets ?? []).map(async (f, i) => {
    const label = `forget ${i} (${s.face}, proc ${f.proc}, ${f.cred}, k${f.key})`;
    watch.set(label, `not started (starts at ${f.atMs} ms)`);
    await sleep(f.atMs);
    watch.set(label, "waiting for its answer");
    const face = faces[f.proc];
    if (!face) return watch.done(label);
    const credential = f.cred === "anon" ? undefined : `Bearer ${f.cred}`;
    const options: ForgetOptions =
      s.scopeMode === "custom"
        ? { scope: credential ?? "nobody", force: f.force }
        : { headers: credential ? { authorization: credential } : {}, force: f.force };
    const at = performance.now();
    // A forget that answered after storeTimeoutMs (a loaded machine, no fault) rightly rejects too.
    const faulted = () =>
      (s.plans[f.proc]?.forget ?? []).some((x) => x && x.kind !== "pass") ||
      (logs[f.proc] ?? []).some(
        (x) =>
          x.op === "forget" &&
          x.askedAt >= at - 1 &&
          (x.answeredAt ?? Number.POSITIVE_INFINITY) - x.askedAt >= T.storeTimeoutMs - 15,
      );
    try {
      const result = await face.forget(`k${f.key}`, options);
      if (!["forgotten", "absent", "in-progress"].includes(result)) v("b", `forget ${i} answered ${String(result)}`);
    } catch (error) {
      if (!faulted()) v("b", `forget ${i} rejected with ${describeError(error)} though no forget was faulted`);
    }
    const took = performance.now() - at;
    if (took > T.storeTimeoutMs + T.marginMs) v("d", `forget ${i} settled after ${Math.round(took)} ms`);
    watch.done(label);
  });
  const endOf = (e: Exec) =>
    e.endAt ?? (e.body === undefined || [204, 304].includes(e.plan.status) ? e.headAt : undefined);
  /** What else was going on, for the watchdog's report: routes still running, store calls never answered. */
  const context = (): string => {
    const routes = execs
      .filter((e) => endOf(e) === undefined)
      .map((e) => `execution ${e.n} (${e.group}, route ${e.plan.kind}, for caller ${e.caller}) still running`);
    const calls = logs.flatMap((log, proc) =>
      log
        .filter((x) => x.answeredAt === undefined && x.op !== "subscribe")
        .map((x) => `proc ${proc}'s ${x.op} #${x.seq} unanswered (fault ${x.fault.kind})`),
    );
    return [...routes, ...calls].join("; ") || "no route running, no store call unanswered";
  };

  watch.stage = "running its callers";
  const all = Promise.all([...s.callers.map(runCaller), ...forgets]);
  if (!(await within(all, bounds.callsMs)).ok) {
    // The watchdog: name what hangs, then stop it (abort every caller, cancel its body) so the scenario ends.
    v(
      "d",
      `hung: not settled ${bounds.callsMs} ms after the scenario started (last start + waitTimeoutMs + 2×storeTimeoutMs + upstream + marginMs = ${Math.round((bounds.callsMs - SLACK_MS) / SLACK)} ms, ×${SLACK} + ${SLACK_MS} ms of slack); still pending: ${watch.describe()}; meanwhile: ${context()}`,
    );
    stats.hung++;
    for (const [id, stop] of stoppers) {
      hung.add(id);
      stop();
    }
    watch.stage = "waiting for the callers the watchdog aborted";
    if (!(await within(all, bounds.stepMs)).ok) {
      v("d", `still pending ${bounds.stepMs} ms after the watchdog aborted every caller: ${watch.describe()}`);
    }
  }
  if (firstDurable) {
    watch.stage = "checking durability from another process";
    if (!(await within(firstDurable, bounds.stepMs)).ok) {
      v(
        "d",
        `the durable check (a second process replaying) did not settle in ${bounds.stepMs} ms: ${watch.describe()}`,
      );
    }
  }
  const lastSettled = Math.max(t0, ...outcomes.map((o) => o.settledAt ?? 0));
  // A store call that lands late must still be checked: wait for every one, and say so when one never lands.
  watch.stage = "waiting for delayed store calls to land";
  const landed = await within(Promise.all(chaos.map((c) => c.settled())), LAND_MS);
  if (!landed.ok) v("lifecycle", `a delayed store call had still not landed ${LAND_MS} ms after every call settled`);
  if (durable.length > 0) {
    // Durability is promised for store calls that answer in time. On a loaded machine a plain call (no fault) can
    // take longer than storeTimeoutMs: the engine then rightly goes on without it, and there is nothing to check.
    // Likewise a lease lost because its heartbeat ran late (an event loop stalled about leaseMs): its commit
    // answers false, and the protocol only asks that the body end after the commit settled.
    const entries = logs.flat().filter((x) => x.op !== "subscribe");
    const slow = entries.filter((x) => (x.answeredAt ?? Number.POSITIVE_INFINITY) - x.askedAt >= T.storeTimeoutMs - 15);
    const beats = (token: string | undefined) =>
      entries
        .filter((x) => x.token === token && (x.op === "acquire" || x.op === "renew") && x.result !== false)
        .map((x) => x.performedAt ?? x.askedAt);
    const gapOf = (x: LogEntry) => {
      const times = [...beats(x.token), x.performedAt ?? x.askedAt].sort((a, b) => a - b);
      return Math.max(0, ...times.slice(1).map((at, i) => at - (times[i] as number)));
    };
    const lost = entries.filter((x) => x.op === "commit" && x.result === false && gapOf(x) >= T.leaseMs - 50);
    const commits = entries
      .filter((x) => x.op === "commit")
      .map(
        (x) =>
          `${String(x.result)} in ${Math.round((x.answeredAt ?? Number.NaN) - x.askedAt)} ms (longest gap between its lease's acquire/renews ${Math.round(gapOf(x))} ms)`,
      );
    if (slow.length === 0 && lost.length === 0) {
      for (const x of durable) v(x.inv, `${x.msg} (commits: ${commits.join(", ") || "none"})`);
    } else stats.durableExcused++;
  }
  // A caller that cancelled its body settled, but its route may stream on (the engine reads on for the record):
  // wait (boundedly) for every route to end, and measure lease lifetimes from the last moment anything ran.
  // A server face follows no client signal: a route may even start after its caller left (the engine took the
  // lease once the request arrived), so look again after each wait until nothing new ran.
  const busy = () => Math.max(lastSettled, ...execs.map((e) => endOf(e) ?? e.start));
  let lastBusy = lastSettled;
  for (let round = 0; round < QUIET_ROUNDS; round++) {
    watch.stage = "waiting for the routes to end";
    for (let waited = 0; waited < ROUTE_END_MS && execs.some((e) => endOf(e) === undefined); waited += 20)
      await sleep(20);
    const now = busy();
    if (round > 0 && now <= lastBusy) break;
    lastBusy = now;
    watch.stage = "waiting for leases to expire";
    await sleep(Math.max(0, lastBusy + T.leaseMs + 250 - performance.now()));
  }
  if (unhandled.length > unhandledBefore) {
    v("c", `unhandled: ${unhandled.slice(unhandledBefore).map(describeError).join("; ")}`);
  }

  watch.stage = "working out the store keys";
  const storeKeys = new Map<string, string>();
  for (const c of s.callers) {
    const g = `${c.cred}|k${c.key}`;
    if (storeKeys.has(g)) continue;
    const found = await within(storeKeyOf(s, namespace, scope, c, watch), bounds.stepMs);
    if (found.ok) storeKeys.set(g, found.value);
    else
      v(
        "d",
        `working out the store key of ${g} (one call against a store that fails) did not settle in ${bounds.stepMs} ms`,
      );
  }
  watch.stage = "checking outcomes";
  for (const o of outcomes) {
    const c = s.callers[o.caller] as CallerPlan;
    const who = `caller ${o.caller} (${c.cred}, k${c.key}, variant ${c.variant}, ${s.bodies[c.key]?.[c.variant]} body, proc ${c.proc}, abort ${c.abort.kind})`;
    if (hung.has(o.caller)) continue;
    const took = (o.settledAt ?? Number.POSITIVE_INFINITY) - o.startedAt;
    if (took > bounds.callMs) v("d", `${who} settled after ${Math.round(took)} ms (bound ${bounds.callMs})`);
    if (o.settledAt === undefined) continue;
    checkOutcome(s, c, o, who, execs, knownErrors, callerBody(c), v);
  }
  for (const e of execs) {
    const leader = s.callers[e.caller];
    // fetch() with an aborted signal rejects without sending. The server face follows no client signal
    // (docs/protocol.md "Aborts": the retry of a client that went away wants the result), so there it runs.
    if (leader?.abort.kind === "before" && FACES[s.face].sendsAborted === false) {
      v("a", `execution ${e.n} ran for caller ${e.caller}, which had aborted before the call`);
    }
    if (leader && e.reqBody && !sameBytes(e.reqBody, callerBody(leader))) {
      v(
        "b",
        `execution ${e.n} received ${e.reqBody.length} body bytes, not caller ${e.caller}'s ${callerBody(leader).length}`,
      );
    }
  }
  // SPEC flow 4: a waiter (its process saw the lease as pending during its call) retries on store errors
  // until waitTimeoutMs; it never answers 503.
  for (const o of outcomes) {
    const c = s.callers[o.caller] as CallerPlan;
    if (o.response?.status !== 503 || o.settledAt === undefined) continue;
    const key = storeKeys.get(`${c.cred}|k${c.key}`);
    const saw = logs[c.proc]?.some(
      (x) =>
        x.op === "acquire" &&
        x.storeKey === key &&
        x.result === "pending" &&
        x.askedAt >= o.startedAt &&
        (x.answeredAt ?? 0) <= (o.settledAt as number),
    );
    if (saw) v("b", `caller ${o.caller} waited on another owner's lease, then answered 503 on a store error`);
  }
  checkLeases(s, logs, execs, lastBusy, storeKeys, v);
  watch.stage = "probing the leases left";
  const keys = new Set(logs.flat().map((e) => e.storeKey));
  for (const k of keys) {
    const probe = await within(
      inner.acquire(k, "probe-fingerprint", 1).then(
        (found) => found.state,
        (error: unknown) => `failed: ${describeError(error)}`,
      ),
      bounds.stepMs,
    );
    if (!probe.ok) v("e", `probe of ${k.slice(0, 40)}… did not answer in ${bounds.stepMs} ms`);
    else if (probe.value === "pending")
      v("e", `a lease on ${k.slice(0, 40)}… is still live ${T.leaseMs + 250} ms after every call settled`);
    else if (probe.value.startsWith("failed")) v("e", `probe ${probe.value}`);
  }
  watch.stage = "closing";
  const left = await watch.stop(bounds.stepMs);
  if (left.length > 0) v("d", `teardown did not finish in ${bounds.stepMs} ms: ${left.join(", ")}`);
  return out;
}

/** One process: the scenario's face over its own chaos store; `call` sends one caller's request. */
async function makeFace(
  face: FaceName,
  s: Scenario,
  store: IdempotencyStore,
  namespace: string,
  scope: ((r: Request) => string) | undefined,
  upstream: (req: Request) => Promise<Response>,
  extra: { onEvent?: (e: IdempotencyEvent) => void } = {},
): Promise<
  Face & { send(c: CallerPlan, id: number, signal: AbortSignal | null, body: Uint8Array): Promise<Response> }
> {
  const options = {
    ...extra,
    namespace,
    leaseMs: T.leaseMs,
    storeTimeoutMs: T.storeTimeoutMs,
    waitTimeoutMs: T.waitTimeoutMs,
    maxBodyBytes: T.maxBodyBytes,
    onStoreError: s.onStoreError,
    logger: false as const,
    ...(scope ? { scope } : {}),
  };
  const started = await FACES[face].start({ store, options, upstream });
  const init = (c: CallerPlan, id: number, signal: AbortSignal | null, body: Uint8Array) => {
    const kind = s.bodies[c.key]?.[c.variant] ?? "json";
    const headers: Record<string, string> = {
      "idempotency-key": `k${c.key}`,
      "x-caller": String(id),
      "x-group": `${c.cred}|k${c.key}`,
      "content-type":
        kind === "json" || kind === "deep" || kind === "stream" ? "application/json" : "application/octet-stream",
    };
    if (c.cred !== "anon") headers.authorization = `Bearer ${c.cred}`;
    const streamed =
      kind === "stream"
        ? new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(body.slice(0, 5));
              controller.enqueue(body.slice(5));
              controller.close();
            },
          })
        : body;
    return { method: "POST", headers, body: streamed, signal, duplex: "half" } as RequestInit;
  };
  return {
    ...started,
    send: (c, id, signal, body) => started.call(`/orders/k${c.key}`, init(c, id, signal, body)),
  };
}

const ERROR_STATUS: Record<string, number> = {
  IDEMPOTENCY_CONFLICT: 409,
  IDEMPOTENCY_IN_PROGRESS: 409,
  IDEMPOTENCY_STORE_UNAVAILABLE: 503,
  IDEMPOTENCY_BODY_TOO_LARGE: 413,
};

function checkOutcome(
  s: Scenario,
  c: CallerPlan,
  o: Outcome,
  who: string,
  execs: Exec[],
  knownErrors: Set<unknown>,
  body: Uint8Array,
  v: (inv: Invariant, msg: string) => void,
): void {
  const mine = execs.filter((e) => e.group === `${c.cred}|k${c.key}`);
  // Over HTTP a route that failed shows as the framework's 500 before any write, or a cut connection after one.
  const http = FACES[s.face].http;
  const routeFailed = http && mine.some((x) => ["throws", "midError", "destroy", "noEnd"].includes(x.plan.kind));
  if (o.error !== undefined) {
    const e = o.error;
    const isAbort = (e instanceof DOMException || e instanceof Error) && e.name === "AbortError";
    if (isAbort && o.aborted) return;
    if (routeFailed && e instanceof TypeError) return;
    if (knownErrors.has(e) && mine.length > 0) return;
    const nonResponse = mine.some((x) => x.plan.kind === "nonResponse" || x.plan.kind === "undefined");
    if (e instanceof TypeError && nonResponse && o.stage === "call") return;
    if (e instanceof Error && e.name === "IdempotencyKeyError") return;
    v("b", `${who} rejected at ${o.stage} with ${describeError(e)}${isAbort ? " though it never aborted" : ""}`);
    return;
  }
  const r = o.response;
  if (!r) return;
  const execHeader = r.headers.get("x-exec");
  // Fastify answers a stream that fails before its first chunk with its own error reply ({statusCode, error,
  // message}: the route's status when it is an error one, else 500), keeping the headers the route set (it writes no
  // head before data): plain Fastify does the same, and the answer is not stored.
  if (routeFailed && s.face === "fastify" && isFastifyError(r.status, r.bytes)) return;
  if (execHeader === null) {
    if (routeFailed && r.status === 500) return;
    let code: string | undefined;
    try {
      code = JSON.parse(new TextDecoder().decode(r.bytes))?.error?.code;
    } catch {}
    if (code === undefined || ERROR_STATUS[code] !== r.status) {
      v("b", `${who} got status ${r.status} with an undocumented body of ${r.bytes.length} bytes`);
      return;
    }
    if (code === "IDEMPOTENCY_STORE_UNAVAILABLE" && s.onStoreError !== "closed")
      v("b", `${who} got 503 with onStoreError "open"`);
    if (code === "IDEMPOTENCY_BODY_TOO_LARGE" && body.length <= T.maxBodyBytes)
      v("b", `${who} got 413 for ${body.length} bytes`);
    const rivals = s.callers.filter((x) => x.cred === c.cred && x.key === c.key && x.variant !== c.variant);
    if (code === "IDEMPOTENCY_CONFLICT" && rivals.length === 0) {
      v("b", `${who} got 409 IDEMPOTENCY_CONFLICT though every caller of its key sent the same request`);
    }
    if (code === "IDEMPOTENCY_IN_PROGRESS" && r.headers.get("retry-after") === null)
      v("b", `${who} got 409 IN_PROGRESS without Retry-After`);
    return;
  }
  const exec = execs[Number(execHeader)];
  if (!exec) {
    v("b", `${who} got x-exec ${execHeader}, which never ran`);
    return;
  }
  const leader = s.callers[exec.caller];
  if (exec.group !== `${c.cred}|k${c.key}`) {
    v("b", `${who} got the bytes of execution ${exec.n}, made for ${exec.group} (another scope or key)`);
  }
  if (leader && leader.variant !== c.variant) {
    v(
      "b",
      `${who} got the bytes of execution ${exec.n}, whose body differed (variant ${leader.variant}): not a conflict`,
    );
  }
  if (r.status !== exec.plan.status)
    v("b", `${who} got status ${r.status}, execution ${exec.n} answered ${exec.plan.status}`);
  if (exec.body && !sameBytes(r.bytes, o.cancelled ? exec.body.subarray(0, r.bytes.length) : exec.body)) {
    const changed = r.bytes.some((x) => x === 0xee);
    v(
      "b",
      `${who} got ${r.bytes.length} bytes that differ from execution ${exec.n}'s ${exec.body.length}${changed ? " (another caller's scribbles show through: shared chunk memory)" : ""}`,
    );
  }
  const cookie = r.headers.get("set-cookie");
  const own = exec.caller === o.caller;
  if (cookie !== null) {
    if (exec.group !== `${c.cred}|k${c.key}`)
      v("f", `${who} received set-cookie "${cookie}" of another scope (${exec.group})`);
    else if (!own && c.cred === "anon")
      v("f", `${who}, anonymous, received set-cookie "${cookie}" of caller ${exec.caller}'s execution ${exec.n}`);
    else if (!own && s.scopeMode === "custom")
      v("f", `${who}, custom scope, received set-cookie "${cookie}" of caller ${exec.caller}'s execution ${exec.n}`);
  }
}

function checkLeases(
  s: Scenario,
  logs: LogEntry[][],
  execs: Exec[],
  lastBusy: number,
  storeKeys: Map<string, string>,
  v: (inv: Invariant, msg: string) => void,
): void {
  // Lifecycle: each token the store handed out is committed or released; no renew after that or after the end.
  logs.forEach((log, proc) => {
    for (const a of log) {
      if (a.op !== "acquire" || a.result !== "acquired") continue;
      const finish = log.find((e) => (e.op === "commit" || e.op === "release") && e.token === a.token);
      const late = a.fault.kind === "late" || (a.fault.kind === "delay" && a.fault.ms >= T.storeTimeoutMs);
      if (!finish) {
        v(
          "lifecycle",
          `proc ${proc}: a lease acquired ${late ? "late (after the engine gave up on acquire) " : ""}was never committed or released`,
        );
        continue;
      }
      const after = log.filter((e) => e.op === "renew" && e.token === a.token && e.askedAt > finish.askedAt + 1);
      if (after.length > 0) v("lifecycle", `proc ${proc}: ${after.length} renew(s) after the lease's ${finish.op}`);
    }
    const tail = log.filter((e) => e.op === "renew" && e.askedAt > lastBusy + T.leaseMs);
    if (tail.length > 0)
      v(
        "lifecycle",
        `proc ${proc}: ${tail.length} renew(s) more than leaseMs after every call settled and every route ended (a heartbeat outlives its call)`,
      );
  });

  // (a): label each execution by the acquire that allowed it, then check overlaps of protected executions.
  const byKey = new Map<string, Exec[]>();
  for (const e of execs) byKey.set(e.group, [...(byKey.get(e.group) ?? []), e]);
  const consumed = new Set<LogEntry>();
  for (const [g, list] of byKey) {
    const protectedOnes: Exec[] = [];
    for (const e of list) {
      const proc = s.callers[e.caller]?.proc ?? 0;
      const log = logs[proc] ?? [];
      const storeKey = storeKeys.get(g);
      const acquires = log.filter(
        (x) => x.op === "acquire" && x.storeKey === storeKey && x.askedAt <= e.start && !consumed.has(x),
      );
      // The engine's view of an acquire is its latency against storeTimeoutMs; near the deadline (a busy
      // machine) it may have gone either way, so such an acquire counts as given and as failed.
      const latency = (x: LogEntry) => (x.answeredAt ?? Number.POSITIVE_INFINITY) - x.askedAt;
      const slack = 20;
      // With onStoreError "closed" nothing runs on a failed acquire: an execution there ran on the lease it got,
      // however late the answer looked (a stalled event loop delays the engine's timeout as much as the answer).
      const got =
        acquires.find(
          (x) => x.result === "acquired" && latency(x) < T.storeTimeoutMs + slack && (x.answeredAt ?? 0) <= e.start + 1,
        ) ??
        (s.onStoreError === "closed"
          ? acquires.find((x) => x.result === "acquired" && (x.answeredAt ?? 0) <= e.start + 1)
          : undefined);
      if (got) {
        consumed.add(got);
        protectedOnes.push(e);
        continue;
      }
      const failed = acquires.find(
        (x) => x.fault.kind === "fail" || x.storeError === true || latency(x) >= T.storeTimeoutMs - slack,
      );
      if (s.onStoreError === "closed") {
        v("a", `execution ${e.n} (${g}) ran without a lease with onStoreError "closed"`);
      } else if (!failed) {
        v("a", `execution ${e.n} (${g}) ran without a lease, and no acquire of proc ${proc} failed before it`);
      } else {
        consumed.add(failed);
        const before = log.filter((x) => x.op === "acquire" && x.seq < failed.seq && x.storeKey === failed.storeKey);
        const prev = before.at(-1);
        if (
          prev?.result === "pending" &&
          prev.fingerprint === failed.fingerprint &&
          failed.askedAt - prev.askedAt < T.waitTimeoutMs
        ) {
          v(
            "a",
            `execution ${e.n} (${g}): a waiter that had seen another owner's lease executed when its next acquire failed (${failed.fault.kind})`,
          );
        }
      }
    }
    for (let i = 0; i < protectedOnes.length; i++) {
      for (let j = i + 1; j < protectedOnes.length; j++) {
        const x = protectedOnes[i] as Exec;
        const y = protectedOnes[j] as Exec;
        const xEnd = x.headAt ?? Number.POSITIVE_INFINITY;
        const renewFaults = (s.plans[s.callers[x.caller]?.proc ?? 0]?.renew ?? []).some((f) => f.kind !== "pass");
        // The heartbeat (every leaseMs/3) keeps a lease live however long the upstream takes, unless renews fail.
        if (y.start < xEnd - 1 && !renewFaults) {
          v("a", `executions ${x.n} and ${y.n} of ${g} overlapped, both holding a lease`);
        }
      }
    }
  }
}

/** The store key the engine itself derives for a caller's scope and key: one call against a store that only listens. */
async function storeKeyOf(
  s: Scenario,
  namespace: string,
  scope: ((r: Request) => string) | undefined,
  c: CallerPlan,
  watch: Watch,
): Promise<string> {
  let seen = "";
  const listening: IdempotencyStore = {
    async acquire(storeKey) {
      seen = storeKey;
      throw new Error("only listening");
    },
    commit: async () => false,
    release: async () => false,
    renew: async () => false,
    forget: async () => "absent",
  };
  const face = await makeFace(s.face, { ...s, onStoreError: "closed" }, listening, namespace, scope, async () => {
    return new Response("");
  });
  watch.onTeardown(`closing the ${s.face} face that worked out a store key`, () => face.close());
  await face.send(c, 0, null, new Uint8Array([1])).then(
    (r) => r.arrayBuffer(),
    () => {},
  );
  return seen;
}

/** Durable before delivered: right after a caller's body ended, a fresh process replays it without executing. */
async function checkDurable(
  s: Scenario,
  inner: IdempotencyStore,
  namespace: string,
  scope: ((r: Request) => string) | undefined,
  c: CallerPlan,
  body: Uint8Array,
  expected: Uint8Array,
  v: (inv: Invariant, msg: string) => void,
  watch: Watch,
): Promise<void> {
  let executed = false;
  let waited = false;
  // Another process: a fresh instance of the same face over the same store.
  const checker = await makeFace(
    s.face,
    { ...s, onStoreError: "closed" },
    inner,
    namespace,
    scope,
    async () => {
      executed = true;
      return new Response("checker executed", { status: 200 });
    },
    { onEvent: (e) => void (e.type === "wait" && (waited = true)) },
  );
  watch.onTeardown(`closing the ${s.face} face of the durable check`, () => checker.close());
  const label = `the durable check (${s.face}, a second process replaying caller ${s.callers.indexOf(c)}'s request)`;
  watch.set(label, "waiting for its response");
  try {
    const res = await checker.send(c, 10_000, null, body);
    watch.set(label, `reading its body (status ${res.status})`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (executed) v("durable", `a second process executed again right after a caller's body ended (record not stored)`);
    else if (res.headers.get("idempotent-replayed") !== "true" || !sameBytes(bytes, expected)) {
      v("durable", `a second process got status ${res.status}, not a replay of the caller's ${expected.length} bytes`);
    } else if (waited) {
      // It only replayed after waiting on a lease: the record was not there yet when the body ended.
      v("durable", "a second process found the lease still held right after a caller's body ended (it had to wait)");
    }
  } catch (error) {
    v("durable", `a second process failed: ${describeError(error)}`);
  }
  watch.done(label);
}

/**
 * The property: a batch of 1-3 independent scenarios run side by side (a busy machine, and more examples per
 * second); it fails on any violation of `only`. `counter.runs` counts the scenarios run.
 */
export function invariantProperty(
  env: StoreEnv,
  options: {
    chaos?: boolean;
    counter?: { runs: number; failed?: number; perFace?: Partial<Record<FaceName, number>> };
    avoid?: Avoid[];
    faces?: readonly FaceName[];
  } = {},
): fc.IAsyncPropertyWithHooks<[Scenario[]]> {
  const arb = scenarioArb({
    ...(options.chaos === undefined ? {} : { chaos: options.chaos }),
    ...(options.avoid ? { avoid: options.avoid } : {}),
    ...(options.faces ? { faces: options.faces } : {}),
  }).map(withoutKnownDefects);
  return fc.asyncProperty(fc.array(arb, { minLength: 1, maxLength: 3 }), async (batch) => {
    const counter = options.counter;
    if (counter) {
      counter.runs += batch.length;
      counter.perFace ??= {};
      for (const s of batch) counter.perFace[s.face] = (counter.perFace[s.face] ?? 0) + 1;
    }
    const results = await Promise.all(batch.map((s) => runScenario(s, env)));
    // Every invariant, whichever the property is named after: no violation is thrown away.
    const found = results.flatMap((r, i) => r.map((x) => `scenario ${i}: (${x.inv}) ${x.msg}`));
    if (found.length > 0 && counter) counter.failed = (counter.failed ?? 0) + 1;
    if (found.length > 0) throw new Error([...new Set(found)].join("\n"));
  });
}

/** Runs the property against `env` with fast-check's parameters (seed, path, numRuns, time limit). */
export async function assertInvariants(
  env: StoreEnv,
  params: fc.Parameters<[Scenario[]]> & Parameters<typeof invariantProperty>[1],
): Promise<void> {
  const { chaos, counter, avoid, faces, ...rest } = params;
  const options = { ...(chaos === undefined ? {} : { chaos }), ...(counter ? { counter } : {}) };
  await fc.assert(
    invariantProperty(env, { ...options, ...(avoid ? { avoid } : {}), ...(faces ? { faces } : {}) }),
    rest,
  );
}

/** Whether `bytes` are Fastify's default error reply for `status`. */
function isFastifyError(status: number, bytes: Uint8Array): boolean {
  try {
    const reply = JSON.parse(new TextDecoder().decode(bytes)) as { statusCode?: unknown; message?: unknown };
    return reply.statusCode === status && typeof reply.message === "string";
  } catch {
    return false;
  }
}
