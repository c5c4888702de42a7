// The README's Durable Object quick start, run as written (imports pointed at the sources); plain JS so the
// Upstash quick start's typing of "cloudflare:workers" (test/edge/quickstart/cloudflare-workers.d.ts) stays its own.
import { env } from "cloudflare:workers";
import { durableObjectStore, IdempotencyObject } from "../../../adapters/durable-object.ts";
import { idempotency } from "../../../src/server.ts";

async function createOrder(request) {
  const order = await request.json();
  // Charge the card, write the order: this runs once per Idempotency-Key.
  return Response.json({ id: crypto.randomUUID(), ...order }, { status: 201 });
}

export { IdempotencyObject };
export default { fetch: idempotency(createOrder, { store: durableObjectStore(env.IDEMPOTENCY) }) };
