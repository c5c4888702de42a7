// How soon a waiter on denoKvStore learns of the leader's commit: kv.watch() vs the engine's polling (no watch);
// then live streams: a 50 tokens/s stream through liveWriter, read by followLive on another store object, woken by
// kv.watch() (same process, or Deploy isolates) or polling (processes sharing a local file): p50/p99 of a token's
// latency behind the leader's write(), a late joiner's first bytes, store operations per second.
// Run: npx deno run -A --unstable-kv test/deno/kv-wake-bench.ts [live] (a measurement, not a test)
/// <reference lib="deno.unstable" />
import { denoKvStore } from "../../adapters/deno-kv.ts";
import { createIdempotentFetch, type IdempotencyStore, newToken } from "../../src/index.ts";
import { followLive, liveWriter } from "../../src/live.ts";
import type { LiveStore } from "../../src/store.ts";

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

/** Counts calls per method of `store`. */
function counted(store: LiveStore): { store: LiveStore; ops: Map<string, number> } {
  const ops = new Map<string, number>();
  const wrapped = { ...store } as Record<string, unknown>;
  for (const [name, fn] of Object.entries(store)) {
    if (typeof fn !== "function" || name.startsWith("subscribe") || name === "close") continue;
    wrapped[name] = (...args: unknown[]) => {
      ops.set(name, (ops.get(name) ?? 0) + 1);
      return (fn as (...a: unknown[]) => unknown).apply(store, args);
    };
  }
  return { store: wrapped as unknown as LiveStore, ops };
}

async function measureLive(label: string, readerStore: LiveStore, tokensPerSecond = 50, seconds = 10): Promise<void> {
  const leader = counted(denoKvStore({ kv }));
  const reader = counted(readerStore);
  const late = counted(readerStore);
  const key = `live-${newToken()}`;
  const lease = await leader.store.acquire(key, "fp", 30_000);
  if (lease.state !== "acquired") throw new Error("no lease");
  const head = {
    status: 200,
    statusText: "OK",
    headers: [["content-type", "text/event-stream"]] as [string, string][],
  };
  const writer = liveWriter(leader.store, key, lease.token, head);
  const decoder = new TextDecoder();
  /** Reads the stream; per token line "t<i> <written at>", its latency. */
  const follow = async (store: LiveStore) => {
    const started = performance.now();
    let firstBody: number | undefined;
    const latencies: number[] = [];
    let text = "";
    for await (const event of followLive(store, key)) {
      const now = performance.now();
      if (event.type === "body") {
        firstBody ??= now - started;
        text += decoder.decode(event.bytes, { stream: true });
        const lines = text.split("\n");
        text = lines.pop() ?? "";
        for (const line of lines) latencies.push(now - Number(line.split(" ")[1]));
      }
      if (event.type === "done" || event.type === "absent") break;
    }
    return { firstBody, latencies };
  };
  const early = follow(reader.store);
  let joined: ReturnType<typeof follow> | undefined;
  const total = tokensPerSecond * seconds;
  let body = "";
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const wait = t0 + (i * 1000) / tokensPerSecond - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const line = `t${i} ${performance.now().toFixed(3)}\n`;
    body += line;
    writer.write(new TextEncoder().encode(line));
    if (i === total / 2) joined = follow(late.store);
  }
  await writer.flush();
  writer.close();
  const elapsed = (performance.now() - t0) / 1000;
  const record = { ...head, body: new TextEncoder().encode(body), createdAt: Date.now(), fingerprint: "fp" };
  await leader.store.commit(key, lease.token, record, 60_000);
  const [a, b] = await Promise.all([early, joined as ReturnType<typeof follow>]);
  const sorted = a.latencies.sort((x, y) => x - y);
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]?.toFixed(1);
  const rate = (n: number | undefined) => ((n ?? 0) / elapsed).toFixed(1);
  console.log(
    `${label}, ${tokensPerSecond} tokens/s for ${seconds} s: a token's latency behind write() p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms (${a.latencies.length}/${total} tokens); a reader joining mid-stream has its first bytes ${b.firstBody?.toFixed(1)} ms after it starts; leader ${rate(leader.ops.get("publishLive"))} publishLive/s, reader ${rate(reader.ops.get("readLive"))} readLive/s`,
  );
}

if (Deno.args[0] === "live") {
  await measureLive("live, kv.watch()", denoKvStore({ kv }));
  await measureLive("live, polling (no watch)", denoKvStore({ kv: noWatch }));
} else {
  await measure("kv.watch()", denoKvStore({ kv }));
  await measure("polling (no watch)", denoKvStore({ kv: noWatch }));
}
await server.shutdown();
kv.close();
await Deno.remove(dir, { recursive: true });
