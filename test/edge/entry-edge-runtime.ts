// The script the edge-runtime test runs: a fetch event listener, as Vercel's Edge Runtime calls it.
import { createApp, type EdgeEnv } from "./app.js";

interface FetchEventLike {
  request: Request;
  respondWith(response: Promise<Response>): void;
  waitUntil(promise: Promise<unknown>): void;
}

// edge-runtime has no bindings: the test puts the environment on the global before this script runs.
const env = (globalThis as unknown as { EDGE_ENV: EdgeEnv }).EDGE_ENV;
const app = createApp();

addEventListener("fetch", (event) => {
  const e = event as unknown as FetchEventLike;
  e.respondWith(app(e.request, env, e));
});
