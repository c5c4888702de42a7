// install() for Deno: its fetch, through the web build of the fetch interceptor (the Node build intercepts nothing there).
import { AsyncLocalStorage } from "node:async_hooks";
import { FetchInterceptor } from "@mswjs/interceptors/fetch/web";
import { createInstall, type InstallOptions, type Uninstall } from "./install.ts";

export type { InstallOptions, Uninstall } from "./install.ts";
// Every entry exports the same names; without navigator.locks it returns the store as it is.
export { type WebLocksOptions, withWebLocks } from "./web-locks.ts";

const storeCalls: AsyncLocalStorage<true> = new AsyncLocalStorage<true>();

/** Intercepts fetch: keyed requests coalesce, replay or answer 409; the rest pass untouched. Returns `uninstall()`. */
export const install: (options?: InstallOptions) => Uninstall = createInstall({
  interceptors: () => [new FetchInterceptor()],
  belowFetch: false,
  storeScope: { run: (fn) => storeCalls.run(true, fn), active: () => storeCalls.getStore() === true },
});
