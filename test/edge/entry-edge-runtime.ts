// The script the edge-runtime test runs: a fetch event listener, as Vercel's Edge Runtime calls it.
import type { AsyncLocalStorage } from "node:async_hooks";
import { createApp, type EdgeEnv, VERCEL_REQUEST_CONTEXT, type WaitUntil } from "./app.ts";

interface FetchEventLike {
  request: Request;
  respondWith(response: Promise<Response>): void;
  waitUntil(promise: Promise<unknown>): void;
}

// edge-runtime has no bindings: the test puts the environment on the global before this script runs, and
// Node's AsyncLocalStorage, which Vercel's Edge Runtime offers as node:async_hooks.
const { EDGE_ENV: env, AsyncLocalStorage: Storage } = globalThis as unknown as {
  EDGE_ENV: EdgeEnv;
  AsyncLocalStorage: typeof AsyncLocalStorage;
};
const app = createApp();
// Vercel's runtime keeps each request's context (its waitUntil) here; @vercel/functions reads it.
const requestContext = new Storage<WaitUntil>();
Object.assign(globalThis, { [VERCEL_REQUEST_CONTEXT]: { get: () => requestContext.getStore() } });

addEventListener("fetch", (event) => {
  const e = event as unknown as FetchEventLike;
  requestContext.run({ waitUntil: (promise) => e.waitUntil(promise) }, () => e.respondWith(app(e.request, env, e)));
});
