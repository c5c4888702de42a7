// Serves one keyed and one keyless JSON request through the middleware under Deno.serve; the parent test reads stderr.
import { idempotency } from "../../src/server.ts";

const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  idempotency(async (request) => new Response(await request.text())),
);
const url = `http://127.0.0.1:${server.addr.port}/`;
for (const headers of [{ "idempotency-key": "probe" }, {}]) {
  const response = await fetch(url, { method: "POST", headers, body: '{"a":1}' });
  await response.text();
}
await server.shutdown();
