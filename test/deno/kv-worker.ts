// A separate Deno process for store-deno-kv.test.ts: one idempotent POST through denoKvStore on a shared KV file.
/// <reference lib="deno.unstable" />
// Usage: deno run -A --unstable-kv kv-worker.ts <kv path> <prefix JSON> <url> <idempotency key>
// It prints { status, replayed, body, firstAt, endAt }: when the first body bytes and the end came (Unix ms).
import { denoKvStore } from "../../adapters/deno-kv.ts";
import { createIdempotentFetch } from "../../src/index.ts";

const [path, prefix, url, key] = Deno.args as [string, string, string, string];
const kv = await Deno.openKv(path);
const inner = denoKvStore({ kv, prefix: JSON.parse(prefix) });
// The engine may still be committing when the caller has the body: the KV must stay open until that settles.
const commits: Promise<boolean>[] = [];
const store = {
  ...inner,
  commit: (...args: Parameters<typeof inner.commit>) => commits[commits.push(inner.commit(...args)) - 1]!,
};
const f = createIdempotentFetch({
  store,
  // On stderr, for the test's failure message.
  onEvent: (event) => console.error(JSON.stringify(event, (_, v) => (v instanceof Error ? String(v) : v))),
});
const response = await f(url, {
  method: "POST",
  headers: { "content-type": "application/json", "idempotency-key": key },
  body: JSON.stringify({ amount: 42 }),
});
// Read as it streams: when the first bytes came tells a live read from a replay of the record.
let body = "";
let firstAt = 0;
const decoder = new TextDecoder();
for await (const chunk of response.body ?? []) {
  firstAt ||= Date.now();
  body += decoder.decode(chunk, { stream: true });
}
const out = {
  status: response.status,
  replayed: response.headers.get("idempotent-replayed"),
  body,
  firstAt,
  endAt: Date.now(),
};
// The commit starts once the body is complete, so give it a few turns to begin, then wait for it.
for (let i = 0; i < 20 && commits.length === 0 && out.replayed !== "true"; i++)
  await new Promise((r) => setTimeout(r, 10));
await Promise.allSettled(commits);
kv.close();
console.log(JSON.stringify(out));
