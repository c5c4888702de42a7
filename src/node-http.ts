// The Node faces' side of the engine (node:http, Express, Fastify): a request as a call plan, a route's writes as an answer, replies written back.
import { type IncomingMessage, type OutgoingHttpHeaders, OutgoingMessage, type ServerResponse } from "node:http";
import { concat } from "./body.ts";
import type { Answer, Plan, Reply, Source, UnreadBody } from "./call.ts";
import { type Call, createEngine, type Result } from "./engine.ts";
import { errorBody, isIdempotencyKeyError } from "./errors.ts";
import { DEFAULTS, normalizeOptions } from "./options.ts";
import { NULL_BODY } from "./record.ts";
import type { Controls, ServerIdempotencyOptions } from "./server.ts";
import { DEFAULT_METHODS, methodSet, SERVER_FACE, serverOptions } from "./server-policy.ts";

/** What a Node face exposes besides its middleware: the counters, forget() and shutdown. */
export type NodeFace = Controls;

const encoder = new TextEncoder();
/** Up to this size a whole body goes out in one write with the head. */
const ONE_WRITE_BYTES = 16 * 1024;

/** What `res` emits for the face's own writer when its client left while the route's 'close' is held back. */
const CLIENT_GONE = Symbol("idemfetch: client gone");

/** Bytes a route may write ahead of the slowest reader before write() returns false, as a socket's buffer would. */
const HIGH_WATER_BYTES = 64 * 1024;

/** How a Node face hands one request to the layer. */
export interface NodeCall {
  /** The path and query the client asked for (Express's `originalUrl`). */
  path: string;
  /** The body: unread on the socket, in memory, or none. `comparable: false`: bytes gone and not recoverable. */
  body: Uint8Array | null | UnreadBody;
  /** The body's bytes are gone and its parsed value may have lost precision: never the same as another request. */
  incomparable?: boolean;
  /** Headers on `res` before the route ran: outer middleware's, never stored. */
  before: OutgoingHttpHeaders;
  /** Runs the route (it writes its answer to `res`); `fail` ends its answer badly (it threw). */
  route(fail: (error: unknown) => void): void;
  /** Whether the route's answer may be stored (false: a reply the face cannot vouch for, e.g. hijacked). */
  vouched?: () => boolean;
  /** Writes a reply this caller did not cause; default: straight to `res`. */
  write?: (reply: Exclude<Reply, { native: unknown }>) => void;
}

export interface NodeLayer extends Controls {
  /** Runs one request through the protocol; resolves once its reply is written (or handed to the route). */
  serve(req: IncomingMessage, res: ServerResponse, call: NodeCall): Promise<void>;
  /** Whether the layer handles this method at all. */
  handles(method: string | undefined): boolean;
}

/** The server middleware over Node's http objects: no Web Request, Response, stream or AbortSignal per call. */
export function nodeLayer(options: ServerIdempotencyOptions = {}): NodeLayer {
  const { shared, methods, required, waitUntil } = serverOptions(options);
  const o = normalizeOptions(shared, "server");
  const engine = createEngine(o, SERVER_FACE);
  const handled = methodSet("methods", methods, DEFAULT_METHODS);

  async function serve(req: IncomingMessage, res: ServerResponse, nc: NodeCall): Promise<void> {
    const method = String(req.method).toUpperCase();
    let own: Own = ownOf(res);
    const call: Call<undefined> = {
      plan: nodePlan(req, nc),
      requireKey: required.has(method),
      send: (upstream) => {
        // The client left before its route started and no one else waits for this answer: the route is not run
        // (its framework may no longer read the body: Express's parsers skip a finished request), the lease is
        // released, and a retry runs it.
        if (res.closed && upstream.callers() <= 1) return Promise.reject(new Error(CLIENT_LEFT_EARLY));
        const capture = new Capture(
          res,
          nc.before,
          o.leaseMs,
          o.leaseMs + o.waitTimeoutMs,
          () => upstream.callers() > 1,
        );
        own = capture.own;
        nc.route((error) => capture.fail(error));
        return capture.answer.then((answer) => {
          if (nc.vouched?.() === false) answer.storable = false;
          // A route that answered in one go (res.json) has ended by now: its body is whole, in memory.
          if (answer.body === capture) answer.body = capture.whole() ?? capture;
          return answer;
        });
      },
      pass: () => {
        nc.route((error) => res.destroy(error as Error));
        return Promise.resolve(undefined);
      },
    };
    if (waitUntil) call.waitUntil = waitUntil;
    let result: Result<undefined>;
    try {
      result = await engine.handle(call);
    } catch (error) {
      // The route's own failure reached the leader's caller and every joiner: answered as a failed route would be.
      if (!isIdempotencyKeyError(error)) return failed(res, own);
      const { contentType, text } = errorBody("IDEMPOTENCY_KEY_INVALID", 400, error.message, o.errorFormat);
      result = {
        status: 400,
        statusText: "",
        headers: [["content-type", contentType]],
        body: encoder.encode(text),
        own: false,
      };
    }
    if ("passed" in result || "native" in result) return;
    if (!result.own && nc.write) return nc.write(result);
    return writeReply(res, result, own);
  }

  return {
    serve,
    handles: (method) => handled.has(String(method).toUpperCase()),
    stats: engine.stats,
    forget: engine.forget,
    close: engine.close,
  };
}

/** The plan of a Node request: its headers read where they are, its body as the face found it. */
function nodePlan(req: IncomingMessage, nc: NodeCall): Plan {
  const headers = req.headers;
  // The fingerprint covers path and query only: the Host header (the client's to choose) stays out of it.
  const url = `http://localhost${nc.path.startsWith("/") ? nc.path : `/${nc.path}`}`;
  const header = (name: string): string | null => {
    const value = headers[name];
    return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
  };
  const plan: Plan = {
    method: String(req.method).toUpperCase(),
    url,
    header,
    body: nc.body,
    request: (body) =>
      new Request(withHost(url, headers.host), {
        method: String(req.method),
        headers: Object.entries(headers).flatMap(([name, value]) =>
          value === undefined ? [] : (Array.isArray(value) ? value : [value]).map((v): [string, string] => [name, v]),
        ),
        body: body as BodyInit | null,
      }),
  };
  if (nc.incomparable) plan.incomparable = true;
  return plan;
}

/** The plan's URL on the host the client named, for the custom options' Request (localhost if it names none usable). */
function withHost(url: string, host: string | undefined): string {
  try {
    return new URL(url.slice("http://localhost".length), `http://${host ?? "localhost"}`).href;
  } catch {
    return url;
  }
}

/**
 * The body still on the socket, read on demand up to a limit and put back (`unshift`, before 'end' is
 * emitted), so the route (and its body parser) still reads the whole body from `req`; past the limit, or at
 * a first byte that is not `{` when only objects are wanted, the rest is never read here.
 */
export function unreadBody(req: IncomingMessage): UnreadBody | null {
  const declared = req.headers["content-length"];
  const length = declared !== undefined && /^\d{1,15}$/.test(declared) ? Number(declared) : null;
  if ((length === null || length === 0) && req.headers["transfer-encoding"] === undefined) return null;
  return { length, read: (limit, onlyObjects) => peek(req, limit, onlyObjects) };
}

function peek(req: IncomingMessage, limit: number, onlyObjects: boolean): Promise<Uint8Array | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let sniffing = onlyObjects;
    const finish = (error: unknown, whole: boolean): void => {
      req.off("readable", onReadable);
      req.off("error", onError);
      req.off("close", onClose);
      if (error !== undefined) {
        reject(error);
        return;
      }
      const bytes = Buffer.concat(chunks, size);
      if (size > 0) req.unshift(bytes);
      resolve(whole ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length) : null);
    };
    const onError = (error: unknown): void => finish(error, false);
    const onClose = (): void => finish(new Error("idemfetch: the request closed before its body was read"), false);
    function onReadable(): void {
      for (;;) {
        const chunk: Buffer | null = req.read();
        if (chunk === null) {
          // `complete` is set before the end of the stream is pushed: null now means the body is all here.
          if (req.complete) finish(undefined, true);
          return;
        }
        chunks.push(chunk);
        size += chunk.length;
        if (sniffing) {
          const first = chunk.find((b) => b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09);
          if (first !== undefined) {
            sniffing = false;
            if (first !== 0x7b) {
              finish(undefined, false);
              return;
            }
          }
        }
        if (size > limit) {
          finish(undefined, false);
          return;
        }
      }
    }
    req.on("readable", onReadable);
    req.once("error", onError);
    req.once("close", onClose);
  });
}

const CLIENT_LEFT_EARLY = "idemfetch: the client left before its route started";

/** Node's own `headersSent` getter: while a capture holds `res`, the route sees its own head as sent instead. */
const HEADERS_SENT = Object.getOwnPropertyDescriptor(OutgoingMessage.prototype, "headersSent")?.get;
/** Whether `res` really sent its head to the socket. */
const sent = (res: ServerResponse): boolean =>
  HEADERS_SENT ? HEADERS_SENT.call(res) === true : Boolean((res as unknown as { _header?: unknown })._header);

/** `res`'s writing methods, called with `res` as `this`. */
type Method = (this: ServerResponse, ...args: unknown[]) => unknown;
type Own = Record<"writeHead" | "write" | "end" | "flushHeaders" | "destroy", Method>;
const ownOf = (res: ServerResponse): Own => res as unknown as Own;

/**
 * What the route writes to `res`, as an answer: the head at the first writeHead, write, flushHeaders or
 * end; chunks as they are written (an SSE stream reaches joiners live). write() returns false once 64 KiB
 * wait unread and 'drain' follows when they are read, so a piping route is held back like a slow socket.
 * An answer that ends badly fails the source: an error on `res` (a socket the route destroyed), a route that
 * threw, or, once its client left, a route that writes nothing for `leaseMs`. Nothing reaches the socket here:
 * the face writes what the layer answers, with `res`'s own methods restored.
 */
class Capture implements Source {
  readonly answer: Promise<Answer>;
  private resolveHead!: (answer: Answer) => void;
  private rejectHead!: (error: unknown) => void;
  /** `res`'s own methods: the face writes with them while the route may still write to the capture. */
  readonly own: Own;
  private chunks: Uint8Array[] = [];
  private queued = 0;
  private state: "open" | "ended" | "failed" = "open";
  private failure: unknown;
  private headed = false;
  private needDrain = false;
  private wake: (() => void) | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** `res`'s own emit, while the capture holds back its 'close'. */
  private readonly emit: ServerResponse["emit"];
  /** Whether the client left (the socket closed) while the route was answering. */
  private gone = false;
  /** A 'close' of `res` the route has not been told of yet. */
  private closeHeld = false;
  private readonly idleMs: number;

  constructor(
    private readonly res: ServerResponse,
    private readonly before: OutgoingHttpHeaders,
    leaseMs: number,
    /**
     * How long a route whose client left before its answer began may still take to begin it: its lease holds
     * until then, so a retry joins instead of running it twice. A duplicate waits `waitTimeoutMs` at most.
     */
    private readonly answerMs: number,
    /** Whether callers besides the one on `res` read this answer (joiners). */
    readonly shared: () => boolean,
  ) {
    this.answer = new Promise((resolve, reject) => {
      this.resolveHead = resolve;
      this.rejectHead = reject;
    });
    const now = ownOf(res);
    this.own = {
      writeHead: now.writeHead,
      write: now.write,
      end: now.end,
      flushHeaders: now.flushHeaders,
      destroy: now.destroy,
    };
    const capture = this;
    const callback = (args: unknown[]) => args.find((a): a is () => void => typeof a === "function");
    Object.assign(res, {
      writeHead(status: number, ...rest: unknown[]) {
        capture.writeHead(status, rest);
        return res;
      },
      write(chunk: unknown, ...rest: unknown[]) {
        capture.head();
        capture.push(chunk, rest[0]);
        const cb = callback(rest);
        if (cb) queueMicrotask(cb);
        return !capture.needDrain;
      },
      end(...args: unknown[]) {
        capture.head();
        capture.push(args[0], args[1]);
        const cb = callback(args);
        if (cb) res.once("finish", cb);
        capture.close();
        return res;
      },
      flushHeaders() {
        capture.head();
      },
      destroy(error?: unknown) {
        // The route (or its framework, on a failed stream) gave up on its answer: it ends badly now.
        capture.fail(error ?? new Error("idemfetch: the route destroyed its response"));
        return capture.own.destroy.call(res, error);
      },
    });
    // As on a real socket, the route's head counts as sent once it wrote it: an error handler that checks
    // `res.headersSent` then ends the answer badly instead of writing a fresh one into it.
    Object.defineProperty(res, "headersSent", { configurable: true, get: () => capture.headed || sent(res) });
    // The leader's client leaving is not the route's business while its answer is being taken: joiners and the
    // next retry want it whole. So `res`'s 'close' is held back from the route (and its framework, which would
    // destroy a piped stream) until the answer has ended or failed; the face's own writer hears CLIENT_GONE.
    const emit = res.emit;
    this.emit = emit;
    res.emit = function (this: ServerResponse, event: string | symbol, ...args: unknown[]): boolean {
      if (event !== "close" || capture.state !== "open") return emit.call(this, event, ...args);
      if (!capture.shared()) {
        capture.left(false);
        return emit.call(this, event, ...args);
      }
      capture.closeHeld = true;
      capture.left(true);
      emit.call(this, CLIENT_GONE);
      return true;
    } as ServerResponse["emit"];
    this.idleMs = leaseMs;
    res.once("error", (error) => this.fail(error));
    // The client left before the route was handed `res` (a slow acquire) while others wait for the answer: its
    // 'close' came and went, and the route runs for them as for a client that left mid-answer.
    if (res.closed) this.left(this.shared());
  }

  /**
   * The client left while the route was answering. With other callers reading the answer, the route goes on
   * (told nothing) until it ends, or until it has written nothing for `leaseMs`: a route that stops on 'close'
   * without `end()`, a stream its framework dropped. Alone, the answer ends badly at once if the route wrote,
   * else `answerMs` later if it still has not answered (its result is what the next retry wants, but not
   * forever; released sooner, a slow route would run again beside itself).
   */
  private left(held: boolean): void {
    if (held) {
      this.gone = true;
      this.armIdle();
    } else if (this.headed) {
      this.fail(new Error("idemfetch: the answer ended badly (its connection closed)"));
    } else {
      this.timer = setTimeout(() => this.fail(new Error("idemfetch: the route did not answer")), this.answerMs);
    }
  }

  private armIdle(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(
      () => this.fail(new Error("idemfetch: the route stopped answering after its client left")),
      this.idleMs,
    );
  }

  /** `res` with its own methods back once the route is done with it, and the 'close' it was not told of. */
  private restore(): void {
    Object.assign(this.res, this.own);
    Reflect.deleteProperty(this.res, "headersSent");
    this.res.emit = this.emit;
    if (this.closeHeld) {
      this.closeHeld = false;
      const res = this.res;
      queueMicrotask(() => res.emit("close"));
    }
  }

  read(): Promise<ReadableStreamReadResult<Uint8Array>> {
    const chunk = this.chunks.shift();
    if (chunk !== undefined) {
      this.queued -= chunk.length;
      if (this.needDrain && this.queued < HIGH_WATER_BYTES) {
        this.needDrain = false;
        queueMicrotask(() => this.res.emit("drain"));
      }
      return Promise.resolve({ done: false, value: chunk });
    }
    if (this.state === "ended") return Promise.resolve({ done: true, value: undefined });
    if (this.state === "failed") return Promise.reject(this.failure);
    return new Promise<void>((resolve) => {
      this.wake = resolve;
    }).then(() => this.read());
  }

  /** The whole body when the route has ended it and nothing was read yet; else undefined. */
  whole(): Uint8Array | undefined {
    if (this.state !== "ended") return undefined;
    const chunks = this.chunks;
    this.chunks = [];
    this.queued = 0;
    return concat(
      chunks,
      chunks.reduce((size, chunk) => size + chunk.length, 0),
    );
  }

  cancel(): void {
    this.chunks = [];
    this.queued = 0;
    if (this.state === "open") this.state = "ended";
  }

  private writeHead(status: number, rest: unknown[]): void {
    const { res } = this;
    if (!this.headed) {
      res.statusCode = status;
      if (typeof rest[0] === "string") res.statusMessage = rest.shift() as string;
      const headers = rest[0];
      if (Array.isArray(headers)) {
        for (let i = 0; i + 1 < headers.length; i += 2) res.appendHeader(String(headers[i]), headers[i + 1]);
      } else if (headers && typeof headers === "object") {
        for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
      }
    }
    this.head();
  }

  private head(): void {
    if (this.headed) return;
    this.headed = true;
    const { res } = this;
    const status = res.statusCode;
    this.resolveHead({
      status,
      statusText: res.statusMessage ?? "",
      headers: routeHeaders(this.before, res.getHeaders()),
      body: NULL_BODY.has(status) ? null : this,
    });
  }

  private push(chunk: unknown, encoding: unknown): void {
    if (this.state !== "open" || chunk === undefined || chunk === null || typeof chunk === "function") return;
    const bytes =
      typeof chunk === "string"
        ? Buffer.from(chunk, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8")
        : (chunk as Uint8Array);
    if (bytes.length === 0) return;
    if (this.gone) this.armIdle();
    this.chunks.push(bytes);
    this.queued += bytes.length;
    if (this.queued >= HIGH_WATER_BYTES) this.needDrain = true;
    this.wakeUp();
  }

  private close(): void {
    if (this.state !== "open") return;
    this.state = "ended";
    clearTimeout(this.timer);
    this.restore();
    this.wakeUp();
  }

  /** The answer ended badly: every reader (and, before its head, every caller) gets `error`. */
  fail(error: unknown): void {
    if (this.state !== "open") return;
    this.state = "failed";
    this.failure = error;
    clearTimeout(this.timer);
    this.restore();
    // Nothing answered yet: every caller gets the failure; else the body fails where its readers are.
    if (!this.headed) this.rejectHead(error);
    this.wakeUp();
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/**
 * The headers a route set or changed since `before` was taken. Headers put on the response earlier by
 * outer middleware (CORS, X-Powered-By) stay that middleware's: they go out on every response, replays
 * included, but are never stored, so one caller's CORS answer is not replayed to another.
 */
export function routeHeaders(before: OutgoingHttpHeaders, now: OutgoingHttpHeaders): [string, string][] {
  const headers: [string, string][] = [];
  for (const [name, value] of Object.entries(now)) {
    if (value === undefined || value === before[name]) continue;
    if (Array.isArray(value)) for (const item of value) headers.push([name, item]);
    else headers.push([name, String(value)]);
  }
  return headers;
}

/**
 * Writes a reply with `res`'s own methods: the whole body with one `end(bytes)`, a live one chunk by chunk
 * as the socket drains. The leader's headers are on `res` already (the route set them).
 */
export async function writeReply(
  res: ServerResponse,
  reply: Exclude<Reply, { native: unknown }>,
  own: Own = ownOf(res),
): Promise<void> {
  if (sent(res) || res.destroyed) return;
  const { body } = reply;
  const whole = body === null || body instanceof Uint8Array;
  // A whole body goes out with its length: writeHead fixes the framing before end() could.
  if (whole && !NULL_BODY.has(reply.status)) res.setHeader("content-length", body?.length ?? 0);
  const status = reply.statusText ? [reply.status, reply.statusText] : [reply.status];
  if (reply.own) own.writeHead.apply(res, status);
  else own.writeHead.apply(res, [...status, reply.headers.flat()]);
  if (whole) {
    // A small body as a latin1 string: Node sends it in one write with the head (a Buffer costs a writev).
    if (body !== null && body.length <= ONE_WRITE_BYTES) {
      own.end.call(res, Buffer.from(body.buffer, body.byteOffset, body.length).toString("latin1"), "latin1");
    } else {
      own.end.call(res, body ?? undefined);
    }
    return;
  }
  try {
    for (let chunk = await body.pull(); chunk !== null; chunk = await body.pull()) {
      if (res.destroyed) return body.cancel();
      if (!own.write.call(res, chunk)) {
        await new Promise((resolve) => res.once("drain", resolve).once("close", resolve).once(CLIENT_GONE, resolve));
      }
    }
    own.end.call(res);
  } catch {
    // The answer ended badly: this caller's connection ends without a clean end of body.
    res.destroy();
  }
}

/** A route that failed (or an answer that ended badly before its head): 500 when nothing was sent, else the socket ends. */
function failed(res: ServerResponse, own: Own): void {
  if (sent(res) || res.destroyed) {
    res.destroy();
    return;
  }
  own.writeHead.call(res, 500, { "content-type": "text/plain; charset=utf-8" });
  own.end.call(res, "Internal Server Error");
}

/** Headers on `res` right now (outer middleware's), for `NodeCall.before`. */
export const headersOf = (res: ServerResponse): OutgoingHttpHeaders => res.getHeaders();

export { DEFAULTS };
