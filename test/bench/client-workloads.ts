// W1-W3 on the client side: each client contender against the counting upstream (test/fixtures/upstream.ts).
import type { ClientContender, ClientOutcome } from "./client.ts";
import { type Host, interleave, median, tally } from "./lib.ts";

export interface Latency {
  samples: number[];
  /** Calls answered without an upstream call of their own (replays, cache hits). */
  replayed: number;
  errors: number;
}

export interface Burst {
  size: number;
  workMs: number;
  wallMs: number;
  /** Median wall time of one call alone, same work. */
  oneCallMs: number;
  upstreamCalls: number;
  outcomes: string;
  correct: boolean;
}

const body = (i: number) => JSON.stringify({ model: "bench", prompt: `hello ${i}`, max_tokens: 16 });

const label = (o: ClientOutcome): string => (o.error ? "error" : o.replayed ? `${o.status} replay` : String(o.status));

/**
 * Sequential calls number `first` .. `first + n - 1`, interleaved across contenders. Call i sends key
 * `keyOf(contender, i)` with body i, so W2 repeats W1's calls exactly by repeating their numbers.
 */
export async function clientLatency(
  contenders: ClientContender[],
  upstreamUrl: string,
  workMs: number,
  n: number,
  keyOf: (contender: number, i: number) => string,
  first = 0,
): Promise<Latency[]> {
  const url = `${upstreamUrl}/echo?ms=${workMs}`;
  const stats = contenders.map(() => ({ replayed: 0, errors: 0 }));
  const samples = await interleave(
    contenders.map((c, index) => ({ c, index })),
    n,
    async ({ c, index }, i) => {
      const started = performance.now();
      const outcome = await c.call(url, keyOf(index, first + i), body(first + i));
      const elapsed = performance.now() - started;
      const s = stats[index] as { replayed: number; errors: number };
      if (outcome.replayed) s.replayed++;
      if (outcome.error || outcome.status !== 200) s.errors++;
      return elapsed;
    },
  );
  return contenders.map((_, index) => ({ samples: samples[index] as number[], ...stats[index] }) as Latency);
}

/** `size` concurrent identical calls (same key, same body) against one call alone. */
export async function clientBurst(
  contender: ClientContender,
  upstream: Host<{ url: string }>,
  size: number,
  workMs: number,
  tag: string,
): Promise<Burst> {
  const url = `${upstream.ready.url}/echo?ms=${workMs}`;
  const singles: number[] = [];
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    await contender.call(url, `${tag}-single-${i}`, body(-1 - i));
    singles.push(performance.now() - started);
  }
  await upstream.call("reset");
  const started = performance.now();
  const outcomes = await Promise.all(
    Array.from({ length: size }, () => contender.call(url, `${tag}-burst`, body(0)).then(label)),
  );
  const wallMs = performance.now() - started;
  const upstreamCalls = await upstream.call<number>("count");
  await upstream.call("reset");
  return {
    size,
    workMs,
    wallMs,
    oneCallMs: median(singles),
    upstreamCalls,
    outcomes: tally(outcomes),
    correct: upstreamCalls === 1 && outcomes.every((o) => o.startsWith("200")),
  };
}
