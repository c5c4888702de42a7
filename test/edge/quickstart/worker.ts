// The README's Cloudflare Workers quick start (docs/readme-edge.md), imports pointed at the sources.
import { env } from "cloudflare:workers";
import { upstashStore } from "../../../adapters/upstash.ts";
import { idempotency } from "../../../src/server.ts";

const store = upstashStore({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });

async function createOrder(request: Request): Promise<Response> {
  const order = (await request.json()) as Record<string, unknown>;
  // Charge the card, write the order: this runs once per Idempotency-Key.
  return Response.json({ id: crypto.randomUUID(), ...order }, { status: 201 });
}

// Workers call fetch(request, env, ctx): the middleware finds ctx and hands ctx.waitUntil each store write.
export default { fetch: idempotency(createOrder, { store }) };
