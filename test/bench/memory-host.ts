// Child process (run with --expose-gc): heap growth after many distinct keys on the memory store.
import { createIdempotentFetch } from "../../src/fetch.ts";
import { memoryStore } from "../../src/memory-store.ts";
import type { StoredRecord } from "../../src/store.ts";
import { serveHost } from "./lib.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("memory-host needs node --expose-gc");

const settle = async (): Promise<number> => {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  return process.memoryUsage().heapUsed;
};

const body = new TextEncoder().encode(JSON.stringify({ id: "chatcmpl-1", choices: [{ text: "hello world" }] }));
const record = (fingerprint: string): StoredRecord => ({
  status: 200,
  statusText: "OK",
  headers: [["content-type", "application/json"]],
  body,
  createdAt: Date.now(),
  fingerprint,
});

export interface MemoryResult {
  keys: number;
  maxEntries: number;
  heapBeforeBytes: number;
  heapAfterBytes: number;
  ms: number;
}

/** acquire + commit of `keys` distinct store keys, straight on the store. */
async function storeGrowth(args: { keys: number; maxEntries: number }): Promise<MemoryResult> {
  const before = await settle();
  const started = performance.now();
  const store = memoryStore({ maxEntries: args.maxEntries });
  const fingerprint = "f".repeat(64);
  for (let i = 0; i < args.keys; i++) {
    const storeKey = `idemfetch:anonymous:${i.toString(16).padStart(64, "0")}`;
    const found = await store.acquire(storeKey, fingerprint, 10_000);
    if (found.state !== "acquired") throw new Error(`key ${i} was not new`);
    await store.commit(storeKey, found.token, record(fingerprint), 3_600_000);
  }
  const ms = performance.now() - started;
  const after = await settle();
  // Keep the store reachable until measured.
  if (!store) throw new Error("unreachable");
  return { keys: args.keys, maxEntries: args.maxEntries, heapBeforeBytes: before, heapAfterBytes: after, ms };
}

/** `keys` distinct calls through createIdempotentFetch (default memory store) over an instant fake upstream. */
async function engineGrowth(args: { keys: number }): Promise<MemoryResult> {
  const upstream = async (): Promise<Response> =>
    new Response(body, { status: 200, headers: { "content-type": "application/json" } });
  const idempotentFetch = createIdempotentFetch({ fetch: upstream as typeof fetch });
  const before = await settle();
  const started = performance.now();
  for (let i = 0; i < args.keys; i++) {
    const response = await idempotentFetch("http://127.0.0.1:9/v1/chat", {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": `key-${i}` },
      body: '{"prompt":"hello"}',
    });
    await response.arrayBuffer();
  }
  const ms = performance.now() - started;
  const after = await settle();
  if (idempotentFetch.stats().upstreamCalls !== args.keys) throw new Error("every key must execute once");
  return { keys: args.keys, maxEntries: 10_000, heapBeforeBytes: before, heapAfterBytes: after, ms };
}

serveHost({}, { store: (a) => storeGrowth(a as never), engine: (a) => engineGrowth(a as never) });
