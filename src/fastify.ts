// idemfetch/fastify: the server middleware as a Fastify 5 plugin, on the Node face (src/node-http.ts).
import type { OutgoingHttpHeaders } from "node:http";
import { Readable } from "node:stream";
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import type { Reply, Tap } from "./call.ts";
import { type NodeFace, nodeLayer, unreadBody } from "./node-http.ts";
import type { ServerIdempotencyOptions } from "./server.ts";

export type { NodeFace } from "./node-http.ts";
export type { ServerIdempotencyOptions } from "./server.ts";

/** A Fastify plugin, plus the counters of what it saved and its shutdown. */
export type IdempotencyPlugin = FastifyPluginAsync & NodeFace;

/** Marks requests whose reply went through Fastify's send (onSend ran): only those are stored. */
const SENT = Symbol("idemfetch: sent through reply");

/**
 * `app.register(idempotency(options))`: duplicate requests to the routes of that context run their handler
 * once. In onRequest the raw body is fingerprinted (and put back for Fastify's parser); the route's reply is
 * taken as Fastify writes it to the socket. Replies the route did not cause go out through `reply`, so the
 * app's onSend and onResponse hooks run for them too. Options are those of `idemfetch/server`.
 */
export const idempotency = (options: ServerIdempotencyOptions = {}): IdempotencyPlugin => {
  const layer = nodeLayer(options);
  const plugin: FastifyPluginAsync = async function idempotency(app) {
    app.addHook("onClose", () => layer.close());

    app.addHook("onRequest", (request, reply, done) => {
      if (!layer.handles(request.method)) return done();
      const marked = request as FastifyRequest & { [SENT]?: boolean };
      let routed = false;
      layer
        .serve(request.raw, reply.raw, {
          path: request.url,
          body: unreadBody(request.raw),
          before: reply.getHeaders() as OutgoingHttpHeaders,
          // The route runs when this hook is done; its reply is written to the socket through the capture.
          route: () => {
            routed = true;
            done();
          },
          // A hijacked reply never passes onSend: the layer cannot vouch for it, so it is never stored.
          vouched: () => marked[SENT] === true,
          // Sent from the hook: Fastify skips the route and runs onSend and onResponse.
          write: (answer) => send(reply, answer),
        })
        .then(
          () => {
            // Answered by the layer itself (an error it wrote to the socket): Fastify must not answer again.
            if (!routed && !reply.sent && reply.raw.headersSent) reply.hijack();
          },
          (error: unknown) => done(error as Error),
        );
    });

    app.addHook("onSend", async (request, _reply, payload) => {
      (request as FastifyRequest & { [SENT]?: boolean })[SENT] = true;
      return payload;
    });
  };
  // Like fastify-plugin: the hooks apply to the context that registers the plugin, not to a child of it.
  Object.assign(plugin, { [Symbol.for("skip-override")]: true, [Symbol.for("fastify.display-name")]: "idemfetch" });
  return Object.assign(plugin, { stats: layer.stats, forget: layer.forget, close: layer.close });
};

/** A reply this caller did not cause (joined, replayed, an error of the layer's) sent through `reply`. */
function send(reply: FastifyReply, answer: Exclude<Reply, { native: unknown }>): void {
  reply.code(answer.status);
  const cookies: string[] = [];
  for (const [name, value] of answer.headers) {
    if (name === "set-cookie") cookies.push(value);
    else reply.header(name, value);
  }
  if (cookies.length > 0) reply.header("set-cookie", cookies);
  const { body } = answer;
  if (body === null || body instanceof Uint8Array) {
    void reply.send(body === null ? null : Buffer.from(body.buffer, body.byteOffset, body.length));
    return;
  }
  void reply.send(tapStream(body));
}

/** A live body as a Node stream for reply.send. */
async function* tapChunks(tap: Tap): AsyncGenerator<Uint8Array> {
  try {
    for (let chunk = await tap.pull(); chunk !== null; chunk = await tap.pull()) yield chunk;
  } finally {
    tap.cancel();
  }
}

const tapStream = (tap: Tap): Readable => Readable.from(tapChunks(tap), { objectMode: false });
