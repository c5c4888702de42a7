// idemfetch/express: the server middleware as an Express (or Connect) middleware, a thin layer over server.ts.
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import { createRequest, faceOf, type NodeFace, routeHeaders, sendResponse } from "./node-http.ts";
import { DEFAULTS } from "./options.ts";
import { NULL_BODY } from "./record.ts";
import { idempotencyLayer, type ServerIdempotencyOptions } from "./server.ts";

export type { ServerIdempotencyOptions } from "./server.ts";

/** Express's `next`. */
type Next = (error?: unknown) => void;

/** What Express adds to Node's request that the face reads. */
type ExpressRequest = IncomingMessage & { originalUrl?: string; body?: unknown; rawBody?: unknown };

/** An Express middleware, plus the counters of what it saved and its shutdown. */
export type IdempotencyMiddleware = ((req: IncomingMessage, res: ServerResponse, next: Next) => void) & NodeFace;

/**
 * A body parser's `verify` that keeps the raw bytes (`req.rawBody`), so a middleware behind
 * `express.json({ verify: keepRawBody })` fingerprints exactly what the client sent.
 */
export const keepRawBody = (req: IncomingMessage, _res: ServerResponse, buf: Buffer): void => {
  (req as ExpressRequest).rawBody = buf;
};

/**
 * `app.post("/orders", idempotency(options), handler)`: duplicate requests run the routes behind it once.
 * Works before or after a body parser. Options are those of `idemfetch/server`.
 */
export const idempotency = (options: ServerIdempotencyOptions = {}): IdempotencyMiddleware => {
  const layer = idempotencyLayer(options);
  const limit = options.maxBodyBytes ?? DEFAULTS.maxBodyBytes;

  async function run(req: ExpressRequest, res: ServerResponse, next: Next): Promise<void> {
    const own = { writeHead: res.writeHead, write: res.write, end: res.end, flushHeaders: res.flushHeaders };
    const before = res.getHeaders();
    const body = await bodyOf(req, limit);
    // node-fetch-server converts the head (URL, headers, abort on close); shown a bodyless GET, it builds no
    // body stream over `req`. The body is the face's: a parser may have read it already, or the routes must
    // still read it from `req` (peek puts it back), so the library must not consume it.
    const head = createRequest(
      Object.create(req, { method: { value: "GET" }, url: { value: req.originalUrl ?? req.url } }),
      res,
    );
    const request = new Request(head, { method: String(req.method), body: body as BodyInit | null });
    const response = await layer.handle(request, () => capture(res, before, next));
    await sendResponse(unpatched(res, own), response);
  }

  const middleware = function idempotency(req: IncomingMessage, res: ServerResponse, next: Next): void {
    run(req, res, next).catch(next);
  };
  return Object.assign(middleware, faceOf(layer));
};

const encoder = new TextEncoder();

/** The request body as the engine needs it, leaving `req` as the routes behind expect it. */
async function bodyOf(req: ExpressRequest, limit: number): Promise<Uint8Array | null> {
  if (req.method === "GET" || req.method === "HEAD") return null;
  const length = req.headers["content-length"];
  if ((length === undefined || length === "0") && req.headers["transfer-encoding"] === undefined) return null;
  if (!req.readableEnded) return peek(req, limit);
  // A body parser ran first: its raw bytes when its `verify` kept them, else its value re-serialized (JSON
  // is fingerprinted canonically, so that equals the raw bytes' fingerprint).
  const { rawBody, body } = req;
  if (rawBody instanceof Uint8Array) return rawBody;
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return encoder.encode(body);
  return body === undefined ? null : encoder.encode(JSON.stringify(body));
}

/**
 * Reads up to `limit + 1` bytes of an unread body and puts them back (`unshift`, before 'end' is emitted),
 * so the routes (and their body parser) still read the whole body from `req`; past the limit the rest is
 * never read here and streams to the routes as it arrives.
 */
function peek(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (error?: unknown): void => {
      req.off("readable", onReadable);
      req.off("error", finish);
      req.off("close", onClose);
      if (error !== undefined) {
        reject(error);
        return;
      }
      const bytes = Buffer.concat(chunks, size);
      if (size > 0) req.unshift(bytes);
      resolve(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
    };
    const onClose = (): void => finish(new Error("idemfetch: the request closed before its body was read"));
    function onReadable(): void {
      while (size <= limit) {
        const chunk: Buffer | null = req.read();
        if (chunk === null) {
          // `complete` is set before the end of the stream is pushed: null now means the body is all here.
          if (req.complete) finish();
          return;
        }
        chunks.push(chunk);
        size += chunk.length;
      }
      finish();
    }
    req.on("readable", onReadable);
    req.once("error", finish);
    req.once("close", onClose);
  });
}

type Own = Pick<ServerResponse, "writeHead" | "write" | "end" | "flushHeaders">;

/** Bytes queued for the slowest reader before write() returns false, as a socket's buffer would. */
const HIGH_WATER_BYTES = 64 * 1024;

/**
 * What the routes write to `res`, as a live Web Response. The head resolves at the first writeHead, write,
 * flushHeaders or end; chunks flow on as they are written (an SSE stream reaches joiners live); write()
 * returns false once 64 KiB wait unread and 'drain' follows when the reader pulls, so a piping route is held
 * back like a slow socket would hold it. Nothing reaches the socket here: the face sends what the layer answers.
 */
function capture(res: ServerResponse, before: OutgoingHttpHeaders, next: Next): Promise<Response> {
  return new Promise<Response>((resolve) => {
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let needDrain = false;
    let ended = false;
    const body = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          controller = c;
        },
        pull: () => {
          if (!needDrain) return;
          needDrain = false;
          res.emit("drain");
        },
        cancel: () => {
          ended = true;
        },
      },
      new ByteLengthQueuingStrategy({ highWaterMark: HIGH_WATER_BYTES }),
    );
    let headed = false;
    const head = (): void => {
      if (headed) return;
      headed = true;
      const status = res.statusCode;
      const headers = routeHeaders(before, res.getHeaders());
      resolve(new Response(NULL_BODY.has(status) ? null : body, { status, statusText: res.statusMessage, headers }));
    };
    const enqueue = (chunk: unknown, encoding: unknown): void => {
      if (ended || chunk === undefined || chunk === null || typeof chunk === "function") return;
      const bytes =
        typeof chunk === "string"
          ? Buffer.from(chunk, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8")
          : (chunk as Uint8Array);
      if (bytes.length === 0) return;
      controller.enqueue(bytes);
      if ((controller.desiredSize ?? 1) <= 0) needDrain = true;
    };
    const callback = (args: unknown[]): (() => void) | undefined =>
      args.find((a): a is () => void => typeof a === "function");

    const patch: Own = {
      writeHead(this: ServerResponse, status: number, ...rest: unknown[]) {
        if (!headed) {
          res.statusCode = status;
          if (typeof rest[0] === "string") res.statusMessage = rest.shift() as string;
          const headers = rest[0];
          if (Array.isArray(headers)) {
            for (let i = 0; i + 1 < headers.length; i += 2) res.appendHeader(String(headers[i]), headers[i + 1]);
          } else if (headers && typeof headers === "object") {
            for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
          }
        }
        head();
        return res;
      },
      write(chunk: unknown, ...rest: unknown[]) {
        head();
        enqueue(chunk, rest[0]);
        const cb = callback(rest);
        if (cb) queueMicrotask(cb);
        return !needDrain;
      },
      end(...args: unknown[]) {
        head();
        enqueue(args[0], args[1]);
        const cb = callback(args);
        if (cb) res.once("finish", cb);
        if (!ended) {
          ended = true;
          controller.close();
        }
        return res;
      },
      flushHeaders() {
        head();
      },
    } as unknown as Own;
    Object.assign(res, patch);
    next();
  });
}

/**
 * `res` with its methods as they were before capture, for the library that sends the answer while the
 * routes may still be writing to the capture. Functions are bound to the real `res`.
 */
function unpatched(res: ServerResponse, own: Own): ServerResponse {
  return new Proxy(res, {
    get(target, name) {
      const value = name in own ? own[name as keyof Own] : Reflect.get(target, name, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
