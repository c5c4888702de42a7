// The client-side contenders: raw fetch and raw axios (baselines), idemfetch's wrapper, fetch-dedupe, axios-cache-interceptor.
import axios from "axios";
import { setupCache } from "axios-cache-interceptor";
import { fetchDedupe } from "fetch-dedupe";
import { Redis } from "ioredis";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { createIdempotentFetch } from "../../src/fetch.ts";

/** What one call ended with, after its body was read whole (as a caller would). */
export interface ClientOutcome {
  status: number;
  /** Answered without an upstream call of its own (a replay or a cache hit), as the library reports it. */
  replayed: boolean;
  /** A rejection instead of a response. */
  error?: string;
}

export interface ClientContender {
  name: string;
  /** What it is measured against: "fetch" or "axios". */
  baseline: "fetch" | "axios" | null;
  /** Is it a peer (not idemfetch, not a baseline)? */
  peer: boolean;
  store: string;
  call(url: string, key: string, body: string): Promise<ClientOutcome>;
  close(): Promise<void>;
}

const headers = (key: string) => ({ "content-type": "application/json", "idempotency-key": key });

async function fromResponse(response: Response): Promise<ClientOutcome> {
  await response.arrayBuffer();
  return { status: response.status, replayed: response.headers.get("idempotent-replayed") === "true" };
}

const failed = (error: unknown): ClientOutcome => ({ status: 0, replayed: false, error: String(error) });

export async function clientContenders(redisUrl: string): Promise<ClientContender[]> {
  const redis = new Redis(redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 1000 });
  await new Promise((resolve) => redis.once("ready", resolve));
  const redisStore = ioredisStore({ redis });
  const memoryFetch = createIdempotentFetch();
  const redisFetch = createIdempotentFetch({ store: redisStore });
  // axios-cache-interceptor's README: setupCache(axios.create()); POST must be opted in (`methods`), and the
  // idempotency key becomes the cache `id` of the request.
  const cached = setupCache(axios.create(), { methods: ["post"], interpretHeader: false, ttl: 3_600_000 });
  const plainAxios = axios.create();
  const none = async () => {};

  return [
    {
      name: "raw fetch",
      baseline: null,
      peer: false,
      store: "–",
      call: (url, key, body) => fetch(url, { method: "POST", headers: headers(key), body }).then(fromResponse, failed),
      close: none,
    },
    {
      name: "idemfetch",
      baseline: "fetch",
      peer: false,
      store: "memory",
      call: (url, key, body) =>
        memoryFetch(url, { method: "POST", headers: headers(key), body }).then(fromResponse, failed),
      close: none,
    },
    {
      name: "idemfetch",
      baseline: "fetch",
      peer: false,
      store: "redis",
      call: (url, key, body) =>
        redisFetch(url, { method: "POST", headers: headers(key), body }).then(fromResponse, failed),
      close: async () => {
        await redisStore.close?.();
        redis.disconnect();
      },
    },
    {
      name: "fetch-dedupe",
      baseline: "fetch",
      peer: true,
      store: "in flight only",
      // It reads the body itself (res.data); its key is url + method + body.
      call: (url, key, body) =>
        fetchDedupe(url, { method: "POST", headers: headers(key), body }, { responseType: "json" }).then(
          (res) => ({ status: res.status, replayed: false }),
          failed,
        ),
      close: none,
    },
    {
      name: "raw axios",
      baseline: null,
      peer: false,
      store: "–",
      call: (url, key, body) =>
        plainAxios
          .post(url, body, { headers: headers(key), validateStatus: () => true })
          .then((res) => ({ status: res.status, replayed: false }), failed),
      close: none,
    },
    {
      name: "axios-cache-interceptor",
      baseline: "axios",
      peer: true,
      store: "memory",
      call: (url, key, body) =>
        cached
          .post(url, body, { id: key, headers: headers(key), validateStatus: () => true })
          .then((res) => ({ status: res.status, replayed: res.cached }), failed),
      close: none,
    },
  ];
}
