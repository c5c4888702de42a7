// The protocol of docs/protocol.md as a short story: plan → key and fingerprint → join locally → lead, wait or replay → settle.

import { decide, now } from "./acquire.ts";
import { Broadcast } from "./broadcast.ts";
import type { Answer, Passed, Plan, Reply, Upstream } from "./call.ts";
import { errorBody, type IdempotencyErrorCode } from "./errors.ts";
import type { CallEvent, IdempotencyEventType } from "./events.ts";
import { Flight, type Head, type Outcome } from "./flight.ts";
import { forgetKey, type Keyed, KnownInputs } from "./inputs.ts";
import { KEY_HEADER, keyHeaderValue } from "./key.ts";
import { Leader } from "./leader.ts";
import { callTtlMs, defaultShouldStore, type NormalizedOptions } from "./options.ts";
import type { RetryEvent } from "./retry.ts";
import type { ForgetResult } from "./store.ts";

/** What a face knows about one call beyond its plan. */
export interface CallOptions {
  /** An explicit key that wins over header and body. */
  key?: string;
  /** Per-call TTL override, in seconds. */
  ttlSeconds?: number;
  /** The body is a stream the caller handed over: never auto-keyed, never searched for a body key. */
  streamedBody?: boolean;
  /** A call without a key answers 400 IDEMPOTENCY_KEY_MISSING instead of passing through (server `requireKey`). */
  requireKey?: boolean;
  /**
   * The caller's abort signal. The client passes fetch's; the server passes none: a client that went away
   * does not stop a handler whose result the next retry will want.
   */
  signal?: AbortSignal | null | undefined;
  /** Receives the promise of this call's store writes, for runtimes that end an isolate with the response. */
  waitUntil?: (promise: Promise<unknown>) => void;
  /**
   * A string that only calls with the same key, scope and fingerprint share (the face builds it from what
   * the caller passed): a later identical call joins this one's flight by it through `join`.
   */
  sameAs?: string;
}

/** One call as a face hands it over: its plan, and how to send it on (through the protocol, or untouched). */
export interface Call<P> extends CallOptions {
  plan: Plan;
  /**
   * Sends upstream once; what it answers is shared and stored. `emit` reports each re-send of a face that
   * retries (the client's `retry`, src/retry.ts): given only to a led call, never to a pass-through.
   */
  send(upstream: Upstream, emit?: (event: RetryEvent) => void): Promise<Answer>;
  /** Sends the request on untouched (no key): its result goes back to the face as it is. */
  pass(): Promise<P>;
}

/** What the engine gives a face for one call: a reply to render, or what `pass` gave. */
export type Result<P> = Reply | Passed<P>;

/** What differs between the faces, given once: the protocol never asks which face it serves. */
export interface Face {
  /** Auto keys for double-clicks (client only), or false. */
  autoKey: { methods: ReadonlySet<string>; windowMs: number } | false;
  /** What the fingerprint covers of the URL: all of it on the client, path and query on the server. */
  target(url: string): string;
  /** Whether a key found in the body goes upstream as `Idempotency-Key`. */
  sendKeyHeader(url: string): boolean;
  /** Headers a stored or shared answer never carries. */
  dropHeaders: ReadonlySet<string>;
  /**
   * How a keyless body is read to look for `idempotency_key`: "in-memory" whole (a client's body is in
   * memory already); "sniff" whole only when it is a JSON object, found from its content type or first
   * byte, so a server never holds back another upload.
   */
  keylessBodies: "sniff" | "in-memory";
}

export interface Stats {
  /** Calls that carried (or were given) a key. */
  requests: number;
  /** Calls without a key, sent untouched. */
  passedThrough: number;
  /** Calls sent upstream by this engine. */
  upstreamCalls: number;
  /** Callers that joined a call in flight in this process. */
  joined: number;
  /** Callers answered from a stored record. */
  replayed: number;
  conflicts: number;
  timeouts: number;
  storeErrors: number;
  notStored: number;
  /** Upstream calls saved: joined + replayed. */
  saved: number;
}

import type { ForgetOptions } from "./scope.ts";

export type { ForgetOptions };

export interface Engine {
  /** Runs one call through the protocol. Rejects only with the upstream's own error, an abort, or a bad key. */
  handle<P>(call: Call<P>): Promise<Result<P>>;
  /**
   * Attaches to the flight a call with the same `sameAs` started, before any plan, body read or hash;
   * runs `otherwise` (which builds the plan and calls `handle`) when there is none to join.
   */
  join<P>(sameAs: string, call: CallOptions, otherwise: () => Promise<Result<P>>): Promise<Result<P>>;
  /** Removes a stored key so it runs again; a live lease is refused unless forced. */
  forget(key: string, options?: ForgetOptions): Promise<ForgetResult>;
  /** Resolves once every store write this engine started has settled (and every call in flight with it). */
  close(): Promise<void>;
  stats(): Stats;
}

/** Omit over each member of a union (the built-in Omit would merge them). */
type OmitEach<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

type Emit = (event: OmitEach<CallEvent, keyof CallInfo | "durationMs">) => void;

/** What every event of one call names. */
interface CallInfo {
  callId: number;
  keyHash: string;
  scopeHash: string;
  method: string;
  target: string;
}

const resolved = Promise.resolve();
const encoder = new TextEncoder();
/** Cloudflare Workers: each request runs in its own I/O context (the runtime's documented user agent). */
const ISOLATED_REQUESTS = typeof navigator !== "undefined" && navigator.userAgent === "Cloudflare-Workers";

/**
 * Whether a duplicate may attach to the call in flight in this process. In Workers a request waiting on a
 * promise only another request's I/O resolves is cancelled as hung, so a duplicate that hands nothing to
 * waitUntil goes through the store (pending, then replay) in its own request instead.
 */
const joinsLocally = (call: CallOptions): boolean => call.waitUntil !== undefined || !ISOLATED_REQUESTS;
/** Numbers calls across every engine of this realm, so one event listener can tell calls apart. */
let lastCallId = 0;

export function createEngine(o: NormalizedOptions, face: Face): Engine {
  const flights = new Map<string, Flight>();
  /** By `sameAs`: the first such call's flight once it has one, and what its events name. */
  const same = new Map<string, Claim>();
  const inputs = new KnownInputs(o, face);
  /** Every lease's end, and the acquire loops still running: what close() waits for. */
  const pending = new Set<Promise<unknown>>();
  const track = <T>(promise: Promise<T>): Promise<T> => {
    pending.add(promise);
    const done = (): boolean => pending.delete(promise);
    promise.then(done, done);
    return promise;
  };
  const { counts, emitter } = eventsOf(o);

  /**
   * With a listener, every call ends with one "settled" event: once its caller has an answer and the store
   * writes it caused have settled (tracing ends a span there).
   */
  const settled = <R extends Result<unknown>>(emit: Emit, answer: Promise<R>, writes = resolved): Promise<R> => {
    if (!o.onEvent) return answer;
    Promise.all([answer, writes]).then(
      ([r]) => {
        const status = statusOf(r);
        emit(status === undefined ? { type: "settled" } : { type: "settled", status });
      },
      (error: unknown) => emit({ type: "settled", error }),
    );
    return answer;
  };
  const problem = (code: IdempotencyErrorCode, status: number, message?: string): Reply =>
    errorReply(o, code, status, message);

  /** A duplicate attaches to the flight in this process: one "join", the flight's writes for waitUntil. */
  const attachJoiner = (flight: Flight, emit: Emit, call: CallOptions): Promise<Reply> => {
    emit({ type: "join" });
    call.waitUntil?.(flight.durable);
    return settled(emit, flight.attach(call.signal ?? undefined, false));
  };

  function handle<P>(call: Call<P>): Promise<Result<P>> {
    // A custom scope or fingerprint may see more than the call's input, so only the default ones join early;
    // with waitTimeoutMs 0 a local duplicate answers 409, which `run` does.
    const sameAs = o.scope || o.fingerprint || o.waitTimeoutMs === 0 ? undefined : call.sameAs;
    if (sameAs === undefined || same.has(sameAs)) return run(call, undefined, sameAs);
    // Claimed at once, before any await: identical calls made in the same tick wait for this one's flight.
    const claim = new Claim(() => {
      if (same.get(sameAs) === claim) same.delete(sameAs);
    });
    same.set(sameAs, claim);
    const result = run(call, claim, sameAs);
    // Answered without a flight of its own (a pass-through, a refusal, a join): nothing to join by this claim.
    const unbound = (): void => {
      if (!claim.flight) claim.release();
    };
    result.then(unbound, unbound);
    return result;
  }

  /** plan → key and fingerprint → join locally → fly. */
  async function run<P>(call: Call<P>, claim: Claim | undefined, sameAs: string | undefined): Promise<Result<P>> {
    const signal = call.signal ?? undefined;
    // Nothing was sent: like fetch, reject with the reason and touch nothing.
    if (signal?.aborted) throw signal.reason;
    const keyed = await inputs.of(call, sameAs);
    if (keyed === "too-large") {
      claim?.release();
      const limit = o.maxBodyBytes;
      const why = `Request body exceeds maxBodyBytes (${limit}); it cannot be fingerprinted for an idempotency key`;
      return problem("IDEMPOTENCY_BODY_TOO_LARGE", 413, why);
    }
    if (keyed === "pass") {
      claim?.release();
      if (call.requireKey) return problem("IDEMPOTENCY_KEY_MISSING", 400);
      counts.passedThrough++;
      return { passed: await call.pass() };
    }
    // An abort during the set-up above: nothing was sent yet.
    if (signal?.aborted) throw signal.reason;
    counts.requests++;
    const { plan } = call;
    const storeKey = `${o.namespace}:${keyed.scope.hash}:${keyed.keyHash}`;
    const info = { keyHash: keyed.keyHash, scopeHash: keyed.scope.hash, method: plan.method, target: keyed.target };
    const emit = emitter({ callId: ++lastCallId, ...info }, keyed.started);

    const existing = flights.get(storeKey);
    if (existing?.fingerprint === keyed.fingerprint && joinsLocally(call)) {
      // waitTimeoutMs 0 (the IETF draft's immediate 409): a duplicate in this process does not wait either.
      if (o.waitTimeoutMs === 0) {
        emit({ type: "timeout" });
        return settled(emit, Promise.resolve(problem("IDEMPOTENCY_IN_PROGRESS", 409)));
      }
      return attachJoiner(existing, emit, call);
    }
    // Another request under this key conflicts only once it leads; until then the store decides,
    // else a doomed local request would turn away a correct one.
    if (existing?.leading) {
      emit({ type: "conflict" });
      return settled(emit, Promise.resolve(problem("IDEMPOTENCY_CONFLICT", o.conflictStatus)));
    }
    const flight = new Flight(
      keyed.fingerprint,
      {
        dropSetCookie: keyed.scope.kind !== "credential",
        dropHeaders: face.dropHeaders,
        replayed: (status) => emit({ type: "replay", status }),
      },
      signal !== undefined,
      () => {
        if (flights.get(storeKey) === flight) flights.delete(storeKey);
        claim?.release();
      },
    );
    if (!existing) {
      flights.set(storeKey, flight);
      claim?.bind(flight, info);
    }
    const reply = flight.attach(signal, true);
    const done = track(fly(o, face, call, keyed, flight, storeKey, emit));
    flight.durable = done;
    call.waitUntil?.(done);
    return settled(emit, reply, done);
  }

  const forget = (key: string, options: ForgetOptions = {}): Promise<ForgetResult> => forgetKey(o, key, options);

  async function close(): Promise<void> {
    while (pending.size > 0) await Promise.allSettled([...pending]);
  }

  function join<P>(sameAs: string, call: CallOptions, otherwise: () => Promise<Result<P>>): Promise<Result<P>> {
    const attach = (claim: Claim): Promise<Result<P>> => {
      const { flight, info } = claim;
      if (!flight?.joinable || !info) return otherwise();
      if (call.signal?.aborted) return Promise.reject(call.signal.reason);
      counts.requests++;
      return attachJoiner(flight, emitter({ ...info, callId: ++lastCallId }, now()), call);
    };
    const claim = same.get(sameAs);
    if (!claim || !joinsLocally(call)) return otherwise();
    return claim.flight ? attach(claim) : claim.ready.then(() => attach(claim));
  }

  return {
    handle,
    join,
    forget,
    close,
    stats: () => ({ ...counts, saved: counts.joined + counts.replayed }),
  };
}

/**
 * One flight's way through the store: acquire, then lead, wait, replay or conflict; settles the flight.
 * Resolves once every store write of the flight has settled; never rejects.
 */
function fly<P>(
  o: NormalizedOptions,
  face: Face,
  call: Call<P>,
  keyed: Keyed,
  flight: Flight,
  storeKey: string,
  emit: Emit,
): Promise<void> {
  let leader: Leader | undefined;
  const ttlMs = keyed.auto && face.autoKey ? face.autoKey.windowMs : (callTtlMs(call.ttlSeconds) ?? o.ttlMs);
  const lead = (token: string | null): Promise<Outcome> => {
    leader = new Leader(
      {
        store: o.store,
        storeKey,
        leaseMs: o.leaseMs,
        maxBodyBytes: o.maxBodyBytes,
        ttlMs,
        storable: storableBy(o.shouldStore),
        dropHeaders: face.dropHeaders,
        flight,
        report: emit,
      },
      token,
    );
    // Only a led call gets `emit`: its retries happen inside the lease, shared by every joiner.
    return leader.run(() => call.send(upstreamOf(face, call, keyed, flight), emit));
  };
  const outcome = decide({
    store: o.store,
    storeKey,
    fingerprint: keyed.fingerprint,
    leaseMs: o.leaseMs,
    waitTimeoutMs: o.waitTimeoutMs,
    onStoreError: o.onStoreError,
    conflictStatus: o.conflictStatus,
    signal: flight.abort?.signal,
    report: emit,
    lead,
    answer: (code, status, message) => ({ kind: "answer", reply: () => errorReply(o, code, status, message) }),
    // Kept like a leader's body (up to maxBodyBytes), so a caller joining here later still gets it from byte 0;
    // the flight closes once the stream ends, after its record is durable in the store.
    remote: (head, source) => {
      const closed = (): Promise<void> => {
        flight.close();
        return resolved;
      };
      // Past the limit a later caller could not get byte 0 here: it goes to the store instead.
      const body = new Broadcast(source, o.maxBodyBytes, { end: closed, overflow: closed, error: closed });
      return { kind: "live", head, body, remote: true };
    },
  });
  const done = outcome.then(
    (settledWith) => flight.settle(settledWith),
    (error: unknown) => {
      // Only a bug gets here; the caller still gets an answer, and the lease still ends.
      void leader?.end({ kind: "fail", error });
      flight.settle({ kind: "fail", error });
    },
  );
  return done.then(() => leader?.ended ?? resolved);
}

/**
 * How a leader sends its call: the body the engine read, every caller's abort, and the key header. A key
 * from the body (or given per call) goes upstream as the header, so a server running the middleware
 * collapses retries from other processes too. An auto key never does: the server cannot know the client's window.
 */
function upstreamOf<P>(face: Face, call: Call<P>, keyed: Keyed, flight: Flight): Upstream {
  const sendKey = !keyed.auto && call.plan.header(KEY_HEADER) === null && face.sendKeyHeader(call.plan.url);
  return {
    body: keyed.bytes,
    signal: flight.abort?.signal,
    keyHeader: sendKey ? keyHeaderValue(keyed.key) : undefined,
    callers: () => flight.attached,
  };
}

/** An answer of the library's own, in the configured error format. */
function errorReply(o: NormalizedOptions, code: IdempotencyErrorCode, status: number, message?: string): Reply {
  const { contentType, text } = errorBody(code, status, message, o.errorFormat);
  const headers: [string, string][] = [["content-type", contentType]];
  if (code === "IDEMPOTENCY_IN_PROGRESS") headers.push(["retry-after", "1"]);
  return { status, statusText: "", headers, body: encoder.encode(text), own: false };
}

/** The counters of `stats()` and the per-call event emitter that keeps them. */
function eventsOf(o: NormalizedOptions) {
  const counts: Omit<Stats, "saved"> = {
    requests: 0,
    passedThrough: 0,
    upstreamCalls: 0,
    joined: 0,
    replayed: 0,
    conflicts: 0,
    timeouts: 0,
    storeErrors: 0,
    notStored: 0,
  };
  const tally: Partial<Record<IdempotencyEventType, keyof typeof counts>> = {
    execute: "upstreamCalls",
    join: "joined",
    replay: "replayed",
    conflict: "conflicts",
    timeout: "timeouts",
    "store-error": "storeErrors",
    "not-stored": "notStored",
  };
  const emitter =
    (info: CallInfo, started: number): Emit =>
    (event) => {
      const counter = tally[event.type];
      if (counter) counts[counter]++;
      if (!o.onEvent) return;
      try {
        o.onEvent({ ...info, durationMs: now() - started, ...event } as CallEvent);
      } catch {
        // A listener's failure must never fail a request.
      }
    };
  return { counts, emitter };
}

/** The `shouldStore` option over an answer's head; the default reads the status only (no Response made). */
function storableBy(shouldStore: NormalizedOptions["shouldStore"]): (head: Head) => boolean {
  if (shouldStore === defaultShouldStore) return (head) => defaultShouldStore({ status: head.status } as Response);
  return (head) =>
    shouldStore(new Response(null, { status: head.status, statusText: head.statusText, headers: head.headers }));
}

function statusOf(result: Result<unknown>): number | undefined {
  if ("passed" in result) return (result.passed as { status?: number } | undefined)?.status;
  if ("native" in result) return (result.native as { status?: number }).status;
  return result.status;
}

/**
 * The first of identical calls (same `sameAs`): joiners wait on `ready` for its flight, then attach to it.
 * Released (and forgotten) when that call passes through, fails or answers without a flight of its own,
 * and when its flight closes.
 */
class Claim {
  flight: Flight | undefined;
  info: Omit<CallInfo, "callId"> | undefined;
  readonly ready: Promise<void>;
  private settle!: () => void;
  private released = false;

  constructor(private readonly forget: () => void) {
    this.ready = new Promise<void>((resolve) => {
      this.settle = resolve;
    });
  }

  bind(flight: Flight, info: Omit<CallInfo, "callId">): void {
    if (this.released) return;
    this.flight = flight;
    this.info = info;
    this.settle();
  }

  /** No flight to join from now on (or never was). Idempotent. */
  readonly release = (): void => {
    if (this.released) return;
    this.released = true;
    this.flight = undefined;
    this.settle();
    this.forget();
  };
}
