// The protocol of docs/protocol.md in one place: key, fingerprint, local join, acquire, lead, wait, replay, conflict.
import { declaredLength, isJsonType, readLimited, readReady } from "./body.ts";
import { Broadcast } from "./broadcast.ts";
import { errorResponse, type IdempotencyErrorCode } from "./errors.ts";
import type { CallEvent, IdempotencyEventType, StoreOp } from "./events.ts";
import { fingerprintOf, parseJsonBody, sha256 } from "./fingerprint.ts";
import { Flight, type Outcome } from "./flight.ts";
import { explicitKey, KEY_HEADER, keyFromJson, keyHeaderValue, validateKey } from "./key.ts";
import { Lease } from "./lease.ts";
import { callTtlMs, type NormalizedOptions } from "./options.ts";
import { isStoredRecord, NULL_BODY, storableHeaders } from "./record.ts";
import type { RetryEvent } from "./retry.ts";
import { type ForgetOptions, forgetScope, scopeOf } from "./scope.ts";
import type { AcquireResult, ForgetResult, IdempotencyStore, StoredRecord } from "./store.ts";
import { unavailableMessage } from "./store-guard.ts";

/**
 * Sends a request upstream: the real fetch on the client, the wrapped handler on the server. `init`, when
 * given, overrides parts of `request` as `fetch(request, init)` does (the body the engine read, its abort
 * signal, the key header), so a face builds at most one new Request. `emit` is given only when the engine
 * leads the call (never to a pass-through): a face that re-sends reports each try through it.
 */
export type Send = (request: Request, init?: RequestInit, emit?: (event: RetryEvent) => void) => Promise<Response>;

/** What a face knows about one call beyond the Request itself. */
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
  /** The request's body as bytes when the face has them already (a string body): the Request's is not read. */
  bytes?: Uint8Array;
}

/** What differs between the faces, given once: the protocol never asks which face it serves. */
export interface Face {
  /** Auto keys for double-clicks (client only), or false. */
  autoKey: { methods: ReadonlySet<string>; windowMs: number } | false;
  /** What the fingerprint covers of the URL: all of it on the client, path and query on the server. */
  target(url: URL): string;
  /** Whether a key found in the body goes upstream as `Idempotency-Key`. */
  sendKeyHeader(url: URL): boolean;
  /** Headers a stored or shared response never carries. */
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

export type { ForgetOptions } from "./scope.ts";

export interface Engine {
  /** Runs one call through the protocol. Rejects only with the upstream's own error, an abort, or a bad key. */
  handle(request: Request, send: Send, call?: CallOptions): Promise<Response>;
  /**
   * Attaches to the flight a call with the same `sameAs` started, before any Request, body read or hash;
   * runs `otherwise` (which builds the Request and calls `handle`) when there is none to join.
   */
  join(sameAs: string, call: CallOptions, otherwise: () => Promise<Response>): Promise<Response>;
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

/** One call's protocol inputs, resolved before any store call. */
interface Keyed {
  key: string | undefined;
  auto: boolean;
  bytes: Uint8Array | null;
  json: unknown;
}

enum Poll {
  FirstMs = 25,
  MaxMs = 500,
}

const now = (): number => (typeof performance !== "undefined" ? performance.now() : Date.now());
const resolved = Promise.resolve();
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
  /** Every lease's end, and the acquire loops still running: what close() waits for. */
  const pending = new Set<Promise<unknown>>();
  const track = <T>(promise: Promise<T>): Promise<T> => {
    pending.add(promise);
    promise.then(
      () => pending.delete(promise),
      () => pending.delete(promise),
    );
    return promise;
  };

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

  /**
   * With a listener, every call ends with one "settled" event: once its caller has an answer and the store
   * writes it caused have settled (tracing ends a span there).
   */
  const settledEvent = (emit: Emit, answer: Promise<Response>, writes: Promise<void> = resolved): Promise<Response> => {
    if (!o.onEvent) return answer;
    Promise.all([answer, writes]).then(
      ([r]) => emit({ type: "settled", status: r.status }),
      (error: unknown) => emit({ type: "settled", error }),
    );
    return answer;
  };

  /** A duplicate attaches to the flight in this process: one "join", the flight's writes for waitUntil. */
  const attachJoiner = (flight: Flight, emit: Emit, call: CallOptions): Promise<Response> => {
    emit({ type: "join" });
    call.waitUntil?.(flight.durable);
    return settledEvent(emit, flight.attach(call.signal ?? undefined, false));
  };

  const problem = (code: IdempotencyErrorCode, status: number, message?: string): Response =>
    errorResponse(
      code,
      status,
      message,
      code === "IDEMPOTENCY_IN_PROGRESS" ? { "retry-after": "1" } : {},
      o.errorFormat,
    );
  const inProgress = (): Response => problem("IDEMPOTENCY_IN_PROGRESS", 409);
  const errorAnswer = (code: IdempotencyErrorCode, status: number, message?: string): Outcome => ({
    kind: "answer",
    make: () => problem(code, status, message),
  });

  function handle(request: Request, send: Send, call: CallOptions = {}): Promise<Response> {
    // A custom scope or fingerprint may see more than the call's input, so only the default ones join early;
    // with waitTimeoutMs 0 a local duplicate answers 409, which `handleCall` does.
    const sameAs = o.scope || o.fingerprint || o.waitTimeoutMs === 0 ? undefined : call.sameAs;
    if (sameAs === undefined || same.has(sameAs)) return handleCall(request, send, call, undefined);
    // Claimed at once, before any await: identical calls made in the same tick wait for this one's flight.
    const claim = new Claim(() => {
      if (same.get(sameAs) === claim) same.delete(sameAs);
    });
    same.set(sameAs, claim);
    const response = handleCall(request, send, call, claim);
    // Answered without a flight of its own (a pass-through, a refusal, a join): nothing to join by this claim.
    const unbound = (): void => {
      if (!claim.flight) claim.release();
    };
    response.then(unbound, unbound);
    return response;
  }

  async function handleCall(
    request: Request,
    send: Send,
    call: CallOptions,
    claim: Claim | undefined,
  ): Promise<Response> {
    const signal = call.signal ?? undefined;
    // Nothing was sent: like fetch, reject with the reason and touch nothing.
    if (signal?.aborted) throw signal.reason;
    const ttlMs = callTtlMs(call.ttlSeconds);
    const method = request.method.toUpperCase();
    const headerValue = request.headers.get(KEY_HEADER);
    const explicit = explicitKey(call.key, headerValue);
    const autoEligible = face.autoKey !== false && face.autoKey.methods.has(method) && !call.streamedBody;

    // A body the engine read goes on as `init`, never as a copy of `request`: copying a Request reads its
    // signal, and Deno.serve warns on every request whose signal is read.
    const passThrough = (init?: RequestInit): Promise<Response> => {
      claim?.release();
      if (call.requireKey) return Promise.resolve(problem("IDEMPOTENCY_KEY_MISSING", 400));
      counts.passedThrough++;
      return init ? send(request, init) : send(request);
    };
    const keyed = await readKeyed(request, explicit, autoEligible, call);
    if (keyed === "too-large") return tooLarge();
    if ("pass" in keyed) return passThrough(keyed.pass);
    const { bytes, json } = keyed;
    if (keyed.auto && !autoEligible) return passThrough(bytes === null ? undefined : { body: bytes as BodyInit });
    /** The request as the `fingerprint` and `scope` options see it: its parts and the body the engine read. */
    const withBody = (): Request =>
      new Request(request.url, { method: request.method, headers: request.headers, body: bytes as BodyInit | null });

    const started = now();
    counts.requests++;
    const url = new URL(request.url);
    const target = face.target(url);
    const [fingerprint, keyHash, scope] = await Promise.all([
      o.fingerprint
        ? o.fingerprint(withBody())
        : fingerprintOf(method, target, bytes, json, request.headers.get("content-type")),
      keyed.auto ? undefined : sha256(keyed.key as string),
      scopeOf(o, request.headers, () => withBody()),
    ]);
    const hash = keyHash ?? fingerprint;
    const storeKey = `${o.namespace}:${scope.hash}:${hash}`;
    const emit = emitter({ callId: ++lastCallId, keyHash: hash, scopeHash: scope.hash, method, target }, started);
    const settled = (answer: Promise<Response>, writes?: Promise<void>): Promise<Response> =>
      settledEvent(emit, answer, writes);

    const existing = flights.get(storeKey);
    if (existing?.fingerprint === fingerprint && joinsLocally(call)) {
      // waitTimeoutMs 0 (the IETF draft's immediate 409): a duplicate in this process does not wait either.
      if (o.waitTimeoutMs === 0) {
        emit({ type: "timeout" });
        return settled(Promise.resolve(inProgress()));
      }
      return attachJoiner(existing, emit, call);
    }
    // Another request under this key conflicts only once it leads; until then the store decides,
    // else a doomed local request would turn away a correct one.
    if (existing?.leading) {
      emit({ type: "conflict" });
      return settled(Promise.resolve(problem("IDEMPOTENCY_CONFLICT", o.conflictStatus)));
    }

    // A key from the body (or given per call) goes upstream as the header, so a server running the middleware
    // collapses retries from other processes too. An auto key never does: the server cannot know the client's window.
    const sendKey = headerValue === null && !keyed.auto && face.sendKeyHeader(url);
    const flight = new Flight(
      fingerprint,
      {
        dropSetCookie: scope.kind !== "credential",
        dropHeaders: face.dropHeaders,
        url: request.url,
        replayed: (record) => emit({ type: "replay", status: record.status }),
      },
      signal !== undefined,
      () => {
        if (flights.get(storeKey) === flight) flights.delete(storeKey);
        claim?.release();
      },
    );
    const upstream = (): RequestInit => {
      // `signal: null`, not none: a copy of a Request otherwise follows that Request's own signal.
      const init: RequestInit = { signal: flight.abort?.signal ?? null };
      if (bytes !== null) init.body = bytes as BodyInit;
      if (sendKey) {
        const headers = new Headers(request.headers);
        headers.set(KEY_HEADER, keyHeaderValue(keyed.key as string));
        init.headers = headers;
      }
      return init;
    };
    if (!existing) {
      flights.set(storeKey, flight);
      claim?.bind(flight, { keyHash: hash, scopeHash: scope.hash, method, target });
    }
    const response = flight.attach(signal, true);
    const ttl = keyed.auto && face.autoKey ? face.autoKey.windowMs : (ttlMs ?? o.ttlMs);
    // Only a led call gets `emit`: its retries (src/retry.ts) happen inside the lease, shared by every joiner.
    const run = new Run(flight, storeKey, emit, () => send(request, upstream(), emit), ttl);
    const done = run.start();
    flight.durable = done;
    call.waitUntil?.(done);
    return settled(response, done);
  }

  /**
   * One flight's path through the store: acquire, then lead, wait, replay or conflict. `start()` resolves
   * once every store write of the flight has settled; it never rejects.
   */
  class Run {
    /** Set once this flight saw a live lease of its own fingerprint: from then on it never runs unprotected. */
    private knowsOwner = false;
    /** The last store failure of this flight: a wait that then times out answers 503 naming it when closed. */
    private storeFailure: { error: unknown } | undefined;
    private lease: Lease | undefined;

    constructor(
      private readonly flight: Flight,
      private readonly storeKey: string,
      private readonly emit: Emit,
      private readonly sendUpstream: () => Promise<Response>,
      private readonly ttlMs: number,
    ) {}

    start(): Promise<void> {
      const done = this.decide().then(
        (outcome) => this.flight.settle(outcome),
        (error: unknown) => {
          // Only a bug gets here; the caller still gets an answer, and the lease still ends.
          void this.lease?.release();
          this.flight.settle({ kind: "fail", error });
        },
      );
      return track(done.then(() => this.lease?.ended ?? resolved));
    }

    private async decide(): Promise<Outcome> {
      const { flight, storeKey, emit } = this;
      const deadline = now() + o.waitTimeoutMs;
      let delay: number = Poll.FirstMs;
      let forgotCorrupt = false;
      const waker = new Waker(o.store);
      try {
        for (;;) {
          let found: AcquireResult | undefined;
          try {
            // The store is guarded (options.ts): its deadline releases an acquire that lands after it.
            found = await o.store.acquire(storeKey, flight.fingerprint, o.leaseMs);
          } catch (error) {
            this.storeError("acquire", "acquire failed", error);
            // Once someone else is known to execute, a store blip only costs this caller another round of waiting.
            if (!this.knowsOwner) {
              if (o.onStoreError === "closed") return this.unavailable();
              return this.lead(null);
            }
          }

          if (found?.state === "acquired") {
            if (found.replacedCorrupt) this.storeError("acquire", "a stored value did not parse; replaced");
            if (this.knowsOwner) emit({ type: "takeover" });
            return this.lead(found.token);
          }
          if (found?.state === "done") {
            const record = found.record;
            if (!isStoredRecord(record) || !flight.prepare(record)) {
              // A foreign or damaged record is treated as absent: removed once, then the key is acquired again.
              this.storeError("acquire", "stored record did not parse");
              if (!forgotCorrupt) {
                forgotCorrupt = true;
                try {
                  await o.store.forget(storeKey, false);
                  continue;
                } catch (error) {
                  this.storeError("forget", "could not remove a record that did not parse", error);
                }
              }
              if (o.onStoreError === "closed") return this.unavailable();
              return this.lead(null);
            }
            if (record.fingerprint !== flight.fingerprint) return this.conflict();
            return { kind: "record", record };
          }
          if (found?.state === "pending") {
            if (found.fingerprint !== flight.fingerprint) return this.conflict();
            if (!this.knowsOwner) {
              this.knowsOwner = true;
              emit({ type: "wait" });
              const failed = waker.subscribe(storeKey);
              if (failed !== undefined) this.storeError("subscribe", "subscribe failed; polling instead", failed);
            }
          }

          // Another owner holds a live lease (or the store blipped while we waited for it): one round of waiting.
          if (now() >= deadline) return this.timedOut();
          await waker.sleep(Math.min(delay, deadline - now()), flight.abort?.signal);
          if (flight.abort?.signal.aborted) return { kind: "fail", error: flight.abort.signal.reason };
          delay = Math.min(delay * 1.5, Poll.MaxMs);
        }
      } finally {
        waker.close();
      }
    }

    private timedOut(): Outcome {
      this.emit({ type: "timeout" });
      return o.onStoreError === "closed" && this.storeFailure
        ? this.unavailable()
        : errorAnswer("IDEMPOTENCY_IN_PROGRESS", 409);
    }

    /** 503, naming what made the store unavailable (timeout, refused, circuit open). */
    private unavailable(): Outcome {
      return errorAnswer("IDEMPOTENCY_STORE_UNAVAILABLE", 503, unavailableMessage(this.storeFailure?.error));
    }

    private storeError(op: StoreOp, reason: string, error?: unknown): void {
      this.storeFailure = { error };
      this.emit(error === undefined ? { type: "store-error", op, reason } : { type: "store-error", op, reason, error });
    }

    private conflict(): Outcome {
      this.emit({ type: "conflict" });
      return errorAnswer("IDEMPOTENCY_CONFLICT", o.conflictStatus);
    }

    /** Sends upstream; with a token, holds the lease until the body is committed or released. */
    private async lead(token: string | null): Promise<Outcome> {
      const { flight, emit, storeKey } = this;
      flight.leading = true;
      const lease = new Lease(o.store, storeKey, token, o.leaseMs, (type, op, error) => {
        if (type === "stale-token") {
          emit({
            type,
            op: op as "commit" | "release" | "renew",
            reason: `${op} found the lease held by someone else`,
          });
        } else {
          this.storeError(op as StoreOp, `${op} failed`, error);
        }
      });
      this.lease = lease;
      emit({ type: "execute" });

      let response: unknown;
      try {
        response = await this.sendUpstream();
      } catch (error) {
        await lease.release();
        return { kind: "fail", error };
      }
      if (!(response instanceof Response) || response.bodyUsed) {
        await lease.release();
        const what = response instanceof Response ? "a Response whose body was already used" : describe(response);
        return { kind: "fail", error: new TypeError(`idemfetch: the upstream answered ${what}, not a Response`) };
      }
      if (response.status < 200 || response.status > 599) {
        // Opaque responses (status 0) cannot be copied into a new Response; hand out clones, store nothing.
        await lease.release();
        return { kind: "raw", response };
      }
      let storable: boolean;
      try {
        storable = o.shouldStore(response) === true;
      } catch {
        storable = false;
      }
      const head = response;
      const notStored = (reason: string): Promise<void> => {
        emit({ type: "not-stored", status: head.status, reason });
        // A retry that comes after this answer must run again: nobody joins it any more.
        flight.close();
        return lease.release();
      };
      const commit = (body: Uint8Array): Promise<void> => {
        const record: StoredRecord = {
          status: head.status,
          statusText: head.statusText,
          headers: storableHeaders(head.headers, face.dropHeaders),
          body,
          createdAt: Date.now(),
          fingerprint: flight.fingerprint,
        };
        return lease.commit(record, this.ttlMs).then(() => {
          if (token !== null) emit({ type: "stored", status: head.status, bytes: body.length });
          flight.close();
        });
      };
      const released = storable ? undefined : notStored(`status ${head.status} is not stored`);

      if (head.body === null || NULL_BODY.has(head.status)) {
        // No body to hold back: the answer itself waits for the write.
        await (released ?? commit(new Uint8Array(0)));
        return { kind: "live", head, body: null };
      }
      const source = head.body.getReader();
      const read = storable ? await readReady(source, o.maxBodyBytes) : undefined;
      if (read && "whole" in read) {
        // The whole body was in memory: commit, then answer bytes (one write, no stream per caller).
        await commit(read.whole);
        return { kind: "live", head, body: read.whole };
      }
      const body = new Broadcast(source, storable ? o.maxBodyBytes : -1, {
        end: (bytes) => released ?? (bytes ? commit(bytes) : lease.release()),
        overflow: () => {
          if (storable) void notStored(`body larger than maxBodyBytes (${o.maxBodyBytes})`);
        },
        error: () => {
          flight.close();
          return lease.release();
        },
      });
      if (read) body.resume(read);
      return { kind: "live", head, body };
    }
  }

  /** Reads what the protocol needs of a request: its key and body, or the Request to pass through untouched. */
  async function readKeyed(
    request: Request,
    explicit: string | undefined,
    autoEligible: boolean,
    call: CallOptions,
  ): Promise<Keyed | { pass: RequestInit | undefined } | "too-large"> {
    const length = declaredLength(request.headers);
    // A declared length spares `request.body`: on some servers (@hono/node-server) that getter turns a
    // lightweight request into a full one with a web stream over the socket, which costs more than the rest.
    const bodyless = length === null ? request.body === null : length === 0;
    if (explicit === undefined && (call.streamedBody || (bodyless && !autoEligible))) return { pass: undefined };
    let bytes: Uint8Array | null = null;
    if (!bodyless) {
      // A keyless body that is not a JSON object cannot hold a key: once its first bytes show it, it goes
      // on as it came, so a server never holds back an upload it does not own.
      const sniff =
        explicit === undefined && face.keylessBodies === "sniff" && !isJsonType(request.headers.get("content-type"));
      const inMemory = face.keylessBodies === "in-memory" && !call.streamedBody;
      const read =
        inMemory && call.bytes !== undefined
          ? { bytes: call.bytes }
          : !sniff && (inMemory || (length !== null && length <= o.maxBodyBytes))
            ? { bytes: new Uint8Array(await request.arrayBuffer()) }
            : await readLimited(request.body as ReadableStream<Uint8Array>, o.maxBodyBytes, sniff);
      if ("rest" in read || read.bytes.length > o.maxBodyBytes) {
        if (explicit !== undefined) return "too-large";
        return { pass: ("rest" in read ? { body: read.rest, duplex: "half" } : { body: read.bytes }) as RequestInit };
      }
      bytes = read.bytes;
    }
    const json = parseJsonBody(bytes);
    const key = explicit ?? keyFromJson(json);
    return { key, auto: key === undefined, bytes, json };
  }

  const tooLarge = (): Response =>
    problem(
      "IDEMPOTENCY_BODY_TOO_LARGE",
      413,
      `Request body exceeds maxBodyBytes (${o.maxBodyBytes}); it cannot be fingerprinted for an idempotency key`,
    );

  async function forget(key: string, options: ForgetOptions = {}): Promise<ForgetResult> {
    validateKey(key, "forget(key)");
    const scope = await forgetScope(o, options);
    const storeKey = `${o.namespace}:${scope}:${await sha256(key)}`;
    return o.store.forget(storeKey, options.force === true);
  }

  async function close(): Promise<void> {
    while (pending.size > 0) await Promise.allSettled([...pending]);
  }

  function join(sameAs: string, call: CallOptions, otherwise: () => Promise<Response>): Promise<Response> {
    const attach = (claim: Claim): Promise<Response> => {
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

/** Wakes a waiter early: on the store's notification, or when every caller aborted. */
class Waker {
  private notified = false;
  private wake: (() => void) | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly store: IdempotencyStore) {}

  /**
   * From now on a commit or release of `storeKey` cuts the current (or next) sleep short. A store whose
   * subscribe throws only costs wake-up latency: the waiter polls. Returns the error, if any.
   */
  subscribe(storeKey: string): unknown {
    try {
      this.unsubscribe ??= this.store.subscribe?.(storeKey, () => {
        if (this.wake) this.wake();
        else this.notified = true;
      });
    } catch (error) {
      return error;
    }
    return undefined;
  }

  /** Sleeps `ms`, or less when woken; a notification that landed while not sleeping skips the sleep. */
  sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.notified) {
      this.notified = false;
      return resolved;
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.wake?.(), ms);
      const onAbort = (): void => this.wake?.();
      this.wake = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.wake = undefined;
        resolve();
      };
      signal?.addEventListener("abort", onAbort);
    });
  }

  close(): void {
    this.unsubscribe?.();
  }
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  return `an object (${Object.prototype.toString.call(value)})`;
}
