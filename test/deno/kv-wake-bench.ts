// How soon a waiter on denoKvStore learns of the leader's commit: kv.watch() vs the engine's polling (no watch).
// Run: npx deno run -A --unstable-kv test/deno/kv-wake-bench.ts (a measurement, not a test)
/// <reference lib="deno.unstable" />
import { denoKvStore } from "../../adapters/deno-kv.ts";
import { createIdempotentFetch, type IdempotencyStore, newToken } from "../../src/index.ts";

const dir = await Deno.makeTempDir();
const kv = await Deno.openKv(`${dir}/wake.db`);
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
  await new Promise((r) => setTimeout(r, Number(new URL(request.url).searchParams.get("ms"))));
  return Response.json({ ok: true });
});
const noWatch = { get: kv.get.bind(kv), list: kv.list.bind(kv), atomic: kv.atomic.bind(kv) };

async function measure(label: string, waiterStore: IdempotencyStore): Promise<void> {
  const lags: number[] = [];
  for (let i = 0; i < 15; i++) {
    let committedAt = 0;
    const inner = denoKvStore({ kv });
    const leaderStore: IdempotencyStore = {
      ...inner,
      commit: async (...args) => {
        const ok = await inner.commit(...args);
        committedAt = performance.now();
        return ok;
      },
    };
    const leader = createIdempotentFetch({ store: leaderStore });
    const waiter = createIdempotentFetch({ store: waiterStore });
    const init = { method: "POST", headers: { "idempotency-key": `wake-${newToken()}` }, body: "x" };
    const url = `http://127.0.0.1:${server.addr.port}/?ms=${200 + Math.floor(Math.random() * 300)}`;
    const first = leader(url, init).then((r) => r.text());
    await new Promise((r) => setTimeout(r, 30));
    const replay = await waiter(url, init);
    await replay.text();
    const answeredAt = performance.now();
    await first;
    lags.push(answeredAt - committedAt);
  }
  if (Deno.env.get("VERBOSE")) console.log(lags.map((l) => l.toFixed(0)).join(" "));
  lags.sort((a, b) => a - b);
  const at = (q: number) => lags[Math.min(lags.length - 1, Math.floor(q * lags.length))]!.toFixed(1);
  console.log(
    `${label}: commit -> waiter answered, median ${at(0.5)} ms, p90 ${at(0.9)} ms, max ${at(1)} ms (n=${lags.length})`,
  );
}

await measure("kv.watch()", denoKvStore({ kv }));
await measure("polling (no watch)", denoKvStore({ kv: noWatch }));
await server.shutdown();
kv.close();
await Deno.remove(dir, { recursive: true });
