// A separate Deno process for store-deno-kv.test.ts: one idempotent POST through denoKvStore on a shared KV file.
/// <reference lib="deno.unstable" />
// Usage: deno run -A --unstable-kv kv-worker.ts <kv path> <prefix JSON> <url> <idempotency key>
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
const out = {
  status: response.status,
  replayed: response.headers.get("idempotent-replayed"),
  body: await response.text(),
};
// The commit starts once the body is complete, so give it a few turns to begin, then wait for it.
for (let i = 0; i < 20 && commits.length === 0 && out.replayed !== "true"; i++)
  await new Promise((r) => setTimeout(r, 10));
await Promise.allSettled(commits);
kv.close();
console.log(JSON.stringify(out));
