// The protocol of SPEC.md in one place: key, fingerprint, local join, acquire, lead, wait, replay, conflict.
import { errorResponse } from "./errors.js";
import { fingerprintOf, parseJsonBody, sha256 } from "./fingerprint.js";
import { KEY_HEADER, keyFromHeader, keyFromJson, validateKey } from "./key.js";
import type { IdempotencyEvent, NormalizedOptions } from "./options.js";
import { NULL_BODY, replayHeaders, replayResponse, storableHeaders } from "./record.js";
import type { StoredRecord } from "./store.js";

/**
 * Sends a request upstream: the real fetch on the client, the wrapped handler on the server. `init`, when
 * given, overrides parts of `request` as `fetch(request, init)` does (the body the engine read, its abort
 * signal, the key header), so a face builds at most one new Request.
 */
export type Send = (request: Request, init?: RequestInit) => Promise<Response>;

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
   * False when the caller's signal can never abort (it passed none). The upstream call is aborted only once
   * every caller aborted, so a leader that cannot abort needs no signal upstream; in Node a Request that
   * follows a signal costs 25-45 µs more to build. Default true.
   */
  abortable?: boolean;
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

export interface Engine {
  /** Runs one call through the protocol. Rejects only with the upstream's own error, an abort, or a bad key. */
  handle(request: Request, send: Send, side: "client" | "server", call?: CallOptions): Promise<Response>;
  stats(): Stats;
}

/** What a flight ends with; every caller turns it into a Response of its own. */
type Outcome =
  | { kind: "live"; head: Response; body: Broadcast | null }
  | { kind: "raw"; response: Response }
  | { kind: "record"; record: StoredRecord }
  | { kind: "answer"; make: () => Response }
  | { kind: "fail"; error: unknown };

type Emit = (type: IdempotencyEvent["type"], extra?: Partial<IdempotencyEvent>) => void;

interface Waiting {
  resolve: (response: Response) => void;
  reject: (error: unknown) => void;
  signal: AbortSignal;
  first: boolean;
}

enum Limits {
  FirstPollMs = 25,
  MaxPollMs = 500,
}

const inProgress = (): Response => errorResponse("IDEMPOTENCY_IN_PROGRESS", 409, undefined, { "retry-after": "1" });

const now = (): number => (typeof performance !== "undefined" ? performance.now() : Date.now());

export function createEngine(o: NormalizedOptions): Engine {
  const flights = new Map<string, Flight>();
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
  const tally: Partial<Record<IdempotencyEvent["type"], keyof typeof counts>> = {
    execute: "upstreamCalls",
    join: "joined",
    replay: "replayed",
    conflict: "conflicts",
    timeout: "timeouts",
    "store-error": "storeErrors",
    "not-stored": "notStored",
  };
  const emitter =
    (keyHash: string, started: number): Emit =>
    (type, extra) => {
      const counter = tally[type];
      if (counter) counts[counter]++;
      if (!o.onEvent) return;
      try {
        o.onEvent({ type, keyHash, durationMs: now() - started, ...extra });
      } catch {
        // A listener's failure must never fail a request.
      }
    };

  /** A store call with a deadline: a dead or slow store never hangs a request. */
  const storeCall = <T>(op: string, run: () => Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`idemfetch: store ${op} timed out after ${o.storeTimeoutMs} ms`)),
        o.storeTimeoutMs,
      );
      let pending: Promise<T>;
      try {
        pending = run();
      } catch (error) {
        pending = Promise.reject(error);
      }
      pending.then(resolve, reject).finally(() => clearTimeout(timer));
    });

  const conflict = (): Outcome => ({
    kind: "answer",
    make: () => errorResponse("IDEMPOTENCY_CONFLICT", o.conflictStatus),
  });

  /** One upstream call (or wait, or replay) per store key in this process; duplicates attach to it. */
  class Flight {
    readonly ctrl = new AbortController();
    /** Holds the lease (or runs unprotected): its fingerprint is the key's. */
    leading = false;
    private waiting: Waiting[] = [];
    private outcome: Outcome | undefined;
    private callers = 0;
    private aborted = 0;

    constructor(
      readonly storeKey: string,
      readonly fingerprint: string,
      private readonly request: Request,
      private readonly upstream: () => RequestInit,
      private readonly send: Send,
      private readonly ttlMs: number,
      private readonly anonymous: boolean,
      private readonly emit: Emit,
    ) {}

    start(): void {
      this.run().then(
        (outcome) => this.settle(outcome),
        (error: unknown) => this.settle({ kind: "fail", error }),
      );
    }

    attach(signal: AbortSignal, first: boolean): Promise<Response> {
      this.callers++;
      return new Promise<Response>((resolve, reject) => {
        if (signal.aborted) {
          this.abortOne();
          reject(signal.reason);
          return;
        }
        const waiter: Waiting = { resolve, reject, signal, first };
        if (this.outcome) {
          this.deliver(waiter, this.outcome);
          return;
        }
        this.waiting.push(waiter);
        signal.addEventListener(
          "abort",
          () => {
            if (!this.waiting.includes(waiter)) return;
            this.waiting.splice(this.waiting.indexOf(waiter), 1);
            this.abortOne();
            reject(signal.reason);
          },
          { once: true },
        );
      });
    }

    /** The upstream call is aborted only once every caller waiting on it has aborted. */
    private abortOne(): void {
      if (++this.aborted < this.callers) return;
      this.done();
      this.ctrl.abort(new DOMException("Every caller of this request aborted", "AbortError"));
    }

    done(): void {
      if (flights.get(this.storeKey) === this) flights.delete(this.storeKey);
    }

    private settle(outcome: Outcome): void {
      this.outcome = outcome;
      if (outcome.kind !== "live") this.done();
      const waiting = this.waiting;
      this.waiting = [];
      for (const waiter of waiting) this.deliver(waiter, outcome);
    }

    private deliver(w: Waiting, outcome: Outcome): void {
      if (outcome.kind === "fail") w.reject(outcome.error);
      else w.resolve(this.responseFor(w, outcome));
    }

    private responseFor(w: Waiting, outcome: Exclude<Outcome, { kind: "fail" }>): Response {
      switch (outcome.kind) {
        case "answer":
          return outcome.make();
        case "raw":
          return w.first ? outcome.response : outcome.response.clone();
        case "record":
          // Joiners were counted when they joined: one saved call each, never two.
          if (w.first) this.emit("replay");
          return withUrl(replayResponse(outcome.record, this.anonymous), this.request.url);
        case "live": {
          const { head, body } = outcome;
          const stream = body?.reader(w.signal, () => this.abortOne()) ?? null;
          const response = new Response(NULL_BODY.has(head.status) ? null : stream, {
            status: head.status,
            statusText: head.statusText,
            headers: w.first ? head.headers : replayHeaders(storableHeaders(head.headers)),
          });
          return withUrl(response, head.url);
        }
      }
    }

    private async run(): Promise<Outcome> {
      const store = o.store;
      const deadline = now() + o.waitTimeoutMs;
      let delay: number = Limits.FirstPollMs;
      let waited = false;
      // A notification that lands while acquire is in flight must not be lost: it skips the next sleep.
      let notified = false;
      let wake: (() => void) | undefined;
      const wakeUp = (): void => {
        if (wake) wake();
        else notified = true;
      };
      let unsubscribe: (() => void) | undefined;
      try {
        for (;;) {
          let found: Awaited<ReturnType<typeof store.acquire>>;
          try {
            found = await storeCall("acquire", () => store.acquire(this.storeKey, this.fingerprint, o.leaseMs));
          } catch (error) {
            this.emit("store-error", { reason: "acquire failed", error });
            if (o.onStoreError === "closed") return this.unavailable();
            return this.lead(null);
          }
          if (found.state === "acquired") {
            if (found.replacedCorrupt) this.emit("store-error", { reason: "a stored value did not parse; replaced" });
            if (waited) this.emit("takeover");
            return this.lead(found.token);
          }
          if (found.state === "done" && !isRecord(found.record)) {
            // A store bug or foreign value must never crash a request: treat it as absent.
            this.emit("store-error", { reason: "stored record did not parse" });
            if (o.onStoreError === "closed") return this.unavailable();
            return this.lead(null);
          }
          if (found.state === "done") {
            if (found.record.fingerprint !== this.fingerprint) return this.conflict();
            return { kind: "record", record: found.record };
          }
          if (found.fingerprint !== this.fingerprint) return this.conflict();
          if (!waited) {
            waited = true;
            this.emit("wait");
            unsubscribe = store.subscribe?.(this.storeKey, wakeUp);
          }
          const remaining = deadline - now();
          if (remaining <= 0) {
            this.emit("timeout");
            return {
              kind: "answer",
              make: inProgress,
            };
          }
          if (!notified) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(() => wake?.(), Math.min(delay, remaining));
              wake = () => {
                clearTimeout(timer);
                this.ctrl.signal.removeEventListener("abort", wakeUp);
                wake = undefined;
                resolve();
              };
              this.ctrl.signal.addEventListener("abort", wakeUp);
            });
          }
          notified = false;
          if (this.ctrl.signal.aborted) return { kind: "fail", error: this.ctrl.signal.reason };
          delay = Math.min(delay * 1.5, Limits.MaxPollMs);
        }
      } finally {
        unsubscribe?.();
      }
    }

    private unavailable(): Outcome {
      return { kind: "answer", make: () => errorResponse("IDEMPOTENCY_STORE_UNAVAILABLE", 503) };
    }

    private conflict(): Outcome {
      this.emit("conflict");
      return conflict();
    }

    /** Sends upstream; with a token, holds the lease until the body is committed or released. */
    private async lead(token: string | null): Promise<Outcome> {
      const store = o.store;
      const { storeKey, emit } = this;
      this.leading = true;
      emit("execute");
      let heartbeat: ReturnType<typeof setInterval> | undefined;
      const finish = (op: "commit" | "release", record?: StoredRecord): Promise<unknown> => {
        clearInterval(heartbeat);
        if (token === null) return Promise.resolve();
        return storeCall(op, () =>
          record ? store.commit(storeKey, token, record, this.ttlMs) : store.release(storeKey, token),
        ).then(
          (ok) => ok || emit("stale-token", { reason: `${op} found the lease held by someone else` }),
          (error: unknown) => emit("store-error", { reason: `${op} failed`, error }),
        );
      };
      if (token !== null) {
        heartbeat = setInterval(() => {
          storeCall("renew", () => store.renew(storeKey, token, o.leaseMs)).then(
            (ok) => {
              if (ok) return;
              clearInterval(heartbeat);
              emit("stale-token", { reason: "renew found the lease held by someone else" });
            },
            (error: unknown) => emit("store-error", { reason: "renew failed", error }),
          );
        }, o.leaseMs / 3);
        (heartbeat as { unref?: () => void }).unref?.();
      }

      let response: Response;
      try {
        response = await this.send(this.request, this.upstream());
      } catch (error) {
        void finish("release");
        return { kind: "fail", error };
      }
      if (response.status < 200 || response.status > 599) {
        // Opaque responses (status 0) cannot be copied into a new Response; hand out clones, store nothing.
        void finish("release");
        return { kind: "raw", response };
      }
      let storable: boolean;
      try {
        storable = o.shouldStore(response);
      } catch {
        storable = false;
      }
      if (!storable) {
        emit("not-stored", { reason: `status ${response.status} is not stored` });
        void finish("release");
        // Callers already waiting share this answer; a retry that comes after it must run again.
        this.done();
      }
      const head = response;
      const commit = (body: Uint8Array): void => {
        if (!storable) {
          this.done();
          return;
        }
        const record: StoredRecord = {
          status: head.status,
          statusText: head.statusText,
          headers: storableHeaders(head.headers),
          body,
          createdAt: Date.now(),
          fingerprint: this.fingerprint,
        };
        void finish("commit", record).finally(() => this.done());
      };
      if (response.body === null || NULL_BODY.has(response.status)) {
        commit(new Uint8Array(0));
        return { kind: "live", head, body: null };
      }
      const body = new Broadcast(response.body, o.maxBodyBytes, {
        end: commit,
        overflow: () => {
          this.done();
          if (!storable) return;
          storable = false;
          emit("not-stored", { reason: `body larger than maxBodyBytes (${o.maxBodyBytes})` });
          void finish("release");
        },
        error: () => {
          this.done();
          if (storable) void finish("release");
        },
      });
      return { kind: "live", head, body };
    }
  }

  async function handle(request: Request, send: Send, side: "client" | "server", call: CallOptions = {}) {
    const method = request.method.toUpperCase();
    const headerValue = request.headers.get(KEY_HEADER);
    let key =
      call.key !== undefined ? validateKey(call.key) : headerValue !== null ? keyFromHeader(headerValue) : undefined;
    const autoEligible = side === "client" && o.autoKey !== false && o.autoKey.methods.has(method);
    const passThrough = (req: Request): Promise<Response> => {
      if (call.requireKey) return Promise.resolve(errorResponse("IDEMPOTENCY_KEY_MISSING", 400));
      counts.passedThrough++;
      return send(req);
    };
    // A declared length spares `request.body`: on some servers (@hono/node-server) that getter turns a
    // lightweight request into a full one with a web stream over the socket, which costs more than the rest.
    const length = declaredLength(request);
    const bodyless = length === null ? request.body === null : length === 0;
    if (key === undefined && (call.streamedBody || (bodyless && !autoEligible))) {
      return passThrough(request);
    }

    let bytes: Uint8Array | null = null;
    if (!bodyless) {
      // A client body handed over whole is in memory already, and a declared length bounds the read: only
      // other streams are read with a limit.
      const read =
        (side === "client" && !call.streamedBody) || (length !== null && length <= o.maxBodyBytes)
          ? { bytes: new Uint8Array(await request.arrayBuffer()) }
          : await readLimited(request, o.maxBodyBytes);
      if ("rest" in read || read.bytes.length > o.maxBodyBytes) {
        if (key !== undefined) return tooLarge();
        const body = "rest" in read ? { body: read.rest, duplex: "half" } : { body: read.bytes as BodyInit };
        return passThrough(new Request(request, body as RequestInit));
      }
      bytes = read.bytes;
    }
    const json = parseJsonBody(bytes);
    if (key === undefined) key = keyFromJson(json);
    const auto = key === undefined;
    const withBody = (): Request => new Request(request, bytes === null ? {} : { body: bytes as BodyInit });
    if (auto && !autoEligible) return passThrough(withBody());

    const started = now();
    counts.requests++;
    const url = new URL(request.url);
    const target = side === "client" ? url.href : url.pathname + url.search;
    const [fingerprint, keyHash, scope] = await Promise.all([
      o.fingerprint
        ? o.fingerprint(withBody())
        : fingerprintOf(method, target, bytes, json, request.headers.get("content-type")),
      auto ? undefined : sha256(key as string),
      scopeOf(request, withBody),
    ]);
    const hash = keyHash ?? fingerprint;
    const storeKey = `${o.namespace}:${scope}:${hash}`;
    const emit = emitter(hash, started);
    const signal = request.signal;

    const existing = flights.get(storeKey);
    if (existing?.fingerprint === fingerprint) {
      // waitTimeoutMs 0 (the IETF draft's immediate 409): a duplicate in this process does not wait either.
      if (o.waitTimeoutMs === 0) {
        emit("timeout");
        return inProgress();
      }
      emit("join");
      return existing.attach(signal, false);
    }
    // Another request under this key conflicts only once it leads; until then the store decides,
    // else a doomed local request would turn away a correct one.
    if (existing?.leading) {
      emit("conflict");
      return errorResponse("IDEMPOTENCY_CONFLICT", o.conflictStatus);
    }

    const sendKey =
      side === "client" &&
      headerValue === null &&
      (o.sendKeyHeader === "always" ||
        (o.sendKeyHeader === "same-origin" &&
          (typeof location === "undefined" || !location.origin || location.origin === url.origin)));
    const flight: Flight = new Flight(
      storeKey,
      fingerprint,
      request,
      () => {
        // `signal: null`, not none: a copy of a Request otherwise follows that Request's own signal.
        const init: RequestInit = { signal: call.abortable === false ? null : flight.ctrl.signal };
        if (bytes !== null) init.body = bytes as BodyInit;
        if (sendKey) {
          const headers = new Headers(request.headers);
          headers.set(KEY_HEADER, key ?? fingerprint);
          init.headers = headers;
        }
        return init;
      },
      send,
      auto && o.autoKey ? o.autoKey.windowMs : call.ttlSeconds !== undefined ? call.ttlSeconds * 1000 : o.ttlMs,
      scope === "anonymous",
      emit,
    );
    if (!existing) flights.set(storeKey, flight);
    const response = flight.attach(signal, true);
    flight.start();
    return response;
  }

  const tooLarge = (): Response =>
    errorResponse(
      "IDEMPOTENCY_BODY_TOO_LARGE",
      413,
      `Request body exceeds maxBodyBytes (${o.maxBodyBytes}); it cannot be fingerprinted for an idempotency key`,
    );

  /** Who owns a key: the hash of the caller's credentials, so no client ever reads another's response. */
  async function scopeOf(request: Request, withBody: () => Request): Promise<string> {
    if (o.scope) return sha256(`scope\n${await o.scope(withBody())}`);
    const credential = request.headers.get("authorization") ?? request.headers.get("cookie");
    return credential === null ? "anonymous" : sha256(`credential\n${credential}`);
  }

  return {
    handle,
    stats: () => ({ ...counts, saved: counts.joined + counts.replayed }),
  };
}

/** The Content-Length a request declares, when it is a valid one. */
function declaredLength(request: Request): number | null {
  const value = request.headers.get("content-length");
  return value !== null && /^\d{1,15}$/.test(value) ? Number(value) : null;
}

/** Reads a request body up to `limit` bytes; past it, hands back a stream of everything (nothing is lost). */
async function readLimited(
  request: Request,
  limit: number,
): Promise<{ bytes: Uint8Array } | { rest: ReadableStream<Uint8Array> }> {
  const reader = (request.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { bytes: concat(chunks, size) };
    chunks.push(value);
    size += value.length;
    if (size > limit) {
      return {
        rest: new ReadableStream<Uint8Array>({
          start(controller) {
            for (const chunk of chunks) controller.enqueue(chunk);
          },
          async pull(controller) {
            const next = await reader.read();
            if (next.done) controller.close();
            else controller.enqueue(next.value);
          },
          cancel: (reason) => reader.cancel(reason),
        }),
      };
    }
  }
}

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function isRecord(r: StoredRecord): boolean {
  return (
    typeof r === "object" &&
    r !== null &&
    Number.isInteger(r.status) &&
    r.status >= 200 &&
    r.status <= 599 &&
    typeof r.statusText === "string" &&
    Array.isArray(r.headers) &&
    r.body instanceof Uint8Array &&
    typeof r.fingerprint === "string"
  );
}

function withUrl(response: Response, url: string): Response {
  if (url && !response.url) Object.defineProperty(response, "url", { value: url });
  return response;
}

/**
 * The leader's response body, read once and handed live to every caller: each reader gets the
 * bytes so far, then the rest as they arrive. Bytes are kept (for the record and late joiners)
 * up to `limit`.
 */
class Broadcast {
  private chunks: Uint8Array[] = [];
  private size = 0;
  private kept = true;
  private state: "open" | "ended" | "failed" = "open";
  private failure: unknown;
  private readonly readers = new Set<ReadableStreamDefaultController<Uint8Array>>();

  constructor(
    source: ReadableStream<Uint8Array>,
    private readonly limit: number,
    private readonly hooks: { end: (body: Uint8Array) => void; overflow: () => void; error: (e: unknown) => void },
  ) {
    void this.pump(source.getReader());
  }

  private async pump(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const reader of this.readers) reader.enqueue(value.slice());
        if (!this.kept) continue;
        this.size += value.length;
        if (this.size > this.limit) {
          this.kept = false;
          this.chunks = [];
          this.hooks.overflow();
        } else {
          this.chunks.push(value);
        }
      }
    } catch (error) {
      this.state = "failed";
      this.failure = error;
      for (const reader of this.readers) reader.error(error);
      this.readers.clear();
      this.hooks.error(error);
      return;
    }
    this.state = "ended";
    for (const reader of this.readers) reader.close();
    this.readers.clear();
    if (this.kept) this.hooks.end(concat(this.chunks, this.size));
  }

  /** A new stream for one caller; its signal aborting errors only that stream. */
  reader(signal: AbortSignal, aborted: () => void): ReadableStream<Uint8Array> {
    let self: ReadableStreamDefaultController<Uint8Array>;
    const onAbort = () => {
      if (!this.readers.delete(self)) return;
      self.error(signal.reason);
      aborted();
    };
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        self = controller;
        for (const chunk of this.chunks) controller.enqueue(chunk.slice());
        if (this.state === "ended") return controller.close();
        if (this.state === "failed") return controller.error(this.failure);
        this.readers.add(controller);
        signal.addEventListener("abort", onAbort, { once: true });
      },
      cancel: () => {
        this.readers.delete(self);
        signal.removeEventListener("abort", onAbort);
      },
    });
  }
}
