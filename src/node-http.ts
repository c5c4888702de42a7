// Shared by idemfetch/express and idemfetch/fastify: Node's http objects to and from the Web Request/Response of the layer.
import type { OutgoingHttpHeaders } from "node:http";
import { Readable } from "node:stream";
import type { ReadableStream as NodeWebStream } from "node:stream/web";
import type { Controls, IdempotencyLayer } from "./server.ts";

export { createRequest, sendResponse } from "@remix-run/node-fetch-server";

/** What a Node face exposes besides its middleware: the layer's counters, forget() and shutdown. */
export type NodeFace = Controls;

/** stats(), forget() and close() of a face, delegated to its layer. */
export const faceOf = (layer: IdempotencyLayer): NodeFace => ({
  stats: layer.stats,
  forget: layer.forget,
  close: layer.close,
});

/**
 * The headers a route set or changed since `before` was taken. Headers put on the response earlier by
 * outer middleware (CORS, X-Powered-By) stay that middleware's: they go out on every response, replays
 * included, but are never stored, so one caller's CORS answer is not replayed to another.
 */
export function routeHeaders(before: OutgoingHttpHeaders, now: OutgoingHttpHeaders): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(now)) {
    if (value === undefined || value === before[name]) continue;
    if (Array.isArray(value)) for (const item of value) headers.append(name, item);
    else headers.set(name, String(value));
  }
  return headers;
}

/** A Web body as a Node stream, for frameworks that send Node streams. */
export const nodeStream = (body: ReadableStream<Uint8Array>): Readable => Readable.fromWeb(body as NodeWebStream);

/** A Node stream as a Web body. */
export const webStream = (stream: Readable): ReadableStream<Uint8Array> =>
  Readable.toWeb(stream) as unknown as ReadableStream<Uint8Array>;
