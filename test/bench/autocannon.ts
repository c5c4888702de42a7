// Server throughput from autocannon (a second load generator beside LoadClient): distinct keys, keep-alive.
import autocannon from "autocannon";
import { body } from "./server-workloads.ts";

export interface Cannon {
  connections: number;
  rps: number;
  /** Median latency autocannon saw, in ms. */
  p50Ms: number;
  non2xx: number;
  errors: number;
}

/** `connections` keep-alive connections for `seconds`, every request a new key (a miss). */
export async function cannon(url: string, connections: number, seconds: number, tag: string): Promise<Cannon> {
  let i = 0;
  const result = await autocannon({
    url: `${url}/work?ms=0`,
    connections,
    duration: seconds,
    method: "POST",
    requests: [
      {
        setupRequest: (request: Record<string, unknown>) => {
          const n = i++;
          return {
            ...request,
            headers: { "content-type": "application/json", "idempotency-key": `${tag}-${n}` },
            body: body(n),
          };
        },
      },
    ],
  });
  return {
    connections,
    rps: result.requests.total / (result.duration || seconds),
    p50Ms: result.latency.p50,
    non2xx: result.non2xx,
    errors: result.errors,
  };
}
