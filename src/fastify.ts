// idemfetch/fastify: the server middleware as a Fastify 5 plugin, a thin layer over server.ts.
import type { OutgoingHttpHeaders } from "node:http";
import { Readable } from "node:stream";
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import { createRequest, faceOf, type NodeFace, nodeStream, routeHeaders, webStream } from "./node-http.ts";
import { NULL_BODY } from "./record.ts";
import { idempotencyLayer, type ServerIdempotencyOptions } from "./server.ts";

export type { NodeFace } from "./node-http.ts";
export type { ServerIdempotencyOptions } from "./server.ts";

/** One request's way through the hooks. */
interface Flight {
  /** Headers on the reply before the plugin's hook: outer hooks' own, never stored. */
  before: OutgoingHttpHeaders;
  /** What the layer answers this caller. */
  answer?: Promise<Response>;
  /** The request the layer handed on, when the route is to run (its body is the payload to parse). */
  upstream?: Request;
  /** Hands the route's reply to the layer, once onSend has it. */
  deliver?: ((response: Response) => void) | undefined;
  /** Fails the route's call instead (it replied without onSend), so its duplicates and its lease are not held forever. */
  fail?: (error: Error) => void;
}

/** A Fastify plugin, plus the counters of what it saved and its shutdown. */
export type IdempotencyPlugin = FastifyPluginAsync & NodeFace;

/**
 * `app.register(idempotency(options))`: duplicate requests to the routes of that context run their handler
 * once. The raw body is fingerprinted in onRequest and handed to Fastify's parser in preParsing; the route's
 * reply is taken in onSend and goes out as the layer answers it. Options are those of `idemfetch/server`.
 */
export const idempotency = (options: ServerIdempotencyOptions = {}): IdempotencyPlugin => {
  const layer = idempotencyLayer(options);
  const face = faceOf(layer);
  const plugin: FastifyPluginAsync = async function idempotency(app) {
    const flights = new WeakMap<FastifyRequest, Flight>();
    app.addHook("onClose", () => face.close());

    app.addHook("onRequest", async (request, reply) => {
      const flight: Flight = { before: reply.getHeaders() as OutgoingHttpHeaders };
      flights.set(request, flight);
      const web = createRequest(request.raw, reply.raw);
      const answer = await new Promise<Response | null>((resolve, reject) => {
        flight.answer = layer.handle(web, (upstream) => {
          flight.upstream = upstream;
          resolve(null);
          return new Promise<Response>((deliver, fail) => {
            flight.deliver = deliver;
            flight.fail = fail;
          });
        });
        flight.answer.then(resolve, reject);
      });
      // null: this caller leads (or passes through) and Fastify runs the route.
      if (answer === null) {
        reply.raw.once("close", () => {
          // Sent yet onSend never ran: a hijacked reply (reply.hijack()) the layer cannot see.
          if (flight.deliver && reply.sent) flight.fail?.(new Error("idemfetch: the route replied without onSend"));
        });
        return;
      }
      await send(reply, answer);
      return reply;
    });

    app.addHook("preParsing", async (request, _reply, payload) => {
      const body = flights.get(request)?.upstream?.body;
      return body ? nodeStream(body) : payload;
    });

    app.addHook("onSend", async (request, reply, payload) => {
      const flight = flights.get(request);
      const deliver = flight?.deliver;
      if (!flight?.answer || !deliver) return payload;
      flight.deliver = undefined;
      const status = reply.statusCode;
      const routed = new Response(NULL_BODY.has(status) ? null : bodyOf(payload), {
        status,
        headers: routeHeaders(flight.before, reply.getHeaders() as OutgoingHttpHeaders),
      });
      deliver(routed);
      const answer = await flight.answer;
      // Passed through untouched: Fastify's own payload (a stream was turned into `routed`'s body, so it goes on as that).
      if (answer === routed && !(payload instanceof Readable)) return payload;
      return answer.body ? nodeStream(answer.body) : null;
    });
  };
  // Like fastify-plugin: the hooks apply to the context that registers the plugin, not to a child of it.
  Object.assign(plugin, { [Symbol.for("skip-override")]: true, [Symbol.for("fastify.display-name")]: "idemfetch" });
  return Object.assign(plugin, face);
};

/** A route's payload (as onSend sees it) as a Web body. */
function bodyOf(payload: unknown): BodyInit | null {
  if (payload === null || payload === undefined) return null;
  if (payload instanceof Readable) return webStream(payload) as BodyInit;
  return payload as string | Uint8Array as BodyInit;
}

/** A layer's answer that did not run the route (a joined or replayed response, an error) sent through `reply`. */
function send(reply: FastifyReply, response: Response): FastifyReply {
  reply.code(response.status);
  for (const [name, value] of response.headers) if (name !== "set-cookie") reply.header(name, value);
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) reply.header("set-cookie", cookies);
  return reply.send(response.body ? nodeStream(response.body) : null);
}
