// A remote reader's chunk latency behind the leader's (issue 17): two engines on one real Redis (ioredisStore), an SSE handler.
// Run: npx tsx test/bench/live-latency.ts [chunks=200] [gapMs=20]. Prints p50/p99 of (remote arrival - leader arrival) per chunk.
import { Redis } from "ioredis";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { idempotency } from "../../src/server.ts";
import { newToken } from "../../src/store.ts";
import { deletePrefix } from "../fixtures/util.ts";

const chunks = Number(process.argv[2] ?? 200);
const gapMs = Number(process.argv[3] ?? 20);
const prefix = `idemfetch-bench:live:${newToken().slice(0, 10)}:`;
const connections = [0, 1].map(() => new Redis({ host: "127.0.0.1", port: 6379, keyPrefix: prefix }));
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const handler = async (request: Request): Promise<Response> => {
  await request.text();
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (i > 0) await new Promise((r) => setTimeout(r, gapMs));
      if (i === chunks) return controller.close();
      controller.enqueue(encoder.encode(`data: ${i}\n\n`));
      i++;
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
};
const [a, b] = connections.map((redis) => idempotency(handler, { store: ioredisStore({ redis }) })) as [
  ReturnType<typeof idempotency>,
  ReturnType<typeof idempotency>,
];
const request = () =>
  new Request("http://localhost/chat", {
    method: "POST",
    headers: { "idempotency-key": "bench", "content-type": "application/json" },
    body: "{}",
  });

/** When each event `data: i` arrived, by i. */
const arrivals = async (response: Response): Promise<number[]> => {
  const at: number[] = [];
  let text = "";
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return at;
    const now = performance.now();
    text += decoder.decode(value, { stream: true });
    for (const match of text.matchAll(/data: (\d+)\n\n/g)) at[Number(match[1])] ??= now;
  }
};

const leaderStarted = performance.now();
const leading = arrivals(await a(request()));
await new Promise((r) => setTimeout(r, gapMs * 2));
const dupStarted = performance.now();
const dup = await b(request());
const remote = await arrivals(dup);
const local = await leading;
const firstByte = (remote[0] as number) - dupStarted;
// Chunks published after the duplicate attached: their lag behind the leader's own caller.
const lags = local
  .map((t, i) => (remote[i] as number) - t)
  .filter((_, i) => (local[i] as number) > dupStarted + 5)
  .sort((x, y) => x - y);
const pct = (p: number) =>
  (lags[Math.min(lags.length - 1, Math.floor((p / 100) * lags.length))] ?? Number.NaN).toFixed(1);
console.log(
  `live latency (ioredis, loopback): ${lags.length} chunks ${gapMs} ms apart; remote lag behind the leader p50 ${pct(50)} ms, p99 ${pct(99)} ms, max ${pct(100)} ms; duplicate's first byte ${firstByte.toFixed(1)} ms after it was sent (leader started ${(dupStarted - leaderStarted).toFixed(0)} ms earlier)`,
);
await Promise.all([a.close(), b.close()]);
await deletePrefix(connections[0] as Redis, prefix);
for (const redis of connections) redis.disconnect();
