// install() for Node: every HTTP/1 request a socket carries (fetch, http/https.request, axios, got), seen below fetch.
import { AsyncLocalStorage } from "node:async_hooks";
import { HttpRequestInterceptor } from "@mswjs/interceptors/http";
import { createInstall, type InstallOptions, type Uninstall } from "./install.ts";

export type { InstallOptions, Uninstall } from "./install.ts";
// Every entry exports the same names; without navigator.locks it returns the store as it is.
export { type WebLocksOptions, withWebLocks } from "./web-locks.ts";

const storeCalls: AsyncLocalStorage<true> = new AsyncLocalStorage<true>();

/**
 * Intercepts fetch and http/https requests: keyed ones coalesce, replay or answer 409; the rest
 * pass untouched. Returns `uninstall()`. Call it before the first request: a connection opened
 * earlier and kept alive is not intercepted.
 */
export const install: (options?: InstallOptions) => Uninstall = createInstall({
  // One interceptor at the socket: it sees fetch and http.ClientRequest alike, whoever made them.
  interceptors: () => [new HttpRequestInterceptor()],
  belowFetch: true,
  storeScope: { run: (fn) => storeCalls.run(true, fn), active: () => storeCalls.getStore() === true },
});
